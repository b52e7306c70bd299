//! A kernel image as the user hands it over — a bzImage/vmlinuz or an ELF
//! vmlinux, told apart by content — with the kernel proper's ELF made
//! available either way.

use std::path::Path;
use std::sync::OnceLock;

use thiserror::Error;

use crate::bzimage::{BzImageError, SetupHeader};
use crate::decompress::{self, Compression, DecompressError};
use crate::elf::{ElfError, ElfLayout, Segment};
use crate::identity::KernelIdentity;
use crate::input::{open_regular, InputError};
use crate::kallsyms::{self, KallsymsError};
use crate::mapped::{MapError, MappedFile};
use crate::table::SymbolTable;

/// Largest file accepted as a kernel image (a distro vmlinux with DWARF is
/// ~1 GiB at most; anything beyond is not a kernel). The whole file is read
/// into memory, so this also caps what a hostile path can make us allocate.
pub const MAX_FILE: u64 = 2 << 30;
/// Bytes read first to recognise the format before reading the rest.
const HEAD: usize = 0x1000;

/// Why a file could not be opened as a kernel image.
#[derive(Debug, Error)]
pub enum ImageError {
    /// the file is not a regular file within [`MAX_FILE`], or could not be read
    #[error(transparent)]
    Input(#[from] InputError),
    /// an ELF vmlinux could not be mapped
    #[error(transparent)]
    Map(#[from] MapError),
    /// neither an ELF nor a bzImage
    #[error("not a kernel image: neither an ELF file nor a bzImage (no \"HdrS\" boot header)")]
    NotAKernel,
    /// a bzImage with a bad setup header or layout
    #[error("bad bzImage: {0}")]
    BzImage(#[from] BzImageError),
    /// the bzImage payload could not be decompressed
    #[error("bzImage payload: {0}")]
    Decompress(#[from] DecompressError),
    /// the kernel ELF is malformed
    #[error("kernel ELF: {0}")]
    Elf(#[from] ElfError),
}

/// How the kernel was packaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum ImageFormat {
    /// bzImage / vmlinuz: setup code, decompressor and compressed payload.
    BzImage,
    /// A plain ELF vmlinux.
    Elf,
}

/// The image file's bytes: read into memory (a bzImage, which is small and
/// decompressed anyway), or mapped (an ELF vmlinux of up to hundreds of MB,
/// of which boot and analysis touch a fraction).
enum FileBytes {
    Owned(Vec<u8>),
    Mapped(MappedFile),
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            FileBytes::Owned(v) => v,
            FileBytes::Mapped(m) => m.bytes(),
        }
    }
}

/// Where the kernel proper's ELF lives.
enum Packing {
    /// The file is the ELF.
    Elf,
    /// The ELF was decompressed from a bzImage payload.
    BzImage {
        setup: SetupHeader,
        compression: Compression,
        elf: Vec<u8>,
    },
}

/// A parsed kernel image. Cheap accessors; [`KernelImage::kallsyms`] does real work.
pub struct KernelImage {
    file: FileBytes,
    packing: Packing,
    layout: ElfLayout,
    /// The path as given, for the identity.
    path: Option<String>,
    /// Computed on first use: hashing a vmlinux of 80 MB takes tens of ms,
    /// which `record` spends beside the boot rather than before it.
    identity: OnceLock<KernelIdentity>,
    /// kallsyms are recovered on first use (≈0.1 s for a distro kernel), once.
    kallsyms: OnceLock<Result<SymbolTable, KallsymsError>>,
}

impl std::fmt::Debug for KernelImage {
    // Not derived: the file and the ELF are megabytes.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelImage")
            .field("format", &self.format())
            .field("compression", &self.compression())
            .field("path", &self.path)
            .field("segments", &self.layout.segments.len())
            .field("sections", &self.layout.sections.len())
            .finish()
    }
}

/// True when `head` starts like an ELF file or carries the bzImage "HdrS" magic.
fn looks_like_kernel(head: &[u8]) -> bool {
    head.starts_with(b"\x7fELF") || head.get(0x202..0x206) == Some(b"HdrS")
}

impl KernelImage {
    /// Reads and parses a kernel image file (format detected by content).
    pub fn open(path: &Path) -> Result<KernelImage, ImageError> {
        let shown = path.display().to_string();
        // Regular files only, size capped, and the format recognised from the
        // first page before the rest is read: a big file that is not a kernel
        // costs one page, not its size.
        let mut input = open_regular(path, MAX_FILE, "kernel image")?;
        let head = input.read_head(HEAD)?;
        if !looks_like_kernel(&head) {
            return Err(ImageError::NotAKernel);
        }
        if head.starts_with(b"\x7fELF") {
            // Mapped, not copied: reading an 80 MB vmlinux costs tens of ms.
            drop(input);
            return Self::parse(FileBytes::Mapped(MappedFile::open(path)?), Some(shown));
        }
        let bytes = input.read_rest(head)?;
        Self::parse(FileBytes::Owned(bytes), Some(shown))
    }

