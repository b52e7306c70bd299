//! The trace's metadata record: how, where and on what the recording ran.

use crate::trace::{HostFacts, KernelInfo, RecordOptions, TraceMeta, UnwinderKind};
use crate::vmm::compat::CompatMode;

use super::config::RecordConfig;
use super::kernel::KernelFacts;

/// Nanoseconds since the Unix epoch, now.
pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn host_facts(compat: CompatMode) -> HostFacts {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    };
    HostFacts {
        kernel_version: read("/proc/sys/kernel/osrelease"),
        hostname: read("/proc/sys/kernel/hostname"),
        pvm_workarounds: compat.workarounds(),
    }
}

/// The options as the trace keeps them.
pub fn record_options(cfg: &RecordConfig, freq: u32) -> RecordOptions {
    RecordOptions {
        mem: cfg.mem,
        cpus: u32::from(cfg.cpus),
        freq,
        runs: cfg.runs,
        until: cfg.until_text.clone(),
        timeout_ms: u64::try_from(cfg.timeout.as_millis()).unwrap_or(u64::MAX),
        hugepages: cfg.hugepages,
        populate: cfg.populate,
        capture: cfg.capture.name().to_string(),
        skip_decompressor: cfg.skip_decompressor,
        initrd: cfg.initrd.as_ref().map(|p| p.display().to_string()),
        cmdline_extra: cfg.cmdline_extra.clone(),
        virtio: cfg.virtio.describe(),
        root: cfg.virtio.root.clone(),
    }
}

/// The metadata record for this recording.
pub fn trace_meta(
    cfg: &RecordConfig,
    facts: &KernelFacts,
    compat: CompatMode,
    freq: u32,
) -> TraceMeta {
    let mut identity = KernelInfo::from(facts.image.identity());
    identity.path = cfg.kernel.display().to_string();
    TraceMeta {
        boottrace_version: env!("CARGO_PKG_VERSION").to_string(),
        argv: cfg.argv.clone(),
        kernel: identity,
        kernel_cmdline: crate::vmm::full_cmdline(compat, &cfg.virtio, &cfg.cmdline_extra),
        options: record_options(cfg, freq),
        host: host_facts(compat),
        unwinder: if freq == 0 {
            UnwinderKind::None
        } else {
            facts.unwinder_kind.clone()
        },
        vmlinux: cfg.vmlinux.as_ref().map(|p| p.display().to_string()),
        sample_freq_hz: freq,
        wall_start_unix_ns: unix_ns(),
    }
}
