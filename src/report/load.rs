//! A trace file → the [`Profile`] that `report` and `diff` compute on:
//! symbolized through [`super::symbolize`], times moved to "since the first
//! guest instruction", each sample given the host time it stands for, and
//! its address space, host faults, exits and sampler cost attached.

use std::path::Path;

use boottrace_symbols::layout::{AddrSpace, KERNEL_HALF};

use super::fold;
use super::runview::{
    assign_intervals, CostTotals, Frame, InputInfo, Names, Profile, RunView, Space, ViewSample,
    VmmPhase, Weight,
};
use super::symbolize::{self, SymRun, SymTrace, SymbolArgs, SymbolizeError};
use crate::trace::{RunData, StackEnd, Trace};

/// Why a trace could not become a profile.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Reading or symbolizing the trace failed.
    #[error(transparent)]
    Symbolize(#[from] SymbolizeError),
    /// The symbolized runs do not line up with the trace's runs (a bug).
    #[error("run {run}: {raw} samples in the trace but {symbolized} symbolized")]
    Mismatch {
        /// Run index.
        run: u32,
        /// Samples in the trace.
        raw: usize,
        /// Symbolized samples.
        symbolized: usize,
    },
}

/// Reads and symbolizes `input`.
pub fn load_profile(input: &Path, args: &SymbolArgs) -> Result<Profile, LoadError> {
    let (trace, sym) = symbolize::load(input, args)?;
    profile_from(input, &trace, &sym)
}

impl From<fold::Weight> for Weight {
    fn from(w: fold::Weight) -> Weight {
        match w {
            fold::Weight::Samples => Weight::Samples,
            fold::Weight::Faults => Weight::Faults,
            fold::Weight::Exits => Weight::Exits,
        }
    }
}

fn space_of(run: &RunData, rip: u64, cpl: u8) -> Space {
    let space = match &run.layout {
        Some(l) => l.classify(rip, cpl),
        // No layout recorded: symbolize assumes an unrelocated kernel too.
        None if cpl == 3 => AddrSpace::User,
        None if rip >= KERNEL_HALF => AddrSpace::Kernel(rip),
        None => AddrSpace::Unknown(rip),
    };
    match space {
        AddrSpace::Kernel(_) => Space::Kernel,
        AddrSpace::Decompressor(_) => Space::Decompressor,
        AddrSpace::User => Space::User,
        AddrSpace::Setup(_) => Space::Setup,
        AddrSpace::Unknown(_) => Space::Unknown,
    }
}

/// Builds a profile from a read trace and its symbolized samples.
pub fn profile_from(input: &Path, trace: &Trace, sym: &SymTrace) -> Result<Profile, LoadError> {
    let mut names = Names::default();
    // SymTrace stack index → our stack id, interned on first use.
    let mut stack_ids: Vec<Option<u32>> = vec![None; sym.stacks.len()];
    let mut runs = Vec::with_capacity(trace.runs.len());
    for raw in &trace.runs {
        let empty = SymRun {
            run: raw.run,
            samples: Vec::new(),
        };
        let sr = sym.run(raw.run).unwrap_or(&empty);
        if sr.samples.len() != raw.samples.len() {
            return Err(LoadError::Mismatch {
                run: raw.run,
                raw: raw.samples.len(),
                symbolized: sr.samples.len(),
            });
        }
        let t0 = raw
            .phase("first_instruction")
            .or_else(|| raw.samples.first().map(|s| s.t_ns))
            .unwrap_or(0);
        let mut samples = Vec::with_capacity(raw.samples.len());
        for (r, s) in raw.samples.iter().zip(&sr.samples) {
            let idx = s.stack as usize;
            let stack = match stack_ids.get(idx).copied().flatten() {
                Some(id) => id,
                None => {
                    let frames: Vec<Frame> = sym
                        .frames(s)
                        .iter()
                        .map(|n| Frame {
                            name: names.intern(n),
                            inlined: false,
                        })
                        .collect();
                    let id = names.intern_stack(frames);
                    if let Some(slot) = stack_ids.get_mut(idx) {
                        *slot = Some(id);
                    }
                    id
                }
            };
            let c = r.cost;
            samples.push(ViewSample {
                vcpu: s.vcpu,
                t_ns: s.t_ns.saturating_sub(t0),
                interval_ns: 0,
                space: space_of(raw, r.rip, r.cpl),
                stack,
                faults: s.faults(),
                exits: s.exits,
                truncated: matches!(s.stack_end, StackEnd::Truncated | StackEnd::DepthLimit),
                cost_ns: u64::from(c.kick_ns)
                    + u64::from(c.capture_ns)
                    + u64::from(c.unwind_ns)
                    + u64::from(c.write_ns),
            });
        }
        let end = raw.end.as_ref().map(|e| e.t_ns.saturating_sub(t0));
        assign_intervals(&mut samples, end);
        let has_span = raw.end.is_some() || !raw.samples.is_empty();
        runs.push(RunView {
            run: raw.run,
            phases: raw
                .phases
                .iter()
                .map(|p| VmmPhase {
                    name: p.name.to_string(),
                    t_ns: p.t_ns,
                })
                .collect(),
            first_instruction_ns: raw.phase("first_instruction"),
            boot_ns: has_span.then(|| raw.boot_ns()),
            end_reason: raw.end.as_ref().map(|e| e.reason.to_string()),
            end_detail: raw.end.as_ref().and_then(|e| e.detail.clone()),
            samples,
            cost: raw.cost.as_ref().map(|c| CostTotals {
                samples: c.samples,
                kick_ns: c.total_kick_ns,
                capture_ns: c.total_capture_ns,
                unwind_ns: c.total_unwind_ns,
                write_ns: c.total_write_ns,
            }),
        });
    }
    let m = &trace.meta;
    let mut warnings = trace.warnings.clone();
    warnings.extend(sym.notes.iter().cloned());
    Ok(Profile {
        info: InputInfo {
            path: input.display().to_string(),
            kernel_path: m.kernel.path.clone(),
            kernel_version: m.kernel.version.clone(),
            build_id: m.kernel.build_id.clone(),
            kernel_cmdline: m.kernel_cmdline.clone(),
            sample_freq_hz: m.sample_freq_hz,
            unwinder: m.unwinder.to_string(),
            symbol_source: sym.source_label.clone(),
            pvm_workarounds: m.host.pvm_workarounds.clone(),
            complete: trace.complete,
            warnings,
        },
        names,
        runs,
    })
}
