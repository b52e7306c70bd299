//! Timing a boot's start-up: every step from process start to the guest's
//! first instruction, on the thread that ran it, with the KVM ioctls marked.
//! On a nested (PVM) host those ioctls are most of the start-up and are the
//! hypervisor's cost, not boottrace's: [`StartupLog::split`] tells the two
//! apart along the critical path (the steps the first instruction waited for).

use std::sync::Mutex;
use std::time::Instant;

/// The thread that starts the boot: the critical path begins on it.
pub const MAIN_THREAD: &str = "main";
/// The boot vCPU's thread, which runs the first instruction.
pub const BOOT_VCPU_THREAD: &str = "vcpu0";

/// Steps one log keeps (a few per vCPU; more are counted, not kept).
pub const MAX_STEPS: usize = 4096;

/// What a step is, for telling boottrace's time from the hypervisor's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    /// boottrace's own work (including the host kernel's work it asks for:
    /// reading files, faulting in memory, starting threads).
    Own,
    /// One KVM ioctl: the hypervisor's work.
    Kvm,
    /// The thread waits for the named thread to finish: during the wait that
    /// thread is the critical path.
    Wait(&'static str),
    /// The thread starts or wakes the named thread, which carries the
    /// critical path on from the start of this step (the woken thread may
    /// run before the waker's call returns).
    Handoff(&'static str),
}

/// One timed step (ns since the run's start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The thread that ran it ("main", "vm-setup", "vcpu0").
    pub thread: &'static str,
    /// What it did (a KVM ioctl's name for [`StepKind::Kvm`]).
    pub name: &'static str,
    /// What it is.
    pub kind: StepKind,
    /// Start, ns since the run's start.
    pub start_ns: u64,
    /// End, ns since the run's start.
    pub end_ns: u64,
}

impl Step {
    /// How long it took, ns.
    pub fn took_ns(&self) -> u64 {
        self.end_ns.saturating_sub(self.start_ns)
    }
}

/// The start-up's time on its critical path, split by who spent it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StartupSplit {
    /// Run start (process start for the first run) to the first instruction, ns.
    pub total_ns: u64,
    /// Of that, time inside KVM ioctls on the critical path, ns.
    pub kvm_ns: u64,
}

impl StartupSplit {
    /// The rest: boottrace's own time (and the host's scheduling of it), ns.
    pub fn own_ns(&self) -> u64 {
        self.total_ns.saturating_sub(self.kvm_ns)
    }
}

/// The steps of one boot's start-up, from any thread.
#[derive(Debug)]
pub struct StartupLog {
    t0: Instant,
    steps: Mutex<Vec<Step>>,
}

impl StartupLog {
    /// A log whose times count from `t0` (the run's start).
    pub fn new(t0: Instant) -> Self {
        StartupLog {
            t0,
            steps: Mutex::new(Vec::new()),
        }
    }

    /// Nanoseconds since the log's `t0`.
    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Runs `f` as the step `name` of `thread`, and records how long it took.
    pub fn time<T>(
        &self,
        thread: &'static str,
        name: &'static str,
        kind: StepKind,
        f: impl FnOnce() -> T,
    ) -> T {
        let start_ns = self.now_ns();
        let r = f();
        let end_ns = self.now_ns();
        self.push(Step {
            thread,
            name,
            kind,
            start_ns,
            end_ns,
        });
        r
    }

    /// [`StartupLog::time`] for a KVM ioctl.
    pub fn kvm<T>(&self, thread: &'static str, name: &'static str, f: impl FnOnce() -> T) -> T {
        self.time(thread, name, StepKind::Kvm, f)
    }

    /// Records that `thread`, started or woken at `since_ns`, runs now: the
    /// time it waited for a CPU.
    pub fn scheduled(&self, thread: &'static str, since_ns: u64) {
        self.push(Step {
            thread,
            name: "waits for a CPU",
            kind: StepKind::Own,
            start_ns: since_ns,
            end_ns: self.now_ns(),
        });
    }

    /// Records a step timed elsewhere.
    pub fn push(&self, step: Step) {
        if let Ok(mut s) = self.steps.lock() {
            if s.len() < MAX_STEPS {
                s.push(step);
            }
        }
    }

    /// The steps so far, by start time.
    pub fn steps(&self) -> Vec<Step> {
        let mut s = self.steps.lock().map(|s| s.clone()).unwrap_or_default();
        s.sort_by_key(|s| (s.start_ns, s.end_ns));
        s
    }

    /// The time to `first_ns` (the first instruction), and how much of its
    /// critical path was spent inside KVM ioctls.
    pub fn split(&self, first_ns: u64) -> StartupSplit {
        split(&self.steps(), first_ns)
    }
}

