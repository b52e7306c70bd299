//! Bad input gets a one-line error naming the problem, a non-zero exit code,
//! and no panic — for every way a user can get `record` wrong.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{boottrace, kernel_dir, scratch, text};

/// Runs `record` with `args` and returns the error line, asserting failure
/// without a panic and a single `boottrace: error:` line.
fn record_fails(args: &[&str], envs: &[(&str, &str)]) -> String {
    record_fails_with_status(args, envs).1
}

/// Runs a `record` that must fail; returns its exit status and its one
/// error line. Each call writes its own trace path (parallel tests never
/// share one).
fn record_fails_with_status(args: &[&str], envs: &[(&str, &str)]) -> (i32, String) {
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out_file = scratch().join(format!("bad-{n}.data"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_boottrace"));
    cmd.arg("record")
        .args(args)
        .args(["-o", out_file.to_str().unwrap_or_default(), "-q"]);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run boottrace");
    let all = text(&out);
    assert!(
        !out.status.success(),
        "expected failure, got success:\n{all}"
    );
    assert!(!all.contains("panicked"), "panic:\n{all}");
    let errors: Vec<&str> = all
        .lines()
        .filter(|l| l.starts_with("boottrace: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "expected exactly one error line:\n{all}");
    (out.status.code().unwrap_or(-1), errors[0].to_string())
}

fn write_file(name: &str, bytes: &[u8]) -> PathBuf {
    let p = scratch().join(name);
    std::fs::write(&p, bytes).expect("write test file");
    p
}

/// A flat "kernel" whose entry is `jmp $`, as `dir/name`.
fn spinning_kernel(dir: &Path, name: &str) -> PathBuf {
    common::flat_kernel(dir, name, &[0xeb, 0xfe])
}

fn fp_bzimage() -> PathBuf {
    kernel_dir("tiny-fp").join("bzImage")
}

#[test]
fn not_a_kernel() {
    let p = write_file("hello.txt", b"hello, I am not a kernel\n");
    let e = record_fails(&[p.to_str().unwrap_or_default()], &[]);
    assert!(e.contains("not a kernel image"), "{e}");
}

#[test]
fn truncated_bzimage() {
    let full = std::fs::read(fp_bzimage()).expect("read bzImage");
    let p = write_file("trunc.bz", &full[..full.len() / 3]);
    let e = record_fails(&[p.to_str().unwrap_or_default()], &[]);
    assert!(e.contains("truncated"), "{e}");
}

#[test]
fn missing_file() {
    // A missing input is "any other error": status 1.
    let (status, e) = record_fails_with_status(&["/nonexistent/bzImage"], &[]);
    assert_eq!(status, 1, "{e}");
    assert!(e.contains("does not exist"), "{e}");
    let k = fp_bzimage();
    let e = record_fails(
        &[
            k.to_str().unwrap_or_default(),
            "--initrd",
            "/nonexistent.cpio",
        ],
        &[],
    );
    assert!(e.contains("initrd /nonexistent.cpio does not exist"), "{e}");
}

#[test]
fn no_kvm_device() {
    let k = fp_bzimage();
    let e = record_fails(
        &[k.to_str().unwrap_or_default()],
        &[("BOOTTRACE_KVM_DEVICE", "/nonexistent/kvm")],
    );
    assert!(e.contains("cannot open /nonexistent/kvm"), "{e}");
}

#[test]
fn no_permission_on_dev_kvm() {
    // As an unprivileged user, /dev/kvm (mode 0600 root) cannot be opened.
    let dir = scratch().join("world");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::set_permissions(scratch(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let k = spinning_kernel(&dir, "spin-perm.elf");
    let meta = std::fs::metadata("/dev/kvm").expect("/dev/kvm");
    // A test that cannot run fails with its reason instead of passing.
    assert!(
        meta.permissions().mode() & 0o006 == 0,
        "cannot test: /dev/kvm is world-accessible here (mode {:o})",
        meta.permissions().mode()
    );
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            env!("CARGO_BIN_EXE_boottrace"),
            "record",
        ])
        .arg(&k)
        .args(["-o", dir.join("x.data").to_str().unwrap_or_default()])
        .output();
    let out = out.unwrap_or_else(|e| panic!("cannot test: setpriv (util-linux) does not run: {e}"));
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("cannot open /dev/kvm") && all.contains("Permission denied"),
        "{all}"
    );
    assert!(!all.contains("panicked"), "{all}");
}

#[test]
fn memory_too_small_or_too_large() {
    let k = fp_bzimage();
    let k = k.to_str().unwrap_or_default();
    let e = record_fails(&[k, "--mem", "8M"], &[]);
    assert!(e.contains("too small"), "{e}");
    let e = record_fails(&[k, "--mem", "20M"], &[]);
    assert!(e.contains("too small for this kernel"), "{e}");
    let e = record_fails(&[k, "--mem", "64T"], &[]);
    assert!(e.contains("more than this host has"), "{e}");
    let e = record_fails(&[k, "--mem", "lots"], &[]);
    assert!(
        e.contains("not a size") || e.contains("invalid value"),
        "{e}"
    );
}

#[test]
fn initrd_that_does_not_fit() {
    let big = write_file("big.cpio", &vec![0u8; 40 << 20]);
    let k = fp_bzimage();
    let e = record_fails(
        &[
            k.to_str().unwrap_or_default(),
            "--mem",
            "60M",
            "--initrd",
            big.to_str().unwrap_or_default(),
        ],
        &[],
    );
    assert!(e.contains("does not fit"), "{e}");
}

#[test]
fn command_line_too_long() {
    let k = fp_bzimage();
    let long = "x".repeat(3000);
    let e = record_fails(&[k.to_str().unwrap_or_default(), "--cmdline", &long], &[]);
    assert!(e.contains("accepts at most"), "{e}");
}

#[test]
fn hugepages_without_reservation() {
    let free = std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
        .unwrap_or_default();
    let free = free.trim().parse::<u64>().unwrap_or(0);
    assert!(
        free < 64,
        "cannot test: {free} huge pages are reserved on this host (a boot would get them)"
    );
    let k = fp_bzimage();
    let e = record_fails(&[k.to_str().unwrap_or_default(), "--hugepages"], &[]);
    assert!(
        e.contains("huge pages") && e.contains("nr_hugepages"),
        "{e}"
    );
}

#[test]
fn guest_that_spins_forever_times_out_with_a_summary() {
    let k = spinning_kernel(scratch(), "spin-timeout.elf");
    let trace = scratch().join("spin.data");
    let out = boottrace(&[
        "record",
        k.to_str().unwrap_or_default(),
        "--timeout",
        "2",
        "-F",
        "1000",
        "-o",
        trace.to_str().unwrap_or_default(),
    ]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    // Status and summary go to stderr; stdout carries only a command's output.
    assert!(out.stdout.is_empty(), "record wrote to stdout:\n{all}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("boot ended: timeout after 2.0 s"), "{all}");
    assert!(
        all.contains("boot time (first guest instruction -> end)"),
        "summary missing:\n{all}"
    );
    // What was recorded is kept.
    let t = boottrace::trace::Trace::open(&trace).expect("trace of a timed-out boot reads back");
    assert_eq!(
        t.runs[0].end.as_ref().map(|e| &e.reason),
        Some(&boottrace::trace::EndKind::Timeout)
    );
    assert!(
        t.runs[0].samples.len() > 100,
        "samples of the spinning guest were kept"
    );
    assert!(t.runs[0].samples.iter().all(|s| s.rip == 0x20_0000));
}

/// `-v` adds each run's kernel layout to the status; without it there is none.
#[test]
fn verbose_record_shows_the_layout_on_stderr() {
    let k = spinning_kernel(scratch(), "spin-verbose.elf");
    let trace = scratch().join("verbose.data");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "record",
            k.to_str().unwrap_or_default(),
            "--timeout",
            "0.5",
            "-F",
            "0",
            "-o",
            trace.to_str().unwrap_or_default(),
        ];
        args.extend_from_slice(extra);
        boottrace(&args)
    };
    let quiet = run(&[]);
    let verbose = run(&["-v"]);
    for out in [&quiet, &verbose] {
        assert!(out.stdout.is_empty(), "stdout: {}", text(out));
    }
    let q = String::from_utf8_lossy(&quiet.stderr);
    let v = String::from_utf8_lossy(&verbose.stderr);
    assert!(q.contains("boot ended: timeout") && v.contains("boot ended: timeout"));
    assert!(!q.contains("kernel slide"), "{q}");
    assert!(
        v.contains("run 1: kernel slide 0x0 (fixed: ELF vmlinux booted directly"),
        "{v}"
    );
}

#[test]
fn an_existing_trace_is_kept_as_old() {
    let k = spinning_kernel(scratch(), "spin-keep-old.elf");
    let trace = scratch().join("keep.data");
    std::fs::write(&trace, b"previous recording").expect("write");
    let out = boottrace(&[
        "record",
        k.to_str().unwrap_or_default(),
        "--timeout",
        "0.5",
        "-F",
        "0",
        "-o",
        trace.to_str().unwrap_or_default(),
    ]);
    assert!(!out.status.success());
    let old = std::fs::read(scratch().join("keep.data.old")).expect("old trace kept");
    assert_eq!(old, b"previous recording");
}
