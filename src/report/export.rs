//! `boottrace export`: the recorded boot(s) in the formats other tools read.
//!
//! - `folded`: collapsed stacks (`root;…;leaf weight`), for FlameGraph and inferno.
//! - `speedscope`: speedscope's JSON file format
//!   (<https://www.speedscope.app/file-format-schema.json>): frames shared, one
//!   "sampled" profile per run and vCPU, samples root first in time order.
//! - `chrome`: Chrome trace-event JSON (the "JSON Object Format" of the Trace
//!   Event Format document), which the Perfetto UI and chrome://tracing open:
//!   one process per run, VMM phases as complete (`X`) and instant events on
//!   a "VMM" thread, the guest boot (first instruction to end) as one slice,
//!   serial lines as instant (`i`) events on a "console" thread, and
//!   each vCPU's samples as nested `X` slices (a flame chart on the timeline).
//!
//! A sample stands for the time from it to the vCPU's next sample (capped at
//! [`MAX_GAP_PERIODS`] typical periods, so a halted vCPU does not stretch its
//! last stack over the gap).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use serde::Serialize;

use super::fold::{self, RunSelect, Weight};
use super::headline::Headline;
use super::symbolize::{self, SymSample, SymTrace, SymbolArgs};
use crate::trace::Trace;

/// Longest time, in typical sampling periods, one sample may stand for.
pub const MAX_GAP_PERIODS: u64 = 4;

/// Output formats.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// Collapsed stacks, one `stack weight` line each.
    Folded,
    /// speedscope JSON.
    Speedscope,
    /// Chrome trace-event JSON (Perfetto UI, chrome://tracing).
    Chrome,
}

/// Options of `boottrace export`.
#[derive(clap::Args, Debug, Clone)]
pub struct ExportArgs {
    /// Output format.
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    /// Output file (default: standard output).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Trace file to read.
    #[arg(short, long, value_name = "FILE", default_value = "boottrace.data")]
    pub input: PathBuf,
    /// What stacks are weighed by (folded, speedscope).
    #[arg(long, value_enum, default_value_t = Weight::Samples)]
    pub weight: Weight,
    /// Only this run (default: all runs).
    #[arg(long, value_name = "K")]
    pub run: Option<u32>,
    /// Symbol sources.
    #[command(flatten)]
    pub symbols: SymbolArgs,
}

/// One vCPU's samples in one run, in time order, with the time each stands for.
struct Timeline<'a> {
    run: u32,
    vcpu: u32,
    samples: Vec<&'a SymSample>,
    durs: Vec<u64>,
}

fn timelines(sym: &SymTrace, runs: RunSelect) -> Vec<Timeline<'_>> {
    let mut by_key: BTreeMap<(u32, u32), Vec<&SymSample>> = BTreeMap::new();
    for r in sym.runs.iter().filter(|r| runs.includes(r.run)) {
        for s in &r.samples {
            by_key.entry((r.run, s.vcpu)).or_default().push(s);
        }
    }
    by_key
        .into_iter()
        .map(|((run, vcpu), mut samples)| {
            samples.sort_by_key(|s| s.t_ns);
            let mut gaps: Vec<u64> = samples.windows(2).map(|w| w[1].t_ns - w[0].t_ns).collect();
            let period = {
                let mut g = gaps.clone();
                g.sort_unstable();
                g.get(g.len() / 2)
                    .copied()
                    .filter(|&p| p > 0)
                    .unwrap_or(1_000)
            };
            let cap = period.saturating_mul(MAX_GAP_PERIODS);
            for g in &mut gaps {
                *g = (*g).min(cap);
            }
            gaps.push(period);
            Timeline {
                run,
                vcpu,
                samples,
                durs: gaps,
            }
        })
        .collect()
}

/// Writes collapsed stacks.
pub fn write_folded(
    sym: &SymTrace,
    runs: RunSelect,
    weight: Weight,
    out: impl Write,
) -> io::Result<()> {
    fold::fold(sym, runs, weight).write_to(out)
}

#[derive(Serialize)]
struct SpeedscopeFile<'a> {
    #[serde(rename = "$schema")]
    schema: &'static str,
    shared: SpeedscopeShared<'a>,
    profiles: Vec<SpeedscopeProfile>,
    name: String,
    #[serde(rename = "activeProfileIndex")]
    active_profile_index: u32,
    exporter: String,
}

#[derive(Serialize)]
struct SpeedscopeShared<'a> {
    frames: Vec<SpeedscopeFrame<'a>>,
}

#[derive(Serialize)]
struct SpeedscopeFrame<'a> {
    name: &'a str,
}

#[derive(Serialize)]
struct SpeedscopeProfile {
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    unit: &'static str,
    #[serde(rename = "startValue")]
    start_value: u64,
    #[serde(rename = "endValue")]
    end_value: u64,
    samples: Vec<FrameList>,
    weights: Vec<u64>,
}

/// Frame indices of one stack, root first, shared by every sample of that stack.
struct FrameList(Arc<[u32]>);

impl Serialize for FrameList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

