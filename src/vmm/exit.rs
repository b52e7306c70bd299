//! What a vCPU does about one KVM exit, decided from the exit value alone.
//!
//! After Firecracker's `vstate/vcpu.rs` `handle_kvm_exit`: device I/O is
//! handed to an [`IoBus`], everything else becomes an [`ExitAction`] that the
//! vCPU loop (`vcpu.rs`) carries out. Nothing here needs a vCPU or KVM, so
//! the decisions are unit-tested with made-up exits.

use kvm_bindings::kvm_debug_exit_arch;
use kvm_ioctls::VcpuExit;

use super::compat::{fix_for, CompatMode, EmulationFix};
use super::control::EndReason;
use super::devices::{DeviceEvent, Devices};

/// Device I/O as the exit handler sees it (implemented by [`Devices`]; tests
/// use a fake).
pub trait IoBus {
    /// A port read; fills `data`.
    fn pio_read(&self, port: u16, data: &mut [u8]);
    /// A port write; may report a device event.
    fn pio_write(&self, port: u16, data: &[u8]) -> Option<DeviceEvent>;
    /// An MMIO read; fills `data`.
    fn mmio_read(&self, addr: u64, data: &mut [u8]);
    /// An MMIO write; may report a device event.
    fn mmio_write(&self, addr: u64, data: &[u8]) -> Option<DeviceEvent>;
}

impl IoBus for Devices {
    fn pio_read(&self, port: u16, data: &mut [u8]) {
        Devices::pio_read(self, port, data);
    }
    fn pio_write(&self, port: u16, data: &[u8]) -> Option<DeviceEvent> {
        Devices::pio_write(self, port, data)
    }
    fn mmio_read(&self, addr: u64, data: &mut [u8]) {
        Devices::mmio_read(self, addr, data);
    }
    fn mmio_write(&self, addr: u64, data: &[u8]) -> Option<DeviceEvent> {
        Devices::mmio_write(self, addr, data)
    }
}

/// What the vCPU loop does after an exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitAction {
    /// Nothing more to do: run again.
    Continue,
    /// The guest wrote the boot marker.
    BootMarker,
    /// A hardware breakpoint fired: `dr6`'s low four bits say which
    /// debug register (the vCPU knows what it watches, see `breakpoints.rs`).
    Breakpoint {
        /// DR6 as KVM reported it.
        dr6: u64,
        /// Where the breakpoint hit.
        pc: u64,
    },
    /// The host could not run an instruction: look at it (RIP, bytes) and
    /// decide with [`emulation_failure_action`].
    EmulationFailure,
    /// The run ends.
    End(EndReason),
}

/// Decides what one `KVM_RUN` result means, doing device I/O through `bus`.
pub fn handle_exit(result: Result<VcpuExit<'_>, kvm_ioctls::Error>, bus: &dyn IoBus) -> ExitAction {
    let exit = match result {
        Ok(exit) => exit,
        // A kick (signal) or immediate_exit: the loop samples and re-enters.
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
            return ExitAction::Continue
        }
        Err(e) => return ExitAction::End(EndReason::VcpuError(format!("KVM_RUN failed: {e}"))),
    };
    match exit {
        VcpuExit::IoOut(port, data) => device_action(bus.pio_write(port, data)),
        VcpuExit::IoIn(port, data) => {
            bus.pio_read(port, data);
            ExitAction::Continue
        }
        VcpuExit::MmioWrite(addr, data) => device_action(bus.mmio_write(addr, data)),
        VcpuExit::MmioRead(addr, data) => {
            bus.mmio_read(addr, data);
            ExitAction::Continue
        }
        VcpuExit::Hlt | VcpuExit::IrqWindowOpen | VcpuExit::Intr => ExitAction::Continue,
        VcpuExit::Shutdown => {
            ExitAction::End(EndReason::Shutdown("triple fault or shutdown".into()))
        }
        VcpuExit::SystemEvent(kind, _) => {
            ExitAction::End(EndReason::Shutdown(format!("system event {kind}")))
        }
        VcpuExit::FailEntry(reason, cpu) => ExitAction::End(EndReason::VcpuError(format!(
            "KVM entry failed: hardware reason {reason:#x} on CPU {cpu}"
        ))),
        VcpuExit::Debug(arch) => debug_action(&arch),
        VcpuExit::InternalError => ExitAction::EmulationFailure,
        other => ExitAction::End(EndReason::VcpuError(format!(
            "unhandled KVM exit {other:?}"
        ))),
    }
}

