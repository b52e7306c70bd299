//! virtio-net: one rx and one tx queue, the link always up. Without a
//! backend, frames the guest sends are counted and dropped (enough for the
//! kernel's `ip=` configuration to run, which is what boots need); with a
//! tap, frames go both ways.

use std::io::Read;

use virtio_bindings::virtio_ids::VIRTIO_ID_NET;
use virtio_bindings::virtio_net::{VIRTIO_NET_F_MAC, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP};
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

use super::mmio::{copy_config, VirtioDevice};
use super::queue::{drain, Handled, QueueFault};
use super::tap::Tap;
use super::{DeviceStats, IoCounters};

/// `struct virtio_net_hdr_v1` (with `num_buffers`): what precedes every
/// frame in both directions once VIRTIO_F_VERSION_1 is negotiated.
pub const NET_HDR_LEN: usize = 12;
/// Largest frame handled: 64 KiB of payload plus an Ethernet header.
/// Bigger tx frames (impossible without the offload features we do not
/// offer) are dropped and counted.
pub const MAX_FRAME: usize = 65_536 + 14;
const QUEUE_SIZE: u16 = 256;
const RX: usize = 0;
const TX: usize = 1;
/// Frames taken from the tap per backend event, so one busy tap cannot
/// hold the device lock for long.
const RX_BATCH: usize = 64;

/// A virtio-net device.
pub struct Net {
    name: String,
    mac: [u8; 6],
    tap: Option<Tap>,
    counters: NetCounters,
    queue_sizes: [u16; 2],
    buf: Vec<u8>,
}

#[derive(Default, Clone, Copy)]
struct NetCounters {
    tx_frames: u64,
    tx_bytes: u64,
    rx_frames: u64,
    rx_bytes: u64,
    tx_dropped: u64,
    rx_dropped: u64,
}

impl Net {
    /// Device `index` (its MAC's last byte), named `name`, optionally on a tap.
    pub fn new(name: String, index: u8, tap: Option<Tap>) -> Self {
        Net {
            name,
            // Locally administered, unicast.
            mac: [0x06, 0x00, 0x0b, 0x7e, 0x00, index],
            tap,
            counters: NetCounters::default(),
            queue_sizes: [QUEUE_SIZE; 2],
            buf: vec![0; MAX_FRAME],
        }
    }

    /// The tap's fd, for the backend thread to poll.
    pub fn tap_fd(&self) -> Option<i32> {
        self.tap.as_ref().map(Tap::raw_fd)
    }

    fn transmit(
        &mut self,
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
    ) -> Result<bool, QueueFault> {
        let Net {
            tap, counters, buf, ..
        } = self;
        drain(queues, TX, mem, |chain| {
            let mut reader = chain.reader(mem).map_err(|e| format!("tx buffers: {e}"))?;
            let total = reader.available_bytes();
            let frame_len = total
                .checked_sub(NET_HDR_LEN)
                .ok_or_else(|| format!("tx chain of {total} bytes has no virtio-net header"))?;
            let mut hdr = [0u8; NET_HDR_LEN];
            reader
                .read_exact(&mut hdr)
                .map_err(|e| format!("tx header: {e}"))?;
            counters.tx_frames = counters.tx_frames.saturating_add(1);
            counters.tx_bytes = counters.tx_bytes.saturating_add(frame_len as u64);
            match tap {
                Some(tap) if frame_len <= buf.len() => {
                    reader
                        .read_exact(&mut buf[..frame_len])
                        .map_err(|e| format!("tx frame: {e}"))?;
                    if tap.send(&buf[..frame_len]).is_err() {
                        counters.tx_dropped = counters.tx_dropped.saturating_add(1);
                    }
                }
                _ => counters.tx_dropped = counters.tx_dropped.saturating_add(1),
            }
            Ok(Handled::Used(0))
        })
    }

    /// Puts `frame` into the next rx buffer; false when there was none.
    fn receive(
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
        frame: &[u8],
        counters: &mut NetCounters,
    ) -> Result<bool, QueueFault> {
        let mut delivered = false;
        let notify = drain(queues, RX, mem, |chain| {
            if delivered {
                return Ok(Handled::Later);
            }
            delivered = true;
            let mut writer = chain.writer(mem).map_err(|e| format!("rx buffers: {e}"))?;
            if writer.available_bytes() < NET_HDR_LEN + frame.len() {
                // Too small for this frame: hand the buffer back empty.
                counters.rx_dropped = counters.rx_dropped.saturating_add(1);
                return Ok(Handled::Used(0));
            }
            let mut hdr = [0u8; NET_HDR_LEN];
            hdr[10] = 1; // num_buffers = 1 (le16)
            use std::io::Write;
            writer
                .write_all(&hdr)
                .and_then(|()| writer.write_all(frame))
                .map_err(|e| format!("rx write: {e}"))?;
            counters.rx_frames = counters.rx_frames.saturating_add(1);
            counters.rx_bytes = counters.rx_bytes.saturating_add(frame.len() as u64);
            let len = (NET_HDR_LEN + frame.len()) as u32;
            Ok(Handled::Used(len))
        })?;
        if !delivered {
            counters.rx_dropped = counters.rx_dropped.saturating_add(1);
        }
        Ok(notify)
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_NET
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_NET_F_MAC) | (1 << VIRTIO_NET_F_STATUS)
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_net_config: u8 mac[6]; le16 status.
        let mut config = [0u8; 8];
        config[..6].copy_from_slice(&self.mac);
        config[6..8].copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        copy_config(&config, offset, data);
    }

    fn process_queue(
        &mut self,
        index: usize,
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
    ) -> Result<bool, QueueFault> {
        match index {
            TX => self.transmit(queues, mem),
            // New rx buffers: frames are delivered as they arrive, none are kept.
            _ => Ok(false),
        }
    }

    fn backend_event(
        &mut self,
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
        active: bool,
    ) -> Result<bool, QueueFault> {
        let Net {
            tap, counters, buf, ..
        } = self;
        let Some(tap) = tap.as_ref() else {
            return Ok(false);
        };
        let mut notify = false;
        for _ in 0..RX_BATCH {
            let n = match tap.recv(buf) {
                Ok(Some(n)) => n,
                Ok(None) | Err(_) => break,
            };
            if !active {
                counters.rx_dropped = counters.rx_dropped.saturating_add(1);
                continue;
            }
            notify |= Self::receive(queues, mem, &buf[..n], counters)?;
        }
        Ok(notify)
    }

    fn stats(&self) -> DeviceStats {
        let c = self.counters;
        DeviceStats {
            name: self.name.clone(),
            backend: match &self.tap {
                Some(t) => format!("tap {}", t.name()),
                None => "no backend".to_string(),
            },
            io: IoCounters::Net {
                tx_frames: c.tx_frames,
                tx_bytes: c.tx_bytes,
                rx_frames: c.rx_frames,
                rx_bytes: c.rx_bytes,
                tx_dropped: c.tx_dropped,
                rx_dropped: c.rx_dropped,
            },
            notify: "",
            broken: None,
        }
    }
}
