//! `diff A B` given two kernel images: boottrace records them itself, A B A B
//! interleaved (`--runs 2`), and compares. Each boot stops once the kernel
//! has set up its memory map (`--until serial:Memory: …`), so the four boots
//! cost seconds. Side A is a copy of tiny-fp's bzImage with only its
//! System.map and decompressor ELF beside it (no vmlinux): its traces also
//! show where `flame`/`report` find symbols when nothing is named.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use boottrace::trace::{EndKind, Trace};
use common::{boottrace, kernel_dir, scratch, text};

const UNTIL: &str = "--until 'serial:Memory: [0-9]+K/[0-9]+K available'";

struct Diffed {
    out: Output,
    /// Side A's kernel directory (bzImage, System.map, decompressor.elf).
    a_dir: PathBuf,
    /// Where diff put its recordings.
    rec_dir: PathBuf,
    svg: PathBuf,
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn diffed() -> &'static Diffed {
    static D: OnceLock<Diffed> = OnceLock::new();
    D.get_or_init(|| {
        let fp = kernel_dir("tiny-fp");
        let orc = kernel_dir("tiny-orc");
        let a_dir = scratch().join("image-a");
        std::fs::create_dir_all(&a_dir).expect("mkdir");
        for f in ["bzImage", "System.map", "decompressor.elf"] {
            std::fs::copy(fp.join(f), a_dir.join(f)).expect("copy tiny-fp file");
        }
        let rec_dir = scratch().join("diff-recordings");
        let svg = scratch().join("diff.svg");
        let rec_a = format!(
            "--initrd {} -F 1000 --timeout 900 {UNTIL}",
            s(&fp.join("initramfs.cpio"))
        );
        let rec_b = format!(
            "--initrd {} -F 1000 --timeout 900 {UNTIL}",
            s(&orc.join("initramfs.cpio"))
        );
        let out = boottrace(&[
            "diff",
            s(&a_dir.join("bzImage")),
            s(&orc.join("bzImage")),
            "--runs",
            "2",
            "--record-a",
            &rec_a,
            "--record-b",
            &rec_b,
            "--record-dir",
            s(&rec_dir),
            "-o",
            s(&svg),
        ]);
        Diffed {
            out,
            a_dir,
            rec_dir,
            svg,
        }
    })
}

/// Two images, `--runs 2`: four boots recorded A B A B (each starts after the
/// previous one ended), every one reaching its goal; a differential
/// flamegraph and the slower/faster tables with a t-test over the runs.
#[test]
fn diff_of_two_images_records_them_interleaved() {
    let d = diffed();
    let all = text(&d.out);
    assert!(d.out.status.success(), "diff failed:\n{all}");
    let stderr = String::from_utf8_lossy(&d.out.stderr);
    assert!(
        !stderr.contains("warning"),
        "a boot missed its goal:\n{stderr}"
    );
    // Recorded in order A B A B: each run started after the previous ended.
    let order = ["a-000", "b-000", "a-001", "b-001"];
    let mut last_end = 0u64;
    for name in order {
        let t = Trace::open(d.rec_dir.join(format!("{name}.data"))).expect("diff's trace");
        assert_eq!(t.runs.len(), 1, "{name}: one boot per file");
        let run = &t.runs[0];
        assert_eq!(
            run.end.as_ref().map(|e| &e.reason),
            Some(&EndKind::Serial),
            "{name}"
        );
        assert!(
            run.wall_time_unix_ns > last_end,
            "{name} did not start after the previous boot ended"
        );
        let end = run.end.as_ref().map_or(0, |e| e.t_ns);
        last_end = run.wall_time_unix_ns + end;
        let want = if name.starts_with('a') {
            "tiny-fp"
        } else {
            "tiny-orc"
        };
        let kernel = &t.meta.kernel.path;
        assert!(
            (want == "tiny-fp" && kernel.contains("image-a")) || kernel.contains(want),
            "{name} booted {kernel}"
        );
        assert!(!run.samples.is_empty(), "{name}: no samples");
    }
    let svg = std::fs::read_to_string(&d.svg).expect("diff.svg");
    assert!(svg.contains("<svg") && svg.contains("Differential flamegraph"));
    let table = String::from_utf8_lossy(&d.out.stdout);
    assert!(
        table.contains("Slower in B") && table.contains("Faster in B"),
        "{table}"
    );
    // With two runs a side, rows carry a p-value (not "n/a").
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.contains('→') && !l.contains("self A → B"))
        .collect();
    assert!(!rows.is_empty(), "no function rows:\n{table}");
    assert!(
        rows.iter().all(|r| !r.contains("n/a")),
        "a p-value is missing with two runs a side:\n{table}"
    );
}

