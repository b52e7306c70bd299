//! Real boots with the seed's machine: an ext4 root on virtio-blk and a
//! virtio-net device configured by the kernel's `ip=`, booted to the first
//! user-mode instruction. What the devices did comes from `record`'s summary.

mod common;
mod virtio_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{boottrace, kernel_dir, scratch, text};
use virtio_common::{inject_frames, TapGuard};

const IP: &str = "ip=10.0.0.2::10.0.0.1:255.255.255.0::eth0:off";

/// A private copy of the kernel's rootfs.ext4 (a rw boot writes to it).
fn rootfs_copy(kernel: &str, name: &str) -> (PathBuf, PathBuf) {
    let original = kernel_dir(kernel).join("rootfs.ext4");
    assert!(
        original.exists(),
        "{} missing: kernel/build.sh {kernel} makes it",
        original.display()
    );
    let copy = scratch().join(name);
    std::fs::copy(&original, &copy).expect("copy rootfs.ext4");
    (original, copy)
}

fn record(kernel: &Path, name: &str, args: &[&str]) -> (bool, String) {
    let trace = scratch().join(format!("{name}.data"));
    let mut all = vec![
        "record",
        kernel.to_str().expect("utf-8 path"),
        "-o",
        trace.to_str().expect("utf-8 path"),
        "--timeout",
        "900",
        "-F",
        "100",
    ];
    all.extend_from_slice(args);
    let out = boottrace(&all);
    (out.status.success(), text(&out))
}

