//! Blocked stacks: what the boot's critical-path task was waiting on while
//! it was not running.
//!
//! The boot's critical path is the boot CPU's task (`init_task`) until
//! `rest_init` forks pid 1, then pid 1 (`kernel_init`, which runs the
//! initcalls). At each sample of the boot vCPU, when that task is not the
//! one running, its saved kernel stack is unwound: `__switch_to_asm` pushed
//! an `inactive_task_frame` (callee-saved registers, `bp`, the return
//! address into `__schedule`) and stored the stack pointer in `thread.sp`.
//! As in the kernel's own `unwind_start()` for a task that is not current,
//! the walk starts at `ip = frame.ret_addr`, `bp = frame.bp`,
//! `sp = thread.sp + sizeof(frame)`, with the same FP/ORC unwinder and the
//! same bounds as a running stack.
//!
//! pid 1 is found once: `init_task.tasks.next` is the first task forked
//! (pid 1), checked by its pid, probed at each sample until it exists.
//!
//! Cost: a task that has not switched since the last sample (same
//! `thread.sp`, same `nvcsw + nivcsw`) has the same stack and identity, so
//! steady waits (a 1 s `msleep`) cost a few small reads per sample and
//! reuse the frames (`cargo bench --bench waits`).
//!
//! Everything read is guest-controlled: each read is one bounded page walk,
//! `thread.sp` must lie in the task's own stack area, the unwind is the
//! bounded one, and anything implausible is an unknown stack (recorded as
//! a wait with no frames), never an error.

use boottrace_symbols::layout::KERNEL_HALF;

use super::pagewalk::{GuestPhys, PageWalker, PagingMode};
use super::task::{NewTask, RunTasks, TaskLocator, TaskTracker};
use super::unwind::{StackEnd, Truncation, UnwindRegs, Unwinder};

/// Largest distance of `thread.sp` above the task's `stack` base: kernel
/// stacks are 16 KiB (32 KiB with KASAN); more is garbage.
const MAX_STACK_SIZE: u64 = 64 * 1024;

/// One blocked-stack observation of the critical task; its frames went
/// into the buffer the caller gave [`BlockedReader::sample`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wait {
    /// The run's task id of the blocked task (`None`: its identity could
    /// not be read).
    pub task: Option<u32>,
    /// A task new to the run (its `Task` record goes first).
    pub new_task: Option<NewTask>,
    /// The task's `__state` (0: runnable, waiting for a CPU; else sleeping).
    pub state: u32,
    /// How the unwind ended.
    pub end: StackEnd,
}

/// The last unwound saved stack, reused while the task has not run.
#[derive(Debug, Clone)]
struct Cached {
    task: u64,
    sp: u64,
    switches: Option<u64>,
    /// The run task id read with it.
    id: Option<u32>,
    frames: Vec<u64>,
    end: StackEnd,
}

/// Per-run reader of the critical task's saved stack, used by the boot
/// vCPU's sampler only (one wait record per boot-vCPU sample, so wait
/// records stand for wall-clock time once).
#[derive(Debug)]
pub struct BlockedReader {
    locator: TaskLocator,
    identities: TaskTracker,
    /// pid 1's `task_struct`, once found.
    pid1: Option<u64>,
    cache: Option<Cached>,
}

impl BlockedReader {
    /// A reader for one run.
    pub fn new(locator: TaskLocator) -> BlockedReader {
        BlockedReader {
            locator,
            identities: TaskTracker::new(locator),
            pid1: None,
            cache: None,
        }
    }

    /// pid 1's `task_struct`, once known.
    pub fn pid1(&self) -> Option<u64> {
        self.pid1
    }

