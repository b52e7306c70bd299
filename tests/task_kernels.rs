//! Task awareness set-up on real kernels, without booting: `record` reads
//! the type info and the symbols that locate `current` once, from DWARF
//! (tiny-fp, UP: `Global`), from the image's `.BTF`/vmlinux beside it
//! (tiny-orc, SMP: `GsRelative`), and from a stock Debian cloud kernel
//! (kallsyms + BTF, no vmlinux).

mod common;

use std::time::Instant;

use boottrace::record::kernel::read_kernel;
use boottrace_symbols::typeinfo::{PerCpuAddressing, TypeInfoSource};
use common::type_info;

#[test]
fn tiny_fp_uses_dwarf_and_global_current() {
    let dir = common::kernel_dir("tiny-fp");
    for image in [dir.join("vmlinux"), dir.join("bzImage")] {
        let t0 = Instant::now();
        let facts = read_kernel(&image, None, false).expect("read kernel");
        let loc = facts.tasks.unwrap_or_else(|| {
            panic!(
                "{}: task awareness off: {}",
                image.display(),
                facts.tasks_note
            )
        });
        eprintln!(
            "{}: {} in {:?}",
            image.display(),
            facts.tasks_note,
            t0.elapsed()
        );
        assert_eq!(
            loc.types.source,
            TypeInfoSource::Dwarf,
            "{}",
            image.display()
        );
        assert_eq!(loc.symbols.current.addressing, PerCpuAddressing::Global);
        // UP: `current` is a kernel global in the kernel image's range.
        assert!(loc.symbols.current.symbol_value >= 0xffff_ffff_8000_0000);
        assert!(loc.types.task.comm.size == 16, "{:?}", loc.types.task.comm);
    }
}

#[test]
fn tiny_orc_is_gs_relative() {
    let dir = common::kernel_dir("tiny-orc");
    let loc = type_info::task_locator(&dir.join("bzImage"), false);
    assert_eq!(loc.symbols.current.addressing, PerCpuAddressing::GsRelative);
    // ABSOLUTE_PERCPU: the per-CPU symbol is a small offset into the area.
    assert!(loc.symbols.current.symbol_value < 0x10_0000, "{loc:?}");
    assert!(loc.symbols.per_cpu_offset.is_some());
}

#[test]
fn a_vmlinux_with_another_banner_beside_the_image_is_not_used() {
    let fp = common::kernel_dir("tiny-fp");
    let orc = common::kernel_dir("tiny-orc");
    let tmp = tempfile::tempdir().expect("temp dir");
    let image = tmp.path().join("bzImage");
    std::fs::copy(fp.join("bzImage"), &image).expect("copy bzImage");
    std::os::unix::fs::symlink(orc.join("vmlinux"), tmp.path().join("vmlinux")).expect("link");
    let facts = read_kernel(&image, None, false).expect("read kernel");
    // tiny-fp has no BTF: with the mismatched vmlinux ignored, no type info.
    assert!(facts.tasks.is_none(), "{}", facts.tasks_note);
    assert!(
        facts
            .tasks_note
            .starts_with("no type info: task awareness off"),
        "{}",
        facts.tasks_note
    );
}

#[test]
fn debian_cloud_kernel_gets_task_awareness_from_btf_and_kallsyms() {
    let loc = type_info::debian_cloud_task_locator();
    assert_eq!(loc.types.source, TypeInfoSource::Btf);
    assert_eq!(loc.symbols.current.addressing, PerCpuAddressing::GsRelative);
    assert!(loc.symbols.init_task >= 0xffff_ffff_8000_0000, "{loc:?}");
}

#[test]
fn an_unusable_vmlinux_is_named_in_the_note() {
    let dir = common::kernel_dir("tiny-fp");
    let facts = read_kernel(
        &dir.join("bzImage"),
        Some(std::path::Path::new("/dev/zero")),
        false,
    )
    .expect("read kernel");
    assert!(facts.tasks.is_none());
    assert!(
        facts.tasks_note.contains("/dev/zero") && facts.tasks_note.contains("not a regular file"),
        "{}",
        facts.tasks_note
    );
}

#[test]
fn a_vmlinux_of_another_kernel_is_refused_for_type_info() {
    let fp = common::kernel_dir("tiny-fp");
    let orc = common::kernel_dir("tiny-orc");
    let facts =
        read_kernel(&fp.join("bzImage"), Some(&orc.join("vmlinux")), false).expect("read kernel");
    assert!(facts.tasks.is_none(), "{}", facts.tasks_note);
    assert!(
        facts.tasks_note.contains("banners differ"),
        "{}",
        facts.tasks_note
    );
}
