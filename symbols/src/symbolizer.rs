//! Sampled address → frames, from the best symbol source available.
//!
//! # How a sampled address becomes frames
//!
//! 1. **Raw RIP → address space.** The trace stores raw RIPs. While the
//!    guest boots, the VMM works out where the kernel and its decompressor
//!    ran and stores it in a [`RunLayout`](crate::layout::RunLayout)
//!    (`src/sample/kaslr.rs`), from what the guest did rather than a guess:
//!    - the KASLR slide (`kernel_virt_slide`, runtime minus link-time virtual
//!      address): for a sampled kernel-half RIP `r`, each 2 MiB-aligned
//!      candidate slide `s` is tried by comparing the guest's bytes at `r`
//!      (read through its page tables) with the image's bytes at link address
//!      `r − s`; exactly one candidate must match. A kernel that cannot move
//!      (ELF boot, non-relocatable bzImage) has slide 0;
//!    - the physical load address (head code runs at physical addresses
//!      before `startup_64` switches to virtual ones);
//!    - every base the decompressor ran at (it relocates itself before
//!      decompressing).
//!
//!    [`RunLayout::classify`](crate::layout::RunLayout::classify) turns
//!    `(rip, cpl)` into an [`AddrSpace`]: `Kernel(link-time virtual
//!    address)` — slide subtracted, physical
//!    addresses moved to the matching link-time virtual ones —,
//!    `Decompressor(ELF virtual address)`, `User`, `Setup` or `Unknown`.
//!    Everything below works on link-time addresses only, so one vmlinux,
//!    System.map or kallsyms table (whose `relative_base` is link-time too)
//!    serves every boot whatever its slide.
//!    (Return addresses of outer stack frames should be looked up at
//!    `addr − 1`, inside the call instruction; the caller does that.)
//! 2. **Address space → frames** ([`Symbolizer::resolve`]), cached per
//!    `AddrSpace` value so a boot's millions of samples cost one lookup per
//!    distinct address:
//!    - `Kernel(a)`: with vmlinux DWARF, addr2line gives the chain of inlined
//!      functions at `a`, innermost first, each with the file:line it was at;
//!      the outermost frame (the function really containing `a`) is named by
//!      the symbol table, so a name does not change with the symbol source
//!      (`foo.constprop.0` stays that in every source, and flamegraphs made
//!      with and without DWARF line up). Without DWARF, one frame from the
//!      sorted symbol table of the winning source. No symbol → `[kernel 0x…]`.
//!    - `Decompressor(a)`: `[decompressor] NAME` from the decompressor ELF's
//!      symbols, or `[decompressor]` without it (or when no symbol covers `a`).
//!    - `User` → `[user]`, `Setup` → `[setup]`, `Unknown(a)` → `[unknown 0x…]`.
//!
//!    Frames are never empty and never blank.
//!
//! # Which source wins
//! Best available, decided once in [`Symbolizer::new`]: a vmlinux with DWARF
//! ([`SourceKind::VmlinuxDwarf`]), a vmlinux with only an ELF symbol table
//! ([`SourceKind::VmlinuxSymtab`]), a System.map, kallsyms recovered from the
//! kernel image itself, else none. A file the caller names that cannot be
//! read is an error (the user asked for it); a vmlinux without any symbols
//! (e.g. the stripped ELF inside a bzImage) falls through to the next source
//! and says so in [`Symbolizer::notes`]. Matching the vmlinux to the recorded
//! kernel (build-id) is the caller's job, before this.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use serde::{Deserialize, Serialize};

use crate::dwarf::{DwarfError, DwarfInfo};
use crate::elfsyms::{self, ElfSymsError};
use crate::image::KernelImage;
use crate::layout::AddrSpace;
use crate::mapped::{MapError, MappedFile};
use crate::sysmap::{self, SysmapError};
use crate::table::SymbolTable;

/// Cache shards; a power of two. Several report threads may resolve at once.
/// Keys are guest-controlled addresses, hence std's keyed SipHash (no
/// hash flooding) rather than a faster unkeyed hash.
const SHARDS: usize = 16;
/// Cached addresses per shard. A hostile guest can make every sample a new
/// garbage address; past this, frames are computed but not kept.
const MAX_CACHED_PER_SHARD: usize = 1 << 16;

