//! A trace's samples held for profiling: one small fixed-size row per
//! sample, each distinct caller stack stored once.
//!
//! [`Trace::open`](super::Trace::open) gives every sample its own
//! [`Sample`] with a stack and a KVM-counter vector: two heap allocations
//! per sample, most of what reading a million-sample trace costs in time
//! and memory. Profiling needs neither: a block's samples refer to the
//! file's stack definitions, so [`Trace::open_table`](super::Trace::open_table)
//! keeps those once ([`CallerStacks`]) and a [`SampleRow`] per sample
//! pointing to them. The rows stand for exactly the samples `open` gives
//! (same caps, same order); only their storage differs.

use std::collections::HashMap;

use super::bodies::{self, BlockHead, Compact, Cursor};
use super::compact::{
    check_block, check_definition, ExpandCounts, ExpandError, SampleBlock, MAX_BLOCK_SAMPLES,
};
use super::record::{RecordType, Sample, StackDef};

/// Id of the empty caller stack in every [`CallerStacks`].
pub const NO_CALLERS: u32 = 0;

/// Name of the KVM stat whose deltas become [`SampleRow::exits`].
pub const EXITS_STAT: &str = "exits";

/// Index of [`EXITS_STAT`] in a trace's stat names (as `Trace::stat_index`).
pub fn exits_index(names: &[String]) -> Option<u16> {
    let i = names.iter().position(|n| n == EXITS_STAT)?;
    u16::try_from(i).ok()
}

/// A stack definition or sample block decoded by [`SampleTable::parse`],
/// waiting in the table's scratch area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Parsed {
    /// A definition (frames in the scratch area).
    Def {
        /// Its id.
        id: u32,
    },
    /// A block (rows in the scratch area).
    Block {
        /// Its head.
        head: BlockHead,
        /// What its samples' stacks lack, counted.
        counts: ExpandCounts,
    },
}

/// One sample, its stack as a leaf (the RIP) and interned callers.
///
/// Its raw stack (innermost first) is `[rip]` followed by
/// [`SampleTable::callers`] when `leaf_is_rip`, else the callers alone;
/// a sample without any stack has `leaf_is_rip` and no callers, so the
/// stack is never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SampleRow {
    /// Nanoseconds since the run's start.
    pub t_ns: u64,
    /// Guest RIP.
    pub rip: u64,
    /// Host page faults (minor + major) since the vCPU's previous sample.
    pub faults: u64,
    /// The sampler's cost for this sample, ns (kick + capture + unwind + write).
    pub cost_ns: u64,
    /// vCPU index.
    pub vcpu: u32,
    /// The callers: an id in [`SampleTable::stacks`].
    pub callers: u32,
    /// The task id (as [`Sample::task`]).
    pub task: Option<u32>,
    /// KVM exits since the vCPU's previous sample: the delta of the stat
    /// named `exits` (0 when not recorded).
    pub exits: u64,
    /// Current privilege level.
    pub cpl: u8,
    /// How the unwind ended (a [`StackEnd`](super::StackEnd) byte).
    pub stack_end: u8,
    /// The raw stack starts with the RIP.
    pub leaf_is_rip: bool,
}

/// Caller stacks (return addresses, innermost first), each stored once in
/// one flat list; id [`NO_CALLERS`] is the empty stack.
#[derive(Debug, Clone)]
pub struct CallerStacks {
    frames: Vec<u64>,
    /// `(start, len)` in `frames` per id.
    spans: Vec<(usize, u32)>,
    /// Whether each id's frames were cut to the depth cap when stored.
    cut: Vec<bool>,
    /// Stacks of plain `Sample` records → id (definitions are unique by
    /// construction and not indexed).
    index: HashMap<Box<[u64]>, u32>,
}

impl Default for CallerStacks {
    fn default() -> CallerStacks {
        CallerStacks {
            frames: Vec::new(),
            spans: vec![(0, 0)],
            cut: vec![false],
            index: HashMap::new(),
        }
    }
}

