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
#[derive(Debug)]
pub struct StderrProgress {
    verbosity: Verbosity,
    prefix: &'static str,
}

impl StderrProgress {
    /// A reporter at `verbosity`.
    pub fn new(verbosity: Verbosity) -> Self {
        StderrProgress {
            verbosity,
            prefix: "boottrace",
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
        self.verbosity
            .console
            .then(|| Arc::new(StderrConsole) as Arc<dyn ConsoleEcho>)
    }
}

/// Echoes guest console lines to stderr with their time since the run's start.
struct StderrConsole;

impl ConsoleEcho for StderrConsole {
    fn line(&self, _run: u32, t_ns: u64, line: &str) {
        emit(&[format!("[{:>10.6}] {line}", t_ns as f64 / 1e9)]);
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
