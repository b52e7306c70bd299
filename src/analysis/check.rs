//! `boottrace check`: did a candidate's boot get slower than a baseline's,
//! by more than the user's threshold *and* by more than run-to-run noise?
//!
//! Each side is a set of runs summarized per measure (boot time, time until
//! init, kernel phases, `start_kernel` stages, initcalls, functions' self
//! time) as count, mean and standard deviation ([`Moments`]): exactly what
//! a `report --json` keeps, so a stored report is as good a baseline as the
//! traces it came from.
//!
//! A measure *regressed* when both hold:
//! - its mean grew by more than the threshold: every term of a
//!   [`Threshold`] (a share of its own baseline, a share of the baseline's
//!   boot time, an absolute time) must be exceeded. The threshold also
//!   guards against the many comparisons (hundreds of functions): a change
//!   too small to matter is never reported, however significant.
//! - the growth is significant: a one-sided Welch's t-test on the two sides'
//!   moments (with one run on one side, a prediction test of that run
//!   against the other side's spread, which needs [`MIN_RUNS_AGAINST_ONE`]
//!   runs there), p < `alpha`. Welch over Mann–Whitney
//!   because CI budgets give 2–5 runs, where a rank test cannot reach 0.05.
//!
//! A change beyond the threshold that the test cannot confirm is
//! *undecided*; with the noise measured, [`runs_needed`] says how many runs
//! per side would tell. With one run on each side there is no noise to
//! measure: the verdict is [`Verdict::TooFewRuns`].

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, StudentsT};

use super::doc::ReportDoc;
use super::stats::{welch_from_moments, Summary, ALPHA};

/// Errors of reading a stored report or a threshold.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Not JSON of the report's shape.
    #[error("not a boottrace report --json document: {0}")]
    NotAReport(String),
    /// A report of a version this build does not read.
    #[error("report version {0} is not one this boottrace reads (1)")]
    Version(u32),
    /// A threshold that does not parse.
    #[error("bad threshold {text:?}: {why} (e.g. 5%, 1%boot, 20ms, or 10%,2ms)")]
    Threshold {
        /// What was given.
        text: String,
        /// What is wrong.
        why: &'static str,
    },
}

/// What a measure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The boot as a whole (`boot`, `until init`).
    Boot,
    /// A kernel phase (decompression, head, start_kernel, initcalls, …).
    Phase,
    /// A `start_kernel` stage.
    Stage,
    /// An initcall.
    Initcall,
    /// A function's self time.
    Function,
}

impl Kind {
    /// The word tables use.
    pub fn label(self) -> &'static str {
        match self {
            Kind::Boot => "boot",
            Kind::Phase => "phase",
            Kind::Stage => "stage",
            Kind::Initcall => "initcall",
            Kind::Function => "function",
        }
    }
}

/// A value over runs: how many, mean, sample standard deviation (ns).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Moments {
    /// Runs.
    pub n: usize,
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation (n − 1); `None` with one run.
    pub stddev: Option<f64>,
}

impl From<&Summary> for Moments {
    fn from(s: &Summary) -> Moments {
        Moments {
            n: s.n,
            mean: s.mean,
            stddev: s.stddev,
        }
    }
}

impl Moments {
    /// `n` runs in which the measure was never seen.
    fn zero(n: usize) -> Moments {
        Moments {
            n,
            mean: 0.0,
            stddev: (n > 1).then_some(0.0),
        }
    }

    /// Usable: a positive count and finite values.
    fn valid(&self) -> bool {
        self.n > 0 && self.mean.is_finite() && self.stddev.map_or(true, f64::is_finite)
    }
}

/// One side of a check: its runs summarized per measure.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckSide {
    /// Runs on this side.
    pub runs: usize,
    /// The kernel's version banner (else its build-id), when known.
    pub kernel: Option<String>,
    /// Per measure.
    pub values: BTreeMap<(Kind, String), Moments>,
    /// True when every sampled function is listed (traces); a stored report
    /// lists only its top functions, so a missing one is unknown, not zero.
    pub all_functions: bool,
}

