//! Golden files for folding: a fixed synthetic trace, symbolized through a
//! System.map, folded by each weight and as a flame chart, must match
//! `tests/golden/*.folded` byte for byte. After an intended change, regenerate
//! with `BOOTTRACE_UPDATE_GOLDEN=1 cargo test --test flame_golden` (the run
//! fails on purpose), review the diff, and run again.

mod golden_support;

use boottrace::analysis::fold::{self, Folded, RunSelect, Weight};
use boottrace::profile::symbols::SymbolConfig;
use boottrace::profile::Profile;
use boottrace::trace::synth::{self, SynthOptions};

fn symbolized() -> Profile {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("t.data");
    let opts = SynthOptions {
        runs: 3,
        samples_per_run: 300,
        vcpus: 2,
        period_ns: 1_000_000,
        seed: 42,
        ..SynthOptions::default()
    };
    synth::write(&trace, &opts).expect("write");
    let map = dir.path().join("System.map");
    std::fs::write(&map, synth::system_map()).expect("map");
    let args = SymbolConfig {
        system_map: Some(map),
        ..SymbolConfig::default()
    };
    boottrace::profile::open(&trace, &args).expect("load")
}

fn check(name: &str, actual: &str) {
    golden_support::check(name, actual);
}

fn text(f: &Folded) -> String {
    let mut out = Vec::new();
    f.write_to(&mut out).expect("write");
    String::from_utf8(out).expect("utf8")
}

#[test]
fn folded_by_samples_faults_and_exits() {
    let sym = symbolized();
    for (w, name) in [
        (Weight::Samples, "synth-samples.folded"),
        (Weight::Faults, "synth-faults.folded"),
        (Weight::Exits, "synth-exits.folded"),
    ] {
        let f = fold::fold(&sym, RunSelect::All, w);
        // Independent of the golden file: the weights add up to the samples'.
        let total: u64 = sym
            .runs
            .iter()
            .flat_map(|r| &r.samples)
            .map(|s| w.of(s))
            .sum();
        assert_eq!(f.total(), total, "{name}");
        check(name, &text(&f));
    }
    let one = fold::fold(&sym, RunSelect::Run(1), Weight::Samples);
    check("synth-run1-samples.folded", &text(&one));
}

#[test]
fn flame_chart_lines() {
    let sym = symbolized();
    let chart = fold::chart(&sym, RunSelect::Run(0), Weight::Samples);
    let total: u64 = chart.iter().map(|(_, w)| w).sum();
    let samples = sym.run(0).map_or(0, |r| r.samples.len()) as u64;
    assert_eq!(total, samples);
    // Consecutive entries of one timeline never repeat a stack (they are merged).
    assert!(chart.windows(2).all(|w| w[0].0 != w[1].0));
    let s: String = chart.iter().map(|(s, w)| format!("{s} {w}\n")).collect();
    check("synth-run0-chart.folded", &s);
}
