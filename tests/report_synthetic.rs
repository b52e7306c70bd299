//! `report` on scripted traces written with boottrace's trace writer: every
//! phase, stage, initcall, function cost and the unwind quality is known from
//! the script, so the report's numbers are checked exactly.

mod report_support;

use boottrace::analysis::doc;
use boottrace::profile::open as load_profile;
use boottrace::render::report::text;
use report_support::*;
use serde_json::Value;

const MS: f64 = 1e6;

fn names_times(spans: &[doc::NamedSummary]) -> Vec<(String, f64)> {
    spans
        .iter()
        .map(|s| (s.name.clone(), s.time_ns.median / MS))
        .collect()
}

#[test]
fn report_names_phases_stages_initcalls_and_functions() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Three runs that differ only in memmap_init_range: 10, 12 and 14 samples.
    let path = write_trace(
        dir.path(),
        "t.data",
        &[boot_script(0), boot_script(2), boot_script(4)],
    );
    let profile = load_profile(&path, &symbol_args(dir.path())).expect("load");
    let d = doc::build(&profile, 10);
    let s = &d.summary;
    assert_eq!(s.runs, 3);

    // Boot time = samples × 1 ms: 44, 46, 48.
    let boot = s.boot_ns.expect("boot time");
    assert_eq!(
        (boot.min / MS, boot.median / MS, boot.max / MS),
        (44.0, 46.0, 48.0)
    );
    assert!((boot.stddev.expect("stddev") / MS - 2.0).abs() < 1e-9);
    // First user-mode instruction: the VMM's boundary half a period before
    // the first user-mode sample (2 samples before the end).
    assert_eq!(s.until_init_ns.expect("until init").median / MS, 43.5);

    let phases = names_times(&s.kernel_phases);
    let want: Vec<(String, f64)> = [
        ("decompression", 4.0),
        ("head", 2.0),
        ("start_kernel", 21.0),
        ("initcalls", 13.0),
        ("kernel_init", 1.0),
        ("idle", 2.0),
        ("other_kernel", 1.0),
        ("user", 2.0),
    ]
    .iter()
    .map(|(n, t)| (n.to_string(), *t))
    .collect();
    assert_eq!(phases, want);

    let stages = names_times(&s.start_kernel_stages);
    assert_eq!(
        stages,
        vec![
            ("setup_arch".to_string(), 5.0),
            ("start_kernel [self]".to_string(), 1.0),
            ("mm_core_init".to_string(), 12.0),
            ("sched_init".to_string(), 3.0),
        ]
    );
    let mm = &s.start_kernel_stages[2].time_ns;
    assert_eq!((mm.min / MS, mm.max / MS), (10.0, 14.0));

    let initcalls = names_times(&s.initcalls);
    assert_eq!(
        initcalls,
        vec![
            ("foo_driver_init".to_string(), 6.0),
            ("do_one_initcall [self]".to_string(), 1.0),
            ("bar_subsys_init".to_string(), 4.0),
            ("baz_late_init".to_string(), 2.0),
        ]
    );
    assert!(s.initcalls.iter().all(|i| i.runs_seen == 3));

    // Per-run milestones of run 1 (memmap +2).
    let ms1 = &d.runs[1].milestones;
    assert_eq!(ms1.first_kernel_ns, Some(4_000_000));
    assert_eq!(ms1.start_kernel_ns, Some(6_000_000));
    assert_eq!(ms1.first_initcall_ns, Some(27_000_000));
    assert_eq!(ms1.first_user_ns, Some(44_000_000));

    assert_eq!(s.top_self[0].name, "__init_single_page");
    assert_eq!(s.top_self[0].value.median / MS, 12.0);
    assert!((s.top_self[0].share - (10.0 / 44.0 + 12.0 / 46.0 + 14.0 / 48.0) / 3.0).abs() < 1e-9);
    // start_kernel and its caller tie on total; the name breaks the tie.
    assert_eq!(s.top_total[0].name, "start_kernel");
    assert_eq!(s.top_total[0].value.median / MS, 23.0);
    assert_eq!(s.faults_by_function[0].name, "__init_single_page");
    assert_eq!(s.faults_by_function[0].value.median, 60.0);
    assert_eq!(s.exits_by_function[0].name, "__init_single_page");
    assert_eq!(s.exits_by_function[0].value.median, 24.0);

    // Unwind quality: one truncated sample per run; 36 + e kernel samples after start_kernel.
    let q = &s.unwind;
    assert_eq!((q.considered, q.rooted, q.truncated), (114, 111, 3));
    assert!((q.percent.expect("percent") - 100.0 * 111.0 / 114.0).abs() < 1e-9);
    assert_eq!(q.bad_roots, vec![("[truncated stack]".to_string(), 3)]);

    // Sampler: 43 µs per 1 ms sample.
    let sp = s.sampler.per_sample_ns.expect("per sample");
    assert_eq!(sp.median, 43_000.0);
    assert!((s.sampler.percent_of_boot.expect("pct").median - 4.3).abs() < 1e-9);

    let vmm: Vec<(&str, f64, f64)> = s
        .vmm_phases
        .iter()
        .map(|p| {
            (
                p.name.as_str(),
                p.at_ns.median / MS,
                p.duration_ns.median / MS,
            )
        })
        .collect();
    assert_eq!(
        &vmm[..4],
        &[
            ("create_vm", 0.2, 0.2),
            ("memory", 0.5, 0.3),
            ("load_kernel", 1.5, 1.0),
            ("first_instruction", 2.0, 0.5)
        ]
    );

    let out = text::render(&d, 30);
    for needle in [
        "start_kernel stages",
        "mm_core_init",
        "Initcalls (4 sampled, in boot order)",
        "foo_driver_init",
        "97.4% of 114 kernel-mode samples",
        "[truncated stack] (3)",
        "median",
        "Host page faults by function",
        "per sample: 43.0 µs",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
    // Only the 2 longest initcalls, still in boot order.
    let short = text::render(&d, 2);
    let section = short
        .split("\n\n")
        .find(|p| p.starts_with("Initcalls"))
        .expect("initcall section");
    let foo = section.find("foo_driver_init").expect("foo listed");
    let bar = section.find("bar_subsys_init").expect("bar listed");
    assert!(foo < bar, "boot order");
    assert!(!section.contains("baz_late_init"), "{section}");
    assert!(section.contains("the 2 longest"));
}

