//! Any bytes as the `.rodata` of a kernel: the first 8 bytes are its
//! link-time address (alignment is judged on addresses), the rest its data.
#![no_main]

use boottrace_symbols::kallsyms::recover_from_bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (base, rodata) = data.split_at(8);
    let base = u64::from_le_bytes(base.try_into().unwrap_or_default());
    if let Ok((table, info)) = recover_from_bytes(rodata, base) {
        assert_eq!(table.len(), info.num_syms);
        assert!(table.symbols().windows(2).all(|w| w[0].addr <= w[1].addr));
    }
});
