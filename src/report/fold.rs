//! Folding symbolized samples into weighted stacks: the input of flamegraphs,
//! folded/speedscope exports and diffs.
//!
//! A folded stack is `root;…;leaf WEIGHT` (Brendan Gregg's collapsed format,
//! which inferno reads). Weights: one per sample, or the host page faults
//! (minor + major) or KVM exits counted since the vCPU's previous sample —
//! the cost is charged to the stack the sample caught, as `perf` does.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::sync::Arc;

use super::symbolize::{StackId, SymSample, SymTrace};

/// What a stack's width measures.
#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Weight {
    /// Samples (time, at a fixed sampling rate).
    #[default]
    Samples,
    /// Host page faults (minor + major) of the vCPU thread, including KVM's
    /// faults on first guest touch of memory.
    #[value(alias = "page-faults")]
    Faults,
    /// KVM exits.
    Exits,
}

impl Weight {
    /// This sample's weight.
    pub fn of(self, s: &SymSample) -> u64 {
        match self {
            Weight::Samples => 1,
            Weight::Faults => s.faults(),
            Weight::Exits => s.exits,
        }
    }

    /// Plural noun for counts of this weight ("samples", "page faults", "exits").
    pub fn unit(self) -> &'static str {
        match self {
            Weight::Samples => "samples",
            Weight::Faults => "page faults",
            Weight::Exits => "exits",
        }
    }
}

/// Which runs to take samples from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RunSelect {
    /// Every run, merged.
    #[default]
    All,
    /// One run by index.
    Run(u32),
}

impl RunSelect {
    /// From an optional `--run K`.
    pub fn from_option(run: Option<u32>) -> RunSelect {
        run.map_or(RunSelect::All, RunSelect::Run)
    }

    /// True if `run` is selected.
    pub fn includes(self, run: u32) -> bool {
        match self {
            RunSelect::All => true,
            RunSelect::Run(r) => r == run,
        }
    }
}

/// Weighted stacks, sorted by their folded text (the order inferno needs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Folded {
    /// `(root;…;leaf, weight)`, sorted by the stack text, weights > 0.
    pub stacks: Vec<(String, u64)>,
}

/// Joins frames with `;`.
pub fn join_frames(frames: &[Arc<str>]) -> String {
    let mut s = String::with_capacity(frames.iter().map(|f| f.len() + 1).sum());
    for (i, f) in frames.iter().enumerate() {
        if i > 0 {
            s.push(';');
        }
        s.push_str(f);
    }
    s
}

impl Folded {
    /// Sum of all weights.
    pub fn total(&self) -> u64 {
        self.stacks.iter().map(|(_, w)| *w).sum()
    }

    /// Lines of the collapsed format, `stack weight`.
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.stacks.iter().map(|(s, w)| format!("{s} {w}"))
    }

    /// Writes the collapsed format, one line per stack.
    pub fn write_to(&self, mut w: impl Write) -> io::Result<()> {
        for (s, n) in &self.stacks {
            writeln!(w, "{s} {n}")?;
        }
        Ok(())
    }

    /// Stack → weight.
    pub fn to_map(&self) -> BTreeMap<String, u64> {
        self.stacks.iter().cloned().collect()
    }

    /// Parses the collapsed format (for golden files and external input).
    /// Lines without a trailing integer weight are skipped; at most `max_lines` are read.
    pub fn parse(text: &str, max_lines: usize) -> Folded {
        let mut map: BTreeMap<String, u64> = BTreeMap::new();
        for line in text.lines().take(max_lines) {
            let line = line.trim_end();
            let Some((stack, n)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            if n > 0 && !stack.is_empty() {
                let e = map.entry(stack.to_string()).or_default();
                *e = e.saturating_add(n);
            }
        }
        Folded {
            stacks: map.into_iter().collect(),
        }
    }
}

/// Folds samples (from any selection) by stack.
pub fn fold_samples<'a>(
    sym: &SymTrace,
    samples: impl IntoIterator<Item = &'a SymSample>,
    weight: Weight,
) -> Folded {
    // Weights per interned stack first: cheap integer keys, one string per stack after.
    let mut by_id: HashMap<StackId, u64> = HashMap::new();
    for s in samples {
        let w = weight.of(s);
        if w > 0 {
            let e = by_id.entry(s.stack).or_default();
            *e = e.saturating_add(w);
        }
    }
    // Different ids can name the same frames (e.g. a truncated and a full
    // stack never do, but be safe): merge by text.
    let mut by_text: BTreeMap<String, u64> = BTreeMap::new();
    for (id, w) in by_id {
        let Some(frames) = sym.stacks.get(id as usize) else {
            continue;
        };
        let e = by_text.entry(join_frames(frames)).or_default();
        *e = e.saturating_add(w);
    }
    Folded {
        stacks: by_text.into_iter().collect(),
    }
}

