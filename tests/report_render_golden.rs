//! Every renderer on a small HAND-BUILT profile (no trace, no symbolizer):
//! flamegraph, flame chart, differential flamegraph and its table, report
//! text and JSON, folded, speedscope and Chrome exports, each compared with
//! a golden file in `tests/golden/hand-*`. Regenerate with
//! `BOOTTRACE_UPDATE_GOLDEN=1 cargo test --test report_render_golden` (the
//! run fails on purpose), review the diff, run again. Independent checks
//! next to each golden comparison make sure the goldens hold what they should.

mod golden_support;

use std::path::Path;

use boottrace::analysis::diffnorm::Normalize;
use boottrace::analysis::difftable::SortBy;
use boottrace::analysis::doc;
use boottrace::analysis::fold::{self, RunSelect, Weight};
use boottrace::profile::interval::intervals;
use boottrace::profile::{
    ConsoleLine, CostTotals, EndMark, FrameKind, FrameName, InputInfo, PhaseMark, Profile, Run,
    Sample, StackId, TaskInfo, Unresolved,
};
use boottrace::render::diff::{DiffOptions, DiffView};
use boottrace::render::export::{chrome, folded, speedscope};
use boottrace::render::flame::{self, FlameOptions};
use boottrace::render::report::{json, text};
use golden_support::Golden;

const MS: u64 = 1_000_000;
const T0: u64 = 2 * MS;

fn sym(p: &mut Profile, name: &str) -> FrameName {
    FrameName::Symbol(p.strings.intern(name))
}

