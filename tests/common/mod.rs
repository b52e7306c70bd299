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
