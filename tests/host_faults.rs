//! The host page-fault counter sees guest-memory faults: the faults KVM takes
//! when the guest first touches a page are charged to the vCPU thread, so
//! they grow with the memory the kernel initialises and vanish when guest
//! memory is pre-faulted (`--populate`) or backed by reserved huge pages
//! (`--hugepages`). Short real boots of tiny-fp (ELF), stopped once the
//! kernel has set up its memory map.
//!
//! Fault counts depend on the host's page size for guest memory: with
//! transparent huge pages set to "always", the host would back guest RAM with
//! 2 MiB pages and take ~512x fewer faults. `record` leaves guest RAM to the
//! host's policy (as Firecracker does), so these tests switch THP off for the
//! `record` process they start (`PR_SET_THP_DISABLE`, inherited across
//! exec) and hold on any THP setting.

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;

use boottrace::trace::{EndKind, Trace};
use common::{kernel_dir, scratch, text};

/// Boots tiny-fp's vmlinux until mm_core_init reports memory, sampling at
/// 1 kHz, and returns the vCPU thread's minor faults summed over samples.
fn faults(name: &str, extra: &[&str]) -> u64 {
    let d = kernel_dir("tiny-fp");
    let trace = scratch().join(format!("{name}.data"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_boottrace"));
    cmd.arg("record")
        .arg(d.join("vmlinux"))
        .args(["-F", "1000", "-q", "--timeout", "600"])
        .args(["--until", "serial:Memory: [0-9]+K/[0-9]+K available"])
        .arg("-o")
        .arg(&trace)
        .args(extra);
    // SAFETY: prctl is async-signal-safe and touches only this (child) process.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("run boottrace record");
    assert!(out.status.success(), "{}", text(&out));
    // -q: the guest console is left out of what record says.
    assert!(
        !text(&out).contains("] Command line: "),
        "-q echoed the console:\n{}",
        text(&out)
    );
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

/// The 128 MiB boot with 4 KiB pages, shared by both tests here.
fn small_pages_128m() -> u64 {
    static F: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *F.get_or_init(|| faults("mem128", &["--mem", "128M"]))
}

#[test]
fn guest_memory_faults_follow_memory_size_and_populate() {
    let small = small_pages_128m();
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

/// `/proc/sys/vm/nr_hugepages`, put back when dropped (even when the test fails).
struct HugePages {
    old: String,
}

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

impl HugePages {
    /// Reserves at least `n` more 2 MiB pages than are in use; needs root.
    fn reserve(n: u64) -> HugePages {
        let old = std::fs::read_to_string(NR_HUGEPAGES).expect("read nr_hugepages");
        let have: u64 = old.trim().parse().expect("nr_hugepages is a number");
        std::fs::write(NR_HUGEPAGES, format!("{}", have + n)).unwrap_or_else(|e| {
            panic!("cannot reserve huge pages ({NR_HUGEPAGES}: {e}): this test needs root")
        });
        let now: u64 = std::fs::read_to_string(NR_HUGEPAGES)
            .expect("read nr_hugepages")
            .trim()
            .parse()
            .expect("nr_hugepages is a number");
        let guard = HugePages { old };
        assert!(
            now >= have + n,
            "the kernel reserved only {now} of {} huge pages (memory too fragmented?)",
            have + n
        );
        guard
    }
}

impl Drop for HugePages {
    fn drop(&mut self) {
        let _ = std::fs::write(NR_HUGEPAGES, self.old.trim());
    }
}

/// `--hugepages` with pages reserved: the boot succeeds, and guest memory
/// comes in 2 MiB pages, so the vCPU thread takes far fewer faults than with
/// 4 KiB pages (128 MiB: at most 64 huge-page faults).
#[test]
fn hugepages_back_guest_memory_when_reserved() {
    let _pages = HugePages::reserve(72);
    let huge = faults("mem128-huge", &["--mem", "128M", "--hugepages"]);
    let small = small_pages_128m();
    assert!(
        huge * 4 < small,
        "huge pages: {huge} faults, 4 KiB pages: {small}"
    );
}
