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
//! Each distinct stack is examined once; each sample then costs O(1).

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Serialize;

use crate::profile::{Frame, FrameKind, FrameName, Profile, Run, Sample, StackId, StackMemo};

/// The function whose direct children are the `start_kernel` stages.
pub const START_KERNEL: &str = "start_kernel";
/// The function that calls each initcall.
pub const DO_ONE_INITCALL: &str = "do_one_initcall";
/// Functions `do_one_initcall` itself calls around the initcall (init/main.c,
/// 6.x): time in them is `do_one_initcall`'s own, not an initcall's.
///
/// Inlined code needs no list: DWARF marks it inlined and it is skipped by
/// that flag, and without DWARF (System.map, kallsyms) it is no frame at
/// all. So the always-inline helpers (`preempt_count`, `preempt_count_set`,
/// `add_latent_entropy`, the `trace_initcall_*` tracepoint wrappers) are not
/// here. What is left are real calls, which a stack cannot tell from the
/// initcall (also a real call, through a pointer): the library functions,
/// and `static` helpers the compiler may or may not inline.
pub const DO_ONE_INITCALL_HELPERS: &[&str] = &[
    "initcall_blacklisted",
    "do_trace_initcall_start",
    "do_trace_initcall_finish",
    "trace_initcall_start_cb",
    "trace_initcall_finish_cb",
    "sprintf",
    "strlcat",
    "__warn_printk",
    "add_device_randomness",
    // add_device_randomness's callee: seen in its place when a sample in its
    // prologue skips its frame, or without DWARF's inline frames.
    "_mix_pool_bytes",
];

