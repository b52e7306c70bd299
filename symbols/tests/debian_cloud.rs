//! Debian's stock cloud kernels — real kernels nobody here configured —
//! yield their symbols from the vmlinuz alone, and their ORC tables parse.
//! 6.12 has the 6.4+ kallsyms table order and ORC layout, 6.1 the older ones.
//! Skipped, with a message, only when the package cannot be fetched.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use boottrace_symbols::image::{ImageFormat, KernelImage};
use boottrace_symbols::kallsyms::{self, AddressEncoding, TableOrder};
use boottrace_symbols::orc::{OrcTable, OrcVersion};

/// The vmlinuz of Debian's newest cloud kernel of `series`. A kernel that
/// cannot be fetched fails the test with the reason: it never passes quietly.
fn fetch(series: &str) -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../kernel/fetch-debian-cloud.sh");
    let out = Command::new(&script)
        .arg(series)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "Debian {series} cloud kernel not fetchable:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_else(|| panic!("fetch-debian-cloud.sh {series} printed no path"))
        .trim()
        .to_string();
    PathBuf::from(path)
}

fn check(series: &str, order: TableOrder, orc_version: OrcVersion) {
    let path = fetch(series);
    let image = KernelImage::open(&path).expect("vmlinuz opens");
    assert_eq!(image.format(), ImageFormat::BzImage);
    let version = image.identity().version.clone().expect("banner found");
    assert!(
        version.starts_with(&format!("Linux version {series}.")),
        "{version}"
    );
    assert!(
        image.identity().build_id.is_some(),
        "Debian kernels carry a build-id"
    );

    let t = Instant::now();
    let (table, info) =
        kallsyms::recover_with_info(&image.kallsyms_regions()).expect("kallsyms recovered");
    eprintln!(
        "{}: {} symbols in {:?}, {info:?}",
        path.display(),
        table.len(),
        t.elapsed()
    );
    assert_eq!(info.order, order);
    assert_eq!(
        info.encoding,
        AddressEncoding::AbsolutePercpu,
        "SMP x86_64 distro kernel"
    );
    assert!(table.len() >= 20_000, "only {} symbols", table.len());
    let start_kernel = table.by_name("start_kernel").expect("start_kernel present");
    assert_eq!(start_kernel.kind, 'T');
    // The recovered address holds code: the image's bytes there are in a text segment.
    assert!(image.read_link(start_kernel.addr, 16).is_some());
    assert!(start_kernel.addr >= image.text_start());
    assert!(start_kernel.addr < image.text_start() + image.image_size());

    // Addresses are right when the code there looks like function entries:
    // endbr64 (IBT), or the 5-byte __fentry__ site (a call, or objtool's nop).
    // Not every function has one (notrace, assembly, sealed endbr), hence 80 %.
    // `__pfx_` symbols (6.12's call padding) are 16 bytes of nops instead.
    let text: Vec<_> = table
        .symbols()
        .iter()
        .filter(|s| s.kind == 'T' && !s.name.starts_with("__pfx_"))
        .collect();
    let entries = text
        .iter()
        .filter(|s| {
            image.read_link(s.addr, 5).is_some_and(|b| {
                b.starts_with(&[0xf3, 0x0f, 0x1e, 0xfa])
                    || b.starts_with(&[0x0f, 0x1f, 0x44, 0x00, 0x00])
                    || b[0] == 0xe8
            })
        })
        .count();
    eprintln!(
        "{entries} of {} global text symbols start like a function",
        text.len()
    );
    assert!(
        entries * 10 >= text.len() * 8,
        "{entries} of {}",
        text.len()
    );
    // With KALLSYMS_ALL the tables name themselves.
    if let Some(sym) = table.by_name("kallsyms_token_table") {
        assert_eq!(sym.addr, info.token_table_addr);
    }

    let orc = OrcTable::from_elf(image.elf_bytes()).expect("ORC tables parse");
    assert_eq!(orc.version(), orc_version);
    assert!(orc.len() > 100_000, "only {} ORC entries", orc.len());
    assert!(
        orc.lookup(start_kernel.addr).is_some(),
        "ORC covers start_kernel"
    );
}

#[test]
fn debian_6_12_cloud_kernel_symbols_and_orc() {
    check("6.12", TableOrder::Modern, OrcVersion::V3);
}

#[test]
fn debian_6_1_cloud_kernel_symbols_and_orc() {
    check("6.1", TableOrder::LegacyWithSeqs, OrcVersion::V1);
}
