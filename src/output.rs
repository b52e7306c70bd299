//! Creating output files without clobbering what is not ours to replace.
//!
//! boottrace runs as root and is handed output paths by users: `-o /dev/null`
//! must not replace the device node, `-o somedir` must not move a directory
//! aside, and a symlink at the output path (dangling or not) must not be
//! followed to write somewhere else. So, for every output:
//! - a symlink at the path is refused (resolve it yourself and pass the target);
//! - anything there that is not a regular file (directory, device, FIFO,
//!   socket) is refused;
//! - an existing regular file is replaced, or kept as `PATH.old` when asked.
//!
//! Two ways to write:
//! - [`create`]: the bytes go to a temporary file in the same directory, and
//!   [`OutputFile::commit`] renames it into place; an error or a drop before
//!   `commit` leaves the old file untouched and removes the temporary one.
//!   For flamegraphs, exports, diffs.
//! - [`create_in_place`]: the file itself, created with
//!   `O_CREAT | O_EXCL | O_NOFOLLOW` after an existing regular file was moved
//!   to `PATH.old` (or removed). For the trace, which is written while the
//!   guest runs and must stay readable if boottrace is killed.

use std::ffi::OsString;
use std::fs::{File, OpenOptions, Permissions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use boottrace_symbols::input::kind_of;
use tempfile::NamedTempFile;

/// What to do with an existing regular file at the output path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backup {
    /// Keep it as `PATH.old` (replacing an older `.old`).
    Old,
    /// Replace it.
    None,
}

/// Why an output file could not be created or put in place.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// A symlink is at the output path; it is not followed.
    #[error("{} is a symbolic link; not following it (give the target path itself)", path.display())]
    Symlink {
        /// The output path.
        path: PathBuf,
    },
    /// Something that is not a regular file is at the output path.
    #[error("{} is a {kind}, not a regular file; refusing to replace it", path.display())]
    NotRegular {
        /// The output path.
        path: PathBuf,
        /// What is there ("directory", "character device", ...).
        kind: &'static str,
    },
    /// Creating, writing, renaming or inspecting a file failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done ("create", "write", ...).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
}

/// What is at the output path now.
enum Existing {
    Nothing,
    Regular,
}

/// Looks at the path without following a symlink there.
fn inspect(path: &Path) -> Result<Existing, OutputError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Existing::Nothing),
        Err(source) => Err(OutputError::Io {
            action: "inspect",
            path: path.to_owned(),
            source,
        }),
        Ok(m) if m.file_type().is_symlink() => Err(OutputError::Symlink {
            path: path.to_owned(),
        }),
        Ok(m) if m.file_type().is_file() => Ok(Existing::Regular),
        Ok(m) => Err(OutputError::NotRegular {
            path: path.to_owned(),
            kind: kind_of(m.file_type()),
        }),
    }
}

/// `PATH.old`.
pub fn old_path(path: &Path) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".old");
    PathBuf::from(name)
}

/// Moves the regular file at `path` to `PATH.old`.
fn keep_old(path: &Path) -> Result<(), OutputError> {
    let old = old_path(path);
    // An older `.old` goes first: renaming over an existing file makes ext4
    // write the renamed file's data out at once (auto_da_alloc), milliseconds
    // `record` spends before the boot. remove_file removes a symlink itself,
    // never its target; a directory stays, and the rename below reports it.
    let _ = std::fs::remove_file(&old);
    // rename(2) replaces a symlink or file at `.old` itself, never its target;
    // a directory there makes it fail, which is reported.
    std::fs::rename(path, &old).map_err(|source| OutputError::Io {
        action: "keep the previous file as",
        path: old,
        source,
    })
}

/// The directory an output path lives in (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// An output being written to a temporary file next to its final path.
/// [`OutputFile::commit`] puts it in place; dropping it without a commit
/// removes the temporary file and leaves the path as it was.
#[derive(Debug)]
pub struct OutputFile {
    writer: BufWriter<NamedTempFile>,
    path: PathBuf,
    backup: Backup,
}

