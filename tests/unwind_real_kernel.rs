//! Layout detection and ORC unwinding against the real `tiny-orc` kernel
//! (`kernel/build.sh tiny-orc`): its bzImage's own bytes placed in fake guest
//! memory at a chosen KASLR slide and physical address, and stacks laid out
//! from its real ORC entries at real call sites (found by scanning the
//! callers' machine code for `call rel32`).

use std::path::PathBuf;
use std::sync::Arc;

use boottrace::sample::kaslr::{BootImage, LayoutDetector};
mod common;

use boottrace::sample::pagewalk::{FakePageTables, FakePhys, PageSize};
use boottrace::sample::unwind::{Method, StackEnd, Truncation, UnwindRegs, Unwinder};
use boottrace_symbols::image::KernelImage;
use boottrace_symbols::orc::{OrcReg, OrcTable, OrcType};
use boottrace_symbols::table::SymbolTable;
use common::kernel_dir;

const SLIDE: u64 = 0x1e00_0000;
const PHYS: u64 = 0x0600_0000;
const STACK_VA: u64 = 0xffff_c900_0001_0000;
const STACK_PA: u64 = 0x0400_0000;
const IRQ_VA: u64 = 0xffff_fe00_0000_8000;
const IRQ_PA: u64 = 0x0410_0000;
const DECOMP_LOAD: u64 = 0x10_0000;

struct Kernel {
    image: Arc<KernelImage>,
    orc: Arc<OrcTable>,
    syms: SymbolTable,
    dir: PathBuf,
}

fn tiny_orc() -> Kernel {
    let dir = kernel_dir("tiny-orc");
    let image = KernelImage::open(&dir.join("bzImage")).expect("bzImage parses");
    let orc = OrcTable::from_elf(image.elf_bytes()).expect("ORC from the bzImage payload");
    let syms = boottrace_symbols::sysmap::load(&dir.join("System.map")).expect("System.map");
    Kernel {
        image: Arc::new(image),
        orc: Arc::new(orc),
        syms,
        dir,
    }
}

impl Kernel {
    fn sym(&self, name: &str) -> u64 {
        self.syms
            .by_name(name)
            .unwrap_or_else(|| panic!("no symbol {name}"))
            .addr
    }

    /// Link-time return addresses of every `call rel32` from `caller` to `callee`.
    fn call_sites(&self, caller: &str, callee: &str) -> Vec<u64> {
        let (start, target) = (self.sym(caller), self.sym(callee));
        let code = self.image.read_link(start, 0x1000).expect("caller bytes");
        (0..code.len() - 5)
            .filter_map(|i| {
                let rel = i32::from_le_bytes([code[i + 1], code[i + 2], code[i + 3], code[i + 4]]);
                let next = start + i as u64 + 5;
                (code[i] == 0xe8 && next.wrapping_add_signed(i64::from(rel)) == target)
                    .then_some(next)
            })
            .collect()
    }

    /// Link-time return address of the first `call rel32` from `caller` to `callee`.
    fn call_site(&self, caller: &str, callee: &str) -> u64 {
        *self
            .call_sites(caller, callee)
            .first()
            .unwrap_or_else(|| panic!("no call from {caller} to {callee}"))
    }

    /// Link-time return address of `call *sym(%rip)` (ff 15) in `caller`.
    fn indirect_call_site(&self, caller: &str, slot: &str) -> u64 {
        let (start, target) = (self.sym(caller), self.sym(slot));
        let code = self.image.read_link(start, 0x400).expect("caller bytes");
        for i in 0..code.len() - 6 {
            if code[i] == 0xff && code[i + 1] == 0x15 {
                let rel = i32::from_le_bytes([code[i + 2], code[i + 3], code[i + 4], code[i + 5]]);
                let next = start + i as u64 + 6;
                if next.wrapping_add_signed(i64::from(rel)) == target {
                    return next;
                }
            }
        }
        panic!("no call *{slot}(%rip) in {caller}");
    }

