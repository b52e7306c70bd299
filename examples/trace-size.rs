//! Re-encodes a trace in the current format, as `record` would have written
//! it (per-vCPU batches of 64 samples, task switches in place), and prints
//! bytes per sample before and after:
//! `cargo run --release --example trace-size -- IN.data [OUT.data]`.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use boottrace::trace::{
    Layout, Phase, Record, RunStart, Serial, StatNames, Task, TaskSwitch, Trace, TraceWriter,
};

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
        let mut batches: BTreeMap<u32, (Vec<Record>, Option<u32>)> = BTreeMap::new();
        for s in &r.samples {
            let (batch, last) = batches.entry(s.vcpu).or_default();
            if s.task != *last {
                *last = s.task;
                batch.push(Record::TaskSwitch(TaskSwitch {
                    run: r.run,
                    vcpu: s.vcpu,
                    task: s.task,
                }));
            }
            batch.push(Record::Sample(s.clone()));
            if batch.len() >= 64 {
                w.append_batch(std::mem::take(batch))?;
            }
        }
        for (_, (batch, _)) in batches {
            w.append_batch(batch)?;
        }
        if let Some(e) = &r.end {
            w.append(&Record::RunEnd(e.clone()))?;
        }
        if let Some(c) = &r.cost {
            w.append(&Record::SamplerCost(c.clone()))?;
        }
    }
    w.finish()?;
    let n = t.sample_count().max(1) as f64;
    let before = std::fs::metadata(input)?.len() as f64;
    let after = std::fs::metadata(&output)?.len() as f64;
    let back = Trace::open(&output)?;
    let same = back
        .runs
        .iter()
        .zip(&t.runs)
        .all(|(a, b)| a.samples == b.samples);
    println!(
        "{input}: format {}.{}, {} samples: {:.1} bytes/sample; format {}.{}: {:.1} bytes/sample ({:.0}%); samples read back equal: {same}",
        t.format_major,
        t.format_minor,
        t.sample_count(),
        before / n,
        back.format_major,
        back.format_minor,
        after / n,
        100.0 * after / before
    );
    Ok(())
}
