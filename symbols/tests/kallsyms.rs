//! kallsyms recovered from a bzImage alone equals the text symbols of the
//! kernel's System.map, for both test kernels (two address encodings).

mod common;

use std::collections::BTreeSet;

use boottrace_symbols::image::KernelImage;
use boottrace_symbols::kallsyms::{self, AddressEncoding, TableOrder};

fn check(name: &str, encoding: AddressEncoding) {
    let dir = common::kernel_dir(name);
    let image = KernelImage::open(&dir.join("bzImage")).expect("bzImage opens");
    let (table, info) =
        kallsyms::recover_with_info(&image.kallsyms_regions()).expect("kallsyms recovered");
    eprintln!("{name}: {info:?}");
    assert_eq!(
        info.order,
        TableOrder::Modern,
        "6.12 uses the 6.4+ table order"
    );
    assert_eq!(info.encoding, encoding);
    assert_eq!(info.num_syms, table.len());
    // The image's own cached copy is the same table.
    let cached = image.kallsyms_ref().expect("cached kallsyms");
    assert_eq!(cached.symbols(), table.symbols());

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

/// Every table order, both address encodings and both marker widths, with
/// names needing two-byte lengths and symbol counts around marker
/// boundaries: what the encoder wrote is what comes back.
#[test]
fn synthetic_tables_of_every_layout_round_trip() {
    use common::encode::{encode, sample_symbols, Order, Shape};
    let base = 0xffff_ffff_8200_0000;
    for order in [Order::Modern, Order::Legacy, Order::LegacyWithSeqs] {
        for absolute_percpu in [false, true] {
            for marker_width in [4, 8] {
                for count in [1, 5, 255, 256, 257, 3000] {
                    if absolute_percpu && count < 5 {
                        continue; // needs a relative symbol after the 4 per-cpu ones
                    }
                    let shape = Shape {
                        order,
                        absolute_percpu,
                        marker_width,
                    };
                    let symbols = sample_symbols(count, absolute_percpu);
                    let blob = encode(&symbols, shape);
                    let (table, info) = kallsyms::recover_from_bytes(&blob, base)
                        .unwrap_or_else(|e| panic!("{shape:?}, {count} symbols: {e}"));
                    let got: Vec<(u64, char, String)> = table
                        .symbols()
                        .iter()
                        .map(|s| (s.addr, s.kind, s.name.clone()))
                        .collect();
                    assert_eq!(got, symbols, "{shape:?}, {count} symbols");
                    let want_order = match order {
                        Order::Modern => TableOrder::Modern,
                        Order::Legacy => TableOrder::Legacy,
                        Order::LegacyWithSeqs => TableOrder::LegacyWithSeqs,
                    };
                    assert_eq!(info.order, want_order, "{shape:?}");
                    let want_encoding = if absolute_percpu {
                        AddressEncoding::AbsolutePercpu
                    } else {
                        AddressEncoding::Relative
                    };
                    assert_eq!(info.encoding, want_encoding, "{shape:?}");
                }
            }
        }
    }
}

/// A table whose addresses are not sorted is not kallsyms.
#[test]
fn unsorted_addresses_are_refused() {
    use common::encode::{encode, sample_symbols, Order, Shape};
    let mut symbols = sample_symbols(600, false);
    symbols.swap(300, 301);
    let shape = Shape {
        order: Order::Modern,
        absolute_percpu: false,
        marker_width: 4,
    };
    let err = kallsyms::recover_from_bytes(&encode(&symbols, shape), 0xffff_ffff_8200_0000)
        .expect_err("unsorted");
    assert!(
        matches!(err, kallsyms::KallsymsError::NoAddresses(_, 600)),
        "{err}"
    );
}
