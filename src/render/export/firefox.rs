//! Firefox Profiler export (its "processed profile" JSON), built with
//! samply's `fxprof-processed-profile` crate: open the file at
//! profiler.firefox.com ("Load a profile from file").
//!
//! - One process per run ("boot run K"), one thread (track) per vCPU, all
//!   on the run's own clock (ns since the run's start), so runs line up.
//! - Each sample's frames carry a category naming the boot phase it was
//!   in: decompressor, head, start_kernel, initcalls, idle, waiting (for
//!   wall-clock waits, once recorded), kernel (any other kernel code), user,
//!   setup. The activity graph is coloured by phase.
//! - Inline frames (from DWARF) are frames of their own, in the
//!   subcategory "inlined" of their phase's category (the crate has no
//!   inline-depth column).
//! - Markers on vCPU 0's track: the VMM's phases (interval from the
//!   previous boundary), the kernel phases, `start_kernel` stages and
//!   initcalls (first to last sample), every console line (searchable), and
//!   how the run ended.

use std::collections::HashMap;
use std::io::{self, Write};

use fxprof_processed_profile::{
    CategoryColor, CategoryHandle, CategoryPairHandle, CpuDelta, Frame as FxFrame, FrameFlags,
    FrameInfo, MarkerFieldFlags, MarkerFieldFormat, MarkerTiming, Profile as FxProfile,
    ReferenceTimestamp, SamplingInterval, StaticSchemaMarker, StaticSchemaMarkerField,
    StringHandle, ThreadHandle, Timestamp,
};

use crate::analysis::fold::RunSelect;
use crate::analysis::phases::{kernel_phases, DO_ONE_INITCALL, IDLE_FUNCTIONS, START_KERNEL};
use crate::profile::{FrameKind, FrameName, Profile, Run, StackId};

/// Most markers of one kind (stages, initcalls, console lines) per run:
/// bounds what a guest's console can make the export hold.
pub const MAX_MARKERS: usize = 200_000;

/// The sample categories, in the order they are added to the profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Real-mode setup code.
    Setup,
    /// The bzImage decompressor.
    Decompressor,
    /// Kernel head code, before `start_kernel`.
    Head,
    /// Under `start_kernel`.
    StartKernel,
    /// Under `do_one_initcall`.
    Initcalls,
    /// The idle loop.
    Idle,
    /// Waiting on the host (wall-clock attribution; not recorded yet).
    Waiting,
    /// Other kernel code (kernel threads, init after initcalls).
    Kernel,
    /// Guest user mode.
    User,
    /// Nothing known.
    Unknown,
}

impl Phase {
    /// All categories, in profile order.
    pub const ALL: [Phase; 10] = [
        Phase::Setup,
        Phase::Decompressor,
        Phase::Head,
        Phase::StartKernel,
        Phase::Initcalls,
        Phase::Idle,
        Phase::Waiting,
        Phase::Kernel,
        Phase::User,
        Phase::Unknown,
    ];

    /// The category's name in the profile.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Setup => "setup",
            Phase::Decompressor => "decompressor",
            Phase::Head => "head",
            Phase::StartKernel => "start_kernel",
            Phase::Initcalls => "initcalls",
            Phase::Idle => "idle",
            Phase::Waiting => "waiting",
            Phase::Kernel => "kernel",
            Phase::User => "user",
            Phase::Unknown => "unknown",
        }
    }

    fn color(self) -> CategoryColor {
        match self {
            Phase::Setup => CategoryColor::Brown,
            Phase::Decompressor => CategoryColor::Yellow,
            Phase::Head => CategoryColor::Orange,
            Phase::StartKernel => CategoryColor::Blue,
            Phase::Initcalls => CategoryColor::Green,
            Phase::Idle => CategoryColor::Transparent,
            Phase::Waiting => CategoryColor::Purple,
            Phase::Kernel => CategoryColor::LightBlue,
            Phase::User => CategoryColor::Magenta,
            Phase::Unknown => CategoryColor::Gray,
        }
    }
}

