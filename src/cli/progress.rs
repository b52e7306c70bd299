//! The command line's reporter: `record`'s status, summaries and the guest
//! console go to stderr, so stdout carries only a command's own output.

use std::io::Write;
use std::sync::Arc;

use crate::record::{ConsoleEcho, Progress, RunSummary};

/// How much the reporter shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verbosity {
    /// Echo the guest console (off with `-q`).
    pub console: bool,
    /// Show detail lines (`-v`).
    pub detail: bool,
}

/// Writes `record`'s progress to stderr, each line prefixed `boottrace:`.
pub struct StderrProgress {
    verbosity: Verbosity,
    prefix: &'static str,
    /// The console echo (one thread for all runs), started on first use.
    echo: Option<Arc<dyn ConsoleEcho>>,
}

impl std::fmt::Debug for StderrProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StderrProgress")
            .field("verbosity", &self.verbosity)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl StderrProgress {
    /// A reporter at `verbosity`.
    pub fn new(verbosity: Verbosity) -> Self {
        StderrProgress {
            verbosity,
            prefix: "boottrace",
            echo: None,
        }
    }

    /// Lines start with `prefix:` (e.g. "boottrace diff").
    pub fn with_prefix(mut self, prefix: &'static str) -> Self {
        self.prefix = prefix;
        self
    }
}

/// Writes lines to stderr; a closed stderr is not worth failing a recording for.
fn emit(lines: &[String]) {
    let mut err = std::io::stderr().lock();
    for l in lines {
        let _ = writeln!(err, "{l}");
    }
}

impl Progress for StderrProgress {
    fn status(&mut self, msg: &str) {
        emit(&[format!("{}: {msg}", self.prefix)]);
    }

    fn detail(&mut self, msg: &str) {
        if self.verbosity.detail {
            emit(&[format!("{}: {msg}", self.prefix)]);
        }
    }

    fn warning(&mut self, msg: &str) {
        emit(&[format!("{}: warning: {msg}", self.prefix)]);
    }

    fn run_finished(&mut self, s: &RunSummary) {
        emit(&summary_lines(self.prefix, s));
    }

    fn console(&mut self) -> Option<Arc<dyn ConsoleEcho>> {
        if !self.verbosity.console {
            return None;
        }
        if self.echo.is_none() {
            self.echo = StderrConsole::start().map(|c| Arc::new(c) as Arc<dyn ConsoleEcho>);
        }
        self.echo.clone()
    }
}

/// Console lines waiting for the terminal; beyond this they are dropped and
/// counted (a slow or stopped terminal must never hold up a vCPU).
pub const ECHO_QUEUE: usize = 4096;

/// How long [`ConsoleEcho::drain`] waits for the queue to empty.
const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Echoes guest console lines to stderr with their time since the run's
/// start, from its own thread: vCPU threads only `try_send` into a bounded
/// queue. Control characters are escaped; a broken pipe ends echoing quietly.
struct StderrConsole {
    tx: std::sync::mpsc::SyncSender<String>,
    state: Arc<EchoState>,
}

#[derive(Default)]
struct EchoState {
    /// Lines handed to the queue and not yet written.
    queued: std::sync::atomic::AtomicU64,
    /// Lines dropped because the queue was full (not yet reported).
    dropped: std::sync::atomic::AtomicU64,
    /// Set when stderr failed (EPIPE, …): nothing more is echoed.
    closed: std::sync::atomic::AtomicBool,
}

impl StderrConsole {
    fn start() -> Option<StderrConsole> {
        use std::sync::atomic::Ordering;
        let (tx, rx) = std::sync::mpsc::sync_channel::<String>(ECHO_QUEUE);
        let state = Arc::new(EchoState::default());
        let st = state.clone();
        std::thread::Builder::new()
            .name("console-echo".into())
            .spawn(move || {
                for line in rx {
                    let mut err = std::io::stderr().lock();
                    if !st.closed.load(Ordering::Relaxed) && writeln!(err, "{line}").is_err() {
                        st.closed.store(true, Ordering::Relaxed);
                    }
                    st.queued.fetch_sub(1, Ordering::Relaxed);
                }
            })
            .ok()?;
        Some(StderrConsole { tx, state })
    }
}

