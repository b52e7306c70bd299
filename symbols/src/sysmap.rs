//! System.map (`nm -n` output: `ADDRESS TYPE NAME` per line) into a
//! [`SymbolTable`].
//!
//! Every line must parse: a System.map with a bad line is either not a
//! System.map or damaged (Debian's packaged placeholder reads
//! `ffffffffffffffff B The real System.map is in the linux-image-…-dbg
//! package`), and silently skipping lines would hide that. The error names the
//! line number.

use std::path::{Path, PathBuf};

use crate::input::{self, InputError};
use crate::table::{Symbol, SymbolTable};

/// Largest System.map accepted; allyesconfig kernels have ~15 MB ones.
pub const MAX_SYSTEM_MAP_BYTES: u64 = 256 << 20;

/// Errors reading a System.map.
#[derive(Debug, thiserror::Error)]
pub enum SysmapError {
    /// The file is not a regular file within the size cap, or could not be read.
    #[error("System.map: {0}")]
    Input(#[from] InputError),
    /// The file is not UTF-8 text.
    #[error("System.map {path} is not text (invalid UTF-8)")]
    NotText {
        /// The file.
        path: PathBuf,
    },
    /// A line is not `ADDRESS TYPE NAME`.
    #[error("System.map line {line}: {reason}: {text:?}")]
    BadLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
        /// The line (truncated to 80 characters).
        text: String,
    },
    /// The file holds no symbol at all.
    #[error("System.map holds no symbols")]
    Empty,
}

/// Reads and parses the System.map at `path` (all symbols, data included).
pub fn load(path: &Path) -> Result<SymbolTable, SysmapError> {
    // Regular files only, size checked before reading (a FIFO or /dev/zero
    // would block or never end).
    let bytes = input::read_regular(path, MAX_SYSTEM_MAP_BYTES, "System.map")?;
    let text = String::from_utf8(bytes).map_err(|_| SysmapError::NotText {
        path: path.to_owned(),
    })?;
    parse(&text)
}

/// Parses System.map text. Blank lines are allowed; any other line must be
/// `HEX-ADDRESS TYPE-LETTER NAME`.
pub fn parse(text: &str) -> Result<SymbolTable, SysmapError> {
    let mut symbols = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        if line.is_empty() {
            continue;
        }
        symbols.push(parse_line(line).map_err(|reason| SysmapError::BadLine {
            line: idx + 1,
            reason,
            text: line.chars().take(80).collect(),
        })?);
    }
    if symbols.is_empty() {
        return Err(SysmapError::Empty);
    }
    Ok(SymbolTable::new(symbols))
}

fn parse_line(line: &str) -> Result<Symbol, &'static str> {
    let mut fields = line.split_whitespace();
    let (Some(addr), Some(kind), Some(name)) = (fields.next(), fields.next(), fields.next()) else {
        return Err("expected ADDRESS TYPE NAME");
    };
    if fields.next().is_some() {
        return Err("more than three fields");
    }
    if addr.is_empty() || addr.len() > 16 {
        return Err("address is not 1 to 16 hex digits");
    }
    let addr = u64::from_str_radix(addr, 16).map_err(|_| "address is not hexadecimal")?;
    let mut letters = kind.chars();
    let (Some(kind), None) = (letters.next(), letters.next()) else {
        return Err("type is not a single letter");
    };
    if !kind.is_ascii_alphabetic() && kind != '?' {
        return Err("type is not a letter");
    }
    Ok(Symbol {
        addr,
        size: None,
        name: name.to_owned(),
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_nm_lines() {
        let t = parse("ffffffff81000000 T _text\n\nffffffff81000123 t startup_64\n0000000001000123 A phys_startup_64\n")
            .expect("valid map");
        assert_eq!(t.len(), 3);
        let s = t.by_name("startup_64").expect("present");
        assert_eq!((s.addr, s.kind, s.size), (0xffff_ffff_8100_0123, 't', None));
        assert_eq!(t.text_only().len(), 2);
    }

    #[test]
    fn bad_lines_name_their_number() {
        for (text, line) in [
            (
                "ffffffff81000000 T _text\nffffffffffffffff B The real System.map is in\n",
                2,
            ),
            ("ffffffff81000000 T _text\nzz T bad\n", 2),
            ("ffffffff81000000 TT _text\n", 1),
            ("ffffffff81000000\n", 1),
            ("a\nb\nc\n", 1),
            ("ffffffff81000000 T a\n\n11112222333344445 T toolong\n", 3),
        ] {
            match parse(text) {
                Err(SysmapError::BadLine { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?} gave {other:?}"),
            }
        }
        assert!(matches!(parse("\n\n"), Err(SysmapError::Empty)));
    }
}
