//! Blocked-stack type info on real kernels, without booting: what the
//! sampler needs to unwind a switched-out task (`thread.sp`, the
//! `inactive_task_frame` layout, `tasks` to find pid 1, the switch counters)
//! from tiny-fp's DWARF and from the Debian cloud kernel's BTF (kallsyms +
//! BTF, no vmlinux).

mod common;

use boottrace_symbols::typeinfo::{KernelTypeInfo, TypeInfoSource};
use common::type_info;

/// The checks every kernel's layout must pass for blocked stacks.
fn check_blocked_layout(t: &KernelTypeInfo) {
    let task = &t.task;
    assert!(task.tasks.is_some(), "no task_struct.tasks: {t:?}");
    assert!(
        task.nvcsw.is_some() && task.nivcsw.is_some(),
        "no switch counters: {t:?}"
    );
    assert!(task.thread_sp.offset + 8 <= task.size, "{t:?}");
    // x86_64's inactive_task_frame: the saved registers, then bp, then the
    // return address last (what `ret` in __switch_to_asm would pop).
    let f = &t.frame;
    assert_eq!(f.ret_addr + 8, f.size, "{f:?}");
    assert_eq!(f.bp + 8, f.ret_addr, "{f:?}");
    assert!(f.size >= 16 && f.size <= 256, "{f:?}");
}

#[test]
fn tiny_fp_dwarf_describes_the_saved_stack() {
    let dir = common::kernel_dir("tiny-fp");
    let loc = type_info::task_locator(&dir.join("vmlinux"), false);
    assert_eq!(loc.types.source, TypeInfoSource::Dwarf);
    check_blocked_layout(&loc.types);
    // UP kernel: no on_cpu (the one vCPU's `current` says who runs).
    assert_eq!(loc.types.task.on_cpu, None);
}

#[test]
fn tiny_orc_smp_has_on_cpu() {
    let dir = common::kernel_dir("tiny-orc");
    let loc = type_info::task_locator(&dir.join("bzImage"), false);
    check_blocked_layout(&loc.types);
    assert!(loc.types.task.on_cpu.is_some(), "{:?}", loc.types.task);
}

#[test]
fn debian_cloud_kernel_btf_describes_the_saved_stack() {
    let loc = type_info::debian_cloud_task_locator();
    assert_eq!(loc.types.source, TypeInfoSource::Btf);
    check_blocked_layout(&loc.types);
    assert!(loc.types.task.on_cpu.is_some(), "{:?}", loc.types.task);
    assert!(loc.symbols.init_task >= 0xffff_ffff_8000_0000);
}
