//! Page faults of the calling thread from `getrusage(RUSAGE_THREAD)`.
//!
//! These are the kernel's per-task `min_flt`/`maj_flt`, which
//! `mm_account_fault()` increments for every fault the task's memory
//! management handles — including the faults KVM takes through
//! `get_user_pages` when the guest first touches a page of its memory (those
//! have no user register frame and so are invisible to perf software events).
//! This is the counter that sees guest-memory faults.

use std::mem::MaybeUninit;

/// Why the thread's resource usage could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RusageError {
    /// getrusage(RUSAGE_THREAD) failed.
    #[error("getrusage(RUSAGE_THREAD) failed: {0}")]
    Getrusage(#[source] std::io::Error),
}

/// Cumulative page-fault totals of one thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ThreadFaults {
    /// Minor faults (no I/O): includes KVM's guest-memory faults.
    pub minflt: u64,
    /// Major faults (needed I/O).
    pub majflt: u64,
}

/// Reads the calling thread's page-fault totals (one syscall, no allocation).
pub fn thread_faults() -> Result<ThreadFaults, RusageError> {
    let mut ru = MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `ru` points to writable memory the size of a `struct rusage`,
    // which is all getrusage writes.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, ru.as_mut_ptr()) };
    if rc != 0 {
        return Err(RusageError::Getrusage(std::io::Error::last_os_error()));
    }
    // SAFETY: the struct was zero-initialised (a valid `rusage`) and then filled
    // by a successful getrusage.
    let ru = unsafe { ru.assume_init() };
    Ok(ThreadFaults {
        minflt: u64::try_from(ru.ru_minflt).unwrap_or(0),
        majflt: u64::try_from(ru.ru_majflt).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_faults_of_a_fresh_mapping_on_this_thread() {
        const PAGES: usize = 64;
        let (before, after) =
            super::super::around_fresh_page_faults(PAGES, || thread_faults().expect("getrusage"));
        assert!(
            after.minflt - before.minflt >= PAGES as u64,
            "{before:?} -> {after:?}"
        );
    }
}
