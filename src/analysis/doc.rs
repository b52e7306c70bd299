//! The report as data: everything `boottrace report` prints, per run and
//! summarized over runs. `--json` prints this document as is
//! ([`crate::render::report`] renders both). Everything here is linear in
//! the trace: per-name values over runs are kept sparse (only the runs a
//! name appears in), never as one slot per run per name.
//!
//! # JSON format (`"format": "boottrace-report"`, `"version": 1`)
//!
//! Stable: fields are only ever added within a version; a removed or
//! renamed field bumps `version`. Times are integer or float nanoseconds of
//! host time (`*_ns`), counted from the run's first guest instruction unless
//! named `at_ns` (VMM phases: from the run's start). Sampled time is the sum
//! of sample intervals over all vCPUs (wall time with one vCPU).
//!
//! - `format`, `version`; `input`: `path`, `kernel_path`, `kernel_version`,
//!   `build_id`, `kernel_cmdline`, `sample_freq_hz`, `unwinder`,
//!   `symbol_source`, `pvm_workarounds`, `complete`, `warnings`.
//! - `runs[]`: `run`, `end_reason`, `end_detail`, `boot_ns` (first
//!   instruction → end), `until_init_ns` (→ first user-mode instruction: the
//!   VMM's `user_mode` boundary, or the first user-mode sample if earlier or
//!   the boundary is missing), `samples`, `sampled_ns`,
//!   `faults`, `exits`, `vmm_phases[]` {`name`, `at_ns`, `duration_ns`
//!   (since the previous boundary)}, `milestones` {`first_kernel_ns`,
//!   `start_kernel_ns`, `first_initcall_ns`, `first_user_ns`},
//!   `kernel_phases[]`, `start_kernel_stages[]`, `initcalls[]` — each a span
//!   {`name`, `time_ns`, `samples`, `first_ns`, `last_ns`, `faults`,
//!   `exits`} —, `unwind` {`considered`, `rooted`, `percent`, `truncated`,
//!   `bad_roots[]` as `[name, count]`}, `sampler` {`samples`, `kick_ns`,
//!   `capture_ns`, `unwind_ns`, `write_ns`, `total_ns`, `per_sample_ns`,
//!   `percent_of_boot`}, `tasks[]` (added in version 1, boottrace trace
//!   format 2.1: empty for older traces or without type info) {`name`
//!   (`[pid 1 init]`, or `[unknown task]` for samples whose task is not
//!   known), `pid`, `tgid`, `comm` (null for the unknown row), `samples`,
//!   `time_ns`, `share` (of the run's sampled time, 0–1)}, longest first;
//!   `layout` (added in version 1; absent when the trace has no layout
//!   record) {`kaslr_slide` (runtime − link-time virtual address),
//!   `slide_method` (how it was found), `kernel_phys_start` (physical load
//!   address of `_text`, or null), `kernel_link_start`, `kernel_size`,
//!   `decompressor_bases[]` (physical addresses the decompressor ran at)}.
//!   `devices[]` (added in version 1, trace format 3; absent when the
//!   trace has no device records: older traces, or no `--disk`/`--net`)
//!   {`name` (`vda`, `net0`), `kind` (`virtio-blk`, `virtio-net`),
//!   `backend`, `notify` (`ioeventfd` or `mmio exit`), `counters` {name:
//!   value — disks: `reads`, `read_bytes`, `writes`, `write_bytes`,
//!   `flushes`, `errors`; network: `tx_frames`, `tx_bytes`, `tx_dropped`,
//!   `rx_frames`, `rx_bytes`, `rx_dropped`}, `broken` (why the device
//!   stopped working, or null)}.
//!   `waited_ns` and `waits[]` (added in version 1, trace format 3;
//!   absent when the trace has no blocked stacks): the wall time the boot
//!   thread (the boot CPU's task, then pid 1) was not running, and per wait
//!   site (top 20, longest first) {`name` (`msleep ← wait_for_devices ←
//!   ip_auto_config`: the wait function below the scheduler's frames and up
//!   to 3 callers), `function`, `callers[]` (nearest first), `initcall` (the
//!   initcall it happened in, or null), `state` (`sleeping`, or `runnable`:
//!   preempted, waiting for a CPU), `samples`, `time_ns` (wall time),
//!   `share` (of `boot_ns`, 0–1), `stack` (one full stack, root first,
//!   `;`-separated, ending in `[wait]` or `[runnable]`)}.
//! - `summary`: `runs` (count), and each as a *summary* {`n`, `min`,
//!   `median`, `max`, `mean`, `stddev` (null with one run)} over runs:
//!   `boot_ns`, `until_init_ns`, `vmm_phases[]` {`name`, `at_ns`,
//!   `duration_ns`}, `kernel_phases[]`, `start_kernel_stages[]`,
//!   `initcalls[]` {`name`, `time_ns`, `first_ns`, `runs_seen`},
//!   `top_self[]`, `top_total[]`, `faults_by_function[]`,
//!   `exits_by_function[]` {`name`, `value`, `share`: mean per-run fraction
//!   of the run's total (0–1)}, `unwind` (all runs added up), `sampler`
//!   {`per_sample_ns`, `percent_of_boot`}, `tasks[]` {`name`, `time_ns`
//!   (summary), `share` (mean per-run fraction), `runs_seen`}, `devices[]`
//!   (absent without device records) {`name`, `kind`, `backend`, `notify`,
//!   `counters[]` {`name`, `value` (summary over the runs that have the
//!   device)}, `runs_seen`, `broken_runs`}.
//!
//! - Added in version 1 with trace format 3 (hardware-breakpoint
//!   boundaries; each field is left out when the trace has no such data):
//!   `runs[].exact_initcalls[]` {`name`, `start_ns`, `wall_ns` (entry to
//!   return, host time), `tsc_cycles` (the same in guest TSC cycles),
//!   `ret`, `on_cpu_ns` (sampled time in it while the init thread, pid 1,
//!   ran; without task info: stacks through `do_one_initcall`),
//!   `waiting_ns` (`wall_ns - on_cpu_ns`), `samples`} in boot order;
//!   `runs[].points[]` {`name` (`start_kernel`, `rest_init`, `kernel_init`,
//!   `free_initmem`, `exec_init`, `until_function`), `function`, `at_ns`};
//!   `runs[].pairing` {`unmatched_starts`, `unmatched_ends`, `dropped`};
//!   `runs[].console` {`time_ns` (time the guest spent writing to the UART
//!   console, measured by the VMM at the UART's port exits: a lower
//!   bound), `accesses`, `percent_of_boot`, `sampled_ns` (sampled time with
//!   `console_flush_all` or `console_unlock` on the stack: the kernel
//!   formatting and writing its log to the consoles),
//!   `sampled_percent_of_boot`, `warning` (either share above 10 %)}; `runs[].breakpoints`
//!   {`exits`, `handle_ns`, `per_exit_ns`}; `summary.exact_initcalls[]`
//!   {`name`, `wall_ns`, `on_cpu_ns`, `waiting_ns` (summaries), `runs_seen`}
//!   in order of first start; `summary.console` {`time_ns`,
//!   `percent_of_boot`, `sampled_ns`, `sampled_percent_of_boot`} (summaries).
//!
//! - Added in version 1 with trace format 3 (blocked stacks; absent
//!   without them): `summary.waited_ns` (summary) and `summary.waits[]`
//!   {`name`, `initcall`, `state`, `time_ns` (summary), `share` (mean
//!   per-run fraction of boot time), `runs_seen`}.
//!
//! A name missing from a run counts as 0 in that run's value (it took less
//! than one sample); `runs_seen` says in how many runs it was sampled.

