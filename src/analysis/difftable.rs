//! The data of `diff`'s table: functions that got slower or faster from A to B,
//! self and total, as share of the boot and as estimated time (or counts) per
//! boot, with Welch's t-test over the per-run values.

use std::collections::{BTreeSet, HashMap};

use serde::Serialize;

use super::diffnorm::Normalize;
use super::fold::NameTree;
use super::fold::Weight;
use super::functions::{by_function_name_weighted, run_total_weighted, Cost, FunctionCost};
use super::stats::{welch_t_test, ALPHA};
use crate::profile::Profile;

/// Per-run function costs of one side of a diff.
#[derive(Debug, Clone, Default)]
pub struct SideRuns {
    /// Per run: function name → cost.
    pub functions: Vec<HashMap<String, FunctionCost>>,
    /// Per run: the run's total cost.
    pub totals: Vec<Cost>,
}

impl SideRuns {
    /// Per-run function costs of a profile (every sample).
    pub fn of(p: &Profile) -> SideRuns {
        SideRuns::weighted(p, Weight::Time)
    }

    /// Per-run function costs of the samples `weight` looks at: for
    /// [`Weight::Wall`] the boot thread's running samples and blocked
    /// stacks, as `flame`/`export --weight wall` take them.
    pub fn weighted(p: &Profile, weight: Weight) -> SideRuns {
        let tree = NameTree::new(p);
        SideRuns {
            functions: p
                .runs
                .iter()
                .map(|r| by_function_name_weighted(p, &tree, r, weight))
                .collect(),
            totals: p
                .runs
                .iter()
                .map(|r| run_total_weighted(r, weight))
                .collect(),
        }
    }
}

/// One measure (self or total) of one function on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Metric {
    /// A's mean per-run share of the run's total weight (0–1).
    pub a_share: f64,
    /// B's mean per-run share (0–1).
    pub b_share: f64,
    /// A's mean per boot: ms of host time, or faults/exits.
    pub a_per_boot: f64,
    /// B's mean per boot.
    pub b_per_boot: f64,
    /// Two-sided p-value of Welch's t-test on the per-run values in the
    /// normalization's unit; `None` with fewer than two runs on a side.
    pub p: Option<f64>,
}

impl Metric {
    /// B − A in the normalization's unit (share, or per-boot value).
    pub fn delta(&self, mode: Normalize) -> f64 {
        match mode {
            Normalize::Share => self.b_share - self.a_share,
            Normalize::PerBoot => self.b_per_boot - self.a_per_boot,
        }
    }

    /// True when the test says p < [`ALPHA`].
    pub fn significant(&self) -> bool {
        self.p.is_some_and(|p| p < ALPHA)
    }
}

/// A function's change from A to B.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionDelta {
    /// Function name.
    pub name: String,
    /// As the innermost frame.
    pub self_metric: Metric,
    /// Anywhere on the stack.
    pub total_metric: Metric,
}

/// Which measure ranks the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SortBy {
    /// Self change (where the time is spent).
    #[default]
    #[serde(rename = "self")]
    Self_,
    /// Total change (which subtree grew).
    Total,
}

/// Per-boot display scale of a weight's base unit (ns → ms for time).
fn per_boot_scale(weight: Weight) -> f64 {
    match weight {
        Weight::Time | Weight::Wall => 1e-6,
        Weight::Samples | Weight::Faults | Weight::Exits => 1.0,
    }
}

