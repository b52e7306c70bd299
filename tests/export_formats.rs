//! Exports checked against their formats' published definitions:
//! - speedscope: the `FileFormat` types of speedscope's `src/lib/file-format-spec.ts`
//!   (from which <https://www.speedscope.app/file-format-schema.json> is generated);
//! - Chrome trace events: the Trace Event Format document (JSON Object Format,
//!   `ph` X/i/M events, microsecond `ts`/`dur`), and Perfetto's rule that
//!   slices on one thread must nest perfectly (perfetto.dev/docs/faq).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use boottrace::analysis::fold::{self, Folded, RunSelect, Weight};
use boottrace::profile::symbols::SymbolConfig as SymbolArgs;
use boottrace::render::export::{self, ExportConfig as ExportArgs, ExportFormat};
use boottrace::trace::synth::{self, SynthOptions};
use serde_json::Value;

struct Fixture {
    _dir: tempfile::TempDir,
    trace: PathBuf,
    map: PathBuf,
    out: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let trace = dir.path().join("boottrace.data");
    synth::write(
        &trace,
        &SynthOptions {
            runs: 2,
            samples_per_run: 150,
            vcpus: 2,
            period_ns: 1_000_000,
            seed: 5,
            ..SynthOptions::default()
        },
    )
    .expect("write trace");
    let map = dir.path().join("System.map");
    std::fs::write(&map, synth::system_map()).expect("map");
    let out = dir.path().join("out");
    Fixture {
        _dir: dir,
        trace,
        map,
        out,
    }
}

fn export(f: &Fixture, format: ExportFormat, weight: Weight) -> String {
    let mut stdout = Vec::new();
    export::run(
        &ExportArgs {
            format,
            output: Some(f.out.clone()),
            input: f.trace.clone(),
            extra_inputs: Vec::new(),
            allow_mixed: false,
            weight,
            run: None,
            symbols: SymbolArgs {
                system_map: Some(f.map.clone()),
                ..SymbolArgs::default()
            },
        },
        &mut stdout,
    )
    .expect("export");
    assert!(
        stdout.is_empty(),
        "an export to a file writes nothing to stdout"
    );
    std::fs::read_to_string(&f.out).expect("read export")
}

fn num(v: &Value, what: &str) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("{what} is not a number: {v}"))
}

#[test]
fn folded_matches_fold() {
    let f = fixture();
    let text = export(&f, ExportFormat::Folded, Weight::Faults);
    let args = SymbolArgs {
        system_map: Some(f.map.clone()),
        ..SymbolArgs::default()
    };
    let sym = boottrace::profile::open(&f.trace, &args).expect("load");
    let want = fold::fold(&sym, RunSelect::All, Weight::Faults);
    assert_eq!(Folded::parse(&text, 100_000), want);
    // Every line is `frames weight` with a positive integer weight.
    for line in text.lines() {
        let (stack, n) = line.rsplit_once(' ').expect("weight column");
        assert!(n.parse::<u64>().expect("integer") > 0);
        assert!(
            stack.split(';').all(|f| !f.is_empty()),
            "empty frame in {line}"
        );
    }
}

#[test]
fn speedscope_follows_the_file_format_spec() {
    let f = fixture();
    let doc: Value = serde_json::from_str(&export(&f, ExportFormat::Speedscope, Weight::Samples))
        .expect("valid JSON");
    // File: required $schema (exact constant), shared.frames, profiles.
    assert_eq!(
        doc["$schema"],
        "https://www.speedscope.app/file-format-schema.json"
    );
    assert!(doc["name"].is_string());
    assert!(doc["exporter"].is_string());
    let frames = doc["shared"]["frames"].as_array().expect("shared.frames");
    let mut names = HashSet::new();
    for fr in frames {
        // Frame: required string `name`; optional file/line/col.
        let name = fr["name"].as_str().expect("frame name");
        assert!(names.insert(name), "frame {name} not shared (duplicate)");
    }
    let profiles = doc["profiles"].as_array().expect("profiles");
    // 2 runs x 2 vCPUs.
    assert_eq!(profiles.len(), 4);
    let active = num(&doc["activeProfileIndex"], "activeProfileIndex") as usize;
    assert!(active < profiles.len());
    for p in profiles {
        // SampledProfile: type, name, unit, startValue, endValue, samples, weights.
        assert_eq!(p["type"], "sampled");
        assert!(p["name"].is_string());
        let unit = p["unit"].as_str().expect("unit");
        assert!([
            "none",
            "nanoseconds",
            "microseconds",
            "milliseconds",
            "seconds",
            "bytes"
        ]
        .contains(&unit));
        assert_eq!(unit, "nanoseconds");
        let start = num(&p["startValue"], "startValue");
        let end = num(&p["endValue"], "endValue");
        assert!(end >= start, "endValue must be >= startValue");
        let samples = p["samples"].as_array().expect("samples");
        let weights = p["weights"].as_array().expect("weights");
        assert_eq!(samples.len(), weights.len(), "one weight per sample");
        assert!(!samples.is_empty());
        let mut sum = 0.0;
        for (s, w) in samples.iter().zip(weights) {
            let idx = s.as_array().expect("stack is an array");
            assert!(!idx.is_empty());
            for i in idx {
                let i = num(i, "frame index");
                assert!(i >= 0.0 && (i as usize) < frames.len() && i.fract() == 0.0);
            }
            // Stacks are root first.
            let root = frames[num(&idx[0], "index") as usize]["name"]
                .as_str()
                .expect("name");
            assert!(
                root == "x86_64_start_kernel" || root == "secondary_startup_64",
                "root {root}"
            );
            sum += num(w, "weight");
        }
        // Weights are the nanoseconds each sample stands for: they fill the span.
        assert!(
            (sum - (end - start)).abs() < 1.0,
            "{sum} vs {}",
            end - start
        );
    }
}

