//! THE profile model: every reading command (flame, export, report, diff)
//! loads one [`Profile`], analyzes it and renders it.
//!
//! Shaped after samply's `fxprof-processed-profile`: a string table, a frame
//! table, a prefix-tree stack table, and per run a sample table, plus
//! markers (VMM phases, console lines, the end). Unresolved addresses keep
//! a typed [`Unresolved`] reason (as blazesym's `Symbolized::Unknown`) and
//! become a label only when rendered.
//!
//! [`build::build`] is the only place that classifies addresses and interns
//! stacks; [`symbols::SymbolConfig`] says where symbols come from.

pub mod build;
pub mod frames;
pub mod interval;
pub mod many;
pub mod stacks;
pub mod strings;
pub mod symbols;

use std::path::PathBuf;

use boottrace_symbols::symbolizer::SourceKind;
use serde::Serialize;

pub use crate::trace::{BoundaryKind, DeviceStats, EndKind, PhaseName, UnwinderKind};

pub use build::{build, build_table, open, BuildError};
pub use frames::FrameTable;
pub use many::{open_many, ManyError};
pub use stacks::{StackId, StackMemo, StackNode, StackTable};
pub use strings::{StrId, StringTable};

/// Index of a frame in [`Profile::frames`].
pub type FrameId = u32;

/// Which code an address is in: the one classification every command uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FrameKind {
    /// Real-mode setup code or anything else below 1 MiB.
    Setup,
    /// The bzImage decompressor.
    Decompressor,
    /// The kernel proper, in kernel mode.
    Kernel,
    /// Guest user mode.
    User,
    /// Nothing known covers the address.
    Unknown,
}

/// Why a frame has no function name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Unresolved {
    /// Guest user mode: boottrace does not symbolize user code.
    User,
    /// Real-mode setup code.
    Setup,
    /// Decompressor code, and no decompressor ELF to name it.
    Decompressor,
    /// A kernel address no kernel symbol covers (link-time address).
    NoKernelSymbol(u64),
    /// An address nothing known covers (raw address).
    Unmapped(u64),
    /// DWARF has an inline frame without a name.
    UnnamedInline,
    /// Pseudo-frame at the root of a stack whose unwind was cut short.
    TruncatedStack,
}

impl Unresolved {
    /// The label renderers show (the same text boottrace always printed).
    pub fn label(self) -> String {
        match self {
            Unresolved::User => "[user]".into(),
            Unresolved::Setup => "[setup]".into(),
            Unresolved::Decompressor => "[decompressor]".into(),
            Unresolved::NoKernelSymbol(a) => format!("[kernel {a:#x}]"),
            Unresolved::Unmapped(a) => format!("[unknown {a:#x}]"),
            Unresolved::UnnamedInline => "[inlined]".into(),
            Unresolved::TruncatedStack => TRUNCATED_ROOT.into(),
        }
    }
}

/// Label of [`Unresolved::TruncatedStack`].
pub const TRUNCATED_ROOT: &str = "[truncated stack]";

/// What a frame is called: a symbol, or why there is none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameName {
    /// A function name in [`Profile::strings`].
    Symbol(StrId),
    /// No name, and why.
    Unknown(Unresolved),
}

/// One frame: a function (or a typed unknown), where it is, and how it got there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Frame {
    /// The function.
    pub name: FrameName,
    /// Which code the address is in.
    pub kind: FrameKind,
    /// True for a function DWARF says was inlined into the next outer frame.
    pub inlined: bool,
    /// Source file (from DWARF).
    pub file: Option<StrId>,
    /// Source line (from DWARF).
    pub line: Option<u32>,
}

