//! `boottrace sweep`: bad input is a one-line usage error (exit 2) before
//! anything boots; a real memory sweep of tiny-fp (2 boots, the kernel
//! proper up to its "Memory:" line) shows boot time growing with memory,
//! names page-structure initialisation as what grew, and draws a chart
//! that opens in headless Chromium. Flat test kernels (a few instructions,
//! no emulated boot) show that several kernels and a repeated `--vary`
//! make every combination, and that a boot missing its goal stops the
//! sweep with `record`'s exit status, keeping the traces so far.

mod chart_support;
mod common;

use std::path::Path;

use common::{boottrace, host_is_pvm, kernel_dir, scratch, text};

#[test]
fn bad_sweeps_are_one_line_usage_errors() {
    let k = "/nonexistent/bzImage";
    for (args, want) in [
        (&[k][..], "--vary"),
        (&[k, "--vary", "colour=red"], "unknown key"),
        (&[k, "--vary", "cpus="], "no values"),
        (&[k, "--vary", "mem=128M,huge"], "huge"),
        (&[k, "--vary", "cpus=1,0"], "1 to 254"),
        (&[k, "--vary", "cpus=1", "--vary", "cpus=2"], "given twice"),
        (&[k, "--vary", "cpus=1", "-o", "x.data"], "-o/--output"),
    ] {
        let mut argv = vec!["sweep"];
        argv.extend_from_slice(args);
        let out = boottrace(&argv);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{argv:?}: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{argv:?}: not one line: {err}"
        );
        assert!(err.contains(want), "{argv:?}: {err}");
        assert!(out.stdout.is_empty(), "{argv:?}");
    }
}

/// Functions that initialise or free the page structures of guest memory
/// (mm/mm_init.c, mm/memblock.c, mm/page_alloc.c): what more memory costs.
const PAGE_INIT: &[&str] = &[
    "memmap_init",
    "__init_single_page",
    "init_unavailable_range",
    "free_area_init",
    "memblock",
    // memblock_free_all hands every page to the buddy allocator:
    // __free_pages_core → __free_pages_ok → free_pages_prepare, free_one_page.
    "free_pages",
    "free_one_page",
    "deferred_init",
    "mm_core_init",
    "mem_init",
    "init_page",
    "zone_sizes_init",
    "pageblock",
    "set_pfnblock",
];

fn is_page_init(name: &str) -> bool {
    PAGE_INIT.iter().any(|p| name.contains(p))
}

#[test]
fn memory_sweep_shows_page_structure_init_growing() {
    let d = kernel_dir("tiny-fp");
    let dir = scratch().join("mem-sweep");
    let (bz, initrd) = (d.join("bzImage"), d.join("initramfs.cpio"));
    let out = boottrace(&[
        "sweep",
        bz.to_str().expect("utf-8"),
        "--initrd",
        initrd.to_str().expect("utf-8"),
        // The decompressor's time has nothing to do with memory and swings
        // with host load on an emulating host: boot the kernel proper.
        "--skip-decompressor",
        // Up to the kernel's memory report: page structures are set up and
        // freed by then; the rest of the boot only adds noise (and minutes
        // on an emulating host).
        "--until",
        "serial:Memory: [0-9]+K/",
        // 1 kHz is plenty on a PVM host (a boot lasts seconds); a bare-metal
        // boot lasts milliseconds and needs the default 10 kHz.
        "-F",
        if host_is_pvm() { "1000" } else { "10000" },
        "--timeout",
        "900",
        "--vary",
        "mem=128M,1G",
        "--runs",
        "1",
        "--dir",
        dir.to_str().expect("utf-8"),
    ]);
    let shown = text(&out);
    assert!(out.status.success(), "sweep failed:\n{shown}");
    let table = String::from_utf8_lossy(&out.stdout);
    for s in ["mem=128M", "mem=1G", "Functions that grew most"] {
        assert!(table.contains(s), "{s:?} not in the table:\n{table}");
    }
    for setting in ["01-mem-128M", "02-mem-1G"] {
        assert!(
            dir.join(setting).join("boot-000.data").is_file(),
            "no trace kept for {setting}"
        );
    }
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("sweep.json")).expect("sweep.json written"))
            .expect("sweep.json is JSON");

    // Boot time grows with memory.
    let boot = |i: usize| {
        json["settings"][i]["boot_ns"]["median"]
            .as_f64()
            .unwrap_or_else(|| panic!("no boot time for setting {i}: {json}"))
    };
    assert!(
        boot(1) > boot(0),
        "1G booted in {} ns, 128M in {} ns\n{table}",
        boot(1),
        boot(0)
    );

    // What grew most is page-structure initialisation: the first function
    // that grew, and its growth explains a real part of the boot-time growth.
    let grew = json["grew"].as_array().expect("grew");
    let top = grew.first().expect("no function grew");
    let name = top["name"].as_str().expect("name");
    assert!(is_page_init(name), "top grown function is {name}:\n{table}");
    let change_ns = top["change_ms"].as_f64().expect("change") * 1e6;
    assert!(
        change_ns > 0.1 * (boot(1) - boot(0)),
        "{name} grew {change_ns} ns of a {} ns boot-time growth\n{table}",
        boot(1) - boot(0)
    );
    // …and the start_kernel stage that grew most is one that sets up memory.
    let stage = json["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .find(|n| n.starts_with("stage "))
        .expect("no start_kernel stage changed");
    assert!(
        ["stage mm_core_init", "stage setup_arch", "stage mm_init"].contains(&stage),
        "{stage}:\n{table}"
    );

    // The chart: every setting, and it opens in a real browser.
    let chart = dir.join("sweep.svg");
    let svg = std::fs::read_to_string(&chart).expect("chart written");
    assert!(svg.contains("mem=128M") && svg.contains("mem=1G"));
    chart_support::assert_chart_opens(&chart, &["mem=128M", "mem=1G"]);
    assert!(
        Path::new(&dir.join("diff-first-last.svg")).is_file(),
        "no differential flamegraph"
    );
}

