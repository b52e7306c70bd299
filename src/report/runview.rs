//! The report's view of recorded boots: per run, the VMM phase boundaries, the
//! end, and every sample with its symbolized stack (root first), the time it
//! stands for, and the host costs charged to it.
//!
//! `diff` and `report` compute on this view only, so their statistics, phases
//! and tables are testable without a trace file; [`crate::report::load`]
//! builds it from a trace.
//!
//! Stacks are interned: a boot has ~10⁵–10⁶ samples but only ~10⁴ distinct
//! stacks, and frame names repeat across stacks.

use std::collections::HashMap;

/// Which code a sample was in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Space {
    /// Real-mode setup code or anything else below 1 MiB.
    Setup,
    /// The bzImage decompressor.
    Decompressor,
    /// The kernel proper, in kernel mode.
    Kernel,
    /// Guest user mode.
    User,
    /// Nothing known covers the address.
    Unknown,
}

/// One frame of a symbolized stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Frame {
    /// Index into [`Names`].
    pub name: u32,
    /// True for a frame of a function inlined into its caller (from DWARF).
    pub inlined: bool,
}

/// Interned frame names and stacks, shared by all runs of one input.
#[derive(Debug, Clone, Default)]
pub struct Names {
    names: Vec<String>,
    by_name: HashMap<String, u32>,
    stacks: Vec<Vec<Frame>>,
    by_stack: HashMap<Vec<Frame>, u32>,
}

impl Names {
    /// The id of `name`, adding it when new.
    pub fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.by_name.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_string());
        self.by_name.insert(name.to_string(), id);
        id
    }

    /// The id of `name` if it was interned.
    pub fn lookup(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// The name of an id (`"?"` for an id this table never gave out).
    pub fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("?", String::as_str)
    }

    /// The id of a stack (frames root first), adding it when new.
    pub fn intern_stack(&mut self, frames: Vec<Frame>) -> u32 {
        if let Some(&id) = self.by_stack.get(&frames) {
            return id;
        }
        let id = self.stacks.len() as u32;
        self.stacks.push(frames.clone());
        self.by_stack.insert(frames, id);
        id
    }

    /// Interns a stack given by names, root first, none inlined (tests, synthetic input).
    pub fn stack_of(&mut self, root_first: &[&str]) -> u32 {
        let frames = root_first
            .iter()
            .map(|n| Frame {
                name: self.intern(n),
                inlined: false,
            })
            .collect();
        self.intern_stack(frames)
    }

    /// The frames of a stack id, root first (empty for an unknown id).
    pub fn stack(&self, id: u32) -> &[Frame] {
        self.stacks.get(id as usize).map_or(&[], Vec::as_slice)
    }
}

/// One sample as reports see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewSample {
    /// vCPU index.
    pub vcpu: u32,
    /// Nanoseconds since the run's first guest instruction (host time).
    pub t_ns: u64,
    /// Host time this sample stands for, ns (see [`assign_intervals`]).
    pub interval_ns: u64,
    /// Which code it was in.
    pub space: Space,
    /// Interned stack, root first ([`Names::stack`]).
    pub stack: u32,
    /// Host page faults (minor + major) of the vCPU thread since its previous sample.
    pub faults: u64,
    /// KVM exits of the vCPU since its previous sample.
    pub exits: u64,
    /// The unwind stopped early (read failure, implausible frame, depth limit).
    pub truncated: bool,
    /// The sampler's own cost for this sample, ns (kick + capture + unwind + write).
    pub cost_ns: u64,
}

/// The VMM phase boundary at the first user-mode instruction.
pub const USER_MODE_PHASE: &str = "user_mode";

/// A VMM phase boundary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmmPhase {
    /// Boundary name (create_vm, memory, load_kernel, first_instruction, …).
    pub name: String,
    /// Nanoseconds since the run's start (process start for the first run).
    pub t_ns: u64,
}

/// The sampler's cost over one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CostTotals {
    /// Samples taken.
    pub samples: u64,
    /// Kick/exit time, ns.
    pub kick_ns: u64,
    /// Register capture, ns.
    pub capture_ns: u64,
    /// Unwinding, ns.
    pub unwind_ns: u64,
    /// Handing samples to the writer, ns.
    pub write_ns: u64,
}

