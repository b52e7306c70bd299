//! boottrace: a minimal KVM VMM that boots a Linux kernel and samples it from
//! its first instruction, and the tools that turn the samples into flamegraphs,
//! diffs, reports and exports.
//!
//! Data flows one way: `vmm` boots the guest, `sample` captures and unwinds each
//! vCPU, `trace` stores raw samples, and `report` symbolizes (through the
//! `boottrace-symbols` crate) and renders them.

pub mod output;
pub mod record;
pub mod report;
pub mod sample;
pub mod trace;
pub mod vmm;