fn device_action(event: Option<DeviceEvent>) -> ExitAction {
    match event {
        Some(DeviceEvent::Reset) => ExitAction::End(EndReason::Reset),
        Some(DeviceEvent::BootMarker) => ExitAction::BootMarker,
        None => ExitAction::Continue,
    }
}

fn debug_action(arch: &kvm_debug_exit_arch) -> ExitAction {
    ExitAction::Breakpoint {
        dr6: arch.dr6,
        pc: arch.pc,
    }
}

/// Upper bound on consecutive emulation fixes at one RIP: a guest looping on
/// an int3 must not spin the VMM forever.
pub const MAX_FIXES_AT_SAME_RIP: u32 = 1000;

/// The guest state at an emulation failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedInstruction {
    /// vCPU index.
    pub vcpu: u32,
    /// Guest RIP.
    pub rip: u64,
    /// Up to 15 bytes at RIP (empty when unreadable).
    pub bytes: Vec<u8>,
    /// Privilege level.
    pub cpl: u8,
    /// KVM's internal-error suberror.
    pub suberror: u32,
}

/// What to do about an emulation failure: a host workaround, or the end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FailureAction {
    /// Apply this fix (RIP += 1, maybe inject #BP) and run on.
    Fix(EmulationFix),
    /// No workaround applies (or it was applied too often here): the run ends.
    End(EndReason),
}

/// Decides about an emulation failure; `fixes_here` counts the fixes already
/// applied in a row at the same RIP.
pub fn emulation_failure_action(
    compat: CompatMode,
    failed: FailedInstruction,
    fixes_here: u32,
) -> FailureAction {
    let fix = if fixes_here < MAX_FIXES_AT_SAME_RIP {
        fix_for(compat, &failed.bytes)
    } else {
        None
    };
    match fix {
        Some(f) => FailureAction::Fix(f),
        None => FailureAction::End(EndReason::EmulationFailure {
            vcpu: failed.vcpu,
            rip: failed.rip,
            bytes: failed.bytes,
            cpl: failed.cpl,
            suberror: failed.suberror,
        }),
    }
}

/// Counts consecutive emulation failures at one RIP (for [`MAX_FIXES_AT_SAME_RIP`]).
#[derive(Debug, Default)]
pub struct FixCounter {
    rip: Option<u64>,
    count: u32,
}

