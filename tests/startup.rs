//! Issue 11: nothing the guest does not need runs before its first
//! instruction. A recording that stops there (`--until first-instruction`,
//! no guest instruction runs, so no emulated boot) still gets the kernel's
//! analysis, which ran beside the VMM's start-up: the trace's metadata
//! names the image and its hash, and the analysis' end is a phase of the run.

mod common;

use boottrace::trace::{PhaseName, Trace};
use common::{boottrace, kernel_dir, text};

#[test]
fn first_instruction_recording_has_the_analysis_beside_it() {
    let dir = kernel_dir("tiny-fp");
    let tmp = tempfile::tempdir().expect("tempdir");
    for image in ["bzImage", "vmlinux"] {
        let trace = tmp.path().join(format!("{image}.data"));
        let kernel = dir.join(image);
        let initrd = dir.join("initramfs.cpio");
        let out = boottrace(&[
            "record",
            kernel.to_str().unwrap_or_default(),
            "--initrd",
            initrd.to_str().unwrap_or_default(),
            "--until",
            "first-instruction",
            "-o",
            trace.to_str().unwrap_or_default(),
        ]);
        let all = text(&out);
        assert!(out.status.success(), "{all}");
        assert!(all.contains("task awareness on"), "{all}");
        let t = Trace::open(&trace).expect("trace");
        assert!(t.complete, "{:?}", t.warnings);
        assert_eq!(t.meta.kernel.path, kernel.to_string_lossy());
        assert_eq!(t.meta.kernel.sha256.len(), 64, "{:?}", t.meta.kernel);
        assert!(t.meta.kernel.version.is_some());
        let run = &t.runs[0];
        let first = run
            .phase(PhaseName::FirstInstruction)
            .expect("first instruction");
        let analysis = run
            .phase(PhaseName::KernelAnalysis)
            .expect("analysis phase");
        assert!(first > 0 && analysis > 0, "{:?}", run.phases);
        // The phase table says when the analysis ended, on the same clock.
        assert!(all.contains("kernel_analysis"), "{all}");
    }
}

/// A bzImage whose header is fine but whose payload is damaged passes the
/// quick check before the boot; the analysis beside the boot refuses it,
/// the boot is ended, and `record` fails with the analysis' one-line
/// reason, leaving no trace file behind.
#[test]
fn damaged_payload_found_beside_the_boot_is_one_error_and_no_trace() {
    let dir = kernel_dir("tiny-fp");
    let mut bytes = std::fs::read(dir.join("bzImage")).expect("bzImage");
    let setup_sects = usize::from(bytes[0x1f1].max(4));
    let payload_start = (setup_sects + 1) * 512 + 0x4000;
    let end = (payload_start + 0x10000).min(bytes.len());
    for b in &mut bytes[payload_start..end] {
        *b = 0x5a;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let kernel = tmp.path().join("damaged.bzImage");
    std::fs::write(&kernel, &bytes).expect("write");
    let trace = tmp.path().join("damaged.data");
    let out = boottrace(&[
        "record",
        kernel.to_str().unwrap_or_default(),
        "--until",
        "first-instruction",
        "-o",
        trace.to_str().unwrap_or_default(),
    ]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(!all.contains("panicked"), "{all}");
    let errors: Vec<&str> = all
        .lines()
        .filter(|l| l.starts_with("boottrace: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{all}");
    assert!(errors[0].contains("cannot use"), "{all}");
    assert!(!trace.exists(), "a trace without metadata was left behind");
}
