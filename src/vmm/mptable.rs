//! The Intel MultiProcessor table (MP spec 1.4), written for every boot —
//! also with one CPU: without one, the kernel scans memory for it, which
//! costs seconds under emulation (see docs/ENVIRONMENT.md).
//!
//! Written byte by byte rather than with bindgen structs: the format is five
//! fixed little-endian records and two checksums.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{APIC_DEFAULT_PHYS_BASE, IOAPIC_DEFAULT_PHYS_BASE, MPTABLE_START};

/// Errors writing the MP table.
#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    /// More CPUs than APIC IDs the table can describe alongside the IO-APIC.
    #[error("{0} vCPUs: the MP table supports 1 to 254")]
    TooManyCpus(u8),
    /// Guest write failed.
    #[error("cannot write the MP table to guest memory")]
    GuestWrite,
}

const APIC_VERSION: u8 = 0x14;
const CPU_STEPPING: u32 = 0x600;
const CPU_FEATURE_APIC: u32 = 0x200;
const CPU_FEATURE_FPU: u32 = 0x001;
const IRQ_LINES: u8 = 24;

fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b)))
}

/// Builds the table for `cpus` vCPUs (APIC IDs 0..cpus, IO-APIC ID = cpus).
pub fn build(cpus: u8) -> Result<Vec<u8>, MptableError> {
    if cpus == 0 || cpus > 254 {
        return Err(MptableError::TooManyCpus(cpus));
    }
    let ioapic_id = cpus;
    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for id in 0..cpus {
        entries.push(0u8); // processor
        entries.push(id);
        entries.push(APIC_VERSION);
        entries.push(1 | if id == 0 { 2 } else { 0 }); // enabled, BSP
        entries.extend_from_slice(&CPU_STEPPING.to_le_bytes());
        entries.extend_from_slice(&(CPU_FEATURE_APIC | CPU_FEATURE_FPU).to_le_bytes());
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.extend_from_slice(&[1, 0]); // bus 0
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.extend_from_slice(&[2, ioapic_id, APIC_VERSION, 1]);
    entries.extend_from_slice(&IOAPIC_DEFAULT_PHYS_BASE.to_le_bytes());
    count += 1;
    for irq in 0..IRQ_LINES {
        // I/O interrupt: INT type, conforming polarity/trigger, ISA bus irq -> IO-APIC pin.
        entries.extend_from_slice(&[3, 0, 0, 0, 0, irq, ioapic_id, irq]);
        count += 1;
    }
    // Local interrupts: ExtINT on LINT0, NMI on LINT1.
    entries.extend_from_slice(&[4, 3, 0, 0, 0, 0, 0, 0]);
    entries.extend_from_slice(&[4, 1, 0, 0, 0, 0, 0xff, 1]);
    count += 2;

    let table_addr = MPTABLE_START as u32 + 16;
    let mut header = Vec::with_capacity(44);
    header.extend_from_slice(b"PCMP");
    header.extend_from_slice(&((44 + entries.len()) as u16).to_le_bytes());
    header.push(4); // spec rev 1.4
    header.push(0); // checksum, below
    header.extend_from_slice(b"BOOTTRCE");
    header.extend_from_slice(b"MICROVM     ");
    header.extend_from_slice(&0u32.to_le_bytes()); // oem table
    header.extend_from_slice(&0u16.to_le_bytes());
    header.extend_from_slice(&count.to_le_bytes());
    header.extend_from_slice(&APIC_DEFAULT_PHYS_BASE.to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes());
    let mut table = header;
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut fp = Vec::with_capacity(16);
    fp.extend_from_slice(b"_MP_");
    fp.extend_from_slice(&table_addr.to_le_bytes());
    fp.extend_from_slice(&[1, 4, 0, 0, 0, 0, 0, 0]); // length (16-byte units), rev, checksum, features
    fp[10] = checksum(&fp);
    fp.extend_from_slice(&table);
    Ok(fp)
}

/// Writes the MP table at [`MPTABLE_START`].
pub fn write(mem: &GuestMemoryMmap, cpus: u8) -> Result<(), MptableError> {
    let bytes = build(cpus)?;
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START))
        .map_err(|_| MptableError::GuestWrite)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_and_counts_are_valid() {
        let t = build(2).expect("table");
        assert_eq!(&t[..4], b"_MP_");
        assert_eq!(t[..16].iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let table = &t[16..];
        assert_eq!(&table[..4], b"PCMP");
        let len = u16::from_le_bytes([table[4], table[5]]) as usize;
        assert_eq!(len, table.len());
        assert_eq!(table.iter().fold(0u8, |a, b| a.wrapping_add(*b)), 0);
        let count = u16::from_le_bytes([table[34], table[35]]);
        assert_eq!(count, 2 + 1 + 1 + 24 + 2);
        assert!(build(0).is_err());
        assert!(build(255).is_err());
    }

    #[test]
    fn every_virtio_irq_reaches_the_io_apic() {
        use crate::vmm::layout::{virtio_mmio_slot, VIRTIO_MAX_DEVICES};
        let cpus = 2u8;
        let t = build(cpus).expect("table");
        let entries = &t[16 + 44..];
        // Entries: 20-byte processors, then 8-byte bus, IO-APIC, interrupts.
        let ints = &entries[20 * usize::from(cpus) + 8 + 8..];
        let routed: Vec<(u8, u8)> = ints
            .chunks(8)
            .filter(|e| e[0] == 3)
            .map(|e| (e[5], e[7]))
            .collect();
        for i in 0..VIRTIO_MAX_DEVICES {
            let (_, irq) = virtio_mmio_slot(i).expect("slot");
            let irq = irq as u8;
            assert!(
                routed.contains(&(irq, irq)),
                "IRQ {irq} of virtio device {i} is not routed to IO-APIC pin {irq}"
            );
        }
    }
}
