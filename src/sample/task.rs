//! Task awareness: which guest task (`current`) a kernel-mode sample caught,
//! read from guest memory with the offsets of the kernel's own types.
//!
//! `current` is a per-CPU pointer (`pcpu_hot.current_task` on 6.2+, the
//! variable `current_task` before). On an SMP kernel it lives at the CPU's
//! kernel GS base plus the symbol's per-CPU offset; on a UP kernel it is an
//! ordinary global at its (KASLR-shifted) link address. From the
//! `task_struct` it points to the sampler reads `pid` every sample and `comm`
//! only when the task is new to this vCPU, its pid changed, or every
//! [`COMM_REFRESH`] samples of it (comm changes at exec), so a sample costs
//! two small page-walked reads on the common path.
//!
//! One window is ambiguous by construction: `__switch_to_asm` moves to the
//! next task's stack before `__switch_to` writes `current`, so a sample in
//! between has the next task's stack and the previous task's `current`
//! (measured: 2 of 2,888 `kernel_init` samples in a tiny-fp boot). Such
//! samples keep what `current` says.
//!
//! Everything read is guest-controlled: each read is one bounded page walk
//! (see [`super::pagewalk`]), addresses use checked arithmetic, and a failed
//! or implausible read is "unknown task", never an error.

use std::collections::HashMap;
use std::sync::Mutex;

use boottrace_symbols::layout::KERNEL_HALF;
use boottrace_symbols::typeinfo::{KernelTypeInfo, PerCpuAddressing, TaskSymbols};

use super::pagewalk::{GuestPhys, PagingMode};
use super::unwind::UnwindRegs;

/// A task's `comm` is re-read after this many samples of it on one vCPU.
pub const COMM_REFRESH: u32 = 64;
/// Most tasks one vCPU remembers; the cache is cleared when it is full (a
/// boot has a few dozen tasks, a guest cannot grow host memory without bound).
const MAX_CACHED_TASKS: usize = 1024;
/// Most distinct (task, pid, comm) a run interns; beyond, samples are
/// "unknown task" (a misbehaving guest cannot grow the trace's task table).
pub const MAX_RUN_TASKS: usize = 65_536;
/// Longest `comm` read (TASK_COMM_LEN is 16; type info caps it at 256).
const MAX_COMM: usize = 64;

/// What the sampler needs to find `current` and read it: the kernel's type
/// layout and the link-time symbol values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskLocator {
    /// Offsets inside `task_struct` and where `current` lives.
    pub types: KernelTypeInfo,
    /// Link-time values of `pcpu_hot`/`current_task` and friends.
    pub symbols: TaskSymbols,
}

/// One task as read from guest memory.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TaskIdentity {
    /// Guest virtual address of the `task_struct`.
    pub addr: u64,
    /// `pid` (the thread id).
    pub pid: u32,
    /// `tgid` (the process id).
    pub tgid: u32,
    /// `comm`, up to its first NUL, lossily UTF-8.
    pub comm: String,
}

impl TaskLocator {
    /// Guest virtual address of the `task_struct *` that is `current`, for a
    /// CPU whose kernel GS base is `gs_base`; `slide` is the run's KASLR slide.
    pub fn current_ptr_addr(&self, gs_base: u64, slide: i64) -> Option<u64> {
        let loc = self.symbols.current;
        let var = loc.symbol_value.checked_add(loc.field_offset)?;
        match loc.addressing {
            PerCpuAddressing::Global => Some(var.wrapping_add(slide as u64)),
            // GS base 0: per-CPU areas not set up, or the user's GS is loaded.
            PerCpuAddressing::GsRelative if gs_base == 0 => None,
            PerCpuAddressing::GsRelative => gs_base.checked_add(var),
        }
    }
}

/// Reads guest virtual memory for one sample.
struct Reader<'m, M: GuestPhys + ?Sized> {
    walker: super::pagewalk::PageWalker<'m, M>,
}

impl<M: GuestPhys + ?Sized> Reader<'_, M> {
    fn u32_at(&mut self, base: u64, offset: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        let va = base.checked_add(offset)?;
        self.walker.read(va, &mut b).then(|| u32::from_le_bytes(b))
    }
}

/// A cached task on one vCPU.
#[derive(Debug, Clone)]
struct Cached {
    pid: u32,
    id: u32,
    /// Samples since `comm` was last read.
    age: u32,
}

