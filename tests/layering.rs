//! The module layering holds: no import cycle between top-level modules, and
//! no lower layer importing a higher one. Data flows one way:
//!
//! ```text
//! {vmm, trace} <- sample <- record <- profile <- analysis <- render <- cli
//! ```
//! (`main.rs` may use anything.) The symbols crate's modules must not form a
//! cycle either, and neither may the submodules of any one module
//! (`analysis::fold` ↔ `analysis::functions` would fail, as
//! `report::fold` ↔ `report::symbolize` did before issue 8).
//!
//! How: every `crate::…` / `$crate::…` path and every `super::…` path is
//! resolved to an absolute module path; a reference from module `a::b::c` to
//! `a::x::y` is an edge `b → x` among the submodules of `a` (at the top
//! level: from the file's top-level module to `x`). Comments and the
//! `#[cfg(test)]` module at the end of a file are left out (tests may reach
//! across layers). Limits: a path through a parent's re-export (`super::Item`
//! where the parent re-exports a sibling's item) is not seen as naming that
//! sibling, and `super` inside an inline non-test `mod` is resolved as if it
//! were at the file's level.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers, low to high. Modules on one layer may use each other (without a
/// cycle); a module may use any lower layer, never a higher one. Modules not
/// listed (yet) are only checked for cycles.
const LAYERS: &[&[&str]] = &[
    &["vmm", "trace", "output"],
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

/// The paths that start at `code[at..]` (after `crate::` or `super::…`):
/// `a::b::X` is one path `[a, b, X]`; a `{…}` group gives one path per item
/// (`a::{b::X, c}` → `[a, b, X]`, `[a, c]`), groups nested at any depth.
fn paths_after(code: &str, at: usize) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    parse_path(&code[at..], Vec::new(), &mut out);
    out
}

/// Parses one path (segments, then maybe a group) at the start of `rest`,
/// prefixed by `prefix`, into `out`. Returns the bytes consumed.
fn parse_path(rest: &str, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut pos = 0;
    loop {
        let tail = &rest[pos..];
        if let Some(group) = tail.strip_prefix('{') {
            return pos + 1 + parse_group(group, &prefix, out);
        }
        let name: String = tail.chars().take_while(|&c| is_ident(c)).collect();
        if name.is_empty() {
            break;
        }
        pos += name.len();
        prefix.push(name);
        if rest[pos..].starts_with("::") {
            pos += 2;
        } else {
            break;
        }
    }
    if !prefix.is_empty() {
        out.push(prefix);
    }
    pos
}

/// Parses the items of a `{…}` group (after its `{`) up to its `}`; returns
/// the bytes consumed, the `}` included.
fn parse_group(group: &str, prefix: &[String], out: &mut Vec<Vec<String>>) -> usize {
    let mut pos = 0;
    while let Some(c) = group[pos..].chars().next() {
        match c {
            '}' => return pos + 1,
            c if is_ident(c) || c == '{' => {
                pos += parse_path(&group[pos..], prefix.to_vec(), out).max(1);
                // `X as Y`: skip to the item's end.
                while let Some(c) = group[pos..].chars().next() {
                    if c == ',' || c == '}' {
                        break;
                    }
                    pos += c.len_utf8();
                }
            }
            c => pos += c.len_utf8(),
        }
    }
    pos
}

/// The absolute paths (from the crate root) a file in `module` refers to.
fn references(module: &[String], text: &str) -> Vec<Vec<String>> {
    let code = code_of(text);
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    for (at, _) in code.match_indices("crate::") {
        // `pub(crate)` or an identifier ending in "crate" is not a path.
        if at > 0 && is_ident(bytes[at - 1] as char) {
            continue;
        }
        out.extend(paths_after(&code, at + "crate::".len()));
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
        let Some(base) = module.len().checked_sub(ups) else {
            continue;
        };
        for p in paths_after(&code, pos) {
            let mut abs = module[..base].to_vec();
            abs.extend(p);
            out.push(abs);
        }
    }
    out
}

