//! Reading a whole trace file into memory, grouped by run.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use boottrace_symbols::layout::RunLayout;

use super::compact::{
    check_block, expand_wait_block, ExpandCounts, ExpandError, Expander, SampleBlock, StackDef,
};
use super::frame::{read_header, FrameReader, HeaderProblem, Next, VERSION_MAJOR, VERSION_MINOR};
use super::names::PhaseName;
use super::record::{
    Boundary, DeviceStats, Phase, Record, RecordType, RunEnd, Sample, SamplerCost, Serial, Task,
    TraceMeta, WaitBlock, WaitStack,
};
use super::samples::{Parsed, SampleTable};
use super::TraceError;

/// Everything recorded about one run (one boot).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunData {
    /// Run index.
    pub run: u32,
    /// Wall-clock start, ns since the Unix epoch (0 when the `RunStart` record is missing).
    pub wall_time_unix_ns: u64,
    /// VMM phases in file order.
    pub phases: Vec<Phase>,
    /// Serial lines in file order.
    pub serial: Vec<Serial>,
    /// Kernel/decompressor layout, if recorded (the last one wins).
    pub layout: Option<RunLayout>,
    /// Samples, sorted by (time, vCPU).
    pub samples: Vec<Sample>,
    /// How the run ended, if it did.
    pub end: Option<RunEnd>,
    /// The sampler's total cost, if recorded.
    pub cost: Option<SamplerCost>,
    /// Guest tasks by id (format 2.1; empty without task awareness);
    /// `Sample::task` refers to them.
    pub tasks: BTreeMap<u32, Task>,
    /// What each virtio device did (format 3; empty for older traces or
    /// a boot without devices), in file order, one per device name.
    pub devices: Vec<DeviceStats>,
    /// Exact boundaries and run figures in file order (format 3; at most
    /// [`MAX_BOUNDARIES_PER_RUN`]).
    pub boundaries: Vec<Boundary>,
    /// The boot task's blocked stacks (format 3), sorted by time.
    pub waits: Vec<WaitStack>,
}

/// Most wait stacks kept per run (one per boot-vCPU sample: an hour at
/// 10 kHz); the rest are counted in a warning.
pub const MAX_WAITS_PER_RUN: usize = 36_000_000;

/// Most tasks kept per run (the recorder writes at most as many).
pub const MAX_TASKS_PER_RUN: usize = 65_536;

impl RunData {
    fn new(run: u32) -> RunData {
        RunData {
            run,
            ..RunData::default()
        }
    }

    /// Time of a phase, if recorded: `run.phase(PhaseName::FirstInstruction)`
    /// (a name string converts too).
    pub fn phase(&self, name: impl Into<PhaseName>) -> Option<u64> {
        let name = name.into();
        self.phases.iter().find(|p| p.name == name).map(|p| p.t_ns)
    }

    /// Boot duration: end time (or, without one, the last sample) minus the
    /// first guest instruction (or 0 without one).
    pub fn boot_ns(&self) -> u64 {
        self.boot_ns_with(self.samples.last().map(|s| s.t_ns))
    }

    /// [`RunData::boot_ns`] for a run whose samples are held elsewhere (a
    /// [`SampleTable`]): `last_sample_ns` is the time of its last sample.
    pub fn boot_ns_with(&self, last_sample_ns: Option<u64>) -> u64 {
        let start = self.phase(PhaseName::FirstInstruction).unwrap_or(0);
        let end = self
            .end
            .as_ref()
            .map(|e| e.t_ns)
            .or(last_sample_ns)
            .unwrap_or(start);
        end.saturating_sub(start)
    }
}

/// A trace file read back.
#[derive(Debug, Clone, PartialEq)]
pub struct Trace {
    /// Metadata.
    pub meta: TraceMeta,
    /// Major format version of the file (older majors are converted on reading).
    pub format_major: u16,
    /// Minor format version of the file.
    pub format_minor: u16,
    /// KVM stat names that `Sample::kvm` indices refer to (empty if none recorded).
    pub stat_names: Vec<String>,
    /// Runs, by run index.
    pub runs: Vec<RunData>,
    /// True when the file ends with its final record (the recording finished).
    pub complete: bool,
    /// What was damaged, skipped or missing; empty for a clean file.
    pub warnings: Vec<String>,
}