/// Writes speedscope JSON. With `Weight::Samples` the weights are the
/// nanoseconds each sample stands for; otherwise the fault or exit counts.
pub fn write_speedscope(
    trace: &Trace,
    sym: &SymTrace,
    runs: RunSelect,
    weight: Weight,
    out: impl Write,
) -> io::Result<()> {
    let mut frame_index: HashMap<&str, u32> = HashMap::new();
    let mut frames: Vec<SpeedscopeFrame<'_>> = Vec::new();
    // Per interned stack, its frame indices (shared by all its samples).
    let mut stack_frames: HashMap<u32, Arc<[u32]>> = HashMap::new();
    let mut profiles = Vec::new();
    for tl in timelines(sym, runs) {
        let mut samples = Vec::with_capacity(tl.samples.len());
        let mut weights = Vec::with_capacity(tl.samples.len());
        for (s, &dur) in tl.samples.iter().zip(&tl.durs) {
            let w = match weight {
                Weight::Samples => dur,
                other => other.of(s),
            };
            if w == 0 {
                continue;
            }
            let idx = stack_frames.entry(s.stack).or_insert_with(|| {
                sym.frames(s)
                    .iter()
                    .map(|name| {
                        *frame_index.entry(name).or_insert_with(|| {
                            frames.push(SpeedscopeFrame { name });
                            (frames.len() - 1) as u32
                        })
                    })
                    .collect()
            });
            samples.push(FrameList(Arc::clone(idx)));
            weights.push(w);
        }
        let start = tl.samples.first().map_or(0, |s| s.t_ns);
        let end = tl
            .samples
            .last()
            .zip(tl.durs.last())
            .map_or(start, |(s, d)| s.t_ns + d);
        profiles.push(SpeedscopeProfile {
            kind: "sampled",
            name: format!("run {} vCPU {}", tl.run, tl.vcpu),
            unit: if weight == Weight::Samples {
                "nanoseconds"
            } else {
                "none"
            },
            start_value: if weight == Weight::Samples { start } else { 0 },
            end_value: if weight == Weight::Samples {
                end
            } else {
                weights.iter().sum()
            },
            samples,
            weights,
        });
    }
    let file = SpeedscopeFile {
        schema: "https://www.speedscope.app/file-format-schema.json",
        shared: SpeedscopeShared { frames },
        profiles,
        name: format!("boottrace: {}", Headline::new(trace, runs).title()),
        active_profile_index: 0,
        exporter: format!("boottrace {}", env!("CARGO_PKG_VERSION")),
    };
    serde_json::to_writer(out, &file).map_err(io::Error::other)
}

/// One trace event (only the fields boottrace uses).
#[derive(Serialize)]
struct Event<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    cat: Option<&'static str>,
    ph: &'static str,
    /// Microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    ts: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dur: Option<f64>,
    pid: u32,
    tid: u32,
    /// Scope of instant events ("t" = thread).
    #[serde(skip_serializing_if = "Option::is_none")]
    s: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    args: Option<serde_json::Value>,
}

/// Thread id of the VMM phase track in each run's process.
pub const TID_VMM: u32 = 1;
/// Thread id of the serial console track.
pub const TID_CONSOLE: u32 = 2;
/// Thread id of the track holding the whole guest boot as one slice.
pub const TID_BOOT: u32 = 3;
/// Thread id of vCPU 0; vCPU N is `TID_VCPU0 + N`.
pub const TID_VCPU0: u32 = 10;

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn meta_event<'a>(name: &'a str, pid: u32, tid: u32, value: serde_json::Value) -> Event<'a> {
    Event {
        name,
        cat: None,
        ph: "M",
        ts: None,
        dur: None,
        pid,
        tid,
        s: None,
        args: Some(value),
    }
}

fn complete<'a>(
    name: &'a str,
    cat: &'static str,
    pid: u32,
    tid: u32,
    start_ns: u64,
    end_ns: u64,
) -> Event<'a> {
    Event {
        name,
        cat: Some(cat),
        ph: "X",
        ts: Some(us(start_ns)),
        dur: Some(us(end_ns.saturating_sub(start_ns))),
        pid,
        tid,
        s: None,
        args: None,
    }
}