/// One sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// vCPU index.
    pub vcpu: u32,
    /// Nanoseconds since the run's start (host time).
    pub t_ns: u64,
    /// Host time this sample stands for, ns: see [`interval`] (the one definition).
    pub interval_ns: u64,
    /// Which code the sampled RIP was in.
    pub kind: FrameKind,
    /// The stack (leaf node of [`Profile::stacks`]); `None` for no frames.
    pub stack: Option<StackId>,
    /// The unwind stopped early (read failure, implausible frame, depth limit).
    pub truncated: bool,
    /// Host page faults (minor + major) of the vCPU thread since its previous sample.
    pub faults: u64,
    /// KVM exits of the vCPU since its previous sample (0 if not recorded).
    pub exits: u64,
    /// The sampler's own cost for this sample, ns (kick + capture + unwind + write).
    pub cost_ns: u64,
    /// The guest task running, an index into [`Run::tasks`]; `None`:
    /// unknown (no task awareness, not in the kernel proper, a failed read).
    pub task: Option<u32>,
}

#[cfg(test)]
impl Sample {
    /// For unit tests: a kernel sample with `stack` at `t_ns` standing for
    /// `interval_ns`, on vCPU 0, not truncated, no counters or cost, task
    /// unknown (struct-update what a test needs otherwise).
    pub(crate) fn kernel_at(stack: Option<StackId>, t_ns: u64, interval_ns: u64) -> Sample {
        Sample {
            vcpu: 0,
            t_ns,
            interval_ns,
            kind: FrameKind::Kernel,
            stack,
            truncated: false,
            faults: 0,
            exits: 0,
            cost_ns: 0,
            task: None,
        }
    }
}

/// A guest task samples ran in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct TaskInfo {
    /// `pid` (thread id; 0: the boot CPU's idle task).
    pub pid: u32,
    /// `tgid` (process id).
    pub tgid: u32,
    /// `comm` (the name; changes at exec).
    pub comm: String,
}

impl TaskInfo {
    /// The label flamegraphs use as a root frame: `[pid 1 init]`.
    pub fn label(&self) -> String {
        format!("[pid {} {}]", self.pid, self.comm)
    }
}

/// Leaf frame of a blocked stack whose task was sleeping (`__state` != 0).
pub const WAIT_FRAME: &str = "[wait]";
/// Leaf frame of a blocked stack whose task was runnable (preempted,
/// waiting for a CPU).
pub const RUNNABLE_FRAME: &str = "[runnable]";

/// Root-frame label of samples whose task is unknown.
pub const UNKNOWN_TASK: &str = "[unknown task]";

/// A VMM phase boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseMark {
    /// Which boundary (create_vm, memory, load_kernel, first_instruction, …).
    pub name: PhaseName,
    /// Nanoseconds since the run's start.
    pub t_ns: u64,
}

/// A line the guest printed on its serial console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleLine {
    /// Nanoseconds since the run's start.
    pub t_ns: u64,
    /// The line.
    pub line: String,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndMark {
    /// Nanoseconds since the run's start.
    pub t_ns: u64,
    /// Why (user, shutdown, timeout, …).
    pub reason: EndKind,
    /// Details (RIP, instruction bytes, symbol, …).
    pub detail: Option<String>,
}

/// An exact point of a run, taken at a hardware breakpoint (format 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundaryMark {
    /// vCPU that hit it.
    pub vcpu: u32,
    /// Nanoseconds since the run's start (host time).
    pub t_ns: u64,
    /// The guest's TSC, when read.
    pub tsc: Option<u64>,
    /// What it marks.
    pub kind: BoundaryKind,
    /// Runtime address of the function.
    pub addr: u64,
    /// The function's name (symbolized at its link-time address), when known.
    pub function: Option<String>,
    /// The return value (initcall end).
    pub ret: Option<i64>,
}

/// Run figures measured host-side by the VMM (format 3; `None` in older traces).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunFigures {
    /// Time the guest spent writing to the UART console, ns, and its port accesses.
    pub console: Option<(u64, u64)>,
    /// Breakpoint exits and the VMM's time handling them, ns.
    pub breakpoints: Option<(u64, u64)>,
    /// Boundaries the recorder dropped beyond its per-run cap.
    pub dropped_boundaries: u64,
}

