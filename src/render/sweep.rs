//! `boottrace sweep`'s outputs from the recorded settings: the chart (an
//! SVG drawn by hand — three panels: boot time min/median/max with every
//! boot as a dot, host page faults, and where the time went by kernel
//! phase), the table (settings, the phases and functions that changed
//! most), a JSON copy of the table's data, and a differential flamegraph
//! of the first setting against the last.

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;

use super::diff::{format_p, load_many, render_svg};
use super::units::fmt_ns;
use super::Message;
use crate::analysis::diffnorm::{normalize, per_run_folded, unit_name, Normalize};
use crate::analysis::fold::Weight;
use crate::analysis::stats::Summary;
use crate::analysis::sweep::{analyse, SweepAnalysis, SweepSide};
use crate::profile::symbols::SymbolConfig;

/// One setting's traces, as the renderer needs them (the recorder's own
/// type stays in `record`: render does not depend on it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingInput {
    /// As shown in the table and chart (`mem=1G`).
    pub label: String,
    /// One trace per boot.
    pub traces: Vec<PathBuf>,
}

/// What to render from a recorded sweep.
#[derive(Debug, Clone)]
pub struct SweepRender {
    /// The settings' traces, in sweep order.
    pub settings: Vec<SettingInput>,
    /// The chart SVG.
    pub chart: PathBuf,
    /// The JSON copy of the table's data.
    pub json: PathBuf,
    /// The differential flamegraph, first setting → last.
    pub diff: PathBuf,
    /// Rows per table.
    pub top: usize,
    /// A line under the chart's title (what was swept, on which host).
    pub subtitle: String,
    /// Symbol sources.
    pub symbols: SymbolConfig,
}

/// Loads the settings, writes the chart, JSON and differential flamegraph,
/// and returns the table as text.
pub fn run(c: &SweepRender, status: &mut dyn FnMut(Message)) -> anyhow::Result<String> {
    let mut profiles = Vec::with_capacity(c.settings.len());
    for s in &c.settings {
        let p = load_many(&s.traces, &c.symbols, false)
            .with_context(|| format!("cannot read the traces of {}", s.label))?;
        for w in &p.trace_warnings {
            status(Message::warning(format!("{}: {w}", s.label)));
        }
        profiles.push(p);
    }
    let sides: Vec<SweepSide<'_>> = c
        .settings
        .iter()
        .zip(&profiles)
        .map(|(s, p)| SweepSide {
            label: &s.label,
            profile: p,
        })
        .collect();
    let a = analyse(&sides, c.top);

    let mut w = super::create(&c.chart)?;
    w.write_all(chart_svg(&a, &c.subtitle).as_bytes())
        .with_context(|| format!("cannot write {}", c.chart.display()))?;
    w.commit()?;
    status(Message::info(format!("wrote {}", c.chart.display())));

    let mut w = super::create(&c.json)?;
    serde_json::to_writer_pretty(&mut w, &a).context("cannot encode the sweep as JSON")?;
    w.write_all(b"\n")
        .with_context(|| format!("cannot write {}", c.json.display()))?;
    w.commit()?;

    if let (Some(first), Some(last)) = (sides.first(), sides.last()) {
        if sides.len() > 1 {
            let na = normalize(
                &per_run_folded(first.profile, Weight::Time),
                Normalize::PerBoot,
                Weight::Time,
            );
            let nb = normalize(
                &per_run_folded(last.profile, Weight::Time),
                Normalize::PerBoot,
                Weight::Time,
            );
            let mut w = super::create(&c.diff)?;
            match render_svg(
                &na,
                &nb,
                &format!("{} → {}", first.label, last.label),
                &format!(
                    "widths: {}, {}; red: more time there, blue: less",
                    last.label,
                    unit_name(Normalize::PerBoot, Weight::Time)
                ),
                unit_name(Normalize::PerBoot, Weight::Time),
                &mut w,
            ) {
                Ok(()) => {
                    w.commit()?;
                    status(Message::info(format!("wrote {}", c.diff.display())));
                }
                // Unsampled boots (-F 0) have nothing to draw: the chart and
                // table still stand.
                Err(e) => status(Message::note(format!("no differential flamegraph: {e:#}"))),
            }
        }
    }
    Ok(table(&a))
}

