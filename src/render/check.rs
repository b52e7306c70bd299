//! `boottrace check BASELINE… --candidate CANDIDATE…`: the CI gate. Loads
//! each side (trace files, directories of them, or one stored
//! `report --json`), compares them with [`crate::analysis::check`] and
//! renders the table (text) or the JSON document. The caller turns the
//! verdict into the exit status (0 pass, 1 regressed, 2 could not compare).

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use serde::Serialize;

use super::diff::is_trace_file;
use super::units::fmt_ns;
use super::Message;
use crate::analysis::check::{
    compare, CheckOptions, CheckResult, CheckSide, Kind, Row, Status, Verdict,
};
use crate::analysis::doc;
use crate::profile::many::{describe, open_many};
use crate::profile::symbols::SymbolConfig;

/// The `format` of `check --json`.
pub const FORMAT: &str = "boottrace-check";
/// The `version` of `check --json` (fields are only added within a version).
pub const VERSION: u32 = 1;

/// Largest stored report `check` reads.
const MAX_REPORT_BYTES: u64 = 256 << 20;

/// What `boottrace check` does.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckConfig {
    /// Baseline inputs.
    pub baseline: Vec<PathBuf>,
    /// Candidate inputs.
    pub candidate: Vec<PathBuf>,
    /// Symbols of the baseline's traces.
    pub symbols_a: SymbolConfig,
    /// Symbols of the candidate's traces.
    pub symbols_b: SymbolConfig,
    /// Accept traces of different kernels within one side.
    pub allow_mixed: bool,
    /// Thresholds and significance.
    pub options: CheckOptions,
    /// JSON instead of the table.
    pub json: bool,
    /// Rows shown per kind of stage, initcall and function (the JSON has all that changed).
    pub top: usize,
}

/// One side as loaded, with what is said about it.
struct Loaded {
    side: CheckSide,
    what: String,
}

/// Reads one side: a stored report, or trace files and directories.
fn load_side(
    inputs: &[PathBuf],
    symbols: &SymbolConfig,
    allow_mixed: bool,
    msgs: &mut Vec<Message>,
) -> anyhow::Result<Loaded> {
    if let [one] = inputs {
        if one.is_file() && !is_trace_file(one)? {
            let f = std::fs::File::open(one)
                .with_context(|| format!("cannot open {}", one.display()))?;
            let mut text = String::new();
            f.take(MAX_REPORT_BYTES + 1)
                .read_to_string(&mut text)
                .with_context(|| {
                    format!(
                        "cannot read {} (neither a trace nor a report --json)",
                        one.display()
                    )
                })?;
            anyhow::ensure!(
                text.len() as u64 <= MAX_REPORT_BYTES,
                "{} is larger than {} MiB: not a report --json",
                one.display(),
                MAX_REPORT_BYTES >> 20
            );
            let side = CheckSide::from_json(&text).with_context(|| {
                format!("{} is neither a trace nor a report --json", one.display())
            })?;
            return Ok(Loaded {
                what: format!("{} (stored report)", one.display()),
                side,
            });
        }
    }
    for i in inputs {
        if i.is_file() && !is_trace_file(i)? {
            anyhow::bail!(
                "{} is not a trace file (a stored report --json must be a side's only input)",
                i.display()
            );
        }
    }
    let p = open_many(inputs, symbols, allow_mixed)?;
    msgs.extend(p.trace_warnings.iter().map(|w| Message::warning(w.clone())));
    msgs.extend(p.notes.iter().map(|n| Message::note(n.clone())));
    let report = doc::build(&p, usize::MAX);
    Ok(Loaded {
        what: describe(inputs),
        side: CheckSide::from_report(&report),
    })
}

/// The exit status of a verdict: 0 pass, 1 regressed, 2 could not decide.
pub fn exit_status(v: Verdict) -> u8 {
    match v {
        Verdict::Pass => 0,
        Verdict::Regressed => 1,
        Verdict::TooFewRuns => 2,
    }
}