/// The sampler's cost over one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CostTotals {
    /// Samples taken.
    pub samples: u64,
    /// Kick/exit time, ns.
    pub kick_ns: u64,
    /// Register capture, ns.
    pub capture_ns: u64,
    /// Unwinding, ns.
    pub unwind_ns: u64,
    /// Handing samples to the writer, ns.
    pub write_ns: u64,
}

impl CostTotals {
    /// All sampler time, ns.
    pub fn total_ns(&self) -> u64 {
        self.kick_ns
            .saturating_add(self.capture_ns)
            .saturating_add(self.unwind_ns)
            .saturating_add(self.write_ns)
    }
}

/// One recorded boot.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// Run index.
    pub run: u32,
    /// Time samples are measured from for reports, ns since the run's start:
    /// the first guest instruction, else the first sample, else 0.
    pub t0_ns: u64,
    /// Run-start time of the first guest instruction, ns.
    pub first_instruction_ns: Option<u64>,
    /// Boot time: first guest instruction (or 0) to the end (or the last
    /// sample), ns; `None` when the run has neither.
    pub boot_ns: Option<u64>,
    /// VMM phase boundaries in recording order.
    pub phases: Vec<PhaseMark>,
    /// Serial console lines.
    pub console: Vec<ConsoleLine>,
    /// The end of the run.
    pub end: Option<EndMark>,
    /// Samples in trace order.
    pub samples: Vec<Sample>,
    /// The boot task's blocked stacks (trace format 3), in time order:
    /// one per boot-vCPU sample at which the boot task (pid 0 until
    /// `rest_init`, then pid 1) was not running, with the interval of that
    /// sample; each stack ends in a [`WAIT_FRAME`] or [`RUNNABLE_FRAME`]
    /// leaf. Not in `samples`: no vCPU ran them.
    pub waits: Vec<Sample>,
    /// Guest tasks that `Sample::task` refers to (empty without task awareness).
    pub tasks: Vec<TaskInfo>,
    /// Sampler totals, when the trace has them.
    pub cost: Option<CostTotals>,
    /// Where the kernel and decompressor ran, as recorded (`None`: the
    /// trace has no layout record for this run).
    pub layout: Option<boottrace_symbols::layout::RunLayout>,
    /// What each virtio device did (trace format 3; empty before).
    pub devices: Vec<DeviceStats>,
    /// Exact boundaries in time order (empty in older traces).
    pub boundaries: Vec<BoundaryMark>,
    /// Console and breakpoint figures.
    pub figures: RunFigures,
}

impl Run {
    /// Time of a VMM phase boundary.
    pub fn phase(&self, name: &PhaseName) -> Option<u64> {
        self.phases.iter().find(|p| &p.name == name).map(|p| p.t_ns)
    }

    /// The task a sample ran in, if known.
    pub fn task(&self, s: &Sample) -> Option<&TaskInfo> {
        self.tasks.get(s.task? as usize)
    }

    /// A sample's time since [`Run::t0_ns`].
    pub fn rel_ns(&self, s: &Sample) -> u64 {
        s.t_ns.saturating_sub(self.t0_ns)
    }

    /// Sampler time: the totals record, else the sum of per-sample costs.
    pub fn sampler_ns(&self) -> u64 {
        match &self.cost {
            Some(c) => c.total_ns(),
            None => self
                .samples
                .iter()
                .map(|s| s.cost_ns)
                .fold(0, u64::saturating_add),
        }
    }
}

/// Where a profile's data came from (the JSON report's `input`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct InputInfo {
    /// The trace file read.
    pub path: String,
    /// Kernel image path as recorded.
    pub kernel_path: String,
    /// The kernel's `Linux version …` banner, when known.
    pub kernel_version: Option<String>,
    /// GNU build-id of the kernel, when known.
    pub build_id: Option<String>,
    /// Guest kernel command line.
    pub kernel_cmdline: String,
    /// Sampling frequency per vCPU, Hz (0: not sampled).
    pub sample_freq_hz: u32,
    /// Unwinder used while recording.
    pub unwinder: UnwinderKind,
    /// Symbol source used to name frames.
    pub symbol_source: String,
    /// Workarounds applied on a PVM host (timings are then emulated-KVM times).
    pub pvm_workarounds: Vec<String>,
    /// True when the trace file ended with its final record.
    pub complete: bool,
    /// Damage found while reading, and symbolization notes.
    pub warnings: Vec<String>,
}

