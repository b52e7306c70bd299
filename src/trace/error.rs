//! Errors of the trace writer and reader.

use std::path::PathBuf;

/// What can go wrong writing or reading a `boottrace.data` file.
///
/// Damage *after* the metadata record is not an error: the reader keeps what
/// it read and reports the damage in `Trace::warnings`.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// I/O on the trace file failed.
    #[error("trace file {path}: {source}")]
    Io {
        /// The trace file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not start with boottrace's magic bytes.
    #[error("{path} is not a boottrace trace file (bad magic bytes)")]
    BadMagic {
        /// The file that was read.
        path: PathBuf,
    },
    /// The file's format version is one this build cannot read.
    #[error(
        "{path}: trace format version {major}.{minor} is not supported \
         (this boottrace reads 1.x to {supported}.x)"
    )]
    UnsupportedVersion {
        /// The file that was read.
        path: PathBuf,
        /// Major version found in the file.
        major: u16,
        /// Minor version found in the file.
        minor: u16,
        /// The newest major version this build reads.
        supported: u16,
    },
    /// The header sets flags this build does not know.
    #[error("{path}: trace header flags {flags:#x} are not supported by this boottrace")]
    UnsupportedFlags {
        /// The file that was read.
        path: PathBuf,
        /// The flags found.
        flags: u32,
    },
    /// The file ends or is damaged before its metadata record is complete.
    #[error("{path}: no usable metadata record ({detail})")]
    MissingMeta {
        /// The file that was read.
        path: PathBuf,
        /// Why the metadata could not be read.
        detail: String,
    },
    /// A record could not be encoded.
    #[error("cannot encode trace record: {0}")]
    Encode(#[from] postcard::Error),
    /// An encoded record exceeds the format's size limit.
    #[error("trace record of {len} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge {
        /// Encoded length.
        len: usize,
        /// The limit ([`crate::trace::MAX_RECORD_LEN`]).
        max: usize,
    },
    /// The metadata for a deferred writer could not be made (e.g. the kernel
    /// analysis failed); nothing was written.
    #[error("{0}")]
    NoMeta(String),
    /// The background writer thread has stopped (after an I/O error or `finish`).
    #[error("the trace writer has stopped")]
    WriterClosed,
}
