//! `boottrace report` options.

use std::path::PathBuf;

use super::symbols::SymbolArgs;
use crate::render::report::ReportConfig;

/// Arguments of `boottrace report`.
#[derive(clap::Args, Debug, Clone)]
pub struct ReportArgs {
    /// Trace file to read; repeat (`-i a.data -i b.data`) or give a
    /// directory (its `*.data` files) to read several as one set of runs.
    #[arg(short, long, value_name = "FILE", default_value = "boottrace.data")]
    pub input: Vec<PathBuf>,
    /// Combine traces of different kernels.
    #[arg(long)]
    pub allow_mixed: bool,
    /// Print the report as JSON (stable; fields documented in `boottrace::analysis::doc`).
    #[arg(long)]
    pub json: bool,
    /// Rows per function table.
    #[arg(long, value_name = "N", default_value_t = 15)]
    pub top: usize,
    /// Initcalls listed in the text report (the longest, shown in boot order); JSON has all.
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub initcalls: usize,
    /// Write one self-contained HTML page (flamegraph, flame chart, tables,
    /// console log) to this file instead of the text report.
    #[arg(long, value_name = "OUT.html", conflicts_with = "json")]
    pub html: Option<PathBuf>,
    /// Symbol sources.
    #[command(flatten)]
    pub symbols: SymbolArgs,
}

impl ReportArgs {
    /// The library's configuration.
    pub fn into_config(self) -> ReportConfig {
        ReportConfig {
            input: self.input.first().cloned().unwrap_or_default(),
            extra_inputs: self.input.get(1..).unwrap_or_default().to_vec(),
            allow_mixed: self.allow_mixed,
            json: self.json,
            top: self.top,
            initcalls: self.initcalls,
            symbols: self.symbols.into_config(),
            html: self.html,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ReportArgs,
    }

    #[test]
    fn defaults() {
        let c = Cli::try_parse_from(["report"])
            .expect("parse")
            .args
            .into_config();
        assert_eq!((c.json, c.top, c.initcalls), (false, 15, 30));
        assert_eq!(c.input, PathBuf::from("boottrace.data"));
    }
}
