//! Kernel image formats on the real test kernels: bzImage header and
//! payload, every payload compression (re-packed with the kernel's own
//! compressor tools), the ELF inside, identity, and bad input.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use boottrace_symbols::decompress::Compression;
use boottrace_symbols::identity::IdentityMismatch;
use boottrace_symbols::image::{ImageError, ImageFormat, KernelImage};
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol};

/// Address of `name` in a System.map.
fn map_addr(dir: &Path, name: &str) -> u64 {
    let map = std::fs::read_to_string(dir.join("System.map")).expect("System.map");
    map.lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 3 && f[2] == name).then(|| u64::from_str_radix(f[0], 16).ok())?
        })
        .unwrap_or_else(|| panic!("{name} not in System.map"))
}

#[test]
fn tiny_fp_bzimage_header_payload_and_elf() {
    let dir = common::kernel_dir("tiny-fp");
    let image = KernelImage::open(&dir.join("bzImage")).expect("bzImage opens");
    assert_eq!(image.format(), ImageFormat::BzImage);
    assert_eq!(
        image.compression(),
        Some(Compression::Lz4),
        "tiny configs use LZ4"
    );
    let h = image.setup_header().expect("setup header");
    assert!(h.version >= 0x020c, "protocol {}", h.protocol());
    assert_eq!(h.xloadflags & 1, 1, "XLF_KERNEL_64");
    assert_eq!(h.code32_start, 0x10_0000);
    assert_eq!(h.relocatable_kernel, 0, "tiny-fp is not relocatable");
    assert!(h.cmdline_size >= 2047);
    assert!(h.init_size as usize >= image.elf_bytes().len());
    assert!(h
        .kernel_version
        .as_deref()
        .is_some_and(|v| v.starts_with("6.12")));

    // The ELF inside is vmlinux without symbols: same segments, same text.
    let vmlinux_bytes = std::fs::read(dir.join("vmlinux")).expect("vmlinux");
    let vmlinux = object::File::parse(&*vmlinux_bytes).expect("vmlinux parses");
    let text = vmlinux.section_by_name(".text").expect(".text");
    let (addr, bytes) = image.section(".text").expect("payload keeps .text");
    assert_eq!(addr, text.address());
    assert_eq!(bytes, text.data().expect("text bytes"));
    assert!(image.section(".rodata").is_some());
    assert!(
        object::File::parse(image.elf_bytes())
            .expect("payload parses")
            .symbols()
            .next()
            .is_none(),
        "payload is stripped"
    );
    assert_eq!(image.text_start(), map_addr(&dir, "_text"));
    assert_eq!(
        image.image_size(),
        map_addr(&dir, "_end") - map_addr(&dir, "_text")
    );
    assert_eq!(image.phys_load_start(), 0x100_0000);
    let start_kernel = vmlinux
        .symbols()
        .find(|s| s.name() == Ok("start_kernel"))
        .expect("start_kernel");
    let init_text = vmlinux.section_by_name(".init.text").expect(".init.text");
    assert_eq!(
        image.read_link(start_kernel.address(), 64),
        init_text
            .data_range(start_kernel.address(), 64)
            .expect("readable")
    );
    assert!(image.read_link(0x1000, 4).is_none());
    assert!(image.read_link(u64::MAX - 2, 8).is_none());

    // The protected-mode code is the decompressor ELF's image (linked at 0).
    let dec_bytes = std::fs::read(dir.join("decompressor.elf")).expect("decompressor.elf");
    let dec = object::File::parse(&*dec_bytes).expect("decompressor parses");
    let seg0 = dec.segments().next().expect("a segment");
    assert_eq!(seg0.address(), 0);
    let seg0 = seg0.data().expect("segment data");
    let pm = image.protected_mode_code().expect("protected-mode code");
    assert_eq!(&pm[..seg0.len()], seg0);
}

