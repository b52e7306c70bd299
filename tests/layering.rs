//! The module layering holds: no import cycle between top-level modules, and
//! no lower layer importing a higher one. Data flows one way:
//!
//! ```text
//! {vmm, trace} <- sample <- record <- profile <- analysis <- render <- cli
//! ```
//! (`main.rs` may use anything.) The symbols crate's modules must not form a
//! cycle either.
//!
//! How: every `crate::X` / `$crate::X` path and every `super::` path that
//! climbs to the crate root is a reference from the file's top-level module
//! to `X`. Comments and the `#[cfg(test)]` module at the end of a file are
//! left out (tests may reach across layers).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers, low to high. Modules on one layer may use each other (without a
/// cycle); a module may use any lower layer, never a higher one. Modules not
/// listed (yet) are only checked for cycles.
const LAYERS: &[&[&str]] = &[
    &["vmm", "trace"],
    &["sample"],
    &["record"],
    &["profile"],
    &["analysis"],
    &["render", "report"],
    &["cli"],
];

/// Layer violations that exist today and are being removed: (from, to, why).
/// The test fails when one of these no longer occurs, so the list shrinks.
const KNOWN_VIOLATIONS: &[(&str, &str, &str)] = &[];

/// Top-level module → the top-level modules it references.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The module path of a source file relative to its crate's `src/`
/// (`vmm/exit.rs` → [vmm, exit]; `vmm/mod.rs` → [vmm]; `lib.rs` → []).
fn module_path(rel: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Source text without comments and without a trailing `#[cfg(test)] mod`.
fn code_of(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]")
            && lines
                .get(i + 1)
                .is_some_and(|n| n.trim_start().starts_with("mod "))
        {
            break;
        }
        let code = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The first path segment after `at` (skipping a `{` group: all its items).
fn targets_after(code: &str, at: usize) -> Vec<String> {
    let rest = &code[at..];
    if let Some(group) = rest.strip_prefix('{') {
        // `crate::{a::X, b}`: the first segment of each item at depth 0.
        let mut out = Vec::new();
        let mut depth = 0;
        let mut item_start = true;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => item_start = true,
                c if item_start && is_ident(c) => {
                    let name: String = group[i..].chars().take_while(|&c| is_ident(c)).collect();
                    out.push(name);
                    item_start = false;
                }
                _ => {}
            }
        }
        return out;
    }
    let name: String = rest.chars().take_while(|&c| is_ident(c)).collect();
    if name.is_empty() {
        Vec::new()
    } else {
        vec![name]
    }
}

/// The top-level modules a file refers to (its own excluded).
fn references(module: &[String], text: &str) -> BTreeSet<String> {
    let code = code_of(text);
    let mut out = BTreeSet::new();
    let bytes = code.as_bytes();
    for (at, _) in code.match_indices("crate::") {
        // `pub(crate)` or an identifier ending in "crate" is not a path.
        if at > 0 && is_ident(bytes[at - 1] as char) {
            continue;
        }
        out.extend(targets_after(&code, at + "crate::".len()));
    }
    for (at, _) in code.match_indices("super::") {
        if at > 0 && (is_ident(bytes[at - 1] as char) || bytes[at - 1] == b':') {
            continue; // counted with the first `super::` of a chain
        }
        let mut ups = 0;
        let mut pos = at;
        while code[pos..].starts_with("super::") {
            ups += 1;
            pos += "super::".len();
        }
        // A file's items sit in module `module`: `super` is its parent.
        if ups == module.len() {
            out.extend(targets_after(&code, pos));
        }
    }
    if let Some(me) = module.first() {
        out.remove(me);
    }
    out
}

/// Builds the graph of one crate from (path relative to its src/, text).
fn graph_of(files: &[(PathBuf, String)]) -> Graph {
    let mut g = Graph::new();
    for (rel, text) in files {
        let module = module_path(rel);
        let Some(top) = module.first() else {
            continue; // lib.rs / main.rs: the root may use anything
        };
        let refs = references(&module, text);
        g.entry(top.clone()).or_default().extend(refs);
    }
    // Keep only edges to modules of this crate (not `crate::` of a macro
    // argument or an item defined in lib.rs).
    let known: BTreeSet<String> = g.keys().cloned().collect();
    for targets in g.values_mut() {
        targets.retain(|t| known.contains(t));
    }
    g
}

/// Every cycle, as a module path that returns to its start (one per
/// strongly connected component of more than one module).
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut in_cycle: BTreeSet<String> = BTreeSet::new();
    for start in g.keys() {
        if in_cycle.contains(start) {
            continue;
        }
        // Depth-first search for a path back to `start`.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((node, path)) = stack.pop() {
            for next in g.get(&node).into_iter().flatten() {
                if next == start {
                    let mut cycle = path.clone();
                    cycle.push(start.clone());
                    in_cycle.extend(path.iter().cloned());
                    found.push(cycle);
                    stack.clear();
                    break;
                }
                if seen.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
    }
    found
}

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Edges from a lower layer to a higher one.
fn upward_edges(g: &Graph) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (from, targets) in g {
        for to in targets {
            if let (Some(a), Some(b)) = (layer_of(from), layer_of(to)) {
                if a < b {
                    out.push((from.clone(), to.clone()));
                }
            }
        }
    }
    out
}