use std::collections::HashMap;

use serde::Serialize;

use super::devices::{self, DeviceReport, DeviceSummary};
use super::fold::{NameTree, Weight};
use super::functions::{self, by_function_name, Cost, FunctionCost};
use super::initcalls::{
    breakpoint_cost, console_cost, exact_view, BreakpointCost, ConsoleCost, ExactInitcall,
    NamedPoint, Pairing,
};
use super::phases::{kernel_phases, KernelPhase, Milestones, Span};
use super::quality::{unwind_quality, UnwindQuality};
use super::stats::Summary;
use super::tasks::{self, TaskCost, TaskSummary};
use super::waits::{self, WaitCost, WaitSummary};
use crate::profile::{CostTotals, InputInfo, PhaseName, Profile, Run};

/// The `format` value of the JSON document.
pub const FORMAT: &str = "boottrace-report";
/// The `version` of the JSON document.
pub const VERSION: u32 = 1;

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct ReportDoc {
    /// Always [`FORMAT`].
    pub format: &'static str,
    /// Always [`VERSION`].
    pub version: u32,
    /// Where the data came from.
    pub input: InputInfo,
    /// Per run.
    pub runs: Vec<RunReport>,
    /// Over all runs.
    pub summary: SummaryReport,
}

/// A VMM phase boundary of one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmmPhaseReport {
    /// Boundary name.
    pub name: String,
    /// Time since the run's start, ns.
    pub at_ns: u64,
    /// Time since the previous boundary (or the run's start), ns.
    pub duration_ns: u64,
}

