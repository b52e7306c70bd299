//! KVM's per-vCPU binary statistics (`KVM_GET_STATS_FD`, Linux 5.14+).
//!
//! The stats file descriptor holds, in this order of discovery: a header
//! (`struct kvm_stats_header`: flags, name_size, num_desc, id_offset,
//! desc_offset, data_offset), an id string, `num_desc` descriptors
//! (`struct kvm_stats_desc`: flags, exponent, size, offset, bucket_size, then
//! `name_size` bytes of NUL-terminated name) and a data block of `u64` values.
//! Each descriptor's `offset` is relative to `data_offset` and `size` counts
//! `u64` elements (histograms have more than one).
//!
//! Statistics are found by name, never by a fixed offset: the set differs between
//! kernel versions and architectures (x86 has e.g. `exits`, `io_exits`,
//! `mmio_exits`, `halt_exits`, `irq_exits`, `signal_exits`, `pf_taken`,
//! `pf_fixed`, `insn_emulation`). Everything read from the kernel is bounded
//! before use: a descriptor table or data block that does not fit the limits
//! below is refused, not trusted.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;

use kvm_bindings::{
    KVMIO, KVM_STATS_BASE_MASK, KVM_STATS_TYPE_CUMULATIVE, KVM_STATS_TYPE_MASK, KVM_STATS_UNIT_MASK,
};

/// The ioctl number of `KVM_GET_STATS_FD` (not wrapped by kvm-ioctls), in a
/// private module: the macro makes an undocumented `pub fn`.
mod ioctl {
    use super::KVMIO;
    vmm_sys_util::ioctl_io_nr!(KVM_GET_STATS_FD, KVMIO, 0xce);
}
use ioctl::KVM_GET_STATS_FD;

/// Size in bytes of `struct kvm_stats_header`.
const HEADER_SIZE: usize = 24;
/// Size in bytes of the fixed part of `struct kvm_stats_desc` (the name follows).
const DESC_FIXED_SIZE: usize = 16;
/// Largest `name_size` accepted (the kernel uses `KVM_STATS_NAME_SIZE` = 48).
pub const MAX_NAME_SIZE: u32 = 256;
/// Largest number of descriptors accepted (x86 vCPUs have about 50).
pub const MAX_DESCRIPTORS: u32 = 4096;
/// Largest data block accepted, in bytes (x86 vCPUs use about 1 KiB).
pub const MAX_DATA_BYTES: u64 = 256 * 1024;

