//! What each virtio device did in a run, as the trace's `DeviceStats`
//! records (format 3): the VMM's counters under stable names.

use crate::trace::{self, Record};
use crate::vmm::virtio::{DeviceStats, IoCounters};

/// The kind and named counters of one device's counters.
fn named(io: &IoCounters) -> (&'static str, Vec<(&'static str, u64)>) {
    match *io {
        IoCounters::Block {
            reads,
            read_bytes,
            writes,
            write_bytes,
            flushes,
            errors,
        } => (
            "virtio-blk",
            vec![
                ("reads", reads),
                ("read_bytes", read_bytes),
                ("writes", writes),
                ("write_bytes", write_bytes),
                ("flushes", flushes),
                ("errors", errors),
            ],
        ),
        IoCounters::Net {
            tx_frames,
            tx_bytes,
            rx_frames,
            rx_bytes,
            tx_dropped,
            rx_dropped,
        } => (
            "virtio-net",
            vec![
                ("tx_frames", tx_frames),
                ("tx_bytes", tx_bytes),
                ("tx_dropped", tx_dropped),
                ("rx_frames", rx_frames),
                ("rx_bytes", rx_bytes),
                ("rx_dropped", rx_dropped),
            ],
        ),
    }
}

/// One `DeviceStats` record per device of run `run`.
pub fn device_records(run: u32, devices: &[DeviceStats]) -> Vec<Record> {
    devices
        .iter()
        .map(|d| {
            let (kind, counters) = named(&d.io);
            Record::DeviceStats(trace::DeviceStats {
                run,
                name: d.name.clone(),
                kind: kind.to_string(),
                backend: d.backend.clone(),
                notify: d.notify.to_string(),
                counters: counters
                    .into_iter()
                    .map(|(n, v)| (n.to_string(), v))
                    .collect(),
                broken: d.broken.clone(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_named() {
        let d = DeviceStats {
            name: "net0".into(),
            backend: "no backend".into(),
            notify: "mmio exit",
            io: IoCounters::Net {
                tx_frames: 1,
                tx_bytes: 2,
                rx_frames: 3,
                rx_bytes: 4,
                tx_dropped: 5,
                rx_dropped: 6,
            },
            broken: Some("queue 1: loop".into()),
        };
        let recs = device_records(7, &[d]);
        let Some(Record::DeviceStats(r)) = recs.first() else {
            panic!("no device record: {recs:?}");
        };
        assert_eq!(
            (r.run, r.name.as_str(), r.kind.as_str()),
            (7, "net0", "virtio-net")
        );
        assert_eq!(r.notify, "mmio exit");
        assert_eq!(r.broken.as_deref(), Some("queue 1: loop"));
        let mut vals: Vec<u64> = r.counters.iter().map(|c| c.1).collect();
        vals.sort_unstable();
        assert_eq!(vals, [1, 2, 3, 4, 5, 6]);
        assert_eq!(r.counter("rx_dropped"), Some(6));
    }
}
