//! Sampling a running guest (kicked out of KVM_RUN by `vmm::kick`): what is
//! captured per sample, the guest stack unwinders and the host-side counters.

pub mod blocked;
pub mod counters;
#[cfg(test)]
pub(crate) mod fake_tasks;
pub mod kaslr;
pub mod late;
pub mod pagewalk;
pub mod sampler;
pub mod task;
pub mod unwind;
