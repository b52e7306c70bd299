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
    assert_eq!(new.format_major, boottrace::trace::frame::VERSION_MAJOR);
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
    assert_eq!(
        (t.format_major, t.format_minor),
        (
            boottrace::trace::frame::VERSION_MAJOR,
            boottrace::trace::frame::VERSION_MINOR
        )
    );
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

/// Format 2.x stored each sample as a plain `Sample` record (type 7); format
/// 3 writes interned stacks and sample blocks. A 2.1 file (written frame by
/// frame here as the 2.1 writer did) reads the same samples, and the same
/// samples written today read back equal and take far fewer bytes.
#[test]
fn format2_plain_samples_read_and_format3_is_smaller() {
    use boottrace::trace::frame::{encode_frame, MAGIC};
    use boottrace::trace::{Finish, Sample, SampleCost, TraceMeta};
    let samples: Vec<Sample> = (0..2_000u64)
        .map(|i| {
            let rip = 0xffff_ffff_8100_0000 + (i % 13) * 0x40;
            Sample {
                vcpu: (i % 2) as u32,
                t_ns: 1_000_000 * i,
                rip,
                rsp: 0xffff_c900_0000_3e00 - (i % 5) * 8,
                rbp: 0xffff_c900_0000_3f00,
                cr0: 0x8005_0033,
                cr3: 0x10_0000,
                cr4: 0x20,
                efer: 0xd01,
                cs: 0x10,
                cpl: 0,
                stack: vec![rip, 0xffff_ffff_8120_0010, 0xffff_ffff_8130_0020 + (i % 3)],
                stack_end: StackEnd::Root.as_u8(),
                minflt: i % 4,
                kvm: vec![(1, 1), (5, i % 3)],
                cost: SampleCost {
                    kick_ns: 45_000 + (i % 100) as u32,
                    capture_ns: 120,
                    unwind_ns: 2_500,
                    write_ns: 300,
                },
                ..Sample::default()
            }
        })
        .collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let old = dir.path().join("format2.1.data");
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&2u16.to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    let mut recs = vec![Record::Meta(Box::default())];
    recs.extend(samples.iter().cloned().map(Record::Sample));
    recs.push(Record::Finish(Finish {
        records: samples.len() as u64 + 1,
    }));
    for r in &recs {
        encode_frame(r, &mut bytes).expect("frame");
    }
    std::fs::write(&old, &bytes).expect("write");
    let t = Trace::open(&old).expect("read 2.1");
    assert_eq!((t.format_major, t.format_minor), (2, 1));
    assert!(
        t.complete && t.warnings.iter().all(|w| w.contains("no end record")),
        "{:?}",
        t.warnings
    );
    let mut want = samples.clone();
    want.sort_by_key(|s| (s.t_ns, s.vcpu));
    assert_eq!(t.runs[0].samples, want);

    let new = dir.path().join("format3.data");
    let mut w = TraceWriter::create(&new, &TraceMeta::default()).expect("create");
    // As the sampler hands them over: batches of one vCPU's samples.
    for vcpu in 0..2u32 {
        for chunk in samples
            .iter()
            .filter(|s| s.vcpu == vcpu)
            .cloned()
            .map(Record::Sample)
            .collect::<Vec<_>>()
            .chunks(64)
        {
            w.append_batch(chunk.to_vec()).expect("append");
        }
    }
    w.finish().expect("finish");
    let t3 = Trace::open(&new).expect("read 3");
    assert_eq!(t3.runs[0].samples, want);
    let (old_len, new_len) = (
        bytes.len(),
        std::fs::metadata(&new).expect("stat").len() as usize,
    );
    assert!(
        new_len * 2 < old_len,
        "format 3 {new_len} bytes vs format 2.1 {old_len} bytes"
    );
}

/// Format 3.0 stored each wait stack as a plain `WaitStack` record (type
/// 13); 3.1 writes wait blocks into the sample stacks' table. A 3.0 file
/// (written frame by frame here as the 3.0 writer did: plain waits between
/// a vCPU's samples) reads its waits and samples; the same records written
/// today read back equal, and the waits add a third of their plain bytes.
#[test]
fn format30_plain_wait_stacks_read_and_format31_is_smaller() {
    use boottrace::trace::frame::{encode_frame, MAGIC};
    use boottrace::trace::synth::{self, SynthOptions};
    use boottrace::trace::{Finish, TraceMeta};
    let opts = SynthOptions {
        runs: 2,
        samples_per_run: 600,
        vcpus: 1,
        period_ns: 1_000_000,
        seed: 11,
        extra_functions: 50,
    };
    let recs = synth::records_with_waits(&opts);
    let is_wait = |r: &&Record| matches!(r, Record::WaitStack(_));
    let waits = recs.iter().filter(is_wait).count();
    assert!(waits > 100, "only {waits} waits");
    let dir = tempfile::tempdir().expect("tempdir");
    let old = dir.path().join("format3.0.data");
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&3u16.to_le_bytes());
    bytes.extend_from_slice(&0u16.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes());
    for r in recs.iter().chain([&Record::Finish(Finish {
        records: recs.len() as u64,
    })]) {
        encode_frame(r, &mut bytes).expect("frame");
    }
    std::fs::write(&old, &bytes).expect("write");
    let t30 = Trace::open(&old).expect("read 3.0");
    assert_eq!((t30.format_major, t30.format_minor), (3, 0));
    assert!(
        t30.complete && t30.warnings.is_empty(),
        "{:?}",
        t30.warnings
    );
    assert_eq!(t30.runs.iter().map(|r| r.waits.len()).sum::<usize>(), waits);
    assert!(t30
        .runs
        .iter()
        .all(|r| r.waits.iter().all(|w| w.stack.len() > 4)));

    // Today's writer, handed batches as the sampler does (one vCPU here).
    let write = |name: &str, recs: &[Record]| {
        let path = dir.path().join(name);
        let mut w = TraceWriter::create(&path, &TraceMeta::default()).expect("create");
        for chunk in recs[1..].chunks(64) {
            w.append_batch(chunk.to_vec()).expect("append");
        }
        w.finish().expect("finish");
        path
    };
    let new = write("format3.1.data", &recs);
    let t31 = Trace::open(&new).expect("read 3.1");
    assert_eq!(
        (t31.format_major, t31.format_minor),
        (
            boottrace::trace::frame::VERSION_MAJOR,
            boottrace::trace::frame::VERSION_MINOR
        )
    );
    assert!(
        t31.complete && t31.warnings.is_empty(),
        "{:?}",
        t31.warnings
    );
    assert!(t31.runs == t30.runs, "3.1 reads back other runs than 3.0");

    // What the waits cost: the same file without them, against their plain records.
    let no_waits: Vec<Record> = recs.iter().filter(|r| !is_wait(r)).cloned().collect();
    let len = |p: &Path| std::fs::metadata(p).expect("stat").len() as usize;
    let cost = len(&new) - len(&write("no-waits.data", &no_waits));
    let plain: usize = recs
        .iter()
        .filter(is_wait)
        .map(|r| r.encode_into(Vec::new()).expect("encode").len() + 8)
        .sum();
    assert!(
        cost * 3 < plain,
        "{waits} waits: {cost} bytes in format 3.1, {plain} bytes as plain records"
    );
}