/// Module graphs of one crate, one per module that has submodules (the
/// crate root is `[]`): the edges among that module's direct submodules.
fn graphs_of(files: &[(PathBuf, String)]) -> BTreeMap<Vec<String>, Graph> {
    let mut graphs: BTreeMap<Vec<String>, Graph> = BTreeMap::new();
    for (rel, _) in files {
        let module = module_path(rel);
        for i in 0..module.len() {
            graphs
                .entry(module[..i].to_vec())
                .or_default()
                .entry(module[i].clone())
                .or_default();
        }
    }
    for (rel, text) in files {
        let module = module_path(rel);
        if module.is_empty() {
            continue; // lib.rs / main.rs: the root may use anything
        }
        for target in references(&module, text) {
            let k = module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if k < module.len() && k < target.len() {
                let g = graphs.entry(module[..k].to_vec()).or_default();
                g.entry(module[k].clone())
                    .or_default()
                    .insert(target[k].clone());
            }
        }
    }
    // Keep only edges to modules (not to items defined in the parent, or
    // `crate::` of a macro argument).
    for g in graphs.values_mut() {
        let known: BTreeSet<String> = g.keys().cloned().collect();
        for targets in g.values_mut() {
            targets.retain(|t| known.contains(t));
        }
    }
    graphs
}

/// The graph of the crate's top-level modules.
fn graph_of(files: &[(PathBuf, String)]) -> Graph {
    graphs_of(files).remove(&Vec::new()).unwrap_or_default()
}

/// Every cycle among the submodules of any module, named by that module.
fn submodule_cycles(files: &[(PathBuf, String)]) -> Vec<(String, Vec<String>)> {
    graphs_of(files)
        .iter()
        .filter(|(parent, _)| !parent.is_empty())
        .flat_map(|(parent, g)| cycles(g).into_iter().map(|c| (parent.join("::"), c)))
        .collect()
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
    for m in ["vmm", "trace", "output", "sample", "record", "cli"] {
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

/// Within every module, its submodules form no cycle either.
#[test]
fn boottrace_submodules_have_no_cycle() {
    let files = read_tree(&root().join("src"));
    let graphs = graphs_of(&files);
    for m in [
        &["trace"][..],
        &["render"],
        &["analysis"],
        &["render", "report"],
    ] {
        let key: Vec<String> = m.iter().map(|s| s.to_string()).collect();
        assert!(graphs.contains_key(&key), "module {m:?} not found");
    }
    let cyc = submodule_cycles(&files);
    assert!(cyc.is_empty(), "import cycles among submodules: {cyc:?}");
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
    let sub = submodule_cycles(&read_tree(&root().join("symbols/src")));
    assert!(sub.is_empty(), "import cycles among submodules: {sub:?}");
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

/// Cycles among the submodules of one module are found, whether the files
/// name each other by `super::`, by `crate::` paths or inside groups.
#[test]
fn checker_finds_a_made_up_submodule_cycle() {
    let list = [
        ("lib.rs", "pub mod analysis; pub mod render;"),
        (
            "analysis/mod.rs",
            "pub mod fold; pub mod functions; pub mod stats;",
        ),
        ("analysis/fold.rs", "use super::functions::Cost;"),
        (
            "analysis/functions.rs",
            "use crate::analysis::{stats::Summary, fold::{fold, Weight}};",
        ),
        ("analysis/stats.rs", "use super::super::render::Message;"),
        ("render/mod.rs", "pub mod report; pub mod html;"),
        ("render/report/mod.rs", "use super::html::render;"),
        ("render/report/text.rs", "pub fn fmt_ns() {}"),
        ("render/html.rs", "use crate::render::report::text::fmt_ns;"),
    ];
    let files = files(&list);
    let graphs = graphs_of(&files);
    let analysis = &graphs[&vec!["analysis".to_string()]];
    assert_eq!(
        analysis["functions"],
        BTreeSet::from(["fold".to_string(), "stats".to_string()]),
        "{analysis:?}"
    );
    // A path that leaves the module is an edge of the level it leaves at.
    assert!(analysis["stats"].is_empty(), "{analysis:?}");
    assert_eq!(
        graphs[&Vec::new()]["analysis"],
        BTreeSet::from(["render".to_string()])
    );
    let mut cyc = submodule_cycles(&files);
    cyc.sort();
    assert_eq!(cyc.len(), 2, "{cyc:?}");
    assert_eq!(cyc[0].0, "analysis");
    assert!(cyc[0].1.contains(&"fold".to_string()) && cyc[0].1.contains(&"functions".to_string()));
    assert_eq!(cyc[1].0, "render");
    assert!(cyc[1].1.contains(&"html".to_string()) && cyc[1].1.contains(&"report".to_string()));
    // The checked-in layering of the top level is unaffected.
    assert!(cycles(&graph_of(&files)).is_empty());
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
