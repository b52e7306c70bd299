//! The ELF symbol table of a vmlinux, or of the decompressor's ELF
//! (`arch/x86/boot/compressed/vmlinux`), as a [`SymbolTable`] of code symbols.
//!
//! Kept: symbols defined in executable sections that are functions
//! (`STT_FUNC`, with their sizes) or untyped labels (`STT_NOTYPE`, sized to
//! the end of their section, so a label does not cover addresses past it;
//! labels at a section's very end are dropped). The labels matter: assembly entry points such as
//! `secondary_startup_64` or `entry_SYSCALL_64_after_hwframe` are
//! `SYM_CODE_START`/`SYM_INNER_LABEL` symbols without a type, and samples land
//! in them; System.map and kallsyms list them too, so keeping them makes every
//! source name the same address the same way.

use std::path::Path;

use object::elf;
use object::read::elf::{ElfFile, FileHeader, SectionHeader, Sym};
use object::{Endianness, FileKind};

use crate::mapped::{MapError, MappedFile};
use crate::table::{Symbol, SymbolTable};

/// Errors reading an ELF symbol table.
#[derive(Debug, thiserror::Error)]
pub enum ElfSymsError {
    /// The file could not be mapped.
    #[error(transparent)]
    Map(#[from] MapError),
    /// The bytes are not an ELF file `object` can parse.
    #[error("not a usable ELF file: {0}")]
    Parse(#[from] object::read::Error),
    /// The ELF is of a class this reader does not handle.
    #[error("not an ELF file (found {0:?})")]
    NotElf(FileKind),
}

/// Maps `path` and reads its code symbols.
pub fn load(path: &Path) -> Result<SymbolTable, ElfSymsError> {
    let file = MappedFile::open(path)?;
    from_bytes(file.bytes())
}

/// Reads the code symbols of an in-memory ELF file (32- or 64-bit). A file
/// without a symbol table (a stripped vmlinux, the payload of a bzImage)
/// yields an empty table, not an error.
pub fn from_bytes(data: &[u8]) -> Result<SymbolTable, ElfSymsError> {
    match FileKind::parse(data)? {
        FileKind::Elf64 => code_symbols(&ElfFile::<elf::FileHeader64<Endianness>>::parse(data)?),
        FileKind::Elf32 => code_symbols(&ElfFile::<elf::FileHeader32<Endianness>>::parse(data)?),
        other => Err(ElfSymsError::NotElf(other)),
    }
}

/// How strongly a symbol should win among several at one address: the table
/// returns the last of equal addresses, so sort the preferred one last
/// (sized function over label, global over weak over local).
fn preference(is_func: bool, sized: bool, kind: char) -> u8 {
    let binding = match kind {
        'T' => 2,
        'W' => 1,
        _ => 0,
    };
    (u8::from(is_func) << 3) | (u8::from(sized) << 2) | binding
}

fn code_symbols<H: FileHeader<Endian = Endianness>>(
    file: &ElfFile<'_, H>,
) -> Result<SymbolTable, ElfSymsError> {
    let endian = file.endian();
    let sections = file.elf_section_table();
    let table = file.elf_symbol_table();
    let mut ranked = Vec::with_capacity(table.len());
    for sym in table.symbols() {
        let st_type = sym.st_type();
        if st_type != elf::STT_FUNC && st_type != elf::STT_NOTYPE {
            continue;
        }
        let shndx = sym.st_shndx(endian);
        if shndx == elf::SHN_UNDEF || shndx >= elf::SHN_LORESERVE {
            continue;
        }
        let Ok(section) = sections.section(object::SectionIndex(usize::from(shndx))) else {
            continue;
        };
        if section.sh_flags(endian).into() & u64::from(elf::SHF_EXECINSTR) == 0 {
            continue;
        }
        let Ok(name) = sym.name(endian, table.strings()) else {
            continue;
        };
        // Assembler-local and mapping symbols are not names anyone wants to see.
        if name.is_empty() || name.starts_with(b".L") || name.starts_with(b"$") {
            continue;
        }
        let kind = match sym.st_bind() {
            elf::STB_GLOBAL => 'T',
            elf::STB_WEAK => 'W',
            _ => 't',
        };
        let addr: u64 = sym.st_value(endian).into();
        let size: u64 = sym.st_size(endian).into();
        let rank = preference(st_type == elf::STT_FUNC, size > 0, kind);
        let size = if size > 0 {
            Some(size)
        } else {
            // An untyped label covers at most the rest of its section; one at
            // the very end (`_etext`, `_ehead`) covers nothing and would
            // otherwise swallow every address above it.
            let end = section
                .sh_addr(endian)
                .into()
                .saturating_add(section.sh_size(endian).into());
            match end.checked_sub(addr) {
                Some(rest) if rest > 0 => Some(rest),
                _ => continue,
            }
        };
        ranked.push((
            rank,
            Symbol {
                addr,
                size,
                name: String::from_utf8_lossy(name).into_owned(),
                kind,
            },
        ));
    }
    ranked.sort_by_key(|(rank, s)| (s.addr, *rank));
    Ok(SymbolTable::new(
        ranked.into_iter().map(|(_, s)| s).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(from_bytes(b"").is_err());
        assert!(from_bytes(b"\x7fELF\x02\x01\x01").is_err());
        assert!(from_bytes(&[0u8; 4096]).is_err());
    }

    #[test]
    fn preference_orders_function_over_label_and_global_over_local() {
        assert!(preference(true, true, 't') > preference(false, false, 'T'));
        assert!(preference(true, true, 'T') > preference(true, true, 'W'));
        assert!(preference(true, true, 'W') > preference(true, true, 't'));
    }
}