#[test]
fn tiny_orc_payload_keeps_orc_sections() {
    let dir = common::kernel_dir("tiny-orc");
    let image = KernelImage::open(&dir.join("bzImage")).expect("bzImage opens");
    let h = image.setup_header().expect("setup header");
    assert_eq!(h.relocatable_kernel, 1, "tiny-orc is relocatable");
    for name in [".orc_unwind", ".orc_unwind_ip", ".orc_header", ".rodata"] {
        let (_, bytes) = image.section(name).unwrap_or_else(|| panic!("{name} kept"));
        assert!(!bytes.is_empty(), "{name} empty");
    }
    // The per-cpu segment is linked at 0 on SMP; the size still spans _text.._end.
    assert_eq!(image.text_start(), map_addr(&dir, "_text"));
    assert_eq!(
        image.image_size(),
        map_addr(&dir, "_end") - map_addr(&dir, "_text")
    );
}

#[test]
fn identity_of_bzimage_and_vmlinux_match_and_mismatch_is_refused() {
    let fp = common::kernel_dir("tiny-fp");
    let orc = common::kernel_dir("tiny-orc");
    let bz = KernelImage::open(&fp.join("bzImage")).expect("bzImage");
    let vm = KernelImage::open(&fp.join("vmlinux")).expect("vmlinux");
    assert_eq!(vm.format(), ImageFormat::Elf);
    let (a, b) = (bz.identity(), vm.identity());
    let build_id = a
        .build_id
        .as_deref()
        .expect("bzImage payload has a build-id");
    assert_eq!(build_id.len(), 40, "sha1 build-id");
    assert_eq!(a.build_id, b.build_id);
    let version = a.version.as_deref().expect("banner in bzImage");
    assert!(version.starts_with("Linux version 6.12"), "{version}");
    assert_eq!(a.version, b.version);
    assert_ne!(a.sha256, b.sha256);
    assert_eq!(
        a.size,
        std::fs::metadata(fp.join("bzImage")).expect("stat").len()
    );
    assert!(a.path.as_deref().is_some_and(|p| p.ends_with("bzImage")));
    a.check_matches(b).expect("vmlinux matches its bzImage");

    // Without build-ids the banners (build number + timestamp) decide.
    let mut a2 = a.clone();
    let mut b2 = b.clone();
    a2.build_id = None;
    b2.build_id = None;
    a2.check_matches(&b2).expect("same banner");

    let other = KernelImage::open(&orc.join("vmlinux")).expect("tiny-orc vmlinux");
    let err = a
        .check_matches(other.identity())
        .expect_err("another kernel's vmlinux");
    assert!(matches!(err, IdentityMismatch::BuildId { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&fp.join("bzImage").display().to_string()),
        "{msg}"
    );
    assert!(
        msg.contains(&orc.join("vmlinux").display().to_string()),
        "{msg}"
    );
    b2.version = other.identity().version.clone();
    assert!(matches!(
        a2.check_matches(&b2),
        Err(IdentityMismatch::Version { .. })
    ));
}

/// Runs `cmd args` with `input` on stdin; None when the tool is missing.
fn pipe(cmd: &str, args: &[&str], input: &[u8]) -> Option<Vec<u8>> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut stdin = child.stdin.take()?;
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().ok()?;
    writer.join().ok()?.ok()?;
    out.status.success().then_some(out.stdout)
}

