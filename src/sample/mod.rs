//! Sampling a running guest: the timer that kicks vCPUs out of KVM_RUN, what is
//! captured per sample, the guest stack unwinders and the host-side counters.

pub mod counters;
pub mod kaslr;
pub mod pagewalk;
pub mod sampler;
pub mod timer;
pub mod unwind;