impl Trace {
    /// Reads a trace file. Damage after the metadata gives a partial trace
    /// plus warnings; a wrong magic, version or missing metadata is an error.
    pub fn open(path: impl AsRef<Path>) -> Result<Trace, TraceError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| TraceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Trace::read_from(BufReader::with_capacity(256 << 10, file), path)
    }

    /// Reads a trace file as [`Trace::open`] does, except that the samples
    /// go into a [`SampleTable`] (index `i` of the table is `runs[i]`) and
    /// every `RunData::samples` stays empty: what profiling needs, at a
    /// fraction of the time and memory.
    pub fn open_table(path: impl AsRef<Path>) -> Result<(Trace, SampleTable), TraceError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|source| TraceError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let (trace, table) =
            read_with::<TableSink>(BufReader::with_capacity(256 << 10, file), path)?;
        if !table.is_stale() {
            return Ok((trace, table));
        }
        // Stat names that move `exits` after samples (no recorder writes
        // that): read again whole and take `exits` by the final names.
        let mut trace = Trace::open(path)?;
        let table =
            SampleTable::from_runs(trace.runs.iter().map(|r| &r.samples[..]), &trace.stat_names);
        for r in &mut trace.runs {
            r.samples = Vec::new();
        }
        Ok((trace, table))
    }

    /// Reads a trace from any reader; `path` is used in messages only.
    pub fn read_from(r: impl Read, path: &Path) -> Result<Trace, TraceError> {
        read_with::<PlainSink>(r, path).map(|(t, ())| t)
    }

    /// Total samples over all runs.
    pub fn sample_count(&self) -> usize {
        self.runs.iter().map(|r| r.samples.len()).sum()
    }

    /// The run with index `run`.
    pub fn run(&self, run: u32) -> Option<&RunData> {
        self.runs.iter().find(|r| r.run == run)
    }

    /// Index of a KVM stat by name (e.g. "exits").
    pub fn stat_index(&self, name: &str) -> Option<u16> {
        let i = self.stat_names.iter().position(|n| n == name)?;
        u16::try_from(i).ok()
    }
}

/// Reads a trace, its samples going to an `S`.
fn read_with<S: SampleSink>(mut r: impl Read, path: &Path) -> Result<(Trace, S::Out), TraceError> {
    let (format_major, format_minor) = read_header(&mut r).map_err(|p| match p {
        HeaderProblem::Io(source) => TraceError::Io {
            path: path.to_path_buf(),
            source,
        },
        HeaderProblem::BadMagic => TraceError::BadMagic {
            path: path.to_path_buf(),
        },
        HeaderProblem::Version(major, minor) => TraceError::UnsupportedVersion {
            path: path.to_path_buf(),
            major,
            minor,
            supported: VERSION_MAJOR,
        },
        HeaderProblem::Flags(flags) => TraceError::UnsupportedFlags {
            path: path.to_path_buf(),
            flags,
        },
    })?;
    let mut frames = FrameReader::with_major(r, format_major);
    let missing = |detail: String| TraceError::MissingMeta {
        path: path.to_path_buf(),
        detail,
    };
    let meta = match frames.next_record() {
        Next::Record(Record::Meta(m)) => *m,
        Next::Record(other) => {
            return Err(missing(format!(
                "first record is {:?}, not Meta",
                other.record_type()
            )))
        }
        Next::Skipped(m) | Next::Damaged(m) => return Err(missing(m)),
        Next::End => return Err(missing("the file holds no record".into())),
    };
    let mut b = Builder::<S>::default();
    if format_major == VERSION_MAJOR && format_minor > VERSION_MINOR {
        b.warnings.push(format!(
            "trace format {VERSION_MAJOR}.{format_minor} is newer than this boottrace's \
                 {VERSION_MAJOR}.{VERSION_MINOR}: records it does not know are skipped"
        ));
    }
    // Compact records are known from format 3 on: earlier files decode
    // them as errors, the ordinary way.
    let own_decoding = format_major >= 3;
    loop {
        let mut parsed = None;
        let next = if own_decoding {
            frames.next_record_or(|ty, body| {
                parsed = b.samples.parse(ty, body);
                parsed.is_some()
            })
        } else {
            Some(frames.next_record())
        };
        let Some(next) = next else {
            if let Some(p) = parsed {
                b.add_parsed(p);
            }
            continue;
        };
        match next {
            Next::Record(rec) => b.add(rec),
            Next::Skipped(m) => {
                b.records += 1;
                // Listed up to the cap (a file of skipped records must
                // not become as many warning strings); counted beyond.
                if b.warnings.len() <= MAX_WARNINGS {
                    b.warnings.push(m);
                } else {
                    b.capped.skipped += 1;
                }
            }
            Next::Damaged(m) => {
                b.warnings
                    .push(format!("{m}; read stops here, earlier records kept"));
                break;
            }
            Next::End => break,
        }
    }
    Ok(b.build(meta, format_major, format_minor))
}