fn report_of(trace: &Path) -> serde_json::Value {
    common::report_json(trace)
}

fn folded(trace: &Path) -> String {
    let out = boottrace(&["export", "--format", "folded", "-i", s(trace)]);
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).expect("utf-8")
}

/// Functions of the decompressor's ELF (nm-style text symbols) that the
/// folded stacks of `trace` name.
fn decompressor_names_in(folded: &str, elf: &[String]) -> usize {
    let frames: std::collections::HashSet<&str> = folded
        .lines()
        .filter_map(|l| l.rsplit_once(' ').map(|(stack, _)| stack))
        .flat_map(|stack| stack.split(';'))
        .collect();
    elf.iter().filter(|n| frames.contains(n.as_str())).count()
}

/// Text symbols of an ELF file, by `nm` (binutils: an independent reader).
fn nm_text_symbols(elf: &Path) -> Vec<String> {
    let out = std::process::Command::new("nm")
        .arg(elf)
        .output()
        .expect("run nm (binutils is required by the suite)");
    assert!(out.status.success(), "nm failed");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (_, kind, name) = (w.next()?, w.next()?, w.next()?);
            matches!(kind, "t" | "T").then(|| name.to_string())
        })
        .collect()
}

/// Symbols found next to the recorded image with nothing named: its
/// System.map for the kernel and `decompressor.elf` for the decompressor;
/// without them, kallsyms recovered from the image, and no decompressor names.
#[test]
fn symbols_are_found_next_to_the_recorded_image() {
    let d = diffed();
    assert!(d.out.status.success(), "diff failed:\n{}", text(&d.out));
    let trace = d.rec_dir.join("a-000.data");
    let map = d.a_dir.join("System.map");
    let dec = d.a_dir.join("decompressor.elf");
    // Names only the decompressor has (memcpy & co. are in both).
    let kernel_names: std::collections::HashSet<String> = std::fs::read_to_string(&map)
        .expect("System.map")
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(String::from))
        .collect();
    let dec_names: Vec<String> = nm_text_symbols(&dec)
        .into_iter()
        .filter(|n| !kernel_names.contains(n))
        .collect();

    let r = report_of(&trace);
    let source = r["input"]["symbol_source"].as_str().expect("symbol_source");
    assert_eq!(source, format!("System.map ({})", map.display()));
    let with = folded(&trace);
    assert!(with.contains("start_kernel"), "kernel frames unnamed");
    let dec_with = decompressor_names_in(&with, &dec_names);
    assert!(
        dec_with > 0,
        "no decompressor function named with decompressor.elf beside the image"
    );

    std::fs::remove_file(&dec).expect("remove decompressor.elf");
    let without_dec = folded(&trace);
    assert_eq!(decompressor_names_in(&without_dec, &dec_names), 0);

    std::fs::remove_file(&map).expect("remove System.map");
    let r = report_of(&trace);
    let source = r["input"]["symbol_source"].as_str().expect("symbol_source");
    assert!(
        source.starts_with("kallsyms recovered from the kernel image"),
        "{source}"
    );
    assert!(folded(&trace).contains("start_kernel"));
}