/// Recorded boots, symbolized and interned once.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Where the data came from.
    pub info: InputInfo,
    /// Damage found while reading the trace (also in `info.warnings`).
    pub trace_warnings: Vec<String>,
    /// Symbolization notes (also in `info.warnings`).
    pub notes: Vec<String>,
    /// Which kernel symbol source was used.
    pub source: SourceKind,
    /// The file the kernel symbols came from, if any.
    pub source_file: Option<PathBuf>,
    /// Function names and source files.
    pub strings: StringTable,
    /// Frames.
    pub frames: FrameTable,
    /// Stacks as a prefix tree over frames.
    pub stacks: StackTable,
    /// Runs in trace order.
    pub runs: Vec<Run>,
}

impl Default for Profile {
    fn default() -> Profile {
        Profile {
            info: InputInfo::default(),
            trace_warnings: Vec::new(),
            notes: Vec::new(),
            source: SourceKind::None,
            source_file: None,
            strings: StringTable::default(),
            frames: FrameTable::default(),
            stacks: StackTable::default(),
            runs: Vec::new(),
        }
    }
}

impl Profile {
    /// The id of `frame`, adding it when new.
    pub fn intern_frame(&mut self, frame: Frame) -> FrameId {
        self.frames.intern(frame)
    }

    /// Interns a stack of kernel functions given by name, root first, none
    /// inlined: for hand-built profiles (tests, examples).
    pub fn stack_of(&mut self, root_first: &[&str]) -> Option<StackId> {
        let frames: Vec<(FrameName, bool)> = root_first
            .iter()
            .map(|n| (FrameName::Symbol(self.strings.intern(n)), false))
            .collect();
        self.stack_of_frames(FrameKind::Kernel, &frames)
    }

    /// Interns a stack of `(name, inlined)` frames of one kind, root first.
    pub fn stack_of_frames(
        &mut self,
        kind: FrameKind,
        root_first: &[(FrameName, bool)],
    ) -> Option<StackId> {
        let mut parent = None;
        for &(name, inlined) in root_first {
            let frame = self.intern_frame(Frame {
                name,
                kind,
                inlined,
                file: None,
                line: None,
            });
            parent = Some(self.stacks.intern(parent, frame));
        }
        parent
    }

    /// The frame with id `id`.
    pub fn frame(&self, id: FrameId) -> Option<&Frame> {
        self.frames.get(id)
    }

