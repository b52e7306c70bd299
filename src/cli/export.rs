//! `boottrace export` options.

use std::path::PathBuf;

use super::symbols::{SymbolArgs, WeightArg};
use crate::render::export::{ExportConfig, ExportFormat};

/// Output formats.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormatArg {
    /// Collapsed stacks, one `stack weight` line each.
    Folded,
    /// speedscope JSON.
    Speedscope,
    /// Chrome trace-event JSON (Perfetto UI, chrome://tracing).
    Chrome,
    /// Firefox Profiler JSON (profiler.firefox.com): a track per vCPU, phases as categories.
    Firefox,
}

/// Options of `boottrace export`.
#[derive(clap::Args, Debug, Clone)]
pub struct ExportArgs {
    /// Output format.
    #[arg(long, value_enum)]
    pub format: FormatArg,
    /// Output file (default: standard output).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Trace file to read; repeat (`-i a.data -i b.data`) or give a
    /// directory (its `*.data` files) to read several as one set of runs.
    #[arg(short, long, value_name = "FILE", default_value = "boottrace.data")]
    pub input: Vec<PathBuf>,
    /// Combine traces of different kernels.
    #[arg(long)]
    pub allow_mixed: bool,
    /// What stacks are weighed by (folded, speedscope).
    #[arg(long, value_enum, default_value_t = WeightArg::Samples)]
    pub weight: WeightArg,
    /// Only this run (default: all runs).
    #[arg(long, value_name = "K")]
    pub run: Option<u32>,
    /// Symbol sources.
    #[command(flatten)]
    pub symbols: SymbolArgs,
}

impl ExportArgs {
    /// The library's configuration.
    pub fn into_config(self) -> ExportConfig {
        ExportConfig {
            format: match self.format {
                FormatArg::Folded => ExportFormat::Folded,
                FormatArg::Speedscope => ExportFormat::Speedscope,
                FormatArg::Chrome => ExportFormat::Chrome,
                FormatArg::Firefox => ExportFormat::Firefox,
            },
            input: self.input.first().cloned().unwrap_or_default(),
            extra_inputs: self.input.get(1..).unwrap_or_default().to_vec(),
            allow_mixed: self.allow_mixed,
            output: self.output,
            weight: self.weight.for_samples(),
            run: self.run,
            symbols: self.symbols.into_config(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::fold::Weight;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ExportArgs,
    }

    #[test]
    fn format_is_required_and_output_defaults_to_stdout() {
        assert!(Cli::try_parse_from(["export"]).is_err());
        let c = Cli::try_parse_from(["export", "--format", "chrome"])
            .expect("parse")
            .args
            .into_config();
        assert_eq!(
            (c.format, c.output, c.weight),
            (ExportFormat::Chrome, None, Weight::Samples)
        );
    }
}
