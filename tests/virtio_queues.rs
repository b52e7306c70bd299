//! The block and net devices driven through their virtio-mmio registers
//! with queues in real guest memory (no KVM): well-formed requests are
//! served exactly (bytes, status, used ring, interrupt); garbage — random
//! and mutated descriptor tables and avail rings — must not panic, every
//! notification must finish quickly, and a malformed queue must mark the
//! device broken rather than be served.

mod virtio_common;

use std::time::{Duration, Instant};

use boottrace::vmm::virtio::block::Block;
use boottrace::vmm::virtio::mmio::{MmioTransport, VirtioDevice};
use boottrace::vmm::virtio::net::Net;
use boottrace::vmm::virtio::IoCounters;
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
};
use virtio_bindings::virtio_mmio::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

const MEM: usize = 1 << 20;
const QSIZE: u16 = 16;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const DATA: u64 = 0x10000;

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn w32(t: &mut MmioTransport, reg: u32, v: u32) {
    t.write(u64::from(reg), &v.to_le_bytes());
}

fn r32(t: &mut MmioTransport, reg: u32) -> u32 {
    let mut b = [0u8; 4];
    t.read(u64::from(reg), &mut b);
    u32::from_le_bytes(b)
}

/// The driver's side of set-up, as Linux does it; ring addresses from `addrs`.
fn set_up(t: &mut MmioTransport, queues: u32, addrs: [u64; 3], size: u32) {
    w32(t, VIRTIO_MMIO_STATUS, 0);
    w32(t, VIRTIO_MMIO_STATUS, VIRTIO_CONFIG_S_ACKNOWLEDGE);
    w32(
        t,
        VIRTIO_MMIO_STATUS,
        VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER,
    );
    for sel in 0..2 {
        w32(t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, sel);
        let f = r32(t, VIRTIO_MMIO_DEVICE_FEATURES);
        w32(t, VIRTIO_MMIO_DRIVER_FEATURES_SEL, sel);
        w32(t, VIRTIO_MMIO_DRIVER_FEATURES, f);
    }
    let s = VIRTIO_CONFIG_S_ACKNOWLEDGE | VIRTIO_CONFIG_S_DRIVER | VIRTIO_CONFIG_S_FEATURES_OK;
    w32(t, VIRTIO_MMIO_STATUS, s);
    assert_eq!(r32(t, VIRTIO_MMIO_STATUS), s, "FEATURES_OK accepted");
    for q in 0..queues {
        // Each queue gets its own 0x400-byte slice of the ring pages.
        let off = u64::from(q) * 0x400;
        w32(t, VIRTIO_MMIO_QUEUE_SEL, q);
        assert!(r32(t, VIRTIO_MMIO_QUEUE_NUM_MAX) >= size);
        w32(t, VIRTIO_MMIO_QUEUE_NUM, size);
        for (i, (lo, hi)) in [
            (VIRTIO_MMIO_QUEUE_DESC_LOW, VIRTIO_MMIO_QUEUE_DESC_HIGH),
            (VIRTIO_MMIO_QUEUE_AVAIL_LOW, VIRTIO_MMIO_QUEUE_AVAIL_HIGH),
            (VIRTIO_MMIO_QUEUE_USED_LOW, VIRTIO_MMIO_QUEUE_USED_HIGH),
        ]
        .into_iter()
        .enumerate()
        {
            let a = addrs[i].wrapping_add(off);
            w32(t, lo, a as u32);
            w32(t, hi, (a >> 32) as u32);
        }
        w32(t, VIRTIO_MMIO_QUEUE_READY, 1);
    }
    w32(t, VIRTIO_MMIO_STATUS, s | VIRTIO_CONFIG_S_DRIVER_OK);
}

fn write_desc(
    mem: &GuestMemoryMmap,
    table: u64,
    i: u16,
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
) {
    let mut d = [0u8; 16];
    d[..8].copy_from_slice(&addr.to_le_bytes());
    d[8..12].copy_from_slice(&len.to_le_bytes());
    d[12..14].copy_from_slice(&flags.to_le_bytes());
    d[14..16].copy_from_slice(&next.to_le_bytes());
    mem.write_slice(&d, GuestAddress(table + u64::from(i) * 16))
        .expect("descriptor in memory");
}

