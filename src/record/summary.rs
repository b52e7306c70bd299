//! What `record` reports about each boot and about the whole recording:
//! data for the caller to show, not text.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use boottrace_symbols::image::KernelImage;
use boottrace_symbols::layout::{AddrSpace, RunLayout};

use crate::sample::sampler::CostTotals;
use crate::trace::{EndKind, PhaseName};
use crate::vmm::control::EndReason;
use crate::vmm::loader::LoadedKernel;
use crate::vmm::steps::{self, StartupSplit, Step, StepKind};
use crate::vmm::Until;

/// Sampling that takes more than this share of a boot's host time earns a warning.
pub const SAMPLING_SHARE_WARN_PCT: u64 = 30;

/// The sampler's cost over one run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SamplingCost {
    /// Samples taken.
    pub samples: u64,
    /// Sum of kick latencies, ns.
    pub kick_ns: u64,
    /// Sum of register captures, ns.
    pub capture_ns: u64,
    /// Sum of unwinds and counter reads, ns.
    pub unwind_ns: u64,
    /// Sum of hand-overs to the writer, ns.
    pub write_ns: u64,
    /// Kernel-mode samples whose unwind reached a clean end.
    pub complete_unwinds: u64,
    /// Kernel-mode samples unwound.
    pub unwound: u64,
    /// Samples taken before the kernel analysis was ready (RIP only).
    pub early: u64,
}

impl SamplingCost {
    /// A snapshot of the run's totals.
    pub fn from_totals(t: &CostTotals) -> SamplingCost {
        let get = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
        SamplingCost {
            samples: get(&t.samples),
            kick_ns: get(&t.kick_ns),
            capture_ns: get(&t.capture_ns),
            unwind_ns: get(&t.unwind_ns),
            write_ns: get(&t.write_ns),
            complete_unwinds: get(&t.complete),
            unwound: get(&t.unwound),
            early: get(&t.early),
        }
    }

    /// All time the sampler spent, ns.
    pub fn total_ns(&self) -> u64 {
        self.kick_ns
            .saturating_add(self.capture_ns)
            .saturating_add(self.unwind_ns)
            .saturating_add(self.write_ns)
    }

    /// Percent of `boot_ns` of host time the sampler spent.
    pub fn share_pct(&self, boot_ns: u64) -> u64 {
        self.total_ns().saturating_mul(100) / boot_ns.max(1)
    }
}

/// How one boot went.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Run index, from 0.
    pub run: u32,
    /// Runs asked for.
    pub runs: u32,
    /// Why the boot ended.
    pub end: EndReason,
    /// `end` as stored in the trace.
    pub end_kind: EndKind,
    /// When it ended, ns since the run's start.
    pub end_ns: u64,
    /// The kernel as the VMM loaded it (format, entry point, entry mode).
    pub kernel: LoadedKernel,
    /// The full kernel command line.
    pub cmdline: String,
    /// Phases in arrival order (ns since the run's start; the first run
    /// starts at process start).
    pub phases: Vec<(PhaseName, u64)>,
    /// The sampler's cost.
    pub sampling: SamplingCost,
    /// The kernel/decompressor layout found, if any.
    pub layout: Option<RunLayout>,
    /// Where the boot stopped, by symbol, when it stopped on a guest
    /// instruction the host could not run.
    pub stopped_at: Option<String>,
    /// What each virtio device did (requests, bytes, frames, breaks).
    pub devices: Vec<crate::vmm::virtio::DeviceStats>,
    /// True when the boot ended the way `--until` asked for.
    pub goal_reached: bool,
    /// Guest console lines beyond the per-run cap (counted, not kept).
    pub dropped_lines: u64,
    /// Phases beyond the per-run cap (counted, not kept).
    pub dropped_phases: u64,
    /// vCPU threads that did not stop when the boot ended.
    pub unstopped_vcpus: u32,
    /// Console and breakpoint costs.
    pub figures: crate::vmm::ExactFigures,
    /// Exact boundaries written, and dropped beyond the per-run cap.
    pub boundaries: (u64, u64),
    /// The start-up's steps, timed (ns since the run's start).
    pub startup: Vec<Step>,
}

impl RunSummary {
    /// Time of a phase, if reached.
    pub fn phase(&self, name: PhaseName) -> Option<u64> {
        self.phases.iter().find(|(n, _)| *n == name).map(|p| p.1)
    }

    /// First guest instruction to the end, when the boot got that far.
    pub fn boot_ns(&self) -> Option<u64> {
        self.phase(PhaseName::FirstInstruction)
            .map(|f| self.end_ns.saturating_sub(f))
    }

