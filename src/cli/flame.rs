//! `boottrace flame` options.

use std::path::PathBuf;

use super::symbols::{SymbolArgs, WeightArg};
use crate::render::flame::FlameConfig;

/// Options of `boottrace flame`.
#[derive(clap::Args, Debug, Clone)]
pub struct FlameArgs {
    /// Output SVG file.
    #[arg(value_name = "OUT.svg", default_value = "boottrace.svg")]
    pub output: PathBuf,
    /// Trace file to read; repeat (`-i a.data -i b.data`) or give a
    /// directory (its `*.data` files) to read several as one set of runs.
    #[arg(short, long, value_name = "FILE", default_value = "boottrace.data")]
    pub input: Vec<PathBuf>,
    /// Combine traces of different kernels.
    #[arg(long)]
    pub allow_mixed: bool,
    /// What frame widths measure.
    #[arg(long, value_enum, default_value_t = WeightArg::Samples)]
    pub weight: WeightArg,
    /// Time-ordered flame chart instead of a flamegraph (phases appear left to right).
    #[arg(long)]
    pub chart: bool,
    /// Split stacks by guest task: each gets its task (`[pid 1 init]`) as
    /// root frame (needs a trace recorded with type info).
    #[arg(long)]
    pub by_task: bool,
    /// Only this run (default: all runs merged).
    #[arg(long, value_name = "K")]
    pub run: Option<u32>,
    /// Image width in pixels.
    #[arg(long, default_value_t = 1200)]
    pub width: usize,
    /// Symbol sources.
    #[command(flatten)]
    pub symbols: SymbolArgs,
}

impl FlameArgs {
    /// The library's configuration.
    pub fn into_config(self) -> FlameConfig {
        FlameConfig {
            input: self.input.first().cloned().unwrap_or_default(),
            extra_inputs: self.input.get(1..).unwrap_or_default().to_vec(),
            allow_mixed: self.allow_mixed,
            output: self.output,
            run: self.run,
            weight: self.weight.for_samples(),
            chart: self.chart,
            width: self.width,
            by_task: self.by_task,
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
        args: FlameArgs,
    }

    #[test]
    fn defaults() {
        let c = Cli::try_parse_from(["flame"])
            .expect("parse")
            .args
            .into_config();
        assert_eq!(c.output, PathBuf::from("boottrace.svg"));
        assert_eq!(c.input, PathBuf::from("boottrace.data"));
        assert_eq!(
            (c.weight, c.chart, c.width, c.run, c.by_task),
            (Weight::Samples, false, 1200, None, false)
        );
    }
}
