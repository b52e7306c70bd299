//! ORC unwind tables (`.orc_unwind_ip` + `.orc_unwind`, x86_64), parsed from
//! an ELF vmlinux or from the ELF payload of a bzImage, normalized to the
//! current (6.4+) entry layout, and looked up by link-time instruction pointer.
//!
//! Three entry layouts exist (see `arch/x86/include/asm/orc_types.h` of each
//! release, and drgn's `libdrgn/orc.h`); `flags` is a `u16` bitfield:
//!
//! | layout | kernels | bits 0–3 | 4–7 | 8–10 | 11 |
//! |---|---|---|---|---|---|
//! | [`OrcVersion::V3`] | 6.4+ | sp_reg | bp_reg | type (3 bits) | signal |
//! | [`OrcVersion::V2`] | 6.3 | sp_reg | bp_reg | type (bits 8–9), signal (10) | end |
//! | [`OrcVersion::V1`] | ≤ 6.2 | sp_reg | bp_reg | type (bits 8–9), end (10) | – |
//!
//! In V1/V2 the types are CALL 0, REGS 1, REGS_PARTIAL 2; `sp_reg == UNDEFINED`
//! means "undefined" or, with the end bit, "end of stack". V1 has no signal
//! bit: REGS and REGS_PARTIAL imply it. `.orc_header` (from 6.4 and 6.3.10)
//! holds the SHA-1 of the format definition (`scripts/orc_hash.sh`), which
//! tells V3 from V2; without it, the kernel release decides.

use object::{Object, ObjectSection};
use thiserror::Error;

/// `.orc_header` of 6.4+ kernels: `scripts/orc_hash.sh < orc_types.h` (checked on 6.12).
const ORC_HASH_V3: [u8; 20] = [
    0xfe, 0x5d, 0x32, 0xbf, 0x58, 0x1b, 0xd6, 0x3b, 0x2c, 0xa9, 0xa5, 0xc6, 0x5b, 0xa5, 0xa6, 0x25,
    0xea, 0xb3, 0xfe, 0x24,
];
/// `.orc_header` of 6.3.10+ (the layout with the signal bit and no UNDEFINED type).
const ORC_HASH_V2: [u8; 20] = [
    0xdb, 0x84, 0xae, 0xd4, 0x10, 0x3b, 0x31, 0xdd, 0x51, 0xe0, 0x17, 0xf8, 0xf7, 0x97, 0x83, 0xca,
    0x98, 0x5c, 0x2c, 0x51,
];

/// Size of one `.orc_unwind` entry.
const ENTRY_SIZE: usize = 6;
/// Upper bound on entries accepted from a file: a distro kernel has about a
/// million; anything far larger is a corrupt header, not a kernel.
const MAX_ENTRIES: usize = 1 << 24;

/// Why an ORC table could not be read.
#[derive(Debug, Error)]
pub enum OrcError {
    /// the file is not an ELF object this parser can read
    #[error("not a readable ELF file: {0}")]
    Elf(#[from] object::Error),
    /// the image has no `.orc_unwind_ip`/`.orc_unwind` sections (kernel built without ORC)
    #[error("no ORC sections (.orc_unwind_ip / .orc_unwind) in this image")]
    Missing,
    /// the ORC sections have inconsistent sizes
    #[error(".orc_unwind_ip ({ip_bytes} bytes) and .orc_unwind ({entry_bytes} bytes) do not describe the same number of entries")]
    SizeMismatch {
        /// Size of `.orc_unwind_ip`.
        ip_bytes: usize,
        /// Size of `.orc_unwind`.
        entry_bytes: usize,
    },
    /// the table is empty or implausibly large
    #[error("ORC table has {0} entries, outside the plausible range")]
    BadCount(usize),
    /// an `.orc_unwind_ip` value points outside the 64-bit address space
    #[error("ORC entry {0} has an instruction pointer that overflows")]
    IpOverflow(usize),
    /// the table spans more than 4 GiB of text
    #[error("ORC table spans more than 4 GiB of addresses")]
    TooWide,
    /// `.orc_header` holds a format hash this parser does not know
    #[error("unknown .orc_header {0} (ORC format newer than this parser?)")]
    UnknownHeader(String),
}

/// Which on-disk entry layout a table uses (names follow drgn's numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrcVersion {
    /// Linux 4.14 – 6.2.
    V1,
    /// Linux 6.3.
    V2,
    /// Linux 6.4 and later.
    V3,
}

