//! boottrace: a minimal KVM VMM that boots a Linux kernel and samples it from
//! its first instruction, and the tools that turn the samples into flamegraphs,
//! diffs, reports and exports.
//!
//! Data flows one way: `vmm` boots the guest, `sample` captures and unwinds each
//! vCPU, `trace` stores raw samples; `profile` symbolizes (through the
//! `boottrace-symbols` crate) and interns them into the one profile model,
//! `analysis` computes on it, `render` draws and writes it, and `cli` holds
//! the command-line types. No module imports one above it
//! (`tests/layering.rs` checks).

pub mod analysis;
pub mod cli;
pub mod output;
pub mod profile;
pub mod record;
pub mod render;
pub mod sample;
pub mod trace;
pub mod vmm;
