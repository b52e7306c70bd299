//! Renderers and the reading commands built from them. Every command is:
//! open the profile ([`crate::profile::open`]) → analyze
//! ([`crate::analysis`]) → render here. Renderers write to a `Write`; no
//! code here prints: what a user should see besides the output comes back
//! as [`Message`]s for the caller (the binary writes them to stderr).
//!
//! - [`flame`]: flamegraph and flame chart SVGs (inferno).
//! - [`check`]: the CI check's table and JSON.
//! - [`diff`]: differential flamegraph and the slower/faster table.
//! - [`report`]: the report as text or JSON.
//! - [`html`]: the report as one self-contained HTML page.
//! - [`export`]: folded stacks, speedscope, Chrome trace events.
//! - [`sweep`]: the sweep's chart, table and differential flamegraph.
//! - [`units`]: durations formatted for people, shared by the above.

pub mod check;
pub mod diff;
pub mod export;
pub mod flame;
pub mod html;
pub mod report;
pub mod sweep;
pub mod units;

use std::path::{Path, PathBuf};

use crate::analysis::fold::RunSelect;
use crate::profile::symbols::SymbolConfig;
use crate::profile::Profile;

/// How much a [`Message`] matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Something may be wrong with the output (a damaged trace).
    Warning,
    /// Worth knowing (which symbol file was skipped and why).
    Note,
    /// Status (what was written where).
    Info,
}

/// A line for the user that is not the command's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// How much it matters.
    pub level: Level,
    /// The text, one line.
    pub text: String,
}

impl Message {
    /// A warning.
    pub fn warning(text: impl Into<String>) -> Message {
        Message {
            level: Level::Warning,
            text: text.into(),
        }
    }

    /// A note.
    pub fn note(text: impl Into<String>) -> Message {
        Message {
            level: Level::Note,
            text: text.into(),
        }
    }

    /// A status line.
    pub fn info(text: impl Into<String>) -> Message {
        Message {
            level: Level::Info,
            text: text.into(),
        }
    }
}

/// Opens `input` (and `extra` inputs: their runs follow, as one set; a
/// directory stands for its `*.data` traces) for a command that renders it:
/// the trace's warnings and the symbolizer's notes as messages, and a check
/// that the chosen run exists. Traces of different kernels are refused
/// unless `allow_mixed`.
pub fn open_for_output(
    input: &Path,
    extra: &[PathBuf],
    allow_mixed: bool,
    symbols: &SymbolConfig,
    run: Option<u32>,
) -> anyhow::Result<(Profile, RunSelect, Vec<Message>)> {
    let several = !extra.is_empty() || input.is_dir();
    let p = if several {
        let mut all = vec![input.to_path_buf()];
        all.extend_from_slice(extra);
        crate::profile::open_many(&all, symbols, allow_mixed)?
    } else {
        crate::profile::open(input, symbols)?
    };
    let mut msgs: Vec<Message> = p
        .trace_warnings
        .iter()
        .map(|w| {
            // open_many already names the file of each warning.
            Message::warning(if several {
                w.clone()
            } else {
                format!("{}: {w}", input.display())
            })
        })
        .collect();
    msgs.extend(p.notes.iter().map(|n| Message::note(n.clone())));
    let runs = RunSelect::from_option(run);
    if let RunSelect::Run(k) = runs {
        anyhow::ensure!(
            p.run(k).is_some(),
            "run {k} is not in {} (it has {} run(s))",
            input.display(),
            p.runs.len()
        );
    }
    Ok((p, runs, msgs))
}

/// Starts writing the output `path` safely (a temporary file renamed into
/// place by [`crate::output::OutputFile::commit`]; a symlink, directory or
/// device at `path` is refused, never written through).
pub fn create(path: &Path) -> anyhow::Result<crate::output::OutputFile> {
    Ok(crate::output::create(path, crate::output::Backup::None)?)
}
