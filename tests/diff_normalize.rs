//! `diff` normalization: golden files for the normalized folded profiles and
//! inferno's differential input, fairness across run counts and sampling
//! rates, and the table's significance check, on scripted traces.
//!
//! Regenerate the golden files with `BOOTTRACE_UPDATE_GOLDEN=1 cargo test --test
//! diff_normalize` (the run fails on purpose), review the change, run again.

mod golden_support;
mod report_support;

use std::collections::HashMap;

use boottrace::analysis::diffnorm::{
    differential_lines, folded_text, normalize, per_run_folded, Normalize,
};
use boottrace::analysis::difftable::{function_deltas, slower_faster, SideRuns, SortBy};
use boottrace::analysis::fold::Weight;
use boottrace::cli::diff::DiffArgs;
use boottrace::profile::open as load_profile;
use clap::Parser;
use report_support::*;

fn golden(name: &str, actual: &str) {
    golden_support::check(name, actual);
}

/// Per-run folded stacks.
type Runs = Vec<HashMap<String, u64>>;

fn run(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
    pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// A: 3 boots at 1 kHz (ns weights); B: 2 longer boots at 4 kHz, where
/// `memmap_init_range` grew and `e820__memory_setup` shrank.
fn inputs() -> (Runs, Runs) {
    let sk = "x86_64_start_kernel;start_kernel";
    let mm = format!("{sk};mm_core_init;memmap_init_range");
    let e8 = format!("{sk};setup_arch;e820__memory_setup");
    let ic = "ret_from_fork_asm;ret_from_fork;kernel_init;do_one_initcall;foo_driver_init";
    let a = vec![
        run(&[(&mm, 10_000_000), (&e8, 4_000_000), (ic, 6_000_000)]),
        run(&[(&mm, 11_000_000), (&e8, 4_000_000), (ic, 6_000_000)]),
        run(&[(&mm, 12_000_000), (&e8, 5_000_000), (ic, 7_000_000)]),
    ];
    let b = vec![
        run(&[(&mm, 40_250_000), (&e8, 1_000_000), (ic, 6_250_000)]),
        run(&[(&mm, 39_750_000), (&e8, 1_250_000), (ic, 5_750_000)]),
    ];
    (a, b)
}

fn render_case(mode: Normalize) -> String {
    let (a, b) = inputs();
    let na = normalize(&a, mode, Weight::Time);
    let nb = normalize(&b, mode, Weight::Time);
    let lines = differential_lines(&na, &nb).expect("differential");
    format!(
        "# A ({} runs)\n{}# B ({} runs)\n{}# differential (stack A B)\n{}\n",
        na.runs,
        folded_text(&na),
        nb.runs,
        folded_text(&nb),
        lines.join("\n")
    )
}

#[test]
fn golden_per_boot() {
    let out = render_case(Normalize::PerBoot);
    // Hand check: A's memmap mean = 11 ms = 11000 µs; B's = 40 ms.
    assert!(
        out.contains("mm_core_init;memmap_init_range 11000 40000"),
        "{out}"
    );
    golden("diff_normalize_per_boot.txt", &out);
}

#[test]
fn golden_share() {
    let out = render_case(Normalize::Share);
    // Each side's shares add up to one million (± rounding of 3 stacks).
    for block in out
        .split("# ")
        .filter(|b| b.starts_with('A') || b.starts_with('B'))
    {
        let total: u64 = block
            .lines()
            .skip(1)
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum();
        assert!((999_998..=1_000_002).contains(&total), "{total} in {block}");
    }
    golden("diff_normalize_share.txt", &out);
}

#[test]
fn same_boot_at_other_rate_and_run_count_diffs_to_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A: 3 boots sampled every 1 ms; B: the same boot once, sampled every 0.25 ms.
    let a_path = write_trace(
        dir.path(),
        "a.data",
        &[boot_script(0), boot_script(0), boot_script(0)],
    );
    let b_path = write_trace_with(dir.path(), "b.data", &[denser(&boot_script(0), 4)], 250_000);
    let sym = symbol_args(dir.path());
    let pa = load_profile(&a_path, &sym).expect("load a");
    let pb = load_profile(&b_path, &sym).expect("load b");
    for mode in [Normalize::PerBoot, Normalize::Share] {
        let na = normalize(&per_run_folded(&pa, Weight::Time), mode, Weight::Time);
        let nb = normalize(&per_run_folded(&pb, Weight::Time), mode, Weight::Time);
        assert!(!na.stacks.is_empty());
        assert_eq!(na.stacks, nb.stacks, "{mode:?}");
    }
    let deltas = function_deltas(
        &SideRuns::of(&pa),
        &SideRuns::of(&pb),
        Weight::Time,
        Normalize::PerBoot,
    );
    let (slower, faster) = slower_faster(&deltas, Normalize::PerBoot, SortBy::Self_, 10);
    assert!(
        slower.is_empty() && faster.is_empty(),
        "{slower:?} {faster:?}"
    );
}

