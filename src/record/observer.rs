//! The VMM's observer for one run: phases and console lines go to the trace
//! (and the console, live, to the caller's echo).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::trace::{Boundary, BoundaryKind, EndKind, Phase, PhaseName, Record, Serial, TraceSink};
use crate::vmm::breakpoints::{HitKind, NamedBoundary};
use crate::vmm::control::EndReason;
use crate::vmm::{BoundaryHit, RunObserver, VmmPhase};

use super::progress::ConsoleEcho;

/// The trace's name for a VMM phase.
pub fn phase_name(p: VmmPhase) -> PhaseName {
    match p {
        VmmPhase::CreateVm => PhaseName::CreateVm,
        VmmPhase::Memory => PhaseName::Memory,
        VmmPhase::LoadKernel => PhaseName::LoadKernel,
        VmmPhase::Vcpus => PhaseName::Vcpus,
        VmmPhase::FirstInstruction => PhaseName::FirstInstruction,
        VmmPhase::BootMarker => PhaseName::BootMarker,
        VmmPhase::UserMode => PhaseName::UserMode,
        VmmPhase::End => PhaseName::End,
    }
}

/// The trace's kind for how a boot ended.
pub fn end_kind(e: &EndReason) -> EndKind {
    match e {
        EndReason::UserMode { .. } => EndKind::User,
        EndReason::Reset => EndKind::Reset,
        EndReason::Shutdown(_) => EndKind::Shutdown,
        EndReason::Panic(_) => EndKind::Panic,
        EndReason::Marker => EndKind::Marker,
        EndReason::FirstInstruction => EndKind::FirstInstruction,
        EndReason::Function(_) => EndKind::Function,
        EndReason::SerialMatch(_) => EndKind::Serial,
        EndReason::Timeout(_) => EndKind::Timeout,
        EndReason::EmulationFailure { .. } => EndKind::EmulationFailure,
        EndReason::VcpuError(_) => EndKind::VcpuError,
        EndReason::Interrupted => EndKind::Interrupted,
        EndReason::HostError(_) => EndKind::HostError,
    }
}

/// Console lines kept per run (in the trace and echoed); later lines are
/// only counted, so a guest printing in a loop cannot fill the disk.
pub const MAX_CONSOLE_LINES: u64 = 200_000;

/// Phases kept per run (a boot has about ten); later ones are counted.
pub const MAX_PHASES: usize = 256;

/// Exact boundaries kept per run (a kernel has a few hundred initcalls, two
/// boundaries each); later ones are counted, so a guest calling
/// `do_one_initcall` in a loop cannot fill the disk.
pub const MAX_BOUNDARIES: u64 = 100_000;

/// The trace's kind for a breakpoint hit.
pub fn boundary_kind(k: HitKind) -> BoundaryKind {
    match k {
        HitKind::InitcallStart => BoundaryKind::InitcallStart,
        HitKind::InitcallEnd => BoundaryKind::InitcallEnd,
        HitKind::Until => BoundaryKind::UntilFunction,
        HitKind::Named(n) => match n {
            NamedBoundary::StartKernel => BoundaryKind::StartKernel,
            NamedBoundary::RestInit => BoundaryKind::RestInit,
            NamedBoundary::KernelInit => BoundaryKind::KernelInit,
            NamedBoundary::FreeInitmem => BoundaryKind::FreeInitmem,
            NamedBoundary::ExecInit => BoundaryKind::ExecInit,
        },
    }
}

/// Writes a run's phases and console lines to the trace and keeps the
/// phases for the summary, within [`MAX_PHASES`] and [`MAX_CONSOLE_LINES`].
pub struct RunRecorder {
    run: u32,
    sink: TraceSink,
    echo: Option<Arc<dyn ConsoleEcho>>,
    phases: Mutex<Vec<(PhaseName, u64)>>,
    lines: AtomicU64,
    dropped_phases: AtomicU64,
    boundaries: AtomicU64,
}

impl RunRecorder {
    /// A recorder for run `run`.
    pub fn new(run: u32, sink: TraceSink, echo: Option<Arc<dyn ConsoleEcho>>) -> Self {
        RunRecorder {
            run,
            sink,
            echo,
            phases: Mutex::new(Vec::new()),
            lines: AtomicU64::new(0),
            dropped_phases: AtomicU64::new(0),
            boundaries: AtomicU64::new(0),
        }
    }