/// `jmp $`: a guest that reaches no goal.
const SPIN: &[u8] = &[0xeb, 0xfe];

/// `mov eax, 0xd0000000; mov byte [rax], 123; jmp $`: the boot marker once.
const MARKER: &[u8] = &[0xb8, 0x00, 0x00, 0x00, 0xd0, 0xc6, 0x00, 0x7b, 0xeb, 0xfe];

/// `sweep KERNELS… ARGS -F 0 --runs 2 --dir DIR` (flat kernels: nothing to sample).
fn flat_sweep(kernels: &[&Path], args: &[&str], dir: &Path) -> std::process::Output {
    let mut all = vec!["sweep"];
    all.extend(kernels.iter().map(|k| k.to_str().expect("utf-8")));
    all.extend_from_slice(args);
    all.extend([
        "-F",
        "0",
        "--runs",
        "2",
        "--dir",
        dir.to_str().expect("utf-8"),
    ]);
    boottrace(&all)
}

/// Two kernels and `--vary cpus=1,2 --vary mem=128M,256M`, two runs: every
/// combination (2 × 2 × 2) is a setting with its own directory and traces,
/// in the table, `sweep.json` and the chart; the boots are interleaved
/// (every setting once, then again).
#[test]
fn several_kernels_and_repeated_vary_make_every_combination() {
    let dir = scratch().join("combinations");
    let ka = common::flat_kernel(scratch(), "sweep-a.elf", MARKER);
    let kb = common::flat_kernel(scratch(), "sweep-b.elf", MARKER);
    let out = flat_sweep(
        &[&ka, &kb],
        &[
            "--until",
            "marker",
            "--timeout",
            "60",
            "--vary",
            "cpus=1,2",
            "--vary",
            "mem=128M,256M",
        ],
        &dir,
    );
    let shown = text(&out);
    assert!(out.status.success(), "sweep failed:\n{shown}");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("sweep.json")).expect("sweep.json"))
            .expect("sweep.json is JSON");
    let labels: Vec<&str> = json["settings"]
        .as_array()
        .expect("settings")
        .iter()
        .map(|s| s["label"].as_str().expect("label"))
        .collect();
    assert_eq!(labels.len(), 8, "{labels:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    for kernel in ["sweep-a.elf", "sweep-b.elf"] {
        for part in [kernel, "cpus=1", "cpus=2", "mem=128M", "mem=256M"] {
            let n = labels
                .iter()
                .filter(|l| l.contains(kernel) && l.contains(part))
                .count();
            assert_eq!(
                n,
                if part == kernel { 4 } else { 2 },
                "{part} of {kernel}: {labels:?}"
            );
        }
    }
    for l in &labels {
        assert!(table.contains(l), "{l} not in the table:\n{table}");
    }
    // A directory per setting with its two boots; every first boot started
    // before any second one.
    let settings: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .expect("sweep dir")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(settings.len(), 8, "{settings:?}");
    let started = |p: &Path| -> u64 {
        let t = boottrace::trace::Trace::open(p).expect("trace");
        t.runs[0].wall_time_unix_ns
    };
    let first: Vec<u64> = settings
        .iter()
        .map(|d| started(&d.join("boot-000.data")))
        .collect();
    let second: Vec<u64> = settings
        .iter()
        .map(|d| started(&d.join("boot-001.data")))
        .collect();
    let last_first = first.iter().max().expect("boots");
    assert!(
        second.iter().all(|t| t > last_first),
        "not interleaved: first boots {first:?}, second boots {second:?}"
    );
    assert!(dir.join("sweep.svg").is_file(), "no chart");
}

/// A boot that misses its `--until` goal (here `--timeout`) stops the sweep
/// with `record`'s exit status, 4; the first setting's trace is kept and no
/// later setting is booted.
#[test]
fn a_boot_that_misses_its_goal_stops_the_sweep_keeping_the_traces() {
    let dir = scratch().join("missed-goal");
    let k = common::flat_kernel(scratch(), "sweep-spin.elf", SPIN);
    let out = flat_sweep(
        &[&k],
        &["--timeout", "0.5", "--vary", "mem=128M,256M"],
        &dir,
    );
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(4), "{shown}");
    assert!(shown.contains("traces so far are in"), "{shown}");
    assert!(
        dir.join("01-mem-128M").join("boot-000.data").is_file(),
        "the timed-out boot's trace is kept"
    );
    assert!(
        !dir.join("02-mem-256M").join("boot-000.data").exists(),
        "the sweep went on after a missed goal"
    );
    assert!(
        !dir.join("sweep.json").exists(),
        "no results from a failed sweep"
    );
}
