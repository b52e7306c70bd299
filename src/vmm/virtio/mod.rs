//! virtio-mmio devices as Firecracker lays them out: a raw-file virtio-blk
//! (`--disk FILE[,rw]`, first disk `/dev/vda`) and a virtio-net (`--net`,
//! link up with no backend, or `--net tap=NAME`). Each device gets a 4 KiB
//! window after the boot marker and its own IRQ line (see
//! [`layout::virtio_mmio_slot`]), announced on the kernel command line
//! (`virtio_mmio.device=4K@0xADDR:IRQ`); interrupts go through irqfd on the
//! in-kernel IO-APIC.
//!
//! Queue notifications arrive as Firecracker's do: through an ioeventfd per
//! queue (KVM completes the driver's QUEUE_NOTIFY write without leaving the
//! kernel) and one I/O thread that serves the queues and the taps, so the
//! guest runs on (or idles, as on a real host) while its request is served.
//! When KVM refuses the ioeventfd, the notification is served on the vCPU
//! thread in the MMIO exit instead.

pub mod block;
pub mod mmio;
pub mod net;
pub mod queue;
pub mod tap;

use std::fmt;
use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use kvm_ioctls::{IoEventAddress, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::layout::{self, VIRTIO_MAX_DEVICES, VIRTIO_MMIO_SIZE, VIRTIO_MMIO_START};
use mmio::{MmioTransport, VirtioDevice};

/// One virtio device as the user asked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VirtioSpec {
    /// A raw disk image.
    Disk {
        /// The image file.
        path: PathBuf,
        /// Whether the guest may write to it (`,rw`).
        writable: bool,
    },
    /// A network device.
    Net {
        /// Host tap device to connect, or none (frames are dropped).
        tap: Option<String>,
    },
}

/// The virtio devices of a boot and the root device to mount.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VirtioConfig {
    /// Devices in slot order (disks first, then network devices).
    pub devices: Vec<VirtioSpec>,
    /// `--root` device (e.g. `/dev/vda`), when given.
    pub root: Option<String>,
}

/// Errors in the virtio devices' set-up.
#[derive(Debug, thiserror::Error)]
pub enum VirtioError {
    /// More devices than IRQ lines/windows in the layout.
    #[error("{0} virtio devices (--disk and --net together); the layout has room for at most {max} (IRQs {first}-{last})", max = VIRTIO_MAX_DEVICES, first = layout::VIRTIO_IRQ_BASE, last = layout::VIRTIO_IRQ_MAX)]
    TooMany(usize),
    /// `--disk` value without a file name, or with an unknown option.
    #[error("--disk {0:?}: expected FILE or FILE,rw")]
    BadDiskArg(String),
    /// The disk image does not exist.
    #[error("disk image {0} does not exist")]
    DiskMissing(String),
    /// The disk image is a directory.
    #[error("disk image {0} is a directory, not a raw disk image")]
    DiskIsDirectory(String),
    /// The disk image cannot be opened as asked.
    #[error("cannot open disk image {path} {how}: {source}")]
    DiskOpen {
        /// The file.
        path: String,
        /// "for reading" or "for writing (,rw)".
        how: &'static str,
        /// errno.
        source: std::io::Error,
    },
    /// `--net` value other than nothing or `tap=NAME`.
    #[error("--net {0:?}: expected no value or tap=NAME (if this is the kernel image, put it before --net)")]
    BadNetArg(String),
    /// Tap device problems.
    #[error(transparent)]
    Tap(#[from] tap::TapError),
    /// `--root /dev/vdX` names a disk that was not given.
    #[error("--root {root}: there is no such disk ({disks} given with --disk)")]
    NoSuchRoot {
        /// The `--root` value.
        root: String,
        /// Number of disks.
        disks: usize,
    },
    /// A KVM ioctl for a device failed.
    #[error("{what} for virtio device {name} failed: {source}")]
    Kvm {
        /// Which ioctl.
        what: &'static str,
        /// Device name.
        name: String,
        /// errno.
        source: kvm_ioctls::Error,
    },
    /// Host resources (eventfd, threads).
    #[error("virtio device {name}: {what}")]
    Host {
        /// Device name.
        name: String,
        /// What failed.
        what: String,
    },
}

impl VirtioConfig {
    /// Builds the configuration from `--disk`, `--net` and `--root` values.
    pub fn parse(
        disks: &[String],
        nets: &[String],
        root: Option<&str>,
    ) -> Result<Self, VirtioError> {
        let mut devices = Vec::with_capacity(disks.len() + nets.len());
        for d in disks {
            devices.push(parse_disk(d)?);
        }
        for n in nets {
            let tap = match n.trim() {
                "" => None,
                s => match s.strip_prefix("tap=") {
                    Some(name) if !name.is_empty() => Some(name.to_string()),
                    _ => return Err(VirtioError::BadNetArg(n.clone())),
                },
            };
            devices.push(VirtioSpec::Net { tap });
        }
        if devices.len() > VIRTIO_MAX_DEVICES {
            return Err(VirtioError::TooMany(devices.len()));
        }
        let cfg = VirtioConfig {
            devices,
            root: root.map(str::to_string),
        };
        if let Some(r) = &cfg.root {
            if r.starts_with("/dev/vd") && cfg.root_disk().is_none() {
                return Err(VirtioError::NoSuchRoot {
                    root: r.clone(),
                    disks: cfg.disks().count(),
                });
            }
        }
        Ok(cfg)
    }

