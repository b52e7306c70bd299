//! Where the kernel and its decompressor ran during one boot, and how a raw
//! sampled instruction pointer maps back to a link-time address.
//!
//! The VMM fills a [`RunLayout`] from what the guest did (see
//! `src/sample/kaslr.rs`); the trace stores it; report-time symbolization uses
//! [`RunLayout::classify`] before looking anything up.

use serde::{Deserialize, Deserializer, Serialize};

/// Start of the kernel's text mapping (`__START_KERNEL_map`), x86_64.
pub const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
/// Lowest kernel-half canonical address (4-level paging).
pub const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;

/// Most decompressor bases a layout holds. A boot has two (where the VMM
/// loaded it, where it relocated itself); a trace claiming more is damaged
/// or hostile, and is refused when read.
pub const MAX_DECOMPRESSOR_BASES: usize = 64;
/// Up to this many bases, [`RunLayout::classify`] scans them in order;
/// beyond, it relies on their being sorted (see `decompressor_bases`).
const LINEAR_BASES: usize = 8;

/// Per-boot placement of the kernel image and the decompressor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunLayout {
    /// Runtime minus link-time virtual address of the kernel text (KASLR); 0 without KASLR.
    pub kernel_virt_slide: i64,
    /// How `kernel_virt_slide` was found (e.g. "fixed: not relocatable",
    /// "bytes at sampled RIP matched image at slide").
    pub virt_slide_method: String,
    /// Runtime physical address of the kernel's first loadable segment (link-time `_text`).
    pub kernel_phys_start: Option<u64>,
    /// Link-time virtual address that `kernel_phys_start` corresponds to (`_text`).
    pub kernel_link_start: u64,
    /// Size of the kernel image in memory (link-time `_end - _text`).
    pub kernel_size: u64,
    /// Physical addresses at which the decompressor's ELF (linked at 0) ran:
    /// where it was loaded, and where it relocated itself. Ascending and at
    /// most [`MAX_DECOMPRESSOR_BASES`] long: [`RunLayout::add_decompressor_base`]
    /// keeps it so, and reading a stored layout sorts it and refuses longer lists.
    #[serde(deserialize_with = "bounded_bases")]
    pub decompressor_bases: Vec<u64>,
    /// Size of the decompressor image in memory.
    pub decompressor_size: u64,
}

/// What kind of code a sampled address belongs to, with the address to look up there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddrSpace {
    /// Kernel proper; the value is the link-time virtual address.
    Kernel(u64),
    /// The bzImage decompressor; the value is its ELF virtual address.
    Decompressor(u64),
    /// Guest user mode (CPL 3).
    User,
    /// Real-mode setup code or firmware-like code below 1 MiB.
    Setup(u64),
    /// Nothing known covers this address; the raw address.
    Unknown(u64),
}

impl RunLayout {
    /// Maps a raw sampled RIP to the space and address to symbolize.
    /// `cpl` is the privilege level at the sample.
    pub fn classify(&self, rip: u64, cpl: u8) -> AddrSpace {
        if cpl == 3 {
            return AddrSpace::User;
        }
        if rip >= KERNEL_HALF {
            let link = rip.wrapping_sub(self.kernel_virt_slide as u64);
            if link >= self.kernel_link_start
                && link - self.kernel_link_start < self.kernel_size.max(1)
            {
                return AddrSpace::Kernel(link);
            }
            return AddrSpace::Unknown(rip);
        }
        // The decompressor first: it relocates itself to the end of the
        // decompression buffer, which for a large kernel lies inside the range
        // the kernel later occupies. Once the kernel runs, its physical-address
        // code is head code at the start of that range, clear of the copy.
        if let Some(off) = self.decompressor_offset(rip) {
            return AddrSpace::Decompressor(off);
        }
        if let Some(phys) = self.kernel_phys_start {
            if rip >= phys && rip - phys < self.kernel_size {
                return AddrSpace::Kernel(self.kernel_link_start + (rip - phys));
            }
        }
        if rip < 0x10_0000 {
            return AddrSpace::Setup(rip);
        }
        AddrSpace::Unknown(rip)
    }
}

