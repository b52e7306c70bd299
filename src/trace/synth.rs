//! Synthetic traces of a made-up kernel, for tests and benchmarks that must
//! not need a real boot. The fake kernel's symbols are served as a System.map
//! ([`system_map`]) so the whole read → symbolize → render path can run.

use std::path::Path;

use boottrace_symbols::layout::RunLayout;

use super::names::{EndKind, PhaseName, UnwinderKind};
use super::options::RecordOptions;
use super::record::{
    HostFacts, KernelInfo, Layout, Phase, Record, RunEnd, RunStart, Sample, SampleCost,
    SamplerCost, Serial, StackEnd, StatNames, Task, TaskSwitch, TraceMeta, WaitStack,
};
use super::{TraceError, TraceWriter};

/// Link-time address of the fake kernel's first function.
pub const TEXT_BASE: u64 = 0xffff_ffff_8100_0000;
/// Size of every fake function.
pub const FUNC_SIZE: u64 = 0x1000;
/// Version banner of the fake kernel.
pub const VERSION: &str = "Linux version 6.12.0-synthetic (boottrace) #1";

/// Names of the fake kernel's functions; function `i` starts at `TEXT_BASE + i * FUNC_SIZE`.
pub const FUNCTIONS: &[&str] = &[
    "x86_64_start_kernel",
    "start_kernel",
    "setup_arch",
    "e820__memory_setup",
    "mm_core_init",
    "memmap_init_range",
    "__init_single_page",
    "rest_init",
    "kernel_init",
    "kernel_init_freeable",
    "do_initcalls",
    "do_one_initcall",
    "foo_driver_init",
    "bar_subsys_init",
    "clear_page",
    "secondary_startup_64",
    "start_secondary",
    "cpu_startup_entry",
    "do_idle",
    "default_idle",
];

/// The call paths samples are drawn from, root first, with the fraction of
/// the boot (start, end) in which each is live on vCPU 0.
const PATHS: &[(&[&str], f64, f64)] = &[
    (
        &[
            "x86_64_start_kernel",
            "start_kernel",
            "setup_arch",
            "e820__memory_setup",
        ],
        0.0,
        0.2,
    ),
    (
        &["x86_64_start_kernel", "start_kernel", "setup_arch"],
        0.0,
        0.2,
    ),
    (
        &[
            "x86_64_start_kernel",
            "start_kernel",
            "mm_core_init",
            "memmap_init_range",
            "__init_single_page",
        ],
        0.2,
        0.6,
    ),
    (
        &[
            "x86_64_start_kernel",
            "start_kernel",
            "mm_core_init",
            "memmap_init_range",
        ],
        0.2,
        0.6,
    ),
    (
        &[
            "x86_64_start_kernel",
            "start_kernel",
            "rest_init",
            "kernel_init",
            "kernel_init_freeable",
            "do_initcalls",
            "do_one_initcall",
            "foo_driver_init",
        ],
        0.6,
        0.8,
    ),
    (
        &[
            "x86_64_start_kernel",
            "start_kernel",
            "rest_init",
            "kernel_init",
            "kernel_init_freeable",
            "do_initcalls",
            "do_one_initcall",
            "bar_subsys_init",
            "clear_page",
        ],
        0.8,
        1.0,
    ),
];

/// The idle path of secondary vCPUs.
const IDLE: &[&str] = &[
    "secondary_startup_64",
    "start_secondary",
    "cpu_startup_entry",
    "do_idle",
    "default_idle",
];

/// Scheduler and wait functions of the boot task's blocked stacks
/// ([`records_with_waits`]); function `i` starts at [`wait_addr`]`(opts, i)`,
/// after the extra functions.
pub const WAIT_FUNCTIONS: &[&str] = &[
    "__schedule",
    "schedule",
    "schedule_timeout",
    "wait_for_completion",
    "__flush_work",
    "msleep",
    "kthread_create_on_node",
];

