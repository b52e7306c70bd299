//! What the boot waited on: the boot thread's wall-clock view and the
//! "Waits" table.
//!
//! The boot thread is the boot's critical path: the boot vCPU's task until
//! pid 1 first shows up (running or blocked: `rest_init` forked it), then
//! pid 1 (`kernel_init`, running the initcalls) on any vCPU. Its wall-clock
//! samples are its running samples plus its blocked stacks
//! ([`crate::profile::Run::waits`], each ending in a `[wait]` or
//! `[runnable]` leaf), so time the vCPUs spent idle while the boot slept is
//! charged to what the boot was blocked on.
//!
//! A wait is named by its *wait function* — the innermost frame below the
//! scheduler's own (`__schedule`, `schedule_timeout`, `__wait_for_common`, …),
//! e.g. `msleep` or `wait_for_completion_killable` — and the callers that
//! say why: `msleep ← wait_for_devices ← ip_auto_config`; plus the initcall
//! it happened in (the frame `do_one_initcall` called), when there is one.

use std::collections::HashMap;

use serde::Serialize;

use super::stats::{over_runs, Summary};
use crate::profile::{Profile, Run, Sample, RUNNABLE_FRAME, WAIT_FRAME};

/// Callers shown after the wait function.
pub const CALLERS: usize = 3;

/// The boot thread of one run: who it is at which time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootThread {
    /// Indices into [`Run::tasks`] of pid 1 (one per comm it had).
    pub pid1: Vec<u32>,
    /// When pid 1 was first seen (running or blocked), ns since the run's
    /// start; before it, the boot vCPU's task is the boot thread.
    pub handoff_ns: Option<u64>,
}

/// The boot vCPU (the BSP).
const BOOT_VCPU: u32 = 0;

impl BootThread {
    /// The boot thread of `run`.
    pub fn of(run: &Run) -> BootThread {
        let pid1: Vec<u32> = run
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.pid == 1)
            .filter_map(|(i, _)| u32::try_from(i).ok())
            .collect();
        let is_pid1 = |s: &&Sample| s.task.is_some_and(|t| pid1.contains(&t));
        let handoff_ns = run
            .samples
            .iter()
            .chain(&run.waits)
            .filter(is_pid1)
            .map(|s| s.t_ns)
            .min();
        BootThread { pid1, handoff_ns }
    }

    /// True when the running sample `s` is the boot thread's.
    pub fn runs(&self, run: &Run, s: &Sample) -> bool {
        if s.task.is_some_and(|t| self.pid1.contains(&t)) {
            return true;
        }
        let before = self.handoff_ns.map_or(true, |h| s.t_ns < h);
        // Before the handoff: the boot vCPU's own task (pid 0), or early
        // code with no task yet.
        before && s.vcpu == BOOT_VCPU && run.task(s).map_or(true, |t| t.pid == 0)
    }
}

/// The boot thread's wall-clock samples of `run`: its running samples and
/// its blocked stacks, in time order.
pub fn wall_samples(run: &Run) -> Vec<&Sample> {
    let bt = BootThread::of(run);
    let mut v: Vec<&Sample> = run
        .samples
        .iter()
        .filter(|s| bt.runs(run, s))
        .chain(&run.waits)
        .collect();
    v.sort_by_key(|s| s.t_ns);
    v
}

/// True when `name` is the scheduler's or a generic wait primitive's own
/// frame, not what the waiting code called.
fn is_scheduler(name: &str) -> bool {
    const PREFIXES: [&str; 10] = [
        "__schedule",
        "schedule",
        "io_schedule",
        "preempt_schedule",
        "__cond_resched",
        "_cond_resched",
        "context_switch",
        "__switch_to",
        "finish_task_switch",
        "ret_from_fork",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
        || name.contains("wait_for_common")
        || name == "do_wait_for_common"
}

/// One wait site's share of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WaitCost {
    /// `msleep ← wait_for_devices ← ip_auto_config`.
    pub name: String,
    /// The wait function (`msleep`).
    pub function: String,
    /// Its callers, nearest first (at most [`CALLERS`]).
    pub callers: Vec<String>,
    /// The initcall it happened in, if any.
    pub initcall: Option<String>,
    /// `sleeping` (the task slept) or `runnable` (preempted, waiting for a CPU).
    pub state: &'static str,
    /// Boot-vCPU samples the boot task was blocked here.
    pub samples: u64,
    /// Wall time, ns (the sum of those samples' intervals).
    pub time_ns: u64,
    /// Fraction of the run's boot time (0–1).
    pub share: f64,
    /// One full stack of this wait, root first (`;`-separated).
    pub stack: String,
}

