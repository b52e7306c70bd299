//! What the kernel reads about its machine at entry: the zero page
//! (`struct boot_params`) for the 64-bit entry, or `hvm_start_info` for PVH.

use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{
    PVH_INFO_START, PVH_MEMMAP_MAX_ENTRIES, PVH_MEMMAP_START, PVH_MODLIST_START, ZERO_PAGE_START,
};
use super::loader::LoadedKernel;
use super::memory::E820Entry;

/// Errors writing boot information.
#[derive(Debug, thiserror::Error)]
pub enum BootParamsError {
    /// More e820 entries than the structure holds.
    #[error("too many e820 entries ({0})")]
    TooManyE820(usize),
    /// Guest write failed.
    #[error("cannot write {0} to guest memory")]
    GuestWrite(&'static str),
}

const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x100_0000;
const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;

/// Command line and initrd as placed in guest memory.
#[derive(Debug, Clone, Copy)]
pub struct BootInputs {
    /// Command line address.
    pub cmdline_addr: u64,
    /// Command line length without NUL.
    pub cmdline_len: usize,
    /// (address, size) of the initrd.
    pub initrd: Option<(u64, u64)>,
}

/// Writes the zero page for the 64-bit boot protocol.
pub fn write_zero_page(
    mem: &GuestMemoryMmap,
    kernel: &LoadedKernel,
    inputs: &BootInputs,
    e820: &[E820Entry],
) -> Result<(), BootParamsError> {
    let mut params = boot_params::default();
    if let Some(hdr) = kernel.setup_header {
        params.hdr = hdr;
    }
    params.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    params.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    params.hdr.header = KERNEL_HDR_MAGIC;
    params.hdr.cmd_line_ptr = inputs.cmdline_addr as u32;
    params.hdr.cmdline_size = inputs.cmdline_len as u32 + 1;
    if params.hdr.kernel_alignment == 0 {
        params.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    }
    if let Some((addr, size)) = inputs.initrd {
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
    }
    if e820.len() > params.e820_table.len() {
        return Err(BootParamsError::TooManyE820(e820.len()));
    }
    for (slot, &(addr, size, type_)) in params.e820_table.iter_mut().zip(e820) {
        *slot = boot_e820_entry {
            addr,
            size,
            r#type: type_,
        };
    }
    params.e820_entries = e820.len() as u8;
    mem.write_obj(params, GuestAddress(ZERO_PAGE_START))
        .map_err(|_| BootParamsError::GuestWrite("zero page"))
}

/// Writes `hvm_start_info`, its module list (the initrd) and memory map for PVH.
/// Layouts from xen/include/public/arch-x86/hvm/start_info.h (version 1).
pub fn write_pvh_start_info(
    mem: &GuestMemoryMmap,
    inputs: &BootInputs,
    e820: &[E820Entry],
) -> Result<(), BootParamsError> {
    if e820.len() > PVH_MEMMAP_MAX_ENTRIES {
        return Err(BootParamsError::TooManyE820(e820.len()));
    }
    let mut info = Vec::with_capacity(56);
    info.extend_from_slice(&XEN_HVM_START_MAGIC_VALUE.to_le_bytes());
    info.extend_from_slice(&1u32.to_le_bytes()); // version
    info.extend_from_slice(&0u32.to_le_bytes()); // flags
    info.extend_from_slice(&(inputs.initrd.is_some() as u32).to_le_bytes()); // nr_modules
    info.extend_from_slice(&PVH_MODLIST_START.to_le_bytes());
    info.extend_from_slice(&inputs.cmdline_addr.to_le_bytes());
    info.extend_from_slice(&0u64.to_le_bytes()); // rsdp_paddr: no ACPI
    info.extend_from_slice(&PVH_MEMMAP_START.to_le_bytes());
    info.extend_from_slice(&(e820.len() as u32).to_le_bytes());
    info.extend_from_slice(&0u32.to_le_bytes());
    mem.write_slice(&info, GuestAddress(PVH_INFO_START))
        .map_err(|_| BootParamsError::GuestWrite("hvm_start_info"))?;
    if let Some((addr, size)) = inputs.initrd {
        let mut m = Vec::with_capacity(32);
        for v in [addr, size, 0, 0] {
            m.extend_from_slice(&v.to_le_bytes());
        }
        mem.write_slice(&m, GuestAddress(PVH_MODLIST_START))
            .map_err(|_| BootParamsError::GuestWrite("PVH module list"))?;
    }
    let mut map = Vec::with_capacity(24 * e820.len());
    for &(addr, size, type_) in e820 {
        map.extend_from_slice(&addr.to_le_bytes());
        map.extend_from_slice(&size.to_le_bytes());
        map.extend_from_slice(&type_.to_le_bytes());
        map.extend_from_slice(&0u32.to_le_bytes());
    }
    mem.write_slice(&map, GuestAddress(PVH_MEMMAP_START))
        .map_err(|_| BootParamsError::GuestWrite("PVH memory map"))
}
