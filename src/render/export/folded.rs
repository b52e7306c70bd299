//! Collapsed stacks: `root;…;leaf weight`, one line per stack, sorted.

use std::io::{self, Write};

use crate::analysis::fold::{fold, RunSelect, Weight};
use crate::profile::Profile;

/// Writes the collapsed stacks of the selected runs.
pub fn write(p: &Profile, runs: RunSelect, weight: Weight, out: impl Write) -> io::Result<()> {
    fold(p, runs, weight).write_to(out)
}