/// The bzImage with its payload replaced by `payload` (header fields fixed up).
fn splice(file: &[u8], payload: &[u8]) -> Vec<u8> {
    let sects = match file[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let pm = (sects + 1) * 512;
    let field =
        |off: usize| u32::from_le_bytes(file[off..off + 4].try_into().expect("4 bytes")) as usize;
    let start = pm + field(0x248);
    let end = start + field(0x24c);
    let mut out = file[..start].to_vec();
    out.extend_from_slice(payload);
    out.extend_from_slice(&file[end..]);
    out[0x24c..0x250].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    let syssize = (out.len() - pm).div_ceil(16) as u32;
    out[0x1f4..0x1f8].copy_from_slice(&syssize.to_le_bytes());
    out
}

/// An lzop file built with the lzo1x crate, for hosts without `lzop`.
#[cfg(feature = "lzo")]
fn lzop_fallback(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x89, 0x4c, 0x5a, 0x4f, 0x00, 0x0d, 0x0a, 0x1a, 0x0a];
    out.extend_from_slice(&0x1030u16.to_be_bytes()); // version (>= 0x0940: long header)
    out.extend_from_slice(&0x2080u16.to_be_bytes()); // lib version
    out.extend_from_slice(&0x0940u16.to_be_bytes()); // version needed to extract
    out.extend_from_slice(&[1, 5]); // method LZO1X-1, level
    out.extend_from_slice(&0u32.to_be_bytes()); // flags: no checksums
    out.extend_from_slice(&[0; 12]); // mode, mtime low, mtime high
    out.push(0); // no name
    out.extend_from_slice(&[0; 4]); // header checksum (not checked)
    for chunk in data.chunks(256 * 1024) {
        let c = lzo1x::compress(chunk, lzo1x::CompressLevel::default());
        out.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        let stored = if c.len() < chunk.len() { &c[..] } else { chunk };
        out.extend_from_slice(&(stored.len() as u32).to_be_bytes());
        out.extend_from_slice(stored);
    }
    out.extend_from_slice(&0u32.to_be_bytes());
    out
}

#[test]
fn every_payload_compression_decodes() {
    let dir = common::kernel_dir("tiny-fp");
    let file = std::fs::read(dir.join("bzImage")).expect("bzImage");
    let original = KernelImage::from_bytes(file.clone()).expect("parses");
    let elf = original.elf_bytes().to_vec();
    // The kernel's commands (scripts/Makefile.lib), at fast levels: the
    // format is the same, the test just runs quicker.
    let tools: &[(Compression, &str, &[&str])] = &[
        (Compression::Gzip, "gzip", &["-n", "-f", "-1"]),
        (Compression::Bzip2, "bzip2", &["-1"]),
        (Compression::Lzma, "lzma", &["-1"]),
        (
            Compression::Xz,
            "xz",
            &["--check=crc32", "--x86", "--lzma2=preset=1,dict=32MiB"],
        ),
        (Compression::Lz4, "lz4", &["-l", "-1", "-", "-"]),
        (Compression::Zstd, "zstd", &["-3", "--long=27"]),
        #[cfg(feature = "lzo")]
        (Compression::Lzo, "lzop", &["-1"]),
    ];
    for &(format, cmd, args) in tools {
        let mut payload = match pipe(cmd, args, &elf) {
            Some(p) => p,
            #[cfg(feature = "lzo")]
            None if format == Compression::Lzo => {
                eprintln!("lzop not installed: using an lzop stream built with the lzo1x crate");
                lzop_fallback(&elf)
            }
            None => panic!("{cmd} (a kernel build tool) is missing"),
        };
        if format != Compression::Gzip {
            // size_append; gzip's own trailer ends with the size (cmd_gzip).
            payload.extend_from_slice(&(elf.len() as u32).to_le_bytes());
        }
        let spliced = splice(&file, &payload);
        let image = KernelImage::from_bytes(spliced.clone())
            .unwrap_or_else(|e| panic!("{format} payload: {e}"));
        assert_eq!(image.compression(), Some(format));
        assert!(image.elf_bytes() == elf.as_slice(), "{format}: ELF differs");
        assert_eq!(image.identity().build_id, original.identity().build_id);

        // Cut the stream short: an error naming the format, not a panic.
        let mut short = payload[..payload.len() / 2].to_vec();
        short.extend_from_slice(&(elf.len() as u32).to_le_bytes());
        let err = KernelImage::from_bytes(splice(&file, &short)).expect_err("half a stream");
        assert!(matches!(err, ImageError::Decompress(_)), "{format}: {err}");
        // A trailer that understates the size is refused (bounded output).
        let mut lying = payload.clone();
        let n = lying.len();
        lying[n - 4..].copy_from_slice(&1000u32.to_le_bytes());
        let err = KernelImage::from_bytes(splice(&file, &lying)).expect_err("lying trailer");
        assert!(matches!(err, ImageError::Decompress(_)), "{format}: {err}");
    }
}

