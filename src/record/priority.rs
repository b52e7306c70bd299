//! The kernel analysis gives way to the VMM's start-up: its thread runs as
//! `SCHED_IDLE` until the guest's first instruction (the VMM's threads need
//! the host's CPUs then; nothing of the analysis is needed before it), then
//! at its own policy again. `SCHED_IDLE` rather than nice 19: a waking VMM
//! thread preempts an idle-policy thread at once, while a nice-19 thread
//! keeps its CPU to the end of its slice (EEVDF's run-to-parity), which
//! measured 1–3 ms of "waits for a CPU" on a 2-CPU host. Lowered only where
//! the policy can be changed back (CAP_SYS_NICE, or RLIMIT_NICE allowing the
//! thread's nice value), so an unprivileged recording never keeps a starved
//! analysis for its boot.
//!
//! On a host with fewer than [`HOLD_BELOW_CPUS`] CPUs the analysis does not
//! start before the first instruction at all: even at `SCHED_IDLE` it slowed
//! the start-up 1.3–1.5× on a 2-CPU host (its page faults and memory traffic
//! compete with the VMM's loading of guest memory, which a CPU policy does
//! not govern), while holding it back delays its end by only the start-up's
//! few milliseconds. Waiting for the analysis ([`StartupPriority::restore`]
//! from [`super::kernel::Analysis::wait`]) releases it at once.

use std::sync::{Arc, Condvar, Mutex};

/// The scheduling policy the analysis runs under until the first instruction.
pub const YIELDING_POLICY: libc::c_int = libc::SCHED_IDLE;

/// Below this many usable CPUs the analysis waits for the first instruction:
/// the start-up keeps three threads busy (main, vm-setup, vCPU 0).
pub const HOLD_BELOW_CPUS: usize = 4;

/// CAP_SYS_NICE's bit in the capability sets.
const CAP_SYS_NICE: u32 = 23;

#[derive(Default)]
struct State {
    /// The thread lowered and the policy it had.
    lowered: Option<(libc::pid_t, libc::c_int)>,
    /// The first instruction came: no (further) lowering.
    restored: bool,
}

/// Shared between the analysis thread (which lowers itself) and the boot
/// (which raises it back at the first instruction), in either order.
#[derive(Clone, Default)]
pub struct StartupPriority {
    /// The state, and the condition a held analysis waits on for the restore.
    state: Arc<(Mutex<State>, Condvar)>,
    /// The analysis waits for the first instruction instead of running beside the start-up.
    hold: bool,
}

impl StartupPriority {
    /// For this host: held back until the first instruction where it has
    /// fewer than [`HOLD_BELOW_CPUS`] usable CPUs, else only lowered.
    pub fn for_host() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self::with_hold(cpus < HOLD_BELOW_CPUS)
    }

    /// Held back until the first instruction (`hold`), or only lowered.
    pub fn with_hold(hold: bool) -> Self {
        StartupPriority {
            hold,
            ..Default::default()
        }
    }

    /// Whether the analysis waits for the first instruction.
    pub fn holds(&self) -> bool {
        self.hold
    }

    /// Called by the analysis thread before it starts: waits until
    /// [`StartupPriority::restore`] when held, else lowers the thread's
    /// priority until then (if it can be raised back).
    pub fn yield_current_thread(&self) {
        if !self.hold {
            self.lower_current_thread();
            return;
        }
        let (lock, restored) = &*self.state;
        if let Ok(s) = lock.lock() {
            // A poisoned lock lets the analysis go: slower start-up, never a hang.
            drop(restored.wait_while(s, |s| !s.restored));
        }
    }

    /// Lowers the calling thread's priority until [`StartupPriority::restore`],
    /// if it can be raised back then and `restore` has not come yet.
    pub fn lower_current_thread(&self) {
        let Ok(mut s) = self.state.0.lock() else {
            return;
        };
        if s.restored || s.lowered.is_some() {
            return;
        }
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::pid_t;
        let (Some(nice), Some(policy)) = (thread_nice(tid), thread_policy(tid)) else {
            return;
        };
        // Only a normal (fair-class) thread: a real-time one was put there on purpose.
        if policy != libc::SCHED_OTHER && policy != libc::SCHED_BATCH {
            return;
        }
        // Leaving SCHED_IDLE needs what lowering the nice value to its own does.
        if !may_raise_to(nice) {
            return;
        }
        if set_thread_policy(tid, YIELDING_POLICY) {
            s.lowered = Some((tid, policy));
        }
    }

    /// Gives the lowered thread its policy back, or lets a held one start
    /// (once; later calls and a later [`StartupPriority::lower_current_thread`]
    /// do nothing).
    pub fn restore(&self) {
        let (lock, restored) = &*self.state;
        let Ok(mut s) = lock.lock() else {
            return;
        };
        if !s.restored {
            s.restored = true;
            restored.notify_all();
        }
        if let Some((tid, policy)) = s.lowered.take() {
            // Checked by may_raise_to; a failure leaves the analysis slower, not wrong.
            let _ = set_thread_policy(tid, policy);
        }
    }
}

