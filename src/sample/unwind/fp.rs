//! Frame-pointer unwinding (`UNWINDER_FRAME_POINTER`), after the kernel's
//! `arch/x86/kernel/unwind_frame.c`: `[rbp]` is the caller's rbp, `[rbp + 8]`
//! the return address; an odd rbp encodes a pointer to `pt_regs` (entry code's
//! `ENCODE_FRAME_POINTER`); a zero rbp ends the chain (head code clears it
//! before calling `x86_64_start_kernel`/`start_secondary`). Functions run on
//! the IRQ stack through `call_on_stack()` keep the task-stack rbp, and the
//! old stack pointer sits at the top of the IRQ stack, right above the first
//! frame there: that word is the only way back down to another stack besides
//! `pt_regs`.

use super::{ptregs, StackEnd, Stacks, Truncation, UnwindRegs, WalkCtx};
use crate::sample::pagewalk::GuestPhys;

/// Size of a frame header: saved rbp + return address.
const FRAME: u64 = 16;

/// Walks the rbp chain; `ctx.frames` already holds the sampled IP.
pub(crate) fn unwind<M: GuestPhys + ?Sized>(
    ctx: &mut WalkCtx<'_, '_, M>,
    regs: &UnwindRegs,
) -> StackEnd {
    match walk(ctx, regs) {
        Ok(()) => StackEnd::Complete,
        Err(t) => StackEnd::Truncated(t),
    }
}

fn walk<M: GuestPhys + ?Sized>(
    ctx: &mut WalkCtx<'_, '_, M>,
    regs: &UnwindRegs,
) -> Result<(), Truncation> {
    let mut stacks = Stacks::new(regs.rsp);
    let mut bp = regs.rbp;
    // Between a prologue's `push %rbp` and `mov %rsp, %rbp` the frame being
    // built is at rsp: start there, or the caller's frame would be skipped.
    if bp != 0 && regs.rsp % 8 == 0 && ctx.walker.read_u64(regs.rsp) == Some(bp) {
        bp = regs.rsp;
    }
    // The previous frame's rbp, for the IRQ-stack link (none before the first frame).
    let mut prev_bp: Option<u64> = None;
    // The next frame may be on another stack: after pt_regs (interrupted
    // context), and at the first frame when the sample is in a function that
    // has not set up its frame yet and runs on another stack than its caller
    // (a handler's first instructions on the IRQ stack). The latter only with
    // the layout known, so that return addresses are checked against the image.
    let mut may_switch = ctx.map.is_some();
    // Every iteration pushes one frame or returns, so max_depth bounds the loop.
    loop {
        if bp == 0 {
            return Ok(());
        }
        if bp & 1 == 1 {
            let regs_at = bp & !1;
            if regs_at % 8 != 0 {
                return Err(Truncation::BadFrame);
            }
            place(ctx, &mut stacks, regs_at, ptregs::SIZE, may_switch, prev_bp)?;
            if ctx.user_regs(regs_at)? {
                return Ok(());
            }
            let ip = ctx.read_at(regs_at, ptregs::IP)?;
            if ip == 0 {
                // A kernel thread's initial regs (copy_thread zeroes them): the root.
                return Ok(());
            }
            if !ctx.plausible_ip(ip) {
                return Err(Truncation::BadFrame);
            }
            ctx.push(ip)?;
            bp = ctx.read_at(regs_at, ptregs::BP)?;
            prev_bp = None;
            may_switch = true;
            continue;
        }
        if bp % 8 != 0 {
            return Err(Truncation::BadFrame);
        }
        if let Err(t) = place(ctx, &mut stacks, bp, FRAME, may_switch, prev_bp) {
            // A syscall's last frame sits right under the user pt_regs, whose
            // rbp is the user's: the kernel's is_last_task_frame().
            if let Some(p) = prev_bp {
                let above = p.checked_add(FRAME);
                if above.is_some_and(|a| ctx.user_regs(a).unwrap_or(false)) {
                    return Ok(());
                }
            }
            return Err(t);
        }
        let next = ctx.read(bp)?;
        let ret = ctx.read_at(bp, 8)?;
        if !ctx.plausible_ip(ret) {
            return Err(Truncation::BadFrame);
        }
        ctx.push(ret)?;
        prev_bp = Some(bp);
        may_switch = false;
        bp = next;
    }
}