/// One frame of a symbolized address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Function name, or a bracketed label (`[user]`, `[kernel 0x…]`, …).
    pub function: Arc<str>,
    /// Source file (relative to the kernel tree when known), from DWARF.
    pub file: Option<Arc<str>>,
    /// Source line, from DWARF.
    pub line: Option<u32>,
    /// True when this function was inlined into the next (outer) frame.
    pub inlined: bool,
}

impl Frame {
    fn label(function: impl Into<Arc<str>>) -> Frame {
        Frame {
            function: function.into(),
            file: None,
            line: None,
            inlined: false,
        }
    }
}

/// Where to find symbols; every field is optional.
#[derive(Debug, Clone, Default)]
pub struct SymbolizerOptions {
    /// The kernel's vmlinux (ELF symbols; DWARF when built with debug info).
    pub vmlinux: Option<PathBuf>,
    /// The kernel's System.map.
    pub system_map: Option<PathBuf>,
    /// The kernel image (bzImage or ELF), for kallsyms when nothing better is given.
    pub image: Option<Arc<KernelImage>>,
    /// The decompressor ELF (`arch/x86/boot/compressed/vmlinux`).
    pub decompressor_elf: Option<PathBuf>,
}

/// Which kernel symbol source won.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SourceKind {
    /// vmlinux symbols plus DWARF inline frames and file:line.
    VmlinuxDwarf,
    /// vmlinux ELF symbol table, no DWARF.
    VmlinuxSymtab,
    /// System.map.
    SystemMap,
    /// kallsyms recovered from the kernel image.
    Kallsyms,
    /// Nothing: kernel addresses are shown as `[kernel 0x…]`.
    None,
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SourceKind::VmlinuxDwarf => "vmlinux (ELF symbols + DWARF inline frames and file:line)",
            SourceKind::VmlinuxSymtab => "vmlinux (ELF symbols, no DWARF)",
            SourceKind::SystemMap => "System.map",
            SourceKind::Kallsyms => "kallsyms recovered from the kernel image",
            SourceKind::None => "none (kernel addresses unnamed)",
        })
    }
}

/// Errors building a [`Symbolizer`]: a file the caller named is unusable.
#[derive(Debug, thiserror::Error)]
pub enum SymbolizerError {
    /// The vmlinux could not be mapped.
    #[error("vmlinux: {0}")]
    VmlinuxMap(#[source] MapError),
    /// The vmlinux is not an ELF file with readable symbols.
    #[error("vmlinux {path}: {source}")]
    Vmlinux {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ElfSymsError,
    },
    /// The vmlinux's DWARF sections are unusable.
    #[error("vmlinux {path}: {source}")]
    Dwarf {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: DwarfError,
    },
    /// The System.map could not be read or parsed.
    #[error(transparent)]
    SystemMap(#[from] SysmapError),
    /// The decompressor ELF could not be read.
    #[error("decompressor ELF {path}: {source}")]
    Decompressor {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ElfSymsError,
    },
}

type Shard = Mutex<HashMap<AddrSpace, Arc<[Frame]>>>;

/// Address → frames for one kernel. `Send + Sync`; cheap to share in an `Arc`.
pub struct Symbolizer {
    source: SourceKind,
    kernel: SymbolTable,
    dwarf: Option<DwarfInfo>,
    decompressor: Option<SymbolTable>,
    notes: Vec<String>,
    /// First DWARF failure seen while resolving; resolution then falls back
    /// to the symbol table for that address.
    dwarf_error: OnceLock<DwarfError>,
    hasher: RandomState,
    cache: Box<[Shard]>,
    labels: Labels,
}

/// Frames that do not depend on the address, built once.
struct Labels {
    user: Arc<[Frame]>,
    setup: Arc<[Frame]>,
    decompressor: Arc<[Frame]>,
}

impl fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Symbolizer")
            .field("source", &self.source)
            .field("kernel_symbols", &self.kernel.len())
            .field("dwarf", &self.dwarf)
            .field(
                "decompressor_symbols",
                &self.decompressor.as_ref().map(SymbolTable::len),
            )
            .finish_non_exhaustive()
    }
}