/// Writes Chrome trace-event JSON (object format, `traceEvents` array).
pub fn write_chrome(
    trace: &Trace,
    sym: &SymTrace,
    runs: RunSelect,
    out: impl Write,
) -> io::Result<()> {
    let mut events: Vec<Event<'_>> = Vec::new();
    for run in trace.runs.iter().filter(|r| runs.includes(r.run)) {
        let pid = run.run + 1;
        events.push(meta_event(
            "process_name",
            pid,
            0,
            serde_json::json!({ "name": format!("boot run {}", run.run) }),
        ));
        events.push(meta_event(
            "thread_name",
            pid,
            TID_VMM,
            serde_json::json!({"name": "VMM"}),
        ));
        events.push(meta_event(
            "thread_name",
            pid,
            TID_CONSOLE,
            serde_json::json!({"name": "console"}),
        ));
        events.push(meta_event(
            "thread_name",
            pid,
            TID_BOOT,
            serde_json::json!({"name": "guest boot"}),
        ));
        // A phase record marks the moment a step completed (create_vm,
        // memory, …, first_instruction, user_mode, end): each mark gets an
        // instant event, and the time since the previous mark (or the run's
        // start) a complete event named after the step it led to.
        let mut phases: Vec<_> = run.phases.iter().collect();
        phases.sort_by_key(|p| p.t_ns);
        let mut prev = 0;
        for p in &phases {
            events.push(complete(p.name.as_str(), "vmm", pid, TID_VMM, prev, p.t_ns));
            events.push(Event {
                name: p.name.as_str(),
                cat: Some("vmm"),
                ph: "i",
                ts: Some(us(p.t_ns)),
                dur: None,
                pid,
                tid: TID_VMM,
                s: Some("t"),
                args: None,
            });
            prev = p.t_ns;
        }
        // The guest's boot as one slice of its own track.
        if let (Some(first), Some(end)) = (run.phase("first_instruction"), &run.end) {
            events.push(Event {
                args: Some(serde_json::json!({"end reason": end.reason})),
                ..complete(
                    "guest boot",
                    "vmm",
                    pid,
                    TID_BOOT,
                    first,
                    end.t_ns.max(first),
                )
            });
        }
        if let Some(end) = &run.end {
            events.push(Event {
                name: "run end",
                cat: Some("vmm"),
                ph: "i",
                ts: Some(us(end.t_ns)),
                dur: None,
                pid,
                tid: TID_VMM,
                s: Some("p"),
                args: Some(serde_json::json!({"reason": end.reason, "detail": end.detail})),
            });
        }
        for line in &run.serial {
            events.push(Event {
                name: &line.line,
                cat: Some("serial"),
                ph: "i",
                ts: Some(us(line.t_ns)),
                dur: None,
                pid,
                tid: TID_CONSOLE,
                s: Some("t"),
                args: None,
            });
        }
    }
    for tl in timelines(sym, runs) {
        let pid = tl.run + 1;
        let tid = TID_VCPU0 + tl.vcpu;
        events.push(meta_event(
            "thread_name",
            pid,
            tid,
            serde_json::json!({ "name": format!("vCPU {}", tl.vcpu) }),
        ));
        sample_slices(sym, &tl, pid, tid, &mut events);
    }
    let doc = serde_json::json!({
        "displayTimeUnit": "ms",
        "otherData": {
            "exporter": format!("boottrace {}", env!("CARGO_PKG_VERSION")),
            "title": Headline::new(trace, runs).title(),
            "symbols": sym.source_label,
        },
    });
    // Stream the (possibly large) event array instead of building one Value.
    let mut out = out;
    out.write_all(b"{\"traceEvents\":")?;
    serde_json::to_writer(&mut out, &events).map_err(io::Error::other)?;
    if let serde_json::Value::Object(map) = doc {
        for (k, v) in map {
            write!(out, ",{}:", serde_json::Value::String(k))?;
            serde_json::to_writer(&mut out, &v).map_err(io::Error::other)?;
        }
    }
    out.write_all(b"}\n")
}

/// Turns a vCPU's time-ordered stacks into perfectly nested `X` slices: a
/// frame stays open while consecutive samples share it at the same depth.
fn sample_slices<'a>(
    sym: &'a SymTrace,
    tl: &Timeline<'_>,
    pid: u32,
    tid: u32,
    events: &mut Vec<Event<'a>>,
) {
    // Open frames: (name, start_ns), root first.
    let mut open: Vec<(&'a str, u64)> = Vec::new();
    let mut last_end = 0u64;
    for (s, &dur) in tl.samples.iter().zip(&tl.durs) {
        let frames = sym.frames(s);
        let t = s.t_ns;
        // A gap (sample covers less than the distance to the next) closes everything.
        let contiguous = t == last_end;
        let shared = if contiguous {
            open.iter()
                .zip(frames.iter())
                .take_while(|((name, _), f)| *name == &***f)
                .count()
        } else {
            0
        };
        while open.len() > shared {
            if let Some((name, start)) = open.pop() {
                events.push(complete(name, "sample", pid, tid, start, last_end));
            }
        }
        for f in &frames[shared..] {
            open.push((f, t));
        }
        last_end = t + dur;
    }
    while let Some((name, start)) = open.pop() {
        events.push(complete(name, "sample", pid, tid, start, last_end));
    }
}

/// Runs `boottrace export`.
pub fn run(args: &ExportArgs) -> anyhow::Result<()> {
    let (trace, sym, runs) = symbolize::load_for_output(&args.input, &args.symbols, args.run)?;
    let mut out: Box<dyn Write> = match &args.output {
        Some(p) => Box::new(BufWriter::new(
            File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(BufWriter::new(io::stdout().lock())),
    };
    match args.format {
        ExportFormat::Folded => write_folded(&sym, runs, args.weight, &mut out),
        ExportFormat::Speedscope => write_speedscope(&trace, &sym, runs, args.weight, &mut out),
        ExportFormat::Chrome => write_chrome(&trace, &sym, runs, &mut out),
    }
    .and_then(|()| out.flush())
    .context("writing the export")?;
    Ok(())
}
