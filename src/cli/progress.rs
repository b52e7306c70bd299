//! The command line's reporter: `record`'s status, summaries and the guest
//! console go to stderr, so stdout carries only a command's own output.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::record::live::{LiveState, LiveStatus};
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
/// Everything goes through one [`StderrQueue`], so neither a vCPU nor the
/// main thread waits on a slow terminal, and console and status keep their order.
pub struct StderrProgress {
    verbosity: Verbosity,
    prefix: &'static str,
    queue: Arc<StderrQueue>,
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
            queue: Arc::new(StderrQueue::start()),
        }
    }

    /// Lines start with `prefix:` (e.g. "boottrace diff").
    pub fn with_prefix(mut self, prefix: &'static str) -> Self {
        self.prefix = prefix;
        self
    }
}

impl Drop for StderrProgress {
    fn drop(&mut self) {
        // What is still queued goes out before the command's last words,
        // unless the terminal does not take it in time.
        self.queue.wait_empty(FINAL_DRAIN_WAIT);
    }
}

impl Progress for StderrProgress {
    fn status(&mut self, msg: &str) {
        self.queue.status(vec![format!("{}: {msg}", self.prefix)]);
    }

    fn detail(&mut self, msg: &str) {
        if self.verbosity.detail {
            self.queue.status(vec![format!("{}: {msg}", self.prefix)]);
        }
    }

    fn warning(&mut self, msg: &str) {
        self.queue
            .status(vec![format!("{}: warning: {msg}", self.prefix)]);
    }

    fn run_finished(&mut self, s: &RunSummary) {
        self.queue.status(summary_lines(self.prefix, s));
    }

    fn console(&mut self) -> Option<Arc<dyn ConsoleEcho>> {
        self.verbosity
            .console
            .then(|| self.queue.clone() as Arc<dyn ConsoleEcho>)
    }

    fn live(&mut self) -> Option<Arc<dyn LiveStatus>> {
        use std::io::IsTerminal;
        // A line redrawn in place belongs on a terminal only: not in a log,
        // not under -q, not for `diff`'s own recordings.
        let on_terminal = std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        (self.verbosity.console && on_terminal && self.queue.tx.is_some())
            .then(|| self.queue.clone() as Arc<dyn LiveStatus>)
    }
}

impl LiveStatus for StderrQueue {
    fn update(&self, s: &LiveState) {
        let line = format!("{}: {}", "boottrace", s.line());
        self.send_live(Some(line));
    }

    fn clear(&self) {
        self.send_live(None);
    }
}

/// Lines waiting for the terminal; console lines beyond this are dropped and
/// counted (a slow or stopped terminal must never hold up a vCPU).
pub const ECHO_QUEUE: usize = 4096;

/// How long a status line may wait for room in the queue before it is dropped.
const STATUS_WAIT: Duration = Duration::from_secs(1);

/// How long [`ConsoleEcho::drain`] waits after each run.
const RUN_DRAIN_WAIT: Duration = Duration::from_millis(500);

/// How long the reporter waits for its queue when it goes away.
const FINAL_DRAIN_WAIT: Duration = Duration::from_secs(2);

/// stderr written from a thread of its own through a bounded queue. Guest
/// console lines are `try_send`: dropped and counted when the queue is full;
/// their control characters are escaped. Status lines wait up to
/// `STATUS_WAIT` (1 s). A broken pipe (EPIPE) ends all writing quietly.
pub struct StderrQueue {
    tx: Option<mpsc::SyncSender<Out>>,
    state: Arc<QueueState>,
}

/// What the stderr thread writes: lines, or the live line (drawn in place
/// below them; `None` takes it away).
enum Out {
    Lines(Vec<String>),
    Live(Option<String>),
}

#[derive(Default)]
struct QueueState {
    /// Batches handed to the queue and not yet written.
    queued: AtomicU64,
    /// Console lines dropped because the queue was full (not yet reported).
    dropped: AtomicU64,
    /// Set when stderr failed (EPIPE, …): nothing more is written.
    closed: AtomicBool,
    /// Set when a status line found no room for [`STATUS_WAIT`]: later ones
    /// do not wait again until one gets through (a stopped terminal costs
    /// one wait, not one per line).
    stalled: AtomicBool,
}

impl StderrQueue {
    /// Starts the writer thread (without one, lines are written directly).
    fn start() -> StderrQueue {
        let (tx, rx) = mpsc::sync_channel::<Out>(ECHO_QUEUE);
        let state = Arc::new(QueueState::default());
        let st = state.clone();
        let spawned = std::thread::Builder::new()
            .name("stderr".into())
            .spawn(move || {
                let mut live: Option<String> = None;
                for out in rx {
                    let closed = st.closed.load(Ordering::Relaxed);
                    match out {
                        Out::Lines(lines) => {
                            if !closed && !write_around_live(&lines, live.as_deref()) {
                                st.closed.store(true, Ordering::Relaxed);
                            }
                            st.queued.fetch_sub(1, Ordering::Relaxed);
                        }
                        Out::Live(line) => {
                            if !closed && !draw_live(line.as_deref()) {
                                st.closed.store(true, Ordering::Relaxed);
                            }
                            live = line;
                        }
                    }
                }
            })
            .is_ok();
        StderrQueue {
            tx: spawned.then_some(tx),
            state,
        }
    }