impl CheckSide {
    /// The side of a report built from traces (build it with every function:
    /// `doc::build(profile, usize::MAX)`).
    pub fn from_report(doc: &ReportDoc) -> CheckSide {
        let s = &doc.summary;
        let mut values = BTreeMap::new();
        let mut put = |kind: Kind, name: &str, m: Moments| {
            if m.valid() {
                values.insert((kind, name.to_string()), m);
            }
        };
        if let Some(b) = &s.boot_ns {
            put(Kind::Boot, BOOT, b.into());
        }
        if let Some(b) = &s.until_init_ns {
            put(Kind::Boot, UNTIL_INIT, b.into());
        }
        for (kind, list) in [
            (Kind::Phase, &s.kernel_phases),
            (Kind::Stage, &s.start_kernel_stages),
            (Kind::Initcall, &s.initcalls),
        ] {
            for x in list {
                put(kind, &x.name, (&x.time_ns).into());
            }
        }
        for f in &s.top_self {
            put(Kind::Function, &f.name, (&f.value).into());
        }
        CheckSide {
            runs: s.runs,
            kernel: doc
                .input
                .kernel_version
                .clone()
                .or_else(|| doc.input.build_id.clone()),
            values,
            all_functions: true,
        }
    }

    /// The side of a stored `report --json` document.
    pub fn from_json(text: &str) -> Result<CheckSide, CheckError> {
        let doc: JsonDoc =
            serde_json::from_str(text).map_err(|e| CheckError::NotAReport(e.to_string()))?;
        if doc.format != super::doc::FORMAT {
            return Err(CheckError::NotAReport(format!(
                "format is {:?}, not {:?}",
                doc.format,
                super::doc::FORMAT
            )));
        }
        if doc.version != super::doc::VERSION {
            return Err(CheckError::Version(doc.version));
        }
        let s = doc.summary;
        let mut values = BTreeMap::new();
        let mut put = |kind: Kind, name: String, m: Moments| {
            if m.valid() {
                values.insert((kind, name), m);
            }
        };
        if let Some(b) = s.boot_ns {
            put(Kind::Boot, BOOT.into(), b);
        }
        if let Some(b) = s.until_init_ns {
            put(Kind::Boot, UNTIL_INIT.into(), b);
        }
        for (kind, list) in [
            (Kind::Phase, s.kernel_phases),
            (Kind::Stage, s.start_kernel_stages),
            (Kind::Initcall, s.initcalls),
        ] {
            for x in list {
                put(kind, x.name, x.time_ns);
            }
        }
        for f in s.top_self {
            put(Kind::Function, f.name, f.value);
        }
        Ok(CheckSide {
            runs: s.runs,
            kernel: doc.input.kernel_version.or(doc.input.build_id),
            values,
            all_functions: false,
        })
    }

    /// A measure missing from this side: zero over its runs when the side
    /// lists everything of that kind, else unknown.
    fn get_or_zero(&self, key: &(Kind, String)) -> Option<Moments> {
        match self.values.get(key) {
            Some(m) => Some(*m),
            None if key.0 == Kind::Function && !self.all_functions => None,
            // A boot time that is missing is missing, not zero.
            None if key.0 == Kind::Boot => None,
            None => Some(Moments::zero(self.runs)),
        }
    }
}

/// Name of the whole boot's row (first instruction → end of run).
pub const BOOT: &str = "boot";
/// Name of the until-init row (first instruction → first user-mode instruction).
pub const UNTIL_INIT: &str = "until init";

#[derive(Deserialize)]
struct JsonDoc {
    format: String,
    version: u32,
    input: JsonInput,
    summary: JsonSummary,
}

#[derive(Deserialize)]
struct JsonInput {
    #[serde(default)]
    kernel_version: Option<String>,
    #[serde(default)]
    build_id: Option<String>,
}

#[derive(Deserialize)]
struct JsonSummary {
    runs: usize,
    #[serde(default)]
    boot_ns: Option<Moments>,
    #[serde(default)]
    until_init_ns: Option<Moments>,
    #[serde(default)]
    kernel_phases: Vec<JsonNamed>,
    #[serde(default)]
    start_kernel_stages: Vec<JsonNamed>,
    #[serde(default)]
    initcalls: Vec<JsonNamed>,
    #[serde(default)]
    top_self: Vec<JsonFunction>,
}

#[derive(Deserialize)]
struct JsonNamed {
    name: String,
    time_ns: Moments,
}