/// The sampler's cost in one run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SamplerReport {
    /// Samples taken.
    pub samples: u64,
    /// Kick/exit time, ns.
    pub kick_ns: u64,
    /// Register capture, ns.
    pub capture_ns: u64,
    /// Unwinding, ns.
    pub unwind_ns: u64,
    /// Writing, ns.
    pub write_ns: u64,
    /// All of the above, ns.
    pub total_ns: u64,
    /// Mean cost per sample, ns.
    pub per_sample_ns: Option<f64>,
    /// Sampler time as a percentage of the boot time.
    pub percent_of_boot: Option<f64>,
}

/// One run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Run index.
    pub run: u32,
    /// Why the run ended.
    pub end_reason: Option<String>,
    /// Details of the end.
    pub end_detail: Option<String>,
    /// First guest instruction → end of run, ns.
    pub boot_ns: Option<u64>,
    /// First guest instruction → first user-mode instruction, ns.
    pub until_init_ns: Option<u64>,
    /// Samples.
    pub samples: u64,
    /// Sum of sample intervals, ns.
    pub sampled_ns: u64,
    /// Host page faults over the run.
    pub faults: u64,
    /// KVM exits over the run.
    pub exits: u64,
    /// VMM phase boundaries.
    pub vmm_phases: Vec<VmmPhaseReport>,
    /// Kernel milestones.
    pub milestones: Milestones,
    /// Kernel phases in boot order.
    pub kernel_phases: Vec<Span>,
    /// `start_kernel`'s stages in order of first appearance.
    pub start_kernel_stages: Vec<Span>,
    /// Initcalls in order of first appearance.
    pub initcalls: Vec<Span>,
    /// Unwind quality.
    pub unwind: UnwindQuality,
    /// Sampler cost.
    pub sampler: SamplerReport,
    /// Time per guest task (empty without task awareness).
    pub tasks: Vec<TaskCost>,
    /// Where the kernel ran, when the trace recorded it (left out of the
    /// JSON otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layout: Option<LayoutReport>,
    /// What each virtio device did (trace format 3; left out when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceReport>,
    /// Initcalls by exact wall time, in boot order (trace format 3).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exact_initcalls: Vec<ExactInitcall>,
    /// Named points of the boot (trace format 3).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<NamedPoint>,
    /// What pairing initcall boundaries left over (with boundaries only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pairing: Option<Pairing>,
    /// The console's cost (trace format 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console: Option<ConsoleCost>,
    /// The breakpoints' cost (trace format 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakpoints: Option<BreakpointCost>,
    /// Wall time the boot thread was blocked, ns (absent without blocked stacks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waited_ns: Option<u64>,
    /// Top wait sites (absent without blocked stacks).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waits: Vec<WaitCost>,
}

/// Where one run's kernel and decompressor ran, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayoutReport {
    /// KASLR: runtime minus link-time virtual address of the kernel text.
    pub kaslr_slide: i64,
    /// How the slide was found.
    pub slide_method: String,
    /// Physical address the kernel was loaded at (its `_text`), when known.
    pub kernel_phys_start: Option<u64>,
    /// Link-time virtual address of `_text`.
    pub kernel_link_start: u64,
    /// Kernel image size in memory, bytes.
    pub kernel_size: u64,
    /// Physical addresses the decompressor ran at (loaded, relocated).
    pub decompressor_bases: Vec<u64>,
}

impl LayoutReport {
    fn of(l: &boottrace_symbols::layout::RunLayout) -> LayoutReport {
        LayoutReport {
            kaslr_slide: l.kernel_virt_slide,
            slide_method: l.virt_slide_method.clone(),
            kernel_phys_start: l.kernel_phys_start,
            kernel_link_start: l.kernel_link_start,
            kernel_size: l.kernel_size,
            decompressor_bases: l.decompressor_bases.clone(),
        }
    }
}

