//! `docs/claims.md` maps README's claims to the tests that prove them. This
//! keeps the map honest: every test it names exists as a `#[test]` (not
//! `#[ignore]`d), every row names a test or says why none, and every option
//! README's `record` synopsis lists appears in the map.

use std::collections::BTreeSet;
use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// The code spans of a line (text between backticks).
fn spans(line: &str) -> Vec<&str> {
    line.split('`').skip(1).step_by(2).collect()
}

/// `path.rs::name` → (path, name).
fn test_ref(span: &str) -> Option<(&str, &str)> {
    let (path, name) = span.split_once("::")?;
    (path.ends_with(".rs") && !name.is_empty()).then_some((path, name))
}

/// Whether `src` defines `fn name(` as a test that runs.
fn is_test(src: &str, name: &str) -> Result<(), String> {
    let lines: Vec<&str> = src.lines().collect();
    let def = format!("fn {name}(");
    let at = lines
        .iter()
        .position(|l| l.trim_start().starts_with(&def))
        .ok_or_else(|| format!("no fn {name}"))?;
    // The attributes right above it (doc comments may sit between).
    let attrs: Vec<&str> = lines[..at]
        .iter()
        .rev()
        .map(|l| l.trim())
        .take_while(|l| l.starts_with("#[") || l.starts_with("///") || l.starts_with("//"))
        .collect();
    if !attrs.contains(&"#[test]") {
        return Err(format!("fn {name} is not a #[test]"));
    }
    if attrs.iter().any(|a| a.starts_with("#[ignore")) {
        return Err(format!(
            "fn {name} is #[ignore]d: a skipped test proves nothing"
        ));
    }
    Ok(())
}

#[test]
fn every_test_named_in_the_claims_map_exists() {
    let claims = read("docs/claims.md");
    let mut errors = Vec::new();
    let mut rows = 0;
    let mut named = BTreeSet::new();
    for line in claims
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| ---"))
    {
        let cells: Vec<&str> = line.split(" | ").collect();
        let Some(proof) = cells.last() else { continue };
        if cells[0] == "| README claim" {
            continue;
        }
        rows += 1;
        let refs: Vec<(&str, &str)> = spans(proof).into_iter().filter_map(test_ref).collect();
        let unproven = proof.starts_with("not tested")
            || proof.starts_with("not a test")
            || proof.starts_with("not in the suite");
        if refs.is_empty() && !unproven {
            errors.push(format!("row names no test and says not why: {line}"));
        }
        for (path, name) in refs {
            named.insert(format!("{path}::{name}"));
            match std::fs::read_to_string(root().join(path)) {
                Ok(src) => {
                    if let Err(e) = is_test(&src, name) {
                        errors.push(format!("{path}: {e}"));
                    }
                }
                Err(e) => errors.push(format!("{path}: {e}")),
            }
        }
    }
    assert!(rows > 50, "only {rows} claims in docs/claims.md");
    assert!(errors.is_empty(), "docs/claims.md:\n{}", errors.join("\n"));
    println!("{rows} claims, {} distinct tests named", named.len());
}

/// Every option of README's `record` synopsis, and every subcommand, is in
/// the claims map.
#[test]
fn every_record_option_in_the_readme_is_in_the_claims_map() {
    let readme = read("README.md");
    let claims = read("docs/claims.md");
    let synopsis: String = readme
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("boottrace record KERNEL"))
        .take_while(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    assert!(!synopsis.is_empty(), "README has no record synopsis");
    let mut options: BTreeSet<String> = BTreeSet::new();
    for word in synopsis.split(|c: char| c.is_whitespace() || c == '[' || c == ']') {
        if let Some(opt) = word.strip_prefix("--") {
            let name: String = opt
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if !name.is_empty() {
                options.insert(format!("--{name}"));
            }
        }
    }
    assert!(options.len() > 10, "options found: {options:?}");
    let missing: Vec<_> = options
        .iter()
        .filter(|o| !claims.contains(o.as_str()))
        .collect();
    assert!(missing.is_empty(), "not in docs/claims.md: {missing:?}");
    for sub in [
        "`flame`", "`report`", "`diff`", "`export", "`-F`", "`-q`", "`-v`",
    ] {
        assert!(claims.contains(sub), "{sub} not in docs/claims.md");
    }
}