#[test]
fn json_has_the_documented_shape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_trace(dir.path(), "one.data", &[boot_script(0)]);
    let profile = load_profile(&path, &symbol_args(dir.path())).expect("load");
    let v: Value = serde_json::to_value(doc::build(&profile, 5)).expect("json");

    assert_eq!(v["format"], "boottrace-report");
    assert_eq!(v["version"], 1);
    for key in [
        "path",
        "kernel_path",
        "kernel_version",
        "symbol_source",
        "sample_freq_hz",
        "unwinder",
        "complete",
        "warnings",
    ] {
        assert!(v["input"].get(key).is_some(), "input.{key}");
    }
    assert!(v["input"]["symbol_source"]
        .as_str()
        .expect("str")
        .contains("System.map"));
    let run = &v["runs"][0];
    for key in [
        "run",
        "end_reason",
        "boot_ns",
        "until_init_ns",
        "samples",
        "sampled_ns",
        "faults",
        "exits",
        "vmm_phases",
        "milestones",
        "kernel_phases",
        "start_kernel_stages",
        "initcalls",
        "unwind",
        "sampler",
    ] {
        assert!(run.get(key).is_some(), "runs[0].{key}");
    }
    assert_eq!(run["boot_ns"], 44_000_000);
    assert_eq!(run["samples"], 44);
    assert_eq!(run["initcalls"][0]["name"], "foo_driver_init");
    assert_eq!(run["initcalls"][0]["time_ns"], 6_000_000);
    for key in [
        "name", "time_ns", "samples", "first_ns", "last_ns", "faults", "exits",
    ] {
        assert!(run["initcalls"][0].get(key).is_some(), "span.{key}");
    }
    assert_eq!(run["unwind"]["considered"], 36);
    assert_eq!(run["unwind"]["bad_roots"][0][0], "[truncated stack]");
    assert_eq!(run["sampler"]["total_ns"], 44 * 43_000);

    let s = &v["summary"];
    assert_eq!(s["runs"], 1);
    for key in ["n", "min", "median", "max", "mean", "stddev"] {
        assert!(s["boot_ns"].get(key).is_some(), "summary.boot_ns.{key}");
    }
    assert!(s["boot_ns"]["stddev"].is_null(), "one run has no stddev");
    assert_eq!(s["initcalls"][0]["time_ns"]["median"], 6e6);
    assert_eq!(s["top_self"].as_array().expect("array").len(), 5);
    for key in ["name", "value", "share"] {
        assert!(s["top_self"][0].get(key).is_some(), "top_self.{key}");
    }
    assert!(s["unwind"]["percent"].as_f64().expect("pct") > 97.0);
}

#[test]
fn unsampled_boot_reports_without_phases() {
    // `record -F 0`: phases and an end, no samples.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_trace(dir.path(), "f0.data", &[Vec::new(), Vec::new()]);
    let profile = load_profile(&path, &symbol_args(dir.path())).expect("load");
    let d = doc::build(&profile, 5);
    assert_eq!(d.summary.runs, 2);
    assert!(d.summary.kernel_phases.is_empty());
    assert!(d.summary.initcalls.is_empty());
    assert_eq!(d.summary.unwind.percent, None);
    assert_eq!(d.runs[0].boot_ns, Some(0));
    let out = text::render(&d, 10);
    assert!(
        out.contains("n/a: no kernel-mode sample after start_kernel began"),
        "{out}"
    );
    assert!(out.contains("no samples"), "{out}");
    let v = serde_json::to_value(&d).expect("json");
    assert!(v["summary"]["unwind"]["percent"].is_null());
}