impl FixCounter {
    /// Records a failure at `rip`; returns how many fixes were applied at
    /// this RIP in a row before it.
    pub fn at(&mut self, rip: u64) -> u32 {
        if self.rip == Some(rip) {
            self.count = self.count.saturating_add(1);
        } else {
            self.rip = Some(rip);
            self.count = 0;
        }
        self.count
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    /// Records I/O; answers port reads with 0x42 and reports a reset on a
    /// write of 0xfe to port 0x64, the boot marker on MMIO 0xd0000000.
    #[derive(Default)]
    struct FakeBus {
        log: RefCell<Vec<String>>,
    }

    impl IoBus for FakeBus {
        fn pio_read(&self, port: u16, data: &mut [u8]) {
            self.log.borrow_mut().push(format!("in {port:#x}"));
            data.fill(0x42);
        }
        fn pio_write(&self, port: u16, data: &[u8]) -> Option<DeviceEvent> {
            self.log
                .borrow_mut()
                .push(format!("out {port:#x} {data:?}"));
            (port == 0x64 && data == [0xfe]).then_some(DeviceEvent::Reset)
        }
        fn mmio_read(&self, addr: u64, data: &mut [u8]) {
            self.log.borrow_mut().push(format!("mmio-read {addr:#x}"));
            data.fill(0x17);
        }
        fn mmio_write(&self, addr: u64, data: &[u8]) -> Option<DeviceEvent> {
            self.log
                .borrow_mut()
                .push(format!("mmio-write {addr:#x} {data:?}"));
            (addr == 0xd000_0000).then_some(DeviceEvent::BootMarker)
        }
    }

    fn ends_with_vcpu_error(a: &ExitAction, needle: &str) -> bool {
        matches!(a, ExitAction::End(EndReason::VcpuError(m)) if m.contains(needle))
    }

    #[test]
    fn port_io_goes_to_the_bus() {
        let bus = FakeBus::default();
        let mut buf = [0u8; 2];
        assert_eq!(
            handle_exit(Ok(VcpuExit::IoIn(0x3f8, &mut buf)), &bus),
            ExitAction::Continue
        );
        assert_eq!(buf, [0x42, 0x42]);
        assert_eq!(
            handle_exit(Ok(VcpuExit::IoOut(0x3f8, b"x")), &bus),
            ExitAction::Continue
        );
        assert_eq!(
            handle_exit(Ok(VcpuExit::IoOut(0x64, &[0xfe])), &bus),
            ExitAction::End(EndReason::Reset)
        );
        assert_eq!(
            *bus.log.borrow(),
            ["in 0x3f8", "out 0x3f8 [120]", "out 0x64 [254]"]
        );
    }

    #[test]
    fn mmio_goes_to_the_bus_and_the_marker_is_reported() {
        let bus = FakeBus::default();
        let mut buf = [0u8; 4];
        assert_eq!(
            handle_exit(Ok(VcpuExit::MmioRead(0xd000_1000, &mut buf)), &bus),
            ExitAction::Continue
        );
        assert_eq!(buf, [0x17; 4]);
        assert_eq!(
            handle_exit(Ok(VcpuExit::MmioWrite(0xd000_0000, &[123])), &bus),
            ExitAction::BootMarker
        );
        assert_eq!(
            handle_exit(Ok(VcpuExit::MmioWrite(0xd000_0008, &[1])), &bus),
            ExitAction::Continue
        );
    }

    #[test]
    fn the_real_devices_read_unbacked_mmio_as_all_ones() {
        let sink = super::super::devices::LineSink::new(Box::new(|_: &str| {}));
        let irq = vmm_sys_util::eventfd::EventFd::new(0).expect("eventfd");
        let devices = Devices::new(irq, sink);
        let mut buf = [0u8; 4];
        let a = handle_exit(Ok(VcpuExit::MmioRead(0xfeb0_0000, &mut buf)), &devices);
        assert_eq!(a, ExitAction::Continue);
        assert_eq!(buf, [0xff; 4]);
    }

    #[test]
    fn halts_and_interrupt_windows_continue() {
        let bus = FakeBus::default();
        for exit in [VcpuExit::Hlt, VcpuExit::IrqWindowOpen, VcpuExit::Intr] {
            assert_eq!(handle_exit(Ok(exit), &bus), ExitAction::Continue);
        }
        assert!(bus.log.borrow().is_empty());
    }

    #[test]
    fn shutdowns_and_failed_entries_end_the_run() {
        let bus = FakeBus::default();
        assert!(matches!(
            handle_exit(Ok(VcpuExit::Shutdown), &bus),
            ExitAction::End(EndReason::Shutdown(_))
        ));
        assert_eq!(
            handle_exit(Ok(VcpuExit::SystemEvent(2, &[])), &bus),
            ExitAction::End(EndReason::Shutdown("system event 2".into()))
        );
        let a = handle_exit(Ok(VcpuExit::FailEntry(0x80000021, 1)), &bus);
        assert!(
            ends_with_vcpu_error(&a, "hardware reason 0x80000021 on CPU 1"),
            "{a:?}"
        );
        let a = handle_exit(Ok(VcpuExit::Exception), &bus);
        assert!(ends_with_vcpu_error(&a, "unhandled KVM exit"), "{a:?}");
    }

    #[test]
    fn interrupted_runs_continue_and_other_errors_end() {
        let bus = FakeBus::default();
        for errno in [libc::EINTR, libc::EAGAIN] {
            assert_eq!(
                handle_exit(Err(kvm_ioctls::Error::new(errno)), &bus),
                ExitAction::Continue
            );
        }
        let a = handle_exit(Err(kvm_ioctls::Error::new(libc::EFAULT)), &bus);
        assert!(ends_with_vcpu_error(&a, "KVM_RUN failed"), "{a:?}");
    }

    #[test]
    fn debug_exits_carry_dr6_and_the_address() {
        let bus = FakeBus::default();
        let hit = kvm_debug_exit_arch {
            dr6: 0xffff_0ff0 | 0b100,
            pc: 0xffff_ffff_81c0_0100,
            ..Default::default()
        };
        assert_eq!(
            handle_exit(Ok(VcpuExit::Debug(hit)), &bus),
            ExitAction::Breakpoint {
                dr6: 0xffff_0ff4,
                pc: 0xffff_ffff_81c0_0100
            }
        );
    }

    #[test]
    fn internal_errors_ask_for_the_instruction() {
        let bus = FakeBus::default();
        assert_eq!(
            handle_exit(Ok(VcpuExit::InternalError), &bus),
            ExitAction::EmulationFailure
        );
    }

    fn failed(bytes: &[u8]) -> FailedInstruction {
        FailedInstruction {
            vcpu: 0,
            rip: 0xffff_ffff_8100_2000,
            bytes: bytes.to_vec(),
            cpl: 0,
            suberror: 1,
        }
    }

    #[test]
    fn int3_and_fwait_are_fixed_on_pvm_only() {
        assert_eq!(
            emulation_failure_action(CompatMode::Pvm, failed(&[0xcc, 0x90]), 0),
            FailureAction::Fix(EmulationFix::SkipAndInjectBreakpoint)
        );
        assert_eq!(
            emulation_failure_action(CompatMode::Pvm, failed(&[0x9b]), 0),
            FailureAction::Fix(EmulationFix::Skip)
        );
        match emulation_failure_action(CompatMode::None, failed(&[0xcc]), 0) {
            FailureAction::End(EndReason::EmulationFailure { rip, bytes, .. }) => {
                assert_eq!(rip, 0xffff_ffff_8100_2000);
                assert_eq!(bytes, [0xcc]);
            }
            other => panic!("expected the end of the run, got {other:?}"),
        }
    }

    #[test]
    fn unknown_instructions_and_endless_fixes_end_the_run() {
        // xrstor: no workaround, even on PVM.
        assert!(matches!(
            emulation_failure_action(CompatMode::Pvm, failed(&[0x0f, 0xae, 0x2f]), 0),
            FailureAction::End(EndReason::EmulationFailure { .. })
        ));
        assert!(matches!(
            emulation_failure_action(CompatMode::Pvm, failed(&[]), 0),
            FailureAction::End(_)
        ));
        assert!(matches!(
            emulation_failure_action(CompatMode::Pvm, failed(&[0xcc]), MAX_FIXES_AT_SAME_RIP),
            FailureAction::End(_)
        ));
    }

    #[test]
    fn fix_counter_counts_repeats_at_one_rip() {
        let mut c = FixCounter::default();
        assert_eq!(c.at(0x1000), 0);
        assert_eq!(c.at(0x1000), 1);
        assert_eq!(c.at(0x1000), 2);
        assert_eq!(c.at(0x2000), 0);
        assert_eq!(c.at(0x1000), 0);
    }
}
