//! The one definition of the host time a sample stands for.
//!
//! A timer sample is a point; the code it caught runs, in expectation, until
//! the next sample, so each sample stands for the time up to the same
//! vCPU's next sample. The last sample of a vCPU stands for the time to the
//! run's end, capped at the median interval of that vCPU so a long tail with
//! no samples (a vCPU stopped, a stuck sampler) is not all charged to one
//! stack. Samples are taken in trace order per vCPU; out-of-order times
//! count as 0. Every renderer (report, diff, speedscope, chrome) uses this.

use std::collections::HashMap;

/// Intervals for samples given as `(vcpu, t_ns)` in trace order; `end_ns`
/// is the run's end on the same clock.
pub fn intervals(samples: &[(u32, u64)], end_ns: Option<u64>) -> Vec<u64> {
    let mut out = vec![0u64; samples.len()];
    // Per vCPU (a slot each): its latest sample so far and its gaps, in one pass.
    let mut last: Vec<usize> = Vec::new();
    let mut gaps: Vec<Vec<u64>> = Vec::new();
    let mut slot_of: HashMap<u32, usize> = HashMap::new();
    let mut cur: Option<(u32, usize)> = None;
    for (i, &(vcpu, t)) in samples.iter().enumerate() {
        let slot = match cur {
            // Consecutive samples are often of one vCPU.
            Some((v, slot)) if v == vcpu => slot,
            _ => *slot_of.entry(vcpu).or_insert_with(|| {
                last.push(usize::MAX);
                gaps.push(Vec::new());
                last.len() - 1
            }),
        };
        cur = Some((vcpu, slot));
        let prev = last[slot];
        if prev != usize::MAX {
            let gap = t.saturating_sub(samples[prev].1);
            out[prev] = gap;
            gaps[slot].push(gap);
        }
        last[slot] = i;
    }
    for (&l, mut g) in last.iter().zip(gaps) {
        // The median as a sort would give it: the middle element.
        let mid = g.len() / 2;
        let median = (!g.is_empty()).then(|| *g.select_nth_unstable(mid).1);
        let to_end = end_ns.map(|e| e.saturating_sub(samples[l].1));
        out[l] = match (to_end, median) {
            (Some(e), Some(m)) => e.min(m),
            (Some(e), None) => e,
            (None, Some(m)) => m,
            (None, None) => 0,
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_run_to_the_next_sample_of_the_same_vcpu() {
        let v = [(0, 0), (1, 5), (0, 10), (0, 30), (1, 25)];
        // vCPU 0: 10, 20, last capped at median(10, 20) = 20.
        // vCPU 1: 20, last capped at median(20) = 20.
        assert_eq!(intervals(&v, Some(1000)), vec![10, 20, 20, 20, 20]);
        let end_close = [(0, 0), (0, 10), (0, 13)];
        assert_eq!(intervals(&end_close, Some(15))[2], 2);
        assert_eq!(intervals(&[(0, 5)], None), vec![0]);
    }
}
