//! The x86 boot protocol's setup header (Documentation/arch/x86/boot.rst)
//! and the parts of a bzImage it locates: the protected-mode code (the
//! decompressor, linked at 0) and the compressed payload inside it.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// "HdrS" at 0x202, little-endian.
const HDRS_MAGIC: u32 = 0x5372_6448;
/// Lowest protocol with the 64-bit entry point, `xloadflags` and payload fields.
pub const MIN_PROTOCOL: u16 = 0x020c;
/// `xloadflags` bit: the kernel has the 64-bit entry at `code32_start + 0x200`.
pub const XLF_KERNEL_64: u16 = 1 << 0;
/// `loadflags` bit: protected-mode code is loaded at 0x100000.
pub const LOADED_HIGH: u8 = 1 << 0;
/// The setup header ends before this offset in every protocol up to 2.15.
const HEADER_END: usize = 0x26c;
/// First physical address beyond what x86_64 can address (52-bit MAXPHYADDR).
const PHYS_LIMIT: u64 = 1 << 52;
/// Smallest alignment the decompressor places the kernel at (x86_64 `CONFIG_PHYSICAL_ALIGN` minimum).
const MIN_KERNEL_ALIGN: u64 = 0x20_0000;

/// Why a file is not a usable bzImage.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BzImageError {
    /// file too short to hold a setup header
    #[error("file of {0} bytes is too short for a bzImage setup header")]
    TooShort(usize),
    /// no "HdrS" magic at 0x202
    #[error("no boot-protocol magic \"HdrS\" at offset 0x202: not a bzImage")]
    NoMagic,
    /// boot protocol older than 2.12
    #[error("boot protocol {major}.{minor:02} is too old: 2.12 or newer (64-bit entry, xloadflags) is required")]
    OldProtocol {
        /// Major version.
        major: u8,
        /// Minor version.
        minor: u8,
    },
    /// the kernel has no 64-bit entry point
    #[error("xloadflags 0x{0:x} lack XLF_KERNEL_64: this is not a 64-bit kernel")]
    Not64Bit(u16),
    /// the setup sectors run past the end of the file
    #[error("setup code ({setup_bytes} bytes) runs past the end of the {file_len}-byte file")]
    SetupTruncated {
        /// Bytes the setup header says precede the protected-mode code.
        setup_bytes: usize,
        /// File length.
        file_len: usize,
    },
    /// the payload lies outside the file
    #[error("payload at 0x{offset:x} + 0x{length:x} lies outside the protected-mode code (0x{available:x} bytes): truncated bzImage?")]
    PayloadOutOfBounds {
        /// Payload offset from the protected-mode code start.
        offset: u32,
        /// Payload length.
        length: u32,
        /// Bytes of protected-mode code present.
        available: usize,
    },
    /// the kernel would be decompressed beyond any physical address
    #[error("pref_address 0x{pref_address:x} + init_size 0x{init_size:x} lies beyond any physical address")]
    BootBeyondMemory {
        /// Where the kernel asks to be decompressed.
        pref_address: u64,
        /// Memory it needs there.
        init_size: u32,
    },
}

/// The fields of the setup header boottrace uses (offsets per boot.rst).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetupHeader {
    /// Number of 512-byte setup sectors after the boot sector (0 means 4).
    pub setup_sects: u8,
    /// Size of the protected-mode code in 16-byte paragraphs.
    pub syssize: u32,
    /// Boot protocol version, e.g. 0x020f for 2.15.
    pub version: u16,
    /// `LOADED_HIGH`, `KASLR_FLAG`, `QUIET_FLAG`, `KEEP_SEGMENTS`, `CAN_USE_HEAP`.
    pub loadflags: u8,
    /// Where the protected-mode code expects to be loaded (0x100000).
    pub code32_start: u32,
    /// Highest address an initrd may end at.
    pub initrd_addr_max: u32,
    /// Physical alignment the kernel needs when relocated.
    pub kernel_alignment: u32,
    /// Non-zero when the kernel may be loaded at any aligned address.
    pub relocatable_kernel: u8,
    /// log2 of the minimum alignment.
    pub min_alignment: u8,
    /// `XLF_KERNEL_64` (bit 0) and friends.
    pub xloadflags: u16,
    /// Maximum command-line length, without the NUL.
    pub cmdline_size: u32,
    /// Payload offset from the start of the protected-mode code.
    pub payload_offset: u32,
    /// Payload length, including its 4-byte size trailer.
    pub payload_length: u32,
    /// Preferred load address of a relocatable kernel.
    pub pref_address: u64,
    /// Memory the kernel needs from its load address until it is done with it.
    pub init_size: u32,
    /// Offset of the EFI handover entry.
    pub handover_offset: u32,
    /// Offset of the kernel_info structure (protocol 2.15+), else 0.
    pub kernel_info_offset: u32,
    /// The version string the header points to (`kernel_version` + 0x200),
    /// e.g. "6.12.38 (user@host) #1 SMP …".
    pub kernel_version: Option<String>,
}

