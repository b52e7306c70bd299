//! The per-vCPU sampler: on every kick, capture registers, unwind the guest
//! stack from guest memory, read the host counters, and hand one `Sample`
//! record to the trace writer — timing each step so the sampler's own cost
//! is in the trace too.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use boottrace_symbols::layout::RunLayout;
use kvm_bindings::{kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::GuestMemoryMmap;

use super::blocked::BlockedReader;
use super::counters::VcpuCounters;
use super::kaslr::LayoutDetector;
use super::late::LateKernel;
use super::task::{RunTasks, TaskTracker};
use super::unwind::{StackEnd as UnwindEnd, Truncation, UnwindRegs, Unwinder};
use crate::trace::{
    Record, RecordBatch, Sample, SampleCost, StackEnd, StatNames, Task, TaskSwitch, TraceSink,
    WaitStack,
};
use crate::vmm::{KernelLocator, SampleInfo, SamplerFactory, VcpuSampler};

/// How registers are read at a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaptureMode {
    /// SYNC_REGS: KVM already copied regs/sregs into kvm_run at the exit: no ioctl.
    Sync,
    /// KVM_GET_REGS + KVM_GET_SREGS: two ioctls per sample.
    Ioctl,
    /// Kick only: the timer still kicks the vCPU out of the guest, which
    /// re-enters at once; nothing is captured, unwound, counted or written
    /// (only the kicks and their latency are totalled). The bare exit round
    /// trip, to set beside a full sample (`examples/bench-overhead.sh`).
    None,
}

impl CaptureMode {
    /// The name the command line and the trace use.
    pub fn name(self) -> &'static str {
        match self {
            CaptureMode::Sync => "sync",
            CaptureMode::Ioctl => "ioctl",
            CaptureMode::None => "none",
        }
    }
}

/// [`CostTotals::reached`]: real-mode setup code.
pub const REGION_SETUP: u8 = 1;
/// [`CostTotals::reached`]: the bzImage decompressor.
pub const REGION_DECOMPRESSOR: u8 = 2;
/// [`CostTotals::reached`]: the kernel proper.
pub const REGION_KERNEL: u8 = 3;
/// [`CostTotals::reached`]: guest user mode.
pub const REGION_USER: u8 = 4;

/// The region code of a sampled RIP (0: not known yet).
fn region_of(layout: Option<&RunLayout>, rip: u64, cpl: u8) -> u8 {
    use boottrace_symbols::layout::AddrSpace;
    if cpl == 3 {
        return REGION_USER;
    }
    match layout.map(|l| l.classify(rip, cpl)) {
        Some(AddrSpace::User) => REGION_USER,
        Some(AddrSpace::Kernel(_)) => REGION_KERNEL,
        Some(AddrSpace::Decompressor(_)) => REGION_DECOMPRESSOR,
        Some(AddrSpace::Setup(_)) => REGION_SETUP,
        Some(AddrSpace::Unknown(_)) | None => 0,
    }
}

/// Sampler totals over a run, summed over vCPUs.
#[derive(Debug, Default)]
pub struct CostTotals {
    /// Samples taken.
    pub samples: AtomicU64,
    /// The furthest code region sampled so far ([`REGION_SETUP`] … [`REGION_USER`];
    /// 0: none), for the live progress line.
    pub reached: AtomicU8,
    /// Sum of kick latencies, ns.
    pub kick_ns: AtomicU64,
    /// Sum of capture times, ns.
    pub capture_ns: AtomicU64,
    /// Sum of unwind times, ns.
    pub unwind_ns: AtomicU64,
    /// Sum of write times, ns.
    pub write_ns: AtomicU64,
    /// Kernel-mode samples whose unwind reached a clean end.
    pub complete: AtomicU64,
    /// Kernel-mode samples unwound.
    pub unwound: AtomicU64,
    /// Samples taken before the kernel analysis was ready (RIP only).
    pub early: AtomicU64,
}

/// The run's layout detector, shared by its vCPUs; the first to complete it
/// (or, failing that, the first to finish) writes the `Layout` record.
pub struct SharedLayout {
    /// Made once the kernel analysis has parsed the image.
    detector: Mutex<Option<LayoutDetector>>,
    kernel: LateKernel,
    published: AtomicBool,
}

impl SharedLayout {
    /// The detector of one run, made from `kernel` once it is ready.
    pub fn new(kernel: LateKernel) -> Self {
        SharedLayout {
            detector: Mutex::new(None),
            kernel,
            published: AtomicBool::new(false),
        }
    }