/// The blocked paths of pid 1 in the initcall phase, innermost first, as
/// indices into [`WAIT_FUNCTIONS`] followed by names of [`FUNCTIONS`].
const WAIT_PATHS: &[(&[usize], &[&str])] = &[
    (&[0, 1, 2, 3, 4], &["do_one_initcall"]),
    (&[0, 1, 2, 5], &["foo_driver_init", "do_one_initcall"]),
    (&[0, 1, 3, 6], &["bar_subsys_init", "do_one_initcall"]),
];

/// The callers below `do_one_initcall` in every blocked path, innermost first.
const WAIT_ROOT: &[&str] = &["do_initcalls", "kernel_init_freeable", "kernel_init"];

/// KVM stat names recorded in synthetic traces.
pub const STATS: &[&str] = &["exits", "io_exits", "mmio_exits", "halt_exits", "pf_taken"];

/// What to generate.
#[derive(Debug, Clone)]
pub struct SynthOptions {
    /// Number of runs (boots).
    pub runs: u32,
    /// Samples per vCPU per run.
    pub samples_per_run: u32,
    /// vCPUs (vCPU 0 boots, the others idle).
    pub vcpus: u32,
    /// Sampling period, ns.
    pub period_ns: u64,
    /// Seed of the deterministic pseudo-random choices.
    pub seed: u64,
    /// Extra functions `initcall_fn_N` forming a call tree under
    /// `do_one_initcall` (0: none). Gives benchmarks thousands of distinct
    /// stacks, as real boots have.
    pub extra_functions: u32,
}

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions {
            runs: 2,
            samples_per_run: 200,
            vcpus: 1,
            period_ns: 100_000,
            seed: 1,
            extra_functions: 0,
        }
    }
}

/// Start address of a fake function.
pub fn addr_of(name: &str) -> Option<u64> {
    let i = FUNCTIONS.iter().position(|f| *f == name)?;
    Some(TEXT_BASE + i as u64 * FUNC_SIZE)
}

/// Start address of extra function `i` (see [`SynthOptions::extra_functions`]).
pub fn extra_addr(i: u32) -> u64 {
    TEXT_BASE + (FUNCTIONS.len() as u64 + u64::from(i)) * FUNC_SIZE
}

/// The fake kernel's System.map (without extra functions).
pub fn system_map() -> String {
    system_map_for(&SynthOptions::default())
}

/// Start address of wait function `i` ([`WAIT_FUNCTIONS`]) in a trace made
/// with `opts`.
pub fn wait_addr(opts: &SynthOptions, i: usize) -> u64 {
    extra_addr(opts.extra_functions) + i as u64 * FUNC_SIZE
}

/// The fake kernel's System.map, with the extra functions `opts` asks for.
pub fn system_map_for(opts: &SynthOptions) -> String {
    let mut s = String::from("ffffffff81000000 T _text\n");
    for (i, f) in FUNCTIONS.iter().enumerate() {
        s.push_str(&format!(
            "{:016x} T {f}\n",
            TEXT_BASE + i as u64 * FUNC_SIZE
        ));
    }
    for i in 0..opts.extra_functions {
        s.push_str(&format!("{:016x} T initcall_fn_{i}\n", extra_addr(i)));
    }
    for (i, f) in WAIT_FUNCTIONS.iter().enumerate() {
        s.push_str(&format!("{:016x} T {f}\n", wait_addr(opts, i)));
    }
    s.push_str(&format!(
        "{:016x} T _etext\n",
        wait_addr(opts, WAIT_FUNCTIONS.len())
    ));
    s
}

/// Size of the fake kernel's text mapping (room for any extra functions).
const KERNEL_SIZE: u64 = 0x1000_0000;

