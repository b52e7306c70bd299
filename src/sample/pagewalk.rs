//! Reading guest memory the way the guest's CPU sees it: a page-table walker
//! from CR3 (paging off → identity; long mode with 4- or 5-level tables, 1 GiB
//! and 2 MiB pages), with a tiny per-sample translation cache.
//!
//! Everything read here is guest-controlled: every read is bounds-checked by the
//! [`GuestPhys`] backend, a walk is at most five table reads, and nothing loops
//! on guest data.

use vm_memory::{
    bitmap::Bitmap, Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap,
    GuestMemoryRegion, MemoryRegionAddress, VolatileMemory,
};

/// Guest-physical memory that can be read. Returns `false` (and leaves `buf`
/// unspecified) when any byte of `[gpa, gpa + buf.len())` is not backed.
pub trait GuestPhys {
    /// Reads `buf.len()` bytes at guest-physical `gpa`.
    fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> bool;
}

impl<B: Bitmap> GuestPhys for GuestMemoryMmap<B> {
    fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> bool {
        // The few regions are scanned directly: `read_slice`'s general path
        // (region lookup, slice iterator) was a tenth of a sample's cost.
        for r in self.iter() {
            let Some(off) = gpa.checked_sub(r.start_addr().raw_value()) else {
                continue;
            };
            if off >= r.len() {
                continue;
            }
            if off.saturating_add(buf.len() as u64) > r.len() {
                break; // crosses into another region (or past the end)
            }
            return match r.get_slice(MemoryRegionAddress(off), buf.len()) {
                // A word (table entries, stack slots: most reads) in one
                // volatile load; the general copy costs several times that.
                Ok(s) if buf.len() == 8 => match s.get_ref::<u64>(0) {
                    Ok(w) => {
                        buf.copy_from_slice(&w.load().to_ne_bytes());
                        true
                    }
                    Err(_) => false,
                },
                Ok(s) => {
                    s.copy_to(buf);
                    true
                }
                Err(_) => false,
            };
        }
        self.read_slice(buf, GuestAddress(gpa)).is_ok()
    }
}

impl<T: GuestPhys + ?Sized> GuestPhys for &T {
    fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> bool {
        (**self).read_phys(gpa, buf)
    }
}

/// CR0.PG: paging enabled.
const CR0_PG: u64 = 1 << 31;
/// CR4.LA57: 5-level paging.
const CR4_LA57: u64 = 1 << 12;
/// EFER.LMA: long mode active.
const EFER_LMA: u64 = 1 << 10;
/// Physical-address bits 51:12 of a CR3 or table entry.
const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Present bit of a paging entry.
const PTE_P: u64 = 1;
/// Page-size bit of a PDPTE/PDE.
const PTE_PS: u64 = 1 << 7;
/// With PTI the user PGD is the kernel PGD with this bit set (PTI_USER_PGTABLE_BIT).
const PTI_USER_BIT: u64 = 1 << 12;
/// Pages remembered per walker (a sample's stack reads touch one to three pages).
const CACHE_SLOTS: usize = 4;

/// How the guest translates virtual addresses at the moment of a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PagingMode {
    /// CR0.PG clear: virtual = physical (32-bit).
    Off,
    /// Paging in legacy (32-bit or PAE) mode: not walked; x86_64 boot never uses it.
    Legacy,
    /// Long mode, 4-level tables (48-bit virtual addresses).
    Level4,
    /// Long mode, 5-level tables (CR4.LA57, 57-bit virtual addresses).
    Level5,
}

impl PagingMode {
    /// The mode given by the control registers.
    pub fn from_regs(cr0: u64, cr4: u64, efer: u64) -> PagingMode {
        if cr0 & CR0_PG == 0 {
            PagingMode::Off
        } else if efer & EFER_LMA == 0 {
            PagingMode::Legacy
        } else if cr4 & CR4_LA57 != 0 {
            PagingMode::Level5
        } else {
            PagingMode::Level4
        }
    }
}