/// Per-run (value in display units, share) of one function.
fn per_run(side: &SideRuns, name: &str, weight: Weight, total: bool) -> (Vec<f64>, Vec<f64>) {
    let scale = per_boot_scale(weight);
    let mut vals = Vec::with_capacity(side.functions.len());
    let mut shares = Vec::with_capacity(side.functions.len());
    for (fns, run_total) in side.functions.iter().zip(&side.totals) {
        let c = fns.get(name).map_or(0, |f| {
            if total {
                f.total_cost.get(weight)
            } else {
                f.self_cost.get(weight)
            }
        });
        let t = run_total.get(weight);
        vals.push(c as f64 * scale);
        shares.push(if t == 0 { 0.0 } else { c as f64 / t as f64 });
    }
    (vals, shares)
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn metric(
    a: &SideRuns,
    b: &SideRuns,
    name: &str,
    weight: Weight,
    mode: Normalize,
    total: bool,
) -> Metric {
    let (av, ash) = per_run(a, name, weight, total);
    let (bv, bsh) = per_run(b, name, weight, total);
    let p = match mode {
        Normalize::PerBoot => welch_t_test(&av, &bv),
        Normalize::Share => welch_t_test(&ash, &bsh),
    }
    .map(|t| t.p);
    Metric {
        a_share: mean(&ash),
        b_share: mean(&bsh),
        a_per_boot: mean(&av),
        b_per_boot: mean(&bv),
        p,
    }
}

/// Every function seen on either side, with its change.
pub fn function_deltas(
    a: &SideRuns,
    b: &SideRuns,
    weight: Weight,
    mode: Normalize,
) -> Vec<FunctionDelta> {
    let names: BTreeSet<&str> = a
        .functions
        .iter()
        .chain(&b.functions)
        .flat_map(|m| m.keys().map(String::as_str))
        .collect();
    names
        .into_iter()
        .map(|name| FunctionDelta {
            name: name.to_string(),
            self_metric: metric(a, b, name, weight, mode, false),
            total_metric: metric(a, b, name, weight, mode, true),
        })
        .collect()
}

/// The slowest-growing and fastest-shrinking functions, `top` of each,
/// ranked by the change of the `sort` measure. Unchanged functions are left out.
pub fn slower_faster(
    deltas: &[FunctionDelta],
    mode: Normalize,
    sort: SortBy,
    top: usize,
) -> (Vec<&FunctionDelta>, Vec<&FunctionDelta>) {
    let key = |d: &FunctionDelta| match sort {
        SortBy::Self_ => d.self_metric.delta(mode),
        SortBy::Total => d.total_metric.delta(mode),
    };
    let mut slower: Vec<&FunctionDelta> = deltas.iter().filter(|d| key(d) > 0.0).collect();
    let mut faster: Vec<&FunctionDelta> = deltas.iter().filter(|d| key(d) < 0.0).collect();
    slower.sort_by(|x, y| key(y).total_cmp(&key(x)).then_with(|| x.name.cmp(&y.name)));
    faster.sort_by(|x, y| key(x).total_cmp(&key(y)).then_with(|| x.name.cmp(&y.name)));
    slower.truncate(top);
    faster.truncate(top);
    (slower, faster)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn side(runs: &[&[(&str, u64, u64)]]) -> SideRuns {
        let mut s = SideRuns::default();
        for run in runs {
            let mut m = HashMap::new();
            let mut total = Cost::default();
            for &(name, self_ns, total_ns) in *run {
                let mut f = FunctionCost::default();
                f.self_cost.time_ns = self_ns;
                f.total_cost.time_ns = total_ns;
                total.time_ns += self_ns;
                m.insert(name.to_string(), f);
            }
            s.functions.push(m);
            s.totals.push(total);
        }
        s
    }

    #[test]
    fn consistent_growth_is_significant_and_noise_is_not() {
        let ms = 1_000_000;
        let a = side(&[
            &[
                ("memmap_init_range", 100 * ms, 100 * ms),
                ("other", 50 * ms, 50 * ms),
            ],
            &[
                ("memmap_init_range", 102 * ms, 102 * ms),
                ("other", 49 * ms, 49 * ms),
            ],
            &[
                ("memmap_init_range", 98 * ms, 98 * ms),
                ("other", 51 * ms, 51 * ms),
            ],
        ]);
        let b = side(&[
            &[
                ("memmap_init_range", 400 * ms, 400 * ms),
                ("other", 52 * ms, 52 * ms),
            ],
            &[
                ("memmap_init_range", 405 * ms, 405 * ms),
                ("other", 48 * ms, 48 * ms),
            ],
            &[
                ("memmap_init_range", 395 * ms, 395 * ms),
                ("other", 50 * ms, 50 * ms),
            ],
        ]);
        let d = function_deltas(&a, &b, Weight::Time, Normalize::PerBoot);
        let mm = d
            .iter()
            .find(|x| x.name == "memmap_init_range")
            .expect("row");
        assert!((mm.self_metric.a_per_boot - 100.0).abs() < 1e-9);
        assert!((mm.self_metric.b_per_boot - 400.0).abs() < 1e-9);
        assert!(mm.self_metric.significant(), "p = {:?}", mm.self_metric.p);
        let other = d.iter().find(|x| x.name == "other").expect("row");
        assert!(
            !other.self_metric.significant(),
            "p = {:?}",
            other.self_metric.p
        );

        // In share mode "other" shrinks (its share falls from 1/3 to 1/9) and
        // that shrink is real in share terms.
        let ds = function_deltas(&a, &b, Weight::Time, Normalize::Share);
        let other_s = ds.iter().find(|x| x.name == "other").expect("row");
        assert!(other_s.self_metric.delta(Normalize::Share) < -0.2);

        let (slower, faster) = slower_faster(&d, Normalize::PerBoot, SortBy::Self_, 5);
        assert_eq!(slower[0].name, "memmap_init_range");
        assert!(faster.is_empty(), "other's mean did not change");
    }

    #[test]
    fn one_run_gives_no_p_value() {
        let a = side(&[&[("f", 10, 10)]]);
        let b = side(&[&[("f", 20, 20)], &[("f", 22, 22)]]);
        let d = function_deltas(&a, &b, Weight::Time, Normalize::PerBoot);
        assert_eq!(d[0].self_metric.p, None);
    }

    #[test]
    fn functions_missing_on_one_side_count_as_zero() {
        let a = side(&[&[("gone", 10, 10)], &[("gone", 12, 12)]]);
        let b = side(&[&[("new", 5, 5)], &[("new", 6, 6)]]);
        let d = function_deltas(&a, &b, Weight::Time, Normalize::Share);
        let gone = d.iter().find(|x| x.name == "gone").expect("row");
        assert_eq!(
            (gone.self_metric.a_share, gone.self_metric.b_share),
            (1.0, 0.0)
        );
        let (slower, faster) = slower_faster(&d, Normalize::Share, SortBy::Self_, 5);
        assert_eq!(slower[0].name, "new");
        assert_eq!(faster[0].name, "gone");
    }
}
