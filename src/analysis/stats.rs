//! Summaries over runs (min, median, max, standard deviation) and the
//! two-sample significance test used by `diff`.
//!
//! Boot-time profiles are noisy: one boot's share of a function moves by a few
//! percent from run to run. Reports summarize a value over runs, and `diff`
//! asks whether a function's per-run values differ between two kernels more
//! than that noise explains.

use std::collections::HashMap;
use std::hash::Hash;

use serde::Serialize;
use statrs::distribution::{ContinuousCDF, StudentsT};
use statrs::statistics::{Data, Distribution, Max, Min, OrderStatistics};

/// A value summarized over runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Number of runs.
    pub n: usize,
    /// Smallest value.
    pub min: f64,
    /// Median (mean of the two middle values for an even count).
    pub median: f64,
    /// Largest value.
    pub max: f64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Sample standard deviation (n − 1 in the denominator); `None` with one run.
    pub stddev: Option<f64>,
}

impl Summary {
    /// Summarizes `values`; `None` when there are none or any is not finite.
    pub fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mut data = Data::new(values.to_vec());
        let stddev = if values.len() > 1 {
            data.std_dev()
        } else {
            None
        };
        Some(Summary {
            n: values.len(),
            min: data.min(),
            median: data.median(),
            max: data.max(),
            mean: data.mean().unwrap_or(f64::NAN),
            stddev,
        })
    }

    /// Summarizes integer values (nanoseconds, counts).
    pub fn of_u64(values: &[u64]) -> Option<Summary> {
        let v: Vec<f64> = values.iter().map(|&x| x as f64).collect();
        Summary::of(&v)
    }

    /// Summarizes `n` values of which only `present` are given; the other
    /// `n - present.len()` are 0. Time and memory are linear in
    /// `present.len()`, not in `n`: a name sampled in 3 of 50 000 runs costs
    /// 3. Same definitions as [`Summary::of`] (median of an even count = mean
    /// of the middle two; stddev with n − 1); mean and variance are computed
    /// in closed form, so the last bits can differ from [`Summary::of`].
    /// `None` when `n` is 0, `present` has more than `n` values, or one is
    /// not finite.
    pub fn of_sparse(present: &[f64], n: usize) -> Option<Summary> {
        let k = present.len();
        if n == 0 || k > n || present.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let zeros = n - k;
        let mut sorted = present.to_vec();
        sorted.sort_by(f64::total_cmp);
        let at = |i: usize| -> f64 {
            if i < zeros {
                0.0
            } else {
                sorted[i - zeros]
            }
        };
        // Zeros sort where 0 belongs among the given values (which may be negative).
        let mut all_min = sorted.first().copied().unwrap_or(0.0);
        let mut all_max = sorted.last().copied().unwrap_or(0.0);
        if zeros > 0 {
            all_min = all_min.min(0.0);
            all_max = all_max.max(0.0);
        }
        let negative = sorted.iter().any(|&v| v < 0.0);
        let median = if negative {
            // Rare (integer inputs are never negative): fall back to the dense path.
            let mut dense = vec![0.0; zeros];
            dense.extend_from_slice(&sorted);
            return Summary::of(&dense);
        } else if n % 2 == 1 {
            at(n / 2)
        } else {
            (at(n / 2 - 1) + at(n / 2)) / 2.0
        };
        let nf = n as f64;
        let mean = present.iter().sum::<f64>() / nf;
        let stddev = (n > 1).then(|| {
            let sq: f64 = present.iter().map(|x| (x - mean).powi(2)).sum::<f64>()
                + zeros as f64 * mean * mean;
            (sq / (nf - 1.0)).sqrt()
        });
        Some(Summary {
            n,
            min: all_min,
            median,
            max: all_max,
            mean,
            stddev,
        })
    }
}

/// A group of per-run rows summarized over runs by [`over_runs`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct OverRuns {
    /// Time per run, ns (0 in runs without the group).
    pub time_ns: Summary,
    /// Mean per-run share (runs without the group count 0).
    pub share: f64,
    /// Runs in which the group appears (rows, if a run has two with one key).
    pub runs_seen: usize,
}

