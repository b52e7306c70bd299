//! Bad `--disk`, `--net` and `--root` values: a one-line error naming the
//! problem and a non-zero exit, before anything boots.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{kernel_dir, text};

/// A world-readable directory (unprivileged runs need to reach their files).
fn open_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let d = DIR
        .get_or_init(|| tempfile::tempdir().expect("tempdir"))
        .path();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

fn file(name: &str, mode: u32) -> PathBuf {
    let p = open_dir().join(name);
    std::fs::write(&p, vec![0u8; 4096]).expect("write");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
    p
}

fn kernel() -> String {
    kernel_dir("tiny-fp")
        .join("bzImage")
        .to_str()
        .expect("utf-8")
        .to_string()
}

/// Checks the output of a failed `record`: no panic, one error line; returns it.
fn one_error(out: &std::process::Output) -> String {
    let all = text(out);
    assert!(!out.status.success(), "expected failure:\n{all}");
    assert!(!all.contains("panicked"), "panic:\n{all}");
    let errors: Vec<&str> = all
        .lines()
        .filter(|l| l.starts_with("boottrace: error:"))
        .collect();
    assert_eq!(errors.len(), 1, "expected exactly one error line:\n{all}");
    errors[0].to_string()
}

fn record_fails(args: &[&str]) -> String {
    // One trace path per call: parallel tests never share one.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out_file = open_dir().join(format!("bad-{n}.data"));
    let out = Command::new(env!("CARGO_BIN_EXE_boottrace"))
        .arg("record")
        .args(args)
        .args(["-q", "-o", out_file.to_str().expect("utf-8")])
        .output()
        .expect("run boottrace");
    let e = one_error(&out);
    assert!(
        !out_file.exists(),
        "no trace for a command that never booted"
    );
    e
}

/// `record` as the unprivileged user 65534 (root reads and writes any file,
/// so permission errors need another user). The kernel is a placeholder in
/// a world-readable directory: the disks are checked before the kernel is read.
fn record_fails_unprivileged(args: &[&str]) -> String {
    let k = file("kernel-placeholder", 0o644);
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_boottrace"))
        .arg("record")
        .arg(&k)
        .args(args)
        .args([
            "-q",
            "-o",
            open_dir().join("u.data").to_str().expect("utf-8"),
        ])
        .output()
        .unwrap_or_else(|e| panic!("cannot run setpriv (util-linux) for an unprivileged run: {e}"));
    one_error(&out)
}

#[test]
fn missing_disk() {
    let k = kernel();
    let e = record_fails(&[&k, "--disk", "/nonexistent/root.ext4"]);
    assert!(
        e.contains("disk image /nonexistent/root.ext4 does not exist"),
        "{e}"
    );
}

#[test]
fn disk_that_is_a_directory() {
    let k = kernel();
    let d = open_dir().to_str().expect("utf-8").to_string();
    let e = record_fails(&[&k, "--disk", &d]);
    assert!(e.contains("is a directory"), "{e}");
}

#[test]
fn unreadable_disk() {
    let p = file("secret.img", 0o000);
    let e = record_fails_unprivileged(&["--disk", p.to_str().expect("utf-8")]);
    assert!(
        e.contains("cannot open disk image")
            && e.contains("for reading")
            && e.contains("Permission denied"),
        "{e}"
    );
}

#[test]
fn read_only_disk_given_with_rw() {
    let p = file("readonly.img", 0o444);
    let rw = format!("{},rw", p.display());
    let e = record_fails_unprivileged(&["--disk", &rw]);
    assert!(
        e.contains("for writing (,rw)") && e.contains("Permission denied"),
        "{e}"
    );
    // Read-only use of the same file is fine: the error comes later, from the placeholder kernel.
    let e = record_fails_unprivileged(&["--disk", p.to_str().expect("utf-8")]);
    assert!(e.contains("not a kernel image"), "{e}");
}

#[test]
fn bad_disk_option() {
    let k = kernel();
    let e = record_fails(&[&k, "--disk", "root.ext4,wr"]);
    assert!(e.contains("expected FILE or FILE,rw"), "{e}");
}

#[test]
fn tap_that_does_not_exist() {
    let k = kernel();
    let e = record_fails(&[&k, "--net", "tap=bt-no-such0"]);
    assert!(
        e.contains("tap device bt-no-such0 does not exist") && e.contains("ip tuntap add"),
        "{e}"
    );
    let e = record_fails(&[&k, "--net", "tap=lo"]);
    assert!(e.contains("lo is not a tap device"), "{e}");
    let e = record_fails(&[&k, "--net", "bridge=br0"]);
    assert!(e.contains("expected no value or tap=NAME"), "{e}");
}

#[test]
fn more_devices_than_the_layout_has_room_for() {
    let k = kernel();
    let mut args = vec![k.as_str()];
    args.extend(["--net"; 20]);
    let e = record_fails(&args);
    assert!(
        e.contains("20 virtio devices") && e.contains("at most 19"),
        "{e}"
    );
    let disk = file("small.img", 0o644);
    let disk = disk.to_str().expect("utf-8");
    let mut args = vec![k.as_str()];
    for _ in 0..10 {
        args.extend(["--disk", disk, "--net"]);
    }
    let e = record_fails(&args);
    assert!(e.contains("20 virtio devices"), "{e}");
}

#[test]
fn root_on_a_disk_that_was_not_given() {
    let k = kernel();
    let disk = file("one.img", 0o644);
    let e = record_fails(&[
        &k,
        "--disk",
        disk.to_str().expect("utf-8"),
        "--root",
        "/dev/vdb",
    ]);
    assert!(e.contains("--root /dev/vdb: there is no such disk"), "{e}");
}