    /// Fake guest: the kernel's loaded segments at PHYS, mapped at link + SLIDE
    /// (2 MiB pages) and identity; a task stack and an IRQ stack.
    fn guest(&self) -> (FakePhys, u64) {
        let mut mem = FakePhys::new();
        let mut pt = FakePageTables::new(&mut mem, 0x20_0000, 0x10_0000, false);
        let size = self.image.image_size();
        let span = size.div_ceil(0x20_0000) * 0x20_0000;
        mem.add_region(PHYS, span as usize);
        let phys0 = self.image.phys_load_start();
        for seg in self.image.segments() {
            let bytes = self
                .image
                .read_link(seg.vaddr, seg.filesz as usize)
                .expect("segment bytes");
            assert!(mem.write(PHYS + (seg.paddr - phys0), bytes));
        }
        let link = self.image.text_start();
        for off in (0..span).step_by(0x20_0000) {
            assert!(pt.map(&mut mem, link + SLIDE + off, PHYS + off, PageSize::Size2M));
            assert!(pt.map(&mut mem, PHYS + off, PHYS + off, PageSize::Size2M));
        }
        assert!(pt.map_region(&mut mem, STACK_VA, STACK_PA, 0x4000));
        assert!(pt.map_region(&mut mem, IRQ_VA, IRQ_PA, 0x4000));
        (mem, pt.cr3())
    }
}

fn regs(cr3: u64, rip: u64, rsp: u64) -> UnwindRegs {
    UnwindRegs {
        rip,
        rsp,
        cr0: 0x8005_0033,
        cr3,
        cr4: 0x20,
        efer: 0xd01,
        ..Default::default()
    }
}

fn write_va(mem: &mut FakePhys, va: u64, v: u64) {
    let pa = if va >= IRQ_VA {
        IRQ_PA + (va - IRQ_VA)
    } else {
        STACK_PA + (va - STACK_VA)
    };
    assert!(mem.write_u64(pa, v), "stack write at {va:#x}");
}

#[test]
fn detects_slide_and_physical_start_from_a_virtual_rip() {
    let k = tiny_orc();
    let (mem, cr3) = k.guest();
    let mut d = LayoutDetector::new(
        k.image.clone(),
        BootImage::BzImage {
            load_base: DECOMP_LOAD,
        },
    );
    assert!(!d.is_complete());
    let rip = k.sym("start_kernel") + 0x30 + SLIDE;
    assert!(d.observe(&mem, &regs(cr3, rip, STACK_VA + 0x3000)));
    let l = d.layout();
    assert_eq!(l.kernel_virt_slide, SLIDE as i64, "{}", l.virt_slide_method);
    assert_eq!(l.kernel_phys_start, Some(PHYS));
    assert_eq!(l.kernel_link_start, k.sym("_text"));
    assert_eq!(l.kernel_size, k.sym("_end") - k.sym("_text"));
    assert!(d.is_complete(), "kernel running: nothing left to learn");
    assert!(
        !d.observe(&mem, &regs(cr3, rip, STACK_VA + 0x3000)),
        "complete detectors do nothing"
    );
}

#[test]
fn physical_head_code_then_virtual_code() {
    let k = tiny_orc();
    let (mut mem, cr3) = k.guest();
    let mut d = LayoutDetector::new(
        k.image.clone(),
        BootImage::BzImage {
            load_base: DECOMP_LOAD,
        },
    );
    // __startup_64 runs at its physical address before the switch to virtual addresses.
    let phys_rip = PHYS + (k.sym("__startup_64") - k.sym("_text")) + 0x10;
    assert!(d.observe(&mem, &regs(cr3, phys_rip, 0x1_0000)));
    assert_eq!(d.layout().kernel_phys_start, Some(PHYS));
    assert!(!d.is_complete(), "slide still unknown");
    // Relocation processing and alternatives patch bytes: a few differing
    // bytes in the window must not prevent a match.
    let rip_link = k.sym("start_kernel") + 0x40;
    let pa = PHYS + (rip_link - k.sym("_text"));
    assert!(mem.write(pa + 3, &[0x11, 0x22, 0x33, 0x44]));
    assert!(d.observe(&mem, &regs(cr3, rip_link + SLIDE, STACK_VA)));
    assert_eq!(d.layout().kernel_virt_slide, SLIDE as i64);
    assert!(d.is_complete());
}