    /// The layout as far as it is known now (`None` before the kernel analysis).
    pub fn current(&self) -> Option<RunLayout> {
        self.with(|d| d.layout().clone())
    }

    /// Runs `f` on the detector, making it first when the kernel is ready;
    /// `None` while it is not (or the lock is poisoned).
    fn with<T>(&self, f: impl FnOnce(&mut LayoutDetector) -> T) -> Option<T> {
        let mut d = self.detector.lock().ok()?;
        if d.is_none() {
            let k = self.kernel.get()?;
            *d = Some(LayoutDetector::new(k.image.clone(), k.boot_image));
        }
        d.as_mut().map(f)
    }

    fn publish(&self, run: u32, layout: &RunLayout, sink: &TraceSink) {
        if !self.published.swap(true, Ordering::SeqCst) {
            let _ = sink.append(Record::Layout(crate::trace::Layout {
                run,
                layout: layout.into(),
            }));
        }
    }
}

impl KernelLocator for SharedLayout {
    fn locate(&self, mem: &GuestMemoryMmap, state: Option<(&kvm_regs, &kvm_sregs)>) -> Option<i64> {
        self.with(|det| {
            if det.slide().is_none() {
                if let Some((regs, sregs)) = state {
                    det.observe(mem, &UnwindRegs::from_kvm(regs, sregs));
                }
            }
            det.slide()
        })
        .flatten()
    }
}

/// Makes one [`VcpuSamplerImpl`] per vCPU for one run.
pub struct RecordSampler {
    /// Run index.
    pub run: u32,
    /// Samples per second per vCPU.
    pub freq: u32,
    /// Trace destination.
    pub sink: TraceSink,
    /// The kernel (unwinder prototype, task locator) once analysed.
    pub kernel: LateKernel,
    /// How registers are read.
    pub capture: CaptureMode,
    /// Shared layout detection.
    pub layout: Arc<SharedLayout>,
    /// Totals for the run's SamplerCost record.
    pub totals: Arc<CostTotals>,
    /// Set once the KVM stat names were written (once per file).
    pub stat_names_written: Arc<AtomicBool>,
    /// The run's task table, shared by its vCPUs.
    pub run_tasks: Arc<RunTasks>,
    /// Record the boot task's blocked stacks (`WaitStack` records) on vCPU 0
    /// (needs `tasks`).
    pub wait_stacks: bool,
}

/// The vCPU whose samples carry the boot task's blocked stacks: the boot CPU.
pub const BOOT_VCPU: u32 = 0;

impl SamplerFactory for RecordSampler {
    fn frequency(&self) -> u32 {
        self.freq
    }

    fn create(&self, index: u32, vcpu: &VcpuFd, mem: &GuestMemoryMmap) -> Box<dyn VcpuSampler> {
        // Batches are made (their pages touched) before the counters start,
        // so the vCPU thread's host faults are the guest's, not the sampler's.
        let batch_records = batch_records(self.freq);
        let batch = RecordBatch::with_capacity(batch_records);
        self.sink.reserve_batches(SPARE_BATCHES, batch_records);
        let counters = VcpuCounters::new(vcpu);
        if !counters.stat_names().is_empty()
            && !self.stat_names_written.swap(true, Ordering::SeqCst)
        {
            let _ = self.sink.append(Record::StatNames(StatNames {
                names: counters.stat_names().to_vec(),
            }));
        }
        Box::new(VcpuSamplerImpl {
            run: self.run,
            vcpu: index,
            sink: self.sink.clone(),
            mem: mem.clone(),
            kernel: self.kernel.clone(),
            unwinder: None,
            current_layout: None,
            layout_done: false,
            capture: self.capture,
            layout: self.layout.clone(),
            counters,
            totals: self.totals.clone(),
            stack: Vec::with_capacity(64),
            last_write_ns: 0,
            batch,
            batch_records,
            batch_since: None,
            wait_frames: Vec::with_capacity(64),
            tracker: None,
            tasks_known: false,
            run_tasks: self.run_tasks.clone(),
            last_task: None,
            slide: None,
            blocked: None,
            wait_stacks: self.wait_stacks && index == BOOT_VCPU,
        })
    }
}