impl OrcVersion {
    /// The layout a kernel release without `.orc_header` uses (drgn's rule).
    pub fn for_release(major: u32, minor: u32) -> OrcVersion {
        match (major, minor) {
            (m, _) if m > 6 => OrcVersion::V3,
            (6, n) if n >= 4 => OrcVersion::V3,
            (6, 3) => OrcVersion::V2,
            _ => OrcVersion::V1,
        }
    }
}

/// Register an ORC entry bases the previous SP or BP on (`ORC_REG_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrcReg {
    /// Not defined: the register did not change (BP) or is unknown (SP).
    Undefined,
    /// The previous frame's SP (the CFA): BP was saved at CFA + bp_offset.
    PrevSp,
    /// RDX.
    Dx,
    /// RDI.
    Di,
    /// RBP.
    Bp,
    /// RSP.
    Sp,
    /// R10.
    R10,
    /// R13.
    R13,
    /// Memory at RBP + offset.
    BpIndirect,
    /// Memory at RSP, plus offset (stack switch: the old SP is saved on the new stack).
    SpIndirect,
    /// A register number this parser does not know.
    Unknown(u8),
}

impl OrcReg {
    fn from_bits(v: u16) -> OrcReg {
        match v & 0xf {
            0 => OrcReg::Undefined,
            1 => OrcReg::PrevSp,
            2 => OrcReg::Dx,
            3 => OrcReg::Di,
            4 => OrcReg::Bp,
            5 => OrcReg::Sp,
            6 => OrcReg::R10,
            7 => OrcReg::R13,
            8 => OrcReg::BpIndirect,
            9 => OrcReg::SpIndirect,
            n => OrcReg::Unknown(n as u8),
        }
    }
}

/// What kind of frame an ORC entry describes (6.4+ names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrcType {
    /// No unwind information (also section terminators).
    Undefined,
    /// The outermost frame: stop here, successfully.
    EndOfStack,
    /// A normal call frame: the return address is at CFA − 8.
    Call,
    /// A full `pt_regs` at the CFA (interrupt/exception entry).
    Regs,
    /// Only the hardware iret frame at the CFA.
    RegsPartial,
    /// A type number this parser does not know.
    Unknown(u8),
}

/// One decoded ORC entry, in 6.4+ terms whatever the on-disk layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OrcEntry {
    /// Offset added to `sp_reg` to get the CFA (previous SP).
    pub sp_offset: i16,
    /// Offset used with `bp_reg` to find the previous BP.
    pub bp_offset: i16,
    /// Base register of the CFA.
    pub sp_reg: OrcReg,
    /// Where the previous BP is.
    pub bp_reg: OrcReg,
    /// Frame type.
    pub kind: OrcType,
    /// The next frame up was interrupted (look up its IP itself, not IP − 1).
    pub signal: bool,
}

impl OrcEntry {
    /// Decodes the 6 raw bytes of an entry in the given layout.
    pub fn decode(raw: [u8; ENTRY_SIZE], version: OrcVersion) -> OrcEntry {
        let sp_offset = i16::from_le_bytes([raw[0], raw[1]]);
        let bp_offset = i16::from_le_bytes([raw[2], raw[3]]);
        let flags = u16::from_le_bytes([raw[4], raw[5]]);
        let sp_reg = OrcReg::from_bits(flags);
        let bp_reg = OrcReg::from_bits(flags >> 4);
        let (kind, signal) = match version {
            OrcVersion::V3 => {
                let kind = match (flags >> 8) & 0x7 {
                    0 => OrcType::Undefined,
                    1 => OrcType::EndOfStack,
                    2 => OrcType::Call,
                    3 => OrcType::Regs,
                    4 => OrcType::RegsPartial,
                    n => OrcType::Unknown(n as u8),
                };
                (kind, flags & 0x800 != 0)
            }
            OrcVersion::V2 | OrcVersion::V1 => {
                let (end, signal) = if version == OrcVersion::V2 {
                    (flags & 0x800 != 0, Some(flags & 0x400 != 0))
                } else {
                    (flags & 0x400 != 0, None)
                };
                let old_type = (flags >> 8) & 0x3;
                let kind = if sp_reg == OrcReg::Undefined {
                    if end {
                        OrcType::EndOfStack
                    } else {
                        OrcType::Undefined
                    }
                } else {
                    match old_type {
                        0 => OrcType::Call,
                        1 => OrcType::Regs,
                        2 => OrcType::RegsPartial,
                        n => OrcType::Unknown(n as u8),
                    }
                };
                // V1 has no signal bit: interrupt frames imply it.
                let signal = signal.unwrap_or(matches!(kind, OrcType::Regs | OrcType::RegsPartial));
                (kind, signal)
            }
        };
        OrcEntry {
            sp_offset,
            bp_offset,
            sp_reg,
            bp_reg,
            kind,
            signal,
        }
    }

