//! Fuzz-like tests that run everywhere (no nightly, no cargo-fuzz): real
//! test-kernel images mutated by a seeded PRNG, fed to every parser of this
//! crate. Nothing may panic; where a mutation must be detected, it is.
//! `BOOTTRACE_MUTATIONS=N` scales the iteration counts (default 1).

mod common;

use boottrace_symbols::bzimage::SetupHeader;
use boottrace_symbols::decompress;
use boottrace_symbols::elf::ElfLayout;
use boottrace_symbols::image::KernelImage;
use boottrace_symbols::kallsyms::{self, KallsymsError};
use boottrace_symbols::orc::{OrcTable, OrcVersion};

/// xorshift64*: deterministic, seeded, good enough to pick bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    /// Flips, overwrites or zeroes 1–8 bytes of `data`.
    fn mutate(&mut self, data: &mut [u8]) {
        if data.is_empty() {
            return;
        }
        for _ in 0..1 + self.below(8) {
            let at = self.below(data.len());
            data[at] = match self.below(4) {
                0 => data[at] ^ (1 << self.below(8)),
                1 => self.next() as u8,
                2 => 0,
                _ => 0xff,
            };
        }
    }

    /// A length to cut `len` bytes to: mostly `len`, sometimes shorter.
    fn cut(&mut self, len: usize) -> usize {
        if self.below(16) == 0 {
            self.below(len)
        } else {
            len
        }
    }
}

