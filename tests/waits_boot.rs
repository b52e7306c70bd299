//! What the boot waited on, in real boots (tiny-fp, 1 kHz):
//!
//! - a static `ip=` configuration with no network device makes
//!   `ip_auto_config` sleep (`wait_for_devices`: 12 × `ssleep(1)`, i.e.
//!   `msleep`) — real time on any host, since sleeps are not emulated. The
//!   sleep must show as a wait with its full stack in `report` (Waits) and
//!   in `flame --weight wall` / the folded export, for at least 80 % of the
//!   12 s the kernel sleeps (`DEVICE_WAIT_MAX` × `ssleep(1)` in
//!   net/ipv4/ipconfig.c). The sleep's length is not measured from the
//!   console: on a loaded emulated host the longest console silence can be
//!   emulated work many times longer than the sleep.
//! - the `initcall_debug ignore_loglevel` boot (shared with the exact-initcall
//!   tests: same argument list) names the blocking stacks of `kswapd_init`
//!   and `inet6_init` in `report`.
//! - `diff --weight wall` of the static-ip boot against the standard one
//!   (both recordings shared with other tests) shows the sleep that grew.

mod common;

use std::path::{Path, PathBuf};

use boottrace::trace::Trace;
use common::{boottrace, kernel_dir, report_json, scratch, text};

const IP_CMDLINE: &str = "ip=10.0.0.2::10.0.0.1:255.255.255.0::eth0:off";
/// What `wait_for_devices` sleeps with no NIC: `DEVICE_WAIT_MAX` (12) ×
/// `ssleep(1)` (net/ipv4/ipconfig.c, 6.12).
const KERNEL_SLEEP_NS: u64 = 12_000_000_000;

fn tiny_fp_recording(cmdline: &str) -> (PathBuf, String) {
    let d = kernel_dir("tiny-fp");
    let k = d.join("bzImage");
    let i = d.join("initramfs.cpio");
    common::shared_recording(&[
        k.to_str().expect("utf-8 path"),
        "--initrd",
        i.to_str().expect("utf-8 path"),
        "-F",
        "1000",
        "--timeout",
        "900",
        "--cmdline",
        cmdline,
    ])
}

fn vmlinux() -> String {
    kernel_dir("tiny-fp")
        .join("vmlinux")
        .to_str()
        .expect("utf-8 path")
        .to_string()
}

/// The longest stretch with no console line, ns (host arrival times): the
/// kernel's 12 s of `ssleep(1)` print nothing.
fn longest_silence_ns(trace: &Path) -> u64 {
    let t = Trace::open(trace).expect("trace");
    let run = &t.runs[0];
    run.serial
        .windows(2)
        .map(|w| w[1].t_ns.saturating_sub(w[0].t_ns))
        .max()
        .expect("the boot printed lines")
}

/// Folded `--weight wall` export of a trace.
fn wall_folded(trace: &Path) -> Vec<(String, u64)> {
    let out_path = scratch().join(format!(
        "{}.wall.folded",
        trace.file_name().expect("name").to_string_lossy()
    ));
    let vml = vmlinux();
    let out = boottrace(&[
        "export",
        "--format",
        "folded",
        "--weight",
        "wall",
        "-i",
        trace.to_str().expect("utf-8"),
        "-o",
        out_path.to_str().expect("utf-8"),
        "--vmlinux",
        &vml,
    ]);
    assert!(out.status.success(), "export failed: {}", text(&out));
    std::fs::read_to_string(&out_path)
        .expect("folded file")
        .lines()
        .filter_map(|l| {
            let (s, w) = l.rsplit_once(' ')?;
            Some((s.to_string(), w.parse().ok()?))
        })
        .collect()
}

