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

use super::compact::{check_block, check_definition, ExpandCounts, ExpandError, SampleBlock};
use super::record::{Sample, StackDef};

/// Id of the empty caller stack in every [`CallerStacks`].
pub const NO_CALLERS: u32 = 0;

/// Name of the KVM stat whose deltas become [`SampleRow::exits`].
pub const EXITS_STAT: &str = "exits";

/// Index of [`EXITS_STAT`] in a trace's stat names (as `Trace::stat_index`).
pub fn exits_index(names: &[String]) -> Option<u16> {
    let i = names.iter().position(|n| n == EXITS_STAT)?;
    u16::try_from(i).ok()
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
    /// Rows per run, by run index, until [`SampleTable::into_runs`].
    by_run: HashMap<u32, Vec<SampleRow>>,
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
        self.by_run.entry(run).or_default().push(row);
    }

    /// Adds a stack definition (format 3); frames beyond `max_depth` are
    /// cut, as [`Expander::define`](super::compact::Expander::define) does.
    pub(crate) fn define(&mut self, def: &StackDef, max_depth: usize) -> Result<(), ExpandError> {
        check_definition(def.id, self.defs.len())?;
        let cut = def.frames.len() > max_depth;
        let frames = &def.frames[..def.frames.len().min(max_depth)];
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
        let mut rows = std::mem::take(self.by_run.entry(b.run).or_default());
        rows.reserve(keep.min(b.samples.len()));
        let (mut t, mut rip) = (b.t_ns, 0u64);
        for (i, c) in b.samples.iter().enumerate() {
            rip = rip.wrapping_add(c.drip as u64);
            t = t.wrapping_add(c.dt_ns as u64);
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
            if i >= keep {
                continue;
            }
            let exits = self.exits(&c.kvm);
            let faults = c.faults.unwrap_or_default();
            let k = c.cost;
            rows.push(SampleRow {
                t_ns: t,
                rip,
                faults: faults.minflt.saturating_add(faults.majflt),
                cost_ns: u64::from(k.kick_ns)
                    + u64::from(k.capture_ns)
                    + u64::from(k.unwind_ns)
                    + u64::from(k.write_ns),
                vcpu: b.vcpu,
                callers,
                task,
                exits,
                cpl: c.cpl,
                stack_end: c.stack_end,
                leaf_is_rip,
            });
        }
        self.by_run.insert(b.run, rows);
        Ok(counts)
    }

    /// Sorts each run's rows by (time, vCPU), stably as the reader sorts
    /// samples, and orders the runs as `runs` (run indices in `Trace::runs` order).
    pub(crate) fn into_runs(mut self, runs: impl IntoIterator<Item = u32>) -> SampleTable {
        self.runs = runs
            .into_iter()
            .map(|run| {
                let mut rows = self.by_run.remove(&run).unwrap_or_default();
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
        self.by_run = HashMap::new();
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
            let rows = t.by_run.entry(i).or_default();
            rows.reserve(samples.len());
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
    use crate::trace::compact::{Compactor, Expander};
    use crate::trace::record::{Record, SampleCost};

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
