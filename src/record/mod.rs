//! `boottrace record`: boot a kernel (N times), sample it, write the trace,
//! and report how each boot went through a [`Progress`] (this module prints
//! nothing).
//!
//! - [`config`]: [`RecordConfig`], what to record (plain values, no clap).
//! - [`kernel`]: the kernel image, read once for all runs.
//! - [`meta`]: the trace's metadata record.
//! - [`run`]: one boot, in named steps.
//! - [`observer`]: phases and console lines of a run, into the trace.
//! - [`priority`]: the kernel analysis gives way to the VMM's start-up.
//! - [`prime`]: the host's slow first perf event, opened beside the start-up.
//! - [`summary`]: what each boot and the recording report back.
//! - [`devices`]: each virtio device's counters, into the trace.
//! - [`sweep`]: `boottrace sweep`, boots over a range of settings.
//! - [`progress`]: the reporter trait.

pub mod config;
pub mod devices;
pub mod kernel;
pub mod live;
pub mod meta;
pub mod observer;
pub mod prime;
pub mod priority;
pub mod progress;
pub mod run;
pub mod summary;
pub mod sweep;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};

use crate::trace::{TraceWriter, TraceWriterThread};
use crate::vmm::compat::CompatMode;
use crate::vmm::loader::KernelFormat;
use crate::vmm::memory::MemoryOptions;
use crate::vmm::steps::{StartupLog, Step, StepKind, MAIN_THREAD as MAIN};
use crate::vmm::{self, BootConfig};

pub use config::{RecordConfig, DEFAULT_FREQ, PVM_DEFAULT_FREQ};
pub use progress::{ConsoleEcho, Progress, Silent};
pub use summary::{RecordSummary, RunSummary, SAMPLING_SHARE_WARN_PCT};

/// Records `cfg.runs` boots into `cfg.output`. Fails when an input is
/// missing, the trace cannot be written, a boot cannot start, or no boot
/// reached its end condition (the trace keeps whatever was recorded).
pub fn record(cfg: &RecordConfig, progress: &mut dyn Progress) -> Result<RecordSummary> {
    // The first run's start-up counts from process start: `record`'s own
    // steps before the VMM's are part of it.
    let startup = Arc::new(StartupLog::new(cfg.started));
    startup.push(Step {
        thread: MAIN,
        name: "arguments, reporter",
        kind: StepKind::Own,
        start_ns: 0,
        end_ns: startup.now_ns(),
    });
    let compat = startup.time(MAIN, "host check", StepKind::Own, || {
        CompatMode::resolve(cfg.compat)
    });
    let freq = cfg.freq_for(compat);
    // Only a sampling vCPU opens perf events; kept until the first run is over.
    let mut primer = (freq > 0)
        .then(|| startup.time(MAIN, "perf primer", StepKind::Own, prime::PerfPrimer::start))
        .flatten();
    if compat == CompatMode::Pvm {
        progress.status(&format!(
            "PVM nested-KVM host: applying workarounds ({}); guest times are emulated-KVM times, ~1000x bare metal",
            compat.workarounds().join("; ")
        ));
    }
    startup.time(MAIN, "check inputs", StepKind::Own, || check_inputs(cfg))?;
    // The kernel is analysed (decompression, ORC, kallsyms, type info,
    // hashing) on a thread of its own while the VMM starts: nothing of it is
    // needed before the guest's first instruction. Only a skipped
    // decompressor needs the payload extracted first.
    let analysis = startup.time(MAIN, "kernel header, analysis", StepKind::Own, || {
        kernel::Analysis::start(cfg)
    })?;
    if analysis.priority.holds() {
        progress.detail(&format!(
            "kernel analysis starts at the first instruction (fewer than {} CPUs: beside the start-up it would slow it)",
            priority::HOLD_BELOW_CPUS
        ));
    }
    // Exact boundaries (initcalls, named points) are watched once the
    // analysis has the symbols. An unknown --until function is a usage error
    // before anything is written, so that one case waits for the symbols.
    let boundaries = match &cfg.until {
        vmm::Until::Function(_) => {
            let facts = analysis.wait()?;
            let links = Arc::new(std::sync::OnceLock::new());
            let _ = links.set(kernel::boundary_links(&facts.image, &cfg.until)?);
            links
        }
        _ => analysis.published.boundaries.clone(),
    };
    if cfg.skip_decompressor {
        progress.status(
            "booting the bzImage's ELF payload directly (--skip-decompressor: no decompression, no KASLR)",
        );
    }
    let writer = open_trace(cfg, &analysis, compat, freq, &startup)?;
    let mut startup = Some(startup);
    let ctx = run::RunContext {
        cfg,
        analysis: &analysis,
        boot: boot_config(cfg, &analysis, compat, boundaries),
        freq,
        stat_names_written: Arc::new(AtomicBool::new(false)),
        live: progress.live(),
    };
    let mut runs = Vec::new();
    for i in 0..cfg.runs {
        let sink = writer.sink();
        let echo = progress.console();
        let summary = match ctx.record_run(i, &sink, echo.clone(), startup.take()) {
            Ok(s) => s,
            Err(e) => {
                // Keep what earlier runs recorded: the file stays readable.
                drop(sink);
                let _ = writer.finish();
                // A boot that could not start from an image the analysis
                // refused: the analysis says what is wrong with the image.
                analysis.wait()?;
                return Err(e);
            }
        };
        drop(primer.take());
        if let Some(e) = &echo {
            // Console lines still queued for the terminal go out before the summary.
            e.drain();
        }
        if i == 0 {
            // The analysis is over by now (the first run waited for it).
            if let Ok(facts) = analysis.wait() {
                progress.status(&facts.tasks_note);
            }
        }
        report_run(progress, &summary, &unwinder_name(&analysis, freq), freq);
        let stuck = summary.unstopped_vcpus > 0;
        runs.push(summary);
        if vmm::was_interrupted() || stuck {
            // A stuck vCPU thread keeps running: no further boot beside it.
            break;
        }
    }
    let records = writer
        .finish()
        .with_context(|| format!("cannot finish {}", cfg.output.display()));
    // A failed analysis says why first (the writer only saw its message).
    analysis.wait()?;
    let records = records?;
    progress.status(&format!(
        "wrote {} ({records} records)",
        cfg.output.display()
    ));
    let failed = runs.iter().filter(|r| !r.reached_goal()).count();
    if failed == runs.len() {
        let end = runs
            .last()
            .map_or(vmm::control::EndReason::Interrupted, |r| r.end.clone());
        return Err(GoalMissed {
            failed,
            runs: runs.len(),
            end,
        }
        .into());
    }
    Ok(RecordSummary {
        output: cfg.output.clone(),
        records,
        freq,
        runs,
    })
}