/// Fills queue `q`'s rings with a plausible request, then mutates it
/// (`garbage`: random bytes over everything instead).
fn fill_queue(mem: &GuestMemoryMmap, rng: &mut Rng, q: u64, garbage: bool) {
    let desc = DESC + q * 0x400;
    let avail = AVAIL + q * 0x400;
    if garbage {
        let mut junk = vec![0u8; 0x400];
        for b in junk.iter_mut() {
            *b = rng.next() as u8;
        }
        mem.write_slice(&junk[..16 * usize::from(QSIZE)], GuestAddress(desc))
            .expect("write");
        mem.write_slice(&junk[..4 + 2 * usize::from(QSIZE)], GuestAddress(avail))
            .expect("write");
        return;
    }
    // A chain of up to 4 descriptors: header (readable), data, status (writable).
    let n = 1 + rng.below(4) as u16;
    for i in 0..n {
        let len = match rng.below(4) {
            0 => 16,
            1 => 512,
            2 => 1,
            _ => rng.below(8192) as u32,
        };
        let addr = DATA + rng.below((MEM as u64 - DATA) / 2);
        let mut flags = if i + 1 < n { 1 } else { 0 }; // NEXT
        if i > 0 && rng.below(2) == 0 {
            flags |= 2; // WRITE
        }
        write_desc(mem, desc, i, addr, len, flags, i + 1);
    }
    // The header: a read or write of some sector.
    let mut hdr = [0u8; 16];
    hdr[..4].copy_from_slice(&(rng.below(10) as u32).to_le_bytes());
    hdr[8..].copy_from_slice(&rng.below(64).to_le_bytes());
    let first: u64 = mem.read_obj(GuestAddress(desc)).expect("read");
    let _ = mem.write_slice(&hdr, GuestAddress(first));
    let old_idx: u16 = mem.read_obj(GuestAddress(avail + 2)).expect("read");
    let slot = u64::from(old_idx % QSIZE);
    mem.write_obj(0u16, GuestAddress(avail + 4 + 2 * slot))
        .expect("write");
    mem.write_obj(old_idx.wrapping_add(1), GuestAddress(avail + 2))
        .expect("write");
    // Mutations: a few bytes anywhere in the descriptors or the avail ring.
    for _ in 0..rng.below(4) {
        let target = if rng.below(2) == 0 {
            desc + rng.below(16 * u64::from(QSIZE))
        } else {
            avail + rng.below(4 + 2 * u64::from(QSIZE))
        };
        mem.write_obj(rng.next() as u8, GuestAddress(target))
            .expect("write");
    }
}

fn run(device: Box<dyn VirtioDevice>, queue: u32, queues: u32, seed: u64) -> (u32, u32) {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).expect("memory");
    let irq = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
    let mut t = MmioTransport::new(device, mem.clone(), irq).expect("transport");
    let mut rng = Rng(seed);
    let (mut broken, mut served) = (0, 0);
    let start = Instant::now();
    for round in 0..3000 {
        // Sometimes the ring addresses themselves are garbage.
        let addrs = if rng.below(10) == 0 {
            [rng.next(), rng.next(), rng.next()]
        } else {
            [DESC, AVAIL, USED]
        };
        if round % 8 == 0 || t.broken().is_some() {
            mem.write_slice(&[0u8; 0x3000], GuestAddress(DESC))
                .expect("clear");
            set_up(&mut t, queues, addrs, u32::from(QSIZE));
        }
        let garbage = rng.below(3) == 0;
        fill_queue(&mem, &mut rng, u64::from(queue), garbage);
        let before = Instant::now();
        w32(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, queue);
        assert!(
            before.elapsed() < Duration::from_secs(2),
            "one notification took {:?} (round {round})",
            before.elapsed()
        );
        if t.broken().is_some() {
            broken += 1;
            assert_ne!(
                r32(&mut t, VIRTIO_MMIO_STATUS) & VIRTIO_CONFIG_S_NEEDS_RESET,
                0,
                "a broken device says so"
            );
            assert_ne!(
                r32(&mut t, VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_CONFIG,
                0
            );
        } else {
            served += 1;
        }
        // Random register traffic must not hurt either.
        let reg = (rng.below(0x120) & !3) as u32;
        if reg != VIRTIO_MMIO_STATUS {
            w32(&mut t, reg, rng.next() as u32);
        }
        let mut odd = [0u8; 3];
        t.read(rng.below(0x1000), &mut odd);
    }
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
    let stats = t.stats();
    match stats.io {
        IoCounters::Block {
            reads,
            writes,
            errors,
            ..
        } => {
            assert!(
                reads + writes + errors > 0,
                "no request got through: {stats}"
            )
        }
        IoCounters::Net { tx_frames, .. } => {
            assert!(tx_frames > 0, "no frame got through: {stats}")
        }
    }
    (broken, served)
}

