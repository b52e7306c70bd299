//! Folding: the one place samples are weighed by stack. A stack is the list
//! of its frames' names (kind, inline flag and file:line do not split it),
//! so every renderer — flamegraph, flame chart, folded export, diff, the
//! report's function tables — sees the same stacks.
//!
//! A folded stack is `root;…;leaf WEIGHT` (Brendan Gregg's collapsed format,
//! which inferno reads).

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};

use crate::profile::{FrameName, Profile, Run, Sample, StackId, UNKNOWN_TASK};

/// What a stack's width measures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Weight {
    /// One per sample (time, at a fixed sampling rate).
    #[default]
    Samples,
    /// Host time each sample stands for, ns (see [`crate::profile::interval`]).
    Time,
    /// Host page faults (minor + major) of the vCPU thread, including KVM's
    /// faults on first guest touch of memory.
    Faults,
    /// KVM exits.
    Exits,
    /// Wall-clock time of the boot thread (the boot vCPU's task, then pid
    /// 1), ns: its running samples plus its blocked stacks ending in
    /// `[wait]`/`[runnable]` (see [`crate::analysis::waits`]).
    Wall,
}

impl Weight {
    /// This sample's weight.
    pub fn of(self, s: &Sample) -> u64 {
        match self {
            Weight::Samples => 1,
            Weight::Time => s.interval_ns,
            Weight::Faults => s.faults,
            Weight::Exits => s.exits,
            Weight::Wall => s.interval_ns,
        }
    }

    /// Plural noun for amounts of this weight.
    pub fn unit(self) -> &'static str {
        match self {
            Weight::Samples => "samples",
            Weight::Time | Weight::Wall => "ns",
            Weight::Faults => "page faults",
            Weight::Exits => "exits",
        }
    }
}

/// The samples of `run` a weight looks at: all of them, or for
/// [`Weight::Wall`] the boot thread's running samples and blocked stacks
/// in time order.
pub fn weighted_samples(run: &Run, weight: Weight) -> Vec<&Sample> {
    match weight {
        Weight::Wall => super::waits::wall_samples(run),
        _ => run.samples.iter().collect(),
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

    /// The selected runs of `p`.
    pub fn runs(self, p: &Profile) -> impl Iterator<Item = &Run> {
        p.runs.iter().filter(move |r| self.includes(r.run))
    }
}

/// Index of a node in a [`NameTree`].
pub type NameNode = u32;

/// Display name of the empty stack.
pub const NO_FRAMES_NAME: &str = "[no frames]";

/// The stack table with each frame reduced to its name: stacks that differ
/// only in kind, inline flag or line share a node here.
#[derive(Debug, Clone, Default)]
pub struct NameTree {
    /// `(parent, name)` per node; parents come first.
    nodes: Vec<(Option<NameNode>, FrameName)>,
    /// Stack node → name node.
    of_stack: Vec<NameNode>,
}

impl NameTree {
    /// Builds the tree of `p`'s stacks, in one pass over the stack table.
    pub fn new(p: &Profile) -> NameTree {
        let mut index: HashMap<(Option<NameNode>, FrameName), NameNode> = HashMap::new();
        let mut t = NameTree::default();
        t.of_stack.reserve(p.stacks.len());
        for node in p.stacks.nodes() {
            let name = p.frame(node.frame).map_or(
                FrameName::Unknown(crate::profile::Unresolved::UnnamedInline),
                |f| f.name,
            );
            let parent = node
                .parent
                .and_then(|s| t.of_stack.get(s as usize).copied());
            let key = (parent, name);
            let id = match index.get(&key) {
                Some(&id) => id,
                None => {
                    let id = t.nodes.len() as NameNode;
                    t.nodes.push(key);
                    index.insert(key, id);
                    id
                }
            };
            t.of_stack.push(id);
        }
        t
    }

    /// The name node of a stack.
    pub fn of(&self, stack: Option<StackId>) -> Option<NameNode> {
        stack.and_then(|s| self.of_stack.get(s as usize).copied())
    }

    /// Number of name nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The name of a node and its parent.
    pub fn get(&self, node: NameNode) -> Option<(Option<NameNode>, FrameName)> {
        self.nodes.get(node as usize).copied()
    }

    /// Names from `node` to the root (leaf first).
    pub fn path(&self, node: Option<NameNode>) -> impl Iterator<Item = FrameName> + '_ {
        let mut cur = node;
        std::iter::from_fn(move || {
            let (parent, name) = self.get(cur?)?;
            cur = parent;
            Some(name)
        })
    }

    /// `root;…;leaf` of a node ([`NO_FRAMES_NAME`] for none).
    pub fn text(&self, p: &Profile, node: Option<NameNode>) -> String {
        let mut names: Vec<FrameName> = self.path(node).collect();
        if names.is_empty() {
            return NO_FRAMES_NAME.to_string();
        }
        names.reverse();
        let mut s = String::new();
        for (i, n) in names.into_iter().enumerate() {
            if i > 0 {
                s.push(';');
            }
            s.push_str(&p.name_text(n));
        }
        s
    }
}