/// Translates and reads guest-virtual addresses for one sample. Cheap to
/// create; make a new one per sample (the cache is not invalidated).
pub struct PageWalker<'m, M: GuestPhys + ?Sized> {
    mem: &'m M,
    mode: PagingMode,
    root: u64,
    cache: [(u64, u64); CACHE_SLOTS],
    cache_len: usize,
    cache_next: usize,
}

impl<'m, M: GuestPhys + ?Sized> PageWalker<'m, M> {
    /// A walker for the given control registers.
    pub fn new(mem: &'m M, cr0: u64, cr3: u64, cr4: u64, efer: u64) -> Self {
        PageWalker {
            mem,
            mode: PagingMode::from_regs(cr0, cr4, efer),
            root: cr3 & ADDR_MASK,
            cache: [(u64::MAX, 0); CACHE_SLOTS],
            cache_len: 0,
            cache_next: 0,
        }
    }

    /// The paging mode in effect.
    pub fn mode(&self) -> PagingMode {
        self.mode
    }

    /// The guest memory this walker reads.
    pub fn memory(&self) -> &'m M {
        self.mem
    }

    /// Guest-physical address of virtual `va`, or `None` when not mapped.
    pub fn translate(&mut self, va: u64) -> Option<u64> {
        let vpn = va >> 12;
        for &(v, p) in &self.cache[..self.cache_len] {
            if v == vpn {
                return Some(p | (va & 0xfff));
            }
        }
        let pa = self.walk(va)?;
        self.cache[self.cache_next] = (vpn, pa & !0xfff);
        self.cache_next = (self.cache_next + 1) % CACHE_SLOTS;
        self.cache_len = (self.cache_len + 1).min(CACHE_SLOTS);
        Some(pa)
    }

    fn walk(&self, va: u64) -> Option<u64> {
        match self.mode {
            PagingMode::Off => (va <= u64::from(u32::MAX)).then_some(va),
            PagingMode::Legacy => None,
            PagingMode::Level4 | PagingMode::Level5 => {
                let levels = if self.mode == PagingMode::Level5 {
                    5
                } else {
                    4
                };
                match self.walk_long(self.root, va, levels) {
                    // In kernel mode with PTI, entry code briefly runs on the user
                    // PGD (kernel PGD | 4 KiB), which maps no task stack: retry on
                    // the kernel half of the pair.
                    None if self.root & PTI_USER_BIT != 0 => {
                        self.walk_long(self.root & !PTI_USER_BIT, va, levels)
                    }
                    r => r,
                }
            }
        }
    }

    fn walk_long(&self, root: u64, va: u64, levels: u32) -> Option<u64> {
        let va_bits = 12 + 9 * levels;
        // Non-canonical addresses fault on real hardware.
        let shift = 64 - va_bits;
        if (((va << shift) as i64) >> shift) as u64 != va {
            return None;
        }
        let mut table = root;
        for level in (1..=levels).rev() {
            let index = (va >> (12 + 9 * (level - 1))) & 0x1ff;
            let entry = self.read_entry(table + index * 8)?;
            if entry & PTE_P == 0 {
                return None;
            }
            match level {
                3 | 2 if entry & PTE_PS != 0 => {
                    let page_bits = 12 + 9 * (level - 1);
                    let page_mask = (1u64 << page_bits) - 1;
                    return Some((entry & ADDR_MASK & !page_mask) | (va & page_mask));
                }
                1 => return Some((entry & ADDR_MASK) | (va & 0xfff)),
                // PS is reserved in PML5E/PML4E: the CPU would fault.
                5 | 4 if entry & PTE_PS != 0 => return None,
                _ => table = entry & ADDR_MASK,
            }
        }
        None
    }

    fn read_entry(&self, gpa: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.mem
            .read_phys(gpa, &mut b)
            .then(|| u64::from_le_bytes(b))
    }

    /// Reads `buf.len()` bytes at virtual `va`, across page boundaries; false
    /// when any byte is unmapped or unbacked.
    pub fn read(&mut self, va: u64, buf: &mut [u8]) -> bool {
        let mut done = 0usize;
        while done < buf.len() {
            let Some(cur) = va.checked_add(done as u64) else {
                return false;
            };
            let in_page = (0x1000 - (cur & 0xfff)) as usize;
            let n = in_page.min(buf.len() - done);
            let Some(pa) = self.translate(cur) else {
                return false;
            };
            if !self.mem.read_phys(pa, &mut buf[done..done + n]) {
                return false;
            }
            done += n;
        }
        true
    }

    /// Reads a little-endian `u64` at virtual `va`.
    pub fn read_u64(&mut self, va: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.read(va, &mut b).then(|| u64::from_le_bytes(b))
    }
}