/// Starts writing the output `path` (see the module docs for what is refused).
pub fn create(path: &Path, backup: Backup) -> Result<OutputFile, OutputError> {
    // Refuse early, before the caller does any work.
    inspect(path)?;
    let name = path.file_name().map(OsString::from).unwrap_or_default();
    let mut prefix = OsString::from(".");
    prefix.push(&name);
    prefix.push(".");
    let tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".tmp")
        // Like File::create: 0666 less the umask.
        .permissions(Permissions::from_mode(0o666))
        .tempfile_in(parent_dir(path))
        .map_err(|source| OutputError::Io {
            action: "create a temporary file for",
            path: path.to_owned(),
            source,
        })?;
    Ok(OutputFile {
        writer: BufWriter::new(tmp),
        path: path.to_owned(),
        backup,
    })
}

impl OutputFile {
    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes the bytes to disk and renames the temporary file to the
    /// output path (after moving an existing regular file to `.old` when
    /// asked). The path is checked again first: what appeared there while
    /// writing is refused the same way.
    pub fn commit(self) -> Result<(), OutputError> {
        let path = self.path;
        let io = |action: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| OutputError::Io {
                action,
                path,
                source,
            }
        };
        let tmp = self
            .writer
            .into_inner()
            .map_err(|e| e.into_error())
            .map_err(io("write", &path))?;
        tmp.as_file().sync_all().map_err(io("write", &path))?;
        let replace = match (inspect(&path)?, self.backup) {
            (Existing::Nothing, _) => false,
            (Existing::Regular, Backup::Old) => {
                keep_old(&path)?;
                false
            }
            (Existing::Regular, Backup::None) => true,
        };
        let placed = if replace {
            tmp.persist(&path).map(drop)
        } else {
            // Nothing may be at the path now: if something appeared since the
            // check (a device node, a symlink), fail rather than replace it.
            tmp.persist_noclobber(&path).map(drop)
        };
        placed
            .map_err(|e| e.error)
            .map_err(io("rename into", &path))
    }
}

impl Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

