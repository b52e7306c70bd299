//! Initcalls by exact wall time, from the boundaries hardware breakpoints
//! took (trace format 3): each initcall's start (its entry) and end (its
//! return to `do_one_initcall`) paired, and its wall time split by the
//! samples inside it into on-CPU (the init thread, pid 1, was running) and
//! waiting (it was not: blocked, or preempted by other threads). Without
//! boundaries (older traces, kernels without `do_one_initcall` in their
//! symbols) there is nothing here and the report keeps its sampled view
//! ([`super::phases`]).
//!
//! Also the run's named points (`start_kernel`, `rest_init`, …) and its
//! console cost (time the guest spent writing to the UART, measured by the VMM).

use std::collections::HashMap;

use serde::Serialize;

use crate::profile::{BoundaryKind, BoundaryMark, FrameName, Profile, Run, StackId};

/// Deepest nesting of initcall starts kept open while pairing (initcalls do
/// not nest; a guest that starts without ending must not grow a stack).
pub const MAX_OPEN: usize = 64;

/// Console output taking more than this share of a boot earns a warning.
pub const CONSOLE_WARN_PCT: f64 = 10.0;

/// One initcall, timed exactly.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExactInitcall {
    /// The initcall function (`[kernel 0x…]` when its address has no symbol).
    pub name: String,
    /// Its entry, ns since the first guest instruction.
    pub start_ns: u64,
    /// Entry to return, ns of host time.
    pub wall_ns: u64,
    /// Entry to return in guest TSC cycles, when both were read.
    pub tsc_cycles: Option<u64>,
    /// What it returned.
    pub ret: Option<i64>,
    /// Sampled time inside it when the init thread ran (or, without task
    /// info, a stack through `do_one_initcall` was sampled), ns.
    pub on_cpu_ns: u64,
    /// `wall_ns - on_cpu_ns`: the init thread was blocked or preempted.
    pub waiting_ns: u64,
    /// Samples inside it (any task).
    pub samples: u64,
}

/// A named point of the boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NamedPoint {
    /// Which (`start_kernel`, `rest_init`, `kernel_init`, `free_initmem`,
    /// `exec_init`, `until_function`).
    pub name: String,
    /// The function (for `until_function`).
    pub function: Option<String>,
    /// ns since the first guest instruction.
    pub at_ns: u64,
}

/// What pairing left over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Pairing {
    /// Starts without an end (the run ended inside an initcall, or an end was missed).
    pub unmatched_starts: u64,
    /// Ends without a start.
    pub unmatched_ends: u64,
    /// Boundaries the recorder dropped beyond its per-run cap.
    pub dropped: u64,
}

/// The console's cost in one run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ConsoleCost {
    /// Time the guest spent writing to the UART console, ns, measured by
    /// the VMM at the UART's port exits (a lower bound: the time between a
    /// vCPU's UART accesses less than 1 ms apart).
    pub time_ns: u64,
    /// UART port accesses.
    pub accesses: u64,
    /// Share of the boot time, percent.
    pub percent_of_boot: Option<f64>,
    /// Sampled time in the kernel's console flushing
    /// ([`CONSOLE_FUNCTIONS`] on the stack: formatting and writing the
    /// records to the consoles), ns.
    pub sampled_ns: u64,
    /// Its share of the boot time, percent.
    pub sampled_percent_of_boot: Option<f64>,
    /// True when either share is above [`CONSOLE_WARN_PCT`].
    pub warning: bool,
}

/// Functions whose samples are the kernel flushing its log to the consoles
/// (6.x: `console_flush_all`; older kernels: `console_unlock` alone).
pub const CONSOLE_FUNCTIONS: &[&str] = &["console_flush_all", "console_unlock"];

/// Breakpoint exits in one run and their cost in the VMM.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BreakpointCost {
    /// Exits.
    pub exits: u64,
    /// Time the VMM spent handling them, ns.
    pub handle_ns: u64,
    /// Per exit, ns.
    pub per_exit_ns: Option<f64>,
}

/// The exact view of one run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ExactView {
    /// Initcalls in boot order.
    pub initcalls: Vec<ExactInitcall>,
    /// Named points in time order.
    pub points: Vec<NamedPoint>,
    /// What pairing left over.
    pub pairing: Pairing,
}

/// Pairs initcall starts with their ends, in time order: an end closes the
/// innermost open start of the same function; starts above it are
/// unmatched. Returns (start index, end index) pairs and the leftovers.
pub fn pair(marks: &[BoundaryMark]) -> (Vec<(usize, usize)>, Pairing) {
    let mut open: Vec<usize> = Vec::new();
    let mut pairs = Vec::new();
    let mut left = Pairing::default();
    for (i, m) in marks.iter().enumerate() {
        match m.kind {
            BoundaryKind::InitcallStart => {
                if open.len() >= MAX_OPEN {
                    open.remove(0);
                    left.unmatched_starts += 1;
                }
                open.push(i);
            }
            BoundaryKind::InitcallEnd => {
                match open.iter().rposition(|&s| marks[s].addr == m.addr) {
                    Some(at) => {
                        left.unmatched_starts += (open.len() - at - 1) as u64;
                        pairs.push((open[at], i));
                        open.truncate(at);
                    }
                    None => left.unmatched_ends += 1,
                }
            }
            _ => {}
        }
    }
    left.unmatched_starts += open.len() as u64;
    (pairs, left)
}

