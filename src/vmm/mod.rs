//! boottrace's microVM: one function, [`boot`], assembled from small named
//! steps (after rust-vmm's vmm-reference): create the VM, its memory, load the
//! kernel, describe the machine, create vCPUs, run them until the boot ends.

pub mod bootparams;
pub mod breakpoints;
pub mod compat;
pub mod control;
pub mod cpu;
pub mod devices;
pub mod exit;
pub mod initrd;
pub mod kick;
pub mod layout;
pub mod loader;
pub mod memory;
pub mod mptable;
pub mod seccomp;
pub mod steps;
pub mod vcpu;
pub mod virtio;

use std::os::unix::thread::JoinHandleExt;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, CpuId, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::{Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use compat::CompatMode;
use control::{EndReason, RunControl};
use devices::{Devices, LineSink};
use loader::{EntryMode, LoadedKernel};
use memory::MemoryOptions;
use steps::{StartupLog, StepKind, BOOT_VCPU_THREAD, MAIN_THREAD as MAIN};
pub use vcpu::{SampleInfo, VcpuSampler};

/// When a boot counts as finished.
#[derive(Debug, Clone)]
pub enum Until {
    /// The first user-mode instruction (init started). The default.
    User,
    /// The first guest instruction: the VMM's own set-up and nothing of the
    /// guest (the guest runs no instruction), for timing VMM start-up.
    FirstInstruction,
    /// Guest reset, shutdown or triple fault.
    Shutdown,
    /// The boot marker write (MMIO 0xd0000000 = 123).
    Marker,
    /// A console line matching the regex.
    Serial(regex::Regex),
    /// The entry of a kernel function (a hardware breakpoint; its address
    /// comes from [`BootConfig::boundaries`]).
    Function(String),
}

/// Everything that describes one boot.
#[derive(Debug, Clone)]
pub struct BootConfig {
    /// Kernel image (bzImage or ELF vmlinux).
    pub kernel: PathBuf,
    /// Optional initrd.
    pub initrd: Option<PathBuf>,
    /// Extra kernel command-line arguments (after the defaults).
    pub cmdline_extra: String,
    /// Guest memory.
    pub mem: MemoryOptions,
    /// vCPUs.
    pub cpus: u8,
    /// Give up after this long.
    pub timeout: Duration,
    /// End condition.
    pub until: Until,
    /// Host workarounds.
    pub compat: CompatMode,
    /// Link-time address of `swapgs_restore_regs_and_return_to_usermode`, to
    /// catch the first return to user mode exactly: set when the symbols are
    /// read (beside the boot; the breakpoint is armed at the first exit after),
    /// `None` inside when the kernel does not name it.
    pub user_return_link: Arc<std::sync::OnceLock<Option<u64>>>,
    /// virtio-mmio disks and network devices, and the root device.
    pub virtio: virtio::VirtioConfig,
    /// Link-time addresses of the exact boundaries to watch (initcalls,
    /// named points, the `--until FUNCTION` goal).
    pub boundaries: Arc<std::sync::OnceLock<breakpoints::BoundaryLinks>>,
}

/// boottrace's default kernel command line: serial console, reboot through
/// the i8042 on panic, no PCI (there is none), no probing of absent legacy devices.
pub const DEFAULT_CMDLINE: &str =
    "console=ttyS0 8250.nr_uarts=1 reboot=k panic=-1 pci=off nomodule i8042.noaux i8042.nomux i8042.dumbkbd";

/// The parts of the guest's command line, in order (later arguments win in
/// Linux): boottrace's defaults, the host's workarounds, the devices, the user's.
pub fn cmdline_parts<'a>(
    compat: CompatMode,
    virtio: &'a virtio::VirtioConfig,
    extra: &'a str,
) -> [std::borrow::Cow<'a, str>; 4] {
    [
        DEFAULT_CMDLINE.into(),
        compat.cmdline().into(),
        virtio.cmdline().into(),
        extra.into(),
    ]
}