/// A marker: a name, a text field, and its category.
struct BootMarker {
    name: StringHandle,
    text: StringHandle,
    category: CategoryHandle,
}

impl StaticSchemaMarker for BootMarker {
    const UNIQUE_MARKER_TYPE_NAME: &'static str = "boottrace";
    const DESCRIPTION: Option<&'static str> =
        Some("boottrace: VMM and kernel phases, initcalls, console lines");
    const CHART_LABEL: Option<&'static str> = Some("{marker.data.text}");
    const TOOLTIP_LABEL: Option<&'static str> = Some("{marker.name}: {marker.data.text}");
    const TABLE_LABEL: Option<&'static str> = Some("{marker.name}: {marker.data.text}");
    const FIELDS: &'static [StaticSchemaMarkerField] = &[StaticSchemaMarkerField {
        key: "text",
        label: "Details",
        format: MarkerFieldFormat::String,
        flags: MarkerFieldFlags::SEARCHABLE,
    }];

    fn name(&self, _profile: &mut FxProfile) -> StringHandle {
        self.name
    }

    fn category(&self, _profile: &mut FxProfile) -> CategoryHandle {
        self.category
    }

    fn string_field_value(&self, _field_index: u32) -> StringHandle {
        self.text
    }

    fn number_field_value(&self, _field_index: u32) -> f64 {
        // The schema has no number field, so the crate never asks.
        0.0
    }
}

/// Category handles: each phase's default pair and its "inlined" pair.
struct Categories {
    pairs: HashMap<Phase, (CategoryHandle, CategoryPairHandle, CategoryPairHandle)>,
    vmm: CategoryHandle,
    console: CategoryHandle,
}

impl Categories {
    fn add(fx: &mut FxProfile) -> Categories {
        let mut pairs = HashMap::new();
        for ph in Phase::ALL {
            let c = fx.add_category(ph.name(), ph.color());
            let inlined = fx.add_subcategory(c, "inlined");
            pairs.insert(ph, (c, c.into(), inlined));
        }
        Categories {
            pairs,
            vmm: fx.add_category("VMM", CategoryColor::DarkGray),
            console: fx.add_category("console", CategoryColor::LightGreen),
        }
    }

    fn of(&self, ph: Phase) -> (CategoryHandle, CategoryPairHandle, CategoryPairHandle) {
        // Every phase was added in `add`.
        self.pairs.get(&ph).copied().unwrap_or_else(|| {
            (
                CategoryHandle::OTHER,
                CategoryHandle::OTHER.into(),
                CategoryHandle::OTHER.into(),
            )
        })
    }
}

/// Names of the functions phases are recognised by (as in [`kernel_phases`]).
struct Marks {
    start_kernel: Option<FrameName>,
    do_one_initcall: Option<FrameName>,
    idle: Vec<FrameName>,
}

impl Marks {
    fn new(p: &Profile) -> Marks {
        let look = |n: &str| p.strings.lookup(n).map(FrameName::Symbol);
        Marks {
            start_kernel: look(START_KERNEL),
            do_one_initcall: look(DO_ONE_INITCALL),
            idle: IDLE_FUNCTIONS.iter().filter_map(|n| look(n)).collect(),
        }
    }

    /// The phase of a kernel stack (root first), before considering time.
    fn kernel_place(&self, frames: &[FrameName]) -> Option<Phase> {
        let has = |n: Option<FrameName>| n.is_some_and(|n| frames.contains(&n));
        if has(self.do_one_initcall) {
            Some(Phase::Initcalls)
        } else if frames.iter().any(|f| self.idle.contains(f)) {
            Some(Phase::Idle)
        } else if has(self.start_kernel) {
            Some(Phase::StartKernel)
        } else {
            None
        }
    }
}

/// A stack's frame names (root first), and each with its inline flag.
type StackNames = (Vec<FrameName>, Vec<(FrameName, bool)>);

fn ts(ns: u64) -> Timestamp {
    Timestamp::from_nanos_since_reference(ns)
}

