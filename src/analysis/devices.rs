//! What the virtio devices did, per run and over runs (the report's
//! `devices`): the trace's `DeviceStats` records (format 3) as data.

use std::collections::BTreeMap;

use serde::Serialize;

use super::stats::Summary;
use crate::profile::Run;

/// One device in one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceReport {
    /// Device name (`vda`, `net0`).
    pub name: String,
    /// Device kind (`virtio-blk`, `virtio-net`).
    pub kind: String,
    /// Backend (`ro`, `rw`, `no backend`, `tap NAME`).
    pub backend: String,
    /// How queue notifications arrived (`ioeventfd`, `mmio exit`).
    pub notify: String,
    /// Counter name → value.
    pub counters: BTreeMap<String, u64>,
    /// Why the device stopped working, if it did.
    pub broken: Option<String>,
}

/// One counter of one device over runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CounterSummary {
    /// Counter name (`reads`, `tx_frames`, …).
    pub name: String,
    /// Its value over the runs that have the device.
    pub value: Summary,
}

/// One device over runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceSummary {
    /// Device name.
    pub name: String,
    /// Device kind.
    pub kind: String,
    /// Backend, as in the first run that has the device.
    pub backend: String,
    /// Notification path, as in the first run that has the device.
    pub notify: String,
    /// Counters in the order the trace lists them.
    pub counters: Vec<CounterSummary>,
    /// Runs that recorded the device.
    pub runs_seen: usize,
    /// Runs in which the device broke.
    pub broken_runs: usize,
}

/// The devices of one run, in the trace's order.
pub fn run_devices(run: &Run) -> Vec<DeviceReport> {
    run.devices
        .iter()
        .map(|d| DeviceReport {
            name: d.name.clone(),
            kind: d.kind.clone(),
            backend: d.backend.clone(),
            notify: d.notify.clone(),
            counters: d.counters.iter().cloned().collect(),
            broken: d.broken.clone(),
        })
        .collect()
}

/// Each device's counters over runs, devices in order of first appearance.
/// Linear in the devices and counters recorded.
pub fn summarize(runs: &[&Run]) -> Vec<DeviceSummary> {
    struct Acc {
        kind: String,
        backend: String,
        notify: String,
        counters: Vec<(String, Vec<f64>)>,
        runs_seen: usize,
        broken_runs: usize,
    }
    let mut order: Vec<String> = Vec::new();
    let mut acc: BTreeMap<String, Acc> = BTreeMap::new();
    for run in runs {
        for d in &run.devices {
            let a = acc.entry(d.name.clone()).or_insert_with(|| {
                order.push(d.name.clone());
                Acc {
                    kind: d.kind.clone(),
                    backend: d.backend.clone(),
                    notify: d.notify.clone(),
                    counters: Vec::new(),
                    runs_seen: 0,
                    broken_runs: 0,
                }
            });
            a.runs_seen += 1;
            a.broken_runs += usize::from(d.broken.is_some());
            for (name, v) in &d.counters {
                match a.counters.iter_mut().find(|(n, _)| n == name) {
                    Some((_, vals)) => vals.push(*v as f64),
                    None => a.counters.push((name.clone(), vec![*v as f64])),
                }
            }
        }
    }
    order
        .into_iter()
        .filter_map(|name| {
            let a = acc.remove(&name)?;
            Some(DeviceSummary {
                kind: a.kind,
                backend: a.backend,
                notify: a.notify,
                counters: a
                    .counters
                    .into_iter()
                    .filter_map(|(n, vals)| {
                        Some(CounterSummary {
                            value: Summary::of(&vals)?,
                            name: n,
                        })
                    })
                    .collect(),
                runs_seen: a.runs_seen,
                broken_runs: a.broken_runs,
                name,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::DeviceStats;

    fn run(reads: u64, broken: bool) -> Run {
        Run {
            devices: vec![
                DeviceStats {
                    run: 0,
                    name: "vda".into(),
                    kind: "virtio-blk".into(),
                    backend: "ro".into(),
                    notify: "ioeventfd".into(),
                    counters: vec![("reads".into(), reads), ("writes".into(), 0)],
                    broken: broken.then(|| "queue 0: loop".into()),
                },
                DeviceStats {
                    name: "net0".into(),
                    kind: "virtio-net".into(),
                    counters: vec![("tx_frames".into(), 2)],
                    ..DeviceStats::default()
                },
            ],
            ..Run::default()
        }
    }

    #[test]
    fn counters_are_summarized_per_device_in_trace_order() {
        let (a, b, c) = (run(10, false), run(30, true), Run::default());
        let s = summarize(&[&a, &b, &c]);
        let names: Vec<&str> = s.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["vda", "net0"]);
        assert_eq!((s[0].runs_seen, s[0].broken_runs), (2, 1));
        let reads = &s[0].counters[0];
        assert_eq!(reads.name, "reads");
        assert_eq!(
            (reads.value.min, reads.value.median, reads.value.max),
            (10.0, 20.0, 30.0)
        );
        let per_run = run_devices(&b);
        assert_eq!(per_run[0].counters.get("reads"), Some(&30));
        assert_eq!(per_run[0].broken.as_deref(), Some("queue 0: loop"));
        assert!(summarize(&[&c]).is_empty());
    }
}