/// An exactly timed initcall summarized over runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExactInitcallSummary {
    /// The initcall.
    pub name: String,
    /// Entry to return, ns.
    pub wall_ns: Summary,
    /// On-CPU part, ns.
    pub on_cpu_ns: Summary,
    /// Waiting part, ns.
    pub waiting_ns: Summary,
    /// Runs it was timed in.
    pub runs_seen: usize,
}

/// The console's cost over runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConsoleSummary {
    /// Time the guest spent writing to the console, ns.
    pub time_ns: Summary,
    /// Share of the boot, percent.
    pub percent_of_boot: Option<Summary>,
    /// Sampled time in the kernel's console flushing, ns.
    pub sampled_ns: Option<Summary>,
    /// Its share of the boot, percent.
    pub sampled_percent_of_boot: Option<Summary>,
}

/// Wait sites listed per run.
pub const WAIT_ROWS: usize = 20;

/// A named time summarized over runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NamedSummary {
    /// Name.
    pub name: String,
    /// Sampled time per run, ns.
    pub time_ns: Summary,
    /// First appearance per run (runs where it was seen), ns since the first instruction.
    pub first_ns: Option<Summary>,
    /// Runs in which it was sampled.
    pub runs_seen: usize,
}

/// A VMM phase summarized over runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmmPhaseSummary {
    /// Boundary name.
    pub name: String,
    /// Time since the run's start, ns.
    pub at_ns: Summary,
    /// Time since the previous boundary, ns.
    pub duration_ns: Summary,
}

/// A function's cost summarized over runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionSummary {
    /// Function name.
    pub name: String,
    /// Per-run value: ns of time, or faults, or exits.
    pub value: Summary,
    /// Mean per-run fraction of the run's total (0–1).
    pub share: f64,
}

/// Sampler overhead over runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SamplerSummary {
    /// Mean cost per sample, ns.
    pub per_sample_ns: Option<Summary>,
    /// Sampler time as a percentage of boot time.
    pub percent_of_boot: Option<Summary>,
}

/// Everything summarized over runs.
#[derive(Debug, Clone, Serialize)]
pub struct SummaryReport {
    /// Number of runs.
    pub runs: usize,
    /// Boot time.
    pub boot_ns: Option<Summary>,
    /// Until init.
    pub until_init_ns: Option<Summary>,
    /// VMM phases, in recording order.
    pub vmm_phases: Vec<VmmPhaseSummary>,
    /// Kernel phases in boot order.
    pub kernel_phases: Vec<NamedSummary>,
    /// `start_kernel` stages in order of (mean) first appearance.
    pub start_kernel_stages: Vec<NamedSummary>,
    /// Initcalls in order of (mean) first appearance.
    pub initcalls: Vec<NamedSummary>,
    /// Top functions by self time.
    pub top_self: Vec<FunctionSummary>,
    /// Top functions by total time.
    pub top_total: Vec<FunctionSummary>,
    /// Top functions by host page faults (self).
    pub faults_by_function: Vec<FunctionSummary>,
    /// Top functions by KVM exits (self).
    pub exits_by_function: Vec<FunctionSummary>,
    /// Unwind quality of all runs added up.
    pub unwind: UnwindQuality,
    /// Sampler overhead.
    pub sampler: SamplerSummary,
    /// Time per guest task over runs (empty without task awareness).
    pub tasks: Vec<TaskSummary>,
    /// Each virtio device's counters over runs (left out when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<DeviceSummary>,
    /// Initcalls by exact wall time over runs (trace format 3).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub exact_initcalls: Vec<ExactInitcallSummary>,
    /// The console's cost over runs (trace format 3).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub console: Option<ConsoleSummary>,
    /// Wall time the boot thread was blocked, over runs with blocked stacks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waited_ns: Option<Summary>,
    /// Wait sites over runs (absent without blocked stacks).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waits: Vec<WaitSummary>,
}

