//! The kernel proper as an ELF file: its loadable segments, section table
//! and notes (build-id, PVH entry), parsed once with `object` into owned
//! values so callers never re-validate the bytes.

use object::elf;
use object::read::elf::{FileHeader, NoteIterator, ProgramHeader, SectionHeader};
use object::LittleEndian as LE;
use object::ReadRef;
use thiserror::Error;

/// `XEN_ELFNOTE_PHYS32_ENTRY`: the PVH entry point's physical address.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// Bound on sections and segments a kernel ELF may declare.
const MAX_HEADERS: usize = 4096;
/// Largest span of physical addresses a kernel's segments may cover
/// (x86_64 `KERNEL_IMAGE_SIZE` is at most 1 GiB).
pub const MAX_IMAGE_SPAN: u64 = 1 << 30;
/// First physical address beyond what x86_64 can address (52-bit MAXPHYADDR).
pub const PHYS_LIMIT: u64 = 1 << 52;

/// Why bytes are not a usable x86_64 kernel ELF.
#[derive(Debug, Error)]
pub enum ElfError {
    /// the ELF headers are malformed
    #[error("malformed ELF: {0}")]
    Malformed(#[from] object::read::Error),
    /// not a 64-bit little-endian x86_64 ELF
    #[error("ELF is not x86_64 (e_machine {0})")]
    WrongMachine(u16),
    /// no PT_LOAD segment
    #[error("ELF has no loadable segment")]
    NoLoadSegment,
    /// a PT_LOAD segment's bytes lie outside the file
    #[error("PT_LOAD segment at 0x{0:x} lies outside the file: truncated?")]
    SegmentOutsideFile(u64),
    /// a PT_LOAD segment whose addresses or sizes cannot be those of a kernel
    #[error("PT_LOAD segment at 0x{vaddr:x} (p_paddr 0x{paddr:x}, p_memsz 0x{memsz:x}): {reason}")]
    BadSegment {
        /// Its virtual address.
        vaddr: u64,
        /// Its physical address.
        paddr: u64,
        /// Its size in memory.
        memsz: u64,
        /// What is wrong.
        reason: &'static str,
    },
    /// the segments span more physical memory than any kernel image
    #[error(
        "PT_LOAD segments span {span:#x} bytes of physical memory, more than a kernel's {max:#x}"
    )]
    SpanTooLarge {
        /// Lowest start to highest end.
        span: u64,
        /// The limit.
        max: u64,
    },
    /// too many headers to be a kernel
    #[error("ELF declares {0} headers, more than a kernel has")]
    TooManyHeaders(usize),
}

/// One `PT_LOAD` segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// Link-time virtual address.
    pub vaddr: u64,
    /// Link-time physical address.
    pub paddr: u64,
    /// File offset of the segment's bytes.
    pub offset: u64,
    /// Bytes present in the file.
    pub filesz: u64,
    /// Bytes in memory (the rest is zero-filled, e.g. .bss).
    pub memsz: u64,
    /// `PF_X | PF_W | PF_R`.
    pub flags: u32,
}

/// Physical extent `[lowest start, highest end)` of `segments`, each
/// already checked. Everything downstream (loader, KASLR search,
/// symbolization) sizes its work by this span: it is bounded here, once.
fn extent(segments: &[Segment]) -> Result<(u64, u64), ElfError> {
    let lo = segments.iter().map(|s| s.paddr).min();
    // paddr + memsz cannot overflow: Segment::check.
    let hi = segments.iter().map(|s| s.paddr + s.memsz).max();
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Err(ElfError::NoLoadSegment);
    };
    if hi - lo > MAX_IMAGE_SPAN {
        return Err(ElfError::SpanTooLarge {
            span: hi - lo,
            max: MAX_IMAGE_SPAN,
        });
    }
    Ok((lo, hi))
}

/// The physical extent `[start, end)` of an x86_64 ELF kernel's `PT_LOAD`
/// segments, read from the ELF header and program headers alone (a loader
/// can pass a `ReadCache` over the file and read a few hundred bytes), with
/// the same checks as [`ElfLayout::parse`]: ends that wrap or lie beyond 52
/// bits, `p_filesz > p_memsz`, a span larger than any kernel.
pub fn load_extent<'data, R: ReadRef<'data>>(data: R) -> Result<(u64, u64), ElfError> {
    let (_, endian, phdrs) = x86_64_headers(data)?;
    let mut segments = Vec::new();
    for ph in phdrs.iter().filter(|ph| ph.p_type(endian) == elf::PT_LOAD) {
        let seg = Segment::of(ph, endian);
        seg.check()?;
        segments.push(seg);
    }
    extent(&segments)
}

/// An x86_64 ELF's file header, its endianness and its program headers.
type Headers<'data> = (
    &'data elf::FileHeader64<LE>,
    LE,
    &'data [elf::ProgramHeader64<LE>],
);