/// Groups the rows of `per_run` (one list per run) by `key` and summarizes
/// each group's `(time ns, share)` from `cost` over all the runs (absent runs
/// count 0); `row` makes the result of a key and its summary. Longest mean
/// time first, ties by key.
pub(crate) fn over_runs<'a, T, K: Ord + Hash, R>(
    per_run: &'a [Vec<T>],
    key: impl Fn(&'a T) -> K,
    cost: impl Fn(&T) -> (u64, f64),
    mut row: impl FnMut(K, OverRuns) -> R,
) -> Vec<R> {
    let n = per_run.len();
    let mut by: HashMap<K, Vec<(f64, f64)>> = HashMap::new();
    for t in per_run.iter().flatten() {
        let (time_ns, share) = cost(t);
        by.entry(key(t)).or_default().push((time_ns as f64, share));
    }
    let mut groups: Vec<(K, OverRuns)> = by
        .into_iter()
        .filter_map(|(k, v)| {
            let times: Vec<f64> = v.iter().map(|&(t, _)| t).collect();
            let over = OverRuns {
                time_ns: Summary::of_sparse(&times, n)?,
                share: v.iter().map(|&(_, s)| s).sum::<f64>() / n.max(1) as f64,
                runs_seen: v.len(),
            };
            Some((k, over))
        })
        .collect();
    groups.sort_by(|(ka, a), (kb, b)| {
        b.time_ns
            .mean
            .total_cmp(&a.time_ns.mean)
            .then_with(|| ka.cmp(kb))
    });
    groups.into_iter().map(|(k, over)| row(k, over)).collect()
}

/// Outcome of Welch's two-sample t-test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WelchTest {
    /// The t statistic (positive when the second sample's mean is larger).
    pub t: f64,
    /// Welch–Satterthwaite degrees of freedom.
    pub df: f64,
    /// Two-sided p-value.
    pub p: f64,
}

/// Significance level below which a difference is called significant.
pub const ALPHA: f64 = 0.05;

/// Welch's unequal-variances t-test of `a` against `b`, two-sided.
///
/// Chosen over Mann–Whitney U because boot comparisons often have few runs:
/// with 3 runs per side the smallest two-sided U-test p-value is 0.1, so U
/// could never flag anything; Welch's test does not assume equal variances,
/// which matters when one kernel is noisier than the other.
///
/// `None` when either side has fewer than two values (no variance to test
/// against) or a value is not finite. When both sides have zero variance the
/// difference is exact: p = 0 if the means differ, 1 if not.
pub fn welch_t_test(a: &[f64], b: &[f64]) -> Option<WelchTest> {
    if a.len() < 2 || b.len() < 2 {
        return None;
    }
    let (ma, va) = mean_var(a)?;
    let (mb, vb) = mean_var(b)?;
    welch_from_moments((a.len() as f64, ma, va), (b.len() as f64, mb, vb))
}

/// Welch's test from each side's (count, mean, sample variance), for inputs
/// that keep only summaries (a stored `report --json`). Same definitions as
/// [`welch_t_test`]; `None` when a count is below 2 or a value is not finite.
pub fn welch_from_moments(a: (f64, f64, f64), b: (f64, f64, f64)) -> Option<WelchTest> {
    let ((na, ma, va), (nb, mb, vb)) = (a, b);
    if na < 2.0 || nb < 2.0 || [ma, va, mb, vb].iter().any(|x| !x.is_finite()) {
        return None;
    }
    let (sa, sb) = (va.max(0.0) / na, vb.max(0.0) / nb);
    let se2 = sa + sb;
    if se2 <= 0.0 {
        let differ = ma != mb;
        return Some(WelchTest {
            t: if differ {
                f64::INFINITY.copysign(mb - ma)
            } else {
                0.0
            },
            df: na + nb - 2.0,
            p: if differ { 0.0 } else { 1.0 },
        });
    }
    let t = (mb - ma) / se2.sqrt();
    let denom = sa * sa / (na - 1.0) + sb * sb / (nb - 1.0);
    // denom > 0 because se2 > 0 and both counts are ≥ 2.
    let df = se2 * se2 / denom;
    let dist = StudentsT::new(0.0, 1.0, df).ok()?;
    let p = (2.0 * dist.sf(t.abs())).clamp(0.0, 1.0);
    Some(WelchTest { t, df, p })
}

