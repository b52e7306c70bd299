//! Traces written before issue 8 (format 1) still read, converted to today's
//! types. `tests/data/tiny-fp-format1.data` was recorded by the boottrace of
//! main before the change (tiny-fp bzImage, 1 vCPU, -F 25,
//! `--until 'serial:Linux version'`); see tests/data/README.md.

use std::path::Path;

use boottrace::trace::{EndKind, PhaseName, Record, StackEnd, Trace, TraceWriter, UnwinderKind};

const FORMAT1: &str = "tests/data/tiny-fp-format1.data";

fn old_trace() -> Trace {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(FORMAT1);
    Trace::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn format1_trace_reads_with_typed_values() {
    let t = old_trace();
    assert_eq!(t.format_major, 1);
    assert!(t.complete, "warnings: {:?}", t.warnings);
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);

    // Metadata: the string map became typed options, strings became enums.
    let m = &t.meta;
    assert_eq!(m.unwinder, UnwinderKind::FramePointer);
    assert_eq!(m.sample_freq_hz, 25);
    assert_eq!(m.options.freq, 25);
    assert_eq!(m.options.runs, 1);
    assert_eq!(m.options.cpus, 1);
    assert_eq!(m.options.mem, 128 << 20);
    assert_eq!(m.options.until, "serial:Linux version");
    assert_eq!(m.options.capture, "sync");
    assert_eq!(m.options.timeout_ms, 600_000);
    assert!(m
        .options
        .initrd
        .as_deref()
        .is_some_and(|p| p.ends_with("initramfs.cpio")));
    assert!(m.kernel.path.ends_with("bzImage"));
    assert_eq!(m.kernel.sha256.len(), 64);

    // One run, ended by the console match, with typed phases in VMM order.
    assert_eq!(t.runs.len(), 1);
    let run = &t.runs[0];
    assert_eq!(run.end.as_ref().map(|e| &e.reason), Some(&EndKind::Serial));
    let names: Vec<&PhaseName> = run.phases.iter().map(|p| &p.name).collect();
    assert_eq!(
        names,
        [
            &PhaseName::KernelAnalysis,
            &PhaseName::CreateVm,
            &PhaseName::Memory,
            &PhaseName::LoadKernel,
            &PhaseName::Vcpus,
            &PhaseName::FirstInstruction,
            &PhaseName::End,
        ]
    );
    let first = run
        .phase(PhaseName::FirstInstruction)
        .expect("first_instruction");
    assert_eq!(run.phase("first_instruction"), Some(first));

    // Samples: from the first instruction on, as many as the run's cost record counted.
    assert!(!run.samples.is_empty());
    assert!(run.samples[0].t_ns >= first);
    let cost = run.cost.as_ref().expect("sampler cost");
    assert_eq!(cost.samples, run.samples.len() as u64);
    assert!(run
        .samples
        .iter()
        .any(|s| StackEnd::from_u8(s.stack_end) == StackEnd::Root && s.stack.len() > 1));

    // The layout record (format 1 embedded the symbols crate's RunLayout)
    // converts to today's: a bzImage run has its decompressor placed.
    let layout = run.layout.as_ref().expect("layout");
    assert!(!layout.decompressor_bases.is_empty());
    assert!(layout.decompressor_size > 0);
    assert!(layout.kernel_size > 0);
    assert!(!layout.virt_slide_method.is_empty());
    assert!(run.serial.iter().any(|l| l.line.contains("Linux version")));
}

/// Rewriting a format-1 trace with today's writer loses nothing.
#[test]
fn format1_trace_rewritten_as_format2_reads_the_same() {
    let old = old_trace();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rewritten.data");
    let mut w = TraceWriter::create(&path, &old.meta).expect("create");
    if !old.stat_names.is_empty() {
        w.append(&Record::StatNames(boottrace::trace::StatNames {
            names: old.stat_names.clone(),
        }))
        .expect("stat names");
    }
    for run in &old.runs {
        w.append(&Record::RunStart(boottrace::trace::RunStart {
            run: run.run,
            wall_time_unix_ns: run.wall_time_unix_ns,
        }))
        .expect("append");
        for p in &run.phases {
            w.append(&Record::Phase(p.clone())).expect("append");
        }
        for s in &run.serial {
            w.append(&Record::Serial(s.clone())).expect("append");
        }
        if let Some(l) = &run.layout {
            w.append(&Record::Layout(boottrace::trace::Layout {
                run: run.run,
                layout: l.into(),
            }))
            .expect("append");
        }
        for s in &run.samples {
            w.append(&Record::Sample(s.clone())).expect("append");
        }
        if let Some(e) = &run.end {
            w.append(&Record::RunEnd(e.clone())).expect("append");
        }
        if let Some(c) = &run.cost {
            w.append(&Record::SamplerCost(c.clone())).expect("append");
        }
    }
    w.finish().expect("finish");
    let new = Trace::open(&path).expect("read back");
    assert_eq!(new.format_major, 2);
    assert_eq!(new.meta, old.meta);
    assert_eq!(new.runs, old.runs);
    assert_eq!(new.stat_names, old.stat_names);
    assert!(
        new.complete && new.warnings.is_empty(),
        "{:?}",
        new.warnings
    );
}

/// Format 2.1 adds `Task` and `TaskSwitch`: each sample gets the task of its
/// vCPU's latest switch before it in file order (unknown before any, and
/// after a switch to `None`), whatever the other vCPUs do in between.
#[test]
fn task_switches_attribute_samples_per_vcpu() {
    use boottrace::trace::{Sample, Task, TaskSwitch};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tasks.data");
    let mut w =
        TraceWriter::create(&path, &boottrace::trace::TraceMeta::default()).expect("create");
    let sample = |vcpu, t_ns| {
        Record::Sample(Sample {
            vcpu,
            t_ns,
            ..Sample::default()
        })
    };
    let task = |id, pid, comm: &str| {
        Record::Task(Task {
            run: 0,
            id,
            pid,
            tgid: pid,
            comm: comm.into(),
            addr: 0xffff_8880_0100_0000 + u64::from(id) * 0x1000,
        })
    };
    let switch = |vcpu, task| Record::TaskSwitch(TaskSwitch { run: 0, vcpu, task });
    for r in [
        sample(0, 1),
        task(0, 0, "swapper/0"),
        switch(0, Some(0)),
        sample(0, 2),
        // vCPU 1 names a task whose record comes later in the file.
        switch(1, Some(1)),
        sample(1, 3),
        sample(0, 4),
        task(1, 1, "swapper/0"),
        switch(0, Some(1)),
        sample(0, 5),
        switch(1, None),
        sample(1, 6),
        task(2, 1, "init"),
        switch(0, Some(2)),
        sample(0, 7),
    ] {
        w.append(&r).expect("append");
    }
    w.finish().expect("finish");
    let t = Trace::open(&path).expect("read");
    assert_eq!((t.format_major, t.format_minor), (2, 2));
    assert!(
        t.warnings.iter().all(|w| w.contains("no end record")),
        "{:?}",
        t.warnings
    );
    let run = &t.runs[0];
    let got: Vec<(u64, Option<u32>)> = run.samples.iter().map(|s| (s.t_ns, s.task)).collect();
    assert_eq!(
        got,
        [
            (1, None),
            (2, Some(0)),
            (3, Some(1)),
            (4, Some(0)),
            (5, Some(1)),
            (6, None),
            (7, Some(2)),
        ]
    );
    assert_eq!(run.tasks.len(), 3);
    assert_eq!(run.tasks[&2].comm, "init");
    assert_eq!(run.tasks[&2].pid, 1);
}
