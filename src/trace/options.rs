//! The recording options a trace keeps, typed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How `record` was configured, as stored in [`TraceMeta`](super::TraceMeta).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordOptions {
    /// Guest memory in bytes.
    pub mem: u64,
    /// Number of vCPUs.
    pub cpus: u32,
    /// Samples per second per vCPU (0: no sampling).
    pub freq: u32,
    /// Boots asked for.
    pub runs: u32,
    /// The `--until` condition as the user wrote it (`user`, `serial:REGEX`, …).
    pub until: String,
    /// `--timeout` in milliseconds.
    pub timeout_ms: u64,
    /// Guest memory backed by huge pages.
    pub hugepages: bool,
    /// Guest memory pre-faulted.
    pub populate: bool,
    /// How registers were read per sample (`sync` or `ioctl`).
    pub capture: String,
    /// The bzImage's ELF payload was booted directly.
    pub skip_decompressor: bool,
    /// Initial ramdisk path, if any.
    pub initrd: Option<String>,
    /// Kernel command-line arguments added after boottrace's defaults.
    pub cmdline_extra: String,
    /// virtio devices, as `record` describes them (empty: none).
    pub virtio: String,
    /// `--root` device, if given.
    pub root: Option<String>,
}

impl RecordOptions {
    /// Options from a format-1 trace's string map: known keys are parsed,
    /// unparsable values fall back to the default.
    pub fn from_v1_map(m: &BTreeMap<String, String>) -> RecordOptions {
        let get = |k: &str| m.get(k).map(String::as_str).unwrap_or_default();
        let num = |k: &str| get(k).parse::<u64>().unwrap_or(0);
        let flag = |k: &str| get(k) == "true";
        // Format 1 stored `Until` and `CaptureMode` as their Debug text.
        let until = match get("until") {
            "User" => "user".to_string(),
            "Shutdown" => "shutdown".to_string(),
            "Marker" => "marker".to_string(),
            s => match s
                .strip_prefix("Serial(Regex(\"")
                .and_then(|r| r.strip_suffix("\"))"))
            {
                Some(re) => format!("serial:{re}"),
                None => s.to_string(),
            },
        };
        let timeout_ms = get("timeout_s")
            .parse::<f64>()
            .ok()
            .filter(|t| t.is_finite() && *t >= 0.0)
            .map_or(0, |t| (t * 1e3).min(u64::MAX as f64) as u64);
        RecordOptions {
            mem: num("mem"),
            cpus: u32::try_from(num("cpus")).unwrap_or(0),
            freq: u32::try_from(num("freq")).unwrap_or(0),
            runs: u32::try_from(num("runs")).unwrap_or(0),
            until,
            timeout_ms,
            hugepages: flag("hugepages"),
            populate: flag("populate"),
            capture: get("capture").to_ascii_lowercase(),
            skip_decompressor: flag("skip_decompressor"),
            initrd: Some(get("initrd").to_string()).filter(|s| !s.is_empty()),
            cmdline_extra: get("cmdline_extra").to_string(),
            // Format 1 had no virtio devices.
            virtio: String::new(),
            root: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_map_converts() {
        let m: BTreeMap<String, String> = [
            ("mem", "134217728"),
            ("cpus", "2"),
            ("freq", "25"),
            ("runs", "3"),
            ("until", "Serial(Regex(\"Linux version\"))"),
            ("timeout_s", "12.5"),
            ("hugepages", "false"),
            ("populate", "true"),
            ("capture", "Sync"),
            ("skip_decompressor", "false"),
            ("initrd", ""),
            ("cmdline_extra", "quiet"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let o = RecordOptions::from_v1_map(&m);
        assert_eq!(o.mem, 128 << 20);
        assert_eq!((o.cpus, o.freq, o.runs), (2, 25, 3));
        assert_eq!(o.until, "serial:Linux version");
        assert_eq!(o.timeout_ms, 12_500);
        assert!(o.populate && !o.hugepages);
        assert_eq!(o.capture, "sync");
        assert_eq!(o.initrd, None);
        assert_eq!(o.cmdline_extra, "quiet");
        assert_eq!(
            RecordOptions::from_v1_map(&BTreeMap::new()),
            RecordOptions::default()
        );
    }
}