/// The nice value of thread `tid`.
fn thread_nice(tid: libc::pid_t) -> Option<libc::c_int> {
    // getpriority returns -1 both as a value and as an error: errno tells.
    // SAFETY: errno is this thread's; getpriority has no memory arguments.
    unsafe {
        *libc::__errno_location() = 0;
        let n = libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t);
        (n != -1 || *libc::__errno_location() == 0).then_some(n)
    }
}

/// The scheduling policy of thread `tid`.
fn thread_policy(tid: libc::pid_t) -> Option<libc::c_int> {
    // SAFETY: no memory arguments.
    let p = unsafe { libc::sched_getscheduler(tid) };
    (p >= 0).then_some(p & !libc::SCHED_RESET_ON_FORK)
}

/// Sets a fair-class `policy` (the nice value is kept).
fn set_thread_policy(tid: libc::pid_t, policy: libc::c_int) -> bool {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is valid for the call; `tid` is a thread of this process.
    unsafe { libc::sched_setscheduler(tid, policy, &param) == 0 }
}

/// Whether this process may set a thread's nice value back down to `nice`.
fn may_raise_to(nice: libc::c_int) -> bool {
    has_cap_sys_nice() || rlimit_nice_allows(nice)
}

fn rlimit_nice_allows(nice: libc::c_int) -> bool {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid out-parameter.
    if unsafe { libc::getrlimit(libc::RLIMIT_NICE, &mut lim) } != 0 {
        return false;
    }
    // RLIMIT_NICE allows nice values down to 20 - rlim_cur.
    let need = (20 - i64::from(nice)).max(0) as u64;
    lim.rlim_cur == libc::RLIM_INFINITY || lim.rlim_cur >= need
}

fn has_cap_sys_nice() -> bool {
    std::fs::read_to_string("/proc/thread-self/status")
        .ok()
        .and_then(|s| cap_eff_has(&s, CAP_SYS_NICE))
        .unwrap_or(false)
}

/// Whether the `CapEff:` line of a /proc status text has capability `bit`.
fn cap_eff_has(status: &str, bit: u32) -> Option<bool> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    let caps = u64::from_str_radix(hex, 16).ok()?;
    Some(caps & (1 << bit) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_read_from_the_status_text() {
        let root = "Name:\tx\nCapEff:\t000001ffffffffff\n";
        assert_eq!(cap_eff_has(root, CAP_SYS_NICE), Some(true));
        let none = "CapEff:\t0000000000000000\n";
        assert_eq!(cap_eff_has(none, CAP_SYS_NICE), Some(false));
        assert_eq!(cap_eff_has("Name:\tx\n", CAP_SYS_NICE), None);
        assert_eq!(cap_eff_has("CapEff:\tzz\n", CAP_SYS_NICE), None);
    }

    /// A held analysis thread starts only once restored.
    #[test]
    fn a_held_thread_waits_for_the_restore() {
        let p = StartupPriority::with_hold(true);
        assert!(p.holds());
        let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (p2, s2) = (p.clone(), started.clone());
        let t = std::thread::spawn(move || {
            p2.yield_current_thread();
            s2.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(!started.load(std::sync::atomic::Ordering::SeqCst), "held");
        p.restore();
        t.join().expect("thread");
        assert!(started.load(std::sync::atomic::Ordering::SeqCst));
        // A restore that came first: no wait at all.
        let q = StartupPriority::with_hold(true);
        q.restore();
        q.yield_current_thread();
    }

    /// On a thread of its own: lowered (where it can be raised back), then
    /// restored; a lowering after the restore does nothing.
    #[test]
    fn a_thread_is_lowered_until_restored() {
        std::thread::spawn(|| {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::pid_t;
            let nice = thread_nice(tid).expect("nice");
            let before = thread_policy(tid).expect("policy");
            assert_eq!(before, libc::SCHED_OTHER);
            let p = StartupPriority::default();
            p.lower_current_thread();
            let lowered = thread_policy(tid).expect("policy");
            if may_raise_to(nice) {
                assert_eq!(lowered, YIELDING_POLICY);
            } else {
                assert_eq!(lowered, before);
            }
            p.restore();
            assert_eq!(thread_policy(tid), Some(before));
            assert_eq!(thread_nice(tid), Some(nice), "the nice value is kept");
            p.lower_current_thread();
            assert_eq!(thread_policy(tid), Some(before));
        })
        .join()
        .expect("thread");
    }
}
