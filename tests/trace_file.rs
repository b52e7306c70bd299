//! Trace file: round trip, truncation at every byte, corruption of every byte,
//! the threaded sink.

use std::path::Path;

use boottrace::trace::frame::{encode_frame, write_header, HEADER_LEN};
use boottrace::trace::synth::{self, SynthOptions};
use boottrace::trace::{EndKind, Finish, PhaseName, Record, Trace, TraceError, TraceWriter};

fn small_opts() -> SynthOptions {
    SynthOptions {
        runs: 2,
        samples_per_run: 6,
        vcpus: 2,
        period_ns: 1_000_000,
        seed: 7,
        ..SynthOptions::default()
    }
}

/// The bytes of a complete small trace, and the end offset of every record.
fn small_file() -> (Vec<u8>, Vec<usize>) {
    let mut bytes = Vec::new();
    write_header(&mut bytes).expect("header");
    let mut ends = Vec::new();
    let mut recs = synth::records(&small_opts());
    let n = recs.len() as u64;
    recs.push(Record::Finish(Finish { records: n }));
    for r in &recs {
        encode_frame(r, &mut bytes).expect("encode");
        ends.push(bytes.len());
    }
    (bytes, ends)
}

fn read(bytes: &[u8]) -> Result<Trace, TraceError> {
    Trace::read_from(bytes, Path::new("mem.data"))
}

