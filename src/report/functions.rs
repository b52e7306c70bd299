//! Costs per stack and per function of one run: time, samples, host page
//! faults and KVM exits, each as *self* (the function is the innermost frame)
//! and *total* (the function is anywhere on the stack, counted once per sample
//! even when recursive).

use std::collections::HashMap;

use serde::Serialize;

use super::runview::{Names, RunView, ViewSample, Weight};

/// Name id used for samples whose stack has no frame at all.
pub const NO_FRAMES: u32 = u32::MAX;
/// Display name of [`NO_FRAMES`].
pub const NO_FRAMES_NAME: &str = "[no frames]";

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
    pub fn add_sample(&mut self, s: &ViewSample) {
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

    /// The part of the cost a weight measures (time for [`Weight::Samples`]).
    pub fn get(&self, w: Weight) -> u64 {
        match w {
            Weight::Samples => self.time_ns,
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

/// Cost per interned stack id.
pub fn by_stack(run: &RunView) -> HashMap<u32, Cost> {
    let mut m: HashMap<u32, Cost> = HashMap::new();
    for s in &run.samples {
        m.entry(s.stack).or_default().add_sample(s);
    }
    m
}

/// The whole run's cost.
pub fn run_total(run: &RunView) -> Cost {
    let mut c = Cost::default();
    for s in &run.samples {
        c.add_sample(s);
    }
    c
}

/// Cost per function name id ([`NO_FRAMES`] for empty stacks), from [`by_stack`].
pub fn by_function(stacks: &HashMap<u32, Cost>, names: &Names) -> HashMap<u32, FunctionCost> {
    let mut m: HashMap<u32, FunctionCost> = HashMap::new();
    let mut seen: Vec<u32> = Vec::new();
    for (&stack, cost) in stacks {
        let frames = names.stack(stack);
        let leaf = frames.last().map_or(NO_FRAMES, |f| f.name);
        m.entry(leaf).or_default().self_cost.add(cost);
        seen.clear();
        if frames.is_empty() {
            seen.push(NO_FRAMES);
        }
        for f in frames {
            if !seen.contains(&f.name) {
                seen.push(f.name);
            }
        }
        for &name in &seen {
            m.entry(name).or_default().total_cost.add(cost);
        }
    }
    m
}

/// Display name of a function id from [`by_function`].
pub fn function_name(names: &Names, id: u32) -> &str {
    if id == NO_FRAMES {
        NO_FRAMES_NAME
    } else {
        names.name(id)
    }
}

/// Folded stacks (`root;…;leaf`) with their cost, for flamegraphs and diffs.
/// Empty stacks fold to [`NO_FRAMES_NAME`].
pub fn folded(stacks: &HashMap<u32, Cost>, names: &Names) -> HashMap<String, Cost> {
    let mut out: HashMap<String, Cost> = HashMap::with_capacity(stacks.len());
    for (&stack, cost) in stacks {
        let frames = names.stack(stack);
        let key = if frames.is_empty() {
            NO_FRAMES_NAME.to_string()
        } else {
            let parts: Vec<&str> = frames.iter().map(|f| names.name(f.name)).collect();
            parts.join(";")
        };
        out.entry(key).or_default().add(cost);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::runview::Space;

    fn sample(stack: u32, interval_ns: u64, faults: u64) -> ViewSample {
        ViewSample {
            vcpu: 0,
            t_ns: 0,
            interval_ns,
            space: Space::Kernel,
            stack,
            faults,
            exits: 1,
            truncated: false,
            cost_ns: 0,
        }
    }

    #[test]
    fn self_and_total_count_recursion_once() {
        let mut names = Names::default();
        let a = names.stack_of(&["start_kernel", "f", "g", "f"]);
        let b = names.stack_of(&["start_kernel", "g"]);
        let e = names.intern_stack(Vec::new());
        let run = RunView {
            samples: vec![
                sample(a, 10, 1),
                sample(a, 10, 0),
                sample(b, 5, 7),
                sample(e, 1, 0),
            ],
            ..RunView::default()
        };
        let fns = by_function(&by_stack(&run), &names);
        let get = |n: &str| fns[&names.lookup(n).expect("interned")];
        assert_eq!(get("f").self_cost.time_ns, 20);
        assert_eq!(get("f").total_cost.time_ns, 20, "recursion counted once");
        assert_eq!(get("f").total_cost.samples, 2);
        assert_eq!(get("g").self_cost.time_ns, 5);
        assert_eq!(get("g").self_cost.faults, 7);
        assert_eq!(get("g").total_cost.time_ns, 25);
        assert_eq!(get("start_kernel").self_cost.samples, 0);
        assert_eq!(get("start_kernel").total_cost.exits, 3);
        assert_eq!(fns[&NO_FRAMES].self_cost.time_ns, 1);
        assert_eq!(run_total(&run).time_ns, 26);

        let f = folded(&by_stack(&run), &names);
        assert_eq!(f["start_kernel;f;g;f"].time_ns, 20);
        assert_eq!(f["start_kernel;g"].faults, 7);
        assert_eq!(f[NO_FRAMES_NAME].samples, 1);
    }
}
