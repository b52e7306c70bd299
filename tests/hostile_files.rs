//! Hostile images and files (issue 10, lower layers): each test runs the real
//! binary on a file made to hurt it and checks the exit code, the one-line
//! message, the time taken and, where the attack is on memory, the child's
//! peak RSS (`wait4` rusage `ru_maxrss`).

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use boottrace::trace::{synth, Record, TraceWriter};
use boottrace_symbols::image::KernelImage;
use common::kernel_dir;

/// What one run of the binary did.
struct Run {
    /// Exit code (None: killed by a signal).
    code: Option<i32>,
    /// stdout + stderr.
    text: String,
    /// Wall time.
    elapsed: Duration,
    /// Peak resident set of the child, KiB.
    max_rss_kib: i64,
}

/// Runs `boottrace ARGS`, killing it after `limit` (the test then fails on
/// the time bound), and measures it.
// The child is reaped by wait4 (for its rusage), not by Child::wait.
#[allow(clippy::zombie_processes)]
fn run(args: &[&str], limit: Duration) -> Run {
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_boottrace"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run boottrace");
    let pid = child.id() as libc::pid_t;
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        let mut e = Vec::new();
        let _ = err.read_to_end(&mut e);
        s.extend_from_slice(&e);
        String::from_utf8_lossy(&s).into_owned()
    });
    // Poll with WNOHANG so that the kill below can only hit our own
    // not-yet-reaped child, never a recycled pid.
    let deadline = Instant::now() + limit;
    let mut status = 0;
    // SAFETY: rusage is plain data, zero-initialised; wait4 fills it in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waits for our own child `pid`, writing into the two locals.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        assert_eq!(r, 0, "wait4: {}", std::io::Error::last_os_error());
        if Instant::now() > deadline {
            // SAFETY: `pid` is our child and wait4 just said it is not reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let elapsed = start.elapsed();
    let text = reader.join().expect("reader");
    let status = std::process::ExitStatus::from_raw(status);
    Run {
        code: status.code(),
        text,
        elapsed,
        max_rss_kib: usage.ru_maxrss,
    }
}

impl Run {
    /// Asserts a usage/input failure: non-zero exit (not a signal or panic),
    /// one error line containing every `needles`, within `secs` seconds.
    fn refused(&self, needles: &[&str], secs: u64) -> &Self {
        let all = &self.text;
        assert!(
            matches!(self.code, Some(c) if c != 0 && c != 101),
            "exit {:?}:\n{all}",
            self.code
        );
        assert!(!all.contains("panicked"), "panic:\n{all}");
        let errors: Vec<&str> = all
            .lines()
            .filter(|l| l.starts_with("boottrace: error:"))
            .collect();
        assert_eq!(errors.len(), 1, "expected one error line:\n{all}");
        for n in needles {
            assert!(errors[0].contains(n), "missing {n:?} in: {}", errors[0]);
        }
        assert!(
            self.elapsed < Duration::from_secs(secs),
            "took {:?}:\n{all}",
            self.elapsed
        );
        self
    }

