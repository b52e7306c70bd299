//! The records of a trace file and their body encoding.
//!
//! Every body is a serde struct encoded with `postcard` (varints, no field
//! names), behind a one-byte type tag (see [`RecordType`]). postcard is not
//! self-describing: changing a struct's fields needs a new major format
//! version; adding a new record type only a new minor version (older readers
//! skip unknown types with a warning).

use boottrace_symbols::identity::KernelIdentity;
use serde::{Deserialize, Serialize};

use super::layout::TraceLayout;
use super::names::{BoundaryKind, EndKind, PhaseName, UnwinderKind};
use super::options::RecordOptions;

/// What the trace says about the kernel that was booted.
///
/// Kept as the trace format's own struct (rather than the symbols crate's
/// identity type) so the on-disk encoding cannot change under the format.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelInfo {
    /// Path of the kernel image as given to `record`.
    pub path: String,
    /// Image size in bytes.
    pub size: u64,
    /// sha256 of the image, lowercase hex.
    pub sha256: String,
    /// GNU build-id (hex) of the kernel proper, when found.
    pub build_id: Option<String>,
    /// The `Linux version …` banner, when found.
    pub version: Option<String>,
}

impl From<&KernelIdentity> for KernelInfo {
    fn from(id: &KernelIdentity) -> Self {
        KernelInfo {
            path: id.path.clone().unwrap_or_default(),
            size: id.size,
            sha256: id.sha256.clone(),
            build_id: id.build_id.clone(),
            version: id.version.clone(),
        }
    }
}

impl KernelInfo {
    /// As the symbols crate's identity, for `KernelIdentity::check_matches`.
    pub fn to_identity(&self) -> KernelIdentity {
        KernelIdentity {
            path: (!self.path.is_empty()).then(|| self.path.clone()),
            size: self.size,
            sha256: self.sha256.clone(),
            build_id: self.build_id.clone(),
            version: self.version.clone(),
        }
    }
}

/// Facts about the host the trace was recorded on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    /// Host kernel release (`uname -r`).
    pub kernel_version: String,
    /// Host name.
    pub hostname: String,
    /// Workarounds applied because the host's KVM is the PVM kind (empty elsewhere).
    pub pvm_workarounds: Vec<String>,
}

/// The trace's first record: how, where and on what it was recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceMeta {
    /// Version of the boottrace that wrote the file.
    pub boottrace_version: String,
    /// The `record` command line.
    pub argv: Vec<String>,
    /// The kernel image booted.
    pub kernel: KernelInfo,
    /// The guest kernel command line passed.
    pub kernel_cmdline: String,
    /// Recording options.
    pub options: RecordOptions,
    /// Host facts.
    pub host: HostFacts,
    /// Unwinder used at sample time.
    pub unwinder: UnwinderKind,
    /// vmlinux given to `record`, if any.
    pub vmlinux: Option<String>,
    /// Sampling frequency per vCPU in Hz (0: no sampling).
    pub sample_freq_hz: u32,
    /// Wall-clock start of the recording, nanoseconds since the Unix epoch.
    pub wall_start_unix_ns: u64,
}

/// A run (one boot) begins.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStart {
    /// Run index, from 0.
    pub run: u32,
    /// Wall-clock time at the run's start, nanoseconds since the Unix epoch.
    pub wall_time_unix_ns: u64,
}

/// A VMM phase boundary (create_vm, memory, load_kernel, first_instruction, end, …).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phase {
    /// Run index.
    pub run: u32,
    /// Which phase.
    pub name: PhaseName,
    /// Nanoseconds since the run's start.
    pub t_ns: u64,
}

/// One line the guest wrote to its serial console.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Serial {
    /// Run index.
    pub run: u32,
    /// Nanoseconds since the run's start, when the line was complete.
    pub t_ns: u64,
    /// The line, without its line terminator.
    pub line: String,
}

/// Where the kernel and decompressor ran in one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Run index.
    pub run: u32,
    /// The layout found from guest state (the trace's own struct).
    pub layout: TraceLayout,
}

