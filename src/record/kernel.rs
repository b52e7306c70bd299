//! What `record` learns about the kernel before booting it, once for all runs.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use boottrace_symbols::image::{ImageFormat, KernelImage};
use boottrace_symbols::orc::OrcTable;

use crate::sample::kaslr::BootImage;
use crate::sample::unwind::{Method, Unwinder};
use crate::trace::UnwinderKind;
use crate::vmm;

/// The kernel image, read and checked, and how its runs will be booted.
pub struct KernelFacts {
    /// The image.
    pub image: Arc<KernelImage>,
    /// The unwinder its samples get (ORC when the image has the tables).
    pub unwinder: Unwinder,
    /// Which unwinder that is.
    pub unwinder_kind: UnwinderKind,
    /// Link-time address of the kernel's return-to-user path, from the image's own symbols.
    pub user_return_link: Option<u64>,
    /// The file the VMM boots: the image itself or its extracted ELF payload.
    pub boot_path: PathBuf,
    /// How the booted file is placed in guest memory (for layout detection).
    pub boot_image: BootImage,
    /// Keeps an extracted payload alive for every run.
    _payload: Option<tempfile::NamedTempFile>,
}

/// Reads the kernel image. With `skip_decompressor`, extracts a bzImage's
/// ELF payload to a temporary file that is booted instead.
pub fn read_kernel(path: &Path, skip_decompressor: bool) -> Result<KernelFacts> {
    let image = KernelImage::open(path)
        .with_context(|| format!("cannot use {} as a kernel", path.display()))?;
    // ORC when the image carries it (distro kernels, UNWINDER_ORC), else frame pointers.
    let (unwinder, unwinder_kind) = match OrcTable::from_elf(image.elf_bytes()) {
        Ok(t) if !t.is_empty() => (Unwinder::new(Method::Orc(Arc::new(t))), UnwinderKind::Orc),
        _ => (
            Unwinder::new(Method::FramePointer),
            UnwinderKind::FramePointer,
        ),
    };
    let user_return_link = image.kallsyms().ok().and_then(|t| {
        t.by_name("swapgs_restore_regs_and_return_to_usermode")
            .map(|s| s.addr)
    });
    let (boot_path, payload) = if skip_decompressor {
        if image.format() != ImageFormat::BzImage {
            bail!(
                "--skip-decompressor needs a bzImage; {} is not one",
                path.display()
            );
        }
        let f = extract_payload(&image)?;
        (f.path().to_path_buf(), Some(f))
    } else {
        (path.to_path_buf(), None)
    };
    let boot_image = match image.format() {
        ImageFormat::BzImage if payload.is_none() => BootImage::BzImage {
            load_base: image
                .setup_header()
                .map_or(vmm::layout::HIMEM_START, |h| u64::from(h.code32_start)),
        },
        _ => BootImage::Elf {
            phys_start: image.phys_load_start(),
        },
    };
    Ok(KernelFacts {
        image: Arc::new(image),
        unwinder,
        unwinder_kind,
        user_return_link,
        boot_path,
        boot_image,
        _payload: payload,
    })
}

fn extract_payload(image: &KernelImage) -> Result<tempfile::NamedTempFile> {
    let mut f =
        tempfile::NamedTempFile::new().context("cannot create a file for the kernel payload")?;
    std::io::Write::write_all(&mut f, image.elf_bytes())
        .context("cannot write the kernel payload")?;
    Ok(f)
}
