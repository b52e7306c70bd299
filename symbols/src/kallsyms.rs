//! kallsyms recovered from a kernel image's own data, with no vmlinux: the
//! compressed name table and address offsets that scripts/kallsyms.c emits
//! into `.rodata`, found by content and checked against one another.
//!
//! Layout (scripts/kallsyms.c, every table 8-byte aligned on 64-bit):
//! - 6.4+:  `num_syms, names, markers, token_table, token_index, offsets, relative_base, seqs_of_names`
//! - ≤ 6.3: `offsets, relative_base, num_syms, names, markers, [seqs_of_names], token_table, token_index`
//!
//! 6.2, 6.3 (and later 6.1.y, e.g. Debian's 6.1.0-56) put `seqs_of_names`
//! (3 bytes per symbol, padded to 8) between the markers and the token table.
//!
//! The search, after vmlinux-to-elf: single characters that occur in symbol
//! names are their own tokens, so the token table holds the run
//! `"0\0" "1\0" … "9\0"` at tokens 0x30–0x39. From there the token table's
//! end and its u16 index (which must reproduce every token boundary) follow;
//! walking back from the table start over strictly decreasing values down to
//! 0 gives the markers (offset of every 256th name); the names and the
//! `num_syms` word before them are found by decoding the last ≤ 256 names,
//! which must end exactly at the markers; then every name is decoded and
//! checked against every marker. Offsets are tried in both orders and both
//! address encodings, and accepted only when the addresses they give are
//! sorted and consistent with `relative_base` — which is how kallsyms sorts
//! and encodes them.

use std::ops::Range;

use thiserror::Error;

use crate::layout::KERNEL_HALF;
use crate::table::{Symbol, SymbolTable};

/// Upper bound on symbols (distro kernels have ~200 k).
const MAX_SYMS: usize = 1 << 22;
/// `KSYM_NAME_LEN` (6.1+): longest name including the type letter.
const KSYM_NAME_LEN: usize = 512;
/// Longest token: tokens are built from pairs, but never longer than a name.
const MAX_TOKEN: usize = KSYM_NAME_LEN;
/// Bound on token-table candidates tried in one region.
const MAX_CANDIDATES: usize = 256;
/// `"0\0" … "9\0"`: tokens 0x30–0x39.
const DIGIT_TOKENS: &[u8] = b"0\x001\x002\x003\x004\x005\x006\x007\x008\x009\x00";

/// Why kallsyms could not be recovered.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum KallsymsError {
    /// no token table in the image (kernel built without CONFIG_KALLSYMS?)
    #[error("no kallsyms token table in the image (kernel built without CONFIG_KALLSYMS?)")]
    NoTokenTable,
    /// a token table but no valid markers before it
    #[error("kallsyms token table at 0x{0:x}, but no valid kallsyms_markers before it")]
    NoMarkers(u64),
    /// markers but no name table that matches them
    #[error("kallsyms markers at 0x{0:x}, but no kallsyms_names table matching them")]
    NoNames(u64),
    /// names but no offsets/relative_base that give sorted addresses
    #[error("kallsyms names at 0x{0:x} ({1} symbols), but no kallsyms_offsets/relative_base giving sorted addresses")]
    NoAddresses(u64, usize),
}

impl KallsymsError {
    /// How far the search got (higher = further), to report the best failure.
    fn stage(&self) -> u8 {
        match self {
            KallsymsError::NoTokenTable => 0,
            KallsymsError::NoMarkers(_) => 1,
            KallsymsError::NoNames(_) => 2,
            KallsymsError::NoAddresses(..) => 3,
        }
    }
}

/// Which of the two table orders the image uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TableOrder {
    /// 6.4+: offsets and relative_base after the token index.
    Modern,
    /// ≤ 6.1: offsets and relative_base before num_syms, markers right
    /// before the token table.
    Legacy,
    /// 6.2, 6.3 and later 6.1.y: the legacy order with `seqs_of_names`
    /// (3 bytes per symbol) between the markers and the token table.
    LegacyWithSeqs,
}

/// How `kallsyms_offsets` encode addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AddressEncoding {
    /// `relative_base + (u32)offset` (no `KALLSYMS_ABSOLUTE_PERCPU`, e.g. UP kernels).
    Relative,
    /// `KALLSYMS_ABSOLUTE_PERCPU`: `offset >= 0` is absolute (per-cpu),
    /// negative is `relative_base - 1 - offset`.
    AbsolutePercpu,
}