/// Names of KVM's binary statistics; samples refer to them by index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatNames {
    /// Stat names, indexed by `Sample::kvm`'s first element.
    pub names: Vec<String>,
}

/// How the unwind of a sample's stack ended (`Sample::stack_end`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum StackEnd {
    /// Not recorded.
    Unknown = 0,
    /// Reached a known end of stack (end-of-stack marker, user-mode pt_regs, top of a task stack).
    Root = 1,
    /// A guest read failed or a frame was implausible: the stack is cut short.
    Truncated = 2,
    /// The depth limit was reached.
    DepthLimit = 3,
    /// No unwind was attempted (user mode, no unwinder, early boot without a stack).
    NotUnwound = 4,
}

impl StackEnd {
    /// The stored byte.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Decodes a stored byte; unknown values map to [`StackEnd::Unknown`].
    pub fn from_u8(v: u8) -> StackEnd {
        match v {
            1 => StackEnd::Root,
            2 => StackEnd::Truncated,
            3 => StackEnd::DepthLimit,
            4 => StackEnd::NotUnwound,
            _ => StackEnd::Unknown,
        }
    }
}

/// The sampler's own cost for one sample, in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleCost {
    /// From the timer signal to the vCPU thread being out of KVM_RUN.
    pub kick_ns: u32,
    /// Register capture.
    pub capture_ns: u32,
    /// Stack unwinding.
    pub unwind_ns: u32,
    /// Handing the sample to the trace writer.
    pub write_ns: u32,
}

/// One sample of one vCPU.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Run index.
    pub run: u32,
    /// vCPU index.
    pub vcpu: u32,
    /// Nanoseconds since the run's start.
    pub t_ns: u64,
    /// Guest RIP.
    pub rip: u64,
    /// Guest RSP.
    pub rsp: u64,
    /// Guest RBP.
    pub rbp: u64,
    /// Guest CR0.
    pub cr0: u64,
    /// Guest CR3.
    pub cr3: u64,
    /// Guest CR4.
    pub cr4: u64,
    /// Guest EFER.
    pub efer: u64,
    /// Code segment selector.
    pub cs: u16,
    /// Current privilege level.
    pub cpl: u8,
    /// `[0]` = RIP, then return addresses, innermost first (raw guest addresses).
    #[serde(with = "delta_seq")]
    pub stack: Vec<u64>,
    /// How the unwind ended: a [`StackEnd`] as a byte.
    pub stack_end: u8,
    /// Minor page faults of the vCPU thread since its previous sample (rusage; sees KVM's faults).
    pub minflt: u64,
    /// Major page faults of the vCPU thread since its previous sample (rusage).
    pub majflt: u64,
    /// Perf software page-fault events since the previous sample (VMM's own faults only).
    pub perf_faults: u64,
    /// (stat index, delta) of KVM binary stats that changed since the previous sample.
    pub kvm: Vec<(u16, u64)>,
    /// The sampler's cost for this sample.
    pub cost: SampleCost,
    /// The run's task id ([`Task::id`]) this sample ran, from the vCPU's
    /// latest [`TaskSwitch`] before it; `None`: unknown. Not stored in the
    /// `Sample` body (that would be a major format change): the reader fills
    /// it in.
    #[serde(skip)]
    pub task: Option<u32>,
}

impl Sample {
    /// Delta of the KVM stat at `index`, 0 when absent.
    pub fn kvm_stat(&self, index: u16) -> u64 {
        self.kvm
            .iter()
            .find(|(i, _)| *i == index)
            .map_or(0, |(_, v)| *v)
    }
}

/// A guest task, written once per run when a sample first meets it
/// (format 2.1). A task whose `comm` changes (exec) gets a new id.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Run index.
    pub run: u32,
    /// Id within the run, referred to by [`TaskSwitch::task`].
    pub id: u32,
    /// `pid` (thread id; 0 for the idle/boot task).
    pub pid: u32,
    /// `tgid` (process id).
    pub tgid: u32,
    /// `comm`.
    pub comm: String,
    /// Guest virtual address of the `task_struct`.
    pub addr: u64,
}

