//! Kernel boot phases found from the sampled stacks: decompression, head
//! code, `start_kernel` and its stages, initcalls, the init thread, idle, and
//! the first user-mode instruction ("until init").
//!
//! Every sample lands in exactly one phase, tested in this order:
//! setup / decompressor / user / unknown code by address space; then, for
//! kernel code, a stack through `do_one_initcall` is an initcall; one through
//! the idle loop is idle; one through `start_kernel` is `start_kernel`; a
//! sample before `start_kernel` first appears is head code; one through
//! `kernel_init` is the init thread's own work; one through `kthread` or
//! `kthreadd` is another kernel thread; the rest are stacks that did not
//! unwind far enough to tell.
//!
//! Times are host time, summed over vCPUs (with one vCPU: wall time).

use std::collections::HashMap;

use serde::Serialize;

use super::runview::{Frame, Names, RunView, Space, ViewSample};

/// The function whose direct children are the `start_kernel` stages.
pub const START_KERNEL: &str = "start_kernel";
/// The function that calls each initcall.
pub const DO_ONE_INITCALL: &str = "do_one_initcall";
/// Functions `do_one_initcall` itself calls around the initcall (init/main.c,
/// 6.x): time in them is `do_one_initcall`'s own, not an initcall's.
pub const DO_ONE_INITCALL_HELPERS: &[&str] = &[
    "initcall_blacklisted",
    "do_trace_initcall_start",
    "do_trace_initcall_finish",
    "trace_initcall_start",
    "trace_initcall_finish",
    "trace_initcall_start_cb",
    "trace_initcall_finish_cb",
    "sprintf",
    "strlcat",
    "preempt_count_set",
    "__warn_printk",
    "add_latent_entropy",
    "add_device_randomness",
];

/// The init thread's entry (`ret_from_fork` → `kernel_init`).
pub const KERNEL_INIT: &str = "kernel_init";
/// Functions that mark a stack as a kernel thread other than init.
pub const KTHREAD_FUNCTIONS: &[&str] = &["kthread", "kthreadd"];
/// Functions that mark a stack as the idle loop.
pub const IDLE_FUNCTIONS: &[&str] = &["cpu_startup_entry", "do_idle"];

/// Kernel boot phases, in boot order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KernelPhase {
    /// Real-mode setup code or other code below 1 MiB.
    Setup,
    /// The bzImage decompressor.
    Decompression,
    /// Kernel code before `start_kernel` first appears (startup_64 and friends).
    Head,
    /// Under `start_kernel`, outside the idle loop.
    StartKernel,
    /// Under `do_one_initcall`.
    Initcalls,
    /// The init thread outside initcalls (`kernel_init_freeable`'s other steps, freeing init memory, …).
    KernelInit,
    /// The idle loop.
    Idle,
    /// Kernel threads other than init (workers, ksoftirqd, RCU, kthreadd, …).
    KernelThreads,
    /// Other kernel code: stacks too short to place.
    OtherKernel,
    /// Guest user mode.
    User,
    /// Addresses nothing covers.
    Unknown,
}

impl KernelPhase {
    /// Every phase, in boot order.
    pub const ALL: [KernelPhase; 11] = [
        KernelPhase::Setup,
        KernelPhase::Decompression,
        KernelPhase::Head,
        KernelPhase::StartKernel,
        KernelPhase::Initcalls,
        KernelPhase::KernelInit,
        KernelPhase::Idle,
        KernelPhase::KernelThreads,
        KernelPhase::OtherKernel,
        KernelPhase::User,
        KernelPhase::Unknown,
    ];

    /// Position of a phase name in boot order (unknown names last).
    pub fn rank_of(name: &str) -> usize {
        KernelPhase::ALL
            .iter()
            .position(|p| p.as_str() == name)
            .unwrap_or(KernelPhase::ALL.len())
    }

    /// The phase's name in reports and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            KernelPhase::Setup => "setup",
            KernelPhase::Decompression => "decompression",
            KernelPhase::Head => "head",
            KernelPhase::StartKernel => "start_kernel",
            KernelPhase::Initcalls => "initcalls",
            KernelPhase::KernelInit => "kernel_init",
            KernelPhase::Idle => "idle",
            KernelPhase::KernelThreads => "kernel_threads",
            KernelPhase::OtherKernel => "other_kernel",
            KernelPhase::User => "user",
            KernelPhase::Unknown => "unknown",
        }
    }
}

