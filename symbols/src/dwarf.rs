//! Inline frames and file:line from a vmlinux's DWARF, through `addr2line`.
//!
//! Nothing is parsed until the first address needs it: [`DwarfInfo::open`]
//! only checks that the ELF has a `.debug_info` section. The first
//! [`DwarfInfo::frames`] call builds the `addr2line::Context` (unit headers and
//! address ranges); addr2line then parses each compilation unit's functions
//! and line table the first time an address in it is asked for. DWARF 4 and 5
//! both work (the test kernels use 5); compressed sections (`SHF_COMPRESSED`)
//! are decompressed once, everything else is read in place from the mmap.
//!
//! File names come out relative to the kernel source tree when it can be
//! found (the directory holding the `init/main.c` of the unit containing
//! `start_kernel`) and relative to the build directory for generated files,
//! so the same source line has the same name whichever machine built the
//! kernel — which keeps diffs of two builds meaningful.

use std::borrow::Cow;
use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};

use gimli::{EndianReader, Reader as _, RunTimeEndian, SectionId};
use memmap2::Mmap;
use object::{Object, ObjectSection};

use crate::mapped::MappedFile;

/// Deepest inline chain kept for one address; real ones are under 20.
pub const MAX_INLINE_DEPTH: usize = 64;

/// Largest decompressed DWARF section accepted (hostile size fields).
const MAX_DECOMPRESSED_SECTION: u64 = 4 << 30;

/// Errors reading DWARF.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DwarfError {
    /// The ELF container could not be parsed.
    #[error("DWARF: cannot parse ELF: {0}")]
    Object(String),
    /// A DWARF section is compressed with a method `object` cannot undo, or
    /// claims an absurd size.
    #[error("DWARF section {section}: {reason}")]
    Section {
        /// Section name.
        section: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// gimli or addr2line rejected the DWARF.
    #[error("DWARF: {0}")]
    Gimli(#[from] gimli::Error),
}

/// Bytes of one DWARF section: a range of the shared mmap, or a decompressed
/// copy. Cloning is cheap (an `Arc`), which is what `EndianReader` needs.
#[derive(Debug, Clone)]
pub(crate) enum SectionBytes {
    Mapped {
        map: Arc<Mmap>,
        start: usize,
        len: usize,
    },
    Owned(Arc<[u8]>),
}

impl Deref for SectionBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            // Built by `section_bytes` only from ranges checked to lie in the map.
            SectionBytes::Mapped { map, start, len } => map.get(*start..start + len).unwrap_or(&[]),
            SectionBytes::Owned(bytes) => bytes,
        }
    }
}

// SAFETY: the bytes live in an `Arc<Mmap>` or an `Arc<[u8]>`; moving the
// `SectionBytes` value does not move them, and they are never mutated.
unsafe impl stable_deref_trait::StableDeref for SectionBytes {}
// SAFETY: a clone shares the same `Arc`, so it derefs to the same address.
unsafe impl stable_deref_trait::CloneStableDeref for SectionBytes {}

/// The gimli reader over [`SectionBytes`] (shared with `dwarf_types`).
pub(crate) type Reader = EndianReader<RunTimeEndian, SectionBytes>;

/// One frame as DWARF names it; innermost first in [`DwarfInfo::frames`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DwarfFrame {
    /// Function (or inlined function) name, when DWARF has one.
    pub function: Option<Arc<str>>,
    /// Source file, relative to the kernel tree when possible.
    pub file: Option<Arc<str>>,
    /// Source line.
    pub line: Option<u32>,
}

/// Path prefixes stripped from file names.
#[derive(Debug, Default)]
struct PathRoots {
    source: Option<String>,
    build: Option<String>,
}

impl PathRoots {
    fn shorten<'a>(&self, path: &'a str) -> &'a str {
        for root in [&self.source, &self.build].into_iter().flatten() {
            if let Some(rest) = path.strip_prefix(root.as_str()) {
                return rest;
            }
        }
        path
    }
}