    fn disks(&self) -> impl Iterator<Item = (&PathBuf, bool)> {
        self.devices.iter().filter_map(|d| match d {
            VirtioSpec::Disk { path, writable } => Some((path, *writable)),
            VirtioSpec::Net { .. } => None,
        })
    }

    /// The disk `--root /dev/vdX` names: (index, writable).
    fn root_disk(&self) -> Option<(usize, bool)> {
        let letter = self.root.as_deref()?.strip_prefix("/dev/vd")?;
        let [c] = letter.as_bytes() else {
            return None;
        };
        let index = usize::from(c.checked_sub(b'a')?);
        self.disks().nth(index).map(|(_, w)| (index, w))
    }

    /// Checks every device can be opened as asked (files, taps), so that a
    /// mistake is a one-line error before anything boots.
    pub fn check(&self) -> Result<(), VirtioError> {
        for d in &self.devices {
            match d {
                VirtioSpec::Disk { path, writable } => {
                    open_disk(path, *writable)?;
                }
                VirtioSpec::Net { tap: Some(name) } => tap::check(name)?,
                VirtioSpec::Net { tap: None } => {}
            }
        }
        Ok(())
    }

    /// Kernel command-line arguments: one `virtio_mmio.device=` per device,
    /// then `root=… rootfstype=ext4 ro|rw` for `--root`.
    pub fn cmdline(&self) -> String {
        let mut parts = Vec::new();
        for i in 0..self.devices.len() {
            if let Some((addr, irq)) = layout::virtio_mmio_slot(i) {
                parts.push(format!(
                    "virtio_mmio.device={}K@{addr:#x}:{irq}",
                    VIRTIO_MMIO_SIZE / 1024
                ));
            }
        }
        if let Some(root) = &self.root {
            let rw = self.root_disk().is_some_and(|(_, w)| w);
            parts.push(format!(
                "root={root} rootfstype=ext4 {}",
                if rw { "rw" } else { "ro" }
            ));
        }
        parts.join(" ")
    }

