//! A small kallsyms *encoder* in the shape scripts/kallsyms.c emits, for the
//! layouts no kernel at hand has (pre-6.2 order, u64 markers, relative
//! encoding with the legacy order…) and for small fuzzing seeds. Real
//! kernels test the real thing; this covers the other branches.

#![allow(dead_code)] // each test binary uses part of it

/// Which of the table orders to emit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// 6.4+.
    Modern,
    /// ≤ 6.1.
    Legacy,
    /// 6.2, 6.3, later 6.1.y.
    LegacyWithSeqs,
}

/// How to write the tables.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Table order.
    pub order: Order,
    /// `KALLSYMS_ABSOLUTE_PERCPU` encoding (symbols below `percpu_end` are absolute).
    pub absolute_percpu: bool,
    /// Bytes per marker (4 for `.long`, 8 for `PTR`).
    pub marker_width: usize,
}

/// Tokens: every printable character stands for itself; the other 161 byte
/// values expand to two-character strings, as the real tables' pairs do.
pub fn token_table() -> Vec<Vec<u8>> {
    const PAIRS: &[&str] = &[
        "_s", "in", "it", "er", "re", "_t", "_p", "on", "at", "en", "st", "_i", "or", "_c", "ar",
        "te", "_r", "_d", "ce", "es", "ti", "_m", "de", "ic", "le", "al", "ex", "ro", "se", "_f",
        "nt", "ck", "is", "ma", "me", "ne", "ll", "ed", "_b", "ea", "un", "_e", "ct", "to", "pe",
        "ve", "et", "pr", "ad", "ch", "fo", "ue", "_a", "lo", "co", "ge", "ta", "tr", "an", "up",
    ];
    let mut pairs = PAIRS.iter().cycle();
    (0..=255u8)
        .map(|b| {
            if (0x21..0x7f).contains(&b) {
                vec![b]
            } else {
                // Cycling repeats pairs; the decoder doesn't care, the greedy encoder takes the first.
                pairs
                    .next()
                    .map(|p| p.as_bytes().to_vec())
                    .unwrap_or_default()
            }
        })
        .collect()
}

/// Greedy encoding of `type + name` with [`token_table`].
fn encode_name(kind: char, name: &str, tokens: &[Vec<u8>]) -> Vec<u8> {
    let mut s = vec![kind as u8];
    s.extend_from_slice(name.as_bytes());
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let pair = (i + 1 < s.len())
            .then(|| {
                tokens
                    .iter()
                    .position(|t| t.len() == 2 && t[..] == s[i..i + 2])
            })
            .flatten();
        match pair {
            Some(t) => {
                out.push(t as u8);
                i += 2;
            }
            None => {
                out.push(s[i]);
                i += 1;
            }
        }
    }
    out
}

fn align8(v: &mut Vec<u8>) {
    while v.len() % 8 != 0 {
        v.push(0);
    }
}

/// `.rodata` bytes (at an 8-aligned base) holding the kallsyms tables for
/// `symbols` = (addr, type, name), sorted by address. Absolute per-cpu
/// symbols are those with `addr < 1 << 31` when `absolute_percpu`.
pub fn encode(symbols: &[(u64, char, String)], shape: Shape) -> Vec<u8> {
    let tokens = token_table();
    let n = symbols.len();
    let is_abs = |addr: u64| shape.absolute_percpu && addr < 1 << 31;
    let relative_base = symbols
        .iter()
        .find(|s| !is_abs(s.0))
        .map(|s| s.0)
        .expect("a relative symbol");

    let mut names = Vec::new();
    let mut markers = Vec::new();
    for (i, (_, kind, name)) in symbols.iter().enumerate() {
        if i % 256 == 0 {
            markers.push(names.len() as u64);
        }
        let enc = encode_name(*kind, name, &tokens);
        if enc.len() <= 0x7f {
            names.push(enc.len() as u8);
        } else {
            names.push((enc.len() & 0x7f) as u8 | 0x80);
            names.push((enc.len() >> 7) as u8);
        }
        names.extend_from_slice(&enc);
    }
    let offsets: Vec<u8> = symbols
        .iter()
        .flat_map(|&(addr, _, _)| {
            let off: i64 = if !shape.absolute_percpu {
                (addr - relative_base) as i64
            } else if is_abs(addr) {
                addr as i64
            } else {
                relative_base as i64 - addr as i64 - 1
            };
            (off as i32).to_le_bytes()
        })
        .collect();

    let mut out = b"some other rodata before the tables\0".to_vec();
    align8(&mut out);
    let push_offsets = |out: &mut Vec<u8>| {
        out.extend_from_slice(&offsets);
        align8(out);
        out.extend_from_slice(&relative_base.to_le_bytes());
        align8(out);
    };
    if shape.order != Order::Modern {
        push_offsets(&mut out);
    }
    out.extend_from_slice(&(n as u32).to_le_bytes());
    align8(&mut out);
    out.extend_from_slice(&names);
    align8(&mut out);
    for m in &markers {
        out.extend_from_slice(&m.to_le_bytes()[..shape.marker_width]);
    }
    align8(&mut out);
    let seqs: Vec<u8> = (0..n as u32)
        .flat_map(|i| [(i >> 16) as u8, (i >> 8) as u8, i as u8])
        .collect();
    if shape.order == Order::LegacyWithSeqs {
        out.extend_from_slice(&seqs);
        align8(&mut out);
    }
    let mut index = Vec::new();
    let mut table = Vec::new();
    for t in &tokens {
        index.extend_from_slice(&(table.len() as u16).to_le_bytes());
        table.extend_from_slice(t);
        table.push(0);
    }
    out.extend_from_slice(&table);
    align8(&mut out);
    out.extend_from_slice(&index);
    align8(&mut out);
    if shape.order == Order::Modern {
        push_offsets(&mut out);
        out.extend_from_slice(&seqs);
        align8(&mut out);
    }
    out.extend_from_slice(b"and more rodata after them\0");
    out
}

/// `count` plausible symbols: with `percpu`, a few per-cpu ones at small
/// addresses first; then text and data from `0xffffffff81000000`; one name
/// longer than 127 tokens (two-byte length).
pub fn sample_symbols(count: usize, percpu: bool) -> Vec<(u64, char, String)> {
    let mut v = Vec::with_capacity(count);
    for i in 0..count {
        let (addr, kind) = if percpu && i < 4 {
            (i as u64 * 0x40, 'A')
        } else {
            (
                0xffff_ffff_8100_0000 + i as u64 * 0x30 + (i as u64 % 7),
                if i % 5 == 0 { 'd' } else { 'T' },
            )
        };
        let name = if i == count / 2 {
            format!("{}_very_long_name", "x9".repeat(100))
        } else {
            format!("sym_{i}_init_{}", i * 7919 % 1000)
        };
        v.push((addr, kind, name));
    }
    v
}
