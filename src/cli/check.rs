//! `boottrace check` options.

use std::path::PathBuf;

use super::symbols::SidesSymbolArgs;
use crate::analysis::check::{CheckOptions, Threshold};
use crate::render::check::CheckConfig;

fn threshold(s: &str) -> Result<Threshold, String> {
    s.parse()
        .map_err(|e: crate::analysis::check::CheckError| e.to_string())
}

fn alpha(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v < 0.5 => Ok(v),
        _ => Err(format!("{s:?} is not a significance level in (0, 0.5)")),
    }
}

/// Arguments of `boottrace check`.
#[derive(clap::Args, Debug, Clone)]
pub struct CheckArgs {
    /// Baseline: trace files, directories of `*.data` traces (runs of all of
    /// them form one set), or one stored `report --json`.
    #[arg(value_name = "BASELINE", required = true, num_args = 1..)]
    pub baseline: Vec<PathBuf>,
    /// Candidate: trace files, directories, or one stored `report --json`.
    #[arg(short, long, value_name = "CANDIDATE", required = true, num_args = 1..)]
    pub candidate: Vec<PathBuf>,
    /// Growth of the boot time that counts: comma-separated terms that must
    /// all be exceeded: N% (of the baseline), N%boot, or a time (20ms, 1.5s).
    #[arg(long, value_name = "SPEC", default_value = "5%", value_parser = threshold)]
    pub threshold: Threshold,
    /// Growth of a phase, stage, initcall or function (self time) that
    /// counts; same terms as --threshold (%boot: of the baseline's boot time).
    #[arg(long, value_name = "SPEC", default_value = "10%,1%boot", value_parser = threshold)]
    pub item_threshold: Threshold,
    /// Significance level of the one-sided test over runs.
    #[arg(long, value_name = "P", default_value_t = 0.05, value_parser = alpha)]
    pub alpha: f64,
    /// Print the result as JSON (format "boottrace-check", version 1).
    #[arg(long)]
    pub json: bool,
    /// Changed stages, initcalls and functions listed per kind in the table.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub top: usize,
    /// Combine traces of different kernels within a side.
    #[arg(long)]
    pub allow_mixed: bool,
    /// Symbol files of each side.
    #[command(flatten)]
    pub symbols: SidesSymbolArgs,
}

impl CheckArgs {
    /// The library's configuration.
    pub fn into_config(self) -> CheckConfig {
        let (symbols_a, symbols_b) = self.symbols.into_configs();
        CheckConfig {
            symbols_a,
            symbols_b,
            baseline: self.baseline,
            candidate: self.candidate,
            allow_mixed: self.allow_mixed,
            options: CheckOptions {
                boot: self.threshold,
                items: self.item_threshold,
                alpha: self.alpha,
                ..CheckOptions::default()
            },
            json: self.json,
            top: self.top,
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
        args: CheckArgs,
    }

    #[test]
    fn defaults_and_several_inputs_per_side() {
        let c = Cli::try_parse_from(["check", "a1.data", "a2.data", "-c", "b.data", "dir"])
            .expect("parse")
            .args
            .into_config();
        assert_eq!(
            c.baseline,
            [PathBuf::from("a1.data"), PathBuf::from("a2.data")]
        );
        assert_eq!(c.candidate, [PathBuf::from("b.data"), PathBuf::from("dir")]);
        assert_eq!(c.options, CheckOptions::default());
        assert!(!c.json && !c.allow_mixed);
    }

    #[test]
    fn bad_thresholds_and_levels_are_usage_errors() {
        for args in [
            &["check", "a", "-c", "b", "--threshold", "5"][..],
            &["check", "a", "-c", "b", "--item-threshold", "x%"],
            &["check", "a", "-c", "b", "--alpha", "0.9"],
            &["check", "a"],
        ] {
            assert!(Cli::try_parse_from(args).is_err(), "{args:?} parsed");
        }
    }
}
