//! Scripted synthetic traces for the `report` and `diff` tests: a made-up
//! kernel whose functions sit 4 KiB apart, a System.map naming them, and
//! boots written with boottrace's own trace writer, sample by sample, so each
//! test knows exactly what every phase, initcall and function must add up to.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use boottrace::profile::symbols::SymbolConfig;
use boottrace::trace::{
    HostFacts, KernelInfo, Layout, Phase, Record, RunEnd, RunStart, Sample, SampleCost,
    SamplerCost, StackEnd, StatNames, TraceMeta, TraceWriter,
};
use boottrace_symbols::layout::RunLayout;

/// Link-time address of the first fake function.
pub const TEXT_BASE: u64 = 0xffff_ffff_8100_0000;
/// Distance between fake functions.
pub const FUNC_SIZE: u64 = 0x1000;
/// Where the fake decompressor ran (physical).
pub const DECOMP_BASE: u64 = 0x100_0000;
/// Sampling period of the scripted boots, ns.
pub const PERIOD_NS: u64 = 1_000_000;
/// When the first guest instruction ran, ns after the run's start.
pub const T0_NS: u64 = 2_000_000;

/// The fake kernel's functions.
pub const FUNCTIONS: &[&str] = &[
    "startup_64",
    "__startup_64",
    "x86_64_start_kernel",
    "x86_64_start_reservations",
    "start_kernel",
    "setup_arch",
    "e820__memory_setup",
    "mm_core_init",
    "memmap_init_range",
    "__init_single_page",
    "sched_init",
    "rest_init",
    "cpu_startup_entry",
    "do_idle",
    "default_idle",
    "ret_from_fork_asm",
    "ret_from_fork",
    "kernel_init",
    "kernel_init_freeable",
    "do_initcalls",
    "do_initcall_level",
    "do_one_initcall",
    "foo_driver_init",
    "bar_subsys_init",
    "baz_late_init",
    "kmalloc",
    "clear_page",
    "free_initmem",
];

/// Address `off` bytes into function `name`.
pub fn addr(name: &str, off: u64) -> u64 {
    let i = FUNCTIONS
        .iter()
        .position(|f| *f == name)
        .unwrap_or_else(|| panic!("no fake function {name}"));
    TEXT_BASE + i as u64 * FUNC_SIZE + off
}

/// The fake kernel's System.map.
pub fn system_map() -> String {
    let mut s = String::new();
    for (i, f) in FUNCTIONS.iter().enumerate() {
        s.push_str(&format!(
            "{:016x} T {f}\n",
            TEXT_BASE + i as u64 * FUNC_SIZE
        ));
    }
    s.push_str(&format!(
        "{:016x} T _etext\n",
        TEXT_BASE + FUNCTIONS.len() as u64 * FUNC_SIZE
    ));
    s
}

