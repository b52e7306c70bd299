//! Hostile images and files (issue 10, lower layers): each test runs the real
//! binary on a file made to hurt it and checks the exit code, the one-line
//! message, the time taken and, where the attack is on memory, the child's
//! peak RSS (`wait4` rusage `ru_maxrss`).

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::RwLock;
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

/// A child's peak RSS (`ru_maxrss`) starts at this test process's RSS when
/// it forks the child (children are forked, see [`run`]). A test that
/// builds a big input in memory holds this lock for writing while it does,
/// and gives the memory back before it lets go; children are started under
/// the read lock, so no child is measured with another test's input in its
/// count.
static BUILDING_INPUT: RwLock<()> = RwLock::new(());

/// Builds a big input under [`BUILDING_INPUT`], then returns the freed
/// memory to the system.
fn build_big_input<T>(build: impl FnOnce() -> T) -> T {
    let _only_me = BUILDING_INPUT.write().unwrap_or_else(|e| e.into_inner());
    let out = build();
    // SAFETY: malloc_trim only gives free heap pages back to the system.
    unsafe { libc::malloc_trim(0) };
    out
}

/// Runs `boottrace ARGS`, killing it after `limit` (the test then fails on
/// the time bound), and measures it.
// The child is reaped by wait4 (for its rusage), not by Child::wait.
#[allow(clippy::zombie_processes)]
fn run(args: &[&str], limit: Duration) -> Run {
    let start = Instant::now();
    let spawning = BUILDING_INPUT.read().unwrap_or_else(|e| e.into_inner());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_boottrace"));
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Fork, not posix_spawn: a vfork-style child runs in this process's
    // memory until it execs, and Linux then counts this process's peak RSS
    // as the child's. A forked child starts from this process's current
    // RSS instead, which `build_big_input` keeps small.
    // SAFETY: the hook does nothing; having one only makes Command fork.
    unsafe { cmd.pre_exec(|| Ok(())) };
    let mut child = cmd.spawn().expect("run boottrace");
    drop(spawning);
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
    let r = Run {
        code: status.code(),
        text,
        elapsed,
        max_rss_kib: usage.ru_maxrss,
    };
    r.print_figures(args);
    r
}

impl Run {
    /// Prints what was measured (`--nocapture` shows it): the command, exit
    /// code, wall time, peak RSS and the first error or warning line.
    fn print_figures(&self, args: &[&str]) {
        let said = self
            .text
            .lines()
            .find(|l| l.starts_with("boottrace: error:") || l.contains("warning"))
            .unwrap_or("");
        let said: String = said.chars().take(160).collect();
        // Paths left out: the command and its options identify the run.
        let shown: Vec<&str> = args.iter().copied().filter(|a| !a.contains('/')).collect();
        eprintln!(
            "figures: boottrace {} -> exit {:?}, {:.2} s, peak RSS {} MiB; {said}",
            shown.join(" "),
            self.code,
            self.elapsed.as_secs_f64(),
            self.max_rss_kib >> 10,
        );
    }

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

/// A character device node `major:minor` at `path` (the suite runs as root).
fn mknod_char(path: &Path, major: u32, minor: u32) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    let dev = libc::makedev(major, minor);
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    let r = unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o600, dev) };
    assert_eq!(
        r,
        0,
        "mknod {}: {} (this test needs root)",
        path.display(),
        std::io::Error::last_os_error()
    );
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
        .refused(&["p_paddr 0xfffffffffff00000", "physical end wraps"], 20)
        .rss_below(200);
}

#[test]
fn vmlinux_that_loads_near_2_64_is_refused_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut elf = std::fs::read(fp_dir().join("vmlinux")).expect("vmlinux");
    set_paddr(&mut elf, 0xffff_ffff_fff0_0000);
    let hostile = dir.path().join("paddr.vmlinux");
    std::fs::write(&hostile, elf).expect("write");
    record(dir.path(), &hostile, &[])
        .refused(&["p_paddr 0xfffffffffff00000"], 20)
        .rss_below(200);
}

// Row 2: only regular files are read.

#[test]
fn fifo_as_kernel_is_refused_without_blocking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("kernel.fifo");
    mkfifo(&fifo);
    record(dir.path(), &fifo, &[])
        .refused(&["is not a regular file (it is a FIFO)"], 10)
        .rss_below(200);
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
        .refused(&["is not a regular file (it is a directory)"], 20)
        .rss_below(200);
}

