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
//!
//! The writer compacts [`Record::Sample`]s as it frames them ([`Compactor`]);
//! the reader expands blocks back into [`Sample`]s ([`Expander`]). Both stay
//! append-only: a block is one framed record, so a killed `record` loses at
//! most the block being written, like any other record.

use std::collections::HashMap;

use super::record::{Record, Sample};
// The compact records are records like any other (their structs live with
// the rest in `record`); this module is how they are made and undone.
pub use super::record::{CompactSample, Faults, SampleBlock, StackDef, SysRegs};

/// Most samples in one block: the writer cuts blocks here, the reader skips
/// larger ones (one block must not expand into unbounded memory).
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
    /// to the file) followed by one block; other records pass unchanged.
    /// Order within each vCPU's stream is kept, so task switches between
    /// samples stay where they were.
    pub fn compact(&mut self, recs: impl IntoIterator<Item = Record>, out: &mut Vec<Record>) {
        let mut group: Vec<Sample> = Vec::new();
        for rec in recs {
            match rec {
                Record::Sample(s) => {
                    let same = group
                        .first()
                        .is_some_and(|f| f.run == s.run && f.vcpu == s.vcpu);
                    if !same || group.len() >= MAX_BLOCK_SAMPLES {
                        self.block(&mut group, out);
                    }
                    group.push(s);
                }
                other => {
                    self.block(&mut group, out);
                    out.push(other);
                }
            }
        }
        self.block(&mut group, out);
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
    /// More samples in a block than [`MAX_BLOCK_SAMPLES`].
    #[error("a sample block of {0} samples (at most {MAX_BLOCK_SAMPLES})")]
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
