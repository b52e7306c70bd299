//! Real boots under real KVM: the test kernels (tiny-fp, tiny-orc) booted to
//! init by `boottrace record`, sampled, and checked through the trace and
//! `report --json`. Each recording is made once and shared by the tests here.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use boottrace::trace::{EndKind, PhaseName, Trace, UnwinderKind};
use common::{boottrace, kernel_dir, report_json, scratch, standard_recording, text};

struct Recording {
    ok: bool,
    output: String,
    trace: PathBuf,
}

fn record(name: &str, args: &[&str]) -> Recording {
    let trace = scratch().join(format!("{name}.data"));
    let mut all: Vec<&str> = vec![
        "record",
        "-o",
        trace.to_str().expect("utf-8 path"),
        "--timeout",
        "900",
    ];
    all.extend_from_slice(args);
    let out = boottrace(&all);
    Recording {
        ok: out.status.success(),
        output: text(&out),
        trace,
    }
}

/// tiny-fp bzImage, sampled at 1 kHz: from the decompressor's first
/// instruction to init. The suite's shared recording (one boot for every
/// test binary that reads it).
fn fp_bzimage() -> &'static Recording {
    static R: OnceLock<Recording> = OnceLock::new();
    R.get_or_init(|| shared("tiny-fp"))
}

/// A shared standard recording (`common::standard_recording`): `record`
/// succeeded, or the test already failed there.
fn shared(kernel: &str) -> Recording {
    let (trace, output) = standard_recording(kernel);
    Recording {
        ok: true,
        output,
        trace,
    }
}

/// tiny-fp as an ELF vmlinux (PVH entry), not sampled.
fn fp_vmlinux() -> &'static Recording {
    static R: OnceLock<Recording> = OnceLock::new();
    R.get_or_init(|| {
        let d = kernel_dir("tiny-fp");
        let (k, i) = (d.join("vmlinux"), d.join("initramfs.cpio"));
        record(
            "fp-elf",
            &[
                k.to_str().unwrap_or_default(),
                "--initrd",
                i.to_str().unwrap_or_default(),
                "-F",
                "0",
            ],
        )
    })
}

/// tiny-orc bzImage (KASLR, ORC) on two vCPUs, sampled at 1 kHz (shared).
fn orc_smp() -> &'static Recording {
    static R: OnceLock<Recording> = OnceLock::new();
    R.get_or_init(|| shared("tiny-orc"))
}

fn assert_booted_to_init(r: &Recording) -> Trace {
    assert!(r.ok, "record failed:\n{}", r.output);
    assert!(
        r.output.contains("boot ended: init started"),
        "end reason is not init:\n{}",
        r.output
    );
    let trace = Trace::open(&r.trace).expect("trace reads back");
    assert!(
        trace.warnings.is_empty(),
        "trace warnings: {:?}",
        trace.warnings
    );
    let run = &trace.runs[0];
    assert_eq!(run.end.as_ref().map(|e| &e.reason), Some(&EndKind::User));
    assert!(
        run.serial
            .iter()
            .any(|l| l.line.contains("Run /init as init process")),
        "console never said 'Run /init as init process'"
    );
    // VMM phases happen in this order, each at or after the previous one.
    let order = [
        PhaseName::CreateVm,
        PhaseName::Memory,
        PhaseName::LoadKernel,
        PhaseName::Vcpus,
        PhaseName::FirstInstruction,
        PhaseName::UserMode,
        PhaseName::End,
    ];
    let times: Vec<u64> = order
        .iter()
        .map(|p| {
            run.phase(p.clone())
                .unwrap_or_else(|| panic!("phase {p} missing"))
        })
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "phases out of order: {:?}",
        order.iter().zip(&times).collect::<Vec<_>>()
    );
    trace
}

/// Samples the timer delivers on vCPU 0 from start_kernel to the run's end
/// at the recorded rate: the measured boot length times the frequency.
fn expected_samples_after_start_kernel(report: &serde_json::Value) -> f64 {
    let run = &report["runs"][0];
    let freq = report["input"]["sample_freq_hz"]
        .as_f64()
        .expect("sample_freq_hz");
    let boot = run["boot_ns"].as_f64().expect("boot_ns");
    let sk = run["milestones"]["start_kernel_ns"]
        .as_f64()
        .expect("start_kernel_ns");
    (boot - sk).max(0.0) * freq / 1e9
}

fn unwind_percent(trace: &std::path::Path) -> f64 {
    let report = report_json(trace);
    let pct = report["runs"][0]["unwind"]["percent"]
        .as_f64()
        .expect("unwind.percent");
    let considered = report["runs"][0]["unwind"]["considered"]
        .as_u64()
        .unwrap_or(0);
    // As many as the boot's length allows (not a count tuned to one host: a
    // bare-metal boot after start_kernel lasts milliseconds): at least a
    // tenth of what the timer would deliver from start_kernel to the end
    // (kicks coalesce when the host is loaded: 32% of them arrived in one
    // boot on a 2-core host running five boots at once), and at least one.
    let expected = expected_samples_after_start_kernel(&report);
    assert!(
        considered >= 1 && considered as f64 >= expected / 10.0,
        "too few kernel-mode samples after start_kernel: {considered} (timer: ~{expected:.0})"
    );
    println!("unwind quality: {pct:.2}% of {considered} kernel-mode samples after start_kernel reach a known root");
    pct
}

#[test]
fn tiny_fp_bzimage_boots_to_init() {
    let trace = assert_booted_to_init(fp_bzimage());
    assert_eq!(trace.meta.unwinder, UnwinderKind::FramePointer);
}