    /// Display text of a frame name (labels for unknowns).
    pub fn name_text(&self, name: FrameName) -> std::borrow::Cow<'_, str> {
        match name {
            FrameName::Symbol(s) => std::borrow::Cow::Borrowed(self.strings.get(s)),
            FrameName::Unknown(r) => std::borrow::Cow::Owned(r.label()),
        }
    }

    /// The frames of a stack, root first.
    pub fn stack_frames(&self, stack: Option<StackId>) -> Vec<&Frame> {
        let mut v: Vec<&Frame> = self
            .stacks
            .path(stack)
            .filter_map(|n| self.frame(n.frame))
            .collect();
        v.reverse();
        v
    }

    /// The display names of a stack's frames ([`Profile::name_text`]), root first.
    pub fn stack_names(&self, stack: Option<StackId>) -> Vec<String> {
        self.stack_frames(stack)
            .iter()
            .map(|f| self.name_text(f.name).into_owned())
            .collect()
    }

    /// The run with index `run`.
    pub fn run(&self, run: u32) -> Option<&Run> {
        self.runs.iter().find(|r| r.run == run)
    }

    /// Samples over all runs.
    pub fn sample_count(&self) -> usize {
        self.runs.iter().map(|r| r.samples.len()).sum()
    }

    /// Appends `other`'s runs (renumbered after this profile's), re-interning
    /// its strings, frames and stacks; for boots recorded to separate files.
    pub fn absorb(&mut self, other: Profile) {
        let mut frame_map: Vec<Option<FrameId>> = vec![None; other.frames.len()];
        let mut stack_map: Vec<Option<StackId>> = vec![None; other.stacks.len()];
        // Parents are interned before their children, so one pass in id order works.
        for (i, node) in other.stacks.nodes().iter().enumerate() {
            let fid = node.frame as usize;
            let f = match frame_map.get(fid).copied().flatten() {
                Some(f) => f,
                None => {
                    let Some(of) = other.frames.get(node.frame) else {
                        continue;
                    };
                    let mut nf = *of;
                    nf.name = match of.name {
                        FrameName::Symbol(s) => {
                            FrameName::Symbol(self.strings.intern(other.strings.get(s)))
                        }
                        u => u,
                    };
                    nf.file = of.file.map(|s| self.strings.intern(other.strings.get(s)));
                    let id = self.frames.intern(nf);
                    if let Some(slot) = frame_map.get_mut(fid) {
                        *slot = Some(id);
                    }
                    id
                }
            };
            let parent = node
                .parent
                .and_then(|p| stack_map.get(p as usize).copied().flatten());
            stack_map[i] = Some(self.stacks.intern(parent, f));
        }
        let first_run = self.runs.len() as u32;
        for (i, mut run) in other.runs.into_iter().enumerate() {
            for s in run.samples.iter_mut().chain(run.waits.iter_mut()) {
                s.stack = s
                    .stack
                    .and_then(|id| stack_map.get(id as usize).copied().flatten());
            }
            run.run = first_run + i as u32;
            self.runs.push(run);
        }
        self.info.warnings.extend(other.info.warnings);
        self.info.complete &= other.info.complete;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(stack: Option<StackId>) -> Sample {
        Sample::kernel_at(stack, 0, 1)
    }

    fn names(p: &Profile, s: &Sample) -> Vec<String> {
        p.stack_names(s.stack)
    }

    #[test]
    fn absorb_reinterns_and_renumbers() {
        let mut a = Profile::default();
        let sa = a.stack_of(&["x", "y"]);
        a.runs.push(Run {
            samples: vec![sample(sa)],
            ..Run::default()
        });
        let mut b = Profile::default();
        let _unused = b.stack_of(&["q"]);
        let sb = b.stack_of(&["x", "z"]);
        b.runs.push(Run {
            samples: vec![sample(sb), sample(None)],
            ..Run::default()
        });
        a.absorb(b);
        assert_eq!(a.runs.len(), 2);
        assert_eq!(a.runs[1].run, 1);
        assert_eq!(names(&a, &a.runs[1].samples[0]), ["x", "z"]);
        assert!(a.runs[1].samples[1].stack.is_none());
        // "x" is shared: one string, one frame, one root node.
        assert_eq!(a.strings.lookup("x"), Some(0));
        assert_eq!(
            a.stacks.path(a.runs[1].samples[0].stack).last(),
            a.stacks.get(0)
        );
    }

    #[test]
    fn unknowns_are_labelled_only_when_rendered() {
        assert_eq!(Unresolved::NoKernelSymbol(0x10).label(), "[kernel 0x10]");
        assert_eq!(Unresolved::Unmapped(0xdead).label(), "[unknown 0xdead]");
        assert_eq!(Unresolved::TruncatedStack.label(), TRUNCATED_ROOT);
        let mut p = Profile::default();
        let s = p.stack_of_frames(
            FrameKind::User,
            &[(FrameName::Unknown(Unresolved::User), false)],
        );
        assert_eq!(p.strings.len(), 0, "no label is stored as a string");
        assert_eq!(names(&p, &sample(s)), ["[user]"]);
    }
}