/// Vec-backed guest-physical memory for tests and benchmarks: a few regions,
/// reads fail outside them, as with a real memory map with holes.
#[derive(Debug, Default, Clone)]
pub struct FakePhys {
    regions: Vec<(u64, Vec<u8>)>,
}

impl FakePhys {
    /// Empty memory.
    pub fn new() -> Self {
        FakePhys::default()
    }

    /// Adds a zero-filled region `[base, base + len)`.
    pub fn add_region(&mut self, base: u64, len: usize) {
        self.regions.push((base, vec![0; len]));
    }

    fn region_mut(&mut self, gpa: u64, len: usize) -> Option<&mut [u8]> {
        self.regions.iter_mut().find_map(|(base, data)| {
            let off = usize::try_from(gpa.checked_sub(*base)?).ok()?;
            data.get_mut(off..off.checked_add(len)?)
        })
    }

    /// Writes bytes at `gpa`; false when they do not fit in one region.
    pub fn write(&mut self, gpa: u64, bytes: &[u8]) -> bool {
        match self.region_mut(gpa, bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                true
            }
            None => false,
        }
    }

    /// Writes a little-endian `u64` at `gpa`.
    pub fn write_u64(&mut self, gpa: u64, v: u64) -> bool {
        self.write(gpa, &v.to_le_bytes())
    }

    /// The regions as `(base, bytes)`, e.g. to copy them into real guest memory.
    pub fn regions(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.regions.iter().map(|(b, d)| (*b, d.as_slice()))
    }
}

impl GuestPhys for FakePhys {
    fn read_phys(&self, gpa: u64, buf: &mut [u8]) -> bool {
        let len = buf.len();
        let src = self.regions.iter().find_map(|(base, data)| {
            let off = usize::try_from(gpa.checked_sub(*base)?).ok()?;
            data.get(off..off.checked_add(len)?)
        });
        match src {
            Some(s) => {
                buf.copy_from_slice(s);
                true
            }
            None => false,
        }
    }
}

/// Size of a page mapped by [`FakePageTables::map`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageSize {
    /// 4 KiB (PTE).
    Size4K,
    /// 2 MiB (PDE with PS).
    Size2M,
    /// 1 GiB (PDPTE with PS).
    Size1G,
}

/// Builds long-mode page tables inside a [`FakePhys`], for tests: tables are
/// allocated 4 KiB at a time from a region (8 KiB aligned) the caller provides.
#[derive(Debug, Clone)]
pub struct FakePageTables {
    root: u64,
    next: u64,
    end: u64,
    levels: u32,
}

impl FakePageTables {
    /// Tables in `[area, area + len)` (must be backed by `mem`), 4 or 5 levels.
    pub fn new(mem: &mut FakePhys, area: u64, len: u64, five_level: bool) -> Self {
        mem.add_region(area, len as usize);
        FakePageTables {
            root: area,
            // The root is 8 KiB like a PTI kernel's PGD pair; its second (user)
            // half stays empty.
            next: area + 0x2000,
            end: area + len,
            levels: if five_level { 5 } else { 4 },
        }
    }

    /// The CR3 value (root table address).
    pub fn cr3(&self) -> u64 {
        self.root
    }

    /// Backs `[pa, pa + len)` with a fresh region of `mem` and maps it at `va`
    /// with 4 KiB pages (a vmalloc'ed stack, say); false when a page does not map.
    pub fn map_region(&mut self, mem: &mut FakePhys, va: u64, pa: u64, len: u64) -> bool {
        mem.add_region(pa, len as usize);
        (0..len.div_ceil(0x1000))
            .all(|i| self.map(mem, va + i * 0x1000, pa + i * 0x1000, PageSize::Size4K))
    }

