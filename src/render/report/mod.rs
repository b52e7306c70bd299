//! `boottrace report`: the report document of [`crate::analysis::doc`] as
//! text ([`text`]) or JSON ([`json`]).

pub mod json;
pub mod text;

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use super::Message;
use crate::analysis::doc;
use crate::profile::symbols::SymbolConfig;

/// What `boottrace report` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportConfig {
    /// Trace file (or directory of traces) to read.
    pub input: PathBuf,
    /// More traces whose runs join `input`'s.
    pub extra_inputs: Vec<PathBuf>,
    /// Combine traces of different kernels.
    pub allow_mixed: bool,
    /// JSON instead of text.
    pub json: bool,
    /// Rows per function table.
    pub top: usize,
    /// Initcalls listed in the text report (JSON has all).
    pub initcalls: usize,
    /// Symbol sources.
    pub symbols: SymbolConfig,
    /// Write the report as one self-contained HTML page here instead of
    /// text or JSON on stdout.
    pub html: Option<PathBuf>,
}

/// `boottrace report`: writes the report to `out`.
pub fn run(c: &ReportConfig, out: &mut dyn Write) -> anyhow::Result<Vec<Message>> {
    let mut inputs = vec![c.input.clone()];
    inputs.extend_from_slice(&c.extra_inputs);
    let profile = if inputs.len() > 1 || c.input.is_dir() {
        crate::profile::open_many(&inputs, &c.symbols, c.allow_mixed)?
    } else {
        crate::profile::open(&c.input, &c.symbols)
            .with_context(|| format!("cannot report on {}", c.input.display()))?
    };
    let report = doc::build(&profile, c.top);
    if let Some(path) = &c.html {
        let page = super::html::render(&profile, &report)?;
        let mut f = super::create(path)?;
        f.write_all(page.as_bytes())
            .with_context(|| format!("writing {}", path.display()))?;
        f.commit()?;
        return Ok(vec![Message::info(format!("wrote {}", path.display()))]);
    }
    if c.json {
        json::write(&report, &mut *out)?;
    } else {
        out.write_all(text::render(&report, c.initcalls).as_bytes())
            .context("writing the report")?;
    }
    out.flush().context("writing the report")?;
    Ok(Vec::new())
}
