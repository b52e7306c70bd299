//! Boot-time CPU state: GDT, identity page tables, registers, FPU, LAPIC and
//! CPUID, for the 64-bit entry and for PVH. After Firecracker's
//! `arch/x86_64/{regs,gdt,interrupts}.rs`.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{
    BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, IDENTITY_MAP_GIB, PDPT_START, PD_START,
    PML4_START, PVH_INFO_START, ZERO_PAGE_START,
};
use super::loader::EntryMode;

/// Errors configuring a vCPU.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    /// A KVM ioctl failed.
    #[error("{what} failed: {source}")]
    Kvm {
        /// Which ioctl.
        what: &'static str,
        /// errno.
        source: kvm_ioctls::Error,
    },
    /// Writing GDT or page tables to guest memory failed.
    #[error("cannot write {0} to guest memory")]
    GuestWrite(&'static str),
}

fn kvm(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> CpuError {
    move |source| CpuError::Kvm { what, source }
}

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_ET: u64 = 1 << 4;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// A GDT entry from flags, base and limit (the kernel's GDT_ENTRY macro).
pub fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((u64::from(base) & 0xff00_0000) << (56 - 24))
        | ((u64::from(flags) & 0x0000_f0ff) << 40)
        | ((u64::from(limit) & 0x000f_0000) << (48 - 16))
        | ((u64::from(base) & 0x00ff_ffff) << 16)
        | (u64::from(limit) & 0x0000_ffff)
}

/// The `kvm_segment` a GDT entry at `index` describes.
pub fn segment_from_gdt(entry: u64, index: u8) -> kvm_segment {
    let g = ((entry >> 55) & 1) as u8;
    let raw_limit = (((entry >> 32) & 0x000f_0000) | (entry & 0xffff)) as u32;
    let present = ((entry >> 47) & 1) as u8;
    kvm_segment {
        base: ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        },
        selector: u16::from(index) * 8,
        type_: ((entry >> 40) & 0xf) as u8,
        present,
        dpl: ((entry >> 45) & 0x3) as u8,
        db: ((entry >> 54) & 1) as u8,
        s: ((entry >> 44) & 1) as u8,
        l: ((entry >> 53) & 1) as u8,
        g,
        avl: ((entry >> 52) & 1) as u8,
        unusable: u8::from(present == 0),
        padding: 0,
    }
}

/// The boot GDT for an entry mode: null, code, data, TSS.
pub fn boot_gdt(mode: EntryMode) -> [u64; 4] {
    let code = match mode {
        EntryMode::Long64 => 0xa09b,
        EntryMode::Pvh32 => 0xc09b,
    };
    [
        gdt_entry(0, 0, 0),
        gdt_entry(code, 0, 0xfffff),
        gdt_entry(0xc093, 0, 0xfffff),
        gdt_entry(0x808b, 0, 0xfffff),
    ]
}

/// Writes the boot GDT, an empty IDT and (for the 64-bit entry) identity page
/// tables mapping the first [`IDENTITY_MAP_GIB`] GiB with 2 MiB pages.
pub fn write_boot_tables(mem: &GuestMemoryMmap, mode: EntryMode) -> Result<(), CpuError> {
    for (i, e) in boot_gdt(mode).iter().enumerate() {
        mem.write_obj(*e, GuestAddress(BOOT_GDT_START + 8 * i as u64))
            .map_err(|_| CpuError::GuestWrite("GDT"))?;
    }
    mem.write_obj(0u64, GuestAddress(BOOT_IDT_START))
        .map_err(|_| CpuError::GuestWrite("IDT"))?;
    if mode == EntryMode::Pvh32 {
        return Ok(());
    }
    mem.write_obj(PDPT_START | 0x03, GuestAddress(PML4_START))
        .map_err(|_| CpuError::GuestWrite("PML4"))?;
    for gib in 0..IDENTITY_MAP_GIB {
        let pd = PD_START + gib * 0x1000;
        mem.write_obj(pd | 0x03, GuestAddress(PDPT_START + gib * 8))
            .map_err(|_| CpuError::GuestWrite("PDPT"))?;
        let mut entries = [0u8; 4096];
        for (j, chunk) in entries.chunks_exact_mut(8).enumerate() {
            let phys = ((gib * 512 + j as u64) << 21) | 0x83; // present, writable, 2 MiB
            chunk.copy_from_slice(&phys.to_le_bytes());
        }
        mem.write_slice(&entries, GuestAddress(pd))
            .map_err(|_| CpuError::GuestWrite("page directory"))?;
    }
    Ok(())
}