/// Creates the file at `path` itself, for a writer whose file must be valid
/// at every moment (the trace, read back after a SIGKILL): an existing
/// regular file is moved to `PATH.old` or removed, then the path is created
/// with `O_CREAT | O_EXCL | O_NOFOLLOW`, so whatever appeared there since the
/// check (a symlink, a device) makes the open fail instead of being written.
pub fn create_in_place(path: &Path, backup: Backup) -> Result<File, OutputError> {
    match (inspect(path)?, backup) {
        (Existing::Nothing, _) => {}
        (Existing::Regular, Backup::Old) => keep_old(path)?,
        (Existing::Regular, Backup::None) => {
            std::fs::remove_file(path).map_err(|source| OutputError::Io {
                action: "remove",
                path: path.to_owned(),
                source,
            })?
        }
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o666)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|source| match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_symlink() => OutputError::Symlink {
                path: path.to_owned(),
            },
            Ok(m) if !m.file_type().is_file() => OutputError::NotRegular {
                path: path.to_owned(),
                kind: kind_of(m.file_type()),
            },
            _ => OutputError::Io {
                action: "create",
                path: path.to_owned(),
                source,
            },
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, FileTypeExt};
    use std::time::{Duration, Instant};

    fn write_all(path: &Path, backup: Backup, bytes: &[u8]) -> Result<(), OutputError> {
        let mut out = create(path, backup)?;
        out.write_all(bytes).expect("write");
        out.commit()
    }

    /// Names in `dir`, sorted (to see that no temporary file was left).
    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    }

    #[test]
    fn new_file_is_written_on_commit_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("out.svg");
        let mut out = create(&p, Backup::None).expect("create");
        out.write_all(b"<svg/>").expect("write");
        assert!(!p.exists(), "nothing at the path before commit");
        out.commit().expect("commit");
        assert_eq!(std::fs::read(&p).expect("read"), b"<svg/>");
        assert_eq!(names(dir.path()), vec!["out.svg"]);
        // Same mode as File::create would give (0666 less the umask), not 0600.
        let plain = dir.path().join("plain");
        File::create(&plain).expect("create");
        let mode = |p: &Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(&p), mode(&plain));
    }

    #[test]
    fn drop_without_commit_keeps_the_old_file_and_no_temporary() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("out.svg");
        std::fs::write(&p, b"before").expect("write");
        {
            let mut out = create(&p, Backup::Old).expect("create");
            out.write_all(b"half").expect("write");
        }
        assert_eq!(std::fs::read(&p).expect("read"), b"before");
        assert_eq!(names(dir.path()), vec!["out.svg"]);
    }

    #[test]
    fn existing_regular_file_is_replaced_or_kept_as_old() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("out.txt");
        std::fs::write(&p, b"one").expect("write");
        write_all(&p, Backup::None, b"two").expect("replace");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        assert_eq!(names(dir.path()), vec!["out.txt"]);
        write_all(&p, Backup::Old, b"three").expect("replace keeping old");
        assert_eq!(std::fs::read(&p).expect("read"), b"three");
        assert_eq!(std::fs::read(old_path(&p)).expect("old"), b"two");
    }

    #[test]
    fn directory_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().join("sub");
        std::fs::create_dir(&d).expect("mkdir");
        for backup in [Backup::Old, Backup::None] {
            let err = create(&d, backup).expect_err("directory");
            assert!(err.to_string().contains("is a directory"), "{err}");
            let err = create_in_place(&d, backup).expect_err("directory");
            assert!(err.to_string().contains("is a directory"), "{err}");
        }
        assert!(d.is_dir());
        assert_eq!(names(dir.path()), vec!["sub"]);
    }

    #[test]
    fn fifo_is_refused_without_blocking() {
        // Stands in for /dev/null and other device nodes: not a regular file.
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("fifo");
        mkfifo(&f);
        let t = Instant::now();
        for backup in [Backup::Old, Backup::None] {
            let err = create(&f, backup).expect_err("fifo");
            assert!(err.to_string().contains("is a FIFO"), "{err}");
            let err = create_in_place(&f, backup).expect_err("fifo");
            assert!(err.to_string().contains("is a FIFO"), "{err}");
        }
        assert!(t.elapsed() < Duration::from_secs(2));
        let ft = std::fs::symlink_metadata(&f)
            .expect("still there")
            .file_type();
        assert!(ft.is_fifo());
        assert_eq!(names(dir.path()), vec!["fifo"]);
    }

    #[test]
    fn symlink_to_a_file_is_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("precious");
        std::fs::write(&target, b"keep me").expect("write");
        let link = dir.path().join("out.svg");
        symlink(&target, &link).expect("symlink");
        for backup in [Backup::Old, Backup::None] {
            let err = create(&link, backup).expect_err("symlink");
            assert!(err.to_string().contains("symbolic link"), "{err}");
            let err = create_in_place(&link, backup).expect_err("symlink");
            assert!(err.to_string().contains("symbolic link"), "{err}");
        }
        assert_eq!(std::fs::read(&target).expect("read"), b"keep me");
        assert_eq!(names(dir.path()), vec!["out.svg", "precious"]);
    }

    #[test]
    fn dangling_symlink_target_is_not_created() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("elsewhere");
        let link = dir.path().join("out.data");
        symlink(&target, &link).expect("symlink");
        assert!(create(&link, Backup::Old).is_err());
        let err = create_in_place(&link, Backup::Old).expect_err("dangling symlink");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(!target.exists(), "the link's target was created");
    }

    #[test]
    fn symlink_appearing_before_commit_is_not_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("precious");
        std::fs::write(&target, b"keep me").expect("write");
        let p = dir.path().join("out.svg");
        let mut out = create(&p, Backup::None).expect("create");
        out.write_all(b"new").expect("write");
        symlink(&target, &p).expect("symlink");
        let err = out.commit().expect_err("symlink appeared");
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read(&target).expect("read"), b"keep me");
        assert_eq!(names(dir.path()), vec!["out.svg", "precious"]);
    }

    #[test]
    fn in_place_keeps_old_and_creates_exclusively() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("boottrace.data");
        std::fs::write(&p, b"previous recording").expect("write");
        let mut f = create_in_place(&p, Backup::Old).expect("create");
        f.write_all(b"new").expect("write");
        drop(f);
        assert_eq!(std::fs::read(&p).expect("read"), b"new");
        assert_eq!(
            std::fs::read(old_path(&p)).expect("old"),
            b"previous recording"
        );
        let f = create_in_place(&p, Backup::None).expect("replace");
        drop(f);
        assert_eq!(std::fs::read(&p).expect("read"), b"");
        assert_eq!(
            std::fs::read(old_path(&p)).expect("old untouched"),
            b"previous recording"
        );
    }

    #[test]
    fn bare_file_name_uses_the_current_directory() {
        assert_eq!(parent_dir(Path::new("out.svg")), Path::new("."));
        assert_eq!(parent_dir(Path::new("a/out.svg")), Path::new("a"));
    }
}