fn summary_cell(s: Option<&Summary>, f: fn(f64) -> String) -> String {
    match s {
        None => "-".into(),
        Some(s) if s.n == 1 => f(s.median),
        Some(s) => format!("{} [{}–{}]", f(s.median), f(s.min), f(s.max)),
    }
}

fn count(v: f64) -> String {
    format!("{v:.0}")
}

/// Formats a change in ns with a sign.
fn signed_ns(v: f64) -> String {
    let sign = if v < 0.0 { "-" } else { "+" };
    format!("{sign}{}", fmt_ns(v.abs()))
}

/// Pads cells into aligned columns (first left, the rest right).
fn columns(rows: &[Vec<String>], out: &mut String) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let mut w = vec![0usize; cols];
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    for r in rows {
        let mut line = String::from(" ");
        for (i, c) in r.iter().enumerate() {
            let pad = w[i].saturating_sub(c.chars().count());
            line.push(' ');
            if i == 0 {
                line.push_str(c);
                line.push_str(&" ".repeat(pad));
            } else {
                line.push_str(&" ".repeat(pad));
                line.push_str(c);
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// The sweep's table as text: settings, then the phases and functions
/// whose time changed most from the first setting.
pub fn table(a: &SweepAnalysis) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Settings (median [min–max] over boots; host page faults and KVM exits of the vCPU threads, sampled)"
    );
    let mut rows = vec![vec![
        "setting".to_string(),
        "boots".into(),
        "boot time".into(),
        "host page faults".into(),
        "KVM exits".into(),
        "VMM memory set-up".into(),
    ]];
    for s in &a.settings {
        rows.push(vec![
            s.label.clone(),
            s.runs.to_string(),
            summary_cell(s.boot_ns.as_ref(), fmt_ns),
            summary_cell(s.faults.as_ref(), count),
            summary_cell(s.exits.as_ref(), count),
            summary_cell(s.memory_setup_ns.as_ref(), fmt_ns),
        ]);
    }
    columns(&rows, &mut out);
    let labels: Vec<&str> = a.settings.iter().map(|s| s.label.as_str()).collect();

    let _ = writeln!(
        out,
        "\nPhases that changed most (median sampled time per setting; change: largest from the first setting)"
    );
    if a.phases.is_empty() {
        let _ = writeln!(out, "  (none)");
    } else {
        let mut rows = vec![std::iter::once("phase")
            .chain(labels.iter().copied())
            .chain(["change"])
            .map(String::from)
            .collect::<Vec<_>>()];
        for p in &a.phases {
            let mut r = vec![p.name.clone()];
            r.extend(p.median_ns.iter().map(|&v| fmt_ns(v)));
            r.push(signed_ns(p.change_ns));
            rows.push(r);
        }
        columns(&rows, &mut out);
    }

    for (title, list) in [
        (
            "Functions that grew most (self time, mean ms per boot; p: Welch's t-test, first vs last setting, * < 0.05)",
            &a.grew,
        ),
        ("Functions that shrank most", &a.shrank),
    ] {
        let _ = writeln!(out, "\n{title}");
        if list.is_empty() {
            let _ = writeln!(out, "  (none)");
            continue;
        }
        let mut rows = vec![std::iter::once("function")
            .chain(labels.iter().copied())
            .chain(["change", "p"])
            .map(String::from)
            .collect::<Vec<_>>()];
        for f in list {
            let mut r = vec![f.name.clone()];
            r.extend(f.per_boot_ms.iter().map(|v| format!("{v:.2}")));
            r.push(format!("{:+.2}", f.change_ms));
            r.push(format_p(f.p));
            rows.push(r);
        }
        columns(&rows, &mut out);
    }
    out
}

/// Escapes text for SVG content and attribute values.
fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            // Control characters are not allowed in XML 1.0.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => o.push(' '),
            c => o.push(c),
        }
    }
    o
}

/// Cuts a label for the x axis (the full text is in a tooltip).
fn short(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let cut: String = s.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// A round axis maximum ≥ `v` (1, 2, 2.5 or 5 × 10^k) and its tick step.
fn nice_axis(v: f64) -> (f64, f64) {
    if !(v.is_finite() && v > 0.0) {
        return (1.0, 0.25);
    }
    let raw = v / 4.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| s * 4.0 >= v)
        .unwrap_or(10.0 * mag);
    ((v / step).ceil() * step, step)
}

