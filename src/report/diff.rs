//! `boottrace diff A B`: a differential flamegraph of two kernels' boots and
//! a table of the functions that got slower or faster, with a significance
//! check across runs.
//!
//! A and B are trace files or kernel images, told apart by content (a trace
//! starts with the trace magic). Images are recorded first, one boot at a
//! time, alternating A B A B…, so that drift of the machine (thermal state,
//! page cache, other load) hits both sides alike; each boot goes to its own
//! trace file and the boots of one side are merged afterwards.
//!
//! Normalization (so different run counts, sampling rates and boot lengths
//! compare fairly) is described in [`super::diffnorm`]; the table and its
//! test in [`super::difftable`].

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use inferno::flamegraph::{self, Options};

use super::diffnorm::{differential_lines, normalize, unit_name, Normalize, NormalizedProfile};
use super::difftable::{function_deltas, render as render_table, SideRuns, SortBy};
use super::fold;
use super::functions::{self, by_function, by_stack, folded, function_name};
use super::load::load_profile;
use super::runview::{Profile, Weight};
use super::stats::{welch_t_test, Summary};
use super::symbolize::SymbolArgs;
use super::text::fmt_ns;
use crate::cli::record::RecordArgs;
use crate::trace::frame::MAGIC;

/// Arguments of `boottrace diff`.
#[derive(clap::Args, Debug, Clone)]
pub struct DiffArgs {
    /// Baseline: a trace file or a kernel image (recognised by content).
    #[arg(value_name = "A")]
    pub a: PathBuf,
    /// Compared with A: a trace file or a kernel image.
    #[arg(value_name = "B")]
    pub b: PathBuf,
    /// Output SVG of the differential flamegraph (widths: B; red: grew, blue: shrank).
    #[arg(short, long, value_name = "OUT.svg", default_value = "diff.svg")]
    pub output: PathBuf,
    /// What is compared: host time, host page faults or KVM exits.
    #[arg(long, value_enum, default_value_t = fold::Weight::Samples)]
    pub weight: fold::Weight,
    /// per-boot: mean per boot (absolute); share: mean per-run share (machines of different speed).
    #[arg(long, value_enum, default_value_t)]
    pub normalize: Normalize,
    /// Rank the table by self or total change.
    #[arg(long, value_enum, default_value_t)]
    pub sort: SortBy,
    /// Rows in each of the slower and faster tables.
    #[arg(long, value_name = "N", default_value_t = 15)]
    pub top: usize,
    /// vmlinux for A's symbols (default: found from A's trace).
    #[arg(long, value_name = "FILE")]
    pub vmlinux_a: Option<PathBuf>,
    /// vmlinux for B's symbols (default: found from B's trace).
    #[arg(long, value_name = "FILE")]
    pub vmlinux_b: Option<PathBuf>,
    /// System.map for A's symbols (when no vmlinux is found).
    #[arg(long, value_name = "FILE")]
    pub system_map_a: Option<PathBuf>,
    /// System.map for B's symbols.
    #[arg(long, value_name = "FILE")]
    pub system_map_b: Option<PathBuf>,
    /// Use a vmlinux even if its identity does not match the recorded kernel.
    #[arg(long)]
    pub force: bool,
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
    /// Kernel images only: keep the recorded traces in this directory (default: a temporary one).
    #[arg(long, value_name = "DIR")]
    pub record_dir: Option<PathBuf>,
}

/// True when `path` starts with the trace file magic.
pub fn is_trace_file(path: &Path) -> anyhow::Result<bool> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut head = [0u8; MAGIC.len()];
    let mut n = 0;
    // A short file is simply not a trace; read at most the magic's length.
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }
    Ok(n == MAGIC.len() && head == MAGIC)
}

/// `record` options parsed the way `boottrace record` parses them.
#[derive(Parser)]
#[command(name = "record", no_binary_name = true)]
struct RecordCli {
    #[command(flatten)]
    args: RecordArgs,
}

/// The `record` arguments for one boot of `kernel` into `out`.
fn record_args(
    kernel: &Path,
    extra: &str,
    out: &Path,
    vmlinux: Option<&Path>,
) -> anyhow::Result<RecordArgs> {
    let mut argv: Vec<String> = vec![kernel.display().to_string()];
    argv.extend(
        shlex::split(extra).with_context(|| format!("cannot split record options {extra:?}"))?,
    );
    argv.extend([
        "--runs".into(),
        "1".into(),
        "-q".into(),
        "-o".into(),
        out.display().to_string(),
    ]);
    if let Some(v) = vmlinux {
        argv.extend(["--vmlinux".into(), v.display().to_string()]);
    }
    let cli = RecordCli::try_parse_from(&argv)
        .with_context(|| format!("bad record options {extra:?}"))?;
    Ok(cli.args)
}

