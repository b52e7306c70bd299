//! Host-side costs per sample: what the host paid for a vCPU between two
//! samples of it.
//!
//! Three sources, each cumulative, turned into deltas by [`VcpuCounters`]:
//! - [`rusage`]: the vCPU thread's minor/major page faults from
//!   `getrusage(RUSAGE_THREAD)`. **Sees the faults KVM takes when the guest
//!   first touches its memory** (get_user_pages), plus the VMM's own faults.
//! - [`perf`]: `PERF_COUNT_SW_PAGE_FAULTS` (and `_MAJ`) for the vCPU thread.
//!   **Does not see guest-memory faults** taken through get_user_pages; sees the
//!   VMM's own user-space faults. Optional: `None` where perf is unavailable.
//! - [`kvm_stats`]: KVM's binary statistics of the vCPU (`exits`, `io_exits`,
//!   `mmio_exits`, `halt_exits`, `pf_taken`, `pf_fixed`, …), read by name.
//!   Optional too: empty where the kernel lacks `KVM_GET_STATS_FD`.
//!
//! The difference `minflt - perf_faults` over a sample is therefore an
//! estimate of the faults the host took on behalf of guest memory (on a PVM
//! host, where guest kernel code is emulated, those faults are kernel-mode
//! `copy_to_user` faults instead: still in rusage, still outside perf's default
//! user-only scope — see [`perf`]).

pub mod kvm_stats;
pub mod perf;
pub mod rusage;

use std::marker::PhantomData;

use kvm_ioctls::VcpuFd;

pub use kvm_stats::{KvmStats, KvmStatsError, StatDesc};
pub use perf::{PerfError, PerfFaultCounts, PerfFaults, PerfScope};
pub use rusage::{thread_faults, RusageError, ThreadFaults};

/// What one vCPU cost the host since its previous sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterDeltas<'a> {
    /// Minor page faults of the vCPU thread (getrusage), including those KVM
    /// took when the guest first touched its memory.
    pub minflt: u64,
    /// Major page faults of the vCPU thread (getrusage).
    pub majflt: u64,
    /// Page faults of the vCPU thread as perf software events count them: the
    /// VMM's own user-space faults, never KVM's guest-memory faults. `None`
    /// where perf is unavailable.
    pub perf_faults: Option<u64>,
    /// Major page faults as perf counts them (same scope as `perf_faults`).
    pub perf_majflt: Option<u64>,
    /// KVM statistics that changed: `(stat id, delta)`, the stat id indexing
    /// [`VcpuCounters::stat_names`]. Only non-zero deltas are listed.
    pub kvm: &'a [(u16, u64)],
}

/// The counters of one vCPU, living on that vCPU's thread.
///
/// Create it on the vCPU thread (getrusage and perf count the calling thread)
/// and call [`sample`](Self::sample) there at every sample. It is deliberately
/// not `Send`, so it cannot be moved to another thread by mistake.
///
/// Per sample it costs one `getrusage` and one `pread` of the KVM stats (if
/// available), plus one `read` of the perf group (if available) when perf
/// can have counted something ([`sample`](Self::sample)), and allocates
/// nothing.
#[derive(Debug)]
pub struct VcpuCounters {
    perf: Option<PerfFaults>,
    kvm: Option<KvmStats>,
    perf_error: Option<PerfError>,
    kvm_error: Option<KvmStatsError>,
    rusage_error: Option<RusageError>,
    prev_rusage: ThreadFaults,
    prev_perf: PerfFaultCounts,
    /// Set once perf has been read (the baseline).
    perf_read: bool,
    prev_kvm: Vec<u64>,
    cur_kvm: Vec<u64>,
    kvm_deltas: Vec<(u16, u64)>,
    _thread_bound: PhantomData<*const ()>,
}

impl VcpuCounters {
    /// Opens all counters for the calling thread and `vcpu`, counting perf page
    /// faults in user mode only ([`PerfScope::UserOnly`]). Never fails: a
    /// counter that cannot be opened is reported as unavailable.
    pub fn new(vcpu: &VcpuFd) -> Self {
        Self::with_perf_scope(vcpu, Some(PerfScope::UserOnly))
    }

    /// Like [`new`](Self::new), choosing which faults perf counts, or with
    /// `None` no perf events at all (saves one `read` per sample).
    pub fn with_perf_scope(vcpu: &VcpuFd, scope: Option<PerfScope>) -> Self {
        let (perf, perf_error) = match scope.map(PerfFaults::open) {
            Some(Ok(p)) => (Some(p), None),
            Some(Err(e)) => (None, Some(e)),
            None => (None, Some(PerfError::NotRequested)),
        };
        let (kvm, kvm_error) = match KvmStats::from_vcpu(vcpu) {
            Ok(k) => (Some(k), None),
            Err(e) => (None, Some(e)),
        };
        let n = kvm.as_ref().map_or(0, KvmStats::len);
        let mut this = Self {
            perf,
            kvm,
            perf_error,
            kvm_error,
            rusage_error: None,
            prev_rusage: ThreadFaults::default(),
            prev_perf: PerfFaultCounts::default(),
            perf_read: false,
            prev_kvm: vec![0; n],
            cur_kvm: vec![0; n],
            kvm_deltas: Vec::with_capacity(n),
            _thread_bound: PhantomData,
        };
        // Baseline: the first sample reports what happened since now.
        let _ = this.sample();
        this
    }

