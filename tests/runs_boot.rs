//! `--runs N` on a real kernel where one boot fails and the next reaches the
//! goal: the recording succeeds (status 0: at least one boot did), the trace
//! keeps both, and the readers pick runs with `--run K`.
//!
//! What makes the two boots differ is the disk they share: tiny-fp mounts a
//! private copy of its ext4 root read-write (`--disk FILE,rw --root
//! /dev/vda`). Mounting marks the journal "needs recovery" on disk; init then
//! ends (on a PVM host its first system call faults, on real KVM it exits),
//! the kernel panics and the boot ends there, unclean. The second boot finds
//! the mark and prints "recovery complete": the goal of
//! `--until serial:…recovery complete`, which the first boot cannot reach.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use boottrace::trace::{EndKind, Trace};
use common::{boottrace, kernel_dir, scratch, text};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

struct TwoRuns {
    out: Output,
    trace: PathBuf,
}

fn two_runs() -> &'static TwoRuns {
    static R: OnceLock<TwoRuns> = OnceLock::new();
    R.get_or_init(|| {
        let d = kernel_dir("tiny-fp");
        let disk = scratch().join("runs-rootfs.ext4");
        std::fs::copy(d.join("rootfs.ext4"), &disk).expect("copy rootfs.ext4");
        let trace = scratch().join("runs.data");
        let disk_rw = format!("{},rw", s(&disk));
        let out = boottrace(&[
            "record",
            s(&d.join("bzImage")),
            "--disk",
            &disk_rw,
            "--root",
            "/dev/vda",
            "--runs",
            "2",
            "--until",
            r"serial:EXT4-fs \(vda\): recovery complete",
            "-F",
            "1000",
            "--timeout",
            "900",
            "-o",
            s(&trace),
        ]);
        TwoRuns { out, trace }
    })
}

/// One boot of two reached the goal: status 0, both runs in the trace, the
/// failed one ended by its panic, the other at the console line.
#[test]
fn runs_succeed_when_one_boot_reaches_the_goal() {
    let r = two_runs();
    let all = text(&r.out);
    assert_eq!(r.out.status.code(), Some(0), "{all}");
    let t = Trace::open(&r.trace).expect("trace");
    assert!(t.complete);
    assert_eq!(t.runs.len(), 2, "{all}");
    let ends: Vec<_> = t
        .runs
        .iter()
        .map(|r| r.end.as_ref().map(|e| e.reason.clone()))
        .collect();
    assert_eq!(
        ends,
        vec![Some(EndKind::Panic), Some(EndKind::Serial)],
        "{all}"
    );
    assert!(
        !t.runs[0]
            .serial
            .iter()
            .any(|l| l.line.contains("recovery complete")),
        "the first boot found a dirty journal on a fresh disk"
    );
    assert!(t.runs[1]
        .serial
        .iter()
        .any(|l| l.line.contains("EXT4-fs (vda): recovery complete")));
    let report = common::report_json(&r.trace);
    assert_eq!(report["summary"]["runs"], 2);
    assert_eq!(report["runs"][0]["end_reason"], "panic");
    assert_eq!(report["runs"][1]["end_reason"], "serial");
    assert_eq!(report["summary"]["boot_ns"]["n"], 2);
}

fn folded(trace: &Path, run: Option<&str>) -> Output {
    let mut args = vec!["export", "--format", "folded", "-i", s(trace)];
    if let Some(k) = run {
        args.extend(["--run", k]);
    }
    boottrace(&args)
}

fn total(o: &Output) -> u64 {
    assert!(o.status.success(), "{}", text(o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<u64>().ok())
        .sum()
}

/// `--run K` picks one run of a multi-run trace in `flame` and `export`:
/// each run's folded total is that run's sample count, the two add up to
/// the merged total, the flamegraphs differ, and a run that is not there is
/// a one-line error.
#[test]
fn flame_and_export_pick_a_run() {
    let r = two_runs();
    assert_eq!(r.out.status.code(), Some(0), "{}", text(&r.out));
    let report = common::report_json(&r.trace);
    let n = |k: usize| report["runs"][k]["samples"].as_u64().expect("samples");
    let (r0, r1) = (
        total(&folded(&r.trace, Some("0"))),
        total(&folded(&r.trace, Some("1"))),
    );
    assert_eq!((r0, r1), (n(0), n(1)));
    assert_eq!(total(&folded(&r.trace, None)), r0 + r1);

    let svg = |k: &str| {
        let out = scratch().join(format!("runs-{k}.svg"));
        let o = boottrace(&["flame", s(&out), "-i", s(&r.trace), "--run", k]);
        assert!(o.status.success(), "{}", text(&o));
        std::fs::read_to_string(&out).expect("svg")
    };
    assert_ne!(svg("0"), svg("1"));
    for cmd in [
        vec![
            "export",
            "--format",
            "folded",
            "-i",
            s(&r.trace),
            "--run",
            "2",
        ],
        vec!["flame", "/dev/null/x.svg", "-i", s(&r.trace), "--run", "2"],
    ] {
        let o = boottrace(&cmd);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("run 2 is not in"), "{err}");
        assert!(err.contains("(it has 2 run(s))"), "{err}");
    }
}