#[test]
fn block_queue_survives_garbage_descriptors() {
    let mut disk = tempfile::tempfile().expect("tempfile");
    std::io::Write::write_all(&mut disk, &vec![0xa5u8; 64 * 512]).expect("write disk");
    let dev = Block::new("vda".into(), disk, true).expect("block device");
    let (broken, served) = run(Box::new(dev), 0, 1, 0x1234_5678_9abc_def1);
    assert!(broken > 0, "garbage never marked the device broken");
    assert!(served > 0, "no request was served");
}

#[test]
fn net_tx_queue_survives_garbage_descriptors() {
    let dev = Net::new("net0".into(), 0, None);
    let (broken, served) = run(Box::new(dev), 1, 2, 0x0fed_cba9_8765_4321);
    assert!(broken > 0, "garbage never marked the device broken");
    assert!(served > 0, "no frame was served");
}

#[test]
fn a_queue_outside_memory_breaks_the_device_at_driver_ok() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).expect("memory");
    let disk = tempfile::tempfile().expect("tempfile");
    let dev = Block::new("vda".into(), disk, false).expect("block device");
    let irq = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
    let mut t = MmioTransport::new(Box::new(dev), mem, irq).expect("transport");
    set_up(&mut t, 1, [DESC, AVAIL, 0xffff_ffff_0000], u32::from(QSIZE));
    let why = t.broken().expect("device marked broken").to_string();
    assert!(why.contains("queue 0"), "{why}");
    assert!(t.stats().to_string().contains("device broken"));
    // A reset brings it back.
    set_up(&mut t, 1, [DESC, AVAIL, USED], u32::from(QSIZE));
    assert!(t.broken().is_none());
    // The summary still tells that it broke once.
    assert!(t.stats().to_string().contains("device broken: queue 0"));
}

/// One request through queue 0 of a freshly set-up block device: header,
/// optional data buffer (`data_len`, readable for writes, writable
/// otherwise), status byte. Returns (status, used length, data read back).
struct BlockRig {
    mem: GuestMemoryMmap,
    t: MmioTransport,
    irq: EventFd,
    next: u16,
}

