//! `boottrace flame`: an interactive flamegraph (or time-ordered flame chart)
//! of the recorded boot(s), rendered by inferno (search and zoom are
//! inferno's built-in JavaScript).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::Context;
use boottrace_symbols::symbolizer::SourceKind;
use inferno::flamegraph::{self, color::BasicPalette, Options, Palette};

use super::fold::{self, RunSelect, Weight};
use super::headline::Headline;
use super::symbolize::{self, SymTrace, SymbolArgs};
use crate::trace::Trace;

/// Options of `boottrace flame`.
#[derive(clap::Args, Debug, Clone)]
pub struct FlameArgs {
    /// Output SVG file.
    #[arg(value_name = "OUT.svg", default_value = "boottrace.svg")]
    pub output: PathBuf,
    /// Trace file to read.
    #[arg(short, long, value_name = "FILE", default_value = "boottrace.data")]
    pub input: PathBuf,
    /// What frame widths measure.
    #[arg(long, value_enum, default_value_t = Weight::Samples)]
    pub weight: Weight,
    /// Time-ordered flame chart instead of a flamegraph (phases appear left to right).
    #[arg(long)]
    pub chart: bool,
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

/// "vmlinux+DWARF (vmlinux)": the symbol source in a few words, for subtitles.
pub fn short_source(sym: &SymTrace) -> String {
    let kind = match sym.source {
        SourceKind::VmlinuxDwarf => "vmlinux+DWARF",
        SourceKind::VmlinuxSymtab => "vmlinux symtab",
        SourceKind::SystemMap => "System.map",
        SourceKind::Kallsyms => "kallsyms from the image",
        SourceKind::None => "none",
    };
    match sym.source_file.as_deref().and_then(|f| f.file_name()) {
        Some(name) => format!("{kind} ({})", name.to_string_lossy()),
        None => kind.to_string(),
    }
}

/// Renders the flamegraph of `sym` into `out`. `chart` gives a flame chart.
pub fn render(
    trace: &Trace,
    sym: &SymTrace,
    runs: RunSelect,
    weight: Weight,
    chart: bool,
    width: usize,
    out: impl Write,
) -> anyhow::Result<()> {
    let headline = Headline::new(trace, runs);
    let lines: Vec<String> = if chart {
        // inferno lays a flame chart out from its last line to its first.
        fold::chart(sym, runs, weight)
            .into_iter()
            .rev()
            .map(|(s, w)| format!("{s} {w}"))
            .collect()
    } else {
        fold::fold(sym, runs, weight).lines().collect()
    };
    if lines.is_empty() {
        anyhow::bail!(
            "no samples with nonzero {} in the selected run(s)",
            weight.unit()
        );
    }
    let mut opts = Options::default();
    opts.title = headline.title();
    let runs_text = match runs {
        RunSelect::All => format!("{} run(s) merged", trace.runs.len()),
        RunSelect::Run(k) => format!("run {k}"),
    };
    opts.subtitle = Some(format!(
        "{} by {}; {runs_text}; symbols: {}; unwinder: {}",
        if chart { "Flame chart" } else { "Flamegraph" },
        match weight {
            Weight::Samples => "samples (time)",
            Weight::Faults => "host page faults",
            Weight::Exits => "KVM exits",
        },
        short_source(sym),
        if trace.meta.unwinder.as_str().is_empty() {
            "?"
        } else {
            trace.meta.unwinder.as_str()
        }
    ));
    opts.count_name = weight.unit().to_string();
    opts.name_type = "Function:".into();
    opts.colors = Palette::Basic(match weight {
        Weight::Samples => BasicPalette::Hot,
        Weight::Faults => BasicPalette::Mem,
        Weight::Exits => BasicPalette::Io,
    });
    // The same function gets the same colour in every graph (easier comparing).
    opts.hash = true;
    opts.flame_chart = chart;
    opts.image_width = Some(width.clamp(200, 20_000));
    flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), out)
        .context("rendering the flamegraph")
}

/// Runs `boottrace flame`.
pub fn run(args: &FlameArgs) -> anyhow::Result<()> {
    let (trace, sym, runs) = symbolize::load_for_output(&args.input, &args.symbols, args.run)?;
    let file = File::create(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let mut out = BufWriter::new(file);
    render(
        &trace,
        &sym,
        runs,
        args.weight,
        args.chart,
        args.width,
        &mut out,
    )?;
    out.flush()
        .with_context(|| format!("writing {}", args.output.display()))?;
    eprintln!(
        "boottrace: wrote {} (symbols: {})",
        args.output.display(),
        short_source(&sym)
    );
    Ok(())
}