    /// Maps virtual `va` to physical `pa` with the given page size; false when
    /// the table area is full or the range is misaligned.
    pub fn map(&mut self, mem: &mut FakePhys, va: u64, pa: u64, size: PageSize) -> bool {
        let leaf_level = match size {
            PageSize::Size4K => 1,
            PageSize::Size2M => 2,
            PageSize::Size1G => 3,
        };
        let align = 1u64 << (12 + 9 * (leaf_level - 1));
        if va % align != 0 || pa % align != 0 {
            return false;
        }
        let mut table = self.root;
        for level in (leaf_level..=self.levels).rev() {
            let slot = table + ((va >> (12 + 9 * (level - 1))) & 0x1ff) * 8;
            if level == leaf_level {
                let ps = if leaf_level > 1 { PTE_PS } else { 0 };
                return mem.write_u64(slot, pa | ps | 0x3);
            }
            let mut b = [0u8; 8];
            if !mem.read_phys(slot, &mut b) {
                return false;
            }
            let entry = u64::from_le_bytes(b);
            table = if entry & PTE_P != 0 {
                entry & ADDR_MASK
            } else {
                if self.next >= self.end {
                    return false;
                }
                let t = self.next;
                self.next += 0x1000;
                if !mem.write_u64(slot, t | 0x3) {
                    return false;
                }
                t
            };
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG_ON: u64 = CR0_PG | 1;

    fn setup(five: bool) -> (FakePhys, FakePageTables) {
        let mut mem = FakePhys::new();
        let pt = FakePageTables::new(&mut mem, 0x10_0000, 0x2_0000, five);
        mem.add_region(0x20_0000, 0x60_0000);
        (mem, pt)
    }

    #[test]
    fn paging_off_is_identity_within_4g() {
        let mut mem = FakePhys::new();
        mem.add_region(0x1000, 0x1000);
        mem.write_u64(0x1ff8, 0x1122_3344_5566_7788);
        let mut w = PageWalker::new(&mem, 1, 0, 0, 0);
        assert_eq!(w.mode(), PagingMode::Off);
        assert_eq!(w.read_u64(0x1ff8), Some(0x1122_3344_5566_7788));
        assert_eq!(w.read_u64(0x1ffc), None, "crosses into unbacked memory");
        assert_eq!(w.translate(0x1_0000_0000), None);
    }

    #[test]
    fn walks_4k_2m_and_1g_pages_in_4_and_5_levels() {
        for five in [false, true] {
            let (mut mem, mut pt) = setup(five);
            let k4 = 0xffff_c900_0001_3000u64;
            let m2 = 0xffff_ffff_8120_0000u64;
            let g1 = 0xffff_8880_0000_0000u64;
            assert!(pt.map(&mut mem, k4, 0x30_1000, PageSize::Size4K));
            assert!(pt.map(&mut mem, m2, 0x40_0000, PageSize::Size2M));
            assert!(pt.map(&mut mem, g1, 0, PageSize::Size1G));
            let (cr4, efer) = (if five { CR4_LA57 } else { 0 }, EFER_LMA);
            // PCID bits in CR3 must not matter.
            let mut w = PageWalker::new(&mem, PG_ON, pt.cr3() | 0x5, cr4, efer);
            assert_eq!(
                w.mode(),
                if five {
                    PagingMode::Level5
                } else {
                    PagingMode::Level4
                }
            );
            assert_eq!(w.translate(k4 + 0x123), Some(0x30_1123));
            assert_eq!(w.translate(m2 + 0x1_2345), Some(0x41_2345));
            assert_eq!(w.translate(g1 + 0x3fff_fff8), Some(0x3fff_fff8));
            assert_eq!(w.translate(k4 + 0x1000), None, "next 4K page unmapped");
            assert_eq!(w.translate(0x1000), None);
            assert!(mem.write_u64(0x41_2340, 0xdead_beef));
            let mut w = PageWalker::new(&mem, PG_ON, pt.cr3(), cr4, efer);
            assert_eq!(w.read_u64(m2 + 0x1_2340), Some(0xdead_beef));
        }
    }

    #[test]
    fn non_canonical_and_legacy_fail() {
        let (mut mem, mut pt) = setup(false);
        assert!(pt.map(&mut mem, 0x20_0000, 0x20_0000, PageSize::Size2M));
        let mut w = PageWalker::new(&mem, PG_ON, pt.cr3(), 0, EFER_LMA);
        assert_eq!(w.translate(0x20_0010), Some(0x20_0010));
        assert_eq!(w.translate(0x0000_8000_0020_0010), None, "non-canonical");
        let mut w = PageWalker::new(&mem, PG_ON, pt.cr3(), 0, 0);
        assert_eq!(w.mode(), PagingMode::Legacy);
        assert_eq!(w.translate(0x20_0010), None);
    }

    #[test]
    fn reads_across_pages_and_falls_back_to_kernel_pgd_under_pti() {
        let mut mem = FakePhys::new();
        // Kernel PGD at 0x10_0000 (8 KiB aligned); the user PGD is the next page.
        let mut pt = FakePageTables::new(&mut mem, 0x10_0000, 0x2_0000, false);
        mem.add_region(0x20_0000, 0x10_0000);
        let va = 0xffff_c900_0000_0000u64;
        assert!(pt.map(&mut mem, va, 0x20_0000, PageSize::Size4K));
        assert!(pt.map(&mut mem, va + 0x1000, 0x25_0000, PageSize::Size4K));
        assert!(mem.write(0x20_0ffc, &[1, 2, 3, 4]));
        assert!(mem.write(0x25_0000, &[5, 6, 7, 8]));
        let user_cr3 = pt.cr3() | PTI_USER_BIT;
        let mut w = PageWalker::new(&mem, PG_ON, user_cr3, 0, EFER_LMA);
        assert_eq!(w.read_u64(va + 0xffc), Some(0x0807_0605_0403_0201));
        // Cached translations give the same answer.
        assert_eq!(w.translate(va + 0x1008), Some(0x25_0008));
        assert_eq!(w.translate(va + 0x1008), Some(0x25_0008));
    }

    #[test]
    fn table_pointing_outside_memory_fails_cleanly() {
        let (mut mem, pt) = setup(false);
        // A PML4 entry pointing at an unbacked table, and one with PS set.
        assert!(mem.write_u64(pt.cr3(), 0x7_0000_0000 | 3));
        assert!(mem.write_u64(pt.cr3() + 8, 0x20_0000 | 3 | PTE_PS));
        let mut w = PageWalker::new(&mem, PG_ON, pt.cr3(), 0, EFER_LMA);
        assert_eq!(w.translate(0x1000), None);
        assert_eq!(w.translate(0x80_0000_1000), None);
        let mut buf = [0u8; 16];
        assert!(!w.read(u64::MAX - 4, &mut buf));
    }

    #[test]
    fn guest_memory_mmap_reads_are_bounded() {
        use vm_memory::{Bytes, GuestAddress};
        let gm = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 0x2000),
            (GuestAddress(0x1_0000), 0x1000),
        ])
        .expect("mmap");
        gm.write_slice(&[7; 8], GuestAddress(0x1ff8))
            .expect("write");
        let mut b = [0u8; 8];
        assert!(gm.read_phys(0x1ff8, &mut b));
        assert_eq!(b, [7; 8]);
        assert!(!gm.read_phys(0x1ffc, &mut b), "runs into the hole");
        assert!(!gm.read_phys(0x1_0ffc, &mut b), "runs past the end");
        assert!(!gm.read_phys(u64::MAX - 3, &mut b));
    }

    #[test]
    fn fake_phys_bounds() {
        let mut m = FakePhys::new();
        m.add_region(0x1000, 16);
        assert!(m.write(0x1008, &[9; 8]));
        assert!(!m.write(0x100c, &[9; 8]));
        let mut b = [0u8; 8];
        assert!(m.read_phys(0x1008, &mut b));
        assert_eq!(b, [9; 8]);
        assert!(!m.read_phys(0x1009, &mut b));
        assert!(!m.read_phys(u64::MAX, &mut b));
    }
}
