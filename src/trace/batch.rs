//! A batch of records handed from a vCPU thread to the writer thread with no
//! heap allocation per record.
//!
//! A `Sample` or `WaitStack` owns its stack (and a sample its KVM deltas) as
//! `Vec`s. Made on the vCPU thread and freed on the writer thread, each of
//! those was a cross-thread malloc/free pair per sample: glibc then takes
//! the arena lock on both threads, and the vCPU thread waited for it (a
//! tenth of a sample's own cost in `benches/sample_path.rs`). A
//! [`RecordBatch`] keeps every stack and delta list of the batch in shared
//! buffers instead; the writer thread rebuilds the records
//! ([`RecordBatch::take_records`]), so allocations and frees stay on one
//! thread. The records, their order and the file's bytes are unchanged.
//!
//! The batches themselves are reused ([`BatchPool`]): the writer thread
//! empties a batch and hands it back with its buffers' capacity kept. A
//! fresh batch per hand-over made the vCPU thread take a page fault per
//! 4 KiB it touched, hundreds per boot, counted in the host faults the trace
//! charges to the guest.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::record::{Record, Sample, WaitStack};

/// Records in order, with the stacks and KVM deltas of samples and wait
/// stacks kept aside in two buffers (see the module doc).
#[derive(Debug, Default)]
pub struct RecordBatch {
    entries: Vec<Entry>,
    frames: Vec<u64>,
    kvm: Vec<(u16, u64)>,
    samples: usize,
}

/// One record; for samples and wait stacks, where their vectors are.
#[derive(Debug)]
struct Entry {
    record: Record,
    frames: Range<usize>,
    kvm: Range<usize>,
}

impl RecordBatch {
    /// An empty batch with room for `records` records (stacks of about 32
    /// frames) before it allocates. Its buffers' pages are touched here, so
    /// the thread that makes it takes their page faults now, not while it
    /// samples.
    pub fn with_capacity(records: usize) -> RecordBatch {
        let mut b = RecordBatch {
            entries: Vec::with_capacity(records),
            frames: Vec::with_capacity(records * 32),
            kvm: Vec::with_capacity(records * 4),
            samples: 0,
        };
        b.frames.resize(b.frames.capacity(), 0);
        b.kvm.resize(b.kvm.capacity(), (0, 0));
        for _ in 0..b.entries.capacity() {
            b.push(Record::Sample(Sample::default()));
        }
        b.clear();
        b
    }

    /// Empties the batch, keeping its buffers' capacity.
    fn clear(&mut self) {
        self.entries.clear();
        self.frames.clear();
        self.kvm.clear();
        self.samples = 0;
    }

    /// Records in the batch.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Samples in the batch (pushed with [`Self::push_sample`]).
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// True when the batch holds no record.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends any record as it is.
    pub fn push(&mut self, record: Record) {
        self.entries.push(Entry {
            record,
            frames: 0..0,
            kvm: 0..0,
        });
    }

    /// Appends a sample whose `stack` and `kvm` are `stack` and `kvm` (the
    /// sample's own vectors are left empty and filled in by
    /// [`Self::take_records`]).
    pub fn push_sample(&mut self, sample: Sample, stack: &[u64], kvm: &[(u16, u64)]) {
        let frames = self.put_frames(stack);
        let start = self.kvm.len();
        self.kvm.extend_from_slice(kvm);
        self.samples += 1;
        self.entries.push(Entry {
            record: Record::Sample(sample),
            frames,
            kvm: start..self.kvm.len(),
        });
    }

    /// Appends a wait stack whose `stack` is `stack` (as [`Self::push_sample`]).
    pub fn push_wait(&mut self, wait: WaitStack, stack: &[u64]) {
        let frames = self.put_frames(stack);
        self.entries.push(Entry {
            record: Record::WaitStack(wait),
            frames,
            kvm: 0..0,
        });
    }

    fn put_frames(&mut self, stack: &[u64]) -> Range<usize> {
        let start = self.frames.len();
        self.frames.extend_from_slice(stack);
        start..self.frames.len()
    }

    /// The records, in order, with their vectors filled in; the batch is
    /// left empty with its capacity, to be reused.
    pub fn take_records(&mut self) -> Vec<Record> {
        let RecordBatch {
            entries,
            frames,
            kvm,
            ..
        } = self;
        let slice = |r: Range<usize>| frames.get(r).unwrap_or_default().to_vec();
        let records = entries
            .drain(..)
            .map(|e| match e.record {
                Record::Sample(mut s) if !e.frames.is_empty() || !e.kvm.is_empty() => {
                    s.stack = slice(e.frames);
                    s.kvm = kvm.get(e.kvm).unwrap_or_default().to_vec();
                    Record::Sample(s)
                }
                Record::WaitStack(mut w) if !e.frames.is_empty() => {
                    w.stack = slice(e.frames);
                    Record::WaitStack(w)
                }
                r => r,
            })
            .collect();
        self.clear();
        records
    }
}

