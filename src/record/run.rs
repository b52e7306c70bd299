//! One boot of a recording, in named steps: start the run, make its layout
//! detector and sampler, boot, write how it ended, summarize.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;

use crate::sample::sampler::{CostTotals, RecordSampler, SharedLayout};
use crate::sample::task::RunTasks;
use crate::trace::{
    Boundary, BoundaryKind, PhaseName, Record, RunEnd, RunStart, SamplerCost, TraceSink,
};
use crate::vmm::control::EndReason;
use crate::vmm::steps::StartupLog;
use crate::vmm::{self, BootConfig, BootOutcome};

use super::config::RecordConfig;
use super::kernel::Analysis;
use super::meta::unix_ns;
use super::observer::{end_kind, RunRecorder};
use super::progress::ConsoleEcho;
use super::summary::{symbol_near, RunSummary, SamplingCost};

/// What every run of one recording shares.
pub struct RunContext<'a> {
    /// The recording's configuration.
    pub cfg: &'a RecordConfig,
    /// The kernel's analysis (running beside the first boot).
    pub analysis: &'a Analysis,
    /// The VMM's configuration (the same for every run).
    pub boot: BootConfig,
    /// Samples per second per vCPU (0: none).
    pub freq: u32,
    /// Set once the KVM stat names were written (once per file).
    pub stat_names_written: Arc<AtomicBool>,
    /// Where the live progress line goes, if anywhere.
    pub live: Option<Arc<dyn super::live::LiveStatus>>,
}

/// A boot that could not start (no trace of it beyond its start record).
#[derive(Debug, thiserror::Error)]
#[error("boot {run} of {runs}")]
pub struct BootFailed {
    /// Run number, from 1.
    pub run: u32,
    /// Runs asked for.
    pub runs: u32,
}

impl RunContext<'_> {
    /// Boots once as run `run`, writing to `sink`.
    pub fn record_run(
        &self,
        run: u32,
        sink: &TraceSink,
        echo: Option<Arc<dyn ConsoleEcho>>,
        log: Option<Arc<StartupLog>>,
    ) -> Result<RunSummary> {
        let (recorder, t0) = self.start_run(run, sink, echo);
        // One layout detector per run: the sampler feeds it and the VMM asks
        // it for the KASLR slide (for the return-to-user breakpoint).
        let layout = Arc::new(SharedLayout::new(self.analysis.published.kernel.clone()));
        let totals = Arc::new(CostTotals::default());
        let sampler = self.sampler(run, sink, &layout, &totals);
        let ticker = self.live.clone().map(|live| {
            let rec = recorder.clone();
            super::live::Ticker::start(
                live,
                run,
                self.cfg.runs,
                t0,
                totals.clone(),
                Box::new(move || rec.phases().last().map(|(p, _)| p.to_string())),
            )
        });
        // The analysis gives the CPUs back to the boot's own threads from
        // the first instruction on (see `priority`).
        let observer: Arc<dyn vmm::RunObserver> = Arc::new(AtFirstInstruction {
            inner: recorder.clone(),
            then: self.analysis.priority.clone(),
        });
        let outcome = vmm::boot(
            &self.boot,
            t0,
            observer,
            sampler,
            Some(layout.clone() as Arc<dyn vmm::KernelLocator>),
            // The first run's log has `record`'s own steps since process start.
            log,
        )
        .map_err(|e| {
            anyhow::Error::new(e).context(BootFailed {
                run: run + 1,
                runs: self.cfg.runs,
            })
        });
        if let Some(t) = ticker {
            t.stop();
        }
        // A boot that never got to its first instruction does not keep the analysis low.
        self.analysis.priority.restore();
        let outcome = outcome?;
        if run == 0 {
            // The analysis ran beside this boot: its end is a phase of the
            // first run (on the process-start clock), after the boot's own
            // when the boot was shorter. Its failure ended the boot already.
            let (_, at) = self.analysis.pending().wait_timed();
            recorder.record_phase(PhaseName::KernelAnalysis, at);
        }
        let sampling = SamplingCost::from_totals(&totals);
        end_run(run, sink, &outcome, &sampling, recorder.boundary_counts().1);
        Ok(self.summarize(run, outcome, &recorder, sampling, layout.current()))
    }

    /// Writes the run's start.
    fn start_run(
        &self,
        run: u32,
        sink: &TraceSink,
        echo: Option<Arc<dyn ConsoleEcho>>,
    ) -> (Arc<RunRecorder>, Instant) {
        // The first run counts from process start, so reading the image shows.
        let t0 = if run == 0 {
            self.cfg.started
        } else {
            Instant::now()
        };
        let _ = sink.append(Record::RunStart(RunStart {
            run,
            wall_time_unix_ns: unix_ns(),
        }));
        let recorder = Arc::new(RunRecorder::new(run, sink.clone(), echo));
        (recorder, t0)
    }

    /// The run's sampler factory, when sampling.
    fn sampler(
        &self,
        run: u32,
        sink: &TraceSink,
        layout: &Arc<SharedLayout>,
        totals: &Arc<CostTotals>,
    ) -> Option<Arc<dyn vmm::SamplerFactory>> {
        (self.freq > 0).then(|| {
            Arc::new(RecordSampler {
                run,
                freq: self.freq,
                sink: sink.clone(),
                kernel: self.analysis.published.kernel.clone(),
                capture: self.cfg.capture,
                layout: layout.clone(),
                totals: totals.clone(),
                stat_names_written: self.stat_names_written.clone(),
                run_tasks: Arc::new(RunTasks::default()),
                // Off only to measure what blocked stacks cost (examples/bench-waits.sh).
                wait_stacks: std::env::var_os("BOOTTRACE_NO_WAIT_STACKS").is_none(),
            }) as Arc<dyn vmm::SamplerFactory>
        })
    }

    fn summarize(
        &self,
        run: u32,
        outcome: BootOutcome,
        recorder: &RunRecorder,
        sampling: SamplingCost,
        layout: Option<boottrace_symbols::layout::RunLayout>,
    ) -> RunSummary {
        let stopped_at = match &outcome.end {
            EndReason::EmulationFailure { rip, cpl, .. } => self
                .analysis
                .published
                .kernel
                .get()
                .and_then(|k| symbol_near(&k.image, layout.as_ref(), *rip, *cpl)),
            _ => None,
        };
        let goal_reached = super::summary::goal_reached(&outcome.end, &self.cfg.until);
        RunSummary {
            goal_reached,
            run,
            runs: self.cfg.runs,
            end_kind: end_kind(&outcome.end),
            end: outcome.end,
            end_ns: outcome.end_ns,
            kernel: outcome.kernel,
            cmdline: outcome.cmdline,
            phases: recorder.phases(),
            sampling,
            layout,
            stopped_at,
            devices: outcome.devices,
            dropped_lines: recorder.dropped_lines(),
            dropped_phases: recorder.dropped_phases(),
            unstopped_vcpus: outcome.unstopped_vcpus,
            figures: outcome.figures,
            boundaries: recorder.boundary_counts(),
            startup: outcome.startup,
        }
    }
}

