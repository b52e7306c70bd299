//! Guest RAM: anonymous host mappings (optionally huge pages and/or
//! pre-faulted), split around the 32-bit MMIO hole, and the e820 map the
//! guest is told about.

use std::io;

use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap, MmapRegion};

use super::layout::{EBDA_START, HIMEM_START, MIN_MEM_SIZE, MMIO_GAP_END, MMIO_GAP_START};

/// How the host backs guest RAM.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryOptions {
    /// Guest RAM in bytes.
    pub size: u64,
    /// Back with explicit huge pages (MAP_HUGETLB).
    pub hugepages: bool,
    /// Pre-fault all of it at start (MAP_POPULATE), so the guest takes no host faults.
    pub populate: bool,
}

/// Errors setting up guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The requested size is below what any kernel needs.
    #[error("--mem {0} MiB is too small: at least {min} MiB is needed", min = MIN_MEM_SIZE >> 20)]
    TooSmall(u64),
    /// The requested size exceeds the host's memory.
    #[error("--mem {req} MiB is more than this host has ({host} MiB of RAM)")]
    TooLarge {
        /// Requested MiB.
        req: u64,
        /// Host MiB.
        host: u64,
    },
    /// MAP_HUGETLB failed, most likely because no huge pages are reserved.
    #[error("--hugepages: cannot map {size} MiB of huge pages ({source}); reserve them first, e.g. `echo {pages} > /proc/sys/vm/nr_hugepages`")]
    NoHugePages {
        /// MiB requested.
        size: u64,
        /// 2 MiB pages that would be needed.
        pages: u64,
        /// The mmap error.
        source: io::Error,
    },
    /// Any other mmap failure.
    #[error("cannot map {size} MiB of guest memory: {source}")]
    Mmap {
        /// MiB requested.
        size: u64,
        /// The mmap error.
        source: io::Error,
    },
    /// vm-memory refused the regions (overlap/overflow; a bug if it happens).
    #[error("guest memory layout rejected: {0}")]
    Layout(String),
}

/// The RAM ranges for `size` bytes of memory: one below the MMIO hole and, if
/// needed, the rest above 4 GiB.
pub fn ram_ranges(size: u64) -> Vec<(u64, u64)> {
    if size <= MMIO_GAP_START {
        vec![(0, size)]
    } else {
        vec![(0, MMIO_GAP_START), (MMIO_GAP_END, size - MMIO_GAP_START)]
    }
}

/// One e820 entry: (start, length, type) with type 1 = RAM, 2 = reserved.
pub type E820Entry = (u64, u64, u32);
/// e820 type of usable RAM.
pub const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub const E820_RESERVED: u32 = 2;

/// The memory map the guest sees: low RAM up to the EBDA, the EBDA/MP-table
/// area reserved, then RAM from 1 MiB (split around the MMIO hole).
pub fn e820_map(size: u64) -> Vec<E820Entry> {
    let mut map = vec![
        (0, EBDA_START, E820_RAM),
        (EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED),
    ];
    for (start, len) in ram_ranges(size) {
        let (s, l) = if start == 0 {
            (HIMEM_START, len - HIMEM_START)
        } else {
            (start, len)
        };
        map.push((s, l, E820_RAM));
    }
    map
}

fn host_ram_bytes() -> Option<u64> {
    // SAFETY: sysconf has no memory-safety preconditions.
    let pages = unsafe { libc::sysconf(libc::_SC_PHYS_PAGES) };
    // SAFETY: as above.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    (pages > 0 && page > 0).then(|| pages as u64 * page as u64)
}

/// Free 2 MiB huge pages on the host (0 when unknown).
fn free_hugepages() -> u64 {
    std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Creates guest RAM as described by `opts`.
pub fn create_guest_memory(opts: &MemoryOptions) -> Result<GuestMemoryMmap, MemoryError> {
    let mib = opts.size >> 20;
    if opts.size < MIN_MEM_SIZE {
        return Err(MemoryError::TooSmall(mib));
    }
    if let Some(host) = host_ram_bytes() {
        if opts.size > host {
            return Err(MemoryError::TooLarge {
                req: mib,
                host: host >> 20,
            });
        }
    }
    let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    if opts.hugepages {
        // Reserved up front (no MAP_NORESERVE): a shortage is an error now,
        // not a SIGBUS in the middle of the boot.
        flags |= libc::MAP_HUGETLB;
        let pages = opts.size.div_ceil(2 << 20);
        let free = free_hugepages();
        if free < pages {
            return Err(MemoryError::NoHugePages {
                size: mib,
                pages,
                source: io::Error::other(format!("{free} free 2 MiB huge pages, {pages} needed")),
            });
        }
    } else {
        flags |= libc::MAP_NORESERVE;
    }
    if opts.populate {
        flags |= libc::MAP_POPULATE;
    }
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let mut regions = Vec::new();
    for (start, len) in ram_ranges(opts.size) {
        let mapping = MmapRegion::build(None, len as usize, prot, flags).map_err(|e| {
            let source = match e {
                vm_memory::mmap::MmapRegionError::Mmap(io) => io,
                other => io::Error::other(other.to_string()),
            };
            if opts.hugepages {
                MemoryError::NoHugePages {
                    size: mib,
                    pages: opts.size.div_ceil(2 << 20),
                    source,
                }
            } else {
                MemoryError::Mmap { size: mib, source }
            }
        })?;
        let region = GuestRegionMmap::new(mapping, GuestAddress(start))
            .ok_or_else(|| MemoryError::Layout(format!("region at {start:#x} overflows")))?;
        regions.push(region);
    }
    GuestMemoryMmap::from_regions(regions).map_err(|e| MemoryError::Layout(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e820_splits_around_the_mmio_hole() {
        let map = e820_map(5 << 30);
        assert_eq!(map[0], (0, EBDA_START, E820_RAM));
        assert_eq!(
            map[2],
            (HIMEM_START, MMIO_GAP_START - HIMEM_START, E820_RAM)
        );
        assert_eq!(map[3], (MMIO_GAP_END, (5 << 30) - MMIO_GAP_START, E820_RAM));
        let total: u64 = map.iter().filter(|e| e.2 == E820_RAM).map(|e| e.1).sum();
        assert_eq!(total, (5 << 30) - (HIMEM_START - EBDA_START));
    }

    #[test]
    fn too_small_is_refused() {
        let err = create_guest_memory(&MemoryOptions {
            size: 1 << 20,
            ..Default::default()
        });
        assert!(matches!(err, Err(MemoryError::TooSmall(1))));
    }

    #[test]
    fn too_large_is_refused() {
        let err = create_guest_memory(&MemoryOptions {
            size: 1 << 50,
            ..Default::default()
        });
        assert!(matches!(err, Err(MemoryError::TooLarge { .. })));
    }
}