#[derive(Deserialize)]
struct JsonFunction {
    name: String,
    value: Moments,
}

/// One term of a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Term {
    /// Percent of the measure's own baseline mean.
    Percent(f64),
    /// Percent of the baseline's mean boot time.
    PercentOfBoot(f64),
    /// Absolute time, ns.
    Ns(f64),
}

/// How much a measure must grow to count: every term must be exceeded.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Threshold(pub Vec<Term>);

impl Threshold {
    /// The growth (ns) a measure with baseline mean `base` must exceed, given
    /// the baseline's mean boot time (`None`: `%boot` terms cannot apply and
    /// count as 0).
    pub fn bound(&self, base: f64, boot: Option<f64>) -> f64 {
        self.0
            .iter()
            .map(|t| match *t {
                Term::Percent(p) => base.abs() * p / 100.0,
                Term::PercentOfBoot(p) => boot.map_or(0.0, |b| b * p / 100.0),
                Term::Ns(ns) => ns,
            })
            .fold(0.0, f64::max)
    }
}

impl FromStr for Threshold {
    type Err = CheckError;

    fn from_str(text: &str) -> Result<Threshold, CheckError> {
        let bad = |why| CheckError::Threshold {
            text: text.to_string(),
            why,
        };
        let mut terms = Vec::new();
        for part in text.split(',').map(str::trim) {
            if part.is_empty() {
                return Err(bad("an empty term"));
            }
            let num = |s: &str| -> Result<f64, CheckError> {
                let v: f64 = s.trim().parse().map_err(|_| bad("not a number"))?;
                if !v.is_finite() || v < 0.0 {
                    return Err(bad("must be a finite number ≥ 0"));
                }
                Ok(v)
            };
            let term = if let Some(n) = part.strip_suffix("%boot") {
                Term::PercentOfBoot(num(n)?)
            } else if let Some(n) = part.strip_suffix('%') {
                Term::Percent(num(n)?)
            } else {
                let (n, scale) = [
                    ("ns", 1.0),
                    ("us", 1e3),
                    ("µs", 1e3),
                    ("ms", 1e6),
                    ("s", 1e9),
                ]
                .iter()
                .find_map(|&(suf, sc)| part.strip_suffix(suf).map(|n| (n, sc)))
                .ok_or_else(|| bad("a term needs a unit: %, %boot, ns, us, ms or s"))?;
                Term::Ns(num(n)? * scale)
            };
            terms.push(term);
        }
        Ok(Threshold(terms))
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(" and ")?;
            }
            match *t {
                Term::Percent(p) => write!(f, "> {p}%")?,
                Term::PercentOfBoot(p) => write!(f, "> {p}% of the boot")?,
                Term::Ns(ns) => write!(f, "> {} ms", ns / 1e6)?,
            }
        }
        Ok(())
    }
}

/// How a check decides.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckOptions {
    /// Threshold for the boot rows.
    pub boot: Threshold,
    /// Threshold for phases, stages, initcalls and functions.
    pub items: Threshold,
    /// Significance level (one-sided).
    pub alpha: f64,
    /// Power assumed when estimating the runs needed.
    pub power: f64,
}

impl Default for CheckOptions {
    fn default() -> CheckOptions {
        CheckOptions {
            boot: Threshold(vec![Term::Percent(5.0)]),
            items: Threshold(vec![Term::Percent(10.0), Term::PercentOfBoot(1.0)]),
            alpha: ALPHA,
            power: 0.8,
        }
    }
}

/// What a row says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Grew beyond the threshold, significantly.
    Regressed,
    /// Changed beyond the threshold, but the runs cannot tell it from noise.
    Undecided,
    /// Shrank beyond the threshold, significantly.
    Improved,
    /// Changed less than the threshold.
    WithinThreshold,
}

impl Status {
    /// The word tables use.
    pub fn label(self) -> &'static str {
        match self {
            Status::Regressed => "REGRESSED",
            Status::Undecided => "undecided",
            Status::Improved => "improved",
            Status::WithinThreshold => "ok",
        }
    }
}

/// Which test gave a row's p-value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Test {
    /// Welch's t-test (two or more runs on each side).
    Welch,
    /// One run against the other side's spread (prediction interval).
    Prediction,
}

