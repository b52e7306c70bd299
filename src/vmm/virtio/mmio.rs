//! The virtio-mmio transport (virtio 1.2, section 4.2, "version 2" register
//! layout): the registers a driver reads and writes to find a device,
//! negotiate features and set up its queues, and the interrupt it raises.
//!
//! One transport wraps one [`VirtioDevice`]. The queues themselves are
//! rust-vmm's `virtio_queue::Queue`; the device only sees them when the
//! driver notifies one (or when its backend has something, e.g. a frame on
//! a tap). Everything the driver writes is untrusted: bad register values are
//! ignored, bad queue set-ups and malformed descriptor chains mark the device
//! broken (DEVICE_NEEDS_RESET), and the VMM carries on.

use std::sync::atomic::{AtomicU32, Ordering};

use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
};
use virtio_bindings::virtio_mmio::{
    VIRTIO_MMIO_CONFIG_GENERATION, VIRTIO_MMIO_DEVICE_FEATURES, VIRTIO_MMIO_DEVICE_FEATURES_SEL,
    VIRTIO_MMIO_DEVICE_ID, VIRTIO_MMIO_DRIVER_FEATURES, VIRTIO_MMIO_DRIVER_FEATURES_SEL,
    VIRTIO_MMIO_INTERRUPT_ACK, VIRTIO_MMIO_INTERRUPT_STATUS, VIRTIO_MMIO_INT_CONFIG,
    VIRTIO_MMIO_INT_VRING, VIRTIO_MMIO_MAGIC_VALUE, VIRTIO_MMIO_QUEUE_AVAIL_HIGH,
    VIRTIO_MMIO_QUEUE_AVAIL_LOW, VIRTIO_MMIO_QUEUE_DESC_HIGH, VIRTIO_MMIO_QUEUE_DESC_LOW,
    VIRTIO_MMIO_QUEUE_NOTIFY, VIRTIO_MMIO_QUEUE_NUM, VIRTIO_MMIO_QUEUE_NUM_MAX,
    VIRTIO_MMIO_QUEUE_READY, VIRTIO_MMIO_QUEUE_SEL, VIRTIO_MMIO_QUEUE_USED_HIGH,
    VIRTIO_MMIO_QUEUE_USED_LOW, VIRTIO_MMIO_STATUS, VIRTIO_MMIO_VENDOR_ID, VIRTIO_MMIO_VERSION,
};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::queue::QueueFault;
use super::DeviceStats;

/// "virt" in little-endian: the first register of every virtio-mmio device.
const MMIO_MAGIC: u32 = 0x7472_6976;
/// The modern (virtio 1.x) register layout.
const MMIO_VERSION: u32 = 2;
/// Vendor ID reported to the guest ("BTRC").
const VENDOR_ID: u32 = 0x4352_5442;
/// Where the device-specific configuration space starts in the window.
const CONFIG_SPACE_OFFSET: u64 = 0x100;

/// A virtio device behind the MMIO transport: block, net.
pub trait VirtioDevice: Send {
    /// Virtio device type (1 = net, 2 = block).
    fn device_type(&self) -> u32;
    /// Feature bits the device offers (`VIRTIO_F_VERSION_1` is added by the transport).
    fn features(&self) -> u64;
    /// Largest size of each queue; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Reads device configuration space at `offset`; bytes past its end read as 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Handles a driver notification for queue `index`: consumes what the
    /// driver made available. Returns whether used buffers were added.
    fn process_queue(
        &mut self,
        index: usize,
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
    ) -> Result<bool, QueueFault>;
    /// Something arrived from the backend (e.g. a frame on a tap); `active`
    /// says whether the driver set the device up. Returns whether used
    /// buffers were added.
    fn backend_event(
        &mut self,
        _queues: &mut [Queue],
        _mem: &GuestMemoryMmap,
        _active: bool,
    ) -> Result<bool, QueueFault> {
        Ok(false)
    }
    /// The driver reset the device.
    fn reset(&mut self) {}
    /// What the device did, for the run's summary.
    fn stats(&self) -> DeviceStats;
}

/// One virtio-mmio device window.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    queues: Vec<Queue>,
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    status: u32,
    interrupt_status: AtomicU32,
    irq: EventFd,
    config_generation: u32,
    broken: Option<String>,
    /// The first reason the device broke, kept across driver resets for the summary.
    first_break: Option<String>,
    /// How queue notifications reach the device.
    notify_via: &'static str,
}

