//! Costs per function of one run: time, samples, host page faults and KVM
//! exits, each as *self* (the function is the innermost frame) and *total*
//! (the function is anywhere on the stack, counted once per sample even
//! when recursive). Built on [`super::fold`]'s name tree: each distinct
//! stack is walked once, with a per-function stamp so recursion is counted
//! once in time linear in the stack's depth.

use std::collections::HashMap;

use serde::Serialize;

use super::fold::{by_node, NameNode, NameTree, Weight, NO_FRAMES_NAME};
use crate::profile::{FrameName, Profile, Run, Sample};

/// What a set of samples cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Cost {
    /// Sampled host time, ns.
    pub time_ns: u64,
    /// Samples.
    pub samples: u64,
    /// Host page faults.
    pub faults: u64,
    /// KVM exits.
    pub exits: u64,
}

impl Cost {
    /// Adds one sample.
    pub fn add_sample(&mut self, s: &Sample) {
        self.time_ns = self.time_ns.saturating_add(s.interval_ns);
        self.samples += 1;
        self.faults = self.faults.saturating_add(s.faults);
        self.exits = self.exits.saturating_add(s.exits);
    }

    /// Adds another cost.
    pub fn add(&mut self, o: &Cost) {
        self.time_ns = self.time_ns.saturating_add(o.time_ns);
        self.samples = self.samples.saturating_add(o.samples);
        self.faults = self.faults.saturating_add(o.faults);
        self.exits = self.exits.saturating_add(o.exits);
    }

    /// The part of the cost a weight measures.
    pub fn get(&self, w: Weight) -> u64 {
        match w {
            Weight::Samples => self.samples,
            Weight::Time | Weight::Wall => self.time_ns,
            Weight::Faults => self.faults,
            Weight::Exits => self.exits,
        }
    }
}

/// Self and total cost of one function.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FunctionCost {
    /// Samples where it is the innermost frame.
    pub self_cost: Cost,
    /// Samples where it is anywhere on the stack.
    pub total_cost: Cost,
}

/// A function: a frame name, or `None` for samples without frames.
pub type FuncKey = Option<FrameName>;

/// The whole run's cost.
pub fn run_total(run: &Run) -> Cost {
    let mut c = Cost::default();
    for s in &run.samples {
        c.add_sample(s);
    }
    c
}

/// Cost per stack (name node) of a run.
pub fn by_stack(tree: &NameTree, run: &Run) -> HashMap<Option<NameNode>, Cost> {
    by_node(tree, &run.samples, |c: &mut Cost, s| c.add_sample(s))
}

/// Cost per function of a run.
pub fn by_function(tree: &NameTree, run: &Run) -> HashMap<FuncKey, FunctionCost> {
    function_costs(tree, by_stack(tree, run))
}

/// Cost per function of the samples `weight` looks at: all of them, or for
/// [`Weight::Wall`] the boot thread's running samples and blocked stacks.
pub fn by_function_weighted(
    tree: &NameTree,
    run: &Run,
    weight: Weight,
) -> HashMap<FuncKey, FunctionCost> {
    let samples = super::fold::weighted_samples(run, weight);
    function_costs(
        tree,
        by_node(tree, samples, |c: &mut Cost, s| c.add_sample(s)),
    )
}

/// The total cost of the samples `weight` looks at (see [`by_function_weighted`]).
pub fn run_total_weighted(run: &Run, weight: Weight) -> Cost {
    let mut c = Cost::default();
    for s in super::fold::weighted_samples(run, weight) {
        c.add_sample(s);
    }
    c
}