/// One measure compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// What it is.
    pub kind: Kind,
    /// Its name.
    pub name: String,
    /// Baseline, ns.
    pub baseline: Moments,
    /// Candidate, ns.
    pub candidate: Moments,
    /// Candidate mean − baseline mean, ns.
    pub delta_ns: f64,
    /// The same as a percentage of the baseline mean (`None` from 0).
    pub delta_percent: Option<f64>,
    /// The growth the threshold allows, ns.
    pub threshold_ns: f64,
    /// One-sided p-value in the direction of the change; `None` when no test was possible.
    pub p: Option<f64>,
    /// The test behind `p`.
    pub test: Option<Test>,
    /// The verdict of this row.
    pub status: Status,
    /// Undecided rows: runs per side that would detect a change of this size
    /// given the measured noise (`None`: no noise measured, or over 10 000).
    pub runs_needed: Option<usize>,
}

/// The whole check's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Nothing regressed.
    Pass,
    /// At least one measure regressed.
    Regressed,
    /// One run on each side: noise cannot be measured, nothing decided.
    TooFewRuns,
}

/// A check's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckResult {
    /// The verdict.
    pub verdict: Verdict,
    /// Runs of the baseline.
    pub baseline_runs: usize,
    /// Runs of the candidate.
    pub candidate_runs: usize,
    /// Every measure on either side, boot first, then by kind and change.
    pub rows: Vec<Row>,
    /// Runs per side that would detect a boot-time change as large as the
    /// boot threshold given the measured noise (`None`: no noise measured).
    pub runs_needed_for_boot: Option<usize>,
    /// Measures left out (functions a stored report does not list on one side).
    pub unknown: usize,
}

/// Runs the other side needs for one run to be tested against it.
pub const MIN_RUNS_AGAINST_ONE: usize = 3;

/// Upper limit of [`runs_needed`]'s search.
pub const MAX_RUNS_NEEDED: usize = 10_000;

