//! One vCPU thread: KVM_RUN, carrying out what `exit.rs` decided about each
//! exit (device events, breakpoints, the PVM emulation fixes), boot-end
//! detection from guest state, and the sampling hook.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kvm_bindings::{
    kvm_guest_debug, kvm_guest_debug_arch, KVM_GUESTDBG_ENABLE, KVM_GUESTDBG_USE_HW_BP,
    KVM_MP_STATE_RUNNABLE,
};
use kvm_ioctls::{SyncReg, VcpuFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::compat::{CompatMode, EmulationFix};
use super::control::{EndReason, RunControl};
use super::devices::Devices;
use super::exit::{
    emulation_failure_action, handle_exit, ExitAction, FailedInstruction, FailureAction,
    FixCounter, BP_INIT_ENTRY, BP_USER_RETURN,
};
use super::kick::{self, ThreadTimer};
use super::{RunObserver, Until, VmmPhase};

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
        }
    }

    /// Runs the vCPU until the boot ends.
    pub fn run(mut self) {
        let mut sampler = self
            .sampler_factory
            .take()
            .map(|f| f.create(self.index, &self.vcpu, &self.mem));
        let run_ptr = self.vcpu.get_kvm_run() as *mut kvm_bindings::kvm_run;
        let _guard = kick::register_kvm_run(run_ptr);
        // SYNC_REGS: KVM copies regs/sregs into kvm_run on every exit, so
        // boot-end checks and samples need no extra ioctl.
        self.vcpu.set_sync_valid_reg(SyncReg::Register);
        self.vcpu.set_sync_valid_reg(SyncReg::SystemRegister);
        let mut bps_armed = false;
        self.arm_breakpoints(&mut bps_armed, false);
        let _timer = if self.freq > 0 && sampler.is_some() {
            match ThreadTimer::start_for_current_thread(self.freq) {
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
        while !self.control.should_stop() {
            let result = self.vcpu.run();
            let action = handle_exit(result, self.devices.as_ref());
            self.carry_out(action, &mut fixes, &mut bps_armed);
            if !bps_armed {
                self.arm_breakpoints(&mut bps_armed, true);
            }
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
        }
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

    /// Arms the user-mode breakpoints once their addresses are known: /init's
    /// entry (known up front) and the kernel's return-to-user path (needs the
    /// KASLR slide, learnt from guest state at exits). `fresh` says whether
    /// SYNC_REGS hold current state.
    fn arm_breakpoints(&mut self, armed: &mut bool, fresh: bool) {
        if self.goals.user_seen.load(Ordering::Relaxed) {
            *armed = true;
            return;
        }
        let mut slots = [None, None];
        slots[BP_INIT_ENTRY] = self.goals.init_entry;
        let Some(&link) = self.goals.user_return_link.get() else {
            // The symbols are still being read: arm what we have, retry at the next exit.
            if !fresh {
                self.set_breakpoints(&slots);
            }
            return;
        };
        if let (Some(link), Some(loc)) = (link, self.goals.locator.as_ref()) {
            let state = fresh.then(|| {
                let s = self.vcpu.sync_regs();
                (s.regs, s.sregs)
            });
            match loc.locate(&self.mem, state.as_ref().map(|(r, s)| (r, s))) {
                Some(slide) => slots[BP_USER_RETURN] = Some(link.wrapping_add(slide as u64)),
                None => {
                    // Not known yet: arm what we have, try again at the next exit.
                    if !fresh {
                        self.set_breakpoints(&slots);
                    }
                    return;
                }
            }
        }
        self.set_breakpoints(&slots);
        *armed = true;
    }

    /// Programs execute breakpoints in DR0.. for the given slots (empty: none).
    fn set_breakpoints(&self, slots: &[Option<u64>]) {
        let mut dbg = kvm_guest_debug::default();
        let mut regs = [0u64; 8];
        for (i, a) in slots.iter().enumerate().take(4) {
            if let Some(a) = a {
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
    fn carry_out(&mut self, action: ExitAction, fixes: &mut FixCounter, bps_armed: &mut bool) {
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
            ExitAction::UserReturnBreakpoint { pc } => {
                // At the kernel's last step before iret to user mode:
                // pt_regs is at RSP, and its ip is the first user instruction.
                let rsp = self.vcpu.sync_regs().regs.rsp;
                let rip = rsp
                    .checked_add(PT_REGS_IP)
                    .and_then(|a| self.read_guest_u64(a))
                    .unwrap_or(pc);
                self.user_mode_reached(rip, "hw-breakpoint on the kernel's return to user mode");
                self.set_breakpoints(&[]);
                *bps_armed = true;
            }
            ExitAction::InitEntryBreakpoint { pc } => {
                self.user_mode_reached(pc, "hw-breakpoint at /init's entry");
                self.set_breakpoints(&[]);
                *bps_armed = true;
            }
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