impl CallerStacks {
    /// Frames of `id` (empty for an id never given out).
    pub fn get(&self, id: u32) -> &[u64] {
        self.spans
            .get(id as usize)
            .and_then(|&(start, len)| self.frames.get(start..start + len as usize))
            .unwrap_or(&[])
    }

    /// Number of ids, the empty stack included.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// True when only the empty stack is held.
    pub fn is_empty(&self) -> bool {
        self.spans.len() <= 1
    }

    fn push(&mut self, frames: &[u64], cut: bool) -> u32 {
        let id = self.spans.len() as u32;
        self.spans.push((self.frames.len(), frames.len() as u32));
        self.frames.extend_from_slice(frames);
        self.cut.push(cut);
        id
    }

    /// The id of `frames` (at most the depth cap), adding it when new.
    fn intern(&mut self, frames: &[u64]) -> u32 {
        if frames.is_empty() {
            return NO_CALLERS;
        }
        if let Some(&id) = self.index.get(frames) {
            return id;
        }
        let id = self.push(frames, false);
        self.index.insert(frames.into(), id);
        id
    }
}

/// The samples of a trace's runs as rows (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct SampleTable {
    /// Caller stacks the rows refer to.
    pub stacks: CallerStacks,
    /// Index of the KVM stat named `exits` in the stat names read so far.
    exits_idx: Option<u16>,
    /// A stat-names record moved `exits` after rows were made with the old
    /// index: the rows' `exits` are not the trace's (see [`SampleTable::is_stale`]).
    stale: bool,
    /// The file's stack definitions (format 3) → id in `stacks`.
    defs: Vec<u32>,
    /// Rows per run (run index, rows), until [`SampleTable::into_runs`].
    by_run: Vec<(u32, Vec<SampleRow>)>,
    /// Run index → position in `by_run`.
    run_index: HashMap<u32, usize>,
    /// The run rows went to last, and its position: blocks of one run follow each other.
    last_run: Option<(u32, usize)>,
    /// Rows of the block being read.
    scratch: Vec<SampleRow>,
    /// Frames of the definition being read.
    scratch_frames: Vec<u64>,
    /// Rows per run in the order of [`Trace::runs`](super::Trace::runs).
    runs: Vec<Vec<SampleRow>>,
    /// Runs that kept no row.
    none: Vec<SampleRow>,
}

impl SampleTable {
    /// The rows of a trace's run `i` (its index in `Trace::runs`), sorted
    /// by (time, vCPU) as `RunData::samples` are.
    pub fn run(&self, i: usize) -> &[SampleRow] {
        self.runs.get(i).unwrap_or(&self.none)
    }

    /// Total rows.
    pub fn len(&self) -> usize {
        self.runs.iter().map(Vec::len).sum()
    }

    /// True when no run has a row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A row's callers, cut so that its whole stack stays within
    /// `max_depth` frames.
    pub fn callers(&self, row: &SampleRow, max_depth: usize) -> &[u64] {
        let frames = self.stacks.get(row.callers);
        let room = max_depth.saturating_sub(usize::from(row.leaf_is_rip));
        &frames[..frames.len().min(room)]
    }

    /// The row's raw stack, innermost first (as [`Sample::stack`], cut to `max_depth`).
    pub fn raw_stack(&self, row: &SampleRow, max_depth: usize) -> Vec<u64> {
        let mut v = Vec::new();
        if row.leaf_is_rip {
            v.push(row.rip);
        }
        v.extend_from_slice(self.callers(row, max_depth));
        v
    }

    /// True when the trace's stat names changed where `exits` is after
    /// samples were read (the recorder writes them once, before any sample):
    /// the rows' `exits` then follow the names at their time, not the
    /// final ones the trace has.
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// The trace's KVM stat names as read so far; later rows take `exits` by them.
    pub(crate) fn stat_names(&mut self, names: &[String]) {
        let idx = exits_index(names);
        self.stale |= idx != self.exits_idx && !self.by_run.is_empty();
        self.exits_idx = idx;
    }

