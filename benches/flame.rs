//! Benchmark: 1,000,000 samples → flamegraph SVG (goal: under 2 s).
//!
//! A synthetic trace (one run, one vCPU, a fake kernel with 2,000 extra
//! functions in a fixed call tree, so there are thousands of distinct
//! stacks) is written first; then each stage of `boottrace flame` is timed:
//! reading the trace, symbolizing (System.map), folding and rendering.
//! `cargo bench --bench flame`; `BOOTTRACE_BENCH_SAMPLES=N` changes the size.

use std::time::Instant;

use boottrace::analysis::fold::{self, RunSelect, Weight};
use boottrace::profile::symbols::{self, SymbolConfig};
use boottrace::render::flame::{self, FlameOptions};
use boottrace::trace::synth::{self, SynthOptions};
use boottrace::trace::Trace;

fn main() -> anyhow::Result<()> {
    let samples: u32 = std::env::var("BOOTTRACE_BENCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let trace_path = dir.path().join("bench.data");
    let opts = SynthOptions {
        runs: 1,
        samples_per_run: samples,
        vcpus: 1,
        period_ns: 100_000,
        seed: 9,
        extra_functions: 2_000,
    };
    let t = Instant::now();
    synth::write(&trace_path, &opts)?;
    let size = std::fs::metadata(&trace_path)?.len();
    println!(
        "setup: wrote {samples} samples, {:.1} MB ({:.0} bytes/sample) in {:.2} s",
        size as f64 / 1e6,
        size as f64 / f64::from(samples),
        t.elapsed().as_secs_f64()
    );
    let map = dir.path().join("System.map");
    std::fs::write(&map, synth::system_map_for(&opts))?;
    let args = SymbolConfig {
        system_map: Some(map),
        ..SymbolConfig::default()
    };

    let t0 = Instant::now();
    let trace = Trace::open(&trace_path)?;
    let t1 = Instant::now();
    let setup = symbols::setup(&trace, &args)?;
    let sym = boottrace::profile::build(&trace, &setup);
    let t2 = Instant::now();
    let folded = fold::fold(&sym, RunSelect::All, Weight::Samples);
    let t3 = Instant::now();
    let mut svg = Vec::new();
    flame::render(
        &sym,
        &FlameOptions {
            runs: RunSelect::All,
            weight: Weight::Samples,
            chart: false,
            width: 1200,
            by_task: false,
        },
        &mut svg,
    )?;
    let t4 = Instant::now();
    println!(
        "read {:.3} s, build profile {:.3} s ({} stack nodes), fold {:.3} s ({} lines), \
         fold+render {:.3} s ({:.1} MB SVG)",
        (t1 - t0).as_secs_f64(),
        (t2 - t1).as_secs_f64(),
        sym.stacks.len(),
        (t3 - t2).as_secs_f64(),
        folded.stacks.len(),
        (t4 - t3).as_secs_f64(),
        svg.len() as f64 / 1e6
    );
    println!(
        "total: {} samples -> SVG in {:.3} s (goal < 2 s)",
        trace.sample_count(),
        (t4 - t0).as_secs_f64()
    );
    Ok(())
}