/// Runs per side for a one-sided test at `alpha` to detect a change of
/// `effect` with probability `power`, when one run's standard deviation is
/// `sd` (normal approximation with Student's t quantiles at 2n − 2 degrees of
/// freedom). `None` when `sd` or `effect` is not positive and finite, or
/// beyond [`MAX_RUNS_NEEDED`].
pub fn runs_needed(sd: f64, effect: f64, alpha: f64, power: f64) -> Option<usize> {
    if !(sd.is_finite() && effect.is_finite() && sd > 0.0 && effect > 0.0) {
        return None;
    }
    let q = |df: f64, p: f64| StudentsT::new(0.0, 1.0, df).ok().map(|d| d.inverse_cdf(p));
    // Doubling then bisecting keeps this a few dozen quantile evaluations.
    let enough = |n: usize| -> bool {
        let df = (2 * n - 2) as f64;
        match (q(df, 1.0 - alpha), q(df, power)) {
            (Some(a), Some(b)) => (a + b) * sd * (2.0 / n as f64).sqrt() <= effect,
            _ => false,
        }
    };
    let mut hi = 2;
    while !enough(hi) {
        if hi >= MAX_RUNS_NEEDED {
            return None;
        }
        hi = (hi * 2).min(MAX_RUNS_NEEDED);
    }
    let mut lo = hi / 2;
    if lo < 2 {
        return Some(2);
    }
    // Invariant: !enough(lo), enough(hi).
    if enough(lo) {
        return Some(lo);
    }
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if enough(mid) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

/// One-sided p-value (in the direction of the change) and the test used.
fn test(a: &Moments, b: &Moments) -> Option<(f64, Test)> {
    let var = |m: &Moments| m.stddev.map(|s| s * s);
    if a.n >= 2 && b.n >= 2 {
        let w = welch_from_moments((a.n as f64, a.mean, var(a)?), (b.n as f64, b.mean, var(b)?))?;
        return Some((w.p / 2.0, Test::Welch));
    }
    // One run on one side: is it outside the other side's spread? A spread
    // from two runs (one degree of freedom) cannot tell a single slow boot
    // (host load) from a change, so this needs MIN_RUNS_AGAINST_ONE runs.
    let (many, one) = match (a.n, b.n) {
        (1, n) if n >= MIN_RUNS_AGAINST_ONE => (b, a),
        (n, 1) if n >= MIN_RUNS_AGAINST_ONE => (a, b),
        _ => return None,
    };
    let s = many.stddev?;
    let diff = (one.mean - many.mean).abs();
    if s <= 0.0 {
        return Some((if diff > 0.0 { 0.0 } else { 0.5 }, Test::Prediction));
    }
    let n = many.n as f64;
    let t = diff / (s * (1.0 + 1.0 / n).sqrt());
    let dist = StudentsT::new(0.0, 1.0, n - 1.0).ok()?;
    Some((dist.sf(t).clamp(0.0, 1.0), Test::Prediction))
}

/// The noise of one run: the pooled standard deviation of the sides that have one.
fn noise(a: &Moments, b: &Moments) -> Option<f64> {
    match (a.stddev, b.stddev) {
        (Some(x), Some(y)) => Some(((x * x + y * y) / 2.0).sqrt()),
        (x, y) => x.or(y),
    }
}

fn row(
    kind: Kind,
    name: &str,
    a: Moments,
    b: Moments,
    threshold: &Threshold,
    boot: Option<f64>,
    o: &CheckOptions,
) -> Row {
    let delta = b.mean - a.mean;
    let bound = threshold.bound(a.mean, boot);
    let tested = test(&a, &b);
    let significant = tested.is_some_and(|(p, _)| p < o.alpha);
    let status = if delta.abs() <= bound {
        Status::WithinThreshold
    } else if !significant {
        Status::Undecided
    } else if delta > 0.0 {
        Status::Regressed
    } else {
        Status::Improved
    };
    Row {
        kind,
        name: name.to_string(),
        baseline: a,
        candidate: b,
        delta_ns: delta,
        delta_percent: (a.mean != 0.0).then(|| 100.0 * delta / a.mean),
        threshold_ns: bound,
        p: tested.map(|(p, _)| p),
        test: tested.map(|(_, t)| t),
        status,
        // At least one more run than now: these runs did not decide it.
        runs_needed: if status == Status::Undecided {
            noise(&a, &b)
                .and_then(|s| runs_needed(s, delta.abs(), o.alpha, o.power))
                .map(|n| n.max(a.n.min(b.n) + 1))
        } else {
            None
        },
    }
}

/// Compares a candidate with a baseline.
pub fn compare(a: &CheckSide, b: &CheckSide, o: &CheckOptions) -> CheckResult {
    let boot_key = (Kind::Boot, BOOT.to_string());
    let boot_mean = a.values.get(&boot_key).map(|m| m.mean);
    let mut keys: Vec<&(Kind, String)> = a.values.keys().chain(b.values.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut rows = Vec::new();
    let mut unknown = 0;
    for key in keys {
        let (Some(ma), Some(mb)) = (a.get_or_zero(key), b.get_or_zero(key)) else {
            unknown += 1;
            continue;
        };
        let threshold = if key.0 == Kind::Boot {
            &o.boot
        } else {
            &o.items
        };
        rows.push(row(key.0, &key.1, ma, mb, threshold, boot_mean, o));
    }
    rows.sort_by(|x, y| {
        (x.kind, x.status)
            .cmp(&(y.kind, y.status))
            .then_with(|| y.delta_ns.total_cmp(&x.delta_ns))
            .then_with(|| x.name.cmp(&y.name))
    });
    let runs_needed_for_boot = match (a.values.get(&boot_key), b.values.get(&boot_key)) {
        (Some(ma), Some(mb)) => noise(ma, mb)
            .and_then(|s| runs_needed(s, o.boot.bound(ma.mean, Some(ma.mean)), o.alpha, o.power)),
        _ => None,
    };
    let verdict = if rows.iter().any(|r| r.status == Status::Regressed) {
        Verdict::Regressed
    } else if a.runs < 2 && b.runs < 2 {
        Verdict::TooFewRuns
    } else {
        Verdict::Pass
    };
    CheckResult {
        verdict,
        baseline_runs: a.runs,
        candidate_runs: b.runs,
        rows,
        runs_needed_for_boot,
        unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(values: &[f64]) -> Moments {
        (&Summary::of(values).expect("summary")).into()
    }

    fn side(runs: usize, rows: &[(Kind, &str, &[f64])]) -> CheckSide {
        CheckSide {
            runs,
            kernel: None,
            values: rows
                .iter()
                .map(|&(k, n, v)| ((k, n.to_string()), m(v)))
                .collect(),
            all_functions: true,
        }
    }

    const MS: f64 = 1e6;

    #[test]
    fn thresholds_parse_and_bound() {
        let t: Threshold = "10%, 1%boot,2ms".parse().expect("parse");
        assert_eq!(
            t.0,
            vec![Term::Percent(10.0), Term::PercentOfBoot(1.0), Term::Ns(2e6)]
        );
        // max(10% of 50 ms, 1% of 1 s, 2 ms) = 10 ms
        assert_eq!(t.bound(50.0 * MS, Some(1000.0 * MS)), 10.0 * MS);
        assert_eq!(t.bound(5.0 * MS, None), 2.0 * MS);
        assert_eq!("1.5s".parse::<Threshold>().expect("s").0, [Term::Ns(1.5e9)]);
        assert_eq!(
            "250us".parse::<Threshold>().expect("us").0,
            [Term::Ns(2.5e5)]
        );
        for bad in ["", "5", "x%", "-1%", "5%,", "inf%", "3 parsecs"] {
            assert!(bad.parse::<Threshold>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn growth_beyond_threshold_and_noise_regresses_and_names_the_function() {
        let a = side(
            3,
            &[
                (Kind::Boot, BOOT, &[1000.0 * MS, 1010.0 * MS, 990.0 * MS]),
                (
                    Kind::Function,
                    "memmap_init_range",
                    &[100.0 * MS, 102.0 * MS, 98.0 * MS],
                ),
                (Kind::Function, "noise", &[20.0 * MS, 40.0 * MS, 5.0 * MS]),
            ],
        );
        let b = side(
            3,
            &[
                (Kind::Boot, BOOT, &[1300.0 * MS, 1310.0 * MS, 1290.0 * MS]),
                (
                    Kind::Function,
                    "memmap_init_range",
                    &[400.0 * MS, 405.0 * MS, 395.0 * MS],
                ),
                (Kind::Function, "noise", &[45.0 * MS, 10.0 * MS, 50.0 * MS]),
                (
                    Kind::Function,
                    "new_thing",
                    &[30.0 * MS, 31.0 * MS, 29.0 * MS],
                ),
            ],
        );
        let r = compare(&a, &b, &CheckOptions::default());
        assert_eq!(r.verdict, Verdict::Regressed);
        let get = |n: &str| r.rows.iter().find(|x| x.name == n).expect("row");
        assert_eq!(get(BOOT).status, Status::Regressed);
        assert_eq!(get(BOOT).test, Some(Test::Welch));
        assert_eq!(get("memmap_init_range").status, Status::Regressed);
        // Absent from the baseline's runs: zero there, so it grew.
        assert_eq!(get("new_thing").status, Status::Regressed);
        assert_eq!(get("new_thing").baseline.mean, 0.0);
        let noise = get("noise");
        assert_eq!(noise.status, Status::Undecided, "{noise:?}");
        let need = noise.runs_needed.expect("runs needed");
        assert!(need > 3, "{need}");
        assert_eq!(r.rows[0].kind, Kind::Boot, "boot first");
    }

    #[test]
    fn an_unchanged_pair_passes_and_small_changes_are_within_threshold() {
        let a = side(
            2,
            &[
                (Kind::Boot, BOOT, &[1000.0 * MS, 1004.0 * MS]),
                (Kind::Phase, "head", &[10.0 * MS, 10.1 * MS]),
            ],
        );
        // +0.5 ms on head: significant (no noise) but under 10% and 1% of boot.
        let b = side(
            2,
            &[
                (Kind::Boot, BOOT, &[1001.0 * MS, 1003.0 * MS]),
                (Kind::Phase, "head", &[10.5 * MS, 10.6 * MS]),
            ],
        );
        let r = compare(&a, &b, &CheckOptions::default());
        assert_eq!(r.verdict, Verdict::Pass);
        assert!(r.rows.iter().all(|x| x.status == Status::WithinThreshold));
        let o = CheckOptions {
            items: "1%".parse().expect("parse"),
            ..CheckOptions::default()
        };
        let r = compare(&a, &b, &o);
        let head = r.rows.iter().find(|x| x.name == "head").expect("row");
        assert_eq!(head.status, Status::Regressed, "{head:?}");
    }

    #[test]
    fn one_run_each_is_too_few_and_one_run_against_many_is_a_prediction_test() {
        let one = side(1, &[(Kind::Boot, BOOT, &[1000.0 * MS])]);
        let slow = side(1, &[(Kind::Boot, BOOT, &[2000.0 * MS])]);
        let r = compare(&one, &slow, &CheckOptions::default());
        assert_eq!(r.verdict, Verdict::TooFewRuns);
        assert_eq!(r.rows[0].status, Status::Undecided);
        assert_eq!((r.rows[0].p, r.runs_needed_for_boot), (None, None));

        let many = side(
            5,
            &[(
                Kind::Boot,
                BOOT,
                &[
                    1000.0 * MS,
                    1010.0 * MS,
                    990.0 * MS,
                    1005.0 * MS,
                    995.0 * MS,
                ],
            )],
        );
        let two = side(2, &[(Kind::Boot, BOOT, &[1000.0 * MS, 1004.0 * MS])]);
        let r = compare(&two, &slow, &CheckOptions::default());
        assert_eq!(r.rows[0].test, None, "two runs cannot judge one");
        assert_eq!(r.verdict, Verdict::Pass);
        assert_eq!(r.rows[0].status, Status::Undecided);
        let r = compare(&many, &slow, &CheckOptions::default());
        assert_eq!(r.rows[0].test, Some(Test::Prediction));
        assert_eq!(r.verdict, Verdict::Regressed);
        let r = compare(&many, &one, &CheckOptions::default());
        assert_eq!(r.verdict, Verdict::Pass);
        // 5% of 1 s against ~8 ms of noise: a few runs suffice.
        let need = r.runs_needed_for_boot.expect("needed");
        assert!((2..=5).contains(&need), "{need}");
    }

    #[test]
    fn runs_needed_grows_with_noise_and_matches_the_textbook_case() {
        // sd = effect: n = 2 (z_0.95 + z_0.8)^2 = 12.4 by the normal
        // approximation; Student's t adds about one run.
        let n = runs_needed(1.0, 1.0, 0.05, 0.8).expect("n");
        assert!((13..=15).contains(&n), "{n}");
        let more = runs_needed(2.0, 1.0, 0.05, 0.8).expect("n");
        assert!(more > 3 * n, "{more} vs {n}");
        assert_eq!(runs_needed(0.0, 1.0, 0.05, 0.8), None);
        assert_eq!(runs_needed(1e9, 1.0, 0.05, 0.8), None, "beyond the cap");
        assert_eq!(runs_needed(1.0, 100.0, 0.05, 0.8), Some(2));
    }

    #[test]
    fn a_stored_report_lists_only_top_functions() {
        let json = r#"{"format":"boottrace-report","version":1,
            "input":{"kernel_version":"Linux 6.12","build_id":null},
            "summary":{"runs":2,
              "boot_ns":{"n":2,"min":1,"median":1,"max":1,"mean":1000000000.0,"stddev":1000000.0},
              "until_init_ns":null,
              "kernel_phases":[{"name":"head","time_ns":{"n":2,"mean":5000000.0,"stddev":10000.0},"runs_seen":2}],
              "top_self":[{"name":"f","value":{"n":2,"mean":100.0,"stddev":1.0},"share":0.1}]}}"#;
        let s = CheckSide::from_json(json).expect("parse");
        assert_eq!((s.runs, s.kernel.as_deref()), (2, Some("Linux 6.12")));
        assert!(!s.all_functions);
        assert_eq!(s.values.len(), 3);
        let g = s.get_or_zero(&(Kind::Function, "g".into()));
        assert_eq!(g, None, "not in the top list: unknown");
        let p = s.get_or_zero(&(Kind::Phase, "idle".into())).expect("zero");
        assert_eq!((p.n, p.mean), (2, 0.0));
        assert!(CheckSide::from_json("{}").is_err());
        assert!(matches!(
            CheckSide::from_json(&json.replace("\"version\":1", "\"version\":9")),
            Err(CheckError::Version(9))
        ));
    }
}
