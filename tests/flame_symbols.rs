//! Choosing symbol sources for a trace of a real kernel (`tiny-fp`, built by
//! `kernel/build.sh`): files next to the recorded image are found and
//! checked; a vmlinux of another kernel is refused unless `--force`; with
//! nothing but the bzImage, kallsyms recovered from it name the samples.

mod common;

use std::path::{Path, PathBuf};

use boottrace::profile::symbols::{SymbolConfig as SymbolArgs, SymbolError};
use boottrace::profile::{self, BuildError};
use boottrace::trace::{
    KernelInfo, Layout, Record, RunEnd, RunStart, Sample, StackEnd, TraceMeta, TraceWriter,
};
use boottrace_symbols::image::KernelImage;
use boottrace_symbols::layout::RunLayout;
use boottrace_symbols::symbolizer::SourceKind;

fn sym_addr(map: &str, name: &str) -> u64 {
    map.lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            let (a, _, n) = (w.next()?, w.next()?, w.next()?);
            (n == name).then(|| u64::from_str_radix(a, 16).ok())?
        })
        .unwrap_or_else(|| panic!("{name} not in System.map"))
}

/// A one-run trace of `kernel` with samples in start_kernel ← x86_64_start_reservations.
fn write_trace(path: &Path, kernel: &Path, map_text: &str) {
    let image = KernelImage::open(kernel).expect("open kernel");
    let meta = TraceMeta {
        kernel: KernelInfo::from(image.identity()),
        unwinder: "frame-pointer".into(),
        ..TraceMeta::default()
    };
    let text = sym_addr(map_text, "_text");
    let end = sym_addr(map_text, "_end");
    let start_kernel = sym_addr(map_text, "start_kernel");
    let caller = sym_addr(map_text, "x86_64_start_reservations");
    let mut w = TraceWriter::create(path, &meta).expect("create");
    w.append(&Record::RunStart(RunStart::default()))
        .expect("append");
    w.append(&Record::Layout(Layout {
        run: 0,
        layout: RunLayout {
            kernel_virt_slide: 0,
            virt_slide_method: "test".into(),
            kernel_phys_start: Some(0x100_0000),
            kernel_link_start: text,
            kernel_size: end - text,
            decompressor_bases: Vec::new(),
            decompressor_size: 0,
        }
        .into(),
    }))
    .expect("append");
    for i in 0..10u64 {
        w.append(&Record::Sample(Sample {
            t_ns: i * 1000,
            rip: start_kernel + 0x10,
            stack: vec![start_kernel + 0x10, caller + 0x10],
            stack_end: StackEnd::Root.as_u8(),
            ..Sample::default()
        }))
        .expect("append");
    }
    w.append(&Record::RunEnd(RunEnd {
        t_ns: 10_000,
        reason: "test".into(),
        ..RunEnd::default()
    }))
    .expect("append");
    w.finish().expect("finish");
}

fn names(trace: &Path, args: &SymbolArgs) -> Result<(SourceKind, Vec<String>), BuildError> {
    let p = profile::open(trace, args)?;
    let s = p.runs[0].samples.first().expect("a sample");
    let frames = p
        .stack_frames(s.stack)
        .iter()
        .map(|f| p.name_text(f.name).into_owned())
        .collect();
    Ok((p.source, frames))
}

#[test]
fn sources_are_found_checked_and_refused() {
    let fp = common::kernel_dir("tiny-fp");
    let orc = common::kernel_dir("tiny-orc");
    let map_text = std::fs::read_to_string(fp.join("System.map")).expect("System.map");
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("t.data");

    // 1. The recorded bzImage in its build directory: vmlinux (DWARF) found next to it.
    write_trace(&trace, &fp.join("bzImage"), &map_text);
    let (source, frames) = names(&trace, &SymbolArgs::default()).expect("auto");
    assert_eq!(source, SourceKind::VmlinuxDwarf);
    assert_eq!(
        frames.first().map(String::as_str),
        Some("x86_64_start_reservations")
    );
    assert!(frames.iter().any(|f| f == "start_kernel"), "{frames:?}");

    // 2. Another kernel's vmlinux: refused with a clear message, accepted with --force.
    let wrong = SymbolArgs {
        vmlinux: Some(orc.join("vmlinux")),
        ..SymbolArgs::default()
    };
    let err = names(&trace, &wrong).expect_err("mismatched vmlinux");
    let msg = err.to_string();
    assert!(
        matches!(err, BuildError::Symbols(SymbolError::Mismatch(_))),
        "{msg}"
    );
    assert!(
        msg.contains("--force") && msg.contains("not the recorded kernel"),
        "{msg}"
    );
    let forced = SymbolArgs {
        force: true,
        ..wrong
    };
    let sym = profile::open(&trace, &forced).expect("--force");
    assert!(
        sym.notes.iter().any(|n| n.contains("--force")),
        "{:?}",
        sym.notes
    );

    // 3. Only the bzImage, alone in a directory: kallsyms from the image.
    let lone: PathBuf = dir.path().join("bzImage");
    std::fs::copy(fp.join("bzImage"), &lone).expect("copy");
    write_trace(&trace, &lone, &map_text);
    let (source, frames) = names(&trace, &SymbolArgs::default()).expect("kallsyms");
    assert_eq!(source, SourceKind::Kallsyms);
    assert_eq!(frames, ["x86_64_start_reservations", "start_kernel"]);

    // 4. The image was replaced since recording: files beside it are not trusted.
    std::fs::copy(orc.join("bzImage"), &lone).expect("copy");
    let sym = profile::open(&trace, &SymbolArgs::default()).expect("load");
    assert_eq!(sym.source, SourceKind::None);
    assert!(
        sym.notes.iter().any(|n| n.contains("not used")),
        "{:?}",
        sym.notes
    );
}
