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