fn read_tree(src: &Path) -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, src: &Path, out: &mut Vec<(PathBuf, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        for p in entries {
            if p.is_dir() {
                walk(&p, src, out);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let text =
                    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                let rel = p.strip_prefix(src).expect("under src").to_path_buf();
                out.push((rel, text));
            }
        }
    }
    let mut out = Vec::new();
    walk(src, src, &mut out);
    assert!(!out.is_empty(), "no sources under {}", src.display());
    out
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn boottrace_modules_have_no_cycle_and_no_upward_import() {
    let g = graph_of(&read_tree(&root().join("src")));
    for m in ["vmm", "trace", "sample", "record", "cli"] {
        assert!(g.contains_key(m), "module {m} not found: {:?}", g.keys());
    }
    let cyc = cycles(&g);
    assert!(cyc.is_empty(), "import cycles: {cyc:?}");
    let up = upward_edges(&g);
    let unexpected: Vec<_> = up
        .iter()
        .filter(|(a, b)| !KNOWN_VIOLATIONS.iter().any(|(x, y, _)| a == x && b == y))
        .collect();
    assert!(
        unexpected.is_empty(),
        "lower layer imports a higher one: {unexpected:?}"
    );
    for (a, b, why) in KNOWN_VIOLATIONS {
        assert!(
            up.iter().any(|(x, y)| x == a && y == b),
            "{a} -> {b} is gone ({why}): remove it from KNOWN_VIOLATIONS"
        );
    }
    println!("module graph: {g:?}");
}

#[test]
fn symbols_modules_have_no_cycle() {
    let g = graph_of(&read_tree(&root().join("symbols/src")));
    for m in ["image", "kallsyms", "layout"] {
        assert!(g.contains_key(m), "module {m} not found: {:?}", g.keys());
    }
    let cyc = cycles(&g);
    assert!(
        cyc.is_empty(),
        "import cycles in the symbols crate: {cyc:?}"
    );
}

fn files(list: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
    list.iter()
        .map(|(p, t)| (PathBuf::from(p), t.to_string()))
        .collect()
}

/// The checker finds what it is meant to find.
#[test]
fn checker_finds_a_made_up_cycle_and_an_upward_import() {
    let g = graph_of(&files(&[
        ("lib.rs", "pub mod vmm; pub mod sample; pub mod record;"),
        // vmm -> sample: upward, and with sample -> vmm a cycle.
        ("vmm/mod.rs", "pub mod vcpu;"),
        (
            "vmm/vcpu.rs",
            "use crate::sample::timer::{self, ThreadTimer};",
        ),
        ("sample/mod.rs", "use crate::{vmm::VcpuFd, trace};\n"),
        // `super::super::` from a nested file reaches the root.
        ("record/run.rs", "use super::super::vmm::boot;"),
        (
            "trace/mod.rs",
            "// use crate::record; (a comment)\npub(crate) fn f() {}",
        ),
        (
            "cli/mod.rs",
            "use crate::record;\n#[cfg(test)]\nmod tests { use crate::vmm; }",
        ),
    ]));
    assert_eq!(g["vmm"], BTreeSet::from(["sample".to_string()]), "{g:?}");
    assert_eq!(
        g["sample"],
        BTreeSet::from(["trace".to_string(), "vmm".to_string()])
    );
    assert_eq!(g["record"], BTreeSet::from(["vmm".to_string()]));
    assert!(g["trace"].is_empty(), "comments are not references");
    assert_eq!(
        g["cli"],
        BTreeSet::from(["record".to_string()]),
        "test modules are left out"
    );
    let cyc = cycles(&g);
    assert_eq!(cyc.len(), 1, "{cyc:?}");
    assert!(cyc[0].contains(&"vmm".to_string()) && cyc[0].contains(&"sample".to_string()));
    assert_eq!(
        upward_edges(&g),
        [("vmm".to_string(), "sample".to_string())]
    );
}

#[test]
fn checker_accepts_a_clean_layering() {
    let g = graph_of(&files(&[
        ("vmm/mod.rs", "pub mod exit;"),
        ("vmm/exit.rs", "use super::devices::Devices;"),
        ("trace/mod.rs", ""),
        ("sample/mod.rs", "use crate::vmm; use crate::trace::Record;"),
        ("record/mod.rs", "use crate::{sample, trace, vmm};"),
        ("cli/mod.rs", "use crate::record::RecordConfig;"),
    ]));
    assert!(cycles(&g).is_empty());
    assert!(upward_edges(&g).is_empty());
}