/// Where the tables were found and how they are encoded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KallsymsInfo {
    /// Number of symbols (`kallsyms_num_syms`).
    pub num_syms: usize,
    /// Link-time address of `kallsyms_names`.
    pub names_addr: u64,
    /// Link-time address of `kallsyms_token_table`.
    pub token_table_addr: u64,
    /// Link-time address of `kallsyms_offsets`.
    pub offsets_addr: u64,
    /// `kallsyms_relative_base` (link-time).
    pub relative_base: u64,
    /// Table order.
    pub order: TableOrder,
    /// Address encoding.
    pub encoding: AddressEncoding,
}

/// Recovers kallsyms from a kernel's loaded bytes: `regions` are
/// (link-time address, bytes) pairs tried in order, e.g. `.rodata` first,
/// then every loadable segment (see `KernelImage::kallsyms_regions`).
pub fn recover(regions: &[(u64, &[u8])]) -> Result<SymbolTable, KallsymsError> {
    recover_with_info(regions).map(|(t, _)| t)
}

/// Like [`recover`], also telling where and how the tables were found.
pub fn recover_with_info(
    regions: &[(u64, &[u8])],
) -> Result<(SymbolTable, KallsymsInfo), KallsymsError> {
    let mut best = KallsymsError::NoTokenTable;
    for &(base, data) in regions {
        match recover_from_bytes(data, base) {
            Ok(found) => return Ok(found),
            Err(e) if e.stage() > best.stage() => best = e,
            Err(_) => {}
        }
    }
    Err(best)
}

/// Recovers kallsyms from raw bytes loaded at link-time address `base`
/// (e.g. a `.rodata` section). Alignment is judged on addresses.
pub fn recover_from_bytes(
    data: &[u8],
    base: u64,
) -> Result<(SymbolTable, KallsymsInfo), KallsymsError> {
    let r = Region { data, base };
    let mut best = KallsymsError::NoTokenTable;
    for digits in memchr::memmem::find_iter(data, DIGIT_TOKENS).take(MAX_CANDIDATES) {
        match r.try_candidate(digits) {
            Ok(found) => return Ok(found),
            Err(e) if e.stage() >= best.stage() => best = e,
            Err(_) => {}
        }
    }
    Err(best)
}

/// Bytes at a known link-time address.
struct Region<'a> {
    data: &'a [u8],
    base: u64,
}

/// The validated token table: 256 expansions.
struct Tokens<'a> {
    tokens: Vec<&'a [u8]>,
    table: usize,
    index: usize,
}

/// The validated markers.
struct Markers {
    start: usize,
    values: Vec<u64>,
}

/// A validated name table.
struct Names {
    num_syms_at: usize,
    start: usize,
    /// (type letter, name) per symbol, in table order.
    entries: Vec<(char, String)>,
}

impl<'a> Region<'a> {
    fn addr(&self, off: usize) -> u64 {
        self.base.wrapping_add(off as u64)
    }

    /// Offset of the next `align`-aligned address at or after `off`.
    fn align_up(&self, off: usize, align: u64) -> Option<usize> {
        let rem = self.addr(off) % align;
        off.checked_add(((align - rem) % align) as usize)
    }

    fn aligned(&self, off: usize, align: u64) -> bool {
        self.addr(off) % align == 0
    }