impl RunLayout {
    /// Records one more decompressor base, keeping the list sorted, without
    /// duplicates and within [`MAX_DECOMPRESSOR_BASES`]; false when full.
    pub fn add_decompressor_base(&mut self, base: u64) -> bool {
        match self.decompressor_bases.binary_search(&base) {
            Ok(_) => true,
            Err(_) if self.decompressor_bases.len() >= MAX_DECOMPRESSOR_BASES => false,
            Err(at) => {
                self.decompressor_bases.insert(at, base);
                true
            }
        }
    }

    /// Sorts, deduplicates and caps `decompressor_bases` (for code that
    /// builds a layout from another representation, e.g. a trace record).
    pub fn normalize_bases(&mut self) {
        let bases = &mut self.decompressor_bases;
        bases.sort_unstable();
        bases.dedup();
        bases.truncate(MAX_DECOMPRESSOR_BASES);
    }

    /// Offset of `rip` in the decompressor copy that covers it. Looks at the
    /// first [`MAX_DECOMPRESSOR_BASES`] bases only, so a frame costs at most
    /// a binary search over 64 entries whatever a layout holds.
    fn decompressor_offset(&self, rip: u64) -> Option<u64> {
        let all = &self.decompressor_bases;
        let bases = &all[..all.len().min(MAX_DECOMPRESSOR_BASES)];
        let covers = |base: u64| rip >= base && rip - base < self.decompressor_size;
        if bases.len() <= LINEAR_BASES {
            // Few bases (every real boot): any order, first match wins.
            return bases.iter().find(|&&b| covers(b)).map(|b| rip - b);
        }
        debug_assert!(
            bases.windows(2).all(|w| w[0] <= w[1]),
            "decompressor_bases must be sorted (RunLayout::normalize_bases)"
        );
        // Sorted (guaranteed when read or built with add_decompressor_base):
        // the highest base at or below rip is the only candidate that can
        // cover it whenever any does, as all copies have the same size.
        let at = bases.partition_point(|&b| b <= rip);
        let base = *bases.get(at.checked_sub(1)?)?;
        covers(base).then(|| rip - base)
    }
}