impl CostTotals {
    /// All sampler time, ns.
    pub fn total_ns(&self) -> u64 {
        self.kick_ns
            .saturating_add(self.capture_ns)
            .saturating_add(self.unwind_ns)
            .saturating_add(self.write_ns)
    }
}

/// One recorded boot.
#[derive(Debug, Clone, Default)]
pub struct RunView {
    /// Run index in its trace.
    pub run: u32,
    /// VMM phase boundaries in recording order.
    pub phases: Vec<VmmPhase>,
    /// Run-start time of the first guest instruction, ns (sample times count from here).
    pub first_instruction_ns: Option<u64>,
    /// Boot time: first guest instruction to the end of the run, ns.
    pub boot_ns: Option<u64>,
    /// Why the run ended (user, shutdown, timeout, …).
    pub end_reason: Option<String>,
    /// Details of the end (RIP, instruction bytes, symbol, …).
    pub end_detail: Option<String>,
    /// Samples in time order.
    pub samples: Vec<ViewSample>,
    /// Sampler totals, when the trace has them.
    pub cost: Option<CostTotals>,
}

/// What a report says about where its data came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct InputInfo {
    /// The trace file read.
    pub path: String,
    /// Kernel image path as recorded.
    pub kernel_path: String,
    /// The kernel's `Linux version …` banner, when known.
    pub kernel_version: Option<String>,
    /// GNU build-id of the kernel, when known.
    pub build_id: Option<String>,
    /// Guest kernel command line.
    pub kernel_cmdline: String,
    /// Sampling frequency per vCPU, Hz (0: not sampled).
    pub sample_freq_hz: u32,
    /// Unwinder used while recording.
    pub unwinder: String,
    /// Symbol source used to name frames.
    pub symbol_source: String,
    /// Workarounds applied on a PVM host (timings are then emulated-KVM times).
    pub pvm_workarounds: Vec<String>,
    /// True when the trace file ended with its final record.
    pub complete: bool,
    /// Damage found while reading, and symbolization notes.
    pub warnings: Vec<String>,
}

/// Recorded boots ready for reports: interned names and stacks, runs, and their origin.
#[derive(Debug, Clone, Default)]
pub struct Profile {
    /// Where the data came from.
    pub info: InputInfo,
    /// Names and stacks the runs refer to.
    pub names: Names,
    /// Runs in index order.
    pub runs: Vec<RunView>,
}

impl Profile {
    /// Appends `other`'s runs (renumbered after this profile's), re-interning
    /// its names and stacks; used when each boot was recorded to its own file.
    pub fn absorb(&mut self, other: Profile) {
        let mut map: HashMap<u32, u32> = HashMap::new();
        let first_run = self.runs.len() as u32;
        for (i, mut run) in other.runs.into_iter().enumerate() {
            for s in &mut run.samples {
                s.stack = match map.get(&s.stack) {
                    Some(&id) => id,
                    None => {
                        let frames: Vec<Frame> = other
                            .names
                            .stack(s.stack)
                            .iter()
                            .map(|f| Frame {
                                name: self.names.intern(other.names.name(f.name)),
                                inlined: f.inlined,
                            })
                            .collect();
                        let id = self.names.intern_stack(frames);
                        map.insert(s.stack, id);
                        id
                    }
                };
            }
            run.run = first_run + i as u32;
            self.runs.push(run);
        }
        self.info.warnings.extend(other.info.warnings);
        self.info.complete &= other.info.complete;
    }
}

/// What the weight of a sample is (reports weigh samples by time; see
/// [`crate::report::fold::Weight`] for the command-line choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Weight {
    /// Host time (the sample's interval).
    #[default]
    Samples,
    /// Host page faults.
    Faults,
    /// KVM exits.
    Exits,
}

impl ViewSample {
    /// This sample's weight: interval ns, faults or exits.
    pub fn weight(&self, w: Weight) -> u64 {
        match w {
            Weight::Samples => self.interval_ns,
            Weight::Faults => self.faults,
            Weight::Exits => self.exits,
        }
    }
}