/// What a block lacked, counted, or why it was refused.
type Counted = Result<ExpandCounts, ExpandError>;

/// Where the reader puts samples: whole [`Sample`]s ([`Trace::open`]) or
/// table rows ([`Trace::open_table`]). The [`Builder`] applies the caps and
/// task attribution; a sink only stores.
trait SampleSink: Default {
    /// What the sink gives besides the trace.
    type Out;
    /// A plain sample of run `run` (its stack cut, its task set).
    fn sample(&mut self, run: u32, s: Sample);
    /// The trace's KVM stat names (samples refer to them by index).
    fn stat_names(&mut self, _names: &[String]) {}
    /// A stack definition (format 3).
    fn define(&mut self, def: StackDef) -> Result<(), ExpandError>;
    /// The first `keep` samples of a checked block, with `task`; what is
    /// wrong is counted over the whole block.
    fn block(&mut self, b: SampleBlock, keep: usize, task: Option<u32>) -> Counted;
    /// The wait stacks of a block (format 3.1), their stacks from the
    /// definitions this sink keeps.
    fn expand_waits(&self, b: WaitBlock) -> Result<(Vec<WaitStack>, ExpandCounts), ExpandError>;
    /// Hands the samples over: `runs` are the trace's runs in their final order.
    fn finish(self, runs: &mut [RunData]) -> Self::Out;
    /// Decodes a body itself when it can (see [`SampleTable::parse`]);
    /// `None`: decode it the ordinary way.
    fn parse(&mut self, _ty: RecordType, _body: &[u8]) -> Option<Parsed> {
        None
    }
    /// Stores what [`SampleSink::parse`] decoded (a block: its first `store` samples).
    fn take_parsed(
        &mut self,
        _p: &Parsed,
        _store: usize,
        _task: Option<u32>,
    ) -> Result<(), ExpandError> {
        Ok(())
    }
}

/// Samples as [`Sample`]s in `RunData::samples`.
#[derive(Default)]
struct PlainSink {
    /// The file's stack definitions (format 3).
    stacks: Expander,
    by_run: BTreeMap<u32, Vec<Sample>>,
}

impl SampleSink for PlainSink {
    type Out = ();

    fn sample(&mut self, run: u32, s: Sample) {
        self.by_run.entry(run).or_default().push(s);
    }

    fn define(&mut self, def: StackDef) -> Result<(), ExpandError> {
        self.stacks.define(def, MAX_STACK_DEPTH)
    }

    fn expand_waits(&self, b: WaitBlock) -> Result<(Vec<WaitStack>, ExpandCounts), ExpandError> {
        self.stacks.expand_waits(b, MAX_STACK_DEPTH)
    }

    fn block(&mut self, b: SampleBlock, keep: usize, task: Option<u32>) -> Counted {
        let run = b.run;
        let (samples, counts) = self.stacks.expand(b, MAX_STACK_DEPTH)?;
        let out = self.by_run.entry(run).or_default();
        out.extend(samples.into_iter().take(keep).map(|s| Sample { task, ..s }));
        Ok(counts)
    }

    fn finish(mut self, runs: &mut [RunData]) {
        for r in runs {
            r.samples = self.by_run.remove(&r.run).unwrap_or_default();
            // vCPU threads hand samples over concurrently: file order is only
            // roughly time order. Stable sort keeps equal timestamps in file order.
            r.samples.sort_by_key(|s| (s.t_ns, s.vcpu));
        }
    }
}

/// Samples as rows of a [`SampleTable`].
#[derive(Default)]
struct TableSink(SampleTable);

impl SampleSink for TableSink {
    type Out = SampleTable;

    fn sample(&mut self, run: u32, s: Sample) {
        self.0.add_sample(run, &s);
    }

    fn stat_names(&mut self, names: &[String]) {
        self.0.stat_names(names);
    }