    /// Asserts the child's peak RSS stayed under `mib` MiB.
    fn rss_below(&self, mib: i64) -> &Self {
        assert!(
            self.max_rss_kib < mib << 10,
            "peak RSS {} MiB >= {mib} MiB:\n{}",
            self.max_rss_kib >> 10,
            self.text
        );
        self
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// A sparse file of `len` bytes (no disk blocks) starting with `head`.
fn sparse(path: &Path, head: &[u8], len: u64) {
    let mut f = std::fs::File::create(path).expect("create");
    f.write_all(head).expect("write");
    f.set_len(len).expect("set_len");
}

/// Offset of the `index`th program header of a 64-bit ELF.
fn phdr(elf: &[u8], index: usize) -> usize {
    let phoff = u64::from_le_bytes(elf[32..40].try_into().expect("e_phoff")) as usize;
    let phentsize = usize::from(u16::from_le_bytes([elf[54], elf[55]]));
    phoff + index * phentsize
}

/// Index of the first PT_LOAD program header.
fn first_load(elf: &[u8]) -> usize {
    let phnum = usize::from(u16::from_le_bytes([elf[56], elf[57]]));
    (0..phnum)
        .find(|&i| elf[phdr(elf, i)..phdr(elf, i) + 4] == 1u32.to_le_bytes())
        .expect("a PT_LOAD")
}

/// Sets `p_paddr` of the first PT_LOAD.
fn set_paddr(elf: &mut [u8], paddr: u64) {
    let at = phdr(elf, first_load(elf)) + 24;
    elf[at..at + 8].copy_from_slice(&paddr.to_le_bytes());
}

/// A minimal x86_64 ELF kernel: one PT_LOAD of `jmp $` at `paddr` with `p_memsz` = `memsz`.
fn tiny_elf(paddr: u64, memsz: u64) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[24..32].copy_from_slice(&paddr.to_le_bytes()); // e_entry
    f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    f[52..54].copy_from_slice(&64u16.to_le_bytes());
    f[54..56].copy_from_slice(&56u16.to_le_bytes());
    f[56..58].copy_from_slice(&1u16.to_le_bytes());
    let mut ph = vec![0u8; 56];
    ph[0..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    ph[4..8].copy_from_slice(&5u32.to_le_bytes()); // R+X
    ph[8..16].copy_from_slice(&0x1000u64.to_le_bytes());
    ph[16..24].copy_from_slice(&paddr.to_le_bytes());
    ph[24..32].copy_from_slice(&paddr.to_le_bytes());
    ph[32..40].copy_from_slice(&2u64.to_le_bytes());
    ph[40..48].copy_from_slice(&memsz.to_le_bytes());
    f.extend_from_slice(&ph);
    f.resize(0x1000, 0);
    f.extend_from_slice(&[0xeb, 0xfe]);
    f
}

/// gzip -9 of `data` through the `gzip` tool (the test fails without it).
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-9c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("this test needs the gzip tool to build a hostile bzImage");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("gzip");
    writer.join().expect("writer").expect("write to gzip");
    assert!(out.status.success(), "gzip failed");
    out.stdout
}

/// The bzImage with its payload replaced by `payload` (header fields fixed up).
fn splice(file: &[u8], payload: &[u8]) -> Vec<u8> {
    let sects = match file[0x1f1] {
        0 => 4,
        n => usize::from(n),
    };
    let pm = (sects + 1) * 512;
    let field = |off: usize| u32::from_le_bytes(file[off..off + 4].try_into().expect("4")) as usize;
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

fn fp_dir() -> PathBuf {
    kernel_dir("tiny-fp")
}

/// `record KERNEL EXTRA… -o SCRATCH -q --timeout 10`.
fn record(dir: &Path, kernel: &Path, extra: &[&str]) -> Run {
    let out = dir.join("out.data");
    let mut args = vec!["record", s(kernel)];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-o", s(&out), "-q", "--timeout", "10"]);
    run(&args, Duration::from_secs(60))
}

// Row 1: endless search on a hostile image.

#[test]
fn bzimage_whose_payload_loads_near_2_64_is_refused_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = std::fs::read(fp_dir().join("bzImage")).expect("bzImage");
    let image = KernelImage::from_bytes(file.clone()).expect("tiny-fp parses");
    let mut elf = image.elf_bytes().to_vec();
    set_paddr(&mut elf, 0xffff_ffff_fff0_0000);
    let hostile = dir.path().join("paddr.bzImage");
    std::fs::write(&hostile, splice(&file, &gzip(&elf))).expect("write");
    record(dir.path(), &hostile, &[])
        .refused(&["p_paddr 0xfffffffffff00000", "physical end wraps"], 20);
}

#[test]
fn vmlinux_that_loads_near_2_64_is_refused_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut elf = std::fs::read(fp_dir().join("vmlinux")).expect("vmlinux");
    set_paddr(&mut elf, 0xffff_ffff_fff0_0000);
    let hostile = dir.path().join("paddr.vmlinux");
    std::fs::write(&hostile, elf).expect("write");
    record(dir.path(), &hostile, &[]).refused(&["p_paddr 0xfffffffffff00000"], 20);
}

