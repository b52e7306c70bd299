//! Normalizing two sets of recorded boots so a differential flamegraph
//! compares them fairly, and producing inferno's differential input.
//!
//! Inputs are per-run folded stacks (`root;…;leaf` → weight in base units:
//! ns of host time, or page faults, or KVM exits). Two traces can differ in
//! run count (3 boots vs 30), in sampling rate (1 kHz vs 10 kHz) and in boot
//! length. The weights are already in host time (each sample counts for its
//! interval), which removes the sampling rate; then each stack's weight is
//! averaged per boot, which removes the run count:
//!
//! - [`Normalize::PerBoot`] (default): mean weight per boot, in µs of host
//!   time (or faults/exits per boot). A function whose time did not change
//!   keeps its width and colour; the flamegraph's total width is B's boot.
//!   This is what a kernel-vs-kernel question ("what got slower?") needs.
//! - [`Normalize::Share`]: mean per-run *fraction* of the run's total, in
//!   parts per million. Use it when A and B were recorded on machines of
//!   different speed: absolute times are then not comparable, shares are.
//!   Its cost: when one function grows, every other one shrinks in share and
//!   shows blue although its time did not change.
//!
//! inferno's own `normalize` option (scale A's total to B's total) is
//! `Share` without the per-run averaging: one long run would dominate a sum
//! of runs, so the per-run mean is used instead and inferno's option is off.

use std::collections::{BTreeMap, HashMap};
use std::io;

use super::fold::{NameTree, Weight};
use super::functions::folded_run;
use crate::profile::Profile;

/// How per-run weights are made comparable; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Normalize {
    /// Mean weight per boot (µs of host time, or counts per boot).
    #[default]
    PerBoot,
    /// Mean per-run share of the run's total, in parts per million.
    Share,
}

/// Parts per million: the unit of [`Normalize::Share`].
pub const PPM: f64 = 1_000_000.0;

/// One side of a diff, normalized and scaled to the integers inferno reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NormalizedProfile {
    /// Folded stack → normalized integer weight; stacks that round to 0 are dropped.
    pub stacks: BTreeMap<String, u64>,
    /// Runs that contributed (runs with a zero total cannot have shares).
    pub runs: usize,
}

/// The unit of normalized weights, for the flamegraph's count label.
pub fn unit_name(mode: Normalize, weight: Weight) -> &'static str {
    match (mode, weight) {
        (Normalize::Share, _) => "ppm of boot",
        (Normalize::PerBoot, Weight::Time | Weight::Wall) => "µs per boot",
        (Normalize::PerBoot, Weight::Samples) => "samples per boot",
        (Normalize::PerBoot, Weight::Faults) => "page faults per boot",
        (Normalize::PerBoot, Weight::Exits) => "exits per boot",
    }
}

/// Normalizes per-run folded weights (base units: ns for time, counts otherwise).
pub fn normalize(
    runs: &[HashMap<String, u64>],
    mode: Normalize,
    weight: Weight,
) -> NormalizedProfile {
    // ns → µs for time; counts stay counts.
    let per_boot_div = match weight {
        Weight::Time | Weight::Wall => 1_000.0,
        Weight::Samples | Weight::Faults | Weight::Exits => 1.0,
    };
    let mut sums: BTreeMap<&str, f64> = BTreeMap::new();
    let mut used = 0usize;
    for run in runs {
        let total: u64 = run.values().fold(0u64, |a, &v| a.saturating_add(v));
        let div = match mode {
            Normalize::PerBoot => per_boot_div,
            Normalize::Share if total == 0 => continue,
            Normalize::Share => total as f64 / PPM,
        };
        used += 1;
        for (stack, &v) in run {
            *sums.entry(stack.as_str()).or_default() += v as f64 / div;
        }
    }
    let mut stacks = BTreeMap::new();
    if used > 0 {
        for (stack, sum) in sums {
            let v = (sum / used as f64).round();
            if v >= 1.0 {
                stacks.insert(stack.to_string(), v as u64);
            }
        }
    }
    NormalizedProfile { stacks, runs: used }
}

/// Per-run folded stacks of a profile in base units of `weight` (the
/// input of [`normalize`]).
pub fn per_run_folded(p: &Profile, weight: Weight) -> Vec<HashMap<String, u64>> {
    let tree = NameTree::new(p);
    p.runs
        .iter()
        .map(|r| folded_run(p, &tree, r, weight))
        .collect()
}

/// Folded-stack text (`stack weight` per line, sorted by stack).
pub fn folded_text(p: &NormalizedProfile) -> String {
    let mut s = String::new();
    for (stack, v) in &p.stacks {
        s.push_str(stack);
        s.push(' ');
        s.push_str(&v.to_string());
        s.push('\n');
    }
    s
}

/// inferno's differential input (`stack a b` per line), sorted by stack as
/// inferno's flamegraph expects; inferno's own normalization is off because
/// both sides are already normalized.
pub fn differential_lines(a: &NormalizedProfile, b: &NormalizedProfile) -> io::Result<Vec<String>> {
    let (ta, tb) = (folded_text(a), folded_text(b));
    let mut out = Vec::new();
    let opt = inferno::differential::Options {
        normalize: false,
        strip_hex: false,
    };
    inferno::differential::from_readers(opt, ta.as_bytes(), tb.as_bytes(), &mut out)?;
    let text = String::from_utf8(out).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn per_boot_is_independent_of_run_count() {
        let one = vec![run(&[("a;b", 3_000_000), ("a;c", 1_000_000)])];
        let three = vec![one[0].clone(), one[0].clone(), one[0].clone()];
        let p1 = normalize(&one, Normalize::PerBoot, Weight::Time);
        let p3 = normalize(&three, Normalize::PerBoot, Weight::Time);
        assert_eq!(p1.stacks, p3.stacks);
        assert_eq!(p1.stacks["a;b"], 3_000, "ns → µs");
        assert_eq!(p3.runs, 3);
    }

    #[test]
    fn share_is_independent_of_boot_length() {
        let short = vec![run(&[("a;b", 30), ("a;c", 10)])];
        let long = vec![run(&[("a;b", 3_000), ("a;c", 1_000)])];
        let ps = normalize(&short, Normalize::Share, Weight::Time);
        let pl = normalize(&long, Normalize::Share, Weight::Time);
        assert_eq!(ps.stacks, pl.stacks);
        assert_eq!(ps.stacks["a;b"], 750_000);
        let total: u64 = ps.stacks.values().sum();
        assert_eq!(total, 1_000_000);
    }

    #[test]
    fn share_skips_empty_runs_and_averages_the_rest() {
        let runs = vec![
            run(&[("x", 0)]),
            run(&[("x", 1), ("y", 1)]),
            run(&[("x", 3), ("y", 1)]),
        ];
        let p = normalize(&runs, Normalize::Share, Weight::Faults);
        assert_eq!(p.runs, 2);
        // x: (0.5 + 0.75) / 2 = 0.625
        assert_eq!(p.stacks["x"], 625_000);
        assert_eq!(p.stacks["y"], 375_000);
    }

    #[test]
    fn differential_lines_pair_both_sides() {
        let a = normalize(
            &[run(&[("r;f", 2_000), ("r;g", 1_000)])],
            Normalize::PerBoot,
            Weight::Time,
        );
        let b = normalize(
            &[run(&[("r;f", 5_000), ("r;h", 1_000)])],
            Normalize::PerBoot,
            Weight::Time,
        );
        let lines = differential_lines(&a, &b).expect("diff");
        assert_eq!(lines, vec!["r;f 2 5", "r;g 1 0", "r;h 0 1"]);
    }
}
