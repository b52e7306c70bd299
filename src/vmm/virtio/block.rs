//! virtio-blk backed by a raw image file: reads, writes and flushes go to
//! the file; every request is bounds-checked against the disk's size and
//! the chain's buffers against guest memory before any byte moves.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK,
    VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT,
};
use virtio_bindings::virtio_ids::VIRTIO_ID_BLOCK;
use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

use super::mmio::{copy_config, VirtioDevice};
use super::queue::{drain, Chain, Handled, QueueFault};
use super::{DeviceStats, IoCounters};

/// Bytes per sector in the virtio-blk protocol.
pub const SECTOR_SIZE: u64 = 512;
/// Requests the single queue holds.
const QUEUE_SIZE: u16 = 256;
/// Bytes copied per step between the file and guest memory.
const CHUNK: usize = 64 * 1024;
/// Request header: type (u32), reserved (u32), sector (u64).
const HEADER_LEN: usize = 16;

/// A virtio-blk device.
pub struct Block {
    name: String,
    file: File,
    writable: bool,
    capacity_sectors: u64,
    counters: BlockCounters,
    queue_sizes: [u16; 1],
    buf: Vec<u8>,
}

#[derive(Default, Clone, Copy)]
struct BlockCounters {
    reads: u64,
    read_bytes: u64,
    writes: u64,
    write_bytes: u64,
    flushes: u64,
    errors: u64,
}

impl Block {
    /// A device named `name` (e.g. "vda") over `file`; `writable` lets the
    /// guest write (the file must have been opened read-write).
    pub fn new(name: String, file: File, writable: bool) -> std::io::Result<Self> {
        // Seeking (not metadata) also sizes a block device given as the image.
        let len = (&file).seek(SeekFrom::End(0))?;
        Ok(Block {
            name,
            file,
            writable,
            capacity_sectors: len / SECTOR_SIZE,
            counters: BlockCounters::default(),
            queue_sizes: [QUEUE_SIZE],
            buf: vec![0; CHUNK],
        })
    }

    /// Handles one request; the error string is a malformed chain.
    fn request(&mut self, chain: Chain<'_>, mem: &GuestMemoryMmap) -> Result<Handled, String> {
        let mut reader = chain
            .clone()
            .reader(mem)
            .map_err(|e| format!("readable buffers: {e}"))?;
        let mut writer = chain
            .writer(mem)
            .map_err(|e| format!("writable buffers: {e}"))?;
        let mut header = [0u8; HEADER_LEN];
        reader
            .read_exact(&mut header)
            .map_err(|_| "request header shorter than 16 bytes".to_string())?;
        let kind = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let mut sector = [0u8; 8];
        sector.copy_from_slice(&header[8..16]);
        let sector = u64::from_le_bytes(sector);
        let data_len = writer
            .available_bytes()
            .checked_sub(1)
            .ok_or_else(|| "no writable status byte".to_string())?;
        let mut status_writer = writer
            .split_at(data_len)
            .map_err(|e| format!("status byte: {e}"))?;
        let (status, written) = match kind {
            VIRTIO_BLK_T_IN => match self.read_into(sector, data_len, &mut writer) {
                Ok(n) => {
                    self.counters.reads = self.counters.reads.saturating_add(1);
                    self.counters.read_bytes = self.counters.read_bytes.saturating_add(n as u64);
                    (VIRTIO_BLK_S_OK, n)
                }
                Err(()) => (VIRTIO_BLK_S_IOERR, 0),
            },
            VIRTIO_BLK_T_OUT => {
                let len = reader.available_bytes();
                match self.write_from(sector, len, &mut reader) {
                    Ok(()) => {
                        self.counters.writes = self.counters.writes.saturating_add(1);
                        self.counters.write_bytes =
                            self.counters.write_bytes.saturating_add(len as u64);
                        (VIRTIO_BLK_S_OK, 0)
                    }
                    Err(()) => (VIRTIO_BLK_S_IOERR, 0),
                }
            }
            VIRTIO_BLK_T_FLUSH => {
                self.counters.flushes = self.counters.flushes.saturating_add(1);
                if !self.writable || self.file.sync_data().is_ok() {
                    (VIRTIO_BLK_S_OK, 0)
                } else {
                    (VIRTIO_BLK_S_IOERR, 0)
                }
            }
            VIRTIO_BLK_T_GET_ID => {
                let mut id = [0u8; VIRTIO_BLK_ID_BYTES as usize];
                let text = format!("boottrace-{}", self.name);
                let n = text.len().min(id.len());
                id[..n].copy_from_slice(&text.as_bytes()[..n]);
                let n = id.len().min(data_len);
                match writer.write_all(&id[..n]) {
                    Ok(()) => (VIRTIO_BLK_S_OK, n),
                    Err(_) => (VIRTIO_BLK_S_IOERR, 0),
                }
            }
            _ => (VIRTIO_BLK_S_UNSUPP, 0),
        };
        if status != VIRTIO_BLK_S_OK {
            self.counters.errors = self.counters.errors.saturating_add(1);
        }
        status_writer
            .write_all(&[status as u8])
            .map_err(|e| format!("status byte: {e}"))?;
        let used = u32::try_from(written + 1).map_err(|_| "request too large".to_string())?;
        Ok(Handled::Used(used))
    }