/// The run's task table: one id per distinct (task, pid, comm), shared by
/// the run's vCPUs so ids are unique within a run.
#[derive(Debug, Default)]
pub struct RunTasks {
    ids: Mutex<HashMap<TaskIdentity, u32>>,
}

impl RunTasks {
    /// The id of `task`, and whether it is new (then the caller writes its
    /// `Task` record). `None` once the run holds [`MAX_RUN_TASKS`].
    pub fn intern(&self, task: TaskIdentity) -> Option<(u32, bool)> {
        let mut ids = self.ids.lock().ok()?;
        if let Some(&id) = ids.get(&task) {
            return Some((id, false));
        }
        if ids.len() >= MAX_RUN_TASKS {
            return None;
        }
        let id = u32::try_from(ids.len()).ok()?;
        ids.insert(task, id);
        Some((id, true))
    }
}

/// A task seen for the first time in the run: the caller writes it out.
pub type NewTask = (u32, TaskIdentity);

/// Per-vCPU task tracking: finds `current` at each kernel-mode sample and
/// turns it into the run's task id.
#[derive(Debug)]
pub struct TaskTracker {
    locator: TaskLocator,
    cache: HashMap<u64, Cached>,
    /// `task_struct` of the task the latest sample found running.
    last: Option<u64>,
}

impl TaskTracker {
    /// A tracker for one vCPU.
    pub fn new(locator: TaskLocator) -> TaskTracker {
        TaskTracker {
            locator,
            cache: HashMap::new(),
            last: None,
        }
    }

    /// The task running at this sample, as a run task id; `None` when it
    /// cannot be known (not in the kernel proper, no slide yet, a failed or
    /// implausible read). A task seen for the first time in the run is also
    /// returned, for its `Task` record.
    pub fn sample<M: GuestPhys + ?Sized>(
        &mut self,
        mem: &M,
        regs: &UnwindRegs,
        gs_base: u64,
        slide: Option<i64>,
        tasks: &RunTasks,
    ) -> (Option<u32>, Option<NewTask>) {
        // Kernel proper only: the decompressor and early head code have no
        // `current`, and in user mode the kernel GS base is not in GS.
        self.last = None;
        if regs.cpl != 0 || regs.rip < KERNEL_HALF {
            return (None, None);
        }
        if !matches!(regs.paging_mode(), PagingMode::Level4 | PagingMode::Level5) {
            return (None, None);
        }
        let Some(slide) = slide else {
            return (None, None);
        };
        let Some(ptr_addr) = self.locator.current_ptr_addr(gs_base, slide) else {
            return (None, None);
        };
        let mut walker = regs.walker(mem);
        let Some(task) = walker.read_u64(ptr_addr) else {
            return (None, None);
        };
        let (id, new) = self.identify_with(walker, task, tasks);
        if id.is_some() {
            self.last = Some(task);
        }
        (id, new)
    }

    /// The `task_struct` address of the task the latest [`Self::sample`]
    /// found running (`None` after a sample with no known task).
    pub fn last_current(&self) -> Option<u64> {
        self.last
    }

    /// The run task id of the `task_struct` at `task` (any task, running or
    /// not), read through the page tables `regs` name; like [`Self::sample`]
    /// returns a task new to the run for its `Task` record.
    pub fn identify<M: GuestPhys + ?Sized>(
        &mut self,
        mem: &M,
        regs: &UnwindRegs,
        task: u64,
        tasks: &RunTasks,
    ) -> (Option<u32>, Option<NewTask>) {
        self.identify_with(regs.walker(mem), task, tasks)
    }

