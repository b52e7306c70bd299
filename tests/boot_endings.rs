//! How real boots end, on real kernels under real KVM: at a guest reset
//! (`--until shutdown`), at a kernel panic (status 3), at an instruction the
//! host cannot run (PVM hosts, `--compat none`), and what `--runs` returns
//! when no boot reaches its goal. Each real boot here also proves options
//! that cost nothing extra: `--capture ioctl`, `--cmdline`, `--compat`,
//! `--skip-decompressor`, and the KASLR slide against the guest's own word.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use boottrace::trace::{EndKind, PhaseName, Trace};
use common::{boottrace, host_is_pvm, kernel_dir, scratch, standard_recording, text};

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `boottrace record -o scratch/NAME.data ARGS`.
fn record(name: &str, args: &[&str]) -> (Output, PathBuf) {
    let trace = scratch().join(format!("{name}.data"));
    let mut all = vec!["record", "-o", s(&trace)];
    all.extend_from_slice(args);
    (boottrace(&all), trace)
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

/// System.map text symbols, sorted by address.
fn system_map(dir: &Path) -> Vec<(u64, String)> {
    let mut syms: Vec<(u64, String)> = std::fs::read_to_string(dir.join("System.map"))
        .expect("System.map")
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let addr = u64::from_str_radix(w.next()?, 16).ok()?;
            let kind = w.next()?;
            let name = w.next()?;
            matches!(kind, "t" | "T").then(|| (addr, name.to_string()))
        })
        .collect();
    syms.sort();
    syms
}

fn symbol_at(map: &[(u64, String)], addr: u64) -> Option<&str> {
    let i = map.partition_point(|(a, _)| *a <= addr);
    i.checked_sub(1).map(|i| map[i].1.as_str())
}

/// The address System.map gives `name` (any symbol type).
fn address_of(dir: &Path, name: &str) -> u64 {
    std::fs::read_to_string(dir.join("System.map"))
        .expect("System.map")
        .lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            let (addr, _, n) = (w.next()?, w.next()?, w.next()?);
            (n == name).then(|| u64::from_str_radix(addr, 16).ok())?
        })
        .unwrap_or_else(|| panic!("{name} not in System.map"))
}

/// tiny-orc (KASLR) under `--until shutdown`: init ends (on a PVM host its
/// first system call faults; on real KVM it exits with 7), the kernel panics
/// — which is not the goal, so the boot goes on — and `panic=-1 reboot=k`
/// (boottrace's default command line) resets the machine through the
/// i8042: the goal, status 0. The panic prints the guest's own KASLR offset,
/// which must be the slide boottrace recorded. Recorded with
/// `--capture ioctl`, whose per-sample capture costs more than SYNC_REGS.
#[test]
fn until_shutdown_ends_at_the_guest_reset_with_the_guests_kaslr_offset() {
    let d = kernel_dir("tiny-orc");
    let (k, i) = (d.join("bzImage"), d.join("initramfs.cpio"));
    let (out, trace) = record(
        "orc-shutdown",
        &[
            s(&k),
            "--initrd",
            s(&i),
            "--until",
            "shutdown",
            "--capture",
            "ioctl",
            "-F",
            "1000",
            "--timeout",
            "900",
            "-v",
        ],
    );
    let all = text(&out);
    assert_eq!(code(&out), 0, "{all}");
    assert!(
        all.contains("boot ended: guest reset the machine (i8042)"),
        "{all}"
    );
    let t = Trace::open(&trace).expect("trace");
    let run = &t.runs[0];
    assert_eq!(run.end.as_ref().map(|e| &e.reason), Some(&EndKind::Reset));
    let line = |needle: &str| run.serial.iter().find(|l| l.line.contains(needle));
    assert!(
        line("Kernel panic - not syncing").is_some(),
        "the panic on the way to the reset is not in the console"
    );
    // Init ran until it ended: its end is what the kernel panicked about.
    assert!(line("Attempted to kill init").is_some());
    if host_is_pvm() {
        // Init's first system call faults here: it never writes the marker.
        assert!(line("segfault").is_some(), "no init segfault on a PVM host");
        assert!(run.phase(PhaseName::BootMarker).is_none());
    } else {
        // On real KVM init runs: it writes the boot marker and exits with 7.
        assert!(line("boottrace-init: boot marker written").is_some());
        assert!(run.phase(PhaseName::BootMarker).is_some());
        assert!(line("exitcode=0x00000700").is_some());
    }

    // KASLR: "Kernel Offset: 0x… from 0xffffffff81000000" (the panic
    // notifier) is the slide boottrace found from outside the guest.
    let offset_line = line("Kernel Offset: 0x").expect("the panic prints the kernel offset");
    let hex = offset_line
        .line
        .split("Kernel Offset: 0x")
        .nth(1)
        .expect("hex");
    let hex: String = hex.chars().take_while(char::is_ascii_hexdigit).collect();
    let guest_offset = i64::from_str_radix(&hex, 16).expect("hex offset");
    let layout = run.layout.as_ref().expect("layout record");
    assert_eq!(
        layout.kernel_virt_slide, guest_offset,
        "recorded slide {:#x} ({}), guest says {:#x}",
        layout.kernel_virt_slide, layout.virt_slide_method, guest_offset
    );
    assert!(
        all.contains(&format!("kernel slide {:#x}", layout.kernel_virt_slide)),
        "-v shows the slide:\n{all}"
    );
    // Sampled kernel RIPs, less the slide, land in the image System.map
    // describes (_text.._end: .init.text is where much of a boot runs).
    let (text_start, text_end) = (address_of(&d, "_text"), address_of(&d, "_end"));
    let kernel_rips: Vec<u64> = run
        .samples
        .iter()
        .filter(|s| s.cpl == 0 && s.rip >= 0xffff_ffff_8000_0000)
        .map(|s| s.rip.wrapping_sub(guest_offset as u64))
        .collect();
    assert!(!kernel_rips.is_empty(), "no kernel-mode samples");
    let inside = kernel_rips
        .iter()
        .filter(|r| (text_start..text_end).contains(*r))
        .count();
    assert!(
        inside == kernel_rips.len(),
        "only {inside} of {} kernel RIPs fall in _text.._end after removing the slide",
        kernel_rips.len()
    );

    // --capture ioctl: recorded as such, and each capture costs more than
    // with SYNC_REGS (the shared tiny-fp recording): KVM_GET_REGS +
    // KVM_GET_SREGS are two system calls, SYNC_REGS a memory copy.
    assert_eq!(t.meta.options.capture, "ioctl");
    let per_capture = |t: &Trace| {
        let c = t.runs[0].cost.as_ref().expect("sampler cost");
        assert!(c.samples > 0);
        c.total_capture_ns as f64 / c.samples as f64
    };
    let sync = Trace::open(&standard_recording("tiny-fp").0).expect("shared trace");
    assert_eq!(sync.meta.options.capture, "sync");
    let (ioctl_ns, sync_ns) = (per_capture(&t), per_capture(&sync));
    println!("capture per sample: ioctl {ioctl_ns:.0} ns, sync {sync_ns:.0} ns");
    assert!(
        ioctl_ns > sync_ns,
        "ioctl capture {ioctl_ns:.0} ns is not dearer than SYNC_REGS {sync_ns:.0} ns"
    );
}

