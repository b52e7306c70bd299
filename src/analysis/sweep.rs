//! The data of `boottrace sweep`'s chart and table: per setting, boot time,
//! host page faults and VMM memory set-up over its boots; the phases and
//! the functions whose time changes most from setting to setting.
//!
//! Functions are compared like `diff` does ([`super::difftable`]): each
//! setting against the first, per boot, self time. A row's change is its
//! largest change from the first setting (signed), so a function that grows
//! and shrinks back still shows; "grew"/"shrank" rank by it.

use std::collections::HashMap;

use serde::Serialize;

use super::diffnorm::Normalize;
use super::difftable::{function_deltas, SideRuns};
use super::doc::{self, ReportDoc};
use super::fold::Weight;
use super::stats::Summary;
use crate::profile::Profile;

/// One setting of a sweep, loaded.
#[derive(Debug, Clone, Copy)]
pub struct SweepSide<'a> {
    /// The setting's label (`mem=1G`).
    pub label: &'a str,
    /// Its boots.
    pub profile: &'a Profile,
}

/// One setting's figures over its boots.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SettingRow {
    /// The setting's label.
    pub label: String,
    /// Boots read.
    pub runs: usize,
    /// Each boot's time (first instruction → end), ns, in recording order.
    pub boot_ns_each: Vec<u64>,
    /// Boot time over the boots.
    pub boot_ns: Option<Summary>,
    /// Each boot's host page faults of the vCPU threads (sampled).
    pub faults_each: Vec<u64>,
    /// Host page faults of the vCPU threads per boot (sampled).
    pub faults: Option<Summary>,
    /// KVM exits per boot (sampled).
    pub exits: Option<Summary>,
    /// The VMM's guest-memory set-up (its `memory` phase), ns.
    pub memory_setup_ns: Option<Summary>,
    /// Median time per kernel phase (decompression, head, start_kernel, …), ns.
    pub kernel_phases: Vec<(String, f64)>,
}

/// A phase, `start_kernel` stage, initcall or VMM phase across settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseRow {
    /// `vmm memory`, `phase start_kernel`, `stage mm_core_init`, `initcall …`.
    pub name: String,
    /// Median time per setting, ns (0: not sampled in that setting).
    pub median_ns: Vec<f64>,
    /// Largest change from the first setting, signed, ns.
    pub change_ns: f64,
}

/// A function's self time across settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionRow {
    /// Function name.
    pub name: String,
    /// Mean self time per boot in each setting, ms.
    pub per_boot_ms: Vec<f64>,
    /// Largest change from the first setting, signed, ms.
    pub change_ms: f64,
    /// Welch's test, first vs last setting (`None` with one boot on a side).
    pub p: Option<f64>,
}

/// Everything the sweep's chart and table show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SweepAnalysis {
    /// Per setting, in sweep order.
    pub settings: Vec<SettingRow>,
    /// Phases that changed most, largest change first.
    pub phases: Vec<PhaseRow>,
    /// Functions whose self time grew most.
    pub grew: Vec<FunctionRow>,
    /// Functions whose self time shrank most.
    pub shrank: Vec<FunctionRow>,
}

fn setting_row(label: &str, d: &ReportDoc) -> SettingRow {
    let each: Vec<u64> = d.runs.iter().filter_map(|r| r.boot_ns).collect();
    let memory: Vec<u64> = d
        .runs
        .iter()
        .filter_map(|r| r.vmm_phases.iter().find(|p| p.name == "memory"))
        .map(|p| p.duration_ns)
        .collect();
    SettingRow {
        label: label.to_string(),
        runs: d.runs.len(),
        boot_ns: Summary::of_u64(&each),
        boot_ns_each: each,
        faults_each: d.runs.iter().map(|r| r.faults).collect(),
        faults: Summary::of_u64(&d.runs.iter().map(|r| r.faults).collect::<Vec<_>>()),
        exits: Summary::of_u64(&d.runs.iter().map(|r| r.exits).collect::<Vec<_>>()),
        memory_setup_ns: Summary::of_u64(&memory),
        kernel_phases: d
            .summary
            .kernel_phases
            .iter()
            .map(|p| (p.name.clone(), p.time_ns.median))
            .collect(),
    }
}

/// Per named row: the median in each setting (absent: 0).
fn phase_values(docs: &[ReportDoc]) -> Vec<(String, Vec<f64>)> {
    let n = docs.len();
    let mut order: Vec<String> = Vec::new();
    let mut rows: HashMap<String, Vec<f64>> = HashMap::new();
    let mut put = |name: String, i: usize, v: f64| {
        let row = rows.entry(name.clone()).or_insert_with(|| {
            order.push(name);
            vec![0.0; n]
        });
        row[i] = v;
    };
    for (i, d) in docs.iter().enumerate() {
        let s = &d.summary;
        // The VMM's `end` boundary spans the whole boot: the settings table
        // has that already.
        for p in s.vmm_phases.iter().filter(|p| p.name != "end") {
            put(format!("vmm {}", p.name), i, p.duration_ns.median);
        }
        for p in &s.kernel_phases {
            put(format!("phase {}", p.name), i, p.time_ns.median);
        }
        for p in &s.start_kernel_stages {
            put(format!("stage {}", p.name), i, p.time_ns.median);
        }
        for p in &s.initcalls {
            put(format!("initcall {}", p.name), i, p.time_ns.median);
        }
    }
    order
        .into_iter()
        .filter_map(|name| rows.remove(&name).map(|v| (name, v)))
        .collect()
}

/// The value with the largest distance from `v[0]`, minus `v[0]`.
fn largest_change(v: &[f64]) -> f64 {
    let Some(&first) = v.first() else {
        return 0.0;
    };
    v.iter()
        .map(|x| x - first)
        .fold(0.0, |best, d| if d.abs() > best.abs() { d } else { best })
}

