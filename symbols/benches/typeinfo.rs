//! Benchmark: task-awareness type info (struct offsets) from the tiny-fp
//! vmlinux's DWARF and from the BTF of Debian's stock cloud vmlinuz. It runs
//! once when `record` starts, so it must stay well under the boot itself.
//! Plain `harness = false` main:
//!
//!     cargo bench -p boottrace-symbols --bench typeinfo
//!
//! Prints min / median / max over several runs of `typeinfo::load` (mapping
//! the vmlinux included; the vmlinuz is opened once, outside the timing, as
//! `record` has it open already).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use boottrace_symbols::image::KernelImage;
use boottrace_symbols::mapped::MappedFile;
use boottrace_symbols::typeinfo::{self, TypeInfoLookup};

const RUNS: usize = 9;

/// Last stdout line of a script in `kernel/` (a path), or None with its stderr printed.
fn script_path(script: &str, arg: &str) -> Option<PathBuf> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../kernel")
        .join(script);
    let out = Command::new(&script).arg(arg).output().ok()?;
    if !out.status.success() {
        eprintln!(
            "{}: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()?
        .trim()
        .to_string();
    Some(PathBuf::from(last))
}

fn time(label: &str, mut f: impl FnMut() -> TypeInfoLookup) {
    let mut times: Vec<Duration> = Vec::with_capacity(RUNS);
    let mut source = None;
    for _ in 0..RUNS {
        let t = Instant::now();
        let lookup = f();
        times.push(t.elapsed());
        source = Some(lookup.source());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{label}: source {}, min {:.1} ms, median {:.1} ms, max {:.1} ms ({RUNS} runs)",
        source.map(|s| s.to_string()).unwrap_or_default(),
        ms(times[0]),
        ms(times[RUNS / 2]),
        ms(times[RUNS - 1]),
    );
}

fn main() {
    match script_path("build.sh", "tiny-fp") {
        Some(dir) => {
            let vmlinux = dir.join("vmlinux");
            time("tiny-fp vmlinux (DWARF)", || {
                match MappedFile::open(&vmlinux) {
                    Ok(file) => typeinfo::load(Some(&file), None),
                    Err(e) => panic!("{e}"),
                }
            });
        }
        None => eprintln!("tiny-fp kernel unavailable: DWARF not measured"),
    }
    match script_path("fetch-debian-cloud.sh", "6.12").map(|p| KernelImage::open(&p)) {
        Some(Ok(image)) => time("Debian 6.12 cloud vmlinuz (BTF)", || {
            typeinfo::load(None, Some(&image))
        }),
        Some(Err(e)) => eprintln!("Debian vmlinuz: {e}"),
        None => eprintln!("Debian cloud kernel unavailable: BTF not measured"),
    }
}