    /// The critical task's blocked stack at this sample, or `None` when it
    /// is running (on this vCPU: `current` is `current`; on another: its
    /// `on_cpu`), when nothing can be read yet (no slide, no long-mode
    /// paging), or when the sampled vCPU's running task is not known.
    /// `current` is the `task_struct` running on the sampled vCPU. The
    /// frames go into `frames` (cleared first; empty when there is no wait,
    /// or the saved stack could not be read), innermost first: the return
    /// address into `__schedule`, then callers. The sampler reuses one
    /// buffer: nothing is allocated per sample.
    #[allow(clippy::too_many_arguments)]
    pub fn sample<M: GuestPhys + ?Sized>(
        &mut self,
        mem: &M,
        regs: &UnwindRegs,
        slide: Option<i64>,
        current: Option<u64>,
        unwinder: Option<&Unwinder>,
        tasks: &RunTasks,
        frames: &mut Vec<u64>,
    ) -> Option<Wait> {
        frames.clear();
        if !matches!(regs.paging_mode(), PagingMode::Level4 | PagingMode::Level5) {
            return None;
        }
        // Without a known running task (user mode, head code, a failed read)
        // "not running" cannot be told.
        let current = current?;
        let slide = slide?;
        let init_task = self.locator.symbols.init_task.wrapping_add(slide as u64);
        let mut walker = regs.walker(mem);
        if self.pid1.is_none() {
            self.pid1 = self.find_pid1(&mut walker, init_task);
        }
        let target = self.pid1.unwrap_or(init_task);
        if target == current {
            return None;
        }
        let t = self.locator.types.task;
        if let Some(on_cpu) = t.on_cpu {
            let v = read_u32(&mut walker, target, on_cpu.offset)?;
            if v != 0 {
                return None;
            }
        }
        let state = read_u32(&mut walker, target, t.state.offset).unwrap_or(0);
        let Some(sp) = read_u64(&mut walker, target, t.thread_sp.offset) else {
            let (task, new_task) = self.identities.identify(mem, regs, target, tasks);
            return Some(Wait {
                task,
                new_task,
                state,
                end: StackEnd::Truncated(Truncation::UnreadableStack),
            });
        };
        let switches = self.switches(&mut walker, target);
        // Not switched since the last walk: same task, same stack. (A task
        // other than `current` at both samples does not say the critical
        // task stayed off the CPU: it may have run and switched out in
        // between, which only its switch count tells.)
        if let Some(c) = &self.cache {
            if c.task == target && c.sp == sp && switches.is_some() && c.switches == switches {
                frames.extend_from_slice(&c.frames);
                return Some(Wait {
                    task: c.id,
                    new_task: None,
                    state,
                    end: c.end,
                });
            }
        }
        let (task, new_task) = self.identities.identify(mem, regs, target, tasks);
        let end = self.walk(mem, regs, &mut walker, target, sp, unwinder, frames);
        // The cache keeps its buffer from one walk to the next.
        let mut kept = self.cache.take().map(|c| c.frames).unwrap_or_default();
        kept.clear();
        kept.extend_from_slice(frames);
        self.cache = Some(Cached {
            task: target,
            sp,
            switches,
            id: task,
            frames: kept,
            end,
        });
        Some(Wait {
            task,
            new_task,
            state,
            end,
        })
    }

    /// `nvcsw + nivcsw` of `task` (one read when the two are adjacent, as
    /// they are in `task_struct`); `None` when unknown or unreadable.
    fn switches<M: GuestPhys + ?Sized>(
        &self,
        walker: &mut PageWalker<'_, M>,
        task: u64,
    ) -> Option<u64> {
        let t = self.locator.types.task;
        let (v, iv) = (t.nvcsw?, t.nivcsw?);
        if iv.offset == v.offset.checked_add(8)? {
            let mut b = [0u8; 16];
            if !walker.read(task.checked_add(v.offset)?, &mut b) {
                return None;
            }
            let (lo, hi) = b.split_at(8);
            let word = |x: &[u8]| u64::from_le_bytes(x.try_into().unwrap_or_default());
            return Some(word(lo).wrapping_add(word(hi)));
        }
        read_u64(walker, task, v.offset)
            .zip(read_u64(walker, task, iv.offset))
            .map(|(a, b)| a.wrapping_add(b))
    }