/// A kernel panic ends the boot under the default `--until user`: status 3,
/// the panic line as the reason. The panic comes from `--cmdline
/// rdinit=/nonexistent` (the init the kernel is told to run is not in the
/// initrd; with no root device either, the kernel cannot mount a root) —
/// the extra arguments reach the guest and change its boot. `--compat pvm`
/// applies the PVM workarounds on any host and says so.
#[test]
fn a_kernel_panic_ends_the_boot_with_status_3() {
    let d = kernel_dir("tiny-fp");
    let (k, i) = (d.join("bzImage"), d.join("initramfs.cpio"));
    let (out, trace) = record(
        "fp-panic",
        &[
            s(&k),
            "--initrd",
            s(&i),
            "--cmdline",
            "rdinit=/nonexistent",
            "--compat",
            "pvm",
            "-F",
            "100",
            "--timeout",
            "900",
        ],
    );
    let all = text(&out);
    assert_eq!(code(&out), 3, "{all}");
    // The panic line as the console printed it (with a printk timestamp
    // when the kernel has CONFIG_PRINTK_TIME).
    let ended = all
        .lines()
        .find(|l| l.contains("boot ended: kernel panic: "))
        .unwrap_or_else(|| panic!("no panic ending:\n{all}"));
    assert!(ended.contains("Kernel panic - not syncing"), "{ended}");
    assert!(all.contains("no boot reached its end condition"), "{all}");
    assert!(
        all.contains("PVM nested-KVM host: applying workarounds"),
        "--compat pvm did not apply the workarounds:\n{all}"
    );
    let t = Trace::open(&trace).expect("the trace of a panicked boot reads");
    assert!(!t.meta.host.pvm_workarounds.is_empty());
    assert!(
        t.meta.kernel_cmdline.contains("clearcpuid="),
        "{}",
        t.meta.kernel_cmdline
    );
    assert!(t.meta.kernel_cmdline.contains(" rdinit=/nonexistent"));
    let run = &t.runs[0];
    assert_eq!(run.end.as_ref().map(|e| &e.reason), Some(&EndKind::Panic));
    // The guest got the argument (its own echo of the command line) and
    // acted on it: /init never ran.
    assert!(
        run.serial
            .iter()
            .any(|l| l.line.contains("Kernel command line:")
                && l.line.contains("rdinit=/nonexistent"))
    );
    assert!(!run
        .serial
        .iter()
        .any(|l| l.line.contains("Run /init as init process")));
    assert!(run.phase(PhaseName::UserMode).is_none());
    let report = common::report_json(&trace);
    assert_eq!(report["runs"][0]["end_reason"], "panic");
}