    fn define(&mut self, def: StackDef) -> Result<(), ExpandError> {
        self.0.define(&def, MAX_STACK_DEPTH)
    }

    fn expand_waits(&self, b: WaitBlock) -> Result<(Vec<WaitStack>, ExpandCounts), ExpandError> {
        expand_wait_block(b, MAX_STACK_DEPTH, |id| self.0.definition(id))
    }

    fn block(&mut self, b: SampleBlock, keep: usize, task: Option<u32>) -> Counted {
        self.0.add_block(&b, keep, task, MAX_STACK_DEPTH)
    }

    fn finish(self, runs: &mut [RunData]) -> SampleTable {
        self.0.into_runs(runs.iter().map(|r| r.run))
    }

    fn parse(&mut self, ty: RecordType, body: &[u8]) -> Option<Parsed> {
        self.0.parse(ty, body, MAX_STACK_DEPTH)
    }

    fn take_parsed(
        &mut self,
        p: &Parsed,
        store: usize,
        task: Option<u32>,
    ) -> Result<(), ExpandError> {
        self.0.take_parsed(p, store, task, MAX_STACK_DEPTH)
    }
}

/// Deepest stack kept per sample: the writer's limit (the unwinders stop at
/// 128 frames); deeper stacks in a file are cut here, so a hand-made trace
/// cannot make every later analysis pay for millions of frames.
pub const MAX_STACK_DEPTH: usize = 128;

/// Most runs read from one file (`record --runs` allows 10 000).
pub const MAX_RUNS: usize = 10_000;
/// Most vCPUs a run can have (`record --cpus` takes at most 254).
const MAX_VCPUS: u32 = 256;

/// Most records read from one file (about an hour of sampling one vCPU at
/// 10 kHz, ×5); the rest is skipped with a warning.
pub const MAX_RECORDS: u64 = 200_000_000;

/// Most boundaries kept per run (the recorder writes at most
/// `record::observer::MAX_BOUNDARIES` plus a few run figures); the rest are counted.
pub const MAX_BOUNDARIES_PER_RUN: usize = 200_000;

/// Most phases and console lines kept per run (the recorder keeps fewer).
pub const MAX_PHASES_PER_RUN: usize = 1024;
/// See [`MAX_PHASES_PER_RUN`].
pub const MAX_SERIAL_PER_RUN: usize = 1_000_000;

/// Most devices kept per run (the Firecracker layout has 19 IRQs for them).
pub const MAX_DEVICES_PER_RUN: usize = 64;
/// Most counters kept per device (a device writes about six).
pub const MAX_COUNTERS_PER_DEVICE: usize = 64;
/// Longest device string kept (name, kind, backend, …), in bytes; longer
/// ones are cut at a character boundary.
const MAX_DEVICE_TEXT: usize = 256;

/// Most warnings listed one by one; the rest are counted in one line.
pub const MAX_WARNINGS: usize = 100;

/// What the reader's caps left out, counted.
#[derive(Default)]
struct Capped {
    stacks: u64,
    /// Samples whose stack definition was missing (kept with RIP only).
    undefined_stacks: u64,
    /// Stack definitions or sample blocks refused (out of order, over a cap).
    compact: u64,
    runs: u64,
    records: u64,
    phases: u64,
    serial: u64,
    skipped: u64,
    devices: u64,
    boundaries: u64,
    waits: u64,
}

/// Cuts `s` to at most [`MAX_DEVICE_TEXT`] bytes; true when it was cut.
fn cap_text(s: &mut String) -> bool {
    if s.len() <= MAX_DEVICE_TEXT {
        return false;
    }
    let mut end = MAX_DEVICE_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.shrink_to_fit();
    true
}

/// Pushes `x` unless `v` already holds `cap` items; whether it was left out.
fn push_capped<T>(v: &mut Vec<T>, cap: usize, x: T) -> bool {
    let full = v.len() >= cap;
    if !full {
        v.push(x);
    }
    full
}

