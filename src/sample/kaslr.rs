//! Where the kernel and its decompressor ran in this boot, found from what
//! the guest did rather than guessed.
//!
//! The VMM feeds every sample to a [`LayoutDetector`] until it
//! [`is_complete`](LayoutDetector::is_complete):
//! - **KASLR slide**: at a kernel-half RIP `r`, each candidate slide `s`
//!   (a multiple of 2 MiB — `CONFIG_PHYSICAL_ALIGN` is one on x86_64 — that
//!   puts `r − s` inside the image) is tested by comparing the guest's bytes at
//!   `r` (page-walked) with the image's bytes at `r − s`. The kernel patches
//!   its text (relocations, alternatives), so 7/8 of the window must match and
//!   only one candidate may; low-entropy windows (padding) are skipped.
//! - **Physical load address**: the same RIP translated through the guest's
//!   page tables (the kernel image is mapped linearly); or, for head code
//!   running at physical addresses, the same byte test over 2 MiB-aligned
//!   physical candidates.
//! - **Decompressor**: its load base is the VMM's; the copy it relocates to
//!   (`startup_64`: end of the decompression buffer, page aligned) is found
//!   by matching the bytes at a low RIP against the bzImage's protected-mode
//!   code at the same page offset.
//!
//! Kernels that cannot move (ELF boots, non-relocatable bzImages) start with
//! slide 0 and their link-time physical address, and say so.

use std::sync::Arc;

use boottrace_symbols::image::KernelImage;
use boottrace_symbols::layout::{AddrSpace, RunLayout, KERNEL_HALF};

use super::pagewalk::GuestPhys;
use super::unwind::UnwindRegs;

/// Alignment of the kernel's physical and virtual placement (x86_64 `CONFIG_PHYSICAL_ALIGN` minimum).
const KERNEL_ALIGN: u64 = 0x20_0000;
/// Bytes compared at a sampled RIP.
const WINDOW: usize = 64;
/// Smallest window worth comparing (a RIP near an unmapped page end).
const MIN_WINDOW: usize = 32;
/// Largest virtual slide considered (the kernel image area is 1 GiB).
const MAX_SLIDE: u64 = 1 << 30;
/// Candidates tried per sample, whatever the image claims its size is.
const MAX_CANDIDATES: u64 = 1024;

/// How the kernel was put into guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootImage {
    /// A bzImage whose protected-mode code (the decompressor) was loaded at `load_base`.
    BzImage {
        /// Guest-physical address of the decompressor's `startup_32`.
        load_base: u64,
    },
    /// An ELF vmlinux loaded by the VMM with its first segment at `phys_start`.
    Elf {
        /// Guest-physical address of the first `PT_LOAD` segment (`_text`).
        phys_start: u64,
    },
}

/// Learns a boot's [`RunLayout`] from sampled guest state.
#[derive(Debug)]
pub struct LayoutDetector {
    image: Arc<KernelImage>,
    layout: RunLayout,
    slide_known: bool,
    /// True while the decompressor's relocated copy is still to be found.
    seek_decompressor: bool,
}

impl LayoutDetector {
    /// A detector for `image` booted as `boot`.
    pub fn new(image: Arc<KernelImage>, boot: BootImage) -> LayoutDetector {
        let mut layout = RunLayout {
            kernel_link_start: image.text_start(),
            kernel_size: image.image_size(),
            ..RunLayout::default()
        };
        let mut slide_known = false;
        let mut seek_decompressor = false;
        match boot {
            BootImage::Elf { phys_start } => {
                layout.virt_slide_method =
                    "fixed: ELF vmlinux booted directly (no decompressor, no KASLR)".into();
                layout.kernel_phys_start = Some(phys_start);
                slide_known = true;
            }
            BootImage::BzImage { load_base } => {
                let code_len = image.protected_mode_code().map_or(0, <[u8]>::len);
                layout.decompressor_bases = vec![load_base];
                layout.decompressor_size = code_len as u64;
                seek_decompressor = code_len > 0;
                let relocatable = image
                    .setup_header()
                    .is_some_and(|h| h.relocatable_kernel != 0);
                if !relocatable {
                    layout.virt_slide_method =
                        "fixed: bzImage not relocatable (decompresses to its link address)".into();
                    layout.kernel_phys_start = Some(image.phys_load_start());
                    slide_known = true;
                }
            }
        }
        LayoutDetector {
            image,
            layout,
            slide_known,
            seek_decompressor,
        }
    }

    /// The layout as known so far.
    pub fn layout(&self) -> &RunLayout {
        &self.layout
    }

    /// The virtual KASLR slide, once known.
    pub fn slide(&self) -> Option<i64> {
        self.slide_known.then_some(self.layout.kernel_virt_slide)
    }

