//! Page faults of the calling thread as perf software events count them.
//!
//! `PERF_COUNT_SW_PAGE_FAULTS` is raised by the architecture's fault handler
//! (x86: `do_user_addr_fault`) with the faulting register frame, and
//! `PERF_COUNT_SW_PAGE_FAULTS_MAJ` by `mm_account_fault()` only when it has such
//! a frame. Faults KVM takes through `get_user_pages` when the guest first
//! touches its memory have no frame: **perf does not see them**. What perf does
//! see is the VMM's own faults: its user-space code touching fresh memory (e.g.
//! loading the kernel image into guest memory) and, with
//! [`PerfScope::UserAndKernel`], kernel-mode faults on user addresses such as a
//! `copy_to_user` into a fresh buffer.
//!
//! Measured on a PVM host (docs/ENVIRONMENT.md), where CPL-0 guest code is emulated:
//! a guest writing 512 fresh pages gave 513 minor faults in getrusage, 1 here
//! with [`PerfScope::UserOnly`] and 513 with [`PerfScope::UserAndKernel`] — the
//! emulator writes guest memory with `copy_to_user`, a kernel-mode fault that
//! has a register frame. On a hardware-virtualised host those faults come from
//! EPT/NPT violations through get_user_pages and no scope sees them. So
//! `UserOnly` (the default of `VcpuCounters`) excludes guest-memory faults on
//! both kinds of host and means one thing: the VMM's own user-space faults.
//!
//! perf may be unavailable (no perf support, `perf_event_paranoid`, seccomp);
//! callers treat that as "no perf figures", not as a failure.

use std::fs::File;
use std::io::Read;
use std::os::fd::FromRawFd;

use perf_event_open_sys as sys;
use sys::bindings::{
    perf_event_attr, PERF_COUNT_SW_PAGE_FAULTS, PERF_COUNT_SW_PAGE_FAULTS_MAJ,
    PERF_FLAG_FD_CLOEXEC, PERF_FORMAT_GROUP, PERF_TYPE_SOFTWARE,
};

/// Why the perf page-fault events could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum PerfError {
    /// perf page-fault counting was not requested.
    #[error("perf page-fault counting was not requested")]
    NotRequested,
    /// perf_event_open failed for a software page-fault event.
    #[error("perf_event_open({event}) failed: {source}")]
    Open {
        /// The event's name.
        event: &'static str,
        /// The error (EACCES, ENOENT, ENOSYS, ...).
        #[source]
        source: std::io::Error,
    },
    /// read(2) of the perf event group failed.
    #[error("reading the perf page-fault events failed: {0}")]
    Read(#[source] std::io::Error),
    /// The perf group read returned an unexpected layout.
    #[error("perf group read returned {got_bytes} bytes, {nr} events; expected {want} events")]
    BadRead {
        /// Bytes returned.
        got_bytes: usize,
        /// Event count in the returned data.
        nr: u64,
        /// Event count expected.
        want: u64,
    },
}

/// Which faults of the thread the perf events count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerfScope {
    /// Only faults raised in user mode: the VMM's own code touching memory.
    /// Works for unprivileged users under `perf_event_paranoid` = 2.
    UserOnly,
    /// Also kernel-mode faults on user addresses (uaccess, e.g. a syscall
    /// writing into a fresh buffer). Falls back to nothing if not permitted.
    UserAndKernel,
}

/// Cumulative perf page-fault counts of one thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PerfFaultCounts {
    /// `PERF_COUNT_SW_PAGE_FAULTS`: all faults with a register frame in scope.
    pub faults: u64,
    /// `PERF_COUNT_SW_PAGE_FAULTS_MAJ`, if that event could be opened.
    pub majflt: Option<u64>,
}

/// The perf page-fault events of the thread that opened them, as one group
/// read with one `read(2)`.
#[derive(Debug)]
pub struct PerfFaults {
    leader: File,
    /// Kept open so the group member keeps counting.
    major: Option<File>,
    scope: PerfScope,
}

