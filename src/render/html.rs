//! `report --html out.html`: one self-contained page to attach to a bug or
//! a review. Nothing is fetched from the network: the flamegraph is
//! inferno's SVG inline (its search and zoom script included, started by
//! the page), the flame chart an inline image of inferno's SVG, and the
//! rest plain HTML tables with a little CSS: the headline figures, VMM and
//! kernel phases, `start_kernel` stages, initcalls, top functions, host
//! costs (page faults and KVM exits by function, sampler overhead), the
//! recorded layout, and each run's console log with host timestamps.
//!
//! The page's search box (and `?s=TERM` in its URL) searches the
//! flamegraph with inferno's own search and marks matching table rows and
//! console lines.

use std::fmt::Write as _;

use anyhow::Context;

use super::flame::{render as render_flame, FlameOptions};
use super::units::fmt_ns;
use crate::analysis::doc::{FunctionSummary, NamedSummary, ReportDoc};
use crate::analysis::fold::RunSelect;
use crate::analysis::headline::Headline;
use crate::profile::Profile;

/// Most console lines shown per run (the trace keeps them all).
pub const MAX_CONSOLE_LINES: usize = 20_000;
/// Most runs whose console log is shown.
pub const MAX_CONSOLE_RUNS: usize = 10;

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            // Control characters a guest printed: shown as escapes, never raw.
            c if c.is_control() && c != '\t' => {
                let _ = write!(o, "\\x{:02x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o
}

/// Base64 (standard alphabet, padded) for the inline image.
fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut o = String::with_capacity(data.len().div_ceil(3) * 4);
    for ch in data.chunks(3) {
        let b = [ch[0], *ch.get(1).unwrap_or(&0), *ch.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= ch.len() {
                o.push(char::from(A[((n >> shift) & 63) as usize]));
            } else {
                o.push('=');
            }
        }
    }
    o
}

/// The inferno SVG without its XML prologue (for inline use), with its
/// `onload` handler removed: the page starts it once the DOM is ready.
fn inline_svg(svg: &str) -> String {
    let start = svg.find("<svg").unwrap_or(0);
    svg[start..].replacen(" onload=\"init(evt)\"", "", 1)
}

