//! Benchmark: boottrace's own per-sample work, without a running guest.
//!
//! The production sampler (`RecordSampler` → `VcpuSampler::sample`) runs on
//! guest memory built from a real kernel image: its loaded segments at a
//! KASLR slide behind real page tables, and kernel stacks laid out from the
//! image's own call sites (frame-pointer chains, or frames that follow the
//! image's ORC entries for ORC kernels). Each iteration puts one stack's
//! registers into the vCPU's `kvm_run` sync-regs area (as KVM does at an
//! exit) and takes a sample: capture (sync regs), layout, unwind, task
//! lookup, host counters (rusage, perf, KVM stats of a real but never-run
//! vCPU) and the hand-over to a real trace writer thread. KVM is opened
//! only for that vCPU's stats; no guest instruction runs.
//!
//! `cargo bench --bench sample_path -- KERNEL [SAMPLES]` (bzImage, vmlinux
//! or a distro vmlinuz; `examples/bench-sample.sh` runs the test kernels and
//! the Debian cloud kernel).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use boottrace::record::kernel::{analyse, Published};
use boottrace::sample::pagewalk::{FakePageTables, FakePhys, PageSize};
use boottrace::sample::sampler::{CaptureMode, CostTotals, RecordSampler, SharedLayout};
use boottrace::sample::task::RunTasks;
use boottrace::trace::{TraceMeta, TraceWriter};
use boottrace::vmm::SamplerFactory;
use boottrace_symbols::image::KernelImage;
use boottrace_symbols::orc::{OrcReg, OrcTable, OrcType};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// No KASLR slide: the test kernels are not relocatable (the detector then
/// expects link addresses), and the cost does not depend on it.
const SLIDE: u64 = 0;
const PHYS: u64 = 0x0600_0000;
const STACKS_VA: u64 = 0xffff_c900_0001_0000;
const STACKS_PA: u64 = 0x0400_0000;
/// Kernel task stacks: 16 KiB.
const STACK_SIZE: u64 = 0x4000;
/// Distinct stacks the samples cycle through.
const STACKS: u64 = 32;
/// Frames per stack (typical boot stacks are 10–25 deep).
const DEPTH: usize = 16;

/// A sample's registers.
#[derive(Clone, Copy)]
struct Regs {
    rip: u64,
    rsp: u64,
    rbp: u64,
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let Some(kernel) = args.first() else {
        bail!("usage: cargo bench --bench sample_path -- KERNEL [SAMPLES]");
    };
    let samples: u64 = args.get(1).map_or(Ok(200_000), |s| s.parse())?;
    let published = Published::default();
    let t = Instant::now();
    let facts = analyse(std::path::Path::new(kernel), None, false, &published)
        .with_context(|| format!("cannot analyse {kernel}"))?;
    println!(
        "{kernel}: unwinder {}, {} (analysis {:.0} ms)",
        facts.unwinder_kind,
        facts.tasks_note,
        t.elapsed().as_secs_f64() * 1e3
    );
    let image = facts.image.clone();
    let orc = OrcTable::from_elf(image.elf_bytes())
        .ok()
        .filter(|t| !t.is_empty());
    let (fake, cr3) = guest(&image)?;
    let calls = return_addresses(&image, orc.as_ref());
    if calls.len() < DEPTH * 4 {
        bail!("only {} usable call sites in the image", calls.len());
    }
    let mut fake = fake;
    let regs: Vec<Regs> = (0..STACKS)
        .map(|i| lay_out_stack(&mut fake, orc.as_ref(), &calls, i))
        .collect::<Option<_>>()
        .context("a stack did not fit")?;
    let mem = guest_memory(&fake)?;