#[test]
fn fifo_as_initrd_is_refused_without_blocking() {
    let dir = tempfile::tempdir().expect("tempdir");
    let initrd = dir.path().join("initrd.fifo");
    mkfifo(&initrd);
    let kernel = dir.path().join("spin.elf");
    std::fs::write(&kernel, tiny_elf(0x20_0000, 2)).expect("write");
    record(dir.path(), &kernel, &["--initrd", s(&initrd)])
        .refused(&["is not a regular file (it is a FIFO)"], 20)
        .rss_below(200);
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
    record(dir.path(), &kernel, &[])
        .refused(&["p_memsz", "wraps"], 20)
        .rss_below(200);
}

#[test]
fn bzimage_with_pref_address_near_2_64_is_refused() {
    // bz_pref_wrap: pref_address + init_size wrapped past the memory check.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut file = std::fs::read(fp_dir().join("bzImage")).expect("bzImage");
    file[0x258..0x260].copy_from_slice(&0xffff_ffff_ffff_0000u64.to_le_bytes());
    let kernel = dir.path().join("pref.bzImage");
    std::fs::write(&kernel, file).expect("write");
    record(dir.path(), &kernel, &[])
        .refused(
            &[
                "pref_address 0xffffffffffff0000",
                "beyond any physical address",
            ],
            20,
        )
        .rss_below(200);
}

// Row 5: messages that say the real limit.