const CSS: &str = r#"
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
.meta { color: #555; font-size: 0.9em; }
.headline { display: flex; gap: 1.5em; flex-wrap: wrap; margin: 1em 0; }
.fig { background: #f4f4f8; padding: 0.6em 1em; border-radius: 6px; }
.fig b { display: block; font-size: 1.4em; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { padding: 0.2em 0.7em; border-bottom: 1px solid #e4e4e4; text-align: right; }
th:first-child, td:first-child { text-align: left; font-family: monospace; }
tr.hit td { background: #f6d0f6; }
pre.console { background: #111; color: #ddd; padding: 0.6em; max-height: 30em; overflow: auto; font-size: 0.85em; }
pre.console span.hit { background: #804080; }
.flame { width: 100%; overflow-x: auto; }
.chart img { width: 100%; }
#searchbox { font-size: 1em; padding: 0.2em 0.4em; }
"#;

/// The page's own script: starts inferno's, and searches the flamegraph,
/// the tables and the console logs (button, Enter, or `?s=` in the URL).
const SCRIPT: &str = r#"
function bt_search(term) {
  term = term || "";
  var lower = term.toLowerCase();
  var rows = document.querySelectorAll("tr[data-name]");
  var hits = 0;
  for (var i = 0; i < rows.length; i++) {
    var on = lower !== "" && rows[i].getAttribute("data-name").toLowerCase().indexOf(lower) >= 0;
    rows[i].className = on ? "hit" : "";
    if (on) hits++;
  }
  var lines = document.querySelectorAll("pre.console span[data-line]");
  for (var j = 0; j < lines.length; j++) {
    var hit = lower !== "" && lines[j].textContent.toLowerCase().indexOf(lower) >= 0;
    lines[j].className = hit ? "hit" : "";
    if (hit) hits++;
  }
  if (typeof search === "function" && typeof reset_search === "function") {
    if (term === "") { reset_search(); } else { search(term); }
  }
  var m = document.getElementById("matched");
  document.getElementById("bt-result").textContent =
    (term === "" ? "" : hits + " table rows and console lines match" +
      (m && m.textContent.trim() !== "" ? "; flamegraph: " + m.textContent.trim() : ""));
}
document.addEventListener("DOMContentLoaded", function () {
  if (typeof init === "function") { init(null); }
  var box = document.getElementById("searchbox");
  document.getElementById("searchbtn").addEventListener("click", function () { bt_search(box.value); });
  box.addEventListener("keydown", function (e) { if (e.key === "Enter") { bt_search(box.value); } });
  var q = new URLSearchParams(window.location.search).get("s");
  if (q) { box.value = q; setTimeout(function () { bt_search(q); }, 0); }
});
"#;

fn named_rows(out: &mut String, title: &str, rows: &[NamedSummary], runs: usize) {
    let _ = writeln!(out, "<h2>{}</h2>", esc(title));
    if rows.is_empty() {
        let _ = writeln!(out, "<p class=meta>(none sampled)</p>");
        return;
    }
    let _ = writeln!(
        out,
        "<table><tr><th>name</th><th>median</th><th>min</th><th>max</th><th>first seen</th><th>runs</th></tr>"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "<tr data-name=\"{n}\"><td>{n}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}/{runs}</td></tr>",
            fmt_ns(r.time_ns.median),
            fmt_ns(r.time_ns.min),
            fmt_ns(r.time_ns.max),
            r.first_ns.map_or_else(|| "-".into(), |f| fmt_ns(f.median)),
            r.runs_seen,
            n = esc(&r.name),
        );
    }
    let _ = writeln!(out, "</table>");
}

fn function_rows(out: &mut String, title: &str, rows: &[FunctionSummary], time: bool) {
    let _ = writeln!(out, "<h2>{}</h2>", esc(title));
    if rows.is_empty() {
        let _ = writeln!(out, "<p class=meta>(none)</p>");
        return;
    }
    let _ = writeln!(
        out,
        "<table><tr><th>function</th><th>median per run</th><th>share</th></tr>"
    );
    for r in rows {
        let v = if time {
            fmt_ns(r.value.median)
        } else {
            format!("{:.0}", r.value.median)
        };
        let _ = writeln!(
            out,
            "<tr data-name=\"{n}\"><td>{n}</td><td>{v}</td><td>{:.1}%</td></tr>",
            100.0 * r.share,
            n = esc(&r.name),
        );
    }
    let _ = writeln!(out, "</table>");
}

fn headline(out: &mut String, d: &ReportDoc) {
    let s = &d.summary;
    let fig = |out: &mut String, label: &str, value: String| {
        let _ = writeln!(
            out,
            "<div class=fig>{}<b>{}</b></div>",
            esc(label),
            esc(&value)
        );
    };
    let _ = writeln!(out, "<div class=headline>");
    if let Some(b) = &s.boot_ns {
        fig(
            out,
            "boot time (median)",
            if s.runs > 1 {
                format!("{} ({}–{})", fmt_ns(b.median), fmt_ns(b.min), fmt_ns(b.max))
            } else {
                fmt_ns(b.median)
            },
        );
    }
    if let Some(u) = &s.until_init_ns {
        fig(out, "until init", fmt_ns(u.median));
    }
    fig(out, "runs", s.runs.to_string());
    let samples: u64 = d.runs.iter().map(|r| r.samples).sum();
    fig(out, "samples", samples.to_string());
    if let Some(p) = &s.sampler.percent_of_boot {
        fig(out, "sampler overhead", format!("{:.1}% of boot", p.median));
    }
    let _ = writeln!(out, "</div>");
}

fn vmm_table(out: &mut String, d: &ReportDoc) {
    let _ = writeln!(out, "<h2>VMM phases</h2>");
    if d.summary.vmm_phases.is_empty() {
        let _ = writeln!(out, "<p class=meta>(none recorded)</p>");
        return;
    }
    let _ = writeln!(
        out,
        "<table><tr><th>boundary</th><th>at (since run start)</th><th>since previous</th></tr>"
    );
    for p in &d.summary.vmm_phases {
        let _ = writeln!(
            out,
            "<tr data-name=\"{n}\"><td>{n}</td><td>{}</td><td>{}</td></tr>",
            fmt_ns(p.at_ns.median),
            fmt_ns(p.duration_ns.median),
            n = esc(&p.name)
        );
    }
    let _ = writeln!(out, "</table>");
}

fn layout_table(out: &mut String, d: &ReportDoc) {
    let rows: Vec<_> = d
        .runs
        .iter()
        .filter_map(|r| r.layout.as_ref().map(|l| (r.run, l)))
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "<h2>Layout (where the kernel ran)</h2>");
    let _ = writeln!(
        out,
        "<table><tr><th>run</th><th>KASLR slide</th><th>how found</th><th>kernel _text at physical</th><th>decompressor at</th></tr>"
    );
    for (run, l) in rows.iter().take(100) {
        let bases: Vec<String> = l
            .decompressor_bases
            .iter()
            .map(|a| format!("{a:#x}"))
            .collect();
        let _ = writeln!(
            out,
            "<tr><td>{run}</td><td>{}{:#x}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if l.kaslr_slide < 0 { "-" } else { "+" },
            l.kaslr_slide.unsigned_abs(),
            esc(&l.slide_method),
            l.kernel_phys_start
                .map_or_else(|| "unknown".into(), |p| format!("{p:#x}")),
            esc(&bases.join(", "))
        );
    }
    let _ = writeln!(out, "</table>");
}

fn console(out: &mut String, p: &Profile) {
    let _ = writeln!(out, "<h2>Console (host time since each run's start)</h2>");
    for run in p.runs.iter().take(MAX_CONSOLE_RUNS) {
        let open = if run.run == p.runs.first().map_or(0, |r| r.run) {
            " open"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "<details{open}><summary>run {} — {} lines</summary><pre class=console>",
            run.run,
            run.console.len()
        );
        for l in run.console.iter().take(MAX_CONSOLE_LINES) {
            let _ = writeln!(
                out,
                "<span data-line>[{:>12.6}] {}</span>",
                l.t_ns as f64 / 1e9,
                esc(&l.line)
            );
        }
        if run.console.len() > MAX_CONSOLE_LINES {
            let _ = writeln!(
                out,
                "… {} more lines in the trace",
                run.console.len() - MAX_CONSOLE_LINES
            );
        }
        let _ = writeln!(out, "</pre></details>");
    }
    if p.runs.len() > MAX_CONSOLE_RUNS {
        let _ = writeln!(
            out,
            "<p class=meta>{} more runs' consoles are in the trace.</p>",
            p.runs.len() - MAX_CONSOLE_RUNS
        );
    }
}

/// Renders the page of profile `p` and its report `d`.
pub fn render(p: &Profile, d: &ReportDoc) -> anyhow::Result<String> {
    let mut flame = Vec::new();
    let o = FlameOptions::default();
    render_flame(p, &o, &mut flame).context("the flamegraph")?;
    let flame = String::from_utf8(flame).context("the flamegraph is not UTF-8")?;
    let first = p.runs.first().map_or(0, |r| r.run);
    let mut chart = Vec::new();
    let chart_ok = render_flame(
        p,
        &FlameOptions {
            runs: RunSelect::Run(first),
            chart: true,
            ..o
        },
        &mut chart,
    )
    .is_ok();

    let i = &d.input;
    let title = Headline::new(p, RunSelect::All).title();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>\
         <meta name=viewport content=\"width=device-width\">\
         <title>{}</title><style>{CSS}</style></head><body>",
        esc(&title)
    );
    let _ = writeln!(out, "<h1>{}</h1>", esc(&title));
    let _ = writeln!(
        out,
        "<p class=meta>kernel: {} ({})<br>input: {}<br>{} run(s), {} Hz per vCPU, unwinder {}, symbols: {}{}</p>",
        esc(i.kernel_version.as_deref().unwrap_or("version unknown")),
        esc(&i.kernel_path),
        esc(&i.path),
        d.summary.runs,
        i.sample_freq_hz,
        esc(i.unwinder.as_str()),
        esc(&i.symbol_source),
        if i.pvm_workarounds.is_empty() {
            String::new()
        } else {
            "<br>host: PVM (emulated KVM: times are not bare-metal KVM times)".into()
        }
    );
    for w in &i.warnings {
        let _ = writeln!(out, "<p class=meta>note: {}</p>", esc(w));
    }
    headline(&mut out, d);
    let _ = writeln!(
        out,
        "<p><input id=searchbox placeholder=\"search functions, phases, console\" size=40> \
         <button id=searchbtn>Search</button> <span id=bt-result></span></p>"
    );
    let _ = writeln!(
        out,
        "<h2>Flamegraph (all runs; click to zoom, Ctrl-F to search)</h2><div class=flame>{}</div>",
        inline_svg(&flame)
    );
    if chart_ok {
        let _ = writeln!(
            out,
            "<h2>Flame chart (run {first}, in time order)</h2><div class=chart><img alt=\"flame chart\" src=\"data:image/svg+xml;base64,{}\"></div>",
            base64(&chart)
        );
    }
    vmm_table(&mut out, d);
    named_rows(
        &mut out,
        "Kernel phases",
        &d.summary.kernel_phases,
        d.summary.runs,
    );
    named_rows(
        &mut out,
        "start_kernel stages",
        &d.summary.start_kernel_stages,
        d.summary.runs,
    );
    named_rows(&mut out, "Initcalls", &d.summary.initcalls, d.summary.runs);
    function_rows(
        &mut out,
        "Top functions by self time",
        &d.summary.top_self,
        true,
    );
    function_rows(
        &mut out,
        "Top functions by total time",
        &d.summary.top_total,
        true,
    );
    function_rows(
        &mut out,
        "Host page faults by function",
        &d.summary.faults_by_function,
        false,
    );
    function_rows(
        &mut out,
        "KVM exits by function",
        &d.summary.exits_by_function,
        false,
    );
    if let Some(ps) = &d.summary.sampler.per_sample_ns {
        let _ = writeln!(
            out,
            "<h2>Sampler cost</h2><p>{} per sample (median){}</p>",
            fmt_ns(ps.median),
            d.summary
                .sampler
                .percent_of_boot
                .map_or_else(String::new, |p| format!(
                    ", {:.1}% of the boot time",
                    p.median
                ))
        );
    }
    layout_table(&mut out, d);
    console(&mut out, p);
    let _ = writeln!(
        out,
        "<p class=meta>Written by boottrace {}.</p><script>{SCRIPT}</script></body></html>",
        env!("CARGO_PKG_VERSION")
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_base64() {
        assert_eq!(
            esc("<a href=\"x\">&'\u{1b}"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;\\x1b"
        );
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn inline_svg_drops_the_prologue_and_the_onload() {
        let s = "<?xml version=\"1.0\"?><!DOCTYPE svg><svg version=\"1.1\" onload=\"init(evt)\" x=1></svg>";
        assert_eq!(inline_svg(s), "<svg version=\"1.1\" x=1></svg>");
    }
}
