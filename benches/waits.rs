//! Benchmark: what the boot task's blocked stack adds to a sample's
//! unwind step, on made-up guest memory (no KVM): a running 12-frame
//! frame-pointer stack unwound per sample (today's cost), then the same plus
//! the blocked-stack reader (pid 1 switched out with a 12-frame saved
//! stack), steady state (the task did not switch: frames reused) and
//! worst case (it switched every sample: walked afresh).
//! `cargo bench --bench waits`. The real per-sample cost (kick, capture,
//! write included) is `examples/bench-waits.sh` (boots).

use std::hint::black_box;
use std::time::Instant;

use boottrace::sample::blocked::BlockedReader;
use boottrace::sample::pagewalk::{FakePageTables, FakePhys};
use boottrace::sample::task::{RunTasks, TaskLocator};
use boottrace::sample::unwind::{Method, UnwindRegs, Unwinder};

// The made-up kernel's layout, shared with the blocked-stack reader's unit tests.
#[path = "../src/sample/fake_tasks.rs"]
mod fake_tasks;

use fake_tasks::{INIT, NVCSW, PA, PID, PID1, SP, STACK, STACK_BASE, STATE, TASKS, VA};

const RUN_STACK: u64 = VA + 0x4000;
const DEPTH: u64 = 12;
const ITERS: u32 = 200_000;

fn locator() -> TaskLocator {
    TaskLocator {
        types: fake_tasks::types(false),
        symbols: fake_tasks::symbols(),
    }
}

fn w(mem: &mut FakePhys, va: u64, v: u64) {
    assert!(mem.write_u64(va - VA + PA, v));
}

/// A chain of `DEPTH` frames starting at `bp0` (each 0x40 above the last).
fn chain(mem: &mut FakePhys, bp0: u64) {
    for i in 0..DEPTH {
        let bp = bp0 + i * 0x40;
        let next = if i + 1 == DEPTH { 0 } else { bp + 0x40 };
        w(mem, bp, next);
        w(mem, bp + 8, 0xffff_ffff_8100_0000 + i * 0x100);
    }
}

fn time(label: &str, mut f: impl FnMut()) -> f64 {
    for _ in 0..1000 {
        f();
    }
    let t = Instant::now();
    for _ in 0..ITERS {
        f();
    }
    let ns = t.elapsed().as_nanos() as f64 / f64::from(ITERS);
    println!("{label:<52} {ns:>8.0} ns");
    ns
}

fn main() {
    let mut mem = FakePhys::new();
    let mut pt = FakePageTables::new(&mut mem, 0x1_0000, 0x1_0000, false);
    assert!(pt.map_region(&mut mem, VA, PA, 0x1_0000));
    // pid 1 forked and switched out.
    w(&mut mem, INIT + TASKS, PID1 + TASKS);
    assert!(mem.write(PID1 - VA + PA + PID, &1u32.to_le_bytes()));
    assert!(mem.write(PID1 - VA + PA + STATE, &2u32.to_le_bytes()));
    w(&mut mem, PID1 + STACK, STACK_BASE);
    let sp = STACK_BASE + 0x3000;
    w(&mut mem, PID1 + SP, sp);
    w(&mut mem, sp + 40, sp + 56 + 0x40);
    w(&mut mem, sp + 48, 0xffff_ffff_8100_0010);
    chain(&mut mem, sp + 56 + 0x40);
    // The running (idle) stack.
    chain(&mut mem, RUN_STACK + 0x100);
    let regs = UnwindRegs {
        rip: 0xffff_ffff_8100_0000,
        rsp: RUN_STACK + 0xf0,
        rbp: RUN_STACK + 0x100,
        cpl: 0,
        cr0: 0x8000_0001,
        cr3: pt.cr3(),
        cr4: 0x20,
        efer: 0x500,
        ..UnwindRegs::default()
    };
    let u = Unwinder::new(Method::FramePointer);
    let tasks = RunTasks::default();
    let mut frames = Vec::with_capacity(64);
    let base = time("running stack unwind (today)", || {
        black_box(u.unwind(&mem, &regs, &mut frames));
    });
    let mut r = BlockedReader::new(locator());
    // As the sampler calls it: one reused buffer for the blocked frames.
    let mut waits = Vec::with_capacity(64);
    let blocked = |r: &mut BlockedReader, mem: &FakePhys, waits: &mut Vec<u64>| {
        r.sample(mem, &regs, Some(0), Some(INIT), Some(&u), &tasks, waits)
    };
    assert!(blocked(&mut r, &mem, &mut waits).is_some(), "pid 1 blocked");
    assert_eq!(waits.len() as u64, DEPTH + 1);
    let steady = time("+ blocked stack, task did not switch (cached)", || {
        black_box(u.unwind(&mem, &regs, &mut frames));
        black_box(blocked(&mut r, &mem, &mut waits));
    });
    let mut n = 0u64;
    let fresh = time("+ blocked stack, task switched (walked afresh)", || {
        n += 1;
        w(&mut mem, PID1 + NVCSW, n);
        black_box(u.unwind(&mem, &regs, &mut frames));
        black_box(blocked(&mut r, &mem, &mut waits));
    });
    println!(
        "added per sample: {:.0} ns steady, {:.0} ns worst case (the whole sample: `cargo bench --bench sample_path`)",
        steady - base,
        fresh - base
    );
}