#[test]
fn truncated_images_are_errors_not_panics() {
    let dir = common::kernel_dir("tiny-fp");
    let file = std::fs::read(dir.join("bzImage")).expect("bzImage");
    let image = KernelImage::from_bytes(file.clone()).expect("parses");
    let h = image.setup_header().expect("header");
    let payload_end =
        h.protected_mode_offset() + h.payload_offset as usize + h.payload_length as usize;
    // Every cut before the payload's end loses something the parser needs.
    let mut cuts: Vec<usize> = (0..0x300).step_by(7).collect();
    cuts.extend((0..payload_end).step_by(payload_end / 40));
    cuts.extend([payload_end - 1, payload_end - 4, payload_end - 5]);
    for cut in cuts {
        let r = KernelImage::from_bytes(file[..cut].to_vec());
        assert!(r.is_err(), "bzImage cut at {cut} of {} parsed", file.len());
    }
    // Cut after the payload: the rest is decompressor code; either way, no panic.
    let _ = KernelImage::from_bytes(file[..payload_end + 100].to_vec());

    // The ELF: cut inside any loadable segment is an error.
    let elf = image.elf_bytes();
    let last_load_end = image
        .segments()
        .iter()
        .map(|s| (s.offset + s.filesz) as usize)
        .max()
        .expect("segments");
    for cut in (0..last_load_end)
        .step_by(last_load_end / 40)
        .chain([63, 64, 65])
    {
        let r = KernelImage::from_bytes(elf[..cut].to_vec());
        assert!(r.is_err(), "ELF cut at {cut} parsed");
    }
    let err =
        KernelImage::from_bytes(b"#!/bin/sh\necho not a kernel\n".to_vec()).expect_err("script");
    assert!(matches!(err, ImageError::NotAKernel), "{err}");
    let err = KernelImage::open(&dir.join("does-not-exist")).expect_err("missing file");
    assert!(err.to_string().contains("does-not-exist"), "{err}");
}

#[test]
fn bad_setup_headers_are_refused_clearly() {
    let dir = common::kernel_dir("tiny-fp");
    let file = std::fs::read(dir.join("bzImage")).expect("bzImage");
    let mut old = file.clone();
    old[0x206..0x208].copy_from_slice(&0x020bu16.to_le_bytes());
    let err = KernelImage::from_bytes(old).expect_err("protocol 2.11");
    assert!(err.to_string().contains("2.11"), "{err}");
    let mut not64 = file.clone();
    not64[0x236] &= !1;
    let err = KernelImage::from_bytes(not64).expect_err("no XLF_KERNEL_64");
    assert!(err.to_string().contains("XLF_KERNEL_64"), "{err}");
    let mut bad_len = file.clone();
    bad_len[0x24c..0x250].copy_from_slice(&u32::MAX.to_le_bytes());
    let err = KernelImage::from_bytes(bad_len).expect_err("payload past the end");
    assert!(err.to_string().contains("payload"), "{err}");
    let mut bad_magic = file;
    let pm = (usize::from(bad_magic[0x1f1]) + 1) * 512;
    let off = pm + u32::from_le_bytes(bad_magic[0x248..0x24c].try_into().expect("4")) as usize;
    bad_magic[off] ^= 0xff;
    let err = KernelImage::from_bytes(bad_magic).expect_err("unknown compression");
    assert!(err.to_string().contains("compression"), "{err}");
}
