//! speedscope's JSON file format
//! (<https://www.speedscope.app/file-format-schema.json>): frames shared, one
//! "sampled" profile per run and vCPU, samples root first in time order.

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::Arc;

use serde::Serialize;

use crate::analysis::fold::{timelines_for, NameNode, NameTree, RunSelect, Weight};
use crate::analysis::headline::Headline;
use crate::profile::Profile;

#[derive(Serialize)]
struct SpeedscopeFile {
    #[serde(rename = "$schema")]
    schema: &'static str,
    shared: Shared,
    profiles: Vec<SampledProfile>,
    name: String,
    #[serde(rename = "activeProfileIndex")]
    active_profile_index: u32,
    exporter: String,
}

#[derive(Serialize)]
struct Shared {
    frames: Vec<FrameRef>,
}

#[derive(Serialize)]
struct FrameRef {
    name: String,
}

#[derive(Serialize)]
struct SampledProfile {
    #[serde(rename = "type")]
    kind: &'static str,
    name: String,
    unit: &'static str,
    #[serde(rename = "startValue")]
    start_value: u64,
    #[serde(rename = "endValue")]
    end_value: u64,
    samples: Vec<FrameList>,
    weights: Vec<u64>,
}

/// Frame indices of one stack, root first, shared by every sample of that stack.
struct FrameList(Arc<[u32]>);

impl Serialize for FrameList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

/// Writes speedscope JSON. Weighed by samples or time, the weights are the
/// nanoseconds each sample stands for; otherwise the fault or exit counts.
pub fn write(p: &Profile, runs: RunSelect, weight: Weight, out: impl Write) -> io::Result<()> {
    let tree = NameTree::new(p);
    let timed = matches!(weight, Weight::Samples | Weight::Time | Weight::Wall);
    let mut frame_index: HashMap<String, u32> = HashMap::new();
    let mut frames: Vec<FrameRef> = Vec::new();
    let mut stack_frames: HashMap<Option<NameNode>, Arc<[u32]>> = HashMap::new();
    let mut profiles = Vec::new();
    for tl in timelines_for(p, runs, weight) {
        let mut samples = Vec::with_capacity(tl.samples.len());
        let mut weights = Vec::with_capacity(tl.samples.len());
        for s in &tl.samples {
            let w = if timed { s.interval_ns } else { weight.of(s) };
            if w == 0 {
                continue;
            }
            let node = tree.of(s.stack);
            let idx = stack_frames.entry(node).or_insert_with(|| {
                let mut names: Vec<_> = tree.path(node).collect();
                names.reverse();
                names
                    .into_iter()
                    .map(|n| {
                        let name = p.name_text(n).into_owned();
                        *frame_index.entry(name.clone()).or_insert_with(|| {
                            frames.push(FrameRef { name });
                            (frames.len() - 1) as u32
                        })
                    })
                    .collect()
            });
            samples.push(FrameList(Arc::clone(idx)));
            weights.push(w);
        }
        let start = tl.samples.first().map_or(0, |s| s.t_ns);
        let end = tl
            .samples
            .last()
            .map_or(start, |s| s.t_ns.saturating_add(s.interval_ns));
        profiles.push(SampledProfile {
            kind: "sampled",
            name: format!("run {} vCPU {}", tl.run, tl.vcpu),
            unit: if timed { "nanoseconds" } else { "none" },
            start_value: if timed { start } else { 0 },
            end_value: if timed { end } else { weights.iter().sum() },
            samples,
            weights,
        });
    }
    let file = SpeedscopeFile {
        schema: "https://www.speedscope.app/file-format-schema.json",
        shared: Shared { frames },
        profiles,
        name: format!("boottrace: {}", Headline::new(p, runs).title()),
        active_profile_index: 0,
        exporter: format!("boottrace {}", env!("CARGO_PKG_VERSION")),
    };
    serde_json::to_writer(out, &file).map_err(io::Error::other)
}