impl PerfFaults {
    /// Opens the events for the calling thread (pid 0, any CPU). Counting
    /// starts now; only this thread's faults are counted (no inheritance).
    pub fn open(scope: PerfScope) -> Result<Self, PerfError> {
        let leader = open_event(
            PERF_COUNT_SW_PAGE_FAULTS,
            "PERF_COUNT_SW_PAGE_FAULTS",
            scope,
            None,
        )?;
        // The major-fault member is optional: without it the group still works.
        let major = open_event(
            PERF_COUNT_SW_PAGE_FAULTS_MAJ,
            "PERF_COUNT_SW_PAGE_FAULTS_MAJ",
            scope,
            Some(&leader),
        )
        .ok();
        Ok(Self {
            leader,
            major,
            scope,
        })
    }

    /// The scope the events were opened with.
    pub fn scope(&self) -> PerfScope {
        self.scope
    }

    /// Reads the current counts (one `read(2)`, no allocation).
    pub fn read(&mut self) -> Result<PerfFaultCounts, PerfError> {
        // PERF_FORMAT_GROUP layout: u64 nr; u64 value[nr].
        let want: u64 = if self.major.is_some() { 2 } else { 1 };
        let mut raw = [0u8; 8 * 3];
        let got = loop {
            match self.leader.read(&mut raw) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(PerfError::Read(e)),
            }
        };
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&raw[8 * i..8 * i + 8]);
            u64::from_ne_bytes(w)
        };
        let nr = word(0);
        if nr != want || got != 8 * (1 + want as usize) {
            return Err(PerfError::BadRead {
                got_bytes: got,
                nr,
                want,
            });
        }
        Ok(PerfFaultCounts {
            faults: word(1),
            majflt: (want == 2).then(|| word(2)),
        })
    }
}

fn open_event(
    config: u32,
    event: &'static str,
    scope: PerfScope,
    group: Option<&File>,
) -> Result<File, PerfError> {
    use std::os::fd::AsRawFd;
    let mut attr = perf_event_attr {
        size: std::mem::size_of::<perf_event_attr>() as u32,
        type_: PERF_TYPE_SOFTWARE,
        config: config.into(),
        read_format: PERF_FORMAT_GROUP.into(),
        ..Default::default()
    };
    attr.set_disabled(0);
    attr.set_inherit(0);
    attr.set_exclude_kernel(u64::from(scope == PerfScope::UserOnly));
    attr.set_exclude_hv(1);
    let group_fd = group.map_or(-1, |g| g.as_raw_fd());
    // SAFETY: `attr` is a fully initialised perf_event_attr whose `size` field
    // matches its type; pid 0 / cpu -1 means the calling thread on any CPU;
    // `group_fd` is -1 or a perf fd we own and keep open across the call.
    let fd =
        unsafe { sys::perf_event_open(&mut attr, 0, -1, group_fd, PERF_FLAG_FD_CLOEXEC.into()) };
    if fd < 0 {
        return Err(PerfError::Open {
            event,
            source: std::io::Error::last_os_error(),
        });
    }
    // SAFETY: `fd` is a new descriptor returned by perf_event_open, owned by nobody else.
    Ok(unsafe { File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_faults_of_a_fresh_mapping_are_counted() {
        // A host without perf software events cannot run this check: fail
        // with the reason rather than pass without checking.
        let mut perf = PerfFaults::open(PerfScope::UserOnly)
            .unwrap_or_else(|e| panic!("cannot open a perf software event here: {e}"));
        const PAGES: usize = 64;
        let (before, after) =
            super::super::around_fresh_page_faults(PAGES, || perf.read().expect("read"));
        assert!(
            after.faults - before.faults >= PAGES as u64,
            "{before:?} -> {after:?}"
        );
    }
}
