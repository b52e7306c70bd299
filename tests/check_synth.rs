//! `check`, `diff --json` and several trace files per side, on scripted
//! traces (no boot): every run's samples are known, so which measures grew
//! and by how much is known exactly.

mod report_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use report_support::*;
use serde_json::Value;

fn boottrace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_boottrace"))
        .args(args)
        .output()
        .expect("run boottrace")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// A side of `runs` boots whose `memmap_init_range` has `extra + i` more samples in run i.
fn side(dir: &Path, name: &str, extra: &[u64]) -> PathBuf {
    let scripts: Vec<Vec<Step>> = extra.iter().map(|&e| boot_script(e)).collect();
    let d = dir.join(name);
    std::fs::create_dir_all(&d).expect("mkdir");
    write_trace(&d, "boottrace.data", &scripts)
}

/// `check` with the scripted kernel's System.map for both sides.
fn check(dir: &Path, args: &[&str]) -> Output {
    let map = dir.join("System.map");
    std::fs::write(&map, system_map()).expect("System.map");
    let mut all = vec!["check"];
    all.extend_from_slice(args);
    all.extend(["--system-map-a", s(&map), "--system-map-b", s(&map)]);
    boottrace(&all)
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(o)))
}

fn regressed(doc: &Value) -> Vec<(String, String)> {
    doc["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["status"] == "regressed")
        .map(|r| {
            (
                r["kind"].as_str().expect("kind").to_string(),
                r["name"].as_str().expect("name").to_string(),
            )
        })
        .collect()
}

#[test]
fn check_flags_a_slower_candidate_and_names_what_grew() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = side(dir.path(), "base", &[0, 1, 2]);
    // 20 more samples (ms) in memmap_init_range's leaf: +20 ms on a ~45 ms boot.
    let slow = side(dir.path(), "slow", &[20, 21, 22]);
    let out = check(dir.path(), &[s(&base), "-c", s(&slow)]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("REGRESSED"), "{t}");
    for name in ["__init_single_page", "mm_core_init", "start_kernel"] {
        assert!(t.contains(name), "{name} not named:\n{t}");
    }

    let out = check(dir.path(), &[s(&base), "-c", s(&slow), "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let doc = json(&out);
    assert_eq!(doc["format"], "boottrace-check");
    assert_eq!(
        (doc["verdict"].as_str(), doc["exit_status"].as_u64()),
        (Some("regressed"), Some(1))
    );
    let r = regressed(&doc);
    for want in [
        ("boot", "boot"),
        ("phase", "start_kernel"),
        ("stage", "mm_core_init"),
        ("function", "__init_single_page"),
    ] {
        assert!(
            r.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} not in {r:?}"
        );
    }
    // What did not change is not blamed: initcalls are the same in every run.
    assert!(r.iter().all(|(k, _)| k != "initcall"), "{r:?}");
    let boot = doc["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|x| x["name"] == "boot")
        .expect("boot row");
    // Scripted: boot = samples × 1 ms, 44+{0,1,2} vs 44+{20,21,22}.
    assert!(
        (boot["delta_ns"].as_f64().expect("delta") - 20e6).abs() < 1.0,
        "{boot}"
    );
}

#[test]
fn check_passes_an_unchanged_pair_and_respects_thresholds() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = side(dir.path(), "base", &[0, 1, 2]);
    let same = side(dir.path(), "same", &[2, 0, 1]);
    let out = check(dir.path(), &[s(&base), "-c", s(&same)]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("PASS"), "{t}");

    // +3 ms (≈ 7%) on the boot: real (tight runs) but under a 10% threshold.
    let bit = side(dir.path(), "bit", &[3, 4, 5]);
    let args = |th: &str| {
        boottrace(&[
            "check",
            s(&base),
            "-c",
            s(&bit),
            "--threshold",
            th,
            "--item-threshold",
            "1000%",
        ])
    };
    assert_eq!(args("10%").status.code(), Some(0), "{}", text(&args("10%")));
    let out = args("2ms");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("boot"), "{}", text(&out));
    // A threshold without a unit is a usage error (exit 2).
    let out = args("5");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("unit"), "{}", text(&out));
}