/// Where a scripted sample is.
#[derive(Clone, Debug)]
pub enum Where {
    /// In the decompressor.
    Decompressor,
    /// In the kernel with this stack, root first.
    Kernel(Vec<&'static str>),
    /// In the kernel, with this stack, but the unwind was cut short.
    Truncated(Vec<&'static str>),
    /// In user mode.
    User,
}

/// `n` consecutive samples at one place, each with `faults` faults and `exits` exits.
#[derive(Clone, Debug)]
pub struct Step {
    /// Samples.
    pub n: u64,
    /// Place.
    pub at: Where,
    /// Host page faults per sample.
    pub faults: u64,
    /// KVM exits per sample.
    pub exits: u64,
}

/// Shorthand for a [`Step`].
pub fn step(n: u64, at: Where, faults: u64, exits: u64) -> Step {
    Step {
        n,
        at,
        faults,
        exits,
    }
}

/// Kernel stack helper.
pub fn k(frames: &[&'static str]) -> Where {
    Where::Kernel(frames.to_vec())
}

/// `x86_64_start_kernel → start_kernel → rest…`
pub fn sk(rest: &[&'static str]) -> Where {
    let mut v = vec!["x86_64_start_kernel", "start_kernel"];
    v.extend_from_slice(rest);
    Where::Kernel(v)
}

/// The init thread's stack down to `do_one_initcall`, then `rest`.
pub fn initcall(rest: &[&'static str]) -> Where {
    let mut v = vec![
        "ret_from_fork_asm",
        "ret_from_fork",
        "kernel_init",
        "kernel_init_freeable",
        "do_initcalls",
        "do_initcall_level",
        "do_one_initcall",
    ];
    v.extend_from_slice(rest);
    Where::Kernel(v)
}

/// A realistic boot: decompressor, head code, `start_kernel` stages, initcalls,
/// idle, the init thread, one truncated stack, user mode. `extra_memmap` adds
/// samples to `memmap_init_range` (to make runs or kernels differ).
pub fn boot_script(extra_memmap: u64) -> Vec<Step> {
    vec![
        step(4, Where::Decompressor, 1, 1),
        step(2, k(&["startup_64", "__startup_64"]), 0, 1),
        step(3, sk(&["setup_arch", "e820__memory_setup"]), 0, 1),
        step(2, sk(&["setup_arch"]), 0, 1),
        step(1, sk(&[]), 0, 1),
        step(
            10 + extra_memmap,
            sk(&["mm_core_init", "memmap_init_range", "__init_single_page"]),
            5,
            2,
        ),
        step(3, sk(&["sched_init"]), 0, 1),
        step(6, initcall(&["foo_driver_init", "kmalloc"]), 1, 1),
        step(1, initcall(&[]), 0, 1),
        step(4, initcall(&["bar_subsys_init", "clear_page"]), 2, 3),
        step(
            2,
            sk(&["rest_init", "cpu_startup_entry", "do_idle", "default_idle"]),
            0,
            4,
        ),
        step(2, initcall(&["baz_late_init"]), 0, 1),
        step(1, Where::Truncated(vec!["baz_late_init"]), 0, 1),
        step(
            1,
            k(&[
                "ret_from_fork_asm",
                "ret_from_fork",
                "kernel_init",
                "free_initmem",
            ]),
            0,
            1,
        ),
        step(2, Where::User, 0, 1),
    ]
}

fn raw_stack(frames: &[&'static str]) -> Vec<u64> {
    // Innermost first: the leaf's RIP, then return addresses (offset > 0).
    frames
        .iter()
        .rev()
        .enumerate()
        .map(|(depth, f)| addr(f, if depth == 0 { 0x10 } else { 0x40 }))
        .collect()
}

fn sample(run: u32, t_ns: u64, s: &Step) -> Sample {
    let (rip, stack, cpl, end) = match &s.at {
        Where::Decompressor => (
            DECOMP_BASE + 0x2345,
            vec![DECOMP_BASE + 0x2345],
            0,
            StackEnd::NotUnwound,
        ),
        Where::User => (0x40_1000, vec![0x40_1000], 3, StackEnd::NotUnwound),
        Where::Kernel(f) => {
            let st = raw_stack(f);
            (st[0], st, 0, StackEnd::Root)
        }
        Where::Truncated(f) => {
            let st = raw_stack(f);
            (st[0], st, 0, StackEnd::Truncated)
        }
    };
    Sample {
        run,
        vcpu: 0,
        t_ns,
        rip,
        cpl,
        cs: if cpl == 3 { 0x33 } else { 0x10 },
        stack,
        stack_end: end.as_u8(),
        minflt: s.faults,
        majflt: 0,
        kvm: vec![(0, s.exits)],
        cost: SampleCost {
            kick_ns: 30_000,
            capture_ns: 10_000,
            unwind_ns: 2_000,
            write_ns: 1_000,
        },
        ..Sample::default()
    }
}

fn layout() -> RunLayout {
    RunLayout {
        kernel_virt_slide: 0,
        virt_slide_method: "test".into(),
        kernel_phys_start: Some(0x200_0000),
        kernel_link_start: TEXT_BASE,
        kernel_size: FUNCTIONS.len() as u64 * FUNC_SIZE,
        decompressor_bases: vec![DECOMP_BASE],
        decompressor_size: 0x10_0000,
    }
}

/// Writes a trace with one run per script, and a System.map next to it.
/// Returns the trace path.
pub fn write_trace(dir: &Path, name: &str, scripts: &[Vec<Step>]) -> PathBuf {
    write_trace_with(dir, name, scripts, PERIOD_NS)
}

/// Like [`write_trace`], sampling every `period_ns`.
pub fn write_trace_with(dir: &Path, name: &str, scripts: &[Vec<Step>], period_ns: u64) -> PathBuf {
    write_trace_of(
        dir,
        name,
        scripts,
        period_ns,
        "Linux version 6.12.0-scripted",
    )
}

/// Like [`write_trace_with`], for a kernel whose version banner is `version`.
pub fn write_trace_of(
    dir: &Path,
    name: &str,
    scripts: &[Vec<Step>],
    period_ns: u64,
    version: &str,
) -> PathBuf {
    let path = dir.join(name);
    let meta = TraceMeta {
        boottrace_version: "test".into(),
        argv: vec!["boottrace".into(), "record".into()],
        kernel: KernelInfo {
            path: dir.join("bzImage").display().to_string(),
            size: 0,
            sha256: String::new(),
            build_id: None,
            version: Some(version.into()),
        },
        kernel_cmdline: "console=ttyS0".into(),
        options: Default::default(),
        host: HostFacts::default(),
        unwinder: "orc".into(),
        vmlinux: None,
        sample_freq_hz: (1_000_000_000 / period_ns) as u32,
        wall_start_unix_ns: 0,
    };
    let mut w = TraceWriter::create(&path, &meta).expect("create trace");
    w.append(&Record::StatNames(StatNames {
        names: vec!["exits".into()],
    }))
    .expect("append");
    for (run, script) in scripts.iter().enumerate() {
        let run = run as u32;
        let rec = |w: &mut TraceWriter, r: Record| w.append(&r).expect("append");
        rec(
            &mut w,
            Record::RunStart(RunStart {
                run,
                wall_time_unix_ns: 0,
            }),
        );
        for (name, t) in [
            ("create_vm", 200_000),
            ("memory", 500_000),
            ("load_kernel", 1_500_000),
            ("first_instruction", T0_NS),
        ] {
            rec(
                &mut w,
                Record::Phase(Phase {
                    run,
                    name: name.into(),
                    t_ns: t,
                }),
            );
        }
        rec(
            &mut w,
            Record::Layout(Layout {
                run,
                layout: layout().into(),
            }),
        );
        let mut t = T0_NS;
        let mut cost = SamplerCost {
            run,
            ..SamplerCost::default()
        };
        let mut user_seen = false;
        for s in script {
            if matches!(s.at, Where::User) && !user_seen {
                // The VMM sees the first user-mode instruction before the next sample does.
                user_seen = true;
                let t_user = t - period_ns / 2;
                rec(
                    &mut w,
                    Record::Phase(Phase {
                        run,
                        name: "user_mode".into(),
                        t_ns: t_user,
                    }),
                );
            }
            for _ in 0..s.n {
                let smp = sample(run, t, s);
                cost.samples += 1;
                cost.total_kick_ns += u64::from(smp.cost.kick_ns);
                cost.total_capture_ns += u64::from(smp.cost.capture_ns);
                cost.total_unwind_ns += u64::from(smp.cost.unwind_ns);
                cost.total_write_ns += u64::from(smp.cost.write_ns);
                rec(&mut w, Record::Sample(smp));
                t += period_ns;
            }
        }
        rec(
            &mut w,
            Record::Phase(Phase {
                run,
                name: "end".into(),
                t_ns: t,
            }),
        );
        rec(
            &mut w,
            Record::RunEnd(RunEnd {
                run,
                t_ns: t,
                reason: "user".into(),
                detail: None,
            }),
        );
        rec(&mut w, Record::SamplerCost(cost));
    }
    w.finish().expect("finish");
    std::fs::write(dir.join("System.map"), system_map()).expect("System.map");
    path
}

/// The same script sampled `k` times as often: every step has `k` times the samples.
pub fn denser(script: &[Step], k: u64) -> Vec<Step> {
    script
        .iter()
        .map(|s| Step {
            n: s.n * k,
            ..s.clone()
        })
        .collect()
}

/// Symbol arguments that name the scripted kernel's System.map.
pub fn symbol_args(dir: &Path) -> SymbolConfig {
    SymbolConfig {
        system_map: Some(dir.join("System.map")),
        ..SymbolConfig::default()
    }
}
