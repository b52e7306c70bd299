//! A writer killed with SIGKILL leaves a readable trace: this test binary
//! re-executes itself as the writer (selected by an environment variable),
//! kills it mid-run and reads what it left.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use boottrace::trace::synth::{self, SynthOptions};
use boottrace::trace::{
    PhaseName, Record, RunStart, Trace, TraceSink, TraceWriter, TraceWriterThread,
};

const CHILD_ENV: &str = "BOOTTRACE_TEST_SIGKILL_CHILD";

/// In the child (`env` names the file to write): a threaded writer of a
/// synthetic trace and a sink; `None` in a normal test run.
fn child_writer(env: &str, opts: &SynthOptions) -> Option<(TraceWriterThread, TraceSink)> {
    let path = std::env::var_os(env)?;
    let writer = TraceWriter::create(PathBuf::from(path), &synth::meta(opts))
        .expect("create")
        .spawn()
        .expect("spawn");
    let sink = writer.sink();
    Some((writer, sink))
}

/// In the child: writes samples through a threaded sink forever, never
/// calling `flush` or `finish` itself, so only the periodic flush saves them.
/// In a normal test run (no env var) it does nothing.
#[test]
fn sigkill_child_writer() {
    let opts = SynthOptions {
        runs: 1,
        samples_per_run: 50_000,
        vcpus: 2,
        period_ns: 10_000,
        seed: 3,
        ..SynthOptions::default()
    };
    let Some((writer, sink)) = child_writer(CHILD_ENV, &opts) else {
        return;
    };
    sink.append(Record::RunStart(RunStart {
        run: 0,
        wall_time_unix_ns: 1,
    }))
    .expect("append");
    for rec in synth::records(&opts).into_iter().skip(1) {
        sink.append(rec).expect("append");
        std::thread::sleep(Duration::from_micros(200));
    }
    // Never reached within the parent's patience.
    writer.finish().expect("finish");
}

/// In the child: like [`sigkill_child_writer`], with the guest tasks and
/// the boot task's wait stacks, handed over in batches as the sampler does
/// (each wait just before its sample).
#[test]
fn sigkill_child_wait_writer() {
    let opts = SynthOptions {
        runs: 1,
        samples_per_run: 50_000,
        vcpus: 1,
        period_ns: 1_000_000,
        seed: 4,
        ..SynthOptions::default()
    };
    let Some((writer, sink)) = child_writer(WAITS_CHILD_ENV, &opts) else {
        return;
    };
    // From the initcall phase on, where pid 1 waits (the run's other
    // records first).
    let recs = synth::records_with_waits(&opts);
    let first_wait = recs
        .iter()
        .position(|r| matches!(r, Record::WaitStack(_)))
        .expect("a wait");
    let recs: Vec<Record> = recs[1..]
        .iter()
        .enumerate()
        .filter(|(i, r)| i + 1 >= first_wait || !matches!(r, Record::Sample(_)))
        .map(|(_, r)| r.clone())
        .collect();
    // Batches end after a sample, as the sampler's do (a wait is queued
    // just before its sample, so the two are always handed over together).
    let mut batch = Vec::new();
    for r in recs {
        let sample = matches!(r, Record::Sample(_));
        batch.push(r);
        if sample && batch.len() >= 20 {
            sink.append_batch(std::mem::take(&mut batch))
                .expect("append");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    sink.append_batch(batch).expect("append");
    writer.finish().expect("finish");
}

const WAITS_CHILD_ENV: &str = "BOOTTRACE_TEST_SIGKILL_WAITS_CHILD";

/// Runs the child test `name` writing to `path` (told by `env`), and kills
/// it with SIGKILL once the file holds `bytes` bytes and a little more.
fn kill_child_writer(name: &str, env: &str, path: &std::path::Path, bytes: u64) {
    let mut child = Command::new(std::env::current_exe().expect("current exe"))
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(env, path)
        .spawn()
        .expect("spawn child");
    // Wait until a good part has reached the file, then kill without warning.
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::metadata(path).map_or(0, |m| m.len()) < bytes {
        assert!(Instant::now() < deadline, "child wrote too little");
        assert!(
            child.try_wait().expect("wait").is_none(),
            "child exited early"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(150));
    child.kill().expect("SIGKILL"); // std sends SIGKILL on Unix
    let status = child.wait().expect("wait");
    assert!(!status.success());
}

#[test]
fn sigkilled_wait_writer_leaves_its_wait_stacks() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("killed-waits.data");
    kill_child_writer("sigkill_child_wait_writer", WAITS_CHILD_ENV, &path, 20_000);
    let t = Trace::open(&path).expect("a killed writer's trace opens");
    assert!(!t.complete);
    let run = &t.runs[0];
    assert!(run.end.is_none());
    assert!(run.waits.len() > 50, "only {} waits", run.waits.len());
    assert_eq!(run.tasks.len(), 3);
    // Every wait kept its whole stack and its sample (written before it).
    for w in &run.waits {
        assert!(w.stack.len() > 5 && w.task == Some(1), "{w:?}");
        assert!(
            run.samples
                .iter()
                .any(|s| s.vcpu == w.vcpu && s.t_ns == w.t_ns),
            "a wait at {} without its sample",
            w.t_ns
        );
    }
}

#[test]
fn sigkilled_writer_leaves_a_readable_trace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("killed.data");
    kill_child_writer("sigkill_child_writer", CHILD_ENV, &path, 20_000);

    let t = Trace::open(&path).expect("a killed writer's trace opens");
    assert!(!t.complete);
    assert!(
        t.warnings.iter().any(|w| w.contains("interrupted")),
        "{:?}",
        t.warnings
    );
    assert_eq!(t.runs.len(), 1);
    let run = &t.runs[0];
    assert!(run.end.is_none());
    assert!(
        run.samples.len() > 100,
        "only {} samples",
        run.samples.len()
    );
    assert!(run.phase(PhaseName::FirstInstruction).is_some());
    assert_eq!(run.layout, Some(synth::layout()));
    // Samples arrive in time order and none is damaged.
    assert!(run.samples.windows(2).all(|w| w[0].t_ns <= w[1].t_ns));
    assert!(run.samples.iter().all(|s| !s.stack.is_empty()));
}