/// Builds the Firefox Profiler profile of the selected runs.
pub fn build(p: &Profile, runs: RunSelect) -> FxProfile {
    let interval = match p.info.sample_freq_hz {
        0 => SamplingInterval::from_millis(1),
        hz => SamplingInterval::from_nanos(1_000_000_000 / u64::from(hz)),
    };
    let product = format!(
        "boottrace: {}",
        p.info.kernel_version.as_deref().unwrap_or("Linux boot")
    );
    // Run clocks start at 0; the absolute start is not part of the profile model.
    let mut fx = FxProfile::new(
        &product,
        ReferenceTimestamp::from_millis_since_unix_epoch(0.0),
        interval,
    );
    fx.set_os_name("Linux guest under boottrace's microVM");
    let cats = Categories::add(&mut fx);
    let marks = Marks::new(p);
    let mut first_thread = None;
    for run in runs.runs(p) {
        let main = add_run(&mut fx, p, run, &cats, &marks);
        first_thread.get_or_insert(main);
    }
    if let Some(t) = first_thread {
        fx.add_initial_selected_thread(t);
    }
    fx
}

/// Adds one run: its process, a thread per vCPU with its samples, and the
/// markers on vCPU 0's thread (returned).
fn add_run(
    fx: &mut FxProfile,
    p: &Profile,
    run: &Run,
    cats: &Categories,
    marks: &Marks,
) -> ThreadHandle {
    let process = fx.add_process(&format!("boot run {}", run.run), run.run + 1, ts(0));
    let vcpus = run
        .samples
        .iter()
        .map(|s| s.vcpu)
        .max()
        .map_or(1, |m| m + 1);
    let threads: Vec<ThreadHandle> = (0..vcpus)
        .map(|v| {
            // Not "main": the crate names a main thread after its process,
            // and every track should say which vCPU it is.
            let t = fx.add_thread(process, (run.run + 1) * 1000 + v, ts(0), false);
            fx.set_thread_name(t, &format!("vCPU {v}"));
            t
        })
        .collect();
    let start_kernel_at = kernel_phases(p, run).milestones.start_kernel_ns;
    // Per (stack, phase): the frames once, not once per sample.
    let mut frame_memo: HashMap<Option<StackId>, StackNames> = HashMap::new();
    let mut last_t: Vec<u64> = vec![0; vcpus as usize];
    for s in &run.samples {
        let Some(&thread) = threads.get(s.vcpu as usize) else {
            continue;
        };
        let (names, frames) = frame_memo.entry(s.stack).or_insert_with(|| {
            let fs = p.stack_frames(s.stack);
            (
                fs.iter().map(|f| f.name).collect(),
                fs.iter().map(|f| (f.name, f.inlined)).collect(),
            )
        });
        let phase = match s.kind {
            FrameKind::Setup => Phase::Setup,
            FrameKind::Decompressor => Phase::Decompressor,
            FrameKind::User => Phase::User,
            FrameKind::Unknown => Phase::Unknown,
            FrameKind::Kernel => marks.kernel_place(names).unwrap_or_else(|| {
                let rel = run.rel_ns(s);
                match start_kernel_at {
                    Some(sk) if rel >= sk => Phase::Kernel,
                    _ => Phase::Head,
                }
            }),
        };
        let (_, pair, inlined_pair) = cats.of(phase);
        let infos: Vec<FrameInfo> = frames
            .iter()
            .map(|&(name, inlined)| FrameInfo {
                frame: FxFrame::Label(fx.intern_string(&p.name_text(name))),
                category_pair: if inlined { inlined_pair } else { pair },
                flags: FrameFlags::empty(),
            })
            .collect();
        let stack = fx.intern_stack_frames(thread, infos.into_iter());
        // The format wants each thread's samples in time order.
        let slot = &mut last_t[s.vcpu as usize];
        let t = s.t_ns.max(*slot);
        *slot = t;
        fx.add_sample(thread, ts(t), stack, CpuDelta::from_nanos(s.interval_ns), 1);
    }
    let main = threads[0];
    add_markers(fx, p, run, cats, main);
    main
}

