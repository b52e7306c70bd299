//! Where the kernel and its decompressor ran during one boot, and how a raw
//! sampled instruction pointer maps back to a link-time address.
//!
//! The VMM fills a [`RunLayout`] from what the guest did (see
//! `src/sample/kaslr.rs`); the trace stores it; report-time symbolization uses
//! [`RunLayout::classify`] before looking anything up.

use serde::{Deserialize, Serialize};

/// Start of the kernel's text mapping (`__START_KERNEL_map`), x86_64.
pub const START_KERNEL_MAP: u64 = 0xffff_ffff_8000_0000;
/// Lowest kernel-half canonical address (4-level paging).
pub const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;

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
    /// where it was loaded, and where it relocated itself.
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
        for &base in &self.decompressor_bases {
            if rip >= base && rip - base < self.decompressor_size {
                return AddrSpace::Decompressor(rip - base);
            }
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
}
