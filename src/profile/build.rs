//! A read trace → the [`Profile`]: the only place that classifies
//! addresses and interns stacks.
//!
//! Each sampled stack is raw guest addresses: `[0]` the RIP, then return
//! addresses. Every address goes through the run's `RunLayout::classify`
//! (KASLR slide, physical head code, decompressor) and then the
//! symbolizer; a return address is looked up at `addr - 1`, the call
//! instruction, so a call at the very end of a function (`noreturn`
//! callees) is not charged to the next one. Inline frames are expanded and
//! keep their DWARF inline flag and file:line. A stack cut short gets a
//! [`Unresolved::TruncatedStack`] root, so no rendering passes it off as
//! complete. Runs without a layout record are read as an unrelocated
//! kernel (the kernel text mapping without KASLR).

use std::collections::HashMap;
use std::path::Path;

use boottrace_symbols::layout::{AddrSpace, RunLayout, START_KERNEL_MAP};
use boottrace_symbols::symbolizer::Frame as SymFrame;

use super::interval::intervals;
use super::symbols::{setup, SymbolConfig, SymbolError, SymbolSetup};
use super::{
    BoundaryKind, BoundaryMark, ConsoleLine, CostTotals, EndMark, Frame, FrameId, FrameKind,
    FrameName, InputInfo, PhaseMark, PhaseName, Profile, Run, RunFigures, Sample, StackId,
    TaskInfo, Unresolved, RUNNABLE_FRAME, WAIT_FRAME,
};
use crate::trace::{RunData, SampleRow, SampleTable, StackEnd, Trace, TraceError, MAX_STACK_DEPTH};

/// Why a trace could not become a profile.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The trace could not be read.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// The symbol sources could not be set up.
    #[error(transparent)]
    Symbols(#[from] SymbolError),
}

/// Reads `input`, sets up its symbols and builds the profile.
pub fn open(input: &Path, config: &SymbolConfig) -> Result<Profile, BuildError> {
    let (trace, table) = Trace::open_table(input)?;
    let symbols = setup(&trace, config)?;
    let mut p = build_table(&trace, &table, &symbols);
    p.info.path = input.display().to_string();
    Ok(p)
}

/// Layout used for a run without a `Layout` record: the kernel text mapping
/// without KASLR, so unrelocated kernels still get names.
fn fallback_layout() -> RunLayout {
    RunLayout {
        kernel_virt_slide: 0,
        virt_slide_method: "assumed: no layout recorded".into(),
        kernel_phys_start: None,
        kernel_link_start: START_KERNEL_MAP,
        kernel_size: 1 << 30,
        decompressor_bases: Vec::new(),
        decompressor_size: 0,
    }
}

/// The kind of code a classified address is in.
pub fn kind_of(space: AddrSpace) -> FrameKind {
    match space {
        AddrSpace::Kernel(_) => FrameKind::Kernel,
        AddrSpace::Decompressor(_) => FrameKind::Decompressor,
        AddrSpace::User => FrameKind::User,
        AddrSpace::Setup(_) => FrameKind::Setup,
        AddrSpace::Unknown(_) => FrameKind::Unknown,
    }
}

/// Replaces the characters folded-stack formats use as separators.
fn clean_name(name: &str) -> std::borrow::Cow<'_, str> {
    if name
        .chars()
        .any(|c| c == ';' || c.is_control() || c == '\u{2028}')
    {
        name.chars()
            .map(|c| match c {
                ';' => ':',
                c if c.is_control() || c == '\u{2028}' => '?',
                c => c,
            })
            .collect::<String>()
            .into()
    } else {
        name.into()
    }
}

/// The typed name of a symbolizer frame for an address in `space`: the
/// symbolizer's bracketed labels become [`Unresolved`] reasons.
fn typed_name(space: AddrSpace, f: &SymFrame) -> Option<Unresolved> {
    let label = |r: Unresolved| (*f.function == *r.label()).then_some(r);
    if f.inlined {
        return label(Unresolved::UnnamedInline);
    }
    match space {
        AddrSpace::User => Some(Unresolved::User),
        AddrSpace::Setup(_) => Some(Unresolved::Setup),
        AddrSpace::Unknown(a) => Some(Unresolved::Unmapped(a)),
        AddrSpace::Decompressor(_) => label(Unresolved::Decompressor),
        AddrSpace::Kernel(a) => label(Unresolved::NoKernelSymbol(a)),
    }
}