    /// True once nothing is left to learn: the slide and the physical start
    /// are known, and the decompressor's copy was found or the kernel proper
    /// has started (so the decompressor is gone).
    pub fn is_complete(&self) -> bool {
        self.slide_known && self.layout.kernel_phys_start.is_some() && !self.seek_decompressor
    }

    /// Learns what one sample can tell; returns true when the layout changed
    /// (hand the new layout to the unwinder). Cheap once complete.
    pub fn observe<M: GuestPhys + ?Sized>(&mut self, mem: &M, regs: &UnwindRegs) -> bool {
        if self.is_complete() || regs.cpl == 3 || regs.efer & (1 << 10) == 0 {
            return false;
        }
        let rip = regs.rip;
        let space = self.layout.classify(rip, 0);
        if rip >= KERNEL_HALF {
            // Kernel proper is running: the decompressor is done.
            self.seek_decompressor = false;
            if !self.slide_known {
                return self.find_slide(mem, regs);
            }
            if self.layout.kernel_phys_start.is_none() {
                if let AddrSpace::Kernel(link) = space {
                    return self.phys_from_page_tables(mem, regs, link);
                }
            }
            return false;
        }
        match space {
            AddrSpace::Decompressor(_) | AddrSpace::Setup(_) | AddrSpace::User => false,
            AddrSpace::Kernel(_) => {
                self.seek_decompressor = false;
                false
            }
            AddrSpace::Unknown(_) => {
                if self.seek_decompressor && self.find_decompressor(mem, regs) {
                    return true;
                }
                if self.layout.kernel_phys_start.is_none() && self.find_phys(mem, regs) {
                    self.seek_decompressor = false;
                    return true;
                }
                false
            }
        }
    }

    /// Guest bytes at the sampled RIP: a full window, or a shorter one when
    /// the next page is not mapped. `None` when too short or padding-like.
    fn guest_window<M: GuestPhys + ?Sized>(mem: &M, regs: &UnwindRegs) -> Option<Vec<u8>> {
        let mut walker = regs.walker(mem);
        let mut buf = vec![0u8; WINDOW];
        if !walker.read(regs.rip, &mut buf) {
            buf.truncate(MIN_WINDOW);
            if !walker.read(regs.rip, &mut buf) {
                return None;
            }
        }
        let mut distinct = [false; 256];
        for &b in &buf {
            distinct[usize::from(b)] = true;
        }
        // Runs of int3/nop/zero match anywhere: no evidence.
        (distinct.iter().filter(|&&d| d).count() >= 8).then_some(buf)
    }

    /// Score of `guest` against the image's bytes at link address `link`.
    fn score(&self, guest: &[u8], link: u64) -> Option<usize> {
        let img = self.image.read_link(link, guest.len())?;
        Some(guest.iter().zip(img).filter(|(a, b)| a == b).count())
    }

    /// The one candidate whose bytes match well enough, or none.
    fn unique_match(
        &self,
        guest: &[u8],
        candidates: impl Iterator<Item = (u64, u64)>,
    ) -> Option<(u64, usize)> {
        let need = guest.len() - guest.len() / 8;
        let mut found: Option<(u64, usize)> = None;
        for (key, link) in candidates.take(MAX_CANDIDATES as usize) {
            if let Some(score) = self.score(guest, link) {
                if score >= need {
                    if found.is_some() {
                        return None;
                    }
                    found = Some((key, score));
                }
            }
        }
        found
    }

    fn find_slide<M: GuestPhys + ?Sized>(&mut self, mem: &M, regs: &UnwindRegs) -> bool {
        let Some(guest) = Self::guest_window(mem, regs) else {
            return false;
        };
        let rip = regs.rip;
        let link_start = self.layout.kernel_link_start;
        let size = self.layout.kernel_size;
        // Slides s with link_start <= rip - s < link_start + size, aligned, |s| <= 1 GiB.
        let lo = rip.wrapping_sub(link_start.wrapping_add(size)) as i64;
        let hi = rip.wrapping_sub(link_start) as i64;
        let first = lo.div_euclid(KERNEL_ALIGN as i64) + 1;
        let last = hi.div_euclid(KERNEL_ALIGN as i64);
        let max = (MAX_SLIDE / KERNEL_ALIGN) as i64;
        let candidates = (first.max(-max)..=last.min(max)).map(|k| {
            let slide = k * KERNEL_ALIGN as i64;
            (slide as u64, rip.wrapping_sub(slide as u64))
        });
        let Some((slide, score)) = self.unique_match(&guest, candidates) else {
            return false;
        };
        let slide = slide as i64;
        self.layout.kernel_virt_slide = slide;
        self.layout.virt_slide_method = format!(
            "guest bytes at sampled RIP {rip:#x} matched the image at slide {slide:#x} ({score}/{} bytes)",
            guest.len()
        );
        self.slide_known = true;
        if self.layout.kernel_phys_start.is_none() {
            let link = rip.wrapping_sub(slide as u64);
            self.phys_from_page_tables(mem, regs, link);
        }
        true
    }