    /// pid 1 through `init_task.tasks.next`: the first task forked.
    fn find_pid1<M: GuestPhys + ?Sized>(
        &self,
        walker: &mut PageWalker<'_, M>,
        init_task: u64,
    ) -> Option<u64> {
        let t = self.locator.types.task;
        let tasks = t.tasks?;
        let next = walker.read_u64(init_task.checked_add(tasks.offset)?)?;
        let task = next.checked_sub(tasks.offset)?;
        if task == init_task || task < KERNEL_HALF || task % 8 != 0 {
            return None;
        }
        (read_u32(walker, task, t.pid.offset)? == 1).then_some(task)
    }

    /// Unwinds the saved stack at `sp` into `frames` (empty when the saved
    /// frame itself is implausible or unreadable).
    #[allow(clippy::too_many_arguments)]
    fn walk<M: GuestPhys + ?Sized>(
        &self,
        mem: &M,
        regs: &UnwindRegs,
        walker: &mut PageWalker<'_, M>,
        task: u64,
        sp: u64,
        unwinder: Option<&Unwinder>,
        frames: &mut Vec<u64>,
    ) -> StackEnd {
        frames.clear();
        let bad = StackEnd::Truncated;
        let t = self.locator.types.task;
        let f = self.locator.types.frame;
        if sp < KERNEL_HALF || sp % 8 != 0 {
            return bad(Truncation::BadFrame);
        }
        // thread.sp must lie inside the task's own stack.
        let Some(base) = read_u64(walker, task, t.stack.offset) else {
            return bad(Truncation::UnreadableStack);
        };
        let inside = sp
            .checked_sub(base)
            .is_some_and(|d| d < MAX_STACK_SIZE.saturating_sub(f.size));
        if base < KERNEL_HALF || !inside {
            return bad(Truncation::BadFrame);
        }
        let (Some(bp), Some(ret)) = (read_u64(walker, sp, f.bp), read_u64(walker, sp, f.ret_addr))
        else {
            return bad(Truncation::UnreadableStack);
        };
        let Some(rsp) = sp.checked_add(f.size) else {
            return bad(Truncation::BadFrame);
        };
        let start = UnwindRegs {
            rip: ret,
            rsp,
            rbp: bp,
            cpl: 0,
            rdi: 0,
            rdx: 0,
            r10: 0,
            r13: 0,
            ..*regs
        };
        match unwinder {
            Some(u) => u.unwind(mem, &start, frames),
            None => {
                frames.push(ret);
                StackEnd::Truncated(Truncation::NoUnwindInfo)
            }
        }
    }
}

fn read_u64<M: GuestPhys + ?Sized>(
    walker: &mut PageWalker<'_, M>,
    base: u64,
    off: u64,
) -> Option<u64> {
    walker.read_u64(base.checked_add(off)?)
}

