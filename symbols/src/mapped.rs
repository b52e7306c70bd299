//! Read-only memory maps of input files (vmlinux, decompressor ELF).
//!
//! A distro vmlinux with DWARF is hundreds of megabytes; mapping it lets the
//! ELF symbol table and the DWARF sections be read in place, touching only the
//! pages a lookup needs, instead of copying the whole file into memory.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

use crate::input::{open_regular, InputError, InputFile};

/// Largest file mapped (a distro vmlinux with DWARF is ~1 GiB at most).
pub const MAX_MAPPED_FILE: u64 = 4 << 30;

/// Errors opening or mapping an input file.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// The file is not a non-empty regular file within the size cap, or could not be opened.
    #[error(transparent)]
    Input(#[from] InputError),
    /// mmap(2) refused the file.
    #[error("cannot map {path}: {source}")]
    Map {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A whole file mapped read-only, shareable between the symbol-table reader
/// and the lazily built DWARF context.
#[derive(Debug, Clone)]
pub struct MappedFile {
    map: Arc<Mmap>,
    path: PathBuf,
}

impl MappedFile {
    /// Maps `path` read-only.
    pub fn open(path: &Path) -> Result<Self, MapError> {
        // Regular files only: mapping a device or FIFO is refused before any read.
        let InputFile { file, .. } = open_regular(path, MAX_MAPPED_FILE, "mapped ELF file")?;
        // SAFETY: the map is read-only and private to this process. Another
        // process truncating or rewriting the file while it is mapped would
        // change the bytes under us (or raise SIGBUS); the inputs are build
        // artefacts that are not rewritten while a report runs, the same
        // assumption addr2line's loader and other mmap-based symbolizers make.
        let map = unsafe { Mmap::map(&file) }.map_err(|source| MapError::Map {
            path: path.to_owned(),
            source,
        })?;
        Ok(MappedFile {
            map: Arc::new(map),
            path: path.to_owned(),
        })
    }

    /// The file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// The path the file was mapped from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The shared map, for readers that outlive a borrow (DWARF sections).
    pub(crate) fn shared(&self) -> Arc<Mmap> {
        Arc::clone(&self.map)
    }
}