impl MmioTransport {
    /// A transport for `device`, raising `irq` (an irqfd) for the guest.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        irq: EventFd,
    ) -> Result<Self, virtio_queue::Error> {
        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&n| Queue::new(n))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MmioTransport {
            device,
            mem,
            queues,
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            status: 0,
            interrupt_status: AtomicU32::new(0),
            irq,
            config_generation: 0,
            broken: None,
            first_break: None,
            notify_via: "mmio exit",
        })
    }

    fn device_features(&self) -> u64 {
        self.device.features() | (1u64 << VIRTIO_F_VERSION_1)
    }

    fn active(&self) -> bool {
        self.broken.is_none() && self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0
    }

    fn selected(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Why the device stopped working, if it did.
    pub fn broken(&self) -> Option<&str> {
        self.broken.as_deref()
    }

    /// Says that queue notifications come through ioeventfds (for the summary).
    pub fn set_notified_by_ioeventfd(&mut self) {
        self.notify_via = "ioeventfd";
    }

    /// What the device did, with the reason it broke (if it ever did).
    pub fn stats(&self) -> DeviceStats {
        let mut s = self.device.stats();
        s.broken = self.first_break.clone();
        s.notify = self.notify_via;
        s
    }

    /// A read of `data.len()` bytes at `offset` into the window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset >= CONFIG_SPACE_OFFSET {
            self.device.read_config(offset - CONFIG_SPACE_OFFSET, data);
            return;
        }
        if data.len() != 4 {
            // Registers are 32 bits wide; other widths read as 0 (spec 4.2.2.2).
            return;
        }
        let v: u32 = match offset as u32 {
            VIRTIO_MMIO_MAGIC_VALUE => MMIO_MAGIC,
            VIRTIO_MMIO_VERSION => MMIO_VERSION,
            VIRTIO_MMIO_DEVICE_ID => self.device.device_type(),
            VIRTIO_MMIO_VENDOR_ID => VENDOR_ID,
            VIRTIO_MMIO_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device_features() as u32,
                1 => (self.device_features() >> 32) as u32,
                _ => 0,
            },
            VIRTIO_MMIO_QUEUE_NUM_MAX => self.selected().map_or(0, |q| u32::from(q.max_size())),
            VIRTIO_MMIO_QUEUE_READY => self.selected().map_or(0, |q| u32::from(q.ready())),
            VIRTIO_MMIO_INTERRUPT_STATUS => self.interrupt_status.load(Ordering::SeqCst),
            VIRTIO_MMIO_STATUS => self.status,
            VIRTIO_MMIO_CONFIG_GENERATION => self.config_generation,
            _ => 0,
        };
        data.copy_from_slice(&v.to_le_bytes());
    }

    /// A write of `data` at `offset` into the window.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE_OFFSET {
            // Neither block nor net has a writable configuration field we offer.
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return;
        };
        let v = u32::from_le_bytes(bytes);
        // Queue set-up is only allowed between FEATURES_OK and DRIVER_OK.
        let setting_up = self.status & VIRTIO_CONFIG_S_FEATURES_OK != 0
            && self.status & VIRTIO_CONFIG_S_DRIVER_OK == 0;
        match offset as u32 {
            VIRTIO_MMIO_DEVICE_FEATURES_SEL => self.device_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            VIRTIO_MMIO_DRIVER_FEATURES if self.status & VIRTIO_CONFIG_S_FEATURES_OK == 0 => {
                let offered = self.device_features();
                let v = u64::from(v);
                match self.driver_features_sel {
                    0 => {
                        self.driver_features =
                            (self.driver_features & !0xffff_ffff) | (v & offered & 0xffff_ffff)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | ((v << 32) & offered)
                    }
                    _ => {}
                }
            }
            VIRTIO_MMIO_QUEUE_SEL => self.queue_sel = v,
            VIRTIO_MMIO_QUEUE_NUM if setting_up => {
                if let Some(q) = self.selected() {
                    // An invalid size is refused by the queue (it keeps the old one);
                    // `is_valid` at DRIVER_OK catches a queue left unusable.
                    let _ = q.try_set_size(v as u16);
                }
            }
            VIRTIO_MMIO_QUEUE_READY if setting_up => {
                if let Some(q) = self.selected() {
                    q.set_ready(v == 1);
                }
            }
            VIRTIO_MMIO_QUEUE_DESC_LOW if setting_up => {
                if let Some(q) = self.selected() {
                    q.set_desc_table_address(Some(v), None);
                }
            }
            VIRTIO_MMIO_QUEUE_DESC_HIGH if setting_up => {
                if let Some(q) = self.selected() {
                    q.set_desc_table_address(None, Some(v));
                }
            }
            VIRTIO_MMIO_QUEUE_AVAIL_LOW if setting_up => {
                if let Some(q) = self.selected() {
                    q.set_avail_ring_address(Some(v), None);
                }
            }
            VIRTIO_MMIO_QUEUE_AVAIL_HIGH if setting_up => {
                if let Some(q) = self.selected() {
                    q.set_avail_ring_address(None, Some(v));
                }
            }
            VIRTIO_MMIO_QUEUE_USED_LOW if setting_up => {
                if let Some(q) = self.selected() {
                    q.set_used_ring_address(Some(v), None);
                }
            }
            VIRTIO_MMIO_QUEUE_USED_HIGH if setting_up => {
                if let Some(q) = self.selected() {
                    q.set_used_ring_address(None, Some(v));
                }
            }
            VIRTIO_MMIO_QUEUE_NOTIFY => self.notify(v as usize),
            VIRTIO_MMIO_INTERRUPT_ACK => {
                self.interrupt_status.fetch_and(!v, Ordering::SeqCst);
            }
            VIRTIO_MMIO_STATUS => self.set_status(v),
            _ => {}
        }
    }

    fn set_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        let old = self.status;
        // The driver may only add bits (spec 2.1.2); anything else is ignored.
        if v & old != old {
            return;
        }
        let added = v & !old;
        if added & VIRTIO_CONFIG_S_FEATURES_OK != 0
            && self.driver_features & (1u64 << VIRTIO_F_VERSION_1) == 0
        {
            // A legacy driver on a modern-only transport: refuse FEATURES_OK.
            self.status = v & !VIRTIO_CONFIG_S_FEATURES_OK;
            return;
        }
        self.status = v;
        if added & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            for (i, q) in self.queues.iter().enumerate() {
                if q.ready() && !q.is_valid(&self.mem) {
                    self.mark_broken(format!(
                        "queue {i}: rings outside guest memory or misaligned (desc {:#x}, avail {:#x}, used {:#x}, size {})",
                        q.desc_table(),
                        q.avail_ring(),
                        q.used_ring(),
                        q.size()
                    ));
                    return;
                }
            }
            // The backend may have been waiting for the device to come up.
            self.backend_event();
        }
    }

    fn reset(&mut self) {
        self.status = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.interrupt_status.store(0, Ordering::SeqCst);
        for q in &mut self.queues {
            q.reset();
        }
        self.broken = None;
        self.device.reset();
    }

    /// The driver made buffers available in queue `index`.
    pub fn notify(&mut self, index: usize) {
        if !self.active() || index >= self.queues.len() {
            return;
        }
        if !self.queues[index].ready() {
            return;
        }
        let r = self
            .device
            .process_queue(index, &mut self.queues, &self.mem);
        self.after(r);
    }

    /// The device's backend has something (called from the backend's thread).
    pub fn backend_event(&mut self) {
        let active = self.active();
        let r = self
            .device
            .backend_event(&mut self.queues, &self.mem, active);
        if active {
            self.after(r);
        }
    }

    fn after(&mut self, r: Result<bool, QueueFault>) {
        match r {
            Ok(true) => self.raise(VIRTIO_MMIO_INT_VRING),
            Ok(false) => {}
            Err(fault) => self.mark_broken(fault.to_string()),
        }
    }

    /// Stops the device for good (until the driver resets it) and tells the
    /// driver through DEVICE_NEEDS_RESET and a configuration interrupt.
    fn mark_broken(&mut self, why: String) {
        if self.first_break.is_none() {
            self.first_break = Some(why.clone());
        }
        if self.broken.is_none() {
            self.broken = Some(why);
        }
        self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
        self.config_generation = self.config_generation.wrapping_add(1);
        self.raise(VIRTIO_MMIO_INT_CONFIG);
    }

    fn raise(&self, bit: u32) {
        self.interrupt_status.fetch_or(bit, Ordering::SeqCst);
        // A failed irqfd write only loses an interrupt; the driver polls nothing
        // else, but there is nothing better to do from here.
        let _ = self.irq.write(1);
    }
}

/// Copies the part of `config` at `offset` into `data` (the rest stays 0).
pub(super) fn copy_config(config: &[u8], offset: u64, data: &mut [u8]) {
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if let Some(src) = config.get(start..) {
        let n = src.len().min(data.len());
        data[..n].copy_from_slice(&src[..n]);
    }
}
