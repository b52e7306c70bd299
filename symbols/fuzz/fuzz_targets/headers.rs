//! Any bytes as the headers a loader checks before putting a kernel into
//! guest memory: the ELF program headers (`elf::load_extent`, what the VMM's
//! loader calls) and the bzImage setup header's boot reservation
//! (`SetupHeader::boot_end`). Neither may panic or overflow (this runs with
//! overflow checks), and the header-only check must accept every image the
//! full parse accepts, with every segment inside the extent it returns.
#![no_main]

use boottrace_symbols::bzimage::SetupHeader;
use boottrace_symbols::elf::{load_extent, ElfLayout, MAX_IMAGE_SPAN, PHYS_LIMIT};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let extent = load_extent(data);
    if let Ok(layout) = ElfLayout::parse(data) {
        let (lo, hi) = extent.expect("the full parse accepted what load_extent refused");
        assert!(lo <= hi && hi - lo <= MAX_IMAGE_SPAN && hi <= PHYS_LIMIT);
        for s in &layout.segments {
            assert!(s.paddr >= lo && s.paddr + s.memsz <= hi);
        }
    }
    if let Ok(h) = SetupHeader::parse(data) {
        for load in [0, 0x10_0000, u64::MAX - 0xfff, u64::MAX] {
            if let Ok(end) = h.boot_end(load) {
                assert!(end <= PHYS_LIMIT && end >= h.pref_address);
            }
        }
    }
});
