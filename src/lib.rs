//! boottrace: a minimal KVM VMM that boots a Linux kernel and samples it from
//! its first instruction, and the tools that turn the samples into flamegraphs,
//! diffs, reports and exports.
//!
//! Data flows one way: `vmm` boots the guest, `sample` captures and unwinds each
//! vCPU, `trace` stores raw samples, `record` runs the boots, and `report`
//! symbolizes (through the `boottrace-symbols` crate) and renders them. `cli`
//! holds the command line's types. No module imports one above it
//! (`tests/layering.rs` checks).

pub mod cli;
pub mod record;
pub mod report;
pub mod sample;
pub mod trace;
pub mod vmm;