    /// One-line description for the trace's metadata.
    pub fn describe(&self) -> String {
        let mut names = DeviceNames::default();
        self.devices
            .iter()
            .map(|d| match d {
                VirtioSpec::Disk { path, writable } => format!(
                    "{}={}{}",
                    names.next_disk(),
                    path.display(),
                    if *writable { ",rw" } else { "" }
                ),
                VirtioSpec::Net { tap } => format!(
                    "{}={}",
                    names.next_net(),
                    tap.as_deref()
                        .map_or("none".to_string(), |t| format!("tap:{t}"))
                ),
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn parse_disk(arg: &str) -> Result<VirtioSpec, VirtioError> {
    let (path, writable) = match arg.rsplit_once(',') {
        Some((p, "rw")) => (p, true),
        Some((p, "ro")) => (p, false),
        Some(_) => return Err(VirtioError::BadDiskArg(arg.to_string())),
        None => (arg, false),
    };
    if path.is_empty() {
        return Err(VirtioError::BadDiskArg(arg.to_string()));
    }
    Ok(VirtioSpec::Disk {
        path: PathBuf::from(path),
        writable,
    })
}

fn open_disk(path: &std::path::Path, writable: bool) -> Result<File, VirtioError> {
    let shown = path.display().to_string();
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(VirtioError::DiskMissing(shown))
        }
        Ok(m) if m.is_dir() => return Err(VirtioError::DiskIsDirectory(shown)),
        _ => {}
    }
    OpenOptions::new()
        .read(true)
        .write(writable)
        .open(path)
        .map_err(|source| VirtioError::DiskOpen {
            path: shown,
            how: if writable {
                "for writing (,rw)"
            } else {
                "for reading"
            },
            source,
        })
}

/// Guest-visible names: vda, vdb… for disks (probe order = slot order);
/// net0, net1… for network devices (the guest calls them eth0…).
#[derive(Default)]
struct DeviceNames {
    disks: u8,
    nets: u8,
}

impl DeviceNames {
    fn next_disk(&mut self) -> String {
        let n = format!("vd{}", char::from(b'a' + self.disks % 26));
        self.disks = self.disks.saturating_add(1);
        n
    }
    fn next_net(&mut self) -> String {
        let n = format!("net{}", self.nets);
        self.nets = self.nets.saturating_add(1);
        n
    }
}

/// What one device did during a boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceStats {
    /// Name (vda, net0).
    pub name: String,
    /// Backend in a word or two ("ro", "rw", "no backend", "tap NAME").
    pub backend: String,
    /// How queue notifications arrived: "ioeventfd" or "mmio exit".
    pub notify: &'static str,
    /// Counters.
    pub io: IoCounters,
    /// Why the device stopped working (a malformed queue), if it did.
    pub broken: Option<String>,
}

/// Per-kind counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoCounters {
    /// virtio-blk.
    Block {
        /// Read requests.
        reads: u64,
        /// Bytes read.
        read_bytes: u64,
        /// Write requests.
        writes: u64,
        /// Bytes written.
        write_bytes: u64,
        /// Flush requests.
        flushes: u64,
        /// Requests answered with an error status.
        errors: u64,
    },
    /// virtio-net.
    Net {
        /// Frames the guest sent.
        tx_frames: u64,
        /// Their bytes (without the virtio-net header).
        tx_bytes: u64,
        /// Frames delivered to the guest.
        rx_frames: u64,
        /// Their bytes.
        rx_bytes: u64,
        /// Frames from the guest not passed on (no backend, tap full).
        tx_dropped: u64,
        /// Frames for the guest not delivered (driver not up, no rx buffer).
        rx_dropped: u64,
    },
}

fn bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20))
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

impl fmt::Display for DeviceStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.io {
            IoCounters::Block {
                reads,
                read_bytes,
                writes,
                write_bytes,
                flushes,
                errors,
            } => write!(
                f,
                "virtio-blk {} ({}; {}): {reads} reads ({}), {writes} writes ({}), {flushes} flushes, {errors} errors",
                self.name,
                self.backend,
                self.notify,
                bytes(read_bytes),
                bytes(write_bytes)
            )?,
            IoCounters::Net {
                tx_frames,
                tx_bytes,
                rx_frames,
                rx_bytes,
                tx_dropped,
                rx_dropped,
            } => write!(
                f,
                "virtio-net {} ({}; {}): tx {tx_frames} frames ({}) {tx_dropped} dropped, rx {rx_frames} frames ({}) {rx_dropped} dropped",
                self.name,
                self.backend,
                self.notify,
                bytes(tx_bytes),
                bytes(rx_bytes)
            )?,
        }
        if let Some(why) = &self.broken {
            write!(f, "; device broken: {why}")?;
        }
        Ok(())
    }
}

/// The virtio devices of one running VM.
pub struct VirtioSet {
    slots: Vec<Arc<Mutex<MmioTransport>>>,
    stop: Option<EventFd>,
    threads: Vec<JoinHandle<()>>,
}

/// Something the I/O thread waits for.
struct Watch {
    fd: i32,
    what: WatchKind,
    transport: Arc<Mutex<MmioTransport>>,
}

enum WatchKind {
    /// The ioeventfd of a queue's notifications.
    Queue(usize, EventFd),
    /// Frames waiting on a tap.
    Tap,
}