    /// True when the boot reached its `--until` goal (see [`goal_reached`]).
    pub fn reached_goal(&self) -> bool {
        self.goal_reached
    }

    /// The time to the first instruction split into boottrace's own and
    /// the KVM ioctls' on its critical path, when the boot got that far.
    pub fn startup_split(&self) -> Option<StartupSplit> {
        self.phase(PhaseName::FirstInstruction)
            .map(|first| steps::split(&self.startup, first))
    }

    /// The start-up's steps and its split, as lines for the reporter
    /// (empty when the boot did not reach its first instruction).
    pub fn startup_lines(&self) -> Vec<String> {
        let Some(split) = self.startup_split() else {
            return Vec::new();
        };
        let ms = |ns: u64| ns as f64 / 1e6;
        let mut out = vec![format!(
            "run {}: start-up steps (ms since {}; kvm: a KVM ioctl, the hypervisor's time)",
            self.run + 1,
            if self.run == 0 {
                "process start"
            } else {
                "run start"
            }
        )];
        for s in self.startup.iter().filter(|s| s.start_ns <= split.total_ns) {
            let what = match s.kind {
                StepKind::Kvm => " kvm".to_string(),
                StepKind::Wait(t) => format!(" (waits for {t})"),
                StepKind::Handoff(t) => format!(" ({t} goes on)"),
                StepKind::Own => String::new(),
            };
            out.push(format!(
                "  step {:<9} {:<28} at {:>8.3} took {:>8.3}{what}",
                s.thread,
                s.name,
                ms(s.start_ns),
                ms(s.took_ns())
            ));
        }
        out.push(format!(
            "  critical path to the first instruction: {:.3} ms = boottrace's own {:.3} ms + KVM ioctls {:.3} ms",
            ms(split.total_ns),
            ms(split.own_ns()),
            ms(split.kvm_ns)
        ));
        out
    }
}

/// Whether a boot that ended with `end` reached the goal `until`: the
/// first user-mode instruction for `user`, the marker for `marker`, a
/// matching line for `serial:`, a shutdown or reset for `shutdown`. Anything
/// else (a triple fault under `--until user`, a timeout, …) is a failed boot.
pub fn goal_reached(end: &EndReason, until: &Until) -> bool {
    match until {
        Until::User => matches!(end, EndReason::UserMode { .. }),
        Until::Marker => matches!(end, EndReason::Marker),
        Until::FirstInstruction => matches!(end, EndReason::FirstInstruction),
        Until::Serial(_) => matches!(end, EndReason::SerialMatch(_)),
        Until::Shutdown => matches!(end, EndReason::Shutdown(_) | EndReason::Reset),
        Until::Function(name) => matches!(end, EndReason::Function(n) if n == name),
    }
}

/// How the whole recording went.
#[derive(Debug, Clone)]
pub struct RecordSummary {
    /// The trace written.
    pub output: PathBuf,
    /// Records in it.
    pub records: u64,
    /// Samples per second per vCPU used.
    pub freq: u32,
    /// One summary per boot done.
    pub runs: Vec<RunSummary>,
}

/// Names the address where a boot stopped, through the run's layout: kernel
/// addresses from the image's own kallsyms, decompressor addresses as such.
pub fn symbol_near(
    image: &KernelImage,
    layout: Option<&RunLayout>,
    addr: u64,
    cpl: u8,
) -> Option<String> {
    match layout?.classify(addr, cpl) {
        AddrSpace::Kernel(link) => {
            let table = image.kallsyms_ref().ok()?;
            let (sym, off) = table.lookup(link)?;
            Some(format!("{}+{:#x} (kernel; image kallsyms)", sym.name, off))
        }
        AddrSpace::Decompressor(off) => Some(format!(
            "[decompressor]+{off:#x} (the bzImage's decompressor)"
        )),
        AddrSpace::Setup(a) => Some(format!("[setup] {a:#x}")),
        AddrSpace::User => Some("[user]".into()),
        AddrSpace::Unknown(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_share_is_checked_arithmetic() {
        let c = SamplingCost {
            samples: 10,
            kick_ns: 100,
            capture_ns: 100,
            unwind_ns: 50,
            write_ns: 50,
            ..SamplingCost::default()
        };
        assert_eq!(c.total_ns(), 300);
        assert_eq!(c.share_pct(1000), 30);
        assert_eq!(c.share_pct(0), 30_000);
        let huge = SamplingCost {
            kick_ns: u64::MAX,
            capture_ns: 1,
            ..SamplingCost::default()
        };
        assert_eq!(huge.total_ns(), u64::MAX);
    }
}