impl BlockRig {
    fn new(disk: std::fs::File, writable: bool) -> BlockRig {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).expect("memory");
        let irq = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
        let dev = Block::new("vda".into(), disk, writable).expect("block device");
        let mut t = MmioTransport::new(Box::new(dev), mem.clone(), irq.try_clone().expect("dup"))
            .expect("transport");
        set_up(&mut t, 1, [DESC, AVAIL, USED], u32::from(QSIZE));
        assert!(t.broken().is_none());
        BlockRig {
            mem,
            t,
            irq,
            next: 0,
        }
    }

    fn request(
        &mut self,
        kind: u32,
        sector: u64,
        data: Option<(&[u8], bool)>,
    ) -> (u8, u32, Vec<u8>) {
        let (hdr_at, data_at, status_at) = (0x10000u64, 0x20000u64, 0x30000u64);
        let mut hdr = [0u8; 16];
        hdr[..4].copy_from_slice(&kind.to_le_bytes());
        hdr[8..].copy_from_slice(&sector.to_le_bytes());
        self.mem
            .write_slice(&hdr, GuestAddress(hdr_at))
            .expect("write");
        self.mem
            .write_obj(0xeeu8, GuestAddress(status_at))
            .expect("write");
        write_desc(&self.mem, DESC, 0, hdr_at, 16, 1, 1);
        let mut next = 1;
        if let Some((bytes, device_writes)) = data {
            self.mem
                .write_slice(bytes, GuestAddress(data_at))
                .expect("write");
            let flags = if device_writes { 1 | 2 } else { 1 };
            write_desc(&self.mem, DESC, 1, data_at, bytes.len() as u32, flags, 2);
            next = 2;
        }
        write_desc(&self.mem, DESC, next, status_at, 1, 2, 0);
        let slot = u64::from(self.next % QSIZE);
        self.mem
            .write_obj(0u16, GuestAddress(AVAIL + 4 + 2 * slot))
            .expect("write");
        self.next = self.next.wrapping_add(1);
        self.mem
            .write_obj(self.next, GuestAddress(AVAIL + 2))
            .expect("write");
        w32(&mut self.t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
        assert!(self.t.broken().is_none(), "{:?}", self.t.broken());
        let used_idx: u16 = self.mem.read_obj(GuestAddress(USED + 2)).expect("read");
        assert_eq!(used_idx, self.next, "the request was put in the used ring");
        let used_len: u32 = self
            .mem
            .read_obj(GuestAddress(USED + 4 + 8 * slot + 4))
            .expect("read");
        assert_eq!(self.irq.read().expect("an interrupt was raised"), 1);
        assert_ne!(
            r32(&mut self.t, VIRTIO_MMIO_INTERRUPT_STATUS) & VIRTIO_MMIO_INT_VRING,
            0
        );
        w32(
            &mut self.t,
            VIRTIO_MMIO_INTERRUPT_ACK,
            VIRTIO_MMIO_INT_VRING,
        );
        let status: u8 = self.mem.read_obj(GuestAddress(status_at)).expect("read");
        let mut back = vec![0u8; data.map_or(0, |(b, _)| b.len())];
        self.mem
            .read_slice(&mut back, GuestAddress(data_at))
            .expect("read");
        (status, used_len, back)
    }
}

fn disk_with_numbered_sectors(sectors: u8) -> (std::fs::File, tempfile::TempPath) {
    let mut f = tempfile::NamedTempFile::new().expect("tempfile");
    for i in 0..sectors {
        std::io::Write::write_all(&mut f, &[i; 512]).expect("write");
    }
    let (file, path) = f.into_parts();
    (file, path)
}

#[test]
fn block_requests_are_served_exactly() {
    let (_, path) = disk_with_numbered_sectors(64);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .expect("open rw");
    let mut rig = BlockRig::new(file, true);
    let mut cfg = [0u8; 8];
    rig.t.read(0x100, &mut cfg);
    assert_eq!(u64::from_le_bytes(cfg), 64, "capacity in sectors");

    // Read sectors 3 and 4.
    let (status, used, data) = rig.request(0, 3, Some((&[0u8; 1024], true)));
    assert_eq!((status, used), (0, 1025));
    assert!(data[..512].iter().all(|&b| b == 3) && data[512..].iter().all(|&b| b == 4));
    // Write sector 5, read it back from the file.
    let (status, used, _) = rig.request(1, 5, Some((&[0x77; 512], false)));
    assert_eq!((status, used), (0, 1));
    let on_disk = std::fs::read(&path).expect("read disk");
    assert!(on_disk[5 * 512..6 * 512].iter().all(|&b| b == 0x77));
    assert!(on_disk[6 * 512..7 * 512].iter().all(|&b| b == 6));
    // Flush, device id, past the end, unknown request.
    assert_eq!(rig.request(4, 0, None).0, 0);
    let (status, _, id) = rig.request(8, 0, Some((&[0u8; 20], true)));
    assert_eq!(status, 0);
    assert!(id.starts_with(b"boottrace-vda"), "{id:?}");
    assert_eq!(
        rig.request(0, 63, Some((&[0u8; 1024], true))).0,
        1,
        "read past the end: IOERR"
    );
    assert_eq!(
        rig.request(1, u64::MAX, Some((&[0u8; 512], false))).0,
        1,
        "sector overflow: IOERR"
    );
    assert_eq!(rig.request(99, 0, None).0, 2, "unknown request: UNSUPP");
    let stats = rig.t.stats().to_string();
    assert!(
        stats.contains("1 reads (1.0 KiB), 1 writes (512 B), 1 flushes, 3 errors"),
        "{stats}"
    );
}

