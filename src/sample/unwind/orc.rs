//! ORC unwinding (`UNWINDER_ORC`), after the kernel's
//! `arch/x86/kernel/unwind_orc.c` (`unwind_next_frame`): for each frame, the
//! ORC entry of its IP (IP − 1 for return addresses, the IP itself after an
//! interrupt) gives the CFA from SP/BP (or, in entry code, from a saved
//! register or an indirect word — the IRQ-stack switch of `call_on_stack()`
//! uses SP_INDIRECT), the frame type (CALL: return address at CFA − 8; REGS:
//! full `pt_regs` at the CFA; REGS_PARTIAL: iret frame at the CFA) and where
//! the caller's BP is. Runtime IPs are mapped to link time through the run
//! layout (KASLR slide, or the physical load address for head code).

use boottrace_symbols::layout::KERNEL_HALF;
use boottrace_symbols::orc::{OrcReg, OrcTable, OrcType};

use super::{ptregs, rel, StackEnd, Stacks, Truncation, UnwindRegs, WalkCtx};
use crate::sample::pagewalk::GuestPhys;

/// Where the registers of the current frame's caller context can be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RegsAt {
    /// No saved registers (an ordinary call frame).
    None,
    /// The sampled vCPU registers themselves (first frame).
    Live,
    /// A full `pt_regs` at this address.
    Full(u64),
    /// Only the iret frame; the value is where `pt_regs` would start.
    Iret(u64),
}

/// Walks with ORC; `ctx.frames` already holds the sampled IP.
pub(crate) fn unwind<M: GuestPhys + ?Sized>(
    ctx: &mut WalkCtx<'_, '_, M>,
    table: &OrcTable,
    regs: &UnwindRegs,
) -> StackEnd {
    match walk(ctx, table, regs) {
        Ok(()) => StackEnd::Complete,
        Err(t) => StackEnd::Truncated(t),
    }
}

/// A register value from saved registers, as the kernel's `get_reg()`.
fn get_reg<M: GuestPhys + ?Sized>(
    ctx: &mut WalkCtx<'_, '_, M>,
    live: &UnwindRegs,
    regs: RegsAt,
    prev: RegsAt,
    off: u64,
) -> Result<Option<u64>, Truncation> {
    let from = match regs {
        RegsAt::Iret(_) => prev,
        r => r,
    };
    match from {
        RegsAt::None | RegsAt::Iret(_) => Ok(None),
        RegsAt::Live => Ok(match off {
            ptregs::BP => Some(live.rbp),
            ptregs::R10 => Some(live.r10),
            ptregs::R13 => Some(live.r13),
            ptregs::DI => Some(live.rdi),
            ptregs::DX => Some(live.rdx),
            _ => None,
        }),
        RegsAt::Full(at) => ctx.read_at(at, off).map(Some),
    }
}

