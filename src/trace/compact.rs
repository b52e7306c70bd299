//! The compact sample encoding of format 3: interned stacks and blocks of
//! delta-encoded samples.
//!
//! A plain [`Sample`] record costs about 100 bytes: 8 bytes of framing, three
//! full 64-bit registers, the whole stack and the control registers every
//! time. Most of that repeats: a boot's samples share a few thousand distinct
//! call chains, the control registers change a handful of times per boot,
//! and consecutive samples of one vCPU are close in time, RIP and RSP.
//!
//! - [`StackDef`] (type 16) defines stack `id` once per file: the callers of
//!   a sample (its raw stack without the leaf), ids counting up from 0 in
//!   file order, so a reader never allocates by an id it is handed.
//! - [`SampleBlock`] (type 17) holds consecutive samples of one vCPU of one
//!   run, each a [`CompactSample`] of deltas against the previous one in the
//!   block and a reference to its stack definition, written before the block.
//! - [`WaitBlock`] (type 18, format 3.1) does the same for the boot task's
//!   blocked stacks ([`WaitStack`], up to one per boot-vCPU sample): each a
//!   [`CompactWait`] of a time delta, task, state and a reference into the
//!   same stack table. Without it a boot whose pid 1 waits a lot pays a
//!   ~136-byte `WaitStack` per sample, and each one, written between two
//!   samples, also cut the vCPU's sample block in two.
//!
//! The writer compacts [`Record::Sample`]s and [`Record::WaitStack`]s as it
//! frames them ([`Compactor`]); the reader expands blocks back into
//! [`Sample`]s and [`WaitStack`]s ([`Expander`]), so analysis code sees the
//! plain records. Both stay append-only: a block is one framed record, so a
//! killed `record` loses at most the block being written, like any other
//! record. Blocks carry no state across records (each starts from absolute
//! values), so a skipped or damaged block costs only its own entries.

use std::collections::HashMap;

use super::record::{Record, Sample, WaitStack};
// The compact records are records like any other (their structs live with
// the rest in `record`); this module is how they are made and undone.
pub use super::record::{
    CompactSample, CompactWait, Faults, SampleBlock, StackDef, SysRegs, WaitBlock,
};

/// Most samples (or waits) in one block: the writer cuts blocks here, the
/// reader skips larger ones (one block must not expand into unbounded memory).
pub const MAX_BLOCK_SAMPLES: usize = 1024;
/// Most distinct stacks one file defines; the writer falls back to plain
/// `Sample` records beyond (still correct, only larger), the reader ignores
/// definitions beyond.
pub const MAX_STACK_DEFS: usize = 1 << 22;

/// Interns stacks and turns runs of samples into blocks (writer side).
#[derive(Default)]
pub struct Compactor {
    ids: HashMap<Vec<u64>, u32>,
}

impl Compactor {
    /// Appends to `out` the records that stand for `recs`: consecutive
    /// samples of one (run, vCPU) become stack definitions (for stacks new
    /// to the file) followed by one block, and so do the wait stacks of one
    /// (run, vCPU); other records pass unchanged. The order of samples and
    /// task switches within each vCPU's stream is kept, so samples keep
    /// their tasks. Waits (placed by run and time when read) and task
    /// definitions (looked up by id) do not cut sample blocks: the sampler
    /// writes them between samples.
    pub fn compact(&mut self, recs: impl IntoIterator<Item = Record>, out: &mut Vec<Record>) {
        let mut group: Vec<Sample> = Vec::new();
        let mut waits: Vec<WaitStack> = Vec::new();
        for rec in recs {
            match rec {
                Record::Sample(s) => {
                    let first = group.first().map(|f| (f.run, f.vcpu));
                    if cuts(first, (s.run, s.vcpu), group.len()) {
                        self.block(&mut group, out);
                    }
                    group.push(s);
                }
                Record::WaitStack(w) => {
                    let first = waits.first().map(|f| (f.run, f.vcpu));
                    if cuts(first, (w.run, w.vcpu), waits.len()) {
                        self.wait_block(&mut waits, out);
                    }
                    waits.push(w);
                }
                task @ Record::Task(_) => out.push(task),
                switch @ Record::TaskSwitch(_) => {
                    self.block(&mut group, out);
                    out.push(switch);
                }
                other => {
                    self.block(&mut group, out);
                    self.wait_block(&mut waits, out);
                    out.push(other);
                }
            }
        }
        self.block(&mut group, out);
        self.wait_block(&mut waits, out);
    }