#[test]
fn a_read_only_disk_refuses_writes() {
    let (_, path) = disk_with_numbered_sectors(8);
    let file = std::fs::File::open(&path).expect("open ro");
    let mut rig = BlockRig::new(file, false);
    w32(&mut rig.t, VIRTIO_MMIO_DEVICE_FEATURES_SEL, 0);
    let features = r32(&mut rig.t, VIRTIO_MMIO_DEVICE_FEATURES);
    assert_ne!(features & (1 << 5), 0, "VIRTIO_BLK_F_RO offered");
    assert_eq!(features & (1 << 9), 0, "no flush on a read-only disk");
    assert_eq!(rig.request(1, 0, Some((&[0x55; 512], false))).0, 1);
    let on_disk = std::fs::read(&path).expect("read disk");
    assert!(
        on_disk[..512].iter().all(|&b| b == 0),
        "the file is unchanged"
    );
}

#[test]
fn net_rx_puts_a_frame_from_the_tap_into_a_guest_buffer() {
    use std::sync::atomic::AtomicBool;
    use virtio_common::{inject_frames, TapGuard, TEST_ETHERTYPE};
    let tap = TapGuard::create(&format!("btrx{}", std::process::id() % 100_000));
    let opened = boottrace::vmm::virtio::tap::Tap::open(&tap.0).expect("open the tap");
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).expect("memory");
    let irq = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
    let dev = Net::new("net0".into(), 0, Some(opened));
    let mut t = MmioTransport::new(Box::new(dev), mem.clone(), irq).expect("transport");
    set_up(&mut t, 2, [DESC, AVAIL, USED], u32::from(QSIZE));
    // Eight rx buffers of 2 KiB.
    for i in 0..8u16 {
        write_desc(&mem, DESC, i, DATA + u64::from(i) * 0x800, 0x800, 2, 0);
        mem.write_obj(i, GuestAddress(AVAIL + 4 + 2 * u64::from(i)))
            .expect("write");
    }
    mem.write_obj(8u16, GuestAddress(AVAIL + 2)).expect("write");
    w32(&mut t, VIRTIO_MMIO_QUEUE_NOTIFY, 0);
    // Frames into the tap every 100 ms until the guest's buffer has one.
    let stop = AtomicBool::new(false);
    let found = std::thread::scope(|s| {
        s.spawn(|| inject_frames(&tap.0, &stop));
        let start = Instant::now();
        let mut found = None;
        while found.is_none() && start.elapsed() < Duration::from_secs(5) {
            t.backend_event();
            let used: u16 = mem.read_obj(GuestAddress(USED + 2)).expect("read");
            for u in 0..used.min(8) {
                let id: u32 = mem
                    .read_obj(GuestAddress(USED + 4 + 8 * u64::from(u)))
                    .expect("read");
                let len: u32 = mem
                    .read_obj(GuestAddress(USED + 8 + 8 * u64::from(u)))
                    .expect("read");
                let mut buf = vec![0u8; len.min(0x800) as usize];
                mem.read_slice(&mut buf, GuestAddress(DATA + u64::from(id) * 0x800))
                    .expect("read");
                if buf.len() >= 12 + 14 && buf[12 + 12..12 + 14] == TEST_ETHERTYPE.to_be_bytes() {
                    found = Some(buf);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        found
    });
    let buf = found.expect("the injected frame reached a guest rx buffer within 5 s");
    assert_eq!(buf.len(), 12 + 60, "virtio-net header + the 60-byte frame");
    assert_eq!(&buf[..10], &[0u8; 10], "no offloads in the header");
    assert_eq!(u16::from_le_bytes([buf[10], buf[11]]), 1, "num_buffers = 1");
    assert_eq!(&buf[12..18], &[0xff; 6], "broadcast destination");
    assert_eq!(&buf[12 + 14..12 + 30], b"boottrace-tap-rx");
    assert!(t.broken().is_none());
    let stats = t.stats().to_string();
    assert!(!stats.contains("rx 0 frames"), "{stats}");
}