/// Slots of `Builder::recent` (a power of two): room for a boot's hot
/// addresses, small enough (384 KiB) that a profile of one short trace,
/// one of thousands `open_many` reads, does not pay for clearing it.
const RECENT_SLOTS: usize = 1 << 14;

/// The slot of an address in `Builder::recent`: Fibonacci hashing of the
/// address. Addresses that collide (by chance or made by a guest) only
/// fall through to the keyed map.
fn recent_slot(space: AddrSpace) -> usize {
    let a = match space {
        AddrSpace::Kernel(a)
        | AddrSpace::Decompressor(a)
        | AddrSpace::Setup(a)
        | AddrSpace::Unknown(a) => a,
        AddrSpace::User => 0,
    };
    (a.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - RECENT_SLOTS.trailing_zeros())) as usize
}

/// How a row uses its callers: its CPL, whether its unwind was cut and
/// whether its leaf is the RIP (the stack differs with each).
type Use = (u8, bool, bool);

/// Per-address frames and per-stack interning over one profile.
struct Builder<'a> {
    symbols: &'a SymbolSetup,
    p: Profile,
    /// Address → index into `addr_frames`.
    by_addr: HashMap<AddrSpace, u32>,
    /// In front of `by_addr`: the last address seen per [`recent_slot`].
    /// A boot's samples hit a few thousand addresses millions of times;
    /// most lookups then skip the keyed hash.
    recent: Box<[Option<(AddrSpace, u32)>]>,
    /// Frame lists (root first), deduplicated: addresses in one function share one.
    by_frames: HashMap<Vec<FrameId>, u32>,
    addr_frames: Vec<Vec<FrameId>>,
    /// True when the outermost frame of an `addr_frames` entry has no kernel symbol.
    no_symbol: Vec<bool>,
    /// A sample's list of `addr_frames` indices (0 = truncated root) → its stack.
    by_key: HashMap<Vec<u32>, StackId>,
    key: Vec<u32>,
    /// Per run (addresses classify by the run's layout): a row's callers
    /// → the stack of the callers alone (leaf is RIP) or of the whole
    /// sample. Indexed by callers id, for the first [`Use`] met in the
    /// run (`run_gen` tells the run); other uses in `other_callers`.
    by_callers: Vec<Option<(u32, Use, Option<StackId>)>>,
    other_callers: HashMap<(u32, Use), Option<StackId>>,
    /// Counts runs, so `by_callers` needs no clearing between them.
    run_gen: u32,
    /// (callers' stack, leaf's `addr_frames` index) → the sample's stack.
    by_leaf: HashMap<(Option<StackId>, u32), Option<StackId>>,
}