/// Creates the devices of `cfg` for `vm`: opens their backends, registers
/// an irqfd per device and an ioeventfd per queue, and starts the I/O thread.
pub fn attach(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    cfg: &VirtioConfig,
) -> Result<VirtioSet, VirtioError> {
    if cfg.devices.len() > VIRTIO_MAX_DEVICES {
        return Err(VirtioError::TooMany(cfg.devices.len()));
    }
    let mut set = VirtioSet {
        slots: Vec::with_capacity(cfg.devices.len()),
        stop: None,
        threads: Vec::new(),
    };
    let mut watches = Vec::new();
    let mut names = DeviceNames::default();
    for (i, spec) in cfg.devices.iter().enumerate() {
        let Some((base, irq)) = layout::virtio_mmio_slot(i) else {
            return Err(VirtioError::TooMany(cfg.devices.len()));
        };
        let (name, device, tap_fd): (String, Box<dyn VirtioDevice>, Option<i32>) = match spec {
            VirtioSpec::Disk { path, writable } => {
                let name = names.next_disk();
                let file = open_disk(path, *writable)?;
                let dev = block::Block::new(name.clone(), file, *writable).map_err(|e| {
                    VirtioError::Host {
                        name: name.clone(),
                        what: format!("cannot read the size of {}: {e}", path.display()),
                    }
                })?;
                (name, Box::new(dev), None)
            }
            VirtioSpec::Net { tap } => {
                let name = names.next_net();
                let tap = tap.as_deref().map(tap::Tap::open).transpose()?;
                let dev = net::Net::new(name.clone(), i as u8, tap);
                let fd = dev.tap_fd();
                (name, Box::new(dev), fd)
            }
        };
        let host = |what: String| VirtioError::Host {
            name: name.clone(),
            what,
        };
        let queues = device.queue_max_sizes().len();
        let irqfd = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| host(format!("eventfd: {e}")))?;
        vm.register_irqfd(&irqfd, irq)
            .map_err(|source| VirtioError::Kvm {
                what: "KVM_IRQFD",
                name: name.clone(),
                source,
            })?;
        let transport = Arc::new(Mutex::new(
            MmioTransport::new(device, mem.clone(), irqfd)
                .map_err(|e| host(format!("queue set-up: {e}")))?,
        ));
        let notify = IoEventAddress::Mmio(
            base + u64::from(virtio_bindings::virtio_mmio::VIRTIO_MMIO_QUEUE_NOTIFY),
        );
        let mut registered = 0;
        for q in 0..queues {
            let evt =
                EventFd::new(libc::EFD_NONBLOCK).map_err(|e| host(format!("eventfd: {e}")))?;
            // Without it (refused by KVM) the MMIO exit serves the notification.
            if vm.register_ioevent(&evt, &notify, q as u32).is_ok() {
                registered += 1;
                watches.push(Watch {
                    fd: std::os::fd::AsRawFd::as_raw_fd(&evt),
                    what: WatchKind::Queue(q, evt),
                    transport: transport.clone(),
                });
            }
        }
        if registered == queues {
            if let Ok(mut t) = transport.lock() {
                t.set_notified_by_ioeventfd();
            }
        }
        if let Some(fd) = tap_fd {
            watches.push(Watch {
                fd,
                what: WatchKind::Tap,
                transport: transport.clone(),
            });
        }
        set.slots.push(transport);
    }
    if !watches.is_empty() {
        let host = |what: String| VirtioError::Host {
            name: "I/O thread".into(),
            what,
        };
        let stop = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| host(format!("eventfd: {e}")))?;
        let theirs = stop
            .try_clone()
            .map_err(|e| host(format!("eventfd: {e}")))?;
        set.stop = Some(stop);
        let handle = std::thread::Builder::new()
            .name("virtio-io".into())
            .spawn(move || io_loop(&watches, &theirs))
            .map_err(|e| host(format!("cannot start it: {e}")))?;
        set.threads.push(handle);
    }
    Ok(set)
}

/// The I/O thread: waits for queue notifications and tap frames (or the
/// stop signal) and hands them to their devices.
fn io_loop(watches: &[Watch], stop: &EventFd) {
    use std::os::fd::AsRawFd;
    let mut fds: Vec<libc::pollfd> = watches
        .iter()
        .map(|w| w.fd)
        .chain(std::iter::once(stop.as_raw_fd()))
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let Some(stop_index) = fds.len().checked_sub(1) else {
        return;
    };
    loop {
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds for the whole
        // call; every fd stays open: the eventfds are owned by `watches`, the
        // taps by their devices (kept alive by `watches`' transports), `stop`
        // is borrowed for this function.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 1000) };
        if r < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[stop_index].revents != 0 {
            return;
        }
        for (w, p) in watches.iter().zip(fds.iter_mut()) {
            if p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                // A tap that went away: stop watching it.
                p.fd = -1;
                continue;
            }
            if p.revents & libc::POLLIN == 0 {
                continue;
            }
            let Ok(mut t) = w.transport.lock() else {
                return;
            };
            match &w.what {
                WatchKind::Queue(q, evt) => {
                    // Resets the counter; several notifications mean one pass.
                    let _ = evt.read();
                    t.notify(*q);
                }
                WatchKind::Tap => t.backend_event(),
            }
        }
    }
}

impl VirtioSet {
    /// No devices.
    pub fn empty() -> Self {
        VirtioSet {
            slots: Vec::new(),
            stop: None,
            threads: Vec::new(),
        }
    }