    fn identify_with<M: GuestPhys + ?Sized>(
        &mut self,
        walker: super::pagewalk::PageWalker<'_, M>,
        task: u64,
        tasks: &RunTasks,
    ) -> (Option<u32>, Option<NewTask>) {
        let mut r = Reader { walker };
        // A task_struct is a kernel-half, pointer-aligned object.
        if task < KERNEL_HALF || task % 8 != 0 {
            return (None, None);
        }
        let t = &self.locator.types.task;
        let Some(pid) = r.u32_at(task, t.pid.offset) else {
            return (None, None);
        };
        if let Some(c) = self.cache.get_mut(&task) {
            if c.pid == pid && c.age < COMM_REFRESH {
                c.age += 1;
                return (Some(c.id), None);
            }
        }
        // New here, pid changed, or time to re-read comm: read it all.
        let Some(tgid) = r.u32_at(task, t.tgid.offset) else {
            return (None, None);
        };
        let len = usize::try_from(t.comm.size).map_or(MAX_COMM, |n| n.min(MAX_COMM));
        let mut comm = [0u8; MAX_COMM];
        let Some(comm_va) = task.checked_add(t.comm.offset) else {
            return (None, None);
        };
        if !r.walker.read(comm_va, &mut comm[..len]) {
            return (None, None);
        }
        let comm = comm_string(&comm[..len]);
        let identity = TaskIdentity {
            addr: task,
            pid,
            tgid,
            comm,
        };
        let Some((id, new)) = tasks.intern(identity.clone()) else {
            return (None, None);
        };
        if self.cache.len() >= MAX_CACHED_TASKS {
            self.cache.clear();
        }
        self.cache.insert(task, Cached { pid, id, age: 0 });
        (Some(id), new.then_some((id, identity)))
    }
}