/// Sets each sample's `interval_ns`: the time to the same vCPU's next sample.
///
/// A timer sample is a point; the code it caught runs, in expectation, until
/// the next sample, so each sample stands for the time up to its successor.
/// The last sample of a vCPU stands for the time to `end_ns` (the run's end),
/// capped at the median interval of that vCPU so a long tail with no samples
/// (a vCPU stopped, a stuck sampler) is not all charged to one stack. Samples
/// must be in time order per vCPU; out-of-order times count as 0.
pub fn assign_intervals(samples: &mut [ViewSample], end_ns: Option<u64>) {
    let mut by_vcpu: HashMap<u32, Vec<usize>> = HashMap::new();
    for (i, s) in samples.iter().enumerate() {
        by_vcpu.entry(s.vcpu).or_default().push(i);
    }
    for idx in by_vcpu.values() {
        let mut gaps = Vec::with_capacity(idx.len());
        for pair in idx.windows(2) {
            let gap = samples[pair[1]].t_ns.saturating_sub(samples[pair[0]].t_ns);
            samples[pair[0]].interval_ns = gap;
            gaps.push(gap);
        }
        gaps.sort_unstable();
        let median = gaps.get(gaps.len() / 2).copied();
        if let Some(&last) = idx.last() {
            let to_end = end_ns.map(|e| e.saturating_sub(samples[last].t_ns));
            samples[last].interval_ns = match (to_end, median) {
                (Some(e), Some(m)) => e.min(m),
                (Some(e), None) => e,
                (None, Some(m)) => m,
                (None, None) => 0,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(vcpu: u32, t_ns: u64) -> ViewSample {
        ViewSample {
            vcpu,
            t_ns,
            interval_ns: 0,
            space: Space::Kernel,
            stack: 0,
            faults: 0,
            exits: 0,
            truncated: false,
            cost_ns: 0,
        }
    }

    #[test]
    fn intervals_run_to_the_next_sample_of_the_same_vcpu() {
        let mut v = vec![s(0, 0), s(1, 5), s(0, 10), s(0, 30), s(1, 25)];
        assign_intervals(&mut v, Some(1000));
        let got: Vec<u64> = v.iter().map(|x| x.interval_ns).collect();
        // vCPU 0: 10, 20, last capped at median(10, 20) = 20.
        // vCPU 1: 20, last capped at median(20) = 20.
        assert_eq!(got, vec![10, 20, 20, 20, 20]);

        let mut end_close = vec![s(0, 0), s(0, 10), s(0, 13)];
        assign_intervals(&mut end_close, Some(15));
        assert_eq!(end_close[2].interval_ns, 2);
    }

    #[test]
    fn absorb_reinterns_and_renumbers() {
        let mut a = Profile::default();
        let sa = a.names.stack_of(&["x", "y"]);
        a.runs.push(RunView {
            samples: vec![ViewSample {
                stack: sa,
                ..s(0, 0)
            }],
            ..RunView::default()
        });
        let mut b = Profile::default();
        let _unused = b.names.stack_of(&["q"]);
        let sb = b.names.stack_of(&["x", "z"]);
        b.runs.push(RunView {
            samples: vec![ViewSample {
                stack: sb,
                ..s(0, 0)
            }],
            ..RunView::default()
        });
        a.absorb(b);
        assert_eq!(a.runs.len(), 2);
        assert_eq!(a.runs[1].run, 1);
        let st = a.names.stack(a.runs[1].samples[0].stack);
        let names: Vec<&str> = st.iter().map(|f| a.names.name(f.name)).collect();
        assert_eq!(names, vec!["x", "z"]);
    }

    #[test]
    fn names_intern_stacks_once() {
        let mut n = Names::default();
        let a = n.stack_of(&["start_kernel", "setup_arch"]);
        let b = n.stack_of(&["start_kernel", "setup_arch"]);
        let c = n.stack_of(&["start_kernel"]);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let names: Vec<&str> = n.stack(a).iter().map(|f| n.name(f.name)).collect();
        assert_eq!(names, vec!["start_kernel", "setup_arch"]);
        assert!(n.stack(99).is_empty());
    }
}