#[test]
fn speedscope_by_faults_uses_counts() {
    let f = fixture();
    let doc: Value = serde_json::from_str(&export(&f, ExportFormat::Speedscope, Weight::Faults))
        .expect("valid JSON");
    for p in doc["profiles"].as_array().expect("profiles") {
        assert_eq!(p["unit"], "none");
        let w: f64 = p["weights"]
            .as_array()
            .expect("weights")
            .iter()
            .map(|w| num(w, "w"))
            .sum();
        assert!(w > 0.0 && w.fract() == 0.0);
    }
}

/// (start µs, end µs, name) of an `X` event.
type Slice = (f64, f64, String);

#[test]
fn chrome_trace_events_nest_and_carry_phases_and_serial() {
    let f = fixture();
    let doc: Value = serde_json::from_str(&export(&f, ExportFormat::Chrome, Weight::Samples))
        .expect("valid JSON");
    // JSON Object Format: traceEvents array, optional displayTimeUnit "ms"|"ns".
    let events = doc["traceEvents"].as_array().expect("traceEvents");
    assert!(["ms", "ns"].contains(&doc["displayTimeUnit"].as_str().expect("unit")));
    let mut slices: BTreeMap<(u64, u64), Vec<Slice>> = BTreeMap::new();
    let mut thread_names = HashSet::new();
    let mut instants = Vec::new();
    for e in events {
        let ph = e["ph"].as_str().expect("ph");
        let pid = e["pid"].as_u64().expect("pid is an integer");
        let tid = e["tid"].as_u64().expect("tid is an integer");
        let name = e["name"].as_str().expect("name").to_string();
        match ph {
            "M" => {
                assert!(["process_name", "thread_name"].contains(&name.as_str()));
                let n = e["args"]["name"].as_str().expect("metadata args.name");
                if name == "thread_name" {
                    thread_names.insert((pid, n.to_string()));
                }
            }
            "X" => {
                let ts = num(&e["ts"], "ts");
                let dur = num(&e["dur"], "dur");
                assert!(ts >= 0.0 && dur >= 0.0);
                slices
                    .entry((pid, tid))
                    .or_default()
                    .push((ts, ts + dur, name));
            }
            "i" => {
                num(&e["ts"], "ts");
                assert!(["t", "p", "g"].contains(&e["s"].as_str().expect("scope")));
                instants.push(name);
            }
            other => panic!("unexpected phase {other}"),
        }
    }
    for pid in [1, 2] {
        for t in ["VMM", "console", "guest boot", "vCPU 0", "vCPU 1"] {
            assert!(thread_names.contains(&(pid, t.to_string())), "{pid} {t}");
        }
    }
    assert!(instants.iter().any(|n| n == "Run /init as init process"));
    assert!(instants.iter().any(|n| n == "first_instruction"));
    let all: Vec<&str> = slices.values().flatten().map(|s| s.2.as_str()).collect();
    for want in [
        "create_vm",
        "load_kernel",
        "start_kernel",
        "memmap_init_range",
    ] {
        assert!(all.contains(&want), "{want} missing");
    }
    // Perfect nesting per thread: sort by start, longest first, keep a stack of ends.
    for ((pid, tid), mut v) in slices {
        v.sort_by(|a, b| a.0.total_cmp(&b.0).then(b.1.total_cmp(&a.1)));
        let mut stack: Vec<f64> = Vec::new();
        for (start, end, name) in &v {
            while stack.last().is_some_and(|&e| e <= *start) {
                stack.pop();
            }
            if let Some(&parent_end) = stack.last() {
                assert!(
                    *end <= parent_end,
                    "pid {pid} tid {tid}: {name} [{start}, {end}] overlaps its parent ending {parent_end}"
                );
            }
            stack.push(*end);
        }
    }
}
