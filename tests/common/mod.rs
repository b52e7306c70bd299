//! Shared by the integration tests that boot real kernels: test kernels from
//! `kernel/build.sh` (cached), running the real `boottrace` binary, and
//! reading what it wrote.
#![allow(dead_code)]

pub mod chromium;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub mod type_info;

/// The directory of a built test kernel: `$BOOTTRACE_TINY_FP` (etc.) when
/// set, else what `kernel/build.sh NAME` prints last (cached: seconds).
pub fn kernel_dir(name: &str) -> PathBuf {
    let var = format!("BOOTTRACE_{}", name.to_uppercase().replace('-', "_"));
    if let Some(dir) = std::env::var_os(&var) {
        return PathBuf::from(dir);
    }
    kernel_script_path("build.sh", name, &format!("kernel/build.sh {name} failed"))
}

/// Runs `bash kernel/SCRIPT ARG` and returns the path it prints on its last
/// line. Panics, failing the test, with `failure` and the script's stderr
/// when it fails.
pub fn kernel_script_path(script: &str, arg: &str, failure: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("kernel")
        .join(script);
    let out = Command::new("bash")
        .arg(&path)
        .arg(arg)
        .output()
        .unwrap_or_else(|e| panic!("run kernel/{script}: {e}"));
    assert!(
        out.status.success(),
        "{failure}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("kernel/{script} printed no path"));
    PathBuf::from(last.trim())
}

/// Runs `boottrace ARGS…` and returns its output.
pub fn boottrace(args: &[&str]) -> Output {
    // Commands that may boot a guest hold a boot slot for their duration.
    let _slot = matches!(args.first(), Some(&("record" | "diff" | "sweep"))).then(BootSlot::take);
    Command::new(env!("CARGO_BIN_EXE_boottrace"))
        .args(args)
        .output()
        .expect("run boottrace")
}

/// One of at most as many concurrent boots as the host has CPUs, across all
/// test threads and test binaries (flock on slot files). On the nested PVM
/// host, where guest code is emulated, boots that outnumber the CPUs starve
/// each other until the guests spend all their time in timer interrupts and
/// never finish (seen at load ~18 on 2 cores); on bare metal it only keeps
/// boots' timings clean. Released when dropped.
pub struct BootSlot(std::fs::File);

impl BootSlot {
    /// Waits for a free slot.
    pub fn take() -> BootSlot {
        use std::os::fd::AsRawFd;
        let n = std::thread::available_parallelism().map_or(2, |n| n.get());
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("boot-slots");
        std::fs::create_dir_all(&dir).expect("create boot-slots");
        let files: Vec<std::fs::File> = (0..n)
            .map(|i| std::fs::File::create(dir.join(format!("slot-{i}"))).expect("slot file"))
            .collect();
        loop {
            for f in &files {
                // SAFETY: flock on a descriptor owned by `files` (or, once
                // returned, by the BootSlot); closing it releases the lock.
                // (std's File::try_lock needs Rust 1.89, above the MSRV.)
                let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
                if rc == 0 {
                    let f = f.try_clone().expect("dup slot file");
                    return BootSlot(f);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

/// stdout + stderr as one string, for assertions and failure messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A scratch directory kept for the whole test process.
pub fn scratch() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("tempdir"))
        .path()
}

/// The `report --json` document of a trace.
pub fn report_json(trace: &Path) -> serde_json::Value {
    let out = boottrace(&[
        "report",
        "--json",
        "-i",
        trace.to_str().expect("utf-8 path"),
    ]);
    assert!(out.status.success(), "report failed: {}", text(&out));
    serde_json::from_slice(&out.stdout).expect("report --json is JSON")
}

/// A minimal x86_64 ELF "kernel" whose one PT_LOAD puts `code` at 2 MiB, the
/// entry, written to `dir/name` (one file per test: parallel tests never share
/// it). No PVH note: boottrace enters it in 64-bit mode with identity paging.
pub fn flat_kernel(dir: &Path, name: &str, code: &[u8]) -> PathBuf {
    let mut elf = Vec::new();
    elf.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    for (v, n) in [
        (2u64, 2),
        (62, 2),
        (1, 4),
        (0x20_0000, 8),
        (64, 8),
        (0, 8),
        (0, 4),
        (64, 2),
        (56, 2),
        (1, 2),
        (0, 2),
        (0, 2),
        (0, 2),
    ] {
        elf.extend_from_slice(&v.to_le_bytes()[..n]);
    }
    let len = code.len() as u64;
    for (v, n) in [
        (1u64, 4),
        (7, 4),
        (0x1000, 8),
        (0x20_0000, 8),
        (0x20_0000, 8),
        (len, 8),
        (len, 8),
        (0x1000, 8),
    ] {
        elf.extend_from_slice(&v.to_le_bytes()[..n]);
    }
    elf.resize(0x1000, 0);
    elf.extend_from_slice(code);
    let p = dir.join(name);
    std::fs::write(&p, elf).expect("write test kernel");
    p
}

/// A recording shared by every test (in any test binary) that asks for the
/// same `boottrace record` arguments, so the suite boots each configuration
/// once: CI time stays flat as checks are added.
///
/// `args` are `record`'s arguments without `-o`; the trace goes to
/// `$CARGO_TARGET_TMPDIR/shared-recordings/<hash>.data`, where the hash covers
/// the arguments, the boottrace binary (size and mtime) and each argument that
/// names an existing file (size and mtime), so a rebuilt binary or kernel
/// records afresh. A file lock makes parallel tests wait for the one
/// recording. Returns the trace and what `record` printed (kept beside it).
/// Panics, failing the test, when `record` fails.
pub fn shared_recording(args: &[&str]) -> (PathBuf, String) {
    use sha2::{Digest, Sha256};
    use std::io::Write;

    fn stamp(h: &mut Sha256, p: &Path) {
        if let Ok(m) = std::fs::metadata(p) {
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            h.update(format!("{}:{}:{mtime};", p.display(), m.len()).as_bytes());
        }
    }
    let bin = Path::new(env!("CARGO_BIN_EXE_boottrace"));
    let mut h = Sha256::new();
    stamp(&mut h, bin);
    for a in args {
        h.update(a.as_bytes());
        h.update([0u8]);
        stamp(&mut h, Path::new(a));
    }
    let key: String = h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("shared-recordings");
    std::fs::create_dir_all(&dir).expect("create shared-recordings");
    let trace = dir.join(format!("{key}.data"));
    let log = dir.join(format!("{key}.out"));
    let done = dir.join(format!("{key}.ok"));
    let lock = std::fs::File::create(dir.join(format!("{key}.lock"))).expect("lock file");
    {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor this function owns for its whole
        // lifetime; the lock is released when `lock` is dropped (closed).
        // (std's File::lock needs Rust 1.89, above the crate's MSRV.)
        let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
    }
    if !done.exists() {
        let mut full = vec!["record", "-o", trace.to_str().expect("utf-8 path")];
        full.extend_from_slice(args);
        let out = boottrace(&full);
        let shown = text(&out);
        std::fs::write(&log, &shown).expect("write record output");
        assert!(
            out.status.success(),
            "shared recording `boottrace {}` failed:\n{shown}",
            full.join(" ")
        );
        let mut f = std::fs::File::create(&done).expect("mark recording done");
        f.write_all(args.join(" ").as_bytes())
            .expect("mark recording done");
    }
    let shown = std::fs::read_to_string(&log).expect("read record output");
    (trace, shown)
}

/// Whether /dev/kvm is the nested "PVM" kind, where guest kernel code is
/// emulated (~1000x slower than bare metal); expectations that hold only
/// there are kept behind this.
pub fn host_is_pvm() -> bool {
    boottrace::vmm::compat::host_is_pvm()
}

/// The standard record arguments of a test kernel (without `-o`), shared by
/// every test that can use them so the suite boots each once: tiny-fp's
/// bzImage at 1 kHz, tiny-orc's on two vCPUs at 1 kHz.
pub fn standard_args(kernel: &str) -> Vec<String> {
    let d = kernel_dir(kernel);
    let s = |p: PathBuf| p.to_str().expect("utf-8 path").to_string();
    let mut a = vec![
        s(d.join("bzImage")),
        "--initrd".into(),
        s(d.join("initramfs.cpio")),
    ];
    if kernel == "tiny-orc" {
        a.extend(["--cpus".into(), "2".into()]);
    }
    a.extend(["-F", "1000", "--timeout", "900"].map(String::from));
    a
}

/// The standard recording of a test kernel ([`standard_args`]), made once
/// for the whole suite by [`shared_recording`].
pub fn standard_recording(kernel: &str) -> (PathBuf, String) {
    let args = standard_args(kernel);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    shared_recording(&refs)
}

/// Runs `boottrace ARGS…` with stdout and stderr on a pseudo-terminal (as
/// from an interactive shell; stdin is /dev/null) and returns its exit code
/// and everything it wrote there (a terminal turns `\n` into `\r\n`).
/// Commands that may boot hold a boot slot, as with [`boottrace`].
pub fn boottrace_on_terminal(args: &[&str]) -> (Option<i32>, String) {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    let _slot = matches!(args.first(), Some(&("record" | "diff" | "sweep"))).then(BootSlot::take);
    let (mut master, mut slave) = (-1, -1);
    // SAFETY: openpty writes two new descriptors into the two ints; the
    // name, termios and window size pointers may be null.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened by openpty and are owned here only.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    let mut child = Command::new(env!("CARGO_BIN_EXE_boottrace"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(slave.try_clone().expect("dup pty"))
        .stderr(slave)
        .spawn()
        .expect("run boottrace on a terminal");
    // The child holds the only other copies of the terminal's slave side:
    // reading ends (EIO) once it has exited and they are closed.
    let reader = std::thread::spawn(move || {
        let mut f = std::fs::File::from(master);
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => all.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&all).into_owned()
    });
    let status = child.wait().expect("wait for boottrace");
    let shown = reader.join().expect("pty reader");
    (status.code(), shown)
}