    /// The stack reference of a block entry: 0 for an empty stack, else its
    /// definition's id + 1 (defined in `defs` when new); `None` when the
    /// file's stack table is full.
    fn stack_ref(&mut self, frames: &[u64], defs: &mut Vec<Record>) -> Option<u32> {
        if frames.is_empty() {
            return Some(0);
        }
        self.intern(frames, defs).map(|id| id + 1)
    }

    /// Turns `waits` (wait stacks of one vCPU, emptied) into definitions and
    /// a block; a wait whose stack finds no room in the table stays plain.
    fn wait_block(&mut self, waits: &mut Vec<WaitStack>, out: &mut Vec<Record>) {
        let Some(first) = waits.first() else {
            return;
        };
        let mut block = WaitBlock {
            run: first.run,
            vcpu: first.vcpu,
            t_ns: first.t_ns,
            waits: Vec::with_capacity(waits.len()),
        };
        let mut prev_t = first.t_ns;
        let mut plain = Vec::new();
        for w in waits.drain(..) {
            let Some(stack) = self.stack_ref(&w.stack, out) else {
                plain.push(Record::WaitStack(w));
                continue;
            };
            block.waits.push(CompactWait {
                dt_ns: w.t_ns.wrapping_sub(prev_t) as i64,
                task: w.task,
                state: w.state,
                stack,
                stack_end: w.stack_end,
            });
            prev_t = w.t_ns;
        }
        if !block.waits.is_empty() {
            out.push(Record::WaitBlock(block));
        }
        out.append(&mut plain);
    }

    /// The id of `frames`, defining it in `out` when new; `None` when the
    /// file has [`MAX_STACK_DEFS`] stacks already.
    fn intern(&mut self, frames: &[u64], out: &mut Vec<Record>) -> Option<u32> {
        if let Some(&id) = self.ids.get(frames) {
            return Some(id);
        }
        if self.ids.len() >= MAX_STACK_DEFS {
            return None;
        }
        let id = self.ids.len() as u32;
        self.ids.insert(frames.to_vec(), id);
        out.push(Record::StackDef(StackDef {
            id,
            frames: frames.to_vec(),
        }));
        Some(id)
    }