#[test]
fn round_trip_through_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.data");
    let opts = small_opts();
    synth::write(&path, &opts).expect("write");
    let t = Trace::open(&path).expect("open");
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    assert!(t.complete);

    let recs = synth::records(&opts);
    let Record::Meta(meta) = &recs[0] else {
        panic!("first record is not Meta")
    };
    assert_eq!(&t.meta, meta.as_ref());
    assert_eq!(t.stat_names, synth::STATS);
    assert_eq!(t.runs.len(), 2);
    let samples: Vec<_> = recs
        .iter()
        .filter_map(|r| match r {
            Record::Sample(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(t.sample_count(), samples.len());
    for run in &t.runs {
        let mut want: Vec<_> = samples
            .iter()
            .filter(|s| s.run == run.run)
            .cloned()
            .collect();
        want.sort_by_key(|s| (s.t_ns, s.vcpu));
        assert_eq!(run.samples, want);
        assert_eq!(run.layout, Some(synth::layout()));
        assert_eq!(run.end.as_ref().map(|e| &e.reason), Some(&EndKind::User));
        assert!(run.phase(PhaseName::FirstInstruction).is_some());
        assert_eq!(
            run.serial.last().map(|s| s.line.as_str()),
            Some("Run /init as init process")
        );
        let cost = run.cost.as_ref().expect("sampler cost");
        assert_eq!(cost.samples as usize, run.samples.len());
    }
}

/// Cutting the file anywhere reads back exactly the complete records before the
/// cut, with a warning; cuts inside the header or metadata are clear errors.
#[test]
fn truncation_at_every_byte() {
    let (bytes, ends) = small_file();
    let meta_end = ends[0];
    let full = read(&bytes).expect("full file");
    assert!(full.warnings.is_empty(), "{:?}", full.warnings);
    for cut in 0..bytes.len() {
        let r = read(&bytes[..cut]);
        if cut < meta_end {
            match r {
                Err(TraceError::Io { .. }) if cut < HEADER_LEN => {}
                Err(TraceError::MissingMeta { .. }) if cut >= HEADER_LEN => {}
                other => panic!("cut at {cut}: expected a clear error, got {other:?}"),
            }
            continue;
        }
        let t = r.unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        assert!(!t.complete, "cut at {cut}");
        assert!(!t.warnings.is_empty(), "cut at {cut}: no warning");
        // The same content as the file cut at the last record boundary before `cut`.
        let boundary = *ends.iter().filter(|&&e| e <= cut).max().expect("meta end");
        let at_boundary = read(&bytes[..boundary]).expect("boundary cut");
        assert_eq!(t.runs, at_boundary.runs, "cut at {cut}");
        assert_eq!(t.stat_names, at_boundary.stat_names);
        if cut != boundary {
            assert!(
                t.warnings.iter().any(|w| w.contains("truncated")),
                "cut at {cut}: {:?}",
                t.warnings
            );
        }
    }
    // And every boundary cut holds exactly the records before it: count them.
    for (k, &end) in ends.iter().enumerate() {
        let t = read(&bytes[..end]).expect("boundary");
        let recs = synth::records(&small_opts());
        let upto = &recs[..(k + 1).min(recs.len())];
        let want = upto
            .iter()
            .filter(|r| matches!(r, Record::Sample(_)))
            .count();
        assert_eq!(t.sample_count(), want, "boundary {k}");
        let want_serial = upto
            .iter()
            .filter(|r| matches!(r, Record::Serial(_)))
            .count();
        let got_serial: usize = t.runs.iter().map(|r| r.serial.len()).sum();
        assert_eq!(got_serial, want_serial, "boundary {k}");
    }
}

/// Flipping any single byte gives a clear error or a partial read flagged as
/// incomplete — never a panic and never a silently "complete" file.
#[test]
fn flipped_bytes_are_detected() {
    let (bytes, ends) = small_file();
    for pos in 0..bytes.len() {
        for mask in [0x01u8, 0x80, 0xff] {
            let mut b = bytes.clone();
            b[pos] ^= mask;
            match read(&b) {
                Err(e) => {
                    assert!(
                        pos < ends[0],
                        "flip at {pos} past the metadata gave error {e}"
                    )
                }
                Ok(t) => {
                    // An older minor version (2.1 → 2.0) is a valid file:
                    // it only lacks record types.
                    let older_minor = pos == 10 && b[10] < bytes[10] && b[11] == 0;
                    // Format 2 differs from 3 only by the compact sample
                    // records, which this file (plain samples) does not hold.
                    let older_major = pos == 8 && b[8] == 2 && bytes[8] == 3;
                    assert!(
                        !t.warnings.is_empty() || older_minor || older_major,
                        "flip at {pos} ({mask:#x}) went unnoticed"
                    );
                    // Only the minor version may change without cutting the read short.
                    let minor_version = (10..12).contains(&pos);
                    assert!(
                        !t.complete || minor_version || older_major,
                        "flip at {pos} ({mask:#x})"
                    );
                }
            }
        }
    }
}

#[test]
fn bad_magic_and_version_are_errors() {
    let (bytes, _) = small_file();
    let mut elf = bytes.clone();
    elf[..4].copy_from_slice(b"\x7fELF");
    let e = read(&elf).expect_err("bad magic");
    assert!(matches!(e, TraceError::BadMagic { .. }), "{e}");
    assert!(e.to_string().contains("not a boottrace trace"));

    let mut v9 = bytes;
    v9[8] = 9;
    let e = read(&v9).expect_err("version");
    assert!(e.to_string().contains("version 9."), "{e}");

    let dir = tempfile::tempdir().expect("tempdir");
    let e = Trace::open(dir.path().join("missing.data")).expect_err("missing file");
    assert!(e.to_string().contains("missing.data"), "{e}");
}

#[test]
fn unknown_record_types_are_skipped() {
    let (mut bytes, ends) = small_file();
    // Insert a frame of type 200 (a newer minor version) after the metadata.
    let payload = [200u8, 1, 2, 3];
    let mut frame = Vec::new();
    frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    frame.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    frame.extend_from_slice(&payload);
    bytes.splice(ends[0]..ends[0], frame);
    let t = read(&bytes).expect("read");
    assert!(t.complete);
    assert!(t.sample_count() > 0);
    assert_eq!(t.warnings.len(), 2, "{:?}", t.warnings);
    assert!(t.warnings[0].contains("unknown record type 200"));
    // The writer did not count the inserted frame: the final record's count
    // exposes the insertion.
    assert!(t.warnings[1].contains("counts"), "{:?}", t.warnings);

    // Remove a whole record instead: framing stays intact, the count does not.
    let (mut bytes, ends) = small_file();
    bytes.drain(ends[3]..ends[4]);
    let t = read(&bytes).expect("read");
    assert!(t.complete);
    assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
    assert!(t.warnings[0].contains("counts"), "{:?}", t.warnings);
}

#[test]
fn threaded_sinks_write_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("t.data");
    let opts = small_opts();
    let recs = synth::records(&opts);
    let Record::Meta(meta) = &recs[0] else {
        panic!("first record is not Meta")
    };
    let writer = TraceWriter::create(&path, meta)
        .expect("create")
        .spawn()
        .expect("spawn");
    // Header records first, then samples from 4 threads at once.
    let (samples, others): (Vec<_>, Vec<_>) = recs[1..]
        .iter()
        .cloned()
        .partition(|r| matches!(r, Record::Sample(_)));
    let sink = writer.sink();
    for r in others {
        sink.append(r).expect("append");
    }
    std::thread::scope(|s| {
        for chunk in samples.chunks(samples.len().div_ceil(4)) {
            let sink = writer.sink();
            s.spawn(move || {
                for r in chunk {
                    sink.append(r.clone()).expect("append");
                }
                sink.flush().expect("flush");
            });
        }
    });
    drop(sink);
    let n = writer.finish().expect("finish");
    // Samples handed over one by one are framed as blocks of one, each after
    // the definition of its stack when that is new: as many frames or more.
    assert!(
        n as usize >= recs.len(),
        "{n} frames for {} records",
        recs.len()
    );
    let t = Trace::open(&path).expect("open");
    assert!(t.complete && t.warnings.is_empty(), "{:?}", t.warnings);
    assert_eq!(t.sample_count(), samples.len());
}