// Row 2: only regular files are read.

#[test]
fn fifo_as_kernel_is_refused_without_blocking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("kernel.fifo");
    mkfifo(&fifo);
    record(dir.path(), &fifo, &[]).refused(&["is not a regular file (it is a FIFO)"], 10);
}

#[test]
fn dev_zero_as_kernel_is_refused_before_reading() {
    let dir = tempfile::tempdir().expect("tempdir");
    record(dir.path(), Path::new("/dev/zero"), &[])
        .refused(
            &["/dev/zero is not a regular file (it is a character device)"],
            10,
        )
        .rss_below(200);
}

/// A synthetic trace in `dir`, its records passed through `edit` first.
fn synthetic_trace(dir: &Path, edit: impl Fn(&mut Record)) -> PathBuf {
    let path = dir.join("synthetic.data");
    let mut recs = synth::records(&synth::SynthOptions::default());
    recs.iter_mut().for_each(edit);
    let Some((Record::Meta(meta), rest)) = recs.split_first() else {
        panic!("records() starts with Meta");
    };
    let mut w = TraceWriter::create(&path, meta).expect("create trace");
    for r in rest {
        w.append(r).expect("append");
    }
    w.finish().expect("finish");
    if let Some(keep) = std::env::var_os("HOSTILE_KEEP_TRACES") {
        // For measuring other builds on the same inputs.
        let keep = PathBuf::from(keep);
        let n = std::fs::read_dir(&keep).map(|d| d.count()).unwrap_or(0);
        std::fs::copy(&path, keep.join(format!("t{n}.data"))).expect("keep trace");
    }
    path
}

#[test]
fn dev_zero_as_vmlinux_is_refused_before_reading() {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = synthetic_trace(dir.path(), |_| {});
    let svg = dir.path().join("out.svg");
    run(
        &["flame", "-i", s(&trace), "--vmlinux", "/dev/zero", s(&svg)],
        Duration::from_secs(60),
    )
    .refused(
        &["/dev/zero is not a regular file (it is a character device)"],
        10,
    )
    .rss_below(200);
}

#[test]
fn trace_naming_a_huge_file_as_its_kernel_does_not_read_it() {
    // Before: a 3 GiB file named as the trace's kernel was read whole (3.15 GB)
    // before "not a kernel image". Now: over the cap, refused by its size; under
    // the cap but not a kernel, refused after its first page.
    let dir = tempfile::tempdir().expect("tempdir");
    for (name, head, len, why) in [
        (
            "big.elf",
            &b"\x7fELF"[..],
            3u64 << 30,
            "more than the 2147483648 bytes a kernel image may have",
        ),
        ("big.bin", b"not a kernel", 3 << 29, "not a kernel image"),
    ] {
        let big = dir.path().join(name);
        sparse(&big, head, len);
        let trace = synthetic_trace(dir.path(), |r| {
            if let Record::Meta(m) = r {
                m.kernel.path = s(&big).into();
            }
        });
        let r = run(&["report", "-i", s(&trace)], Duration::from_secs(60));
        // The report goes on without the kernel's symbols, saying why.
        assert_eq!(r.code, Some(0), "{name}: {}", r.text);
        let note = format!("{} not used: ", big.display());
        assert!(
            r.text.lines().any(|l| l.contains(&note) && l.contains(why)),
            "{name}: {}",
            r.text
        );
        assert!(
            r.elapsed < Duration::from_secs(10),
            "{name}: took {:?}",
            r.elapsed
        );
        r.rss_below(200);
    }
}

