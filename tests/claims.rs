//! `docs/claims.md` maps README's claims to the tests that prove them. This
//! keeps the map honest: every test it names exists as a `#[test]` (not
//! `#[ignore]`d), every row names a test or says why none, and everything
//! README tells a user to type has a row: each subcommand, each option of
//! each subcommand (`diff --json` needs a row naming `diff` and `--json`),
//! each value of an option's `a|b|c` list (`--until first-instruction`,
//! `--format firefox`, `--weight wall`), each `sweep --vary` key and each
//! `BOOTTRACE_*` variable. An option README names that the binary does not
//! have fails too (README drifted from the CLI).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use regex::Regex;

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

/// The subcommands of `boottrace` (from its `--help`).
fn subcommands() -> Vec<String> {
    let help = help(&[]);
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(String::from)
        .collect()
}

/// `boottrace ARGS --help`.
fn help(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_boottrace"))
        .args(args)
        .arg("--help")
        .output()
        .expect("run boottrace --help");
    assert!(out.status.success(), "boottrace {args:?} --help failed");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every `--long` and `-s` option `boottrace SUB --help` lists.
fn cli_options(sub: &str) -> BTreeSet<String> {
    let opt = Regex::new(r"(?:^|[\s,])(--?[A-Za-z][A-Za-z0-9-]*)").expect("regex");
    help(&[sub])
        .lines()
        .filter(|l| l.trim_start().starts_with('-'))
        .flat_map(|l| {
            let head = l.trim_start().split("  ").next().unwrap_or("").to_string();
            opt.captures_iter(&head)
                .map(|c| c[1].to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// What README shows as code: the lines of fenced and indented blocks
/// (an indented line starting with `[` continues the line above, as in a
/// synopsis), and the inline code spans of the prose. Shell comments
/// (`#SBATCH …`) are left out: they are not boottrace's.
fn readme_code(readme: &str) -> Vec<String> {
    let mut code: Vec<String> = Vec::new();
    let mut prose = String::new();
    let mut fenced = false;
    for line in readme.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let block = fenced || line.starts_with("    ");
        if !block {
            prose.push_str(line);
            prose.push('\n');
            continue;
        }
        let text = line.trim();
        if text.starts_with('#') || text.is_empty() {
            continue;
        }
        match code.last_mut() {
            Some(prev) if !fenced && text.starts_with('[') && line.starts_with("     ") => {
                prev.push(' ');
                prev.push_str(text);
            }
            _ => code.push(text.to_string()),
        }
    }
    code.extend(
        prose
            .split('`')
            .skip(1)
            .step_by(2)
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" ")),
    );
    code
}

/// The rows of the claims table (header and rule left out).
fn claim_rows(claims: &str) -> Vec<&str> {
    claims
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| ---") && !l.starts_with("| README"))
        .collect()
}

/// A command line README shows, split into the subcommand it runs (when
/// it starts with one, after an optional `$ ` and `boottrace `) and its words.
fn command_of<'a>(text: &'a str, subs: &[String]) -> Option<&'a str> {
    let t = text.trim_start_matches("$ ").trim_start();
    let t = t.strip_prefix("boottrace ").unwrap_or(t);
    let word = t.split_whitespace().next()?;
    subs.iter().any(|s| s == word).then_some(word)
}

/// The options in a command line: `--name` (from `--name`, `[--name`,
/// `--name=V`, `(--name:`) and `-X`.
fn options_in(text: &str) -> Vec<String> {
    text.split_whitespace()
        .filter_map(|w| {
            let w = w.trim_start_matches(['[', '(']);
            if let Some(long) = w.strip_prefix("--") {
                let name: String = long
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                return name
                    .starts_with(|c: char| c.is_ascii_lowercase())
                    .then(|| format!("--{name}"));
            }
            let w = w.trim_end_matches([']', ')', ',']);
            let short = w.len() == 2
                && w.starts_with('-')
                && w.chars().nth(1).is_some_and(|c| c.is_ascii_alphabetic());
            short.then(|| w.to_string())
        })
        .collect()
}