/// The guest's command line as `boot` passes it (before the image's length
/// limit is checked), for the trace's metadata.
pub fn full_cmdline(compat: CompatMode, virtio: &virtio::VirtioConfig, extra: &str) -> String {
    let parts = cmdline_parts(compat, virtio, extra);
    let refs: Vec<&str> = parts.iter().map(|p| p.as_ref()).collect();
    loader::build_cmdline(&refs, usize::MAX).unwrap_or_default()
}

/// The points of a boot the VMM marks, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VmmPhase {
    /// The VM exists.
    CreateVm,
    /// Guest memory is mapped.
    Memory,
    /// Kernel, initrd, command line and boot tables are in guest memory.
    LoadKernel,
    /// The vCPUs are created and set up.
    Vcpus,
    /// The boot vCPU is about to run its first guest instruction.
    FirstInstruction,
    /// The guest wrote the boot marker.
    BootMarker,
    /// The first user-mode instruction was seen.
    UserMode,
    /// The boot ended.
    End,
}

/// Receives what happens during a boot (the recorder writes it to the trace).
pub trait RunObserver: Send + Sync {
    /// A VMM or boot phase reached at `t_ns`.
    fn phase(&self, phase: VmmPhase, t_ns: u64);
    /// A console line, timestamped on arrival.
    fn serial_line(&self, t_ns: u64, line: &str);
    /// Something outside the VMM that must end the boot now (e.g. the trace
    /// can no longer be written); polled by the thread that waits for the end.
    fn stop_reason(&self) -> Option<String> {
        None
    }
    /// Exact boundaries one vCPU took, in its time order. They arrive in
    /// batches some time after the hits: a vCPU thread hands them over at
    /// an exit that is not a breakpoint's (see [`BoundaryHit`]).
    fn boundaries(&self, _hits: &[BoundaryHit]) {}
}

/// An exact boundary as the vCPU took it.
///
/// The vCPU thread queues these and hands them to the observer at a later
/// sampling exit: handing over can wake the trace writer, and on a host
/// whose CPUs are all busy (an SMP guest) the woken writer may preempt the
/// vCPU thread for milliseconds. At a breakpoint exit that delay would fall
/// between the hit and the guest's own clock read after it (initcall_debug's
/// `rettime`), so the guest would count it and the boundary's host time
/// would not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BoundaryHit {
    /// vCPU that hit it.
    pub vcpu: u32,
    /// Host time of the exit, ns since the run's start.
    pub t_ns: u64,
    /// The guest's TSC, when readable.
    pub tsc: Option<u64>,
    /// What it marks.
    pub hit: breakpoints::Hit,
    /// The KASLR slide, when known.
    pub slide: Option<i64>,
}

/// Finds the kernel's virtual KASLR slide from guest state.
pub trait KernelLocator: Send + Sync {
    /// Feeds the vCPU state at an exit (`None` before the first run); returns
    /// the slide (runtime − link-time) once known.
    fn locate(
        &self,
        mem: &GuestMemoryMmap,
        state: Option<(&kvm_bindings::kvm_regs, &kvm_bindings::kvm_sregs)>,
    ) -> Option<i64>;
}

/// Creates one sampler per vCPU.
pub trait SamplerFactory: Send + Sync {
    /// Samples per second per vCPU (0 = none).
    fn frequency(&self) -> u32;
    /// The sampler for vCPU `index`, created on the vCPU's own thread.
    fn create(&self, index: u32, vcpu: &VcpuFd, mem: &GuestMemoryMmap) -> Box<dyn VcpuSampler>;
}