impl<'a> Builder<'a> {
    fn new(symbols: &'a SymbolSetup) -> Builder<'a> {
        let mut b = Builder {
            symbols,
            p: Profile::default(),
            by_addr: HashMap::new(),
            recent: vec![None; RECENT_SLOTS].into_boxed_slice(),
            by_frames: HashMap::new(),
            addr_frames: Vec::new(),
            no_symbol: Vec::new(),
            by_key: HashMap::new(),
            key: Vec::new(),
            by_callers: Vec::new(),
            other_callers: HashMap::new(),
            run_gen: 0,
            by_leaf: HashMap::new(),
        };
        let root = b.p.frames.intern(Frame {
            name: FrameName::Unknown(Unresolved::TruncatedStack),
            kind: FrameKind::Unknown,
            inlined: false,
            file: None,
            line: None,
        });
        b.addr_frames.push(vec![root]);
        b.no_symbol.push(false);
        b
    }

    fn addr(&mut self, space: AddrSpace) -> u32 {
        let slot = recent_slot(space);
        if let Some((known, id)) = self.recent[slot] {
            if known == space {
                return id;
            }
        }
        let id = self.addr_slow(space);
        self.recent[slot] = Some((space, id));
        id
    }

    /// [`Builder::addr`] past the direct-mapped cache.
    fn addr_slow(&mut self, space: AddrSpace) -> u32 {
        if let Some(&id) = self.by_addr.get(&space) {
            return id;
        }
        let kind = kind_of(space);
        let resolved = self.symbols.symbolizer.resolve(space);
        // The symbolizer gives innermost first; stacks here are root first.
        let mut ids = Vec::with_capacity(resolved.len());
        let mut no_symbol = false;
        for (i, f) in resolved.iter().rev().enumerate() {
            let name = match typed_name(space, f) {
                Some(r) => {
                    if i == 0 && matches!(r, Unresolved::NoKernelSymbol(_)) {
                        no_symbol = true;
                    }
                    FrameName::Unknown(r)
                }
                None => FrameName::Symbol(self.p.strings.intern(&clean_name(&f.function))),
            };
            let file = f.file.as_deref().map(|s| self.p.strings.intern(s));
            ids.push(self.p.frames.intern(Frame {
                name,
                kind,
                inlined: f.inlined,
                file,
                line: f.line,
            }));
        }
        let id = match self.by_frames.get(&ids) {
            Some(&id) => id,
            None => {
                let id = self.addr_frames.len() as u32;
                self.addr_frames.push(ids.clone());
                self.no_symbol.push(no_symbol);
                self.by_frames.insert(ids, id);
                id
            }
        };
        self.by_addr.insert(space, id);
        id
    }

    fn stack(
        &mut self,
        layout: &RunLayout,
        raw: &[u64],
        rip: u64,
        cpl: u8,
        truncated: bool,
        leaf_is_return: bool,
    ) -> Option<StackId> {
        let mut key = std::mem::take(&mut self.key);
        key.clear();
        if truncated {
            key.push(0);
        }
        let leaf_only = [rip];
        let raw = if raw.is_empty() { &leaf_only[..] } else { raw };
        self.push_addrs(&mut key, layout, raw, cpl, leaf_is_return);
        let stack = self.key_stack(&key);
        self.key = key;
        stack
    }

    /// The stack of a list of `addr_frames` indices, root first.
    fn key_stack(&mut self, key: &[u32]) -> Option<StackId> {
        if let Some(&id) = self.by_key.get(key) {
            return Some(id);
        }
        let stack = self.intern_key(None, key);
        if let Some(id) = stack {
            self.by_key.insert(key.to_vec(), id);
        }
        stack
    }

    /// Appends to `key` the `addr_frames` index of each address of `raw`
    /// (innermost first), root first. Return addresses are looked up at
    /// `addr - 1`; the innermost is one only when `leaf_is_return`.
    fn push_addrs(
        &mut self,
        key: &mut Vec<u32>,
        layout: &RunLayout,
        raw: &[u64],
        cpl: u8,
        leaf_is_return: bool,
    ) {
        // Root first: walk the innermost-first raw stack backwards.
        for (depth, &a) in raw.iter().enumerate().rev() {
            let at = if depth == 0 && !leaf_is_return {
                a
            } else {
                a.wrapping_sub(1)
            };
            let mut id = self.addr(layout.classify(at, cpl));
            // A frame that is not a return address (a pt_regs IP, or a new
            // task's first "return" to the start of ret_from_fork_asm) can sit
            // at a symbol's first byte: `addr - 1` then names nothing.
            if at != a && self.no_symbol[id as usize] {
                id = self.addr(layout.classify(a, cpl));
            }
            key.push(id);
        }
    }

    /// The stack of `parent` extended by the frames of each `addr_frames` index in `key`.
    fn intern_key(&mut self, mut parent: Option<StackId>, key: &[u32]) -> Option<StackId> {
        for &k in key {
            for &f in &self.addr_frames[k as usize] {
                parent = Some(self.p.stacks.intern(parent, f));
            }
        }
        parent
    }

    /// The stack of a sample row whose RIP classifies as `leaf`: the same
    /// stack [`Builder::stack`] gives for its raw stack, with the callers'
    /// part worked out once per distinct callers and the rest one lookup.
    fn row_stack(
        &mut self,
        layout: &RunLayout,
        table: &SampleTable,
        r: &SampleRow,
        leaf: AddrSpace,
        truncated: bool,
    ) -> Option<StackId> {
        let callers = table.callers(r, MAX_STACK_DEPTH);
        let how: Use = (r.cpl, truncated, r.leaf_is_rip);
        let known = self.known_callers(r.callers, how);
        if !r.leaf_is_rip {
            // The callers are the whole stack (never empty: see `SampleRow`).
            return known.unwrap_or_else(|| {
                let s = self.stack(layout, callers, r.rip, r.cpl, truncated, false);
                self.remember_callers(r.callers, how, s);
                s
            });
        }
        let prefix = known.unwrap_or_else(|| {
            let mut k = std::mem::take(&mut self.key);
            k.clear();
            if truncated {
                k.push(0);
            }
            // Every caller is a return address (the leaf is the RIP).
            self.push_addrs(&mut k, layout, callers, r.cpl, true);
            // Callers that differ only in call sites give the same key.
            let s = self.key_stack(&k);
            self.key = k;
            self.remember_callers(r.callers, how, s);
            s
        });
        let id = self.addr(leaf);
        match self.by_leaf.get(&(prefix, id)) {
            Some(&s) => s,
            None => {
                let s = self.intern_key(prefix, &[id]);
                self.by_leaf.insert((prefix, id), s);
                s
            }
        }
    }

    /// The stack worked out for callers `id` used `how` in this run, if any.
    fn known_callers(&self, id: u32, how: Use) -> Option<Option<StackId>> {
        match self.by_callers.get(id as usize).copied().flatten() {
            Some((gen, first, s)) if gen == self.run_gen => {
                if first == how {
                    Some(s)
                } else {
                    self.other_callers.get(&(id, how)).copied()
                }
            }
            _ => None,
        }
    }

    /// Keeps the stack of callers `id` used `how` for the rest of the run.
    fn remember_callers(&mut self, id: u32, how: Use, s: Option<StackId>) {
        let gen = self.run_gen;
        match self.by_callers.get_mut(id as usize) {
            Some(slot) if !matches!(*slot, Some((g, _, _)) if g == gen) => {
                *slot = Some((gen, how, s));
            }
            _ => {
                self.other_callers.insert((id, how), s);
            }
        }
    }

    fn run(&mut self, raw: &RunData, table: &SampleTable, rows: &[SampleRow]) -> Run {
        let layout = match &raw.layout {
            Some(l) => l.clone(),
            None => {
                if !raw.samples.is_empty() {
                    self.p.notes.push(format!(
                        "run {} has no layout record: assuming an unrelocated kernel",
                        raw.run
                    ));
                }
                fallback_layout()
            }
        };
        let first_instruction_ns = raw.phase(PhaseName::FirstInstruction);
        let t0 = first_instruction_ns
            .or_else(|| rows.first().map(|s| s.t_ns))
            .unwrap_or(0);
        let (tasks, task_index) = run_tasks(raw);
        // Callers classify by this run's layout: forget the last run's.
        self.run_gen += 1;
        self.other_callers.clear();
        if self.by_callers.len() < table.stacks.len() {
            self.by_callers.resize(table.stacks.len(), None);
        }
        let mut samples: Vec<Sample> = Vec::with_capacity(rows.len());
        for r in rows {
            let end = StackEnd::from_u8(r.stack_end);
            let truncated = matches!(end, StackEnd::Truncated | StackEnd::DepthLimit);
            let space = layout.classify(r.rip, r.cpl);
            samples.push(Sample {
                vcpu: r.vcpu,
                t_ns: r.t_ns,
                interval_ns: 0,
                kind: kind_of(space),
                stack: self.row_stack(&layout, table, r, space, truncated),
                truncated,
                faults: r.faults,
                exits: r.exits,
                cost_ns: r.cost_ns,
                task: r.task.and_then(|id| task_index.get(&id).copied()),
            });
        }
        // Intervals on the report clock (since t0), as reports always measured them.
        let points: Vec<(u32, u64)> = samples
            .iter()
            .map(|s| (s.vcpu, s.t_ns.saturating_sub(t0)))
            .collect();
        let end_rel = raw.end.as_ref().map(|e| e.t_ns.saturating_sub(t0));
        for (s, i) in samples.iter_mut().zip(intervals(&points, end_rel)) {
            s.interval_ns = i;
        }
        let (boundaries, figures) = self.boundaries(raw, &layout);
        let waits = self.waits(raw, &layout, &samples, &task_index);
        let has_span = raw.end.is_some() || !rows.is_empty();
        Run {
            run: raw.run,
            t0_ns: t0,
            first_instruction_ns,
            boot_ns: has_span.then(|| raw.boot_ns_with(rows.last().map(|s| s.t_ns))),
            phases: raw
                .phases
                .iter()
                .map(|p| PhaseMark {
                    name: p.name.clone(),
                    t_ns: p.t_ns,
                })
                .collect(),
            console: raw
                .serial
                .iter()
                .map(|l| ConsoleLine {
                    t_ns: l.t_ns,
                    line: l.line.clone(),
                })
                .collect(),
            end: raw.end.as_ref().map(|e| EndMark {
                t_ns: e.t_ns,
                reason: e.reason.clone(),
                detail: e.detail.clone(),
            }),
            samples,
            waits,
            tasks,
            cost: raw.cost.as_ref().map(|c| CostTotals {
                samples: c.samples,
                kick_ns: c.total_kick_ns,
                capture_ns: c.total_capture_ns,
                unwind_ns: c.total_unwind_ns,
                write_ns: c.total_write_ns,
            }),
            layout: raw.layout.clone(),
            devices: raw.devices.clone(),
            boundaries,
            figures,
        }
    }

    /// The run's exact boundaries, symbolized, in time order, and its figures.
    fn boundaries(&mut self, raw: &RunData, layout: &RunLayout) -> (Vec<BoundaryMark>, RunFigures) {
        let mut figures = RunFigures::default();
        let mut names: HashMap<u64, Option<String>> = HashMap::new();
        let mut marks = Vec::new();
        for b in &raw.boundaries {
            let both = b.value.zip(b.count);
            match b.kind {
                BoundaryKind::Console => figures.console = both,
                BoundaryKind::BreakpointCost => figures.breakpoints = both.map(|(v, c)| (c, v)),
                BoundaryKind::Dropped => figures.dropped_boundaries = b.count.unwrap_or(0),
                _ => {
                    let symbols = self.symbols;
                    let function = names
                        .entry(b.addr)
                        .or_insert_with(|| {
                            let space = layout.classify(b.addr, 0);
                            if !matches!(space, AddrSpace::Kernel(_)) {
                                return None;
                            }
                            // The outermost frame: the function itself, not what is inlined at its entry.
                            let frames = symbols.symbolizer.resolve(space);
                            let f = frames.last()?;
                            typed_name(space, f)
                                .is_none()
                                .then(|| clean_name(&f.function).into_owned())
                        })
                        .clone();
                    marks.push(BoundaryMark {
                        vcpu: b.vcpu,
                        t_ns: b.t_ns,
                        tsc: b.tsc,
                        kind: b.kind.clone(),
                        addr: b.addr,
                        function,
                        ret: b.ret,
                    });
                }
            }
        }
        // vCPU threads append concurrently: file order is roughly time order.
        marks.sort_by_key(|m| m.t_ns);
        (marks, figures)
    }
}

impl Builder<'_> {
    /// A bracketed marker frame (`[wait]`), interned as a name.
    fn marker(&mut self, label: &str) -> FrameId {
        let name = FrameName::Symbol(self.p.strings.intern(label));
        self.p.frames.intern(Frame {
            name,
            kind: FrameKind::Unknown,
            inlined: false,
            file: None,
            line: None,
        })
    }