    /// The delta of `exits` among a sample's KVM stat deltas.
    fn exits(&self, kvm: &[(u16, u64)]) -> u64 {
        self.exits_idx
            .and_then(|x| kvm.iter().find(|(i, _)| *i == x))
            .map_or(0, |(_, v)| *v)
    }

    /// Adds a plain sample (its stack already cut to the depth cap) to run `run`.
    pub(crate) fn add_sample(&mut self, run: u32, s: &Sample) {
        let (leaf_is_rip, callers) = match s.stack.split_first() {
            Some((&leaf, rest)) if leaf == s.rip => (true, self.stacks.intern(rest)),
            Some(_) => (false, self.stacks.intern(&s.stack)),
            None => (true, NO_CALLERS),
        };
        let exits = self.exits(&s.kvm);
        let c = s.cost;
        let row = SampleRow {
            t_ns: s.t_ns,
            rip: s.rip,
            faults: s.minflt.saturating_add(s.majflt),
            cost_ns: u64::from(c.kick_ns)
                + u64::from(c.capture_ns)
                + u64::from(c.unwind_ns)
                + u64::from(c.write_ns),
            vcpu: s.vcpu,
            callers,
            task: s.task,
            exits,
            cpl: s.cpl,
            stack_end: s.stack_end,
            leaf_is_rip,
        };
        let i = self.rows_of(run);
        self.by_run[i].1.push(row);
    }

    /// Adds a stack definition (format 3); frames beyond `max_depth` are
    /// cut, as [`Expander::define`](super::compact::Expander::define) does.
    pub(crate) fn define(&mut self, def: &StackDef, max_depth: usize) -> Result<(), ExpandError> {
        self.define_frames(def.id, &def.frames, max_depth)
    }

    /// Definition `id`'s frames and whether they were cut when stored;
    /// `None` when the file has not defined it.
    pub(crate) fn definition(&self, id: u32) -> Option<(&[u64], bool)> {
        let &stack = self.defs.get(id as usize)?;
        let cut = self
            .stacks
            .cut
            .get(stack as usize)
            .copied()
            .unwrap_or(false);
        Some((self.stacks.get(stack), cut))
    }

    fn define_frames(
        &mut self,
        id: u32,
        frames: &[u64],
        max_depth: usize,
    ) -> Result<(), ExpandError> {
        check_definition(id, self.defs.len())?;
        let cut = frames.len() > max_depth;
        let frames = &frames[..frames.len().min(max_depth)];
        let id = if frames.is_empty() {
            NO_CALLERS
        } else {
            self.stacks.push(frames, cut)
        };
        self.defs.push(id);
        Ok(())
    }

    /// Adds the first `keep` samples of a block (format 3) to its run,
    /// with task `task`, and counts what [`Expander::expand`] would over
    /// the whole block: the samples it gives are exactly these.
    ///
    /// [`Expander::expand`]: super::compact::Expander::expand
    pub(crate) fn add_block(
        &mut self,
        b: &SampleBlock,
        keep: usize,
        task: Option<u32>,
        max_depth: usize,
    ) -> Result<ExpandCounts, ExpandError> {
        check_block(b)?;
        let mut counts = ExpandCounts::default();
        self.scratch.clear();
        let mut at = (b.t_ns, 0u64);
        for c in &b.samples {
            let faults = c.faults.unwrap_or_default();
            let k = c.cost;
            let c = Compact {
                dt_ns: c.dt_ns,
                drip: c.drip,
                cpl: c.cpl,
                stack_end: c.stack_end,
                stack: c.stack,
                leaf_is_rip: c.leaf_is_rip,
                faults: faults.minflt.saturating_add(faults.majflt),
                exits: self.exits(&c.kvm),
                cost_ns: u64::from(k.kick_ns)
                    + u64::from(k.capture_ns)
                    + u64::from(k.unwind_ns)
                    + u64::from(k.write_ns),
            };
            let row = self.compact_row(&mut at, &c, b.vcpu, &mut counts, max_depth);
            self.scratch.push(row);
        }
        self.take_scratch(b.run, keep, task);
        Ok(counts)
    }

