//! The compressed payload of a bzImage: format detection by magic bytes and
//! bounded decompression through maintained crates.
//!
//! Every kernel payload is `compressor < vmlinux.bin.all; size_append`
//! (arch/x86/boot/compressed/Makefile, scripts/Makefile.lib): the compressed
//! stream followed by the uncompressed size as a little-endian u32 — except
//! gzip, whose own trailer already ends with that size (ISIZE).
//! `vmlinux.bin.all` is the kernel ELF, followed by `vmlinux.relocs` on
//! relocatable kernels. That trailing size is what the
//! kernel's own decompressor trusts; here it is only a claim, checked against
//! [`MAX_OUTPUT`] and against what actually comes out.

use std::io::Read;

use thiserror::Error;

/// Hard upper bound on any decompressed kernel (a zip bomb stops here).
/// Distro kernels are ~60 MiB uncompressed; 1 GiB leaves room for odd builds.
pub const MAX_OUTPUT: u64 = 1 << 30;

/// Memory limit handed to liblzma (xz dictionaries go up to 128 MiB for kernels).
const XZ_MEMLIMIT: u64 = 512 << 20;

/// zstd window log limit: `zstd -22 --ultra`, the kernel's setting, uses 2^27.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// Largest block the LZ4 legacy format allows (8 MiB).
const LZ4_LEGACY_BLOCK: usize = 8 << 20;

/// Largest lzop block the kernel's unlzo accepts (lib/decompress_unlzo.c).
#[cfg(feature = "lzo")]
const LZO_BLOCK_SIZE: usize = 256 * 1024;

/// A payload compression, as selected by `CONFIG_KERNEL_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Compression {
    /// gzip (`1F 8B`).
    Gzip,
    /// bzip2 (`BZh`).
    Bzip2,
    /// lzma "alone" format (`5D 00 00`).
    Lzma,
    /// xz (`FD 37 7A 58 5A 00`), usually with the x86 BCJ filter.
    Xz,
    /// lzop container of LZO1X blocks (`89 4C 5A 4F`).
    Lzo,
    /// LZ4 legacy frame (`02 21 4C 18`).
    Lz4,
    /// zstd frame (`28 B5 2F FD`).
    Zstd,
    /// Not compressed at all: the payload is the ELF itself.
    None,
}

impl Compression {
    /// Recognises a payload by its leading magic bytes.
    pub fn detect(data: &[u8]) -> Option<Compression> {
        const MAGICS: &[(&[u8], Compression)] = &[
            (&[0x1f, 0x8b], Compression::Gzip),
            (b"BZh", Compression::Bzip2),
            (&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00], Compression::Xz),
            (&[0x89, 0x4c, 0x5a, 0x4f], Compression::Lzo),
            (&[0x02, 0x21, 0x4c, 0x18], Compression::Lz4),
            (&[0x28, 0xb5, 0x2f, 0xfd], Compression::Zstd),
            (&[0x5d, 0x00, 0x00], Compression::Lzma),
            (b"\x7fELF", Compression::None),
        ];
        MAGICS
            .iter()
            .find(|(magic, _)| data.starts_with(magic))
            .map(|&(_, c)| c)
    }

    /// The name the kernel's Kconfig uses (`gzip`, `xz`, …).
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Lzma => "lzma",
            Compression::Xz => "xz",
            Compression::Lzo => "lzo",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
            Compression::None => "none",
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a payload could not be decompressed.
#[derive(Debug, Error)]
pub enum DecompressError {
    /// payload does not start with a known compression magic
    #[error("payload does not start with a known compression magic (first bytes {0:02x?})")]
    UnknownFormat(Vec<u8>),
    /// payload too short to hold a stream and its trailing size
    #[error("payload of {0} bytes is too short to hold a compressed kernel")]
    TooShort(usize),
    /// the trailing uncompressed size is beyond the limit
    #[error("payload claims {claimed} uncompressed bytes, more than the {limit}-byte limit")]
    TooLarge {
        /// Size from the payload's trailer.
        claimed: u64,
        /// The enforced limit.
        limit: u64,
    },
    /// the stream produced more bytes than its trailer announced
    #[error("{format} stream produces more than the {expected} bytes its trailer announces")]
    Overflow {
        /// Compression format.
        format: Compression,
        /// Size from the trailer.
        expected: u64,
    },
    /// the stream produced fewer bytes than its trailer announced
    #[error("{format} stream produced {got} bytes, but its trailer announces {expected}")]
    SizeMismatch {
        /// Compression format.
        format: Compression,
        /// Bytes produced.
        got: u64,
        /// Size from the trailer.
        expected: u64,
    },
    /// the compressed stream is corrupt
    #[error("corrupt {format} stream: {detail}")]
    Corrupt {
        /// Compression format.
        format: Compression,
        /// What the decoder said.
        detail: String,
    },
    /// support for this compression was compiled out
    #[error("{0} payloads are not supported by this build (enable the `lzo` feature)")]
    Unsupported(Compression),
}

