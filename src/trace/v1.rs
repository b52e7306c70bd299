//! Records of format 1 that differ from today's, and their conversion.
//!
//! Format 1 (boottrace before issue 8) stored the recording options as a
//! string map. Its other records encode exactly like format 2's: phase
//! names, end reasons and the unwinder were strings, which the typed enums
//! still store as strings (see `names`), and its layout record embedded the
//! symbols crate's `RunLayout`, whose fields then matched [`TraceLayout`]
//! field for field. `tests/trace_compat.rs` reads a committed format-1 file.
//!
//! [`TraceLayout`]: super::TraceLayout

use std::collections::BTreeMap;

use serde::Deserialize;

use super::names::UnwinderKind;
use super::options::RecordOptions;
use super::record::{HostFacts, KernelInfo, TraceMeta};

/// `TraceMeta` as format 1 stored it (field order is the encoding).
#[derive(Debug, Deserialize)]
pub struct TraceMetaV1 {
    boottrace_version: String,
    argv: Vec<String>,
    kernel: KernelInfo,
    kernel_cmdline: String,
    options: BTreeMap<String, String>,
    host: HostFacts,
    unwinder: String,
    vmlinux: Option<String>,
    sample_freq_hz: u32,
    wall_start_unix_ns: u64,
}

impl From<TraceMetaV1> for TraceMeta {
    fn from(m: TraceMetaV1) -> TraceMeta {
        TraceMeta {
            boottrace_version: m.boottrace_version,
            argv: m.argv,
            kernel: m.kernel,
            kernel_cmdline: m.kernel_cmdline,
            options: RecordOptions::from_v1_map(&m.options),
            host: m.host,
            unwinder: UnwinderKind::from_name(&m.unwinder),
            vmlinux: m.vmlinux,
            sample_freq_hz: m.sample_freq_hz,
            wall_start_unix_ns: m.wall_start_unix_ns,
        }
    }
}