    /// Checks that `path` is a regular file that starts like a kernel image
    /// (ELF or bzImage magic), reading one page: the quick check `record`
    /// makes before booting while the image is parsed beside the boot.
    pub fn check_head(path: &Path) -> Result<(), ImageError> {
        let mut input = open_regular(path, MAX_FILE, "kernel image")?;
        let head = input.read_head(HEAD)?;
        if !looks_like_kernel(&head) {
            return Err(ImageError::NotAKernel);
        }
        Ok(())
    }

    /// Parses a kernel image held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<KernelImage, ImageError> {
        Self::parse(FileBytes::Owned(bytes), None)
    }

    fn parse(file: FileBytes, path: Option<String>) -> Result<KernelImage, ImageError> {
        let packing = if file.starts_with(b"\x7fELF") {
            Packing::Elf
        } else if file.get(0x202..0x206) == Some(b"HdrS") {
            let setup = SetupHeader::parse(&file)?;
            let payload = setup.payload(&file)?;
            let (compression, elf) = decompress::decompress_payload(payload)?;
            Packing::BzImage {
                setup,
                compression,
                elf,
            }
        } else {
            return Err(ImageError::NotAKernel);
        };
        let elf: &[u8] = match &packing {
            Packing::Elf => &file,
            Packing::BzImage { elf, .. } => elf,
        };
        let layout = ElfLayout::parse(elf)?;
        Ok(KernelImage {
            file,
            packing,
            layout,
            path,
            identity: OnceLock::new(),
            kallsyms: OnceLock::new(),
        })
    }

    /// bzImage or plain ELF.
    pub fn format(&self) -> ImageFormat {
        match self.packing {
            Packing::Elf => ImageFormat::Elf,
            Packing::BzImage { .. } => ImageFormat::BzImage,
        }
    }

    /// The file's bytes as opened.
    pub fn file_bytes(&self) -> &[u8] {
        &self.file
    }

    /// The bzImage setup header.
    pub fn setup_header(&self) -> Option<&SetupHeader> {
        match &self.packing {
            Packing::BzImage { setup, .. } => Some(setup),
            Packing::Elf => None,
        }
    }

    /// bzImage only: the protected-mode code from `(setup_sects + 1) * 512`,
    /// i.e. the decompressor image as loaded at `code32_start` (linked at 0).
    pub fn protected_mode_code(&self) -> Option<&[u8]> {
        self.setup_header()?.protected_mode_code(&self.file).ok()
    }

    /// bzImage only: the payload's compression.
    pub fn compression(&self) -> Option<Compression> {
        match &self.packing {
            Packing::BzImage { compression, .. } => Some(*compression),
            Packing::Elf => None,
        }
    }

    /// The kernel proper's ELF: the file itself, or the decompressed payload.
    pub fn elf_bytes(&self) -> &[u8] {
        match &self.packing {
            Packing::Elf => &self.file,
            Packing::BzImage { elf, .. } => elf,
        }
    }

    /// Segments, sections and notes of the kernel proper.
    pub fn elf_layout(&self) -> &ElfLayout {
        &self.layout
    }

    /// Path, size, sha256, build-id and version banner.
    pub fn identity(&self) -> &KernelIdentity {
        self.identity.get_or_init(|| {
            KernelIdentity::compute(
                self.path.clone(),
                &self.file,
                self.elf_bytes(),
                self.layout.build_id.clone(),
            )
        })
    }

