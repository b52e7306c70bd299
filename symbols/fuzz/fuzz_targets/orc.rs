//! Any bytes as ORC sections: `.orc_unwind_ip` address, the split between
//! the two sections and the layout version come from the first 11 bytes.
#![no_main]

use boottrace_symbols::orc::{OrcTable, OrcVersion};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 11 {
        return;
    }
    let (head, rest) = data.split_at(11);
    let ip_addr = u64::from_le_bytes(head[..8].try_into().unwrap_or_default());
    let split = usize::from(u16::from_le_bytes([head[8], head[9]])) % (rest.len() + 1);
    let version = [OrcVersion::V1, OrcVersion::V2, OrcVersion::V3][usize::from(head[10]) % 3];
    // Splitting at 4:6 ratio would be the well-formed case; any split is legal input.
    let (ip, unwind) = rest.split_at(split);
    if let Ok(table) = OrcTable::from_sections(ip_addr, ip, unwind, version) {
        let (lo, hi) = table.ip_range();
        for ip in [lo, hi, lo.wrapping_add(hi.wrapping_sub(lo) / 2), ip_addr] {
            let _ = table.lookup(ip);
        }
        let _ = table.iter().count();
    }
    let _ = OrcTable::from_elf(data);
});