/// A boot of one vCPU sampled every ms: decompressor, head, start_kernel
/// stages, initcalls (one reached through an inlined helper), a truncated
/// stack, and user mode. `extra_memmap` adds samples to memmap_init_range.
fn hand_built(extra_memmap: usize) -> Profile {
    let mut p = Profile {
        info: InputInfo {
            path: "hand-built.data".into(),
            kernel_path: "/kernels/bzImage".into(),
            kernel_version: Some("Linux version 6.12.0 (hand@built) #1".into()),
            build_id: Some("00112233".into()),
            kernel_cmdline: "quiet".into(),
            sample_freq_hz: 1000,
            unwinder: "frame-pointer".into(),
            symbol_source: "System.map (hand-built)".into(),
            pvm_workarounds: Vec::new(),
            complete: true,
            warnings: vec!["hand-built: no trace file".into()],
        },
        ..Profile::default()
    };
    let decomp = p.stack_of_frames(
        FrameKind::Decompressor,
        &[(FrameName::Unknown(Unresolved::Decompressor), false)],
    );
    let head = p.stack_of(&["startup_64", "__startup_64"]);
    let sk = ["x86_64_start_kernel", "start_kernel"];
    let setup = p.stack_of(&[sk[0], sk[1], "setup_arch", "e820__memory_setup"]);
    let memmap = p.stack_of(&[sk[0], sk[1], "mm_core_init", "memmap_init_range"]);
    let ic: Vec<FrameName> = [
        "ret_from_fork_asm",
        "ret_from_fork",
        "kernel_init",
        "kernel_init_freeable",
        "do_initcalls",
        "do_one_initcall",
    ]
    .iter()
    .map(|n| sym(&mut p, n))
    .collect();
    let plain = |p: &mut Profile, extra: &[(FrameName, bool)]| -> Option<StackId> {
        let mut v: Vec<(FrameName, bool)> = ic.iter().map(|&n| (n, false)).collect();
        v.extend_from_slice(extra);
        p.stack_of_frames(FrameKind::Kernel, &v)
    };
    let foo_fn = sym(&mut p, "foo_init");
    let kmalloc = sym(&mut p, "kmalloc");
    let helper = sym(&mut p, "do_trace_initcall_start");
    let bar = sym(&mut p, "bar_init");
    let foo_stack = plain(&mut p, &[(foo_fn, false), (kmalloc, false)]);
    let bar_stack = plain(&mut p, &[(helper, true), (bar, false)]);
    let cut = p.stack_of_frames(
        FrameKind::Kernel,
        &[
            (FrameName::Unknown(Unresolved::TruncatedStack), false),
            (kmalloc, false),
        ],
    );
    let idle = p.stack_of(&[sk[0], sk[1], "rest_init", "cpu_startup_entry", "do_idle"]);
    let user = p.stack_of_frames(
        FrameKind::User,
        &[(FrameName::Unknown(Unresolved::User), false)],
    );

    // Tasks: none known in the decompressor and user mode; the boot task
    // (pid 0) until the initcalls, which pid 1 runs, then idle in pid 0.
    let (boot, init) = (Some(0), Some(1));
    let mut script: Vec<(FrameKind, Option<StackId>, bool, Option<u32>)> = Vec::new();
    let mut push = |n: usize, kind, stack, truncated, task| {
        script.extend(std::iter::repeat((kind, stack, truncated, task)).take(n));
    };
    push(3, FrameKind::Decompressor, decomp, false, None);
    push(2, FrameKind::Kernel, head, false, boot);
    push(3, FrameKind::Kernel, setup, false, boot);
    push(4 + extra_memmap, FrameKind::Kernel, memmap, false, boot);
    push(3, FrameKind::Kernel, foo_stack, false, init);
    push(2, FrameKind::Kernel, bar_stack, false, init);
    push(1, FrameKind::Kernel, cut, true, init);
    push(2, FrameKind::Kernel, idle, false, boot);
    push(2, FrameKind::User, user, false, None);

    let mut samples: Vec<Sample> = script
        .iter()
        .enumerate()
        .map(|(i, &(kind, stack, truncated, task))| Sample {
            vcpu: 0,
            t_ns: T0 + i as u64 * MS,
            interval_ns: 0,
            kind,
            stack,
            truncated,
            faults: if i % 3 == 0 { 4 } else { 0 },
            exits: 1 + (i as u64 % 2),
            cost_ns: 20_000,
            task,
        })
        .collect();
    let n = samples.len() as u64;
    let end = T0 + n * MS;
    let points: Vec<(u32, u64)> = samples.iter().map(|s| (s.vcpu, s.t_ns - T0)).collect();
    for (s, i) in samples.iter_mut().zip(intervals(&points, Some(end - T0))) {
        s.interval_ns = i;
    }
    p.runs.push(Run {
        run: 0,
        t0_ns: T0,
        first_instruction_ns: Some(T0),
        boot_ns: Some(end - T0),
        phases: vec![
            PhaseMark {
                name: "create_vm".into(),
                t_ns: MS,
            },
            PhaseMark {
                name: "first_instruction".into(),
                t_ns: T0,
            },
            PhaseMark {
                name: "user_mode".into(),
                t_ns: end - 2 * MS,
            },
        ],
        console: vec![ConsoleLine {
            t_ns: end - 3 * MS,
            line: "Run /init as init process".into(),
        }],
        end: Some(EndMark {
            t_ns: end,
            reason: "user".into(),
            detail: Some("first user-mode instruction".into()),
        }),
        samples,
        waits: Vec::new(),
        tasks: vec![
            TaskInfo {
                pid: 0,
                tgid: 0,
                comm: "swapper/0".into(),
            },
            TaskInfo {
                pid: 1,
                tgid: 1,
                comm: "swapper/0".into(),
            },
        ],
        cost: Some(CostTotals {
            samples: n,
            kick_ns: n * 10_000,
            capture_ns: n * 5_000,
            unwind_ns: n * 4_000,
            write_ns: n * 1_000,
        }),
        ..Run::default()
    });
    p
}

fn utf8(v: Vec<u8>) -> String {
    String::from_utf8(v).expect("utf8")
}