/// Samples one vCPU.
pub struct VcpuSamplerImpl {
    run: u32,
    vcpu: u32,
    sink: TraceSink,
    mem: GuestMemoryMmap,
    kernel: LateKernel,
    /// This vCPU's unwinder, once the kernel analysis made one.
    unwinder: Option<Unwinder>,
    current_layout: Option<RunLayout>,
    layout_done: bool,
    capture: CaptureMode,
    layout: Arc<SharedLayout>,
    counters: VcpuCounters,
    totals: Arc<CostTotals>,
    stack: Vec<u64>,
    last_write_ns: u32,
    /// Records not yet handed to the writer: samples' stacks and deltas in
    /// shared buffers, so a sample allocates nothing on this thread.
    batch: RecordBatch,
    /// Records a batch is made for ([`batch_records`]).
    batch_records: usize,
    batch_since: Option<Instant>,
    /// The boot task's blocked stack at this sample (reused buffer).
    wait_frames: Vec<u64>,
    tracker: Option<TaskTracker>,
    /// Set once the analysis said whether tasks can be found.
    tasks_known: bool,
    run_tasks: Arc<RunTasks>,
    /// The task this vCPU's latest `TaskSwitch` named (`None`: unknown, the
    /// reader's default before any switch).
    last_task: Option<u32>,
    /// The run's KASLR slide once known (for `current` on UP kernels).
    slide: Option<i64>,
    /// The boot task's blocked-stack reader (boot vCPU only), made once the
    /// analysis has the task locator.
    blocked: Option<BlockedReader>,
    /// Whether this vCPU records blocked stacks (the boot vCPU, when asked).
    wait_stacks: bool,
}

/// Samples handed to the writer thread at once (with the records queued
/// among them). Sending one by one wakes the writer each time, and on a
/// busy host the wake-up preempts the vCPU thread: tens of µs on the PVM
/// test host (`benches/sample_path.rs`), so at high rates this many samples
/// share one; at low rates [`BATCH_AGE`] cuts batches first.
const BATCH: usize = 256;
/// Batches made ready per vCPU besides the one it fills (one in the
/// writer's queue, one spare); the writer hands emptied ones back.
const SPARE_BATCHES: usize = 2;

/// How many times its size a batch grows while no emptied batch replaces
/// it ([`VcpuSamplerImpl::send_batch`]).
const GROW_LIMIT: usize = 8;

/// Records a batch is made for at `freq` Hz: what [`BATCH_AGE`] collects
/// (with room for the task records among them), at most [`BATCH`]; so a
/// 1 kHz batch is ~15 KiB, not the ~150 KiB of a full one.
fn batch_records(freq: u32) -> usize {
    let per_age = u64::from(freq) * BATCH_AGE.as_millis() as u64 / 1000;
    (per_age as usize + per_age as usize / 4 + 8).min(BATCH)
}
/// Longest a sample waits in a batch: what a SIGKILLed `record` can lose
/// on top of the writer's own flush interval.
const BATCH_AGE: std::time::Duration = std::time::Duration::from_millis(20);

/// Maps the unwinder's detailed end to the trace's stored kinds.
pub fn trace_stack_end(end: UnwindEnd) -> StackEnd {
    match end {
        UnwindEnd::Complete => StackEnd::Root,
        UnwindEnd::Truncated(Truncation::DepthLimit) => StackEnd::DepthLimit,
        UnwindEnd::Truncated(
            Truncation::UserMode | Truncation::NotLongMode | Truncation::NoUnwindInfo,
        ) => StackEnd::NotUnwound,
        UnwindEnd::Truncated(_) => StackEnd::Truncated,
    }
}

impl VcpuSamplerImpl {
    fn capture(&self, vcpu: &mut VcpuFd, fresh: bool) -> Option<(kvm_regs, kvm_sregs)> {
        if fresh && self.capture == CaptureMode::Sync {
            let s = vcpu.sync_regs();
            return Some((s.regs, s.sregs));
        }
        Some((vcpu.get_regs().ok()?, vcpu.get_sregs().ok()?))
    }

    /// Feeds the detector until the layout is complete, and keeps the
    /// unwinder on the latest layout (the slide may be known before the
    /// decompressor's relocated copy is).
    fn update_layout(&mut self, regs: &UnwindRegs) {
        if self.layout_done {
            return;
        }
        let mem = &self.mem;
        let Some((slide, layout, complete)) = self.layout.with(|det| {
            if !det.is_complete() {
                det.observe(mem, regs);
            }
            (det.slide(), det.layout().clone(), det.is_complete())
        }) else {
            return;
        };
        self.slide = slide;
        if self.current_layout.as_ref() != Some(&layout) {
            if let Some(u) = self.unwinder.as_mut() {
                u.set_layout(&layout);
            }
            self.current_layout = Some(layout.clone());
        }
        if complete {
            self.layout_done = true;
            self.layout.publish(self.run, &layout, &self.sink);
        }
    }