#[test]
fn garbage_and_padding_teach_nothing() {
    let k = tiny_orc();
    let (mut mem, cr3) = k.guest();
    let mut d = LayoutDetector::new(
        k.image.clone(),
        BootImage::BzImage {
            load_base: DECOMP_LOAD,
        },
    );
    // Code overwritten with other code (bytes of another function): no candidate matches.
    let rip_link = k.sym("start_kernel") + 0x40;
    let other = k
        .image
        .read_link(k.sym("setup_arch") + 0x100, 64)
        .expect("bytes")
        .to_vec();
    assert!(mem.write(PHYS + (rip_link - k.sym("_text")), &other));
    assert!(!d.observe(&mem, &regs(cr3, rip_link + SLIDE, STACK_VA)));
    // A zero-filled window (bss): low entropy, skipped.
    let bss = k.sym("__bss_start") + SLIDE;
    assert!(!d.observe(&mem, &regs(cr3, bss, STACK_VA)));
    // Unmapped RIP, user mode, and 32-bit mode.
    assert!(!d.observe(&mem, &regs(cr3, 0xffff_ffff_f000_0000, STACK_VA)));
    let mut u = regs(cr3, k.sym("start_kernel") + SLIDE, 0);
    u.cpl = 3;
    assert!(!d.observe(&mem, &u));
    assert_eq!(d.layout().kernel_virt_slide, 0);
    assert_eq!(d.layout().kernel_phys_start, None);
}

#[test]
fn finds_where_the_decompressor_relocated_itself() {
    let k = tiny_orc();
    let code = k
        .image
        .protected_mode_code()
        .expect("bzImage decompressor")
        .to_vec();
    let zo = boottrace_symbols::elfsyms::load(&k.dir.join("decompressor.elf"))
        .expect("decompressor.elf");
    let extract = zo.by_name("extract_kernel").expect("extract_kernel").addr;
    let mut mem = FakePhys::new();
    let relocated = 0x1b9_5000u64;
    mem.add_region(DECOMP_LOAD, code.len());
    mem.add_region(relocated, code.len());
    assert!(mem.write(DECOMP_LOAD, &code));
    assert!(mem.write(relocated, &code));
    // The decompressor's identity page tables.
    let mut pt = FakePageTables::new(&mut mem, 0x8_0000_0000, 0x10_0000, false);
    for off in (0..0x4000_0000u64).step_by(0x4000_0000) {
        assert!(pt.map(&mut mem, off, off, PageSize::Size1G));
    }
    let mut d = LayoutDetector::new(
        k.image.clone(),
        BootImage::BzImage {
            load_base: DECOMP_LOAD,
        },
    );
    // Running in the loaded copy teaches nothing new.
    assert!(!d.observe(&mem, &regs(pt.cr3(), DECOMP_LOAD + extract + 0x20, 0x8000)));
    assert!(d.observe(&mem, &regs(pt.cr3(), relocated + extract + 0x20, 0x8000)));
    assert_eq!(d.layout().decompressor_bases, vec![DECOMP_LOAD, relocated]);
    assert_eq!(d.layout().decompressor_size, code.len() as u64);
    assert_eq!(d.layout().kernel_phys_start, None);
}

#[test]
fn elf_and_non_relocatable_boots_are_fixed() {
    let k = tiny_orc();
    let d = LayoutDetector::new(
        k.image.clone(),
        BootImage::Elf {
            phys_start: 0x100_0000,
        },
    );
    assert!(d.is_complete());
    assert_eq!(d.layout().kernel_virt_slide, 0);
    assert!(d.layout().virt_slide_method.starts_with("fixed"));
    let fp_dir = kernel_dir("tiny-fp");
    let fp = Arc::new(KernelImage::open(&fp_dir.join("bzImage")).expect("tiny-fp bzImage"));
    let d = LayoutDetector::new(
        fp.clone(),
        BootImage::BzImage {
            load_base: DECOMP_LOAD,
        },
    );
    assert_eq!(d.layout().kernel_phys_start, Some(fp.phys_load_start()));
    assert!(d.layout().virt_slide_method.contains("not relocatable"));
    assert!(
        !d.is_complete(),
        "still looking for the decompressor's copy"
    );
}

/// Lays out a stack for `chain` (runtime IPs, innermost first) from the
/// kernel's ORC entries, as the CPU would have left it; `switch` gives the
/// stack pointer to continue on when an entry switches stacks.
struct StackBuilder<'a> {
    k: &'a Kernel,
    mem: &'a mut FakePhys,
    kinds: Vec<(OrcReg, OrcType)>,
}