#[test]
fn grown_function_is_slower_and_significant() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a_path = write_trace(
        dir.path(),
        "a.data",
        &[boot_script(0), boot_script(1), boot_script(2)],
    );
    let b_path = write_trace(
        dir.path(),
        "b.data",
        &[boot_script(10), boot_script(11), boot_script(12)],
    );
    let sym = symbol_args(dir.path());
    let pa = load_profile(&a_path, &sym).expect("load a");
    let pb = load_profile(&b_path, &sym).expect("load b");
    let deltas = function_deltas(
        &SideRuns::of(&pa),
        &SideRuns::of(&pb),
        Weight::Time,
        Normalize::PerBoot,
    );
    let (slower, faster) = slower_faster(&deltas, Normalize::PerBoot, SortBy::Self_, 10);
    assert_eq!(slower.len(), 1, "{slower:?}");
    assert_eq!(slower[0].name, "__init_single_page");
    let m = slower[0].self_metric;
    assert!(
        (m.b_per_boot - m.a_per_boot - 10.0).abs() < 1e-9,
        "10 ms more per boot: {m:?}"
    );
    assert!(m.significant(), "p = {:?}", m.p);
    assert!(faster.is_empty());
    // By total, the whole start_kernel subtree grew the same 10 ms.
    let (by_total, _) = slower_faster(&deltas, Normalize::PerBoot, SortBy::Total, 20);
    assert!(by_total.iter().any(|d| d.name == "start_kernel"));

    // The command itself: SVG written, table printed without error.
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: DiffArgs,
    }
    let svg = dir.path().join("diff.svg");
    let map = dir.path().join("System.map");
    let map = map.to_str().expect("utf8");
    let cli = Cli::try_parse_from([
        "diff",
        a_path.to_str().expect("utf8"),
        b_path.to_str().expect("utf8"),
        "-o",
        svg.to_str().expect("utf8"),
        "--system-map-a",
        map,
        "--system-map-b",
        map,
    ])
    .expect("parse");
    let mut stdout = Vec::new();
    let mut status = Vec::new();
    boottrace::render::diff::run(
        &cli.args.into_config(),
        &mut |_| panic!("trace inputs are never recorded"),
        &mut stdout,
        &mut |m| status.push(m.text),
    )
    .expect("diff");
    // stdout holds only the table; the "wrote" line is status.
    let table = String::from_utf8(stdout).expect("utf8");
    assert!(table.starts_with("A: "), "{table}");
    assert!(table.contains("Slower in B"), "{table}");
    assert!(!table.contains("wrote"), "{table}");
    assert!(status.iter().any(|m| m.starts_with("wrote ")), "{status:?}");
    let text = std::fs::read_to_string(&svg).expect("svg");
    assert!(
        text.starts_with("<?xml") || text.contains("<svg"),
        "not an SVG"
    );
    assert!(text.contains("__init_single_page"));
    assert!(text.contains("µs per boot"));
}

#[test]
fn mixed_inputs_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a_path = write_trace(dir.path(), "a.data", &[boot_script(0)]);
    let not_trace = dir.path().join("bzImage");
    std::fs::write(&not_trace, b"MZ not a trace").expect("write");
    assert!(boottrace::render::diff::is_trace_file(&a_path).expect("read"));
    assert!(!boottrace::render::diff::is_trace_file(&not_trace).expect("read"));
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: DiffArgs,
    }
    let cli = Cli::try_parse_from([
        "diff",
        a_path.to_str().expect("utf8"),
        not_trace.to_str().expect("utf8"),
    ])
    .expect("parse");
    let err = boottrace::render::diff::run(
        &cli.args.into_config(),
        &mut |_| panic!("mixed inputs are never recorded"),
        &mut Vec::new(),
        &mut |_| {},
    )
    .expect_err("mixed inputs");
    assert!(
        err.to_string()
            .contains("two trace files or two kernel images"),
        "{err}"
    );
}
