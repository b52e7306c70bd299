//! Linux kernel images and their symbols, with no KVM in sight: bzImage and
//! ELF parsing, payload decompression, kallsyms recovery, System.map, DWARF
//! (inline frames, file:line), ORC tables, kernel identity, and address →
//! frames resolution with a per-address cache; kernel struct layouts (DWARF
//! or BTF) for task awareness.

pub mod btf;
pub mod bzimage;
pub mod decompress;
pub mod dwarf;
pub mod dwarf_types;
pub mod elf;
pub mod elfsyms;
pub mod identity;
pub mod image;
pub mod input;
pub mod kallsyms;
pub mod layout;
pub mod mapped;
pub mod orc;
pub mod symbolizer;
pub mod sysmap;
pub mod table;
pub mod typedesc;
pub mod typeinfo;