fn scale() -> usize {
    std::env::var("BOOTTRACE_MUTATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

#[test]
fn mutated_setup_headers_and_elf_headers_never_panic() {
    let dir = common::kernel_dir("tiny-fp");
    let bz = std::fs::read(dir.join("bzImage")).expect("bzImage");
    let image = KernelImage::from_bytes(bz.clone()).expect("parses");
    let elf = image.elf_bytes().to_vec();
    let mut e = elf.clone();
    let layout = ElfLayout::parse(&elf).expect("ELF parses");
    // Section headers sit at the end of the stripped ELF.
    let shdrs = layout
        .sections
        .iter()
        .map(|s| s.offset + s.size)
        .filter(|&e| e as usize <= elf.len())
        .max()
        .unwrap_or(0) as usize;
    let mut rng = Rng(0x5eed_0001);
    for _ in 0..2000 * scale() {
        let mut h = bz[..0x1000].to_vec();
        rng.mutate(&mut h[0x1f1..0x270]);
        let h = &h[..rng.cut(h.len())];
        if let Ok(setup) = SetupHeader::parse(h) {
            let _ = setup.payload(h);
            let _ = setup.protected_mode_code(h);
        }
        // ELF header + program headers, or the section header table:
        // mutated in place and restored (the ELF is megabytes).
        let range = if rng.below(2) == 0 {
            0..0x200
        } else {
            shdrs..elf.len()
        };
        let saved = e[range.clone()].to_vec();
        rng.mutate(&mut e[range.clone()]);
        let cut = rng.cut(e.len());
        let _ = ElfLayout::parse(&e[..cut]);
        e[range].copy_from_slice(&saved);
    }
    assert!(e == elf, "restored");
}

#[test]
fn mutated_payloads_never_panic() {
    let dir = common::kernel_dir("tiny-fp");
    let bz = std::fs::read(dir.join("bzImage")).expect("bzImage");
    let setup = SetupHeader::parse(&bz).expect("header");
    let payload = setup.payload(&bz).expect("payload").to_vec();
    let mut rng = Rng(0x5eed_0002);
    let mut detected = 0;
    let rounds = 40 * scale();
    for _ in 0..rounds {
        let mut p = payload.clone();
        // Early bytes: block headers and the first literals matter most.
        let end = if rng.below(2) == 0 { 4096 } else { p.len() };
        rng.mutate(&mut p[..end]);
        let cut = rng.cut(p.len());
        if decompress::decompress_payload(&p[..cut]).is_err() {
            detected += 1;
        }
    }
    // LZ4 has no checksum, so not every flip is caught; most are.
    eprintln!("{detected} of {rounds} corrupted payloads refused");
}

#[test]
fn mutated_kallsyms_tables_never_panic_and_markers_are_checked() {
    let dir = common::kernel_dir("tiny-orc");
    let image = KernelImage::open(&dir.join("bzImage")).expect("bzImage");
    let (base, rodata) = image.section(".rodata").expect(".rodata");
    let (table, info) = kallsyms::recover_from_bytes(rodata, base).expect("recovers");
    let at = |addr: u64| (addr - base) as usize;
    let names = at(info.names_addr);
    let tokens = at(info.token_table_addr);
    let offsets = at(info.offsets_addr);
    let end = offsets + 4 * info.num_syms + 8;
    let markers_len = 4 * info.num_syms.div_ceil(256);
    let mut rng = Rng(0x5eed_0003);
    let mut unchanged = 0;
    let rounds = 60 * scale();
    for round in 0..rounds {
        let mut r = rodata.to_vec();
        let kind = round % 3;
        match kind {
            // A marker (not markers[0], which the walk stops at) off by some bytes.
            0 => {
                let m = tokens - markers_len + 4 * (1 + rng.below(markers_len / 4 - 1));
                let v = u32::from_le_bytes(r[m..m + 4].try_into().expect("4 bytes"));
                let v = v.wrapping_add(1 + rng.below(100) as u32);
                r[m..m + 4].copy_from_slice(&v.to_le_bytes());
            }
            // Anything in the tables: names, markers, tokens, index, offsets.
            1 => rng.mutate(&mut r[names - 8..end]),
            // The token table and its index.
            _ => rng.mutate(&mut r[tokens..offsets]),
        }
        let cut = if kind == 0 { r.len() } else { rng.cut(r.len()) };
        match kallsyms::recover_from_bytes(&r[..cut], base) {
            Ok((t, _)) => {
                assert_ne!(kind, 0, "a wrong marker went unnoticed");
                if t.symbols() == table.symbols() {
                    unchanged += 1;
                }
            }
            Err(e) if kind == 0 => assert!(
                matches!(e, KallsymsError::NoMarkers(_) | KallsymsError::NoNames(_)),
                "round {round}: the token table is intact, yet {e}"
            ),
            Err(_) => {}
        }
    }
    eprintln!("{unchanged} of {rounds} mutations left the symbols unchanged");
    // A blob of noise never yields symbols.
    let mut noise = vec![0u8; 1 << 16];
    for b in &mut noise {
        *b = rng.next() as u8;
    }
    assert!(kallsyms::recover_from_bytes(&noise, base).is_err());
}

#[test]
fn mutated_orc_tables_never_panic() {
    let dir = common::kernel_dir("tiny-orc");
    let image = KernelImage::open(&dir.join("bzImage")).expect("bzImage");
    let (ip_addr, ip) = image.section(".orc_unwind_ip").expect("ip");
    let (_, unwind) = image.section(".orc_unwind").expect("unwind");
    let mut rng = Rng(0x5eed_0004);
    for _ in 0..120 * scale() {
        let mut i = ip.to_vec();
        let mut u = unwind.to_vec();
        rng.mutate(&mut i);
        rng.mutate(&mut u);
        let (ci, cu) = (rng.cut(i.len()), rng.cut(u.len()));
        let version = [OrcVersion::V1, OrcVersion::V2, OrcVersion::V3][rng.below(3)];
        if let Ok(t) = OrcTable::from_sections(ip_addr, &i[..ci], &u[..cu], version) {
            for _ in 0..64 {
                let _ = t.lookup(ip_addr.wrapping_add(rng.next() % (1 << 24)));
            }
        }
    }
}

/// Writes fuzzing seeds taken from the real test kernels into
/// `$BOOTTRACE_FUZZ_SEEDS/<target>/` (used by `symbols/fuzz/run.sh`).
#[test]
#[ignore = "seed writer for symbols/fuzz/run.sh, not a test"]
fn write_fuzz_seeds() {
    let Some(out) = std::env::var_os("BOOTTRACE_FUZZ_SEEDS") else {
        eprintln!("set BOOTTRACE_FUZZ_SEEDS=DIR");
        return;
    };
    let out = std::path::PathBuf::from(out);
    let write = |target: &str, name: &str, bytes: &[u8]| {
        let dir = out.join(target);
        std::fs::create_dir_all(&dir).expect("seed dir");
        std::fs::write(dir.join(name), bytes).expect("seed written");
    };
    for kernel in ["tiny-fp", "tiny-orc"] {
        let dir = common::kernel_dir(kernel);
        let bz = std::fs::read(dir.join("bzImage")).expect("bzImage");
        let image = KernelImage::from_bytes(bz.clone()).expect("parses");
        write("image", &format!("{kernel}-bzImage"), &bz);
        write("image", &format!("{kernel}-head"), &bz[..0x4000]);
        // What a loader reads: the setup header, and the kernel ELF's headers.
        write("headers", &format!("{kernel}-setup"), &bz[..0x1000]);
        let elf = image.elf_bytes();
        write(
            "headers",
            &format!("{kernel}-elf-head"),
            &elf[..elf.len().min(0x1000)],
        );
        let setup = image.setup_header().expect("header");
        let mut p = vec![5u8]; // LZ4 in the target's format table
        p.extend_from_slice(setup.payload(&bz).expect("payload"));
        write("decompress", &format!("{kernel}-lz4"), &p);

        // The kallsyms tables with 16 bytes before them, at their address.
        let (base, rodata) = image.section(".rodata").expect(".rodata");
        let (_, info) = kallsyms::recover_from_bytes(rodata, base).expect("kallsyms");
        let from = (info.names_addr - 16 - base) as usize;
        let to = (info.offsets_addr - base) as usize + 4 * info.num_syms + 16;
        let mut k = (base + from as u64).to_le_bytes().to_vec();
        k.extend_from_slice(&rodata[from..to.min(rodata.len())]);
        write("kallsyms", kernel, &k);

        if let (Some((ip_addr, ip)), Some((_, unwind))) = (
            image.section(".orc_unwind_ip"),
            image.section(".orc_unwind"),
        ) {
            let n = 2000.min(ip.len() / 4);
            let mut o = ip_addr.to_le_bytes().to_vec();
            o.extend_from_slice(&((4 * n) as u16).to_le_bytes());
            o.push(2); // V3
            o.extend_from_slice(&ip[..4 * n]);
            o.extend_from_slice(&unwind[..6 * n]);
            write("orc", kernel, &o);
        }
    }
    // Small tables of every layout: fast iterations for the fuzzer.
    {
        use common::encode::{encode, sample_symbols, Order, Shape};
        let base: u64 = 0xffff_ffff_8200_0000;
        for (i, order) in [Order::Modern, Order::Legacy, Order::LegacyWithSeqs]
            .into_iter()
            .enumerate()
        {
            let shape = Shape {
                order,
                absolute_percpu: i != 1,
                marker_width: 4,
            };
            let mut k = base.to_le_bytes().to_vec();
            k.extend_from_slice(&encode(&sample_symbols(300, i != 1), shape));
            write("kallsyms", &format!("synthetic-{order:?}"), &k);
        }
    }
    // Small streams of every format, as the kernel's tools make them.
    let config = std::fs::read(common::kernel_dir("tiny-fp").join("config")).expect("config");
    for (pick, cmd, args) in [
        (0u8, "gzip", &["-9"][..]),
        (1, "bzip2", &["-9"][..]),
        (2, "lzma", &["-9"][..]),
        (3, "xz", &["--check=crc32", "--x86", "--lzma2=preset=6"][..]),
        (4, "lzop", &["-9"][..]),
        (5, "lz4", &["-l", "-9", "-", "-"][..]),
        (6, "zstd", &["-19"][..]),
    ] {
        let Ok(mut child) = std::process::Command::new(cmd)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        else {
            eprintln!("{cmd} missing: no seed");
            continue;
        };
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        let input = config.clone();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let res = child.wait_with_output().expect("compressor ran");
        writer.join().expect("writer").expect("input written");
        let mut s = vec![pick];
        s.extend_from_slice(&res.stdout);
        if cmd != "gzip" {
            s.extend_from_slice(&(config.len() as u32).to_le_bytes()); // size_append
        }
        write("decompress", cmd, &s);
    }
}
