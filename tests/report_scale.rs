//! Every analysis is linear in the trace. Two shapes that used to blow up:
//! - 50 000 one-sample runs (the reader keeps `MAX_RUNS` of them) with
//!   thousands of distinct functions: per-name
//!   values over runs were dense (`vec![0; runs]` per function and table),
//!   gigabytes, and the process aborted;
//! - one 2 M-frame stack: total time per function deduplicated recursion
//!   with a linear `contains` per frame, quadratic in the depth (115 s).
//!
//! Both must now finish well inside a bound that the quadratic code could
//! not meet (release build; the bounds leave a margin for a slow machine).

use std::time::{Duration, Instant};

use boottrace::analysis::diffnorm::per_run_folded;
use boottrace::analysis::doc;
use boottrace::analysis::fold::{fold, RunSelect, Weight};
use boottrace::profile::symbols::SymbolConfig;
use boottrace::profile::{FrameKind, FrameName, Profile, Run, Sample};
use boottrace::trace::synth::{self, SynthOptions};

#[test]
fn fifty_thousand_one_sample_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("many.data");
    let opts = SynthOptions {
        runs: 50_000,
        samples_per_run: 1,
        vcpus: 1,
        period_ns: 1_000_000,
        seed: 3,
        extra_functions: 2_000,
    };
    synth::write(&path, &opts).expect("write");
    let map = dir.path().join("System.map");
    std::fs::write(&map, synth::system_map_for(&opts)).expect("map");
    let cfg = SymbolConfig {
        system_map: Some(map),
        ..SymbolConfig::default()
    };
    let t = Instant::now();
    let p = boottrace::profile::open(&path, &cfg).expect("open");
    let d = doc::build(&p, 15);
    let took = t.elapsed();
    // The reader keeps at most MAX_RUNS runs (the most `record --runs`
    // writes); what is read is summarized in linear time.
    let kept = boottrace::trace::MAX_RUNS;
    assert!(kept < 50_000);
    assert_eq!(d.summary.runs, kept);
    assert_eq!(d.runs.len(), kept);
    let top = &d.summary.top_self[0];
    assert_eq!(top.value.n, kept, "summaries count every run");
    assert!(took < Duration::from_secs(60), "50 000 runs took {took:?}");
}

#[test]
fn two_million_frame_stack() {
    const DEPTH: usize = 2_000_000;
    let mut p = Profile::default();
    // Distinct names, with recursion: frame i calls function i % 100 000.
    let names: Vec<FrameName> = (0..100_000)
        .map(|i| FrameName::Symbol(p.strings.intern(&format!("f{i}"))))
        .collect();
    let frames: Vec<(FrameName, bool)> = (0..DEPTH)
        .map(|i| (names[i % names.len()], false))
        .collect();
    let t = Instant::now();
    let deep = p.stack_of_frames(FrameKind::Kernel, &frames);
    let shallow = p.stack_of(&["f0", "f1"]);
    let sample = |t_ns, stack| Sample {
        vcpu: 0,
        t_ns,
        interval_ns: 1_000,
        kind: FrameKind::Kernel,
        stack,
        truncated: false,
        faults: 1,
        exits: 1,
        cost_ns: 0,
        task: None,
    };
    p.runs.push(Run {
        samples: vec![sample(0, deep), sample(1_000, shallow), sample(2_000, deep)],
        boot_ns: Some(3_000),
        ..Run::default()
    });
    let d = doc::build(&p, 5);
    let f = fold(&p, RunSelect::All, Weight::Samples);
    let per_run = per_run_folded(&p, Weight::Time);
    let took = t.elapsed();
    // f0 is on every stack (20 times on the deep one): total once per sample.
    let f0 = d
        .summary
        .top_total
        .iter()
        .find(|s| s.name == "f0")
        .expect("f0");
    assert_eq!(f0.value.median, 3_000.0);
    assert_eq!(f.total(), 3);
    assert_eq!(per_run[0].len(), 2);
    assert!(took < Duration::from_secs(30), "2 M frames took {took:?}");
}