/// The ELF header and program headers of an x86_64 ELF, with the checks
/// every reader of a kernel ELF makes first (machine, header count).
fn x86_64_headers<'data, R: ReadRef<'data>>(data: R) -> Result<Headers<'data>, ElfError> {
    let header = elf::FileHeader64::<LE>::parse(data)?;
    let endian = header.endian()?;
    let machine = header.e_machine(endian);
    if machine != elf::EM_X86_64 {
        return Err(ElfError::WrongMachine(machine));
    }
    let phdrs = header.program_headers(endian, data)?;
    if phdrs.len() > MAX_HEADERS {
        return Err(ElfError::TooManyHeaders(phdrs.len()));
    }
    Ok((header, endian, phdrs))
}

impl Segment {
    /// The segment a program header describes (unchecked: see [`Segment::check`]).
    fn of(ph: &elf::ProgramHeader64<LE>, endian: LE) -> Segment {
        Segment {
            vaddr: ph.p_vaddr(endian),
            paddr: ph.p_paddr(endian),
            offset: ph.p_offset(endian),
            filesz: ph.p_filesz(endian),
            memsz: ph.p_memsz(endian),
            flags: ph.p_flags(endian),
        }
    }

    /// Refuses addresses and sizes no kernel has: ends that wrap around
    /// 2^64, physical ends beyond 52 bits, file bytes beyond the memory size.
    fn check(&self) -> Result<(), ElfError> {
        let bad = |reason| ElfError::BadSegment {
            vaddr: self.vaddr,
            paddr: self.paddr,
            memsz: self.memsz,
            reason,
        };
        if self.filesz > self.memsz {
            return Err(bad("p_filesz exceeds p_memsz"));
        }
        if self.vaddr.checked_add(self.memsz).is_none() {
            return Err(bad("virtual end wraps around 2^64"));
        }
        match self.paddr.checked_add(self.memsz) {
            None => Err(bad("physical end wraps around 2^64")),
            Some(end) if end > PHYS_LIMIT => Err(bad("physical end beyond 52-bit addresses")),
            Some(_) => Ok(()),
        }
    }
}

/// One section header (only the sections with a name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Section name, e.g. `.orc_unwind`.
    pub name: String,
    /// `sh_addr`.
    pub addr: u64,
    /// File offset.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// True for `SHT_NOBITS` (no bytes in the file).
    pub nobits: bool,
}

/// What boottrace needs from a kernel ELF, validated and owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfLayout {
    /// `e_entry` (the physical `startup_64` for vmlinux).
    pub entry: u64,
    /// `PT_LOAD` segments in file order.
    pub segments: Vec<Segment>,
    /// Named sections in file order (empty when section headers are stripped).
    pub sections: Vec<Section>,
    /// GNU build-id, lower-case hex.
    pub build_id: Option<String>,
    /// PVH entry (`XEN_ELFNOTE_PHYS32_ENTRY`), physical.
    pub pvh_entry: Option<u64>,
}

impl ElfLayout {
    /// Parses an x86_64 ELF (vmlinux or a bzImage's decompressed payload).
    pub fn parse(data: &[u8]) -> Result<ElfLayout, ElfError> {
        let (header, endian, phdrs) = x86_64_headers(data)?;
        let mut layout = ElfLayout {
            entry: header.e_entry(endian),
            segments: Vec::new(),
            sections: Vec::new(),
            build_id: None,
            pvh_entry: None,
        };
        for ph in phdrs {
            match ph.p_type(endian) {
                elf::PT_LOAD => {
                    let seg = Segment::of(ph, endian);
                    // The file bytes must exist; reject rather than read past the end later.
                    ph.data(endian, data)
                        .map_err(|()| ElfError::SegmentOutsideFile(seg.vaddr))?;
                    seg.check()?;
                    layout.segments.push(seg);
                }
                elf::PT_NOTE => {
                    if let Some(notes) = ph.notes(endian, data)? {
                        layout.scan_notes(notes)?;
                    }
                }
                _ => {}
            }
        }
        if layout.segments.is_empty() {
            return Err(ElfError::NoLoadSegment);
        }
        extent(&layout.segments)?;
        let sections = header.sections(endian, data)?;
        if sections.len() > MAX_HEADERS {
            return Err(ElfError::TooManyHeaders(sections.len()));
        }
        for sh in sections.iter() {
            let Ok(name) = sections.section_name(endian, sh) else {
                continue;
            };
            if name.is_empty() {
                continue;
            }
            let nobits = sh.sh_type(endian) == elf::SHT_NOBITS;
            if !nobits && sh.data(endian, data).is_err() {
                continue; // a section header pointing outside the file is ignored
            }
            layout.sections.push(Section {
                name: String::from_utf8_lossy(name).into_owned(),
                addr: sh.sh_addr(endian),
                offset: sh.sh_offset(endian),
                size: sh.sh_size(endian),
                nobits,
            });
            // A stripped file may lack PT_NOTE but keep .notes.
            if sh.sh_type(endian) == elf::SHT_NOTE && layout.build_id.is_none() {
                if let Some(notes) = sh.notes(endian, data)? {
                    layout.scan_notes(notes)?;
                }
            }
        }
        Ok(layout)
    }

