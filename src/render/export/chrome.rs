//! Chrome trace-event JSON (the "JSON Object Format" of the Trace Event
//! Format document), which the Perfetto UI and chrome://tracing open: one
//! process per run, VMM phases as complete (`X`) and instant events on a
//! "VMM" thread, the guest boot (first instruction to end) as one slice,
//! serial lines as instant (`i`) events on a "console" thread, and each
//! vCPU's samples as nested `X` slices (a flame chart on the timeline), each
//! sample lasting its interval.

use std::borrow::Cow;
use std::io::{self, Write};

use serde::Serialize;

use crate::analysis::fold::{timelines, timelines_for, NameTree, RunSelect, Timeline, Weight};
use crate::analysis::headline::Headline;
use crate::profile::{FrameName, Profile};

/// One trace event (only the fields boottrace uses).
#[derive(Serialize)]
struct Event<'a> {
    name: Cow<'a, str>,
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
/// Thread id of the boot thread's wall-clock track (running and blocked
/// stacks; only for runs with blocked stacks).
pub const TID_BOOT_THREAD: u32 = 4;

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

fn meta_event<'a>(name: &'a str, pid: u32, tid: u32, value: serde_json::Value) -> Event<'a> {
    Event {
        name: Cow::Borrowed(name),
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
    name: impl Into<Cow<'a, str>>,
    cat: &'static str,
    pid: u32,
    tid: u32,
    start_ns: u64,
    end_ns: u64,
) -> Event<'a> {
    Event {
        name: name.into(),
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
pub fn write(p: &Profile, runs: RunSelect, out: impl Write) -> io::Result<()> {
    let tree = NameTree::new(p);
    let mut events: Vec<Event<'_>> = Vec::new();
    for run in runs.runs(p) {
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
                name: Cow::Borrowed(p.name.as_str()),
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
        if let (Some(first), Some(end)) = (run.first_instruction_ns, &run.end) {
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
                name: Cow::Borrowed("run end"),
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
        for line in &run.console {
            events.push(Event {
                name: Cow::Borrowed(&line.line),
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
    for tl in timelines(p, runs) {
        let pid = tl.run + 1;
        let tid = TID_VCPU0 + tl.vcpu;
        events.push(meta_event(
            "thread_name",
            pid,
            tid,
            serde_json::json!({ "name": format!("vCPU {}", tl.vcpu) }),
        ));
        sample_slices(p, &tree, &tl, pid, tid, &mut events);
    }
    for tl in timelines_for(p, runs, Weight::Wall) {
        if p.run(tl.run).map_or(true, |r| r.waits.is_empty()) {
            continue;
        }
        let pid = tl.run + 1;
        events.push(meta_event(
            "thread_name",
            pid,
            TID_BOOT_THREAD,
            serde_json::json!({ "name": "boot thread (wall; [wait]: blocked)" }),
        ));
        sample_slices(p, &tree, &tl, pid, TID_BOOT_THREAD, &mut events);
    }
    let doc = serde_json::json!({
        "displayTimeUnit": "ms",
        "otherData": {
            "exporter": format!("boottrace {}", env!("CARGO_PKG_VERSION")),
            "title": Headline::new(p, runs).title(),
            "symbols": p.info.symbol_source,
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
    p: &'a Profile,
    tree: &NameTree,
    tl: &Timeline<'_>,
    pid: u32,
    tid: u32,
    events: &mut Vec<Event<'a>>,
) {
    // Open frames: (name, start_ns), root first.
    let mut open: Vec<(FrameName, u64)> = Vec::new();
    let mut last_end = 0u64;
    for s in &tl.samples {
        let mut frames: Vec<FrameName> = tree.path(tree.of(s.stack)).collect();
        frames.reverse();
        let t = s.t_ns;
        // A gap (sample covers less than the distance to the next) closes everything.
        let contiguous = t == last_end;
        let shared = if contiguous {
            open.iter()
                .zip(frames.iter())
                .take_while(|((name, _), f)| name == *f)
                .count()
        } else {
            0
        };
        while open.len() > shared {
            if let Some((name, start)) = open.pop() {
                events.push(complete(
                    p.name_text(name),
                    "sample",
                    pid,
                    tid,
                    start,
                    last_end,
                ));
            }
        }
        for &f in &frames[shared..] {
            open.push((f, t));
        }
        last_end = t.saturating_add(s.interval_ns);
    }
    while let Some((name, start)) = open.pop() {
        events.push(complete(
            p.name_text(name),
            "sample",
            pid,
            tid,
            start,
            last_end,
        ));
    }
}