#[test]
fn check_says_too_few_runs_with_one_run_each_and_how_many_would_do() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = side(dir.path(), "a", &[0]);
    let b = side(dir.path(), "b", &[20]);
    let out = check(dir.path(), &[s(&a), "-c", s(&b)]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("TOO FEW RUNS"), "{t}");

    // Two runs each with noise: a small change is undecided, with a run count.
    let noisy_a = side(dir.path(), "na", &[0, 6]);
    let noisy_b = side(dir.path(), "nb", &[2, 10]);
    let out = boottrace(&[
        "check",
        s(&noisy_a),
        "-c",
        s(&noisy_b),
        "--threshold",
        "1%",
        "--json",
    ]);
    let doc = json(&out);
    let boot = doc["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|x| x["name"] == "boot")
        .expect("boot row")
        .clone();
    assert_eq!(boot["status"], "undecided", "{boot}");
    let need = boot["runs_needed"].as_u64().expect("runs needed");
    assert!(need > 2, "{need}");
    assert!(doc["runs_needed_for_boot"].as_u64().is_some(), "{doc}");
    assert_eq!(out.status.code(), Some(0), "undecided is not a regression");
}

#[test]
fn check_reads_a_stored_report_as_baseline_and_several_files_per_side() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = side(dir.path(), "base", &[0, 1, 2]);
    let map = dir.path().join("System.map");
    std::fs::write(&map, system_map()).expect("System.map");
    let stored = boottrace(&["report", "--json", "-i", s(&base), "--system-map", s(&map)]);
    assert!(stored.status.success(), "{}", text(&stored));
    let json_path = dir.path().join("baseline.json");
    std::fs::write(&json_path, &stored.stdout).expect("write");

    // The candidate's three runs, recorded as three files (as three hosts would).
    let parts: Vec<PathBuf> = [20, 21, 22]
        .iter()
        .map(|&e| side(dir.path(), &format!("part{e}"), &[e]))
        .collect();
    let mut args = vec![s(&json_path), "-c"];
    args.extend(parts.iter().map(|p| s(p)));
    args.push("--json");
    let out = check(dir.path(), &args);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let doc = json(&out);
    assert_eq!(doc["candidate"]["runs"], 3);
    assert_eq!(doc["baseline"]["runs"], 3);
    let r = regressed(&doc);
    assert!(
        r.contains(&("function".into(), "__init_single_page".into())),
        "{r:?}"
    );

    // A report cannot be mixed with traces on one side.
    let out = boottrace(&["check", s(&json_path), s(&base), "-c", s(&parts[0])]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("only input"), "{}", text(&out));
    // Garbage is "could not compare".
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, b"{\"format\": 3}").expect("write");
    let out = boottrace(&["check", s(&junk), "-c", s(&base)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("neither a trace nor a report"),
        "{}",
        text(&out)
    );
}

