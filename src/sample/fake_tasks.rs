//! A made-up kernel's task layout for tests and benchmarks of the
//! blocked-stack reader: `task_struct`'s field offsets, where `init_task`
//! and pid 1 sit in a fake guest's memory, and the type info and symbols
//! that describe them.
//!
//! Compiled into the library's unit tests only (`cfg(test)`) and into
//! `benches/waits.rs`, which includes this file with `#[path]`: the fixture
//! stays out of the library's public API. So it names only
//! `boottrace_symbols` types, the same path in both crates.

use boottrace_symbols::typeinfo::{
    CurrentTaskField, CurrentTaskLocation, Field, InactiveTaskFrameLayout, KernelTypeInfo,
    PerCpuAddressing, TaskStructLayout, TaskSymbols, TypeInfoSource,
};

/// `task_struct.pid` (`tgid` follows it).
pub const PID: u64 = 0x10;
/// `task_struct.comm`.
pub const COMM: u64 = 0x20;
/// `task_struct.tasks`.
pub const TASKS: u64 = 0x30;
/// `task_struct.thread.sp`.
pub const SP: u64 = 0x40;
/// `task_struct.stack`.
pub const STACK: u64 = 0x8;
/// `task_struct.__state`.
pub const STATE: u64 = 0x0;
/// `task_struct.on_cpu` (SMP kernels only).
pub const ON_CPU: u64 = 0x48;
/// `task_struct.nvcsw`.
pub const NVCSW: u64 = 0x50;
/// `task_struct.nivcsw`.
pub const NIVCSW: u64 = 0x58;

/// Kernel virtual base of the fake guest's data, and where it is.
pub const VA: u64 = 0xffff_8880_0010_0000;
/// Guest-physical address of [`VA`].
pub const PA: u64 = 0x10_0000;
/// init_task and pid 1 inside it.
pub const INIT: u64 = VA + 0x1000;
/// pid 1's `task_struct`.
pub const PID1: u64 = VA + 0x2000;
/// pid 1's 16 KiB stack.
pub const STACK_BASE: u64 = VA + 0x8000;

/// The made-up kernel's type info (DWARF); `on_cpu`: an SMP kernel's
/// `task_struct` has the field.
pub fn types(on_cpu: bool) -> KernelTypeInfo {
    let f = |offset, size| Field { offset, size };
    KernelTypeInfo {
        source: TypeInfoSource::Dwarf,
        task: TaskStructLayout {
            size: 0x100,
            pid: f(PID, 4),
            tgid: f(PID + 4, 4),
            comm: f(COMM, 16),
            state: f(STATE, 4),
            flags: f(4, 4),
            stack: f(STACK, 8),
            thread_sp: f(SP, 8),
            tasks: Some(f(TASKS, 16)),
            on_cpu: on_cpu.then_some(f(ON_CPU, 4)),
            nvcsw: Some(f(NVCSW, 8)),
            nivcsw: Some(f(NIVCSW, 8)),
        },
        frame: InactiveTaskFrameLayout {
            size: 56,
            bp: 40,
            ret_addr: 48,
        },
        current: CurrentTaskField::PcpuHot { offset: 0 },
    }
}

/// The made-up kernel's symbols: `init_task` at [`INIT`], a UP kernel's
/// global `current`.
pub fn symbols() -> TaskSymbols {
    TaskSymbols {
        current: CurrentTaskLocation {
            symbol_value: 0,
            field_offset: 0,
            addressing: PerCpuAddressing::Global,
        },
        init_task: INIT,
        per_cpu_offset: None,
    }
}