    /// Takes the unwinder and task locator from the kernel analysis once it
    /// has them (an atomic load per sample until then). False while the
    /// image is not parsed yet.
    fn kernel_ready(&mut self) -> bool {
        if self.unwinder.is_some() && self.tasks_known {
            return true;
        }
        let Some(k) = self.kernel.get() else {
            return false;
        };
        if self.unwinder.is_none() {
            let mut u = k.unwinder.clone();
            if let Some(l) = &self.current_layout {
                u.set_layout(l);
            }
            self.unwinder = Some(u);
        }
        if let Some(t) = k.tasks.get() {
            self.tracker = t.map(TaskTracker::new);
            self.blocked = t.filter(|_| self.wait_stacks).map(BlockedReader::new);
            self.tasks_known = true;
        }
        true
    }
}

impl VcpuSamplerImpl {
    /// Reads the running task and, when it differs from the previous
    /// sample's, queues a `TaskSwitch` (and a `Task` for a task new to the
    /// run) ahead of the sample, in this vCPU's own record order.
    fn track_task(&mut self, regs: &UnwindRegs, gs_base: u64) {
        let Some(tracker) = self.tracker.as_mut() else {
            return;
        };
        let (task, new) = tracker.sample(&self.mem, regs, gs_base, self.slide, &self.run_tasks);
        if let Some((id, t)) = new {
            self.batch.push(Record::Task(Task {
                run: self.run,
                id,
                pid: t.pid,
                tgid: t.tgid,
                comm: t.comm,
                addr: t.addr,
            }));
        }
        if task != self.last_task {
            self.last_task = task;
            self.batch.push(Record::TaskSwitch(TaskSwitch {
                run: self.run,
                vcpu: self.vcpu,
                task,
            }));
        }
    }

    /// When the boot task is not running, queues its blocked stack (and its
    /// `Task` record when new to the run).
    fn track_wait(&mut self, regs: &UnwindRegs, t_ns: u64) {
        let Some(blocked) = self.blocked.as_mut() else {
            return;
        };
        let current = self.tracker.as_ref().and_then(TaskTracker::last_current);
        let unwinder = self
            .unwinder
            .as_ref()
            .filter(|_| self.current_layout.is_some());
        let Some(w) = blocked.sample(
            &self.mem,
            regs,
            self.slide,
            current,
            unwinder,
            &self.run_tasks,
            &mut self.wait_frames,
        ) else {
            return;
        };
        if let Some((id, t)) = w.new_task {
            self.batch.push(Record::Task(Task {
                run: self.run,
                id,
                pid: t.pid,
                tgid: t.tgid,
                comm: t.comm,
                addr: t.addr,
            }));
        }
        let wait = WaitStack {
            run: self.run,
            vcpu: self.vcpu,
            t_ns,
            task: w.task,
            state: w.state,
            stack: Vec::new(),
            stack_end: trace_stack_end(w.end).as_u8(),
        };
        self.batch.push_wait(wait, &self.wait_frames);
    }

    /// Hands the batch to the writer, going on with an emptied one. While
    /// the writer has none to hand back (it waits for the kernel analysis
    /// before it writes, or lags behind), the batch keeps filling, growing
    /// only as its records need, up to [`GROW_LIMIT`] times its size; then a
    /// new one is made. So in the steady state this thread allocates
    /// nothing and touches no new page: a host fault here is charged to the
    /// guest's sample (`tests/host_faults.rs`).
    fn send_batch(&mut self) {
        let next = match self.sink.try_take_batch() {
            Some(b) => b,
            None if self.batch.len() < GROW_LIMIT * self.batch_records => return,
            None => RecordBatch::with_capacity(self.batch_records),
        };
        self.flush_batch(next);
    }

    /// Hands the batch to the writer, going on with `next`.
    fn flush_batch(&mut self, next: RecordBatch) {
        let batch = std::mem::replace(&mut self.batch, next);
        self.batch_since = None;
        let _ = self.sink.append_packed(batch);
    }
}

