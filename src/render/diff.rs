//! `boottrace diff A B`: a differential flamegraph of two kernels' boots and
//! a table of the functions that got slower or faster, with a significance
//! check across runs.
//!
//! A and B are trace files or kernel images, told apart by content (a trace
//! starts with the trace magic). Images are recorded first, one boot at a
//! time, alternating A B A B…, so that drift of the machine (thermal state,
//! page cache, other load) hits both sides alike; each boot goes to its own
//! trace file and the boots of one side are merged afterwards. The
//! recording itself is the caller's [`Recorder`], so this module depends on
//! no recording code. Normalization is described in
//! [`crate::analysis::diffnorm`]; the table's data in
//! [`crate::analysis::difftable`]. stdout gets only the table; status goes
//! to the caller's `status` callback.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use inferno::flamegraph::{self, Options};

use super::units::fmt_ns;
use super::Message;
use crate::analysis::diffnorm::{
    differential_lines, normalize, per_run_folded, unit_name, Normalize, NormalizedProfile,
};
use crate::analysis::difftable::{
    function_deltas, slower_faster, FunctionDelta, Metric, SideRuns, SortBy,
};
use crate::analysis::fold::Weight;
use crate::analysis::stats::{welch_t_test, Summary, ALPHA};
use crate::profile::symbols::SymbolConfig;
use crate::profile::Profile;
use crate::trace::frame::MAGIC;

/// What `boottrace diff` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffConfig {
    /// Baseline: a trace file or a kernel image.
    pub a: PathBuf,
    /// Compared with A.
    pub b: PathBuf,
    /// SVG of the differential flamegraph.
    pub output: PathBuf,
    /// What is compared ([`Weight::Time`], faults or exits).
    pub weight: Weight,
    /// How runs are made comparable.
    pub normalize: Normalize,
    /// What ranks the table.
    pub sort: SortBy,
    /// Rows per table.
    pub top: usize,
    /// Symbols of A.
    pub symbols_a: SymbolConfig,
    /// Symbols of B.
    pub symbols_b: SymbolConfig,
    /// Kernel images only: boots per kernel.
    pub runs: u32,
    /// Kernel images only: extra `record` options of A, as one string.
    pub record_a: String,
    /// Kernel images only: extra `record` options of B.
    pub record_b: String,
    /// Kernel images only: where the traces go (default: a temporary directory).
    pub record_dir: Option<PathBuf>,
    /// JSON on stdout instead of the table ([`json_doc`]).
    pub json: bool,
    /// Traces of different kernels may be combined within a side.
    pub allow_mixed: bool,
}

/// One boot for a [`Recorder`] to record.
#[derive(Debug, Clone, Copy)]
pub struct RecordRequest<'a> {
    /// Kernel image.
    pub kernel: &'a Path,
    /// Extra `record` options, as one string (shell quoting).
    pub options: &'a str,
    /// Trace file to write.
    pub output: &'a Path,
    /// vmlinux to record with, if any.
    pub vmlinux: Option<&'a Path>,
}

/// Records one boot.
pub type Recorder<'r> = dyn FnMut(&RecordRequest<'_>) -> anyhow::Result<()> + 'r;

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

/// Records `runs` boots of each kernel image, alternating A and B, one trace
/// file per boot in `dir`. Returns the trace paths of A and of B.
fn record_interleaved(
    c: &DiffConfig,
    dir: &Path,
    record: &mut Recorder<'_>,
    status: &mut dyn FnMut(Message),
) -> anyhow::Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for i in 0..c.runs {
        for (side, kernel, options, vmlinux, out) in [
            (
                "a",
                &c.a,
                &c.record_a,
                c.symbols_a.vmlinux.as_deref(),
                &mut ta,
            ),
            (
                "b",
                &c.b,
                &c.record_b,
                c.symbols_b.vmlinux.as_deref(),
                &mut tb,
            ),
        ] {
            let path = dir.join(format!("{side}-{i:03}.data"));
            status(Message::info(format!(
                "diff: recording {} boot {}/{} of {}",
                side.to_uppercase(),
                i + 1,
                c.runs,
                kernel.display()
            )));
            let req = RecordRequest {
                kernel,
                options,
                output: &path,
                vmlinux,
            };
            if let Err(e) = record(&req) {
                // A boot that ends early (panic, emulation failure, timeout)
                // still leaves a trace of what it did, worth comparing; only
                // a boot that left no trace stops the diff.
                if !path.is_file() || !is_trace_file(&path)? {
                    return Err(e).with_context(|| format!("recording {}", kernel.display()));
                }
                status(Message::warning(format!(
                    "diff: {e:#}; comparing what was recorded"
                )));
            }
            out.push(path);
        }
    }
    Ok((ta, tb))
}

