//! Trace format 3's `DeviceStats` records: written, read back within the
//! reader's caps, and shown by `report` (text and JSON). Hand-made traces:
//! no boot (the real boots in tests/virtio.rs check the recorded counters).

mod common;

use std::path::PathBuf;

use boottrace::trace::{
    synth, DeviceStats, Phase, PhaseName, Record, RunEnd, RunStart, Trace, TraceWriter,
    MAX_COUNTERS_PER_DEVICE, MAX_DEVICES_PER_RUN,
};
use common::{boottrace, report_json, text};

fn write(name: &str, recs: Vec<Record>) -> PathBuf {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let path = dir.join(name);
    let meta = synth::meta(&synth::SynthOptions::default());
    let mut w = TraceWriter::create(&path, &meta).expect("create trace");
    for r in &recs {
        w.append(r).expect("append");
    }
    w.finish().expect("finish");
    path
}

fn disk(run: u32, reads: u64) -> DeviceStats {
    DeviceStats {
        run,
        name: "vda".into(),
        kind: "virtio-blk".into(),
        backend: "ro".into(),
        notify: "ioeventfd".into(),
        counters: vec![
            ("reads".into(), reads),
            ("read_bytes".into(), reads * 4096),
            ("writes".into(), 0),
        ],
        broken: None,
    }
}

fn net(run: u32) -> DeviceStats {
    DeviceStats {
        run,
        name: "net0".into(),
        kind: "virtio-net".into(),
        backend: "no backend".into(),
        notify: "mmio exit".into(),
        counters: vec![("tx_frames".into(), 3), ("tx_dropped".into(), 3)],
        broken: Some("queue 1: descriptor chain longer than the queue".into()),
    }
}

fn run(run: u32, devices: Vec<DeviceStats>) -> Vec<Record> {
    let mut v = vec![
        Record::RunStart(RunStart {
            run,
            wall_time_unix_ns: 1,
        }),
        Record::Phase(Phase {
            run,
            name: PhaseName::FirstInstruction,
            t_ns: 1_000,
        }),
        Record::RunEnd(RunEnd {
            run,
            t_ns: 5_000_000,
            ..RunEnd::default()
        }),
    ];
    v.extend(devices.into_iter().map(Record::DeviceStats));
    v
}

#[test]
fn device_counters_round_trip_and_reach_the_report() {
    let mut recs = run(0, vec![disk(0, 10), net(0)]);
    recs.extend(run(1, vec![disk(1, 30)]));
    let path = write("devices.data", recs);
    let t = Trace::open(&path).expect("read");
    assert_eq!(
        (t.format_major, t.format_minor),
        (
            boottrace::trace::frame::VERSION_MAJOR,
            boottrace::trace::frame::VERSION_MINOR
        )
    );
    assert_eq!(t.runs[0].devices, [disk(0, 10), net(0)]);
    assert_eq!(t.runs[1].devices, [disk(1, 30)]);

    let json = report_json(&path);
    let d0 = &json["runs"][0]["devices"];
    assert_eq!(d0[0]["name"], "vda");
    assert_eq!(d0[0]["counters"]["reads"], 10);
    assert_eq!(d0[0]["counters"]["read_bytes"], 40_960);
    assert_eq!(d0[1]["kind"], "virtio-net");
    assert_eq!(
        d0[1]["broken"],
        "queue 1: descriptor chain longer than the queue"
    );
    let s = &json["summary"]["devices"];
    assert_eq!(s[0]["name"], "vda");
    assert_eq!(s[0]["runs_seen"], 2);
    assert_eq!(s[0]["counters"][0]["name"], "reads");
    assert_eq!(s[0]["counters"][0]["value"]["median"], 20.0);
    assert_eq!(s[1]["broken_runs"], 1);

    let out = boottrace(&["report", "-i", path.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", text(&out));
    let report = String::from_utf8_lossy(&out.stdout);
    let section = report
        .split("\nDevices (virtio")
        .nth(1)
        .unwrap_or_else(|| panic!("no Devices section:\n{report}"));
    assert!(
        section.contains("  vda: virtio-blk, ro, ioeventfd\n"),
        "{section}"
    );
    assert!(
        section.contains(
            "  net0: virtio-net, no backend, mmio exit; in 1/2 runs; broken in 1 run(s)\n"
        ),
        "{section}"
    );
    let reads = section
        .lines()
        .find(|l| l.trim_start().starts_with("vda reads"))
        .expect("reads row");
    let cells: Vec<&str> = reads.split_whitespace().collect();
    assert_eq!(cells[2..5], ["20", "10", "30"], "median, min, max: {reads}");
    assert!(
        section.contains("80.0 KiB"),
        "bytes are shown as bytes: {section}"
    );
}

#[test]
fn traces_without_devices_report_none() {
    let path = write("none.data", run(0, Vec::new()));
    let json = report_json(&path);
    assert!(json["runs"][0].get("devices").is_none(), "{json}");
    assert!(json["summary"].get("devices").is_none());
    let out = boottrace(&["report", "-i", path.to_str().expect("utf-8")]);
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Devices"));
}

/// A hand-made file cannot make the reader keep more devices per run or
/// more counters per device than the caps, nor long strings; a repeated
/// device replaces its earlier record.
#[test]
fn the_reader_caps_device_records() {
    let mut recs = run(0, Vec::new());
    let mut big = disk(0, 1);
    big.counters = (0..1000).map(|i| (format!("c{i}"), i)).collect();
    big.backend = "x".repeat(100_000);
    recs.push(Record::DeviceStats(big));
    for i in 0..200 {
        let mut d = disk(0, i);
        d.name = format!("vd{i}");
        recs.push(Record::DeviceStats(d));
    }
    // A second record for vda replaces the first.
    recs.push(Record::DeviceStats(disk(0, 7)));
    let path = write("caps.data", recs);
    let t = Trace::open(&path).expect("read");
    let devs = &t.runs[0].devices;
    assert_eq!(devs.len(), MAX_DEVICES_PER_RUN);
    assert_eq!(devs[0], disk(0, 7));
    assert!(devs
        .iter()
        .all(|d| d.counters.len() <= MAX_COUNTERS_PER_DEVICE));
    assert!(
        t.warnings.iter().any(|w| w.contains("device record(s)")),
        "{:?}",
        t.warnings
    );
    let mut cut = disk(0, 1);
    cut.counters = (0..1000).map(|i| (format!("c{i}"), i)).collect();
    cut.backend = "é".repeat(1000);
    let path = write(
        "cut.data",
        [run(0, Vec::new()), vec![Record::DeviceStats(cut)]].concat(),
    );
    let t = Trace::open(&path).expect("read");
    let d = &t.runs[0].devices[0];
    assert_eq!(d.counters.len(), MAX_COUNTERS_PER_DEVICE);
    assert!(
        d.backend.len() <= 256 && d.backend.starts_with("éé"),
        "{}",
        d.backend.len()
    );
}