/// From the next sample of `vcpu` on, that vCPU runs this task (format 2.1).
/// Written into the vCPU's own record stream just before the first sample
/// of a different task, so file order within one vCPU gives the attribution.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSwitch {
    /// Run index.
    pub run: u32,
    /// vCPU index.
    pub vcpu: u32,
    /// The task ([`Task::id`]); `None`: unknown (not in the kernel proper,
    /// or `current` could not be read).
    pub task: Option<u32>,
}

/// An exact point of a run, taken at a hardware breakpoint (initcall
/// start and end, `start_kernel`, …), or a run figure written at its end
/// (console cost, breakpoint cost, dropped boundaries): format 3.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Boundary {
    /// Run index.
    pub run: u32,
    /// vCPU that hit it.
    pub vcpu: u32,
    /// Host time, ns since the run's start.
    pub t_ns: u64,
    /// The guest's TSC at the hit (IA32_TSC), when it could be read.
    pub tsc: Option<u64>,
    /// What it marks.
    pub kind: BoundaryKind,
    /// Runtime (guest-virtual) address of the function, 0 when none.
    pub addr: u64,
    /// Link-time address of the function, when the KASLR slide was known.
    pub link: Option<u64>,
    /// The function's return value (`initcall_end`: the initcall's `int`).
    pub ret: Option<i64>,
    /// A run figure's value (see [`BoundaryKind`]).
    pub value: Option<u64>,
    /// A run figure's count (see [`BoundaryKind`]).
    pub count: Option<u64>,
}

/// The boot's critical-path task (the boot CPU's task, then pid 1) was not
/// running at a sample of the boot vCPU: its saved kernel stack (format
/// 2.2). One per boot-vCPU sample at most, so each stands for that
/// sample's interval of wall-clock time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitStack {
    /// Run index.
    pub run: u32,
    /// The vCPU whose sample carried it (its interval is this record's).
    pub vcpu: u32,
    /// Nanoseconds since the run's start (the sample's time).
    pub t_ns: u64,
    /// The blocked task ([`Task::id`]); `None`: its identity was unreadable.
    pub task: Option<u32>,
    /// The task's `__state` (0: runnable, waiting for a CPU; else sleeping).
    pub state: u32,
    /// `[0]` = the return address into `__schedule`, then callers,
    /// innermost first (raw guest addresses); empty: the saved stack was
    /// unreadable.
    #[serde(with = "delta_seq")]
    pub stack: Vec<u64>,
    /// How the unwind ended: a [`StackEnd`] as a byte.
    pub stack_end: u8,
}

/// A run ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunEnd {
    /// Run index.
    pub run: u32,
    /// Nanoseconds since the run's start.
    pub t_ns: u64,
    /// Why it ended.
    pub reason: EndKind,
    /// Details (RIP, instruction bytes, symbol, …).
    pub detail: Option<String>,
}

/// The sampler's total cost over one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplerCost {
    /// Run index.
    pub run: u32,
    /// Samples taken.
    pub samples: u64,
    /// Sum of kick/exit time, ns.
    pub total_kick_ns: u64,
    /// Sum of register capture time, ns.
    pub total_capture_ns: u64,
    /// Sum of unwind time, ns.
    pub total_unwind_ns: u64,
    /// Sum of write time, ns.
    pub total_write_ns: u64,
}

/// What one virtio device did over one run (format 3), written after the
/// run's end. Counters are named so a new counter needs no format change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceStats {
    /// Run index.
    pub run: u32,
    /// Device name (`vda`, `net0`).
    pub name: String,
    /// Device kind (`virtio-blk`, `virtio-net`).
    pub kind: String,
    /// Backend in a word or two (`ro`, `rw`, `no backend`, `tap NAME`).
    pub backend: String,
    /// How queue notifications arrived (`ioeventfd`, `mmio exit`).
    pub notify: String,
    /// (counter name, value): `reads`, `read_bytes`, … for a disk,
    /// `tx_frames`, `rx_dropped`, … for a network device.
    pub counters: Vec<(String, u64)>,
    /// Why the device stopped working (a malformed queue), if it did.
    pub broken: Option<String>,
}