/// Errors that stop a boot before it starts.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// /dev/kvm is missing or not accessible.
    #[error("cannot open {path}: {source} (is KVM enabled, and may this user use it?)")]
    NoKvm {
        /// The device path.
        path: String,
        /// errno.
        source: kvm_ioctls::Error,
    },
    /// A VM-level KVM ioctl failed.
    #[error("{what} failed: {source}")]
    Kvm {
        /// Which.
        what: &'static str,
        /// errno.
        source: kvm_ioctls::Error,
    },
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    /// Kernel, initrd or command line.
    #[error(transparent)]
    Load(#[from] loader::LoadError),
    /// Boot parameters.
    #[error(transparent)]
    BootParams(#[from] bootparams::BootParamsError),
    /// MP table.
    #[error(transparent)]
    Mptable(#[from] mptable::MptableError),
    /// vCPU setup.
    #[error(transparent)]
    Cpu(#[from] cpu::CpuError),
    /// virtio devices.
    #[error(transparent)]
    Virtio(#[from] virtio::VirtioError),
    /// Host resources (eventfd, threads, signals).
    #[error("host error: {0}")]
    Host(String),
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmmError {
    move |source| VmmError::Kvm { what, source }
}

/// What a finished boot reports.
#[derive(Debug, Clone)]
pub struct BootOutcome {
    /// Why it ended.
    pub end: EndReason,
    /// When it ended (ns since the run's start).
    pub end_ns: u64,
    /// The kernel as loaded.
    pub kernel: LoadedKernel,
    /// The full kernel command line.
    pub cmdline: String,
    /// What each virtio device did.
    pub devices: Vec<virtio::DeviceStats>,
    /// vCPU threads that had not stopped [`STOP_GRACE`] after the end (left running).
    pub unstopped_vcpus: u32,
    /// Console and breakpoint costs.
    pub figures: ExactFigures,
    /// The start-up's steps, timed (ns since the run's start).
    pub startup: Vec<steps::Step>,
}

/// What the console and the breakpoints cost in one boot (host-side, summed over vCPUs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExactFigures {
    /// Time the guest spent writing to the UART console, ns.
    pub console_ns: u64,
    /// UART port accesses.
    pub console_accesses: u64,
    /// Breakpoint exits.
    pub bp_exits: u64,
    /// Time the VMM spent on them (exit to the next KVM_RUN), ns.
    pub bp_handle_ns: u64,
}

/// The thread that makes the VM's devices while the kernel loads.
const VM_SETUP: &str = "vm-setup";

/// Longest wait for the helper threads to run before they get their work
/// (they get it anyway after this: only their start is late).
const HELPER_START_WAIT: Duration = Duration::from_millis(20);

/// What the vm-setup thread is woken with.
struct VmSetupJob {
    kvm: Arc<Kvm>,
    vm: Arc<VmFd>,
    mem: GuestMemoryMmap,
    log: Arc<StartupLog>,
    /// When it was handed over (its wait for a CPU starts here).
    sent_ns: u64,
    /// The initrd, placed: read into guest memory after the VM's ioctls,
    /// while this thread still loads the kernel.
    initrd: Option<loader::PlacedInitrd>,
}

/// What the vm-setup thread hands back: the CPUID KVM offers, and the
/// initrd it loaded (or why it could not).
type VmSetupDone = (
    Result<CpuId, VmmError>,
    Option<Result<loader::PlacedInitrd, loader::LoadError>>,
);

/// The vm-setup thread's work (also run on the main thread when no helper
/// thread could be started).
fn vm_setup_job(job: VmSetupJob, thread: &'static str) -> VmSetupDone {
    let cpuid = vm_setup(&job.kvm, &job.vm, &job.mem, &job.log, thread);
    let mem = &job.mem;
    let initrd = job.initrd.map(|mut i| {
        job.log
            .time(thread, "load initrd", StepKind::Own, || i.load(mem))
            .map(|()| i)
    });
    (cpuid, initrd)
}

/// Boots `cfg` once. Times are measured from `t0` (the run's start). The
/// start-up's steps are timed into `log` when given (on `t0`'s clock: the
/// caller may have logged earlier steps of the same run), else into a log
/// of their own; either way they come back in [`BootOutcome::startup`].
pub fn boot(
    cfg: &BootConfig,
    t0: Instant,
    observer: Arc<dyn RunObserver>,
    sampler: Option<Arc<dyn SamplerFactory>>,
    locator: Option<Arc<dyn KernelLocator>>,
    log: Option<Arc<StartupLog>>,
) -> Result<BootOutcome, VmmError> {
    let log = log.unwrap_or_else(|| Arc::new(StartupLog::new(t0)));
    let control = Arc::new(RunControl::new(t0));
    let phase = |p: VmmPhase| observer.phase(p, control.now_ns());

    // vCPU 0's thread is started first, to wait for its vCPU while the VM is
    // made: on a busy host a new thread waits for a CPU longer than a woken one.
    // Each helper says when it runs (see "helper threads running" below).
    let (running_tx, running) = std::sync::mpsc::channel::<()>();
    let (to_vcpu0, for_vcpu0) = std::sync::mpsc::sync_channel::<vcpu::VcpuThread>(1);
    let vcpu0_running = running_tx.clone();
    let mut vcpu0 = log
        .time(MAIN, "start vCPU 0's thread", StepKind::Own, || {
            spawn_vcpu_thread(0, control.clone(), move || {
                let _ = vcpu0_running.send(());
                for_vcpu0.recv().ok()
            })
        })
        .ok()
        .map(|h| (h, to_vcpu0));

    // The VM's ioctls (the memory slot, TSS, interrupt controller, PIT, the
    // CPUID KVM offers) cost milliseconds on some hosts, and on a PVM host
    // two at once slow each other down (KVM_SET_USER_MEMORY_REGION: 0.16 ms
    // median alone, 5.6 ms beside KVM_CREATE_IRQCHIP). So they run one
    // after the other on a helper thread while this one fills guest memory,
    // which needs none of them. The helper is started now and woken with
    // its work, like vCPU 0's thread.
    let (to_setup, for_setup) = std::sync::mpsc::sync_channel::<VmSetupJob>(1);
    let setup_thread = log
        .time(MAIN, "start the vm-setup thread", StepKind::Own, || {
            std::thread::Builder::new()
                .name(VM_SETUP.into())
                .spawn(move || {
                    let _ = running_tx.send(());
                    let job = for_setup.recv().ok()?;
                    job.log.scheduled(VM_SETUP, job.sent_ns);
                    Some(vm_setup_job(job, VM_SETUP))
                })
        })
        .ok();

    let kvm = Arc::new(log.time(MAIN, "open /dev/kvm", StepKind::Own, open_kvm)?);
    let vm = Arc::new(
        log.kvm(MAIN, "KVM_CREATE_VM", || kvm.create_vm())
            .map_err(kvm_err("KVM_CREATE_VM"))?,
    );
    phase(VmmPhase::CreateVm);

    let mem = log.time(MAIN, "map guest memory", StepKind::Own, || {
        memory::create_guest_memory(&cfg.mem)
    })?;
    phase(VmmPhase::Memory);

    // A thread that has not run yet is placed on its creator's CPU and, on a
    // small host, can wait there behind it for a whole time slice with
    // another CPU idle (vm-setup: 1.2–2.2 ms in 3 of 12 boots on 2 CPUs); a
    // thread that ran and sleeps is woken onto an idle CPU. So the helpers
    // get to run once before they are given work (usually they have by now).
    let helpers = usize::from(vcpu0.is_some()) + usize::from(setup_thread.is_some());
    log.time(MAIN, "helper threads running", StepKind::Own, || {
        for _ in 0..helpers {
            if running.recv_timeout(HELPER_START_WAIT).is_err() {
                break;
            }
        }
    });
    // The initrd is placed from the kernel's header before the kernel is
    // loaded, so the vm-setup thread reads it in beside the kernel's load.
    let kernel_file = log.time(MAIN, "open kernel", StepKind::Own, || {
        loader::open_kernel(&cfg.kernel)
    })?;
    let initrd = match &cfg.initrd {
        Some(p) => Some(log.time(MAIN, "place initrd", StepKind::Own, || {
            loader::place_initrd(p, cfg.mem.size, kernel_file.initrd_addr_max())
        })?),
        None => None,
    };
    let job = VmSetupJob {
        kvm: kvm.clone(),
        vm: vm.clone(),
        mem: mem.clone(),
        log: log.clone(),
        sent_ns: log.now_ns(),
        initrd,
    };
    // The thread that took the job, or the job when no thread did.
    let setup = match setup_thread {
        Some(h) => match to_setup.send(job) {
            Ok(()) => Ok(h),
            Err(std::sync::mpsc::SendError(job)) => Err(job),
        },
        None => Err(job),
    };
    let guest = load_kernel_and_cmdline(cfg, kernel_file, &mem, &log);
    let (vm_setup, initrd) = match setup {
        Ok(h) => log
            .time(MAIN, "wait for vm-setup", StepKind::Wait(VM_SETUP), || {
                h.join()
            })
            .ok()
            .flatten()
            .unwrap_or_else(|| {
                (
                    Err(VmmError::Host("the VM set-up thread died".into())),
                    None,
                )
            }),
        // No thread to spare: the same calls here, one after the other.
        Err(job) => vm_setup_job(job, MAIN),
    };
    let (kernel, cmdline) = guest?;
    let base_cpuid = vm_setup?;
    let initrd = match initrd {
        Some(loaded) => Some(loaded?.check(&kernel)?),
        None => None,
    };
    write_boot_tables(cfg, &mem, &kernel, &cmdline, initrd, &log)?;
    phase(VmmPhase::LoadKernel);

    let devices = Arc::new(log.time(MAIN, "devices", StepKind::Own, || {
        Ok::<_, VmmError>(
            create_devices(&vm, &control, &cfg.until, observer.clone(), &log)?
                .with_virtio(virtio::attach(&vm, &mem, &cfg.virtio)?),
        )
    })?);
    let mut vcpus = Vec::with_capacity(cfg.cpus as usize);
    for id in 0..cfg.cpus {
        vcpus.push(create_vcpu(&vm, &base_cpuid, id, cfg.cpus, &kernel, &log)?);
    }
    phase(VmmPhase::Vcpus);

    log.time(MAIN, "signal handlers", StepKind::Own, timer_setup)?;
    let goals = Arc::new(vcpu::BootGoals {
        until: cfg.until.clone(),
        user_seen: AtomicBool::new(false),
        marker_seen: AtomicBool::new(false),
        init_entry: cfg.initrd.as_deref().and_then(initrd::init_entry),
        user_return_link: cfg.user_return_link.clone(),
        locator,
        plan: breakpoints::BoundaryPlan::late(cfg.boundaries.clone()),
        meters: vcpu::ExactMeters::default(),
    });
    let mut handles = Vec::with_capacity(vcpus.len());
    for (index, vcpu) in vcpus.into_iter().enumerate() {
        let thread = vcpu::VcpuThread::new(
            index as u32,
            vcpu,
            mem.clone(),
            devices.clone(),
            control.clone(),
            goals.clone(),
            observer.clone(),
            cfg.compat,
            sampler.clone(),
        )
        .with_startup_log((index == 0).then(|| log.clone()));
        let handle = match (index, vcpu0.take()) {
            (0, Some((handle, tx))) => {
                log.time(
                    MAIN,
                    "hand vCPU 0 to its thread",
                    StepKind::Handoff(BOOT_VCPU_THREAD),
                    || tx.send(thread).is_ok(),
                )
                .then_some(())
                .ok_or_else(|| VmmError::Host("vCPU 0's thread is gone".into()))?;
                handle
            }
            // No early thread for vCPU 0 (or another vCPU): started now.
            _ => log.time(
                MAIN,
                "start the vCPU's thread",
                if index == 0 {
                    StepKind::Handoff(BOOT_VCPU_THREAD)
                } else {
                    StepKind::Own
                },
                || spawn_vcpu_thread(index as u32, control.clone(), move || Some(thread)),
            )?,
        };
        handles.push(handle);
    }

    let deadline = t0 + cfg.timeout;
    let deadline = deadline.max(Instant::now());
    loop {
        if control
            .wait(deadline.min(Instant::now() + Duration::from_millis(100)))
            .is_some()
        {
            break;
        }
        if interrupted() {
            control.end(EndReason::Interrupted);
        } else if let Some(why) = observer.stop_reason() {
            control.end(EndReason::HostError(why));
        } else if Instant::now() >= deadline {
            control.end(EndReason::Timeout(cfg.timeout));
        }
    }
    let unstopped = stop_vcpus(handles);
    if unstopped > 0 {
        // Their threads are left behind (they own clones of everything they
        // touch); the boot's end is reported now rather than never.
        control.end(EndReason::VcpuError(format!(
            "{unstopped} vCPU thread(s) did not stop within {} ms",
            STOP_GRACE.as_millis()
        )));
    }
    devices.flush_console();
    let device_stats = devices.virtio_stats();
    let (end, end_ns) = control.ended().unwrap_or((
        EndReason::VcpuError("boot ended without a reason".into()),
        control.now_ns(),
    ));
    observer.phase(VmmPhase::End, end_ns);
    let m = &goals.meters;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let figures = ExactFigures {
        console_ns: load(&m.console_ns),
        console_accesses: load(&m.console_accesses),
        bp_exits: load(&m.bp_exits),
        bp_handle_ns: load(&m.bp_handle_ns),
    };
    Ok(BootOutcome {
        end,
        end_ns,
        kernel,
        cmdline,
        devices: device_stats,
        unstopped_vcpus: unstopped,
        figures,
        startup: log.steps(),
    })
}

/// Starts vCPU `index`'s thread, which runs the vCPU `vcpu` gives it (or
/// ends at once on `None`: the boot did not get that far).
fn spawn_vcpu_thread(
    index: u32,
    ctl: Arc<RunControl>,
    vcpu: impl FnOnce() -> Option<vcpu::VcpuThread> + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, VmmError> {
    std::thread::Builder::new()
        .name(format!("vcpu{index}"))
        .spawn(move || {
            let Some(thread) = vcpu() else {
                return;
            };
            // A vCPU thread that dies ends the boot at once, as what it is
            // (not as a timeout seen much later by the main thread).
            let died = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| thread.run()));
            if let Err(payload) = died {
                ctl.end(EndReason::VcpuError(format!(
                    "vCPU {index} thread died: {}",
                    panic_text(payload.as_ref())
                )));
            }
        })
        .map_err(|e| VmmError::Host(format!("cannot start vCPU thread: {e}")))
}

/// How long the vCPU threads get to leave KVM_RUN once the boot has ended.
pub const STOP_GRACE: Duration = Duration::from_secs(1);

/// Kicks every vCPU out of KVM_RUN until its thread ends, for at most
/// [`STOP_GRACE`] in all; joins those that ended and returns how many did not
/// (a thread stuck outside KVM_RUN is not waited for).
fn stop_vcpus(handles: Vec<std::thread::JoinHandle<()>>) -> u32 {
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline && handles.iter().any(|h| !h.is_finished()) {
        for h in handles.iter().filter(|h| !h.is_finished()) {
            kick::kick(h.as_pthread_t());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut unstopped = 0;
    for h in handles {
        if h.is_finished() {
            // A panic was caught inside the thread and reported as its end.
            let _ = h.join();
        } else {
            unstopped += 1;
        }
    }
    unstopped
}

/// The message of a panic payload.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic".to_string()
    }
}

/// Opens /dev/kvm, or the device named by `BOOTTRACE_KVM_DEVICE` (for
/// testing the error path, or a KVM device node elsewhere).
fn open_kvm() -> Result<Kvm, VmmError> {
    let path = std::env::var("BOOTTRACE_KVM_DEVICE").unwrap_or_else(|_| "/dev/kvm".into());
    let c = std::ffi::CString::new(path.clone())
        .map_err(|_| VmmError::Host("KVM device path has a NUL byte".into()))?;
    Kvm::new_with_path(&c).map_err(|source| VmmError::NoKvm { path, source })
}

/// Guest memory registered with the VM, then the VM-level devices every
/// boot has: TSS area, in-kernel interrupt controller, PIT (Firecracker's
/// set); then the CPUID KVM offers. Each ioctl is a step of `thread` in `log`.
fn vm_setup(
    kvm: &Kvm,
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    log: &StartupLog,
    thread: &'static str,
) -> Result<CpuId, VmmError> {
    register_memory(vm, mem, log, thread)?;
    let timed = |name: &'static str, f: &dyn Fn() -> Result<(), kvm_ioctls::Error>| {
        log.kvm(thread, name, f).map_err(kvm_err(name))
    };
    timed("KVM_SET_TSS_ADDR", &|| {
        vm.set_tss_address(layout::KVM_TSS_ADDRESS as usize)
    })?;
    timed("KVM_CREATE_IRQCHIP", &|| vm.create_irq_chip())?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    timed("KVM_CREATE_PIT2", &|| vm.create_pit2(pit))?;
    Ok(log.kvm(thread, "KVM_GET_SUPPORTED_CPUID", || {
        cpu::supported_cpuid(kvm)
    })?)
}

/// Creates vCPU `id` of `cpus` and sets it up for `kernel`'s entry (the
/// registers only on the boot vCPU), each ioctl a step in `log`.
fn create_vcpu(
    vm: &VmFd,
    base_cpuid: &CpuId,
    id: u8,
    cpus: u8,
    kernel: &LoadedKernel,
    log: &StartupLog,
) -> Result<VcpuFd, VmmError> {
    let vcpu = log
        .kvm(MAIN, "KVM_CREATE_VCPU", || vm.create_vcpu(u64::from(id)))
        .map_err(kvm_err("KVM_CREATE_VCPU"))?;
    log.kvm(MAIN, "KVM_SET_CPUID2", || {
        cpu::setup_cpuid(&vcpu, base_cpuid, id, cpus)
    })?;
    log.kvm(MAIN, "KVM_SET_FPU", || cpu::setup_fpu(&vcpu))?;
    log.kvm(MAIN, "KVM_GET/SET_LAPIC", || cpu::setup_lapic(&vcpu))?;
    if id == 0 {
        log.kvm(MAIN, "KVM_GET/SET_SREGS", || {
            cpu::setup_sregs(&vcpu, kernel.mode)
        })?;
        log.kvm(MAIN, "KVM_SET_REGS", || {
            cpu::setup_regs(&vcpu, kernel.mode, kernel.entry)
        })?;
    }
    Ok(vcpu)
}

/// The kernel, command line, initrd and boot tables, in guest memory.
/// Loads the kernel and writes its command line (the initrd is loaded beside
/// it, see [`vm_setup_job`]).
fn load_kernel_and_cmdline(
    cfg: &BootConfig,
    kernel: loader::KernelFile,
    mem: &GuestMemoryMmap,
    log: &StartupLog,
) -> Result<(LoadedKernel, String), VmmError> {
    let kernel = log.time(MAIN, "load kernel", StepKind::Own, || {
        loader::load_kernel(mem, kernel, cfg.mem.size)
    })?;
    let parts = cmdline_parts(cfg.compat, &cfg.virtio, &cfg.cmdline_extra);
    let refs: Vec<&str> = parts.iter().map(|p| p.as_ref()).collect();
    let cmdline = loader::build_cmdline(&refs, kernel.cmdline_max)?;
    loader::write_cmdline(mem, layout::CMDLINE_START, &cmdline)?;
    Ok((kernel, cmdline))
}

/// The boot tables: zero page or PVH start info, MP table, GDT and page tables.
fn write_boot_tables(
    cfg: &BootConfig,
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    cmdline: &str,
    initrd: Option<(u64, u64)>,
    log: &StartupLog,
) -> Result<(), VmmError> {
    let inputs = bootparams::BootInputs {
        cmdline_addr: layout::CMDLINE_START,
        cmdline_len: cmdline.len(),
        initrd,
    };
    log.time(MAIN, "boot tables", StepKind::Own, || {
        let e820 = memory::e820_map(cfg.mem.size);
        match kernel.mode {
            EntryMode::Long64 => bootparams::write_zero_page(mem, kernel, &inputs, &e820)?,
            EntryMode::Pvh32 => bootparams::write_pvh_start_info(mem, &inputs, &e820)?,
        }
        mptable::write(mem, cfg.cpus)?;
        cpu::write_boot_tables(mem, kernel.mode)?;
        Ok(())
    })
}

fn register_memory(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
    log: &StartupLog,
    thread: &'static str,
) -> Result<(), VmmError> {
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(|e| VmmError::Host(format!("guest memory has no host mapping: {e}")))?;
        let r = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        log.kvm(thread, "KVM_SET_USER_MEMORY_REGION", || {
            // SAFETY: the region's host mapping lives as long as `mem`, which
            // the caller keeps alive until every vCPU thread has been joined.
            unsafe { vm.set_user_memory_region(r) }
        })
        .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(())
}

fn create_devices(
    vm: &VmFd,
    control: &Arc<RunControl>,
    until: &Until,
    observer: Arc<dyn RunObserver>,
    log: &StartupLog,
) -> Result<Devices, VmmError> {
    let irq =
        EventFd::new(libc::EFD_NONBLOCK).map_err(|e| VmmError::Host(format!("eventfd: {e}")))?;
    log.kvm(MAIN, "KVM_IRQFD", || {
        vm.register_irqfd(&irq, layout::ports::COM1_IRQ)
    })
    .map_err(kvm_err("KVM_IRQFD"))?;
    let control = control.clone();
    let until = until.clone();
    let sink = LineSink::new(Box::new(move |line: &str| {
        let t = control.now_ns();
        observer.serial_line(t, line);
        if line.contains("Kernel panic - not syncing") && !matches!(until, Until::Shutdown) {
            control.end(EndReason::Panic(
                devices::escape_controls(line.trim()).into_owned(),
            ));
        }
        if let Until::Serial(re) = &until {
            if re.is_match(line) {
                control.end(EndReason::SerialMatch(
                    devices::escape_controls(line).into_owned(),
                ));
            }
        }
    }));
    Ok(Devices::new(irq, sink))
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static SIGNALS: Mutex<bool> = Mutex::new(false);

/// Exit status of a second Ctrl-C (128 + SIGINT, like a shell).
pub const EXIT_SECOND_INTERRUPT: i32 = 130;

extern "C" fn on_interrupt(sig: libc::c_int) {
    let again = INTERRUPTED.swap(true, std::sync::atomic::Ordering::SeqCst);
    if again && sig == libc::SIGINT {
        // A second Ctrl-C: the user does not want to wait for the clean end.
        // The trace is framed and flushed as it goes, so what reached the file
        // stays readable.
        const MSG: &[u8] = b"\nboottrace: interrupted again: exiting now\n";
        // SAFETY: write(2) and _exit(2) are async-signal-safe; MSG is static.
        unsafe {
            libc::write(2, MSG.as_ptr().cast(), MSG.len());
            libc::_exit(EXIT_SECOND_INTERRUPT);
        }
    }
}

fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst)
}

/// Installs the kick handler and Ctrl-C/SIGTERM handlers (once per process):
/// an interrupted recording ends its boot cleanly and keeps its trace.
fn timer_setup() -> Result<(), VmmError> {
    let mut done = SIGNALS
        .lock()
        .map_err(|_| VmmError::Host("signal setup lock poisoned".into()))?;
    if *done {
        return Ok(());
    }
    kick::install_handler().map_err(|e| VmmError::Host(format!("sigaction: {e}")))?;
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only swaps an atomic, or writes and _exits.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_interrupt as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    *done = true;
    Ok(())
}

/// True when a Ctrl-C or SIGTERM arrived (later runs of `--runs` stop too).
pub fn was_interrupted() -> bool {
    interrupted()
}
