//! What the sampler needs from the kernel image, published by `record`'s
//! analysis thread when ready, so reading the image (decompression, ORC,
//! kallsyms, type info) runs beside the VMM's start-up instead of before it.
//!
//! vCPU threads poll [`LateKernel`] at each sample (one atomic load until it
//! is set); samples taken before it is set keep their RIP only (the
//! decompressor, which has no unwind information, runs first in a bzImage
//! boot anyway) and are counted.

use std::sync::{Arc, OnceLock};

use boottrace_symbols::image::KernelImage;

use super::kaslr::BootImage;
use super::task::TaskLocator;
use super::unwind::Unwinder;

/// The parsed image and its unwinder: enough to find the layout and unwind.
pub struct SampleKernel {
    /// The image.
    pub image: Arc<KernelImage>,
    /// How the booted file is placed in guest memory.
    pub boot_image: BootImage,
    /// Unwinder prototype (ORC or frame pointers).
    pub unwinder: Unwinder,
    /// How to find `current`, once the type info is read (`None` inside:
    /// task awareness off). Set after the rest: it needs DWARF or BTF.
    pub tasks: OnceLock<Option<TaskLocator>>,
}

/// The kernel as far as the analysis has got: empty until the image is parsed.
pub type LateKernel = Arc<OnceLock<Arc<SampleKernel>>>;