    fn is_terminator(&self) -> bool {
        self.kind == OrcType::Undefined
    }
}

/// A sorted ORC table: IP `ips[i]` starts the range entry `i` covers, up to the next IP.
#[derive(Debug, Clone)]
pub struct OrcTable {
    /// Lowest IP in the table; the offsets below are relative to it (halves the
    /// memory the binary search touches).
    base: u64,
    offsets: Vec<u32>,
    entries: Vec<OrcEntry>,
    version: OrcVersion,
    /// `blocks[b]`: how many offsets lie below block `b`'s start (blocks of
    /// `1 << block_shift` bytes from `base`). The kernel's `orc_lookup`
    /// idea: a lookup searches the few entries of one block instead of the
    /// whole table (the binary search over ~50 k entries was 39 % of a
    /// sample's time, its cache misses most of it).
    blocks: Vec<u32>,
    block_shift: u32,
}

/// Smallest lookup block: 256 bytes of text, the kernel's `LOOKUP_BLOCK_SIZE`.
const MIN_BLOCK_SHIFT: u32 = 8;
/// Most lookup blocks (1 MiB of index); a wider table gets bigger blocks.
const MAX_BLOCKS: u64 = 1 << 18;

/// The block index of sorted `offsets` (see [`OrcTable`]'s `blocks`).
fn block_index(offsets: &[u32]) -> (Vec<u32>, u32) {
    let last = u64::from(offsets.last().copied().unwrap_or(0));
    let mut shift = MIN_BLOCK_SHIFT;
    while (last >> shift) + 2 > MAX_BLOCKS {
        shift += 1;
    }
    // One block past the last offset's, so every offset up to it has a next block.
    let count = (last >> shift) + 2;
    let mut blocks = Vec::with_capacity(count as usize);
    let mut i = 0usize;
    for b in 0..count {
        let start = b << shift;
        while offsets.get(i).is_some_and(|&o| u64::from(o) < start) {
            i += 1;
        }
        blocks.push(i as u32);
    }
    (blocks, shift)
}

impl OrcTable {
    /// Parses the ORC sections of an ELF image (vmlinux or a bzImage's payload).
    pub fn from_elf(data: &[u8]) -> Result<OrcTable, OrcError> {
        let file = object::File::parse(data)?;
        let ip = file
            .section_by_name(".orc_unwind_ip")
            .ok_or(OrcError::Missing)?;
        let unwind = file
            .section_by_name(".orc_unwind")
            .ok_or(OrcError::Missing)?;
        let ip_data = ip.data()?;
        let unwind_data = unwind.data()?;
        let version = match file.section_by_name(".orc_header") {
            Some(h) => Self::version_from_header(h.data()?)?,
            None => release_in(&file)
                .map(|(maj, min)| OrcVersion::for_release(maj, min))
                .unwrap_or(OrcVersion::V1),
        };
        Self::from_sections(ip.address(), ip_data, unwind_data, version)
    }

    /// Tells the layout from the 20-byte `.orc_header` hash.
    pub fn version_from_header(header: &[u8]) -> Result<OrcVersion, OrcError> {
        if header == ORC_HASH_V3 {
            Ok(OrcVersion::V3)
        } else if header == ORC_HASH_V2 {
            Ok(OrcVersion::V2)
        } else {
            let hex: String = header.iter().take(32).map(|b| format!("{b:02x}")).collect();
            Err(OrcError::UnknownHeader(hex))
        }
    }