#[test]
fn elf_beyond_ram_says_how_much_memory_it_needs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kernel = dir.path().join("high.elf");
    // Loads at 256 MiB: needs 257 MiB, has 64.
    std::fs::write(&kernel, tiny_elf(0x1000_0000, 2)).expect("write");
    record(dir.path(), &kernel, &["--mem", "64M"])
        .refused(&["--mem 64 MiB is too small", "needs at least 257 MiB"], 20)
        .rss_below(200);
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
    // A character device like /dev/null (1, 3), made here: as root, `-o
    // /dev/null` used to replace /dev/null itself.
    let null = dir.path().join("a-null-device");
    mknod_char(&null, 1, 3);
    for (out, needle) in [
        (&out_dir, "is a directory, not a regular file"),
        (&fifo, "is a FIFO, not a regular file"),
        (&null, "is a character device, not a regular file"),
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
        r.refused(&[needle], 30).rss_below(200);
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
    assert!(std::fs::symlink_metadata(&null)
        .expect("device")
        .file_type()
        .is_char_device());
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
        run(args, Duration::from_secs(60))
            .refused(&["is a symbolic link; not following it"], 30)
            .rss_below(200);
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

// Rows "20 k / 50 k runs", "2 M-frame stack; 16 M frames" and the
// per-run warning of "exit codes and messages", through the binary.

/// Writes `recs` (the first is the Meta record) as a trace at `path`.
fn write_records(path: &Path, recs: &[Record]) {
    let Some((Record::Meta(meta), rest)) = recs.split_first() else {
        panic!("records start with Meta");
    };
    let mut w = TraceWriter::create(path, meta).expect("create trace");
    for r in rest {
        w.append(r).expect("append");
    }
    w.finish().expect("finish");
}

/// `report` (text and JSON) on traces of 20 000 and 50 000 one-sample runs
/// over 2 000 distinct functions, half of the runs without an end record.
/// Before: 2.9 GB for 20 000 runs (dense per-function × per-run arrays),
/// out-of-memory abort for 50 000, and one warning line per damaged run.
#[test]
fn report_on_tens_of_thousands_of_runs_is_bounded() {
    let dir = tempfile::tempdir().expect("tempdir");
    for runs in [20_000u32, 50_000] {
        let opts = synth::SynthOptions {
            runs,
            samples_per_run: 1,
            vcpus: 1,
            period_ns: 1_000_000,
            seed: 3,
            extra_functions: 2_000,
        };
        let trace = dir.path().join(format!("runs-{runs}.data"));
        build_big_input(|| {
            let mut recs = synth::records(&opts);
            recs.retain(|r| !matches!(r, Record::RunEnd(e) if e.run % 2 == 1));
            write_records(&trace, &recs);
        });
        let map = dir.path().join("System.map");
        std::fs::write(&map, synth::system_map_for(&opts)).expect("map");
        let size = std::fs::metadata(&trace).expect("trace").len();
        eprintln!("figures: {runs} runs: trace of {size} bytes");
        for json in [false, true] {
            let mut args = vec!["report", "-i", s(&trace), "--system-map", s(&map)];
            if json {
                args.push("--json");
            }
            let r = run(&args, Duration::from_secs(120));
            assert_eq!(r.code, Some(0), "{runs} runs: {}", r.text);
            assert!(!r.text.contains("panicked"), "{}", r.text);
            // The trace's problems are one line each (text: "note:", JSON:
            // "warnings"), not one per run.
            let kept = boottrace::trace::MAX_RUNS;
            let skipped = format!("beyond the first {kept} skipped");
            for what in [skipped.as_str(), "runs have no end record"] {
                let n = r.text.lines().filter(|l| l.contains(what)).count();
                assert_eq!(n, 1, "{runs} runs: {n} lines say {what:?}");
            }
            assert!(r.elapsed < Duration::from_secs(60), "took {:?}", r.elapsed);
            r.rss_below(500);
            eprintln!(
                "figures: {runs} runs, report{}: {} output bytes in {} lines",
                if json { " --json" } else { "" },
                r.text.len(),
                r.text.lines().count()
            );
        }
    }
}

/// A one-run trace whose only sample has the stack `deep`.
fn deep_records(opts: &synth::SynthOptions, deep: Vec<u64>) -> Vec<Record> {
    vec![
        Record::Meta(Box::new(synth::meta(opts))),
        Record::RunStart(boottrace::trace::RunStart {
            run: 0,
            wall_time_unix_ns: 1,
        }),
        Record::Sample(boottrace::trace::Sample {
            run: 0,
            t_ns: 1_000,
            rip: deep.first().copied().unwrap_or(0),
            stack: deep,
            ..boottrace::trace::Sample::default()
        }),
        Record::RunEnd(boottrace::trace::RunEnd {
            run: 0,
            t_ns: 2_000,
            ..boottrace::trace::RunEnd::default()
        }),
    ]
}

/// `report` and `flame` on a trace whose one sample has a 16 M-frame stack
/// (a 16 MB record, delta-encoded). Before: `report` took 115 s on a 2 M-frame
/// stack (quadratic recursion check) and `flame` 5.2 GB RSS and a 3.7 GB SVG
/// on 16 M frames; the reader now cuts stacks at the writer's 128 frames.
#[test]
fn deep_stacks_are_cut_by_report_and_flame() {
    const DEPTH: u64 = 16_000_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = synth::SynthOptions::default();
    let map = dir.path().join("System.map");
    std::fs::write(&map, synth::system_map()).expect("map");
    // Return addresses inside one function (recursion), one byte apart so
    // that the delta-encoded stack fits one record (`MAX_RECORD_LEN`).
    let base = synth::addr_of("do_one_initcall").expect("a synthetic function") + 8;
    let trace = dir.path().join("deep.data");
    build_big_input(|| {
        let deep: Vec<u64> = (0..DEPTH).map(|i| base + i % 2).collect();
        write_records(&trace, &deep_records(&opts, deep));
    });
    let size = std::fs::metadata(&trace).expect("trace").len();
    eprintln!("figures: {DEPTH}-frame stack: trace of {size} bytes");
    let svg = dir.path().join("deep.svg");
    for args in [
        vec!["report", "-i", s(&trace), "--system-map", s(&map)],
        vec!["flame", s(&svg), "-i", s(&trace), "--system-map", s(&map)],
    ] {
        let r = run(&args, Duration::from_secs(120));
        assert_eq!(r.code, Some(0), "{args:?}: {}", r.text);
        assert!(
            r.text.contains("1 stack(s) deeper than 128"),
            "{args:?}: {}",
            r.text
        );
        assert!(r.elapsed < Duration::from_secs(30), "took {:?}", r.elapsed);
        r.rss_below(500);
    }
    let svg_size = std::fs::metadata(&svg).expect("svg").len();
    eprintln!("figures: flame SVG of {svg_size} bytes");
    assert!(svg_size < 1 << 20, "SVG of {svg_size} bytes");
}