/// The critical path as (thread, start, end) windows: "main" from 0, a
/// waited-for thread during the wait, a started or woken thread from its
/// hand-off on, up to `first_ns`.
fn path_windows(steps: &[Step], first_ns: u64) -> Vec<(&'static str, u64, u64)> {
    let mut windows = Vec::new();
    let (mut thread, mut from) = (MAIN_THREAD, 0u64);
    // Each hand-off moves to another thread: at most one pass per thread.
    for _ in 0..=steps.len() {
        let next = steps.iter().filter(|s| s.thread == thread).find_map(|s| {
            if s.start_ns < from {
                return None;
            }
            match s.kind {
                StepKind::Wait(other) => {
                    windows.push((thread, from, s.start_ns));
                    windows.push((other, s.start_ns, s.end_ns));
                    from = s.end_ns;
                    None
                }
                StepKind::Handoff(other) => Some((other, s.start_ns)),
                _ => None,
            }
        });
        match next {
            Some((other, at)) => {
                windows.push((thread, from, at));
                (thread, from) = (other, at);
            }
            None => break,
        }
    }
    windows.push((thread, from, first_ns));
    windows
        .into_iter()
        .map(|(t, a, b)| (t, a.min(first_ns), b.min(first_ns)))
        .filter(|(_, a, b)| b > a)
        .collect()
}

/// See [`StartupLog::split`].
pub fn split(steps: &[Step], first_ns: u64) -> StartupSplit {
    let mut steps = steps.to_vec();
    steps.sort_by_key(|s| (s.start_ns, s.end_ns));
    let windows = path_windows(&steps, first_ns);
    let kvm_ns = steps
        .iter()
        .filter(|s| s.kind == StepKind::Kvm)
        .map(|s| {
            windows
                .iter()
                .filter(|w| w.0 == s.thread)
                .map(|&(_, a, b)| s.end_ns.min(b).saturating_sub(s.start_ns.max(a)))
                .sum::<u64>()
        })
        .sum();
    StartupSplit {
        total_ns: first_ns,
        kvm_ns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(thread: &'static str, name: &'static str, kind: StepKind, a: u64, b: u64) -> Step {
        Step {
            thread,
            name,
            kind,
            start_ns: a,
            end_ns: b,
        }
    }

    /// main runs 0..100 with an ioctl of 10; waits 40..70 for a helper whose
    /// ioctl 20..60 overlaps the wait by 20; hands off at 75 to vcpu0, whose
    /// ioctl 85..95 counts, as do none of the helper's beyond the wait or
    /// main's after the hand-off.
    #[test]
    fn only_ioctls_on_the_critical_path_count() {
        use StepKind::*;
        let steps = vec![
            step("main", "KVM_CREATE_VM", Kvm, 0, 10),
            step("helper", "KVM_CREATE_IRQCHIP", Kvm, 20, 60),
            step("helper", "KVM_CREATE_PIT2", Kvm, 60, 65),
            step("main", "load kernel", Own, 10, 40),
            step("main", "wait for helper", Wait("helper"), 40, 70),
            step("main", "KVM_CREATE_VCPU", Kvm, 70, 75),
            step("main", "start vcpu0", Handoff("vcpu0"), 75, 80),
            step("main", "KVM_IRQFD", Kvm, 81, 90),
            step("vcpu0", "KVM_SET_REGS", Kvm, 85, 95),
            step("vcpu0", "after the end", Kvm, 100, 120),
        ];
        let s = split(&steps, 100);
        // 10 (create vm) + 20 + 5 (helper, inside the wait) + 5 (vcpu) + 10 (vcpu0).
        assert_eq!(s.kvm_ns, 50);
        assert_eq!(s.own_ns(), 50);
        // The same steps without the wait: the helper's ioctls are off the path.
        let no_wait: Vec<Step> = steps
            .iter()
            .filter(|s| !matches!(s.kind, Wait(_)))
            .cloned()
            .collect();
        assert_eq!(split(&no_wait, 100).kvm_ns, 25);
    }

    #[test]
    fn the_log_times_steps_and_is_bounded() {
        let log = StartupLog::new(Instant::now());
        let v = log.kvm("main", "KVM_CREATE_VM", || {
            std::thread::sleep(std::time::Duration::from_millis(2));
            7
        });
        assert_eq!(v, 7);
        let steps = log.steps();
        assert_eq!(steps.len(), 1);
        assert!(steps[0].took_ns() >= 2_000_000, "{steps:?}");
        let end = steps[0].end_ns;
        assert_eq!(log.split(end).kvm_ns, steps[0].took_ns());
        for _ in 0..MAX_STEPS + 10 {
            log.time("main", "x", StepKind::Own, || ());
        }
        assert_eq!(log.steps().len(), MAX_STEPS);
    }
}
