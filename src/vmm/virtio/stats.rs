//! What each device did during a boot, as the run's summary prints it.

use std::fmt;

/// What one device did during a boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceStats {
    /// Name (vda, net0).
    pub name: String,
    /// Backend in a word or two ("ro", "rw", "no backend", "tap NAME").
    pub backend: String,
    /// How queue notifications arrived: "ioeventfd" or "mmio exit".
    pub notify: &'static str,
    /// Counters.
    pub io: IoCounters,
    /// Why the device stopped working (a malformed queue), if it did.
    pub broken: Option<String>,
}

/// Per-kind counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoCounters {
    /// virtio-blk.
    Block {
        /// Read requests.
        reads: u64,
        /// Bytes read.
        read_bytes: u64,
        /// Write requests.
        writes: u64,
        /// Bytes written.
        write_bytes: u64,
        /// Flush requests.
        flushes: u64,
        /// Requests answered with an error status.
        errors: u64,
    },
    /// virtio-net.
    Net {
        /// Frames the guest sent.
        tx_frames: u64,
        /// Their bytes (without the virtio-net header).
        tx_bytes: u64,
        /// Frames delivered to the guest.
        rx_frames: u64,
        /// Their bytes.
        rx_bytes: u64,
        /// Frames from the guest not passed on (no backend, tap full).
        tx_dropped: u64,
        /// Frames for the guest not delivered (driver not up, no rx buffer).
        rx_dropped: u64,
    },
}

fn bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20))
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

impl fmt::Display for DeviceStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.io {
            IoCounters::Block {
                reads,
                read_bytes,
                writes,
                write_bytes,
                flushes,
                errors,
            } => write!(
                f,
                "virtio-blk {} ({}; {}): {reads} reads ({}), {writes} writes ({}), {flushes} flushes, {errors} errors",
                self.name,
                self.backend,
                self.notify,
                bytes(read_bytes),
                bytes(write_bytes)
            )?,
            IoCounters::Net {
                tx_frames,
                tx_bytes,
                rx_frames,
                rx_bytes,
                tx_dropped,
                rx_dropped,
            } => write!(
                f,
                "virtio-net {} ({}; {}): tx {tx_frames} frames ({}) {tx_dropped} dropped, rx {rx_frames} frames ({}) {rx_dropped} dropped",
                self.name,
                self.backend,
                self.notify,
                bytes(tx_bytes),
                bytes(rx_bytes)
            )?,
        }
        if let Some(why) = &self.broken {
            write!(f, "; device broken: {why}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_read_as_one_line() {
        let d = DeviceStats {
            name: "vda".into(),
            backend: "ro".into(),
            notify: "ioeventfd",
            io: IoCounters::Block {
                reads: 3,
                read_bytes: 3 << 10,
                writes: 0,
                write_bytes: 0,
                flushes: 0,
                errors: 0,
            },
            broken: Some("queue 0: malformed".into()),
        };
        assert_eq!(
            d.to_string(),
            "virtio-blk vda (ro; ioeventfd): 3 reads (3.0 KiB), 0 writes (0 B), 0 flushes, 0 errors; device broken: queue 0: malformed"
        );
    }
}
