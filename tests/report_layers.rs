//! The reading side's layers point one way: profile ← analysis ← render ←
//! cli. A source file of a lower layer naming a higher one (`crate::render`
//! in analysis, …) fails this test; so do the reading layers reaching into
//! recording (`record`, `vmm`, `sample`).

use std::path::Path;

/// (directory under src/, modules of this crate it must not name).
const RULES: &[(&str, &[&str])] = &[
    (
        "profile",
        &["analysis", "render", "cli", "record", "vmm", "sample"],
    ),
    (
        "analysis",
        &["render", "cli", "record", "vmm", "sample", "trace"],
    ),
    ("render", &["cli", "record", "vmm", "sample"]),
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn lower_layers_do_not_name_higher_ones() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut bad = Vec::new();
    let mut checked = 0;
    for (layer, forbidden) in RULES {
        let mut files = Vec::new();
        rust_files(&src.join(layer), &mut files);
        assert!(!files.is_empty(), "src/{layer} has no Rust files");
        for f in files {
            checked += 1;
            let text = std::fs::read_to_string(&f).expect("read");
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for m in *forbidden {
                    if code.contains(&format!("crate::{m}::"))
                        || code.contains(&format!("crate::{m};"))
                    {
                        bad.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                    }
                }
            }
        }
    }
    assert!(checked > 10, "only {checked} files checked");
    assert!(bad.is_empty(), "layering violations:\n{}", bad.join("\n"));
}