/// Mean and sample variance (n − 1); `None` for fewer than two or non-finite values.
fn mean_var(v: &[f64]) -> Option<(f64, f64)> {
    if v.len() < 2 || v.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    Some((mean, var))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_odd_and_even_counts() {
        let s = Summary::of(&[5.0, 1.0, 3.0]).expect("summary");
        assert_eq!(
            (s.n, s.min, s.median, s.max, s.mean),
            (3, 1.0, 3.0, 5.0, 3.0)
        );
        assert!((s.stddev.expect("stddev") - 2.0).abs() < 1e-12);

        let s = Summary::of(&[4.0, 1.0, 2.0, 3.0]).expect("summary");
        assert_eq!(s.median, 2.5);

        let one = Summary::of(&[7.0]).expect("summary");
        assert_eq!(
            (one.min, one.median, one.max, one.stddev),
            (7.0, 7.0, 7.0, None)
        );
        assert!(Summary::of(&[]).is_none());
        assert!(Summary::of(&[1.0, f64::NAN]).is_none());
    }

    #[test]
    fn sparse_summary_matches_the_dense_one() {
        let dense = [0.0, 5.0, 0.0, 1.0, 3.0, 0.0];
        let d = Summary::of(&dense).expect("dense");
        let s = Summary::of_sparse(&[5.0, 1.0, 3.0], 6).expect("sparse");
        assert_eq!((s.n, s.min, s.median, s.max), (d.n, d.min, d.median, d.max));
        assert!((s.mean - d.mean).abs() < 1e-12);
        assert!((s.stddev.expect("sd") - d.stddev.expect("sd")).abs() < 1e-12);
        let one = Summary::of_sparse(&[7.0], 1).expect("one");
        assert_eq!((one.median, one.mean, one.stddev), (7.0, 7.0, None));
        assert!(Summary::of_sparse(&[1.0, 2.0], 1).is_none());
        assert!(Summary::of_sparse(&[], 0).is_none());
    }

    #[test]
    fn welch_matches_a_hand_computed_case() {
        // a: mean 2, var 1; b: mean 5, var 1; n = 3 each.
        // t = 3 / sqrt(2/3) = 3.674; df = (2/3)^2 / (2 * (1/3)^2 / 2) = 4.
        // Two-sided p for t = 3.674 with 4 df is 0.02131 (t-table / scipy).
        let r = welch_t_test(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]).expect("test");
        assert!((r.t - 3.674_234_6).abs() < 1e-6, "t = {}", r.t);
        assert!((r.df - 4.0).abs() < 1e-9, "df = {}", r.df);
        assert!((r.p - 0.021_312).abs() < 1e-4, "p = {}", r.p);
    }

    #[test]
    fn welch_sees_noise_as_noise() {
        let r = welch_t_test(&[1.0, 3.0, 2.0, 2.5], &[2.0, 1.5, 3.0, 2.2]).expect("test");
        assert!(r.p > ALPHA, "p = {}", r.p);
        assert!(r.p <= 1.0);
    }

    #[test]
    fn welch_needs_two_runs_per_side_and_handles_zero_variance() {
        assert!(welch_t_test(&[1.0], &[2.0, 3.0]).is_none());
        assert!(welch_t_test(&[1.0, 2.0], &[]).is_none());
        let exact = welch_t_test(&[1.0, 1.0], &[2.0, 2.0]).expect("test");
        assert_eq!(exact.p, 0.0);
        assert!(exact.t > 0.0);
        let same = welch_t_test(&[1.0, 1.0], &[1.0, 1.0]).expect("test");
        assert_eq!(same.p, 1.0);
    }

    #[test]
    fn over_runs_counts_absent_runs_as_zero_and_breaks_ties_by_key() {
        // (key, time ns, share) rows of four runs, the last empty.
        let per_run = vec![
            vec![("b", 30, 0.5), ("a", 30, 0.5)],
            vec![("c", 90, 0.75)],
            vec![("b", 30, 0.5), ("a", 30, 0.5)],
            vec![],
        ];
        let rows = over_runs(
            &per_run,
            |r| r.0,
            |r| (r.1, r.2),
            |k, o| (k, o.time_ns.mean, o.time_ns.min, o.share, o.runs_seen),
        );
        assert_eq!(
            rows,
            [
                ("c", 22.5, 0.0, 0.1875, 1),
                ("a", 15.0, 0.0, 0.25, 2),
                ("b", 15.0, 0.0, 0.25, 2)
            ]
        );
    }
}