    fn scan_notes(
        &mut self,
        mut notes: NoteIterator<'_, elf::FileHeader64<LE>>,
    ) -> Result<(), ElfError> {
        while let Some(note) = notes.next()? {
            match (note.name(), note.n_type(LE)) {
                (b"GNU", elf::NT_GNU_BUILD_ID) if self.build_id.is_none() => {
                    let desc = note.desc();
                    if !desc.is_empty() {
                        self.build_id = Some(desc.iter().map(|b| format!("{b:02x}")).collect());
                    }
                }
                (b"Xen", XEN_ELFNOTE_PHYS32_ENTRY) if self.pvh_entry.is_none() => {
                    let desc = note.desc();
                    self.pvh_entry = match desc.len() {
                        4 => Some(u64::from(u32::from_le_bytes([
                            desc[0], desc[1], desc[2], desc[3],
                        ]))),
                        8.. => desc[..8].try_into().ok().map(u64::from_le_bytes),
                        _ => None,
                    };
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The named section's header.
    pub fn section(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(ElfLayout::parse(b"\x7fELF").is_err());
        assert!(ElfLayout::parse(&[0u8; 64]).is_err());
        let mut hdr = vec![0u8; 64];
        hdr[..4].copy_from_slice(b"\x7fELF");
        hdr[4] = 2; // 64-bit
        hdr[5] = 1; // little-endian
        hdr[6] = 1;
        assert!(ElfLayout::parse(&hdr).is_err());
    }

    /// A minimal x86_64 ELF: header, one PT_LOAD per `(paddr, memsz, filesz)`
    /// (all pointing at the same 16 file bytes), no sections.
    pub(crate) fn tiny_elf(segs: &[(u64, u64, u64)]) -> Vec<u8> {
        let phoff = 64u64;
        let data_off = phoff + 56 * segs.len() as u64;
        let mut f = vec![0u8; 64];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2; // ELFCLASS64
        f[5] = 1; // little-endian
        f[6] = 1; // EV_CURRENT
        f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f[18..20].copy_from_slice(&elf::EM_X86_64.to_le_bytes());
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&0x100_0000u64.to_le_bytes()); // e_entry
        f[32..40].copy_from_slice(&phoff.to_le_bytes());
        f[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        f[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        f[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
        f[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
        for &(paddr, memsz, filesz) in segs {
            let mut ph = vec![0u8; 56];
            ph[0..4].copy_from_slice(&elf::PT_LOAD.to_le_bytes());
            ph[4..8].copy_from_slice(&5u32.to_le_bytes()); // R+X
            ph[8..16].copy_from_slice(&data_off.to_le_bytes());
            ph[16..24].copy_from_slice(&0xffff_ffff_8100_0000u64.to_le_bytes());
            ph[24..32].copy_from_slice(&paddr.to_le_bytes());
            ph[32..40].copy_from_slice(&filesz.to_le_bytes());
            ph[40..48].copy_from_slice(&memsz.to_le_bytes());
            ph[48..56].copy_from_slice(&0x20_0000u64.to_le_bytes());
            f.extend_from_slice(&ph);
        }
        f.extend_from_slice(&[0x90; 16]);
        f
    }

    #[test]
    fn sane_segments_parse() {
        let l = ElfLayout::parse(&tiny_elf(&[
            (0x100_0000, 0x1000, 16),
            (0x120_0000, 0x1000, 16),
        ]))
        .expect("parses");
        assert_eq!(l.segments.len(), 2);
    }

    #[test]
    fn load_extent_agrees_with_parse() {
        let ok = tiny_elf(&[(0x100_0000, 0x1000, 16), (0x120_0000, 0x1000, 16)]);
        assert_eq!(load_extent(&ok[..]).ok(), Some((0x100_0000, 0x120_1000)));
        let bad = tiny_elf(&[(0xffff_ffff_fff0_0000, 0x20_0000, 16)]);
        assert_eq!(
            load_extent(&bad[..]).map_err(|e| e.to_string()),
            ElfLayout::parse(&bad)
                .map(|_| (0, 0))
                .map_err(|e| e.to_string())
        );
    }

    #[test]
    fn hostile_segments_are_refused() {
        type Segs = &'static [(u64, u64, u64)];
        let cases: [(Segs, &str); 5] = [
            (
                &[(0xffff_ffff_fff0_0000, 0x20_0000, 16)],
                "physical end wraps",
            ),
            (&[(0x100_0000, u64::MAX - 8, 16)], "wraps"),
            (&[(0x000f_ffff_fff0_0000, 0x20_0000, 16)], "beyond 52-bit"),
            (&[(0x100_0000, 8, 16)], "p_filesz exceeds p_memsz"),
            (&[(0x100_0000, 16, 16), (0x1_0000_0000, 16, 16)], "span"),
        ];
        for (segs, want) in cases {
            let err = ElfLayout::parse(&tiny_elf(segs)).expect_err(want);
            assert!(err.to_string().contains(want), "{want}: {err}");
        }
    }
}