/// Folds the selected runs.
pub fn fold(sym: &SymTrace, runs: RunSelect, weight: Weight) -> Folded {
    let samples = sym
        .runs
        .iter()
        .filter(|r| runs.includes(r.run))
        .flat_map(|r| r.samples.iter());
    fold_samples(sym, samples, weight)
}

/// Time-ordered stacks for a flame chart: for each selected run and each
/// vCPU, samples in time order with consecutive identical stacks merged.
/// When there is more than one (run, vCPU) timeline, each gets a root frame
/// `run K cpu N` and the timelines follow each other.
pub fn chart(sym: &SymTrace, runs: RunSelect, weight: Weight) -> Vec<(String, u64)> {
    let mut timelines: BTreeMap<(u32, u32), Vec<&SymSample>> = BTreeMap::new();
    for r in sym.runs.iter().filter(|r| runs.includes(r.run)) {
        for s in &r.samples {
            timelines.entry((r.run, s.vcpu)).or_default().push(s);
        }
    }
    let labelled = timelines.len() > 1;
    let mut out: Vec<(String, u64)> = Vec::new();
    for ((run, vcpu), mut samples) in timelines {
        samples.sort_by_key(|s| s.t_ns);
        let mut cur: Option<(StackId, u64)> = None;
        let emit = |id: StackId, w: u64, out: &mut Vec<(String, u64)>| {
            let Some(frames) = sym.stacks.get(id as usize) else {
                return;
            };
            let text = join_frames(frames);
            let text = if labelled {
                format!("run {run} cpu {vcpu};{text}")
            } else {
                text
            };
            out.push((text, w));
        };
        for s in samples {
            let w = weight.of(s);
            if w == 0 {
                continue;
            }
            cur = match cur {
                Some((id, acc)) if id == s.stack => Some((id, acc.saturating_add(w))),
                Some((id, acc)) => {
                    emit(id, acc, &mut out);
                    Some((s.stack, w))
                }
                None => Some((s.stack, w)),
            };
        }
        if let Some((id, acc)) = cur {
            emit(id, acc, &mut out);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::symbolize::SymRun;
    use crate::trace::StackEnd;

    fn st(names: &[&str]) -> Arc<[Arc<str>]> {
        names.iter().map(|n| Arc::from(*n)).collect()
    }

    fn sample(stack: StackId, t_ns: u64, vcpu: u32, minflt: u64) -> SymSample {
        SymSample {
            run: 0,
            vcpu,
            t_ns,
            stack,
            cpl: 0,
            stack_end: StackEnd::Root,
            minflt,
            majflt: 1,
            perf_faults: 0,
            exits: 2,
        }
    }

    fn trace() -> SymTrace {
        SymTrace {
            stacks: vec![st(&["a", "b"]), st(&["a", "c"]), st(&["a"])],
            runs: vec![SymRun {
                run: 0,
                samples: vec![
                    sample(0, 1, 0, 0),
                    sample(0, 2, 0, 5),
                    sample(1, 3, 0, 0),
                    sample(0, 4, 0, 0),
                    sample(2, 1, 1, 0),
                ],
            }],
            source: boottrace_symbols::symbolizer::SourceKind::None,
            source_label: String::new(),
            source_file: None,
            notes: Vec::new(),
        }
    }

    #[test]
    fn folds_with_each_weight() {
        let t = trace();
        let f = fold(&t, RunSelect::All, Weight::Samples);
        assert_eq!(f.lines().collect::<Vec<_>>(), ["a 1", "a;b 3", "a;c 1"]);
        let f = fold(&t, RunSelect::All, Weight::Faults);
        assert_eq!(f.to_map()["a;b"], 3 + 5);
        assert_eq!(fold(&t, RunSelect::All, Weight::Exits).total(), 10);
        assert_eq!(fold(&t, RunSelect::Run(7), Weight::Samples).total(), 0);
    }

    #[test]
    fn chart_keeps_time_order_and_merges_neighbours() {
        let t = trace();
        let c = chart(&t, RunSelect::All, Weight::Samples);
        assert_eq!(
            c,
            [
                ("run 0 cpu 0;a;b".to_string(), 2),
                ("run 0 cpu 0;a;c".to_string(), 1),
                ("run 0 cpu 0;a;b".to_string(), 1),
                ("run 0 cpu 1;a".to_string(), 1),
            ]
        );
    }

    #[test]
    fn parse_round_trips_and_ignores_junk() {
        let f = fold(&trace(), RunSelect::All, Weight::Samples);
        let mut text = Vec::new();
        f.write_to(&mut text).expect("write");
        let text = String::from_utf8(text).expect("utf8") + "garbage\nx;y notanumber\n";
        assert_eq!(Folded::parse(&text, 1000), f);
    }
}