/// Weighted stacks, sorted by their folded text (the order inferno needs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Folded {
    /// `(root;…;leaf, weight)`, sorted by the stack text, weights > 0.
    pub stacks: Vec<(String, u64)>,
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

/// Sums `value` of samples per name node: the one folding loop.
pub fn by_node<'a, T: Default>(
    tree: &NameTree,
    samples: impl IntoIterator<Item = &'a Sample>,
    add: impl FnMut(&mut T, &Sample),
) -> HashMap<Option<NameNode>, T> {
    let dense = by_node_dense(tree, samples, add);
    let mut m = HashMap::with_capacity(dense.iter().filter(|v| v.is_some()).count());
    for (i, v) in dense.into_iter().enumerate() {
        if let Some(v) = v {
            m.insert(i.checked_sub(1).map(|n| n as NameNode), v);
        }
    }
    m
}

/// [`by_node`] as a vector: index 0 is "no frames", index `n + 1` name
/// node `n`; `None` where no sample landed. Indexing beats hashing a
/// million samples.
fn by_node_dense<'a, T: Default>(
    tree: &NameTree,
    samples: impl IntoIterator<Item = &'a Sample>,
    mut add: impl FnMut(&mut T, &Sample),
) -> Vec<Option<T>> {
    let mut v: Vec<Option<T>> = std::iter::repeat_with(|| None)
        .take(tree.len() + 1)
        .collect();
    for s in samples {
        let i = tree.of(s.stack).map_or(0, |n| n as usize + 1);
        if let Some(slot) = v.get_mut(i) {
            add(slot.get_or_insert_with(T::default), s);
        }
    }
    v
}

/// Folds the selected runs of `p` by `weight`.
pub fn fold(p: &Profile, runs: RunSelect, weight: Weight) -> Folded {
    fold_split(p, runs, weight, false)
}

/// The root frame a sample gets when stacks are split by task:
/// `[pid 1 init]`, or [`UNKNOWN_TASK`].
pub fn task_root(run: &Run, s: &Sample) -> String {
    run.task(s)
        .map_or_else(|| UNKNOWN_TASK.to_string(), |t| t.label())
}

/// Folds like [`fold`]; with `by_task`, each stack gets its task as a root
/// frame (`[pid 1 init];start_kernel;…`), so each task is its own tower.
pub fn fold_split(p: &Profile, runs: RunSelect, weight: Weight, by_task: bool) -> Folded {
    let tree = NameTree::new(p);
    let mut by_text: BTreeMap<String, u64> = BTreeMap::new();
    for run in runs.runs(p) {
        if !by_task {
            let m = by_node_dense(&tree, weighted_samples(run, weight), |w: &mut u64, s| {
                *w = w.saturating_add(weight.of(s));
            });
            for (i, w) in m.into_iter().enumerate() {
                match w {
                    Some(w) if w > 0 => {
                        let node = i.checked_sub(1).map(|n| n as NameNode);
                        let e = by_text.entry(tree.text(p, node)).or_default();
                        *e = e.saturating_add(w);
                    }
                    _ => {}
                }
            }
            continue;
        }
        // Per (task, stack) node: the folding loop, per run (task indices
        // are per run).
        let mut m: HashMap<(Option<u32>, Option<NameNode>), (u64, String)> = HashMap::new();
        for s in weighted_samples(run, weight) {
            let task = if by_task { s.task } else { None };
            let e = m.entry((task, tree.of(s.stack))).or_insert_with(|| {
                let root = if by_task {
                    task_root(run, s)
                } else {
                    String::new()
                };
                (0, root)
            });
            e.0 = e.0.saturating_add(weight.of(s));
        }
        for ((_, node), (w, root)) in m {
            if w > 0 {
                let text = tree.text(p, node);
                let text = if by_task {
                    format!("{root};{text}")
                } else {
                    text
                };
                let e = by_text.entry(text).or_default();
                *e = e.saturating_add(w);
            }
        }
    }
    Folded {
        stacks: by_text.into_iter().collect(),
    }
}