    /// The row of compact sample `c` of `vcpu`; `at` is the previous
    /// sample's (time, RIP), the block's (time, 0) at its start. Counts
    /// what [`Expander::expand`](super::compact::Expander::expand) counts.
    fn compact_row(
        &self,
        at: &mut (u64, u64),
        c: &Compact,
        vcpu: u32,
        counts: &mut ExpandCounts,
        max_depth: usize,
    ) -> SampleRow {
        at.0 = at.0.wrapping_add(c.dt_ns as u64);
        at.1 = at.1.wrapping_add(c.drip as u64);
        let (leaf_is_rip, callers) = match c.stack.checked_sub(1) {
            None => (true, NO_CALLERS),
            Some(def) => match self.defs.get(def as usize) {
                Some(&id) => {
                    let room = max_depth.saturating_sub(usize::from(c.leaf_is_rip));
                    let cut = self.stacks.cut.get(id as usize).copied().unwrap_or(false);
                    if cut || self.stacks.get(id).len() > room {
                        counts.cut += 1;
                    }
                    // An empty definition without the leaf is an empty stack.
                    (c.leaf_is_rip || id == NO_CALLERS, id)
                }
                None => {
                    counts.undefined += 1;
                    (true, NO_CALLERS)
                }
            },
        };
        SampleRow {
            t_ns: at.0,
            rip: at.1,
            faults: c.faults,
            cost_ns: c.cost_ns,
            vcpu,
            callers,
            task: None,
            exits: c.exits,
            cpl: c.cpl,
            stack_end: c.stack_end,
            leaf_is_rip,
        }
    }

    /// Moves the first `keep` rows of the scratch area to run `run`, with task `task`.
    fn take_scratch(&mut self, run: u32, keep: usize, task: Option<u32>) {
        let rows = self.rows_of(run);
        let keep = keep.min(self.scratch.len());
        let scratch = &self.scratch[..keep];
        let rows = &mut self.by_run[rows].1;
        rows.extend(scratch.iter().map(|r| SampleRow { task, ..*r }));
    }

    /// Index in `by_run` of run `run`'s rows, made when new.
    fn rows_of(&mut self, run: u32) -> usize {
        if let Some((r, i)) = self.last_run {
            if r == run {
                return i;
            }
        }
        let i = match self.run_index.get(&run) {
            Some(&i) => i,
            None => {
                self.by_run.push((run, Vec::new()));
                self.run_index.insert(run, self.by_run.len() - 1);
                self.by_run.len() - 1
            }
        };
        self.last_run = Some((run, i));
        i
    }

    /// Decodes a stack definition or sample block body (format 3) itself
    /// ([`bodies`]): the definition's frames or the block's rows wait in
    /// the scratch area for [`SampleTable::take_parsed`]. `None`: not
    /// decoded here (another type, a malformed body, a block over
    /// [`MAX_BLOCK_SAMPLES`]), to be decoded the ordinary way.
    pub(crate) fn parse(
        &mut self,
        ty: RecordType,
        body: &[u8],
        max_depth: usize,
    ) -> Option<Parsed> {
        match ty {
            RecordType::StackDef => {
                self.scratch_frames.clear();
                let id = bodies::stack_def(body, &mut self.scratch_frames)?;
                Some(Parsed::Def { id })
            }
            RecordType::SampleBlock => {
                let mut c = Cursor::new(body);
                let head = bodies::block_head(&mut c)?;
                if head.samples > MAX_BLOCK_SAMPLES as u64 {
                    return None;
                }
                self.scratch.clear();
                let mut counts = ExpandCounts::default();
                let mut at = (head.t_ns, 0u64);
                for _ in 0..head.samples {
                    let compact = bodies::compact(&mut c, self.exits_idx)?;
                    let row =
                        self.compact_row(&mut at, &compact, head.vcpu, &mut counts, max_depth);
                    self.scratch.push(row);
                }
                Some(Parsed::Block { head, counts })
            }
            _ => None,
        }
    }