    fn slot(&self, addr: u64) -> Option<(&Mutex<MmioTransport>, u64)> {
        let rel = addr.checked_sub(VIRTIO_MMIO_START)?;
        let index = usize::try_from(rel / VIRTIO_MMIO_SIZE).ok()?;
        let slot = self.slots.get(index)?;
        Some((slot, rel % VIRTIO_MMIO_SIZE))
    }

    /// An MMIO read; false when no virtio device lives at `addr`.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) -> bool {
        let Some((slot, offset)) = self.slot(addr) else {
            return false;
        };
        match slot.lock() {
            Ok(mut t) => t.read(offset, data),
            Err(_) => data.fill(0xff),
        }
        true
    }

    /// An MMIO write; false when no virtio device lives at `addr`.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) -> bool {
        let Some((slot, offset)) = self.slot(addr) else {
            return false;
        };
        if let Ok(mut t) = slot.lock() {
            t.write(offset, data);
        }
        true
    }

    /// What each device did so far, in slot order.
    pub fn stats(&self) -> Vec<DeviceStats> {
        self.slots
            .iter()
            .filter_map(|s| s.lock().ok().map(|t| t.stats()))
            .collect()
    }
}

impl Drop for VirtioSet {
    fn drop(&mut self) {
        if let Some(stop) = &self.stop {
            let _ = stop.write(1);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn disks_nets_and_root_become_a_command_line() {
        let c = VirtioConfig::parse(
            &s(&["a.img", "b.img,rw"]),
            &s(&["", "tap=tap0"]),
            Some("/dev/vdb"),
        )
        .expect("valid");
        assert_eq!(c.devices.len(), 4);
        assert_eq!(
            c.devices[1],
            VirtioSpec::Disk {
                path: "b.img".into(),
                writable: true
            }
        );
        assert_eq!(
            c.devices[3],
            VirtioSpec::Net {
                tap: Some("tap0".into())
            }
        );
        assert_eq!(
            c.cmdline(),
            "virtio_mmio.device=4K@0xd0001000:5 virtio_mmio.device=4K@0xd0002000:6 \
             virtio_mmio.device=4K@0xd0003000:7 virtio_mmio.device=4K@0xd0004000:8 \
             root=/dev/vdb rootfstype=ext4 rw"
        );
        assert_eq!(
            c.describe(),
            "vda=a.img vdb=b.img,rw net0=none net1=tap:tap0"
        );
        let ro = VirtioConfig::parse(&s(&["a.img"]), &[], Some("/dev/vda")).expect("valid");
        assert!(ro.cmdline().ends_with("root=/dev/vda rootfstype=ext4 ro"));
        assert_eq!(VirtioConfig::default().cmdline(), "");
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(matches!(
            VirtioConfig::parse(&s(&["x,wr"]), &[], None),
            Err(VirtioError::BadDiskArg(_))
        ));
        assert!(matches!(
            VirtioConfig::parse(&s(&[",rw"]), &[], None),
            Err(VirtioError::BadDiskArg(_))
        ));
        assert!(matches!(
            VirtioConfig::parse(&[], &s(&["bzImage"]), None),
            Err(VirtioError::BadNetArg(_))
        ));
        assert!(matches!(
            VirtioConfig::parse(&[], &s(&["tap="]), None),
            Err(VirtioError::BadNetArg(_))
        ));
        assert!(matches!(
            VirtioConfig::parse(&s(&["a"]), &[], Some("/dev/vdb")),
            Err(VirtioError::NoSuchRoot { .. })
        ));
        let many = vec![String::new(); VIRTIO_MAX_DEVICES + 1];
        let e = VirtioConfig::parse(&[], &many, None).expect_err("too many");
        assert!(e.to_string().contains("at most 19"), "{e}");
        assert!(VirtioConfig::parse(&[], &many[1..], None).is_ok());
    }

    #[test]
    fn stats_read_as_one_line() {
        let d = DeviceStats {
            name: "vda".into(),
            backend: "ro".into(),
            notify: "ioeventfd",
            io: IoCounters::Block {
                reads: 3,
                read_bytes: 3 << 10,
                writes: 0,
                write_bytes: 0,
                flushes: 0,
                errors: 0,
            },
            broken: Some("queue 0: malformed".into()),
        };
        assert_eq!(
            d.to_string(),
            "virtio-blk vda (ro; ioeventfd): 3 reads (3.0 KiB), 0 writes (0 B), 0 flushes, 0 errors; device broken: queue 0: malformed"
        );
    }
}