    /// Physical start from the page-table translation of a kernel-virtual RIP.
    fn phys_from_page_tables<M: GuestPhys + ?Sized>(
        &mut self,
        mem: &M,
        regs: &UnwindRegs,
        link: u64,
    ) -> bool {
        let Some(pa) = regs.walker(mem).translate(regs.rip) else {
            return false;
        };
        let Some(start) = pa.checked_sub(link.wrapping_sub(self.layout.kernel_link_start)) else {
            return false;
        };
        if start % KERNEL_ALIGN != 0 {
            return false;
        }
        self.layout.kernel_phys_start = Some(start);
        true
    }

    fn find_phys<M: GuestPhys + ?Sized>(&mut self, mem: &M, regs: &UnwindRegs) -> bool {
        let Some(guest) = Self::guest_window(mem, regs) else {
            return false;
        };
        let rip = regs.rip;
        let link_start = self.layout.kernel_link_start;
        let size = self.layout.kernel_size;
        let top = rip - rip % KERNEL_ALIGN;
        // The image size comes from a file: bound the range before iterating,
        // not after (a hostile size near 2^64 would mean ~2^43 candidates).
        let steps = (size / KERNEL_ALIGN).min(MAX_CANDIDATES);
        let candidates = (0..=steps)
            .filter_map(move |k| top.checked_sub(k * KERNEL_ALIGN))
            .filter(move |&start| rip - start < size)
            .filter_map(move |start| Some((start, link_start.checked_add(rip - start)?)));
        let Some((start, _)) = self.unique_match(&guest, candidates) else {
            return false;
        };
        self.layout.kernel_phys_start = Some(start);
        true
    }

    fn find_decompressor<M: GuestPhys + ?Sized>(&mut self, mem: &M, regs: &UnwindRegs) -> bool {
        let Some(guest) = Self::guest_window(mem, regs) else {
            return false;
        };
        let Some(code) = self.image.protected_mode_code() else {
            return false;
        };
        let rip = regs.rip;
        let page_off = (rip & 0xfff) as usize;
        // The copy is verbatim: demand an exact match, at one page-aligned base only.
        let mut found = None;
        let mut off = page_off;
        while off + guest.len() <= code.len() {
            if code[off..off + guest.len()] == guest[..] {
                if found.is_some() {
                    return false;
                }
                found = rip.checked_sub(off as u64);
            }
            off += 0x1000;
        }
        let Some(base) = found else {
            return false;
        };
        self.layout.add_decompressor_base(base);
        self.seek_decompressor = false;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::pagewalk::FakePhys;

    /// A one-segment x86_64 ELF kernel linked at `vaddr`, loaded at `paddr`, holding `text`.
    fn elf(vaddr: u64, paddr: u64, text: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 64];
        f[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
        f[16..18].copy_from_slice(&2u16.to_le_bytes());
        f[18..20].copy_from_slice(&62u16.to_le_bytes());
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&paddr.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[52..54].copy_from_slice(&64u16.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&1u16.to_le_bytes());
        let len = text.len() as u64;
        for v in [1u64 | (5 << 32), 0x1000, vaddr, paddr, len, len, 0x20_0000] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.resize(0x1000, 0);
        f.extend_from_slice(text);
        f
    }

    #[test]
    fn physical_search_is_bounded_whatever_the_image_size_claims() {
        // 64 distinct bytes of "code" in the image and in guest memory at 4 MiB.
        let text: Vec<u8> = (0..64u8).map(|b| b.wrapping_mul(37)).collect();
        let image = KernelImage::from_bytes(elf(0xffff_ffff_8100_0000, 0x100_0000, &text))
            .expect("tiny ELF parses");
        let mut d = LayoutDetector::new(Arc::new(image), BootImage::Elf { phys_start: 0 });
        // A size near 2^64 (as a hostile p_paddr made it) and nothing known yet.
        d.layout.kernel_size = u64::MAX - 0x1000;
        d.layout.kernel_phys_start = None;
        d.slide_known = true;
        let mut mem = FakePhys::new();
        mem.add_region(0x40_0000, 0x1000);
        assert!(mem.write(0x40_0000, &text));
        let regs = UnwindRegs {
            rip: 0x40_0000,
            efer: 1 << 10,
            ..UnwindRegs::default()
        };
        let t = std::time::Instant::now();
        // Before: 2^43 candidates were iterated per sample.
        assert!(d.observe(&mem, &regs));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(d.layout().kernel_phys_start, Some(0x40_0000));
    }
}
