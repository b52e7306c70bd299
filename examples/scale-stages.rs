//! Times the stages of `report`, `flame` and `diff` on two traces, for
//! `examples/bench-scale.sh` (`STAGES=1`): reading, symbol setup, building
//! the profile, then each command's analysis and rendering.
//! `cargo run --release --example scale-stages -- A.data A.map B.data B.map`

use std::time::Instant;

use anyhow::{Context, Result};
use boottrace::analysis::doc;
use boottrace::analysis::fold::Weight;
use boottrace::profile::symbols::{setup, SymbolConfig};
use boottrace::profile::{build_table, Profile};
use boottrace::render::diff::{render as render_diff, DiffOptions, DiffView};
use boottrace::render::flame::{render as render_flame, FlameOptions};
use boottrace::render::report::text;
use boottrace::trace::Trace;

/// CPU time of this process so far, s (on a loaded host wall time also
/// counts other programs' turns).
fn cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Prints how long `f` took under `label` (wall and CPU) and returns its result.
fn timed<T>(label: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let (t, c) = (Instant::now(), cpu_s());
    let v = f()?;
    println!(
        "  {label:<28} {:7.3} s wall {:7.3} s CPU",
        t.elapsed().as_secs_f64(),
        cpu_s() - c
    );
    Ok(v)
}

/// Reads, sets up symbols and builds one side's profile, each timed.
fn load(trace: &str, map: &str) -> Result<Profile> {
    let (t, table) = timed("read (Trace::open_table)", || Ok(Trace::open_table(trace)?))?;
    let cfg = SymbolConfig {
        system_map: Some(map.into()),
        ..SymbolConfig::default()
    };
    let sym = timed("symbol setup", || Ok(setup(&t, &cfg)?))?;
    timed("build profile", || Ok(build_table(&t, &table, &sym)))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, a, a_map, b, b_map] = &args[..] else {
        anyhow::bail!("usage: scale-stages A.data A.map B.data B.map");
    };
    println!("report:");
    let pa = load(a, a_map)?;
    let d = timed("analysis (doc::build)", || Ok(doc::build(&pa, 15)))?;
    timed("text", || Ok(text::render(&d, 30).len()))?;
    println!("flame:");
    timed("fold + SVG", || {
        let mut svg = Vec::new();
        render_flame(&pa, &FlameOptions::default(), &mut svg)?;
        Ok(svg.len())
    })?;
    println!("diff (A loaded above):");
    let pb = load(b, b_map)?;
    let view = DiffView {
        a: &pa,
        b: &pb,
        a_path: a.as_ref(),
        b_path: b.as_ref(),
        a_label: "A".into(),
        b_label: "B".into(),
    };
    // `diff` compares host time (its default `--weight samples`).
    let o = DiffOptions {
        weight: Weight::Time,
        normalize: Default::default(),
        sort: Default::default(),
        top: 15,
    };
    timed("fold, tables, SVG", || {
        let mut svg = Vec::new();
        render_diff(&view, &o, &mut svg).context("diff")
    })?;
    Ok(())
}
