//! Golden files, one rule for every test that has them: outputs are compared
//! byte for byte with `tests/golden/NAME`. With `BOOTTRACE_UPDATE_GOLDEN=1`
//! the files that differ are rewritten — and the test still FAILS, naming
//! them, so a regenerated file is never committed unknowingly: review the
//! diff, then run again without the variable.

#![allow(dead_code)]

use std::path::PathBuf;

/// The one variable that regenerates golden files.
pub const UPDATE_VAR: &str = "BOOTTRACE_UPDATE_GOLDEN";

/// Collects the checks of one test; [`Golden::finish`] fails if any differed.
#[derive(Default)]
pub struct Golden {
    problems: Vec<String>,
}

/// Directory of the golden files.
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

impl Golden {
    /// A new set of checks.
    pub fn new() -> Golden {
        Golden::default()
    }

    /// Compares `actual` with the golden file `name` (rewriting it in update mode).
    pub fn check(&mut self, name: &str, actual: &str) {
        let path = dir().join(name);
        let want = std::fs::read_to_string(&path).ok();
        if want.as_deref() == Some(actual) {
            return;
        }
        if std::env::var_os(UPDATE_VAR).is_some() {
            std::fs::create_dir_all(dir()).expect("mkdir tests/golden");
            std::fs::write(&path, actual).expect("write golden file");
            self.problems.push(format!(
                "{name}: regenerated; review `git diff tests/golden`, then run again without {UPDATE_VAR}"
            ));
            return;
        }
        let Some(want) = want else {
            self.problems.push(format!(
                "{}: missing; create it with {UPDATE_VAR}=1 and review it",
                path.display()
            ));
            return;
        };
        let diff: Vec<String> = want
            .lines()
            .zip(actual.lines())
            .filter(|(a, b)| a != b)
            .take(5)
            .map(|(a, b)| format!("- {a}\n+ {b}"))
            .collect();
        self.problems.push(format!(
            "{name} differs from the golden file ({} vs {} lines):\n{}",
            want.lines().count(),
            actual.lines().count(),
            diff.join("\n")
        ));
    }

    /// Panics if any check failed or regenerated a file.
    pub fn finish(self) {
        assert!(self.problems.is_empty(), "{}", self.problems.join("\n"));
    }
}

/// One check, then [`Golden::finish`].
pub fn check(name: &str, actual: &str) {
    let mut g = Golden::new();
    g.check(name, actual);
    g.finish();
}