/// Checks that a frame (or pt_regs) at `addr` is a legal next step and records it.
fn place<M: GuestPhys + ?Sized>(
    ctx: &mut WalkCtx<'_, '_, M>,
    stacks: &mut Stacks,
    addr: u64,
    size: u64,
    may_switch: bool,
    prev_bp: Option<u64>,
) -> Result<(), Truncation> {
    if may_switch {
        return stacks.up_or_switch(addr, size);
    }
    let err = match stacks.up(addr, size) {
        Ok(()) => return Ok(()),
        // Pointing back into walked frames is never rescued by a link.
        Err(Truncation::Cycle) => return Err(Truncation::Cycle),
        Err(e) => e,
    };
    // The first frame on an IRQ stack: the word above its return address is
    // the stack pointer saved by call_on_stack(); the next frame must lie
    // just above it on that other stack.
    let Some(p) = prev_bp else {
        return Err(err);
    };
    let Ok(link) = ctx.read_at(p, FRAME) else {
        return Err(err);
    };
    if link == 0 || link % 8 != 0 || addr < link || addr - link > 64 * 1024 {
        return Err(err);
    }
    stacks.switch(link, 0)?;
    stacks.up(addr, size)
}

#[cfg(test)]
mod tests {
    use super::super::{Method, Unwinder};
    use super::*;
    use crate::sample::pagewalk::{FakePageTables, FakePhys};
    use boottrace_symbols::layout::RunLayout;

    const STACK_VA: u64 = 0xffff_c900_0000_0000;
    const STACK_PA: u64 = 0x40_0000;
    const IRQ_VA: u64 = 0xffff_fe00_0000_4000;
    const IRQ_PA: u64 = 0x50_0000;
    const TEXT: u64 = 0xffff_ffff_8100_0000;

    struct Guest {
        mem: FakePhys,
        cr3: u64,
    }

    /// A 16 KiB task stack and a 16 KiB IRQ stack, 4 KiB pages, plus unmapped space.
    fn guest() -> Guest {
        let mut mem = FakePhys::new();
        let mut pt = FakePageTables::new(&mut mem, 0x10_0000, 0x4_0000, false);
        assert!(pt.map_region(&mut mem, STACK_VA, STACK_PA, 0x4000));
        assert!(pt.map_region(&mut mem, IRQ_VA, IRQ_PA, 0x4000));
        Guest { mem, cr3: pt.cr3() }
    }

    impl Guest {
        fn w(&mut self, va: u64, v: u64) {
            let pa = if va >= IRQ_VA {
                IRQ_PA + (va - IRQ_VA)
            } else {
                STACK_PA + (va - STACK_VA)
            };
            assert!(self.mem.write_u64(pa, v));
        }
        fn regs(&self, rip: u64, rsp: u64, rbp: u64) -> UnwindRegs {
            UnwindRegs {
                rip,
                rsp,
                rbp,
                cpl: 0,
                cr0: 0x8000_0011,
                cr3: self.cr3,
                cr4: 0x20,
                efer: 0x500,
                ..Default::default()
            }
        }
    }

    fn layout() -> RunLayout {
        RunLayout {
            kernel_virt_slide: 0,
            virt_slide_method: "test".into(),
            kernel_phys_start: Some(0x100_0000),
            kernel_link_start: TEXT,
            kernel_size: 0x100_0000,
            decompressor_bases: vec![0x10_0000],
            decompressor_size: 0x10_0000,
        }
    }

    fn run(g: &Guest, r: &UnwindRegs, with_layout: bool) -> (Vec<u64>, StackEnd) {
        let mut u = Unwinder::new(Method::FramePointer);
        if with_layout {
            u.set_layout(&layout());
        }
        let mut frames = Vec::new();
        let end = u.unwind(&g.mem, r, &mut frames);
        (frames, end)
    }