fn corrupt(format: Compression, detail: impl ToString) -> DecompressError {
    DecompressError::Corrupt {
        format,
        detail: detail.to_string(),
    }
}

/// Decompresses a bzImage payload (compressed stream + 4-byte size trailer).
/// Returns the format and the uncompressed bytes (the kernel's ELF).
pub fn decompress_payload(payload: &[u8]) -> Result<(Compression, Vec<u8>), DecompressError> {
    let format = Compression::detect(payload)
        .ok_or_else(|| DecompressError::UnknownFormat(payload.iter().take(8).copied().collect()))?;
    if format == Compression::None {
        return Ok((format, payload.to_vec()));
    }
    let split = payload
        .len()
        .checked_sub(4)
        .filter(|&n| n >= 2)
        .ok_or(DecompressError::TooShort(payload.len()))?;
    let (stream, trailer) = payload.split_at(split);
    // gzip is the one format without size_append (cmd_gzip): its own
    // trailer ends in ISIZE, which doubles as the size, so it keeps all bytes.
    let stream = if format == Compression::Gzip {
        payload
    } else {
        stream
    };
    let mut size = [0u8; 4];
    size.copy_from_slice(trailer);
    let expected = u64::from(u32::from_le_bytes(size));
    if expected > MAX_OUTPUT {
        return Err(DecompressError::TooLarge {
            claimed: expected,
            limit: MAX_OUTPUT,
        });
    }
    let out = decompress_stream(format, stream, expected)?;
    if out.len() as u64 != expected {
        return Err(DecompressError::SizeMismatch {
            format,
            got: out.len() as u64,
            expected,
        });
    }
    Ok((format, out))
}

/// Decompresses one stream of `format` (no size trailer), producing at most
/// `limit` bytes; more is an error.
pub fn decompress_stream(
    format: Compression,
    stream: &[u8],
    limit: u64,
) -> Result<Vec<u8>, DecompressError> {
    let limit = limit.min(MAX_OUTPUT);
    let hint = (stream.len() as u64).saturating_mul(16);
    match format {
        Compression::Gzip => {
            read_bounded(format, flate2::read::GzDecoder::new(stream), limit, hint)
        }
        Compression::Bzip2 => {
            read_bounded(format, bzip2::read::BzDecoder::new(stream), limit, hint)
        }
        Compression::Xz => {
            let dec = xz2::stream::Stream::new_stream_decoder(XZ_MEMLIMIT, 0)
                .map_err(|e| corrupt(format, e))?;
            read_bounded(
                format,
                xz2::read::XzDecoder::new_stream(stream, dec),
                limit,
                hint,
            )
        }
        Compression::Lzma => {
            let dec = xz2::stream::Stream::new_lzma_decoder(XZ_MEMLIMIT)
                .map_err(|e| corrupt(format, e))?;
            read_bounded(
                format,
                xz2::read::XzDecoder::new_stream(stream, dec),
                limit,
                hint,
            )
        }
        Compression::Zstd => {
            let mut dec = zstd::stream::read::Decoder::with_buffer(stream)
                .map_err(|e| corrupt(format, e))?
                .single_frame();
            dec.window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|e| corrupt(format, e))?;
            read_bounded(format, dec, limit, hint)
        }
        Compression::Lz4 => lz4_legacy(stream, limit),
        Compression::Lzo => lzop(stream, limit),
        Compression::None => {
            if stream.len() as u64 > limit {
                return Err(DecompressError::Overflow {
                    format,
                    expected: limit,
                });
            }
            Ok(stream.to_vec())
        }
    }
}

