//! The kernel analysis gives way to the VMM's start-up: its thread runs at
//! the lowest CPU priority until the guest's first instruction (the VMM's
//! threads need the host's CPUs then; nothing of the analysis is needed
//! before it), then at its own priority again. Lowered only where the
//! priority can be raised back (CAP_SYS_NICE or RLIMIT_NICE), so an
//! unprivileged recording never keeps a starved analysis for its boot.

use std::sync::{Arc, Mutex};

/// The nice value the analysis runs at until the first instruction.
pub const YIELDING_NICE: libc::c_int = 19;

/// CAP_SYS_NICE's bit in the capability sets.
const CAP_SYS_NICE: u32 = 23;

#[derive(Default)]
struct State {
    /// The thread lowered and the nice value it had.
    lowered: Option<(libc::pid_t, libc::c_int)>,
    /// The first instruction came: no (further) lowering.
    restored: bool,
}

/// Shared between the analysis thread (which lowers itself) and the boot
/// (which raises it back at the first instruction), in either order.
#[derive(Clone, Default)]
pub struct StartupPriority {
    state: Arc<Mutex<State>>,
}

impl StartupPriority {
    /// Lowers the calling thread's priority until [`StartupPriority::restore`],
    /// if it can be raised back then and `restore` has not come yet.
    pub fn lower_current_thread(&self) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        if s.restored || s.lowered.is_some() {
            return;
        }
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::pid_t;
        let Some(nice) = thread_nice(tid) else {
            return;
        };
        if nice >= YIELDING_NICE || !may_raise_to(nice) {
            return;
        }
        if set_thread_nice(tid, YIELDING_NICE) {
            s.lowered = Some((tid, nice));
        }
    }

    /// Gives the lowered thread its priority back (once; later calls and a
    /// later [`StartupPriority::lower_current_thread`] do nothing).
    pub fn restore(&self) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        s.restored = true;
        if let Some((tid, nice)) = s.lowered.take() {
            // Checked by may_raise_to; a failure leaves the analysis slower, not wrong.
            let _ = set_thread_nice(tid, nice);
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

fn set_thread_nice(tid: libc::pid_t, nice: libc::c_int) -> bool {
    // SAFETY: setpriority has no memory arguments; `tid` is a thread of this process.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice) == 0 }
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

    /// On a thread of its own: lowered (where it can be raised back), then
    /// restored; a lowering after the restore does nothing.
    #[test]
    fn a_thread_is_lowered_until_restored() {
        std::thread::spawn(|| {
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) } as libc::pid_t;
            let before = thread_nice(tid).expect("nice");
            let p = StartupPriority::default();
            p.lower_current_thread();
            let lowered = thread_nice(tid).expect("nice");
            if may_raise_to(before) && before < YIELDING_NICE {
                assert_eq!(lowered, YIELDING_NICE);
            } else {
                assert_eq!(lowered, before);
            }
            p.restore();
            assert_eq!(thread_nice(tid), Some(before));
            p.lower_current_thread();
            assert_eq!(thread_nice(tid), Some(before));
        })
        .join()
        .expect("thread");
    }
}