/// The counter before `what` in the summary line of `device`, e.g.
/// `count(out, "virtio-blk vda", "reads")`.
fn count(output: &str, device: &str, what: &str) -> u64 {
    let line = output
        .lines()
        .find(|l| l.trim_start().starts_with(device))
        .unwrap_or_else(|| panic!("no summary line for {device}:\n{output}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words
        .iter()
        .position(|w| w.trim_end_matches(',') == what)
        .unwrap_or_else(|| panic!("no {what} in {line:?}"));
    words[i - 1]
        .parse()
        .unwrap_or_else(|_| panic!("no number before {what} in {line:?}"))
}

/// `e_entry` of an x86_64 ELF file.
fn elf_entry(path: &Path) -> u64 {
    let b = std::fs::read(path).expect("read ELF");
    assert_eq!(&b[..4], b"\x7fELF", "{} is not ELF", path.display());
    u64::from_le_bytes(b[24..32].try_into().expect("8 bytes"))
}

/// With no initrd boottrace cannot know init's entry up front: the boot ends
/// at the hardware breakpoint on the kernel's return to user mode, and the
/// RIP it reports is init's entry point (the root's /sbin/init is the same
/// static binary kernel/build.sh leaves beside the kernel as `init`).
fn assert_ended_on_return_to_user(kernel: &str, out: &str) {
    let entry = elf_entry(&kernel_dir(kernel).join("init"));
    // Any vCPU may run init first on an SMP guest.
    let want = format!("first user-mode instruction at {entry:#x} on vCPU ");
    let line = out
        .lines()
        .find(|l| l.contains(&want))
        .unwrap_or_else(|| panic!("want {want:?} in:\n{out}"));
    assert!(
        line.ends_with("(hw-breakpoint on the kernel's return to user mode)"),
        "{line}"
    );
}

fn assert_root_and_ip(ok: bool, out: &str) {
    assert!(ok, "boot failed:\n{out}");
    assert!(out.contains("boot ended: init started"), "{out}");
    assert!(
        out.contains("EXT4-fs (vda): mounted"),
        "no ext4 mount:\n{out}"
    );
    assert!(
        out.contains("IP-Config: Complete"),
        "no IP configuration:\n{out}"
    );
    assert!(out.contains("ipaddr=10.0.0.2"), "{out}");
    assert!(
        out.contains("virtio_mmio.device=4K@0xd0001000:5 virtio_mmio.device=4K@0xd0002000:6"),
        "devices not announced on the command line:\n{out}"
    );
    assert!(!out.contains("device broken"), "{out}");
    if boottrace::vmm::compat::host_is_pvm() {
        // Measured here: PVM's KVM takes MMIO ioeventfds (a host that refuses
        // them falls back to serving notifications in the MMIO exit).
        assert!(
            out.contains("virtio-blk vda (ro; ioeventfd)")
                || out.contains("virtio-blk vda (rw; ioeventfd)"),
            "{out}"
        );
    }
    assert!(
        count(out, "virtio-blk vda", "reads") > 0,
        "no reads counted:\n{out}"
    );
}

#[test]
fn tiny_fp_mounts_an_ext4_root_and_configures_ip() {
    let d = kernel_dir("tiny-fp");
    let (original, disk) = rootfs_copy("tiny-fp", "fp-root.ext4");
    let (ok, out) = record(
        &d.join("bzImage"),
        "fp-virtio",
        &[
            "--disk",
            disk.to_str().expect("utf-8"),
            "--root",
            "/dev/vda",
            "--net",
            "--cmdline",
            IP,
        ],
    );
    assert_root_and_ip(ok, &out);
    assert_ended_on_return_to_user("tiny-fp", &out);
    assert!(out.contains("root=/dev/vda rootfstype=ext4 ro"), "{out}");
    assert_eq!(count(&out, "virtio-blk vda", "writes"), 0, "{out}");
    assert_eq!(
        std::fs::read(&original).expect("read"),
        std::fs::read(&disk).expect("read"),
        "a read-only disk changed"
    );
    assert_devices_in_trace(&scratch().join("fp-virtio.data"), &out);
}

/// The trace keeps what `record` said each device did (format 3
/// `DeviceStats`), and `report --json` shows it.
fn assert_devices_in_trace(trace: &Path, out: &str) {
    let json = common::report_json(trace);
    let devices = json["runs"][0]["devices"]
        .as_array()
        .unwrap_or_else(|| panic!("no devices in the report: {}", json["runs"][0]));
    let vda = devices
        .iter()
        .find(|d| d["name"] == "vda")
        .expect("vda in the report");
    assert_eq!(vda["kind"], "virtio-blk");
    assert_eq!(
        vda["counters"]["reads"].as_u64(),
        Some(count(out, "virtio-blk vda", "reads")),
        "report and record disagree: {vda}"
    );
    let net = devices
        .iter()
        .find(|d| d["name"] == "net0")
        .expect("net0 in the report");
    assert_eq!(net["kind"], "virtio-net");
    // The summary line reads "tx N frames (…) …": the first "frames" is tx.
    assert_eq!(
        net["counters"]["tx_frames"].as_u64(),
        Some(count(out, "virtio-net net0", "frames")),
        "{net}"
    );
}

#[test]
fn tiny_orc_on_two_cpus_writes_to_a_rw_root() {
    let d = kernel_dir("tiny-orc");
    let (original, disk) = rootfs_copy("tiny-orc", "orc-root.ext4");
    let rw = format!("{},rw", disk.display());
    let (ok, out) = record(
        &d.join("bzImage"),
        "orc-virtio",
        &[
            "--cpus",
            "2",
            "--disk",
            &rw,
            "--root",
            "/dev/vda",
            "--net",
            "--cmdline",
            IP,
        ],
    );
    assert_root_and_ip(ok, &out);
    assert_ended_on_return_to_user("tiny-orc", &out);
    assert!(out.contains("root=/dev/vda rootfstype=ext4 rw"), "{out}");
    assert!(out.contains("smp: Brought up 1 node, 2 CPUs"), "{out}");
    // Mounting ext4 read-write updates its superblock: those writes reach the file.
    assert!(
        count(&out, "virtio-blk vda", "writes") > 0,
        "no writes:\n{out}"
    );
    assert_ne!(
        std::fs::read(&original).expect("read"),
        std::fs::read(&disk).expect("read"),
        "the guest's writes did not reach the image file"
    );
}

#[test]
fn tap_carries_frames_both_ways() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let tap = TapGuard::create(&format!("bttap{}", std::process::id() % 100_000));
    let before = tap.stat("rx_packets");
    let d = kernel_dir("tiny-fp");
    let (_, disk) = rootfs_copy("tiny-fp", "tap-root.ext4");
    let trace = scratch().join("fp-tap.data");
    let child = Command::new(env!("CARGO_BIN_EXE_boottrace"))
        .arg("record")
        .arg(d.join("bzImage"))
        .args([
            "-o",
            trace.to_str().expect("utf-8"),
            "--timeout",
            "900",
            "-F",
            "100",
        ])
        .args([
            "--disk",
            disk.to_str().expect("utf-8"),
            "--root",
            "/dev/vda",
        ])
        .args(["--net", &format!("tap={}", tap.0), "--cmdline", IP])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run boottrace");
    let stop = AtomicBool::new(false);
    let (out, injected) = std::thread::scope(|s| {
        let injector = s.spawn(|| inject_frames(&tap.0, &stop));
        let out = child.wait_with_output().expect("wait for boottrace");
        stop.store(true, Ordering::SeqCst);
        (out, injector.join().expect("injector thread"))
    });
    let (ok, out) = (out.status.success(), text(&out));
    assert_root_and_ip(ok, &out);
    assert!(
        out.contains(&format!("virtio-net net0 (tap {};", tap.0)),
        "{out}"
    );
    let sent = count(&out, "virtio-net net0", "frames");
    let dropped = count(&out, "virtio-net net0", "dropped");
    let arrived = tap.stat("rx_packets") - before;
    // Every frame the device passed on (not dropped) reached the host's tap.
    assert!(
        arrived + dropped >= sent,
        "the guest sent {sent} frames ({dropped} dropped) but {arrived} arrived on tap {}:\n{out}",
        tap.0
    );
    assert!(injected > 0, "no frame could be sent into the tap");
    if boottrace::vmm::compat::host_is_pvm() {
        // Under PVM the driver is up for seconds before init: IPv6's first
        // frames leave the guest and injected ones arrive. On a real KVM host
        // the boot is over in milliseconds, before either happens.
        assert!(sent > 0, "the guest sent nothing:\n{out}");
        let line = out
            .lines()
            .find(|l| l.contains("virtio-net net0"))
            .unwrap_or_default();
        let rx: u64 = line
            .split("rx ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(
            rx > 0,
            "none of {injected} injected frames reached the guest:\n{out}"
        );
    }
}
