//! Every guest-physical address boottrace's microVM uses, in one place.
//!
//! The low-memory layout follows Firecracker's x86_64 `layout.rs` (which is
//! known to boot Linux 6.x) so that anyone who knows one knows the other.

/// Start of the zero page (`struct boot_params`) for the 64-bit boot protocol.
pub const ZERO_PAGE_START: u64 = 0x7000;
/// PVH `hvm_start_info` (used instead of the zero page for PVH entry).
pub const PVH_INFO_START: u64 = 0x6000;
/// PVH module list (one entry: the initrd), right after the start info.
pub const PVH_MODLIST_START: u64 = 0x6040;
/// PVH memory map entries, after the module list.
pub const PVH_MEMMAP_START: u64 = 0x6080;
/// Maximum number of PVH memory map entries that fit before the zero page.
pub const PVH_MEMMAP_MAX_ENTRIES: usize = ((ZERO_PAGE_START - PVH_MEMMAP_START) / 24) as usize;
/// Initial stack pointer (and frame pointer) of the boot vCPU.
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// Boot GDT: null, 64-bit code, data, TSS.
pub const BOOT_GDT_START: u64 = 0x500;
/// Boot IDT (empty: the kernel installs its own before enabling interrupts).
pub const BOOT_IDT_START: u64 = 0x520;
/// Identity page tables for the 64-bit entry: PML4, one PDPT, and
/// `IDENTITY_MAP_GIB` page directories of 2 MiB pages.
pub const PML4_START: u64 = 0x9000;
/// Page-directory-pointer table of the identity map.
pub const PDPT_START: u64 = 0xa000;
/// First page directory of the identity map (one per GiB, contiguous).
pub const PD_START: u64 = 0xb000;
/// GiB of memory identity-mapped for the 64-bit entry (covers kernel, zero page,
/// command line and initrd wherever they land below 4 GiB).
pub const IDENTITY_MAP_GIB: u64 = 4;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// End of the low RAM region (start of the EBDA, where the MP table lives).
pub const EBDA_START: u64 = 0x9fc00;
/// MP floating pointer + configuration table.
pub const MPTABLE_START: u64 = EBDA_START;
/// Start of high memory: where bzImage protected-mode code and ELF kernels load.
pub const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO hole (no RAM here, up to 4 GiB).
pub const MMIO_GAP_START: u64 = 0xd000_0000;
/// End of the 32-bit MMIO hole.
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;
/// Firecracker-compatible boot-timer device: the guest writes
/// [`BOOT_MARKER_VALUE`] here to say "booted".
pub const BOOT_MARKER_ADDR: u64 = MMIO_GAP_START;
/// The value that marks boot completion at [`BOOT_MARKER_ADDR`].
pub const BOOT_MARKER_VALUE: u8 = 123;
/// First virtio-mmio device window: right after the boot marker's page, as
/// Firecracker places its MMIO devices after the boot timer.
pub const VIRTIO_MMIO_START: u64 = MMIO_GAP_START + VIRTIO_MMIO_SIZE;
/// Size of one virtio-mmio device window (`virtio_mmio.device=4K@…`).
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// IRQ (IO-APIC pin, GSI) of the first virtio-mmio device; the next devices
/// take the following lines (Firecracker: 5 up to 23).
pub const VIRTIO_IRQ_BASE: u32 = 5;
/// Last IRQ line a virtio-mmio device may use (the IO-APIC has 24 pins).
pub const VIRTIO_IRQ_MAX: u32 = 23;
/// How many virtio-mmio devices the layout has room for (one IRQ line each).
pub const VIRTIO_MAX_DEVICES: usize = (VIRTIO_IRQ_MAX - VIRTIO_IRQ_BASE + 1) as usize;

/// Guest-physical window and IRQ of virtio-mmio device `index` (0-based),
/// or `None` past [`VIRTIO_MAX_DEVICES`].
pub fn virtio_mmio_slot(index: usize) -> Option<(u64, u32)> {
    if index >= VIRTIO_MAX_DEVICES {
        return None;
    }
    let addr = VIRTIO_MMIO_START + VIRTIO_MMIO_SIZE * index as u64;
    Some((addr, VIRTIO_IRQ_BASE + index as u32))
}

/// KVM's TSS region (three pages), required on Intel before running a vCPU.
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;
/// Local APIC MMIO base, as announced in the MP table.
pub const APIC_DEFAULT_PHYS_BASE: u32 = 0xfee0_0000;
/// IO-APIC MMIO base.
pub const IOAPIC_DEFAULT_PHYS_BASE: u32 = 0xfec0_0000;
/// Highest address an initrd may end at when the kernel does not say (boot protocol default).
pub const INITRD_ADDR_MAX_DEFAULT: u64 = 0x37ff_ffff;
/// Smallest guest memory we accept: below this no kernel boots anyway.
pub const MIN_MEM_SIZE: u64 = 16 << 20;

/// Legacy ports.
pub mod ports {
    /// COM1 (16550 UART) base port.
    pub const COM1: u16 = 0x3f8;
    /// COM1's IRQ line.
    pub const COM1_IRQ: u32 = 4;
    /// i8042 data port.
    pub const I8042_DATA: u16 = 0x60;
    /// i8042 command/status port; command 0xFE resets the machine.
    pub const I8042_COMMAND: u16 = 0x64;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtio_slots_stay_in_the_mmio_gap_and_off_the_legacy_irqs() {
        let (first, irq) = virtio_mmio_slot(0).expect("slot 0");
        assert!(first > BOOT_MARKER_ADDR);
        assert_eq!(irq, VIRTIO_IRQ_BASE);
        assert_ne!(irq, ports::COM1_IRQ);
        let (last, last_irq) = virtio_mmio_slot(VIRTIO_MAX_DEVICES - 1).expect("last slot");
        assert!(last + VIRTIO_MMIO_SIZE <= u64::from(IOAPIC_DEFAULT_PHYS_BASE));
        assert!(last + VIRTIO_MMIO_SIZE <= KVM_TSS_ADDRESS);
        assert_eq!(last_irq, VIRTIO_IRQ_MAX);
        assert!(virtio_mmio_slot(VIRTIO_MAX_DEVICES).is_none());
    }
}
