//! Who a kernel is: the file's hash and size, its GNU build-id and its
//! `Linux version …` banner. Stored in traces so report-time symbolization
//! can refuse a vmlinux that belongs to another build.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// Longest banner kept; `linux_banner` is well under this.
const MAX_BANNER: usize = 512;

/// The identity of one kernel file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct KernelIdentity {
    /// Path the file was opened from, when it came from a file.
    pub path: Option<String>,
    /// File size in bytes.
    pub size: u64,
    /// sha256 of the whole file, lower-case hex.
    pub sha256: String,
    /// GNU build-id of the kernel proper (of the payload for a bzImage).
    pub build_id: Option<String>,
    /// The kernel's `linux_banner`, e.g. "Linux version 6.12.38 (user@host) (gcc …) #1 SMP …",
    /// without the trailing newline.
    pub version: Option<String>,
}

/// A vmlinux that does not belong to the recorded kernel.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdentityMismatch {
    /// build-ids differ
    #[error("{vmlinux_path} (build-id {vmlinux}) is not the recorded kernel {recorded_path} (build-id {recorded})")]
    BuildId {
        /// The recorded kernel's path.
        recorded_path: String,
        /// Its build-id.
        recorded: String,
        /// The offered vmlinux's path.
        vmlinux_path: String,
        /// Its build-id.
        vmlinux: String,
    },
    /// version banners differ (no build-ids to compare)
    #[error(
        "{vmlinux_path} ({vmlinux:?}) is not the recorded kernel {recorded_path} ({recorded:?})"
    )]
    Version {
        /// The recorded kernel's path.
        recorded_path: String,
        /// Its banner.
        recorded: String,
        /// The offered vmlinux's path.
        vmlinux_path: String,
        /// Its banner.
        vmlinux: String,
    },
    /// neither build-ids nor banners on both sides
    #[error("cannot tell whether {vmlinux_path} belongs to the recorded kernel {recorded_path}: no build-id or version string on both sides")]
    Unverifiable {
        /// The recorded kernel's path.
        recorded_path: String,
        /// The offered vmlinux's path.
        vmlinux_path: String,
    },
}

impl KernelIdentity {
    /// Identity of `file` (the bytes as opened) whose kernel proper is `elf`
    /// (the same bytes for a vmlinux, the decompressed payload for a bzImage).
    pub fn compute(
        path: Option<String>,
        file: &[u8],
        elf: &[u8],
        build_id: Option<String>,
    ) -> Self {
        KernelIdentity {
            path,
            size: file.len() as u64,
            sha256: Sha256::digest(file)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
            build_id,
            version: find_banner(elf),
        }
    }

    /// Checks that `vmlinux` is the kernel proper of the kernel `self`
    /// identifies (typically a recorded bzImage). Build-ids decide when both
    /// have one; otherwise the banners, which carry build number and time.
    pub fn check_matches(&self, vmlinux: &KernelIdentity) -> Result<(), IdentityMismatch> {
        let recorded_path = display_path(self);
        let vmlinux_path = display_path(vmlinux);
        if self.sha256 == vmlinux.sha256 {
            return Ok(());
        }
        if let (Some(a), Some(b)) = (&self.build_id, &vmlinux.build_id) {
            return if a == b {
                Ok(())
            } else {
                Err(IdentityMismatch::BuildId {
                    recorded_path,
                    recorded: a.clone(),
                    vmlinux_path,
                    vmlinux: b.clone(),
                })
            };
        }
        match (&self.version, &vmlinux.version) {
            (Some(a), Some(b)) if a == b => Ok(()),
            (Some(a), Some(b)) => Err(IdentityMismatch::Version {
                recorded_path,
                recorded: a.clone(),
                vmlinux_path,
                vmlinux: b.clone(),
            }),
            _ => Err(IdentityMismatch::Unverifiable {
                recorded_path,
                vmlinux_path,
            }),
        }
    }
}

fn display_path(id: &KernelIdentity) -> String {
    id.path
        .clone()
        .unwrap_or_else(|| format!("<{} bytes, sha256 {:.12}>", id.size, id.sha256))
}

/// Finds `linux_banner`: "Linux version " followed by a digit, up to the
/// newline or NUL that ends it. The first such string is the banner
/// (`linux_proc_banner` is a format string, "%s version %s …").
pub fn find_banner(elf: &[u8]) -> Option<String> {
    const NEEDLE: &[u8] = b"Linux version ";
    for pos in memchr::memmem::find_iter(elf, NEEDLE) {
        let rest = &elf[pos..];
        let rest = &rest[..rest.len().min(MAX_BANNER)];
        if !rest.get(NEEDLE.len()).is_some_and(u8::is_ascii_digit) {
            continue;
        }
        let Some(end) = rest.iter().position(|&b| b == b'\n' || b == 0) else {
            continue;
        };
        let s = &rest[..end];
        if s.iter().all(|b| (0x20..0x7f).contains(b)) {
            return Some(String::from_utf8_lossy(s).into_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(build_id: Option<&str>, version: Option<&str>, hash: &str) -> KernelIdentity {
        KernelIdentity {
            path: Some(format!("/k/{hash}")),
            size: 1,
            sha256: hash.into(),
            build_id: build_id.map(Into::into),
            version: version.map(Into::into),
        }
    }

    #[test]
    fn build_id_decides_then_version() {
        let a = id(Some("aa"), Some("Linux version 1"), "1");
        assert!(a.check_matches(&id(Some("aa"), Some("other"), "2")).is_ok());
        let err = a.check_matches(&id(Some("bb"), Some("Linux version 1"), "2"));
        assert!(matches!(err, Err(IdentityMismatch::BuildId { .. })));
        let msg = err.expect_err("mismatch").to_string();
        assert!(msg.contains("/k/1") && msg.contains("/k/2"), "{msg}");
        let b = id(None, Some("Linux version 1"), "1");
        assert!(b
            .check_matches(&id(Some("x"), Some("Linux version 1"), "2"))
            .is_ok());
        assert!(matches!(
            b.check_matches(&id(None, Some("Linux version 2"), "2")),
            Err(IdentityMismatch::Version { .. })
        ));
        assert!(matches!(
            id(None, None, "1").check_matches(&id(None, None, "2")),
            Err(IdentityMismatch::Unverifiable { .. })
        ));
    }

    #[test]
    fn banner_skips_format_strings() {
        let blob = b"xx%s version %s\0Linux version %s\0Linux version 6.12.1 (a@b) #1\nrest";
        assert_eq!(
            find_banner(blob).as_deref(),
            Some("Linux version 6.12.1 (a@b) #1")
        );
        assert_eq!(find_banner(b"Linux version 6"), None);
    }
}