    /// Stores what [`SampleTable::parse`] decoded: a definition, or the
    /// first `keep` samples of a block with task `task`.
    pub(crate) fn take_parsed(
        &mut self,
        p: &Parsed,
        keep: usize,
        task: Option<u32>,
        max_depth: usize,
    ) -> Result<(), ExpandError> {
        match *p {
            Parsed::Def { id } => {
                let frames = std::mem::take(&mut self.scratch_frames);
                let r = self.define_frames(id, &frames, max_depth);
                self.scratch_frames = frames;
                r
            }
            Parsed::Block { head, .. } => {
                self.take_scratch(head.run, keep, task);
                Ok(())
            }
        }
    }

    /// Sorts each run's rows by (time, vCPU), stably as the reader sorts
    /// samples, and orders the runs as `runs` (run indices in `Trace::runs` order).
    pub(crate) fn into_runs(mut self, runs: impl IntoIterator<Item = u32>) -> SampleTable {
        let mut by_run: HashMap<u32, Vec<SampleRow>> =
            std::mem::take(&mut self.by_run).into_iter().collect();
        self.runs = runs
            .into_iter()
            .map(|run| {
                let mut rows = by_run.remove(&run).unwrap_or_default();
                // Usually sorted already (one vCPU, or blocks in time order).
                if !rows
                    .windows(2)
                    .all(|w| (w[0].t_ns, w[0].vcpu) <= (w[1].t_ns, w[1].vcpu))
                {
                    rows.sort_by_key(|r| (r.t_ns, r.vcpu));
                }
                rows
            })
            .collect();
        self.run_index = HashMap::new();
        self.last_run = None;
        self.scratch = Vec::new();
        self.scratch_frames = Vec::new();
        self.defs = Vec::new();
        self.stacks.index = HashMap::new();
        self
    }

