//! Guest kernel stack unwinding at sample time, from the vCPU's registers and
//! guest memory: a frame-pointer unwinder ([`fp`]) for kernels built with
//! `UNWINDER_FRAME_POINTER`, and an ORC unwinder ([`orc`]) for `UNWINDER_ORC`.
//!
//! The guest is untrusted: every read goes through the page walker and is
//! bounds-checked, the number of frames is capped, a frame may only move up
//! its stack (or to another stack through `pt_regs`, an IRQ-stack link or an
//! indirect ORC base), and nothing panics. A sample keeps the frames that
//! unwound and a [`StackEnd`] saying why the walk stopped.

pub mod fp;
pub mod orc;

use std::sync::Arc;

use boottrace_symbols::layout::{AddrSpace, RunLayout};
use boottrace_symbols::orc::OrcTable;
use kvm_bindings::{kvm_regs, kvm_sregs};

use super::pagewalk::{GuestPhys, PageWalker, PagingMode};

/// Default cap on frames per sample (the kernel's own stack dumps stop far earlier).
pub const DEFAULT_MAX_DEPTH: usize = 128;
/// Largest distance a walk may climb on one stack. Kernel stacks are 16 KiB
/// (32 KiB with KASAN), the decompressor's 64 KiB at most.
const MAX_STACK_SPAN: u64 = 64 * 1024;
/// Largest gap between one frame and the next on the same stack. The kernel
/// warns about frames over 2 KiB (`FRAME_WARN`); a bigger jump is a move to
/// another stack — vmalloc'ed task and IRQ stacks can sit a few pages apart,
/// and only the ways the caller vouches for may cross between them.
const MAX_FRAME_GAP: u64 = 8 * 1024;
/// Stacks one walk may visit (task, IRQ, exception/NMI, entry): more is garbage.
const MAX_STACKS: usize = 8;

/// `struct pt_regs` (x86_64) offsets used by the unwinders.
pub(crate) mod ptregs {
    /// `r13`.
    pub const R13: u64 = 16;
    /// `bp`.
    pub const BP: u64 = 32;
    /// `r10`.
    pub const R10: u64 = 56;
    /// `dx`.
    pub const DX: u64 = 96;
    /// `di`.
    pub const DI: u64 = 112;
    /// `ip` (start of the hardware iret frame).
    pub const IP: u64 = 128;
    /// `cs`.
    pub const CS: u64 = 136;
    /// `sp`.
    pub const SP: u64 = 152;
    /// `sizeof(struct pt_regs)`.
    pub const SIZE: u64 = 168;
}

/// The registers an unwind starts from (one sample of one vCPU).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnwindRegs {
    /// Instruction pointer.
    pub rip: u64,
    /// Stack pointer.
    pub rsp: u64,
    /// Frame pointer (a general register in ORC kernels).
    pub rbp: u64,
    /// Current privilege level (0 kernel, 3 user).
    pub cpl: u8,
    /// CR0 (PE, PG).
    pub cr0: u64,
    /// CR3 (page-table root).
    pub cr3: u64,
    /// CR4 (LA57).
    pub cr4: u64,
    /// EFER (LMA).
    pub efer: u64,
    /// RDI: ORC may base the CFA on it in entry code (0 when not captured).
    pub rdi: u64,
    /// RDX, as `rdi`.
    pub rdx: u64,
    /// R10, as `rdi`.
    pub r10: u64,
    /// R13, as `rdi`.
    pub r13: u64,
}

impl UnwindRegs {
    /// From KVM_GET_REGS / KVM_GET_SREGS (or the same structs in `kvm_run`'s sync regs).
    pub fn from_kvm(regs: &kvm_regs, sregs: &kvm_sregs) -> UnwindRegs {
        // CPL is SS.DPL once protected mode is on (KVM reports it that way too).
        let cpl = if sregs.cr0 & 1 == 0 {
            0
        } else {
            sregs.ss.dpl & 3
        };
        UnwindRegs {
            rip: regs.rip,
            rsp: regs.rsp,
            rbp: regs.rbp,
            cpl,
            cr0: sregs.cr0,
            cr3: sregs.cr3,
            cr4: sregs.cr4,
            efer: sregs.efer,
            rdi: regs.rdi,
            rdx: regs.rdx,
            r10: regs.r10,
            r13: regs.r13,
        }
    }

    /// The paging mode these control registers select.
    pub fn paging_mode(&self) -> PagingMode {
        PagingMode::from_regs(self.cr0, self.cr4, self.efer)
    }

    /// A page walker over `mem` with these control registers.
    pub fn walker<'m, M: GuestPhys + ?Sized>(&self, mem: &'m M) -> PageWalker<'m, M> {
        PageWalker::new(mem, self.cr0, self.cr3, self.cr4, self.efer)
    }
}

