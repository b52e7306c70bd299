//! Tap helpers shared by the virtio tests (root, iproute2 and /dev/net/tun).
#![allow(dead_code)]

use std::process::Command;

/// EtherType of the frames the tests inject (IEEE local experimental).
pub const TEST_ETHERTYPE: u16 = 0x88b5;

/// A tap device that exists for the test's duration.
pub struct TapGuard(pub String);

impl TapGuard {
    /// Creates tap `name` (deleting a stale one), link up, IPv6 off so the
    /// host sends nothing on its own.
    pub fn create(name: &str) -> TapGuard {
        let run = |args: &[&str]| {
            let out = Command::new("ip").args(args).output();
            match out {
                Ok(o) if o.status.success() => {}
                Ok(o) => panic!(
                    "cannot create tap {name} (`ip {}`): {} — tap tests need root and /dev/net/tun",
                    args.join(" "),
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => panic!("cannot run `ip` to create tap {name}: {e}"),
            }
        };
        let _ = Command::new("ip").args(["link", "del", name]).output();
        run(&["tuntap", "add", "dev", name, "mode", "tap"]);
        let guard = TapGuard(name.to_string());
        let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
        run(&["link", "set", name, "up"]);
        guard
    }

    /// A counter from /sys/class/net/NAME/statistics.
    pub fn stat(&self, what: &str) -> u64 {
        std::fs::read_to_string(format!("/sys/class/net/{}/statistics/{what}", self.0))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for TapGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// Sends a broadcast frame of the local-experimental EtherType 0x88b5 to
/// the tap every 100 ms until `stop`: it reaches only the VMM reading the
/// tap (the tap has no address; nothing leaves this machine). Returns how
/// many were sent.
pub fn inject_frames(ifname: &str, stop: &std::sync::atomic::AtomicBool) -> u64 {
    use std::sync::atomic::Ordering;
    let name = std::ffi::CString::new(ifname).expect("no NUL");
    // SAFETY: `name` is a valid NUL-terminated string for the call.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert!(ifindex > 0, "tap {ifname} has no interface index");
    // SAFETY: plain socket(2) call; the fd is closed below.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: all-zero is a valid sockaddr_ll; the fields that matter are set next.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    let mut frame = [0u8; 60];
    frame[..6].copy_from_slice(&[0xff; 6]);
    frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    frame[12..14].copy_from_slice(&TEST_ETHERTYPE.to_be_bytes());
    frame[14..30].copy_from_slice(b"boottrace-tap-rx");
    let mut sent = 0;
    while !stop.load(Ordering::SeqCst) {
        // SAFETY: `frame` and `addr` are valid for the given lengths during the call.
        let r = unsafe {
            libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r > 0 {
            sent += 1;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    // SAFETY: `fd` is ours and still open.
    unsafe { libc::close(fd) };
    sent
}