/// No boot of a recording reached its `--until` goal; `end` is how the last
/// one ended (the command line maps it to an exit status).
#[derive(Debug, thiserror::Error)]
#[error("no boot reached its end condition ({failed} of {runs} ended otherwise; the trace keeps what they did)")]
pub struct GoalMissed {
    /// Boots that missed the goal.
    pub failed: usize,
    /// Boots done.
    pub runs: usize,
    /// How the last boot ended.
    pub end: vmm::control::EndReason,
}

/// Missing inputs are a one-line error before anything is written.
fn check_inputs(cfg: &RecordConfig) -> Result<()> {
    if !cfg.kernel.exists() {
        bail!("kernel image {} does not exist", cfg.kernel.display());
    }
    if let Some(i) = &cfg.initrd {
        if !i.exists() {
            bail!("initrd {} does not exist", i.display());
        }
    }
    if cfg.runs == 0 {
        bail!("--runs must be at least 1");
    }
    // Disks, taps and --root before the kernel is read or the trace written.
    cfg.virtio.check()?;
    Ok(())
}

/// The unwinder the trace names (known once the analysis is over).
fn unwinder_name(analysis: &kernel::Analysis, freq: u32) -> crate::trace::UnwinderKind {
    match analysis.wait() {
        Ok(f) if freq > 0 => f.unwinder_kind.clone(),
        _ => crate::trace::UnwinderKind::None,
    }
}

/// The VMM's configuration, the same for every run.
fn boot_config(
    cfg: &RecordConfig,
    analysis: &kernel::Analysis,
    compat: CompatMode,
    boundaries: Arc<std::sync::OnceLock<vmm::breakpoints::BoundaryLinks>>,
) -> BootConfig {
    BootConfig {
        kernel: analysis.boot_path.clone(),
        initrd: cfg.initrd.clone(),
        cmdline_extra: cfg.cmdline_extra.clone(),
        mem: MemoryOptions {
            size: cfg.mem,
            hugepages: cfg.hugepages,
            populate: cfg.populate,
        },
        cpus: cfg.cpus,
        timeout: cfg.timeout.max(std::time::Duration::from_millis(1)),
        until: cfg.until.clone(),
        compat,
        user_return_link: analysis.published.user_return_link.clone(),
        virtio: cfg.virtio.clone(),
        boundaries,
    }
}