impl DeviceStats {
    /// The value of counter `name`, if recorded.
    pub fn counter(&self, name: &str) -> Option<u64> {
        self.counters
            .iter()
            .find(|(n, _)| n == name)
            .map(|&(_, v)| v)
    }
}

/// A stack of callers, defined once per file (format 3).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StackDef {
    /// Id: the number of definitions before this one in the file.
    pub id: u32,
    /// Return addresses, innermost first (the leaf is in the sample).
    #[serde(with = "delta_seq")]
    pub frames: Vec<u64>,
}

/// Control registers and CS, stored only when they change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SysRegs {
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
    /// CS selector.
    pub cs: u16,
}

/// Host fault counters of one sample, stored only when one is not zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Faults {
    /// [`Sample::minflt`].
    pub minflt: u64,
    /// [`Sample::majflt`].
    pub majflt: u64,
    /// [`Sample::perf_faults`].
    pub perf_faults: u64,
}

/// One sample in a block: deltas against the previous sample of the block
/// (the first against zero and the block's `t_ns`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactSample {
    /// Time since the previous sample, ns.
    pub dt_ns: i64,
    /// RIP delta.
    pub drip: i64,
    /// RSP delta.
    pub drsp: i64,
    /// RBP delta.
    pub drbp: i64,
    /// [`Sample::cpl`].
    pub cpl: u8,
    /// [`Sample::stack_end`].
    pub stack_end: u8,
    /// 0: the sample has no stack; k: stack definition k − 1.
    pub stack: u32,
    /// The stack is RIP followed by the definition's frames (else the
    /// definition alone).
    pub leaf_is_rip: bool,
    /// The control registers, when they differ from the previous sample's
    /// (always present in a block's first sample).
    pub sys: Option<SysRegs>,
    /// Fault counters, when not all zero.
    pub faults: Option<Faults>,
    /// [`Sample::kvm`].
    pub kvm: Vec<(u16, u64)>,
    /// [`Sample::cost`].
    pub cost: SampleCost,
}

/// Consecutive samples of one vCPU of one run (format 3).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleBlock {
    /// Run index.
    pub run: u32,
    /// vCPU index.
    pub vcpu: u32,
    /// Base time the first sample's `dt_ns` is added to.
    pub t_ns: u64,
    /// The samples, in the vCPU's order (at most
    /// `compact::MAX_BLOCK_SAMPLES`: longer lists are refused while decoding).
    #[serde(deserialize_with = "capped_seq::deserialize")]
    pub samples: Vec<CompactSample>,
}

/// One wait stack in a [`WaitBlock`]: its time as a delta against the
/// previous wait of the block (the first against the block's `t_ns`), its
/// stack as a reference to a [`StackDef`] (the one table samples use).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactWait {
    /// Time since the previous wait of the block, ns.
    pub dt_ns: i64,
    /// [`WaitStack::task`].
    pub task: Option<u32>,
    /// [`WaitStack::state`].
    pub state: u32,
    /// 0: the wait has no stack; k: stack definition k − 1 (the whole
    /// stack: a wait has no leaf register to split off).
    pub stack: u32,
    /// [`WaitStack::stack_end`].
    pub stack_end: u8,
}

/// Consecutive wait stacks of one vCPU of one run (format 3.1): what
/// [`WaitStack`] records cost ~136 bytes each, in ~10.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitBlock {
    /// Run index.
    pub run: u32,
    /// vCPU index.
    pub vcpu: u32,
    /// Base time the first wait's `dt_ns` is added to.
    pub t_ns: u64,
    /// The waits, in the vCPU's order (at most `compact::MAX_BLOCK_SAMPLES`:
    /// longer lists are refused while decoding).
    #[serde(deserialize_with = "capped_seq::deserialize")]
    pub waits: Vec<CompactWait>,
}

/// The final record written by `finish`: its presence marks a complete file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finish {
    /// Number of records before this one (the header excluded).
    pub records: u64,
}