/// The wait site of one blocked stack: (function, callers, initcall, state).
fn site(p: &Profile, s: &Sample) -> (String, Vec<String>, Option<String>, &'static str) {
    let names = p.stack_names(s.stack);
    let (state, body) = match names.split_last() {
        Some((leaf, body)) if leaf == RUNNABLE_FRAME => ("runnable", body),
        Some((leaf, body)) if leaf == WAIT_FRAME => ("sleeping", body),
        _ => ("sleeping", &names[..]),
    };
    let initcall = body
        .iter()
        .position(|n| n == "do_one_initcall")
        .and_then(|i| body.get(i + 1))
        .cloned();
    // Leaf first: past the scheduler's frames to the wait function.
    let mut rev = body.iter().rev().peekable();
    let mut last_sched = None;
    while let Some(n) = rev.peek() {
        if !is_scheduler(n) {
            break;
        }
        last_sched = rev.next();
    }
    let function = match rev.next().or(last_sched) {
        Some(f) => f.clone(),
        None => "[unknown stack]".to_string(),
    };
    // Up to the initcall: do_one_initcall and what called it say nothing
    // about this wait.
    let callers = rev
        .take_while(|n| *n != "do_one_initcall")
        .take(CALLERS)
        .cloned()
        .collect();
    (function, callers, initcall, state)
}

/// The wait sites of `run`, longest first (ties by name); empty without
/// blocked stacks.
pub fn run_waits(p: &Profile, run: &Run) -> Vec<WaitCost> {
    type Key = (String, Vec<String>, Option<String>, &'static str);
    let mut by: HashMap<Key, (u64, u64, String)> = HashMap::new();
    let mut stack_text: HashMap<Option<u32>, String> = HashMap::new();
    for s in &run.waits {
        let key = site(p, s);
        let text = stack_text
            .entry(s.stack)
            .or_insert_with(|| p.stack_names(s.stack).join(";"))
            .clone();
        let e = by.entry(key).or_insert_with(|| (0, 0, text));
        e.0 += 1;
        e.1 = e.1.saturating_add(s.interval_ns);
    }
    let boot = run.boot_ns.unwrap_or(0);
    let mut out: Vec<WaitCost> = by
        .into_iter()
        .map(
            |((function, callers, initcall, state), (samples, time_ns, stack))| {
                let mut name = function.clone();
                for c in &callers {
                    name.push_str(" ← ");
                    name.push_str(c);
                }
                WaitCost {
                    name,
                    function,
                    callers,
                    initcall,
                    state,
                    samples,
                    time_ns,
                    share: if boot == 0 {
                        0.0
                    } else {
                        time_ns as f64 / boot as f64
                    },
                    stack,
                }
            },
        )
        .collect();
    out.sort_by(|a, b| {
        b.time_ns
            .cmp(&a.time_ns)
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.initcall.cmp(&b.initcall))
    });
    out
}

/// Total wall time the boot task was blocked in `run`, ns.
pub fn waited_ns(run: &Run) -> u64 {
    run.waits
        .iter()
        .map(|s| s.interval_ns)
        .fold(0, u64::saturating_add)
}

/// A wait site summarized over runs (matched by name and initcall).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WaitSummary {
    /// As [`WaitCost::name`].
    pub name: String,
    /// As [`WaitCost::initcall`].
    pub initcall: Option<String>,
    /// As [`WaitCost::state`].
    pub state: &'static str,
    /// Wall time per run, ns (0 in runs without it).
    pub time_ns: Summary,
    /// Mean per-run fraction of the boot time (0–1).
    pub share: f64,
    /// Runs in which it was seen.
    pub runs_seen: usize,
}

/// Wait sites over runs (`per_run` from [`run_waits`]), longest mean first.
pub fn summarize(per_run: &[Vec<WaitCost>]) -> Vec<WaitSummary> {
    over_runs(
        per_run,
        |w| (w.name.as_str(), w.initcall.as_deref(), w.state),
        |w| (w.time_ns, w.share),
        |(name, initcall, state), over| WaitSummary {
            name: name.to_string(),
            initcall: initcall.map(str::to_string),
            state,
            time_ns: over.time_ns,
            share: over.share,
            runs_seen: over.runs_seen,
        },
    )
}