#[test]
fn a_static_ip_without_a_nic_shows_its_sleep_as_a_wait() {
    let (trace, shown) = tiny_fp_recording(IP_CMDLINE);
    assert!(
        shown.contains("task awareness on"),
        "blocked stacks need task awareness:\n{shown}"
    );
    let silence = longest_silence_ns(&trace);
    // The kernel slept 12 × 1 s: real time on any host, so the console was
    // silent at least that long.
    assert!(
        silence >= 10_000_000_000,
        "no ≥ 10 s silent stretch on the console ({silence} ns): did ip= sleep?"
    );

    // Report: the top wait is the sleep, with its callers and initcall.
    let doc = report_json(&trace);
    let run = &doc["runs"][0];
    let waits = run["waits"].as_array().expect("runs[0].waits present");
    let sleep = waits
        .iter()
        .find(|w| w["function"] == "msleep")
        .unwrap_or_else(|| panic!("no msleep wait in {waits:#?}"));
    assert_eq!(sleep["initcall"], "ip_auto_config", "{sleep:#?}");
    assert_eq!(sleep["state"], "sleeping", "{sleep:#?}");
    let name = sleep["name"].as_str().expect("name");
    assert!(name.contains("ip_auto_config"), "{name}");
    let stack = sleep["stack"].as_str().expect("stack");
    for f in [
        "kernel_init",
        "do_one_initcall",
        "ip_auto_config",
        "msleep",
        "[wait]",
    ] {
        assert!(stack.contains(f), "{f} missing from {stack}");
    }
    let slept = sleep["time_ns"].as_u64().expect("time_ns");
    assert!(
        slept as f64 >= 0.8 * KERNEL_SLEEP_NS as f64,
        "msleep wait {slept} ns < 80 % of the {KERNEL_SLEEP_NS} ns the kernel sleeps"
    );
    assert_eq!(waits[0]["function"], "msleep", "the sleep is the top wait");
    let waited = run["waited_ns"].as_u64().expect("waited_ns");
    assert!(waited >= slept);
    let boot = run["boot_ns"].as_u64().expect("boot_ns");
    assert!(waited <= boot, "waited {waited} > boot {boot}");

    let out = boottrace(&["report", "-i", trace.to_str().expect("utf-8")]);
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("\nWaits ("), "{report}");
    assert!(
        report
            .lines()
            .any(|l| l.contains("msleep ←") && l.contains("ip_auto_config")),
        "{report}"
    );

    // Wall flamegraph: the sleep under ip_auto_config, ending in [wait].
    let folded = wall_folded(&trace);
    let under_sleep: u64 = folded
        .iter()
        .filter(|(s, _)| {
            s.contains("ip_auto_config") && s.contains(";msleep;") && s.ends_with(";[wait]")
        })
        .map(|(_, w)| w)
        .sum();
    assert!(
        under_sleep as f64 >= 0.8 * KERNEL_SLEEP_NS as f64,
        "wall flame: {under_sleep} ns under msleep;…;[wait] for a {KERNEL_SLEEP_NS} ns sleep"
    );
    // The boot thread's own running time is there too.
    assert!(
        folded
            .iter()
            .any(|(s, _)| s.contains("start_kernel") && !s.ends_with("]")),
        "no running start_kernel stacks in the wall view"
    );
    let total: u64 = folded.iter().map(|(_, w)| w).sum();
    assert!(
        total <= boot + boot / 10,
        "wall total {total} vs boot {boot}"
    );

    // The SVG flamegraph and the flame chart render it.
    let vml = vmlinux();
    for chart in [false, true] {
        let svg = scratch().join(format!("wall-{chart}.svg"));
        let mut args = vec![
            "flame",
            svg.to_str().expect("utf-8"),
            "-i",
            trace.to_str().expect("utf-8"),
            "--weight",
            "wall",
            "--vmlinux",
            &vml,
        ];
        if chart {
            args.push("--chart");
        }
        let out = boottrace(&args);
        assert!(out.status.success(), "flame failed: {}", text(&out));
        let body = std::fs::read_to_string(&svg).expect("svg");
        assert!(body.contains("msleep") && body.contains("[wait]"));
    }
}