    /// Writes a chain of `n` frames from `bottom` upward, 0x40 apart, ending in rbp 0.
    fn chain(g: &mut Guest, bottom: u64, n: u64) -> Vec<u64> {
        let mut rets = Vec::new();
        for i in 0..n {
            let bp = bottom + i * 0x40;
            let next = if i + 1 == n { 0 } else { bp + 0x40 };
            let ret = TEXT + 0x1000 + i * 0x10;
            g.w(bp, next);
            g.w(bp + 8, ret);
            rets.push(ret);
        }
        rets
    }

    #[test]
    fn clean_chain_completes() {
        let mut g = guest();
        let rets = chain(&mut g, STACK_VA + 0x3000, 5);
        let r = g.regs(TEXT + 0x500, STACK_VA + 0x2ff0, STACK_VA + 0x3000);
        for with_layout in [false, true] {
            let (frames, end) = run(&g, &r, with_layout);
            assert_eq!(end, StackEnd::Complete);
            assert_eq!(frames[0], TEXT + 0x500);
            assert_eq!(&frames[1..], &rets[..]);
        }
    }

    #[test]
    fn cycle_is_detected() {
        let mut g = guest();
        chain(&mut g, STACK_VA + 0x3000, 3);
        g.w(STACK_VA + 0x3080, STACK_VA + 0x3000); // last frame points back to the first
        let r = g.regs(TEXT, STACK_VA + 0x2ff0, STACK_VA + 0x3000);
        let (frames, end) = run(&g, &r, true);
        assert_eq!(end, StackEnd::Truncated(Truncation::Cycle));
        assert_eq!(frames.len(), 4);
        // Self-loop.
        g.w(STACK_VA + 0x3000, STACK_VA + 0x3000);
        let (frames, end) = run(&g, &r, true);
        assert_eq!(end, StackEnd::Truncated(Truncation::Cycle));
        assert_eq!(frames.len(), 2);
    }

    #[test]
    fn garbage_rbp_and_unmapped_stack_truncate() {
        let mut g = guest();
        // rbp below rsp, rbp far above the stack, misaligned rbp, rbp unmapped.
        for bp in [
            STACK_VA + 0x100,
            STACK_VA + 0x20_0000,
            STACK_VA + 0x3003,
            0x1234_5678_9abc_def0,
        ] {
            let r = g.regs(TEXT, STACK_VA + 0x2000, bp);
            let (frames, end) = run(&g, &r, false);
            assert_eq!(frames, vec![TEXT]);
            assert!(
                matches!(end, StackEnd::Truncated(Truncation::BadFrame)),
                "{bp:#x}: {end:?}"
            );
        }
        // A chain that walks off the mapped stack top.
        chain(&mut g, STACK_VA + 0x3f80, 2);
        g.w(STACK_VA + 0x3fc0, STACK_VA + 0x4000);
        let r = g.regs(TEXT, STACK_VA + 0x3f00, STACK_VA + 0x3f80);
        let (frames, end) = run(&g, &r, false);
        assert_eq!(end, StackEnd::Truncated(Truncation::UnreadableStack));
        assert_eq!(frames.len(), 3);
        // A return address outside the kernel, with the layout known.
        chain(&mut g, STACK_VA + 0x3000, 2);
        g.w(STACK_VA + 0x3048, 0x4141_4141);
        let r = g.regs(TEXT, STACK_VA + 0x2ff0, STACK_VA + 0x3000);
        let (frames, end) = run(&g, &r, true);
        assert_eq!(end, StackEnd::Truncated(Truncation::BadFrame));
        assert_eq!(frames.len(), 2);
        // Unmapped rsp/rbp entirely.
        let r = g.regs(TEXT, 0xffff_c900_1000_0000, 0xffff_c900_1000_0010);
        let (frames, end) = run(&g, &r, false);
        assert_eq!(end, StackEnd::Truncated(Truncation::UnreadableStack));
        assert_eq!(frames.len(), 1);
    }