#[test]
fn report_on_three_files_equals_report_on_one_file_with_the_same_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let scripts = [boot_script(0), boot_script(3), boot_script(7)];
    let one = write_trace(dir.path(), "all.data", &scripts);
    let parts: Vec<PathBuf> = scripts
        .iter()
        .enumerate()
        .map(|(i, sc)| {
            write_trace(
                dir.path(),
                &format!("part{i}.data"),
                std::slice::from_ref(sc),
            )
        })
        .collect();
    let report = |inputs: &[&Path]| -> Value {
        let mut args = vec!["report", "--json"];
        for p in inputs {
            args.extend(["-i", s(p)]);
        }
        let out = boottrace(&args);
        assert!(out.status.success(), "{}", text(&out));
        let mut v = json(&out);
        v["input"]["path"] = Value::Null;
        v
    };
    let from_one = report(&[&one]);
    let from_three = report(&parts.iter().map(PathBuf::as_path).collect::<Vec<_>>());
    assert_eq!(from_one["summary"]["runs"], 3);
    assert_eq!(from_one, from_three);

    // A directory of the three files is the same set.
    let d = dir.path().join("parts");
    std::fs::create_dir(&d).expect("mkdir");
    for (i, p) in parts.iter().enumerate() {
        std::fs::copy(p, d.join(format!("run{i}.data"))).expect("copy");
    }
    std::fs::copy(dir.path().join("System.map"), d.join("System.map")).expect("copy");
    let mut from_dir = report(&[&d]);
    // The directory's traces name the same kernel image path, so symbols match.
    from_dir["input"]["path"] = Value::Null;
    assert_eq!(from_one["summary"], from_dir["summary"]);

    // The text report and the flamegraph take several files too.
    let svg = dir.path().join("f.svg");
    let out = boottrace(&["flame", s(&svg), "-i", s(&parts[0]), "-i", s(&parts[1])]);
    assert!(out.status.success(), "{}", text(&out));
    // So does export: the folded counts of two files add up.
    let folded_total = |args: &[&str]| -> u64 {
        let mut all = vec!["export", "--format", "folded"];
        all.extend_from_slice(args);
        let out = boottrace(&all);
        assert!(out.status.success(), "{}", text(&out));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
            .sum()
    };
    let (a, b) = (
        folded_total(&["-i", s(&parts[0])]),
        folded_total(&["-i", s(&parts[1])]),
    );
    assert!(a > 0 && b > 0);
    assert_eq!(
        folded_total(&["-i", s(&parts[0]), "-i", s(&parts[1])]),
        a + b
    );
    // …and a directory, for flame and export as for report.
    let c = folded_total(&["-i", s(&parts[2])]);
    assert_eq!(folded_total(&["-i", s(&d)]), a + b + c);
    let out = boottrace(&["flame", s(&svg), "-i", s(&d)]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn traces_of_different_kernels_are_refused_unless_allowed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = write_trace(dir.path(), "a.data", &[boot_script(0)]);
    let b = write_trace_of(
        dir.path(),
        "b.data",
        &[boot_script(0)],
        PERIOD_NS,
        "Linux version 6.13.0-other",
    );
    let out = boottrace(&["report", "-i", s(&a), "-i", s(&b)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let t = text(&out);
    assert!(
        t.contains("different kernels") && t.contains("--allow-mixed"),
        "{t}"
    );
    let out = boottrace(&["report", "-i", s(&a), "-i", s(&b), "--allow-mixed"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = boottrace(&["check", s(&a), s(&b), "-c", s(&a)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn diff_json_lists_what_got_slower_with_the_boot_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = side(dir.path(), "base", &[0, 1, 2]);
    let slow = side(dir.path(), "slow", &[20, 21, 22]);
    let svg = dir.path().join("d.svg");
    let map = dir.path().join("System.map");
    std::fs::write(&map, system_map()).expect("System.map");
    let maps = ["--system-map-a", s(&map), "--system-map-b", s(&map)];
    let mut args = vec!["diff", s(&base), s(&slow), "-o", s(&svg), "--json"];
    args.extend(maps);
    let out = boottrace(&args);
    assert!(out.status.success(), "{}", text(&out));
    let doc = json(&out);
    assert_eq!(
        (doc["format"].as_str(), doc["version"].as_u64()),
        (Some("boottrace-diff"), Some(1))
    );
    assert_eq!(
        (doc["a"]["runs"].as_u64(), doc["b"]["runs"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(doc["slower"][0]["name"], "__init_single_page", "{doc}");
    let m = &doc["slower"][0]["self_metric"];
    let grew = m["b_per_boot"].as_f64().expect("b") - m["a_per_boot"].as_f64().expect("a");
    assert!((grew - 20.0).abs() < 1e-6, "{m}");
    let bc = &doc["boot_change"];
    assert!(
        (bc["delta_ns"].as_f64().expect("delta") - 20e6).abs() < 1.0,
        "{bc}"
    );
    assert!(bc["p"].as_f64().expect("p") < 0.05, "{bc}");
    assert!(svg.is_file(), "the SVG is still written");
    // The directory form of a side.
    let mut args = vec![
        "diff",
        s(base.parent().expect("dir")),
        s(slow.parent().expect("dir")),
        "-o",
        s(&svg),
        "--json",
    ];
    args.extend(maps);
    let out = boottrace(&args);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(json(&out)["slower"][0]["name"], "__init_single_page");
}

/// The boot row of a `check --json` document.
fn boot_row(doc: &Value) -> Value {
    doc["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|x| x["kind"] == "boot")
        .expect("boot row")
        .clone()
}

/// `--alpha` (the test's level), `--top` (rows per kind in the table),
/// threshold terms that must all be exceeded (`10%,30ms`), and one
/// candidate run judged against the baseline's spread, which takes at
/// least 3 baseline runs.
#[test]
fn check_alpha_top_threshold_terms_and_one_run_against_many() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = side(dir.path(), "base", &[0, 1, 2]);
    let slow = side(dir.path(), "slow", &[20, 21, 22]);
    let run = |extra: &[&str]| {
        let mut args = vec![s(&base), "-c", s(&slow)];
        args.extend_from_slice(extra);
        check(dir.path(), &args)
    };

    // A level the three runs cannot reach: the growth is undecided, not a
    // regression (exit 0); a level outside (0, 0.5) is a usage error.
    let out = run(&["--alpha", "1e-12", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc = json(&out);
    assert!(regressed(&doc).is_empty(), "{:?}", regressed(&doc));
    assert_eq!(boot_row(&doc)["status"], "undecided", "{}", boot_row(&doc));
    let out = run(&["--alpha", "0.5"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    // +20 ms of __init_single_page: beyond 10% and 10 ms, not beyond 30 ms;
    // every term of a threshold must be exceeded.
    let fun = ("function".to_string(), "__init_single_page".to_string());
    let doc = json(&run(&["--item-threshold", "10%,10ms", "--json"]));
    assert!(regressed(&doc).contains(&fun), "{:?}", regressed(&doc));
    let doc = json(&run(&["--item-threshold", "10%,30ms", "--json"]));
    assert!(!regressed(&doc).contains(&fun), "{:?}", regressed(&doc));

    // --top 0: no stage or function rows in the table, the same verdict.
    let rows = |o: &Output| -> usize {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with("REGRESSED  function") || l.starts_with("REGRESSED  stage"))
            .count()
    };
    let all = run(&[]);
    let none = run(&["--top", "0"]);
    assert_eq!((all.status.code(), none.status.code()), (Some(1), Some(1)));
    assert!(rows(&all) > 0, "{}", text(&all));
    assert_eq!(rows(&none), 0, "{}", text(&none));
    assert!(
        text(&none).contains("more changed rows: --top N"),
        "{}",
        text(&none)
    );

    // Directories of traces as sides.
    let out = check(
        dir.path(),
        &[
            s(base.parent().expect("dir")),
            "-c",
            s(slow.parent().expect("dir")),
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));

    // One candidate run against three baseline runs: judged against their
    // spread, a regression with a p-value.
    let one = side(dir.path(), "one", &[20]);
    let out = check(dir.path(), &[s(&base), "-c", s(&one), "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let boot = boot_row(&json(&out));
    assert_eq!(boot["status"], "regressed", "{boot}");
    assert!(boot["p"].as_f64().is_some_and(|p| p < 0.05), "{boot}");
    // Two baseline runs cannot judge one: undecided, and no regression.
    let two = side(dir.path(), "two", &[0, 1]);
    let out = check(dir.path(), &[s(&two), "-c", s(&one), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(boot_row(&json(&out))["status"], "undecided");
}
