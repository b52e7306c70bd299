//! `boottrace diff` options, and the one function through which `diff`
//! records kernel images.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Parser;

use super::symbols::{SidesSymbolArgs, WeightArg};
use crate::analysis::diffnorm::Normalize;
use crate::analysis::difftable::SortBy;
use crate::cli::progress::{StderrProgress, Verbosity};
use crate::cli::record::RecordArgs;
use crate::render::diff::{DiffConfig, RecordRequest};

/// `--normalize` values.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NormalizeArg {
    /// Mean weight per boot (µs of host time, or counts per boot).
    #[default]
    PerBoot,
    /// Mean per-run share of the run's total, in parts per million.
    Share,
}

/// `--sort` values.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SortArg {
    /// Self change (where the time is spent).
    #[default]
    #[value(name = "self")]
    Self_,
    /// Total change (which subtree grew).
    Total,
}

/// Arguments of `boottrace diff`.
#[derive(clap::Args, Debug, Clone)]
pub struct DiffArgs {
    /// Baseline: a trace file, a directory of `*.data` traces (their runs as
    /// one set), or a kernel image (recognised by content).
    #[arg(value_name = "A")]
    pub a: PathBuf,
    /// Compared with A: a trace file, a directory of traces, or a kernel image.
    #[arg(value_name = "B")]
    pub b: PathBuf,
    /// Output SVG of the differential flamegraph (widths: B; red: grew, blue: shrank).
    #[arg(short, long, value_name = "OUT.svg", default_value = "diff.svg")]
    pub output: PathBuf,
    /// What is compared: host time, host page faults or KVM exits.
    #[arg(long, value_enum, default_value_t = WeightArg::Samples)]
    pub weight: WeightArg,
    /// per-boot: mean per boot (absolute); share: mean per-run share (machines of different speed).
    #[arg(long, value_enum, default_value_t)]
    pub normalize: NormalizeArg,
    /// Rank the table by self or total change.
    #[arg(long, value_enum, default_value_t)]
    pub sort: SortArg,
    /// Rows in each of the slower and faster tables.
    #[arg(long, value_name = "N", default_value_t = 15)]
    pub top: usize,
    /// Symbol files of each side.
    #[command(flatten)]
    pub symbols: SidesSymbolArgs,
    /// Kernel images only: boots per kernel, interleaved A B A B…
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub runs: u32,
    /// Kernel images only: extra `record` options for A, as one string (e.g. "--mem 128M --initrd init.cpio").
    #[arg(
        long,
        value_name = "OPTIONS",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub record_a: String,
    /// Kernel images only: extra `record` options for B.
    #[arg(
        long,
        value_name = "OPTIONS",
        default_value = "",
        allow_hyphen_values = true
    )]
    pub record_b: String,
    /// Print the comparison as JSON on stdout instead of the table (the SVG is still written).
    #[arg(long)]
    pub json: bool,
    /// Combine traces of different kernels within a side (a directory).
    #[arg(long)]
    pub allow_mixed: bool,
    /// Kernel images only: keep the recorded traces in this directory (default: a temporary one).
    #[arg(long, value_name = "DIR")]
    pub record_dir: Option<PathBuf>,
}

impl DiffArgs {
    /// The library's configuration.
    pub fn into_config(self) -> DiffConfig {
        let (symbols_a, symbols_b) = self.symbols.into_configs();
        DiffConfig {
            symbols_a,
            symbols_b,
            a: self.a,
            b: self.b,
            output: self.output,
            weight: self.weight.for_time(),
            normalize: match self.normalize {
                NormalizeArg::PerBoot => Normalize::PerBoot,
                NormalizeArg::Share => Normalize::Share,
            },
            sort: match self.sort {
                SortArg::Self_ => SortBy::Self_,
                SortArg::Total => SortBy::Total,
            },
            top: self.top,
            runs: self.runs,
            record_a: self.record_a,
            record_b: self.record_b,
            record_dir: self.record_dir,
            json: self.json,
            allow_mixed: self.allow_mixed,
        }
    }
}

/// `record` options parsed the way `boottrace record` parses them.
#[derive(Parser)]
#[command(name = "record", no_binary_name = true)]
struct RecordCli {
    #[command(flatten)]
    args: RecordArgs,
}

/// The `record` arguments for one boot of `req.kernel` into `req.output`.
fn record_args(req: &RecordRequest<'_>) -> anyhow::Result<RecordArgs> {
    let mut argv: Vec<String> = vec![req.kernel.display().to_string()];
    argv.extend(
        shlex::split(req.options)
            .with_context(|| format!("cannot split record options {:?}", req.options))?,
    );
    argv.extend([
        "--runs".into(),
        "1".into(),
        "-q".into(),
        "-o".into(),
        req.output.display().to_string(),
    ]);
    if let Some(v) = req.vmlinux {
        argv.extend(["--vmlinux".into(), v.display().to_string()]);
    }
    let cli = RecordCli::try_parse_from(&argv)
        .with_context(|| format!("bad record options {:?}", req.options))?;
    Ok(cli.args)
}

/// Records one boot for `diff`: the only place `diff` touches recording.
/// record's status goes to stderr (without the guest console), so diff's
/// stdout holds only its table.
pub fn record_side(req: &RecordRequest<'_>) -> anyhow::Result<()> {
    let ra = record_args(req)?;
    let cfg = ra.into_config(std::env::args().collect(), Instant::now())?;
    let mut progress = StderrProgress::new(Verbosity {
        console: false,
        detail: false,
    })
    .with_prefix("boottrace diff");
    crate::record::record(&cfg, &mut progress).map(|_| ())
}

/// For tests: `record_args` of a kernel, options, output and vmlinux.
#[doc(hidden)]
pub fn record_args_for(
    kernel: &Path,
    options: &str,
    output: &Path,
    vmlinux: Option<&Path>,
) -> anyhow::Result<RecordArgs> {
    record_args(&RecordRequest {
        kernel,
        options,
        output,
        vmlinux,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_options_are_parsed_like_record_does() {
        let out = Path::new("/tmp/x/a-000.data");
        let ra = record_args_for(
            Path::new("/k/bzImage"),
            "--mem 2G --cmdline 'quiet loglevel=0' -F 500",
            out,
            Some(Path::new("/k/vmlinux")),
        )
        .expect("parse");
        assert_eq!(ra.kernel, Path::new("/k/bzImage"));
        assert_eq!(ra.mem, 2 << 30);
        assert_eq!(ra.cmdline, "quiet loglevel=0");
        assert_eq!(ra.freq, Some(500));
        assert_eq!(ra.runs, 1, "one boot per file, interleaved by diff");
        assert_eq!(ra.output, out);
        assert_eq!(ra.vmlinux.as_deref(), Some(Path::new("/k/vmlinux")));
        assert!(ra.quiet);

        assert!(record_args_for(Path::new("k"), "--mem", out, None).is_err());
        assert!(record_args_for(Path::new("k"), "--no-such-option", out, None).is_err());
        assert!(record_args_for(Path::new("k"), "'unclosed", out, None).is_err());
    }

    #[test]
    fn defaults_compare_host_time_per_boot() {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: DiffArgs,
        }
        let c = Cli::try_parse_from(["diff", "a", "b"])
            .expect("parse")
            .args
            .into_config();
        assert_eq!(c.weight, crate::analysis::fold::Weight::Time);
        assert_eq!(
            (c.normalize, c.sort, c.top, c.runs),
            (Normalize::PerBoot, SortBy::Self_, 15, 5)
        );
        assert_eq!(c.output, PathBuf::from("diff.svg"));
    }
}