    let kvm = kvm_ioctls::Kvm::new().context("KVM is needed for the vCPU's stats fd")?;
    let vm = kvm.create_vm().context("KVM_CREATE_VM")?;
    let mut vcpu = vm.create_vcpu(0).context("KVM_CREATE_VCPU")?;
    let dir = tempfile::tempdir()?;
    let writer =
        TraceWriter::create(dir.path().join("bench.data"), &TraceMeta::default())?.spawn()?;
    let totals = Arc::new(CostTotals::default());
    let factory = RecordSampler {
        run: 0,
        freq: 10_000,
        sink: writer.sink(),
        kernel: published.kernel.clone(),
        capture: CaptureMode::Sync,
        layout: Arc::new(SharedLayout::new(published.kernel.clone())),
        totals: totals.clone(),
        stat_names_written: Arc::new(AtomicBool::new(false)),
        run_tasks: Arc::new(RunTasks::default()),
        // As `record`: blocked stacks on the boot vCPU unless turned off, so
        // BOOTTRACE_NO_WAIT_STACKS=1 gives the cost without them side by side.
        wait_stacks: std::env::var_os("BOOTTRACE_NO_WAIT_STACKS").is_none(),
    };
    let mut sampler = factory.create(0, &vcpu, &mem);
    let set = |vcpu: &mut kvm_ioctls::VcpuFd, r: Regs| {
        let s = vcpu.sync_regs_mut();
        s.regs.rip = r.rip;
        s.regs.rsp = r.rsp;
        s.regs.rbp = r.rbp;
        s.sregs.cr0 = 0x8005_0033;
        s.sregs.cr3 = cr3;
        s.sregs.cr4 = 0x20;
        s.sregs.efer = 0xd01;
        s.sregs.cs.selector = 0x10;
        s.sregs.ss.dpl = 0;
    };
    // Warm-up: the layout is found, caches and the writer's tables fill.
    for (i, r) in regs.iter().cycle().take(1_000).enumerate() {
        set(&mut vcpu, *r);
        sampler.sample(&mut vcpu, i as u64 * 100_000, 0, true);
    }
    let warm = snapshot(&totals);
    let t = Instant::now();
    for (i, r) in regs.iter().cycle().take(samples as usize).enumerate() {
        set(&mut vcpu, *r);
        sampler.sample(&mut vcpu, (1_000 + i as u64) * 100_000, 0, true);
    }
    let wall = t.elapsed();
    sampler.finish();
    drop(sampler);
    drop(factory);
    let end = snapshot(&totals);
    writer.finish()?;
    let n = (end[0] - warm[0]).max(1) as f64;
    let per = |k: usize| (end[k] - warm[k]) as f64 / n / 1e3;
    let complete = end[5] - warm[5];
    let unwound = end[6] - warm[6];
    println!(
        "  {n:.0} samples: {:.2} us per sample in all (wall clock); capture {:.2} us, \
         unwind+task+counters {:.2} us, write {:.2} us; complete unwinds {complete}/{unwound}",
        wall.as_secs_f64() * 1e6 / n,
        per(2),
        per(3),
        per(4),
    );
    let size = std::fs::metadata(dir.path().join("bench.data"))?.len();
    let t = boottrace::trace::Trace::open(dir.path().join("bench.data"))?;
    let s = t.runs.first().map_or(&[][..], |r| &r.samples[..]);
    let frames: usize = s.iter().map(|s| s.stack.len()).sum();
    let mut ends = std::collections::BTreeMap::new();
    for x in s {
        *ends.entry(x.stack_end).or_insert(0u64) += 1;
    }
    println!(
        "  trace: {:.1} bytes per sample, {:.1} frames per sample, stack ends {ends:?}",
        size as f64 / s.len().max(1) as f64,
        frames as f64 / s.len().max(1) as f64
    );
    Ok(())
}

fn snapshot(t: &CostTotals) -> [u64; 7] {
    let g = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
    [
        g(&t.samples),
        g(&t.kick_ns),
        g(&t.capture_ns),
        g(&t.unwind_ns),
        g(&t.write_ns),
        g(&t.complete),
        g(&t.unwound),
    ]
}

/// The kernel's loaded segments at `PHYS`, mapped at link + `SLIDE` (2 MiB
/// pages) and identity, and `STACKS` task stacks; returns memory and CR3.
fn guest(image: &KernelImage) -> Result<(FakePhys, u64)> {
    let mut mem = FakePhys::new();
    let mut pt = FakePageTables::new(&mut mem, 0x20_0000, 0x10_0000, false);
    let span = image.image_size().div_ceil(0x20_0000) * 0x20_0000;
    mem.add_region(PHYS, span as usize);
    let phys0 = image.phys_load_start();
    for seg in image.segments() {
        let bytes = image
            .read_link(seg.vaddr, seg.filesz as usize)
            .context("segment bytes")?;
        if !mem.write(PHYS + (seg.paddr - phys0), bytes) {
            bail!("segment at {:#x} does not fit", seg.paddr);
        }
    }
    let link = image.text_start();
    for off in (0..span).step_by(0x20_0000) {
        pt.map(&mut mem, link + SLIDE + off, PHYS + off, PageSize::Size2M);
    }
    if !pt.map_region(&mut mem, STACKS_VA, STACKS_PA, STACKS * STACK_SIZE) {
        bail!("cannot map the stacks");
    }
    Ok((mem, pt.cr3()))
}

