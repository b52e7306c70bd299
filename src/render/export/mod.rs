//! Exports of a profile in the formats other tools read.
//!
//! - [`folded`]: collapsed stacks (`root;…;leaf weight`), for FlameGraph and inferno.
//! - [`speedscope`]: speedscope's JSON file format.
//! - [`chrome`]: Chrome trace-event JSON (Perfetto UI, chrome://tracing).
//! - [`firefox`]: the Firefox Profiler's processed profile JSON.
//!
//! Time-based exports use each sample's interval, the one definition in
//! [`crate::profile::interval`].

pub mod chrome;
pub mod firefox;
pub mod folded;
pub mod speedscope;

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use super::{open_for_output, Message};
use crate::analysis::fold::Weight;
use crate::profile::symbols::SymbolConfig;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// Collapsed stacks, one `stack weight` line each.
    Folded,
    /// speedscope JSON.
    Speedscope,
    /// Chrome trace-event JSON (Perfetto UI, chrome://tracing).
    Chrome,
    /// Firefox Profiler JSON (profiler.firefox.com).
    Firefox,
}

/// What `boottrace export` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConfig {
    /// Output format.
    pub format: ExportFormat,
    /// Trace file (or directory of traces) to read.
    pub input: PathBuf,
    /// More traces whose runs join `input`'s.
    pub extra_inputs: Vec<PathBuf>,
    /// Combine traces of different kernels.
    pub allow_mixed: bool,
    /// Output file; `None` = the writer the caller passes.
    pub output: Option<PathBuf>,
    /// What stacks are weighed by (folded, speedscope).
    pub weight: Weight,
    /// Only this run (default: all).
    pub run: Option<u32>,
    /// Symbol sources.
    pub symbols: SymbolConfig,
}

/// `boottrace export`: writes to `config.output`, or to `stdout` without one.
pub fn run(c: &ExportConfig, stdout: &mut dyn Write) -> anyhow::Result<Vec<Message>> {
    let (p, runs, msgs) =
        open_for_output(&c.input, &c.extra_inputs, c.allow_mixed, &c.symbols, c.run)?;
    let mut file = None;
    let mut buffered;
    let out: &mut dyn Write = match &c.output {
        Some(path) => file.insert(super::create(path)?),
        None => {
            // Exports are large and written in small pieces.
            buffered = std::io::BufWriter::new(stdout);
            &mut buffered
        }
    };
    match c.format {
        ExportFormat::Folded => folded::write(&p, runs, c.weight, &mut *out),
        ExportFormat::Speedscope => speedscope::write(&p, runs, c.weight, &mut *out),
        ExportFormat::Chrome => chrome::write(&p, runs, &mut *out),
        ExportFormat::Firefox => firefox::write(&p, runs, &mut *out),
    }
    .and_then(|()| out.flush())
    .context("writing the export")?;
    if let Some(f) = file {
        f.commit()?;
    }
    Ok(msgs)
}