/// Colours of the kernel phases in the stacked panel (boot order).
const PHASE_COLOURS: [&str; 11] = [
    "#9e9e9e", "#8d6e63", "#ffb74d", "#e57373", "#64b5f6", "#81c784", "#e0e0e0", "#ba68c8",
    "#4db6ac", "#fff176", "#424242",
];

const PANEL_W: f64 = 360.0;
const PANEL_H: f64 = 260.0;
const LEFT: f64 = 70.0;
const TOP: f64 = 70.0;
const GAP: f64 = 90.0;
const LABEL_ROOM: f64 = 90.0;

/// One panel's frame: axis, ticks and title; returns the y of a value.
fn panel_axis(svg: &mut String, x0: f64, title: &str, max: f64, fmt: fn(f64) -> String) -> f64 {
    let (top, step) = nice_axis(max);
    let _ = writeln!(
        svg,
        r##"<text x="{:.1}" y="{:.1}" class="ptitle">{}</text>"##,
        x0,
        TOP - 14.0,
        esc(title)
    );
    let mut v = 0.0;
    while v <= top + step / 2.0 {
        let y = TOP + PANEL_H - v / top * PANEL_H;
        let _ = writeln!(
            svg,
            r##"<line x1="{x0:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" class="grid"/><text x="{:.1}" y="{:.1}" class="tick">{}</text>"##,
            x0 + PANEL_W,
            x0 - 6.0,
            y + 4.0,
            esc(&fmt(v))
        );
        v += step;
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{x0:.1}" y1="{:.1}" x2="{x0:.1}" y2="{:.1}" class="axis"/><line x1="{x0:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" class="axis"/>"##,
        TOP,
        TOP + PANEL_H,
        TOP + PANEL_H,
        x0 + PANEL_W,
        TOP + PANEL_H
    );
    top
}

fn x_labels(svg: &mut String, x0: f64, labels: &[&str]) {
    let n = labels.len().max(1) as f64;
    for (i, l) in labels.iter().enumerate() {
        let x = x0 + (i as f64 + 0.5) * PANEL_W / n;
        let y = TOP + PANEL_H + 14.0;
        let _ = writeln!(
            svg,
            r##"<text x="{x:.1}" y="{y:.1}" class="xlabel" transform="rotate(-30 {x:.1} {y:.1})"><title>{}</title>{}</text>"##,
            esc(l),
            esc(&short(l, 22))
        );
    }
}

/// A panel of min/median/max per setting: a bar to the median, a whisker
/// from min to max, and each value as a dot.
fn range_panel(
    svg: &mut String,
    x0: f64,
    title: &str,
    labels: &[&str],
    values: &[Vec<f64>],
    fmt: fn(f64) -> String,
    class: &str,
) {
    let max = values.iter().flatten().copied().fold(0.0, f64::max);
    let top = panel_axis(svg, x0, title, max, fmt);
    let n = labels.len().max(1) as f64;
    let y = |v: f64| TOP + PANEL_H - v / top * PANEL_H;
    for (i, (label, vals)) in labels.iter().zip(values).enumerate() {
        let Some(s) = Summary::of(vals) else {
            continue;
        };
        let cx = x0 + (i as f64 + 0.5) * PANEL_W / n;
        let bw = (PANEL_W / n * 0.5).min(60.0);
        let _ = writeln!(
            svg,
            r##"<g class="setting"><title>{}: median {}, min {}, max {} ({} values)</title><rect x="{:.1}" y="{:.1}" width="{bw:.1}" height="{:.1}" class="{class}"/><line x1="{cx:.1}" y1="{:.1}" x2="{cx:.1}" y2="{:.1}" class="whisker"/><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" class="whisker"/><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" class="whisker"/>"##,
            esc(label),
            esc(&fmt(s.median)),
            esc(&fmt(s.min)),
            esc(&fmt(s.max)),
            s.n,
            cx - bw / 2.0,
            y(s.median),
            (y(0.0) - y(s.median)).max(0.0),
            y(s.min),
            y(s.max),
            cx - bw / 4.0,
            y(s.min),
            cx + bw / 4.0,
            y(s.min),
            cx - bw / 4.0,
            y(s.max),
            cx + bw / 4.0,
            y(s.max),
        );
        for v in vals {
            let _ = writeln!(
                svg,
                r##"<circle cx="{cx:.1}" cy="{:.1}" r="3" class="dot"/>"##,
                y(*v)
            );
        }
        let _ = writeln!(
            svg,
            r##"<text x="{cx:.1}" y="{:.1}" class="value">{}</text></g>"##,
            y(s.max) - 6.0,
            esc(&fmt(s.median))
        );
    }
    x_labels(svg, x0, labels);
}

/// Median time per kernel phase per setting, stacked in boot order.
fn phases_panel(svg: &mut String, x0: f64, a: &SweepAnalysis, labels: &[&str]) {
    let mut names: Vec<&str> = Vec::new();
    for s in &a.settings {
        for (n, _) in &s.kernel_phases {
            if !names.contains(&n.as_str()) {
                names.push(n);
            }
        }
    }
    names.sort_by_key(|n| crate::analysis::phases::KernelPhase::rank_of(n));
    let totals: Vec<f64> = a
        .settings
        .iter()
        .map(|s| s.kernel_phases.iter().map(|(_, v)| v).sum())
        .collect();
    let max = totals.iter().copied().fold(0.0, f64::max);
    let top = panel_axis(
        svg,
        x0,
        "Where it went: sampled time by kernel phase (median)",
        max,
        tick_ns,
    );
    let n = labels.len().max(1) as f64;
    let scale = |v: f64| v / top * PANEL_H;
    for (i, s) in a.settings.iter().enumerate() {
        let cx = x0 + (i as f64 + 0.5) * PANEL_W / n;
        let bw = (PANEL_W / n * 0.5).min(60.0);
        let mut base = TOP + PANEL_H;
        for name in &names {
            let Some(&(_, v)) = s.kernel_phases.iter().find(|(n, _)| n == name) else {
                continue;
            };
            let h = scale(v);
            let colour = PHASE_COLOURS
                [crate::analysis::phases::KernelPhase::rank_of(name).min(PHASE_COLOURS.len() - 1)];
            let _ = writeln!(
                svg,
                r##"<rect x="{:.1}" y="{:.1}" width="{bw:.1}" height="{h:.1}" fill="{colour}" class="phase"><title>{}: {} {}</title></rect>"##,
                cx - bw / 2.0,
                base - h,
                esc(&s.label),
                esc(name),
                esc(&fmt_ns(v))
            );
            base -= h;
        }
    }
    x_labels(svg, x0, labels);
    for (k, name) in names.iter().enumerate() {
        let colour = PHASE_COLOURS
            [crate::analysis::phases::KernelPhase::rank_of(name).min(PHASE_COLOURS.len() - 1)];
        let lx = x0 + PANEL_W + 12.0;
        let ly = TOP + 10.0 + k as f64 * 16.0;
        let _ = writeln!(
            svg,
            r##"<rect x="{lx:.1}" y="{:.1}" width="10" height="10" fill="{colour}"/><text x="{:.1}" y="{ly:.1}" class="legend">{}</text>"##,
            ly - 9.0,
            lx + 14.0,
            esc(name)
        );
    }
}

fn tick_ns(v: f64) -> String {
    fmt_ns(v)
}

fn tick_count(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

/// The chart: boot time, host page faults, and time by kernel phase per
/// setting, as one standalone SVG.
pub fn chart_svg(a: &SweepAnalysis, subtitle: &str) -> String {
    let labels: Vec<&str> = a.settings.iter().map(|s| s.label.as_str()).collect();
    let boots: Vec<Vec<f64>> = a
        .settings
        .iter()
        .map(|s| s.boot_ns_each.iter().map(|&v| v as f64).collect())
        .collect();
    let faults: Vec<Vec<f64>> = a
        .settings
        .iter()
        .map(|s| s.faults_each.iter().map(|&v| v as f64).collect())
        .collect();
    let width = LEFT + 3.0 * PANEL_W + 2.0 * GAP + 150.0;
    let height = TOP + PANEL_H + LABEL_ROOM + 10.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r##"<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="Verdana, sans-serif">
<style>
.title {{ font-size: 17px; font-weight: bold; }}
.subtitle {{ font-size: 12px; fill: #444; }}
.ptitle {{ font-size: 13px; font-weight: bold; }}
.tick {{ font-size: 10px; text-anchor: end; fill: #333; }}
.xlabel {{ font-size: 11px; text-anchor: end; }}
.value {{ font-size: 10px; text-anchor: middle; fill: #222; }}
.legend {{ font-size: 10px; }}
.grid {{ stroke: #e6e6e6; stroke-width: 1; }}
.axis {{ stroke: #333; stroke-width: 1; }}
.boot {{ fill: #90caf9; }}
.faults {{ fill: #ffcc80; }}
.whisker {{ stroke: #222; stroke-width: 1.5; }}
.dot {{ fill: #0d47a1; fill-opacity: 0.8; }}
</style>
<rect x="0" y="0" width="{width:.0}" height="{height:.0}" fill="white"/>
<text x="{LEFT:.0}" y="24" class="title">boottrace sweep: boot time per setting</text>
<text x="{LEFT:.0}" y="42" class="subtitle">{}</text>"##,
        esc(subtitle)
    );
    range_panel(
        &mut svg,
        LEFT,
        "Boot time (bar: median; whisker: min–max; dots: boots)",
        &labels,
        &boots,
        tick_ns,
        "boot",
    );
    range_panel(
        &mut svg,
        LEFT + PANEL_W + GAP,
        "Host page faults of the vCPU threads per boot",
        &labels,
        &faults,
        tick_count,
        "faults",
    );
    phases_panel(&mut svg, LEFT + 2.0 * (PANEL_W + GAP), a, &labels);
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::sweep::{FunctionRow, PhaseRow, SettingRow};

    fn analysis() -> SweepAnalysis {
        let row = |label: &str, boots: &[u64]| SettingRow {
            label: label.into(),
            runs: boots.len(),
            boot_ns_each: boots.to_vec(),
            boot_ns: Summary::of_u64(boots),
            faults_each: vec![100, 120],
            faults: Summary::of_u64(&[100, 120]),
            exits: None,
            memory_setup_ns: Summary::of_u64(&[2_000_000]),
            kernel_phases: vec![("start_kernel".into(), 5e6), ("initcalls".into(), 3e6)],
        };
        SweepAnalysis {
            settings: vec![
                row("mem=128M", &[10_000_000, 12_000_000]),
                row("cmdline=\"a<b & c\"", &[20_000_000, 22_000_000]),
            ],
            phases: vec![PhaseRow {
                name: "stage mm_core_init".into(),
                median_ns: vec![1e6, 9e6],
                change_ns: 8e6,
            }],
            grew: vec![FunctionRow {
                name: "memmap_init_range".into(),
                per_boot_ms: vec![1.0, 9.0],
                change_ms: 8.0,
                p: Some(0.01),
            }],
            shrank: Vec::new(),
        }
    }

    #[test]
    fn chart_is_escaped_and_has_every_setting() {
        let svg = chart_svg(&analysis(), "tiny-fp, 2 boots & more");
        assert!(svg.starts_with("<?xml"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a&lt;b &amp; c"));
        assert!(svg.contains("2 boots &amp; more"));
        assert!(!svg.contains("a<b"));
        assert_eq!(svg.matches("class=\"dot\"").count(), 4 + 4);
        assert!(svg.contains("mem=128M"));
        // Every element opened is closed (a cheap well-formedness check).
        assert_eq!(svg.matches("<g ").count(), svg.matches("</g>").count());
    }

    #[test]
    fn table_lists_settings_phases_and_functions() {
        let t = table(&analysis());
        assert!(t.contains("mem=128M"), "{t}");
        assert!(t.contains("11.000 ms [10.000 ms–12.000 ms]"), "{t}");
        let grew = t
            .lines()
            .find(|l| l.contains("memmap_init_range"))
            .expect("row");
        assert!(grew.contains("+8.00") && grew.contains("0.010*"), "{grew}");
        assert!(t.contains("+8.000 ms"), "{t}");
        assert!(t.contains("Functions that shrank most\n  (none)"), "{t}");
    }

    #[test]
    fn axis_maxima_are_round() {
        assert_eq!(nice_axis(9.0), (10.0, 2.5));
        assert_eq!(nice_axis(31e6), (40e6, 10e6));
        assert_eq!(nice_axis(0.0), (1.0, 0.25));
    }
}
