//! Opening input files (kernel images, vmlinux, System.map, initrd) so that a
//! hostile path cannot hang or exhaust the reader.
//!
//! Only regular files are accepted: a FIFO would block the open or the read
//! forever, `/dev/zero` never ends, a directory opens but cannot be read. The
//! open itself uses `O_NONBLOCK`, so a FIFO without a writer is refused instead
//! of blocking; the type is then checked on the opened descriptor (`fstat`),
//! so a path swapped between check and use cannot slip through. Sizes are
//! checked before anything is read, and reads are bounded by the size cap
//! even if the file grows afterwards.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why an input file was refused.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The file could not be opened or its metadata read.
    #[error("cannot open {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The path names a directory, FIFO, device or socket.
    #[error("{} is not a regular file (it is a {kind})", path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead ("directory", "FIFO", ...).
        kind: &'static str,
    },
    /// The file is larger than anything of its kind can be.
    #[error("{} is {size} bytes, more than the {max} bytes a {what} may have", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The cap.
        max: u64,
        /// What the file was meant to be ("kernel image", ...).
        what: &'static str,
    },
    /// The file has no bytes.
    #[error("{} is empty", path.display())]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// Reading the file failed.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A regular file opened for reading, with its size at open time.
#[derive(Debug)]
pub struct InputFile {
    /// The open file (positioned at its start).
    pub file: File,
    /// Its size in bytes when opened (at most the cap given to [`open_regular`]).
    pub size: u64,
    /// The path it was opened from.
    pub path: PathBuf,
}

/// What a non-regular file is, in words ("directory", "FIFO", …).
pub fn kind_of(ft: std::fs::FileType) -> &'static str {
    if ft.is_dir() {
        "directory"
    } else if ft.is_fifo() {
        "FIFO"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// Opens `path` for reading if it is a non-empty regular file of at most
/// `max` bytes; `what` names the kind of file in the size error.
pub fn open_regular(path: &Path, max: u64, what: &'static str) -> Result<InputFile, InputError> {
    // O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer.
    // It has no effect on reads from regular files, the only kind kept.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|source| InputError::Open {
            path: path.to_owned(),
            source,
        })?;
    let meta = file.metadata().map_err(|source| InputError::Open {
        path: path.to_owned(),
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(InputError::NotRegular {
            path: path.to_owned(),
            kind: kind_of(meta.file_type()),
        });
    }
    let size = meta.len();
    if size == 0 {
        return Err(InputError::Empty {
            path: path.to_owned(),
        });
    }
    if size > max {
        return Err(InputError::TooLarge {
            path: path.to_owned(),
            size,
            max,
            what,
        });
    }
    Ok(InputFile {
        file,
        size,
        path: path.to_owned(),
    })
}

impl InputFile {
    /// Reads up to `n` bytes from the current position (fewer at end of file).
    pub fn read_head(&mut self, n: usize) -> Result<Vec<u8>, InputError> {
        let mut head = Vec::with_capacity(n.min(self.size as usize));
        (&mut self.file)
            .take(n as u64)
            .read_to_end(&mut head)
            .map_err(|source| InputError::Read {
                path: self.path.clone(),
                source,
            })?;
        Ok(head)
    }

    /// Reads the rest of the file, never more than the size seen at open
    /// (a file that grows meanwhile is cut there, not followed).
    pub fn read_rest(mut self, mut buf: Vec<u8>) -> Result<Vec<u8>, InputError> {
        let left = self.size.saturating_sub(buf.len() as u64);
        buf.reserve(left as usize);
        (&mut self.file)
            .take(left)
            .read_to_end(&mut buf)
            .map_err(|source| InputError::Read {
                path: self.path.clone(),
                source,
            })?;
        Ok(buf)
    }
}

/// Reads the whole regular file at `path` (at most `max` bytes).
pub fn read_regular(path: &Path, max: u64, what: &'static str) -> Result<Vec<u8>, InputError> {
    open_regular(path, max, what)?.read_rest(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn regular_file_is_read_within_its_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello world").expect("write");
        assert_eq!(read_regular(&p, 100, "test").expect("read"), b"hello world");
        let mut f = open_regular(&p, 100, "test").expect("open");
        assert_eq!(f.read_head(5).expect("head"), b"hello");
        assert_eq!(
            f.read_rest(b"hello".to_vec()).expect("rest"),
            b"hello world"
        );
        let err = read_regular(&p, 4, "test").expect_err("too large");
        assert!(matches!(
            err,
            InputError::TooLarge {
                size: 11,
                max: 4,
                ..
            }
        ));
    }

    #[test]
    fn directory_fifo_device_and_empty_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = open_regular(dir.path(), 100, "test").expect_err("directory");
        assert!(
            err.to_string()
                .contains("not a regular file (it is a directory)"),
            "{err}"
        );

        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
        // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let t = Instant::now();
        let err = open_regular(&fifo, 100, "test").expect_err("fifo");
        assert!(
            t.elapsed() < Duration::from_secs(2),
            "open of a FIFO blocked"
        );
        assert!(err.to_string().contains("it is a FIFO"), "{err}");

        let err = open_regular(Path::new("/dev/zero"), 100, "test").expect_err("device");
        assert!(err.to_string().contains("character device"), "{err}");

        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").expect("write");
        assert!(matches!(
            open_regular(&empty, 100, "test"),
            Err(InputError::Empty { .. })
        ));
    }
}