/// The layout every synthetic run uses (no KASLR, kernel at 16 MiB).
pub fn layout() -> RunLayout {
    RunLayout {
        kernel_virt_slide: 0,
        virt_slide_method: "synthetic".into(),
        kernel_phys_start: Some(0x100_0000),
        kernel_link_start: TEXT_BASE,
        kernel_size: KERNEL_SIZE,
        decompressor_bases: Vec::new(),
        decompressor_size: 0,
    }
}

/// Metadata of a synthetic trace.
pub fn meta(opts: &SynthOptions) -> TraceMeta {
    let options = RecordOptions {
        runs: opts.runs,
        cpus: opts.vcpus,
        ..RecordOptions::default()
    };
    TraceMeta {
        boottrace_version: env!("CARGO_PKG_VERSION").into(),
        argv: vec!["boottrace".into(), "synthetic".into()],
        kernel: KernelInfo {
            path: "synthetic-bzImage".into(),
            size: 0,
            sha256: String::new(),
            build_id: None,
            version: Some(VERSION.into()),
        },
        kernel_cmdline: "console=ttyS0 quiet".into(),
        options,
        host: HostFacts::default(),
        unwinder: UnwinderKind::FramePointer,
        vmlinux: None,
        sample_freq_hz: (1_000_000_000 / opts.period_ns.max(1)) as u32,
        wall_start_unix_ns: 1_700_000_000_000_000_000,
    }
}

/// A small deterministic generator (xorshift64*): tests need reproducible data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0.max(1);
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Raw stack for a root-first path: `[0]` = an address inside the leaf, then
/// return addresses inside each caller.
fn stack_for(path: &[u64], rng: &mut Rng) -> Vec<u64> {
    let mut stack = Vec::with_capacity(path.len());
    for (depth, &base) in path.iter().rev().enumerate() {
        // 16 sampled spots and 4 call sites per function, as code has hot
        // loops and few call sites. A return address is never a function's
        // first byte: offset ≥ 5 (a call instruction).
        let off = if depth == 0 {
            rng.below(FUNC_SIZE) & !0xff
        } else {
            5 + (rng.below(FUNC_SIZE - 5) & !0x3ff)
        };
        stack.push(base + off);
    }
    stack
}

fn sample(run: u32, vcpu: u32, t_ns: u64, path: &[u64], rng: &mut Rng) -> Sample {
    let stack = stack_for(path, rng);
    let in_memmap = addr_of("memmap_init_range").is_some_and(|a| path.contains(&a));
    let minflt = if in_memmap {
        3 + rng.below(5)
    } else {
        rng.below(2)
    };
    let exits = 1 + rng.below(3);
    Sample {
        run,
        vcpu,
        t_ns,
        rip: stack[0],
        rsp: 0xffff_c900_0000_3f00 - rng.below(0x100) * 8,
        rbp: 0xffff_c900_0000_3f80,
        cr0: 0x8005_0033,
        cr3: 0x200_0000,
        cr4: 0x20_06f0,
        efer: 0xd01,
        cs: 0x10,
        cpl: 0,
        stack,
        stack_end: StackEnd::Root.as_u8(),
        minflt,
        majflt: 0,
        perf_faults: 0,
        kvm: vec![(0, exits), (1, exits / 2)],
        cost: SampleCost {
            kick_ns: 30_000,
            capture_ns: 11_000,
            unwind_ns: 2_000,
            write_ns: 500,
        },
        task: None,
    }
}

fn addrs(path: &[&str]) -> Vec<u64> {
    path.iter()
        .map(|f| addr_of(f).unwrap_or(TEXT_BASE))
        .collect()
}

/// Replaces what `do_one_initcall` calls with a chain through the extra
/// functions: a fixed call tree (each function calls one of 3 others), so
/// stacks repeat as in a real kernel.
fn extra_chain(bases: &mut Vec<u64>, n: u32, rng: &mut Rng) {
    let Some(at) = addr_of("do_one_initcall").and_then(|a| bases.iter().position(|&b| b == a))
    else {
        return;
    };
    bases.truncate(at + 1);
    let n = u64::from(n);
    let mut f = rng.below(n.min(50));
    bases.push(extra_addr(f as u32));
    for _ in 0..rng.below(6) {
        f = (f * 7 + 1 + rng.below(3)) % n;
        bases.push(extra_addr(f as u32));
    }
}