/// Why a walk stopped short of a clean end. The codes are stable (trace
/// files store them); 2–4 coincide with the trace's coarse classes
/// (truncated, depth limit, not unwound).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Truncation {
    /// A frame broke the rules: moved down its stack, too far, misaligned, or
    /// returned outside the kernel.
    BadFrame = 2,
    /// The frame cap was reached.
    DepthLimit = 3,
    /// The vCPU was in user mode (user stacks are not unwound).
    UserMode = 4,
    /// A stack or `pt_regs` word was unmapped or outside guest memory.
    UnreadableStack = 5,
    /// No ORC entry covers the IP (or the IP is not in the kernel image).
    NoOrcEntry = 6,
    /// The ORC entry for the IP is UNDEFINED (no unwind info there).
    UndefinedOrc = 7,
    /// A frame pointed back into frames already walked.
    Cycle = 8,
    /// An ORC entry with a register or type this unwinder does not know, or
    /// one needing a register the frame does not have.
    BadOrcEntry = 9,
    /// The vCPU was not in long mode (real/protected-mode code is not unwound).
    NotLongMode = 10,
    /// The IP is in code with no unwind information (the bzImage decompressor,
    /// built without frame pointers or ORC).
    NoUnwindInfo = 11,
}

impl Truncation {
    const ALL: [Truncation; 10] = [
        Truncation::BadFrame,
        Truncation::DepthLimit,
        Truncation::UserMode,
        Truncation::UnreadableStack,
        Truncation::NoOrcEntry,
        Truncation::UndefinedOrc,
        Truncation::Cycle,
        Truncation::BadOrcEntry,
        Truncation::NotLongMode,
        Truncation::NoUnwindInfo,
    ];

    /// True when no walk was attempted (user mode, not long mode, code
    /// without unwind info): the sample is a single frame by design.
    pub fn not_attempted(self) -> bool {
        matches!(
            self,
            Truncation::UserMode | Truncation::NotLongMode | Truncation::NoUnwindInfo
        )
    }
}

/// How a walk ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StackEnd {
    /// Reached a clean end: zero frame pointer, ORC END_OF_STACK, a kernel
    /// thread's initial `pt_regs`, or `pt_regs` from user mode.
    Complete,
    /// Stopped early; the frames collected so far are kept.
    Truncated(Truncation),
}

impl StackEnd {
    /// Stable one-byte code for the trace file: 1 = complete, 2.. = a
    /// [`Truncation`]; 0 is left for "not recorded".
    pub fn as_u8(self) -> u8 {
        match self {
            StackEnd::Complete => 1,
            StackEnd::Truncated(t) => t as u8,
        }
    }

    /// Inverse of [`StackEnd::as_u8`]; `None` for 0 and unknown codes.
    pub fn from_u8(v: u8) -> Option<StackEnd> {
        if v == 1 {
            return Some(StackEnd::Complete);
        }
        Truncation::ALL
            .into_iter()
            .find(|&t| t as u8 == v)
            .map(StackEnd::Truncated)
    }

    /// True for [`StackEnd::Complete`].
    pub fn is_complete(self) -> bool {
        self == StackEnd::Complete
    }
}

/// Where the kernel image is at run time, as the unwinders need it.
#[derive(Debug, Clone, Default)]
pub(crate) struct KernelMap {
    layout: RunLayout,
}

impl KernelMap {
    /// Link-time address of a runtime kernel IP (virtual or physical), or
    /// `None` when the IP is not in the kernel image.
    pub(crate) fn link_ip(&self, ip: u64) -> Option<u64> {
        match self.layout.classify(ip, 0) {
            AddrSpace::Kernel(link) => Some(link),
            _ => None,
        }
    }

    /// True when the IP is in the decompressor.
    pub(crate) fn in_decompressor(&self, ip: u64) -> bool {
        matches!(self.layout.classify(ip, 0), AddrSpace::Decompressor(_))
    }
}

/// Which unwinder a kernel needs.
#[derive(Debug, Clone)]
pub enum Method {
    /// Follow the RBP chain (`UNWINDER_FRAME_POINTER`).
    FramePointer,
    /// Use the kernel's ORC tables (`UNWINDER_ORC`).
    Orc(Arc<OrcTable>),
}

/// Unwinds guest kernel stacks for one boot. Create once, update with
/// [`Unwinder::set_layout`] when the layout detector learns more, and call
/// [`Unwinder::unwind`] per sample.
#[derive(Debug, Clone)]
pub struct Unwinder {
    method: Method,
    map: Option<KernelMap>,
    max_depth: usize,
}

impl Unwinder {
    /// An unwinder using `method`, with no layout yet and the default depth cap.
    pub fn new(method: Method) -> Unwinder {
        Unwinder {
            method,
            map: None,
            max_depth: DEFAULT_MAX_DEPTH,
        }
    }

