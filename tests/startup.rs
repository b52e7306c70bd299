//! Issue 11: nothing the guest does not need runs before its first
//! instruction. A recording that stops there (`--until first-instruction`,
//! no guest instruction runs, so no emulated boot) still gets the kernel's
//! analysis, which ran beside the VMM's start-up: the trace's metadata
//! names the image and its hash, and the analysis' end is a phase of the run.
//! Its start-up steps are timed, the critical path split into boottrace's
//! own time and the time inside KVM ioctls.
//! The same cheap recording shows where the live progress line is drawn:
//! on a terminal only, and not with `-q`.

mod common;

use boottrace::trace::{PhaseName, Trace};
use common::{boottrace, boottrace_on_terminal, kernel_dir, text};

#[test]
fn first_instruction_recording_has_the_analysis_beside_it() {
    let dir = kernel_dir("tiny-fp");
    let tmp = tempfile::tempdir().expect("tempdir");
    let split = regex::Regex::new(
        r"critical path to the first instruction: ([0-9.]+) ms = boottrace's own ([0-9.]+) ms \+ KVM ioctls ([0-9.]+) ms",
    )
    .expect("regex");
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
        // Every start-up step is timed, on each thread of the critical path,
        // and the path is split into boottrace's own time and KVM ioctls'.
        for step in ["KVM_CREATE_VM", "KVM_CREATE_VCPU", "load kernel"] {
            assert!(all.contains(step), "no step {step}: {all}");
        }
        assert!(all.contains("step vcpu0"), "{all}");
        let c = split
            .captures(&all)
            .unwrap_or_else(|| panic!("no split: {all}"));
        let ms = |i: usize| c[i].parse::<f64>().expect("ms");
        assert!((ms(2) + ms(3) - ms(1)).abs() < 0.01, "{all}");
        assert!(ms(3) > 0.0, "KVM_CREATE_VM is on every path: {all}");
        assert!((ms(1) - first as f64 / 1e6).abs() < 0.01, "{all}");
    }
}

/// On a host with fewer than 4 CPUs the analysis starts at the first
/// instruction (beside the start-up it slowed it 1.3–1.5× on 2 CPUs), so it
/// ends after it, and `-v` says so; on a bigger host it runs beside the
/// start-up and nothing is said.
#[test]
fn the_analysis_waits_for_the_first_instruction_on_a_small_host() {
    let dir = kernel_dir("tiny-fp");
    let tmp = tempfile::tempdir().expect("tempdir");
    let trace = tmp.path().join("held.data");
    let kernel = dir.join("bzImage");
    let out = boottrace(&[
        "record",
        kernel.to_str().unwrap_or_default(),
        "--until",
        "first-instruction",
        "-v",
        "-o",
        trace.to_str().unwrap_or_default(),
    ]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    let said = all.contains("kernel analysis starts at the first instruction");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let small = cpus < boottrace::record::priority::HOLD_BELOW_CPUS;
    assert_eq!(said, small, "{cpus} CPUs: {all}");
    let t = Trace::open(&trace).expect("trace");
    let run = &t.runs[0];
    let first = run.phase(PhaseName::FirstInstruction).expect("first");
    let analysis = run.phase(PhaseName::KernelAnalysis).expect("analysis");
    if small {
        assert!(analysis > first, "{:?}", run.phases);
    }
    assert_eq!(t.meta.kernel.sha256.len(), 64, "{:?}", t.meta.kernel);
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

/// The live line's text for run `run` of `runs` (`run 1/2  0.1 s  0 samples  …`).
fn live_lines(shown: &str, run: u32, runs: u32) -> Vec<&str> {
    let want = format!("boottrace: run {run}/{runs}  ");
    shown
        .split(['\r', '\n'])
        .filter(|l| l.contains(&want) && l.contains(" samples  "))
        .collect()
}

/// `record` draws its live line (run, elapsed time, samples, how far the
/// boot got) when stdout and stderr are a terminal, for each run; not with
/// `-q`, and not into a pipe. `--until first-instruction`: no guest code
/// runs, so the line shows the VMM's phases.
#[test]
fn the_live_line_is_drawn_on_a_terminal_only_and_not_with_q() {
    let dir = kernel_dir("tiny-fp");
    let tmp = tempfile::tempdir().expect("tempdir");
    let kernel = dir.join("bzImage");
    let trace = tmp.path().join("live.data");
    let args = |quiet: bool| {
        let mut a = vec![
            "record",
            kernel.to_str().unwrap_or_default(),
            "--until",
            "first-instruction",
            "--runs",
            "2",
            "-o",
            trace.to_str().unwrap_or_default(),
        ];
        if quiet {
            a.push("-q");
        }
        a
    };
    let (code, shown) = boottrace_on_terminal(&args(false));
    assert_eq!(code, Some(0), "{shown}");
    let re =
        regex::Regex::new(r"run [12]/2  [0-9]+\.[0-9] s  [0-9]+ samples  [a-z_ ]+").expect("regex");
    for run in [1, 2] {
        let lines = live_lines(&shown, run, 2);
        assert!(!lines.is_empty(), "no live line for run {run}:\n{shown:?}");
        assert!(lines.iter().all(|l| re.is_match(l)), "{lines:?}");
    }
    let (code, shown) = boottrace_on_terminal(&args(true));
    assert_eq!(code, Some(0), "{shown}");
    assert!(live_lines(&shown, 1, 2).is_empty(), "-q: {shown:?}");
    let out = boottrace(&args(false));
    let piped = text(&out);
    assert!(out.status.success(), "{piped}");
    assert!(live_lines(&piped, 1, 2).is_empty(), "into a pipe: {piped}");
}