impl ConsoleEcho for StderrConsole {
    fn line(&self, _run: u32, t_ns: u64, line: &str) {
        use std::sync::atomic::Ordering;
        if self.state.closed.load(Ordering::Relaxed) {
            return;
        }
        let text = format!(
            "[{:>10.6}] {}",
            t_ns as f64 / 1e9,
            crate::vmm::devices::escape_controls(line)
        );
        self.state.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.try_send(text).is_err() {
            self.state.queued.fetch_sub(1, Ordering::Relaxed);
            self.state.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn drain(&self) {
        use std::sync::atomic::Ordering;
        let deadline = std::time::Instant::now() + DRAIN_WAIT;
        while self.state.queued.load(Ordering::Relaxed) > 0
            && !self.state.closed.load(Ordering::Relaxed)
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let dropped = self.state.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 && !self.state.closed.load(Ordering::Relaxed) {
            emit(&[format!(
                "boottrace: warning: {dropped} console line(s) not echoed (the terminal was too slow); the trace has them"
            )]);
        }
    }
}

/// A run's summary as text: the end, the phase table, boot time and sampling cost.
pub fn summary_lines(prefix: &str, s: &RunSummary) -> Vec<String> {
    let mut out = vec![format!(
        "{prefix}: run {}/{}: boot ended: {}",
        s.run + 1,
        s.runs,
        s.end
    )];
    if let Some(at) = &s.stopped_at {
        out.push(format!("  at {at}"));
    }
    out.push(format!(
        "  phase               t (ms since {})",
        if s.run == 0 {
            "process start"
        } else {
            "run start"
        }
    ));
    for (name, t) in &s.phases {
        out.push(format!("  {:<18} {:>12.3}", name.as_str(), *t as f64 / 1e6));
    }
    if let Some(boot) = s.boot_ns() {
        out.push(format!(
            "  boot time (first guest instruction -> end): {:.3} ms",
            boot as f64 / 1e6
        ));
    }
    for d in &s.devices {
        out.push(format!("  {d}"));
    }
    let c = &s.sampling;
    if c.samples > 0 {
        let per = |v: u64| v as f64 / c.samples as f64 / 1e3;
        out.push(format!(
            "  samples: {}; per sample: kick {:.1} us, capture {:.1} us, unwind+counters {:.1} us, write {:.1} us; complete unwinds {}/{} kernel-mode samples",
            c.samples,
            per(c.kick_ns),
            per(c.capture_ns),
            per(c.unwind_ns),
            per(c.write_ns),
            c.complete_unwinds,
            c.unwound,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::summary::SamplingCost;
    use crate::trace::{EndKind, PhaseName};
    use crate::vmm::control::EndReason;
    use crate::vmm::loader::{EntryMode, KernelFormat, LoadedKernel};

    fn summary(run: u32, sampling: SamplingCost, stopped_at: Option<String>) -> RunSummary {
        RunSummary {
            run,
            runs: 3,
            end: EndReason::Marker,
            end_kind: EndKind::Marker,
            end_ns: 9_000_000,
            kernel: LoadedKernel {
                format: KernelFormat::Elf,
                entry: 0x100_0000,
                mode: EntryMode::Pvh32,
                load_addr: 0x100_0000,
                reserved_end: 0x200_0000,
                setup_header: None,
                cmdline_max: 2047,
                initrd_addr_max: 0x3fff_ffff,
            },
            cmdline: "console=ttyS0".into(),
            phases: vec![
                (PhaseName::CreateVm, 1_000_000),
                (PhaseName::FirstInstruction, 2_500_000),
                (PhaseName::End, 9_000_000),
            ],
            sampling,
            layout: None,
            stopped_at,
            devices: Vec::new(),
            goal_reached: true,
            dropped_lines: 0,
            dropped_phases: 0,
            unstopped_vcpus: 0,
        }
    }

    #[test]
    fn summary_has_the_end_phases_boot_time_and_cost() {
        let cost = SamplingCost {
            samples: 4,
            kick_ns: 8_000,
            capture_ns: 4_000,
            unwind_ns: 12_000,
            write_ns: 2_000,
            complete_unwinds: 3,
            unwound: 4,
        };
        let lines = summary_lines("boottrace", &summary(1, cost, Some("foo+0x3".into())));
        assert_eq!(
            lines[0],
            format!("boottrace: run 2/3: boot ended: {}", EndReason::Marker)
        );
        assert_eq!(lines[1], "  at foo+0x3");
        assert!(lines[2].ends_with("(ms since run start)"), "{lines:?}");
        assert_eq!(lines[3], format!("  {:<18} {:>12.3}", "create_vm", 1.0));
        assert!(lines.contains(&"  boot time (first guest instruction -> end): 6.500 ms".into()));
        let cost_line = lines.last().expect("cost line");
        assert!(
            cost_line.contains("samples: 4; per sample: kick 2.0 us, capture 1.0 us, unwind+counters 3.0 us, write 0.5 us; complete unwinds 3/4"),
            "{cost_line}"
        );
    }

    #[test]
    fn first_run_counts_from_process_start_and_no_samples_no_cost_line() {
        let lines = summary_lines("boottrace", &summary(0, SamplingCost::default(), None));
        assert!(lines[1].ends_with("(ms since process start)"), "{lines:?}");
        assert!(!lines.iter().any(|l| l.contains("samples:")));
        assert!(!lines.iter().any(|l| l.starts_with("  at ")));
    }
}