struct Ready {
    ctx: addr2line::Context<Reader>,
    roots: PathRoots,
    /// Interned file and function names: a boot's samples share a few
    /// thousand of them.
    names: std::collections::HashMap<Box<str>, Arc<str>>,
}

impl Ready {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.names.get(s) {
            return Arc::clone(a);
        }
        let a: Arc<str> = Arc::from(s);
        self.names.insert(Box::from(s), Arc::clone(&a));
        a
    }
}

enum State {
    Unparsed,
    Ready(Box<Ready>),
    Failed(DwarfError),
}

/// Lazily parsed DWARF of one ELF file. `Send + Sync`: the addr2line context
/// (which caches with `OnceCell`s) sits behind a mutex; callers cache results
/// per address, so the lock is taken once per distinct address.
pub struct DwarfInfo {
    file: MappedFile,
    /// An address inside `start_kernel`, used to find the source tree root.
    root_probe: Option<u64>,
    state: Mutex<State>,
}

impl std::fmt::Debug for DwarfInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DwarfInfo")
            .field("path", &self.file.path())
            .finish_non_exhaustive()
    }
}

impl DwarfInfo {
    /// `Some` when the mapped ELF has a `.debug_info` section; nothing else is
    /// parsed yet. `root_probe` is an address inside `start_kernel` (from the
    /// symbol table), used to find the kernel source tree for short file names.
    pub fn open(file: &MappedFile, root_probe: Option<u64>) -> Result<Option<Self>, DwarfError> {
        let obj =
            object::File::parse(file.bytes()).map_err(|e| DwarfError::Object(e.to_string()))?;
        let has_info = obj
            .section_by_name(".debug_info")
            .is_some_and(|s| s.size() > 0);
        Ok(has_info.then(|| DwarfInfo {
            file: file.clone(),
            root_probe,
            state: Mutex::new(State::Unparsed),
        }))
    }

    /// Frames for `addr`, innermost (most deeply inlined) first, the function
    /// that really contains `addr` last. Empty when DWARF does not cover the
    /// address (assembly without debug info, padding). The first call parses.
    pub fn frames(&self, addr: u64) -> Result<Vec<DwarfFrame>, DwarfError> {
        // addr2line probes [addr, addr + 1): the last address would overflow,
        // and no code lives there.
        if addr == u64::MAX {
            return Ok(Vec::new());
        }
        // A panic elsewhere while holding the lock leaves the state consistent
        // (every transition is a single assignment), so poisoning is ignored.
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if matches!(*state, State::Unparsed) {
            *state = match self.build() {
                Ok(ready) => State::Ready(Box::new(ready)),
                Err(e) => State::Failed(e),
            };
        }
        match &mut *state {
            State::Ready(ready) => lookup(ready, addr),
            State::Failed(e) => Err(e.clone()),
            State::Unparsed => Ok(Vec::new()),
        }
    }

    /// True once the context has been built (for tests of laziness).
    pub fn is_parsed(&self) -> bool {
        !matches!(
            *self.state.lock().unwrap_or_else(PoisonError::into_inner),
            State::Unparsed
        )
    }

    fn build(&self) -> Result<Ready, DwarfError> {
        let data = self.file.bytes();
        let obj = object::File::parse(data).map_err(|e| DwarfError::Object(e.to_string()))?;
        let endian = if obj.is_little_endian() {
            RunTimeEndian::Little
        } else {
            RunTimeEndian::Big
        };
        let map = self.file.shared();
        let dwarf = gimli::Dwarf::load(|id: SectionId| -> Result<Reader, DwarfError> {
            Ok(EndianReader::new(section_bytes(&obj, &map, id)?, endian))
        })?;
        let ctx = addr2line::Context::from_dwarf(dwarf)?;
        let roots = self
            .root_probe
            .map(|probe| find_roots(&ctx, probe))
            .unwrap_or_default();
        Ok(Ready {
            ctx,
            roots,
            names: Default::default(),
        })
    }
}

