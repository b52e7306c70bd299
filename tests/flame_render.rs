//! Flamegraphs and flame charts of a synthetic trace, end to end:
//! trace file → symbolize (System.map) → fold → inferno SVG.

use std::path::{Path, PathBuf};

use boottrace::analysis::fold::Weight;
use boottrace::profile::symbols::SymbolConfig;
use boottrace::render::flame::{self, FlameConfig};
use boottrace::trace::synth::{self, SynthOptions};

struct Fixture {
    _dir: tempfile::TempDir,
    trace: PathBuf,
    map: PathBuf,
    out: PathBuf,
}

fn fixture(opts: &SynthOptions) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("boottrace.data");
    synth::write(&trace, opts).expect("write trace");
    let map = dir.path().join("System.map");
    std::fs::write(&map, synth::system_map()).expect("write map");
    let out = dir.path().join("out.svg");
    Fixture {
        _dir: dir,
        trace,
        map,
        out,
    }
}

fn args(f: &Fixture) -> FlameConfig {
    FlameConfig {
        output: f.out.clone(),
        input: f.trace.clone(),
        weight: Weight::Samples,
        chart: false,
        run: None,
        width: 1200,
        by_task: false,
        extra_inputs: Vec::new(),
        allow_mixed: false,
        symbols: SymbolConfig {
            system_map: Some(f.map.clone()),
            ..SymbolConfig::default()
        },
    }
}

/// (function, x%, width%) of every frame in an inferno SVG.
fn frames(svg: &str) -> Vec<(String, f64, f64)> {
    let re = regex::Regex::new(
        r#"<title>([^<]*?) \([^<]*\)</title><rect x="([0-9.]+)%" y="[0-9.]+" width="([0-9.]+)%""#,
    )
    .expect("regex");
    re.captures_iter(svg)
        .map(|c| {
            (
                c[1].to_string(),
                c[2].parse().expect("x"),
                c[3].parse().expect("width"),
            )
        })
        .collect()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).expect("read svg")
}

#[test]
fn flamegraph_has_frames_title_and_search() {
    let f = fixture(&SynthOptions::default());
    flame::run(&args(&f)).expect("flame");
    let svg = read(&f.out);
    let fr = frames(&svg);
    let names: Vec<&str> = fr.iter().map(|(n, _, _)| n.as_str()).collect();
    for want in [
        "start_kernel",
        "memmap_init_range",
        "do_one_initcall",
        "clear_page",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    // start_kernel is the only child of x86_64_start_kernel: same width, under "all".
    let w = |n: &str| fr.iter().find(|(m, _, _)| m == n).map(|t| t.2).expect(n);
    assert!((w("start_kernel") - w("x86_64_start_kernel")).abs() < 0.01);
    assert!(
        svg.contains("Linux 6.12.0-synthetic"),
        "title lacks kernel version"
    );
    assert!(
        svg.contains("samples, sampler overhead "),
        "title lacks overhead"
    );
    assert!(
        svg.contains("function search("),
        "inferno's search script missing"
    );
}

#[test]
fn flame_chart_keeps_boot_order() {
    let f = fixture(&SynthOptions {
        runs: 1,
        ..SynthOptions::default()
    });
    let mut a = args(&f);
    a.chart = true;
    flame::run(&a).expect("flame chart");
    let fr = frames(&read(&f.out));
    let first_x = |n: &str| {
        fr.iter()
            .filter(|(m, _, _)| m == n)
            .map(|t| t.1)
            .fold(f64::INFINITY, f64::min)
    };
    // The synthetic boot runs setup_arch, then mm_core_init, then initcalls.
    let (a, b, c) = (
        first_x("setup_arch"),
        first_x("mm_core_init"),
        first_x("do_initcalls"),
    );
    assert!(
        a < b && b < c,
        "setup_arch {a}, mm_core_init {b}, do_initcalls {c}"
    );
    assert!(a < 1.0, "the boot starts at the left edge, not at {a}%");
    // A chart does not merge a function's separate periods: the synthetic boot
    // alternates between memmap_init_range and its callee, so the callee shows
    // up as many frames, and their parent as one.
    let count = |n: &str| fr.iter().filter(|(m, _, _)| m == n).count();
    assert!(count("__init_single_page") > 1);
    assert_eq!(count("memmap_init_range"), 1);
}

#[test]
fn fault_weight_follows_faults() {
    let f = fixture(&SynthOptions::default());
    let mut a = args(&f);
    a.weight = Weight::Faults;
    flame::run(&a).expect("flame");
    let svg = read(&f.out);
    let fr = frames(&svg);
    let w = |n: &str| fr.iter().find(|(m, _, _)| m == n).map_or(0.0, |t| t.2);
    // The synthetic kernel faults mostly in memmap_init_range (it touches new memory).
    assert!(w("memmap_init_range") > 50.0, "{fr:?}");
    assert!(svg.contains("page faults"));
}

#[test]
fn bad_run_and_bad_input_are_clear_errors() {
    let f = fixture(&SynthOptions::default());
    let mut a = args(&f);
    a.run = Some(9);
    let e = flame::run(&a).expect_err("no run 9");
    assert!(e.to_string().contains("run 9"), "{e}");

    std::fs::write(&f.trace, b"not a trace at all").expect("write");
    let e = flame::run(&args(&f)).expect_err("bad input");
    assert!(format!("{e:#}").contains("not a boottrace trace"), "{e:#}");
}