fn read_u32<M: GuestPhys + ?Sized>(
    walker: &mut PageWalker<'_, M>,
    base: u64,
    off: u64,
) -> Option<u32> {
    let mut b = [0u8; 4];
    walker
        .read(base.checked_add(off)?, &mut b)
        .then(|| u32::from_le_bytes(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::fake_tasks::{
        self, COMM, INIT, NVCSW, ON_CPU, PA, PID, PID1, SP, STACK, STACK_BASE, STATE, TASKS, VA,
    };
    use crate::sample::pagewalk::{FakePageTables, FakePhys};
    use crate::sample::unwind::Method;

    fn locator(on_cpu: bool) -> TaskLocator {
        TaskLocator {
            types: fake_tasks::types(on_cpu),
            symbols: fake_tasks::symbols(),
        }
    }

    fn pa(va: u64) -> u64 {
        va - VA + PA
    }

    struct Guest {
        mem: FakePhys,
        regs: UnwindRegs,
    }

    impl Guest {
        fn w(&mut self, va: u64, v: u64) {
            assert!(self.mem.write_u64(pa(va), v));
        }

        fn w32(&mut self, va: u64, v: u32) {
            assert!(self.mem.write(pa(va), &v.to_le_bytes()));
        }
    }

    /// A guest where init_task has forked pid 1, which is switched out in
    /// a three-frame chain: ret → R0, then R1, R2, and a zero frame pointer.
    fn guest() -> Guest {
        let mut mem = FakePhys::new();
        let mut pt = FakePageTables::new(&mut mem, 0x1_0000, 0x1_0000, false);
        assert!(pt.map_region(&mut mem, VA, PA, 0x1_0000));
        let regs = UnwindRegs {
            rip: 0xffff_ffff_8100_0000,
            cpl: 0,
            cr0: 0x8000_0001,
            cr3: pt.cr3(),
            cr4: 0x20,
            efer: 0x500,
            ..UnwindRegs::default()
        };
        let mut g = Guest { mem, regs };
        g.w32(INIT + PID, 0);
        g.w32(PID1 + PID, 1);
        assert!(g.mem.write(pa(PID1 + COMM), b"swapper/0\0"));
        // init_task.tasks.next = &pid1.tasks
        g.w(INIT + TASKS, PID1 + TASKS);
        g.w32(PID1 + STATE, 2);
        g.w(PID1 + STACK, STACK_BASE);
        let sp = STACK_BASE + 0x3e00;
        g.w(PID1 + SP, sp);
        let (b1, b2) = (sp + 56 + 0x40, sp + 56 + 0x80);
        g.w(sp + 40, b1);
        g.w(sp + 48, R[0]);
        g.w(b1, b2);
        g.w(b1 + 8, R[1]);
        g.w(b2, 0);
        g.w(b2 + 8, R[2]);
        g
    }

    const R: [u64; 3] = [
        0xffff_ffff_8150_0010,
        0xffff_ffff_8150_0200,
        0xffff_ffff_8160_0300,
    ];

    fn fp() -> Unwinder {
        Unwinder::new(Method::FramePointer)
    }

    /// A [`Wait`] with its frames.
    #[derive(Debug, PartialEq, Eq)]
    struct WaitCapture {
        task: Option<u32>,
        new_task: Option<NewTask>,
        state: u32,
        frames: Vec<u64>,
        end: StackEnd,
    }

    fn sample_with(
        r: &mut BlockedReader,
        g: &Guest,
        slide: Option<i64>,
        current: Option<u64>,
        u: Option<&Unwinder>,
    ) -> Option<WaitCapture> {
        let mut frames = vec![0xdead];
        let w = r.sample(
            &g.mem,
            &g.regs,
            slide,
            current,
            u,
            &RunTasks::default(),
            &mut frames,
        );
        let Some(w) = w else {
            assert!(frames.is_empty(), "no wait, no frames");
            return None;
        };
        Some(WaitCapture {
            task: w.task,
            new_task: w.new_task,
            state: w.state,
            frames,
            end: w.end,
        })
    }

    fn sample(
        r: &mut BlockedReader,
        g: &Guest,
        current: u64,
        u: Option<&Unwinder>,
    ) -> Option<WaitCapture> {
        sample_with(r, g, Some(0), Some(current), u)
    }

    #[test]
    fn pid1_is_found_and_its_saved_stack_unwound() {
        let g = guest();
        let u = fp();
        let mut r = BlockedReader::new(locator(false));
        let w = sample(&mut r, &g, INIT, Some(&u)).expect("pid 1 is blocked");
        assert_eq!(r.pid1(), Some(PID1));
        assert_eq!(w.frames, R);
        assert_eq!(w.end, StackEnd::Complete);
        assert_eq!(w.state, 2);
        let (id, t) = w.new_task.expect("pid 1 is new to the run");
        assert_eq!(w.task, Some(id));
        assert_eq!((t.pid, t.comm.as_str()), (1, "swapper/0"));
        // pid 1 running on this vCPU: no wait.
        assert_eq!(sample(&mut r, &g, PID1, Some(&u)), None);
        // Unknown current (user mode, a failed read): nothing to say.
        assert_eq!(sample_with(&mut r, &g, Some(0), None, Some(&u)), None);
        // No slide yet: nothing.
        assert_eq!(sample_with(&mut r, &g, None, Some(INIT), Some(&u)), None);
    }

    #[test]
    fn before_the_fork_the_boot_task_is_watched_and_on_cpu_means_running() {
        let mut g = guest();
        // init_task alone in the list.
        g.w(INIT + TASKS, INIT + TASKS);
        let mut r = BlockedReader::new(locator(false));
        assert_eq!(sample(&mut r, &g, INIT, None), None, "init_task runs");
        assert_eq!(r.pid1(), None);
        g.w(INIT + TASKS, PID1 + TASKS);
        // SMP: pid 1 on another CPU (on_cpu set) is running, not blocked.
        let mut r = BlockedReader::new(locator(true));
        g.w32(PID1 + ON_CPU, 1);
        assert_eq!(sample(&mut r, &g, INIT, None), None);
        g.w32(PID1 + ON_CPU, 0);
        let w = sample(&mut r, &g, INIT, None).expect("blocked");
        // No unwinder: the return address alone, marked not unwound.
        assert_eq!(w.frames, [R[0]]);
        assert_eq!(w.end, StackEnd::Truncated(Truncation::NoUnwindInfo));
    }

    #[test]
    fn an_unswitched_task_reuses_its_stack_until_it_switches() {
        let mut g = guest();
        let u = fp();
        let mut r = BlockedReader::new(locator(false));
        let first = sample(&mut r, &g, INIT, Some(&u)).expect("blocked");
        // Overwrite the chain in memory: same sp, same switch count → cached.
        g.w(STACK_BASE + 0x3e00 + 48, 0xffff_ffff_8170_0000);
        let again = sample(&mut r, &g, INIT, Some(&u)).expect("blocked");
        assert_eq!(again.frames, first.frames);
        // It ran and switched out again: walked afresh.
        g.w(PID1 + NVCSW, 1);
        let fresh = sample(&mut r, &g, INIT, Some(&u)).expect("blocked");
        assert_eq!(fresh.frames[0], 0xffff_ffff_8170_0000);
    }

    #[test]
    fn garbage_saved_stacks_are_unknown_and_bounded() {
        let u = fp();
        let sp = STACK_BASE + 0x3e00;
        type Damage = fn(&mut Guest);
        let cases: [(&str, Damage); 6] = [
            ("thread.sp outside the task's stack", |g| {
                g.w(PID1 + SP, VA + 0x100)
            }),
            ("thread.sp in user space", |g| g.w(PID1 + SP, 0x7fff_0000)),
            ("thread.sp misaligned", |g| {
                g.w(PID1 + SP, STACK_BASE + 0x3e03)
            }),
            ("stack base unmapped", |g| {
                g.w(PID1 + STACK, 0xffff_c900_dead_0000)
            }),
            ("thread.sp at the top of the address space", |g| {
                g.w(PID1 + SP, u64::MAX - 7);
                g.w(PID1 + STACK, u64::MAX - 0x1000);
            }),
            ("frame past mapped memory", |g| {
                g.w(PID1 + STACK, VA + 0xf000);
                g.w(PID1 + SP, VA + 0xfff8);
            }),
        ];
        for (what, damage) in cases {
            let mut g = guest();
            damage(&mut g);
            let mut r = BlockedReader::new(locator(false));
            let w = sample(&mut r, &g, INIT, Some(&u)).expect(what);
            assert!(w.frames.is_empty(), "{what}: {:?}", w.frames);
            assert!(!w.end.is_complete(), "{what}");
        }
        // A frame-pointer cycle: bounded, cut short, the frames so far kept.
        let mut g = guest();
        let b1 = sp + 56 + 0x40;
        g.w(b1, b1);
        let mut r = BlockedReader::new(locator(false));
        let w = sample(&mut r, &g, INIT, Some(&u)).expect("blocked");
        assert_eq!(w.end, StackEnd::Truncated(Truncation::Cycle));
        assert!(w.frames.len() <= 3, "{:?}", w.frames);
        // pid 1's task_struct pointer is garbage: the boot task stays init_task.
        let mut g = guest();
        g.w(INIT + TASKS, 0xdead_beef);
        let mut r = BlockedReader::new(locator(false));
        assert_eq!(sample(&mut r, &g, INIT, Some(&u)), None);
        assert_eq!(r.pid1(), None);
    }
}
