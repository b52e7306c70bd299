//! What `record` is asked to do, as plain values (no clap: the command line
//! is one way to build a [`RecordConfig`], `diff` is another).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::sample::sampler::CaptureMode;
use crate::vmm::compat::{CompatChoice, CompatMode};
use crate::vmm::Until;

/// Default sampling rate. Real-KVM boots of microVMs take milliseconds: at
/// 10 kHz (one sample per 100 µs per vCPU, like a high `perf record -F`) a
/// 6 ms boot yields ~60 samples per run, so `--runs` adds statistical weight;
/// the per-sample cost (one exit + register capture + unwind) stays a few
/// percent on a real host.
pub const DEFAULT_FREQ: u32 = 10_000;

/// Default sampling rate on a PVM host, where every exit and re-entry costs
/// ~50 µs of emulation: 10 kHz would spend most of the boot sampling.
pub const PVM_DEFAULT_FREQ: u32 = 1_000;

/// Default guest memory.
pub const DEFAULT_MEM: u64 = 128 << 20;

/// Default `--timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// Default trace file.
pub const DEFAULT_OUTPUT: &str = "boottrace.data";

/// Everything one `record` needs.
#[derive(Debug, Clone)]
pub struct RecordConfig {
    /// Kernel image: bzImage or ELF vmlinux.
    pub kernel: PathBuf,
    /// Initial ramdisk.
    pub initrd: Option<PathBuf>,
    /// Kernel command-line arguments added after boottrace's defaults.
    pub cmdline_extra: String,
    /// Guest memory in bytes.
    pub mem: u64,
    /// Number of vCPUs (1..=254).
    pub cpus: u8,
    /// Back guest memory with huge pages.
    pub hugepages: bool,
    /// Pre-fault all guest memory.
    pub populate: bool,
    /// Give up on a boot after this long.
    pub timeout: Duration,
    /// When a boot ends.
    pub until: Until,
    /// `until` as the user wrote it (`user`, `serial:REGEX`, …), for the trace.
    pub until_text: String,
    /// Host workarounds.
    pub compat: CompatChoice,
    /// Samples per second per vCPU; `None`: the host's default
    /// ([`DEFAULT_FREQ`], or [`PVM_DEFAULT_FREQ`] on a PVM host); 0: no sampling.
    pub freq: Option<u32>,
    /// Boots into one trace (at least 1).
    pub runs: u32,
    /// Trace file to write (an existing one is moved to `NAME.old`).
    pub output: PathBuf,
    /// vmlinux matching the kernel, stored as a hint for symbolization.
    pub vmlinux: Option<PathBuf>,
    /// Boot a bzImage's ELF payload instead of its decompressor.
    pub skip_decompressor: bool,
    /// How registers are read per sample.
    pub capture: CaptureMode,
    /// virtio-mmio devices and the root device.
    pub virtio: crate::vmm::virtio::VirtioConfig,
    /// The command line that asked for this recording, stored in the trace.
    pub argv: Vec<String>,
    /// When the process started: the first run's times count from here, so
    /// reading the kernel image shows up as a phase.
    pub started: Instant,
}

impl RecordConfig {
    /// A recording of `kernel` with every other option at its default (the
    /// same defaults as the command line).
    pub fn new(kernel: impl Into<PathBuf>) -> RecordConfig {
        RecordConfig {
            kernel: kernel.into(),
            initrd: None,
            cmdline_extra: String::new(),
            mem: DEFAULT_MEM,
            cpus: 1,
            hugepages: false,
            populate: false,
            timeout: DEFAULT_TIMEOUT,
            until: Until::User,
            until_text: "user".into(),
            compat: CompatChoice::Auto,
            freq: None,
            runs: 1,
            output: PathBuf::from(DEFAULT_OUTPUT),
            vmlinux: None,
            skip_decompressor: false,
            capture: CaptureMode::Sync,
            virtio: crate::vmm::virtio::VirtioConfig::default(),
            argv: Vec::new(),
            started: Instant::now(),
        }
    }

    /// The sampling rate for a host in `compat` mode.
    pub fn freq_for(&self, compat: CompatMode) -> u32 {
        self.freq.unwrap_or(match compat {
            CompatMode::Pvm => PVM_DEFAULT_FREQ,
            CompatMode::None => DEFAULT_FREQ,
        })
    }
}

/// Parses an `--until` value: `user`, `first-instruction`, `shutdown`,
/// `marker`, `serial:REGEX`, or a kernel function name (resolved against
/// the kernel's symbols when the image is read).
pub fn parse_until(s: &str) -> Result<Until, String> {
    Ok(match s {
        "user" => Until::User,
        "shutdown" => Until::Shutdown,
        "marker" => Until::Marker,
        "first-instruction" => Until::FirstInstruction,
        _ => match s.strip_prefix("serial:") {
            Some(re) => {
                Until::Serial(regex::Regex::new(re).map_err(|e| format!("bad regex: {e}"))?)
            }
            None if is_function_name(s) => Until::Function(s.to_string()),
            None => return Err(
                "expected user, first-instruction, shutdown, marker, serial:REGEX or a kernel function name".into(),
            ),
        },
    })
}

/// A C identifier (as kernel function names are; `.` for compiler clones
/// such as `foo.isra.0`).
fn is_function_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c == '.' || c.is_ascii_alphanumeric())
        && s.len() <= 256
}

/// Parses `128M`, `2G`, `512K` or plain bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("unknown size suffix in {s:?} (use K, M, G)")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("not a size: {s:?}"))?;
    n.checked_mul(mult)
        .ok_or_else(|| format!("size too large: {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("128M"), Ok(128 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn until_parses() {
        assert!(matches!(parse_until("user"), Ok(Until::User)));
        assert!(matches!(
            parse_until("serial:Run /init"),
            Ok(Until::Serial(_))
        ));
        assert!(parse_until("serial:(").is_err());
        assert!(
            matches!(parse_until("start_kernel"), Ok(Until::Function(f)) if f == "start_kernel")
        );
        assert!(parse_until("some time").is_err());
        assert!(parse_until("9lives").is_err());
        assert!(parse_until("").is_err());
    }

    #[test]
    fn default_freq_depends_on_the_host() {
        let mut c = RecordConfig::new("bzImage");
        assert_eq!(c.freq_for(CompatMode::None), DEFAULT_FREQ);
        assert_eq!(c.freq_for(CompatMode::Pvm), PVM_DEFAULT_FREQ);
        c.freq = Some(0);
        assert_eq!(c.freq_for(CompatMode::Pvm), 0);
    }
}