/// Time-ordered stacks for a flame chart: for each selected run and each
/// vCPU, samples in time order with consecutive identical stacks merged.
/// When there is more than one (run, vCPU) timeline, each gets a root frame
/// `run K cpu N` and the timelines follow each other.
pub fn chart(p: &Profile, runs: RunSelect, weight: Weight) -> Vec<(String, u64)> {
    chart_split(p, runs, weight, false)
}

/// Like [`chart`]; with `by_task`, each stack's root (below the timeline
/// label) is its task, as in [`fold_split`].
pub fn chart_split(
    p: &Profile,
    runs: RunSelect,
    weight: Weight,
    by_task: bool,
) -> Vec<(String, u64)> {
    let tree = NameTree::new(p);
    let tls = timelines_for(p, runs, weight);
    let labelled = tls.len() > 1;
    let mut out: Vec<(String, u64)> = Vec::new();
    for tl in tls {
        let run = p.runs.iter().find(|r| r.run == tl.run);
        let mut cur: Option<(Option<NameNode>, Option<u32>, u64, &Sample)> = None;
        let emit = |node: Option<NameNode>, s: &Sample, w: u64, out: &mut Vec<(String, u64)>| {
            let text = tree.text(p, node);
            let text = match (by_task, run) {
                (true, Some(run)) => format!("{};{text}", task_root(run, s)),
                (true, None) => format!("{UNKNOWN_TASK};{text}"),
                _ => text,
            };
            let text = if labelled {
                format!("run {} cpu {};{text}", tl.run, tl.vcpu)
            } else {
                text
            };
            out.push((text, w));
        };
        for s in &tl.samples {
            let w = weight.of(s);
            if w == 0 {
                continue;
            }
            let node = tree.of(s.stack);
            let task = if by_task { s.task } else { None };
            cur = match cur {
                Some((n, t, acc, first)) if n == node && t == task => {
                    Some((n, t, acc.saturating_add(w), first))
                }
                Some((n, _, acc, first)) => {
                    emit(n, first, acc, &mut out);
                    Some((node, task, w, s))
                }
                None => Some((node, task, w, s)),
            };
        }
        if let Some((n, _, acc, first)) = cur {
            emit(n, first, acc, &mut out);
        }
    }
    out
}

/// One vCPU's samples in one run, in time order.
#[derive(Debug, Clone)]
pub struct Timeline<'a> {
    /// Run index.
    pub run: u32,
    /// vCPU index.
    pub vcpu: u32,
    /// Samples sorted by time (stable: equal times keep trace order).
    pub samples: Vec<&'a Sample>,
}

/// The timelines `weight` draws: per (run, vCPU) as [`timelines`], or for
/// [`Weight::Wall`] one per run, the boot thread's (labelled as the boot
/// vCPU's).
pub fn timelines_for(p: &Profile, runs: RunSelect, weight: Weight) -> Vec<Timeline<'_>> {
    if weight != Weight::Wall {
        return timelines(p, runs);
    }
    runs.runs(p)
        .map(|r| Timeline {
            run: r.run,
            vcpu: 0,
            samples: super::waits::wall_samples(r),
        })
        .filter(|t| !t.samples.is_empty())
        .collect()
}

