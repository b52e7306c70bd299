//! Shared helpers for the image tests: locating the cached test kernels.

pub mod encode;

use std::path::PathBuf;
use std::process::Command;

/// Directory of test kernel `name`, built (or taken from the cache) by
/// `kernel/build.sh`, whose last stdout line is that directory.
pub fn kernel_dir(name: &str) -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../kernel/build.sh");
    let out = Command::new(&script)
        .arg(name)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} {name} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout
        .lines()
        .last()
        .unwrap_or_else(|| panic!("{} {name} printed nothing", script.display()));
    PathBuf::from(last.trim())
}

/// `(addr, name)` of the text symbols (`T`/`t`) of a System.map.
#[allow(dead_code)] // not every test binary uses every helper
pub fn system_map_text(dir: &std::path::Path) -> Vec<(u64, String)> {
    let map = std::fs::read_to_string(dir.join("System.map")).expect("System.map readable");
    map.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let addr = u64::from_str_radix(it.next()?, 16).ok()?;
            let kind = it.next()?;
            let name = it.next()?;
            matches!(kind, "T" | "t").then(|| (addr, name.to_string()))
        })
        .collect()
}