/// The exact view of `run`.
pub fn exact_view(p: &Profile, run: &Run) -> ExactView {
    let marks = &run.boundaries;
    let (pairs, mut pairing) = pair(marks);
    pairing.dropped = run.figures.dropped_boundaries;
    let doic = p
        .strings
        .lookup(super::phases::DO_ONE_INITCALL)
        .map(FrameName::Symbol);
    // Without task info: a stack through do_one_initcall, decided once per stack.
    let mut through_doic: HashMap<Option<StackId>, bool> = HashMap::new();
    let mut in_initcall = |s: &crate::profile::Sample| -> bool {
        match run.task(s) {
            Some(t) => t.pid == 1,
            None if run.tasks.is_empty() && doic.is_some() => *through_doic
                .entry(s.stack)
                .or_insert_with(|| p.stack_frames(s.stack).iter().any(|f| Some(f.name) == doic)),
            None => false,
        }
    };
    // Samples are in time order; each initcall looks at those inside it.
    let mut initcalls = Vec::with_capacity(pairs.len());
    for (si, ei) in pairs {
        let (s, e) = (&marks[si], &marks[ei]);
        let (start, end) = (s.t_ns, e.t_ns.max(s.t_ns));
        let first = run.samples.partition_point(|x| x.t_ns < start);
        let mut on_cpu = 0u64;
        let mut n = 0u64;
        for x in run.samples[first..].iter().take_while(|x| x.t_ns < end) {
            n += 1;
            if in_initcall(x) {
                on_cpu = on_cpu.saturating_add(x.interval_ns.min(end - x.t_ns));
            }
        }
        let wall = end - start;
        let on_cpu = on_cpu.min(wall);
        initcalls.push(ExactInitcall {
            name: s
                .function
                .clone()
                .unwrap_or_else(|| format!("[kernel {:#x}]", s.addr)),
            start_ns: start.saturating_sub(run.t0_ns),
            wall_ns: wall,
            tsc_cycles: s.tsc.zip(e.tsc).and_then(|(a, b)| b.checked_sub(a)),
            ret: e.ret,
            on_cpu_ns: on_cpu,
            waiting_ns: wall - on_cpu,
            samples: n,
        });
    }
    initcalls.sort_by_key(|i| i.start_ns);
    let points = marks
        .iter()
        .filter(|m| {
            !matches!(
                m.kind,
                BoundaryKind::InitcallStart | BoundaryKind::InitcallEnd
            )
        })
        .map(|m| NamedPoint {
            name: m.kind.to_string(),
            function: (m.kind == BoundaryKind::UntilFunction)
                .then(|| m.function.clone())
                .flatten(),
            at_ns: m.t_ns.saturating_sub(run.t0_ns),
        })
        .collect();
    ExactView {
        initcalls,
        points,
        pairing,
    }
}

/// The console's cost in `run`, when the trace has it.
pub fn console_cost(p: &Profile, run: &Run) -> Option<ConsoleCost> {
    let (time_ns, accesses) = run.figures.console?;
    let share = |ns: u64| {
        run.boot_ns
            .filter(|&b| b > 0)
            .map(|b| 100.0 * ns as f64 / b as f64)
    };
    let marks: Vec<FrameName> = CONSOLE_FUNCTIONS
        .iter()
        .filter_map(|n| p.strings.lookup(n).map(FrameName::Symbol))
        .collect();
    let mut memo: HashMap<Option<StackId>, bool> = HashMap::new();
    let mut sampled_ns = 0u64;
    if !marks.is_empty() {
        for s in &run.samples {
            let hit = *memo.entry(s.stack).or_insert_with(|| {
                p.stack_frames(s.stack)
                    .iter()
                    .any(|f| marks.contains(&f.name))
            });
            if hit {
                sampled_ns = sampled_ns.saturating_add(s.interval_ns);
            }
        }
    }
    let (percent_of_boot, sampled_percent_of_boot) = (share(time_ns), share(sampled_ns));
    let over = |p: Option<f64>| p.is_some_and(|p| p > CONSOLE_WARN_PCT);
    Some(ConsoleCost {
        time_ns,
        accesses,
        percent_of_boot,
        sampled_ns,
        sampled_percent_of_boot,
        warning: over(percent_of_boot) || over(sampled_percent_of_boot),
    })
}

