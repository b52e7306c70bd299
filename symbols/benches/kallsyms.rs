//! Benchmark: recover kallsyms from Debian's stock cloud vmlinuz (no vmlinux,
//! no System.map). Goal: under 1 s. Plain `harness = false` main:
//!
//!     cargo bench -p boottrace-symbols --bench kallsyms
//!
//! Prints the time to open the image (read + decompress + ELF + identity),
//! and min / median / max of kallsyms recovery over several runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use boottrace_symbols::image::KernelImage;
use boottrace_symbols::kallsyms;

const RUNS: usize = 9;

fn fetch(series: &str) -> Option<PathBuf> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../kernel/fetch-debian-cloud.sh");
    let out = Command::new(script).arg(series).output().ok()?;
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let last = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()?
        .trim()
        .to_string();
    Some(PathBuf::from(last))
}

fn bench(path: &Path) {
    let t = Instant::now();
    let image = match KernelImage::open(path) {
        Ok(image) => image,
        Err(e) => {
            eprintln!("{}: {e}", path.display());
            return;
        }
    };
    let open = t.elapsed();
    let mut times: Vec<Duration> = Vec::with_capacity(RUNS);
    let mut count = 0;
    for _ in 0..RUNS {
        let t = Instant::now();
        match kallsyms::recover(&image.kallsyms_regions()) {
            Ok(table) => count = table.len(),
            Err(e) => {
                eprintln!("{}: {e}", path.display());
                return;
            }
        }
        times.push(t.elapsed());
    }
    times.sort();
    println!(
        "{}\n  open (read, {} decompress, ELF, sha256): {:.1} ms\n  kallsyms recovery, {count} symbols: min {:.1} ms, median {:.1} ms, max {:.1} ms ({RUNS} runs)\n  open + recover: {:.1} ms (goal < 1000 ms)",
        path.display(),
        image.compression().map(|c| c.name()).unwrap_or("no"),
        ms(open),
        ms(times[0]),
        ms(times[RUNS / 2]),
        ms(times[RUNS - 1]),
        ms(open + times[RUNS / 2]),
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    // `cargo test --benches` runs this with --bench absent: keep it quick then.
    let series: &[&str] = if std::env::args().any(|a| a == "--bench") {
        &["6.12", "6.1"]
    } else {
        &["6.12"]
    };
    let mut any = false;
    for s in series {
        match fetch(s) {
            Some(path) => {
                bench(&path);
                any = true;
            }
            None => eprintln!("SKIPPED: Debian {s} cloud kernel not fetchable"),
        }
    }
    if !any {
        eprintln!("no kernel to benchmark");
    }
}