/// Moves an existing trace aside (like perf.data.old, so a new recording
/// never destroys an old one) and starts the writer. Only a regular file is
/// moved; a symlink, directory or device at the path is refused. The
/// metadata (it names the image's hash) is written once the analysis is
/// over; records wait for it in the writer's queue.
fn open_trace(
    cfg: &RecordConfig,
    analysis: &kernel::Analysis,
    compat: CompatMode,
    freq: u32,
    log: &StartupLog,
) -> Result<TraceWriterThread> {
    let path = &cfg.output;
    let file = log.time(MAIN, "trace file (old one moved)", StepKind::Own, || {
        crate::output::create_in_place(path, crate::output::Backup::Old)
    })?;
    let pending = analysis.pending();
    let cfg = cfg.clone();
    let wall_start = meta::unix_ns();
    let meta = Box::new(move || {
        let facts = pending.wait().map_err(|e| format!("{e:#}"))?;
        let mut m = meta::trace_meta(&cfg, &facts, compat, freq);
        m.wall_start_unix_ns = wall_start;
        Ok(m)
    });
    log.time(MAIN, "trace writer thread", StepKind::Own, || {
        TraceWriter::spawn_deferred(path.to_path_buf(), file, meta)
    })
    .with_context(|| format!("cannot create {}", path.display()))
}

/// Console output taking more than this share of a boot earns a warning.
pub const CONSOLE_SHARE_WARN_PCT: f64 = 10.0;

/// The run's console cost and exact boundaries, and what the breakpoints cost.
fn report_exact(progress: &mut dyn Progress, s: &RunSummary) {
    let f = &s.figures;
    let n = s.run + 1;
    if let Some(boot) = s.boot_ns().filter(|&b| b > 0) {
        let share = 100.0 * f.console_ns as f64 / boot as f64;
        if f.console_accesses > 0 {
            progress.status(&format!(
                "run {n}: console output took {:.1} ms ({share:.1}% of the boot, {} UART accesses)",
                f.console_ns as f64 / 1e6,
                f.console_accesses
            ));
        }
        if share > CONSOLE_SHARE_WARN_PCT {
            progress.warning(&format!(
                "run {n}: the guest spent {share:.0}% of its boot writing to the serial console; a quieter console (quiet, no initcall_debug, a lower loglevel) boots faster"
            ));
        }
    }
    let (kept, dropped) = s.boundaries;
    if f.bp_exits > 0 {
        progress.status(&format!(
            "run {n}: {kept} exact boundaries from {} breakpoint exits ({:.1} us each in the VMM)",
            f.bp_exits,
            f.bp_handle_ns as f64 / 1e3 / f.bp_exits as f64
        ));
    }
    if dropped > 0 {
        progress.warning(&format!(
            "run {n}: {dropped} boundaries beyond the per-run cap of {} were counted, not kept",
            observer::MAX_BOUNDARIES
        ));
    }
}

/// Hands a finished run to the reporter: the first run's boot facts, the
/// summary, the layout (detail) and the sampling-cost warning.
fn report_run(
    progress: &mut dyn Progress,
    s: &RunSummary,
    unwinder: &crate::trace::UnwinderKind,
    freq: u32,
) {
    if s.run == 0 {
        let format = if s.kernel.format == KernelFormat::BzImage {
            "bzImage"
        } else {
            "ELF"
        };
        progress.status(&format!(
            "{format} kernel, entry {:#x} ({:?}), unwinder {unwinder}, sampling at {freq} Hz per vCPU",
            s.kernel.entry, s.kernel.mode
        ));
        progress.status(&format!("kernel command line: {}", s.cmdline));
    }
    progress.run_finished(s);
    if let Some(l) = &s.layout {
        progress.detail(&format!(
            "run {}: kernel slide {:#x} ({}), physical start {}",
            s.run + 1,
            l.kernel_virt_slide,
            l.virt_slide_method,
            l.kernel_phys_start
                .map_or_else(|| "unknown".to_string(), |p| format!("{p:#x}"))
        ));
    }
    if s.dropped_lines > 0 || s.dropped_phases > 0 {
        progress.warning(&format!(
            "run {}: the guest printed {} console line(s) and reached {} phase(s) beyond the per-run caps ({} lines, {} phases); counted, not kept",
            s.run + 1,
            s.dropped_lines,
            s.dropped_phases,
            observer::MAX_CONSOLE_LINES,
            observer::MAX_PHASES
        ));
    }
    report_exact(progress, s);
    // Every start-up step, timed: shown for the recording that measures
    // start-up (--until first-instruction), else with -v.
    for line in s.startup_lines() {
        if matches!(s.end, vmm::control::EndReason::FirstInstruction) {
            progress.status(&line);
        } else {
            progress.detail(&line);
        }
    }
    if s.unstopped_vcpus > 0 {
        progress.warning(&format!(
            "run {}: {} vCPU thread(s) did not stop; no further runs",
            s.run + 1,
            s.unstopped_vcpus
        ));
    }
    if s.sampling.samples > 0 {
        let share = s.sampling.share_pct(s.end_ns);
        if share > SAMPLING_SHARE_WARN_PCT {
            progress.warning(&format!(
                "sampling took {share}% of run {}'s host time; lower -F for a less perturbed boot",
                s.run + 1
            ));
        }
    }
}