    /// Turns `group` (samples of one vCPU, emptied) into definitions and a block.
    fn block(&mut self, group: &mut Vec<Sample>, out: &mut Vec<Record>) {
        if group.is_empty() {
            return;
        }
        let n = group.len();
        let mut block: Option<SampleBlock> = None;
        let mut prev = Sample::default();
        let mut defs = Vec::new();
        let mut plain = Vec::new();
        for mut s in group.drain(..) {
            let leaf_is_rip = s.stack.first() == Some(&s.rip);
            let callers = if leaf_is_rip {
                &s.stack[1..]
            } else {
                &s.stack[..]
            };
            let stack = if s.stack.is_empty() {
                Some(0)
            } else {
                self.intern(callers, &mut defs).map(|id| id + 1)
            };
            let Some(stack) = stack else {
                // The file's stack table is full: this one stays a plain record.
                plain.push(Record::Sample(s));
                continue;
            };
            let b = block.get_or_insert_with(|| SampleBlock {
                run: s.run,
                vcpu: s.vcpu,
                t_ns: s.t_ns,
                samples: Vec::with_capacity(n),
            });
            let first = b.samples.is_empty();
            let base_t = if first { b.t_ns } else { prev.t_ns };
            let sys = SysRegs {
                cr0: s.cr0,
                cr3: s.cr3,
                cr4: s.cr4,
                efer: s.efer,
                cs: s.cs,
            };
            let prev_sys = SysRegs {
                cr0: prev.cr0,
                cr3: prev.cr3,
                cr4: prev.cr4,
                efer: prev.efer,
                cs: prev.cs,
            };
            let faults = Faults {
                minflt: s.minflt,
                majflt: s.majflt,
                perf_faults: s.perf_faults,
            };
            b.samples.push(CompactSample {
                dt_ns: s.t_ns.wrapping_sub(base_t) as i64,
                drip: s.rip.wrapping_sub(prev.rip) as i64,
                drsp: s.rsp.wrapping_sub(prev.rsp) as i64,
                drbp: s.rbp.wrapping_sub(prev.rbp) as i64,
                cpl: s.cpl,
                stack_end: s.stack_end,
                stack,
                leaf_is_rip,
                sys: (first || sys != prev_sys).then_some(sys),
                faults: (faults != Faults::default()).then_some(faults),
                kvm: std::mem::take(&mut s.kvm),
                cost: s.cost,
            });
            prev = Sample {
                stack: Vec::new(),
                kvm: Vec::new(),
                ..s
            };
        }
        out.append(&mut defs);
        if let Some(b) = block {
            out.push(Record::SampleBlock(b));
        }
        out.append(&mut plain);
    }
}

/// Whether an entry of (run, vCPU) `key` starts a new block after a group
/// of `len` entries whose first has `first`: another stream, or a full block.
fn cuts(first: Option<(u32, u32)>, key: (u32, u32), len: usize) -> bool {
    first != Some(key) || len >= MAX_BLOCK_SAMPLES
}

/// Why a block or definition was not used (reader side).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// A definition out of sequence (ids count up from 0 in file order).
    #[error("stack definition {id} out of order (expected {expected})")]
    OutOfOrder {
        /// The id in the file.
        id: u32,
        /// The next id.
        expected: usize,
    },
    /// More definitions than [`MAX_STACK_DEFS`].
    #[error("more than {MAX_STACK_DEFS} stack definitions")]
    TooManyDefs,
    /// More samples (or waits) in a block than [`MAX_BLOCK_SAMPLES`].
    #[error("a block of {0} samples or waits (at most {MAX_BLOCK_SAMPLES})")]
    BlockTooLarge(usize),
    /// A sample refers to a stack not defined before it.
    #[error("a sample refers to undefined stack {0}")]
    UndefinedStack(u32),
}

/// Whether definition `id` may follow `defined` earlier ones: ids count up
/// from 0 in file order, at most [`MAX_STACK_DEFS`] of them.
pub fn check_definition(id: u32, defined: usize) -> Result<(), ExpandError> {
    if id as usize != defined {
        return Err(ExpandError::OutOfOrder {
            id,
            expected: defined,
        });
    }
    if defined >= MAX_STACK_DEFS {
        return Err(ExpandError::TooManyDefs);
    }
    Ok(())
}

/// Whether a block is small enough to expand (at most [`MAX_BLOCK_SAMPLES`]).
pub fn check_block(b: &SampleBlock) -> Result<(), ExpandError> {
    if b.samples.len() > MAX_BLOCK_SAMPLES {
        return Err(ExpandError::BlockTooLarge(b.samples.len()));
    }
    Ok(())
}

/// Holds the file's stack definitions and expands blocks (reader side).
#[derive(Default)]
pub struct Expander {
    /// Frames of each definition, and whether they were cut to the depth cap.
    stacks: Vec<(Box<[u64]>, bool)>,
}

