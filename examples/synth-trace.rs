//! Writes a synthetic trace and its System.map, for the scale benchmark
//! (`examples/bench-scale.sh`) and the trace-size figure
//! (`examples/trace-size.rs`):
//! `cargo run --release --example synth-trace -- OUT.data SAMPLES [SEED] [--waits]`
//! writes OUT.data (one run, one vCPU, 10 kHz, 2,000 extra functions) and
//! OUT.data.map. `--waits` adds the guest tasks and the boot task's blocked
//! stacks of a boot whose pid 1 waits a lot (`synth::records_with_waits`).

use anyhow::{Context, Result};
use boottrace::trace::synth::{self, SynthOptions};
use boottrace::trace::Record;

const USAGE: &str = "usage: synth-trace OUT SAMPLES [SEED] [--waits]";

fn main() -> Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let waits = args.iter().any(|a| a == "--waits");
    args.retain(|a| a != "--waits");
    let out = args.first().context(USAGE)?;
    let samples: u32 = args
        .get(1)
        .context(USAGE)?
        .parse()
        .context("SAMPLES must be a number")?;
    let seed: u64 = match args.get(2) {
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
    let recs = if waits {
        synth::records_with_waits(&opts)
    } else {
        synth::records(&opts)
    };
    synth::write_records(path, &recs)?;
    std::fs::write(format!("{out}.map"), synth::system_map_for(&opts))?;
    let size = std::fs::metadata(path)?.len();
    let count = |f: fn(&Record) -> bool| recs.iter().filter(|r| f(r)).count();
    let n = count(|r| matches!(r, Record::Sample(_)));
    println!(
        "{out}: {n} samples, {} wait stacks, {size} bytes ({:.1} bytes/sample)",
        count(|r| matches!(r, Record::WaitStack(_))),
        size as f64 / n.max(1) as f64
    );
    Ok(())
}