/// Loads several trace files (or directories of them) as one profile
/// (their runs in order); see [`crate::profile::many`].
pub fn load_many(
    paths: &[PathBuf],
    sym: &SymbolConfig,
    allow_mixed: bool,
) -> anyhow::Result<Profile> {
    Ok(crate::profile::open_many(paths, sym, allow_mixed)?)
}

/// Loads both sides at once (B on a second thread: reading and building
/// a profile is most of a diff's time). A's error, if any, comes first,
/// as when loading one after the other.
fn load_both(
    a: impl FnOnce() -> anyhow::Result<Profile> + Send,
    b: impl FnOnce() -> anyhow::Result<Profile> + Send,
) -> anyhow::Result<(Profile, Profile)> {
    let (pa, pb) = std::thread::scope(|scope| {
        let tb = scope.spawn(b);
        let pa = a();
        // A panic in B's load is B's: passed on as it is.
        let pb = tb
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (pa, pb)
    });
    Ok((pa?, pb?))
}

/// True when `path` is a trace input: a trace file, or a directory (of traces).
fn is_trace_input(path: &Path) -> anyhow::Result<bool> {
    Ok(path.is_dir() || is_trace_file(path)?)
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

/// The boot times of `p`'s runs that have one, ns.
fn boot_times(p: &Profile) -> Vec<f64> {
    p.runs
        .iter()
        .filter_map(|r| r.boot_ns)
        .map(|v| v as f64)
        .collect()
}

/// Boot time A → B with Welch's test over runs.
fn boot_time_change(a: &Profile, b: &Profile) -> Option<String> {
    let (av, bv) = (boot_times(a), boot_times(b));
    let (sa, sb) = (Summary::of(&av)?, Summary::of(&bv)?);
    let p = welch_t_test(&av, &bv).map(|t| t.p);
    Some(format!(
        "Boot time (mean): A {} → B {} ({}{}, {:+.1}%), p = {}",
        fmt_ns(sa.mean),
        fmt_ns(sb.mean),
        if sb.mean >= sa.mean { "+" } else { "-" },
        fmt_ns((sb.mean - sa.mean).abs()),
        100.0 * (sb.mean - sa.mean) / sa.mean.max(1.0),
        format_p(p)
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

/// Two sides of a diff, loaded.
#[derive(Debug, Clone)]
pub struct DiffView<'a> {
    /// A's runs.
    pub a: &'a Profile,
    /// B's runs.
    pub b: &'a Profile,
    /// A's input, for the table's first line.
    pub a_path: &'a Path,
    /// B's input.
    pub b_path: &'a Path,
    /// A's name in the flamegraph's subtitle.
    pub a_label: String,
    /// B's name in the subtitle.
    pub b_label: String,
}

/// How two sides are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiffOptions {
    /// What is compared.
    pub weight: Weight,
    /// How runs are made comparable.
    pub normalize: Normalize,
    /// What ranks the table.
    pub sort: SortBy,
    /// Rows per table.
    pub top: usize,
}

impl DiffOptions {
    /// The comparison part of a [`DiffConfig`].
    pub fn of(c: &DiffConfig) -> DiffOptions {
        DiffOptions {
            weight: c.weight,
            normalize: c.normalize,
            sort: c.sort,
            top: c.top,
        }
    }
}

/// Renders a diff: the differential flamegraph into `svg`, and the text
/// (boot lines, boot-time change, slower/faster tables) as the result.
pub fn render(v: &DiffView<'_>, o: &DiffOptions, svg: impl Write) -> anyhow::Result<String> {
    let weight = o.weight;
    let na = normalize(&per_run_folded(v.a, weight), o.normalize, weight);
    let nb = normalize(&per_run_folded(v.b, weight), o.normalize, weight);
    let unit = unit_name(o.normalize, weight);
    let what = match weight {
        Weight::Samples => "samples",
        Weight::Time => "host time",
        Weight::Wall => "boot thread wall time",
        Weight::Faults => "host page faults",
        Weight::Exits => "KVM exits",
    };
    let title = format!("Differential flamegraph ({what}): A → B");
    let subtitle = format!(
        "A = {} ({} runs), B = {} ({} runs); widths: B, {unit}; red: more in B, blue: less",
        v.a_label,
        v.a.runs.len(),
        v.b_label,
        v.b.runs.len()
    );
    render_svg(&na, &nb, &title, &subtitle, unit, svg)?;
    let mut text = String::new();
    text.push_str(&boot_line("A", v.a_path, v.a));
    text.push('\n');
    text.push_str(&boot_line("B", v.b_path, v.b));
    text.push('\n');
    if let Some(l) = boot_time_change(v.a, v.b) {
        text.push_str(&l);
        text.push('\n');
    }
    let deltas = function_deltas(
        &SideRuns::weighted(v.a, weight),
        &SideRuns::weighted(v.b, weight),
        weight,
        o.normalize,
    );
    text.push_str(&table(&deltas, weight, o.normalize, o.sort, o.top));
    Ok(text)
}

/// `boottrace diff`: writes the SVG to `c.output` and the table to `out`;
/// kernel images are recorded with `record` first. Status goes to `status`.
pub fn run(
    c: &DiffConfig,
    record: &mut Recorder<'_>,
    out: &mut dyn Write,
    status: &mut dyn FnMut(Message),
) -> anyhow::Result<()> {
    let (a_trace, b_trace) = (is_trace_input(&c.a)?, is_trace_input(&c.b)?);
    let _tmp;
    let (pa, pb) = match (a_trace, b_trace) {
        (true, true) => load_both(
            || load_many(std::slice::from_ref(&c.a), &c.symbols_a, c.allow_mixed),
            || load_many(std::slice::from_ref(&c.b), &c.symbols_b, c.allow_mixed),
        )?,
        (false, false) => {
            let dir = match &c.record_dir {
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
            let (ta, tb) = record_interleaved(c, &dir, record, status)?;
            // Each side's boots are of one image: nothing to refuse.
            load_both(
                || load_many(&ta, &c.symbols_a, true),
                || load_many(&tb, &c.symbols_b, true),
            )?
        }
        _ => bail!(
            "give two trace files or two kernel images ({} is a {}, {} is a {})",
            c.a.display(),
            if a_trace { "trace" } else { "kernel image" },
            c.b.display(),
            if b_trace { "trace" } else { "kernel image" },
        ),
    };
    let view = DiffView {
        a: &pa,
        b: &pb,
        a_path: &c.a,
        b_path: &c.b,
        a_label: side_label(&c.a, &c.record_a, a_trace),
        b_label: side_label(&c.b, &c.record_b, b_trace),
    };
    let mut w = super::create(&c.output)?;
    let opts = DiffOptions::of(c);
    let text = render(&view, &opts, &mut w)?;
    w.commit()?;
    if c.json {
        serde_json::to_writer_pretty(&mut *out, &json_doc(&view, &opts))
            .context("cannot encode the diff")?;
        out.write_all(b"\n").context("writing the diff")?;
    } else {
        out.write_all(text.as_bytes())
            .context("writing the table")?;
    }
    out.flush().context("writing the table")?;
    status(Message::info(format!("wrote {}", c.output.display())));
    Ok(())
}

/// The `format` of `diff --json`.
pub const JSON_FORMAT: &str = "boottrace-diff";
/// The `version` of `diff --json` (fields are only added within a version).
pub const JSON_VERSION: u32 = 1;

/// One side in `diff --json`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JsonDiffSide {
    /// The input as given.
    pub input: String,
    /// Runs.
    pub runs: usize,
    /// The kernel's version banner, when known.
    pub kernel_version: Option<String>,
    /// Boot time over runs, ns.
    pub boot_ns: Option<Summary>,
}

/// The boot-time change in `diff --json`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct JsonBootChange {
    /// B's mean − A's mean, ns.
    pub delta_ns: f64,
    /// The same in percent of A's mean.
    pub delta_percent: f64,
    /// Two-sided p-value of Welch's test over runs (`None`: one run on a side).
    pub p: Option<f64>,
}

/// `diff --json` (format [`JSON_FORMAT`], version [`JSON_VERSION`]):
/// `a`, `b` {`input`, `runs`, `kernel_version`, `boot_ns` (summary)},
/// `boot_change` {`delta_ns`, `delta_percent`, `p`}, `weight`, `normalize`,
/// `sort`, `unit` (of `*_per_boot`: ms of host time, or counts), and
/// `slower[]`/`faster[]` (the table's rows) {`name`, `self_metric`,
/// `total_metric`: {`a_share`, `b_share`, `a_per_boot`, `b_per_boot`, `p`}}.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JsonDiff {
    /// Always [`JSON_FORMAT`].
    pub format: &'static str,
    /// Always [`JSON_VERSION`].
    pub version: u32,
    /// Baseline.
    pub a: JsonDiffSide,
    /// Compared with A.
    pub b: JsonDiffSide,
    /// Boot time A → B.
    pub boot_change: Option<JsonBootChange>,
    /// What is compared.
    pub weight: Weight,
    /// How runs are made comparable.
    pub normalize: Normalize,
    /// What ranks the rows.
    pub sort: SortBy,
    /// Unit of the per-boot values.
    pub unit: &'static str,
    /// Functions that grew, most first.
    pub slower: Vec<FunctionDelta>,
    /// Functions that shrank, most first.
    pub faster: Vec<FunctionDelta>,
}