/// `comm` up to its first NUL, non-UTF-8 bytes replaced.
fn comm_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::pagewalk::{FakePageTables, FakePhys};
    use boottrace_symbols::typeinfo::{
        CurrentTaskField, CurrentTaskLocation, Field, InactiveTaskFrameLayout, TaskStructLayout,
        TypeInfoSource,
    };

    const PID: u64 = 0x10;
    const TGID: u64 = 0x14;
    const COMM: u64 = 0x20;

    fn types() -> KernelTypeInfo {
        let f = |offset, size| Field { offset, size };
        KernelTypeInfo {
            source: TypeInfoSource::Dwarf,
            task: TaskStructLayout {
                size: 0x100,
                pid: f(PID, 4),
                tgid: f(TGID, 4),
                comm: f(COMM, 16),
                state: f(0, 4),
                flags: f(4, 4),
                stack: f(8, 8),
                thread_sp: f(0x40, 8),
                tasks: Some(f(0x30, 16)),
                on_cpu: None,
                nvcsw: None,
                nivcsw: None,
            },
            frame: InactiveTaskFrameLayout {
                size: 56,
                bp: 40,
                ret_addr: 48,
            },
            current: CurrentTaskField::PcpuHot { offset: 0 },
        }
    }

    fn locator(addressing: PerCpuAddressing, symbol_value: u64) -> TaskLocator {
        TaskLocator {
            types: types(),
            symbols: TaskSymbols {
                current: CurrentTaskLocation {
                    symbol_value,
                    field_offset: 8,
                    addressing,
                },
                init_task: 0,
                per_cpu_offset: None,
            },
        }
    }

    /// Kernel virtual base of the fake guest's mapped data page.
    const VA: u64 = 0xffff_8880_0010_0000;
    const PA: u64 = 0x10_0000;

    /// A guest with one mapped 64 KiB area at VA: per-CPU area at VA,
    /// two task_structs at VA+0x1000 and VA+0x2000.
    fn guest() -> (FakePhys, UnwindRegs) {
        let mut mem = FakePhys::new();
        let mut pt = FakePageTables::new(&mut mem, 0x1_0000, 0x1_0000, false);
        assert!(pt.map_region(&mut mem, VA, PA, 0x1_0000));
        write_task(&mut mem, 0x1000, 1, "swapper/0");
        write_task(&mut mem, 0x2000, 7, "kworker/0:1");
        let regs = UnwindRegs {
            rip: 0xffff_ffff_8100_0000,
            cpl: 0,
            cr0: 0x8000_0001,
            cr3: pt.cr3(),
            cr4: 0x20,
            efer: 0x500,
            ..UnwindRegs::default()
        };
        (mem, regs)
    }

    fn write_task(mem: &mut FakePhys, off: u64, pid: u32, comm: &str) {
        let base = PA + off;
        assert!(mem.write(base + PID, &pid.to_le_bytes()));
        assert!(mem.write(base + TGID, &pid.to_le_bytes()));
        let mut c = [0u8; 16];
        c[..comm.len()].copy_from_slice(comm.as_bytes());
        assert!(mem.write(base + COMM, &c));
    }

    fn set_current(mem: &mut FakePhys, off: u64) {
        // current lives at per-CPU base (VA) + symbol 0x100 + field offset 8.
        assert!(mem.write_u64(PA + 0x108, VA + off));
    }

    #[test]
    fn gs_relative_current_gives_pid_and_comm_and_stable_ids() {
        let (mut mem, regs) = guest();
        set_current(&mut mem, 0x1000);
        let mut tr = TaskTracker::new(locator(PerCpuAddressing::GsRelative, 0x100));
        let tasks = RunTasks::default();
        let (id, new) = tr.sample(&mem, &regs, VA, Some(0), &tasks);
        let (nid, task) = new.expect("first sight is new");
        assert_eq!(id, Some(nid));
        assert_eq!((task.pid, task.comm.as_str()), (1, "swapper/0"));
        assert_eq!(task.addr, VA + 0x1000);
        // Same task again: same id, nothing new.
        assert_eq!(tr.sample(&mem, &regs, VA, Some(0), &tasks), (id, None));
        // A switch to another task.
        set_current(&mut mem, 0x2000);
        let (id2, new2) = tr.sample(&mem, &regs, VA, Some(0), &tasks);
        assert_ne!(id2, id);
        assert_eq!(new2.expect("new").1.comm, "kworker/0:1");
        // exec renames the task: seen at the next refresh, as a new id.
        write_task(&mut mem, 0x2000, 7, "init");
        let mut renamed = None;
        for _ in 0..=COMM_REFRESH {
            if let (_, Some(t)) = tr.sample(&mem, &regs, VA, Some(0), &tasks) {
                renamed = Some(t.1.comm);
            }
        }
        assert_eq!(renamed.as_deref(), Some("init"));
    }

    #[test]
    fn global_current_applies_the_slide() {
        let (mut mem, regs) = guest();
        set_current(&mut mem, 0x2000);
        let tasks = RunTasks::default();
        // Link-time address 0x1000 below the per-CPU copy; the slide moves it.
        let mut tr = TaskTracker::new(locator(PerCpuAddressing::Global, VA + 0x100 - 0x1000));
        let (_, new) = tr.sample(&mem, &regs, 0, Some(0x1000), &tasks);
        assert_eq!(new.expect("task").1.pid, 7);
        // Without the slide the read misses the variable: unknown.
        let mut tr = TaskTracker::new(locator(PerCpuAddressing::Global, VA + 0x100 - 0x1000));
        assert_eq!(tr.sample(&mem, &regs, 0, Some(0), &tasks).0, None);
    }

    #[test]
    fn failed_or_implausible_reads_are_unknown() {
        let (mut mem, regs) = guest();
        let tasks = RunTasks::default();
        let mut tr = TaskTracker::new(locator(PerCpuAddressing::GsRelative, 0x100));
        // current is NULL.
        assert_eq!(tr.sample(&mem, &regs, VA, Some(0), &tasks), (None, None));
        // current points at unmapped memory.
        assert!(mem.write_u64(PA + 0x108, 0xffff_c900_dead_0000));
        assert_eq!(tr.sample(&mem, &regs, VA, Some(0), &tasks), (None, None));
        set_current(&mut mem, 0x1000);
        // GS base not set up, user mode, unknown slide, below the kernel half.
        assert_eq!(tr.sample(&mem, &regs, 0, Some(0), &tasks).0, None);
        let user = UnwindRegs { cpl: 3, ..regs };
        assert_eq!(tr.sample(&mem, &user, VA, Some(0), &tasks).0, None);
        assert_eq!(tr.sample(&mem, &regs, VA, None, &tasks).0, None);
        let low = UnwindRegs {
            rip: 0x100_0000,
            ..regs
        };
        assert_eq!(tr.sample(&mem, &low, VA, Some(0), &tasks).0, None);
        // GS base near the top of the address space: no overflow, unknown.
        assert_eq!(tr.sample(&mem, &regs, u64::MAX, Some(0), &tasks).0, None);
        // And the right state still works.
        assert!(tr.sample(&mem, &regs, VA, Some(0), &tasks).0.is_some());
    }

    #[test]
    fn comm_stops_at_nul_and_survives_bad_utf8() {
        assert_eq!(comm_string(b"init\0garbage"), "init");
        assert_eq!(comm_string(b"\xffab"), "\u{fffd}ab");
        assert_eq!(comm_string(b"sixteen-chars-xx"), "sixteen-chars-xx");
    }
}