/// Emptied batches waiting for reuse, shared by the vCPU threads (which take
/// them) and the writer thread (which gives them back).
#[derive(Debug, Default)]
pub struct BatchPool {
    free: Mutex<Vec<RecordBatch>>,
    /// The largest batch size reserved (records): what emptied batches are
    /// kept near.
    records: AtomicUsize,
}

/// Most emptied batches a pool keeps: a few per vCPU is plenty, since the
/// writer empties a batch long before the next one is full.
const POOL_MAX: usize = 64;

impl BatchPool {
    /// An emptied batch, if one is free.
    pub fn try_take(&self) -> Option<RecordBatch> {
        self.free.lock().ok().and_then(|mut f| f.pop())
    }

    /// Makes `n` batches of `records` records ready in the pool (called on a
    /// vCPU thread before it samples, so their pages are in place).
    pub fn reserve(&self, n: usize, records: usize) {
        self.records.fetch_max(records, Ordering::Relaxed);
        let fresh: Vec<RecordBatch> = (0..n)
            .map(|_| RecordBatch::with_capacity(records))
            .collect();
        if let Ok(mut f) = self.free.lock() {
            f.extend(fresh);
        }
    }

    /// The size batches were reserved at (records; 0 before any was).
    fn records(&self) -> usize {
        self.records.load(Ordering::Relaxed)
    }

    /// Returns an emptied batch for reuse (dropped when the pool is full).
    /// A batch that grew far beyond the reserved size (it kept filling
    /// while none was free, longer than the sampler lets it) is shrunk
    /// first, so the pool holds little more than its working set.
    pub fn give_back(&self, mut batch: RecordBatch) {
        let records = self.records();
        batch.clear();
        if records > 0 && batch.entries.capacity() > records * 16 {
            batch.entries.shrink_to(records);
            batch.frames.shrink_to(records * 32);
            batch.kvm.shrink_to(records * 4);
        }
        if let Ok(mut f) = self.free.lock() {
            if f.len() < POOL_MAX {
                f.push(batch);
            }
        }
    }

    /// Batches waiting for reuse.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.free.lock().map_or(0, |f| f.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::record::TaskSwitch;

    #[test]
    fn records_come_back_in_order_with_their_vectors() {
        let mut b = RecordBatch::with_capacity(2);
        let switch = Record::TaskSwitch(TaskSwitch {
            run: 0,
            vcpu: 1,
            task: Some(3),
        });
        b.push(switch.clone());
        let s = Sample {
            t_ns: 5,
            ..Sample::default()
        };
        b.push_sample(s.clone(), &[1, 2, 3], &[(4, 9)]);
        let w = WaitStack {
            t_ns: 5,
            state: 2,
            ..WaitStack::default()
        };
        b.push_wait(w.clone(), &[7, 8]);
        // A sample with nothing in its vectors stays as it is.
        b.push_sample(s.clone(), &[], &[]);
        assert_eq!((b.len(), b.samples()), (4, 2));
        let want = vec![
            switch,
            Record::Sample(Sample {
                stack: vec![1, 2, 3],
                kvm: vec![(4, 9)],
                ..s.clone()
            }),
            Record::WaitStack(WaitStack {
                stack: vec![7, 8],
                ..w
            }),
            Record::Sample(s),
        ];
        assert_eq!(b.take_records(), want);
        // Emptied, with its buffers kept for the next batch.
        assert!(b.is_empty() && b.samples() == 0);
        assert!(b.frames.capacity() >= 64 && b.entries.capacity() >= 2);
        b.push_sample(Sample::default(), &[4], &[]);
        assert_eq!(b.take_records().len(), 1);
    }

    #[test]
    fn the_pool_hands_back_what_it_was_given() {
        let pool = BatchPool::default();
        pool.reserve(2, 4);
        assert_eq!(pool.len(), 2);
        let mut b = pool.try_take().expect("reserved");
        let cap = b.frames.capacity();
        b.push_sample(Sample::default(), &[1; 100], &[]);
        let grown = b.frames.capacity();
        assert!(grown >= 100 && grown >= cap);
        pool.give_back(b);
        assert_eq!(pool.len(), 2);
        // The most recently given back comes out first, emptied, capacity kept.
        let again = pool.try_take().expect("given back");
        assert!(again.is_empty());
        assert_eq!(again.frames.capacity(), grown);
        assert!(pool.try_take().is_some());
        // None is made when none is free.
        assert!(pool.try_take().is_none());
        // A batch that grew far past its size comes back shrunk.
        let mut big = again;
        for _ in 0..200 {
            big.push_sample(Sample::default(), &[1; 32], &[]);
        }
        pool.give_back(big);
        let small = pool.try_take().expect("given back");
        assert!(
            small.entries.capacity() < 100,
            "{}",
            small.entries.capacity()
        );
    }
}