    /// Sets the frame cap (at least 1: the sampled IP itself).
    pub fn with_max_depth(mut self, max_depth: usize) -> Unwinder {
        self.max_depth = max_depth.max(1);
        self
    }

    /// Tells the unwinder where the kernel runs. ORC needs it to turn runtime
    /// IPs into link-time ones; the frame-pointer unwinder uses it to reject
    /// return addresses outside the kernel.
    pub fn set_layout(&mut self, layout: &RunLayout) {
        self.map = Some(KernelMap {
            layout: layout.clone(),
        });
    }

    /// The unwind method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// Walks the stack of the vCPU described by `regs`: clears `frames`, puts
    /// the sampled IP first and then the return addresses (raw runtime
    /// addresses; a `pt_regs` frame contributes the interrupted IP itself).
    pub fn unwind<M: GuestPhys + ?Sized>(
        &self,
        mem: &M,
        regs: &UnwindRegs,
        frames: &mut Vec<u64>,
    ) -> StackEnd {
        frames.clear();
        frames.push(regs.rip);
        if regs.cpl == 3 {
            return StackEnd::Truncated(Truncation::UserMode);
        }
        if regs.efer & (1 << 10) == 0 {
            return StackEnd::Truncated(Truncation::NotLongMode);
        }
        if let Some(map) = &self.map {
            if map.in_decompressor(regs.rip) {
                return StackEnd::Truncated(Truncation::NoUnwindInfo);
            }
        }
        let mut walker = regs.walker(mem);
        let mut ctx = WalkCtx {
            walker: &mut walker,
            map: self.map.as_ref(),
            frames,
            max_depth: self.max_depth,
        };
        match &self.method {
            Method::FramePointer => fp::unwind(&mut ctx, regs),
            Method::Orc(table) => orc::unwind(&mut ctx, table, regs),
        }
    }
}

/// What both unwinders share during one walk.
pub(crate) struct WalkCtx<'a, 'm, M: GuestPhys + ?Sized> {
    pub(crate) walker: &'a mut PageWalker<'m, M>,
    pub(crate) map: Option<&'a KernelMap>,
    pub(crate) frames: &'a mut Vec<u64>,
    pub(crate) max_depth: usize,
}

impl<M: GuestPhys + ?Sized> WalkCtx<'_, '_, M> {
    /// Reads a stack word, or says the stack is unreadable.
    pub(crate) fn read(&mut self, va: u64) -> Result<u64, Truncation> {
        self.walker.read_u64(va).ok_or(Truncation::UnreadableStack)
    }

    /// Reads the stack word at `base + off`; an address that would wrap
    /// around 2^64 is a broken frame (guest values are never trusted).
    pub(crate) fn read_at(&mut self, base: u64, off: u64) -> Result<u64, Truncation> {
        self.read(base.checked_add(off).ok_or(Truncation::BadFrame)?)
    }

    /// Reads the stack word at `base + off` (signed offset), checked as [`Self::read_at`].
    pub(crate) fn read_rel(&mut self, base: u64, off: i64) -> Result<u64, Truncation> {
        self.read(rel(base, off)?)
    }

    /// True when `ip` may be kernel code: inside the image when the layout is
    /// known, else any non-zero address.
    pub(crate) fn plausible_ip(&self, ip: u64) -> bool {
        match self.map {
            Some(m) => m.link_ip(ip).is_some(),
            None => ip != 0,
        }
    }

    /// Appends a frame, or reports the depth cap.
    pub(crate) fn push(&mut self, ip: u64) -> Result<(), Truncation> {
        if self.frames.len() >= self.max_depth {
            return Err(Truncation::DepthLimit);
        }
        self.frames.push(ip);
        Ok(())
    }

    /// True when the `pt_regs` at `regs` were saved from user mode.
    pub(crate) fn user_regs(&mut self, regs: u64) -> Result<bool, Truncation> {
        let cs = self.read_at(regs, ptregs::CS)?;
        Ok(cs & 3 == 3)
    }
}

/// `base + off` for a guest-supplied base and offset; wrapping around 2^64
/// means the frame is broken.
pub(crate) fn rel(base: u64, off: i64) -> Result<u64, Truncation> {
    base.checked_add_signed(off).ok_or(Truncation::BadFrame)
}

/// The stacks a walk has visited, to keep it moving up and out of cycles.
/// Each stack is the range `[low, next)` already walked; `next` is the lowest
/// address the next frame on it may have.
#[derive(Debug)]
pub(crate) struct Stacks {
    seen: [(u64, u64); MAX_STACKS],
    len: usize,
}

impl Stacks {
    /// Starts on the stack at `sp`; the first frame may be at `sp` itself.
    pub(crate) fn new(sp: u64) -> Stacks {
        let mut seen = [(0, 0); MAX_STACKS];
        seen[0] = (sp, sp);
        Stacks { seen, len: 1 }
    }