/// Any record of a trace file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// Trace metadata (first record; boxed: it is large and comes once).
    Meta(Box<TraceMeta>),
    /// Run start.
    RunStart(RunStart),
    /// VMM phase.
    Phase(Phase),
    /// Serial console line.
    Serial(Serial),
    /// Per-run layout.
    Layout(Layout),
    /// KVM stat names.
    StatNames(StatNames),
    /// A sample.
    Sample(Sample),
    /// Run end.
    RunEnd(RunEnd),
    /// Sampler totals for a run.
    SamplerCost(SamplerCost),
    /// End of the file.
    Finish(Finish),
    /// A guest task (format 2.1).
    Task(Task),
    /// The task a vCPU runs from its next sample on (format 2.1).
    TaskSwitch(TaskSwitch),
    /// A virtio device's counters over one run (format 3).
    DeviceStats(DeviceStats),
    /// An interned stack (format 3).
    StackDef(StackDef),
    /// Compact samples of one vCPU (format 3).
    SampleBlock(SampleBlock),
    /// Compact wait stacks of one vCPU (format 3.1).
    WaitBlock(WaitBlock),
    /// An exact boundary or a run figure (format 3).
    Boundary(Boundary),
    /// The boot task's blocked stack at a sample (format 3).
    WaitStack(WaitStack),
}

/// The type byte of each record in the file. Values are part of the format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordType {
    /// [`Record::Meta`].
    Meta = 1,
    /// [`Record::RunStart`].
    RunStart = 2,
    /// [`Record::Phase`].
    Phase = 3,
    /// [`Record::Serial`].
    Serial = 4,
    /// [`Record::Layout`].
    Layout = 5,
    /// [`Record::StatNames`].
    StatNames = 6,
    /// [`Record::Sample`].
    Sample = 7,
    /// [`Record::RunEnd`].
    RunEnd = 8,
    /// [`Record::SamplerCost`].
    SamplerCost = 9,
    /// [`Record::Finish`].
    Finish = 10,
    /// [`Record::Task`] (format 2.1).
    Task = 11,
    /// [`Record::TaskSwitch`] (format 2.1).
    TaskSwitch = 12,
    /// [`Record::DeviceStats`] (format 3).
    DeviceStats = 15,
    /// [`Record::StackDef`] (format 3).
    StackDef = 16,
    /// [`Record::SampleBlock`] (format 3).
    SampleBlock = 17,
    /// [`Record::Boundary`] (format 3).
    Boundary = 14,
    /// [`Record::WaitStack`] (format 3).
    WaitStack = 13,
    /// [`Record::WaitBlock`] (format 3.1).
    WaitBlock = 18,
}

impl RecordType {
    /// The type for a stored byte, `None` for types this build does not know.
    pub fn from_u8(v: u8) -> Option<RecordType> {
        Some(match v {
            1 => RecordType::Meta,
            2 => RecordType::RunStart,
            3 => RecordType::Phase,
            4 => RecordType::Serial,
            5 => RecordType::Layout,
            6 => RecordType::StatNames,
            7 => RecordType::Sample,
            8 => RecordType::RunEnd,
            9 => RecordType::SamplerCost,
            10 => RecordType::Finish,
            11 => RecordType::Task,
            12 => RecordType::TaskSwitch,
            15 => RecordType::DeviceStats,
            16 => RecordType::StackDef,
            17 => RecordType::SampleBlock,
            14 => RecordType::Boundary,
            13 => RecordType::WaitStack,
            18 => RecordType::WaitBlock,
            _ => return None,
        })
    }
}

impl Record {
    /// This record's type.
    pub fn record_type(&self) -> RecordType {
        match self {
            Record::Meta(_) => RecordType::Meta,
            Record::RunStart(_) => RecordType::RunStart,
            Record::Phase(_) => RecordType::Phase,
            Record::Serial(_) => RecordType::Serial,
            Record::Layout(_) => RecordType::Layout,
            Record::StatNames(_) => RecordType::StatNames,
            Record::Sample(_) => RecordType::Sample,
            Record::RunEnd(_) => RecordType::RunEnd,
            Record::SamplerCost(_) => RecordType::SamplerCost,
            Record::Finish(_) => RecordType::Finish,
            Record::Task(_) => RecordType::Task,
            Record::TaskSwitch(_) => RecordType::TaskSwitch,
            Record::DeviceStats(_) => RecordType::DeviceStats,
            Record::StackDef(_) => RecordType::StackDef,
            Record::SampleBlock(_) => RecordType::SampleBlock,
            Record::Boundary(_) => RecordType::Boundary,
            Record::WaitStack(_) => RecordType::WaitStack,
            Record::WaitBlock(_) => RecordType::WaitBlock,
        }
    }

