//! Task awareness as `record` sets it up, without booting: the type info
//! and symbols it reads from a test kernel or from Debian's cloud kernel.

use std::path::{Path, PathBuf};

use boottrace::record::kernel::read_kernel;
use boottrace::sample::task::TaskLocator;

/// Debian's stock cloud kernel (6.12): the vmlinuz
/// `kernel/fetch-debian-cloud.sh` fetches with apt (cached after the first
/// call). Panics, failing the test, when it cannot be fetched.
pub fn debian_cloud_vmlinuz() -> PathBuf {
    super::kernel_script_path(
        "fetch-debian-cloud.sh",
        "6.12",
        "Debian's cloud kernel must be fetchable with apt",
    )
}

/// What `record` locates tasks with in `image` (no vmlinux given: one beside
/// the image, else its `.BTF`); `skip_decompressor` reads a bzImage's ELF
/// payload. Panics with the reason when task awareness is off.
pub fn task_locator(image: &Path, skip_decompressor: bool) -> TaskLocator {
    let facts = read_kernel(image, None, skip_decompressor).expect("read kernel");
    facts
        .tasks
        .unwrap_or_else(|| panic!("off: {}", facts.tasks_note))
}

/// [`task_locator`] of Debian's cloud kernel (kallsyms + BTF, no vmlinux).
pub fn debian_cloud_task_locator() -> TaskLocator {
    task_locator(&debian_cloud_vmlinuz(), true)
}