#[test]
fn initcall_debug_boot_names_the_waits_of_kswapd_and_inet6() {
    let (trace, _) = tiny_fp_recording("initcall_debug ignore_loglevel");
    let doc = report_json(&trace);
    let waits = doc["runs"][0]["waits"]
        .as_array()
        .expect("runs[0].waits present");
    for initcall in ["kswapd_init", "inet6_init"] {
        let rows: Vec<&serde_json::Value> =
            waits.iter().filter(|w| w["initcall"] == initcall).collect();
        assert!(
            !rows.is_empty(),
            "no wait in {initcall}: {:#?}",
            waits
                .iter()
                .map(|w| (&w["name"], &w["initcall"]))
                .collect::<Vec<_>>()
        );
        for w in &rows {
            let stack = w["stack"].as_str().expect("stack");
            assert!(
                stack.contains(initcall) && stack.contains("__schedule"),
                "{stack}"
            );
            assert!(w["time_ns"].as_u64().expect("time") > 0);
        }
        eprintln!(
            "{initcall}: {:?}",
            rows.iter()
                .map(|w| (w["name"].as_str(), w["time_ns"].as_u64()))
                .collect::<Vec<_>>()
        );
    }
    let out = boottrace(&["report", "-i", trace.to_str().expect("utf-8")]);
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    let section = report
        .split("\nWaits (")
        .nth(1)
        .and_then(|rest| rest.split("\nTop functions").next())
        .unwrap_or_else(|| panic!("no Waits section:\n{report}"));
    assert!(
        section.contains("kswapd_init") && section.contains("inet6_init"),
        "{section}"
    );
}

/// `diff --weight wall` compares what the boot thread spent its wall time
/// on: against the suite's standard tiny-fp recording (same kernel and
/// options, no `ip=`), `ip_auto_config` grew by at least 80 % of the
/// static-ip boot's `msleep` wait (which `report` measures; the kernel
/// sleeps 12 × 1 s of real time, so at least 10 s on any host).
#[test]
fn diff_by_wall_time_shows_the_sleep_that_ip_adds() {
    let (ip, _) = tiny_fp_recording(IP_CMDLINE);
    let (base, _) = common::standard_recording("tiny-fp");
    let doc = report_json(&ip);
    let slept = doc["runs"][0]["waits"]
        .as_array()
        .expect("waits")
        .iter()
        .filter(|w| w["function"] == "msleep")
        .filter_map(|w| w["time_ns"].as_u64())
        .sum::<u64>();
    assert!(slept >= 10_000_000_000, "msleep waited {slept} ns only");
    let svg = scratch().join("wall-diff.svg");
    let vml = vmlinux();
    let out = boottrace(&[
        "diff",
        base.to_str().expect("utf-8"),
        ip.to_str().expect("utf-8"),
        "-o",
        svg.to_str().expect("utf-8"),
        "--weight",
        "wall",
        "--sort",
        "total",
        "--top",
        "1000000",
        "--json",
        "--vmlinux-a",
        &vml,
        "--vmlinux-b",
        &vml,
    ]);
    assert!(out.status.success(), "diff failed: {}", text(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("diff --json");
    assert_eq!(
        (doc["weight"].as_str(), doc["unit"].as_str()),
        (Some("wall"), Some("ms"))
    );
    let slower = doc["slower"].as_array().expect("slower");
    let row = slower
        .iter()
        .find(|r| r["name"] == "ip_auto_config")
        .unwrap_or_else(|| panic!("ip_auto_config did not grow: {slower:#?}"));
    let m = &row["total_metric"];
    let grew_ms = m["b_per_boot"].as_f64().expect("b") - m["a_per_boot"].as_f64().expect("a");
    assert!(
        grew_ms * 1e6 >= 0.8 * slept as f64,
        "ip_auto_config grew {grew_ms} ms for a {slept} ns sleep"
    );
    assert!(svg.is_file(), "the differential flamegraph is written");
}