    /// `(sh_addr, bytes)` of a section of the kernel proper (not `SHT_NOBITS`).
    pub fn section(&self, name: &str) -> Option<(u64, &[u8])> {
        let s = self.layout.section(name).filter(|s| !s.nobits)?;
        let start = usize::try_from(s.offset).ok()?;
        let end = start.checked_add(usize::try_from(s.size).ok()?)?;
        Some((s.addr, self.elf_bytes().get(start..end)?))
    }

    /// `len` loaded bytes at link-time virtual address `vaddr`, when one
    /// `PT_LOAD` segment has them all in the file (not in its zero-filled tail).
    pub fn read_link(&self, vaddr: u64, len: usize) -> Option<&[u8]> {
        let seg = self.layout.segments.iter().find(|s| {
            vaddr >= s.vaddr
                && (vaddr - s.vaddr)
                    .checked_add(len as u64)
                    .is_some_and(|end| end <= s.filesz)
        })?;
        let start = usize::try_from(seg.offset.checked_add(vaddr - seg.vaddr)?).ok()?;
        self.elf_bytes().get(start..start.checked_add(len)?)
    }

    /// Where kallsyms may lie, in the order to search: `.rodata` first, then
    /// every loadable segment's file bytes, as (link-time address, bytes).
    pub fn kallsyms_regions(&self) -> Vec<(u64, &[u8])> {
        let mut regions: Vec<(u64, &[u8])> = Vec::new();
        if let Some(rodata) = self.section(".rodata") {
            regions.push(rodata);
        }
        for seg in self.segments() {
            if let Some(bytes) = usize::try_from(seg.filesz)
                .ok()
                .and_then(|len| self.read_link(seg.vaddr, len))
            {
                regions.push((seg.vaddr, bytes));
            }
        }
        regions
    }

    /// `PT_LOAD` segments of the kernel proper.
    pub fn segments(&self) -> &[Segment] {
        &self.layout.segments
    }

    /// Link address of `_text`: the first `PT_LOAD` segment's virtual address
    /// (x86_64 kernels start their first segment at `_text`).
    pub fn text_start(&self) -> u64 {
        self.first_segment().vaddr
    }

    /// `_end - _text`: the span of all loadable segments in physical terms
    /// (physical, because the per-cpu segment of SMP kernels is linked at 0).
    pub fn image_size(&self) -> u64 {
        let start = self.phys_load_start();
        self.layout
            .segments
            .iter()
            .map(|s| s.paddr.saturating_add(s.memsz))
            .max()
            .unwrap_or(start)
            .saturating_sub(start)
    }

    /// `p_paddr` of the first `PT_LOAD` segment (link-time physical `_text`).
    pub fn phys_load_start(&self) -> u64 {
        self.first_segment().paddr
    }

    /// ELF entry point (`e_entry`, physical `startup_64` for x86_64 vmlinux).
    pub fn entry(&self) -> u64 {
        self.layout.entry
    }

    /// PVH entry point from the `XEN_ELFNOTE_PHYS32_ENTRY` note, when present.
    pub fn pvh_entry(&self) -> Option<u64> {
        self.layout.pvh_entry
    }

    fn first_segment(&self) -> &Segment {
        // ElfLayout::parse guarantees at least one PT_LOAD segment.
        &self.layout.segments[0]
    }

    /// Symbols recovered from the image's own kallsyms tables (no vmlinux
    /// needed): addresses are link-time, names carry nm-style type letters.
    /// Recovered once per image; this returns a copy (see [`Self::kallsyms_ref`]).
    pub fn kallsyms(&self) -> Result<SymbolTable, KallsymsError> {
        self.kallsyms_ref().cloned()
    }

    /// Like [`Self::kallsyms`], without copying the table.
    pub fn kallsyms_ref(&self) -> Result<&SymbolTable, KallsymsError> {
        self.kallsyms
            .get_or_init(|| kallsyms::recover(&self.kallsyms_regions()))
            .as_ref()
            .map_err(Clone::clone)
    }
}