/// Time and host costs of one named thing (phase, stage, initcall) in one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Span {
    /// Name.
    pub name: String,
    /// Sampled host time, ns (sum of sample intervals).
    pub time_ns: u64,
    /// Number of samples.
    pub samples: u64,
    /// Time of its first sample, ns since the first guest instruction.
    pub first_ns: u64,
    /// Time of its last sample, ns since the first guest instruction.
    pub last_ns: u64,
    /// Host page faults charged to its samples.
    pub faults: u64,
    /// KVM exits charged to its samples.
    pub exits: u64,
}

impl Span {
    fn new(name: String, s: &ViewSample) -> Span {
        Span {
            name,
            time_ns: 0,
            samples: 0,
            first_ns: s.t_ns,
            last_ns: s.t_ns,
            faults: 0,
            exits: 0,
        }
    }

    fn add(&mut self, s: &ViewSample) {
        self.time_ns = self.time_ns.saturating_add(s.interval_ns);
        self.samples += 1;
        self.first_ns = self.first_ns.min(s.t_ns);
        self.last_ns = self.last_ns.max(s.t_ns);
        self.faults = self.faults.saturating_add(s.faults);
        self.exits = self.exits.saturating_add(s.exits);
    }
}

/// When things first happened in a run, ns since the first guest instruction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Milestones {
    /// First sample in the kernel proper (end of decompression).
    pub first_kernel_ns: Option<u64>,
    /// First sample with `start_kernel` on the stack.
    pub start_kernel_ns: Option<u64>,
    /// First sample with `do_one_initcall` on the stack.
    pub first_initcall_ns: Option<u64>,
    /// First user-mode sample: the kernel has started init ("until init").
    pub first_user_ns: Option<u64>,
}

/// The kernel phases of one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KernelPhases {
    /// Milestones.
    pub milestones: Milestones,
    /// Non-empty phases in boot order ([`KernelPhase::as_str`] names).
    pub phases: Vec<Span>,
    /// `start_kernel`'s direct children, in order of first appearance;
    /// `start_kernel [self]` for samples in `start_kernel` itself.
    pub stages: Vec<Span>,
    /// Initcall functions (the frame just above `do_one_initcall`), in order of
    /// first appearance; `do_one_initcall [self]` for samples in it, its
    /// inlined code or its helpers ([`DO_ONE_INITCALL_HELPERS`]).
    pub initcalls: Vec<Span>,
}

/// Frame ids of the functions phases are recognised by.
struct Marks {
    start_kernel: Option<u32>,
    do_one_initcall: Option<u32>,
    kernel_init: Option<u32>,
    idle: Vec<u32>,
    kthread: Vec<u32>,
}

impl Marks {
    fn new(names: &Names) -> Marks {
        Marks {
            start_kernel: names.lookup(START_KERNEL),
            do_one_initcall: names.lookup(DO_ONE_INITCALL),
            kernel_init: names.lookup(KERNEL_INIT),
            idle: IDLE_FUNCTIONS
                .iter()
                .filter_map(|n| names.lookup(n))
                .collect(),
            kthread: KTHREAD_FUNCTIONS
                .iter()
                .filter_map(|n| names.lookup(n))
                .collect(),
        }
    }
}

fn position(stack: &[Frame], id: Option<u32>) -> Option<usize> {
    let id = id?;
    stack.iter().position(|f| f.name == id)
}