impl VcpuSampler for VcpuSamplerImpl {
    fn sample(
        &mut self,
        vcpu: &mut VcpuFd,
        t_ns: u64,
        kick_ns: u64,
        fresh: bool,
    ) -> Option<SampleInfo> {
        if self.capture == CaptureMode::None {
            let t = &self.totals;
            t.samples.fetch_add(1, Ordering::Relaxed);
            t.kick_ns.fetch_add(kick_ns, Ordering::Relaxed);
            return None;
        }
        // Four clock reads per sample: each step ends where the next starts.
        let t_capture = Instant::now();
        let (regs, sregs) = self.capture(vcpu, fresh)?;
        let uregs = UnwindRegs::from_kvm(&regs, &sregs);
        let t_unwind = Instant::now();
        let capture_ns = t_unwind.duration_since(t_capture).as_nanos() as u32;

        let ready = self.kernel_ready();
        if ready {
            self.update_layout(&uregs);
        } else {
            self.totals.early.fetch_add(1, Ordering::Relaxed);
        }
        let end = match &self.unwinder {
            Some(u) if self.current_layout.is_some() => {
                u.unwind(&self.mem, &uregs, &mut self.stack)
            }
            _ => {
                self.stack.clear();
                self.stack.push(regs.rip);
                UnwindEnd::Truncated(Truncation::NoUnwindInfo)
            }
        };
        self.track_task(&uregs, sregs.gs.base);
        let region = region_of(self.current_layout.as_ref(), regs.rip, uregs.cpl);
        self.totals.reached.fetch_max(region, Ordering::Relaxed);
        self.track_wait(&uregs, t_ns);
        let deltas = self.counters.sample();
        let attempted = !matches!(
            end,
            UnwindEnd::Truncated(
                Truncation::UserMode | Truncation::NotLongMode | Truncation::NoUnwindInfo
            )
        );
        if attempted {
            self.totals.unwound.fetch_add(1, Ordering::Relaxed);
            if end.is_complete() {
                self.totals.complete.fetch_add(1, Ordering::Relaxed);
            }
        }

        let t_write = Instant::now();
        let unwind_ns = t_write.duration_since(t_unwind).as_nanos() as u32;
        let cost = SampleCost {
            kick_ns: kick_ns.min(u64::from(u32::MAX)) as u32,
            capture_ns,
            unwind_ns,
            write_ns: self.last_write_ns,
        };
        let sample = Sample {
            run: self.run,
            vcpu: self.vcpu,
            t_ns,
            rip: regs.rip,
            rsp: regs.rsp,
            rbp: regs.rbp,
            cr0: sregs.cr0,
            cr3: sregs.cr3,
            cr4: sregs.cr4,
            efer: sregs.efer,
            cs: sregs.cs.selector,
            cpl: uregs.cpl,
            stack: Vec::new(),
            stack_end: trace_stack_end(end).as_u8(),
            minflt: deltas.minflt,
            majflt: deltas.majflt,
            perf_faults: deltas.perf_faults.unwrap_or(0),
            kvm: Vec::new(),
            cost,
            task: None,
        };
        // The stack and deltas are copied into the batch's buffers.
        self.batch.push_sample(sample, &self.stack, deltas.kvm);
        let since = *self.batch_since.get_or_insert(t_write);
        if self.batch.samples() >= BATCH || t_write.duration_since(since) >= BATCH_AGE {
            self.send_batch();
        }
        self.last_write_ns = t_write.elapsed().as_nanos() as u32;

        let t = &self.totals;
        t.samples.fetch_add(1, Ordering::Relaxed);
        t.kick_ns.fetch_add(kick_ns, Ordering::Relaxed);
        t.capture_ns
            .fetch_add(u64::from(capture_ns), Ordering::Relaxed);
        t.unwind_ns
            .fetch_add(u64::from(unwind_ns), Ordering::Relaxed);
        t.write_ns
            .fetch_add(u64::from(self.last_write_ns), Ordering::Relaxed);
        Some(SampleInfo {
            cpl: uregs.cpl,
            rip: regs.rip,
        })
    }

    fn finish(&mut self) {
        self.flush_batch(RecordBatch::default());
        if let Some(l) = self.layout.current() {
            self.layout.publish(self.run, &l, &self.sink);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_sized_to_what_their_age_collects() {
        // 1 kHz: 20 samples in 20 ms, plus room for task records.
        assert_eq!(batch_records(1000), 33);
        // High rates fill a whole batch before it ages.
        assert_eq!(batch_records(100_000), BATCH);
        assert!(batch_records(0) > 0);
    }
}
