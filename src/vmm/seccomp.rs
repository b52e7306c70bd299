//! Defence in depth, as Firecracker does: once a vCPU thread has set itself
//! up (sampler, timer), it installs a seccomp filter that allows only the
//! system calls its run loop needs. The guest drives that loop (exits,
//! device emulation, the unwinder reading guest memory): if a bug there is
//! ever exploited, the thread cannot open files, sockets or run programs.
//!
//! A call outside the list fails with EPERM rather than killing the process,
//! so a missed but harmless call costs an error, not the user's recording.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};

/// What the vCPU loop calls, measured with `strace -f` on sampled boots:
/// KVM ioctls, the sampling timer and its signal, counters (getrusage, perf
/// and KVM-stats reads), the trace sink (futex), virtio backends (file and
/// tap I/O), memory allocation and thread exit.
const ALLOWED: &[libc::c_long] = &[
    libc::SYS_ioctl,
    libc::SYS_read,
    libc::SYS_readv,
    libc::SYS_pread64,
    libc::SYS_preadv,
    libc::SYS_write,
    libc::SYS_writev,
    libc::SYS_pwrite64,
    libc::SYS_pwritev,
    libc::SYS_lseek,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_close,
    libc::SYS_futex,
    libc::SYS_sched_yield,
    libc::SYS_nanosleep,
    libc::SYS_clock_nanosleep,
    libc::SYS_clock_gettime,
    libc::SYS_getrusage,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_tgkill,
    libc::SYS_timer_gettime,
    libc::SYS_timer_settime,
    libc::SYS_timer_delete,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigprocmask,
    libc::SYS_sigaltstack,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_brk,
    libc::SYS_getrandom,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// Why the filter could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The filter did not compile (a bug in the list above).
    #[error("cannot build the vCPU seccomp filter: {0}")]
    Build(String),
    /// The kernel refused it.
    #[error("cannot install the vCPU seccomp filter: {0}")]
    Apply(String),
}

/// The vCPU threads' filter as BPF.
pub fn vcpu_filter() -> Result<BpfProgram, SeccompError> {
    let rules: BTreeMap<i64, Vec<SeccompRule>> =
        ALLOWED.iter().map(|&nr| (nr, Vec::new())).collect();
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        TargetArch::x86_64,
    )
    .map_err(|e| SeccompError::Build(e.to_string()))?;
    filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| SeccompError::Build(e.to_string()))
}

/// Installs the vCPU filter on the calling thread only (no TSYNC: the main
/// thread and the writer keep their freedom).
pub fn confine_current_thread() -> Result<(), SeccompError> {
    let prog = vcpu_filter()?;
    seccompiler::apply_filter(&prog).map_err(|e| SeccompError::Apply(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_builds() {
        let prog = vcpu_filter().expect("filter");
        assert!(prog.len() > ALLOWED.len());
    }

    /// On a thread of its own: an allowed call works, a socket is refused.
    #[test]
    fn a_confined_thread_cannot_open_a_socket() {
        std::thread::spawn(|| {
            confine_current_thread().expect("install");
            // SAFETY: plain syscalls with valid arguments.
            let tid = unsafe { libc::syscall(libc::SYS_gettid) };
            assert!(tid > 0);
            // SAFETY: socket(2) with constant arguments.
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            let errno = std::io::Error::last_os_error().raw_os_error();
            assert_eq!((fd, errno), (-1, Some(libc::EPERM)));
        })
        .join()
        .expect("confined thread");
    }
}
