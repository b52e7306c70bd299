//! Any bytes as a bzImage payload: first byte picks the format, so every
//! decoder (and the lzop / LZ4-legacy containers) is reached without magic.
#![no_main]

use boottrace_symbols::decompress::{decompress_payload, decompress_stream, Compression};
use libfuzzer_sys::fuzz_target;

const FORMATS: [Compression; 7] = [
    Compression::Gzip,
    Compression::Bzip2,
    Compression::Lzma,
    Compression::Xz,
    Compression::Lzo,
    Compression::Lz4,
    Compression::Zstd,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let _ = decompress_payload(rest);
    // A small limit keeps iterations fast and exercises the overflow path.
    let _ = decompress_stream(FORMATS[usize::from(pick) % FORMATS.len()], rest, 1 << 20);
});