    /// Builds a table from raw section contents: `ip_addr` is the link-time
    /// address of `.orc_unwind_ip`, whose `i`-th `s32` is relative to its own address.
    pub fn from_sections(
        ip_addr: u64,
        ip_data: &[u8],
        unwind_data: &[u8],
        version: OrcVersion,
    ) -> Result<OrcTable, OrcError> {
        let n = ip_data.len() / 4;
        if ip_data.len() % 4 != 0
            || unwind_data.len() % ENTRY_SIZE != 0
            || unwind_data.len() / ENTRY_SIZE != n
        {
            return Err(OrcError::SizeMismatch {
                ip_bytes: ip_data.len(),
                entry_bytes: unwind_data.len(),
            });
        }
        if n == 0 || n > MAX_ENTRIES {
            return Err(OrcError::BadCount(n));
        }
        let mut pairs: Vec<(u64, OrcEntry)> = Vec::with_capacity(n);
        for (i, (rel, raw)) in ip_data
            .chunks_exact(4)
            .zip(unwind_data.chunks_exact(ENTRY_SIZE))
            .enumerate()
        {
            let rel = i32::from_le_bytes([rel[0], rel[1], rel[2], rel[3]]);
            let ip = ip_addr
                .checked_add(4 * i as u64)
                .and_then(|a| a.checked_add_signed(i64::from(rel)))
                .ok_or(OrcError::IpOverflow(i))?;
            let raw = [raw[0], raw[1], raw[2], raw[3], raw[4], raw[5]];
            pairs.push((ip, OrcEntry::decode(raw, version)));
        }
        // vmlinux tables are sorted at build time (since 5.6); sort anyway when not,
        // keeping the file order among equal IPs.
        if pairs.windows(2).any(|w| w[0].0 > w[1].0) {
            pairs.sort_by_key(|p| p.0);
        }
        let base = pairs[0].0;
        let last = pairs[pairs.len() - 1].0;
        if last - base > u64::from(u32::MAX) {
            return Err(OrcError::TooWide);
        }
        let mut offsets: Vec<u32> = Vec::with_capacity(n);
        let mut entries: Vec<OrcEntry> = Vec::with_capacity(n);
        for (ip, e) in pairs {
            let off = (ip - base) as u32;
            if offsets.last() == Some(&off) {
                // Duplicate IP: a section terminator is weak and a real entry wins
                // (the kernel's __orc_find takes the rightmost, which sorttable
                // makes the real one).
                if let Some(prev) = entries.last_mut() {
                    if !e.is_terminator() || prev.is_terminator() {
                        *prev = e;
                    }
                }
                continue;
            }
            offsets.push(off);
            entries.push(e);
        }
        let (blocks, block_shift) = block_index(&offsets);
        Ok(OrcTable {
            base,
            offsets,
            entries,
            version,
            blocks,
            block_shift,
        })
    }

    /// The entry covering link-time `ip`: the one with the highest start `<= ip`.
    /// `None` below the first entry. Above the last one, the last entry (normally a
    /// terminator); callers bound `ip` to the kernel image first.
    pub fn lookup(&self, ip: u64) -> Option<OrcEntry> {
        let rel = ip.checked_sub(self.base)?;
        let rel = u32::try_from(rel).unwrap_or(u32::MAX);
        let b = (rel >> self.block_shift) as usize;
        // Offsets below block b's start are <= rel; from block b + 1's on, > rel.
        let idx = match (self.blocks.get(b), self.blocks.get(b + 1)) {
            (Some(&lo), Some(&hi)) => {
                let (lo, hi) = (lo as usize, hi as usize);
                lo + self.offsets.get(lo..hi)?.partition_point(|&o| o <= rel)
            }
            // Past the last entry's block.
            _ => self.offsets.partition_point(|&o| o <= rel),
        };
        self.entries.get(idx.checked_sub(1)?).copied()
    }

    /// Number of distinct IP ranges.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the table holds no entry (never, for a parsed table).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// On-disk layout the table was read in.
    pub fn version(&self) -> OrcVersion {
        self.version
    }

    /// Lowest and highest start IP in the table.
    pub fn ip_range(&self) -> (u64, u64) {
        let last = self.offsets.last().copied().unwrap_or(0);
        (self.base, self.base + u64::from(last))
    }

    /// Every (start IP, entry) pair, in address order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, OrcEntry)> + '_ {
        self.offsets
            .iter()
            .zip(&self.entries)
            .map(|(&o, &e)| (self.base + u64::from(o), e))
    }
}

