//! Writes a synthetic trace and its System.map, for the scale benchmark
//! (`examples/bench-scale.sh`):
//! `cargo run --release --example synth-trace -- OUT.data SAMPLES [SEED]`
//! writes OUT.data (one run, one vCPU, 10 kHz, 2,000 extra functions) and
//! OUT.data.map.

use anyhow::{Context, Result};
use boottrace::trace::synth::{self, SynthOptions};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let out = args
        .get(1)
        .context("usage: synth-trace OUT SAMPLES [SEED]")?;
    let samples: u32 = args
        .get(2)
        .context("usage: synth-trace OUT SAMPLES [SEED]")?
        .parse()
        .context("SAMPLES must be a number")?;
    let seed: u64 = match args.get(3) {
        Some(s) => s.parse().context("SEED must be a number")?,
        None => 9,
    };
    let opts = SynthOptions {
        runs: 1,
        samples_per_run: samples,
        vcpus: 1,
        period_ns: 100_000,
        seed,
        extra_functions: 2_000,
    };
    let path = std::path::Path::new(out);
    synth::write(path, &opts)?;
    std::fs::write(format!("{out}.map"), synth::system_map_for(&opts))?;
    let size = std::fs::metadata(path)?.len();
    println!(
        "{out}: {samples} samples, {size} bytes ({:.1} bytes/sample)",
        size as f64 / f64::from(samples.max(1))
    );
    Ok(())
}