/// Why the KVM binary statistics of a vCPU cannot be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum KvmStatsError {
    /// The KVM_GET_STATS_FD ioctl failed (kernel older than 5.14, or not KVM).
    #[error("KVM_GET_STATS_FD failed: {0}")]
    GetStatsFd(#[source] std::io::Error),
    /// Reading the stats file failed.
    #[error("reading the KVM stats file at offset {offset} ({len} bytes) failed: {source}")]
    Read {
        /// Offset of the read in the stats file.
        offset: u64,
        /// Bytes asked for.
        len: usize,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The stats header has a value outside the accepted bounds.
    #[error("KVM stats header field {field} = {value} is out of bounds")]
    BadHeader {
        /// Which header field.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// A descriptor places its data outside the accepted data block.
    #[error("KVM stats descriptor {index} ({name}): offset {offset} size {size} is out of bounds or misaligned")]
    BadDescriptor {
        /// Index of the descriptor.
        index: usize,
        /// Its name.
        name: String,
        /// Its offset in the data block, in bytes.
        offset: u32,
        /// Its size, in u64 elements.
        size: u16,
    },
    /// The caller's output slice does not have one slot per tracked statistic.
    #[error("output slice has {got} slots, {want} statistics are tracked")]
    OutputLength {
        /// Slots given.
        got: usize,
        /// Slots needed.
        want: usize,
    },
}

/// One statistic as the kernel describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatDesc {
    /// Name, e.g. `io_exits`.
    pub name: String,
    /// Raw `flags`: type (bits 0-3), unit (bits 4-7), base (bits 8-11).
    pub flags: u32,
    /// Power of `base` the value is scaled by (e.g. -9 with base 10 for ns).
    pub exponent: i16,
    /// Number of u64 elements (1 for counters, more for histograms).
    pub size: u16,
    /// Byte offset of the first element within the data block.
    pub offset: u32,
    /// Bucket size of a linear histogram, else 0.
    pub bucket_size: u32,
}

impl StatDesc {
    /// `KVM_STATS_TYPE_*`: 0 cumulative, 1 instant, 2 peak, 3 linear histogram, 4 log histogram.
    pub fn kind(&self) -> u32 {
        self.flags & KVM_STATS_TYPE_MASK
    }

    /// `KVM_STATS_UNIT_*`: 0x00 none, 0x10 bytes, 0x20 seconds, 0x30 cycles, 0x40 boolean.
    pub fn unit(&self) -> u32 {
        self.flags & KVM_STATS_UNIT_MASK
    }

    /// `KVM_STATS_BASE_*`: 0x000 powers of 10, 0x100 powers of 2.
    pub fn base(&self) -> u32 {
        self.flags & KVM_STATS_BASE_MASK
    }

    /// Whether this is a single monotonically increasing counter, the only kind
    /// for which a delta between two samples means something.
    pub fn is_cumulative_scalar(&self) -> bool {
        self.kind() == KVM_STATS_TYPE_CUMULATIVE && self.size == 1
    }
}

/// An open stats file of one vCPU, with its descriptors parsed and the
/// cumulative scalar statistics selected for per-sample reading.
#[derive(Debug)]
pub struct KvmStats {
    file: File,
    id: String,
    descs: Vec<StatDesc>,
    /// Names of the tracked statistics, in tracking order (index = stat id).
    names: Vec<String>,
    /// Byte offset within `buf` of each tracked statistic.
    buf_offsets: Vec<usize>,
    /// File offset of the first byte read per sample.
    read_offset: u64,
    /// Buffer for the one pread per sample.
    buf: Vec<u8>,
}

impl KvmStats {
    /// Opens the binary stats of a vCPU (`KVM_GET_STATS_FD` on its fd).
    pub fn from_vcpu<F: AsRawFd>(vcpu: &F) -> Result<Self, KvmStatsError> {
        // SAFETY: KVM_GET_STATS_FD takes no argument and only returns a new fd
        // (or -1); `vcpu` is a live fd borrowed for the duration of the call.
        let fd = unsafe { vmm_sys_util::ioctl::ioctl(vcpu, KVM_GET_STATS_FD()) };
        if fd < 0 {
            return Err(KvmStatsError::GetStatsFd(std::io::Error::last_os_error()));
        }
        // SAFETY: `fd` was just returned by the kernel as a new descriptor that
        // nothing else owns; the File takes sole ownership and closes it.
        let file = unsafe { File::from_raw_fd(fd) };
        Self::from_file(file)
    }

    /// Parses a stats file (a KVM stats fd, or any file in the same format).
    pub fn from_file(file: File) -> Result<Self, KvmStatsError> {
        let mut hdr = [0u8; HEADER_SIZE];
        read_exact_at(&file, &mut hdr, 0)?;
        let field = |i: usize| u32::from_ne_bytes([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
        let name_size = field(4);
        let num_desc = field(8);
        let id_offset = field(12);
        let desc_offset = field(16);
        let data_offset = field(20);
        if name_size == 0 || name_size > MAX_NAME_SIZE {
            return Err(KvmStatsError::BadHeader {
                field: "name_size",
                value: name_size.into(),
            });
        }
        if num_desc > MAX_DESCRIPTORS {
            return Err(KvmStatsError::BadHeader {
                field: "num_desc",
                value: num_desc.into(),
            });
        }
        let name_size = name_size as usize;

        let mut id_buf = vec![0u8; name_size];
        read_exact_at(&file, &mut id_buf, id_offset.into())?;
        let id = c_name(&id_buf);

        // Bounded above: 4096 * (16 + 256) bytes ≈ 1.1 MiB, read once at open.
        let desc_stride = DESC_FIXED_SIZE + name_size;
        let mut table = vec![0u8; desc_stride * num_desc as usize];
        read_exact_at(&file, &mut table, desc_offset.into())?;

        let mut descs = Vec::with_capacity(num_desc as usize);
        for (index, raw) in table.chunks_exact(desc_stride).enumerate() {
            let u32_at =
                |i: usize| u32::from_ne_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
            let desc = StatDesc {
                flags: u32_at(0),
                exponent: i16::from_ne_bytes([raw[4], raw[5]]),
                size: u16::from_ne_bytes([raw[6], raw[7]]),
                offset: u32_at(8),
                bucket_size: u32_at(12),
                name: c_name(&raw[DESC_FIXED_SIZE..]),
            };
            let end = u64::from(desc.offset) + 8 * u64::from(desc.size);
            if desc.offset & 7 != 0 || desc.size == 0 || end > MAX_DATA_BYTES {
                return Err(KvmStatsError::BadDescriptor {
                    index,
                    name: desc.name,
                    offset: desc.offset,
                    size: desc.size,
                });
            }
            descs.push(desc);
        }

        // Track the cumulative scalars with a usable, unique name.
        let mut tracked: Vec<&StatDesc> = Vec::new();
        for d in &descs {
            if d.is_cumulative_scalar()
                && !d.name.is_empty()
                && !tracked.iter().any(|t| t.name == d.name)
            {
                tracked.push(d);
            }
        }
        let lo = tracked.iter().map(|d| d.offset).min().unwrap_or(0);
        let hi = tracked.iter().map(|d| d.offset + 8).max().unwrap_or(0);
        let names = tracked.iter().map(|d| d.name.clone()).collect();
        let buf_offsets = tracked.iter().map(|d| (d.offset - lo) as usize).collect();
        Ok(Self {
            file,
            id,
            read_offset: u64::from(data_offset) + u64::from(lo),
            buf: vec![0u8; (hi - lo) as usize],
            names,
            buf_offsets,
            descs,
        })
    }

    /// The kernel's id string of these stats, e.g. `kvm-1234/vcpu-0`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Every descriptor the kernel reported, tracked or not.
    pub fn descriptors(&self) -> &[StatDesc] {
        &self.descs
    }

    /// Names of the tracked statistics (cumulative scalars); the position of a
    /// name is the `u16` stat id used in deltas and in the trace's stat names.
    pub fn stat_names(&self) -> &[String] {
        &self.names
    }

    /// Number of tracked statistics (the length `read_into` expects).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no statistic is tracked.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The stat id of a tracked statistic, by name.
    pub fn index_of(&self, name: &str) -> Option<u16> {
        let i = self.names.iter().position(|n| n == name)?;
        u16::try_from(i).ok()
    }

    /// Reads the current value of every tracked statistic into `out` (one slot
    /// per name of [`stat_names`](Self::stat_names)), with a single `pread` of
    /// the data block and no allocation.
    pub fn read_into(&mut self, out: &mut [u64]) -> Result<(), KvmStatsError> {
        if out.len() != self.names.len() {
            return Err(KvmStatsError::OutputLength {
                got: out.len(),
                want: self.names.len(),
            });
        }
        read_exact_at(&self.file, &mut self.buf, self.read_offset)?;
        for (slot, &off) in out.iter_mut().zip(&self.buf_offsets) {
            let mut word = [0u8; 8];
            if let Some(bytes) = self.buf.get(off..off + 8) {
                word.copy_from_slice(bytes);
            }
            *slot = u64::from_ne_bytes(word);
        }
        Ok(())
    }
}

/// Appends to `out` the `(stat id, delta)` pairs of the statistics that changed
/// between `prev` and `cur`, then copies `cur` into `prev`. A counter that went
/// backwards (it cannot, for a cumulative statistic) counts as no change.
/// `out` should have capacity for `cur.len()` entries to avoid allocating.
pub fn nonzero_deltas(prev: &mut [u64], cur: &[u64], out: &mut Vec<(u16, u64)>) {
    for (i, (p, &c)) in prev.iter_mut().zip(cur).enumerate() {
        let d = c.saturating_sub(*p);
        if d != 0 {
            if let Ok(id) = u16::try_from(i) {
                out.push((id, d));
            }
        }
        *p = c;
    }
}

/// A NUL-terminated name from a fixed-size field (lossy UTF-8).
fn c_name(raw: &[u8]) -> String {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    String::from_utf8_lossy(&raw[..end]).into_owned()
}

fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> Result<(), KvmStatsError> {
    file.read_exact_at(buf, offset)
        .map_err(|source| KvmStatsError::Read {
            offset,
            len: buf.len(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Builds a stats file in the kernel's layout from (name, flags, size, offset).
    fn stats_file(name_size: u32, descs: &[(&str, u32, u16, u32)], data: &[u64]) -> File {
        let id_offset = HEADER_SIZE as u32;
        let desc_offset = id_offset + name_size;
        let data_offset = desc_offset + descs.len() as u32 * (16 + name_size);
        let mut out = Vec::new();
        for v in [
            0,
            name_size,
            descs.len() as u32,
            id_offset,
            desc_offset,
            data_offset,
        ] {
            out.extend_from_slice(&v.to_ne_bytes());
        }
        let mut id = b"kvm-1/vcpu-0".to_vec();
        id.resize(name_size as usize, 0);
        out.extend_from_slice(&id);
        for &(name, flags, size, offset) in descs {
            out.extend_from_slice(&flags.to_ne_bytes());
            out.extend_from_slice(&0i16.to_ne_bytes());
            out.extend_from_slice(&size.to_ne_bytes());
            out.extend_from_slice(&offset.to_ne_bytes());
            out.extend_from_slice(&0u32.to_ne_bytes());
            let mut n = name.as_bytes().to_vec();
            n.resize(name_size as usize, 0);
            out.extend_from_slice(&n);
        }
        for v in data {
            out.extend_from_slice(&v.to_ne_bytes());
        }
        let mut f = tempfile::tempfile().expect("tempfile");
        f.write_all(&out).expect("write");
        f
    }

    #[test]
    fn parses_by_name_and_skips_non_cumulative() {
        // Layout deliberately not in name order: a histogram between counters,
        // an instant value, and io_exits before exits in the data block.
        let f = stats_file(
            48,
            &[
                ("exits", 0, 1, 40),
                ("halt_hist", 3, 2, 8), // linear histogram: not tracked
                ("blocking", 1, 1, 24), // instant: not tracked
                ("io_exits", 0, 1, 0),
                ("pf_taken", 0, 1, 32),
            ],
            &[7, 100, 200, 1, 9, 11],
        );
        let mut s = KvmStats::from_file(f).expect("parse");
        assert_eq!(s.id(), "kvm-1/vcpu-0");
        assert_eq!(s.descriptors().len(), 5);
        assert_eq!(s.stat_names(), ["exits", "io_exits", "pf_taken"]);
        let mut v = vec![0; s.len()];
        s.read_into(&mut v).expect("read");
        assert_eq!(v, [11, 7, 9]);
        assert_eq!(s.index_of("io_exits"), Some(1));
        assert_eq!(s.index_of("blocking"), None);
        let mut short = [0u64; 2];
        assert!(matches!(
            s.read_into(&mut short),
            Err(KvmStatsError::OutputLength { got: 2, want: 3 })
        ));
    }

    #[test]
    fn refuses_out_of_bounds_headers_and_descriptors() {
        let f = stats_file(MAX_NAME_SIZE + 8, &[("exits", 0, 1, 0)], &[1]);
        assert!(matches!(
            KvmStats::from_file(f),
            Err(KvmStatsError::BadHeader {
                field: "name_size",
                ..
            })
        ));
        let f = stats_file(48, &[("exits", 0, 1, 4)], &[1, 2]);
        assert!(matches!(
            KvmStats::from_file(f),
            Err(KvmStatsError::BadDescriptor { index: 0, .. })
        ));
        let f = stats_file(48, &[("exits", 0, u16::MAX, 0)], &[1]);
        assert!(matches!(
            KvmStats::from_file(f),
            Err(KvmStatsError::BadDescriptor { .. })
        ));
        // Data block shorter than a descriptor claims: parse succeeds, read fails.
        let f = stats_file(48, &[("exits", 0, 1, 64)], &[1]);
        let mut s = KvmStats::from_file(f).expect("parse");
        let mut v = [0u64; 1];
        assert!(matches!(
            s.read_into(&mut v),
            Err(KvmStatsError::Read { .. })
        ));
        // Truncated header.
        let mut f = tempfile::tempfile().expect("tempfile");
        f.write_all(&[0u8; 10]).expect("write");
        assert!(matches!(
            KvmStats::from_file(f),
            Err(KvmStatsError::Read { .. })
        ));
    }

    #[test]
    fn huge_num_desc_is_refused_before_allocating() {
        let mut f = tempfile::tempfile().expect("tempfile");
        let mut hdr = Vec::new();
        for v in [0u32, 48, u32::MAX, 24, 72, 1000] {
            hdr.extend_from_slice(&v.to_ne_bytes());
        }
        f.write_all(&hdr).expect("write");
        assert!(matches!(
            KvmStats::from_file(f),
            Err(KvmStatsError::BadHeader {
                field: "num_desc",
                ..
            })
        ));
    }

    #[test]
    fn deltas_skip_zero_and_backwards() {
        let mut prev = vec![10, 5, 7, 0];
        let cur = [13, 5, 6, 2];
        let mut out = Vec::with_capacity(4);
        nonzero_deltas(&mut prev, &cur, &mut out);
        assert_eq!(out, [(0, 3), (3, 2)]);
        assert_eq!(prev, cur);
    }
}