fn add_markers(fx: &mut FxProfile, p: &Profile, run: &Run, cats: &Categories, t: ThreadHandle) {
    let marker = |fx: &mut FxProfile, timing, name: &str, text: &str, category| {
        let m = BootMarker {
            name: fx.intern_string(name),
            text: fx.intern_string(text),
            category,
        };
        fx.add_marker(t, timing, m);
    };
    let mut prev = 0u64;
    for ph in &run.phases {
        let name = ph.name.to_string();
        marker(
            fx,
            MarkerTiming::Interval(ts(prev), ts(ph.t_ns.max(prev))),
            "VMM phase",
            &name,
            cats.vmm,
        );
        prev = prev.max(ph.t_ns);
    }
    let kp = kernel_phases(p, run);
    let t0 = run.t0_ns;
    let span_marker = |fx: &mut FxProfile, kind: &str, s: &crate::analysis::phases::Span, c| {
        let m = BootMarker {
            name: fx.intern_string(kind),
            text: fx.intern_string(&s.name),
            category: c,
        };
        let (a, b) = (t0.saturating_add(s.first_ns), t0.saturating_add(s.last_ns));
        fx.add_marker(t, MarkerTiming::Interval(ts(a), ts(b.max(a))), m);
    };
    for s in &kp.phases {
        let ph = Phase::ALL
            .into_iter()
            .find(|x| x.name() == s.name)
            .unwrap_or(Phase::Kernel);
        span_marker(fx, "Kernel phase", s, cats.of(ph).0);
    }
    let sk = cats.of(Phase::StartKernel).0;
    for s in kp.stages.iter().take(MAX_MARKERS) {
        span_marker(fx, "start_kernel stage", s, sk);
    }
    let ic = cats.of(Phase::Initcalls).0;
    for s in kp.initcalls.iter().take(MAX_MARKERS) {
        span_marker(fx, "Initcall", s, ic);
    }
    for line in run.console.iter().take(MAX_MARKERS) {
        marker(
            fx,
            MarkerTiming::Instant(ts(line.t_ns)),
            "Console",
            &line.line,
            cats.console,
        );
    }
    if let Some(end) = &run.end {
        let text = match &end.detail {
            Some(d) => format!("{} ({d})", end.reason),
            None => end.reason.to_string(),
        };
        marker(
            fx,
            MarkerTiming::Instant(ts(end.t_ns)),
            "End",
            &text,
            cats.vmm,
        );
    }
}