    #[test]
    fn depth_bomb_stops_at_the_cap() {
        let mut g = guest();
        // 255 frames 64 bytes apart would fill the 16 KiB stack: cap at 128.
        chain(&mut g, STACK_VA, 255);
        let r = g.regs(TEXT, STACK_VA, STACK_VA);
        let (frames, end) = run(&g, &r, true);
        assert_eq!(end, StackEnd::Truncated(Truncation::DepthLimit));
        assert_eq!(frames.len(), 128);
        let u = Unwinder::new(Method::FramePointer).with_max_depth(10);
        let mut frames = Vec::new();
        assert_eq!(
            u.unwind(&g.mem, &r, &mut frames),
            StackEnd::Truncated(Truncation::DepthLimit)
        );
        assert_eq!(frames.len(), 10);
    }

    #[test]
    fn pt_regs_frames_and_irq_stack_link() {
        let mut g = guest();
        // Task stack: interrupted function frame at 0x3e00 -> root frame at 0x3f00 (rbp 0).
        g.w(STACK_VA + 0x3e00, STACK_VA + 0x3f00);
        g.w(STACK_VA + 0x3e08, TEXT + 0x2000);
        g.w(STACK_VA + 0x3f00, 0);
        g.w(STACK_VA + 0x3f08, TEXT + 0x2100);
        // pt_regs at 0x3c00 for an interrupt taken at TEXT+0x1800 (kernel cs 0x10).
        let regs_at = STACK_VA + 0x3c00;
        g.w(regs_at + ptregs::BP, STACK_VA + 0x3e00);
        g.w(regs_at + ptregs::IP, TEXT + 0x1800);
        g.w(regs_at + ptregs::CS, 0x10);
        g.w(regs_at + ptregs::SP, STACK_VA + 0x3d00);
        // common_interrupt's frame on the task stack, rbp encoded as pt_regs.
        g.w(STACK_VA + 0x3b00, regs_at | 1);
        g.w(STACK_VA + 0x3b08, TEXT + 0x3000);
        // IRQ stack: handler frame at top - 16 with the saved task rsp above it,
        // and a deeper frame below.
        let tos = IRQ_VA + 0x3ff8;
        g.w(tos, STACK_VA + 0x3af0);
        g.w(tos - 16, STACK_VA + 0x3b00);
        g.w(tos - 8, TEXT + 0x3100);
        g.w(IRQ_VA + 0x3f00, tos - 16);
        g.w(IRQ_VA + 0x3f08, TEXT + 0x3200);
        let r = g.regs(TEXT + 0x3300, IRQ_VA + 0x3ef0, IRQ_VA + 0x3f00);
        let (frames, end) = run(&g, &r, true);
        assert_eq!(end, StackEnd::Complete, "{frames:x?}");
        assert_eq!(
            frames,
            vec![
                TEXT + 0x3300,
                TEXT + 0x3200,
                TEXT + 0x3100,
                TEXT + 0x3000,
                TEXT + 0x1800,
                TEXT + 0x2000,
                TEXT + 0x2100
            ]
        );
        // Without the saved rsp the jump back to the task stack is refused.
        g.w(tos, 0);
        let (frames, end) = run(&g, &r, true);
        assert_eq!(end, StackEnd::Truncated(Truncation::BadFrame));
        assert_eq!(frames.len(), 3);
    }

    #[test]
    fn prologue_and_leaf_on_the_irq_stack() {
        let mut g = guest();
        let rets = chain(&mut g, STACK_VA + 0x3000, 3);
        // After `push %rbp`, before `mov %rsp, %rbp`: [rsp] holds rbp, the
        // return address into the caller is right above it.
        let rsp = STACK_VA + 0x2f00;
        g.w(rsp, STACK_VA + 0x3000);
        g.w(rsp + 8, TEXT + 0x4000);
        let r = g.regs(TEXT + 0x500, rsp, STACK_VA + 0x3000);
        let (frames, end) = run(&g, &r, true);
        assert_eq!(end, StackEnd::Complete);
        let mut expect = vec![TEXT + 0x500, TEXT + 0x4000];
        expect.extend(&rets);
        assert_eq!(frames, expect);
        // A handler's first instruction on the IRQ stack: rbp is still the
        // caller's frame on the task stack, far away.
        let r = g.regs(TEXT + 0x500, IRQ_VA + 0x3ff0, STACK_VA + 0x3000);
        let (frames, end) = run(&g, &r, true);
        assert_eq!(end, StackEnd::Complete);
        assert_eq!(frames.len(), 4);
        // Without the layout to vouch for return addresses, that jump is refused.
        let (frames, end) = run(&g, &r, false);
        assert_eq!(
            (frames.len(), end),
            (1, StackEnd::Truncated(Truncation::BadFrame))
        );
    }

