//! `record --capture none`: the timer still kicks the vCPU out of the guest
//! (the bare exit round trip `examples/bench-overhead.sh` sets beside a full
//! sample), but nothing is captured or written; the kicks are counted.

mod common;

use boottrace::trace::Trace;
use common::{boottrace, scratch, text};

/// "samples: N" from record's cost line.
fn samples_line(out: &str) -> u64 {
    out.lines()
        .find_map(|l| l.trim().strip_prefix("samples: "))
        .and_then(|r| r.split(';').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no samples line:\n{out}"))
}

#[test]
fn capture_none_kicks_without_recording_samples() {
    let dir = scratch().join("capture-none");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let k = common::flat_kernel(&dir, "spin.elf", &[0xeb, 0xfe]);
    let k = k.to_str().expect("utf-8 path");
    for mode in ["none", "sync"] {
        let trace = dir.join(format!("{mode}.data"));
        let out = boottrace(&[
            "record",
            k,
            "--timeout",
            "1",
            "-F",
            "1000",
            "--capture",
            mode,
            "-o",
            trace.to_str().expect("utf-8 path"),
        ]);
        let all = text(&out);
        // A guest spinning until --timeout: record says so and keeps the trace.
        let t = Trace::open(&trace).unwrap_or_else(|e| panic!("{mode}: {e}\n{all}"));
        assert_eq!(t.meta.options.capture, mode, "{all}");
        let n = samples_line(&all);
        println!(
            "--capture {mode}: {n} kicks, {} samples in the trace",
            t.runs[0].samples.len()
        );
        assert!(n > 0, "--capture {mode}: no kick counted:\n{all}");
        if mode == "none" {
            assert!(t.runs[0].samples.is_empty(), "--capture none wrote samples");
        } else {
            assert!(
                !t.runs[0].samples.is_empty(),
                "--capture sync wrote no sample"
            );
        }
    }
}