    /// Appends the type byte and the encoded body to `out`.
    pub fn encode_into(&self, out: Vec<u8>) -> Result<Vec<u8>, postcard::Error> {
        let mut out = out;
        out.push(self.record_type() as u8);
        match self {
            Record::Meta(r) => postcard::to_extend(r, out),
            Record::RunStart(r) => postcard::to_extend(r, out),
            Record::Phase(r) => postcard::to_extend(r, out),
            Record::Serial(r) => postcard::to_extend(r, out),
            Record::Layout(r) => postcard::to_extend(r, out),
            Record::StatNames(r) => postcard::to_extend(r, out),
            Record::Sample(r) => postcard::to_extend(r, out),
            Record::RunEnd(r) => postcard::to_extend(r, out),
            Record::SamplerCost(r) => postcard::to_extend(r, out),
            Record::Finish(r) => postcard::to_extend(r, out),
            Record::Task(r) => postcard::to_extend(r, out),
            Record::TaskSwitch(r) => postcard::to_extend(r, out),
            Record::DeviceStats(r) => postcard::to_extend(r, out),
            Record::StackDef(r) => postcard::to_extend(r, out),
            Record::SampleBlock(r) => postcard::to_extend(r, out),
            Record::Boundary(r) => postcard::to_extend(r, out),
            Record::WaitStack(r) => postcard::to_extend(r, out),
            Record::WaitBlock(r) => postcard::to_extend(r, out),
        }
    }
}

/// Stores a `Vec<u64>` of nearby addresses as zigzag-varint deltas: kernel
/// return addresses lie within megabytes of each other, so a 10-byte varint
/// per address shrinks to about 3.
pub(super) mod delta_seq {
    use serde::de::{SeqAccess, Visitor};
    use serde::ser::SerializeSeq;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u64], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        let mut prev = 0u64;
        for &x in v {
            seq.serialize_element(&(x.wrapping_sub(prev) as i64))?;
            prev = x;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u64>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<u64>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a sequence of address deltas")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u64>, A::Error> {
                // The length hint comes from the file: cap the preallocation.
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(256));
                let mut prev = 0u64;
                while let Some(d) = seq.next_element::<i64>()? {
                    prev = prev.wrapping_add(d as u64);
                    out.push(prev);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V)
    }
}

/// Decodes the list of a block, refusing it once it holds more than
/// `compact::MAX_BLOCK_SAMPLES` entries: the length comes from the file, and a
/// 16 MiB record of small entries would otherwise expand to about ten
/// times that in memory before the block's own check could refuse it. The
/// encoding is postcard's plain sequence, unchanged.
mod capped_seq {
    use std::marker::PhantomData;

    use serde::de::{Deserialize, Error, SeqAccess, Visitor};
    use serde::Deserializer;

    use super::super::compact::MAX_BLOCK_SAMPLES;

