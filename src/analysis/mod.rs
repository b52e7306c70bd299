//! Analyses of a [`crate::profile::Profile`]: each reads the profile and
//! returns data (no formatting, no printing). Everything is linear in the
//! trace: results are keyed by distinct stack or name, never dense per run
//! × function.
//!
//! - [`fold`]: the one folding implementation (weights, run selection,
//!   folded stacks, flame-chart order).
//! - [`functions`]: self/total cost per function.
//! - [`phases`]: kernel boot phases, `start_kernel` stages, initcalls.
//! - [`initcalls`]: initcalls by exact wall time, named points, console cost.
//! - [`quality`]: unwind quality.
//! - [`stats`]: summaries over runs, Welch's test.
//! - [`tasks`]: time per guest task.
//! - [`waits`]: what the boot thread waited on (wall-clock view, Waits table).
//! - [`headline`]: the one-line summary in every title.
//! - [`doc`]: the report as data (and its JSON schema).
//! - [`diffnorm`], [`difftable`]: diff normalization and per-function deltas.
//! - [`check`]: baseline vs candidate, thresholds and significance (`check`).

pub mod check;
pub mod devices;
pub mod diffnorm;
pub mod difftable;
pub mod doc;
pub mod fold;
pub mod functions;
pub mod headline;
pub mod initcalls;
pub mod phases;
pub mod quality;
pub mod stats;
pub mod sweep;
pub mod tasks;
pub mod waits;