/// Self and total cost per function from the cost per stack.
fn function_costs(
    tree: &NameTree,
    stacks: HashMap<Option<NameNode>, Cost>,
) -> HashMap<FuncKey, FunctionCost> {
    let mut m: HashMap<FuncKey, FunctionCost> = HashMap::new();
    // Stamp of the last stack each function was counted for.
    let mut stamp: HashMap<FrameName, usize> = HashMap::new();
    for (i, (&node, cost)) in stacks.iter().enumerate() {
        let leaf = node.and_then(|n| tree.get(n)).map(|(_, name)| name);
        m.entry(leaf).or_default().self_cost.add(cost);
        if node.is_none() {
            m.entry(None).or_default().total_cost.add(cost);
            continue;
        }
        for name in tree.path(node) {
            let seen = stamp.insert(name, i);
            if seen != Some(i) {
                m.entry(Some(name)).or_default().total_cost.add(cost);
            }
        }
    }
    m
}

/// Display name of a function.
pub fn function_name(p: &Profile, f: FuncKey) -> String {
    match f {
        Some(n) => p.name_text(n).into_owned(),
        None => NO_FRAMES_NAME.to_string(),
    }
}

/// Cost per function of a run, keyed by display name.
pub fn by_function_name(p: &Profile, tree: &NameTree, run: &Run) -> HashMap<String, FunctionCost> {
    by_function_name_weighted(p, tree, run, Weight::Time)
}

/// [`by_function_weighted`] keyed by display name.
pub fn by_function_name_weighted(
    p: &Profile,
    tree: &NameTree,
    run: &Run,
    weight: Weight,
) -> HashMap<String, FunctionCost> {
    by_function_weighted(tree, run, weight)
        .into_iter()
        .map(|(f, c)| (function_name(p, f), c))
        .collect()
}

/// Folded stacks (`root;…;leaf`) of a run with their cost in `weight`,
/// weights > 0 only: the per-run input of diffs.
pub fn folded_run(p: &Profile, tree: &NameTree, run: &Run, weight: Weight) -> HashMap<String, u64> {
    let mut out: HashMap<String, u64> = HashMap::new();
    let samples = super::fold::weighted_samples(run, weight);
    for (node, c) in by_node(tree, samples, |c: &mut Cost, s| c.add_sample(s)) {
        let v = c.get(weight);
        if v > 0 {
            let e = out.entry(tree.text(p, node)).or_default();
            *e = e.saturating_add(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::StackId;

    fn sample(stack: Option<StackId>, interval_ns: u64, faults: u64) -> Sample {
        Sample {
            faults,
            exits: 1,
            ..Sample::kernel_at(stack, 0, interval_ns)
        }
    }

    #[test]
    fn self_and_total_count_recursion_once() {
        let mut p = Profile::default();
        let a = p.stack_of(&["start_kernel", "f", "g", "f"]);
        let b = p.stack_of(&["start_kernel", "g"]);
        let run = Run {
            samples: vec![
                sample(a, 10, 1),
                sample(a, 10, 0),
                sample(b, 5, 7),
                sample(None, 1, 0),
            ],
            ..Run::default()
        };
        p.runs.push(run);
        let tree = NameTree::new(&p);
        let fns = by_function_name(&p, &tree, &p.runs[0]);
        assert_eq!(fns["f"].self_cost.time_ns, 20);
        assert_eq!(fns["f"].total_cost.time_ns, 20, "recursion counted once");
        assert_eq!(fns["f"].total_cost.samples, 2);
        assert_eq!(fns["g"].self_cost.time_ns, 5);
        assert_eq!(fns["g"].self_cost.faults, 7);
        assert_eq!(fns["g"].total_cost.time_ns, 25);
        assert_eq!(fns["start_kernel"].self_cost.samples, 0);
        assert_eq!(fns["start_kernel"].total_cost.exits, 3);
        assert_eq!(fns[NO_FRAMES_NAME].self_cost.time_ns, 1);
        assert_eq!(run_total(&p.runs[0]).time_ns, 26);

        let f = folded_run(&p, &tree, &p.runs[0], Weight::Time);
        assert_eq!(f["start_kernel;f;g;f"], 20);
        assert_eq!(
            folded_run(&p, &tree, &p.runs[0], Weight::Faults)["start_kernel;g"],
            7
        );
        assert_eq!(
            folded_run(&p, &tree, &p.runs[0], Weight::Samples)[NO_FRAMES_NAME],
            1
        );
    }
}