/// Adds a device record to a run's list: a second record for the same
/// device replaces the first; counters, strings and devices beyond the caps
/// are cut. True when something was cut or left out.
fn keep_device(devices: &mut Vec<DeviceStats>, mut dev: DeviceStats) -> bool {
    let mut cut = dev.counters.len() > MAX_COUNTERS_PER_DEVICE;
    dev.counters.truncate(MAX_COUNTERS_PER_DEVICE);
    for s in [
        &mut dev.name,
        &mut dev.kind,
        &mut dev.backend,
        &mut dev.notify,
    ] {
        cut |= cap_text(s);
    }
    for (n, _) in &mut dev.counters {
        cut |= cap_text(n);
    }
    if let Some(b) = &mut dev.broken {
        cut |= cap_text(b);
    }
    if let Some(old) = devices.iter_mut().find(|d| d.name == dev.name) {
        *old = dev;
    } else if devices.len() < MAX_DEVICES_PER_RUN {
        devices.push(dev);
    } else {
        cut = true;
    }
    cut
}

/// Collects records into runs, samples into an `S`.
#[derive(Default)]
struct Builder<S> {
    runs: BTreeMap<u32, RunData>,
    stat_names: Vec<String>,
    warnings: Vec<String>,
    complete: bool,
    extra_meta: bool,
    after_finish: u64,
    /// Records added so far (the metadata record excluded).
    records: u64,
    capped: Capped,
    /// The task each (run, vCPU) runs now, from its latest `TaskSwitch`.
    running: BTreeMap<(u32, u32), u32>,
    /// The samples.
    samples: S,
    /// Samples read from blocks (they count against [`MAX_RECORDS`] too).
    block_samples: u64,
}

impl<S: SampleSink> Builder<S> {
    /// The run with index `run`, created unless [`MAX_RUNS`] runs exist already.
    fn run(&mut self, run: u32) -> Option<&mut RunData> {
        if !self.runs.contains_key(&run) && self.runs.len() >= MAX_RUNS {
            self.capped.runs += 1;
            return None;
        }
        Some(self.runs.entry(run).or_insert_with(|| RunData::new(run)))
    }

    /// Starts adding a record: false when it is over the record cap (and
    /// counted so); the final record is never.
    fn begin(&mut self, finish: bool) -> bool {
        if self.complete {
            self.after_finish += 1;
        }
        if !finish && self.records + self.block_samples >= MAX_RECORDS {
            self.capped.records += 1;
            return false;
        }
        true
    }

    /// A record the sink decoded itself ([`SampleSink::parse`]), added as
    /// [`Builder::add`] adds the record it stands for.
    fn add_parsed(&mut self, p: Parsed) {
        if !self.begin(false) {
            return;
        }
        match p {
            Parsed::Def { .. } => {
                if let Err(e) = self.samples.take_parsed(&p, 0, None) {
                    self.compact_problem(e.to_string());
                }
            }
            Parsed::Block { head, counts } => {
                // The parser takes no block over the cap: nothing to refuse.
                let n = head.samples as usize;
                let (keep, store, task) = self.place_block(head.run, head.vcpu, n);
                match self.samples.take_parsed(&p, store, task) {
                    Ok(()) => self.count_block(counts, n, keep),
                    Err(e) => self.compact_problem(e.to_string()),
                }
            }
        }
        self.records += 1;
    }

