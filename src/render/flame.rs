//! Flamegraphs and flame charts of a profile, rendered by inferno (search
//! and zoom are inferno's built-in JavaScript).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use boottrace_symbols::symbolizer::SourceKind;
use inferno::flamegraph::{self, color::BasicPalette, Options, Palette};

use super::{create, open_for_output, Message};
use crate::analysis::fold::{self, RunSelect, Weight};
use crate::analysis::headline::Headline;
use crate::profile::symbols::SymbolConfig;
use crate::profile::Profile;

/// How a flamegraph is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlameOptions {
    /// Which runs.
    pub runs: RunSelect,
    /// What widths measure.
    pub weight: Weight,
    /// Time-ordered flame chart instead of a flamegraph.
    pub chart: bool,
    /// Image width in pixels (clamped to 200..=20000).
    pub width: usize,
    /// Each stack's root is its guest task (`[pid 1 init]`).
    pub by_task: bool,
}

impl Default for FlameOptions {
    /// A flamegraph of every run by samples, 1200 pixels wide (`flame`'s defaults).
    fn default() -> FlameOptions {
        FlameOptions {
            runs: RunSelect::All,
            weight: Weight::Samples,
            chart: false,
            width: 1200,
            by_task: false,
        }
    }
}

/// What `boottrace flame` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlameConfig {
    /// Trace file (or directory of traces) to read.
    pub input: PathBuf,
    /// More traces whose runs join `input`'s.
    pub extra_inputs: Vec<PathBuf>,
    /// Combine traces of different kernels.
    pub allow_mixed: bool,
    /// SVG to write.
    pub output: PathBuf,
    /// Only this run (default: all).
    pub run: Option<u32>,
    /// What widths measure.
    pub weight: Weight,
    /// Flame chart instead of a flamegraph.
    pub chart: bool,
    /// Image width in pixels.
    pub width: usize,
    /// Split stacks by guest task (a root frame per task).
    pub by_task: bool,
    /// Symbol sources.
    pub symbols: SymbolConfig,
}

/// "vmlinux+DWARF (vmlinux)": the symbol source in a few words, for subtitles.
pub fn short_source(p: &Profile) -> String {
    let kind = match p.source {
        SourceKind::VmlinuxDwarf => "vmlinux+DWARF",
        SourceKind::VmlinuxSymtab => "vmlinux symtab",
        SourceKind::SystemMap => "System.map",
        SourceKind::Kallsyms => "kallsyms from the image",
        SourceKind::None => "none",
    };
    match p.source_file.as_deref().and_then(|f| f.file_name()) {
        Some(name) => format!("{kind} ({})", name.to_string_lossy()),
        None => kind.to_string(),
    }
}

/// Renders the flamegraph (or flame chart) of `p` into `out`.
pub fn render(p: &Profile, o: &FlameOptions, out: impl Write) -> anyhow::Result<()> {
    let headline = Headline::new(p, o.runs);
    let lines: Vec<String> = if o.chart {
        // inferno lays a flame chart out from its last line to its first.
        fold::chart_split(p, o.runs, o.weight, o.by_task)
            .into_iter()
            .rev()
            .map(|(s, w)| format!("{s} {w}"))
            .collect()
    } else {
        fold::fold_split(p, o.runs, o.weight, o.by_task)
            .lines()
            .collect()
    };
    if lines.is_empty() {
        anyhow::bail!(
            "no samples with nonzero {} in the selected run(s)",
            o.weight.unit()
        );
    }
    let mut opts = Options::default();
    opts.title = headline.title();
    let runs_text = match o.runs {
        RunSelect::All => format!("{} run(s) merged", p.runs.len()),
        RunSelect::Run(k) => format!("run {k}"),
    };
    opts.subtitle = Some(format!(
        "{}{} by {}; {runs_text}; symbols: {}; unwinder: {}",
        if o.chart { "Flame chart" } else { "Flamegraph" },
        if o.by_task { " per guest task" } else { "" },
        match o.weight {
            Weight::Samples => "samples (time)",
            Weight::Time => "host time",
            Weight::Wall => "boot thread wall time ([wait]: blocked)",
            Weight::Faults => "host page faults",
            Weight::Exits => "KVM exits",
        },
        short_source(p),
        if p.info.unwinder.as_str().is_empty() {
            "?"
        } else {
            p.info.unwinder.as_str()
        }
    ));
    opts.count_name = o.weight.unit().to_string();
    opts.name_type = "Function:".into();
    opts.colors = Palette::Basic(match o.weight {
        Weight::Samples | Weight::Time | Weight::Wall => BasicPalette::Hot,
        Weight::Faults => BasicPalette::Mem,
        Weight::Exits => BasicPalette::Io,
    });
    // The same function gets the same colour in every graph (easier comparing).
    opts.hash = true;
    opts.flame_chart = o.chart;
    opts.image_width = Some(o.width.clamp(200, 20_000));
    flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), out)
        .context("rendering the flamegraph")
}

/// `boottrace flame`: reads the trace, writes the SVG.
pub fn run(c: &FlameConfig) -> anyhow::Result<Vec<Message>> {
    let (p, runs, mut msgs) =
        open_for_output(&c.input, &c.extra_inputs, c.allow_mixed, &c.symbols, c.run)?;
    let mut out = create(&c.output)?;
    let o = FlameOptions {
        runs,
        weight: c.weight,
        chart: c.chart,
        width: c.width,
        by_task: c.by_task,
    };
    if c.by_task && !crate::analysis::tasks::has_tasks(&p) {
        msgs.push(Message::warning(
            "--by-task: the trace has no task information (recorded without type info or before format 2.1); every stack is [unknown task]",
        ));
    }
    if c.weight == Weight::Wall && !crate::analysis::waits::has_waits(&p) {
        msgs.push(Message::warning(
            "--weight wall: the trace has no blocked stacks (recorded without type info or before format 3); only the boot thread's running samples are shown",
        ));
    }
    render(&p, &o, &mut out)?;
    out.commit()?;
    msgs.push(Message::info(format!(
        "wrote {} (symbols: {})",
        c.output.display(),
        short_source(&p)
    )));
    Ok(msgs)
}