/// All records of a synthetic trace, in file order, `Meta` first and without
/// the final record (the writer's `finish` adds it).
pub fn records(opts: &SynthOptions) -> Vec<Record> {
    let mut rng = Rng(opts.seed ^ 0x9e37_79b9_7f4a_7c15);
    let mut out = vec![
        Record::Meta(Box::new(meta(opts))),
        Record::StatNames(StatNames {
            names: STATS.iter().map(|s| s.to_string()).collect(),
        }),
    ];
    let n = u64::from(opts.samples_per_run.max(1));
    let idle = addrs(IDLE);
    for run in 0..opts.runs {
        let t0 = 1_000_000; // create_vm..first_instruction
        out.push(Record::RunStart(RunStart {
            run,
            wall_time_unix_ns: 1_700_000_000_000_000_000 + u64::from(run) * 10_000_000_000,
        }));
        for (name, t) in [
            (PhaseName::CreateVm, 200_000),
            (PhaseName::Memory, 400_000),
            (PhaseName::LoadKernel, 900_000),
            (PhaseName::FirstInstruction, t0),
        ] {
            out.push(Record::Phase(Phase { run, name, t_ns: t }));
        }
        out.push(Record::Layout(Layout {
            run,
            layout: layout().into(),
        }));
        let mut total = SamplerCost {
            run,
            ..SamplerCost::default()
        };
        // Runs differ a little in length, as real boots do.
        let jitter = rng.below(n / 10 + 1);
        let count = n + jitter;
        for i in 0..count {
            let t = t0 + i * opts.period_ns;
            let frac = i as f64 / count as f64;
            let live: Vec<_> = PATHS
                .iter()
                .filter(|(_, a, b)| frac >= *a && frac < *b)
                .collect();
            let path = match live.len() {
                0 => PATHS[PATHS.len() - 1].0,
                k => live[rng.below(k as u64) as usize].0,
            };
            let mut bases = addrs(path);
            if opts.extra_functions > 0 && path.contains(&"do_one_initcall") && rng.below(2) == 0 {
                extra_chain(&mut bases, opts.extra_functions, &mut rng);
            }
            for vcpu in 0..opts.vcpus {
                let s = if vcpu == 0 {
                    sample(run, vcpu, t, &bases, &mut rng)
                } else {
                    sample(run, vcpu, t, &idle, &mut rng)
                };
                total.samples += 1;
                total.total_kick_ns += u64::from(s.cost.kick_ns);
                total.total_capture_ns += u64::from(s.cost.capture_ns);
                total.total_unwind_ns += u64::from(s.cost.unwind_ns);
                total.total_write_ns += u64::from(s.cost.write_ns);
                out.push(Record::Sample(s));
            }
            if i == count / 2 {
                out.push(Record::Serial(Serial {
                    run,
                    t_ns: t,
                    line: "Memory: 120000K/131072K available".into(),
                }));
            }
        }
        let end = t0 + count * opts.period_ns;
        out.push(Record::Serial(Serial {
            run,
            t_ns: end,
            line: "Run /init as init process".into(),
        }));
        out.push(Record::Phase(Phase {
            run,
            name: PhaseName::End,
            t_ns: end,
        }));
        out.push(Record::RunEnd(RunEnd {
            run,
            t_ns: end,
            reason: EndKind::User,
            detail: None,
        }));
        out.push(Record::SamplerCost(total));
    }
    out
}

/// Task ids of [`records_with_waits`]: the boot CPU's task, pid 1, and the
/// worker vCPU 0 runs while pid 1 waits.
const TASKS: [(u32, &str); 3] = [(0, "swapper/0"), (1, "init"), (20, "kworker/0:1")];