/// Reads a decoder to its end, refusing to go past `limit` bytes.
fn read_bounded(
    format: Compression,
    reader: impl Read,
    limit: u64,
    hint: u64,
) -> Result<Vec<u8>, DecompressError> {
    // Reserve what the trailer claims, within reason: kernels compress 3-6x,
    // and a lying trailer must not reserve a gigabyte for a tiny stream.
    let mut out = Vec::with_capacity(limit.min(hint) as usize);
    // One byte more than allowed tells "exactly limit" from "too much".
    reader
        .take(limit + 1)
        .read_to_end(&mut out)
        .map_err(|e| corrupt(format, e))?;
    if out.len() as u64 > limit {
        return Err(DecompressError::Overflow {
            format,
            expected: limit,
        });
    }
    Ok(out)
}

/// Reads a big- or little-endian u32 at `pos`, if in bounds.
fn u32_at(data: &[u8], pos: usize, big_endian: bool) -> Option<u32> {
    let bytes: [u8; 4] = data.get(pos..pos.checked_add(4)?)?.try_into().ok()?;
    Some(if big_endian {
        u32::from_be_bytes(bytes)
    } else {
        u32::from_le_bytes(bytes)
    })
}

/// LZ4 legacy frame (`lz4 -l`): magic, then blocks of `u32 LE size` +
/// raw LZ4 block, each decompressing to at most 8 MiB. lz4_flex decodes the
/// blocks; the container is four bytes of framing, so it is read here.
fn lz4_legacy(stream: &[u8], limit: u64) -> Result<Vec<u8>, DecompressError> {
    const MAGIC: u32 = 0x184c_2102;
    let format = Compression::Lz4;
    let mut out = Vec::new();
    let mut pos = 0usize;
    let mut block = vec![0u8; LZ4_LEGACY_BLOCK];
    while pos < stream.len() {
        let word =
            u32_at(stream, pos, false).ok_or_else(|| corrupt(format, "truncated block header"))?;
        pos += 4;
        if word == MAGIC {
            // Concatenated legacy frames restart with the magic.
            continue;
        }
        let len = word as usize;
        let data = stream
            .get(pos..pos.saturating_add(len))
            .filter(|_| len > 0)
            .ok_or_else(|| {
                corrupt(
                    format,
                    format!("block of {len} bytes at {pos} runs past the end"),
                )
            })?;
        pos += len;
        let n =
            lz4_flex::block::decompress_into(data, &mut block).map_err(|e| corrupt(format, e))?;
        if (out.len() + n) as u64 > limit {
            return Err(DecompressError::Overflow {
                format,
                expected: limit,
            });
        }
        out.extend_from_slice(&block[..n]);
    }
    Ok(out)
}