    /// Names of the KVM statistics, indexed by the stat ids of
    /// [`CounterDeltas::kvm`]; empty when KVM stats could not be opened (they
    /// stay listed if reading them fails later).
    pub fn stat_names(&self) -> &[String] {
        self.kvm.as_ref().map_or(&[], KvmStats::stat_names)
    }

    /// The stat id of a KVM statistic, by name.
    pub fn stat_id(&self, name: &str) -> Option<u16> {
        self.kvm.as_ref()?.index_of(name)
    }

    /// Why perf figures are missing, if they are.
    pub fn perf_unavailable(&self) -> Option<&PerfError> {
        self.perf_error.as_ref()
    }

    /// Why KVM statistics are missing, if they are.
    pub fn kvm_stats_unavailable(&self) -> Option<&KvmStatsError> {
        self.kvm_error.as_ref()
    }

    /// Why getrusage figures are zero, if they are (never seen on Linux).
    pub fn rusage_unavailable(&self) -> Option<&RusageError> {
        self.rusage_error.as_ref()
    }

    /// Reads all counters and returns the deltas since the previous call (or
    /// since creation). A counter whose read fails is dropped for the rest of
    /// the recording and its error kept for [`perf_unavailable`] /
    /// [`kvm_stats_unavailable`]; the sample itself never fails.
    ///
    /// With [`PerfScope::UserOnly`], perf is read only when getrusage's
    /// counts moved: perf then counts page faults raised in this thread's
    /// user mode, and each of those that completes is counted in the
    /// thread's `min_flt`/`maj_flt` too, before the thread runs on (a fault
    /// retried for a pending signal is counted by perf at each attempt and
    /// by getrusage once, when it completes; one that fails is a SIGSEGV or
    /// SIGBUS, fatal here; a legacy vsyscall, never made by this program,
    /// is the one completed user fault perf counts alone). So unmoved
    /// getrusage counts mean unmoved perf counts, and the `read(2)` — the
    /// dearest of the three counter reads, an IPI-style
    /// `smp_call_function_single` to this CPU — is skipped with the same
    /// result. Other scopes (uaccess faults fixed up with `-EFAULT` count in
    /// perf only) read perf every time.
    ///
    /// [`perf_unavailable`]: Self::perf_unavailable
    /// [`kvm_stats_unavailable`]: Self::kvm_stats_unavailable
    pub fn sample(&mut self) -> CounterDeltas<'_> {
        let (minflt, majflt) = if self.rusage_error.is_some() {
            (0, 0)
        } else {
            match thread_faults() {
                Ok(now) => {
                    let d = (
                        now.minflt.saturating_sub(self.prev_rusage.minflt),
                        now.majflt.saturating_sub(self.prev_rusage.majflt),
                    );
                    self.prev_rusage = now;
                    d
                }
                Err(e) => {
                    self.rusage_error = Some(e);
                    (0, 0)
                }
            }
        };

        let (mut perf_faults, mut perf_majflt) = (None, None);
        let rusage_still = self.rusage_error.is_none() && minflt == 0 && majflt == 0;
        if let Some(perf) = self.perf.as_mut() {
            let skip = rusage_still && self.perf_read && perf.scope() == PerfScope::UserOnly;
            let read = if skip {
                // Nothing perf counts happened: as a read would say.
                Ok(self.prev_perf)
            } else {
                perf.read()
            };
            self.perf_read = true;
            match read {
                Ok(now) => {
                    perf_faults = Some(now.faults.saturating_sub(self.prev_perf.faults));
                    perf_majflt = match (now.majflt, self.prev_perf.majflt) {
                        (Some(n), Some(p)) => Some(n.saturating_sub(p)),
                        (Some(n), None) => Some(n),
                        _ => None,
                    };
                    self.prev_perf = now;
                }
                Err(e) => {
                    self.perf = None;
                    self.perf_error = Some(e);
                }
            }
        }

        self.kvm_deltas.clear();
        let kvm_failed = self.kvm_error.is_some();
        if let Some(kvm) = self.kvm.as_mut().filter(|_| !kvm_failed) {
            match kvm.read_into(&mut self.cur_kvm) {
                Ok(()) => kvm_stats::nonzero_deltas(
                    &mut self.prev_kvm,
                    &self.cur_kvm,
                    &mut self.kvm_deltas,
                ),
                Err(e) => self.kvm_error = Some(e),
            }
        }

        CounterDeltas {
            minflt,
            majflt,
            perf_faults,
            perf_majflt,
            kvm: &self.kvm_deltas,
        }
    }
}

/// Test helper: reads a counter, writes one byte to each of `pages` fresh
/// anonymous pages (one first-touch fault each), reads it again, and returns
/// both readings.
#[cfg(test)]
pub(crate) fn around_fresh_page_faults<T>(pages: usize, mut read: impl FnMut() -> T) -> (T, T) {
    let len = pages * 4096;
    // SAFETY: anonymous private mapping, no fixed address; checked below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    let before = read();
    for i in 0..pages {
        // SAFETY: i * 4096 < len, inside the mapping just created.
        unsafe { std::ptr::write_volatile(p.cast::<u8>().add(i * 4096), 1) };
    }
    let after = read();
    // SAFETY: unmapping exactly the mapping created above.
    unsafe { libc::munmap(p, len) };
    (before, after)
}
