//! The report as text: boot time, VMM and kernel phases, `start_kernel`
//! stages, initcalls, top functions, host page faults and KVM exits by
//! function, unwind quality and sampler overhead — summarized over runs.

use std::fmt::Write as _;

use crate::analysis::devices::DeviceSummary;
use crate::analysis::doc::{ExactInitcallSummary, FunctionSummary, NamedSummary, ReportDoc};
use crate::analysis::initcalls::CONSOLE_WARN_PCT;
use crate::analysis::stats::Summary;
use crate::analysis::tasks::TaskSummary;
use crate::analysis::waits::WaitSummary;
use crate::render::units::fmt_ns;

fn fmt_count(v: f64) -> String {
    if v.fract() == 0.0 || v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

fn fmt_pct(v: f64) -> String {
    format!("{v:.1}%")
}

/// A text table: a left-aligned name column, then right-aligned columns.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// Longest name shown; longer ones are cut with `…`.
const NAME_WIDTH: usize = 44;

impl Table {
    fn new(header: &[&str]) -> Table {
        Table {
            header: header.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    fn render(&self, out: &mut String) {
        let cols = self.header.len();
        let mut w = vec![0usize; cols];
        for r in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in r.iter().enumerate().take(cols) {
                let len = c.chars().count();
                w[i] = w[i].max(if i == 0 { len.min(NAME_WIDTH) } else { len });
            }
        }
        for r in std::iter::once(&self.header).chain(&self.rows) {
            let mut line = String::from("  ");
            for (i, c) in r.iter().enumerate().take(cols) {
                if i == 0 {
                    let name = if c.chars().count() > NAME_WIDTH {
                        let cut: String = c.chars().take(NAME_WIDTH - 1).collect();
                        format!("{cut}…")
                    } else {
                        c.clone()
                    };
                    let _ = write!(line, "{name:<width$}", width = w[0]);
                } else {
                    let _ = write!(line, "  {c:>width$}", width = w[i]);
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
    }
}

/// Header cells of a summary: one value column with one run, else median/min/max/stddev.
fn summary_header(multi: bool) -> Vec<&'static str> {
    if multi {
        vec!["median", "min", "max", "stddev"]
    } else {
        vec!["value"]
    }
}

fn summary_cells(s: &Summary, multi: bool, f: fn(f64) -> String) -> Vec<String> {
    if multi {
        vec![
            f(s.median),
            f(s.min),
            f(s.max),
            s.stddev.map_or_else(|| "-".to_string(), f),
        ]
    } else {
        vec![f(s.median)]
    }
}

fn header_with(first: &str, multi: bool, extra: &[&str]) -> Vec<String> {
    let mut h = vec![first.to_string()];
    h.extend(summary_header(multi).into_iter().map(String::from));
    h.extend(extra.iter().map(|s| s.to_string()));
    h
}

fn named_table(out: &mut String, title: &str, rows: &[&NamedSummary], multi: bool, runs: usize) {
    let _ = writeln!(out, "\n{title}");
    if rows.is_empty() {
        let _ = writeln!(out, "  (none sampled)");
        return;
    }
    let mut extra = vec!["first at"];
    if multi {
        extra.push("runs");
    }
    let h = header_with("name", multi, &extra);
    let mut t = Table::new(&h.iter().map(String::as_str).collect::<Vec<_>>());
    for n in rows {
        let mut cells = vec![n.name.clone()];
        cells.extend(summary_cells(&n.time_ns, multi, fmt_ns));
        cells.push(
            n.first_ns
                .map_or_else(|| "-".to_string(), |f| fmt_ns(f.median)),
        );
        if multi {
            cells.push(format!("{}/{runs}", n.runs_seen));
        }
        t.row(cells);
    }
    t.render(out);
}

fn function_table(
    out: &mut String,
    title: &str,
    rows: &[FunctionSummary],
    multi: bool,
    f: fn(f64) -> String,
) {
    let _ = writeln!(out, "\n{title}");
    if rows.is_empty() {
        let _ = writeln!(out, "  (none)");
        return;
    }
    let h = header_with("function", multi, &["share"]);
    let mut t = Table::new(&h.iter().map(String::as_str).collect::<Vec<_>>());
    for r in rows {
        let mut cells = vec![r.name.clone()];
        cells.extend(summary_cells(&r.value, multi, f));
        cells.push(fmt_pct(100.0 * r.share));
        t.row(cells);
    }
    t.render(out);
}

fn tasks_table(out: &mut String, rows: &[TaskSummary], multi: bool, runs: usize) {
    if rows.is_empty() {
        // No task awareness in this trace: no section (record said why).
        return;
    }
    let _ = writeln!(
        out,
        "\nTasks (sampled host time per guest task, all vCPUs; unknown: no readable `current`)"
    );
    let mut extra = vec!["share"];
    if multi {
        extra.push("runs");
    }
    let h = header_with("task", multi, &extra);
    let mut t = Table::new(&h.iter().map(String::as_str).collect::<Vec<_>>());
    for r in rows {
        let mut cells = vec![r.name.clone()];
        cells.extend(summary_cells(&r.time_ns, multi, fmt_ns));
        cells.push(fmt_pct(100.0 * r.share));
        if multi {
            cells.push(format!("{}/{runs}", r.runs_seen));
        }
        t.row(cells);
    }
    t.render(out);
}

/// A device counter's value: bytes in KiB/MiB, other counts as numbers.
fn fmt_counter(name: &str, v: f64) -> String {
    if name.ends_with("_bytes") && v >= 1024.0 {
        if v >= f64::from(1u32 << 20) {
            format!("{:.1} MiB", v / f64::from(1u32 << 20))
        } else {
            format!("{:.1} KiB", v / 1024.0)
        }
    } else {
        fmt_count(v)
    }
}

fn devices_table(out: &mut String, rows: &[DeviceSummary], multi: bool, runs: usize) {
    if rows.is_empty() {
        // No --disk/--net, or a trace older than format 3: no section.
        return;
    }
    let _ = writeln!(out, "\nDevices (virtio; counts per boot)");
    for d in rows {
        let mut line = format!("  {}: {}, {}, {}", d.name, d.kind, d.backend, d.notify);
        if multi && d.runs_seen < runs {
            let _ = write!(line, "; in {}/{runs} runs", d.runs_seen);
        }
        if d.broken_runs > 0 {
            let _ = write!(line, "; broken in {} run(s)", d.broken_runs);
        }
        let _ = writeln!(out, "{line}");
    }
    let h = header_with("counter", multi, &[]);
    let mut t = Table::new(&h.iter().map(String::as_str).collect::<Vec<_>>());
    for d in rows {
        for c in &d.counters {
            let mut cells = vec![format!("{} {}", d.name, c.name)];
            let f = |v: f64| fmt_counter(&c.name, v);
            if multi {
                let s = &c.value;
                cells.extend([f(s.median), f(s.min), f(s.max)]);
                cells.push(s.stddev.map_or_else(|| "-".to_string(), &f));
            } else {
                cells.push(f(c.value.median));
            }
            t.row(cells);
        }
    }
    t.render(out);
}

/// Initcalls by exact wall time (only when the trace has boundaries): the
/// `limit` longest, in boot order.
fn exact_table(
    out: &mut String,
    rows: &[ExactInitcallSummary],
    limit: usize,
    multi: bool,
    runs: usize,
) {
    if rows.is_empty() {
        return;
    }
    let mut longest: Vec<&ExactInitcallSummary> = rows.iter().collect();
    longest.sort_by(|a, b| b.wall_ns.median.total_cmp(&a.wall_ns.median));
    longest.truncate(limit);
    let shown: Vec<&ExactInitcallSummary> = rows
        .iter()
        .filter(|n| longest.iter().any(|l| std::ptr::eq(*l, *n)))
        .collect();
    let _ = writeln!(
        out,
        "\nInitcalls by exact wall time ({} timed by hardware breakpoints, entry → return{}; \
         on CPU: the init thread ran, waiting: it did not)",
        rows.len(),
        if shown.len() < rows.len() {
            format!("; the {} longest, in boot order", shown.len())
        } else {
            ", in boot order".to_string()
        }
    );
    let mut h = vec!["initcall", "wall", "on CPU", "waiting"];
    if multi {
        h.extend(["wall min", "wall max", "runs"]);
    }
    let mut t = Table::new(&h);
    for r in shown {
        let mut cells = vec![
            r.name.clone(),
            fmt_ns(r.wall_ns.median),
            fmt_ns(r.on_cpu_ns.median),
            fmt_ns(r.waiting_ns.median),
        ];
        if multi {
            cells.push(fmt_ns(r.wall_ns.min));
            cells.push(fmt_ns(r.wall_ns.max));
            cells.push(format!("{}/{runs}", r.runs_seen));
        }
        t.row(cells);
    }
    t.render(out);
}

fn waits_table(
    out: &mut String,
    rows: &[WaitSummary],
    waited: Option<&Summary>,
    multi: bool,
    runs: usize,
) {
    let Some(waited) = waited else {
        // No blocked stacks in this trace: no section.
        return;
    };
    let _ = writeln!(
        out,
        "\nWaits (wall time the boot thread — boot CPU task, then pid 1 — was blocked, by its saved stack; waited {} in all)",
        fmt_ns(waited.median)
    );
    if rows.is_empty() {
        let _ = writeln!(out, "  (none)");
        return;
    }
    let mut extra = vec!["share", "initcall", "state"];
    if multi {
        extra.push("runs");
    }
    let h = header_with("wait", multi, &extra);
    let mut t = Table::new(&h.iter().map(String::as_str).collect::<Vec<_>>());
    for r in rows {
        let mut cells = vec![r.name.clone()];
        cells.extend(summary_cells(&r.time_ns, multi, fmt_ns));
        cells.push(fmt_pct(100.0 * r.share));
        cells.push(r.initcall.clone().unwrap_or_else(|| "-".to_string()));
        cells.push(r.state.to_string());
        if multi {
            cells.push(format!("{}/{runs}", r.runs_seen));
        }
        t.row(cells);
    }
    t.render(out);
}

/// The console's cost and the boot's named points (traces of format 3).
fn exact_notes(out: &mut String, d: &ReportDoc) {
    if let Some(c) = &d.summary.console {
        let pct = c.percent_of_boot.map(|p| p.median);
        let _ = writeln!(
            out,
            "\nConsole: the guest spent {} writing to the serial console{} (UART port exits, measured by the VMM)",
            fmt_ns(c.time_ns.median),
            pct.map_or_else(String::new, |p| format!(", {} of the boot", fmt_pct(p)))
        );
        let spct = c.sampled_percent_of_boot.map(|p| p.median);
        if let Some(sampled) = &c.sampled_ns {
            let _ = writeln!(
                out,
                "          {} sampled in the kernel's console flushing (formatting and writing its log){}",
                fmt_ns(sampled.median),
                spct.map_or_else(String::new, |p| format!(", {} of the boot", fmt_pct(p)))
            );
        }
        if pct.is_some_and(|p| p > CONSOLE_WARN_PCT) || spct.is_some_and(|p| p > CONSOLE_WARN_PCT) {
            let _ = writeln!(
                out,
                "warning:  console output is a large share of this boot; a quieter console \
                 (quiet, no initcall_debug, a lower loglevel) boots faster"
            );
        }
    }
    let Some(r) = d.runs.first() else { return };
    if r.points.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nBoot points{} (hardware breakpoints; since the first instruction)",
        if d.runs.len() > 1 { " of run 0" } else { "" }
    );
    let mut t = Table::new(&["point", "at"]);
    for p in &r.points {
        let name = match &p.function {
            Some(f) => format!("{} ({f})", p.name),
            None => p.name.clone(),
        };
        t.row(vec![name, fmt_ns(p.at_ns as f64)]);
    }
    t.render(out);
}

fn opt_ns(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), |x| fmt_ns(x as f64))
}

/// The recorded layout: one line per distinct layout, naming its runs
/// (KASLR gives each boot its own). Nothing when no run has one.
fn layout_lines(out: &mut String, runs: &[crate::analysis::doc::RunReport]) {
    let mut seen: Vec<(&crate::analysis::doc::LayoutReport, Vec<u32>)> = Vec::new();
    for r in runs {
        let Some(l) = &r.layout else { continue };
        match seen.iter_mut().find(|(x, _)| *x == l) {
            Some((_, v)) => v.push(r.run),
            None => seen.push((l, vec![r.run])),
        }
    }
    if seen.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nLayout (where the kernel ran, as recorded)");
    for (l, which) in seen.iter().take(32) {
        let who = if which.len() == runs.len() {
            "all runs".to_string()
        } else {
            let v: Vec<String> = which.iter().take(16).map(u32::to_string).collect();
            format!(
                "run{} {}{}",
                if which.len() == 1 { "" } else { "s" },
                v.join(", "),
                if which.len() > 16 { ", …" } else { "" }
            )
        };
        let sign = if l.kaslr_slide < 0 { "-" } else { "+" };
        let phys = l
            .kernel_phys_start
            .map_or_else(|| "unknown".to_string(), |p| format!("{p:#x}"));
        let _ = writeln!(
            out,
            "  {who}: KASLR slide {sign}{:#x} ({}); kernel _text {:#x} at physical {phys}, {} KiB",
            l.kaslr_slide.unsigned_abs(),
            l.slide_method,
            l.kernel_link_start,
            l.kernel_size / 1024
        );
        if !l.decompressor_bases.is_empty() {
            let b: Vec<String> = l
                .decompressor_bases
                .iter()
                .map(|a| format!("{a:#x}"))
                .collect();
            let _ = writeln!(
                out,
                "  {:width$}  decompressor ran at physical {}",
                "",
                b.join(", "),
                width = who.len()
            );
        }
    }
    if seen.len() > 32 {
        let _ = writeln!(
            out,
            "  ({} more distinct layouts in the JSON report)",
            seen.len() - 32
        );
    }
}

/// Renders the text report; `initcalls` bounds the initcall rows.
pub fn render(d: &ReportDoc, initcalls: usize) -> String {
    let mut out = String::new();
    let s = &d.summary;
    let multi = s.runs > 1;
    let i = &d.input;
    let _ = writeln!(out, "boottrace report: {}", i.path);
    let _ = writeln!(
        out,
        "kernel:   {} ({})",
        i.kernel_version.as_deref().unwrap_or("version unknown"),
        i.kernel_path
    );
    let _ = writeln!(out, "symbols:  {}", i.symbol_source);
    let _ = writeln!(
        out,
        "recorded: {} run{}, {} Hz per vCPU, unwinder {}{}",
        s.runs,
        if s.runs == 1 { "" } else { "s" },
        i.sample_freq_hz,
        i.unwinder,
        if i.complete { "" } else { ", file incomplete" }
    );
    if !i.pvm_workarounds.is_empty() {
        let _ = writeln!(
            out,
            "host:     PVM (emulated KVM; times are not bare-metal KVM times), workarounds: {}",
            i.pvm_workarounds.join(", ")
        );
    }
    for w in &i.warnings {
        let _ = writeln!(out, "note:     {w}");
    }
    if multi {
        let _ = writeln!(
            out,
            "Values are over runs: median, min, max, sample stddev."
        );
    }

    let _ = writeln!(out, "\nBoot");
    let h = header_with("", multi, &[]);
    let mut t = Table::new(&h.iter().map(String::as_str).collect::<Vec<_>>());
    for (name, v) in [
        ("boot time (first instruction → end)", s.boot_ns),
        (
            "until init (→ first user-mode instruction)",
            s.until_init_ns,
        ),
    ] {
        let mut cells = vec![name.to_string()];
        match v {
            Some(v) => cells.extend(summary_cells(&v, multi, fmt_ns)),
            None => cells.push("-".to_string()),
        }
        t.row(cells);
    }
    t.render(&mut out);

    let _ = writeln!(
        out,
        "\nVMM phases (time of each boundary since the run's start, and since the previous one)"
    );
    if s.vmm_phases.is_empty() {
        let _ = writeln!(out, "  (none recorded)");
    } else {
        let mut t = Table::new(&["boundary", "at", "duration"]);
        for p in &s.vmm_phases {
            t.row(vec![
                p.name.clone(),
                fmt_ns(p.at_ns.median),
                fmt_ns(p.duration_ns.median),
            ]);
        }
        t.render(&mut out);
    }

    layout_lines(&mut out, &d.runs);

    let phases: Vec<&NamedSummary> = s.kernel_phases.iter().collect();
    named_table(
        &mut out,
        "Kernel phases (sampled host time, all vCPUs)",
        &phases,
        multi,
        s.runs,
    );
    let stages: Vec<&NamedSummary> = s.start_kernel_stages.iter().collect();
    named_table(
        &mut out,
        "start_kernel stages (its direct callees, in order of first appearance)",
        &stages,
        multi,
        s.runs,
    );

    // The longest initcalls, shown in boot order.
    let mut longest: Vec<&NamedSummary> = s.initcalls.iter().collect();
    longest.sort_by(|a, b| b.time_ns.median.total_cmp(&a.time_ns.median));
    longest.truncate(initcalls);
    let shown: Vec<&NamedSummary> = s
        .initcalls
        .iter()
        .filter(|n| longest.iter().any(|l| std::ptr::eq(*l, *n)))
        .collect();
    let title = if shown.len() < s.initcalls.len() {
        format!(
            "Initcalls ({} sampled; the {} longest, in boot order)",
            s.initcalls.len(),
            shown.len()
        )
    } else {
        format!("Initcalls ({} sampled, in boot order)", s.initcalls.len())
    };
    named_table(&mut out, &title, &shown, multi, s.runs);
    exact_table(&mut out, &s.exact_initcalls, initcalls, multi, s.runs);
    exact_notes(&mut out, d);

    tasks_table(&mut out, &s.tasks, multi, s.runs);
    devices_table(&mut out, &s.devices, multi, s.runs);
    waits_table(&mut out, &s.waits, s.waited_ns.as_ref(), multi, s.runs);

    function_table(
        &mut out,
        "Top functions by self time",
        &s.top_self,
        multi,
        fmt_ns,
    );
    function_table(
        &mut out,
        "Top functions by total time",
        &s.top_total,
        multi,
        fmt_ns,
    );
    function_table(
        &mut out,
        "Host page faults by function (self; minor + major of the vCPU thread, incl. KVM's)",
        &s.faults_by_function,
        multi,
        fmt_count,
    );
    function_table(
        &mut out,
        "KVM exits by function (self)",
        &s.exits_by_function,
        multi,
        fmt_count,
    );

    let q = &s.unwind;
    let _ = writeln!(out, "\nUnwind quality");
    match q.percent {
        Some(p) => {
            let _ = writeln!(
                out,
                "  {p:.1}% of {} kernel-mode samples after start_kernel began unwind to a known root ({} truncated)",
                q.considered, q.truncated
            );
            if !q.bad_roots.is_empty() {
                let list: Vec<String> = q
                    .bad_roots
                    .iter()
                    .map(|(n, c)| format!("{n} ({c})"))
                    .collect();
                let _ = writeln!(out, "  outermost frames of the others: {}", list.join(", "));
            }
        }
        None => {
            let _ = writeln!(out, "  n/a: no kernel-mode sample after start_kernel began");
        }
    }

    let _ = writeln!(out, "\nSampler overhead");
    let (mut kick, mut cap, mut unw, mut wr, mut n) = (0u64, 0u64, 0u64, 0u64, 0u64);
    for r in &d.runs {
        kick += r.sampler.kick_ns;
        cap += r.sampler.capture_ns;
        unw += r.sampler.unwind_ns;
        wr += r.sampler.write_ns;
        n += r.sampler.samples;
    }
    if n == 0 {
        let _ = writeln!(out, "  no samples");
    } else {
        let per = |x: u64| fmt_ns(x as f64 / n as f64);
        let _ = writeln!(
            out,
            "  per sample: {} (kick/exit {}, capture {}, unwind {}, write {})",
            per(kick + cap + unw + wr),
            per(kick),
            per(cap),
            per(unw),
            per(wr)
        );
        if let Some(p) = &s.sampler.percent_of_boot {
            let _ = writeln!(
                out,
                "  sampler time: {} of boot time{}",
                fmt_pct(p.median),
                if multi { " (median over runs)" } else { "" }
            );
        }
    }

    let _ = writeln!(out, "\nRuns");
    let mut t = Table::new(&[
        "run",
        "end",
        "boot",
        "until init",
        "samples",
        "unwind",
        "sampler",
    ]);
    for r in &d.runs {
        t.row(vec![
            r.run.to_string(),
            r.end_reason.clone().unwrap_or_else(|| "-".to_string()),
            opt_ns(r.boot_ns),
            opt_ns(r.until_init_ns),
            r.samples.to_string(),
            r.unwind.percent.map_or_else(|| "-".to_string(), fmt_pct),
            r.sampler
                .percent_of_boot
                .map_or_else(|| "-".to_string(), fmt_pct),
        ]);
    }
    t.render(&mut out);
    for r in d
        .runs
        .iter()
        .filter(|r| r.end_detail.is_some())
        .take(MAX_DETAILS)
    {
        let _ = writeln!(
            out,
            "  run {} ended: {}",
            r.run,
            r.end_detail.as_deref().unwrap_or_default()
        );
    }
    out
}

/// End details printed under the runs table (the JSON has all).
const MAX_DETAILS: usize = 5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_cuts_long_names_and_aligns_numbers() {
        let mut t = Table::new(&["name", "v"]);
        t.row(vec!["x".repeat(60), "1".into()]);
        t.row(vec!["short".into(), "100".into()]);
        let mut s = String::new();
        t.render(&mut s);
        let lines: Vec<&str> = s.lines().collect();
        assert!(lines[1].contains('…'));
        assert!(lines[1].ends_with("    1"), "{s}");
        assert!(lines[2].ends_with("  100"), "{s}");
        assert_eq!(lines[1].chars().count(), lines[2].chars().count());
    }
}