/// Summarizes exact initcalls over runs by name; an initcall called twice in
/// a run counts its total there.
fn summarize_exact(runs: &[RunReport]) -> Vec<ExactInitcallSummary> {
    let mut order: Vec<(String, f64)> = Vec::new();
    let mut seen: std::collections::HashSet<&str> = std::collections::HashSet::new();
    let mut per: HashMap<String, Vec<(u64, u64, u64)>> = HashMap::new();
    for r in runs {
        let mut in_run: HashMap<&str, (u64, u64, u64)> = HashMap::new();
        for i in &r.exact_initcalls {
            let e = in_run.entry(&i.name).or_default();
            if seen.insert(&i.name) {
                order.push((i.name.clone(), i.start_ns as f64));
            }
            e.0 = e.0.saturating_add(i.wall_ns);
            e.1 = e.1.saturating_add(i.on_cpu_ns);
            e.2 = e.2.saturating_add(i.waiting_ns);
        }
        for (n, v) in in_run {
            per.entry(n.to_string()).or_default().push(v);
        }
    }
    order.sort_by(|a, b| a.1.total_cmp(&b.1));
    order
        .into_iter()
        .filter_map(|(name, _)| {
            let v = per.get(&name)?;
            let col = |f: fn(&(u64, u64, u64)) -> u64| -> Vec<u64> { v.iter().map(f).collect() };
            Some(ExactInitcallSummary {
                wall_ns: Summary::of_u64(&col(|x| x.0))?,
                on_cpu_ns: Summary::of_u64(&col(|x| x.1))?,
                waiting_ns: Summary::of_u64(&col(|x| x.2))?,
                runs_seen: v.len(),
                name,
            })
        })
        .collect()
}

fn summarize_console(runs: &[RunReport]) -> Option<ConsoleSummary> {
    let t: Vec<u64> = runs
        .iter()
        .filter_map(|r| r.console.map(|c| c.time_ns))
        .collect();
    let pct: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.console.and_then(|c| c.percent_of_boot))
        .collect();
    let sampled: Vec<u64> = runs
        .iter()
        .filter_map(|r| r.console.map(|c| c.sampled_ns))
        .collect();
    let spct: Vec<f64> = runs
        .iter()
        .filter_map(|r| r.console.and_then(|c| c.sampled_percent_of_boot))
        .collect();
    Some(ConsoleSummary {
        time_ns: Summary::of_u64(&t)?,
        percent_of_boot: Summary::of(&pct),
        sampled_ns: Summary::of_u64(&sampled),
        sampled_percent_of_boot: Summary::of(&spct),
    })
}

fn vmm_phases(run: &Run) -> Vec<VmmPhaseReport> {
    let mut prev = 0u64;
    run.phases
        .iter()
        .map(|p| {
            let d = p.t_ns.saturating_sub(prev);
            prev = p.t_ns;
            VmmPhaseReport {
                name: p.name.to_string(),
                at_ns: p.t_ns,
                duration_ns: d,
            }
        })
        .collect()
}

fn sampler(run: &Run) -> SamplerReport {
    let c = run.cost.unwrap_or_else(|| CostTotals {
        samples: run.samples.len() as u64,
        // Without the totals record only the per-sample sum is known.
        kick_ns: run.samples.iter().map(|s| s.cost_ns).sum(),
        ..CostTotals::default()
    });
    let total = c.total_ns();
    SamplerReport {
        samples: c.samples,
        kick_ns: c.kick_ns,
        capture_ns: c.capture_ns,
        unwind_ns: c.unwind_ns,
        write_ns: c.write_ns,
        total_ns: total,
        per_sample_ns: (c.samples > 0).then(|| total as f64 / c.samples as f64),
        percent_of_boot: run
            .boot_ns
            .filter(|&b| b > 0)
            .map(|b| 100.0 * total as f64 / b as f64),
    }
}