/// What expanding a block found wrong, counted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ExpandCounts {
    /// Samples whose stack was never defined (kept with RIP alone).
    pub undefined: u64,
    /// Samples whose stack was cut to the depth cap.
    pub cut: u64,
}

impl Expander {
    /// Adds a definition; frames beyond `max_depth` are cut.
    pub fn define(&mut self, def: StackDef, max_depth: usize) -> Result<(), ExpandError> {
        check_definition(def.id, self.stacks.len())?;
        let mut frames = def.frames;
        let cut = frames.len() > max_depth;
        frames.truncate(max_depth);
        self.stacks.push((frames.into_boxed_slice(), cut));
        Ok(())
    }

    /// The samples of a block, each stack cut to `max_depth` frames. A
    /// sample referring to an undefined stack keeps RIP alone; both are counted.
    pub fn expand(
        &self,
        b: SampleBlock,
        max_depth: usize,
    ) -> Result<(Vec<Sample>, ExpandCounts), ExpandError> {
        check_block(&b)?;
        let mut out = Vec::with_capacity(b.samples.len());
        let mut counts = ExpandCounts::default();
        let mut prev = Sample {
            run: b.run,
            vcpu: b.vcpu,
            t_ns: b.t_ns,
            ..Sample::default()
        };
        for c in b.samples {
            let rip = prev.rip.wrapping_add(c.drip as u64);
            let mut stack = Vec::new();
            if c.leaf_is_rip {
                stack.push(rip);
            }
            if c.stack > 0 {
                match self.stacks.get(c.stack as usize - 1) {
                    Some((frames, cut)) => {
                        let room = max_depth.saturating_sub(stack.len());
                        if *cut || frames.len() > room {
                            counts.cut += 1;
                        }
                        stack.extend_from_slice(&frames[..frames.len().min(room)]);
                    }
                    None => {
                        counts.undefined += 1;
                        stack.clear();
                        stack.push(rip);
                    }
                }
            }
            let sys = c.sys.unwrap_or(SysRegs {
                cr0: prev.cr0,
                cr3: prev.cr3,
                cr4: prev.cr4,
                efer: prev.efer,
                cs: prev.cs,
            });
            let faults = c.faults.unwrap_or_default();
            let s = Sample {
                run: b.run,
                vcpu: b.vcpu,
                t_ns: prev.t_ns.wrapping_add(c.dt_ns as u64),
                rip,
                rsp: prev.rsp.wrapping_add(c.drsp as u64),
                rbp: prev.rbp.wrapping_add(c.drbp as u64),
                cr0: sys.cr0,
                cr3: sys.cr3,
                cr4: sys.cr4,
                efer: sys.efer,
                cs: sys.cs,
                cpl: c.cpl,
                stack,
                stack_end: c.stack_end,
                minflt: faults.minflt,
                majflt: faults.majflt,
                perf_faults: faults.perf_faults,
                kvm: c.kvm,
                cost: c.cost,
                task: None,
            };
            prev = Sample {
                stack: Vec::new(),
                kvm: Vec::new(),
                ..s.clone()
            };
            out.push(s);
        }
        Ok((out, counts))
    }

    /// The wait stacks of a block, each stack cut to `max_depth` frames. A
    /// wait referring to an undefined stack keeps no frames (an unreadable
    /// stack, as the recorder writes it); both are counted.
    pub fn expand_waits(
        &self,
        b: WaitBlock,
        max_depth: usize,
    ) -> Result<(Vec<WaitStack>, ExpandCounts), ExpandError> {
        expand_wait_block(b, max_depth, |id| {
            self.stacks
                .get(id as usize)
                .map(|(frames, cut)| (&frames[..], *cut))
        })
    }
}