impl SetupHeader {
    /// Parses and validates the setup header at the start of `file`.
    pub fn parse(file: &[u8]) -> Result<SetupHeader, BzImageError> {
        if file.len() < HEADER_END {
            return Err(BzImageError::TooShort(file.len()));
        }
        // In bounds: every offset below is < HEADER_END <= file.len().
        let u8_at = |off: usize| file[off];
        let u16_at = |off: usize| u16::from_le_bytes([file[off], file[off + 1]]);
        let u32_at = |off: usize| {
            u32::from_le_bytes([file[off], file[off + 1], file[off + 2], file[off + 3]])
        };
        let u64_at = |off: usize| u64::from(u32_at(off)) | u64::from(u32_at(off + 4)) << 32;
        if u32_at(0x202) != HDRS_MAGIC {
            return Err(BzImageError::NoMagic);
        }
        let version = u16_at(0x206);
        if version < MIN_PROTOCOL {
            return Err(BzImageError::OldProtocol {
                major: (version >> 8) as u8,
                minor: version as u8,
            });
        }
        let xloadflags = u16_at(0x236);
        if xloadflags & XLF_KERNEL_64 == 0 {
            return Err(BzImageError::Not64Bit(xloadflags));
        }
        let kernel_version = match u16_at(0x20e) {
            0 => None,
            ptr => c_string(file, usize::from(ptr) + 0x200),
        };
        Ok(SetupHeader {
            setup_sects: u8_at(0x1f1),
            syssize: u32_at(0x1f4),
            version,
            loadflags: u8_at(0x211),
            code32_start: u32_at(0x214),
            initrd_addr_max: u32_at(0x22c),
            kernel_alignment: u32_at(0x230),
            relocatable_kernel: u8_at(0x234),
            min_alignment: u8_at(0x235),
            xloadflags,
            cmdline_size: u32_at(0x238),
            payload_offset: u32_at(0x248),
            payload_length: u32_at(0x24c),
            pref_address: u64_at(0x258),
            init_size: u32_at(0x260),
            handover_offset: u32_at(0x264),
            kernel_info_offset: if version >= 0x020f { u32_at(0x268) } else { 0 },
            kernel_version,
        })
    }

    /// Setup sectors after the boot sector, with the historical 0 → 4 rule.
    pub fn effective_setup_sects(&self) -> usize {
        match self.setup_sects {
            0 => 4,
            n => usize::from(n),
        }
    }

    /// File offset of the protected-mode code: `(setup_sects + 1) * 512`.
    pub fn protected_mode_offset(&self) -> usize {
        (self.effective_setup_sects() + 1) * 512
    }

    /// Boot protocol as "2.15".
    pub fn protocol(&self) -> String {
        format!("{}.{:02}", self.version >> 8, self.version & 0xff)
    }

    /// The protected-mode code in `file` (as loaded at `code32_start`).
    /// `syssize` bounds it when it fits; a signature may follow.
    pub fn protected_mode_code<'a>(&self, file: &'a [u8]) -> Result<&'a [u8], BzImageError> {
        let start = self.protected_mode_offset();
        let code = file.get(start..).ok_or(BzImageError::SetupTruncated {
            setup_bytes: start,
            file_len: file.len(),
        })?;
        // syssize 0 (never seen in a real kernel) is taken as "up to the end".
        let declared = (self.syssize as usize).saturating_mul(16);
        Ok(code
            .get(..declared)
            .filter(|_| declared > 0)
            .unwrap_or(code))
    }

    /// End of the memory the kernel uses while booting when its protected-mode
    /// code is loaded at `load_addr`: the decompressor writes the kernel at
    /// `pref_address` or at the load address rounded up to `kernel_alignment`
    /// (whichever is higher, to be safe for both relocatable and fixed
    /// kernels) and needs `init_size` bytes there. All three come from the
    /// file, so an end that wraps or lies beyond 52 bits is refused.
    pub fn boot_end(&self, load_addr: u64) -> Result<u64, BzImageError> {
        let beyond = || BzImageError::BootBeyondMemory {
            pref_address: self.pref_address,
            init_size: self.init_size,
        };
        let align = u64::from(self.kernel_alignment).max(MIN_KERNEL_ALIGN);
        let aligned = load_addr
            .div_ceil(align)
            .checked_mul(align)
            .ok_or_else(beyond)?;
        aligned
            .max(self.pref_address)
            .checked_add(u64::from(self.init_size))
            .filter(|&end| end <= PHYS_LIMIT)
            .ok_or_else(beyond)
    }

    /// The compressed payload inside the protected-mode code.
    pub fn payload<'a>(&self, file: &'a [u8]) -> Result<&'a [u8], BzImageError> {
        let code = self.protected_mode_code(file)?;
        let start = self.payload_offset as usize;
        let end = start.checked_add(self.payload_length as usize);
        end.and_then(|end| code.get(start..end))
            .filter(|p| !p.is_empty())
            .ok_or(BzImageError::PayloadOutOfBounds {
                offset: self.payload_offset,
                length: self.payload_length,
                available: code.len(),
            })
    }
}