    /// Byte offset of `sector` when `len` bytes from there lie on the disk.
    fn span(&self, sector: u64, len: usize) -> Option<u64> {
        let start = sector.checked_mul(SECTOR_SIZE)?;
        let end = start.checked_add(len as u64)?;
        (end <= self.capacity_sectors.checked_mul(SECTOR_SIZE)?).then_some(start)
    }

    fn read_into(
        &mut self,
        sector: u64,
        len: usize,
        out: &mut virtio_queue::Writer<'_>,
    ) -> Result<usize, ()> {
        let mut pos = self.span(sector, len).ok_or(())?;
        let mut left = len;
        while left > 0 {
            let n = left.min(self.buf.len());
            self.file
                .read_exact_at(&mut self.buf[..n], pos)
                .map_err(|_| ())?;
            out.write_all(&self.buf[..n]).map_err(|_| ())?;
            pos += n as u64;
            left -= n;
        }
        Ok(len)
    }

    fn write_from(
        &mut self,
        sector: u64,
        len: usize,
        input: &mut virtio_queue::Reader<'_>,
    ) -> Result<(), ()> {
        if !self.writable {
            return Err(());
        }
        let mut pos = self.span(sector, len).ok_or(())?;
        let mut left = len;
        while left > 0 {
            let n = left.min(self.buf.len());
            input.read_exact(&mut self.buf[..n]).map_err(|_| ())?;
            self.file
                .write_all_at(&self.buf[..n], pos)
                .map_err(|_| ())?;
            pos += n as u64;
            left -= n;
        }
        Ok(())
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn features(&self) -> u64 {
        if self.writable {
            1 << VIRTIO_BLK_F_FLUSH
        } else {
            1 << VIRTIO_BLK_F_RO
        }
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // struct virtio_blk_config starts with `le64 capacity` (in sectors);
        // nothing else is offered.
        let config = self.capacity_sectors.to_le_bytes();
        copy_config(&config, offset, data);
    }

    fn process_queue(
        &mut self,
        index: usize,
        queues: &mut [Queue],
        mem: &GuestMemoryMmap,
    ) -> Result<bool, QueueFault> {
        drain(queues, index, mem, |chain| self.request(chain, mem))
    }

    fn stats(&self) -> DeviceStats {
        let c = self.counters;
        DeviceStats {
            name: self.name.clone(),
            backend: if self.writable { "rw" } else { "ro" }.to_string(),
            io: IoCounters::Block {
                reads: c.reads,
                read_bytes: c.read_bytes,
                writes: c.writes,
                write_bytes: c.write_bytes,
                flushes: c.flushes,
                errors: c.errors,
            },
            notify: "",
            broken: None,
        }
    }
}