/// The wait stacks of a block, with `lookup` giving a stack definition's
/// frames and whether they were cut when stored (`None`: undefined); each
/// stack is cut to `max_depth` frames. Shared by both readers' stack tables.
pub(crate) fn expand_wait_block<'a>(
    b: WaitBlock,
    max_depth: usize,
    lookup: impl Fn(u32) -> Option<(&'a [u64], bool)>,
) -> Result<(Vec<WaitStack>, ExpandCounts), ExpandError> {
    if b.waits.len() > MAX_BLOCK_SAMPLES {
        return Err(ExpandError::BlockTooLarge(b.waits.len()));
    }
    let mut counts = ExpandCounts::default();
    let mut t = b.t_ns;
    let mut out = Vec::with_capacity(b.waits.len());
    for c in b.waits {
        t = t.wrapping_add(c.dt_ns as u64);
        let stack = match c.stack.checked_sub(1) {
            None => Vec::new(),
            Some(id) => match lookup(id) {
                Some((frames, cut)) => {
                    if cut || frames.len() > max_depth {
                        counts.cut += 1;
                    }
                    frames[..frames.len().min(max_depth)].to_vec()
                }
                None => {
                    counts.undefined += 1;
                    Vec::new()
                }
            },
        };
        out.push(WaitStack {
            run: b.run,
            vcpu: b.vcpu,
            t_ns: t,
            task: c.task,
            state: c.state,
            stack,
            stack_end: c.stack_end,
        });
    }
    Ok((out, counts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{SampleCost, Task, TaskSwitch};

    fn sample(vcpu: u32, t: u64, rip: u64, callers: &[u64]) -> Sample {
        let mut stack = vec![rip];
        stack.extend_from_slice(callers);
        Sample {
            run: 0,
            vcpu,
            t_ns: t,
            rip,
            rsp: 0xffff_c900_0000_3f00 - t % 64,
            rbp: 0xffff_c900_0000_3f80,
            cr0: 0x8005_0033,
            cr3: 0x1000 + (t / 1000) * 0x1000,
            cr4: 0x20,
            efer: 0xd01,
            cs: 0x10,
            cpl: 0,
            stack,
            stack_end: 1,
            minflt: t % 3,
            majflt: 0,
            perf_faults: 0,
            kvm: if t % 2 == 0 {
                vec![(3, 7), (9, 1)]
            } else {
                vec![]
            },
            cost: SampleCost {
                kick_ns: 40_000,
                capture_ns: 100,
                unwind_ns: 2_000,
                write_ns: 300,
            },
            task: None,
        }
    }

    fn round_trip(recs: &[Record]) -> (Vec<Record>, usize) {
        let mut c = Compactor::default();
        let mut out = Vec::new();
        c.compact(recs.to_vec(), &mut out);
        let bytes: usize = out
            .iter()
            .map(|r| r.encode_into(Vec::new()).expect("encode").len() + 8)
            .sum();
        let mut e = Expander::default();
        let mut back = Vec::new();
        for r in out {
            match r {
                Record::StackDef(d) => e.define(d, 128).expect("define"),
                Record::SampleBlock(b) => {
                    let (s, counts) = e.expand(b, 128).expect("expand");
                    assert_eq!(counts, ExpandCounts::default());
                    back.extend(s.into_iter().map(Record::Sample));
                }
                Record::WaitBlock(b) => {
                    let (w, counts) = e.expand_waits(b, 128).expect("expand waits");
                    assert_eq!(counts, ExpandCounts::default());
                    back.extend(w.into_iter().map(Record::WaitStack));
                }
                other => back.push(other),
            }
        }
        (back, bytes)
    }

    #[test]
    fn samples_round_trip_around_other_records_and_shrink() {
        let callers = [0xffff_ffff_8100_2000u64, 0xffff_ffff_8100_3000];
        let mut recs = Vec::new();
        for i in 0..200u64 {
            recs.push(Record::Sample(sample(
                0,
                1_000_000 * i,
                0xffff_ffff_8100_1000 + (i % 7) * 16,
                &callers[..(i % 3) as usize],
            )));
            if i == 50 {
                recs.push(Record::TaskSwitch(TaskSwitch {
                    run: 0,
                    vcpu: 0,
                    task: Some(1),
                }));
                recs.push(Record::Task(Task::default()));
            }
        }
        // A sample with no stack, one whose stack does not start at RIP, another vCPU.
        let mut odd = sample(0, 300_000_000, 0x1234, &[]);
        odd.stack.clear();
        recs.push(Record::Sample(odd));
        let mut odd = sample(0, 301_000_000, 0x1234, &[]);
        odd.stack = vec![0x9999, 0x8888];
        recs.push(Record::Sample(odd));
        recs.push(Record::Sample(sample(1, 5, u64::MAX, &[0, u64::MAX])));
        let (back, bytes) = round_trip(&recs);
        assert_eq!(back, recs);
        let plain: usize = recs
            .iter()
            .map(|r| r.encode_into(Vec::new()).expect("encode").len() + 8)
            .sum();
        assert!(
            bytes * 2 < plain,
            "compact {bytes} bytes vs plain {plain} bytes"
        );
    }

    /// (wait stacks, task definitions, other records), each in its order:
    /// the compactor keeps the order of samples and task switches only.
    fn split_waits(recs: Vec<Record>) -> (Vec<Record>, Vec<Record>, Vec<Record>) {
        let (waits, rest): (Vec<_>, Vec<_>) = recs
            .into_iter()
            .partition(|r| matches!(r, Record::WaitStack(_)));
        let (tasks, rest) = rest.into_iter().partition(|r| matches!(r, Record::Task(_)));
        (waits, tasks, rest)
    }

    fn count(recs: &[Record], ty: crate::trace::RecordType) -> usize {
        recs.iter().filter(|r| r.record_type() == ty).count()
    }

    #[test]
    fn waits_share_the_stack_table_and_do_not_cut_sample_blocks() {
        use crate::trace::RecordType;
        let base = 0xffff_ffff_8100_0000u64;
        let waits = [
            vec![base + 0x105, base + 0x2045, base + 0x3085],
            vec![base + 0x105, base + 0x4045],
            // The same frames as the samples' callers below: one definition.
            vec![base + 0x8005, base + 0x9005],
        ];
        let mut recs = Vec::new();
        for i in 0..300u64 {
            let t = 1_000_000 * i;
            if i % 10 != 0 {
                recs.push(Record::WaitStack(WaitStack {
                    run: 0,
                    vcpu: 0,
                    t_ns: t,
                    task: (i != 33).then_some(1),
                    state: if i % 7 == 0 { 0 } else { 0x402 },
                    stack: if i == 150 {
                        Vec::new()
                    } else {
                        waits[(i / 100) as usize].clone()
                    },
                    stack_end: 1,
                }));
            }
            if i == 100 {
                recs.push(Record::Task(Task::default()));
            }
            if i == 200 {
                recs.push(Record::TaskSwitch(TaskSwitch {
                    run: 0,
                    vcpu: 0,
                    task: Some(2),
                }));
            }
            recs.push(Record::Sample(sample(
                0,
                t,
                base + 0x7000 + (i % 5) * 8,
                &waits[2],
            )));
        }
        recs.push(Record::WaitStack(WaitStack {
            vcpu: 1,
            t_ns: 5,
            stack: waits[0].clone(),
            ..WaitStack::default()
        }));

        let mut c = Compactor::default();
        let mut out = Vec::new();
        c.compact(recs.clone(), &mut out);
        // Only the task switch cuts vCPU 0's samples; its waits make one
        // block, vCPU 1's another; three wait stacks and one sample stack
        // (shared with a wait stack) are defined once each.
        assert_eq!(count(&out, RecordType::SampleBlock), 2);
        assert_eq!(count(&out, RecordType::WaitBlock), 2);
        assert_eq!(count(&out, RecordType::StackDef), 3);
        assert_eq!(count(&out, RecordType::WaitStack), 0);

        let (back, _) = round_trip(&recs);
        let (back_waits, back_tasks, back_rest) = split_waits(back);
        let (want_waits, want_tasks, want_rest) = split_waits(recs);
        assert!(back_rest == want_rest, "samples or task switches differ");
        assert_eq!(back_tasks, want_tasks);
        assert!(back_waits == want_waits, "waits differ");

        let wait_bytes: usize = out
            .iter()
            .filter(|r| r.record_type() == RecordType::WaitBlock)
            .map(|r| r.encode_into(Vec::new()).expect("encode").len() + 8)
            .sum();
        let plain: usize = want_waits
            .iter()
            .map(|r| r.encode_into(Vec::new()).expect("encode").len() + 8)
            .sum();
        let n = want_waits.len();
        assert!(
            wait_bytes < 12 * n && wait_bytes * 3 < plain,
            "{n} waits: {wait_bytes} bytes in blocks, {plain} bytes plain"
        );
    }

    #[test]
    fn hostile_wait_blocks_keep_their_waits_without_bad_frames() {
        let mut e = Expander::default();
        e.define(
            StackDef {
                id: 0,
                frames: vec![7; 1000],
            },
            128,
        )
        .expect("definition");
        let b = WaitBlock {
            run: 1,
            vcpu: 0,
            t_ns: u64::MAX,
            waits: vec![
                CompactWait {
                    stack: u32::MAX,
                    dt_ns: 2,
                    ..CompactWait::default()
                },
                CompactWait {
                    stack: 1,
                    dt_ns: -1,
                    ..CompactWait::default()
                },
                CompactWait::default(),
            ],
        };
        let (w, counts) = e.expand_waits(b, 128).expect("expand");
        assert_eq!(
            counts,
            ExpandCounts {
                undefined: 1,
                cut: 1
            }
        );
        let got: Vec<(u64, usize)> = w.iter().map(|w| (w.t_ns, w.stack.len())).collect();
        // Times wrap as they were written; no stack, a cut one, none.
        assert_eq!(got, [(1, 0), (0, 128), (0, 0)]);
        let big = WaitBlock {
            waits: vec![CompactWait::default(); MAX_BLOCK_SAMPLES + 1],
            ..WaitBlock::default()
        };
        assert!(matches!(
            e.expand_waits(big, 128),
            Err(ExpandError::BlockTooLarge(_))
        ));
    }

    #[test]
    fn hostile_ids_and_blocks_are_refused_without_allocating() {
        let mut e = Expander::default();
        assert_eq!(
            e.define(
                StackDef {
                    id: u32::MAX,
                    frames: vec![1]
                },
                128
            ),
            Err(ExpandError::OutOfOrder {
                id: u32::MAX,
                expected: 0
            })
        );
        e.define(
            StackDef {
                id: 0,
                frames: vec![7; 1000],
            },
            128,
        )
        .expect("first definition");
        let b = SampleBlock {
            samples: vec![
                CompactSample {
                    stack: u32::MAX,
                    leaf_is_rip: true,
                    drip: 5,
                    ..CompactSample::default()
                },
                CompactSample {
                    stack: 1,
                    leaf_is_rip: true,
                    ..CompactSample::default()
                },
            ],
            ..SampleBlock::default()
        };
        let (s, counts) = e.expand(b, 128).expect("expand");
        assert_eq!(
            counts,
            ExpandCounts {
                undefined: 1,
                cut: 1
            }
        );
        assert_eq!(s[0].stack, vec![5]);
        assert_eq!(s[1].stack.len(), 128, "cut to the depth cap");
        let big = SampleBlock {
            samples: vec![CompactSample::default(); MAX_BLOCK_SAMPLES + 1],
            ..SampleBlock::default()
        };
        assert!(matches!(
            e.expand(big, 128),
            Err(ExpandError::BlockTooLarge(_))
        ));
    }
}
