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

use boottrace::trace::{EndKind, PhaseName, Trace};
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
    // Recorded in order A B A B: each boot started (wall clock) after the
    // previous one's guest had run from its first instruction to its end.
    let order = ["a-000", "b-000", "a-001", "b-001"];
    let mut earliest_next = 0u64;
    for name in order {
        let t = Trace::open(d.rec_dir.join(format!("{name}.data"))).expect("diff's trace");
        assert_eq!(t.runs.len(), 1, "{name}: one boot per file");
        let run = &t.runs[0];
        let end = run.end.as_ref().expect("run end");
        assert_eq!(end.reason, EndKind::Serial, "{name}");
        assert!(
            run.wall_time_unix_ns >= earliest_next,
            "{name} started before the previous boot ended"
        );
        let first = run
            .phase(PhaseName::FirstInstruction)
            .expect("first_instruction");
        earliest_next = run.wall_time_unix_ns + end.t_ns.saturating_sub(first);
        let kernel = &t.meta.kernel.path;
        let side_ok = if name.starts_with('a') {
            kernel.contains("image-a")
        } else {
            kernel.contains("tiny-orc")
        };
        assert!(side_ok, "{name} booted {kernel}");
        assert!(!run.samples.is_empty(), "{name}: no samples");
    }
    let svg = std::fs::read_to_string(&d.svg).expect("diff.svg");
    assert!(svg.contains("<svg") && svg.contains("Differential flamegraph"));
    let table = String::from_utf8_lossy(&d.out.stdout);
    assert!(
        table.contains("Slower in B") && table.contains("Faster in B"),
        "{table}"
    );
    // stdout holds only diff's table: record's progress and summaries of the
    // four boots went to stderr (issue 8).
    assert!(table.starts_with("A: "), "{table}");
    for status in ["boot ended:", "samples:", "wrote "] {
        assert!(!table.contains(status), "{status:?} on stdout:\n{table}");
    }
    assert_eq!(
        stderr.matches("boot ended:").count(),
        4,
        "one summary per boot on stderr:\n{stderr}"
    );
    // With two runs a side, Welch's test gives p-values (one run: "n/a").
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.contains('→') && !l.contains("self A → B"))
        .collect();
    assert!(!rows.is_empty(), "no function rows:\n{table}");
    assert!(
        rows.iter().any(|r| !r.contains("n/a")),
        "no p-value with two runs a side:\n{table}"
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
    // Decompressor frames read "[decompressor] NAME" once named.
    let frames: std::collections::HashSet<&str> = folded
        .lines()
        .filter_map(|l| l.rsplit_once(' ').map(|(stack, _)| stack))
        .flat_map(|stack| stack.split(';'))
        .filter_map(|f| f.strip_prefix("[decompressor] "))
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
    let dec_names = nm_text_symbols(&dec);

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

/// `diff` of two kernel images writes only its table on stdout; record's
/// progress and per-boot summaries go to stderr (issue 8). Two flat test
/// kernels (a `jmp $` and a `nop; jmp` loop) boot for one second each, so
/// this runs in seconds on any KVM host.
#[test]
fn diff_stdout_holds_only_its_table() {
    let dir = scratch().join("diff-stdout");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let a = common::flat_kernel(&dir, "spin-a.elf", &[0xeb, 0xfe]);
    let b = common::flat_kernel(&dir, "spin-b.elf", &[0x90, 0xeb, 0xfd]);
    let rec = "--timeout 1 -F 1000";
    let out = boottrace(&[
        "diff",
        s(&a),
        s(&b),
        "--runs",
        "1",
        "--record-a",
        rec,
        "--record-b",
        rec,
        "--record-dir",
        s(&dir.join("recordings")),
        "-o",
        s(&dir.join("diff.svg")),
    ]);
    let all = text(&out);
    assert!(out.status.success(), "diff failed:\n{all}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.starts_with("A: "), "{stdout}");
    assert!(stdout.contains("Slower in B"), "{stdout}");
    for status in [
        "boot ended:",
        "samples:",
        "wrote ",
        "recording",
        "boottrace",
    ] {
        assert!(!stdout.contains(status), "{status:?} on stdout:\n{stdout}");
    }
    assert_eq!(stderr.matches("boot ended:").count(), 2, "{stderr}");
    assert!(stderr.contains("recording A boot 1/1"), "{stderr}");
    assert!(stderr.contains("wrote "), "{stderr}");
}