fn walk<M: GuestPhys + ?Sized>(
    ctx: &mut WalkCtx<'_, '_, M>,
    table: &OrcTable,
    live: &UnwindRegs,
) -> Result<(), Truncation> {
    let (mut ip, mut sp, mut bp) = (live.rip, live.rsp, live.rbp);
    let mut regs = RegsAt::Live;
    let mut prev = RegsAt::None;
    // The sampled IP was interrupted, not a return address: look it up as is.
    let mut signal = true;
    let mut stacks = Stacks::new(sp);
    stacks.up(sp, 8)?;
    // Every iteration pushes one frame or returns, so max_depth bounds the loop.
    loop {
        let lookup = if signal {
            ip
        } else {
            ip.checked_sub(1).ok_or(Truncation::NoOrcEntry)?
        };
        let link = link_ip(ctx, lookup).ok_or(Truncation::NoOrcEntry)?;
        let e = table.lookup(link).ok_or(Truncation::NoOrcEntry)?;
        match e.kind {
            // A "return address" at the very start of an END_OF_STACK region was
            // not pushed by a call: a new task's first switch returns to
            // ret_from_fork_asm itself. That is its root.
            OrcType::Undefined
                if !signal
                    && link_ip(ctx, ip)
                        .and_then(|l| table.lookup(l))
                        .is_some_and(|e| e.kind == OrcType::EndOfStack) =>
            {
                return Ok(())
            }
            OrcType::Undefined => return Err(Truncation::UndefinedOrc),
            OrcType::EndOfStack => return Ok(()),
            OrcType::Unknown(_) => return Err(Truncation::BadOrcEntry),
            OrcType::Call | OrcType::Regs | OrcType::RegsPartial => {}
        }
        signal = e.signal;
        let off = i64::from(e.sp_offset);
        // The previous frame's stack pointer (CFA), and whether it may be on another stack.
        let (cfa, may_switch) = match e.sp_reg {
            OrcReg::Sp => (rel(sp, off)?, false),
            OrcReg::Bp => (rel(bp, off)?, false),
            OrcReg::SpIndirect => (rel(ctx.read(sp)?, off)?, true),
            OrcReg::BpIndirect => (ctx.read_rel(bp, off)?, true),
            // The kernel ignores sp_offset for these.
            OrcReg::R10 | OrcReg::R13 | OrcReg::Di | OrcReg::Dx => {
                let reg_off = match e.sp_reg {
                    OrcReg::R10 => ptregs::R10,
                    OrcReg::R13 => ptregs::R13,
                    OrcReg::Di => ptregs::DI,
                    _ => ptregs::DX,
                };
                let v = get_reg(ctx, live, regs, prev, reg_off)?;
                (v.ok_or(Truncation::BadOrcEntry)?, true)
            }
            _ => return Err(Truncation::BadOrcEntry),
        };
        let (new_ip, new_sp, new_regs, new_prev) = match e.kind {
            OrcType::Call => {
                let ret = ctx.read_rel(cfa, -8)?;
                (ret, cfa, RegsAt::None, RegsAt::None)
            }
            OrcType::Regs => {
                let ip = ctx.read_at(cfa, ptregs::IP)?;
                let sp = ctx.read_at(cfa, ptregs::SP)?;
                (ip, sp, RegsAt::Full(cfa), RegsAt::None)
            }
            _ => {
                // REGS_PARTIAL: the iret frame is at the CFA.
                let ip = ctx.read(cfa)?;
                let sp = ctx.read_at(cfa, ptregs::SP - ptregs::IP)?;
                let keep = match regs {
                    RegsAt::Full(_) | RegsAt::Live => regs,
                    _ => RegsAt::None,
                };
                (
                    ip,
                    sp,
                    RegsAt::Iret(cfa.checked_sub(ptregs::IP).ok_or(Truncation::BadFrame)?),
                    keep,
                )
            }
        };
        let boff = i64::from(e.bp_offset);
        let new_bp = match e.bp_reg {
            OrcReg::Undefined => get_reg(ctx, live, new_regs, new_prev, ptregs::BP)?.unwrap_or(bp),
            OrcReg::PrevSp => ctx.read_rel(cfa, boff)?,
            OrcReg::Bp => ctx.read_rel(bp, boff)?,
            _ => return Err(Truncation::BadOrcEntry),
        };
        let interrupt = matches!(e.kind, OrcType::Regs | OrcType::RegsPartial);
        if interrupt {
            let at = match new_regs {
                RegsAt::Full(a) | RegsAt::Iret(a) => a,
                _ => cfa,
            };
            if ctx.user_regs(at)? {
                // Entered from user mode: the kernel stack ends here.
                return Ok(());
            }
        }
        if interrupt || may_switch {
            stacks.up_or_switch(new_sp, 8)?;
        } else {
            stacks.up(new_sp, 8)?;
        }
        if !ctx.plausible_ip(new_ip) {
            return Err(Truncation::BadFrame);
        }
        ctx.push(new_ip)?;
        (ip, sp, bp, regs, prev) = (new_ip, new_sp, new_bp, new_regs, new_prev);
    }
}

