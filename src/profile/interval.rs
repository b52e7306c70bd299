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
    let mut by_vcpu: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, &(vcpu, _)) in samples.iter().enumerate() {
        by_vcpu.entry(vcpu).or_default().push(i);
    }
    for idx in by_vcpu.values() {
        let mut gaps = Vec::with_capacity(idx.len());
        for pair in idx.windows(2) {
            let gap = samples[pair[1]].1.saturating_sub(samples[pair[0]].1);
            out[pair[0]] = gap;
            gaps.push(gap);
        }
        gaps.sort_unstable();
        let median = gaps.get(gaps.len() / 2).copied();
        if let Some(&last) = idx.last() {
            let to_end = end_ns.map(|e| e.saturating_sub(samples[last].1));
            out[last] = match (to_end, median) {
                (Some(e), Some(m)) => e.min(m),
                (Some(e), None) => e,
                (None, Some(m)) => m,
                (None, None) => 0,
            };
        }
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