/// Writes the Firefox Profiler JSON of the selected runs.
pub fn write(p: &Profile, runs: RunSelect, out: impl Write) -> io::Result<()> {
    let fx = build(p, runs);
    serde_json::to_writer(out, &fx).map_err(io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{ConsoleLine, EndMark, PhaseMark, Sample};
    use serde_json::Value;

    fn sample(vcpu: u32, t_ns: u64, kind: FrameKind, stack: Option<StackId>) -> Sample {
        Sample {
            vcpu,
            kind,
            ..Sample::kernel_at(stack, t_ns, 1_000_000)
        }
    }

    /// Two runs of two vCPUs: decompressor, head, start_kernel (with an
    /// inlined frame), an initcall, idle on vCPU 1, user mode.
    fn profile() -> Profile {
        let mut p = Profile::default();
        p.info.sample_freq_hz = 1000;
        let dec = p.stack_of_frames(
            FrameKind::Decompressor,
            &[(
                FrameName::Unknown(crate::profile::Unresolved::Decompressor),
                false,
            )],
        );
        let head = p.stack_of(&["startup_64"]);
        let names = ["start_kernel", "mm_core_init", "memmap_init_range"];
        let frames: Vec<(FrameName, bool)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (FrameName::Symbol(p.strings.intern(n)), i == 2))
            .collect();
        let sk = p.stack_of_frames(FrameKind::Kernel, &frames);
        let ic = p.stack_of(&["kernel_init", "do_one_initcall", "foo_init"]);
        let idle = p.stack_of(&["cpu_startup_entry", "do_idle"]);
        for r in 0..2 {
            let mut run = Run {
                run: r,
                t0_ns: 1_000_000,
                first_instruction_ns: Some(1_000_000),
                boot_ns: Some(8_000_000),
                ..Run::default()
            };
            let ms = 1_000_000;
            for (i, (k, st)) in [
                (FrameKind::Decompressor, dec),
                (FrameKind::Kernel, head),
                (FrameKind::Kernel, sk),
                (FrameKind::Kernel, sk),
                (FrameKind::Kernel, ic),
                (FrameKind::User, None),
            ]
            .into_iter()
            .enumerate()
            {
                let t = (i as u64 + 1) * ms;
                run.samples.push(sample(0, t, k, st));
                run.samples.push(sample(1, t, FrameKind::Kernel, idle));
            }
            run.phases = vec![
                PhaseMark {
                    name: "create_vm".into(),
                    t_ns: 200_000,
                },
                PhaseMark {
                    name: "first_instruction".into(),
                    t_ns: ms,
                },
            ];
            run.console.push(ConsoleLine {
                t_ns: 4 * ms,
                line: "Run /init as init process".into(),
            });
            run.end = Some(EndMark {
                t_ns: 7 * ms,
                reason: "user".into(),
                detail: None,
            });
            p.runs.push(run);
        }
        p
    }

    fn col(v: &Value, key: &str) -> Vec<Value> {
        v[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} is not an array: {v}"))
            .clone()
    }

    /// The processed format's invariants for one thread: every table's
    /// columns have its `length`; indices point into their tables; a stack's
    /// prefix comes before it; the thread's string indices are in its
    /// `stringArray`.
    fn check_thread(th: &Value, ncat: usize) {
        let len = |t: &Value| t["length"].as_u64().expect("length") as usize;
        let idx = |v: &Value| v.as_u64().expect("index") as usize;
        let strings = col(th, "stringArray").len();
        let funcs = &th["funcTable"];
        assert_eq!(col(funcs, "name").len(), len(funcs));
        assert!(col(funcs, "name").iter().all(|s| idx(s) < strings));
        let frames = &th["frameTable"];
        for c in ["func", "category", "subcategory", "address"] {
            assert_eq!(col(frames, c).len(), len(frames), "frameTable.{c}");
        }
        assert!(col(frames, "func").iter().all(|f| idx(f) < len(funcs)));
        assert!(col(frames, "category").iter().all(|c| idx(c) < ncat));
        let stacks = &th["stackTable"];
        assert_eq!(col(stacks, "frame").len(), len(stacks));
        for (i, (f, pre)) in col(stacks, "frame")
            .iter()
            .zip(col(stacks, "prefix"))
            .enumerate()
        {
            assert!(idx(f) < len(frames));
            if !pre.is_null() {
                assert!(idx(&pre) < i, "stack {i}: prefix after it");
            }
        }
        let samples = &th["samples"];
        for c in ["stack", "timeDeltas", "weight", "threadCPUDelta"] {
            assert_eq!(col(samples, c).len(), len(samples), "samples.{c}");
        }
        assert!(col(samples, "stack")
            .iter()
            .all(|s| s.is_null() || idx(s) < len(stacks)));
        assert!(col(samples, "timeDeltas")
            .iter()
            .all(|d| d.as_f64().is_some_and(|d| d >= 0.0)));
        let markers = &th["markers"];
        for c in ["name", "startTime", "endTime", "phase", "category", "data"] {
            assert_eq!(col(markers, c).len(), len(markers), "markers.{c}");
        }
        assert!(col(markers, "name").iter().all(|s| idx(s) < strings));
    }

    #[test]
    fn export_has_a_track_per_vcpu_phase_categories_and_markers() {
        let p = profile();
        let mut out = Vec::new();
        write(&p, RunSelect::All, &mut out).expect("write");
        let v: Value = serde_json::from_slice(&out).expect("JSON");
        let cats: Vec<String> = col(&v["meta"], "categories")
            .iter()
            .map(|c| c["name"].as_str().expect("name").to_string())
            .collect();
        for want in [
            "decompressor",
            "head",
            "start_kernel",
            "initcalls",
            "idle",
            "waiting",
        ] {
            assert!(cats.iter().any(|c| c == want), "{want} not in {cats:?}");
        }
        assert!(v["meta"]["preprocessedProfileVersion"].as_u64().is_some());
        assert_eq!(v["meta"]["interval"].as_f64(), Some(1.0), "1 kHz = 1 ms");
        let threads = col(&v, "threads");
        assert_eq!(threads.len(), 4, "2 runs × 2 vCPUs");
        let names: Vec<&str> = threads
            .iter()
            .map(|t| t["name"].as_str().expect("name"))
            .collect();
        assert_eq!(names.iter().filter(|n| **n == "vCPU 0").count(), 2);
        for th in &threads {
            check_thread(th, cats.len());
            assert_eq!(th["samples"]["length"], 6);
        }
        // vCPU 0 of the first run: categories by phase, leaf first frames.
        let th = threads
            .iter()
            .find(|t| t["name"] == "vCPU 0" && t["processName"] == "boot run 0")
            .expect("thread");
        let strings = col(th, "stringArray");
        let frames = &th["frameTable"];
        let funcs = &th["funcTable"];
        let name_of_frame = |f: usize| -> String {
            let func = col(frames, "func")[f].as_u64().expect("func") as usize;
            let s = col(funcs, "name")[func].as_u64().expect("name") as usize;
            strings[s].as_str().expect("string").to_string()
        };
        let cat_of_frame = |f: usize| -> String {
            let c = col(frames, "category")[f].as_u64().expect("cat") as usize;
            cats[c].clone()
        };
        let sub_of_frame = |f: usize| col(frames, "subcategory")[f].as_u64().expect("sub");
        let nframes = th["frameTable"]["length"].as_u64().expect("len") as usize;
        let by_name: HashMap<String, (String, u64)> = (0..nframes)
            .map(|f| (name_of_frame(f), (cat_of_frame(f), sub_of_frame(f))))
            .collect();
        assert_eq!(by_name["[decompressor]"].0, "decompressor");
        assert_eq!(by_name["startup_64"].0, "head");
        assert_eq!(by_name["mm_core_init"].0, "start_kernel");
        assert_eq!(by_name["foo_init"].0, "initcalls");
        // The inlined frame sits in its category's "inlined" subcategory.
        assert_eq!(by_name["memmap_init_range"].0, "start_kernel");
        assert_ne!(by_name["memmap_init_range"].1, by_name["mm_core_init"].1);
        let idle = threads
            .iter()
            .find(|t| t["name"] == "vCPU 1")
            .expect("vCPU 1");
        let c = col(&idle["frameTable"], "category")[0].as_u64().expect("c") as usize;
        assert_eq!(cats[c], "idle");

        // Markers: VMM phases, kernel phases, the console line, the end.
        let mnames: Vec<String> = col(&th["markers"], "name")
            .iter()
            .map(|s| {
                strings[s.as_u64().expect("i") as usize]
                    .as_str()
                    .expect("s")
                    .to_string()
            })
            .collect();
        for want in [
            "VMM phase",
            "Kernel phase",
            "start_kernel stage",
            "Initcall",
            "Console",
            "End",
        ] {
            assert!(mnames.iter().any(|m| m == want), "{want} not in {mnames:?}");
        }
        // String fields are indices into the thread's string array.
        let texts: Vec<&str> = col(&th["markers"], "data")
            .iter()
            .map(|d| {
                let i = d["text"].as_u64().expect("string index") as usize;
                strings[i].as_str().expect("string")
            })
            .collect();
        assert!(
            texts.contains(&"Run /init as init process"),
            "console text: {texts:?}"
        );
        assert!(texts.contains(&"foo_init"), "initcall marker: {texts:?}");
        assert!(
            texts.contains(&"first_instruction"),
            "VMM marker: {texts:?}"
        );
        let schema = col(&v["meta"], "markerSchema");
        assert!(
            schema.iter().any(|s| s["name"] == "boottrace"),
            "{schema:?}"
        );

        // One run only.
        let mut out = Vec::new();
        write(&p, RunSelect::Run(1), &mut out).expect("write");
        let v: Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(col(&v, "threads").len(), 2);
    }
}