impl StackBuilder<'_> {
    fn build(&mut self, chain: &[u64], mut sp: u64, switches: &[u64]) {
        let mut switches = switches.iter();
        let mut signal = true;
        for pair in chain.windows(2) {
            let (ip, next) = (pair[0], pair[1]);
            let look = if signal { ip } else { ip - 1 } - SLIDE;
            let e = self.k.orc.lookup(look).expect("ORC entry");
            self.kinds.push((e.sp_reg, e.kind));
            let off = i64::from(e.sp_offset);
            let cfa = match e.sp_reg {
                OrcReg::Sp => sp.wrapping_add_signed(off),
                OrcReg::SpIndirect => {
                    let other = *switches.next().expect("a stack to switch to");
                    write_va(self.mem, sp, other);
                    other.wrapping_add_signed(off)
                }
                r => panic!("builder does not handle {r:?} at {look:#x}"),
            };
            sp = match e.kind {
                OrcType::Call => {
                    write_va(self.mem, cfa - 8, next);
                    cfa
                }
                OrcType::Regs => {
                    let interrupted_sp = *switches.next().expect("interrupted sp");
                    write_va(self.mem, cfa + 128, next);
                    write_va(self.mem, cfa + 136, 0x10);
                    write_va(self.mem, cfa + 152, interrupted_sp);
                    interrupted_sp
                }
                t => panic!("builder does not handle {t:?} at {look:#x}"),
            };
            if e.bp_reg == OrcReg::PrevSp {
                write_va(self.mem, cfa.wrapping_add_signed(i64::from(e.bp_offset)), 0);
            }
            signal = e.signal;
        }
        let last = chain[chain.len() - 1];
        let look = if signal { last } else { last - 1 } - SLIDE;
        assert_eq!(
            self.k.orc.lookup(look).map(|e| e.kind),
            Some(OrcType::EndOfStack)
        );
    }
}

fn unwind_with_detected_layout(k: &Kernel, mem: &FakePhys, r: &UnwindRegs) -> (Vec<u64>, StackEnd) {
    let mut d = LayoutDetector::new(
        k.image.clone(),
        BootImage::BzImage {
            load_base: DECOMP_LOAD,
        },
    );
    assert!(d.observe(mem, r), "layout from the sample itself");
    let mut u = Unwinder::new(Method::Orc(k.orc.clone()));
    u.set_layout(d.layout());
    let mut frames = Vec::new();
    let end = u.unwind(mem, r, &mut frames);
    (frames, end)
}

#[test]
fn orc_unwinds_the_boot_cpu_chain_to_its_root() {
    let k = tiny_orc();
    let (mut mem, cr3) = k.guest();
    let chain: Vec<u64> = [
        k.sym("setup_arch") + 0x1c,
        k.call_site("start_kernel", "setup_arch"),
        k.call_site("x86_64_start_reservations", "start_kernel"),
        k.call_site("x86_64_start_kernel", "x86_64_start_reservations"),
        k.indirect_call_site("common_startup_64", "initial_code"),
    ]
    .iter()
    .map(|a| a + SLIDE)
    .collect();
    let sp0 = STACK_VA + 0x3000;
    let mut b = StackBuilder {
        k: &k,
        mem: &mut mem,
        kinds: vec![],
    };
    b.build(&chain, sp0, &[]);
    assert!(
        b.kinds
            .iter()
            .all(|&(r, t)| r == OrcReg::Sp && t == OrcType::Call),
        "{:?}",
        b.kinds
    );
    let (frames, end) = unwind_with_detected_layout(&k, &mem, &regs(cr3, chain[0], sp0));
    assert_eq!(end, StackEnd::Complete);
    assert_eq!(frames, chain);
    // The same stack with a return address smashed: truncated, frames kept.
    let smashed = STACK_VA + 0x3000;
    let mut unw = Unwinder::new(Method::Orc(k.orc.clone()));
    let mut d = LayoutDetector::new(
        k.image.clone(),
        BootImage::BzImage {
            load_base: DECOMP_LOAD,
        },
    );
    d.observe(&mem, &regs(cr3, chain[0], sp0));
    unw.set_layout(d.layout());
    let e0 = k.orc.lookup(chain[0] - SLIDE).expect("entry");
    write_va(
        &mut mem,
        smashed + e0.sp_offset as u64 - 8,
        0x4141_4141_4141_4141,
    );
    let mut frames = Vec::new();
    assert_eq!(
        unw.unwind(&mem, &regs(cr3, chain[0], sp0), &mut frames),
        StackEnd::Truncated(Truncation::BadFrame)
    );
    assert_eq!(frames, vec![chain[0]]);
}