#[test]
fn directory_as_initrd_is_refused_as_not_a_regular_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let initrd = dir.path().join("initrd.d");
    std::fs::create_dir(&initrd).expect("mkdir");
    let kernel = dir.path().join("spin.elf");
    std::fs::write(&kernel, tiny_elf(0x20_0000, 2)).expect("write");
    record(dir.path(), &kernel, &["--initrd", s(&initrd)])
        .refused(&["is not a regular file (it is a directory)"], 20);
}

#[test]
fn fifo_as_initrd_is_refused_without_blocking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let initrd = dir.path().join("initrd.fifo");
    mkfifo(&initrd);
    let kernel = dir.path().join("spin.elf");
    std::fs::write(&kernel, tiny_elf(0x20_0000, 2)).expect("write");
    record(dir.path(), &kernel, &["--initrd", s(&initrd)])
        .refused(&["is not a regular file (it is a FIFO)"], 20);
}

// Row 3: many decompressor bases.

#[test]
fn trace_with_millions_of_decompressor_bases_is_read_in_bounded_time() {
    // Before: every low-address frame was classified against every base
    // (16 M bases: 192 s for a folded export). Now a
    // stored layout holds at most 64 sorted bases; a record claiming more is
    // skipped with a warning, not looped over.
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = synthetic_trace(dir.path(), |r| match r {
        Record::Layout(l) => {
            l.layout.decompressor_size = 0x1000;
            l.layout.decompressor_bases =
                (0..2_500_000u64).map(|i| 0x10_0000 + (i << 13)).collect();
        }
        // Frames at physical addresses, where the bases are searched (and
        // between two bases, so that no base covers them).
        Record::Sample(smp) => {
            for a in smp.stack.iter_mut() {
                *a = 0x10_1800 + (*a & 0xfff_e000);
            }
            smp.rip = smp.stack.first().copied().unwrap_or(0x10_1800);
        }
        _ => {}
    });
    let out = dir.path().join("out.folded");
    let r = run(
        &[
            "export",
            "--format",
            "folded",
            "-i",
            s(&trace),
            "-o",
            s(&out),
        ],
        Duration::from_secs(120),
    );
    assert_eq!(r.code, Some(0), "{}", r.text);
    assert!(
        r.text.contains("Layout record could not be decoded"),
        "{}",
        r.text
    );
    assert!(r.elapsed < Duration::from_secs(5), "took {:?}", r.elapsed);
    r.rss_below(300);
    // The samples are all still there, at their raw addresses.
    let folded = std::fs::read_to_string(&out).expect("export written");
    let weight: u64 = folded
        .lines()
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(weight >= 400, "{folded}");
    assert!(folded.contains("[unknown 0x110"), "{folded}");
}

// Row 4: size checks that wrapped.

#[test]
fn elf_with_huge_memsz_is_refused() {
    // e_memsz_huge: p_paddr + p_memsz wrapped and the image booted.
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel = dir.path().join("memsz.elf");
    std::fs::write(&kernel, tiny_elf(0x20_0000, u64::MAX - 0x1000)).expect("write");
    record(dir.path(), &kernel, &[]).refused(&["p_memsz", "wraps"], 20);
}

#[test]
fn bzimage_with_pref_address_near_2_64_is_refused() {
    // bz_pref_wrap: pref_address + init_size wrapped past the memory check.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut file = std::fs::read(fp_dir().join("bzImage")).expect("bzImage");
    file[0x258..0x260].copy_from_slice(&0xffff_ffff_ffff_0000u64.to_le_bytes());
    let kernel = dir.path().join("pref.bzImage");
    std::fs::write(&kernel, file).expect("write");
    record(dir.path(), &kernel, &[]).refused(
        &[
            "pref_address 0xffffffffffff0000",
            "beyond any physical address",
        ],
        20,
    );
}

// Row 5: messages that say the real limit.

#[test]
fn elf_beyond_ram_says_how_much_memory_it_needs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel = dir.path().join("high.elf");
    // Loads at 256 MiB: needs 257 MiB, has 64.
    std::fs::write(&kernel, tiny_elf(0x1000_0000, 2)).expect("write");
    record(dir.path(), &kernel, &["--mem", "64M"])
        .refused(&["--mem 64 MiB is too small", "needs at least 257 MiB"], 20);
}

