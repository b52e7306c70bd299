//! Kicking vCPUs out of KVM_RUN: a per-thread POSIX timer delivers a
//! real-time signal to its vCPU thread at the sampling frequency, and the
//! same signal stops a vCPU on demand.
//!
//! The signal handler sets `kvm_run.immediate_exit`: if the signal lands while
//! the thread is outside KVM_RUN (handling an exit), the next KVM_RUN returns
//! at once with EINTR, so no kick is lost (the race KVM's immediate_exit was
//! made for).

use std::cell::Cell;
use std::io;
use std::ptr;

/// The signal used for kicks: the first real-time signal.
pub fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN()
}

thread_local! {
    // Const-initialised and without destructor: safe to touch from a signal handler.
    static KVM_RUN: Cell<*mut u8> = const { Cell::new(ptr::null_mut()) };
}

/// Offset of `immediate_exit` in `struct kvm_run`.
fn immediate_exit_offset() -> usize {
    std::mem::offset_of!(kvm_bindings::kvm_run, immediate_exit)
}

extern "C" fn on_kick(_sig: libc::c_int) {
    let p = KVM_RUN.with(|c| c.get());
    if !p.is_null() {
        // SAFETY: `p` points at this thread's mmapped kvm_run, registered by
        // `register_kvm_run` and cleared before the mapping goes away; a
        // volatile byte store is async-signal-safe.
        unsafe { ptr::write_volatile(p.add(immediate_exit_offset()), 1) };
    }
}

/// Installs the kick signal handler (idempotent, process-wide).
pub fn install_handler() -> io::Result<()> {
    // SAFETY: sigaction with a handler that only performs a volatile store;
    // the struct is fully initialised by zeroing and the fields we set.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_kick as *const () as usize;
        sa.sa_flags = 0; // no SA_RESTART: KVM_RUN must return EINTR
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(kick_signal(), &sa, ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Registers this thread's kvm_run mapping with the signal handler. The
/// returned guard unregisters it.
pub fn register_kvm_run(run: *mut kvm_bindings::kvm_run) -> KvmRunGuard {
    KVM_RUN.with(|c| c.set(run as *mut u8));
    KvmRunGuard
}

/// Unregisters the thread's kvm_run on drop.
pub struct KvmRunGuard;

impl Drop for KvmRunGuard {
    fn drop(&mut self) {
        KVM_RUN.with(|c| c.set(ptr::null_mut()));
    }
}

/// A periodic timer signalling one thread.
pub struct ThreadTimer {
    id: libc::timer_t,
}

impl ThreadTimer {
    /// Starts a timer that sends the kick signal to the calling thread
    /// `freq` times per second (CLOCK_MONOTONIC).
    pub fn start_for_current_thread(freq: u32) -> io::Result<ThreadTimer> {
        if freq == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "frequency 0"));
        }
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::c_int;
        // SAFETY: sigevent is plain data; zeroed is a valid initial state.
        let mut sev: libc::sigevent = unsafe { std::mem::zeroed() };
        sev.sigev_notify = libc::SIGEV_THREAD_ID;
        sev.sigev_signo = kick_signal();
        sev.sigev_notify_thread_id = tid;
        let mut id: libc::timer_t = ptr::null_mut();
        // SAFETY: valid pointers to initialised sigevent and out-parameter.
        if unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut id) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let period_ns = 1_000_000_000u64 / u64::from(freq);
        let ts = libc::timespec {
            tv_sec: (period_ns / 1_000_000_000) as i64,
            tv_nsec: (period_ns % 1_000_000_000) as i64,
        };
        let spec = libc::itimerspec {
            it_interval: ts,
            it_value: ts,
        };
        // SAFETY: `id` was returned by timer_create; spec is initialised.
        if unsafe { libc::timer_settime(id, 0, &spec, ptr::null_mut()) } != 0 {
            let err = io::Error::last_os_error();
            // SAFETY: deleting the timer we created.
            unsafe { libc::timer_delete(id) };
            return Err(err);
        }
        Ok(ThreadTimer { id })
    }
}

impl ThreadTimer {
    /// Nanoseconds since the timer last expired: the kick's latency when
    /// called right after the vCPU left KVM_RUN (one cheap syscall).
    pub fn since_last_expiry_ns(&self, period_ns: u64) -> u64 {
        // SAFETY: itimerspec is plain data; `id` is a live timer.
        let mut cur: libc::itimerspec = unsafe { std::mem::zeroed() };
        // SAFETY: valid timer and out-pointer.
        if unsafe { libc::timer_gettime(self.id, &mut cur) } != 0 {
            return 0;
        }
        let next = cur.it_value.tv_sec as u64 * 1_000_000_000 + cur.it_value.tv_nsec as u64;
        period_ns.saturating_sub(next)
    }
}

impl Drop for ThreadTimer {
    fn drop(&mut self) {
        // SAFETY: `id` is a live timer owned by this value.
        unsafe { libc::timer_delete(self.id) };
    }
}

/// Sends the kick signal to a thread (to stop it or make it sample).
pub fn kick(thread: libc::pthread_t) {
    // SAFETY: pthread_kill on a thread handle that is joined only after the
    // last kick (the caller keeps the JoinHandle alive).
    unsafe { libc::pthread_kill(thread, kick_signal()) };
}
