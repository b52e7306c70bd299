//! Re-encodes a trace in the current format, as `record` would have written
//! it (per-vCPU batches of 64 samples, task switches in place, each wait
//! stack just before its sample), and prints bytes per sample before and
//! after — total file bytes over samples — and where the bytes go:
//! `cargo run --release --example trace-size -- IN.data [OUT.data]`.
//! Every record kind the reader keeps is carried over (tasks, wait stacks,
//! boundaries, device counters, …), and the re-encoded file must read back
//! to the same runs.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use anyhow::{bail, Context, Result};
use boottrace::trace::frame::{read_header, FrameReader, Next, HEADER_LEN};
use boottrace::trace::{
    Layout, Phase, Record, RunData, RunStart, Serial, StatNames, Task, TaskSwitch, Trace,
    TraceWriter,
};

/// Samples per batch: what the sampler hands the writer at most (its
/// `BATCH`, 64 on main).
const BATCH: usize = 64;
/// The sampler also cuts a batch once its first sample is this old (its
/// `BATCH_AGE`): at 1 kHz, batches of about 20 samples.
const BATCH_AGE_NS: u64 = 20_000_000;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let input = args
        .get(1)
        .context("usage: trace-size IN.data [OUT.data]")?;
    let dir = tempfile::tempdir()?;
    let output = args
        .get(2)
        .map_or_else(|| dir.path().join("out.data"), std::path::PathBuf::from);
    let t = Trace::open(input)?;
    let mut w = TraceWriter::create(&output, &t.meta)?;
    if !t.stat_names.is_empty() {
        w.append(&Record::StatNames(StatNames {
            names: t.stat_names.clone(),
        }))?;
    }
    for r in &t.runs {
        write_run(&mut w, r)?;
    }
    w.finish()?;
    let back = Trace::open(&output)?;
    let same = back.runs == t.runs && back.stat_names == t.stat_names;
    let n = t.sample_count().max(1) as f64;
    let waits: usize = t.runs.iter().map(|r| r.waits.len()).sum();
    let before = std::fs::metadata(input)?.len() as f64;
    let after = std::fs::metadata(&output)?.len() as f64;
    println!(
        "{input}: {} samples, {waits} wait stacks, {} tasks",
        t.sample_count(),
        t.runs.iter().map(|r| r.tasks.len()).sum::<usize>()
    );
    for (label, path, major, minor, bytes) in [
        (
            "before",
            Path::new(input),
            t.format_major,
            t.format_minor,
            before,
        ),
        (
            "after",
            &output,
            back.format_major,
            back.format_minor,
            after,
        ),
    ] {
        println!(
            "{label}: format {major}.{minor}, {bytes} bytes, {:.1} bytes/sample",
            bytes / n
        );
        for (ty, (count, b)) in breakdown(path)? {
            println!(
                "  {ty:<12} {count:>9} records {b:>11} bytes {:>7.1} bytes/sample",
                b as f64 / n
            );
        }
    }
    println!(
        "after/before: {:.0}%; runs read back equal: {same}",
        100.0 * after / before
    );
    if !same {
        bail!("the re-encoded trace does not read back the same");
    }
    Ok(())
}

/// Appends one run's records as `record` orders them.
fn write_run(w: &mut TraceWriter, r: &RunData) -> Result<()> {
    w.append(&Record::RunStart(RunStart {
        run: r.run,
        wall_time_unix_ns: r.wall_time_unix_ns,
    }))?;
    for p in &r.phases {
        w.append(&Record::Phase(Phase::clone(p)))?;
    }
    for s in &r.serial {
        w.append(&Record::Serial(Serial::clone(s)))?;
    }
    if let Some(l) = &r.layout {
        w.append(&Record::Layout(Layout {
            run: r.run,
            layout: l.into(),
        }))?;
    }
    for task in r.tasks.values() {
        w.append(&Record::Task(Task::clone(task)))?;
    }
    // Each vCPU's waits, in time order, go just before its first sample
    // not earlier than them (the sampler writes a wait, then its sample).
    let mut waits: BTreeMap<u32, std::collections::VecDeque<_>> = BTreeMap::new();
    for wait in &r.waits {
        waits.entry(wait.vcpu).or_default().push_back(wait);
    }
    // Per vCPU: the batch, its task, its samples and its first sample's time.
    let mut batches: BTreeMap<u32, (Vec<Record>, Option<u32>, usize, u64)> = BTreeMap::new();
    for s in &r.samples {
        let (batch, last, n, since) = batches.entry(s.vcpu).or_default();
        if s.task != *last {
            *last = s.task;
            batch.push(Record::TaskSwitch(TaskSwitch {
                run: r.run,
                vcpu: s.vcpu,
                task: s.task,
            }));
        }
        let pending = waits.entry(s.vcpu).or_default();
        while pending.front().is_some_and(|wt| wt.t_ns <= s.t_ns) {
            if let Some(wt) = pending.pop_front() {
                batch.push(Record::WaitStack(wt.clone()));
            }
        }
        batch.push(Record::Sample(s.clone()));
        if *n == 0 {
            *since = s.t_ns;
        }
        *n += 1;
        if *n >= BATCH || s.t_ns.saturating_sub(*since) >= BATCH_AGE_NS {
            w.append_batch(std::mem::take(batch))?;
            *n = 0;
        }
    }
    for (vcpu, (mut batch, ..)) in batches {
        batch.extend(
            waits
                .remove(&vcpu)
                .into_iter()
                .flatten()
                .map(|wt| Record::WaitStack(wt.clone())),
        );
        w.append_batch(batch)?;
    }
    // Waits of vCPUs without samples.
    let rest: Vec<Record> = waits
        .into_values()
        .flatten()
        .map(|wt| Record::WaitStack(wt.clone()))
        .collect();
    w.append_batch(rest)?;
    for b in &r.boundaries {
        w.append(&Record::Boundary(b.clone()))?;
    }
    if let Some(e) = &r.end {
        w.append(&Record::RunEnd(e.clone()))?;
    }
    if let Some(c) = &r.cost {
        w.append(&Record::SamplerCost(c.clone()))?;
    }
    for d in &r.devices {
        w.append(&Record::DeviceStats(d.clone()))?;
    }
    Ok(())
}

/// Records and bytes (framing included) by record type; the header is
/// counted as its own row, so the rows add up to the file's size.
fn breakdown(path: &Path) -> Result<BTreeMap<String, (u64, u64)>> {
    let mut r = BufReader::new(File::open(path)?);
    let (major, _) = read_header(&mut r).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut frames = FrameReader::with_major(r, major);
    let mut out = BTreeMap::new();
    out.insert("(header)".to_string(), (1, HEADER_LEN as u64));
    loop {
        let at = frames.offset();
        let ty = match frames.next_record() {
            Next::Record(rec) => format!("{:?}", rec.record_type()),
            Next::Skipped(_) => "(skipped)".to_string(),
            Next::End => break,
            Next::Damaged(m) => {
                eprintln!("{}: {m}", path.display());
                let len = std::fs::metadata(path)?.len();
                out.insert("(damaged)".to_string(), (1, len.saturating_sub(at)));
                break;
            }
        };
        let e = out.entry(ty).or_insert((0, 0));
        e.0 += 1;
        e.1 += frames.offset() - at;
    }
    Ok(out)
}
