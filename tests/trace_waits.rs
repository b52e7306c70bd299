//! `WaitStack` records (trace format 3) read back: in time order per run,
//! deep stacks cut to the writer's limit, records of runs beyond the cap
//! dropped, and the profile and report built from them without a boot.

use boottrace::profile::symbols::{self, SymbolConfig};
use boottrace::trace::{synth, Record, Trace, TraceWriter, WaitStack, MAX_STACK_DEPTH};

fn wait(run: u32, t_ns: u64, depth: usize) -> Record {
    let f = synth::addr_of("do_one_initcall").expect("sym") + 0x10;
    Record::WaitStack(WaitStack {
        run,
        vcpu: 0,
        t_ns,
        task: None,
        state: 2,
        stack: (0..depth as u64).map(|i| f + i).collect(),
        stack_end: 1,
    })
}

#[test]
fn wait_stacks_are_read_sorted_and_capped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("w.data");
    let opts = synth::SynthOptions::default();
    let recs = synth::records(&opts);
    let Some((Record::Meta(meta), rest)) = recs.split_first() else {
        panic!("synth starts with its metadata")
    };
    let mut w = TraceWriter::create(&path, meta).expect("create");
    let t0 = rest
        .iter()
        .find_map(|r| match r {
            Record::Sample(s) if s.run == 0 && s.vcpu == 0 => Some(s.t_ns),
            _ => None,
        })
        .expect("a sample");
    for r in rest.iter() {
        if matches!(r, Record::Finish(_)) {
            continue;
        }
        w.append(r).expect("append");
    }
    // Out of order, one 2 M frames deep, one for a run that does not exist
    // in the file (created, as any record's run is).
    w.append(&wait(0, t0 + 1, 3)).expect("append");
    w.append(&wait(0, t0, 2_000_000)).expect("append");
    w.finish().expect("finish");

    let t = Trace::open(&path).expect("read");
    let waits = &t.runs[0].waits;
    let got: Vec<(u64, usize)> = waits.iter().map(|w| (w.t_ns, w.stack.len())).collect();
    assert_eq!(got, [(t0, MAX_STACK_DEPTH), (t0 + 1, 3)]);
    assert!(
        t.warnings.iter().any(|w| w.contains("deeper than")),
        "{:?}",
        t.warnings
    );

    // The profile turns them into [wait] stacks with the sample's interval.
    let map = dir.path().join("System.map");
    std::fs::write(&map, synth::system_map()).expect("map");
    let cfg = SymbolConfig {
        system_map: Some(map),
        ..SymbolConfig::default()
    };
    let setup = symbols::setup(&t, &cfg).expect("symbols");
    let p = boottrace::profile::build(&t, &setup);
    let run = &p.runs[0];
    assert_eq!(run.waits.len(), 2);
    let sample = run
        .samples
        .iter()
        .find(|s| s.vcpu == 0 && s.t_ns == t0)
        .expect("sample at t0");
    assert_eq!(run.waits[0].interval_ns, sample.interval_ns);
    let names: Vec<String> = p
        .stack_frames(run.waits[1].stack)
        .iter()
        .map(|f| p.name_text(f.name).into_owned())
        .collect();
    assert_eq!(names.last().map(String::as_str), Some("[wait]"));
    assert!(names.iter().any(|n| n == "do_one_initcall"), "{names:?}");

    // The report lists the site; the wall view holds the wait time.
    let doc = boottrace::analysis::doc::build(&p, 10);
    let json = serde_json::to_value(&doc).expect("json");
    let site = &json["runs"][0]["waits"][0];
    assert_eq!(site["state"], "sleeping", "{site:#?}");
    assert!(json["summary"]["waits"]
        .as_array()
        .is_some_and(|w| !w.is_empty()));
    let wall = boottrace::analysis::fold::fold(
        &p,
        boottrace::analysis::fold::RunSelect::Run(0),
        boottrace::analysis::fold::Weight::Wall,
    );
    let waited: u64 = wall
        .stacks
        .iter()
        .filter(|(s, _)| s.ends_with(";[wait]"))
        .map(|(_, w)| w)
        .sum();
    assert_eq!(
        waited,
        run.waits[0].interval_ns + run.waits[1].interval_ns,
        "{wall:?}"
    );
}

/// A recording killed at any byte (SIGKILL mid-write leaves a prefix of the
/// file) reads as a prefix of the whole: the samples and wait stacks before
/// the cut, equal to the complete file's, and never a wait stack whose
/// sample is lost (a batch's wait block follows its sample blocks).
#[test]
fn wait_blocks_survive_truncation_at_every_byte() {
    let opts = synth::SynthOptions {
        runs: 1,
        samples_per_run: 150,
        vcpus: 1,
        period_ns: 1_000_000,
        seed: 5,
        extra_functions: 20,
    };
    let recs = synth::records_with_waits(&opts);
    let Some((Record::Meta(meta), rest)) = recs.split_first() else {
        panic!("synth starts with its metadata")
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("full.data");
    let mut w = TraceWriter::create(&path, meta).expect("create");
    // Batches as the sampler hands them over (a wait, then its sample).
    for chunk in rest.chunks(20) {
        w.append_batch(chunk.to_vec()).expect("append");
    }
    w.finish().expect("finish");
    let bytes = std::fs::read(&path).expect("read file");
    let full = Trace::read_from(&bytes[..], &path).expect("read");
    assert!(
        full.complete && full.warnings.is_empty(),
        "{:?}",
        full.warnings
    );
    let (all_samples, all_waits) = (&full.runs[0].samples, &full.runs[0].waits);
    assert!(all_waits.len() > 20, "only {} waits", all_waits.len());

    let meta_end = {
        // The smallest prefix that still opens: header + metadata record.
        (1..bytes.len())
            .find(|&n| Trace::read_from(&bytes[..n], &path).is_ok())
            .expect("a prefix opens")
    };
    let (mut last_samples, mut last_waits) = (0, 0);
    for cut in meta_end..bytes.len() {
        let t =
            Trace::read_from(&bytes[..cut], &path).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert!(!t.complete, "cut at {cut}");
        let Some(run) = t.runs.first() else { continue };
        let (s, w) = (&run.samples, &run.waits);
        assert!(s[..] == all_samples[..s.len()], "cut at {cut}: samples");
        assert!(w[..] == all_waits[..w.len()], "cut at {cut}: waits");
        assert!(s.len() >= last_samples && w.len() >= last_waits);
        (last_samples, last_waits) = (s.len(), w.len());
        for wait in w {
            assert!(
                s.iter().any(|x| x.vcpu == wait.vcpu && x.t_ns == wait.t_ns),
                "cut at {cut}: wait at {} without its sample",
                wait.t_ns
            );
        }
    }
    assert_eq!(last_waits, all_waits.len());
}