#[test]
fn orc_unwinds_an_interrupt_on_the_irq_stack_back_to_the_idle_task() {
    let k = tiny_orc();
    let (mut mem, cr3) = k.guest();
    // __common_interrupt runs on the IRQ stack, called from common_interrupt's
    // call_on_irqstack() site; common_interrupt was called by the entry stub
    // asm_common_interrupt (pt_regs below it), which interrupted do_idle.
    // Its second call to __common_interrupt is the one on the IRQ stack.
    let irq_site = k.call_sites("common_interrupt", "__common_interrupt")[1];
    let chain: Vec<u64> = [
        k.sym("__common_interrupt") + 0x10,
        irq_site,
        k.call_site("asm_common_interrupt", "common_interrupt"),
        k.call_site("do_idle", "default_idle_call"),
        k.call_site("cpu_startup_entry", "do_idle"),
        k.call_site("rest_init", "cpu_startup_entry"),
        k.call_site("start_kernel", "rest_init"),
        k.call_site("x86_64_start_reservations", "start_kernel"),
        k.call_site("x86_64_start_kernel", "x86_64_start_reservations"),
        k.indirect_call_site("common_startup_64", "initial_code"),
    ]
    .iter()
    .map(|a| a + SLIDE)
    .collect();
    let sp0 = IRQ_VA + 0x3f00;
    let task_sp = STACK_VA + 0x2000;
    let interrupted_sp = STACK_VA + 0x2400;
    let mut b = StackBuilder {
        k: &k,
        mem: &mut mem,
        kinds: vec![],
    };
    b.build(&chain, sp0, &[task_sp, interrupted_sp]);
    assert_eq!(
        b.kinds[1],
        (OrcReg::SpIndirect, OrcType::Call),
        "IRQ-stack switch entry"
    );
    assert_eq!(
        b.kinds[2],
        (OrcReg::Sp, OrcType::Regs),
        "entry stub after the call: pt_regs"
    );
    let (frames, end) = unwind_with_detected_layout(&k, &mem, &regs(cr3, chain[0], sp0));
    assert_eq!(end, StackEnd::Complete, "{frames:x?}");
    assert_eq!(frames, chain);
}

#[test]
fn real_orc_table_of_tiny_orc() {
    let k = tiny_orc();
    let from_vmlinux = std::fs::read(k.dir.join("vmlinux")).expect("vmlinux");
    let t = OrcTable::from_elf(&from_vmlinux).expect("vmlinux ORC");
    assert_eq!(
        t.len(),
        k.orc.len(),
        "vmlinux and bzImage payload carry the same table"
    );
    let e = k.orc.lookup(k.sym("start_kernel")).expect("entry");
    // At a function's first instruction the CFA is rsp + 8 (just the return address).
    assert_eq!(
        (e.kind, e.sp_reg, e.sp_offset),
        (OrcType::Call, OrcReg::Sp, 8)
    );
    let e = k.orc.lookup(k.sym("ret_from_fork_asm")).expect("entry");
    assert_eq!(e.kind, OrcType::EndOfStack);
}

/// Copies a fake guest into real `vm-memory` guest memory (the VMM's backend).
fn to_mmap(mem: &FakePhys, size: usize) -> vm_memory::GuestMemoryMmap {
    use vm_memory::{Bytes, GuestAddress};
    let gm =
        vm_memory::GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), size)]).expect("mmap");
    for (base, bytes) in mem.regions() {
        gm.write_slice(bytes, GuestAddress(base))
            .expect("region fits");
    }
    gm
}

/// Nanoseconds per call of `f`, best of 5 rounds of `n` calls.
fn time_ns(n: u32, mut f: impl FnMut()) -> f64 {
    (0..5)
        .map(|_| {
            let t = std::time::Instant::now();
            for _ in 0..n {
                f();
            }
            t.elapsed().as_nanos() as f64 / f64::from(n)
        })
        .fold(f64::INFINITY, f64::min)
}