/// Computes the kernel phases of `run`.
pub fn kernel_phases(run: &RunView, names: &Names) -> KernelPhases {
    let marks = Marks::new(names);
    let mut ms = Milestones::default();
    for s in &run.samples {
        let stack = names.stack(s.stack);
        let first = |slot: &mut Option<u64>| {
            *slot = Some(slot.map_or(s.t_ns, |t| t.min(s.t_ns)));
        };
        match s.space {
            Space::Kernel => {
                first(&mut ms.first_kernel_ns);
                if position(stack, marks.start_kernel).is_some() {
                    first(&mut ms.start_kernel_ns);
                }
                if position(stack, marks.do_one_initcall).is_some() {
                    first(&mut ms.first_initcall_ns);
                }
            }
            Space::User => first(&mut ms.first_user_ns),
            _ => {}
        }
    }

    let mut phases: HashMap<KernelPhase, Span> = HashMap::new();
    let mut stages = Tally::default();
    let mut initcalls = Tally::default();
    let self_stage = format!("{START_KERNEL} [self]");
    let self_initcall = format!("{DO_ONE_INITCALL} [self]");
    for s in &run.samples {
        let stack = names.stack(s.stack);
        let phase = match s.space {
            Space::Setup => KernelPhase::Setup,
            Space::Decompressor => KernelPhase::Decompression,
            Space::User => KernelPhase::User,
            Space::Unknown => KernelPhase::Unknown,
            Space::Kernel => {
                if let Some(i) = position(stack, marks.do_one_initcall) {
                    // Skip do_one_initcall's own inlined helpers: the initcall is
                    // called through a pointer, so it is never an inline frame.
                    let callee = stack[i + 1..]
                        .iter()
                        .find(|f| !f.inlined)
                        .map(|f| names.name(f.name))
                        .filter(|n| !DO_ONE_INITCALL_HELPERS.contains(n));
                    initcalls.add(callee.unwrap_or(&self_initcall), s);
                    KernelPhase::Initcalls
                } else if stack.iter().any(|f| marks.idle.contains(&f.name)) {
                    KernelPhase::Idle
                } else if let Some(i) = position(stack, marks.start_kernel) {
                    // Inlined children count: in the source they are stages too.
                    match stack.get(i + 1) {
                        Some(f) => stages.add(names.name(f.name), s),
                        None => stages.add(&self_stage, s),
                    }
                    KernelPhase::StartKernel
                } else if !matches!(ms.start_kernel_ns, Some(t) if s.t_ns >= t) {
                    KernelPhase::Head
                } else if position(stack, marks.kernel_init).is_some() {
                    KernelPhase::KernelInit
                } else if stack.iter().any(|f| marks.kthread.contains(&f.name)) {
                    KernelPhase::KernelThreads
                } else {
                    KernelPhase::OtherKernel
                }
            }
        };
        phases
            .entry(phase)
            .or_insert_with(|| Span::new(phase.as_str().to_string(), s))
            .add(s);
    }
    let mut phase_list: Vec<(KernelPhase, Span)> = phases.into_iter().collect();
    phase_list.sort_by_key(|(p, _)| *p);
    KernelPhases {
        milestones: ms,
        phases: phase_list.into_iter().map(|(_, s)| s).collect(),
        stages: stages.into_ordered(),
        initcalls: initcalls.into_ordered(),
    }
}

/// Spans by name, kept in order of first appearance.
#[derive(Default)]
struct Tally {
    spans: Vec<Span>,
    index: HashMap<String, usize>,
}

impl Tally {
    fn add(&mut self, name: &str, s: &ViewSample) {
        let i = match self.index.get(name) {
            Some(&i) => i,
            None => {
                self.spans.push(Span::new(name.to_string(), s));
                self.index.insert(name.to_string(), self.spans.len() - 1);
                self.spans.len() - 1
            }
        };
        self.spans[i].add(s);
    }