/// First instruction → first user-mode instruction: the VMM's boundary
/// (exact) or the first user-mode sample (up to one interval late), whichever
/// is earlier.
fn until_init(run: &Run, first_user_sample: Option<u64>) -> Option<u64> {
    let boundary = run
        .phases
        .iter()
        .find(|p| p.name == PhaseName::UserMode)
        .and_then(|p| p.t_ns.checked_sub(run.first_instruction_ns?));
    match (boundary, first_user_sample) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn run_report(p: &Profile, run: &Run) -> RunReport {
    let kp = kernel_phases(p, run);
    let total = functions::run_total(run);
    let exact = exact_view(p, run);
    let has_boundaries = !run.boundaries.is_empty() || run.figures.dropped_boundaries > 0;
    RunReport {
        run: run.run,
        end_reason: run.end.as_ref().map(|e| e.reason.to_string()),
        end_detail: run.end.as_ref().and_then(|e| e.detail.clone()),
        boot_ns: run.boot_ns,
        until_init_ns: until_init(run, kp.milestones.first_user_ns),
        samples: total.samples,
        sampled_ns: total.time_ns,
        faults: total.faults,
        exits: total.exits,
        vmm_phases: vmm_phases(run),
        unwind: unwind_quality(p, run, kp.milestones.start_kernel_ns),
        milestones: kp.milestones,
        kernel_phases: kp.phases,
        start_kernel_stages: kp.stages,
        initcalls: kp.initcalls,
        sampler: sampler(run),
        // Without task info every sample would be one "unknown" row: none.
        tasks: if run.tasks.is_empty() {
            Vec::new()
        } else {
            tasks::run_tasks(run)
        },
        layout: run.layout.as_ref().map(LayoutReport::of),
        devices: devices::run_devices(run),
        exact_initcalls: exact.initcalls,
        points: exact.points,
        pairing: has_boundaries.then_some(exact.pairing),
        console: console_cost(p, run),
        breakpoints: breakpoint_cost(run),
        waited_ns: (!run.waits.is_empty()).then(|| waits::waited_ns(run)),
        waits: {
            let mut w = waits::run_waits(p, run);
            w.truncate(WAIT_ROWS);
            w
        },
    }
}

/// How summarized spans are ordered.
#[derive(Clone, Copy)]
enum Order {
    /// By mean first appearance (stages, initcalls).
    FirstSeen,
    /// Kernel phases: boot order.
    Phase,
}

/// Summarizes named spans over runs; a name absent from a run counts 0 there.
fn summarize_spans(per_run: &[&[Span]], order_by: Order) -> Vec<NamedSummary> {
    let n = per_run.len();
    let mut order: Vec<String> = Vec::new();
    // Per name: (run index, time) for the runs it appears in, and first times.
    let mut times: HashMap<String, Vec<(usize, u64)>> = HashMap::new();
    let mut firsts: HashMap<String, Vec<u64>> = HashMap::new();
    for (i, spans) in per_run.iter().enumerate() {
        for s in spans.iter() {
            let t = times.entry(s.name.clone()).or_insert_with(|| {
                order.push(s.name.clone());
                Vec::new()
            });
            match t.last_mut() {
                Some((run, v)) if *run == i => *v = v.saturating_add(s.time_ns),
                _ => t.push((i, s.time_ns)),
            }
            firsts.entry(s.name.clone()).or_default().push(s.first_ns);
        }
    }
    let mut out: Vec<NamedSummary> = order
        .into_iter()
        .filter_map(|name| {
            let t: Vec<f64> = times.get(&name)?.iter().map(|&(_, v)| v as f64).collect();
            let f = firsts.get(&name).map(Vec::as_slice).unwrap_or(&[]);
            Some(NamedSummary {
                time_ns: Summary::of_sparse(&t, n)?,
                first_ns: Summary::of_u64(f),
                runs_seen: f.len(),
                name,
            })
        })
        .collect();
    match order_by {
        Order::FirstSeen => out.sort_by(|a, b| {
            let fa = a.first_ns.map_or(f64::INFINITY, |s| s.mean);
            let fb = b.first_ns.map_or(f64::INFINITY, |s| s.mean);
            fa.total_cmp(&fb).then_with(|| a.name.cmp(&b.name))
        }),
        Order::Phase => out.sort_by_key(|s| KernelPhase::rank_of(&s.name)),
    }
    out
}

/// Top `top` functions by one measure, summarized over runs, by mean.
fn top_functions(
    per_run: &[HashMap<String, FunctionCost>],
    totals: &[Cost],
    weight: Weight,
    total: bool,
    top: usize,
) -> Vec<FunctionSummary> {
    let n = per_run.len();
    // Per name: (value, share of its run) for the runs where it is nonzero.
    let mut values: HashMap<&str, Vec<(f64, f64)>> = HashMap::new();
    for (fns, run_total) in per_run.iter().zip(totals) {
        for (name, fc) in fns {
            let c = if total { &fc.total_cost } else { &fc.self_cost };
            let v = c.get(weight);
            if v > 0 {
                let share = match run_total.get(weight) {
                    0 => 0.0,
                    w => v as f64 / w as f64,
                };
                values
                    .entry(name.as_str())
                    .or_default()
                    .push((v as f64, share));
            }
        }
    }
    let mut out: Vec<FunctionSummary> = values
        .into_iter()
        .filter_map(|(name, v)| {
            let vals: Vec<f64> = v.iter().map(|&(x, _)| x).collect();
            let share = v.iter().map(|&(_, s)| s).sum::<f64>() / n.max(1) as f64;
            Some(FunctionSummary {
                name: name.to_string(),
                value: Summary::of_sparse(&vals, n)?,
                share,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        b.value
            .mean
            .total_cmp(&a.value.mean)
            .then_with(|| a.name.cmp(&b.name))
    });
    out.truncate(top);
    out
}

fn opt_summary(v: &[Option<f64>]) -> Option<Summary> {
    let vals: Vec<f64> = v.iter().flatten().copied().collect();
    Summary::of(&vals)
}

/// Builds the report of `profile`, listing `top` functions per table.
pub fn build(profile: &Profile, top: usize) -> ReportDoc {
    let runs: Vec<RunReport> = profile
        .runs
        .iter()
        .map(|r| run_report(profile, r))
        .collect();
    let tree = NameTree::new(profile);
    let fn_costs: Vec<HashMap<String, FunctionCost>> = profile
        .runs
        .iter()
        .map(|r| by_function_name(profile, &tree, r))
        .collect();
    let totals: Vec<Cost> = profile.runs.iter().map(functions::run_total).collect();

    let mut vmm: Vec<VmmPhaseSummary> = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for r in &runs {
        for p in &r.vmm_phases {
            if !names.contains(&p.name.as_str()) {
                names.push(&p.name);
            }
        }
    }
    for name in names {
        let pick = |f: fn(&VmmPhaseReport) -> u64| -> Vec<u64> {
            runs.iter()
                .filter_map(|r| r.vmm_phases.iter().find(|p| p.name == name).map(f))
                .collect()
        };
        if let (Some(at), Some(d)) = (
            Summary::of_u64(&pick(|p| p.at_ns)),
            Summary::of_u64(&pick(|p| p.duration_ns)),
        ) {
            vmm.push(VmmPhaseSummary {
                name: name.to_string(),
                at_ns: at,
                duration_ns: d,
            });
        }
    }

    let spans = |f: fn(&RunReport) -> &[Span]| -> Vec<&[Span]> { runs.iter().map(f).collect() };
    let boot: Vec<Option<f64>> = runs.iter().map(|r| r.boot_ns.map(|v| v as f64)).collect();
    let init: Vec<Option<f64>> = runs
        .iter()
        .map(|r| r.until_init_ns.map(|v| v as f64))
        .collect();
    let per_sample: Vec<Option<f64>> = runs.iter().map(|r| r.sampler.per_sample_ns).collect();
    let pct: Vec<Option<f64>> = runs.iter().map(|r| r.sampler.percent_of_boot).collect();
    let summary = SummaryReport {
        runs: runs.len(),
        boot_ns: opt_summary(&boot),
        until_init_ns: opt_summary(&init),
        vmm_phases: vmm,
        kernel_phases: summarize_spans(&spans(|r| &r.kernel_phases), Order::Phase),
        start_kernel_stages: summarize_spans(&spans(|r| &r.start_kernel_stages), Order::FirstSeen),
        initcalls: summarize_spans(&spans(|r| &r.initcalls), Order::FirstSeen),
        top_self: top_functions(&fn_costs, &totals, Weight::Time, false, top),
        top_total: top_functions(&fn_costs, &totals, Weight::Time, true, top),
        faults_by_function: top_functions(&fn_costs, &totals, Weight::Faults, false, top),
        exits_by_function: top_functions(&fn_costs, &totals, Weight::Exits, false, top),
        unwind: UnwindQuality::merge(&runs.iter().map(|r| r.unwind.clone()).collect::<Vec<_>>()),
        sampler: SamplerSummary {
            per_sample_ns: opt_summary(&per_sample),
            percent_of_boot: opt_summary(&pct),
        },
        tasks: tasks::summarize(&runs.iter().map(|r| r.tasks.clone()).collect::<Vec<_>>()),
        devices: devices::summarize(&profile.runs.iter().collect::<Vec<_>>()),
        exact_initcalls: summarize_exact(&runs),
        console: summarize_console(&runs),
        waited_ns: Summary::of_u64(&runs.iter().filter_map(|r| r.waited_ns).collect::<Vec<_>>()),
        waits: {
            let mut w = waits::summarize(&runs.iter().map(|r| r.waits.clone()).collect::<Vec<_>>());
            w.truncate(WAIT_ROWS);
            w
        },
    };
    ReportDoc {
        format: FORMAT,
        version: VERSION,
        input: profile.info.clone(),
        runs,
        summary,
    }
}