/// Like [`records`], with the guest tasks of vCPU 0 and the boot task's
/// blocked stacks of a boot whose pid 1 waits a lot: in the initcall phase
/// it blocks in spells of 1–100 samples (between runs of 1–50), on one of
/// a few wait paths, and every vCPU 0 sample of a spell carries a
/// [`WaitStack`] (written just before the sample, as `record` does), the
/// spell's last one runnable. vCPU 0 runs a worker meanwhile.
pub fn records_with_waits(opts: &SynthOptions) -> Vec<Record> {
    let mut rng = Rng(opts.seed ^ 0x5851_f42d_4c95_7f2d);
    let initcall = addr_of("do_one_initcall").unwrap_or(TEXT_BASE);
    let ret = |base: u64, site: u64| base + 5 + site * 0x40;
    let paths: Vec<Vec<u64>> = WAIT_PATHS
        .iter()
        .map(|(waits, funcs)| {
            let waits = waits.iter().map(|&i| wait_addr(opts, i));
            let funcs = funcs
                .iter()
                .chain(WAIT_ROOT)
                .map(|f| addr_of(f).unwrap_or(TEXT_BASE));
            waits
                .chain(funcs)
                .enumerate()
                .map(|(d, a)| ret(a, d as u64 % 3))
                .collect()
        })
        .collect();
    let switch = |run, task| {
        Record::TaskSwitch(TaskSwitch {
            run,
            vcpu: 0,
            task: Some(task),
        })
    };
    let mut out = Vec::new();
    // (samples left in this spell, blocked?, the spell's path)
    let mut spell = (0u64, false, 0usize);
    for rec in records(opts) {
        match &rec {
            Record::RunStart(r) => {
                let run = r.run;
                out.push(rec);
                for (id, &(pid, comm)) in TASKS.iter().enumerate() {
                    out.push(Record::Task(Task {
                        run,
                        id: id as u32,
                        pid,
                        tgid: pid,
                        comm: comm.into(),
                        addr: 0xffff_8880_0100_0000 + id as u64 * 0x2000,
                    }));
                }
                out.push(switch(run, 0));
                spell = (0, false, 0);
                continue;
            }
            Record::Sample(s)
                if s.vcpu == 0
                    && s.stack
                        .iter()
                        .any(|&a| a.wrapping_sub(initcall) < FUNC_SIZE) =>
            {
                let (run, t_ns) = (s.run, s.t_ns);
                if spell.0 == 0 {
                    let blocked = !spell.1;
                    let len = 1 + rng.below(if blocked { 100 } else { 50 });
                    let path = rng.below(paths.len() as u64) as usize;
                    spell = (len, blocked, path);
                    out.push(switch(run, if blocked { 2 } else { 1 }));
                }
                spell.0 -= 1;
                if spell.1 {
                    out.push(Record::WaitStack(WaitStack {
                        run,
                        vcpu: 0,
                        t_ns,
                        task: Some(1),
                        state: if spell.0 == 0 { 0 } else { 2 },
                        stack: paths[spell.2].clone(),
                        stack_end: StackEnd::Root.as_u8(),
                    }));
                }
            }
            _ => {}
        }
        out.push(rec);
    }
    out
}

/// Writes a complete synthetic trace to `path`.
pub fn write(path: &Path, opts: &SynthOptions) -> Result<(), TraceError> {
    write_records(path, &records(opts))
}

/// Writes `recs` (`Meta` first, as [`records`] makes them) as a complete
/// trace to `path`, one record at a time.
pub fn write_records(path: &Path, recs: &[Record]) -> Result<(), TraceError> {
    let Some((Record::Meta(meta), rest)) = recs.split_first() else {
        return Err(TraceError::NoMeta(
            "the records do not start with Meta".into(),
        ));
    };
    let mut w = TraceWriter::create(path, meta)?;
    for r in rest {
        w.append(r)?;
    }
    w.finish()?;
    Ok(())
}