/// The (run, vCPU) timelines of the selected runs, ordered by run then vCPU.
pub fn timelines(p: &Profile, runs: RunSelect) -> Vec<Timeline<'_>> {
    let mut by_key: BTreeMap<(u32, u32), Vec<&Sample>> = BTreeMap::new();
    for r in runs.runs(p) {
        for s in &r.samples {
            by_key.entry((r.run, s.vcpu)).or_default().push(s);
        }
    }
    by_key
        .into_iter()
        .map(|((run, vcpu), mut samples)| {
            samples.sort_by_key(|s| s.t_ns);
            Timeline { run, vcpu, samples }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{FrameKind, Run, Sample};

    fn sample(stack: Option<StackId>, t_ns: u64, vcpu: u32, faults: u64) -> Sample {
        Sample {
            vcpu,
            faults: faults + 1,
            exits: 2,
            ..Sample::kernel_at(stack, t_ns, 10)
        }
    }

    fn profile() -> Profile {
        let mut p = Profile::default();
        let ab = p.stack_of(&["a", "b"]);
        let ac = p.stack_of(&["a", "c"]);
        let a = p.stack_of(&["a"]);
        p.runs.push(Run {
            samples: vec![
                sample(ab, 1, 0, 0),
                sample(ab, 2, 0, 5),
                sample(ac, 3, 0, 0),
                sample(ab, 4, 0, 0),
                sample(a, 1, 1, 0),
            ],
            ..Run::default()
        });
        p
    }

    #[test]
    fn folds_with_each_weight() {
        let p = profile();
        let f = fold(&p, RunSelect::All, Weight::Samples);
        assert_eq!(f.lines().collect::<Vec<_>>(), ["a 1", "a;b 3", "a;c 1"]);
        assert_eq!(
            fold(&p, RunSelect::All, Weight::Faults).to_map()["a;b"],
            3 + 5
        );
        assert_eq!(fold(&p, RunSelect::All, Weight::Exits).total(), 10);
        assert_eq!(fold(&p, RunSelect::All, Weight::Time).total(), 50);
        assert_eq!(fold(&p, RunSelect::Run(7), Weight::Samples).total(), 0);
    }

    #[test]
    fn chart_keeps_time_order_and_merges_neighbours() {
        let c = chart(&profile(), RunSelect::All, Weight::Samples);
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

    fn with_tasks(mut p: Profile) -> Profile {
        let r = &mut p.runs[0];
        r.tasks = vec![
            crate::profile::TaskInfo {
                pid: 0,
                tgid: 0,
                comm: "swapper/0".into(),
            },
            crate::profile::TaskInfo {
                pid: 1,
                tgid: 1,
                comm: "init".into(),
            },
        ];
        // a;b at t=1,2 in pid 1; a;c in pid 0; a;b at t=4 unknown; cpu 1 in pid 1.
        for (s, t) in r
            .samples
            .iter_mut()
            .zip([Some(1), Some(1), Some(0), None, Some(1)])
        {
            s.task = t;
        }
        p
    }

    #[test]
    fn by_task_puts_the_task_at_the_root() {
        let p = with_tasks(profile());
        let f = fold_split(&p, RunSelect::All, Weight::Samples, true);
        assert_eq!(
            f.lines().collect::<Vec<_>>(),
            [
                "[pid 0 swapper/0];a;c 1",
                "[pid 1 init];a 1",
                "[pid 1 init];a;b 2",
                "[unknown task];a;b 1"
            ]
        );
        // Without the split the same profile folds as before.
        assert_eq!(
            fold_split(&p, RunSelect::All, Weight::Samples, false),
            fold(&p, RunSelect::All, Weight::Samples)
        );
        // The chart splits neighbours with the same stack in different tasks.
        let c = chart_split(&p, RunSelect::All, Weight::Samples, true);
        assert_eq!(
            c,
            [
                ("run 0 cpu 0;[pid 1 init];a;b".to_string(), 2),
                ("run 0 cpu 0;[pid 0 swapper/0];a;c".to_string(), 1),
                ("run 0 cpu 0;[unknown task];a;b".to_string(), 1),
                ("run 0 cpu 1;[pid 1 init];a".to_string(), 1),
            ]
        );
    }

    #[test]
    fn lines_and_inline_flags_do_not_split_stacks() {
        let mut p = Profile::default();
        let f = FrameName::Symbol(p.strings.intern("f"));
        let g = FrameName::Symbol(p.strings.intern("g"));
        let s1 = p.stack_of_frames(FrameKind::Kernel, &[(f, false), (g, false)]);
        let s2 = p.stack_of_frames(FrameKind::Kernel, &[(f, false), (g, true)]);
        assert_ne!(s1, s2);
        p.runs.push(Run {
            samples: vec![sample(s1, 0, 0, 0), sample(s2, 1, 0, 0)],
            ..Run::default()
        });
        assert_eq!(
            fold(&p, RunSelect::All, Weight::Samples).stacks,
            [("f;g".to_string(), 2)]
        );
    }

    #[test]
    fn parse_round_trips_and_ignores_junk() {
        let f = fold(&profile(), RunSelect::All, Weight::Samples);
        let mut text = Vec::new();
        f.write_to(&mut text).expect("write");
        let text = String::from_utf8(text).expect("utf8") + "garbage\nx;y notanumber\n";
        assert_eq!(Folded::parse(&text, 1000), f);
    }
}
