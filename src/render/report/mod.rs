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
    /// Trace file to read.
    pub input: PathBuf,
    /// JSON instead of text.
    pub json: bool,
    /// Rows per function table.
    pub top: usize,
    /// Initcalls listed in the text report (JSON has all).
    pub initcalls: usize,
    /// Symbol sources.
    pub symbols: SymbolConfig,
}

/// `boottrace report`: writes the report to `out`.
pub fn run(c: &ReportConfig, out: &mut dyn Write) -> anyhow::Result<Vec<Message>> {
    let profile = crate::profile::open(&c.input, &c.symbols)
        .with_context(|| format!("cannot report on {}", c.input.display()))?;
    let report = doc::build(&profile, c.top);
    if c.json {
        json::write(&report, &mut *out)?;
    } else {
        out.write_all(text::render(&report, c.initcalls).as_bytes())
            .context("writing the report")?;
    }
    out.flush().context("writing the report")?;
    Ok(Vec::new())
}