/// `boottrace check`: writes the table or JSON to `out` and returns the
/// verdict with the status lines for stderr.
pub fn run(c: &CheckConfig, out: &mut dyn Write) -> anyhow::Result<(Verdict, Vec<Message>)> {
    let mut msgs = Vec::new();
    let a = load_side(&c.baseline, &c.symbols_a, c.allow_mixed, &mut msgs)
        .context("cannot read the baseline")?;
    let b = load_side(&c.candidate, &c.symbols_b, c.allow_mixed, &mut msgs)
        .context("cannot read the candidate")?;
    anyhow::ensure!(
        a.side.runs > 0 && b.side.runs > 0,
        "nothing to compare: the {} has no runs",
        if a.side.runs == 0 {
            "baseline"
        } else {
            "candidate"
        }
    );
    let result = compare(&a.side, &b.side, &c.options);
    anyhow::ensure!(
        !result.rows.is_empty(),
        "nothing to compare: the two sides have no boot time, phase or function in common"
    );
    if result.unknown > 0 {
        msgs.push(Message::note(format!(
            "{} functions were left out: a stored report lists only its top functions",
            result.unknown
        )));
    }
    if c.json {
        let d = JsonCheck {
            format: FORMAT,
            version: VERSION,
            verdict: result.verdict,
            exit_status: exit_status(result.verdict),
            baseline: JsonSide::of(&c.baseline, &a.side),
            candidate: JsonSide::of(&c.candidate, &b.side),
            options: &c.options,
            runs_needed_for_boot: result.runs_needed_for_boot,
            unknown: result.unknown,
            rows: result
                .rows
                .iter()
                .filter(|r| shown_always(r) || r.status != Status::WithinThreshold)
                .collect(),
        };
        serde_json::to_writer_pretty(&mut *out, &d).context("cannot encode the check")?;
        out.write_all(b"\n").context("writing the check")?;
    } else {
        let text = render_text(&a.what, &b.what, &a.side, &b.side, &result, c);
        out.write_all(text.as_bytes())
            .context("writing the check")?;
    }
    out.flush().context("writing the check")?;
    Ok((result.verdict, msgs))
}

/// Boot and phase rows are always listed; the rest only when they changed.
fn shown_always(r: &Row) -> bool {
    matches!(r.kind, Kind::Boot | Kind::Phase)
}

/// `check --json` (format [`FORMAT`], version [`VERSION`]): `verdict`
/// (`pass`, `regressed`, `too_few_runs`), `exit_status`, `baseline` and
/// `candidate` {`inputs`, `runs`, `kernel`}, `options` {`boot`, `items`:
/// threshold terms, `alpha`, `power`}, `runs_needed_for_boot`, `unknown`,
/// `rows[]` {`kind`, `name`, `baseline`/`candidate` {`n`, `mean`, `stddev`}
/// in ns, `delta_ns`, `delta_percent`, `threshold_ns`, `p` (one-sided),
/// `test` (`welch`, `prediction`, null), `status` (`regressed`,
/// `undecided`, `improved`, `within_threshold`), `runs_needed`}: every
/// boot and phase row, and the other rows that changed beyond their threshold.
#[derive(Serialize)]
struct JsonCheck<'a> {
    format: &'static str,
    version: u32,
    verdict: Verdict,
    exit_status: u8,
    baseline: JsonSide,
    candidate: JsonSide,
    options: &'a CheckOptions,
    runs_needed_for_boot: Option<usize>,
    unknown: usize,
    rows: Vec<&'a Row>,
}

#[derive(Serialize)]
struct JsonSide {
    inputs: Vec<String>,
    runs: usize,
    kernel: Option<String>,
}

impl JsonSide {
    fn of(inputs: &[PathBuf], s: &CheckSide) -> JsonSide {
        JsonSide {
            inputs: inputs.iter().map(|p| p.display().to_string()).collect(),
            runs: s.runs,
            kernel: s.kernel.clone(),
        }
    }
}

fn format_p(p: Option<f64>) -> String {
    match p {
        None => "n/a".into(),
        Some(p) if p < 0.001 => "<0.001".into(),
        Some(p) => format!("{p:.3}"),
    }
}

fn signed_ns(v: f64) -> String {
    if v >= 0.0 {
        format!("+{}", fmt_ns(v))
    } else {
        format!("-{}", fmt_ns(-v))
    }
}

fn side_line(label: &str, what: &str, s: &CheckSide) -> String {
    format!(
        "{label}: {what} — {} run{}, {}",
        s.runs,
        if s.runs == 1 { "" } else { "s" },
        s.kernel.as_deref().unwrap_or("kernel unknown")
    )
}