    #[test]
    fn user_regs_and_kthread_regs_end_cleanly() {
        let mut g = guest();
        let regs_at = STACK_VA + 0x3f00 - ptregs::SIZE + 8;
        let regs_at = regs_at & !7;
        // Kernel thread: ret_from_fork's frame has rbp = pt_regs | 1, regs zeroed.
        g.w(STACK_VA + 0x3d00, regs_at | 1);
        g.w(STACK_VA + 0x3d08, TEXT + 0x10);
        let r = g.regs(TEXT + 0x20, STACK_VA + 0x3cf0, STACK_VA + 0x3d00);
        let (frames, end) = run(&g, &r, true);
        assert_eq!((frames.len(), end), (2, StackEnd::Complete));
        // Syscall from user mode: the last frame's saved rbp is the user's, and
        // user pt_regs sit right above it.
        g.w(STACK_VA + 0x3d00, 0x7ffc_0000_1000);
        let top = STACK_VA + 0x3d10;
        g.w(top + ptregs::CS, 0x33);
        let (frames, end) = run(&g, &r, true);
        assert_eq!((frames.len(), end), (2, StackEnd::Complete));
        // User mode and 32-bit samples are not unwound.
        let mut u = g.regs(0x40_1000, 0x7ffc_0000_0000, 0);
        u.cpl = 3;
        assert_eq!(
            run(&g, &u, true).1,
            StackEnd::Truncated(Truncation::UserMode)
        );
        let mut p = g.regs(0x10_0000, 0x8ff0, 0);
        p.efer = 0;
        assert_eq!(
            run(&g, &p, true).1,
            StackEnd::Truncated(Truncation::NotLongMode)
        );
        // The decompressor has no frame pointers.
        let d = g.regs(0x10_0400, 0x8ff0, 0x8ff0);
        assert_eq!(
            run(&g, &d, true),
            (
                vec![0x10_0400],
                StackEnd::Truncated(Truncation::NoUnwindInfo)
            )
        );
    }

    #[test]
    fn rbp_at_the_top_of_the_address_space_is_a_bad_frame_not_a_wrap() {
        // The guest maps the last page of the address space and points rbp at
        // its last word: rbp + 8 wraps to 0 (a release build read address 0;
        // a debug build panicked).
        const TOP_VA: u64 = 0xffff_ffff_ffff_f000;
        const TOP_PA: u64 = 0x60_0000;
        let mut mem = FakePhys::new();
        let mut pt = FakePageTables::new(&mut mem, 0x10_0000, 0x4_0000, false);
        assert!(pt.map_region(&mut mem, TOP_VA, TOP_PA, 0x1000));
        // Address 0 is backed and mapped too, so a wrapped read would succeed.
        assert!(pt.map_region(&mut mem, 0, 0x70_0000, 0x1000));
        assert!(mem.write_u64(0x70_0000, TEXT + 0x10));
        assert!(mem.write_u64(TOP_PA + 0xff8, STACK_VA));
        let g = Guest { mem, cr3: pt.cr3() };
        let r = g.regs(TEXT + 0x500, TOP_VA + 0xf00, u64::MAX - 7);
        for with_layout in [false, true] {
            let (frames, end) = run(&g, &r, with_layout);
            assert_eq!(end, StackEnd::Truncated(Truncation::BadFrame));
            assert_eq!(frames, vec![TEXT + 0x500]);
        }
    }
}