    fn add(&mut self, rec: Record) {
        let finish = matches!(rec, Record::Finish(_));
        if !self.begin(finish) {
            return;
        }
        match rec {
            Record::Meta(_) => self.extra_meta = true,
            Record::RunStart(r) => {
                if let Some(d) = self.run(r.run) {
                    d.wall_time_unix_ns = r.wall_time_unix_ns;
                }
            }
            Record::Phase(p) => {
                let capped = self
                    .run(p.run)
                    .is_some_and(|d| push_capped(&mut d.phases, MAX_PHASES_PER_RUN, p));
                self.capped.phases += u64::from(capped);
            }
            Record::Serial(s) => {
                let capped = self
                    .run(s.run)
                    .is_some_and(|d| push_capped(&mut d.serial, MAX_SERIAL_PER_RUN, s));
                self.capped.serial += u64::from(capped);
            }
            Record::Layout(l) => {
                if let Some(d) = self.run(l.run) {
                    d.layout = Some(l.layout.into());
                }
            }
            Record::StatNames(s) => {
                self.samples.stat_names(&s.names);
                self.stat_names = s.names;
            }
            Record::Sample(s) => self.add_sample(s),
            Record::StackDef(d) => {
                if let Err(e) = self.samples.define(d) {
                    self.compact_problem(e.to_string());
                }
            }
            Record::SampleBlock(b) => self.add_block(b),
            Record::WaitStack(w) => self.add_wait(w),
            Record::WaitBlock(b) => self.add_wait_block(b),
            Record::Task(t) => {
                if let Some(d) = self.run(t.run) {
                    let tasks = &mut d.tasks;
                    if tasks.len() < MAX_TASKS_PER_RUN || tasks.contains_key(&t.id) {
                        tasks.insert(t.id, t);
                    }
                }
            }
            // Only for runs that are kept and vCPUs `record` can create, so a
            // hostile file cannot grow the map past runs x vCPUs.
            Record::TaskSwitch(w) if w.vcpu < MAX_VCPUS && self.run(w.run).is_some() => {
                match w.task {
                    Some(id) => {
                        self.running.insert((w.run, w.vcpu), id);
                    }
                    None => {
                        self.running.remove(&(w.run, w.vcpu));
                    }
                }
            }
            Record::TaskSwitch(_) => {}
            Record::DeviceStats(dev) => {
                let mut capped = false;
                if let Some(d) = self.run(dev.run) {
                    capped = keep_device(&mut d.devices, dev);
                }
                self.capped.devices += u64::from(capped);
            }
            Record::Boundary(b) => {
                let capped = self
                    .run(b.run)
                    .is_some_and(|d| push_capped(&mut d.boundaries, MAX_BOUNDARIES_PER_RUN, b));
                self.capped.boundaries += u64::from(capped);
            }
            Record::RunEnd(e) => {
                if let Some(d) = self.run(e.run) {
                    d.end = Some(e);
                }
            }
            Record::SamplerCost(c) => {
                if let Some(d) = self.run(c.run) {
                    d.cost = Some(c);
                }
            }
            Record::Finish(f) => {
                // Meta (read separately) + everything before this record.
                let seen = self.records + 1;
                if f.records != seen && !self.complete {
                    self.warnings.push(format!(
                        "the final record counts {} records but {seen} were read",
                        f.records
                    ));
                }
                self.complete = true;
            }
        }
        if !finish {
            self.records += 1;
        }
    }

    fn add_sample(&mut self, mut s: Sample) {
        if s.stack.len() > MAX_STACK_DEPTH {
            s.stack.truncate(MAX_STACK_DEPTH);
            s.stack.shrink_to_fit();
            self.capped.stacks += 1;
        }
        s.task = self.running.get(&(s.run, s.vcpu)).copied();
        if self.run(s.run).is_some() {
            self.samples.sample(s.run, s);
        }
    }

    fn add_wait(&mut self, mut w: WaitStack) {
        if w.stack.len() > MAX_STACK_DEPTH {
            w.stack.truncate(MAX_STACK_DEPTH);
            w.stack.shrink_to_fit();
            self.capped.stacks += 1;
        }
        let capped = self
            .run(w.run)
            .is_some_and(|d| push_capped(&mut d.waits, MAX_WAITS_PER_RUN, w));
        self.capped.waits += u64::from(capped);
    }

    /// A block's samples, each as if it were a plain `Sample` record: each
    /// counts against the record cap (a block cannot multiply memory) and
    /// needs its run.
    fn add_block(&mut self, b: SampleBlock) {
        if let Err(e) = check_block(&b) {
            self.compact_problem(e.to_string());
            return;
        }
        let n = b.samples.len();
        let (keep, store, task) = self.place_block(b.run, b.vcpu, n);
        match self.samples.block(b, store, task) {
            Ok(counts) => self.count_block(counts, n, keep),
            Err(e) => self.compact_problem(e.to_string()),
        }
    }

    /// A block's wait stacks (format 3.1), each as if it were a plain
    /// `WaitStack` record: each counts against the record cap.
    fn add_wait_block(&mut self, b: WaitBlock) {
        match self.samples.expand_waits(b) {
            Ok((waits, counts)) => {
                let n = waits.len();
                let keep = self.block_keep(n);
                for w in waits.into_iter().take(keep) {
                    self.add_wait(w);
                }
                self.count_block(counts, n, keep);
            }
            Err(e) => self.compact_problem(e.to_string()),
        }
    }

    /// How many of a block's `n` entries the record cap keeps.
    fn block_keep(&self, n: usize) -> usize {
        let room = MAX_RECORDS.saturating_sub(self.records + self.block_samples);
        usize::try_from(room).map_or(n, |r| r.min(n))
    }