#[test]
fn initrd_above_the_kernels_address_limit_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let initrd = dir.path().join("big.cpio");
    sparse(&initrd, b"070701", 3 << 30);
    record(
        dir.path(),
        &fp_dir().join("bzImage"),
        &["--mem", "4G", "--initrd", s(&initrd)],
    )
    .refused(
        &[
            "does not fit below this kernel's initrd address limit",
            "a larger --mem does not help",
        ],
        20,
    )
    .rss_below(300);
}

// Rows 2 and 3: outputs never clobber what is not a regular file, and never
// write through a symlink.

/// A synthetic trace and its System.map in `dir` (for the rendering commands).
fn trace_and_map(dir: &Path) -> (PathBuf, PathBuf) {
    let trace = synthetic_trace(dir, |_| {});
    let map = dir.join("System.map");
    std::fs::write(&map, synth::system_map()).expect("write map");
    (trace, map)
}

#[test]
fn record_refuses_a_directory_a_fifo_and_a_symlink_as_its_output() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel = fp_dir().join("bzImage");
    let out_dir = dir.path().join("a-directory");
    std::fs::create_dir(&out_dir).expect("mkdir");
    let fifo = dir.path().join("a-fifo");
    mkfifo(&fifo);
    let target = dir.path().join("target.data");
    let link = dir.path().join("link.data");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    for (out, needle) in [
        (&out_dir, "is a directory, not a regular file"),
        (&fifo, "is a FIFO, not a regular file"),
        (&link, "is a symbolic link; not following it"),
    ] {
        let r = run(
            &[
                "record",
                s(&kernel),
                "-F",
                "0",
                "-q",
                "--timeout",
                "10",
                "-o",
                s(out),
            ],
            Duration::from_secs(60),
        );
        r.refused(&[needle], 30);
        // Nothing was moved aside or created in its place.
        assert!(
            !output_old(out).exists(),
            "{} was moved to .old",
            out.display()
        );
    }
    assert!(out_dir.is_dir());
    assert!(std::fs::symlink_metadata(&fifo)
        .expect("fifo")
        .file_type()
        .is_fifo());
    assert!(
        !target.exists(),
        "the dangling symlink's target was created"
    );
}

/// `PATH.old`.
fn output_old(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".old");
    PathBuf::from(s)
}

#[test]
fn flame_export_and_diff_do_not_write_through_a_symlink() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (trace, map) = trace_and_map(dir.path());
    let target = dir.path().join("precious.txt");
    std::fs::write(&target, b"keep me").expect("write");
    let link = dir.path().join("out.svg");
    std::os::unix::fs::symlink(&target, &link).expect("symlink");
    let t = s(&trace);
    let m = s(&map);
    let l = s(&link);
    let cases: [Vec<&str>; 3] = [
        vec!["flame", l, "-i", t, "--system-map", m],
        vec![
            "export",
            "--format",
            "folded",
            "-o",
            l,
            "-i",
            t,
            "--system-map",
            m,
        ],
        vec![
            "diff",
            t,
            t,
            "-o",
            l,
            "--system-map-a",
            m,
            "--system-map-b",
            m,
        ],
    ];
    for args in &cases {
        run(args, Duration::from_secs(60)).refused(&["is a symbolic link; not following it"], 30);
        assert_eq!(
            std::fs::read(&target).expect("read"),
            b"keep me",
            "{args:?}"
        );
    }
    // The same commands write a regular output (replacing an old one).
    let plain = dir.path().join("plain.svg");
    std::fs::write(&plain, b"old").expect("write");
    let ok = run(
        &["flame", s(&plain), "-i", t, "--system-map", m],
        Duration::from_secs(60),
    );
    assert_eq!(ok.code, Some(0), "{}", ok.text);
    assert!(std::fs::read_to_string(&plain)
        .expect("read")
        .contains("<svg"));
}
