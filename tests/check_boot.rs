//! The CI-shaped `check`: tiny-fp recorded twice with more guest memory (a
//! change that slows the boot on purpose: the kernel initializes a
//! `struct page` per 4 KiB, 8× as many with 1 GiB as with 128 MiB) and twice
//! without. `check` must exit 1 naming the phase and functions that grew, 0
//! for the unchanged pair, and 2 ("too few runs") with one run on each side.
//!
//! Boot budget: two shared recordings of two runs each (baseline and
//! candidate), plus the suite's default one-run tiny-fp recording.

mod common;

use std::path::Path;

use common::{boottrace, kernel_dir, report_json, shared_recording, text};
use serde_json::Value;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Mean self time (ns) of function `name` per run in a `report --json` with
/// every function listed, 0 when it was never sampled.
fn self_time(report: &Value, name: &str) -> f64 {
    report["summary"]["top_self"]
        .as_array()
        .expect("top_self")
        .iter()
        .find(|f| f["name"] == name)
        .map_or(0.0, |f| f["value"]["mean"].as_f64().expect("mean"))
}

#[test]
fn check_flags_more_memory_passes_the_unchanged_pair_and_wants_more_runs() {
    let k = kernel_dir("tiny-fp");
    let (bz, init) = (k.join("bzImage"), k.join("initramfs.cpio"));
    let one = [
        s(&bz),
        "--initrd",
        s(&init),
        "-F",
        "1000",
        "--timeout",
        "900",
    ];
    let mut two = one.to_vec();
    two.extend(["--runs", "2"]);
    let mut more_mem = two.clone();
    more_mem.extend(["--mem", "1G"]);
    let (base, _) = shared_recording(&two);
    let (slow, _) = shared_recording(&more_mem);
    let (single, _) = shared_recording(&one);

    // The candidate with 1 GiB regressed, and check says where.
    let out = boottrace(&["check", s(&base), "-c", s(&slow), "--json"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    let doc: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let rows = doc["rows"].as_array().expect("rows");
    let regressed: Vec<&Value> = rows.iter().filter(|r| r["status"] == "regressed").collect();
    let of_kind = |k: &str| -> Vec<&str> {
        regressed
            .iter()
            .filter(|r| r["kind"] == k)
            .map(|r| r["name"].as_str().expect("name"))
            .collect()
    };
    let phases = [of_kind("phase"), of_kind("stage")].concat();
    let functions = of_kind("function");
    assert!(!phases.is_empty(), "no phase or stage regressed: {t}");
    assert!(!functions.is_empty(), "no function regressed: {t}");
    // Each function named grew in the reports of the two traces, by more
    // than the threshold's 1% of the baseline's boot.
    let (ra, rb) = (report_all(&base), report_all(&slow));
    let boot_a = ra["summary"]["boot_ns"]["mean"].as_f64().expect("boot");
    for f in &functions {
        let grew = self_time(&rb, f) - self_time(&ra, f);
        assert!(grew > 0.01 * boot_a, "{f} grew {grew} ns only");
    }
    if common::host_is_pvm() {
        // Under emulation, the work per page of memory dominates: zeroing
        // and initializing each struct page, then freeing the pages to the
        // buddy allocator.
        assert!(
            functions.iter().any(|f| [
                "struct_page",
                "init_single_page",
                "memmap_init",
                "free_pages"
            ]
            .iter()
            .any(|w| f.contains(w))),
            "{functions:?}"
        );
    }
    // The table names the same things.
    let out = boottrace(&["check", s(&base), "-c", s(&slow)]);
    let table = text(&out);
    assert_eq!(out.status.code(), Some(1), "{table}");
    for name in phases.iter().chain(&functions) {
        assert!(table.contains(name), "{name} not in the table:\n{table}");
    }
    eprintln!("{table}");

    // The unchanged pair: the same configuration, recorded separately.
    let out = boottrace(&["check", s(&base), "-c", s(&single)]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(0), "{t}");
    assert!(t.contains("PASS"), "{t}");

    // One run each: no noise to measure, nothing decided.
    let out = boottrace(&["check", s(&single), "-c", s(&single)]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("TOO FEW RUNS"), "{t}");
}

/// `report --json` with every function in `top_self`.
fn report_all(trace: &Path) -> Value {
    let out = boottrace(&["report", "--json", "--top", "100000", "-i", s(trace)]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn report_of_three_recordings_equals_report_of_one_recording_of_three_runs() {
    // `--until first-instruction`: the VMM's start-up only, milliseconds each.
    let k = kernel_dir("tiny-fp");
    let bz = k.join("bzImage");
    let dir = common::scratch().join("three-vs-one");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let rec = |name: &str, runs: &str| {
        let p = dir.join(name);
        let out = boottrace(&[
            "record",
            s(&bz),
            "--until",
            "first-instruction",
            "--runs",
            runs,
            "-q",
            "-o",
            s(&p),
        ]);
        assert!(out.status.success(), "{}", text(&out));
        p
    };
    let one = rec("one.data", "3");
    let parts: Vec<_> = (0..3).map(|i| rec(&format!("part{i}.data"), "1")).collect();
    let a = report_json(&one);
    let out = boottrace(&[
        "report",
        "--json",
        "-i",
        s(&parts[0]),
        "-i",
        s(&parts[1]),
        "-i",
        s(&parts[2]),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let b: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    // The deterministic parts: runs, how each ended, the VMM phases reached,
    // the kernel, and the input's identity; times differ boot to boot.
    let shape = |v: &Value| -> Value {
        let runs: Vec<Value> = v["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .map(|r| {
                // `kernel_analysis` (reading the image) is the first run of
                // each `record` process only: three processes have it thrice.
                let phases: Vec<&Value> = r["vmm_phases"]
                    .as_array()
                    .expect("phases")
                    .iter()
                    .map(|p| &p["name"])
                    .filter(|n| *n != "kernel_analysis")
                    .collect();
                serde_json::json!([r["run"], r["end_reason"], phases, r["samples"]])
            })
            .collect();
        serde_json::json!({
            "runs": runs,
            "n": v["summary"]["runs"],
            "kernel": v["input"]["kernel_version"],
            "build_id": v["input"]["build_id"],
            "cmdline": v["input"]["kernel_cmdline"],
        })
    };
    assert_eq!(shape(&a)["n"], 3);
    assert_eq!(shape(&a), shape(&b));
    let analysis = |v: &Value| -> usize {
        v["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .filter(|r| {
                r["vmm_phases"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == "kernel_analysis"))
            })
            .count()
    };
    assert_eq!((analysis(&a), analysis(&b)), (1, 3), "one process vs three");
    assert_eq!(
        b["input"]["path"]
            .as_str()
            .expect("path")
            .matches(".data")
            .count(),
        3,
        "the report names its three files"
    );
}