fn row_line(r: &Row) -> String {
    let pct = r
        .delta_percent
        .map_or_else(|| "new".to_string(), |p| format!("{p:+.1}%"));
    format!(
        "{:<10} {:<9} {:>11} {:>11} {:>11} {:>8} {:>7}  {}",
        r.status.label(),
        r.kind.label(),
        fmt_ns(r.baseline.mean),
        fmt_ns(r.candidate.mean),
        signed_ns(r.delta_ns),
        pct,
        format_p(r.p),
        r.name
    )
}

/// The table and verdict as text.
fn render_text(
    a_what: &str,
    b_what: &str,
    a: &CheckSide,
    b: &CheckSide,
    r: &CheckResult,
    c: &CheckConfig,
) -> String {
    let o = &c.options;
    let mut s = String::new();
    let _ = writeln!(s, "{}", side_line("Baseline ", a_what, a));
    let _ = writeln!(s, "{}", side_line("Candidate", b_what, b));
    let _ = writeln!(
        s,
        "Regression: boot {}; phases, stages, initcalls, functions (self time) {}; \
         and significant over runs (one-sided Welch's t-test on the means, p < {})",
        o.boot, o.items, o.alpha
    );
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "{:<10} {:<9} {:>11} {:>11} {:>11} {:>8} {:>7}  name",
        "status", "kind", "baseline", "candidate", "Δ", "Δ%", "p"
    );
    let mut per_kind: std::collections::HashMap<Kind, usize> = Default::default();
    let mut hidden = 0usize;
    for row in &r.rows {
        if !shown_always(row) {
            if row.status == Status::WithinThreshold {
                continue;
            }
            let k = per_kind.entry(row.kind).or_default();
            *k += 1;
            if *k > c.top {
                hidden += 1;
                continue;
            }
        }
        let _ = writeln!(s, "{}", row_line(row));
    }
    if hidden > 0 {
        let _ = writeln!(s, "({hidden} more changed rows: --top N, or --json)");
    }
    let _ = writeln!(s);
    let undecided: Vec<&Row> = r
        .rows
        .iter()
        .filter(|x| x.status == Status::Undecided)
        .collect();
    match r.verdict {
        Verdict::TooFewRuns => {
            let _ = writeln!(
                s,
                "TOO FEW RUNS to decide: one run on each side, so run-to-run noise cannot be \
                 measured. Record at least 2 runs per side (`record --runs N`, or more trace \
                 files), 5 or more to see small changes."
            );
        }
        Verdict::Regressed => {
            let names: Vec<String> = r
                .rows
                .iter()
                .filter(|x| x.status == Status::Regressed)
                .map(|x| {
                    format!(
                        "{} {} ({})",
                        x.kind.label(),
                        x.name,
                        x.delta_percent
                            .map_or_else(|| signed_ns(x.delta_ns), |p| format!("{p:+.1}%"))
                    )
                })
                .collect();
            let _ = writeln!(s, "REGRESSED ({}): {}", names.len(), names.join(", "));
        }
        Verdict::Pass => {
            let _ = writeln!(
                s,
                "PASS: nothing grew beyond its threshold significantly{}",
                if undecided.is_empty() {
                    String::new()
                } else {
                    format!(" ({} undecided)", undecided.len())
                }
            );
        }
    }
    if r.verdict != Verdict::TooFewRuns && !undecided.is_empty() {
        let need: Vec<String> = undecided
            .iter()
            .take(5)
            .map(|x| match x.runs_needed {
                Some(n) => format!("{} {}: ~{n} runs", x.kind.label(), x.name),
                None => format!("{} {}: noise not measured", x.kind.label(), x.name),
            })
            .collect();
        let _ = writeln!(
            s,
            "Too few runs to decide {} change{} beyond the threshold; runs per side that \
             would, given the measured noise: {}",
            undecided.len(),
            if undecided.len() == 1 { "" } else { "s" },
            need.join("; ")
        );
    }
    if let Some(n) = r.runs_needed_for_boot {
        let _ = writeln!(
            s,
            "With the measured noise, ~{n} runs per side detect a boot-time change at the \
             threshold ({}) {:.0}% of the time (this check: {} vs {}).",
            o.boot,
            100.0 * o.power,
            r.baseline_runs,
            r.candidate_runs
        );
    }
    s
}
