//! One vCPU thread: KVM_RUN, carrying out what `exit.rs` decided about each
//! exit (device events, breakpoints, the PVM emulation fixes), boot-end
//! detection from guest state, and the sampling hook.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use kvm_bindings::{
    kvm_guest_debug, kvm_guest_debug_arch, kvm_msr_entry, Msrs, KVM_GUESTDBG_ENABLE,
    KVM_GUESTDBG_USE_HW_BP, KVM_MP_STATE_RUNNABLE,
};
use kvm_ioctls::{SyncReg, VcpuExit, VcpuFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::breakpoints::{self, BoundaryPlan, HitKind, HitRegs, Role, Slots};
use super::compat::{CompatMode, EmulationFix};
use super::control::{EndReason, RunControl};
use super::devices::Devices;
use super::exit::{
    emulation_failure_action, handle_exit, ExitAction, FailedInstruction, FailureAction, FixCounter,
};
use super::kick::{self, ThreadTimer};
use super::steps::{StartupLog, StepKind};
use super::{BoundaryHit, RunObserver, Until, VmmPhase};

/// What a sampler reports back to the loop.
#[derive(Debug, Clone, Copy)]
pub struct SampleInfo {
    /// Privilege level at the sample (3 = user mode).
    pub cpl: u8,
    /// RIP at the sample.
    pub rip: u64,
}

/// Samples one vCPU; created on (and used only by) its thread, so it may
/// hold per-thread counters.
pub trait VcpuSampler {
    /// Called with the vCPU outside KVM_RUN. `t_ns` is the time of the kick
    /// (ns since the run's start), `kick_ns` how long ago the timer fired
    /// (0 for the first sample), `fresh_sync_regs` whether kvm_run's
    /// SYNC_REGS hold this vCPU's current state (false before the first KVM_RUN).
    fn sample(
        &mut self,
        vcpu: &mut VcpuFd,
        t_ns: u64,
        kick_ns: u64,
        fresh_sync_regs: bool,
    ) -> Option<SampleInfo>;
    /// Called once when the vCPU thread ends.
    fn finish(&mut self) {}
}

/// Shared per-boot facts the vCPU threads need to decide when the boot ends.
pub struct BootGoals {
    /// The `--until` condition.
    pub until: Until,
    /// Set once any vCPU ran user mode.
    pub user_seen: AtomicBool,
    /// Set at the first boot-marker write: later writes add no phase (a guest
    /// writing the marker in a loop must not grow the trace or our memory).
    pub marker_seen: AtomicBool,
    /// Guest-virtual entry of /init, for a hardware breakpoint, when known.
    pub init_entry: Option<u64>,
    /// Link-time address of the kernel's return-to-user-mode path
    /// (`swapgs_restore_regs_and_return_to_usermode`): empty until the
    /// symbols are read, `None` inside when they do not name it.
    pub user_return_link: Arc<std::sync::OnceLock<Option<u64>>>,
    /// Finds the KASLR slide, so the return-to-user breakpoint lands on the runtime address.
    pub locator: Option<Arc<dyn super::KernelLocator>>,
    /// The exact boundaries (initcalls, named points, `--until FUNCTION`)
    /// and which debug registers watch them.
    pub plan: BoundaryPlan,
    /// What the breakpoints and the console cost, over all vCPUs.
    pub meters: ExactMeters,
}

/// Host-side figures of one boot, summed over vCPUs.
#[derive(Debug, Default)]
pub struct ExactMeters {
    /// Breakpoint exits.
    pub bp_exits: AtomicU64,
    /// Time the VMM spent on them, from the exit to the next KVM_RUN, ns.
    pub bp_handle_ns: AtomicU64,
    /// Time the guest spent writing to the UART console, ns (see [`CONSOLE_GAP_NS`]).
    pub console_ns: AtomicU64,
    /// UART port accesses.
    pub console_accesses: AtomicU64,
}

/// UART accesses of one vCPU less than this far apart belong to one
/// console write (a console write polls the line status and writes the
/// data register for every character), so the time between them is the
/// guest writing to the console. Larger gaps are other work.
pub const CONSOLE_GAP_NS: u64 = 1_000_000;

/// Consecutive breakpoint hits at one address after which a vCPU stops
/// watching kernel boundaries (the guest cannot be stepped past it).
const MAX_STUCK_HITS: u32 = 16;

/// Boundaries a vCPU queues before handing them over at whatever exit
/// comes (without sampling there may be no kick to wait for).
const MAX_PENDING_BOUNDARIES: usize = 256;

/// IA32_TSC.
const MSR_IA32_TSC: u32 = 0x10;

/// RFLAGS.RF: the next instruction's breakpoint does not fire.
const RFLAGS_RF: u64 = 1 << 16;

/// Whether an exit is an access to the UART's ports.
fn is_uart_exit(result: &Result<VcpuExit<'_>, kvm_ioctls::Error>) -> bool {
    let com1 = super::layout::ports::COM1..super::layout::ports::COM1 + 8;
    match result {
        Ok(VcpuExit::IoOut(port, _)) | Ok(VcpuExit::IoIn(port, _)) => com1.contains(port),
        _ => false,
    }
}

/// Runs `f` as the boot vCPU's set-up step `name` when `log` is given.
fn timed<T>(log: Option<&StartupLog>, name: &'static str, f: impl FnOnce() -> T) -> T {
    match log {
        Some(log) => log.time(super::steps::BOOT_VCPU_THREAD, name, StepKind::Own, f),
        None => f(),
    }
}

/// Offset of `ip` in x86_64 `struct pt_regs`.
const PT_REGS_IP: u64 = 128;

/// Everything a vCPU thread owns.
pub struct VcpuThread {
    /// vCPU index (= APIC ID).
    pub index: u32,
    /// The vCPU.
    pub vcpu: VcpuFd,
    /// Guest memory (for instruction bytes at an emulation failure).
    pub mem: GuestMemoryMmap,
    /// Devices.
    pub devices: Arc<Devices>,
    /// Run state.
    pub control: Arc<RunControl>,
    /// Boot end conditions.
    pub goals: Arc<BootGoals>,
    /// Phases and console go here.
    pub observer: Arc<dyn RunObserver>,
    /// Host workarounds.
    pub compat: CompatMode,
    /// Sampling frequency (0 = no sampling).
    pub freq: u32,
    /// Makes this vCPU's sampler (on the vCPU thread), when sampling.
    pub sampler_factory: Option<Arc<dyn super::SamplerFactory>>,
    /// What the debug registers hold now.
    slots: Slots,
    /// (plan generation, slide, user mode seen, return-to-user link known,
    /// boundary links known) the slots were computed for.
    programmed: Option<(u64, Option<i64>, bool, bool, bool)>,
    /// The KASLR slide once known.
    slide: Option<i64>,
    /// The last breakpoint address and how often it fired in a row.
    stuck: (u64, u32),
    /// No more kernel-boundary breakpoints on this vCPU.
    boundaries_off: bool,
    /// Time of this vCPU's previous UART access, ns.
    uart_prev: Option<u64>,
    /// Boundaries not handed to the observer yet (see [`BoundaryHit`]).
    pending: Vec<BoundaryHit>,
    /// Where the boot vCPU times its set-up steps, and when its thread was started.
    startup: Option<(Arc<StartupLog>, u64)>,
}

impl VcpuThread {
    /// A vCPU thread's state; the sampler is made when the thread starts.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        index: u32,
        vcpu: VcpuFd,
        mem: GuestMemoryMmap,
        devices: Arc<Devices>,
        control: Arc<RunControl>,
        goals: Arc<BootGoals>,
        observer: Arc<dyn RunObserver>,
        compat: CompatMode,
        sampler_factory: Option<Arc<dyn super::SamplerFactory>>,
    ) -> Self {
        let freq = sampler_factory.as_ref().map_or(0, |f| f.frequency());
        VcpuThread {
            index,
            vcpu,
            mem,
            devices,
            control,
            goals,
            observer,
            compat,
            freq,
            sampler_factory,
            slots: [None; breakpoints::SLOTS],
            programmed: None,
            slide: None,
            stuck: (0, 0),
            boundaries_off: false,
            uart_prev: None,
            pending: Vec::new(),
            startup: None,
        }
    }

    /// Times this thread's set-up steps into `log` (the boot vCPU's: they
    /// are on the way to the first instruction).
    /// Call right before starting the thread: its wait for a CPU is a step.
    pub fn with_startup_log(mut self, log: Option<Arc<StartupLog>>) -> Self {
        self.startup = log.map(|l| {
            let now = l.now_ns();
            (l, now)
        });
        self
    }

    /// Runs the vCPU until the boot ends.
    pub fn run(mut self) {
        let log = self.startup.take().map(|(log, started)| {
            log.scheduled(super::steps::BOOT_VCPU_THREAD, started);
            log
        });
        let factory = self.sampler_factory.take();
        let mut sampler = timed(log.as_deref(), "sampler (host counters)", || {
            factory.map(|f| f.create(self.index, &self.vcpu, &self.mem))
        });
        let run_ptr = self.vcpu.get_kvm_run() as *mut kvm_bindings::kvm_run;
        let _guard = kick::register_kvm_run(run_ptr);
        // SYNC_REGS: KVM copies regs/sregs into kvm_run on every exit, so
        // boot-end checks and samples need no extra ioctl.
        self.vcpu.set_sync_valid_reg(SyncReg::Register);
        self.vcpu.set_sync_valid_reg(SyncReg::SystemRegister);
        timed(log.as_deref(), "breakpoints", || {
            self.sync_breakpoints(false)
        });
        let _timer = if self.freq > 0 && sampler.is_some() {
            match timed(log.as_deref(), "sampling timer", || {
                ThreadTimer::start_for_current_thread(self.freq)
            }) {
                Ok(t) => Some(t),
                Err(e) => {
                    self.control.end(EndReason::VcpuError(format!(
                        "cannot start the sampling timer: {e}"
                    )));
                    None
                }
            }
        } else {
            None
        };
        let is_bsp = self.index == 0;
        let mut started = is_bsp;
        if is_bsp {
            self.observer
                .phase(VmmPhase::FirstInstruction, self.control.now_ns());
            // The first sample is the first guest instruction itself (t = entry).
            self.take_sample(sampler.as_deref_mut(), &mut started, None, false);
            if matches!(self.goals.until, Until::FirstInstruction) {
                // Nothing of the guest ran: the recording measured VMM start-up.
                self.control.end(EndReason::FirstInstruction);
            }
        }
        let period_ns = if self.freq > 0 {
            1_000_000_000 / u64::from(self.freq)
        } else {
            0
        };
        // Set up is done: from here on the guest drives this thread, which
        // may make only the calls its loop needs.
        if let Err(e) = super::seccomp::confine_current_thread() {
            self.control.end(EndReason::VcpuError(e.to_string()));
        }
        let mut fixes = FixCounter::default();
        // Exit time of a breakpoint exit not yet re-entered.
        let mut bp_exit: Option<u64> = None;
        while !self.control.should_stop() {
            if let Some(t) = bp_exit.take() {
                self.breakpoint_handled(t);
            }
            let result = self.vcpu.run();
            // Taken first: boundaries and console time are as close to the
            // guest's instruction as the host lets us see it.
            let t_exit = self.control.now_ns();
            if matches!(result, Ok(VcpuExit::Debug(_))) {
                bp_exit = Some(t_exit);
                self.goals.meters.bp_exits.fetch_add(1, Ordering::Relaxed);
            }
            let uart = is_uart_exit(&result);
            let action = handle_exit(result, self.devices.as_ref());
            self.carry_out(action, &mut fixes, t_exit);
            if uart {
                self.console_access(t_exit);
            }
            self.sync_breakpoints(true);
            // User mode seen at an exit (SYNC_REGS are fresh after every exit).
            let cs = self.vcpu.sync_regs().sregs.cs;
            if cs.selector & 3 == 3 {
                let rip = self.vcpu.sync_regs().regs.rip;
                self.user_mode_reached(rip, "exit");
            }
            // A kick: the signal handler set immediate_exit.
            let kicked = {
                let run = self.vcpu.get_kvm_run();
                let k = run.immediate_exit != 0;
                run.immediate_exit = 0;
                k
            };
            if kicked && !self.control.should_stop() {
                let kick_ns = _timer
                    .as_ref()
                    .map_or(0, |t| t.since_last_expiry_ns(period_ns));
                self.take_sample(sampler.as_deref_mut(), &mut started, Some(kick_ns), true);
            }
            if (kicked && bp_exit.is_none()) || self.pending.len() >= MAX_PENDING_BOUNDARIES {
                self.hand_over_boundaries();
            }
        }
        if let Some(t) = bp_exit {
            self.breakpoint_handled(t);
        }
        self.hand_over_boundaries();
        if let Some(s) = sampler.as_mut() {
            s.finish();
        }
    }

    fn take_sample(
        &mut self,
        sampler: Option<&mut (dyn VcpuSampler + 'static)>,
        started: &mut bool,
        kick_ns: Option<u64>,
        fresh: bool,
    ) {
        let t = self.control.now_ns();
        if !*started {
            // APs wait for INIT/SIPI inside KVM: samples there would be noise.
            match self.vcpu.get_mp_state() {
                Ok(s) if s.mp_state == KVM_MP_STATE_RUNNABLE => *started = true,
                _ => return,
            }
        }
        let Some(sampler) = sampler else {
            return;
        };
        if let Some(info) = sampler.sample(&mut self.vcpu, t, kick_ns.unwrap_or(0), fresh) {
            if info.cpl == 3 {
                self.user_mode_reached(info.rip, "sample");
            }
        }
    }

    fn user_mode_reached(&self, rip: u64, how: &'static str) {
        if self.goals.user_seen.swap(true, Ordering::SeqCst) {
            return;
        }
        self.observer
            .phase(VmmPhase::UserMode, self.control.now_ns());
        if matches!(self.goals.until, Until::User) {
            self.control.end(EndReason::UserMode {
                vcpu: self.index,
                rip,
                how,
            });
        }
    }

    /// Programs the debug registers with what the boundary plan wants now
    /// (when the plan, the slide or user mode changed since the last time).
    /// The KASLR slide is learnt from guest state at exits; `fresh` says
    /// whether SYNC_REGS hold current state.
    fn sync_breakpoints(&mut self, fresh: bool) {
        let user_seen = self.goals.user_seen.load(Ordering::Relaxed);
        // Symbols may still be arriving from the kernel analysis (it runs
        // beside the boot): what is not known yet is armed at a later exit.
        let needs_slide = matches!(self.goals.user_return_link.get(), Some(Some(_)))
            || self.goals.plan.watches_kernel();
        if self.slide.is_none() && needs_slide {
            if let Some(loc) = self.goals.locator.as_ref() {
                let state = fresh.then(|| {
                    let s = self.vcpu.sync_regs();
                    (s.regs, s.sregs)
                });
                self.slide = loc.locate(&self.mem, state.as_ref().map(|(r, s)| (r, s)));
            }
        }
        let key = (
            self.goals.plan.generation(),
            self.slide,
            user_seen,
            self.goals.user_return_link.get().is_some(),
            self.goals.plan.links().is_some(),
        );
        if self.programmed == Some(key) {
            return;
        }
        self.programmed = Some(key);
        let user = if user_seen {
            (None, None)
        } else {
            (
                self.goals.user_return_link.get().copied().flatten(),
                self.goals.init_entry,
            )
        };
        let mut slots = self.goals.plan.wanted(self.slide, user);
        if self.boundaries_off {
            for s in slots.iter_mut() {
                if !matches!(s, Some((_, Role::UserReturn | Role::InitEntry))) {
                    *s = None;
                }
            }
        }
        if slots != self.slots {
            self.slots = slots;
            self.set_breakpoints();
        }
    }

    /// Programs execute breakpoints in DR0..DR3 for the armed slots.
    fn set_breakpoints(&self) {
        let mut dbg = kvm_guest_debug::default();
        let mut regs = [0u64; 8];
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some((a, _)) = slot {
                regs[i] = *a;
                regs[7] |= 1 << (2 * i); // local enable; RW=00 (execute), LEN=00
            }
        }
        if regs[7] != 0 {
            dbg.control = KVM_GUESTDBG_ENABLE | KVM_GUESTDBG_USE_HW_BP;
            dbg.arch = kvm_guest_debug_arch { debugreg: regs };
        }
        // Without guest-debug support the boot end still comes from exits and samples.
        let _ = self.vcpu.set_guest_debug(&dbg);
    }

    /// The guest's TSC (KVM_GET_MSRS of IA32_TSC).
    fn guest_tsc(&self) -> Option<u64> {
        let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
            index: MSR_IA32_TSC,
            ..Default::default()
        }])
        .ok()?;
        let n = self.vcpu.get_msrs(&mut msrs).ok()?;
        (n == 1).then(|| msrs.as_slice()[0].data)
    }

    /// A UART access at `t_ns`: the time since this vCPU's previous one is
    /// console time when they are less than [`CONSOLE_GAP_NS`] apart.
    fn console_access(&mut self, t_ns: u64) {
        let m = &self.goals.meters;
        m.console_accesses.fetch_add(1, Ordering::Relaxed);
        if let Some(prev) = self.uart_prev {
            let gap = t_ns.saturating_sub(prev);
            if gap < CONSOLE_GAP_NS {
                m.console_ns.fetch_add(gap, Ordering::Relaxed);
            }
        }
        self.uart_prev = Some(t_ns);
    }

    /// A hardware breakpoint fired (DR6 `dr6`, at `pc`; the exit came back at `t_ns`).
    fn breakpoint_hit(&mut self, dr6: u64, pc: u64, t_ns: u64) {
        let Some((_, addr, role)) = breakpoints::fired(&self.slots, dr6) else {
            // Nothing armed fired (an old program): run on.
            return;
        };
        match role {
            Role::UserReturn => {
                // At the kernel's last step before iret to user mode:
                // pt_regs is at RSP, and its ip is the first user instruction.
                let rsp = self.vcpu.sync_regs().regs.rsp;
                let rip = rsp
                    .checked_add(PT_REGS_IP)
                    .and_then(|a| self.read_guest_u64(a))
                    .unwrap_or(pc);
                self.user_mode_reached(rip, "hw-breakpoint on the kernel's return to user mode");
            }
            Role::InitEntry => self.user_mode_reached(pc, "hw-breakpoint at /init's entry"),
            _ => self.boundary_hit(role, addr, pc, t_ns),
        }
    }

    /// A breakpoint exit at `t_exit` is over: the guest runs again now.
    fn breakpoint_handled(&self, t_exit: u64) {
        self.goals.meters.bp_handle_ns.fetch_add(
            self.control.now_ns().saturating_sub(t_exit),
            Ordering::Relaxed,
        );
    }

    /// Hands the queued boundaries to the observer (one batch).
    fn hand_over_boundaries(&mut self) {
        if !self.pending.is_empty() {
            self.observer.boundaries(&self.pending);
            self.pending.clear();
        }
    }

    /// A kernel-boundary slot fired: the plan decides what it means.
    fn boundary_hit(&mut self, role: Role, addr: u64, pc: u64, t_ns: u64) {
        let r = self.vcpu.sync_regs().regs;
        let regs = HitRegs {
            rip: pc,
            rsp: r.rsp,
            rdi: r.rdi,
            rax: r.rax,
            at_rsp: (role == Role::InitcallFn)
                .then(|| self.read_guest_u64(r.rsp))
                .flatten(),
        };
        if let Some(hit) = self.goals.plan.hit(role, addr, &regs) {
            self.pending.push(BoundaryHit {
                vcpu: self.index,
                t_ns,
                tsc: self.guest_tsc(),
                hit,
                slide: self.slide,
            });
            if hit.kind == HitKind::Until {
                let name = self
                    .goals
                    .plan
                    .links()
                    .and_then(|l| l.until.as_ref())
                    .map_or_else(String::new, |(n, _)| n.clone());
                self.control.end(EndReason::Function(name));
            }
        }
        self.stuck = if self.stuck.0 == pc {
            (pc, self.stuck.1 + 1)
        } else {
            (pc, 1)
        };
        if self.stuck.1 > MAX_STUCK_HITS {
            // The guest cannot be resumed past this address: stop watching.
            self.boundaries_off = true;
            self.goals.plan.reset_initcall();
            return;
        }
        // Resuming at an address that stays armed (a hit that was not the
        // one expected): RF lets its first instruction run.
        self.sync_breakpoints(true);
        if self.slots.iter().flatten().any(|(a, _)| *a == pc) {
            let mut regs = r;
            regs.rflags |= RFLAGS_RF;
            let _ = self.vcpu.set_regs(&regs);
        }
    }

    /// Reads a u64 at a guest-virtual address through KVM's translation.
    fn read_guest_u64(&self, va: u64) -> Option<u64> {
        let t = self.vcpu.translate_gva(va).ok()?;
        if t.valid == 0 {
            return None;
        }
        self.mem
            .read_obj::<u64>(GuestAddress(t.physical_address))
            .ok()
    }

    /// Does what the exit handler decided.
    fn carry_out(&mut self, action: ExitAction, fixes: &mut FixCounter, t_exit: u64) {
        match action {
            ExitAction::Continue => {}
            ExitAction::BootMarker => {
                if self.goals.marker_seen.swap(true, Ordering::SeqCst) {
                    return;
                }
                self.observer
                    .phase(VmmPhase::BootMarker, self.control.now_ns());
                if matches!(self.goals.until, Until::Marker) {
                    self.control.end(EndReason::Marker);
                }
            }
            ExitAction::Breakpoint { dr6, pc } => self.breakpoint_hit(dr6, pc, t_exit),
            ExitAction::EmulationFailure => {
                let failed = self.failed_instruction();
                let fixes_here = fixes.at(failed.rip);
                match emulation_failure_action(self.compat, failed, fixes_here) {
                    FailureAction::Fix(fix) => self.apply_fix(fix),
                    FailureAction::End(reason) => self.control.end(reason),
                }
            }
            ExitAction::End(reason) => self.control.end(reason),
        }
    }

    /// The guest state at an emulation failure (SYNC_REGS are fresh after the exit).
    fn failed_instruction(&mut self) -> FailedInstruction {
        let suberror = {
            let run = self.vcpu.get_kvm_run();
            // SAFETY: exit_reason is KVM_EXIT_INTERNAL_ERROR, so the `internal`
            // member of the union is the one KVM filled in.
            unsafe { run.__bindgen_anon_1.internal.suberror }
        };
        let sync = self.vcpu.sync_regs();
        let (rip, sregs) = (sync.regs.rip, sync.sregs);
        FailedInstruction {
            vcpu: self.index,
            rip,
            bytes: self.instruction_bytes(rip, sregs.cr0 & (1 << 31) != 0),
            cpl: (sregs.cs.selector & 3) as u8,
            suberror,
        }
    }

    /// Steps over the failed instruction and, for int3, injects #BP.
    fn apply_fix(&mut self, fix: EmulationFix) {
        let mut regs = self.vcpu.sync_regs().regs;
        regs.rip = regs.rip.wrapping_add(1);
        if self.vcpu.set_regs(&regs).is_err() {
            self.control.end(EndReason::VcpuError(
                "KVM_SET_REGS failed during a workaround".into(),
            ));
            return;
        }
        if fix == EmulationFix::SkipAndInjectBreakpoint {
            let ok = self.vcpu.get_vcpu_events().and_then(|mut ev| {
                ev.exception.injected = 1;
                ev.exception.nr = 3;
                ev.exception.has_error_code = 0;
                self.vcpu.set_vcpu_events(&ev)
            });
            if ok.is_err() {
                self.control
                    .end(EndReason::VcpuError("cannot inject #BP".into()));
            }
        }
    }

    /// Up to 15 bytes at a guest RIP (translated by KVM when paging is on).
    fn instruction_bytes(&self, rip: u64, paging: bool) -> Vec<u8> {
        let phys = if paging {
            match self.vcpu.translate_gva(rip) {
                Ok(t) if t.valid != 0 => t.physical_address,
                _ => return Vec::new(),
            }
        } else {
            rip
        };
        let mut out = Vec::with_capacity(15);
        for i in 0..15u64 {
            // Byte by byte: the instruction may straddle the end of RAM.
            match self.mem.read_obj::<u8>(GuestAddress(phys + i)) {
                Ok(b) => out.push(b),
                Err(_) => break,
            }
        }
        out
    }
}
