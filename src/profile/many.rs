//! Several trace files read as one set of runs: boots recorded in parallel
//! on many hosts (a Slurm job array, a Kubernetes Job), one file each, and
//! combined by `report`, `diff`, `check`, `flame` and `export`.
//!
//! An input is a trace file or a directory (its `*.data` files, in name
//! order). Runs keep the order of the inputs and are renumbered from 0. The
//! files must be of one kernel (same build-id, else same version banner):
//! runs of different kernels averaged together answer no question, so they
//! are refused unless the caller allows it.

use std::path::{Path, PathBuf};

use super::build::{open, BuildError};
use super::symbols::SymbolConfig;
use super::Profile;

/// Most files one directory input may contribute (a bound on what a
/// directory can make a reading command open).
pub const MAX_FILES: usize = 100_000;

/// Errors of reading several traces as one.
#[derive(Debug, thiserror::Error)]
pub enum ManyError {
    /// No input given, or a directory without trace files.
    #[error("no trace file to read{0}")]
    Empty(String),
    /// A directory could not be listed.
    #[error("cannot list {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A directory holds more than [`MAX_FILES`] trace files.
    #[error("{0} holds more than {MAX_FILES} trace files")]
    TooMany(PathBuf),
    /// One trace could not be read.
    #[error("cannot read {path}: {source}")]
    Open {
        /// The trace.
        path: PathBuf,
        /// Why.
        source: BuildError,
    },
    /// Traces of different kernels.
    #[error(
        "{first} and {other} were recorded with different kernels ({first_kernel} vs \
         {other_kernel}); give traces of one kernel per side, or --allow-mixed"
    )]
    Mixed {
        /// The first input.
        first: PathBuf,
        /// Its kernel.
        first_kernel: String,
        /// The input that differs.
        other: PathBuf,
        /// Its kernel.
        other_kernel: String,
    },
}

/// The trace files an input list names: files as given, directories
/// expanded to their `*.data` files in name order.
pub fn expand(inputs: &[PathBuf]) -> Result<Vec<PathBuf>, ManyError> {
    let mut out = Vec::new();
    for input in inputs {
        if !input.is_dir() {
            out.push(input.clone());
            continue;
        }
        let dir_err = |source| ManyError::Dir {
            path: input.clone(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(input).map_err(dir_err)? {
            let path = entry.map_err(dir_err)?.path();
            if path.extension().is_some_and(|e| e == "data") && path.is_file() {
                if files.len() >= MAX_FILES {
                    return Err(ManyError::TooMany(input.clone()));
                }
                files.push(path);
            }
        }
        if files.is_empty() {
            return Err(ManyError::Empty(format!(
                ": {} has no *.data files",
                input.display()
            )));
        }
        files.sort();
        out.extend(files);
    }
    if out.is_empty() {
        return Err(ManyError::Empty(String::new()));
    }
    Ok(out)
}

/// What identifies a profile's kernel: its build-id, else its version banner.
pub fn kernel_identity(p: &Profile) -> Option<String> {
    p.info
        .build_id
        .as_ref()
        .map(|b| format!("build-id {b}"))
        .or_else(|| p.info.kernel_version.clone())
}

/// Reads `inputs` (files or directories) as one profile. With
/// `allow_mixed` false, traces of different kernels are refused; a trace
/// whose kernel is unknown is taken as it is. The profile's `info.path`
/// lists the files (comma-separated) when there are several; the trace
/// warnings and symbol notes of each file are kept, prefixed by its path.
pub fn open_many(
    inputs: &[PathBuf],
    symbols: &SymbolConfig,
    allow_mixed: bool,
) -> Result<Profile, ManyError> {
    let files = expand(inputs)?;
    let mut acc: Option<(Profile, Option<String>)> = None;
    let several = files.len() > 1;
    for path in &files {
        let mut p = open(path, symbols).map_err(|source| ManyError::Open {
            path: path.clone(),
            source,
        })?;
        if several {
            let tag = |w: &String| format!("{}: {w}", path.display());
            p.trace_warnings = p.trace_warnings.iter().map(tag).collect();
        }
        let id = kernel_identity(&p);
        match &mut acc {
            None => acc = Some((p, id)),
            Some((first, first_id)) => {
                if let (false, Some(a), Some(b)) = (allow_mixed, first_id.as_ref(), id.as_ref()) {
                    if a != b {
                        return Err(ManyError::Mixed {
                            first: files[0].clone(),
                            first_kernel: a.clone(),
                            other: path.clone(),
                            other_kernel: b.clone(),
                        });
                    }
                }
                first.trace_warnings.append(&mut p.trace_warnings);
                for n in p.notes.drain(..) {
                    if !first.notes.contains(&n) {
                        first.notes.push(n);
                    }
                }
                first.absorb(p);
            }
        }
    }
    let (mut p, _) = acc.ok_or_else(|| ManyError::Empty(String::new()))?;
    if several {
        p.info.path = files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
    }
    Ok(p)
}

/// One input's display name for messages: the path, or "N files".
pub fn describe(inputs: &[PathBuf]) -> String {
    match inputs {
        [one] => one.display().to_string(),
        many => format!(
            "{} (+{} more)",
            many.first()
                .map_or(Path::new(""), |p| p.as_path())
                .display(),
            many.len().saturating_sub(1)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_expand_to_their_data_files_in_order() {
        let d = tempfile::tempdir().expect("tempdir");
        for n in ["b.data", "a.data", "notes.txt", "c.data.old"] {
            std::fs::write(d.path().join(n), b"x").expect("write");
        }
        std::fs::create_dir(d.path().join("sub.data")).expect("mkdir");
        let got = expand(&[d.path().to_path_buf(), PathBuf::from("/x/y.data")]).expect("expand");
        assert_eq!(
            got,
            vec![
                d.path().join("a.data"),
                d.path().join("b.data"),
                PathBuf::from("/x/y.data")
            ]
        );
        let empty = tempfile::tempdir().expect("tempdir");
        let e = expand(&[empty.path().to_path_buf()]).expect_err("empty dir");
        assert!(e.to_string().contains("no *.data files"), "{e}");
        assert!(matches!(expand(&[]), Err(ManyError::Empty(_))));
    }

    #[test]
    fn describe_names_one_or_counts_more() {
        assert_eq!(describe(&[PathBuf::from("a.data")]), "a.data");
        assert_eq!(
            describe(&[PathBuf::from("a.data"), PathBuf::from("b.data")]),
            "a.data (+1 more)"
        );
    }
}