impl Symbolizer {
    /// Opens the sources in `opts` and picks the best kernel source (see the
    /// module docs). Only the winning source is read; DWARF is not parsed
    /// until an address needs it.
    pub fn new(opts: SymbolizerOptions) -> Result<Self, SymbolizerError> {
        let mut notes = Vec::new();
        let mut chosen: Option<(SourceKind, SymbolTable, Option<DwarfInfo>)> = None;

        if let Some(path) = &opts.vmlinux {
            let file = MappedFile::open(path).map_err(SymbolizerError::VmlinuxMap)?;
            let table =
                elfsyms::from_bytes(file.bytes()).map_err(|source| SymbolizerError::Vmlinux {
                    path: path.clone(),
                    source,
                })?;
            let probe = table.by_name("start_kernel").map(|s| s.addr);
            let dwarf = DwarfInfo::open(&file, probe).map_err(|source| SymbolizerError::Dwarf {
                path: path.clone(),
                source,
            })?;
            match (dwarf, table.is_empty()) {
                (Some(dwarf), _) => chosen = Some((SourceKind::VmlinuxDwarf, table, Some(dwarf))),
                (None, false) => chosen = Some((SourceKind::VmlinuxSymtab, table, None)),
                (None, true) => notes.push(format!(
                    "{} has neither symbols nor DWARF (stripped?); not used",
                    path.display()
                )),
            }
        }
        if chosen.is_none() {
            if let Some(path) = &opts.system_map {
                let table = sysmap::load(path)?.text_only();
                chosen = Some((SourceKind::SystemMap, table, None));
            }
        }
        if chosen.is_none() {
            if let Some(image) = &opts.image {
                // Recovery is only attempted when it is the best source left:
                // it scans the whole image.
                match image.kallsyms() {
                    Ok(all) => {
                        let text = all.text_only();
                        if text.is_empty() {
                            notes.push("kallsyms in the image hold no text symbols".to_owned());
                        } else {
                            chosen = Some((SourceKind::Kallsyms, text, None));
                        }
                    }
                    Err(e) => notes.push(format!("kallsyms not recovered from the image: {e}")),
                }
            }
        }
        let (source, kernel, dwarf) =
            chosen.unwrap_or((SourceKind::None, SymbolTable::default(), None));

        let decompressor = match &opts.decompressor_elf {
            Some(path) => {
                Some(
                    elfsyms::load(path).map_err(|source| SymbolizerError::Decompressor {
                        path: path.clone(),
                        source,
                    })?,
                )
            }
            None => None,
        };

        Ok(Symbolizer {
            source,
            kernel,
            dwarf,
            decompressor,
            notes,
            dwarf_error: OnceLock::new(),
            hasher: RandomState::new(),
            cache: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            labels: Labels {
                user: Arc::from([Frame::label("[user]")]),
                setup: Arc::from([Frame::label("[setup]")]),
                decompressor: Arc::from([Frame::label("[decompressor]")]),
            },
        })
    }

    /// Which kernel symbol source won.
    pub fn source(&self) -> SourceKind {
        self.source
    }

    /// Text symbols of the winning kernel source (empty for `None`).
    pub fn kernel_symbols(&self) -> &SymbolTable {
        &self.kernel
    }

    /// The decompressor ELF's code symbols, when one was given.
    pub fn decompressor_symbols(&self) -> Option<&SymbolTable> {
        self.decompressor.as_ref()
    }

    /// Why sources were skipped or degraded, for the report (may be empty).
    pub fn notes(&self) -> Vec<String> {
        let mut notes = self.notes.clone();
        if let Some(e) = self.dwarf_error.get() {
            notes.push(format!(
                "DWARF lookups failed, symbol table used instead: {e}"
            ));
        }
        notes
    }

