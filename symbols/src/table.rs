//! A sorted symbol table: the common currency of every symbol source
//! (ELF symtab, System.map, kallsyms recovered from an image).

/// One named address range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    /// Start address, in the address space of the source (link-time for the kernel).
    pub addr: u64,
    /// Size in bytes when the source knows it (ELF); otherwise inferred from the next symbol.
    pub size: Option<u64>,
    /// Symbol name, without the kallsyms type letter.
    pub name: String,
    /// nm-style type letter (`T`, `t`, `D`, …); `?` when unknown.
    pub kind: char,
}

impl Symbol {
    /// True for text (code) symbols, the only ones samples land in.
    pub fn is_text(&self) -> bool {
        matches!(self.kind, 'T' | 't' | 'W' | 'w')
    }
}

/// Symbols sorted by address, for `O(log n)` lookups.
#[derive(Debug, Clone, Default)]
pub struct SymbolTable {
    symbols: Vec<Symbol>,
}

impl SymbolTable {
    /// Builds a table; sorts by address, keeping the input order among equal addresses.
    pub fn new(mut symbols: Vec<Symbol>) -> Self {
        symbols.sort_by_key(|s| s.addr);
        SymbolTable { symbols }
    }

    /// All symbols, sorted by address.
    pub fn symbols(&self) -> &[Symbol] {
        &self.symbols
    }

    /// Number of symbols.
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// True when the table holds no symbol.
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }

    /// The symbol with the highest start address `<= addr`, and the offset of
    /// `addr` into it. Respects an explicit size; without one, the symbol
    /// extends to the next symbol's start.
    pub fn lookup(&self, addr: u64) -> Option<(&Symbol, u64)> {
        let idx = self.symbols.partition_point(|s| s.addr <= addr);
        let sym = self.symbols.get(idx.checked_sub(1)?)?;
        let off = addr - sym.addr;
        match sym.size {
            Some(size) if size > 0 && off >= size => None,
            _ => Some((sym, off)),
        }
    }

    /// The first symbol with exactly this name.
    pub fn by_name(&self, name: &str) -> Option<&Symbol> {
        self.symbols.iter().find(|s| s.name == name)
    }

    /// A table of the text symbols only, without the linker-script markers
    /// that end a text section (`_etext`, `__softirqentry_text_end`, …): they
    /// name no code, and without sizes (System.map, kallsyms) they would
    /// swallow whatever unnamed bytes follow them.
    pub fn text_only(&self) -> SymbolTable {
        SymbolTable {
            symbols: self
                .symbols
                .iter()
                .filter(|s| s.is_text() && !is_end_marker(&s.name))
                .cloned()
                .collect(),
        }
    }
}

/// Linker-script symbols that mark where a text section ends.
pub fn is_end_marker(name: &str) -> bool {
    name.ends_with("_text_end")
        || name.starts_with("__end_")
        || matches!(
            name,
            "_etext"
                | "_einittext"
                | "_ehead"
                | "_edata"
                | "_end"
                | "__bss_stop"
                | "__indirect_thunk_end"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(addr: u64, size: Option<u64>, name: &str) -> Symbol {
        Symbol {
            addr,
            size,
            name: name.into(),
            kind: 'T',
        }
    }

    #[test]
    fn lookup_finds_containing_symbol() {
        let t = SymbolTable::new(vec![sym(0x200, None, "b"), sym(0x100, Some(0x10), "a")]);
        assert_eq!(
            t.lookup(0x105).map(|(s, o)| (s.name.as_str(), o)),
            Some(("a", 5))
        );
        assert!(t.lookup(0x110).is_none(), "past a sized symbol's end");
        assert_eq!(t.lookup(0x2ff).map(|(s, _)| s.name.as_str()), Some("b"));
        assert!(t.lookup(0xff).is_none());
    }

    #[test]
    fn text_only_drops_section_end_markers() {
        let t = SymbolTable::new(vec![
            sym(0x100, None, "do_softirq"),
            sym(0x180, None, "__softirqentry_text_end"),
            sym(0x200, None, "_einittext"),
            sym(0x300, None, "blk_end_request"),
        ])
        .text_only();
        let names: Vec<&str> = t.symbols().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["do_softirq", "blk_end_request"]);
        assert_eq!(
            t.lookup(0x190).map(|(s, _)| s.name.as_str()),
            Some("do_softirq")
        );
    }
}