/// The breakpoints' cost in `run`, when the trace has it.
pub fn breakpoint_cost(run: &Run) -> Option<BreakpointCost> {
    let (exits, handle_ns) = run.figures.breakpoints?;
    Some(BreakpointCost {
        exits,
        handle_ns,
        per_exit_ns: (exits > 0).then(|| handle_ns as f64 / exits as f64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{RunFigures, Sample, TaskInfo};

    fn mark(kind: BoundaryKind, t_ns: u64, addr: u64, name: &str) -> BoundaryMark {
        BoundaryMark {
            vcpu: 0,
            t_ns,
            tsc: Some(t_ns * 3),
            kind,
            addr,
            function: Some(name.to_string()),
            ret: None,
        }
    }
    use BoundaryKind::{InitcallEnd as E, InitcallStart as S};

    #[test]
    fn pairs_in_order_and_counts_what_is_left() {
        let m = vec![
            mark(E, 5, 9, "stray"),
            mark(S, 10, 1, "a"),
            mark(E, 20, 1, "a"),
            mark(S, 30, 2, "b"),
            // b's end was missed; c starts and ends inside it.
            mark(S, 40, 3, "c"),
            mark(E, 50, 3, "c"),
            mark(E, 60, 2, "b"),
            // Repeated: a again.
            mark(S, 70, 1, "a"),
            mark(E, 80, 1, "a"),
            // d never ends (the run ended inside it).
            mark(S, 90, 4, "d"),
        ];
        let (pairs, left) = pair(&m);
        assert_eq!(pairs, vec![(1, 2), (4, 5), (3, 6), (7, 8)]);
        assert_eq!(left.unmatched_starts, 1);
        assert_eq!(left.unmatched_ends, 1);
    }

    #[test]
    fn an_end_closes_the_innermost_start_of_its_function() {
        // x starts twice without ending, then ends once: the inner one pairs.
        let m = vec![
            mark(S, 1, 7, "x"),
            mark(S, 2, 8, "y"),
            mark(S, 3, 7, "x"),
            mark(E, 4, 7, "x"),
        ];
        let (pairs, left) = pair(&m);
        assert_eq!(pairs, vec![(2, 3)]);
        assert_eq!(left.unmatched_starts, 2);
    }

    #[test]
    fn open_starts_are_capped() {
        let m: Vec<BoundaryMark> = (0..1000).map(|i| mark(S, i, i, "s")).collect();
        let (pairs, left) = pair(&m);
        assert!(pairs.is_empty());
        assert_eq!(left.unmatched_starts, 1000);
    }

    #[test]
    fn wall_time_splits_into_on_cpu_and_waiting_by_task() {
        let mut p = Profile::default();
        let stack = p.stack_of(&["kernel_init", "do_one_initcall", "slow_init"]);
        let mut run = Run {
            t0_ns: 100,
            boot_ns: Some(10_000),
            tasks: vec![
                TaskInfo {
                    pid: 1,
                    tgid: 1,
                    comm: "swapper/0".into(),
                },
                TaskInfo {
                    pid: 0,
                    tgid: 0,
                    comm: "swapper/0".into(),
                },
            ],
            figures: RunFigures {
                console: Some((2_000, 40)),
                ..RunFigures::default()
            },
            ..Run::default()
        };
        // 10 samples 100 ns apart from t=1000: 4 in pid 1, then 6 idle.
        for i in 0..10u64 {
            run.samples.push(Sample {
                task: Some(if i < 4 { 0 } else { 1 }),
                ..Sample::kernel_at(stack, 1000 + i * 100, 100)
            });
        }
        run.boundaries = vec![
            mark(BoundaryKind::StartKernel, 500, 0x10, "start_kernel"),
            mark(S, 1000, 0x20, "slow_init"),
            BoundaryMark {
                ret: Some(0),
                ..mark(E, 2050, 0x20, "slow_init")
            },
        ];
        let v = exact_view(&p, &run);
        assert_eq!(v.initcalls.len(), 1);
        let i = &v.initcalls[0];
        assert_eq!(i.name, "slow_init");
        assert_eq!(i.start_ns, 900);
        assert_eq!(i.wall_ns, 1050);
        assert_eq!(i.tsc_cycles, Some(3150));
        assert_eq!(i.on_cpu_ns, 400);
        assert_eq!(i.waiting_ns, 650);
        assert_eq!(i.samples, 10);
        assert_eq!(i.ret, Some(0));
        assert_eq!(v.points.len(), 1);
        assert_eq!(v.points[0].name, "start_kernel");
        assert_eq!(v.points[0].at_ns, 400);
        let c = console_cost(&p, &run).expect("console figure");
        assert_eq!(c.time_ns, 2_000);
        assert_eq!(c.sampled_ns, 0, "no console function sampled");
        assert!(c.warning, "20% of the boot");
        run.figures.console = Some((500, 10));
        assert!(!console_cost(&p, &run).expect("figure").warning);
        // Samples in the console flush count too.
        let flush = p.stack_of(&["kernel_init", "_printk", "console_flush_all"]);
        for s in run.samples.iter_mut().take(3) {
            s.stack = flush;
        }
        run.figures.console = Some((0, 10));
        run.boot_ns = Some(2_000);
        let c = console_cost(&p, &run).expect("figure");
        assert_eq!(c.sampled_ns, 300);
        assert_eq!(c.percent_of_boot, Some(0.0));
        assert!(c.warning, "sampled: 300 of 2000 ns is 15%");
    }
}
