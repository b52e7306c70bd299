//! kallsyms recovered from a bzImage alone equals the text symbols of the
//! kernel's System.map, for both test kernels (two address encodings).

mod common;

use std::collections::BTreeSet;

use boottrace_symbols::image::KernelImage;
use boottrace_symbols::kallsyms::{self, AddressEncoding, TableOrder};

fn check(name: &str, encoding: AddressEncoding) {
    let dir = common::kernel_dir(name);
    let image = KernelImage::open(&dir.join("bzImage")).expect("bzImage opens");
    let (table, info) = kallsyms::recover_with_info(&image).expect("kallsyms recovered");
    eprintln!("{name}: {info:?}");
    assert_eq!(
        info.order,
        TableOrder::Modern,
        "6.12 uses the 6.4+ table order"
    );
    assert_eq!(info.encoding, encoding);
    assert_eq!(info.num_syms, table.len());

    let recovered: BTreeSet<(u64, String)> = table
        .symbols()
        .iter()
        .filter(|s| matches!(s.kind, 'T' | 't'))
        .map(|s| (s.addr, s.name.clone()))
        .collect();
    let expected: BTreeSet<(u64, String)> = common::system_map_text(&dir).into_iter().collect();
    let missing: Vec<_> = expected.difference(&recovered).take(20).collect();
    let extra: Vec<_> = recovered.difference(&expected).take(20).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{name}: {} System.map text symbols, {} recovered; missing {missing:x?}, extra {extra:x?}",
        expected.len(),
        recovered.len()
    );
    assert!(
        expected.len() > 5000,
        "{name}: only {} text symbols",
        expected.len()
    );
}

#[test]
fn tiny_fp_kallsyms_equal_system_map_text() {
    check("tiny-fp", AddressEncoding::Relative);
}

#[test]
fn tiny_orc_kallsyms_equal_system_map_text() {
    check("tiny-orc", AddressEncoding::AbsolutePercpu);
}