/// The run's observer, which also restores the analysis' priority at the
/// first instruction (right after that phase is recorded).
struct AtFirstInstruction {
    inner: Arc<RunRecorder>,
    then: super::priority::StartupPriority,
}

impl vmm::RunObserver for AtFirstInstruction {
    fn phase(&self, phase: vmm::VmmPhase, t_ns: u64) {
        self.inner.phase(phase, t_ns);
        if phase == vmm::VmmPhase::FirstInstruction {
            self.then.restore();
        }
    }

    fn serial_line(&self, t_ns: u64, line: &str) {
        self.inner.serial_line(t_ns, line);
    }

    fn stop_reason(&self) -> Option<String> {
        self.inner.stop_reason()
    }

    fn boundaries(&self, hits: &[vmm::BoundaryHit]) {
        self.inner.boundaries(hits);
    }
}

/// Writes how the run ended and what sampling, the console and the
/// breakpoints cost (the last three as `Boundary` run figures).
fn end_run(run: u32, sink: &TraceSink, outcome: &BootOutcome, s: &SamplingCost, dropped: u64) {
    let f = &outcome.figures;
    let figure = |kind: BoundaryKind, value: u64, count: u64| {
        Record::Boundary(Boundary {
            run,
            t_ns: outcome.end_ns,
            kind,
            value: Some(value),
            count: Some(count),
            ..Boundary::default()
        })
    };
    let _ = sink.append(figure(
        BoundaryKind::Console,
        f.console_ns,
        f.console_accesses,
    ));
    let _ = sink.append(figure(
        BoundaryKind::BreakpointCost,
        f.bp_handle_ns,
        f.bp_exits,
    ));
    if dropped > 0 {
        let _ = sink.append(figure(BoundaryKind::Dropped, 0, dropped));
    }
    let _ = sink.append(Record::RunEnd(RunEnd {
        run,
        t_ns: outcome.end_ns,
        reason: end_kind(&outcome.end),
        detail: Some(outcome.end.to_string()),
    }));
    // After the run's end: counters are final only once the devices stopped.
    let _ = sink.append_batch(super::devices::device_records(run, &outcome.devices));
    let _ = sink.append(Record::SamplerCost(SamplerCost {
        run,
        samples: s.samples,
        total_kick_ns: s.kick_ns,
        total_capture_ns: s.capture_ns,
        total_unwind_ns: s.unwind_ns,
        total_write_ns: s.write_ns,
    }));
}