    pub fn deserialize<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de>,
    {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                write!(f, "a block of at most {MAX_BLOCK_SAMPLES} entries")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
                let hint = seq.size_hint().unwrap_or(0);
                if hint > MAX_BLOCK_SAMPLES {
                    return Err(A::Error::invalid_length(hint, &self));
                }
                let mut out = Vec::with_capacity(hint);
                while let Some(x) = seq.next_element()? {
                    if out.len() >= MAX_BLOCK_SAMPLES {
                        return Err(A::Error::invalid_length(out.len() + 1, &self));
                    }
                    out.push(x);
                }
                Ok(out)
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_stack_round_trips_and_is_compact() {
        let s = Sample {
            stack: vec![
                0xffff_ffff_8100_1234,
                0xffff_ffff_8120_0000,
                0x1000,
                u64::MAX,
                0,
            ],
            ..Sample::default()
        };
        let rec = Record::Sample(s.clone());
        let bytes = rec.encode_into(Vec::new()).expect("encode");
        assert_eq!(bytes[0], RecordType::Sample as u8);
        let back = Record::decode(RecordType::Sample, &bytes[1..]).expect("decode");
        assert_eq!(back, rec);

        let near = Sample {
            stack: (0..20)
                .map(|i| 0xffff_ffff_8100_0000 + i * 0x1_0000)
                .collect(),
            ..Sample::default()
        };
        let n = Record::Sample(near)
            .encode_into(Vec::new())
            .expect("encode");
        // 20 plain varints of kernel addresses would take 200 bytes alone.
        assert!(n.len() < 100, "encoded sample is {} bytes", n.len());
    }

    #[test]
    fn device_stats_round_trip() {
        let d = DeviceStats {
            run: 3,
            name: "vda".into(),
            kind: "virtio-blk".into(),
            backend: "ro".into(),
            notify: "ioeventfd".into(),
            counters: vec![("reads".into(), 12), ("read_bytes".into(), 49_152)],
            broken: None,
        };
        let rec = Record::DeviceStats(d.clone());
        let bytes = rec.encode_into(Vec::new()).expect("encode");
        assert_eq!(bytes[0], 15);
        let back = Record::decode(RecordType::DeviceStats, &bytes[1..]).expect("decode");
        assert_eq!(back, rec);
        assert_eq!(d.counter("read_bytes"), Some(49_152));
        assert_eq!(d.counter("writes"), None);
    }

    #[test]
    fn wait_stack_round_trips() {
        let rec = Record::WaitStack(WaitStack {
            run: 2,
            vcpu: 0,
            t_ns: 12_345,
            task: Some(7),
            state: 2,
            stack: vec![0xffff_ffff_8100_1234, 0xffff_ffff_8120_0000],
            stack_end: StackEnd::Root.as_u8(),
        });
        let bytes = rec.encode_into(Vec::new()).expect("encode");
        assert_eq!(bytes[0], 13);
        let ty = RecordType::from_u8(bytes[0]).expect("known type");
        assert_eq!(Record::decode(ty, &bytes[1..]).expect("decode"), rec);
    }

    #[test]
    fn blocks_longer_than_the_cap_are_refused_while_decoding() {
        use super::super::compact::MAX_BLOCK_SAMPLES;
        let decode = |rec: &Record| {
            let bytes = rec.encode_into(Vec::new()).expect("encode");
            let ty = RecordType::from_u8(bytes[0]).expect("known type");
            Record::decode(ty, &bytes[1..])
        };
        for n in [MAX_BLOCK_SAMPLES, MAX_BLOCK_SAMPLES + 1] {
            let samples = Record::SampleBlock(SampleBlock {
                samples: vec![CompactSample::default(); n],
                ..SampleBlock::default()
            });
            let waits = Record::WaitBlock(WaitBlock {
                waits: vec![CompactWait::default(); n],
                ..WaitBlock::default()
            });
            for rec in [samples, waits] {
                let got = decode(&rec);
                if n <= MAX_BLOCK_SAMPLES {
                    assert_eq!(got.expect("decode"), rec);
                } else {
                    assert!(got.is_err(), "{n} entries decoded");
                }
            }
        }
        // A length prefix of 2^32 - 1 entries over three bytes of body: an
        // error, not an allocation.
        let mut body = vec![0, 0, 0];
        body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f, 1, 2, 3]);
        assert!(Record::decode(RecordType::WaitBlock, &body).is_err());
        assert!(Record::decode(RecordType::SampleBlock, &body).is_err());
    }

    #[test]
    fn record_type_bytes_round_trip() {
        for b in 0..=255u8 {
            if let Some(t) = RecordType::from_u8(b) {
                assert_eq!(t as u8, b);
            }
        }
        assert_eq!(RecordType::from_u8(0), None);
        assert_eq!(
            StackEnd::from_u8(StackEnd::DepthLimit.as_u8()),
            StackEnd::DepthLimit
        );
        assert_eq!(StackEnd::from_u8(200), StackEnd::Unknown);
    }
}