#[test]
fn every_renderer_matches_its_golden_file() {
    let p = hand_built(0);
    let mut g = Golden::new();

    // Folded: the inline helper and kind do not split stacks; the truncated root is labelled.
    let mut out = Vec::new();
    folded::write(&p, RunSelect::All, Weight::Samples, &mut out).expect("folded");
    let folded_text = utf8(out);
    assert!(
        folded_text.contains("[truncated stack];kmalloc 1\n"),
        "{folded_text}"
    );
    assert!(folded_text.contains("do_one_initcall;do_trace_initcall_start;bar_init 2\n"));
    assert!(
        folded_text.starts_with("[decompressor] 3\n"),
        "{folded_text}"
    );
    g.check("hand.folded", &folded_text);

    // Split by task: every stack under its task's root frame.
    let by_task = fold::fold_split(&p, RunSelect::All, Weight::Samples, true);
    let by_task_text: String = by_task.lines().map(|l| l + "\n").collect();
    assert!(
        by_task_text.contains("[pid 1 swapper/0];ret_from_fork_asm;ret_from_fork;kernel_init;"),
        "{by_task_text}"
    );
    assert!(
        by_task_text.starts_with("[pid 0 swapper/0];"),
        "{by_task_text}"
    );
    assert!(by_task_text.contains("[unknown task];[decompressor] 3\n"));
    assert_eq!(
        by_task.total(),
        fold::fold(&p, RunSelect::All, Weight::Samples).total()
    );
    g.check("hand-by-task.folded", &by_task_text);

    for (chart, by_task, name) in [
        (false, false, "hand-flame.svg"),
        (true, false, "hand-chart.svg"),
        (false, true, "hand-flame-by-task.svg"),
    ] {
        let mut svg = Vec::new();
        let o = FlameOptions {
            runs: RunSelect::All,
            weight: Weight::Samples,
            chart,
            width: 800,
            by_task,
        };
        flame::render(&p, &o, &mut svg).expect("flame");
        let svg = utf8(svg);
        assert!(svg.contains("memmap_init_range") && svg.contains("Linux 6.12.0"));
        g.check(name, &svg);
    }

    let d = doc::build(&p, 10);
    // The inline helper is skipped by its flag: bar_init is the initcall.
    let initcalls: Vec<&str> = d.runs[0]
        .initcalls
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(initcalls, ["foo_init", "bar_init"]);
    assert_eq!(d.runs[0].sampled_ns, p.runs[0].boot_ns.expect("boot"));
    let mut out = Vec::new();
    json::write(&d, &mut out).expect("json");
    let json_text = utf8(out);
    let v: serde_json::Value = serde_json::from_str(&json_text).expect("valid JSON");
    assert_eq!(v["format"], "boottrace-report");
    g.check("hand-report.json", &json_text);
    let report_text = text::render(&d, 30);
    assert!(report_text.contains("bar_init"), "{report_text}");
    // Tasks: 3 decompressor + 2 user samples unknown, pid 1 ran 6, pid 0 the rest.
    let tasks: Vec<(&str, u64)> = d.runs[0]
        .tasks
        .iter()
        .map(|t| (t.name.as_str(), t.samples))
        .collect();
    assert_eq!(
        tasks,
        [
            ("[pid 0 swapper/0]", 11),
            ("[pid 1 swapper/0]", 6),
            ("[unknown task]", 5),
        ]
    );
    assert!(report_text.contains("\nTasks ("), "{report_text}");
    g.check("hand-report.txt", &report_text);

    let mut out = Vec::new();
    speedscope::write(&p, RunSelect::All, Weight::Samples, &mut out).expect("speedscope");
    let ss = utf8(out);
    let v: serde_json::Value = serde_json::from_str(&ss).expect("valid JSON");
    let sum: u64 = v["profiles"][0]["weights"]
        .as_array()
        .expect("weights")
        .iter()
        .map(|w| w.as_u64().expect("integer"))
        .sum();
    assert_eq!(
        sum, d.runs[0].sampled_ns,
        "one definition of a sample's time"
    );
    g.check("hand-speedscope.json", &ss);

    let mut out = Vec::new();
    chrome::write(&p, RunSelect::All, &mut out).expect("chrome");
    let ch = utf8(out);
    assert!(ch.contains("Run /init as init process"));
    g.check("hand-chrome.json", &ch);

    let b = hand_built(6);
    let view = DiffView {
        a: &p,
        b: &b,
        a_path: Path::new("a.data"),
        b_path: Path::new("b.data"),
        a_label: "a.data".into(),
        b_label: "b.data".into(),
    };
    let o = DiffOptions {
        weight: Weight::Time,
        normalize: Normalize::PerBoot,
        sort: SortBy::Self_,
        top: 5,
    };
    let mut svg = Vec::new();
    let table = boottrace::render::diff::render(&view, &o, &mut svg).expect("diff");
    assert!(table.contains("+6.00 ms"), "{table}");
    assert!(table.contains("memmap_init_range"), "{table}");
    g.check("hand-diff.txt", &table);
    g.check("hand-diff.svg", &utf8(svg));
    g.finish();
}