/// `--skip-decompressor` boots the bzImage's kernel proper: the first sample
/// is the payload's entry, not the decompressor's `startup_64` at 0x100200,
/// and there is no decompression phase. With `--compat none` a PVM host
/// cannot run the kernel's first `xrstor`: the boot ends with status 5 and
/// the RIP, CPL and instruction bytes; real KVM boots on to the goal.
#[test]
fn skip_decompressor_and_compat_none() {
    let d = kernel_dir("tiny-fp");
    let k = d.join("bzImage");
    let (out, trace) = record(
        "fp-skip-none",
        &[
            s(&k),
            "--skip-decompressor",
            "--compat",
            "none",
            "--until",
            "serial:Memory: [0-9]+K/[0-9]+K available",
            "-F",
            "1000",
            "--timeout",
            "900",
        ],
    );
    let all = text(&out);
    assert!(
        all.contains("booting the bzImage's ELF payload directly"),
        "{all}"
    );
    assert!(!all.contains("applying workarounds"), "{all}");
    let t = Trace::open(&trace).expect("trace");
    assert!(t.meta.options.skip_decompressor);
    assert!(t.meta.host.pvm_workarounds.is_empty());
    assert!(!t.meta.kernel_cmdline.contains("clearcpuid"));
    let run = &t.runs[0];
    // The entry `record` reports is the ELF payload's (PVH or 64-bit), and the
    // first sample is there.
    let entry_text = all
        .split("ELF kernel, entry 0x")
        .nth(1)
        .expect("an ELF entry line");
    let entry = u64::from_str_radix(
        &entry_text
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .collect::<String>(),
        16,
    )
    .expect("entry");
    assert_ne!(entry, 0x10_0200);
    assert_eq!(run.samples.first().map(|s| s.rip), Some(entry));
    let report = common::report_json(&trace);
    let phases: Vec<&str> = report["runs"][0]["kernel_phases"]
        .as_array()
        .expect("kernel_phases")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(!phases.contains(&"decompression"), "{phases:?}");

    if host_is_pvm() {
        assert_eq!(code(&out), 5, "{all}");
        let end = run.end.as_ref().expect("end");
        assert_eq!(end.reason, EndKind::EmulationFailure);
        let msg = "host could not run a guest instruction on vCPU 0: RIP 0x";
        assert!(all.contains(msg), "{all}");
        let detail = end.detail.as_deref().expect("detail");
        let rip_hex: String = detail
            .split("RIP 0x")
            .nth(1)
            .expect("RIP")
            .chars()
            .take_while(char::is_ascii_hexdigit)
            .collect();
        let rip = u64::from_str_radix(&rip_hex, 16).expect("rip");
        let bytes = detail
            .split("bytes [")
            .nth(1)
            .and_then(|b| b.split(']').next())
            .expect("bytes");
        assert!(detail.contains("(CPL 0)"), "{detail}");
        // The FPU set-up's xrstor (0f ae /5) or xrstors (0f c7 /3), after an
        // optional REX prefix: what docs/ENVIRONMENT.md says PVM cannot run.
        assert!(
            bytes.contains("0f ae") || bytes.contains("0f c7"),
            "not an xrstor/xrstors: [{bytes}]"
        );
        let map = system_map(&d);
        let f = symbol_at(&map, rip).expect("RIP in the kernel");
        println!("emulation failure at {rip:#x} in {f}: [{bytes}]");
    } else {
        assert_eq!(code(&out), 0, "{all}");
        assert_eq!(run.end.as_ref().map(|e| &e.reason), Some(&EndKind::Serial));
    }
}

/// With `--runs`, a recording none of whose boots reached the goal exits
/// with the status of the last one (a triple fault: 3), after every run was
/// made and written. A flat test kernel (`ud2`, no IDT) makes it cheap.
#[test]
fn runs_without_a_goal_exit_with_the_last_boots_status() {
    let k = common::flat_kernel(scratch(), "runs-ud2.elf", &[0x0f, 0x0b]);
    let (out, trace) = record(
        "runs-ud2",
        &[s(&k), "--runs", "3", "-F", "0", "--timeout", "60"],
    );
    let all = text(&out);
    assert_eq!(code(&out), 3, "{all}");
    assert!(
        all.contains("no boot reached its end condition (3 of 3 ended otherwise"),
        "{all}"
    );
    let t = Trace::open(&trace).expect("trace");
    assert!(t.complete);
    assert_eq!(t.runs.len(), 3);
    for run in &t.runs {
        assert_eq!(
            run.end.as_ref().map(|e| &e.reason),
            Some(&EndKind::Shutdown)
        );
    }
}