    fn u16_at(&self, off: usize) -> Option<u16> {
        let b = self.data.get(off..off.checked_add(2)?)?;
        Some(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32_at(&self, off: usize) -> Option<u32> {
        let b = self.data.get(off..off.checked_add(4)?)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64_at(&self, off: usize) -> Option<u64> {
        let b = self.data.get(off..off.checked_add(8)?)?;
        b.try_into().ok().map(u64::from_le_bytes)
    }

    fn word_at(&self, off: usize, width: usize) -> Option<u64> {
        if width == 8 {
            self.u64_at(off)
        } else {
            self.u32_at(off).map(u64::from)
        }
    }

    fn try_candidate(&self, digits: usize) -> Result<(SymbolTable, KallsymsInfo), KallsymsError> {
        let tokens = self.tokens(digits).ok_or(KallsymsError::NoTokenTable)?;
        let table_addr = self.addr(tokens.table);
        // Markers end at the token table, or (6.2, 6.3 and later 6.1.y) before
        // `seqs_of_names`, 3 bytes per symbol: scan back for them, bounded.
        let mut err = KallsymsError::NoMarkers(table_addr);
        let mut found = None;
        let mut tried = 0;
        for gap in (0..=tokens.table.min(3 * MAX_SYMS + 8)).step_by(8) {
            let Some(markers) = self.markers(tokens.table - gap) else {
                continue;
            };
            tried += 1;
            if tried > MAX_CANDIDATES {
                break;
            }
            match self.names(&tokens, &markers, gap) {
                Some(names) => {
                    found = Some((names, gap));
                    break;
                }
                None => err = KallsymsError::NoNames(self.addr(markers.start)),
            }
        }
        let (names, gap) = found.ok_or(err)?;
        let n = names.entries.len();
        let (offsets_after_index, offsets_at, relative_base, encoding, addrs) = self
            .addresses(&tokens, &names)
            .ok_or(KallsymsError::NoAddresses(self.addr(names.start), n))?;
        let order = match (offsets_after_index, gap) {
            (true, _) => TableOrder::Modern,
            (false, 0) => TableOrder::Legacy,
            (false, _) => TableOrder::LegacyWithSeqs,
        };
        let info = KallsymsInfo {
            num_syms: n,
            names_addr: self.addr(names.start),
            token_table_addr: table_addr,
            offsets_addr: self.addr(offsets_at),
            relative_base,
            order,
            encoding,
        };
        let symbols = names
            .entries
            .into_iter()
            .zip(addrs)
            .map(|((kind, name), addr)| Symbol {
                addr,
                size: None,
                name,
                kind,
            })
            .collect();
        Ok((SymbolTable::new(symbols), info))
    }

    /// Token table and index around the digit run at `digits`.
    fn tokens(&self, digits: usize) -> Option<Tokens<'a>> {
        // The byte before "0" ends token 0x2f.
        if digits == 0 || self.data[digits - 1] != 0 {
            return None;
        }
        // Tokens 0x30..=0xff: 208 strings from the "0".
        let mut end = digits;
        for _ in 0x30..0x100 {
            let len = self.token_len(end)?;
            end += len + 1;
        }
        // The index follows the table, 8-aligned on 64-bit (try smaller too).
        for align in [8u64, 4, 2] {
            let Some(index) = self.align_up(end, align) else {
                continue;
            };
            if let Some(t) = self.check_index(digits, end, index) {
                return Some(t);
            }
        }
        None
    }

    /// Length of the NUL-terminated, printable token at `off`.
    fn token_len(&self, off: usize) -> Option<usize> {
        let rest = self.data.get(off..)?;
        let len = rest.iter().take(MAX_TOKEN + 1).position(|&b| b == 0)?;
        (len > 0 && rest[..len].iter().all(|b| b.is_ascii_graphic())).then_some(len)
    }

    /// Checks that the u16 index at `index` reproduces every token boundary.
    fn check_index(&self, digits: usize, end: usize, index: usize) -> Option<Tokens<'a>> {
        if self.u16_at(index)? != 0 {
            return None;
        }
        let start = digits.checked_sub(usize::from(self.u16_at(index + 2 * 0x30)?))?;
        let mut tokens = Vec::with_capacity(256);
        for i in 0..256 {
            let at = start + usize::from(self.u16_at(index + 2 * i)?);
            let len = self.token_len(at)?;
            let next = if i == 255 {
                end
            } else {
                start + usize::from(self.u16_at(index + 2 * (i + 1))?)
            };
            if at + len + 1 != next {
                return None;
            }
            tokens.push(&self.data[at..at + len]);
        }
        Some(Tokens {
            tokens,
            table: start,
            index,
        })
    }

    /// Markers whose (8-aligned) end is `table`: strictly decreasing back to 0.
    fn markers(&self, table: usize) -> Option<Markers> {
        // u32 markers (6.x); u64 (PTR) in older kernels. A u32 array of odd
        // length is followed by 4 bytes of padding.
        for (width, pad) in [(4usize, 0usize), (4, 4), (8, 0)] {
            if let Some(m) = self.walk_markers(table, width, pad) {
                return Some(m);
            }
        }
        None
    }

    fn walk_markers(&self, table: usize, width: usize, pad: usize) -> Option<Markers> {
        if pad > 0 && self.u32_at(table.checked_sub(pad)?)? != 0 {
            return None;
        }
        let mut at = table.checked_sub(pad + width)?;
        let mut values = vec![self.word_at(at, width)?];
        // Every 256 names take 512 bytes at least (length byte + one token each).
        let min_step = 256 * 2;
        let max_step = (256 * (KSYM_NAME_LEN + 2)) as u64;
        while values.last() != Some(&0) {
            if values.len() > MAX_SYMS / 256 {
                return None;
            }
            at = at.checked_sub(width)?;
            let v = self.word_at(at, width)?;
            let prev = *values.last()?;
            if v >= prev || prev - v < min_step || prev - v > max_step {
                return None;
            }
            values.push(v);
        }
        if !self.aligned(at, 8) {
            return None;
        }
        values.reverse();
        Some(Markers { start: at, values })
    }

    /// Finds `num_syms` + names before the markers and decodes every name.
    fn names(&self, tokens: &Tokens<'_>, markers: &Markers, gap: usize) -> Option<Names> {
        let m = markers.values.len();
        let last_marker = usize::try_from(*markers.values.last()?).ok()?;
        let first_of_last_block = 256 * (m - 1);
        // The names end, padded to 8, exactly at the markers.
        let latest_start = markers.start.checked_sub(last_marker + 2)?;
        let mut start = latest_start.checked_sub((self.addr(latest_start) % 8) as usize)?;
        // The last block holds at most 256 names of at most KSYM_NAME_LEN + 2 bytes.
        for _ in 0..(256 * (KSYM_NAME_LEN + 2)) / 8 {
            let num_at = start.checked_sub(8)?;
            let n = self.u32_at(num_at)? as usize;
            let seqs_fit = gap == 0 || gap == n.checked_mul(3)?.checked_add(7)? & !7;
            if seqs_fit && n > first_of_last_block && n <= first_of_last_block + 256 {
                let block = start + last_marker;
                if let Some(end) = self.decode_names(tokens, block, n - first_of_last_block, None) {
                    if self.ends_at_markers(end, markers.start) {
                        if let Some(entries) = self.decode_all(tokens, start, n, markers) {
                            return Some(Names {
                                num_syms_at: num_at,
                                start,
                                entries,
                            });
                        }
                    }
                }
            }
            start = num_at;
        }
        None
    }

    /// True when names ending at `end` are padded with zeros to `markers`.
    fn ends_at_markers(&self, end: usize, markers: usize) -> bool {
        end <= markers && markers - end < 8 && self.data[end..markers].iter().all(|&b| b == 0)
    }

    /// Decodes `count` names from `at`; returns the end offset. With `out`,
    /// collects (type, name).
    fn decode_names(
        &self,
        tokens: &Tokens<'_>,
        mut at: usize,
        count: usize,
        mut out: Option<&mut Vec<(char, String)>>,
    ) -> Option<usize> {
        let mut buf = Vec::with_capacity(KSYM_NAME_LEN);
        for _ in 0..count {
            let (len, skip) = self.name_len(at)?;
            let enc = self.data.get(at + skip..at + skip + len)?;
            at += skip + len;
            buf.clear();
            for &t in enc {
                buf.extend_from_slice(tokens.tokens[usize::from(t)]);
                if buf.len() > KSYM_NAME_LEN {
                    return None;
                }
            }
            // First char is the type letter; a name must follow.
            let (&kind, name) = buf.split_first()?;
            if !(kind.is_ascii_alphabetic() || kind == b'?') || name.is_empty() {
                return None;
            }
            if let Some(out) = out.as_deref_mut() {
                // Tokens are printable ASCII (checked), so this is valid UTF-8.
                out.push((char::from(kind), String::from_utf8_lossy(name).into_owned()));
            }
        }
        Some(at)
    }

    /// Length of one encoded name and the bytes its length takes (ULEB128, ≤ 2 bytes).
    fn name_len(&self, at: usize) -> Option<(usize, usize)> {
        let b0 = *self.data.get(at)?;
        let (len, skip) = if b0 & 0x80 != 0 {
            let b1 = *self.data.get(at + 1)?;
            if b1 & 0x80 != 0 {
                return None;
            }
            (usize::from(b0 & 0x7f) | usize::from(b1) << 7, 2)
        } else {
            (usize::from(b0), 1)
        };
        (len > 0 && len < KSYM_NAME_LEN).then_some((len, skip))
    }

    /// Decodes all `n` names, checking every marker on the way.
    fn decode_all(
        &self,
        tokens: &Tokens<'_>,
        start: usize,
        n: usize,
        markers: &Markers,
    ) -> Option<Vec<(char, String)>> {
        let mut entries = Vec::with_capacity(n);
        let mut at = start;
        for (i, &marker) in markers.values.iter().enumerate() {
            if (at - start) as u64 != marker {
                return None;
            }
            let count = (n - 256 * i).min(256);
            at = self.decode_names(tokens, at, count, Some(&mut entries))?;
        }
        self.ends_at_markers(at, markers.start).then_some(entries)
    }

    /// Tries both table orders; returns the addresses that validate, and
    /// whether the offsets follow the token index (6.4+).
    fn addresses(
        &self,
        tokens: &Tokens<'_>,
        names: &Names,
    ) -> Option<(bool, usize, u64, AddressEncoding, Vec<u64>)> {
        let n = names.entries.len();
        let offsets_len = n.checked_mul(4)?;
        // 6.4+: offsets right after the 256-entry token index, then relative_base.
        if let Some(off) = self.align_up(tokens.index + 512, 8) {
            if let Some(rb_at) = off
                .checked_add(offsets_len)
                .and_then(|e| self.align_up(e, 8))
            {
                if let Some((enc, rb, addrs)) = self.decode_offsets(off..off + offsets_len, rb_at) {
                    return Some((true, off, rb, enc, addrs));
                }
            }
        }
        // ≤ 6.3: offsets, relative_base, then num_syms.
        let rb_at = names.num_syms_at.checked_sub(8)?;
        let padded = offsets_len.checked_add(7)? & !7;
        let off = rb_at.checked_sub(padded)?;
        let (enc, rb, addrs) = self.decode_offsets(off..off + offsets_len, rb_at)?;
        Some((false, off, rb, enc, addrs))
    }

    /// Decodes offsets with `relative_base` at `rb_at`; both encodings are
    /// tried and the one giving sorted, base-consistent addresses wins.
    fn decode_offsets(
        &self,
        offsets: Range<usize>,
        rb_at: usize,
    ) -> Option<(AddressEncoding, u64, Vec<u64>)> {
        let rb = self.u64_at(rb_at)?;
        if rb < KERNEL_HALF {
            return None;
        }
        let raw: Vec<i32> = self
            .data
            .get(offsets)?
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let sorted = |a: &[u64]| a.windows(2).all(|w| w[0] <= w[1]);
        if raw.iter().all(|&o| o >= 0) {
            // Relative: relative_base is the first symbol's address.
            if raw.first() != Some(&0) {
                return None;
            }
            let addrs: Vec<u64> = raw
                .iter()
                .map(|&o| rb.wrapping_add(u64::from(o as u32)))
                .collect();
            return sorted(&addrs).then_some((AddressEncoding::Relative, rb, addrs));
        }
        // Absolute per-cpu: the first relative symbol sits at relative_base (offset -1).
        if raw.iter().find(|&&o| o < 0) != Some(&-1) {
            return None;
        }
        let addrs: Vec<u64> = raw
            .iter()
            .map(|&o| {
                if o >= 0 {
                    o as u64
                } else {
                    rb.wrapping_sub(1).wrapping_sub(i64::from(o) as u64)
                }
            })
            .collect();
        sorted(&addrs).then_some((AddressEncoding::AbsolutePercpu, rb, addrs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_empty_inputs_fail_cleanly() {
        assert_eq!(
            recover_from_bytes(&[], 0).err(),
            Some(KallsymsError::NoTokenTable)
        );
        let mut junk = vec![0u8; 4096];
        junk[100..100 + DIGIT_TOKENS.len()].copy_from_slice(DIGIT_TOKENS);
        assert_eq!(
            recover_from_bytes(&junk, 0).err(),
            Some(KallsymsError::NoTokenTable)
        );
        // Digits at the very start and the very end of the buffer.
        assert!(recover_from_bytes(DIGIT_TOKENS, 0).is_err());
        let mut tail = vec![0u8; 8];
        tail.extend_from_slice(DIGIT_TOKENS);
        assert!(recover_from_bytes(&tail, u64::MAX - 4).is_err());
    }
}
