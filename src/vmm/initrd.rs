//! Looking inside an initrd for `/init`'s entry point, so the VMM can put a
//! hardware breakpoint on the first user-mode instruction of the boot.

use std::io::{BufReader, Read};
use std::path::Path;

use boottrace_symbols::input::open_regular;
use object::elf::{FileHeader64, ET_EXEC};
use object::read::elf::FileHeader;
use object::LittleEndian;

/// Most entries we look at before giving up (the guest-side format is ours to bound).
const MAX_ENTRIES: usize = 100_000;

/// The entry address of `/init` when the initrd is an uncompressed newc cpio
/// and `/init` is a non-PIE x86_64 ELF executable; `None` otherwise (PIE
/// entries depend on where the kernel maps them).
pub fn init_entry(path: &Path) -> Option<u64> {
    // Regular files only (a FIFO would block); the loader has said why not.
    let input = open_regular(path, u64::MAX, "initrd").ok()?;
    let mut reader = BufReader::new(input.file);
    for _ in 0..MAX_ENTRIES {
        let entry = cpio::NewcReader::new(reader).ok()?;
        if entry.entry().is_trailer() {
            return None;
        }
        let name = entry
            .entry()
            .name()
            .trim_start_matches("./")
            .trim_start_matches('/')
            .to_string();
        let size = entry.entry().file_size() as usize;
        if name == "init" {
            let mut head = vec![0u8; size.min(64)];
            let mut e = entry;
            e.read_exact(&mut head).ok()?;
            return elf_exec_entry(&head);
        }
        reader = entry.finish().ok()?;
    }
    None
}

fn elf_exec_entry(head: &[u8]) -> Option<u64> {
    let hdr = FileHeader64::<LittleEndian>::parse(head).ok()?;
    let e = LittleEndian;
    (hdr.e_type(e) == ET_EXEC).then(|| hdr.e_entry(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_elf_and_non_cpio() {
        assert_eq!(elf_exec_entry(b"#!/bin/sh\n"), None);
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x");
        std::fs::write(&p, b"not a cpio").expect("write");
        assert_eq!(init_entry(&p), None);
    }
}
