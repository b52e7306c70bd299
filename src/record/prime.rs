//! The host's first perf software event of a kind is slow to open (10–20 ms
//! here, mostly waiting in the kernel while it enables the event on every
//! CPU), and the boot vCPU opens its page-fault counters right before the
//! first instruction. A helper thread opens the same events when `record`
//! starts and keeps them open until the first run's vCPU has its own, so
//! that wait happens beside the VMM's start-up. What the vCPU's counters
//! count is unchanged: perf counts per thread.

use std::sync::mpsc;

use crate::sample::counters::{PerfFaults, PerfScope};

/// Keeps the helper's events open while it lives.
pub struct PerfPrimer {
    _keep: mpsc::Sender<()>,
}

impl PerfPrimer {
    /// Starts the helper thread (nothing when no thread can be started:
    /// the vCPU then opens its counters as before).
    pub fn start() -> Option<PerfPrimer> {
        let (tx, rx) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("perf-primer".into())
            .spawn(move || {
                // A host without perf events: the vCPU's counters say so later.
                let events = PerfFaults::open(PerfScope::UserOnly).ok();
                // Returns when the primer is dropped.
                let _ = rx.recv();
                drop(events);
            })
            .ok()?;
        Some(PerfPrimer { _keep: tx })
    }
}