/// True when any run of `p` has blocked stacks.
pub fn has_waits(p: &Profile) -> bool {
    p.runs.iter().any(|r| !r.waits.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::TaskInfo;

    fn sample(stack: Option<u32>, t_ns: u64, vcpu: u32, task: Option<u32>) -> Sample {
        Sample {
            vcpu,
            task,
            ..Sample::kernel_at(stack, t_ns, 10)
        }
    }

    fn profile() -> Profile {
        let mut p = Profile::default();
        let start = p.stack_of(&["start_kernel", "setup_arch"]);
        let idle = p.stack_of(&["cpu_startup_entry", "default_idle"]);
        let init_run = p.stack_of(&["kernel_init", "do_one_initcall", "ip_auto_config"]);
        let sleep = p.stack_of(&[
            "kernel_init",
            "do_one_initcall",
            "ip_auto_config",
            "wait_for_devices",
            "msleep",
            "schedule_timeout",
            "schedule",
            "__schedule",
            WAIT_FRAME,
        ]);
        let kthread = p.stack_of(&[
            "kernel_init",
            "do_one_initcall",
            "kswapd_init",
            "kswapd_run",
            "kthread_create_on_node",
            "__kthread_create_on_node",
            "wait_for_completion_killable",
            "__wait_for_common",
            "schedule_timeout",
            "schedule",
            "__schedule",
            RUNNABLE_FRAME,
        ]);
        p.runs.push(Run {
            boot_ns: Some(100),
            tasks: vec![
                TaskInfo {
                    pid: 0,
                    tgid: 0,
                    comm: "swapper/0".into(),
                },
                TaskInfo {
                    pid: 1,
                    tgid: 1,
                    comm: "swapper/0".into(),
                },
                TaskInfo {
                    pid: 2,
                    tgid: 2,
                    comm: "kthreadd".into(),
                },
            ],
            samples: vec![
                sample(start, 0, 0, None),
                sample(start, 10, 0, Some(0)),
                // vCPU 1's idle before the handoff is not the boot thread.
                sample(idle, 10, 1, Some(0)),
                sample(init_run, 20, 1, Some(1)),
                sample(idle, 30, 0, Some(0)),
                sample(idle, 40, 0, Some(0)),
                sample(idle, 50, 0, Some(2)),
            ],
            waits: vec![
                sample(sleep, 30, 0, Some(1)),
                sample(sleep, 40, 0, Some(1)),
                sample(kthread, 50, 0, Some(1)),
            ],
            ..Run::default()
        });
        p
    }

    #[test]
    fn boot_thread_hands_off_to_pid1() {
        let p = profile();
        let run = &p.runs[0];
        let bt = BootThread::of(run);
        assert_eq!(bt.pid1, [1]);
        assert_eq!(bt.handoff_ns, Some(20));
        let wall: Vec<(u64, u32)> = wall_samples(run).iter().map(|s| (s.t_ns, s.vcpu)).collect();
        assert_eq!(wall, [(0, 0), (10, 0), (20, 1), (30, 0), (40, 0), (50, 0)]);
        assert_eq!(waited_ns(run), 30);
    }

    #[test]
    fn wait_sites_skip_the_scheduler_and_name_the_initcall() {
        let p = profile();
        let w = run_waits(&p, &p.runs[0]);
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].name, "msleep ← wait_for_devices ← ip_auto_config");
        assert_eq!(w[0].initcall.as_deref(), Some("ip_auto_config"));
        assert_eq!(
            (w[0].samples, w[0].time_ns, w[0].state),
            (2, 20, "sleeping")
        );
        assert!((w[0].share - 0.2).abs() < 1e-9);
        assert!(w[0].stack.ends_with("__schedule;[wait]"), "{}", w[0].stack);
        assert_eq!(
            w[1].name,
            "wait_for_completion_killable ← __kthread_create_on_node ← \
             kthread_create_on_node ← kswapd_run"
        );
        assert_eq!(w[1].initcall.as_deref(), Some("kswapd_init"));
        assert_eq!(w[1].state, "runnable");
        let s = summarize(&[w.clone(), Vec::new()]);
        assert_eq!(s[0].name, w[0].name);
        assert_eq!((s[0].runs_seen, s[0].time_ns.min), (1, 0.0));
    }

    #[test]
    fn an_all_scheduler_or_empty_stack_still_has_a_name() {
        let mut p = Profile::default();
        let only = p.stack_of(&["schedule", "__schedule", WAIT_FRAME]);
        let bare = p.stack_of(&[WAIT_FRAME]);
        p.runs.push(Run {
            waits: vec![sample(only, 0, 0, None), sample(bare, 1, 0, None)],
            ..Run::default()
        });
        let w = run_waits(&p, &p.runs[0]);
        let names: Vec<&str> = w.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["[unknown stack]", "schedule"]);
    }
}