    fn current(&mut self) -> &mut (u64, u64) {
        &mut self.seen[self.len - 1]
    }

    /// Accepts a frame at `addr` (occupying `size` bytes) further up the
    /// current stack, at most [`MAX_FRAME_GAP`] above the previous one.
    pub(crate) fn up(&mut self, addr: u64, size: u64) -> Result<(), Truncation> {
        let (low, next) = *self.current();
        if addr >= next
            && addr - next <= MAX_FRAME_GAP
            && addr <= low.saturating_add(MAX_STACK_SPAN)
        {
            self.current().1 = addr.saturating_add(size);
            Ok(())
        } else if addr >= low && addr < next {
            Err(Truncation::Cycle)
        } else {
            Err(Truncation::BadFrame)
        }
    }

    /// Accepts a frame at `addr` either up the current stack or, through a
    /// stack switch the caller vouches for (pt_regs, IRQ-stack link, indirect
    /// ORC base), on another stack not visited before.
    pub(crate) fn up_or_switch(&mut self, addr: u64, size: u64) -> Result<(), Truncation> {
        match self.up(addr, size) {
            Ok(()) => Ok(()),
            Err(_) => self.switch(addr, size),
        }
    }

    /// Moves to another stack at `addr`.
    pub(crate) fn switch(&mut self, addr: u64, size: u64) -> Result<(), Truncation> {
        if self.seen[..self.len]
            .iter()
            .any(|&(low, next)| addr >= low && addr < next.max(low.saturating_add(1)))
        {
            return Err(Truncation::Cycle);
        }
        if self.len == MAX_STACKS {
            return Err(Truncation::BadFrame);
        }
        self.seen[self.len] = (addr, addr.saturating_add(size));
        self.len += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stack_end_codes_round_trip_and_are_stable() {
        assert_eq!(StackEnd::Complete.as_u8(), 1);
        assert_eq!(StackEnd::Truncated(Truncation::BadFrame).as_u8(), 2);
        assert_eq!(StackEnd::Truncated(Truncation::DepthLimit).as_u8(), 3);
        assert_eq!(StackEnd::Truncated(Truncation::UserMode).as_u8(), 4);
        assert_eq!(StackEnd::Truncated(Truncation::NoUnwindInfo).as_u8(), 11);
        let decoded: Vec<u8> = (0..=255u8)
            .filter(|&v| StackEnd::from_u8(v).is_some_and(|e| e.as_u8() == v))
            .collect();
        assert_eq!(decoded, (1..=11).collect::<Vec<u8>>());
    }

    #[test]
    fn stacks_only_climb_and_detect_cycles() {
        let mut s = Stacks::new(0x1000);
        assert_eq!(s.up(0x1000, 16), Ok(()));
        assert_eq!(s.up(0x1008, 16), Err(Truncation::Cycle));
        assert_eq!(s.up(0xff8, 16), Err(Truncation::BadFrame));
        assert_eq!(
            s.up(0x1010 + MAX_FRAME_GAP + 8, 16),
            Err(Truncation::BadFrame),
            "a jump bigger than any frame"
        );
        assert_eq!(s.up(0x1100, 16), Ok(()));
        // Climbing in allowed steps still stops at the span limit.
        let mut t = Stacks::new(0x10_0000);
        let mut at = 0x10_0000;
        let mut steps = 0;
        while t.up(at, 16).is_ok() {
            at += MAX_FRAME_GAP;
            steps += 1;
        }
        assert_eq!(steps, (MAX_STACK_SPAN / MAX_FRAME_GAP) as usize + 1);
        // Another stack, then back into the first one: a cycle.
        assert_eq!(s.switch(0x9000, 16), Ok(()));
        assert_eq!(s.up_or_switch(0x1080, 16), Err(Truncation::Cycle));
        assert_eq!(s.up_or_switch(0x5000, 16), Ok(()));
        for i in 0..MAX_STACKS as u64 {
            let _ = s.switch(0x10_0000 * (i + 1), 16);
        }
        assert_eq!(s.switch(0x7000_0000, 16), Err(Truncation::BadFrame));
    }

    #[test]
    fn from_kvm_takes_cpl_from_ss() {
        let mut regs = kvm_regs::default();
        let mut sregs = kvm_sregs::default();
        regs.rip = 0x1234;
        regs.r13 = 7;
        sregs.cr0 = 0x8000_0001;
        sregs.ss.dpl = 3;
        let u = UnwindRegs::from_kvm(&regs, &sregs);
        assert_eq!((u.rip, u.r13, u.cpl), (0x1234, 7, 3));
        sregs.cr0 = 0;
        assert_eq!(UnwindRegs::from_kvm(&regs, &sregs).cpl, 0);
    }
}
