//! Symbolize 1,000,000 samples drawn from 10,000 distinct kernel text
//! addresses of the real `tiny-fp` vmlinux, with each kernel symbol source.
//!
//! ```text
//! cargo bench -p boottrace-symbols --bench symbolize
//! ```
//! The kernel comes from `BOOTTRACE_TINY_FP` or `kernel/build.sh tiny-fp`.
//! Times include building the symbolizer (and recovering kallsyms, for that
//! source) and the cold cache: the first sample of each address pays for its
//! DWARF parse, as a report over a fresh trace does.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use boottrace_symbols::elfsyms;
use boottrace_symbols::image::KernelImage;
use boottrace_symbols::layout::AddrSpace;
use boottrace_symbols::symbolizer::{Symbolizer, SymbolizerOptions};

const DISTINCT: usize = 10_000;
const SAMPLES: usize = 1_000_000;

fn kernel_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("BOOTTRACE_TINY_FP") {
        return Some(dir.into());
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel/build.sh");
    let out = Command::new("bash")
        .arg(script)
        .arg("tiny-fp")
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let stdout = String::from_utf8(out.stdout).ok()?;
    Some(PathBuf::from(stdout.lines().last()?.trim()))
}

/// xorshift64*: a fixed, dependency-free sample stream.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

/// Time this thread has spent on a CPU (`/proc/thread-self/schedstat`, ns):
/// on a loaded machine wall time also counts the other processes' turns.
fn on_cpu() -> Duration {
    let ns = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    Duration::from_nanos(ns)
}

fn run(label: &str, setup: impl FnOnce() -> Symbolizer, samples: &[AddrSpace]) {
    let (t0, c0) = (Instant::now(), on_cpu());
    let s = setup();
    let t_new = t0.elapsed();
    let mut frames = 0usize;
    let mut inlined = 0usize;
    let t1 = Instant::now();
    for &space in samples {
        let f = s.resolve(space);
        frames += f.len();
        inlined += usize::from(f.len() > 1);
        black_box(&f);
    }
    let t_cold = t1.elapsed();
    let c_cold = on_cpu().saturating_sub(c0);
    let t2 = Instant::now();
    for &space in samples {
        black_box(s.resolve(space));
    }
    let t_warm = t2.elapsed();
    println!(
        "{label:<10} source: {}\n           setup {}, 1M samples (cold cache) {} = {:.0} ns/sample, \
         again (warm) {} = {:.0} ns/sample\n           total {}; {:.2} frames/sample, \
         {:.1}% of samples with inline frames; on-CPU time for setup + cold pass {}",
        s.source(),
        ms(t_new),
        ms(t_cold),
        t_cold.as_nanos() as f64 / samples.len() as f64,
        ms(t_warm),
        t_warm.as_nanos() as f64 / samples.len() as f64,
        ms(t_new + t_cold),
        frames as f64 / samples.len() as f64,
        inlined as f64 * 100.0 / samples.len() as f64,
        ms(c_cold),
    );
}

fn main() {
    let Some(dir) = kernel_dir() else {
        eprintln!(
            "SKIPPED: no tiny-fp kernel (set BOOTTRACE_TINY_FP or run kernel/build.sh tiny-fp)"
        );
        return;
    };
    let vmlinux = dir.join("vmlinux");
    // Distinct addresses: inside random sized functions, anywhere in them.
    let table = match elfsyms::load(&vmlinux) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("cannot read {}: {e}", vmlinux.display());
            std::process::exit(1);
        }
    };
    let funcs: Vec<_> = table
        .symbols()
        .iter()
        .filter(|s| s.size.is_some())
        .collect();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut distinct: Vec<u64> = (0..DISTINCT)
        .map(|_| {
            let f = funcs[rng.below(funcs.len() as u64) as usize];
            f.addr + rng.below(f.size.unwrap_or(1))
        })
        .collect();
    distinct.sort_unstable();
    distinct.dedup();
    let samples: Vec<AddrSpace> = (0..SAMPLES)
        .map(|_| AddrSpace::Kernel(distinct[rng.below(distinct.len() as u64) as usize]))
        .collect();
    println!(
        "{} samples over {} distinct addresses in {} sized functions of {}",
        samples.len(),
        distinct.len(),
        funcs.len(),
        dir.display()
    );

    run(
        "vmlinux",
        || {
            Symbolizer::new(SymbolizerOptions {
                vmlinux: Some(vmlinux.clone()),
                ..Default::default()
            })
            .expect("vmlinux symbolizer")
        },
        &samples,
    );
    run(
        "System.map",
        || {
            Symbolizer::new(SymbolizerOptions {
                system_map: Some(dir.join("System.map")),
                ..Default::default()
            })
            .expect("System.map symbolizer")
        },
        &samples,
    );
    run(
        "kallsyms",
        || {
            let image = KernelImage::open(&dir.join("bzImage")).expect("bzImage");
            Symbolizer::new(SymbolizerOptions {
                image: Some(Arc::new(image)),
                ..Default::default()
            })
            .expect("kallsyms symbolizer")
        },
        &samples,
    );
}
