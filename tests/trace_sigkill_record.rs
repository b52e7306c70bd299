//! A real `boottrace record` killed with SIGKILL mid-boot leaves a trace that
//! reads back: metadata, the run, its phases and the samples taken so far,
//! with a warning that the recording was interrupted. Needs /dev/kvm and the
//! `tiny-fp` test kernel; fails with the reason without /dev/kvm.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use boottrace::trace::{PhaseName, Trace};

#[test]
fn sigkilled_record_leaves_a_readable_trace() {
    assert!(
        std::fs::metadata("/dev/kvm").is_ok(),
        "cannot test: no /dev/kvm on this host"
    );
    let kernel = common::kernel_dir("tiny-fp").join("bzImage");
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("killed.data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_boottrace"))
        .arg("record")
        .arg(&kernel)
        // Without an initrd the kernel panics (no root); `panic=0` keeps it
        // in the panic loop and `--until shutdown` does not stop at the
        // panic line: the guest never ends on its own, so the kill comes
        // mid-recording on any host (early in the boot on a PVM host, in the
        // panic loop on bare metal).
        .args(["-q", "-F", "1000", "--timeout", "300"])
        .args(["--until", "shutdown", "--cmdline", "panic=0", "-o"])
        .arg(&trace)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start record");
    // Kill once 64 KiB of records (some hundreds of samples) reached the file.
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::metadata(&trace).map_or(0, |m| m.len()) < 64 << 10 {
        if child.try_wait().expect("wait").is_some() {
            panic!("record exited before it could be killed");
        }
        assert!(Instant::now() < deadline, "record wrote too little");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert!(!status.success());

    let t = Trace::open(&trace).expect("a killed record's trace opens");
    assert!(!t.complete, "no final record after SIGKILL");
    assert!(
        t.warnings.iter().any(|w| w.contains("interrupted")),
        "{:?}",
        t.warnings
    );
    assert_eq!(t.meta.kernel.path, kernel.to_string_lossy());
    assert_eq!(t.runs.len(), 1);
    let run = &t.runs[0];
    assert!(run.end.is_none());
    assert!(run.phase(PhaseName::FirstInstruction).is_some());
    assert!(run.samples.len() > 100, "{} samples", run.samples.len());
    let first = &run.samples[0];
    eprintln!(
        "first sample t={} rip={:#x}; first_instruction at {:?}; {} samples; warnings {:?}",
        first.t_ns,
        first.rip,
        run.phase(PhaseName::FirstInstruction),
        run.samples.len(),
        t.warnings
    );
    assert!(first.t_ns >= run.phase(PhaseName::FirstInstruction).unwrap_or(u64::MAX));
    // Samples are in time order and none is empty.
    assert!(run.samples.windows(2).all(|w| w[0].t_ns <= w[1].t_ns));
    assert!(run.samples.iter().all(|s| !s.stack.is_empty()));
}