    fn status(&self, lines: Vec<String>) {
        let Some(tx) = &self.tx else {
            write_lines(&lines);
            return;
        };
        let wait = if self.state.stalled.load(Ordering::Relaxed) {
            Duration::ZERO
        } else {
            STATUS_WAIT
        };
        let deadline = Instant::now() + wait;
        let mut batch = lines;
        self.state.queued.fetch_add(1, Ordering::Relaxed);
        loop {
            match tx.try_send(Out::Lines(batch)) {
                Ok(()) => {
                    self.state.stalled.store(false, Ordering::Relaxed);
                    return;
                }
                Err(mpsc::TrySendError::Full(Out::Lines(b)))
                    if Instant::now() < deadline && !self.state.closed.load(Ordering::Relaxed) =>
                {
                    batch = b;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => {
                    self.state.queued.fetch_sub(1, Ordering::Relaxed);
                    self.state.stalled.store(true, Ordering::Relaxed);
                    return;
                }
            }
        }
    }

    /// Hands the live line to the writer; a full queue skips this update
    /// (the next tick brings a newer one), except the final clear, which waits.
    fn send_live(&self, line: Option<String>) {
        let Some(tx) = &self.tx else { return };
        if line.is_some() {
            let _ = tx.try_send(Out::Live(line));
        } else {
            let deadline = Instant::now() + STATUS_WAIT;
            let mut msg = Out::Live(None);
            while let Err(mpsc::TrySendError::Full(m)) = tx.try_send(msg) {
                if Instant::now() >= deadline || self.state.closed.load(Ordering::Relaxed) {
                    return;
                }
                msg = m;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    fn wait_empty(&self, wait: Duration) {
        let deadline = Instant::now() + wait;
        while self.state.queued.load(Ordering::Relaxed) > 0
            && !self.state.closed.load(Ordering::Relaxed)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl ConsoleEcho for StderrQueue {
    fn line(&self, _run: u32, t_ns: u64, line: &str) {
        if self.state.closed.load(Ordering::Relaxed) {
            return;
        }
        let text = format!(
            "[{:>10.6}] {}",
            t_ns as f64 / 1e9,
            crate::vmm::devices::escape_controls(line)
        );
        let Some(tx) = &self.tx else {
            write_lines(&[text]);
            return;
        };
        self.state.queued.fetch_add(1, Ordering::Relaxed);
        if tx.try_send(Out::Lines(vec![text])).is_err() {
            self.state.queued.fetch_sub(1, Ordering::Relaxed);
            self.state.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn drain(&self) {
        self.wait_empty(RUN_DRAIN_WAIT);
        let dropped = self.state.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            self.status(vec![format!(
                "boottrace: warning: {dropped} console line(s) not echoed (the terminal was too slow); the trace has them"
            )]);
        }
    }
}

/// Writes lines to stderr; false when stderr failed (a closed stderr is not
/// worth failing a recording for, and is not written to again).
fn write_lines(lines: &[String]) -> bool {
    let mut err = std::io::stderr().lock();
    lines.iter().all(|l| writeln!(err, "{l}").is_ok())
}

/// Carriage return and erase-line: the live line's start.
const ERASE: &str = "\r\x1b[K";

/// Writes lines above the live line: erase it, write, draw it again.
fn write_around_live(lines: &[String], live: Option<&str>) -> bool {
    let Some(l) = live else {
        return write_lines(lines);
    };
    let mut err = std::io::stderr().lock();
    write!(err, "{ERASE}").is_ok()
        && lines.iter().all(|x| writeln!(err, "{x}").is_ok())
        && write!(err, "{l}").is_ok()
        && err.flush().is_ok()
}

/// Draws (or with `None` erases) the live line in place.
fn draw_live(line: Option<&str>) -> bool {
    let mut err = std::io::stderr().lock();
    write!(err, "{ERASE}{}", line.unwrap_or("")).is_ok() && err.flush().is_ok()
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
        if c.early > 0 {
            out.push(format!(
                "  {} sample(s) before the kernel analysis was ready (RIP only, not unwound)",
                c.early
            ));
        }
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
            startup: Vec::new(),
            stopped_at,
            devices: Vec::new(),
            goal_reached: true,
            dropped_lines: 0,
            dropped_phases: 0,
            unstopped_vcpus: 0,
            figures: crate::vmm::ExactFigures::default(),
            boundaries: (0, 0),
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
            early: 0,
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
