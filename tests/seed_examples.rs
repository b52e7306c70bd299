//! The seed's experiments (examples/seed/): each script parses, the
//! gallery's README (flamegraphs/seed/README.md) names every script, and
//! every committed sweep chart opens in headless Chromium showing each of
//! its settings. No boot: the scripts are examples, run by hand.

mod chart_support;
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn scripts() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(repo().join("examples/seed"))
        .expect("examples/seed")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sh"))
        .collect();
    v.sort();
    v
}

#[test]
fn every_seed_script_parses_and_is_in_the_readme() {
    let scripts = scripts();
    assert!(scripts.len() >= 5, "too few scripts: {scripts:?}");
    let readme = std::fs::read_to_string(repo().join("flamegraphs/seed/README.md"))
        .expect("flamegraphs/seed/README.md");
    assert!(
        readme.contains("emulated-KVM"),
        "the README must say what its times are"
    );
    for s in &scripts {
        let out = Command::new("bash")
            .arg("-n")
            .arg(s)
            .output()
            .expect("run bash -n");
        assert!(
            out.status.success(),
            "{}: {}",
            s.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let name = s.file_name().expect("name").to_string_lossy();
        assert!(
            readme.contains(&format!("examples/seed/{name}")),
            "README does not mention examples/seed/{name}"
        );
    }
}

#[test]
fn committed_sweep_charts_open_in_chromium() {
    let gallery = repo().join("flamegraphs/seed");
    let mut charts = 0;
    for e in std::fs::read_dir(&gallery).expect("flamegraphs/seed") {
        let json = e.expect("entry").path();
        if json.extension().map_or(true, |x| x != "json") {
            continue;
        }
        let svg = json.with_extension("svg");
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&json).expect("read json")).expect("json");
        // Only sweeps have settings (create-vm.json is a report).
        let Some(settings) = doc["settings"].as_array() else {
            continue;
        };
        let labels: Vec<String> = settings
            .iter()
            .map(|s| s["label"].as_str().expect("label").to_string())
            .collect();
        assert!(svg.is_file(), "{} has no chart", json.display());
        let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
        chart_support::assert_chart_opens(&svg, &refs);
        charts += 1;
    }
    assert!(
        charts >= 4,
        "only {charts} sweep charts in {}",
        gallery.display()
    );
}
