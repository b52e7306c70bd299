//! The host page-fault counter sees guest-memory faults: the faults KVM takes
//! when the guest first touches a page are charged to the vCPU thread, so
//! they grow with the memory the kernel initialises and vanish when guest
//! memory is pre-faulted (`--populate`). Short real boots of tiny-fp (ELF),
//! stopped once the kernel has set up its memory map.

mod common;

use boottrace::trace::{EndKind, Trace};
use common::{boottrace, kernel_dir, scratch, text};

/// Boots tiny-fp's vmlinux until mm_core_init reports memory, sampling at
/// 1 kHz, and returns the vCPU thread's minor faults summed over samples.
fn faults(name: &str, extra: &[&str]) -> u64 {
    let d = kernel_dir("tiny-fp");
    let trace = scratch().join(format!("{name}.data"));
    let kernel = d.join("vmlinux").to_str().unwrap_or_default().to_string();
    let t = trace.to_str().unwrap_or_default().to_string();
    let mut args = vec![
        "record",
        &kernel,
        "-F",
        "1000",
        "-q",
        "--until",
        "serial:Memory: [0-9]+K/[0-9]+K available",
        "--timeout",
        "600",
        "-o",
        &t,
    ];
    args.extend_from_slice(extra);
    let out = boottrace(&args);
    assert!(out.status.success(), "{}", text(&out));
    let trace = Trace::open(&trace).expect("trace");
    let run = &trace.runs[0];
    assert_eq!(run.end.as_ref().map(|e| &e.reason), Some(&EndKind::Serial));
    let total: u64 = run.samples.iter().map(|s| s.minflt + s.majflt).sum();
    println!(
        "{name}: {} samples, {total} host page faults on the vCPU thread",
        run.samples.len()
    );
    total
}

#[test]
fn guest_memory_faults_follow_memory_size_and_populate() {
    let small = faults("mem128", &["--mem", "128M"]);
    let large = faults("mem1g", &["--mem", "1G"]);
    let populated = faults("mem1g-populate", &["--mem", "1G", "--populate"]);
    // struct page is 64 bytes per 4 KiB page: 1 GiB needs 16 MiB of it
    // (4096 host pages) where 128 MiB needs 2 MiB (512): the kernel touches
    // each while initialising the memory map.
    assert!(large > small + 2000, "1G: {large} faults, 128M: {small}");
    // Pre-faulted memory: KVM finds every page present, the vCPU thread takes
    // (almost) no faults.
    assert!(
        populated * 10 < large,
        "populated: {populated}, not populated: {large}"
    );
}