    /// Where a block of `n` samples of (`run`, `vcpu`) goes: how many of
    /// its samples the record cap keeps, how many are stored (none when
    /// its run cannot be), and their task.
    fn place_block(&mut self, run: u32, vcpu: u32, n: usize) -> (usize, usize, Option<u32>) {
        let keep = self.block_keep(n);
        // One block is one vCPU of one run: one task, one run to check.
        let task = self.running.get(&(run, vcpu)).copied();
        let mut store = keep;
        if keep > 0 && self.run(run).is_none() {
            // Counted once per sample, as plain records are (`run` counted one).
            self.capped.runs += keep as u64 - 1;
            store = 0;
        }
        (keep, store, task)
    }

    /// Counts what a block of `n` entries, `keep` of them kept, lacked and left out.
    fn count_block(&mut self, counts: ExpandCounts, n: usize, keep: usize) {
        self.capped.undefined_stacks += counts.undefined;
        self.capped.stacks += counts.cut;
        self.capped.records += (n - keep) as u64;
        self.block_samples += keep as u64;
    }

    /// A refused stack definition or block: listed up to the warning cap.
    fn compact_problem(&mut self, m: String) {
        if self.warnings.len() <= MAX_WARNINGS {
            self.warnings.push(m);
        } else {
            self.capped.compact += 1;
        }
    }

    fn build(mut self, meta: TraceMeta, format_major: u16, format_minor: u16) -> (Trace, S::Out) {
        if self.extra_meta {
            self.warnings
                .push("more than one metadata record; the first one is used".into());
        }
        if !self.complete {
            self.warnings.push(
                "the trace has no final record: the recording was interrupted or is still running"
                    .into(),
            );
        } else if self.after_finish > 0 {
            self.warnings.push(format!(
                "{} records after the final record",
                self.after_finish
            ));
        }
        let c = &self.capped;
        for (n, what) in [
            (
                c.stacks,
                format!("stack(s) deeper than {MAX_STACK_DEPTH} frames cut to {MAX_STACK_DEPTH}"),
            ),
            (
                c.runs,
                format!("record(s) of runs beyond the first {MAX_RUNS} skipped"),
            ),
            (
                c.records,
                format!("record(s) beyond the first {MAX_RECORDS} skipped"),
            ),
            (
                c.phases,
                format!("phase(s) beyond {MAX_PHASES_PER_RUN} per run skipped"),
            ),
            (
                c.serial,
                format!("console line(s) beyond {MAX_SERIAL_PER_RUN} per run skipped"),
            ),
            (
                c.devices,
                format!("device record(s) beyond {MAX_DEVICES_PER_RUN} per run, or with more than {MAX_COUNTERS_PER_DEVICE} counters, cut"),
            ),
            (
                c.boundaries,
                format!("boundary record(s) beyond {MAX_BOUNDARIES_PER_RUN} per run skipped"),
            ),
            (
                c.skipped,
                "more record(s) skipped (unknown or damaged)".to_string(),
            ),
            (
                c.undefined_stacks,
                "sample(s) or wait stack(s) referring to an undefined stack kept without its frames"
                    .to_string(),
            ),
            (
                c.compact,
                "more stack definition(s) or sample block(s) refused".to_string(),
            ),
            (
                c.waits,
                format!("wait stack(s) beyond {MAX_WAITS_PER_RUN} per run skipped"),
            ),
        ] {
            if n > 0 {
                self.warnings.push(format!("{n} {what}"));
            }
        }
        let mut runs: Vec<RunData> = self.runs.into_values().collect();
        let mut unended = Vec::new();
        let out = self.samples.finish(&mut runs);
        for r in &mut runs {
            r.waits.sort_by_key(|w| w.t_ns);
            if r.end.is_none() {
                unended.push(r.run);
            }
        }
        match unended.as_slice() {
            [] => {}
            [one] => self
                .warnings
                .push(format!("run {one} has no end record (interrupted)")),
            [first, ..] => self.warnings.push(format!(
                "{} runs have no end record (interrupted), the first is run {first}",
                unended.len()
            )),
        }
        if self.warnings.len() > MAX_WARNINGS {
            let more = self.warnings.len() - MAX_WARNINGS;
            self.warnings.truncate(MAX_WARNINGS);
            self.warnings.push(format!("{more} more warnings"));
        }
        let trace = Trace {
            meta,
            format_major,
            format_minor,
            stat_names: self.stat_names,
            runs,
            complete: self.complete,
            warnings: self.warnings,
        };
        (trace, out)
    }
}
