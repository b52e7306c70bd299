//! Shared by the integration tests that boot real kernels: test kernels from
//! `kernel/build.sh` (cached), running the real `boottrace` binary, and
//! reading what it wrote.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The directory of a built test kernel: `$BOOTTRACE_TINY_FP` (etc.) when
/// set, else what `kernel/build.sh NAME` prints last (cached: seconds).
pub fn kernel_dir(name: &str) -> PathBuf {
    let var = format!("BOOTTRACE_{}", name.to_uppercase().replace('-', "_"));
    if let Some(dir) = std::env::var_os(&var) {
        return PathBuf::from(dir);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernel/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(name)
        .output()
        .expect("run kernel/build.sh");
    assert!(
        out.status.success(),
        "kernel/build.sh {name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout
        .lines()
        .last()
        .expect("build.sh printed the kernel directory")
        .trim()
        .to_string();
    PathBuf::from(dir)
}

/// Runs `boottrace ARGS…` and returns its output.
pub fn boottrace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_boottrace"))
        .args(args)
        .output()
        .expect("run boottrace")
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