/// The `major.minor` of the `Linux version` banner in `.rodata`, if any.
fn release_in(file: &object::File<'_>) -> Option<(u32, u32)> {
    let rodata = file.section_by_name(".rodata")?.data().ok()?;
    let needle = b"Linux version ";
    let pos = rodata.windows(needle.len()).position(|w| w == needle)?;
    let rest = rodata.get(pos + needle.len()..)?;
    let rest = &rest[..rest.len().min(32)];
    let text = std::str::from_utf8(rest.split(|&b| b == b' ' || b == 0).next()?).ok()?;
    let mut parts = text.split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(sp: i16, bp: i16, flags: u16) -> [u8; 6] {
        let mut r = [0u8; 6];
        r[0..2].copy_from_slice(&sp.to_le_bytes());
        r[2..4].copy_from_slice(&bp.to_le_bytes());
        r[4..6].copy_from_slice(&flags.to_le_bytes());
        r
    }

    #[test]
    fn decodes_v3_flags() {
        // sp_reg SP (5), bp_reg PREV_SP (1), type CALL (2), no signal.
        let e = OrcEntry::decode(raw(16, -16, 5 | (1 << 4) | (2 << 8)), OrcVersion::V3);
        assert_eq!(e.sp_reg, OrcReg::Sp);
        assert_eq!(e.bp_reg, OrcReg::PrevSp);
        assert_eq!(e.kind, OrcType::Call);
        assert!(!e.signal);
        assert_eq!((e.sp_offset, e.bp_offset), (16, -16));
        let e = OrcEntry::decode(raw(0, 0, 9 | (3 << 8) | 0x800), OrcVersion::V3);
        assert_eq!(
            (e.sp_reg, e.kind, e.signal),
            (OrcReg::SpIndirect, OrcType::Regs, true)
        );
        let e = OrcEntry::decode(raw(0, 0, 1 << 8), OrcVersion::V3);
        assert_eq!(e.kind, OrcType::EndOfStack);
        let e = OrcEntry::decode(raw(0, 0, 7 << 8), OrcVersion::V3);
        assert_eq!(e.kind, OrcType::Unknown(7));
    }

    #[test]
    fn decodes_v1_and_v2_flags() {
        // V1: type bits 8-9 (REGS = 1), end bit 10; signal implied by REGS.
        let e = OrcEntry::decode(raw(0, 0, 5 | (1 << 8)), OrcVersion::V1);
        assert_eq!((e.kind, e.signal), (OrcType::Regs, true));
        let e = OrcEntry::decode(raw(8, 0, 5), OrcVersion::V1);
        assert_eq!((e.kind, e.signal), (OrcType::Call, false));
        assert_eq!(
            OrcEntry::decode(raw(0, 0, 0x400), OrcVersion::V1).kind,
            OrcType::EndOfStack
        );
        assert_eq!(
            OrcEntry::decode(raw(0, 0, 0), OrcVersion::V1).kind,
            OrcType::Undefined
        );
        // V2: signal bit 10, end bit 11.
        let e = OrcEntry::decode(raw(8, 0, 5 | 0x400), OrcVersion::V2);
        assert_eq!((e.kind, e.signal), (OrcType::Call, true));
        assert_eq!(
            OrcEntry::decode(raw(0, 0, 0x800), OrcVersion::V2).kind,
            OrcType::EndOfStack
        );
        assert_eq!(
            OrcEntry::decode(raw(0, 0, 0x400), OrcVersion::V2).kind,
            OrcType::Undefined
        );
        let e = OrcEntry::decode(raw(0, 0, 5 | (2 << 8)), OrcVersion::V2);
        assert_eq!((e.kind, e.signal), (OrcType::RegsPartial, false));
    }

    fn table_bytes(ips: &[u64], ip_addr: u64, flags: &[u16]) -> (Vec<u8>, Vec<u8>) {
        let mut ipb = Vec::new();
        let mut ub = Vec::new();
        for (i, (&ip, &f)) in ips.iter().zip(flags).enumerate() {
            let rel = ip as i64 - (ip_addr + 4 * i as u64) as i64;
            ipb.extend_from_slice(&(rel as i32).to_le_bytes());
            ub.extend_from_slice(&raw(8, 0, f));
        }
        (ipb, ub)
    }

    #[test]
    fn lookup_covers_ranges_and_prefers_real_entries_over_terminators() {
        let call = 5 | (2 << 8);
        let regs = 5 | (3 << 8);
        let ip_addr = 0xffff_ffff_8200_0000;
        // Unsorted on purpose, with a terminator duplicating 0x1100's start.
        let ips = [
            0xffff_ffff_8100_1000,
            0xffff_ffff_8100_1100,
            0xffff_ffff_8100_1100,
            0xffff_ffff_8100_0f00,
        ];
        let flags = [call, 0, regs, call];
        let (ipb, ub) = table_bytes(&ips, ip_addr, &flags);
        let t = OrcTable::from_sections(ip_addr, &ipb, &ub, OrcVersion::V3).expect("parse");
        assert_eq!(t.len(), 3);
        assert_eq!(t.lookup(0xffff_ffff_8100_0eff), None);
        assert_eq!(
            t.lookup(0xffff_ffff_8100_0f00).map(|e| e.kind),
            Some(OrcType::Call)
        );
        assert_eq!(
            t.lookup(0xffff_ffff_8100_10ff).map(|e| e.kind),
            Some(OrcType::Call)
        );
        assert_eq!(
            t.lookup(0xffff_ffff_8100_1100).map(|e| e.kind),
            Some(OrcType::Regs)
        );
        assert_eq!(t.lookup(u64::MAX).map(|e| e.kind), Some(OrcType::Regs));
        assert_eq!(t.ip_range(), (0xffff_ffff_8100_0f00, 0xffff_ffff_8100_1100));
    }

    /// The block index finds what a search of the whole table finds, at
    /// every IP around every entry, for dense and sparse tables.
    #[test]
    fn block_lookup_matches_a_full_search() {
        let ip_addr = 0xffff_ffff_8200_0000u64;
        let base = 0xffff_ffff_8100_0000u64;
        let mut gap = 1u64;
        let mut ips = Vec::new();
        let mut ip = base;
        for i in 0..600u64 {
            ips.push(ip);
            // Gaps from 1 byte to tens of KiB: blocks with many, one or no entries.
            gap = (gap * 7 + i) % 40_000 + 1;
            ip += if i % 50 == 0 { gap * 3 } else { gap % 300 + 1 };
        }
        let flags: Vec<u16> = (0..ips.len())
            .map(|i| 5 | (((i % 3) as u16 + 1) << 8))
            .collect();
        let (ipb, ub) = table_bytes(&ips, ip_addr, &flags);
        let t = OrcTable::from_sections(ip_addr, &ipb, &ub, OrcVersion::V3).expect("parse");
        let full = |ip: u64| {
            let rel = u32::try_from(ip.checked_sub(t.base)?).unwrap_or(u32::MAX);
            let idx = t.offsets.partition_point(|&o| o <= rel);
            t.entries.get(idx.checked_sub(1)?).copied()
        };
        for &ip in &ips {
            for probe in [
                ip.wrapping_sub(1),
                ip,
                ip + 1,
                ip + 255,
                ip + 256,
                ip + 4096,
            ] {
                assert_eq!(t.lookup(probe), full(probe), "ip {probe:#x}");
            }
        }
        assert_eq!(t.lookup(base - 1), None);
        assert_eq!(t.lookup(u64::MAX), full(u64::MAX));
        // A table spanning 4 GiB gets bigger blocks, not a 64 MiB index.
        let (blocks, shift) = block_index(&[0, 1, u32::MAX]);
        assert!(blocks.len() as u64 <= MAX_BLOCKS, "{}", blocks.len());
        assert_eq!(blocks[0], 0);
        assert!(shift > MIN_BLOCK_SHIFT);
    }

    #[test]
    fn malformed_sections_are_errors() {
        let (ipb, ub) = table_bytes(&[0x1000, 0x2000], 0x1000, &[0, 0]);
        assert!(matches!(
            OrcTable::from_sections(0x1000, &ipb[..7], &ub, OrcVersion::V3),
            Err(OrcError::SizeMismatch { .. })
        ));
        assert!(matches!(
            OrcTable::from_sections(0x1000, &ipb, &ub[..6], OrcVersion::V3),
            Err(OrcError::SizeMismatch { .. })
        ));
        assert!(matches!(
            OrcTable::from_sections(0x1000, &[], &[], OrcVersion::V3),
            Err(OrcError::BadCount(0))
        ));
        // An IP that would wrap below zero.
        let bad = (-0x2000i32).to_le_bytes();
        assert!(matches!(
            OrcTable::from_sections(0x1000, &bad, &ub[..6], OrcVersion::V3),
            Err(OrcError::IpOverflow(0))
        ));
        assert!(matches!(
            OrcTable::version_from_header(&[0u8; 20]),
            Err(OrcError::UnknownHeader(_))
        ));
        assert!(matches!(
            OrcTable::from_elf(b"not an elf"),
            Err(OrcError::Elf(_))
        ));
    }

    #[test]
    fn release_rule_matches_drgn() {
        assert_eq!(OrcVersion::for_release(6, 1), OrcVersion::V1);
        assert_eq!(OrcVersion::for_release(5, 15), OrcVersion::V1);
        assert_eq!(OrcVersion::for_release(6, 3), OrcVersion::V2);
        assert_eq!(OrcVersion::for_release(6, 12), OrcVersion::V3);
        assert_eq!(OrcVersion::for_release(7, 0), OrcVersion::V3);
    }
}