/// Segment registers, control registers and descriptor tables for the entry.
pub fn setup_sregs(vcpu: &VcpuFd, mode: EntryMode) -> Result<(), CpuError> {
    let mut sregs: kvm_sregs = vcpu.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
    let gdt = boot_gdt(mode);
    let code = segment_from_gdt(gdt[1], 1);
    let data = segment_from_gdt(gdt[2], 2);
    let tss = segment_from_gdt(gdt[3], 3);
    sregs.gdt.base = BOOT_GDT_START;
    sregs.gdt.limit = (std::mem::size_of_val(&gdt) - 1) as u16;
    sregs.idt.base = BOOT_IDT_START;
    sregs.idt.limit = 7;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;
    match mode {
        EntryMode::Long64 => {
            sregs.cr0 |= X86_CR0_PE | X86_CR0_PG;
            sregs.cr3 = PML4_START;
            sregs.cr4 |= X86_CR4_PAE;
            sregs.efer |= EFER_LME | EFER_LMA;
        }
        EntryMode::Pvh32 => {
            sregs.cr0 = X86_CR0_PE | X86_CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
        }
    }
    vcpu.set_sregs(&sregs).map_err(kvm("KVM_SET_SREGS"))
}

/// General registers at the entry point.
pub fn setup_regs(vcpu: &VcpuFd, mode: EntryMode, entry: u64) -> Result<(), CpuError> {
    let mut regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        ..Default::default()
    };
    match mode {
        EntryMode::Long64 => {
            regs.rsp = BOOT_STACK_POINTER;
            regs.rbp = BOOT_STACK_POINTER;
            regs.rsi = ZERO_PAGE_START;
        }
        EntryMode::Pvh32 => regs.rbx = PVH_INFO_START,
    }
    vcpu.set_regs(&regs).map_err(kvm("KVM_SET_REGS"))
}

/// x87 and SSE control words at their reset values.
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), CpuError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm("KVM_SET_FPU"))
}

const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// LAPIC LINT0 = ExtINT (the PIC), LINT1 = NMI, as firmware leaves them.
pub fn setup_lapic(vcpu: &VcpuFd) -> Result<(), CpuError> {
    let mut lapic = vcpu.get_lapic().map_err(kvm("KVM_GET_LAPIC"))?;
    for (reg, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
        let mut b = [0u8; 4];
        for (i, v) in b.iter_mut().enumerate() {
            *v = lapic.regs[reg + i] as u8;
        }
        let val = (u32::from_le_bytes(b) & !0x700) | (mode << 8);
        for (i, v) in val.to_le_bytes().iter().enumerate() {
            lapic.regs[reg + i] = *v as _;
        }
    }
    vcpu.set_lapic(&lapic).map_err(kvm("KVM_SET_LAPIC"))
}

/// The host-supported CPUID, read once per VM.
pub fn supported_cpuid(kvm_sys: &Kvm) -> Result<CpuId, CpuError> {
    kvm_sys
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm("KVM_GET_SUPPORTED_CPUID"))
}

/// CPUID for one vCPU: the supported set with this vCPU's APIC ID and the
/// logical-processor count filled in.
pub fn setup_cpuid(vcpu: &VcpuFd, base: &CpuId, id: u8, cpus: u8) -> Result<(), CpuError> {
    let mut cpuid = base.clone();
    for e in cpuid.as_mut_slice() {
        match e.function {
            1 => {
                e.ebx = (e.ebx & 0x0000_ffff) | (u32::from(id) << 24) | (u32::from(cpus) << 16);
                e.ecx |= 1 << 31; // hypervisor present
                if cpus > 1 {
                    e.edx |= 1 << 28; // HTT: ebx[23:16] is valid
                }
            }
            0xb | 0x1f => e.edx = u32::from(id),
            _ => {}
        }
    }
    vcpu.set_cpuid2(&cpuid).map_err(kvm("KVM_SET_CPUID2"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_round_trips_through_segments() {
        let gdt = boot_gdt(EntryMode::Long64);
        let cs = segment_from_gdt(gdt[1], 1);
        assert_eq!(
            (cs.l, cs.db, cs.present, cs.type_, cs.selector),
            (1, 0, 1, 0xb, 8)
        );
        assert_eq!(cs.limit, 0xffff_ffff);
        let ds = segment_from_gdt(gdt[2], 2);
        assert_eq!((ds.db, ds.s, ds.type_), (1, 1, 3));
        let cs32 = segment_from_gdt(boot_gdt(EntryMode::Pvh32)[1], 1);
        assert_eq!((cs32.l, cs32.db), (0, 1));
        assert_eq!(segment_from_gdt(gdt[0], 0).unusable, 1);
    }
}
