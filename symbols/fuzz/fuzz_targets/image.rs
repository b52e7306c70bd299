//! Any bytes as a kernel image: bzImage header, payload, ELF, then every
//! accessor a caller may use on what parsed.
#![no_main]

use boottrace_symbols::image::KernelImage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(image) = KernelImage::from_bytes(data.to_vec()) else {
        return;
    };
    let _ = image.setup_header();
    let _ = image.protected_mode_code();
    let _ = image.section(".rodata");
    let _ = image.section(".orc_unwind");
    let start = image.text_start();
    let _ = image.read_link(start, 64);
    let _ = image.read_link(start.wrapping_add(image.image_size()), 8);
    let _ = image.phys_load_start();
    let _ = image.identity().check_matches(image.identity());
    let _ = image.kallsyms();
});