/// The data of `diff --json`.
pub fn json_doc(v: &DiffView<'_>, o: &DiffOptions) -> JsonDiff {
    let side = |path: &Path, p: &Profile| JsonDiffSide {
        input: path.display().to_string(),
        runs: p.runs.len(),
        kernel_version: p.info.kernel_version.clone(),
        boot_ns: Summary::of(&boot_times(p)),
    };
    let (a, b) = (side(v.a_path, v.a), side(v.b_path, v.b));
    let boot_change = a.boot_ns.zip(b.boot_ns).map(|(sa, sb)| JsonBootChange {
        delta_ns: sb.mean - sa.mean,
        delta_percent: 100.0 * (sb.mean - sa.mean) / sa.mean.max(1.0),
        p: welch_t_test(&boot_times(v.a), &boot_times(v.b)).map(|t| t.p),
    });
    let deltas = function_deltas(
        &SideRuns::weighted(v.a, o.weight),
        &SideRuns::weighted(v.b, o.weight),
        o.weight,
        o.normalize,
    );
    let (slower, faster) = slower_faster(&deltas, o.normalize, o.sort, o.top);
    JsonDiff {
        format: JSON_FORMAT,
        version: JSON_VERSION,
        a,
        b,
        boot_change,
        weight: o.weight,
        normalize: o.normalize,
        sort: o.sort,
        unit: match o.weight {
            Weight::Time => "ms",
            Weight::Samples => "samples",
            Weight::Faults => "faults",
            Weight::Exits => "exits",
            Weight::Wall => "ms",
        },
        slower: slower.into_iter().cloned().collect(),
        faster: faster.into_iter().cloned().collect(),
    }
}