/// A NUL-terminated printable string at `off`, at most 256 bytes.
fn c_string(file: &[u8], off: usize) -> Option<String> {
    let tail = file.get(off..)?;
    let tail = &tail[..tail.len().min(256)];
    let end = tail.iter().position(|&b| b == 0)?;
    let s = &tail[..end];
    (!s.is_empty() && s.iter().all(|b| (0x20..0x7f).contains(b)))
        .then(|| String::from_utf8_lossy(s).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(version: u16, xloadflags: u16) -> Vec<u8> {
        let mut f = vec![0u8; 0x1000];
        f[0x1f1] = 1;
        f[0x202..0x206].copy_from_slice(&HDRS_MAGIC.to_le_bytes());
        f[0x206..0x208].copy_from_slice(&version.to_le_bytes());
        f[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
        f[0x248..0x24c].copy_from_slice(&0x10u32.to_le_bytes());
        f[0x24c..0x250].copy_from_slice(&0x20u32.to_le_bytes());
        f
    }

    #[test]
    fn accepts_modern_64bit_header() {
        let f = header(0x020f, XLF_KERNEL_64);
        let h = SetupHeader::parse(&f).expect("valid header");
        assert_eq!(h.protocol(), "2.15");
        assert_eq!(h.protected_mode_offset(), 1024);
        assert_eq!(h.payload(&f).expect("in bounds").len(), 0x20);
    }

    #[test]
    fn rejects_old_protocol_and_32bit() {
        assert_eq!(
            SetupHeader::parse(&header(0x020b, XLF_KERNEL_64)),
            Err(BzImageError::OldProtocol {
                major: 2,
                minor: 11
            })
        );
        assert_eq!(
            SetupHeader::parse(&header(0x020f, 0)),
            Err(BzImageError::Not64Bit(0))
        );
        assert_eq!(
            SetupHeader::parse(&[0; 100]),
            Err(BzImageError::TooShort(100))
        );
    }

    #[test]
    fn payload_past_end_is_an_error() {
        let mut f = header(0x020f, XLF_KERNEL_64);
        f[0x24c..0x250].copy_from_slice(&0x10_0000u32.to_le_bytes());
        let h = SetupHeader::parse(&f).expect("valid header");
        assert!(matches!(
            h.payload(&f),
            Err(BzImageError::PayloadOutOfBounds { .. })
        ));
    }

    #[test]
    fn boot_end_that_wraps_is_refused() {
        let mut bytes = vec![0u8; HEADER_END];
        bytes[0x202..0x206].copy_from_slice(b"HdrS");
        bytes[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        bytes[0x236..0x238].copy_from_slice(&XLF_KERNEL_64.to_le_bytes());
        bytes[0x260..0x264].copy_from_slice(&0x80_0000u32.to_le_bytes());
        let mut h = SetupHeader::parse(&bytes).expect("parses");
        h.pref_address = 0x100_0000;
        assert_eq!(h.boot_end(0x10_0000), Ok(0x180_0000));
        h.kernel_alignment = 0x100_0000;
        assert_eq!(h.boot_end(0x10_0000), Ok(0x180_0000));
        h.pref_address = u64::MAX - 0xffff;
        let err = h.boot_end(0x10_0000).expect_err("wraps");
        assert!(
            err.to_string().contains("beyond any physical address"),
            "{err}"
        );
        h.pref_address = 1 << 60;
        assert!(h.boot_end(0x10_0000).is_err());
    }
}