    /// Records a phase (VMM phases arrive through [`RunObserver::phase`]).
    pub fn record_phase(&self, name: PhaseName, t_ns: u64) {
        // The end phase is always kept; others only within the cap.
        let keep = match self.phases.lock() {
            Ok(mut p) if p.len() < MAX_PHASES || name == PhaseName::End => {
                p.push((name.clone(), t_ns));
                true
            }
            _ => false,
        };
        if !keep {
            self.dropped_phases.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let _ = self.sink.append(Record::Phase(Phase {
            run: self.run,
            name,
            t_ns,
        }));
    }

    /// Console lines the guest printed beyond [`MAX_CONSOLE_LINES`] (not kept).
    pub fn dropped_lines(&self) -> u64 {
        self.lines
            .load(Ordering::Relaxed)
            .saturating_sub(MAX_CONSOLE_LINES)
    }

    /// Boundaries written and dropped beyond [`MAX_BOUNDARIES`].
    pub fn boundary_counts(&self) -> (u64, u64) {
        let n = self.boundaries.load(Ordering::Relaxed);
        (n.min(MAX_BOUNDARIES), n.saturating_sub(MAX_BOUNDARIES))
    }

    /// Phases beyond [`MAX_PHASES`] (not kept).
    pub fn dropped_phases(&self) -> u64 {
        self.dropped_phases.load(Ordering::Relaxed)
    }

    /// The phases so far, in arrival order.
    pub fn phases(&self) -> Vec<(PhaseName, u64)> {
        self.phases.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

impl RunObserver for RunRecorder {
    fn stop_reason(&self) -> Option<String> {
        self.sink
            .failure()
            .map(|e| format!("cannot write the trace: {e}"))
    }

    fn phase(&self, phase: VmmPhase, t_ns: u64) {
        self.record_phase(phase_name(phase), t_ns);
    }

    fn boundaries(&self, hits: &[BoundaryHit]) {
        let mut recs = Vec::with_capacity(hits.len());
        for h in hits {
            if self.boundaries.fetch_add(1, Ordering::Relaxed) >= MAX_BOUNDARIES {
                continue;
            }
            recs.push(Record::Boundary(Boundary {
                run: self.run,
                vcpu: h.vcpu,
                t_ns: h.t_ns,
                tsc: h.tsc,
                kind: boundary_kind(h.hit.kind),
                addr: h.hit.addr,
                link: h.slide.map(|s| h.hit.addr.wrapping_sub(s as u64)),
                ret: h.hit.ret,
                value: None,
                count: None,
            }));
        }
        // One hand-over (one wake-up of the writer) for the whole batch.
        let _ = self.sink.append_batch(recs);
    }

    fn serial_line(&self, t_ns: u64, line: &str) {
        if self.lines.fetch_add(1, Ordering::Relaxed) >= MAX_CONSOLE_LINES {
            return;
        }
        if let Some(echo) = &self.echo {
            echo.line(self.run, t_ns, line);
        }
        let _ = self.sink.append(Record::Serial(Serial {
            run: self.run,
            t_ns,
            line: line.to_string(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{Trace, TraceMeta, TraceWriter};
    use crate::vmm::breakpoints::Hit;

    #[test]
    fn boundaries_arrive_as_one_batch_each_kept_within_the_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("b.data");
        let w = TraceWriter::create(&path, &TraceMeta::default())
            .expect("writer")
            .spawn()
            .expect("writer thread");
        let r = RunRecorder::new(0, w.sink(), None);
        let hit = |i: u64| BoundaryHit {
            vcpu: (i % 2) as u32,
            t_ns: 1000 + i,
            tsc: Some(5000 + i),
            hit: Hit {
                kind: if i % 2 == 0 {
                    HitKind::InitcallStart
                } else {
                    HitKind::InitcallEnd
                },
                addr: 0xffff_ffff_8100_0000,
                ret: (i % 2 == 1).then_some(-19),
            },
            slide: Some(0x20_0000),
        };
        let batch: Vec<BoundaryHit> = (0..4).map(hit).collect();
        r.boundaries(&batch);
        r.boundaries(&[]);
        w.finish().expect("finish");
        let t = Trace::open(&path).expect("trace");
        let b = &t.runs[0].boundaries;
        assert_eq!(b.len(), 4);
        assert_eq!(b[1].kind, BoundaryKind::InitcallEnd);
        assert_eq!(
            (b[1].vcpu, b[1].t_ns, b[1].tsc, b[1].ret),
            (1, 1001, Some(5001), Some(-19))
        );
        assert_eq!(b[1].link, Some(0xffff_ffff_80e0_0000));
        assert_eq!(r.boundary_counts(), (4, 0));
        // Beyond the cap boundaries are counted, not written.
        r.boundaries.store(MAX_BOUNDARIES - 1, Ordering::Relaxed);
        let rest: Vec<BoundaryHit> = (4..7).map(hit).collect();
        r.boundaries(&rest);
        assert_eq!(r.boundary_counts(), (MAX_BOUNDARIES, 2));
    }

    #[test]
    fn end_kinds_keep_the_names_of_end_reason_kind() {
        let reasons = [
            EndReason::UserMode {
                vcpu: 0,
                rip: 0,
                how: "test",
            },
            EndReason::Reset,
            EndReason::Shutdown(String::new()),
            EndReason::Panic(String::new()),
            EndReason::Marker,
            EndReason::FirstInstruction,
            EndReason::Function(String::new()),
            EndReason::SerialMatch(String::new()),
            EndReason::Timeout(std::time::Duration::ZERO),
            EndReason::EmulationFailure {
                vcpu: 0,
                rip: 0,
                bytes: Vec::new(),
                cpl: 0,
                suberror: 0,
            },
            EndReason::VcpuError(String::new()),
            EndReason::Interrupted,
            EndReason::HostError(String::new()),
        ];
        for r in &reasons {
            let k = end_kind(r);
            assert_eq!(k.as_str(), r.kind(), "{r:?}");
            assert!(!matches!(k, EndKind::Other(_)));
        }
    }
}