    /// The run's blocked stacks as samples whose stack ends in a
    /// [`WAIT_FRAME`] (sleeping) or [`RUNNABLE_FRAME`] (preempted) leaf;
    /// each stands for the interval of the boot-vCPU sample it rode on.
    fn waits(
        &mut self,
        raw: &RunData,
        layout: &RunLayout,
        samples: &[Sample],
        task_index: &HashMap<u32, u32>,
    ) -> Vec<Sample> {
        if raw.waits.is_empty() {
            return Vec::new();
        }
        let interval: HashMap<(u32, u64), u64> = samples
            .iter()
            .map(|s| ((s.vcpu, s.t_ns), s.interval_ns))
            .collect();
        let wait = self.marker(WAIT_FRAME);
        let runnable = self.marker(RUNNABLE_FRAME);
        let mut out = Vec::with_capacity(raw.waits.len());
        for w in &raw.waits {
            let end = StackEnd::from_u8(w.stack_end);
            let truncated = w.stack.is_empty()
                || matches!(
                    end,
                    StackEnd::Truncated | StackEnd::DepthLimit | StackEnd::NotUnwound
                );
            let under = match w.stack.first() {
                Some(&leaf) => self.stack(layout, &w.stack, leaf, 0, truncated, true),
                // Unreadable: only the truncated root, so the time still shows.
                None => Some(self.p.stacks.intern(None, self.addr_frames[0][0])),
            };
            let leaf = if w.state == 0 { runnable } else { wait };
            out.push(Sample {
                vcpu: w.vcpu,
                t_ns: w.t_ns,
                interval_ns: interval.get(&(w.vcpu, w.t_ns)).copied().unwrap_or(0),
                kind: FrameKind::Kernel,
                stack: Some(self.p.stacks.intern(under, leaf)),
                truncated,
                faults: 0,
                exits: 0,
                cost_ns: 0,
                task: w.task.and_then(|id| task_index.get(&id).copied()),
            });
        }
        out
    }
}

