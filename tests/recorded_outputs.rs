//! The suite's shared tiny-fp recording (`common::standard_recording`: no
//! boot of its own when another test made it) read through the real
//! `boottrace` binary: every renderer and export, `report --json` checked
//! field by field against the schema documented in `src/analysis/doc.rs`,
//! the boot-end route, and the console's host timestamps.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use boottrace::trace::{EndKind, PhaseName, Trace};
use common::{boottrace, kernel_dir, report_json, scratch, standard_recording, text};
use serde_json::Value;

fn fp() -> PathBuf {
    standard_recording("tiny-fp").0
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// Runs `boottrace ARGS`, requires success, returns stdout.
fn ok(args: &[&str]) -> Vec<u8> {
    let out = boottrace(args);
    assert!(
        out.status.success(),
        "boottrace {} failed: {}",
        args.join(" "),
        text(&out)
    );
    out.stdout
}

// ---- report --json against src/analysis/doc.rs ----

/// A JSON type as documented.
enum T {
    U64,
    /// A signed integer.
    I64,
    Num,
    Str,
    Bool,
    Opt(Box<T>),
    Arr(Box<T>),
    /// `[name, count]`.
    NameCount,
    Obj(Vec<(&'static str, T)>),
    /// An object of any keys whose values are all the inner type.
    Map(Box<T>),
    /// Left out of the document when the trace has no such data (else the inner type).
    Absent(Box<T>),
}

fn opt(t: T) -> T {
    T::Opt(Box::new(t))
}
fn arr(t: T) -> T {
    T::Arr(Box::new(t))
}
fn obj(f: Vec<(&'static str, T)>) -> T {
    T::Obj(f)
}
fn absent(t: T) -> T {
    T::Absent(Box::new(t))
}

fn span() -> T {
    obj(vec![
        ("name", T::Str),
        ("time_ns", T::U64),
        ("samples", T::U64),
        ("first_ns", T::U64),
        ("last_ns", T::U64),
        ("faults", T::U64),
        ("exits", T::U64),
    ])
}

fn summary() -> T {
    obj(vec![
        ("n", T::U64),
        ("min", T::Num),
        ("median", T::Num),
        ("max", T::Num),
        ("mean", T::Num),
        ("stddev", opt(T::Num)),
    ])
}

fn unwind() -> T {
    obj(vec![
        ("considered", T::U64),
        ("rooted", T::U64),
        ("percent", opt(T::Num)),
        ("truncated", T::U64),
        ("bad_roots", arr(T::NameCount)),
    ])
}

fn named_summary() -> T {
    obj(vec![
        ("name", T::Str),
        ("time_ns", summary()),
        ("first_ns", opt(summary())),
        ("runs_seen", T::U64),
    ])
}

fn function_summary() -> T {
    obj(vec![
        ("name", T::Str),
        ("value", summary()),
        ("share", T::Num),
    ])
}

/// The report document as `src/analysis/doc.rs` describes it (version 1).
fn documented_schema() -> T {
    let run = obj(vec![
        ("run", T::U64),
        ("end_reason", opt(T::Str)),
        ("end_detail", opt(T::Str)),
        ("boot_ns", opt(T::U64)),
        ("until_init_ns", opt(T::U64)),
        ("samples", T::U64),
        ("sampled_ns", T::U64),
        ("faults", T::U64),
        ("exits", T::U64),
        (
            "vmm_phases",
            arr(obj(vec![
                ("name", T::Str),
                ("at_ns", T::U64),
                ("duration_ns", T::U64),
            ])),
        ),
        (
            "milestones",
            obj(vec![
                ("first_kernel_ns", opt(T::U64)),
                ("start_kernel_ns", opt(T::U64)),
                ("first_initcall_ns", opt(T::U64)),
                ("first_user_ns", opt(T::U64)),
            ]),
        ),
        ("kernel_phases", arr(span())),
        ("start_kernel_stages", arr(span())),
        ("initcalls", arr(span())),
        ("unwind", unwind()),
        (
            "sampler",
            obj(vec![
                ("samples", T::U64),
                ("kick_ns", T::U64),
                ("capture_ns", T::U64),
                ("unwind_ns", T::U64),
                ("write_ns", T::U64),
                ("total_ns", T::U64),
                ("per_sample_ns", opt(T::Num)),
                ("percent_of_boot", opt(T::Num)),
            ]),
        ),
        (
            "layout",
            absent(obj(vec![
                ("kaslr_slide", T::I64),
                ("slide_method", T::Str),
                ("kernel_phys_start", opt(T::U64)),
                ("kernel_link_start", T::U64),
                ("kernel_size", T::U64),
                ("decompressor_bases", arr(T::U64)),
            ])),
        ),
        (
            "devices",
            absent(arr(obj(vec![
                ("name", T::Str),
                ("kind", T::Str),
                ("backend", T::Str),
                ("notify", T::Str),
                ("counters", T::Map(Box::new(T::U64))),
                ("broken", opt(T::Str)),
            ]))),
        ),
        (
            "exact_initcalls",
            absent(arr(obj(vec![
                ("name", T::Str),
                ("start_ns", T::U64),
                ("wall_ns", T::U64),
                ("tsc_cycles", opt(T::U64)),
                ("ret", opt(T::I64)),
                ("on_cpu_ns", T::U64),
                ("waiting_ns", T::U64),
                ("samples", T::U64),
            ]))),
        ),
        (
            "points",
            absent(arr(obj(vec![
                ("name", T::Str),
                ("function", opt(T::Str)),
                ("at_ns", T::U64),
            ]))),
        ),
        (
            "pairing",
            absent(obj(vec![
                ("unmatched_starts", T::U64),
                ("unmatched_ends", T::U64),
                ("dropped", T::U64),
            ])),
        ),
        (
            "console",
            absent(obj(vec![
                ("time_ns", T::U64),
                ("accesses", T::U64),
                ("percent_of_boot", opt(T::Num)),
                ("sampled_ns", T::U64),
                ("sampled_percent_of_boot", opt(T::Num)),
                ("warning", T::Bool),
            ])),
        ),
        (
            "breakpoints",
            absent(obj(vec![
                ("exits", T::U64),
                ("handle_ns", T::U64),
                ("per_exit_ns", opt(T::Num)),
            ])),
        ),
        ("waited_ns", absent(T::U64)),
        (
            "waits",
            absent(arr(obj(vec![
                ("name", T::Str),
                ("function", T::Str),
                ("callers", arr(T::Str)),
                ("initcall", opt(T::Str)),
                ("state", T::Str),
                ("samples", T::U64),
                ("time_ns", T::U64),
                ("share", T::Num),
                ("stack", T::Str),
            ]))),
        ),
        (
            "tasks",
            arr(obj(vec![
                ("name", T::Str),
                ("pid", opt(T::U64)),
                ("tgid", opt(T::U64)),
                ("comm", opt(T::Str)),
                ("samples", T::U64),
                ("time_ns", T::U64),
                ("share", T::Num),
            ])),
        ),
    ]);
    let summary_doc = obj(vec![
        ("runs", T::U64),
        ("boot_ns", opt(summary())),
        ("until_init_ns", opt(summary())),
        (
            "vmm_phases",
            arr(obj(vec![
                ("name", T::Str),
                ("at_ns", summary()),
                ("duration_ns", summary()),
            ])),
        ),
        ("kernel_phases", arr(named_summary())),
        ("start_kernel_stages", arr(named_summary())),
        ("initcalls", arr(named_summary())),
        ("top_self", arr(function_summary())),
        ("top_total", arr(function_summary())),
        ("faults_by_function", arr(function_summary())),
        ("exits_by_function", arr(function_summary())),
        ("unwind", unwind()),
        (
            "sampler",
            obj(vec![
                ("per_sample_ns", opt(summary())),
                ("percent_of_boot", opt(summary())),
            ]),
        ),
        (
            "tasks",
            arr(obj(vec![
                ("name", T::Str),
                ("time_ns", summary()),
                ("share", T::Num),
                ("runs_seen", T::U64),
            ])),
        ),
        (
            "devices",
            absent(arr(obj(vec![
                ("name", T::Str),
                ("kind", T::Str),
                ("backend", T::Str),
                ("notify", T::Str),
                (
                    "counters",
                    arr(obj(vec![("name", T::Str), ("value", summary())])),
                ),
                ("runs_seen", T::U64),
                ("broken_runs", T::U64),
            ]))),
        ),
        (
            "exact_initcalls",
            absent(arr(obj(vec![
                ("name", T::Str),
                ("wall_ns", summary()),
                ("on_cpu_ns", summary()),
                ("waiting_ns", summary()),
                ("runs_seen", T::U64),
            ]))),
        ),
        (
            "console",
            absent(obj(vec![
                ("time_ns", summary()),
                ("percent_of_boot", opt(summary())),
                ("sampled_ns", opt(summary())),
                ("sampled_percent_of_boot", opt(summary())),
            ])),
        ),
        ("waited_ns", absent(summary())),
        (
            "waits",
            absent(arr(obj(vec![
                ("name", T::Str),
                ("initcall", opt(T::Str)),
                ("state", T::Str),
                ("time_ns", summary()),
                ("share", T::Num),
                ("runs_seen", T::U64),
            ]))),
        ),
    ]);
    obj(vec![
        ("format", T::Str),
        ("version", T::U64),
        (
            "input",
            obj(vec![
                ("path", T::Str),
                ("kernel_path", T::Str),
                ("kernel_version", opt(T::Str)),
                ("build_id", opt(T::Str)),
                ("kernel_cmdline", T::Str),
                ("sample_freq_hz", T::U64),
                ("unwinder", T::Str),
                ("symbol_source", T::Str),
                ("pvm_workarounds", arr(T::Str)),
                ("complete", T::Bool),
                ("warnings", arr(T::Str)),
            ]),
        ),
        ("runs", arr(run)),
        ("summary", summary_doc),
    ])
}

/// Every name the module documentation of `src/analysis/doc.rs` puts in
/// backticks (`bad_roots[]` counts as `bad_roots`, `summary.console` as
/// `summary` and `console`).
fn documented_names() -> BTreeSet<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/analysis/doc.rs");
    let src = std::fs::read_to_string(&path).expect("read src/analysis/doc.rs");
    let doc: String = src
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("//!"))
        .collect::<Vec<_>>()
        .join(" ");
    // A dotted path (`runs[].exact_initcalls[]`) documents each of its names.
    doc.split('`')
        .skip(1)
        .step_by(2)
        .flat_map(|c| c.split('.'))
        .map(|c| c.trim_end_matches("[]").to_string())
        .filter(|c| {
            !c.is_empty()
                && c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_')
        })
        .collect()
}

/// Checks `v` against `t` at `path`: every documented field present with its
/// type; every other key documented somewhere in doc.rs (added fields are
/// fine when documented). Collects the paths of arrays seen non-empty.
fn check(
    v: &Value,
    t: &T,
    path: &str,
    doc: &BTreeSet<String>,
    errors: &mut Vec<String>,
    filled: &mut BTreeSet<String>,
) {
    let mut bad = |what: &str| errors.push(format!("{path}: expected {what}, got {v}"));
    match t {
        T::U64 => {
            if !v.is_u64() {
                bad("an unsigned integer")
            }
        }
        T::I64 => {
            if !v.is_i64() {
                bad("a signed integer")
            }
        }
        T::Num => {
            if !v.is_number() {
                bad("a number")
            }
        }
        T::Str => {
            if !v.is_string() {
                bad("a string")
            }
        }
        T::Bool => {
            if !v.is_boolean() {
                bad("a boolean")
            }
        }
        T::Opt(inner) | T::Absent(inner) => {
            if !v.is_null() {
                check(v, inner, path, doc, errors, filled)
            }
        }
        T::Map(inner) => match v.as_object() {
            Some(map) => {
                for (k, item) in map {
                    check(item, inner, &format!("{path}.{k}"), doc, errors, filled);
                }
            }
            None => bad("an object"),
        },
        T::NameCount => match v.as_array().map(Vec::as_slice) {
            Some([n, c]) if n.is_string() && c.is_u64() => {}
            _ => bad("[name, count]"),
        },
        T::Arr(inner) => match v.as_array() {
            Some(items) => {
                if !items.is_empty() {
                    filled.insert(path.to_string());
                }
                for (i, item) in items.iter().enumerate() {
                    check(item, inner, &format!("{path}[{i}]"), doc, errors, filled);
                }
            }
            None => bad("an array"),
        },
        T::Obj(fields) => {
            let Some(map) = v.as_object() else {
                bad("an object");
                return;
            };
            for (name, ft) in fields {
                match (map.get(*name), ft) {
                    (Some(fv), _) => check(fv, ft, &format!("{path}.{name}"), doc, errors, filled),
                    // Left out when the trace has no such data.
                    (None, T::Absent(_)) => {}
                    (None, _) => errors.push(format!("{path}.{name}: documented field missing")),
                }
            }
            for key in map.keys() {
                if !fields.iter().any(|(n, _)| n == key) && !doc.contains(key) {
                    errors.push(format!(
                        "{path}.{key}: not documented in src/analysis/doc.rs"
                    ));
                }
            }
        }
    }
}

fn schema_names(t: &T, out: &mut BTreeSet<&'static str>) {
    match t {
        T::Opt(i) | T::Arr(i) | T::Map(i) | T::Absent(i) => schema_names(i, out),
        T::Obj(f) => {
            for (n, ft) in f {
                out.insert(n);
                schema_names(ft, out);
            }
        }
        _ => {}
    }
}

/// `report --json` of a real recording has every field documented in
/// src/analysis/doc.rs, with the documented type, and no field the
/// documentation does not name.
#[test]
fn report_json_matches_its_documentation_field_by_field() {
    let report = report_json(&fp());
    let doc = documented_names();
    let schema = documented_schema();
    // The schema here is the documentation's: each of its names is in doc.rs.
    let mut names = BTreeSet::new();
    schema_names(&schema, &mut names);
    let undocumented: Vec<_> = names.iter().filter(|n| !doc.contains(**n)).collect();
    assert!(
        undocumented.is_empty(),
        "the test's schema names fields doc.rs does not: {undocumented:?}"
    );
    let mut errors = Vec::new();
    let mut filled = BTreeSet::new();
    check(&report, &schema, "$", &doc, &mut errors, &mut filled);
    assert!(
        errors.is_empty(),
        "report --json vs doc.rs:\n{}",
        errors.join("\n")
    );
    // The objects left out only when the trace has no such data are here
    // (a bzImage boot has a layout; breakpoints, the console and blocked
    // stacks are recorded by every boot with task awareness).
    let run = &report["runs"][0];
    for field in ["layout", "pairing", "console", "breakpoints", "waited_ns"] {
        assert!(!run[field].is_null(), "runs[0].{field} missing");
    }
    for field in ["console", "waited_ns"] {
        assert!(
            !report["summary"][field].is_null(),
            "summary.{field} missing"
        );
    }
    assert_eq!(report["format"], "boottrace-report");
    assert_eq!(report["version"], 1);
    // Workarounds are applied (and recorded) on a PVM host only.
    let workarounds = report["input"]["pvm_workarounds"]
        .as_array()
        .expect("pvm_workarounds");
    assert_eq!(
        !workarounds.is_empty(),
        common::host_is_pvm(),
        "{workarounds:?}"
    );
    // The arrays whose element types were checked above held something.
    for path in [
        "$.runs",
        "$.runs[0].vmm_phases",
        "$.runs[0].kernel_phases",
        "$.runs[0].start_kernel_stages",
        "$.runs[0].initcalls",
        "$.runs[0].tasks",
        "$.summary.vmm_phases",
        "$.summary.kernel_phases",
        "$.summary.initcalls",
        "$.summary.top_self",
        "$.summary.top_total",
        "$.summary.faults_by_function",
        "$.summary.exits_by_function",
        "$.summary.tasks",
        // Trace format 3, on every boot with breakpoints and task awareness.
        "$.runs[0].layout.decompressor_bases",
        "$.runs[0].exact_initcalls",
        "$.runs[0].points",
        "$.runs[0].waits",
        "$.runs[0].waits[0].callers",
        "$.summary.exact_initcalls",
        "$.summary.waits",
    ] {
        assert!(
            filled.contains(path),
            "{path} is empty: its type went unchecked"
        );
    }
}

// ---- every renderer and export through the CLI ----

/// Folded stacks: `frames count` lines; returns the total count.
fn folded_total(folded: &str) -> u64 {
    folded
        .lines()
        .map(|l| {
            let (stack, n) = l.rsplit_once(' ').expect("`stack count` line");
            assert!(!stack.is_empty(), "empty stack in {l:?}");
            n.parse::<u64>().expect("count")
        })
        .sum()
}

#[test]
fn exports_through_the_cli_agree_with_the_report() {
    let t = fp();
    let report = report_json(&t);
    let run = &report["runs"][0];
    let samples = run["samples"].as_u64().expect("samples");
    assert!(samples > 0);

    // folded: to stdout and to a file (-o), the same text; counts add up to
    // the report's samples, faults and exits.
    let folded = String::from_utf8(ok(&["export", "--format", "folded", "-i", s(&t)]))
        .expect("utf-8 folded");
    assert_eq!(folded_total(&folded), samples);
    assert!(
        folded.contains("start_kernel"),
        "no start_kernel in folded stacks"
    );
    let file = scratch().join("outputs-folded.txt");
    ok(&["export", "--format", "folded", "-i", s(&t), "-o", s(&file)]);
    assert_eq!(std::fs::read_to_string(&file).expect("folded file"), folded);
    for (weight, field) in [("faults", "faults"), ("exits", "exits")] {
        let w = String::from_utf8(ok(&[
            "export",
            "--format",
            "folded",
            "--weight",
            weight,
            "-i",
            s(&t),
        ]))
        .expect("utf-8");
        assert_eq!(
            folded_total(&w),
            run[field].as_u64().expect(field),
            "{weight}"
        );
    }

    // speedscope: a sampled profile whose weights are the sampled time.
    let ss: Value = serde_json::from_slice(&ok(&["export", "--format", "speedscope", "-i", s(&t)]))
        .expect("speedscope JSON");
    assert_eq!(
        ss["$schema"],
        "https://www.speedscope.app/file-format-schema.json"
    );
    let frames = ss["shared"]["frames"].as_array().expect("frames");
    let mut weight_sum = 0u64;
    for p in ss["profiles"].as_array().expect("profiles") {
        assert_eq!(p["type"], "sampled");
        let samples = p["samples"].as_array().expect("samples");
        let weights = p["weights"].as_array().expect("weights");
        assert_eq!(samples.len(), weights.len());
        for st in samples {
            for f in st.as_array().expect("stack") {
                assert!((f.as_u64().expect("frame index") as usize) < frames.len());
            }
        }
        weight_sum += weights
            .iter()
            .map(|w| w.as_u64().expect("weight"))
            .sum::<u64>();
    }
    assert_eq!(weight_sum, run["sampled_ns"].as_u64().expect("sampled_ns"));

    // chrome: trace events with complete ("X") events naming kernel
    // functions and the run's end as an instant event.
    let ch: Value = serde_json::from_slice(&ok(&["export", "--format", "chrome", "-i", s(&t)]))
        .expect("chrome JSON");
    let events = ch["traceEvents"].as_array().expect("traceEvents");
    assert!(events
        .iter()
        .any(|e| e["ph"] == "X" && e["name"] == "start_kernel"));
    let end = events
        .iter()
        .find(|e| e["ph"] == "i" && !e["args"]["reason"].is_null())
        .expect("an instant event for the run's end");
    assert_eq!(end["args"]["reason"], "user");

    // text report: names what the JSON has.
    let txt = String::from_utf8(ok(&["report", "-i", s(&t)])).expect("utf-8 report");
    for p in run["kernel_phases"].as_array().expect("phases") {
        let name = p["name"].as_str().expect("name");
        assert!(txt.contains(name), "text report lacks kernel phase {name}");
    }
    let top = report["summary"]["top_self"][0]["name"]
        .as_str()
        .expect("top function");
    assert!(
        txt.contains(top),
        "text report lacks the top function {top}"
    );
}

#[test]
fn flamegraphs_through_the_cli() {
    let t = fp();
    let svg = |name: &str, extra: &[&str]| -> String {
        let out = scratch().join(format!("outputs-{name}.svg"));
        let mut args = vec!["flame", s(&out), "-i", s(&t)];
        args.extend_from_slice(extra);
        let o = boottrace(&args);
        assert!(o.status.success(), "flame {extra:?}: {}", text(&o));
        assert!(o.stdout.is_empty(), "flame writes nothing to stdout");
        let svg = std::fs::read_to_string(&out).expect("svg");
        assert!(
            svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
            "{name}: not an SVG document"
        );
        svg
    };
    let plain = svg("plain", &[]);
    assert!(plain.contains("start_kernel") && plain.contains("kernel_init"));
    let chart = svg("chart", &["--chart"]);
    assert!(chart.contains("start_kernel"));
    assert_ne!(plain, chart, "--chart orders by time: a different picture");
    let tasks = svg("by-task", &["--by-task"]);
    assert!(
        tasks.contains("[pid 1 "),
        "no pid 1 root frame with --by-task"
    );
    for w in ["faults", "exits"] {
        let g = svg(w, &["--weight", w]);
        assert_ne!(g, plain, "--weight {w} draws the same graph as samples");
    }
    // --run 0 is the only run; --run 1 does not exist.
    assert!(svg("run0", &["--run", "0"]).contains("start_kernel"));
    let missing = scratch().join("outputs-run1.svg");
    let o = boottrace(&["flame", s(&missing), "-i", s(&t), "--run", "1"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("run 1 is not in"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one-line error: {err}");
    assert!(!missing.exists(), "no output for a missing run");
}

// ---- how the boot ended, and the console's timestamps ----

/// `e_entry` of an x86_64 ELF file.
fn elf_entry(path: &Path) -> u64 {
    let b = std::fs::read(path).expect("read ELF");
    assert_eq!(&b[..4], b"\x7fELF", "{} is not ELF", path.display());
    u64::from_le_bytes(b[24..32].try_into().expect("8 bytes"))
}

/// The boot ends at the first user-mode instruction, seen by a hardware
/// breakpoint, and the RIP reported is /init's entry point (the static
/// binary kernel/build.sh packed, left beside the kernel as `init`). Both
/// breakpoints are armed (the kernel's return to user mode and /init's
/// entry): the kernel's return path runs first, so that is the route
/// whenever the kernel's symbol for it is known, as in every test kernel.
#[test]
fn boot_ends_at_the_first_user_instruction_by_hardware_breakpoint() {
    let (t, output) = standard_recording("tiny-fp");
    let entry = elf_entry(&kernel_dir("tiny-fp").join("init"));
    let want = format!(
        "first user-mode instruction at {entry:#x} on vCPU 0 (hw-breakpoint on the kernel's return to user mode)"
    );
    assert!(output.contains(&want), "want {want:?} in:\n{output}");
    let trace = Trace::open(&t).expect("trace");
    let end = trace.runs[0].end.as_ref().expect("end");
    assert_eq!(end.reason, EndKind::User);
    assert!(
        end.detail.as_deref().is_some_and(|d| d.contains(&want)),
        "{:?}",
        end.detail
    );
}

/// Every console line carries the host time it arrived: in order, inside
/// the run, after the first instruction, and the line announcing /init
/// before the first user-mode instruction.
#[test]
fn console_lines_are_timestamped_on_arrival() {
    let (t, output) = standard_recording("tiny-fp");
    // Without -q record echoes the console (host_faults.rs checks -q drops it).
    assert!(output.contains("] Command line: "), "{output}");
    let trace = Trace::open(&t).expect("trace");
    let run = &trace.runs[0];
    let first = run
        .phase(PhaseName::FirstInstruction)
        .expect("first_instruction");
    let user = run.phase(PhaseName::UserMode).expect("user_mode");
    let end = run.end.as_ref().expect("end").t_ns;
    assert!(run.serial.len() > 10, "{} console lines", run.serial.len());
    assert!(
        run.serial.windows(2).all(|w| w[0].t_ns <= w[1].t_ns),
        "console timestamps out of order"
    );
    for l in &run.serial {
        assert!(
            l.t_ns >= first && l.t_ns <= end,
            "line at {} outside the run [{first}, {end}]: {:?}",
            l.t_ns,
            l.line
        );
    }
    let banner = run
        .serial
        .iter()
        .find(|l| l.line.contains("Linux version"))
        .expect("banner");
    let init = run
        .serial
        .iter()
        .find(|l| l.line.contains("Run /init as init process"))
        .expect("Run /init line");
    assert!(banner.t_ns < init.t_ns && init.t_ns <= user);
    // Lines arrive over the boot, not stamped all at once at the end.
    assert!(
        banner.t_ns < user,
        "banner at {}, user mode at {user}",
        banner.t_ns
    );
}

/// `record` prints the sampler's cost per sample, the same figures the
/// trace keeps (`report`'s `sampler`).
#[test]
fn record_prints_the_sampler_cost_per_sample() {
    let (t, output) = standard_recording("tiny-fp");
    let report = report_json(&t);
    let sampler = &report["runs"][0]["sampler"];
    let samples = sampler["samples"].as_u64().expect("samples");
    let per = |k: &str| sampler[k].as_u64().expect(k) as f64 / samples as f64 / 1e3;
    let want = format!(
        "samples: {samples}; per sample: kick {:.1} us, capture {:.1} us, unwind+counters {:.1} us, write {:.1} us",
        per("kick_ns"),
        per("capture_ns"),
        per("unwind_ns"),
        per("write_ns")
    );
    assert!(output.contains(&want), "want {want:?} in:\n{output}");
}

/// Samples taken before the kernel analysis was ready keep their RIP only,
/// and `record` counts them. A vCPU samples in sequence, so those samples
/// open its sequence: the count is at most the RIP-only (one-frame)
/// samples each vCPU starts with.
#[test]
fn samples_before_the_analysis_keep_their_rip_only_and_are_counted() {
    let (t, output) = standard_recording("tiny-fp");
    let line = regex::Regex::new(
        r"([0-9]+) sample\(s\) before the kernel analysis was ready \(RIP only, not unwound\)",
    )
    .expect("regex");
    let early: usize = line
        .captures(&output)
        .map_or(0, |c| c[1].parse().expect("count"));
    let trace = Trace::open(&t).expect("trace");
    let run = &trace.runs[0];
    let vcpus: BTreeSet<u32> = run.samples.iter().map(|s| s.vcpu).collect();
    let mut rip_only_first = 0;
    for v in vcpus {
        let mut mine: Vec<_> = run.samples.iter().filter(|s| s.vcpu == v).collect();
        mine.sort_by_key(|s| s.t_ns);
        rip_only_first += mine.iter().take_while(|s| s.stack.len() == 1).count();
    }
    assert!(
        early <= rip_only_first,
        "record counted {early} early samples; the trace opens with {rip_only_first} RIP-only ones"
    );
    if common::host_is_pvm() {
        // The analysis takes hundreds of ms here, the boot to the first
        // sample tens: the first samples come before it is ready.
        assert!(early > 0, "no early samples counted:\n{output}");
    }
}

/// The text report shows the recorded layout (the KASLR slide as the JSON
/// has it, how it was found, where the kernel and the decompressor ran),
/// the time per guest task, unwind quality and the sampler's overhead.
#[test]
fn text_report_shows_layout_tasks_unwind_quality_and_overhead() {
    let t = fp();
    let report = report_json(&t);
    let layout = &report["runs"][0]["layout"];
    let txt = String::from_utf8(ok(&["report", "-i", s(&t)])).expect("utf-8 report");
    for section in [
        "\nLayout (where the kernel ran, as recorded)",
        "\nTasks (",
        "\nUnwind quality",
        "\nSampler overhead",
    ] {
        assert!(txt.contains(section), "{section:?} not in:\n{txt}");
    }
    let slide = layout["kaslr_slide"].as_i64().expect("kaslr_slide");
    let method = layout["slide_method"].as_str().expect("slide_method");
    let want = format!(
        "KASLR slide {}{:#x} ({method})",
        if slide < 0 { "-" } else { "+" },
        slide.unsigned_abs()
    );
    assert!(txt.contains(&want), "{want:?} not in:\n{txt}");
    assert!(txt.contains("decompressor ran at physical"), "{txt}");
}

/// `export --format firefox` of the real boot, through the CLI: a Firefox
/// Profiler processed profile with one process per run and one track per
/// vCPU holding every sample, frames in categories naming their boot phase
/// (decompressor, head code, start_kernel and initcalls all appear),
/// inline frames (DWARF) in their category's "inlined" subcategory, and
/// markers for the VMM phases, kernel phases, start_kernel stages,
/// initcalls, every console line and the run's end.
#[test]
fn firefox_export_through_the_cli() {
    let t = fp();
    let report = report_json(&t);
    let run = &report["runs"][0];
    let file = scratch().join("outputs-firefox.json");
    let vmlinux = kernel_dir("tiny-fp").join("vmlinux");
    let out = boottrace(&[
        "export",
        "--format",
        "firefox",
        "-i",
        s(&t),
        "--vmlinux",
        s(&vmlinux),
        "-o",
        s(&file),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let v: Value =
        serde_json::from_slice(&std::fs::read(&file).expect("profile")).expect("profile JSON");
    assert!(
        v["meta"]["preprocessedProfileVersion"].is_u64(),
        "{}",
        v["meta"]
    );
    let cats = v["meta"]["categories"].as_array().expect("categories");
    let threads = v["threads"].as_array().expect("threads");
    // tiny-fp: one run on one vCPU.
    assert_eq!(threads.len(), 1, "one track per vCPU per run");
    let th = &threads[0];
    assert_eq!(
        (th["name"].as_str(), th["processName"].as_str()),
        (Some("vCPU 0"), Some("boot run 0"))
    );
    assert_eq!(
        th["samples"]["length"].as_u64(),
        run["samples"].as_u64(),
        "every sample is in the profile"
    );
    let col = |t: &Value, k: &str| -> Vec<u64> {
        t[k].as_array()
            .unwrap_or_else(|| panic!("{k}"))
            .iter()
            .map(|x| x.as_u64().expect("index"))
            .collect()
    };
    let frames = &th["frameTable"];
    let (fcat, fsub) = (col(frames, "category"), col(frames, "subcategory"));
    let used: BTreeSet<&str> = fcat
        .iter()
        .map(|&c| cats[c as usize]["name"].as_str().expect("category name"))
        .collect();
    for phase in ["decompressor", "head", "start_kernel", "initcalls"] {
        assert!(used.contains(phase), "no {phase} frames: {used:?}");
    }
    let inlined = fcat.iter().zip(&fsub).any(|(&c, &sc)| {
        cats[c as usize]["subcategories"][sc as usize].as_str() == Some("inlined")
    });
    assert!(inlined, "no frame in an \"inlined\" subcategory");
    // Markers, named by the thread's strings.
    let strings: Vec<&str> = th["stringArray"]
        .as_array()
        .expect("stringArray")
        .iter()
        .map(|x| x.as_str().expect("string"))
        .collect();
    let markers = &th["markers"];
    let names: BTreeSet<&str> = col(markers, "name")
        .iter()
        .map(|&i| strings[i as usize])
        .collect();
    for want in [
        "VMM phase",
        "Kernel phase",
        "start_kernel stage",
        "Initcall",
        "Console",
        "End",
    ] {
        assert!(names.contains(want), "no {want} marker: {names:?}");
    }
    let texts: Vec<&str> = markers["data"]
        .as_array()
        .expect("marker data")
        .iter()
        .filter_map(|d| d["text"].as_u64())
        .map(|i| strings[i as usize])
        .collect();
    assert!(
        texts
            .iter()
            .any(|x| x.contains("Run /init as init process")),
        "console line not a marker"
    );
}
