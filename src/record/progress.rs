//! How `record` tells its caller what is happening. Library code does not
//! print: the command line's implementation (`cli::progress`) writes to
//! stderr, `diff` reuses it, tests collect or ignore.

use std::sync::Arc;

use super::summary::RunSummary;

/// Receives `record`'s status as it goes.
pub trait Progress {
    /// A status line worth showing by default (host workarounds, what is
    /// booted, where the trace went).
    fn status(&mut self, msg: &str);
    /// A line worth showing only when asked for detail (`-v`).
    fn detail(&mut self, msg: &str);
    /// Something that went wrong without stopping the recording.
    fn warning(&mut self, msg: &str);
    /// One boot ended.
    fn run_finished(&mut self, summary: &RunSummary);
    /// Where guest console lines go as they arrive, if anywhere. Called once
    /// per run; the echo is used from vCPU threads.
    fn console(&mut self) -> Option<Arc<dyn ConsoleEcho>>;
    /// Where the live progress line goes while a boot runs, if anywhere
    /// (asked once per recording; used from a ticker thread).
    fn live(&mut self) -> Option<Arc<dyn super::live::LiveStatus>> {
        None
    }
}

/// Shows guest console lines live (from the vCPU threads).
pub trait ConsoleEcho: Send + Sync {
    /// One console line of run `run`, `t_ns` after the run's start.
    fn line(&self, run: u32, t_ns: u64, line: &str);
    /// Called on the main thread after each run: a queued echo may catch up
    /// (briefly) and say what it dropped.
    fn drain(&self) {}
}

/// A [`Progress`] that drops everything (for callers that only want the
/// trace and the returned summary).
#[derive(Debug, Default)]
pub struct Silent;

impl Progress for Silent {
    fn status(&mut self, _msg: &str) {}
    fn detail(&mut self, _msg: &str) {}
    fn warning(&mut self, _msg: &str) {}
    fn run_finished(&mut self, _summary: &RunSummary) {}
    fn console(&mut self) -> Option<Arc<dyn ConsoleEcho>> {
        None
    }
}