/// Analyses the settings of a sweep, listing `top` phases and functions
/// per table.
pub fn analyse(sides: &[SweepSide<'_>], top: usize) -> SweepAnalysis {
    let docs: Vec<ReportDoc> = sides.iter().map(|s| doc::build(s.profile, 0)).collect();
    let settings = sides
        .iter()
        .zip(&docs)
        .map(|(s, d)| setting_row(s.label, d))
        .collect();
    let mut phases: Vec<PhaseRow> = phase_values(&docs)
        .into_iter()
        .map(|(name, v)| PhaseRow {
            name,
            change_ns: largest_change(&v),
            median_ns: v,
        })
        .filter(|r| r.change_ns != 0.0)
        .collect();
    phases.sort_by(|a, b| {
        b.change_ns
            .abs()
            .total_cmp(&a.change_ns.abs())
            .then_with(|| a.name.cmp(&b.name))
    });
    phases.truncate(top);
    let (grew, shrank) = function_rows(sides, top);
    SweepAnalysis {
        settings,
        phases,
        grew,
        shrank,
    }
}

/// Functions' self time per setting, compared with the first setting.
fn function_rows(sides: &[SweepSide<'_>], top: usize) -> (Vec<FunctionRow>, Vec<FunctionRow>) {
    let runs: Vec<SideRuns> = sides.iter().map(|s| SideRuns::of(s.profile)).collect();
    let Some((first, rest)) = runs.split_first() else {
        return (Vec::new(), Vec::new());
    };
    let n = runs.len();
    let mut rows: HashMap<String, FunctionRow> = HashMap::new();
    for (k, side) in rest.iter().enumerate() {
        for d in function_deltas(first, side, Weight::Time, Normalize::PerBoot) {
            let m = d.self_metric;
            let row = rows.entry(d.name.clone()).or_insert_with(|| FunctionRow {
                name: d.name,
                per_boot_ms: vec![0.0; n],
                change_ms: 0.0,
                p: None,
            });
            row.per_boot_ms[0] = m.a_per_boot;
            row.per_boot_ms[k + 1] = m.b_per_boot;
            if k + 2 == n {
                row.p = m.p;
            }
        }
    }
    let mut all: Vec<FunctionRow> = rows
        .into_values()
        .map(|mut r| {
            r.change_ms = largest_change(&r.per_boot_ms);
            r
        })
        .collect();
    all.sort_by(|a, b| {
        b.change_ms
            .total_cmp(&a.change_ms)
            .then_with(|| a.name.cmp(&b.name))
    });
    let mut grew: Vec<FunctionRow> = all.iter().filter(|r| r.change_ms > 0.0).cloned().collect();
    let mut shrank: Vec<FunctionRow> = all.into_iter().filter(|r| r.change_ms < 0.0).collect();
    shrank.reverse();
    grew.truncate(top);
    shrank.truncate(top);
    (grew, shrank)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{Run, Sample};

    /// A profile of `runs` boots in which `grows` takes `ms` of self time
    /// per boot and `steady` 10 ms, under `start_kernel`.
    fn profile(runs: usize, ms: u64) -> Profile {
        let mut p = Profile::default();
        let grows = p.stack_of(&["start_kernel", "mm_core_init", "memmap_init_range"]);
        let steady = p.stack_of(&["start_kernel", "rest_init"]);
        for r in 0..runs {
            let mut samples = Vec::new();
            let mut t = 0;
            for (stack, n) in [(grows, ms), (steady, 10)] {
                for _ in 0..n {
                    samples.push(Sample {
                        faults: 2,
                        exits: 1,
                        ..Sample::kernel_at(stack, t, 1_000_000)
                    });
                    t += 1_000_000;
                }
            }
            p.runs.push(Run {
                run: r as u32,
                boot_ns: Some(t + r as u64),
                samples,
                ..Run::default()
            });
        }
        p
    }

    #[test]
    fn the_growing_function_and_stage_lead_their_tables() {
        let (small, big) = (profile(2, 20), profile(2, 80));
        let a = analyse(
            &[
                SweepSide {
                    label: "mem=128M",
                    profile: &small,
                },
                SweepSide {
                    label: "mem=1G",
                    profile: &big,
                },
            ],
            10,
        );
        assert_eq!(a.settings.len(), 2);
        let (s0, s1) = (&a.settings[0], &a.settings[1]);
        assert_eq!(s0.boot_ns_each, [30_000_000, 30_000_001]);
        assert!(s1.boot_ns.expect("boot").median > s0.boot_ns.expect("boot").median);
        assert_eq!(s1.faults.expect("faults").median, 180.0);
        let grew = &a.grew[0];
        assert_eq!(grew.name, "memmap_init_range");
        assert!((grew.change_ms - 60.0).abs() < 1e-9, "{grew:?}");
        assert_eq!(grew.per_boot_ms, [20.0, 80.0]);
        assert!(a.shrank.is_empty(), "{:?}", a.shrank);
        assert!(a.grew.iter().all(|r| r.name != "rest_init"));
        assert_eq!(a.phases[0].name, "phase start_kernel");
        let stage = a
            .phases
            .iter()
            .find(|p| p.name == "stage mm_core_init")
            .expect("stage row");
        assert!((stage.change_ns - 60e6).abs() < 1.0, "{stage:?}");
    }

    #[test]
    fn largest_change_keeps_its_sign() {
        assert_eq!(largest_change(&[5.0, 7.0, 1.0]), -4.0);
        assert_eq!(largest_change(&[5.0, 9.0, 4.0]), 4.0);
        assert_eq!(largest_change(&[]), 0.0);
    }
}