/// Records `runs` boots of each kernel image, alternating A and B, one trace
/// file per boot in `dir`. Returns the trace paths of A and of B.
pub fn record_interleaved(
    a: &Path,
    b: &Path,
    args: &DiffArgs,
    dir: &Path,
) -> anyhow::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for i in 0..args.runs {
        for (side, kernel, extra, vmlinux, out) in [
            ("a", a, &args.record_a, args.vmlinux_a.as_deref(), &mut ta),
            ("b", b, &args.record_b, args.vmlinux_b.as_deref(), &mut tb),
        ] {
            let path = dir.join(format!("{side}-{i:03}.data"));
            let ra = record_args(kernel, extra, &path, vmlinux)?;
            eprintln!(
                "boottrace diff: recording {} boot {}/{} of {}",
                side.to_uppercase(),
                i + 1,
                args.runs,
                kernel.display()
            );
            let cfg = ra.into_config(std::env::args().collect(), Instant::now());
            let mut progress =
                crate::cli::progress::StderrProgress::new(crate::cli::progress::Verbosity {
                    console: false,
                    detail: false,
                })
                .with_prefix("boottrace diff");
            if let Err(e) = crate::record::record(&cfg, &mut progress) {
                // A boot that ends early (panic, emulation failure, timeout)
                // still leaves a trace of what it did, worth comparing; only
                // a boot that left no trace stops the diff.
                if !path.is_file() || !is_trace_file(&path)? {
                    return Err(e).with_context(|| format!("recording {}", kernel.display()));
                }
                eprintln!("boottrace diff: warning: {e:#}; comparing what was recorded");
            }
            out.push(path);
        }
    }
    Ok((ta, tb))
}

fn symbol_args(vmlinux: Option<&Path>, system_map: Option<&Path>, force: bool) -> SymbolArgs {
    SymbolArgs {
        vmlinux: vmlinux.map(Path::to_path_buf),
        system_map: system_map.map(Path::to_path_buf),
        force,
        ..SymbolArgs::default()
    }
}

/// Loads several trace files as one profile (their runs in order).
fn load_many(paths: &[PathBuf], sym: &SymbolArgs) -> anyhow::Result<Profile> {
    let mut out: Option<Profile> = None;
    for p in paths {
        let prof = load_profile(p, sym).with_context(|| format!("cannot read {}", p.display()))?;
        match &mut out {
            None => out = Some(prof),
            Some(acc) => acc.absorb(prof),
        }
    }
    out.context("no trace to read")
}

/// Per-run folded stacks of a profile, in base units of `weight`.
pub fn per_run_folded(p: &Profile, weight: Weight) -> Vec<std::collections::HashMap<String, u64>> {
    p.runs
        .iter()
        .map(|r| {
            folded(&by_stack(r), &p.names)
                .into_iter()
                .map(|(k, c)| (k, c.get(weight)))
                .filter(|(_, v)| *v > 0)
                .collect()
        })
        .collect()
}

/// Per-run function costs of a profile, for the table.
pub fn side_runs(p: &Profile) -> SideRuns {
    SideRuns {
        functions: p
            .runs
            .iter()
            .map(|r| {
                by_function(&by_stack(r), &p.names)
                    .into_iter()
                    .map(|(id, c)| (function_name(&p.names, id).to_string(), c))
                    .collect()
            })
            .collect(),
        totals: p.runs.iter().map(functions::run_total).collect(),
    }
}

/// The differential flamegraph of A → B, as SVG into `out`.
pub fn render_svg(
    a: &NormalizedProfile,
    b: &NormalizedProfile,
    title: &str,
    subtitle: &str,
    count_name: &str,
    out: impl Write,
) -> anyhow::Result<()> {
    let lines = differential_lines(a, b).context("cannot build the differential profile")?;
    if lines.is_empty() {
        bail!("nothing to compare: neither side has samples with nonzero weight");
    }
    let mut opts = Options::default();
    opts.title = title.to_string();
    opts.subtitle = Some(subtitle.to_string());
    opts.count_name = count_name.to_string();
    opts.deterministic = true;
    flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), out)
        .context("cannot render the flamegraph")?;
    Ok(())
}

fn boot_line(label: &str, path: &Path, p: &Profile) -> String {
    let boots: Vec<u64> = p.runs.iter().filter_map(|r| r.boot_ns).collect();
    let boot = Summary::of_u64(&boots)
        .map(|s| format!("median boot {}", fmt_ns(s.median)))
        .unwrap_or_else(|| "no boot time".into());
    format!(
        "{label}: {} — {} run{}, {boot}, {}",
        path.display(),
        p.runs.len(),
        if p.runs.len() == 1 { "" } else { "s" },
        p.info
            .kernel_version
            .as_deref()
            .unwrap_or("kernel version unknown")
    )
}