#[test]
fn every_readme_command_option_and_value_has_a_row() {
    let readme = read("README.md");
    let claims = read("docs/claims.md");
    let rows = claim_rows(&claims);
    let subs = subcommands();
    assert!(subs.len() >= 7, "subcommands: {subs:?}");
    let known: BTreeSet<String> = subs.iter().flat_map(|s| cli_options(s)).collect();
    assert!(known.contains("--until") && known.contains("--item-threshold"));
    // Options of other programs README shows (cargo's, in a benchmark command).
    let foreign = ["--bench"];

    let list = Regex::new(r"(--[a-z][a-z0-9-]*)[ =]([A-Za-z0-9:_.-]+(?:\|[A-Za-z0-9:_.-]+)+)")
        .expect("regex");
    let mut missing = BTreeSet::new();
    let mut not_in_cli = BTreeSet::new();
    let mut need = |what: String, sub: Option<&str>| {
        // A row names the option (and, but for `record`'s, its subcommand
        // in code: `` `diff --json` ``, `` `diff` ``).
        let word = sub
            .filter(|s| *s != "record")
            .map(|s| Regex::new(&format!("`{s}[ `]")).expect("regex"));
        let found = rows.iter().any(|r| {
            r.contains(&what)
                && match &word {
                    Some(w) => w.is_match(r),
                    None => true,
                }
        });
        if !found {
            missing.insert(match sub {
                Some(s) if s != "record" => format!("{s} {what}"),
                _ => what,
            });
        }
    };
    for text in readme_code(&readme) {
        // `a && b`, `a | jq …`: each command on its own.
        for part in text.split("&&").flat_map(|p| p.split(" | ")) {
            let sub = command_of(part, &subs);
            if let Some(s) = sub {
                need(format!("`{s}"), None);
            }
            for o in options_in(part) {
                if foreign.contains(&o.as_str()) {
                    continue;
                }
                if !known.contains(&o) {
                    not_in_cli.insert(o.clone());
                }
                need(o, sub);
            }
            for c in list.captures_iter(part) {
                for v in c[2].split('|') {
                    // `serial:REGEX` → `--until serial:`.
                    let v = v
                        .split_once(':')
                        .map_or(v.to_string(), |(k, _)| format!("{k}:"));
                    need(format!("{} {v}", &c[1]), None);
                }
            }
        }
    }
    // `sweep --vary` keys, listed after "Keys:".
    let keys = readme
        .split_once("Keys:")
        .map(|(_, rest)| rest.split_once("several kernels").map_or(rest, |(k, _)| k))
        .expect("README lists the sweep keys after \"Keys:\"");
    let key = Regex::new(r"`([a-z]+)=").expect("regex");
    let mut n_keys = 0;
    for c in key.captures_iter(keys) {
        n_keys += 1;
        need(format!("{}=", &c[1]), Some("sweep"));
    }
    assert!(n_keys >= 5, "only {n_keys} sweep keys found");
    // Environment variables.
    let var = Regex::new(r"BOOTTRACE_[A-Z_]+").expect("regex");
    let vars: BTreeSet<&str> = var.find_iter(&readme).map(|m| m.as_str()).collect();
    for v in vars {
        need(v.to_string(), None);
    }
    assert!(
        not_in_cli.is_empty(),
        "README names options boottrace does not have: {not_in_cli:?}"
    );
    assert!(
        missing.is_empty(),
        "README commands, options and values with no row in docs/claims.md: {missing:?}"
    );
}

/// Every file or directory of the repository README names in code
/// (`src/vmm/compat.rs`, `docs/ENVIRONMENT.md`, `examples/bench-startup.sh`,
/// `flamegraphs/seed/` …) exists: README cites no file the repository lacks.
#[test]
fn every_file_the_readme_names_exists() {
    let readme = read("README.md");
    let tops = [
        "src/",
        "symbols/",
        "tests/",
        "benches/",
        "examples/",
        "kernel/",
        "docs/",
        "flamegraphs/",
    ];
    let path = Regex::new(r"[A-Za-z0-9_./-]+").expect("regex");
    let mut named = BTreeSet::new();
    for text in readme_code(&readme) {
        for m in path.find_iter(&text) {
            let p = m.as_str().trim_end_matches(['.', ',']);
            if tops.iter().any(|t| p.starts_with(t)) {
                named.insert(p.to_string());
            }
        }
    }
    assert!(
        named.len() >= 15,
        "only {} paths found: {named:?}",
        named.len()
    );
    let missing: Vec<&String> = named.iter().filter(|p| !root().join(p).exists()).collect();
    assert!(
        missing.is_empty(),
        "README names files that do not exist: {missing:?}"
    );
}
