//! Any bytes as BTF (a `.BTF` section) and as an ELF holding one: the type
//! reader and the layout code behind task awareness must return a layout or
//! an error, never panic or hang.
#![no_main]

use boottrace_symbols::typeinfo::KernelTypeInfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = KernelTypeInfo::from_btf(data);
    let _ = KernelTypeInfo::from_elf_btf(data);
});