/// Formats a p-value: `n/a` without a test, `*` when significant.
pub fn format_p(p: Option<f64>) -> String {
    match p {
        None => "n/a".to_string(),
        Some(p) if p < 0.001 => "<0.001*".to_string(),
        Some(p) if p < ALPHA => format!("{p:.3}*"),
        Some(p) => format!("{p:.3}"),
    }
}

/// Formats a per-boot value change in its unit, with a sign.
fn format_delta(v: f64, weight: Weight) -> String {
    match weight {
        Weight::Time | Weight::Wall if v.abs() >= 100.0 => format!("{v:+.0} ms"),
        Weight::Time | Weight::Wall if v.abs() >= 1.0 => format!("{v:+.2} ms"),
        Weight::Time | Weight::Wall => format!("{v:+.3} ms"),
        Weight::Samples | Weight::Faults | Weight::Exits => format!("{v:+.1}"),
    }
}

fn format_metric(m: &Metric, weight: Weight) -> String {
    format!(
        "{:>12} {:>6.2}% → {:>6.2}% {:>7}",
        format_delta(m.b_per_boot - m.a_per_boot, weight),
        100.0 * m.a_share,
        100.0 * m.b_share,
        format_p(m.p)
    )
}

/// Renders the slower and faster tables.
pub fn table(
    deltas: &[FunctionDelta],
    weight: Weight,
    mode: Normalize,
    sort: SortBy,
    top: usize,
) -> String {
    let (slower, faster) = slower_faster(deltas, mode, sort, top);
    let unit = match weight {
        Weight::Time => "estimated ms of host time per boot",
        Weight::Wall => "estimated ms of boot thread wall time per boot",
        Weight::Samples => "samples per boot",
        Weight::Faults => "host page faults per boot",
        Weight::Exits => "KVM exits per boot",
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Δ = B − A in {unit}; shares are of each run's total; p: Welch's t-test over runs \
         on the {} (* = p < {ALPHA}; n/a with one run on a side)",
        match mode {
            Normalize::PerBoot => "per-boot values",
            Normalize::Share => "per-run shares",
        }
    );
    let header = format!(
        "{:>12} {:>17} {:>7}  {:>12} {:>17} {:>7}  function",
        "Δself", "self A → B", "p", "Δtotal", "total A → B", "p"
    );
    for (title, rows) in [("Slower in B", slower), ("Faster in B", faster)] {
        let _ = writeln!(
            s,
            "\n{title} (ranked by {}):",
            match sort {
                SortBy::Self_ => "self",
                SortBy::Total => "total",
            }
        );
        if rows.is_empty() {
            let _ = writeln!(s, "  (none)");
            continue;
        }
        let _ = writeln!(s, "{header}");
        for d in rows {
            let _ = writeln!(
                s,
                "{}  {}  {}",
                format_metric(&d.self_metric, weight),
                format_metric(&d.total_metric, weight),
                d.name
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::functions::{Cost, FunctionCost};
    use std::collections::HashMap;

    fn side(runs: &[&[(&str, u64)]]) -> SideRuns {
        let mut s = SideRuns::default();
        for run in runs {
            let mut m = HashMap::new();
            let mut total = Cost::default();
            for &(name, ns) in *run {
                let mut f = FunctionCost::default();
                f.self_cost.time_ns = ns;
                f.total_cost.time_ns = ns;
                total.time_ns += ns;
                m.insert(name.to_string(), f);
            }
            s.functions.push(m);
            s.totals.push(total);
        }
        s
    }

    #[test]
    fn table_shows_deltas_in_ms_and_missing_p_values() {
        let ms = 1_000_000;
        let a = side(&[
            &[("memmap_init_range", 100 * ms)],
            &[("memmap_init_range", 102 * ms)],
        ]);
        let b = side(&[
            &[("memmap_init_range", 400 * ms)],
            &[("memmap_init_range", 402 * ms)],
        ]);
        let d = function_deltas(&a, &b, Weight::Time, Normalize::PerBoot);
        let text = table(&d, Weight::Time, Normalize::PerBoot, SortBy::Self_, 5);
        assert!(text.contains("+300 ms"), "{text}");
        assert!(text.contains("memmap_init_range"), "{text}");
        let one = side(&[&[("f", 10)]]);
        let d = function_deltas(&one, &b, Weight::Time, Normalize::PerBoot);
        assert_eq!(format_p(d[0].self_metric.p), "n/a");
        assert!(table(&d, Weight::Time, Normalize::PerBoot, SortBy::Total, 3).contains("n/a"));
    }
}
