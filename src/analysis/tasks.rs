//! Time per guest task: which task (`pid`, `comm`) each sample ran in, summed
//! per run and summarized over runs. Samples whose task is unknown (no task
//! awareness, the decompressor or early boot before `current` exists, user
//! mode, a failed read) form their own row.

use std::collections::HashMap;

use serde::Serialize;

use super::stats::{over_runs, Summary};
use crate::profile::{Profile, Run, TaskInfo, UNKNOWN_TASK};

/// One task's share of one run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskCost {
    /// `[pid 1 init]`, or `[unknown task]`.
    pub name: String,
    /// `pid`; `None` for the unknown-task row.
    pub pid: Option<u32>,
    /// `tgid`; `None` for the unknown-task row.
    pub tgid: Option<u32>,
    /// `comm`; `None` for the unknown-task row.
    pub comm: Option<String>,
    /// Samples.
    pub samples: u64,
    /// Sum of their intervals, ns.
    pub time_ns: u64,
    /// Fraction of the run's sampled time (0–1).
    pub share: f64,
}

/// A task summarized over runs (matched by pid and comm).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TaskSummary {
    /// `[pid 1 init]`, or `[unknown task]`.
    pub name: String,
    /// Sampled time per run, ns (0 in runs without it).
    pub time_ns: Summary,
    /// Mean per-run fraction of the run's sampled time (0–1).
    pub share: f64,
    /// Runs in which it was sampled.
    pub runs_seen: usize,
}

/// Per task of `run`, by time (longest first; ties by name).
pub fn run_tasks(run: &Run) -> Vec<TaskCost> {
    let mut by: HashMap<Option<&TaskInfo>, (u64, u64)> = HashMap::new();
    let mut total = 0u64;
    for s in &run.samples {
        let e = by.entry(run.task(s)).or_default();
        e.0 += 1;
        e.1 = e.1.saturating_add(s.interval_ns);
        total = total.saturating_add(s.interval_ns);
    }
    let mut out: Vec<TaskCost> = by
        .into_iter()
        .map(|(t, (samples, time_ns))| TaskCost {
            name: t.map_or_else(|| UNKNOWN_TASK.to_string(), TaskInfo::label),
            pid: t.map(|t| t.pid),
            tgid: t.map(|t| t.tgid),
            comm: t.map(|t| t.comm.clone()),
            samples,
            time_ns,
            share: if total == 0 {
                0.0
            } else {
                time_ns as f64 / total as f64
            },
        })
        .collect();
    out.sort_by(|a, b| b.time_ns.cmp(&a.time_ns).then_with(|| a.name.cmp(&b.name)));
    out
}

/// Tasks over runs (`per_run` from [`run_tasks`]), longest mean time first.
pub fn summarize(per_run: &[Vec<TaskCost>]) -> Vec<TaskSummary> {
    over_runs(
        per_run,
        |t| t.name.as_str(),
        |t| (t.time_ns, t.share),
        |name, over| TaskSummary {
            name: name.to_string(),
            time_ns: over.time_ns,
            share: over.share,
            runs_seen: over.runs_seen,
        },
    )
}

/// True when any run of `p` knows the task of any sample.
pub fn has_tasks(p: &Profile) -> bool {
    p.runs.iter().any(|r| !r.tasks.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Sample;

    fn sample(task: Option<u32>, interval_ns: u64) -> Sample {
        Sample {
            task,
            ..Sample::kernel_at(None, 0, interval_ns)
        }
    }

    fn run(samples: Vec<Sample>) -> Run {
        Run {
            samples,
            tasks: vec![
                TaskInfo {
                    pid: 0,
                    tgid: 0,
                    comm: "swapper/0".into(),
                },
                TaskInfo {
                    pid: 1,
                    tgid: 1,
                    comm: "init".into(),
                },
            ],
            ..Run::default()
        }
    }

    #[test]
    fn time_per_task_with_an_unknown_row() {
        let r = run(vec![
            sample(Some(1), 30),
            sample(Some(0), 10),
            sample(Some(1), 30),
            sample(None, 20),
            // An index outside the task table is unknown, not a panic.
            sample(Some(9), 10),
        ]);
        let t = run_tasks(&r);
        let rows: Vec<(&str, u64, u64)> = t
            .iter()
            .map(|t| (t.name.as_str(), t.samples, t.time_ns))
            .collect();
        assert_eq!(
            rows,
            [
                ("[pid 1 init]", 2, 60),
                ("[unknown task]", 2, 30),
                ("[pid 0 swapper/0]", 1, 10)
            ]
        );
        assert!((t[0].share - 0.6).abs() < 1e-9);
        assert_eq!(t[0].pid, Some(1));
        assert_eq!(t[1].comm, None);
    }

    #[test]
    fn summary_counts_absent_runs_as_zero() {
        let a = run_tasks(&run(vec![sample(Some(1), 100)]));
        let b = run_tasks(&run(vec![sample(Some(0), 100)]));
        let s = summarize(&[a, b]);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].runs_seen, 1);
        assert_eq!(s[0].time_ns.min, 0.0);
        assert_eq!(s[0].time_ns.max, 100.0);
        assert!((s[0].share - 0.5).abs() < 1e-9);
    }
}