/// True for an x86 interrupt or exception entry stub (`asm_sysvec_*`,
/// `asm_common_interrupt`, `asm_exc_*`): on a stack it marks where an
/// interrupt hit, not a call.
fn is_entry_stub(p: &Profile, name: FrameName) -> bool {
    p.name_text(name).starts_with("asm_")
}

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
    fn new(name: String, t_ns: u64) -> Span {
        Span {
            name,
            time_ns: 0,
            samples: 0,
            first_ns: t_ns,
            last_ns: t_ns,
            faults: 0,
            exits: 0,
        }
    }

    fn add(&mut self, s: &Sample, t_ns: u64) {
        self.time_ns = self.time_ns.saturating_add(s.interval_ns);
        self.samples += 1;
        self.first_ns = self.first_ns.min(t_ns);
        self.last_ns = self.last_ns.max(t_ns);
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

/// Frame names of the functions phases are recognised by.
struct Marks {
    start_kernel: Option<FrameName>,
    do_one_initcall: Option<FrameName>,
    kernel_init: Option<FrameName>,
    idle: Vec<FrameName>,
    kthread: Vec<FrameName>,
    helpers: Vec<FrameName>,
}

impl Marks {
    fn new(p: &Profile) -> Marks {
        let look = |n: &str| p.strings.lookup(n).map(FrameName::Symbol);
        let all = |ns: &[&str]| ns.iter().filter_map(|n| look(n)).collect();
        Marks {
            start_kernel: look(START_KERNEL),
            do_one_initcall: look(DO_ONE_INITCALL),
            kernel_init: look(KERNEL_INIT),
            idle: all(IDLE_FUNCTIONS),
            kthread: all(KTHREAD_FUNCTIONS),
            helpers: all(DO_ONE_INITCALL_HELPERS),
        }
    }
}

/// Where a stack is, decided once per distinct stack.
#[derive(Clone, Copy)]
enum Place {
    /// Under `do_one_initcall`; the initcall's name (`None`: its own time).
    Initcall(Option<FrameName>),
    Idle,
    /// Under `start_kernel`; the stage (`None`: `start_kernel` itself).
    StartKernel(Option<FrameName>),
    KernelInit,
    KernelThread,
    Other,
}

struct Facts {
    place: Place,
    has_start_kernel: bool,
    has_initcall: bool,
    /// The stage or initcall span its samples go to (in `stages` or
    /// `initcalls` by `place`), once the first one went.
    span: Option<usize>,
}

fn position(stack: &[&Frame], name: Option<FrameName>) -> Option<usize> {
    let name = name?;
    stack.iter().position(|f| f.name == name)
}

fn facts(p: &Profile, marks: &Marks, stack: Option<StackId>) -> Facts {
    let stack = p.stack_frames(stack);
    let has = |names: &[FrameName]| stack.iter().any(|f| names.contains(&f.name));
    let sk = position(&stack, marks.start_kernel);
    let ic = position(&stack, marks.do_one_initcall);
    let place = if let Some(i) = ic {
        // Skip do_one_initcall's own inlined code: the initcall is called
        // through a pointer, so it is never an inline frame. An interrupt or
        // exception that hit do_one_initcall itself (an `asm_` entry stub
        // next) is its own time too, as are its helpers.
        let callee = stack[i + 1..]
            .iter()
            .find(|f| !f.inlined)
            .map(|f| f.name)
            .filter(|n| !marks.helpers.contains(n) && !is_entry_stub(p, *n));
        Place::Initcall(callee)
    } else if has(&marks.idle) {
        Place::Idle
    } else if let Some(i) = sk {
        // Inlined children count: in the source they are stages too.
        Place::StartKernel(stack.get(i + 1).map(|f| f.name))
    } else if position(&stack, marks.kernel_init).is_some() {
        Place::KernelInit
    } else if has(&marks.kthread) {
        Place::KernelThread
    } else {
        Place::Other
    };
    Facts {
        place,
        has_start_kernel: sk.is_some(),
        has_initcall: ic.is_some(),
        span: None,
    }
}

/// Computes the kernel phases of `run`.
pub fn kernel_phases(p: &Profile, run: &Run) -> KernelPhases {
    let marks = Marks::new(p);
    let mut memo: StackMemo<Facts> = StackMemo::new(&p.stacks);
    let mut ms = Milestones::default();
    for s in &run.samples {
        let t = run.rel_ns(s);
        let first = |slot: &mut Option<u64>| {
            *slot = Some(slot.map_or(t, |x| x.min(t)));
        };
        match s.kind {
            FrameKind::Kernel => {
                let f = memo.get_or_insert_with(s.stack, || facts(p, &marks, s.stack));
                first(&mut ms.first_kernel_ns);
                if f.has_start_kernel {
                    first(&mut ms.start_kernel_ns);
                }
                if f.has_initcall {
                    first(&mut ms.first_initcall_ns);
                }
            }
            FrameKind::User => first(&mut ms.first_user_ns),
            _ => {}
        }
    }

    let mut phases: [Option<Span>; KernelPhase::ALL.len()] = Default::default();
    let mut stages = Tally::default();
    let mut initcalls = Tally::default();
    let self_stage = format!("{START_KERNEL} [self]");
    let self_initcall = format!("{DO_ONE_INITCALL} [self]");
    for s in &run.samples {
        let t = run.rel_ns(s);
        let phase = match s.kind {
            FrameKind::Setup => KernelPhase::Setup,
            FrameKind::Decompressor => KernelPhase::Decompression,
            FrameKind::User => KernelPhase::User,
            FrameKind::Unknown => KernelPhase::Unknown,
            FrameKind::Kernel => {
                let f = memo.get_or_insert_with(s.stack, || facts(p, &marks, s.stack));
                // The span's name is looked up once per stack, not per sample.
                let name = |n: Option<FrameName>, own: &str| match n {
                    Some(n) => p.name_text(n),
                    None => Cow::Owned(own.to_string()),
                };
                match f.place {
                    Place::Initcall(callee) => {
                        let i = *f.span.get_or_insert_with(|| {
                            initcalls.slot(&name(callee, &self_initcall), t)
                        });
                        initcalls.add(i, s, t);
                        KernelPhase::Initcalls
                    }
                    Place::Idle => KernelPhase::Idle,
                    Place::StartKernel(stage) => {
                        let i = *f
                            .span
                            .get_or_insert_with(|| stages.slot(&name(stage, &self_stage), t));
                        stages.add(i, s, t);
                        KernelPhase::StartKernel
                    }
                    _ if !matches!(ms.start_kernel_ns, Some(x) if t >= x) => KernelPhase::Head,
                    Place::KernelInit => KernelPhase::KernelInit,
                    Place::KernelThread => KernelPhase::KernelThreads,
                    Place::Other => KernelPhase::OtherKernel,
                }
            }
        };
        phases[phase as usize]
            .get_or_insert_with(|| Span::new(phase.as_str().to_string(), t))
            .add(s, t);
    }
    KernelPhases {
        milestones: ms,
        // `ALL` order is boot order.
        phases: phases.into_iter().flatten().collect(),
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
    /// The span named `name`, started at `t_ns` when new.
    fn slot(&mut self, name: &str, t_ns: u64) -> usize {
        match self.index.get(name) {
            Some(&i) => i,
            None => {
                self.spans.push(Span::new(name.to_string(), t_ns));
                self.index.insert(name.to_string(), self.spans.len() - 1);
                self.spans.len() - 1
            }
        }
    }

    /// Adds a sample to span `i` (from [`Tally::slot`]).
    fn add(&mut self, i: usize, s: &Sample, t_ns: u64) {
        if let Some(span) = self.spans.get_mut(i) {
            span.add(s, t_ns);
        }
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
    use crate::profile::{FrameKind, Run, Sample};

    struct Builder {
        p: Profile,
        run: Run,
        t: u64,
    }

    impl Builder {
        fn new() -> Builder {
            Builder {
                p: Profile::default(),
                run: Run::default(),
                t: 0,
            }
        }

        /// Appends `n` samples 1 ms apart of `kind` with this stack.
        fn push(&mut self, n: u64, kind: FrameKind, stack: &[&str]) {
            let id = self.p.stack_of(stack);
            for _ in 0..n {
                self.run.samples.push(Sample {
                    kind,
                    faults: 2,
                    exits: 1,
                    ..Sample::kernel_at(id, self.t, 1_000_000)
                });
                self.t += 1_000_000;
            }
        }

        fn phases(&self) -> KernelPhases {
            kernel_phases(&self.p, &self.run)
        }
    }

    #[test]
    fn phases_stages_and_initcalls_from_stacks() {
        let mut b = Builder::new();
        let sk = ["x86_64_start_kernel", "start_kernel"];
        b.push(
            3,
            FrameKind::Decompressor,
            &["[decompressor]", "extract_kernel"],
        );
        b.push(2, FrameKind::Kernel, &["startup_64", "__startup_64"]);
        b.push(
            4,
            FrameKind::Kernel,
            &[sk[0], sk[1], "setup_arch", "e820__memory_setup"],
        );
        b.push(1, FrameKind::Kernel, &[sk[0], sk[1]]);
        b.push(
            5,
            FrameKind::Kernel,
            &[sk[0], sk[1], "mm_core_init", "memblock_free_all"],
        );
        b.push(
            2,
            FrameKind::Kernel,
            &[sk[0], sk[1], "setup_arch", "x86_init"],
        );
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
        b.push(3, FrameKind::Kernel, &foo);
        b.push(1, FrameKind::Kernel, &own);
        b.push(6, FrameKind::Kernel, &bar);
        b.push(
            2,
            FrameKind::Kernel,
            &[sk[0], sk[1], "rest_init", "cpu_startup_entry", "do_idle"],
        );
        b.push(
            1,
            FrameKind::Kernel,
            &[
                "ret_from_fork_asm",
                "ret_from_fork",
                "kernel_init",
                "free_initmem",
            ],
        );
        b.push(
            1,
            FrameKind::Kernel,
            &[
                "ret_from_fork_asm",
                "ret_from_fork",
                "kthread",
                "worker_thread",
            ],
        );
        b.push(2, FrameKind::User, &["[user]"]);

        let p = b.phases();
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
    fn interrupts_and_entropy_helpers_in_do_one_initcall_are_its_own_time() {
        let mut p = Profile::default();
        let mut n = |s: &str| FrameName::Symbol(p.strings.intern(s));
        let (ki, doi, irq, tick, mix, baz) = (
            n("kernel_init"),
            n("do_one_initcall"),
            n("asm_sysvec_apic_timer_interrupt"),
            n("tick_handle_periodic"),
            n("_mix_pool_bytes"),
            n("baz_init"),
        );
        let k = FrameKind::Kernel;
        let timer = p.stack_of_frames(k, &[(ki, false), (doi, false), (irq, false), (tick, false)]);
        let entropy = p.stack_of_frames(k, &[(ki, false), (doi, false), (mix, false)]);
        let in_baz = p.stack_of_frames(k, &[(ki, false), (doi, false), (baz, false), (irq, false)]);
        let mk = |t_ns: u64, stack| Sample::kernel_at(stack, t_ns, 10);
        let run = Run {
            samples: vec![mk(0, timer), mk(10, entropy), mk(20, in_baz)],
            ..Run::default()
        };
        let got: Vec<(String, u64)> = kernel_phases(&p, &run)
            .initcalls
            .iter()
            .map(|s| (s.name.clone(), s.samples))
            .collect();
        assert_eq!(
            got,
            vec![
                ("do_one_initcall [self]".to_string(), 2),
                ("baz_init".to_string(), 1)
            ]
        );
    }

    #[test]
    fn inlined_frames_after_do_one_initcall_are_not_initcalls() {
        let mut p = Profile::default();
        let mut n = |s: &str| FrameName::Symbol(p.strings.intern(s));
        let (ki, doi, inl, baz) = (
            n("kernel_init"),
            n("do_one_initcall"),
            n("ktime_get_inline"),
            n("baz_init"),
        );
        let id = p.stack_of_frames(
            FrameKind::Kernel,
            &[(ki, false), (doi, false), (inl, true), (baz, false)],
        );
        let id2 = p.stack_of_frames(FrameKind::Kernel, &[(ki, false), (doi, false), (inl, true)]);
        let mk = |t_ns: u64, stack| Sample::kernel_at(stack, t_ns, 10);
        let run = Run {
            samples: vec![mk(0, id), mk(10, id2)],
            ..Run::default()
        };
        let got: Vec<String> = kernel_phases(&p, &run)
            .initcalls
            .iter()
            .map(|s| s.name.clone())
            .collect();
        assert_eq!(got, vec!["baz_init", "do_one_initcall [self]"]);
    }

    #[test]
    fn without_start_kernel_all_kernel_samples_are_head() {
        let mut b = Builder::new();
        b.push(2, FrameKind::Kernel, &["startup_64"]);
        b.push(1, FrameKind::Kernel, &["ret_from_fork", "kernel_init"]);
        let p = b.phases();
        assert_eq!(p.phases.len(), 1);
        assert_eq!(p.phases[0].name, "head");
        assert_eq!(p.phases[0].samples, 3);
        assert!(p.stages.is_empty());
    }
}
