//! `boottrace sweep` options, and the glue that records the sweep
//! (`record::sweep`) and renders it (`render::sweep`).

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;

use crate::cli::progress::{StderrProgress, Verbosity};
use crate::cli::record::RecordArgs;
use crate::profile::symbols::SymbolConfig;
use crate::record::config::DEFAULT_OUTPUT;
use crate::record::sweep::{check_axes, parse_vary, SweepConfig, Vary};
use crate::render::sweep::SweepRender;
use crate::render::Message;
use crate::vmm::compat::CompatMode;

/// Arguments of `boottrace sweep`: `record`'s, plus what varies.
#[derive(clap::Args, Debug, Clone)]
pub struct SweepArgs {
    /// The kernel and every `record` option, the base of each setting;
    /// `--runs N` is the number of boots per setting.
    #[command(flatten)]
    pub record: RecordArgs,
    /// More kernel images: the kernel is then one of the things that vary.
    #[arg(value_name = "MORE_KERNELS")]
    pub more_kernels: Vec<PathBuf>,
    /// What varies: cpus=1,2,4 | mem=128M,512M,2G | backing=default,populate,hugepages |
    /// net=off,on | cmdline=A|B (values separated by '|'; an empty value: the base
    /// --cmdline alone). Repeat --vary for every combination of several keys.
    #[arg(long, value_name = "KEY=VALUES", value_parser = parse_vary_arg,
          required_unless_present = "more_kernels")]
    pub vary: Vec<Vary>,
    /// Directory for the traces (one sub-directory per setting), the chart,
    /// the table's JSON and the differential flamegraph.
    #[arg(long, value_name = "DIR", default_value = "sweep")]
    pub dir: PathBuf,
    /// The chart (default: DIR/sweep.svg).
    #[arg(long, value_name = "OUT.svg")]
    pub chart: Option<PathBuf>,
    /// Rows in the phase and function tables.
    #[arg(long, value_name = "N", default_value_t = 12)]
    pub top: usize,
}

fn parse_vary_arg(s: &str) -> Result<Vary, String> {
    parse_vary(s).map_err(|e| e.to_string())
}

/// A usage mistake only visible once all options are parsed (exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SweepUsage(pub String);

impl SweepArgs {
    /// What to record and what to render (the render's settings are filled
    /// in once recorded).
    pub fn into_configs(
        self,
        argv: Vec<String>,
        started: Instant,
    ) -> anyhow::Result<(SweepConfig, SweepRender)> {
        if self.record.output != std::path::Path::new(DEFAULT_OUTPUT) {
            return Err(SweepUsage(
                "sweep writes one trace per boot under --dir; -o/--output is not for sweep".into(),
            )
            .into());
        }
        let mut vary = self.vary;
        let kernels = !self.more_kernels.is_empty();
        if kernels {
            let mut k = vec![self.record.kernel.clone()];
            k.extend(self.more_kernels.iter().cloned());
            vary.insert(0, Vary::Kernel(k));
        }
        check_axes(&vary).map_err(|e| SweepUsage(e.to_string()))?;
        let symbols = SymbolConfig {
            vmlinux: if kernels {
                None
            } else {
                self.record.vmlinux.clone()
            },
            ..SymbolConfig::default()
        };
        let base = self.record.into_config(argv, started)?;
        let host = match CompatMode::resolve(base.compat) {
            CompatMode::Pvm => "emulated-KVM times (nested PVM host)",
            CompatMode::None => "KVM host times",
        };
        let subtitle = format!(
            "{} · {} boot(s) per setting, interleaved · {host}",
            base.kernel.display(),
            base.runs
        );
        let render = SweepRender {
            settings: Vec::new(),
            chart: self.chart.unwrap_or_else(|| self.dir.join("sweep.svg")),
            json: self.dir.join("sweep.json"),
            diff: self.dir.join("diff-first-last.svg"),
            top: self.top,
            subtitle,
            symbols,
        };
        Ok((
            SweepConfig {
                base,
                vary,
                dir: self.dir,
            },
            render,
        ))
    }
}

/// `boottrace sweep`: records every setting, then writes the chart and
/// prints the table on stdout (status on stderr).
pub fn run(args: SweepArgs, started: Instant) -> anyhow::Result<()> {
    // One boot's console per setting would bury the table: only with -v.
    let verbose = args.record.verbose;
    let mut progress = StderrProgress::new(Verbosity {
        console: verbose && !args.record.quiet,
        detail: verbose,
    })
    .with_prefix("boottrace sweep");
    let (cfg, mut render) = args.into_configs(std::env::args().collect(), started)?;
    render.settings = crate::record::sweep::sweep(&cfg, &mut progress)?
        .into_iter()
        .map(|s| crate::render::sweep::SettingInput {
            label: s.setting.label,
            traces: s.traces,
        })
        .collect();
    let text = crate::render::sweep::run(&render, &mut |m: Message| {
        let _ = writeln!(std::io::stderr().lock(), "boottrace sweep: {}", m.text);
    })?;
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .context("writing the table")
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SweepArgs,
    }

    fn parse(argv: &[&str]) -> Result<SweepArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("sweep").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn record_options_and_vary_parse_together() {
        let a = parse(&[
            "bzImage",
            "--initrd",
            "i.cpio",
            "-F",
            "1000",
            "--vary",
            "mem=128M,1G",
            "--runs",
            "2",
        ])
        .expect("parse");
        assert_eq!(a.record.runs, 2);
        assert_eq!(a.record.freq, Some(1000));
        assert!(a.more_kernels.is_empty());
        let (cfg, r) = a.into_configs(Vec::new(), Instant::now()).expect("configs");
        assert!(matches!(cfg.vary[..], [Vary::Mem(ref v)] if v.len() == 2));
        assert_eq!(r.chart, PathBuf::from("sweep/sweep.svg"));

        let k = parse(&["a/bzImage", "b/bzImage", "--dir", "out"]).expect("kernels");
        let (cfg, _) = k.into_configs(Vec::new(), Instant::now()).expect("configs");
        assert!(matches!(cfg.vary[..], [Vary::Kernel(ref v)] if v.len() == 2));
        assert_eq!(cfg.dir, PathBuf::from("out"));
    }

    #[test]
    fn bad_sweeps_are_usage_errors() {
        for argv in [
            &["bzImage"][..],
            &["bzImage", "--vary", "colour=red"],
            &["bzImage", "--vary", "cpus="],
            &["bzImage", "--vary", "cpus=1,x"],
        ] {
            assert!(parse(argv).is_err(), "{argv:?} parsed");
        }
        for argv in [
            &["bzImage", "--vary", "cpus=1", "-o", "x.data"][..],
            &["bzImage", "--vary", "cpus=1", "--vary", "cpus=2"],
        ] {
            let a = parse(argv).expect("parse");
            let e = a
                .into_configs(Vec::new(), Instant::now())
                .expect_err("usage");
            assert!(e.downcast_ref::<SweepUsage>().is_some(), "{e}");
        }
        let both = parse(&["a", "b", "--vary", "cpus=1,2"]).expect("kernels and cpus");
        let (cfg, _) = both
            .into_configs(Vec::new(), Instant::now())
            .expect("configs");
        assert_eq!(cfg.vary.len(), 2, "kernel × cpus");
    }
}
