//! Garbage in the virtqueues: the block and net devices' queue handlers
//! driven through the virtio-mmio registers with random and mutated
//! descriptor tables and avail rings in real guest memory (no KVM). Nothing
//! may panic, every notification must finish quickly, and a malformed queue
//! must mark the device broken rather than be served.

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
}
