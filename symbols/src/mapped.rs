//! Read-only memory maps of input files (vmlinux, decompressor ELF).
//!
//! A distro vmlinux with DWARF is hundreds of megabytes; mapping it lets the
//! ELF symbol table and the DWARF sections be read in place, touching only the
//! pages a lookup needs, instead of copying the whole file into memory.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;

/// Errors opening or mapping an input file.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    /// The file could not be opened or its size read.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// mmap(2) refused the file.
    #[error("cannot map {path}: {source}")]
    Map {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file has no bytes (nothing to map, nothing to parse).
    #[error("{path} is empty")]
    Empty {
        /// The file.
        path: PathBuf,
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
        let file = File::open(path).map_err(|source| MapError::Open {
            path: path.to_owned(),
            source,
        })?;
        let len = file
            .metadata()
            .map_err(|source| MapError::Open {
                path: path.to_owned(),
                source,
            })?
            .len();
        if len == 0 {
            return Err(MapError::Empty {
                path: path.to_owned(),
            });
        }
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
