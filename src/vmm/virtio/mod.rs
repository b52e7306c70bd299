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
mod config;
mod io_thread;
pub mod mmio;
pub mod net;
pub mod queue;
mod stats;
pub mod tap;

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use kvm_ioctls::{IoEventAddress, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::layout::{self, VIRTIO_MAX_DEVICES, VIRTIO_MMIO_SIZE, VIRTIO_MMIO_START};
use config::{open_disk, DeviceNames};
pub use config::{VirtioConfig, VirtioSpec};
use io_thread::{io_loop, Watch, WatchKind};
use mmio::{MmioTransport, VirtioDevice};
pub use stats::{DeviceStats, IoCounters};

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

/// The virtio devices of one running VM.
pub struct VirtioSet {
    slots: Vec<Arc<Mutex<MmioTransport>>>,
    stop: Option<EventFd>,
    threads: Vec<JoinHandle<()>>,
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