/// Reads a stored base list: at most [`MAX_DECOMPRESSOR_BASES`] (refused
/// beyond, without reading the rest), then sorted and deduplicated.
pub fn bounded_bases<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
    struct Bases;
    impl<'de> serde::de::Visitor<'de> for Bases {
        type Value = Vec<u64>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "at most {MAX_DECOMPRESSOR_BASES} decompressor bases")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u64>, A::Error> {
            let mut out = Vec::new();
            while let Some(base) = seq.next_element::<u64>()? {
                if out.len() == MAX_DECOMPRESSOR_BASES {
                    return Err(serde::de::Error::custom(format_args!(
                        "more than {MAX_DECOMPRESSOR_BASES} decompressor bases"
                    )));
                }
                out.push(base);
            }
            out.sort_unstable();
            out.dedup();
            Ok(out)
        }
    }
    d.deserialize_seq(Bases)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> RunLayout {
        RunLayout {
            kernel_virt_slide: 0x2000_0000,
            virt_slide_method: "test".into(),
            kernel_phys_start: Some(0x300_0000),
            kernel_link_start: 0xffff_ffff_8100_0000,
            kernel_size: 0x100_0000,
            decompressor_bases: vec![0x10_0000, 0x500_0000],
            decompressor_size: 0x80_0000,
        }
    }

    #[test]
    fn classify_covers_every_space() {
        let l = layout();
        assert_eq!(l.classify(0x1234, 3), AddrSpace::User);
        assert_eq!(
            l.classify(0xffff_ffff_a100_0010, 0),
            AddrSpace::Kernel(0xffff_ffff_8100_0010)
        );
        assert_eq!(
            l.classify(0x300_0010, 0),
            AddrSpace::Kernel(0xffff_ffff_8100_0010)
        );
        assert_eq!(l.classify(0x10_0200, 0), AddrSpace::Decompressor(0x200));
        assert_eq!(l.classify(0x500_0200, 0), AddrSpace::Decompressor(0x200));
        assert_eq!(l.classify(0x7000, 0), AddrSpace::Setup(0x7000));
        assert_eq!(
            l.classify(0xffff_ffff_8100_0010, 0),
            AddrSpace::Unknown(0xffff_ffff_8100_0010)
        );
    }

    #[test]
    fn decompressor_copy_inside_the_kernel_range_is_the_decompressor() {
        // A big kernel: the relocated decompressor sits at the end of the
        // buffer the kernel is decompressed into.
        let mut l = layout();
        l.decompressor_bases = vec![0x10_0000, 0x3f0_0000];
        l.decompressor_size = 0x10_0000;
        assert_eq!(l.classify(0x3f0_0200, 0), AddrSpace::Decompressor(0x200));
        assert_eq!(
            l.classify(0x300_0010, 0),
            AddrSpace::Kernel(0xffff_ffff_8100_0010)
        );
    }

    #[test]
    fn many_sorted_bases_classify_by_binary_search() {
        let mut l = layout();
        l.decompressor_bases.clear();
        l.decompressor_size = 0x1000;
        for i in (0..MAX_DECOMPRESSOR_BASES as u64).rev() {
            assert!(l.add_decompressor_base(0x1000_0000 + i * 0x10_0000));
        }
        assert!(!l.add_decompressor_base(0x9000_0000), "cap holds");
        assert!(l.decompressor_bases.windows(2).all(|w| w[0] < w[1]));
        let last = 0x1000_0000 + (MAX_DECOMPRESSOR_BASES as u64 - 1) * 0x10_0000;
        assert_eq!(l.classify(last + 0x10, 0), AddrSpace::Decompressor(0x10));
        assert_eq!(l.classify(0x1020_0fff, 0), AddrSpace::Decompressor(0xfff));
        assert_eq!(l.classify(0x1020_1000, 0), AddrSpace::Unknown(0x1020_1000));
        assert_eq!(l.classify(0x0fff_ffff, 0), AddrSpace::Unknown(0x0fff_ffff));
    }

    #[test]
    fn normalize_sorts_dedups_and_caps() {
        let mut l = layout();
        l.decompressor_size = 0x1000;
        l.decompressor_bases = (0..1000u64).rev().map(|i| i << 20).collect();
        l.decompressor_bases.push(0);
        l.normalize_bases();
        assert_eq!(l.decompressor_bases.len(), MAX_DECOMPRESSOR_BASES);
        assert_eq!(l.decompressor_bases[..2], [0, 1 << 20]);
        assert_eq!(l.classify(0x30_0010, 0), AddrSpace::Decompressor(0x10));
    }

    #[test]
    fn stored_base_lists_are_sorted_and_capped_when_read() {
        // The trace stores layouts with postcard.
        let roundtrip = |l: &RunLayout| -> Result<RunLayout, String> {
            let bytes = postcard::to_stdvec(l).map_err(|e| e.to_string())?;
            postcard::from_bytes(&bytes).map_err(|e| e.to_string())
        };
        let mut l = layout();
        l.decompressor_bases = vec![0x500_0000, 0x10_0000, 0x500_0000];
        let back = roundtrip(&l).expect("a short list reads back");
        assert_eq!(back.decompressor_bases, vec![0x10_0000, 0x500_0000]);
        l.decompressor_bases = (0..1_000_000u64).collect();
        let t = std::time::Instant::now();
        let err = roundtrip(&l).expect_err("a huge list is refused");
        // postcard reports a custom error without its text.
        assert!(!err.is_empty());
        assert!(t.elapsed() < std::time::Duration::from_secs(2));
    }
}