/// Link-time address of a runtime kernel IP; without a layout, kernel-half
/// IPs are taken as unrelocated.
fn link_ip<M: GuestPhys + ?Sized>(ctx: &WalkCtx<'_, '_, M>, ip: u64) -> Option<u64> {
    match ctx.map {
        Some(m) => m.link_ip(ip),
        None => (ip >= KERNEL_HALF).then_some(ip),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::{Method, Unwinder};
    use super::*;
    use crate::sample::pagewalk::{FakePageTables, FakePhys, PageSize};
    use boottrace_symbols::layout::RunLayout;
    use boottrace_symbols::orc::OrcVersion;

    const LINK: u64 = 0xffff_ffff_8100_0000;
    const SLIDE: u64 = 0x1a00_0000;
    const TEXT: u64 = LINK + SLIDE;
    const PHYS: u64 = 0x300_0000;
    const STACK_VA: u64 = 0xffff_c900_0000_0000;
    const STACK_PA: u64 = 0x40_0000;
    const IRQ_VA: u64 = 0xffff_fe00_0000_4000;
    const IRQ_PA: u64 = 0x50_0000;
    /// A task stack a few pages above the IRQ stack (vmalloc neighbours).
    const NEAR_VA: u64 = IRQ_VA + 0x12000;
    const NEAR_PA: u64 = 0x60_0000;

    // V3 flag helpers.
    const SP: u16 = 5;
    const BP: u16 = 4;
    const SP_IND: u16 = 9;
    const R10: u16 = 6;
    const PREV_SP: u16 = 1 << 4;
    const BP_BP: u16 = 4 << 4;
    const UNDEF: u16 = 0;
    const END: u16 = 1 << 8;
    const CALL: u16 = 2 << 8;
    const REGS: u16 = 3 << 8;
    const PARTIAL: u16 = 4 << 8;
    const SIGNAL: u16 = 0x800;

    /// (link offset, sp_offset, bp_offset, flags), sorted by offset.
    const ENTRIES: &[(u64, i16, i16, u16)] = &[
        (0x1000, 16, 0, SP | CALL),             // leaf-ish: CFA = sp + 16
        (0x2000, 32, -16, SP | PREV_SP | CALL), // saved rbp at CFA - 16
        (0x2f00, 0, 0, UNDEF),                  // padding before the root
        (0x3000, 0, 0, END),                    // root
        (0x4000, 0, 0, SP | REGS | SIGNAL),     // after `call handler` in an entry stub
        (0x5000, 0, 0, SP | PARTIAL | SIGNAL),  // iret frame at sp
        (0x6000, 24, 0, SP_IND | CALL),         // call_on_stack(): old sp at [sp]
        (0x7000, 0, 0, UNDEF),                  // no info
        (0x8000, 16, -16, BP | BP_BP | CALL),   // frame-pointer-style ORC
        (0x9000, 0, 0, R10 | CALL),             // CFA in r10
        (0xa000, 0, 0, 7 << 8),                 // unknown type
        (0xb000, 0x800, 0, SP | CALL),          // a 2 KiB frame
        (0xf000, 0, 0, UNDEF),                  // terminator
    ];

    fn table() -> Arc<OrcTable> {
        let ip_addr = LINK + 0x100_0000;
        let mut ipb = Vec::new();
        let mut ub = Vec::new();
        for (i, &(o, spo, bpo, f)) in ENTRIES.iter().enumerate() {
            let rel = (LINK + o) as i64 - (ip_addr + 4 * i as u64) as i64;
            ipb.extend_from_slice(&(rel as i32).to_le_bytes());
            ub.extend_from_slice(&spo.to_le_bytes());
            ub.extend_from_slice(&bpo.to_le_bytes());
            ub.extend_from_slice(&f.to_le_bytes());
        }
        Arc::new(OrcTable::from_sections(ip_addr, &ipb, &ub, OrcVersion::V3).expect("table"))
    }

    fn layout() -> RunLayout {
        RunLayout {
            kernel_virt_slide: SLIDE as i64,
            virt_slide_method: "test".into(),
            kernel_phys_start: Some(PHYS),
            kernel_link_start: LINK,
            kernel_size: 0x10_0000,
            decompressor_bases: vec![],
            decompressor_size: 0,
        }
    }

    struct Guest {
        mem: FakePhys,
        cr3: u64,
    }

    fn guest() -> Guest {
        let mut mem = FakePhys::new();
        let mut pt = FakePageTables::new(&mut mem, 0x10_0000, 0x4_0000, false);
        assert!(pt.map_region(&mut mem, STACK_VA, STACK_PA, 0x4000));
        assert!(pt.map_region(&mut mem, IRQ_VA, IRQ_PA, 0x4000));
        assert!(pt.map_region(&mut mem, NEAR_VA, NEAR_PA, 0x4000));
        // Identity map for head code running at physical addresses.
        assert!(pt.map(&mut mem, 0x40_0000, 0x40_0000, PageSize::Size2M));
        Guest { mem, cr3: pt.cr3() }
    }

    impl Guest {
        fn w(&mut self, va: u64, v: u64) {
            let pa = if va >= NEAR_VA {
                NEAR_PA + (va - NEAR_VA)
            } else if va >= IRQ_VA {
                IRQ_PA + (va - IRQ_VA)
            } else if va >= STACK_VA {
                STACK_PA + (va - STACK_VA)
            } else {
                va
            };
            assert!(self.mem.write_u64(pa, v), "{va:#x}");
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
        fn run(&self, r: &UnwindRegs) -> (Vec<u64>, StackEnd) {
            let mut u = Unwinder::new(Method::Orc(table()));
            u.set_layout(&layout());
            let mut frames = Vec::new();
            let end = u.unwind(&self.mem, r, &mut frames);
            (frames, end)
        }
    }

    #[test]
    fn call_frames_to_end_of_stack() {
        let mut g = guest();
        let sp0 = STACK_VA + 0x3000;
        // Frame 0 at TEXT+0x1010: CFA = sp0 + 16, return into 0x2000's range.
        g.w(sp0 + 8, TEXT + 0x2010);
        // Frame 1: CFA = (sp0 + 16) + 32, saved rbp at CFA - 16, return into the root.
        let cfa1 = sp0 + 16 + 32;
        g.w(cfa1 - 16, 0x1234);
        g.w(cfa1 - 8, TEXT + 0x3010);
        let (frames, end) = g.run(&g.regs(TEXT + 0x1010, sp0, 0));
        assert_eq!(end, StackEnd::Complete);
        assert_eq!(frames, vec![TEXT + 0x1010, TEXT + 0x2010, TEXT + 0x3010]);
    }

    #[test]
    fn return_address_is_looked_up_at_ip_minus_one() {
        let mut g = guest();
        let sp0 = STACK_VA + 0x3000;
        // Returning to exactly TEXT+0x2000 means the call was in the 0x1000 range
        // (CFA + 16), not the 0x2000 one: the next return sits at +16 from the CFA.
        g.w(sp0 + 8, TEXT + 0x2000);
        g.w(sp0 + 16 + 8, TEXT + 0x3010);
        let (frames, end) = g.run(&g.regs(TEXT + 0x1010, sp0, 0));
        assert_eq!((frames.len(), end), (3, StackEnd::Complete));
    }

    #[test]
    fn regs_frame_from_kernel_and_user() {
        let mut g = guest();
        // Sampled in an entry stub right after `call handler` returned: pt_regs at sp.
        let regs_at = STACK_VA + 0x3000;
        g.w(regs_at + ptregs::IP, TEXT + 0x1020);
        g.w(regs_at + ptregs::CS, 0x10);
        g.w(regs_at + ptregs::SP, STACK_VA + 0x3800);
        g.w(regs_at + ptregs::BP, 0x5555);
        // The interrupted function (0x1000 range): CFA = sp + 16 → root.
        g.w(STACK_VA + 0x3808, TEXT + 0x3020);
        let (frames, end) = g.run(&g.regs(TEXT + 0x4008, regs_at, 0));
        assert_eq!(end, StackEnd::Complete);
        assert_eq!(frames, vec![TEXT + 0x4008, TEXT + 0x1020, TEXT + 0x3020]);
        // Same pt_regs but from user mode: the walk ends at the entry.
        g.w(regs_at + ptregs::CS, 0x33);
        let (frames, end) = g.run(&g.regs(TEXT + 0x4008, regs_at, 0));
        assert_eq!((frames, end), (vec![TEXT + 0x4008], StackEnd::Complete));
    }

    #[test]
    fn regs_partial_frame_switches_stack() {
        let mut g = guest();
        // An iret frame on the IRQ stack for an interrupt of task-stack code.
        let iret = IRQ_VA + 0x3f00;
        g.w(iret, TEXT + 0x1030);
        g.w(iret + 8, 0x10);
        g.w(iret + 24, STACK_VA + 0x2000);
        g.w(STACK_VA + 0x2008, TEXT + 0x3000 + 1);
        let (frames, end) = g.run(&g.regs(TEXT + 0x5004, iret, 0));
        assert_eq!(end, StackEnd::Complete, "{frames:x?}");
        assert_eq!(frames, vec![TEXT + 0x5004, TEXT + 0x1030, TEXT + 0x3001]);
    }

    #[test]
    fn sp_indirect_irq_stack_switch() {
        let mut g = guest();
        // Handler on the IRQ stack (0x1000 range, CFA = sp + 16) returns into the
        // call_on_stack() site (SP_INDIRECT + 24): old sp saved at the IRQ stack top.
        let sp0 = IRQ_VA + 0x3fe8;
        let tos = sp0 + 16;
        g.w(sp0 + 8, TEXT + 0x6010);
        let task_sp = STACK_VA + 0x3000;
        g.w(tos, task_sp);
        // CFA of the caller = task_sp + 24; its return goes to the root.
        g.w(task_sp + 24 - 8, TEXT + 0x3010);
        let (frames, end) = g.run(&g.regs(TEXT + 0x1040, sp0, 0));
        assert_eq!(end, StackEnd::Complete, "{frames:x?}");
        assert_eq!(frames, vec![TEXT + 0x1040, TEXT + 0x6010, TEXT + 0x3010]);
    }

    #[test]
    fn switch_to_a_neighbouring_task_stack_and_climb_it() {
        let mut g = guest();
        // Handler on the IRQ stack; the call_on_stack() site switches to a task
        // stack 72 KiB above, whose frames then climb 8 KiB more: well past any
        // single stack's span from the IRQ stack pointer.
        let sp0 = IRQ_VA + 0x3fe8;
        g.w(sp0 + 8, TEXT + 0x6010);
        let task_sp = NEAR_VA + 0x1000;
        g.w(sp0 + 16, task_sp);
        let mut cfa = task_sp + 24;
        let mut expect = vec![TEXT + 0x1040, TEXT + 0x6010];
        for _ in 0..4 {
            g.w(cfa - 8, TEXT + 0xb010);
            expect.push(TEXT + 0xb010);
            cfa += 0x800;
        }
        g.w(cfa - 8, TEXT + 0x3010);
        expect.push(TEXT + 0x3010);
        let (frames, end) = g.run(&g.regs(TEXT + 0x1040, sp0, 0));
        assert_eq!(end, StackEnd::Complete, "{frames:x?}");
        assert_eq!(frames, expect);
    }

    #[test]
    fn return_to_the_start_of_an_end_of_stack_region_is_the_root() {
        let mut g = guest();
        // A new task in __switch_to: its return address is ret_from_fork_asm
        // itself (copy_thread put it there, no call precedes it).
        let sp0 = STACK_VA + 0x3000;
        g.w(sp0 + 8, TEXT + 0x3000);
        let (frames, end) = g.run(&g.regs(TEXT + 0x1010, sp0, 0));
        assert_eq!(
            (frames, end),
            (vec![TEXT + 0x1010, TEXT + 0x3000], StackEnd::Complete)
        );
    }

    #[test]
    fn bp_based_and_register_based_cfa() {
        let mut g = guest();
        let bp = STACK_VA + 0x3100;
        // CFA = bp + 16; saved rbp at [bp + -16 + ...]: bp_reg BP: [bp - 16].
        g.w(bp + 8, TEXT + 0x3010);
        g.w(bp - 16, 0x77);
        let (frames, end) = g.run(&g.regs(TEXT + 0x8000, STACK_VA + 0x3000, bp));
        assert_eq!((frames.len(), end), (2, StackEnd::Complete));
        // R10 holds the CFA in the first frame (live register).
        let mut r = g.regs(TEXT + 0x9000, STACK_VA + 0x3000, 0);
        r.r10 = STACK_VA + 0x3200;
        g.w(STACK_VA + 0x31f8, TEXT + 0x3010);
        let (frames, end) = g.run(&r);
        assert_eq!((frames.len(), end), (2, StackEnd::Complete));
    }

    #[test]
    fn physical_head_code_ips_map_through_the_load_address() {
        let mut g = guest();
        // Head code before the switch to virtual addresses: RIP and return
        // addresses are physical, the stack identity-mapped.
        let sp0 = 0x40_1000;
        g.w(sp0 + 8, PHYS + 0x3008);
        let (frames, end) = g.run(&g.regs(PHYS + 0x1008, sp0, 0));
        assert_eq!(
            (frames, end),
            (vec![PHYS + 0x1008, PHYS + 0x3008], StackEnd::Complete)
        );
    }

    #[test]
    fn bad_entries_and_garbage_truncate() {
        let g = guest();
        let sp0 = STACK_VA + 0x3000;
        let r = |ip| g.regs(ip, sp0, 0);
        assert_eq!(
            g.run(&r(TEXT + 0x7000)).1,
            StackEnd::Truncated(Truncation::UndefinedOrc)
        );
        assert_eq!(
            g.run(&r(TEXT + 0xa000)).1,
            StackEnd::Truncated(Truncation::BadOrcEntry)
        );
        assert_eq!(
            g.run(&r(TEXT + 0x10)).1,
            StackEnd::Truncated(Truncation::NoOrcEntry)
        );
        assert_eq!(
            g.run(&r(0x1234)).1,
            StackEnd::Truncated(Truncation::NoOrcEntry)
        );
        // R10 needed but no registers saved (second frame).
        let mut g2 = guest();
        g2.w(sp0 + 8, TEXT + 0x9001);
        let (f, e) = g2.run(&g2.regs(TEXT + 0x1000, sp0, 0));
        assert_eq!(
            (f.len(), e),
            (2, StackEnd::Truncated(Truncation::BadOrcEntry))
        );
        // Return address outside the kernel.
        g2.w(sp0 + 8, 0xdead_beef);
        let (f, e) = g2.run(&g2.regs(TEXT + 0x1000, sp0, 0));
        assert_eq!((f.len(), e), (1, StackEnd::Truncated(Truncation::BadFrame)));
        // Unmapped stack.
        let (f, e) = g2.run(&g2.regs(TEXT + 0x1000, 0xffff_c900_4000_0000, 0));
        assert_eq!(
            (f.len(), e),
            (1, StackEnd::Truncated(Truncation::UnreadableStack))
        );
        // BP-based CFA that goes down the stack.
        let (f, e) = g2.run(&g2.regs(TEXT + 0x8000, sp0, sp0 - 0x100));
        assert_eq!((f.len(), e), (1, StackEnd::Truncated(Truncation::BadFrame)));
    }

    #[test]
    fn recursion_bomb_hits_the_depth_cap() {
        let mut g = guest();
        // Each frame: CFA = sp + 16, return into the same 0x1000 range: 0x4000 / 16 frames.
        let base = STACK_VA;
        for i in 0..0x400u64 {
            g.w(base + i * 16 + 8, TEXT + 0x1100);
        }
        let (f, e) = g.run(&g.regs(TEXT + 0x1000, base, 0));
        assert_eq!(
            (f.len(), e),
            (128, StackEnd::Truncated(Truncation::DepthLimit))
        );
    }

    #[test]
    fn indirect_cycle_is_detected() {
        let mut g = guest();
        // SP_INDIRECT whose saved sp points back into the frames walked.
        let sp0 = STACK_VA + 0x3000;
        g.w(sp0 + 8, TEXT + 0x6010);
        g.w(sp0 + 16, sp0 - 24 + 8);
        let (f, e) = g.run(&g.regs(TEXT + 0x1000, sp0, 0));
        assert_eq!(e, StackEnd::Truncated(Truncation::Cycle), "{f:x?}");
    }

    #[test]
    fn cfa_that_wraps_is_a_bad_frame() {
        // rsp near 2^64 with an ORC entry "CFA = sp + 16": the sum wraps.
        let g = guest();
        let (frames, end) = g.run(&g.regs(TEXT + 0x1010, u64::MAX - 7, 0));
        assert_eq!(end, StackEnd::Truncated(Truncation::BadFrame));
        assert_eq!(frames, vec![TEXT + 0x1010]);
    }
}