/// Boot time A → B with Welch's test over runs.
fn boot_time_change(a: &Profile, b: &Profile) -> Option<String> {
    let av: Vec<f64> = a
        .runs
        .iter()
        .filter_map(|r| r.boot_ns)
        .map(|v| v as f64)
        .collect();
    let bv: Vec<f64> = b
        .runs
        .iter()
        .filter_map(|r| r.boot_ns)
        .map(|v| v as f64)
        .collect();
    let (sa, sb) = (Summary::of(&av)?, Summary::of(&bv)?);
    let p = welch_t_test(&av, &bv).map(|t| t.p);
    Some(format!(
        "Boot time (mean): A {} → B {} ({}{}, {:+.1}%), p = {}",
        fmt_ns(sa.mean),
        fmt_ns(sb.mean),
        if sb.mean >= sa.mean { "+" } else { "-" },
        fmt_ns((sb.mean - sa.mean).abs()),
        100.0 * (sb.mean - sa.mean) / sa.mean.max(1.0),
        super::difftable::format_p(p)
    ))
}

/// A short name for one side in the flamegraph's subtitle: the file name,
/// and for a kernel image the record options that set it apart.
fn side_label(path: &Path, record_opts: &str, is_trace: bool) -> String {
    let name = path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    if is_trace || record_opts.trim().is_empty() {
        name
    } else {
        format!("{name} {}", record_opts.trim())
    }
}

/// Runs `boottrace diff`.
pub fn run(args: &DiffArgs) -> anyhow::Result<()> {
    let sym_a = symbol_args(
        args.vmlinux_a.as_deref(),
        args.system_map_a.as_deref(),
        args.force,
    );
    let sym_b = symbol_args(
        args.vmlinux_b.as_deref(),
        args.system_map_b.as_deref(),
        args.force,
    );
    let (a_trace, b_trace) = (is_trace_file(&args.a)?, is_trace_file(&args.b)?);
    let _tmp;
    let (pa, pb) = match (a_trace, b_trace) {
        (true, true) => (
            load_many(std::slice::from_ref(&args.a), &sym_a)?,
            load_many(std::slice::from_ref(&args.b), &sym_b)?,
        ),
        (false, false) => {
            let dir = match &args.record_dir {
                Some(d) => {
                    std::fs::create_dir_all(d)
                        .with_context(|| format!("cannot create {}", d.display()))?;
                    d.clone()
                }
                None => {
                    let t = tempfile::tempdir().context("cannot create a temporary directory")?;
                    let p = t.path().to_path_buf();
                    _tmp = t;
                    p
                }
            };
            let (ta, tb) = record_interleaved(&args.a, &args.b, args, &dir)?;
            (load_many(&ta, &sym_a)?, load_many(&tb, &sym_b)?)
        }
        _ => bail!(
            "give two trace files or two kernel images ({} is a {}, {} is a {})",
            args.a.display(),
            if a_trace { "trace" } else { "kernel image" },
            args.b.display(),
            if b_trace { "trace" } else { "kernel image" },
        ),
    };
    let weight = Weight::from(args.weight);
    let na = normalize(&per_run_folded(&pa, weight), args.normalize, weight);
    let nb = normalize(&per_run_folded(&pb, weight), args.normalize, weight);
    let unit = unit_name(args.normalize, weight);
    let what = match weight {
        Weight::Samples => "host time",
        Weight::Faults => "host page faults",
        Weight::Exits => "KVM exits",
    };
    let title = format!("Differential flamegraph ({what}): A → B");
    let subtitle = format!(
        "A = {} ({} runs), B = {} ({} runs); widths: B, {unit}; red: more in B, blue: less",
        side_label(&args.a, &args.record_a, a_trace),
        pa.runs.len(),
        side_label(&args.b, &args.record_b, b_trace),
        pb.runs.len()
    );
    let file = File::create(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let mut w = BufWriter::new(file);
    render_svg(&na, &nb, &title, &subtitle, unit, &mut w)?;
    w.flush()
        .with_context(|| format!("cannot write {}", args.output.display()))?;

    println!("{}", boot_line("A", &args.a, &pa));
    println!("{}", boot_line("B", &args.b, &pb));
    if let Some(l) = boot_time_change(&pa, &pb) {
        println!("{l}");
    }
    let deltas = function_deltas(&side_runs(&pa), &side_runs(&pb), weight, args.normalize);
    print!(
        "{}",
        render_table(&deltas, weight, args.normalize, args.sort, args.top)
    );
    println!("\nwrote {}", args.output.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_options_are_parsed_like_record_does() {
        let out = Path::new("/tmp/x/a-000.data");
        let ra = record_args(
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

        assert!(record_args(Path::new("k"), "--mem", out, None).is_err());
        assert!(record_args(Path::new("k"), "--no-such-option", out, None).is_err());
        assert!(record_args(Path::new("k"), "'unclosed", out, None).is_err());
    }

    #[test]
    fn short_and_missing_files_are_not_traces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let short = dir.path().join("short");
        std::fs::write(&short, &MAGIC[..3]).expect("write");
        assert!(!is_trace_file(&short).expect("read"));
        assert!(is_trace_file(&dir.path().join("missing")).is_err());
    }
}
