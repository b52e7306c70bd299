//! The trace's own copy of a run's kernel/decompressor layout.
//!
//! The symbols crate's `RunLayout` is what report-time code works with; the
//! file stores this struct instead, so a field added to `RunLayout` cannot
//! silently change (and break) the encoding of traces on disk. Conversions
//! both ways live here, in one place.

use boottrace_symbols::layout::RunLayout;
use serde::{Deserialize, Serialize};

/// Where the kernel and decompressor ran in one run, as stored in the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceLayout {
    /// Runtime minus link-time virtual address of the kernel text (KASLR).
    pub kernel_virt_slide: i64,
    /// How the slide was found (human-readable).
    pub virt_slide_method: String,
    /// Runtime physical address of the kernel's first loadable segment.
    pub kernel_phys_start: Option<u64>,
    /// Link-time virtual address that `kernel_phys_start` corresponds to.
    pub kernel_link_start: u64,
    /// Size of the kernel image in memory.
    pub kernel_size: u64,
    /// Physical addresses at which the decompressor (linked at 0) ran; a
    /// stored list longer than the layout's cap is refused unread (file input).
    #[serde(deserialize_with = "boottrace_symbols::layout::bounded_bases")]
    pub decompressor_bases: Vec<u64>,
    /// Size of the decompressor image in memory.
    pub decompressor_size: u64,
}

impl From<&RunLayout> for TraceLayout {
    fn from(l: &RunLayout) -> Self {
        TraceLayout {
            kernel_virt_slide: l.kernel_virt_slide,
            virt_slide_method: l.virt_slide_method.clone(),
            kernel_phys_start: l.kernel_phys_start,
            kernel_link_start: l.kernel_link_start,
            kernel_size: l.kernel_size,
            decompressor_bases: l.decompressor_bases.clone(),
            decompressor_size: l.decompressor_size,
        }
    }
}

impl From<RunLayout> for TraceLayout {
    fn from(l: RunLayout) -> Self {
        TraceLayout::from(&l)
    }
}

impl From<TraceLayout> for RunLayout {
    fn from(l: TraceLayout) -> Self {
        let mut layout = RunLayout {
            kernel_virt_slide: l.kernel_virt_slide,
            virt_slide_method: l.virt_slide_method,
            kernel_phys_start: l.kernel_phys_start,
            kernel_link_start: l.kernel_link_start,
            kernel_size: l.kernel_size,
            decompressor_bases: l.decompressor_bases,
            decompressor_size: l.decompressor_size,
        };
        // Sorted and capped, as classification expects.
        layout.normalize_bases();
        layout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_both_ways_without_loss() {
        let run = RunLayout {
            kernel_virt_slide: -0x20_0000,
            virt_slide_method: "test".into(),
            kernel_phys_start: Some(0x100_0000),
            kernel_link_start: 0xffff_ffff_8100_0000,
            kernel_size: 0x80_0000,
            decompressor_bases: vec![0x10_0000, 0x300_0000],
            decompressor_size: 0x4_0000,
        };
        let stored = TraceLayout::from(&run);
        assert_eq!(RunLayout::from(stored), run);
    }
}
