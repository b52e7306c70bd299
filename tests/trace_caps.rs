//! The trace reader's caps (issue 10): a hand-made trace cannot make the
//! reader keep deeper stacks than the writer's limit, more runs than
//! `--runs` allows, or one warning per damaged run.

use std::time::{Duration, Instant};

use boottrace::trace::{
    synth, Record, RunEnd, RunStart, Sample, Trace, TraceWriter, MAX_RUNS, MAX_STACK_DEPTH,
};

/// The reader's depth cap is the unwinders' limit.
#[test]
fn the_readers_depth_cap_is_the_writers() {
    assert_eq!(
        MAX_STACK_DEPTH,
        boottrace::sample::unwind::DEFAULT_MAX_DEPTH
    );
}

fn write(name: &str, recs: impl Iterator<Item = Record>) -> std::path::PathBuf {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let path = dir.join(name);
    let meta = synth::meta(&synth::SynthOptions::default());
    let mut w = TraceWriter::create(&path, &meta).expect("create trace");
    for r in recs {
        w.append(&r).expect("append");
    }
    w.finish().expect("finish");
    path
}

fn sample(run: u32, depth: usize) -> Record {
    Record::Sample(Sample {
        run,
        rip: 0xffff_ffff_8100_0000,
        stack: (0..depth as u64)
            .map(|i| 0xffff_ffff_8100_0000 + i)
            .collect(),
        ..Sample::default()
    })
}

/// One 2 M-frame stack is read back as 128 frames, with a warning.
#[test]
fn deep_stacks_are_cut_to_the_writers_limit() {
    let path = write(
        "deep.data",
        [sample(0, 2_000_000), sample(0, 3)].into_iter(),
    );
    let start = Instant::now();
    let t = Trace::open(&path).expect("read");
    assert!(start.elapsed() < Duration::from_secs(10));
    let depths: Vec<usize> = t.runs[0].samples.iter().map(|s| s.stack.len()).collect();
    assert_eq!(depths, [MAX_STACK_DEPTH, 3]);
    assert!(
        t.warnings
            .iter()
            .any(|w| w.starts_with("1 stack(s) deeper than 128")),
        "{:?}",
        t.warnings
    );
}

/// Runs beyond MAX_RUNS are skipped and counted; runs without an end give
/// one warning line, not one each.
#[test]
fn runs_are_capped_and_warnings_do_not_grow_per_run() {
    let runs = MAX_RUNS as u32 + 5;
    let recs = (0..runs).flat_map(|run| {
        let mut v = vec![
            Record::RunStart(RunStart {
                run,
                wall_time_unix_ns: 1,
            }),
            sample(run, 2),
        ];
        if run % 2 == 0 {
            v.push(Record::RunEnd(RunEnd {
                run,
                ..RunEnd::default()
            }));
        }
        v
    });
    let path = write("runs.data", recs);
    let t = Trace::open(&path).expect("read");
    assert_eq!(t.runs.len(), MAX_RUNS);
    assert!(t.warnings.len() < 10, "{:?}", t.warnings);
    assert!(
        t.warnings
            .iter()
            .any(|w| w.contains("runs have no end record")),
        "{:?}",
        t.warnings
    );
    assert!(
        t.warnings
            .iter()
            .any(|w| w.contains(&format!("beyond the first {MAX_RUNS} skipped"))),
        "{:?}",
        t.warnings
    );
}

/// Compact records from a hostile file: a stack definition with a huge id
/// is refused without allocating by it, a block that refers to a stack never
/// defined keeps its samples with RIP only (its waits without frames), a
/// wait block over the cap is skipped, and all are reported.
#[test]
fn hostile_stack_ids_allocate_nothing() {
    use boottrace::trace::compact::{
        CompactSample, CompactWait, SampleBlock, StackDef, WaitBlock, MAX_BLOCK_SAMPLES,
    };
    use boottrace::trace::frame::encode_frame;
    let mut bytes = Vec::new();
    boottrace::trace::frame::write_header(&mut bytes).expect("header");
    let recs = [
        Record::Meta(Box::default()),
        Record::StackDef(StackDef {
            id: u32::MAX,
            frames: vec![1, 2, 3],
        }),
        Record::SampleBlock(SampleBlock {
            run: 0,
            vcpu: 0,
            t_ns: 10,
            samples: vec![CompactSample {
                drip: 0x1234,
                stack: u32::MAX,
                leaf_is_rip: true,
                ..CompactSample::default()
            }],
        }),
        Record::WaitBlock(WaitBlock {
            run: 0,
            vcpu: 0,
            t_ns: 10,
            waits: vec![CompactWait {
                stack: u32::MAX,
                state: 2,
                ..CompactWait::default()
            }],
        }),
        Record::WaitBlock(WaitBlock {
            run: 0,
            vcpu: 0,
            t_ns: 20,
            waits: vec![CompactWait::default(); MAX_BLOCK_SAMPLES + 1],
        }),
    ];
    for r in &recs {
        encode_frame(r, &mut bytes).expect("frame");
    }
    let start = Instant::now();
    let t = Trace::read_from(&bytes[..], std::path::Path::new("hostile.data")).expect("read");
    assert!(start.elapsed() < Duration::from_secs(1));
    let s = &t.runs[0].samples;
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].stack, vec![0x1234]);
    let w = &t.runs[0].waits;
    assert_eq!(w.len(), 1, "the block over the cap is skipped");
    assert!(w[0].stack.is_empty() && w[0].t_ns == 10 && w[0].state == 2);
    assert!(
        t.warnings
            .iter()
            .any(|w| w.contains("WaitBlock record could not be decoded")),
        "{:?}",
        t.warnings
    );
    assert!(
        t.warnings.iter().any(|w| w.contains("out of order")),
        "{:?}",
        t.warnings
    );
    assert!(
        t.warnings.iter().any(|w| w.contains("undefined stack")),
        "{:?}",
        t.warnings
    );
}