/// The run's tasks, one per distinct (pid, tgid, comm) — the recorder's
/// ids also differ by `task_struct` address, which no view shows — and the
/// map from trace task id to index in that list.
fn run_tasks(raw: &RunData) -> (Vec<TaskInfo>, HashMap<u32, u32>) {
    let mut tasks: Vec<TaskInfo> = Vec::new();
    let mut by_identity: HashMap<TaskInfo, u32> = HashMap::new();
    let mut index = HashMap::new();
    for (&id, t) in &raw.tasks {
        let info = TaskInfo {
            pid: t.pid,
            tgid: t.tgid,
            comm: t.comm.clone(),
        };
        let i = *by_identity.entry(info.clone()).or_insert_with(|| {
            tasks.push(info);
            (tasks.len() - 1) as u32
        });
        index.insert(id, i);
    }
    (tasks, index)
}

/// Builds the profile of `trace` with `symbols` (`info.path` is left empty;
/// [`open`] fills it).
pub fn build(trace: &Trace, symbols: &SymbolSetup) -> Profile {
    let table =
        SampleTable::from_runs(trace.runs.iter().map(|r| &r.samples[..]), &trace.stat_names);
    build_table(trace, &table, symbols)
}

/// Builds the profile of a trace read by [`Trace::open_table`], its
/// samples in `table` (as [`build`]; `trace`'s own samples are not read).
pub fn build_table(trace: &Trace, table: &SampleTable, symbols: &SymbolSetup) -> Profile {
    let mut b = Builder::new(symbols);
    b.p.notes = symbols.notes.clone();
    let runs: Vec<Run> = trace
        .runs
        .iter()
        .enumerate()
        .map(|(i, r)| b.run(r, table, table.run(i)))
        .collect();
    let mut p = b.p;
    p.runs = runs;
    let m = &trace.meta;
    let mut warnings = trace.warnings.clone();
    warnings.extend(p.notes.iter().cloned());
    p.trace_warnings = trace.warnings.clone();
    p.source = symbols.symbolizer.source();
    p.source_file = symbols.file.clone();
    p.info = InputInfo {
        path: String::new(),
        kernel_path: m.kernel.path.clone(),
        kernel_version: m.kernel.version.clone(),
        build_id: m.kernel.build_id.clone(),
        kernel_cmdline: m.kernel_cmdline.clone(),
        sample_freq_hz: m.sample_freq_hz,
        unwinder: m.unwinder.clone(),
        symbol_source: symbols.label.clone(),
        pvm_workarounds: m.host.pvm_workarounds.clone(),
        complete: trace.complete,
        warnings,
    };
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::synth::{self, SynthOptions};

    /// Writes a synthetic trace `t.data` of `opts` and its System.map into
    /// `dir`: the trace's path and the symbol configuration naming the map.
    fn write_synthetic(dir: &Path, opts: &SynthOptions) -> (std::path::PathBuf, SymbolConfig) {
        let path = dir.join("t.data");
        synth::write(&path, opts).expect("write");
        let map = dir.join("System.map");
        std::fs::write(&map, synth::system_map_for(opts)).expect("write map");
        let cfg = SymbolConfig {
            system_map: Some(map),
            ..SymbolConfig::default()
        };
        (path, cfg)
    }

    fn synthetic(dir: &Path) -> (Trace, SymbolSetup) {
        let (path, cfg) = write_synthetic(dir, &SynthOptions::default());
        let trace = Trace::open(&path).expect("open");
        let s = setup(&trace, &cfg).expect("setup");
        (trace, s)
    }

    fn names(p: &Profile, s: &Sample) -> Vec<String> {
        p.stack_names(s.stack)
    }

    #[test]
    fn stacks_are_named_root_first_and_interned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (trace, s) = synthetic(dir.path());
        let p = build(&trace, &s);
        assert_eq!(p.runs.len(), trace.runs.len());
        assert_eq!(p.sample_count(), trace.sample_count());
        for r in &p.runs {
            for s in &r.samples {
                assert_eq!(names(&p, s)[0], "x86_64_start_kernel");
                assert_eq!(s.kind, FrameKind::Kernel);
            }
        }
        assert!(p.stacks.len() <= 16, "{} nodes", p.stacks.len());
        let exits: u64 = p
            .runs
            .iter()
            .flat_map(|r| &r.samples)
            .map(|s| s.exits)
            .sum();
        assert!(exits > 0);
    }

    #[test]
    fn return_addresses_are_looked_up_before_the_call() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut trace, s) = synthetic(dir.path());
        let start = synth::addr_of("start_kernel").expect("sym");
        let setup_arch = synth::addr_of("setup_arch").expect("sym");
        // A return address equal to the start of setup_arch belongs to the
        // call at the end of start_kernel (the function before it).
        let smp = &mut trace.runs[0].samples[0];
        smp.stack = vec![setup_arch + 0x10, setup_arch];
        smp.rip = setup_arch + 0x10;
        smp.stack_end = StackEnd::Truncated.as_u8();
        let p = build(&trace, &s);
        let got = names(&p, &p.runs[0].samples[0]);
        assert_eq!(got, ["[truncated stack]", "start_kernel", "setup_arch"]);
        assert!(p.runs[0].samples[0].truncated);
        assert!(start < setup_arch);
    }

    #[test]
    fn unresolved_addresses_are_typed_and_labelled_when_rendered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut trace, s) = synthetic(dir.path());
        let smp = &mut trace.runs[0].samples[0];
        smp.stack = vec![0x7000, 0xffff_ffff_ffff_0000];
        smp.rip = 0x7000;
        smp.stack_end = StackEnd::Root.as_u8();
        let p = build(&trace, &s);
        let frames = p.stack_frames(p.runs[0].samples[0].stack);
        assert!(matches!(
            frames[0].name,
            FrameName::Unknown(Unresolved::Unmapped(_) | Unresolved::NoKernelSymbol(_))
        ));
        assert_eq!(frames[1].name, FrameName::Unknown(Unresolved::Setup));
        assert_eq!(frames[1].kind, FrameKind::Setup);
        assert_eq!(p.runs[0].samples[0].kind, FrameKind::Setup);
        assert_eq!(p.name_text(frames[1].name), "[setup]");
    }

    #[test]
    fn wait_stacks_end_in_a_marker_and_take_their_sample_interval() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut trace, s) = synthetic(dir.path());
        let at = trace.runs[0].samples[3].clone();
        let kernel_init = synth::addr_of("kernel_init").expect("sym");
        let initcall = synth::addr_of("do_one_initcall").expect("sym");
        let mut wait = crate::trace::WaitStack {
            run: at.run,
            vcpu: at.vcpu,
            t_ns: at.t_ns,
            task: None,
            state: 2,
            // A return address at a function's start belongs to the caller.
            stack: vec![initcall + FUNC_OFF, kernel_init + FUNC_OFF],
            stack_end: StackEnd::Root.as_u8(),
        };
        trace.runs[0].waits.push(wait.clone());
        wait.state = 0;
        wait.stack.clear();
        wait.stack_end = StackEnd::Truncated.as_u8();
        trace.runs[0].waits.push(wait);
        let p = build(&trace, &s);
        let run = &p.runs[0];
        assert_eq!(run.waits.len(), 2);
        let sample = run
            .samples
            .iter()
            .find(|x| x.t_ns == at.t_ns && x.vcpu == at.vcpu)
            .expect("the sample");
        assert_eq!(run.waits[0].interval_ns, sample.interval_ns);
        assert!(sample.interval_ns > 0);
        assert_eq!(
            names(&p, &run.waits[0]),
            ["kernel_init", "do_one_initcall", WAIT_FRAME]
        );
        assert!(!run.waits[0].truncated);
        // Unreadable and runnable: the truncated root, then [runnable].
        assert_eq!(
            names(&p, &run.waits[1]),
            ["[truncated stack]", RUNNABLE_FRAME]
        );
        assert!(run.waits[1].truncated);
    }

    #[test]
    fn a_table_read_builds_the_profile_a_whole_read_builds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let opts = SynthOptions {
            runs: 3,
            samples_per_run: 300,
            vcpus: 2,
            extra_functions: 40,
            ..SynthOptions::default()
        };
        let (path, cfg) = write_synthetic(dir.path(), &opts);
        let mut whole = Trace::open(&path).expect("open");
        let sym = setup(&whole, &cfg).expect("setup");
        let a0 = build(&whole, &sym);
        // A truncated sample, one without a stack, one whose stack does not
        // start at RIP: each takes another way through `row_stack`.
        let s = &mut whole.runs[1].samples;
        s[3].stack_end = StackEnd::Truncated.as_u8();
        s[4].stack.clear();
        s[5].stack[0] ^= 0x40;
        let (table_trace, _) = Trace::open_table(&path).expect("open table");
        assert!(table_trace.runs.iter().all(|r| r.samples.is_empty()));
        let a = build(&whole, &sym);
        let b = open(&path, &cfg).expect("open profile");
        let table =
            SampleTable::from_runs(whole.runs.iter().map(|r| &r.samples[..]), &whole.stat_names);
        let c = build_table(&table_trace, &table, &sym);
        for (a, p) in [(&a0, &b), (&a, &c)] {
            assert_eq!(p.runs.len(), a.runs.len());
            assert_eq!(p.stacks.len(), a.stacks.len());
            for (ra, rb) in a.runs.iter().zip(&p.runs) {
                assert_eq!(ra.boot_ns, rb.boot_ns);
                assert_eq!(ra.t0_ns, rb.t0_ns);
                assert_eq!(ra.samples.len(), rb.samples.len());
                for (x, y) in ra.samples.iter().zip(&rb.samples) {
                    assert_eq!(names(a, x), names(p, y));
                    let (x2, y2) = (Sample { stack: None, ..*x }, Sample { stack: None, ..*y });
                    assert_eq!(x2, y2);
                }
            }
        }
        // The edited samples differ from the file's: `b` read the file.
        let edited = |p: &Profile| names(p, &p.runs[1].samples[3])[0].clone();
        assert_eq!(edited(&a), "[truncated stack]");
        assert_ne!(edited(&b), "[truncated stack]");
        assert_eq!(edited(&c), "[truncated stack]");
        assert!(a.runs[0].samples.iter().any(|s| s.exits > 0));
    }

    /// Offset of a return address inside a synthetic function.
    const FUNC_OFF: u64 = 0x10;

    #[test]
    fn names_with_separators_are_cleaned() {
        assert_eq!(&*clean_name("a;b\nc"), "a:b?c");
        assert_eq!(&*clean_name("plain"), "plain");
    }
}