/// All DWARF sections of a mapped ELF loaded for gimli, the way
/// [`DwarfInfo`] loads them (mapped in place, decompressed when needed), for
/// readers other than addr2line (struct layouts in `dwarf_types`).
pub(crate) fn load_sections(file: &MappedFile) -> Result<gimli::Dwarf<Reader>, DwarfError> {
    let obj = object::File::parse(file.bytes()).map_err(|e| DwarfError::Object(e.to_string()))?;
    let endian = if obj.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    let map = file.shared();
    gimli::Dwarf::load(|id: SectionId| -> Result<Reader, DwarfError> {
        Ok(EndianReader::new(section_bytes(&obj, &map, id)?, endian))
    })
}

/// The bytes of section `id`, borrowed from the map when stored plainly.
fn section_bytes(
    obj: &object::File<'_>,
    map: &Arc<Mmap>,
    id: SectionId,
) -> Result<SectionBytes, DwarfError> {
    let Some(section) = obj.section_by_name(id.name()) else {
        return Ok(SectionBytes::Owned(Arc::from(&[][..])));
    };
    let err = |reason: String| DwarfError::Section {
        section: id.name(),
        reason,
    };
    let compressed = section
        .compressed_file_range()
        .map_err(|e| err(e.to_string()))?;
    if compressed.uncompressed_size > MAX_DECOMPRESSED_SECTION {
        return Err(err(format!(
            "claims {} bytes uncompressed",
            compressed.uncompressed_size
        )));
    }
    match section
        .uncompressed_data()
        .map_err(|e| err(e.to_string()))?
    {
        Cow::Borrowed(bytes) => {
            let base = map.as_ptr() as usize;
            let start = (bytes.as_ptr() as usize)
                .checked_sub(base)
                .filter(|s| {
                    s.checked_add(bytes.len())
                        .is_some_and(|end| end <= map.len())
                })
                .ok_or_else(|| err("section data outside the file".into()))?;
            Ok(SectionBytes::Mapped {
                map: Arc::clone(map),
                start,
                len: bytes.len(),
            })
        }
        Cow::Owned(bytes) => Ok(SectionBytes::Owned(Arc::from(bytes))),
    }
}

/// The kernel source and build directories, from the unit holding `probe`
/// (inside `start_kernel`, so the unit is `init/main.c`).
fn find_roots(ctx: &addr2line::Context<Reader>, probe: u64) -> PathRoots {
    let Some(unit) = ctx.find_dwarf_and_unit(probe).skip_all_loads() else {
        return PathRoots::default();
    };
    let text = |r: &Option<Reader>| {
        r.as_ref()
            .and_then(|r| r.to_string_lossy().ok().map(|s| s.into_owned()))
    };
    let name = text(&unit.name);
    let source = name
        .as_deref()
        .and_then(|n| n.strip_suffix("init/main.c"))
        .filter(|root| root.ends_with('/'))
        .map(str::to_owned);
    let build = text(&unit.comp_dir).map(|mut d| {
        if !d.ends_with('/') {
            d.push('/');
        }
        d
    });
    PathRoots { source, build }
}

fn lookup(ready: &mut Ready, addr: u64) -> Result<Vec<DwarfFrame>, DwarfError> {
    let mut raw: Vec<(Option<String>, Option<String>, Option<u32>)> = Vec::new();
    {
        let mut iter = ready.ctx.find_frames(addr).skip_all_loads()?;
        while let Some(frame) = iter.next()? {
            if raw.len() >= MAX_INLINE_DEPTH {
                break;
            }
            let function = match &frame.function {
                Some(name) => Some(name.raw_name()?.into_owned()),
                None => None,
            };
            let (file, line) = match &frame.location {
                Some(loc) => (
                    loc.file.map(|f| ready.roots.shorten(f).to_owned()),
                    loc.line,
                ),
                None => (None, None),
            };
            raw.push((function, file, line));
        }
    }
    Ok(raw
        .into_iter()
        .map(|(function, file, line)| DwarfFrame {
            function: function.map(|f| ready.intern(&f)),
            file: file.map(|f| ready.intern(&f)),
            line,
        })
        .collect())
}