/// Benchmark, not a timed test: `cargo test --release --test unwind_real_kernel -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_unwind_cost() {
    let k = tiny_orc();
    let (mut mem, cr3) = k.guest();
    // A 20-frame frame-pointer chain on the task stack (FP unwinder, layout known).
    let text = k.sym("_text") + SLIDE;
    let bottom = STACK_VA + 0x3000;
    for i in 0..19u64 {
        let bp = bottom + i * 0x30;
        let next = if i == 18 { 0 } else { bp + 0x30 };
        write_va(&mut mem, bp, next);
        write_va(&mut mem, bp + 8, text + 0x1000 + i * 0x40);
    }
    let fp_regs = UnwindRegs {
        rbp: bottom,
        ..regs(cr3, text + 0x500, bottom - 0x10)
    };
    let mut d = LayoutDetector::new(
        k.image.clone(),
        BootImage::BzImage {
            load_base: DECOMP_LOAD,
        },
    );
    d.observe(
        &mem,
        &regs(cr3, k.sym("start_kernel") + 0x30 + SLIDE, bottom),
    );
    let mut fp = Unwinder::new(Method::FramePointer);
    fp.set_layout(d.layout());
    let mut frames = Vec::with_capacity(128);
    assert_eq!(fp.unwind(&mem, &fp_regs, &mut frames), StackEnd::Complete);
    assert_eq!(frames.len(), 20);

    // The real IRQ chain through ORC (10 frames, two stack switches).
    let irq_site = k.call_sites("common_interrupt", "__common_interrupt")[1];
    let chain: Vec<u64> = [
        k.sym("__common_interrupt") + 0x10,
        irq_site,
        k.call_site("asm_common_interrupt", "common_interrupt"),
        k.call_site("do_idle", "default_idle_call"),
        k.call_site("cpu_startup_entry", "do_idle"),
        k.call_site("rest_init", "cpu_startup_entry"),
        k.call_site("start_kernel", "rest_init"),
        k.call_site("x86_64_start_reservations", "start_kernel"),
        k.call_site("x86_64_start_kernel", "x86_64_start_reservations"),
        k.indirect_call_site("common_startup_64", "initial_code"),
    ]
    .iter()
    .map(|a| a + SLIDE)
    .collect();
    let sp0 = IRQ_VA + 0x3f00;
    let mut b = StackBuilder {
        k: &k,
        mem: &mut mem,
        kinds: vec![],
    };
    b.build(&chain, sp0, &[STACK_VA + 0x2000, STACK_VA + 0x2400]);
    let orc_regs = regs(cr3, chain[0], sp0);
    let mut orc = Unwinder::new(Method::Orc(k.orc.clone()));
    orc.set_layout(d.layout());
    assert_eq!(orc.unwind(&mem, &orc_regs, &mut frames), StackEnd::Complete);
    assert_eq!(frames.len(), 10);

    let gm = to_mmap(&mem, 128 << 20);
    let n = 200_000;
    let report = |what: &str, ns: f64, nframes: usize| {
        println!(
            "{what:<44} {ns:>8.0} ns/unwind  {:>6.1} ns/frame",
            ns / nframes as f64
        )
    };
    report(
        "FP, 20 frames, FakePhys",
        time_ns(n, || {
            fp.unwind(&mem, &fp_regs, &mut frames);
        }),
        20,
    );
    report(
        "FP, 20 frames, GuestMemoryMmap",
        time_ns(n, || {
            fp.unwind(&gm, &fp_regs, &mut frames);
        }),
        20,
    );
    report(
        "ORC, 10 frames (IRQ chain), GuestMemoryMmap",
        time_ns(n, || {
            orc.unwind(&gm, &orc_regs, &mut frames);
        }),
        10,
    );
    assert_eq!(frames, chain);
    let complete = d.is_complete();
    report(
        "LayoutDetector::observe once complete",
        time_ns(n, || {
            d.observe(&gm, &orc_regs);
        }),
        1,
    );
    assert!(complete);
    let first = regs(cr3, k.sym("start_kernel") + 0x30 + SLIDE, sp0);
    report(
        "LayoutDetector: new + first observe (slide, phys)",
        time_ns(2_000, || {
            let mut fresh = LayoutDetector::new(
                k.image.clone(),
                BootImage::BzImage {
                    load_base: DECOMP_LOAD,
                },
            );
            assert!(fresh.observe(&gm, &first));
        }),
        1,
    );
}