    fn into_ordered(mut self) -> Vec<Span> {
        self.spans
            .sort_by(|a, b| a.first_ns.cmp(&b.first_ns).then(a.name.cmp(&b.name)));
        self.spans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Builder {
        names: Names,
        run: RunView,
        t: u64,
    }

    impl Builder {
        fn new() -> Builder {
            Builder {
                names: Names::default(),
                run: RunView::default(),
                t: 0,
            }
        }

        /// Appends `n` samples 1 ms apart in `space` with this stack.
        fn push(&mut self, n: u64, space: Space, stack: &[&str]) {
            let id = self.names.stack_of(stack);
            for _ in 0..n {
                self.run.samples.push(ViewSample {
                    vcpu: 0,
                    t_ns: self.t,
                    interval_ns: 1_000_000,
                    space,
                    stack: id,
                    faults: 2,
                    exits: 1,
                    truncated: false,
                    cost_ns: 0,
                });
                self.t += 1_000_000;
            }
        }
    }

    #[test]
    fn phases_stages_and_initcalls_from_stacks() {
        let mut b = Builder::new();
        let sk = ["x86_64_start_kernel", "start_kernel"];
        b.push(
            3,
            Space::Decompressor,
            &["[decompressor]", "extract_kernel"],
        );
        b.push(2, Space::Kernel, &["startup_64", "__startup_64"]);
        b.push(
            4,
            Space::Kernel,
            &[sk[0], sk[1], "setup_arch", "e820__memory_setup"],
        );
        b.push(1, Space::Kernel, &[sk[0], sk[1]]);
        b.push(
            5,
            Space::Kernel,
            &[sk[0], sk[1], "mm_core_init", "memblock_free_all"],
        );
        b.push(2, Space::Kernel, &[sk[0], sk[1], "setup_arch", "x86_init"]);
        let ic = [
            "ret_from_fork_asm",
            "ret_from_fork",
            "kernel_init",
            "kernel_init_freeable",
            "do_initcalls",
            "do_initcall_level",
            "do_one_initcall",
        ];
        fn with<'a>(ic: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
            let mut v = ic.to_vec();
            v.extend_from_slice(extra);
            v
        }
        let foo = with(&ic, &["foo_init", "kmalloc"]);
        let bar = with(&ic, &["bar_init"]);
        let own = with(&ic, &["initcall_blacklisted"]);
        b.push(3, Space::Kernel, &foo);
        b.push(1, Space::Kernel, &own);
        b.push(6, Space::Kernel, &bar);
        b.push(
            2,
            Space::Kernel,
            &[sk[0], sk[1], "rest_init", "cpu_startup_entry", "do_idle"],
        );
        b.push(
            1,
            Space::Kernel,
            &[
                "ret_from_fork_asm",
                "ret_from_fork",
                "kernel_init",
                "free_initmem",
            ],
        );
        b.push(
            1,
            Space::Kernel,
            &[
                "ret_from_fork_asm",
                "ret_from_fork",
                "kthread",
                "worker_thread",
            ],
        );
        b.push(2, Space::User, &["[user]"]);

        let p = kernel_phases(&b.run, &b.names);
        let ms = 1_000_000;
        assert_eq!(p.milestones.first_kernel_ns, Some(3 * ms));
        assert_eq!(p.milestones.start_kernel_ns, Some(5 * ms));
        assert_eq!(p.milestones.first_initcall_ns, Some(17 * ms));
        assert_eq!(p.milestones.first_user_ns, Some(31 * ms));

        let phases: Vec<(&str, u64)> = p
            .phases
            .iter()
            .map(|s| (s.name.as_str(), s.time_ns / ms))
            .collect();
        assert_eq!(
            phases,
            vec![
                ("decompression", 3),
                ("head", 2),
                ("start_kernel", 12),
                ("initcalls", 10),
                ("kernel_init", 1),
                ("idle", 2),
                ("kernel_threads", 1),
                ("user", 2),
            ]
        );

        let stages: Vec<(&str, u64, u64)> = p
            .stages
            .iter()
            .map(|s| (s.name.as_str(), s.time_ns / ms, s.first_ns / ms))
            .collect();
        assert_eq!(
            stages,
            vec![
                ("setup_arch", 6, 5),
                ("start_kernel [self]", 1, 9),
                ("mm_core_init", 5, 10)
            ]
        );
        let initcalls: Vec<(&str, u64)> = p
            .initcalls
            .iter()
            .map(|s| (s.name.as_str(), s.time_ns / ms))
            .collect();
        assert_eq!(
            initcalls,
            vec![
                ("foo_init", 3),
                ("do_one_initcall [self]", 1),
                ("bar_init", 6)
            ]
        );
        assert_eq!(p.initcalls[2].faults, 12);
        assert_eq!(p.initcalls[2].exits, 6);
    }

    #[test]
    fn inlined_helpers_of_do_one_initcall_are_not_initcalls() {
        let mut names = Names::default();
        let f = |names: &mut Names, n: &str, inlined: bool| Frame {
            name: names.intern(n),
            inlined,
        };
        let stack = vec![
            f(&mut names, "kernel_init", false),
            f(&mut names, "do_one_initcall", false),
            f(&mut names, "trace_initcall_start", true),
            f(&mut names, "baz_init", false),
        ];
        let id = names.intern_stack(stack);
        let only_inline = vec![
            f(&mut names, "kernel_init", false),
            f(&mut names, "do_one_initcall", false),
            f(&mut names, "trace_initcall_start", true),
        ];
        let id2 = names.intern_stack(only_inline);
        let mk = |t_ns: u64, stack: u32| ViewSample {
            vcpu: 0,
            t_ns,
            interval_ns: 10,
            space: Space::Kernel,
            stack,
            faults: 0,
            exits: 0,
            truncated: false,
            cost_ns: 0,
        };
        let run = RunView {
            samples: vec![mk(0, id), mk(10, id2)],
            ..RunView::default()
        };
        let p = kernel_phases(&run, &names);
        let got: Vec<&str> = p.initcalls.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(got, vec!["baz_init", "do_one_initcall [self]"]);
    }

    #[test]
    fn without_start_kernel_all_kernel_samples_are_head() {
        let mut b = Builder::new();
        b.push(2, Space::Kernel, &["startup_64"]);
        b.push(1, Space::Kernel, &["ret_from_fork", "kernel_init"]);
        let p = kernel_phases(&b.run, &b.names);
        assert_eq!(p.phases.len(), 1);
        assert_eq!(p.phases[0].name, "head");
        assert_eq!(p.phases[0].samples, 3);
        assert!(p.stages.is_empty());
    }
}