    /// The rows of `runs`' plain samples (a trace read by
    /// [`Trace::open`](super::Trace::open), or built by hand), `exits`
    /// taken by the trace's `stat_names`.
    pub fn from_runs<'a>(
        runs: impl IntoIterator<Item = &'a [Sample]>,
        stat_names: &[String],
    ) -> SampleTable {
        let mut t = SampleTable::default();
        t.stat_names(stat_names);
        let mut order = Vec::new();
        for (i, samples) in runs.into_iter().enumerate() {
            let i = i as u32;
            order.push(i);
            let rows = t.rows_of(i);
            t.by_run[rows].1.reserve(samples.len());
            for s in samples {
                t.add_sample(i, s);
            }
        }
        t.into_runs(order)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::compact::{CompactSample, Compactor, Expander};
    use crate::trace::record::{Record, SampleCost, StatNames, Task, TaskSwitch};
    use crate::trace::{RunData, Trace};

    fn sample(t: u64, rip: u64, stack: Vec<u64>, kvm: Vec<(u16, u64)>) -> Sample {
        Sample {
            t_ns: t,
            rip,
            stack,
            kvm,
            minflt: t % 3,
            majflt: 1,
            cost: SampleCost {
                kick_ns: 1,
                capture_ns: 2,
                unwind_ns: 3,
                write_ns: 4,
            },
            stack_end: 1,
            ..Sample::default()
        }
    }

    fn check_row(t: &SampleTable, row: &SampleRow, s: &Sample) {
        let raw = t.raw_stack(row, 128);
        if s.stack.is_empty() {
            assert_eq!(raw, vec![s.rip]);
        } else {
            assert_eq!(raw, s.stack);
        }
        assert_eq!((row.t_ns, row.rip, row.vcpu), (s.t_ns, s.rip, s.vcpu));
        assert_eq!(row.faults, s.minflt + s.majflt);
        assert_eq!(row.cost_ns, 10);
        assert_eq!(row.exits, s.kvm_stat(2), "exits is stat 2");
    }

    fn names() -> Vec<String> {
        ["io", "halt", EXITS_STAT].map(String::from).to_vec()
    }

    fn samples() -> Vec<Sample> {
        vec![
            sample(1, 0x10, vec![0x10, 0x20, 0x30], vec![(0, 5), (2, 7)]),
            sample(2, 0x11, vec![0x11, 0x20, 0x30], vec![]),
            sample(3, 0x12, vec![], vec![(1, 1)]),
            sample(4, 0x13, vec![0x99, 0x20], vec![]),
            sample(5, 0x14, vec![0x14], vec![]),
            sample(6, 0x15, vec![0x15; 200], vec![]),
        ]
    }

    #[test]
    fn plain_samples_become_rows_with_shared_callers() {
        let mut s = samples();
        s[5].stack.truncate(128);
        let t = SampleTable::from_runs([&s[..]], &names());
        assert_eq!(t.len(), s.len());
        for (row, s) in t.run(0).iter().zip(&s) {
            check_row(&t, row, s);
        }
        // [0x20, 0x30] is stored once for the first two samples.
        assert_eq!(t.run(0)[0].callers, t.run(0)[1].callers);
        assert!(t.run(1).is_empty());
    }

    /// A frame around an arbitrary body (a record whose content may be wrong).
    fn raw_frame(ty: RecordType, body: &[u8], out: &mut Vec<u8>) {
        let mut payload = vec![ty as u8];
        payload.extend_from_slice(body);
        out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        out.extend_from_slice(&payload);
    }

    /// A format-3 file of `recs`, then `extra` frames as they are.
    fn file(recs: &[Record], extra: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        crate::trace::frame::write_header(&mut out).expect("header");
        for r in recs {
            crate::trace::frame::encode_frame(r, &mut out).expect("frame");
        }
        out.extend_from_slice(extra);
        out
    }

    /// What `open` and `open_table` read from `bytes`, checked to agree.
    fn both_ways(bytes: &[u8]) -> (Trace, SampleTable) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.data");
        std::fs::write(&path, bytes).expect("write");
        let whole = Trace::open(&path).expect("open");
        let (trace, table) = Trace::open_table(&path).expect("open table");
        assert_eq!(trace.warnings, whole.warnings);
        assert_eq!(trace.runs.len(), whole.runs.len());
        let exits = whole.stat_index(EXITS_STAT);
        for (i, (r, w)) in trace.runs.iter().zip(&whole.runs).enumerate() {
            assert!(r.samples.is_empty());
            assert_eq!(
                RunData {
                    samples: w.samples.clone(),
                    ..r.clone()
                },
                *w
            );
            let rows = table.run(i);
            assert_eq!(rows.len(), w.samples.len(), "run {}", r.run);
            for (row, s) in rows.iter().zip(&w.samples) {
                let stack = if s.stack.is_empty() {
                    vec![s.rip]
                } else {
                    s.stack.clone()
                };
                assert_eq!(table.raw_stack(row, 128), stack);
                assert_eq!(
                    (
                        row.t_ns,
                        row.rip,
                        row.vcpu,
                        row.cpl,
                        row.stack_end,
                        row.task
                    ),
                    (s.t_ns, s.rip, s.vcpu, s.cpl, s.stack_end, s.task)
                );
                assert_eq!(row.faults, s.minflt + s.majflt);
                assert_eq!(row.exits, exits.map_or(0, |x| s.kvm_stat(x)));
            }
        }
        (whole, table)
    }

    #[test]
    fn open_table_reads_what_open_reads_damage_included() {
        let names = |n: &[&str]| {
            Record::StatNames(StatNames {
                names: n.iter().map(|s| s.to_string()).collect(),
            })
        };
        let mut recs = vec![
            Record::Meta(Box::default()),
            names(&["io", EXITS_STAT]),
            Record::Task(Task {
                run: 1,
                id: 4,
                ..Task::default()
            }),
            Record::TaskSwitch(TaskSwitch {
                run: 1,
                vcpu: 0,
                task: Some(4),
            }),
        ];
        let mut plain = Vec::new();
        for i in 0..300u64 {
            let mut s = sample(1000 - i, 0x1000 + i % 5, vec![], vec![(1, i), (0, 2)]);
            s.run = (i % 2) as u32;
            s.vcpu = (i % 3) as u32;
            s.stack = match i % 4 {
                0 => vec![s.rip, 0x20, 0x30],
                1 => vec![],
                2 => vec![0x99, 0x20],
                _ => vec![s.rip; 130 + (i % 2) as usize],
            };
            plain.push(Record::Sample(s));
        }
        let mut compact = Vec::new();
        Compactor::default().compact(plain.clone(), &mut compact);
        recs.extend(compact);
        // A plain sample, as files of older formats (and full tables) hold.
        recs.push(plain[7].clone());
        let mut extra = Vec::new();
        // A block whose bool is 2, one over the size cap, an undefined
        // stack, a definition out of order.
        let bad = CompactSample {
            leaf_is_rip: true,
            ..CompactSample::default()
        };
        let block = |samples: Vec<CompactSample>| {
            let r = Record::SampleBlock(SampleBlock {
                run: 0,
                vcpu: 5,
                t_ns: 7,
                samples,
            });
            let mut b = r.encode_into(Vec::new()).expect("encode");
            b.remove(0);
            b
        };
        let mut b = block(vec![bad.clone()]);
        let at = b.len() - 1 - 4 - 1 - 1 - 1;
        assert_eq!(b[at], 1, "the bool");
        b[at] = 2;
        raw_frame(RecordType::SampleBlock, &b, &mut extra);
        raw_frame(
            RecordType::SampleBlock,
            &block(vec![bad.clone(); MAX_BLOCK_SAMPLES + 1]),
            &mut extra,
        );
        let undefined = CompactSample {
            stack: 1 << 20,
            drip: 3,
            ..bad
        };
        raw_frame(RecordType::SampleBlock, &block(vec![undefined]), &mut extra);
        let def = Record::StackDef(StackDef {
            id: 9,
            frames: vec![1],
        });
        let mut d = def.encode_into(Vec::new()).expect("encode");
        d.remove(0);
        raw_frame(RecordType::StackDef, &d, &mut extra);
        let (whole, table) = both_ways(&file(&recs, &extra));
        assert!(whole.warnings.len() >= 4, "{:?}", whole.warnings);
        assert!(!table.is_stale());
        assert!(whole.runs[1].samples.iter().any(|s| s.task == Some(4)));

        // Stat names that move `exits` after the samples: read again whole.
        recs.push(names(&[EXITS_STAT]));
        let (_, table) = both_ways(&file(&recs, &extra));
        assert!(table.runs.iter().flatten().any(|r| r.exits > 0));
    }

    #[test]
    fn blocks_give_the_rows_of_what_the_expander_gives() {
        let recs: Vec<Record> = samples().into_iter().map(Record::Sample).collect();
        let mut out = Vec::new();
        Compactor::default().compact(recs, &mut out);
        let mut e = Expander::default();
        let mut t = SampleTable::default();
        t.stat_names(&names());
        let mut want = Vec::new();
        for r in out {
            match r {
                Record::StackDef(d) => {
                    t.define(&d, 128).expect("define");
                    e.define(d, 128).expect("define");
                }
                Record::SampleBlock(b) => {
                    let keep = b.samples.len() - 1;
                    let got = t.add_block(&b, keep, Some(3), 128).expect("block");
                    let (s, counts) = e.expand(b, 128).expect("expand");
                    assert_eq!(got, counts);
                    assert_eq!(counts.cut, 1, "the 200-frame stack");
                    want.extend(s.into_iter().take(keep));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        let t = t.into_runs([0]);
        assert_eq!(t.len(), want.len());
        for (row, s) in t.run(0).iter().zip(&want) {
            check_row(&t, row, s);
            assert_eq!(row.task, Some(3));
        }
    }
}