#[test]
fn tiny_fp_vmlinux_boots_to_init_through_pvh() {
    let r = fp_vmlinux();
    assert!(
        r.output.contains("ELF kernel") && r.output.contains("Pvh32"),
        "not a PVH boot:\n{}",
        r.output
    );
    let trace = assert_booted_to_init(r);
    assert!(trace.runs[0].samples.is_empty(), "-F 0 must not sample");
}

#[test]
fn tiny_orc_bzimage_brings_up_two_cpus() {
    let trace = assert_booted_to_init(orc_smp());
    assert_eq!(trace.meta.unwinder, UnwinderKind::Orc);
    let run = &trace.runs[0];
    assert!(
        run.serial
            .iter()
            .any(|l| l.line.contains("Brought up 1 node, 2 CPUs")),
        "second CPU did not come up"
    );
    assert!(
        run.samples.iter().any(|s| s.vcpu == 1),
        "no samples from vCPU 1"
    );
    let layout = run.layout.as_ref().expect("layout recorded");
    assert!(
        layout.virt_slide_method.to_lowercase().contains("match") || layout.kernel_virt_slide != 0,
        "{layout:?}"
    );
}

#[test]
fn samples_start_at_the_first_instruction() {
    let r = fp_bzimage();
    assert!(r.ok, "{}", r.output);
    let trace = Trace::open(&r.trace).expect("trace");
    let run = &trace.runs[0];
    let first = run.samples.first().expect("samples");
    let entry = run
        .phase(PhaseName::FirstInstruction)
        .expect("first_instruction phase");
    // The first sample is the entry state itself: the decompressor's startup_64 at load + 0x200.
    assert_eq!(
        first.rip, 0x10_0200,
        "first sample is not the bzImage 64-bit entry"
    );
    assert!(first.t_ns >= entry && first.t_ns - entry < 50_000_000);
    let report = report_json(&r.trace);
    let phases = report["runs"][0]["kernel_phases"]
        .as_array()
        .expect("kernel_phases");
    let names: Vec<&str> = phases.iter().filter_map(|p| p["name"].as_str()).collect();
    assert!(
        names.contains(&"decompression") && names.contains(&"head"),
        "kernel phases: {names:?}"
    );
}

#[test]
fn frame_pointer_unwinds_reach_a_root() {
    let r = fp_bzimage();
    assert!(r.ok, "{}", r.output);
    assert!(unwind_percent(&r.trace) >= 95.0);
}

#[test]
fn orc_unwinds_reach_a_root() {
    let r = orc_smp();
    assert!(r.ok, "{}", r.output);
    assert!(unwind_percent(&r.trace) >= 95.0);
}

#[test]
fn report_names_start_kernel_stages_and_initcalls() {
    let r = orc_smp();
    assert!(r.ok, "{}", r.output);
    let report = report_json(&r.trace);
    let run = &report["runs"][0];
    let stages: Vec<&str> = run["start_kernel_stages"]
        .as_array()
        .expect("stages")
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    for want in ["setup_arch", "mm_core_init"] {
        assert!(
            stages.contains(&want),
            "start_kernel stage {want} missing: {stages:?}"
        );
    }
    let initcalls = run["initcalls"].as_array().expect("initcalls");
    let timed = initcalls
        .iter()
        .filter(|i| i["time_ns"].as_u64().unwrap_or(0) > 0)
        .count();
    // How many distinct initcalls samples can name depends on how many
    // samples fell in the initcall phase (thousands on a PVM host, a handful
    // on bare metal): at least one, and 10 once there are 500 samples there.
    let in_phase = run["kernel_phases"]
        .as_array()
        .expect("kernel_phases")
        .iter()
        .find(|p| p["name"] == "initcalls")
        .and_then(|p| p["samples"].as_u64())
        .expect("an initcalls kernel phase with samples");
    let want = (in_phase / 50).clamp(1, 10) as usize;
    assert!(
        timed >= want,
        "only {timed} initcalls with times ({in_phase} samples in the initcall phase, want {want})"
    );
}

/// `--until first-instruction` ends each run before the guest runs anything:
/// every run ends there (a goal, exit 0), holds the VMM's phases up to the
/// first instruction and one sample, the entry state itself.
#[test]
fn until_first_instruction_stops_before_the_guest_runs() {
    let d = kernel_dir("tiny-fp");
    let (k, i) = (d.join("bzImage"), d.join("initramfs.cpio"));
    let r = record(
        "fp-first",
        &[
            k.to_str().unwrap_or_default(),
            "--initrd",
            i.to_str().unwrap_or_default(),
            "-F",
            "1000",
            "--runs",
            "3",
            "--until",
            "first-instruction",
        ],
    );
    assert!(r.ok, "record failed:\n{}", r.output);
    let trace = Trace::open(&r.trace).expect("trace");
    assert_eq!(trace.runs.len(), 3, "{}", r.output);
    for run in &trace.runs {
        let end = run.end.as_ref().expect("run end");
        assert_eq!(end.reason, EndKind::FirstInstruction, "{}", r.output);
        let first = run
            .phase(PhaseName::FirstInstruction)
            .expect("first_instruction phase");
        assert!(run.phase(PhaseName::UserMode).is_none());
        assert!(end.t_ns >= first, "ended before the first instruction");
        assert_eq!(run.samples.len(), 1, "only the entry state is sampled");
        assert_eq!(run.samples[0].rip, 0x10_0200, "bzImage 64-bit entry");
    }
}