/// lzop container (`lzop -9`) of LZO1X blocks, as lib/decompress_unlzo.c reads it.
#[cfg(feature = "lzo")]
fn lzop(stream: &[u8], limit: u64) -> Result<Vec<u8>, DecompressError> {
    const MAGIC: &[u8] = &[0x89, 0x4c, 0x5a, 0x4f, 0x00, 0x0d, 0x0a, 0x1a, 0x0a];
    const F_ADLER32_D: u32 = 0x1;
    const F_ADLER32_C: u32 = 0x2;
    const F_H_FILTER: u32 = 0x800;
    const F_CRC32_D: u32 = 0x100;
    const F_CRC32_C: u32 = 0x200;
    let format = Compression::Lzo;
    let trunc = || corrupt(format, "truncated header");
    if !stream.starts_with(MAGIC) {
        return Err(corrupt(format, "bad lzop magic"));
    }
    let mut pos = MAGIC.len();
    let version = stream
        .get(pos..pos + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(trunc)?;
    // version, lib_version, [version_needed], method, [level]
    pos += if version >= 0x0940 { 8 } else { 5 };
    let flags = u32_at(stream, pos, true).ok_or_else(trunc)?;
    pos += 4;
    if flags & F_H_FILTER != 0 {
        pos += 4;
    }
    // mode, mtime_low, [mtime_high]
    pos += if version >= 0x0940 { 12 } else { 8 };
    let name_len = *stream.get(pos).ok_or_else(trunc)? as usize;
    pos += 1 + name_len + 4; // name, header checksum
    if pos > stream.len() {
        return Err(trunc());
    }
    let dst_sums = 4 * ((flags & F_ADLER32_D != 0) as usize + (flags & F_CRC32_D != 0) as usize);
    let src_sums = 4 * ((flags & F_ADLER32_C != 0) as usize + (flags & F_CRC32_C != 0) as usize);

    let mut out = Vec::new();
    // Bounded: each iteration consumes at least 8 input bytes.
    loop {
        let dst_len =
            u32_at(stream, pos, true).ok_or_else(|| corrupt(format, "truncated block"))? as usize;
        pos += 4;
        if dst_len == 0 {
            break;
        }
        let src_len =
            u32_at(stream, pos, true).ok_or_else(|| corrupt(format, "truncated block"))? as usize;
        pos += 4;
        if dst_len > LZO_BLOCK_SIZE || src_len == 0 || src_len > dst_len {
            return Err(corrupt(
                format,
                format!("bad block sizes (compressed {src_len}, uncompressed {dst_len})"),
            ));
        }
        pos += dst_sums;
        if src_len < dst_len {
            pos += src_sums;
        }
        let data = stream
            .get(pos..pos.saturating_add(src_len))
            .ok_or_else(|| corrupt(format, "block runs past the end"))?;
        pos += src_len;
        if (out.len() + dst_len) as u64 > limit {
            return Err(DecompressError::Overflow {
                format,
                expected: limit,
            });
        }
        let start = out.len();
        out.resize(start + dst_len, 0);
        if src_len == dst_len {
            // lzop stores incompressible blocks verbatim.
            out[start..].copy_from_slice(data);
        } else {
            lzo1x::decompress(data, &mut out[start..])
                .map_err(|e| corrupt(format, format!("{e:?}")))?;
        }
    }
    Ok(out)
}

#[cfg(not(feature = "lzo"))]
fn lzop(_stream: &[u8], _limit: u64) -> Result<Vec<u8>, DecompressError> {
    Err(DecompressError::Unsupported(Compression::Lzo))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_size(mut stream: Vec<u8>, size: usize) -> Vec<u8> {
        stream.extend_from_slice(&(size as u32).to_le_bytes());
        stream
    }

    fn sample() -> Vec<u8> {
        (0..200_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn gzip_round_trip_and_bomb_refused() {
        use std::io::Write;
        let data = sample();
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&data).expect("in-memory write");
        let stream = enc.finish().expect("in-memory finish");
        // No size_append for gzip: ISIZE is the trailer.
        let (fmt, out) = decompress_payload(&stream).expect("decompresses");
        assert_eq!(fmt, Compression::Gzip);
        assert_eq!(out, data);
        // An ISIZE that understates the size must stop the decoder early.
        let mut lying = stream.clone();
        let n = lying.len();
        lying[n - 4..].copy_from_slice(&1000u32.to_le_bytes());
        let err = decompress_payload(&lying).expect_err("overflow");
        assert!(matches!(err, DecompressError::Overflow { .. }), "{err}");
    }

    #[test]
    fn lz4_legacy_round_trip() {
        let data = sample();
        let mut stream = 0x184c_2102u32.to_le_bytes().to_vec();
        for chunk in data.chunks(LZ4_LEGACY_BLOCK) {
            let block = lz4_flex::block::compress(chunk);
            stream.extend_from_slice(&(block.len() as u32).to_le_bytes());
            stream.extend_from_slice(&block);
        }
        let (fmt, out) = decompress_payload(&with_size(stream, data.len())).expect("decompresses");
        assert_eq!(fmt, Compression::Lz4);
        assert_eq!(out, data);
    }

    #[test]
    fn unknown_and_short_payloads_are_errors() {
        assert!(matches!(
            decompress_payload(b"hello world"),
            Err(DecompressError::UnknownFormat(_))
        ));
        assert!(matches!(
            decompress_payload(&[0x1f, 0x8b, 0, 0]),
            Err(DecompressError::TooShort(_))
        ));
        let mut huge = vec![0x1f, 0x8b, 0, 0];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decompress_payload(&huge),
            Err(DecompressError::TooLarge { .. })
        ));
    }
}