    /// Frames for one classified address, innermost first; never empty.
    pub fn resolve(&self, space: AddrSpace) -> Arc<[Frame]> {
        let key = match space {
            AddrSpace::User => return Arc::clone(&self.labels.user),
            AddrSpace::Setup(_) => return Arc::clone(&self.labels.setup),
            AddrSpace::Decompressor(_) if self.decompressor.is_none() => {
                return Arc::clone(&self.labels.decompressor)
            }
            other => other,
        };
        let shard = &self.cache[self.shard_of(&key)];
        if let Some(hit) = shard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Arc::clone(hit);
        }
        // Computed outside the shard lock: a DWARF miss can take milliseconds,
        // and two threads computing the same address agree anyway.
        let frames: Arc<[Frame]> = self.compute(key).into();
        let mut map = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if map.len() < MAX_CACHED_PER_SHARD {
            map.insert(key, Arc::clone(&frames));
        }
        frames
    }

    fn shard_of(&self, key: &AddrSpace) -> usize {
        (self.hasher.hash_one(key) as usize) & (SHARDS - 1)
    }

    fn compute(&self, space: AddrSpace) -> Vec<Frame> {
        match space {
            AddrSpace::Kernel(addr) => self.kernel_frames(addr),
            AddrSpace::Decompressor(addr) => {
                let name = self
                    .decompressor
                    .as_ref()
                    .and_then(|t| t.lookup(addr))
                    .map(|(sym, _)| format!("[decompressor] {}", sym.name))
                    .unwrap_or_else(|| "[decompressor]".to_owned());
                vec![Frame::label(name)]
            }
            AddrSpace::User => vec![Frame::label("[user]")],
            AddrSpace::Setup(_) => vec![Frame::label("[setup]")],
            AddrSpace::Unknown(addr) => vec![Frame::label(format!("[unknown {addr:#x}]"))],
        }
    }

    fn kernel_frames(&self, addr: u64) -> Vec<Frame> {
        let symbol: Option<Arc<str>> = self
            .kernel
            .lookup(addr)
            .map(|(s, _)| Arc::from(s.name.as_str()));
        let dwarf_frames = match &self.dwarf {
            Some(dwarf) => dwarf.frames(addr).unwrap_or_else(|e| {
                let _ = self.dwarf_error.set(e);
                Vec::new()
            }),
            None => Vec::new(),
        };
        let fallback = || -> Arc<str> { Arc::from(format!("[kernel {addr:#x}]")) };
        if dwarf_frames.is_empty() {
            return vec![Frame::label(symbol.unwrap_or_else(fallback))];
        }
        let last = dwarf_frames.len() - 1;
        dwarf_frames
            .into_iter()
            .enumerate()
            .map(|(i, f)| {
                let function = if i == last {
                    // The containing function: the symbol table's name, so it
                    // matches what every other source would say.
                    symbol.clone().or(f.function).unwrap_or_else(fallback)
                } else {
                    f.function.unwrap_or_else(|| Arc::from("[inlined]"))
                };
                Frame {
                    function,
                    file: f.file,
                    line: f.line,
                    inlined: i != last,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn symbolizer_is_send_and_sync() {
        assert_send_sync::<Symbolizer>();
    }

    #[test]
    fn no_sources_gives_labels_never_blanks() {
        let s = Symbolizer::new(SymbolizerOptions::default()).expect("no files, no errors");
        assert_eq!(s.source(), SourceKind::None);
        let name = |space| s.resolve(space)[0].function.to_string();
        assert_eq!(name(AddrSpace::User), "[user]");
        assert_eq!(name(AddrSpace::Setup(0x7c00)), "[setup]");
        assert_eq!(name(AddrSpace::Decompressor(0x200)), "[decompressor]");
        assert_eq!(name(AddrSpace::Unknown(0xdead)), "[unknown 0xdead]");
        assert_eq!(
            name(AddrSpace::Kernel(0xffff_ffff_8100_0000)),
            "[kernel 0xffffffff81000000]"
        );
        for space in [AddrSpace::Unknown(1), AddrSpace::Kernel(u64::MAX)] {
            let frames = s.resolve(space);
            assert_eq!(frames.len(), 1);
            assert!(!frames[0].function.is_empty());
            assert!(
                Arc::ptr_eq(&frames, &s.resolve(space)),
                "second lookup is cached"
            );
        }
    }
}