/// The same bytes in real guest memory (what the sampler reads in `record`).
fn guest_memory(fake: &FakePhys) -> Result<GuestMemoryMmap> {
    let mut ranges: Vec<(GuestAddress, usize)> = fake
        .regions()
        .map(|(b, d)| (GuestAddress(b), d.len()))
        .collect();
    ranges.sort_by_key(|r| r.0);
    let mem = GuestMemoryMmap::from_ranges(&ranges).context("guest memory")?;
    for (b, d) in fake.regions() {
        mem.write_slice(d, GuestAddress(b)).context("copy")?;
    }
    Ok(mem)
}

/// Link-time return addresses of `call rel32` instructions in the kernel's
/// text that land in the text; for ORC kernels only those whose ORC entry
/// is an SP-based call frame (what a caller in C code has).
fn return_addresses(image: &KernelImage, orc: Option<&OrcTable>) -> Vec<u64> {
    let Some((text, bytes)) = image.section(".text") else {
        return Vec::new();
    };
    let end = text + bytes.len() as u64;
    let mut out = Vec::new();
    let mut i = 0;
    while i + 5 <= bytes.len() && out.len() < 20_000 {
        if bytes[i] == 0xe8 {
            let rel = i32::from_le_bytes([bytes[i + 1], bytes[i + 2], bytes[i + 3], bytes[i + 4]]);
            let next = text + i as u64 + 5;
            let target = next.wrapping_add_signed(i64::from(rel));
            let ok = (text..end).contains(&target)
                && match orc {
                    None => true,
                    Some(t) => t.lookup(next - 1).is_some_and(|e| {
                        e.kind == OrcType::Call
                            && e.sp_reg == OrcReg::Sp
                            && e.sp_offset >= 8
                            && e.sp_offset < 512
                            && matches!(e.bp_reg, OrcReg::Undefined | OrcReg::PrevSp)
                    }),
                };
            if ok {
                out.push(next);
                i += 5;
                continue;
            }
        }
        i += 1;
    }
    // Spread the picks over the whole text.
    let step = (out.len() / 2_000).max(1);
    out.into_iter().step_by(step).collect()
}

/// Lays out stack `n` (DEPTH frames of pseudo-randomly chosen call sites)
/// and returns the registers of a sample taken in its innermost function.
fn lay_out_stack(
    mem: &mut FakePhys,
    orc: Option<&OrcTable>,
    calls: &[u64],
    n: u64,
) -> Option<Regs> {
    let top_va = STACKS_VA + (n + 1) * STACK_SIZE;
    let va_to_pa = |va: u64| STACKS_PA + (va - STACKS_VA);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64.wrapping_mul(n + 1);
    let mut pick = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        calls[(seed % calls.len() as u64) as usize] + SLIDE
    };
    // The leaf: somewhere in a function, at a call site's return address.
    let rip = pick();
    let mut sp = top_va - 0x2000;
    let rsp = sp;
    match orc {
        Some(t) => {
            // Each frame's CFA from the ORC entry of its IP; the return
            // address sits just below it, the saved BP where the entry says.
            let mut ip = rip;
            let mut first = true;
            for d in 0..DEPTH {
                let at = if first { ip } else { ip - 1 } - SLIDE;
                first = false;
                let e = t.lookup(at)?;
                if e.sp_reg != OrcReg::Sp {
                    return None;
                }
                let cfa = sp.checked_add_signed(i64::from(e.sp_offset))?;
                let ret = if d + 1 == DEPTH { 0 } else { pick() };
                if !mem.write_u64(va_to_pa(cfa - 8), ret) {
                    return None;
                }
                if e.bp_reg == OrcReg::PrevSp {
                    let slot = cfa.checked_add_signed(i64::from(e.bp_offset))?;
                    mem.write_u64(va_to_pa(slot), 0);
                }
                sp = cfa;
                ip = ret;
            }
            Some(Regs { rip, rsp, rbp: 0 })
        }
        None => {
            // Frame-pointer chain: [rbp] = caller's rbp, [rbp + 8] = return address.
            let rbp = sp + 0x20;
            let mut fp = rbp;
            for d in 0..DEPTH {
                let next = if d + 1 == DEPTH { 0 } else { fp + 0x60 };
                if !mem.write_u64(va_to_pa(fp), next) || !mem.write_u64(va_to_pa(fp + 8), pick()) {
                    return None;
                }
                fp = next;
            }
            Some(Regs { rip, rsp, rbp })
        }
    }
}
