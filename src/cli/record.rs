//! `boottrace record`'s arguments.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::record::config::{parse_size, parse_until, DEFAULT_OUTPUT};
use crate::record::RecordConfig;
use crate::sample::sampler::CaptureMode;
use crate::vmm::compat::CompatChoice;

/// Options of `boottrace record`.
#[derive(Debug, Clone, clap::Args)]
pub struct RecordArgs {
    /// Kernel image: bzImage or ELF vmlinux (recognised by content).
    pub kernel: PathBuf,
    /// Initial ramdisk (e.g. a cpio with /init).
    #[arg(long)]
    pub initrd: Option<PathBuf>,
    /// Extra kernel command-line arguments, added after boottrace's defaults.
    #[arg(long, default_value = "")]
    pub cmdline: String,
    /// Guest memory, e.g. 128M, 2G.
    #[arg(long, default_value = "128M", value_parser = parse_size)]
    pub mem: u64,
    /// Number of vCPUs (an MP table describes them).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=254))]
    pub cpus: u8,
    /// Back guest memory with huge pages (MAP_HUGETLB; they must be reserved).
    #[arg(long)]
    pub hugepages: bool,
    /// Pre-fault all guest memory before boot (MAP_POPULATE).
    #[arg(long)]
    pub populate: bool,
    /// Give up on a boot after this many seconds.
    #[arg(long, default_value_t = 600.0, value_parser = parse_seconds)]
    pub timeout: f64,
    /// When a boot ends: user (first user-mode instruction), first-instruction
    /// (VMM start-up only: the guest runs nothing), shutdown, marker, serial:REGEX.
    #[arg(long, default_value = "user", value_parser = check_until)]
    pub until: String,
    /// Host workarounds: auto-detect, none, or pvm.
    #[arg(long, value_enum, default_value = "auto")]
    pub compat: CompatArg,
    /// Samples per second per vCPU; 0 records without sampling (the overhead
    /// baseline). Default: 10000, or 1000 on a PVM host.
    #[arg(short = 'F', long = "freq", value_parser = parse_freq)]
    pub freq: Option<u32>,
    /// Boot this many times into one trace.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub runs: u32,
    /// Output trace file.
    #[arg(short = 'o', long = "output", default_value = DEFAULT_OUTPUT)]
    pub output: PathBuf,
    /// vmlinux matching the kernel, stored as a hint for later symbolization.
    #[arg(long)]
    pub vmlinux: Option<PathBuf>,
    /// Do not echo the guest console (status still goes to stderr).
    #[arg(short, long)]
    pub quiet: bool,
    /// Also show details: each run's kernel layout (KASLR slide and how it was found).
    #[arg(short, long)]
    pub verbose: bool,
    /// Boot a bzImage's kernel proper (its ELF payload, through the PVH or
    /// 64-bit entry) instead of its decompressor: for hosts that cannot run
    /// the decompressor (e.g. zstd's BMI2 code under PVM). Skips decompression
    /// and KASLR, so it is not a faithful boot of the image.
    #[arg(long)]
    pub skip_decompressor: bool,
    /// How registers are read per sample: sync (SYNC_REGS, no ioctl) or ioctl
    /// (KVM_GET_REGS + KVM_GET_SREGS); for measuring the difference.
    #[arg(long, value_enum, default_value = "sync")]
    pub capture: CaptureArg,
    /// Raw disk image as a virtio-blk device, read-only unless `,rw`;
    /// repeatable, the first is /dev/vda.
    #[arg(long = "disk", value_name = "FILE[,rw]")]
    pub disks: Vec<String>,
    /// A virtio-net device: `--net` (link up, no backend: frames are counted
    /// and dropped) or `--net tap=NAME` (an existing tap device); repeatable.
    #[arg(long = "net", value_name = "tap=NAME", num_args = 0..=1, default_missing_value = "")]
    pub nets: Vec<String>,
    /// Root device to mount, e.g. /dev/vda: adds `root=DEV rootfstype=ext4`
    /// and `ro`, or `rw` when that disk was given with `,rw`.
    #[arg(long)]
    pub root: Option<String>,
}

/// `--compat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompatArg {
    /// Detect the host.
    Auto,
    /// Never apply workarounds.
    None,
    /// Always apply the PVM workarounds.
    Pvm,
}

/// `--capture`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CaptureArg {
    /// SYNC_REGS: no ioctl per sample.
    Sync,
    /// KVM_GET_REGS + KVM_GET_SREGS per sample.
    Ioctl,
    /// Kick only: the timer kicks, the vCPU re-enters, nothing is recorded
    /// (the bare exit round trip, for benchmarks).
    None,
}

fn check_until(s: &str) -> Result<String, String> {
    parse_until(s).map(|_| s.to_string())
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    let t: f64 = s
        .parse()
        .map_err(|_| format!("not a number of seconds: {s:?}"))?;
    if !t.is_finite() || !(MIN_TIMEOUT_S..=MAX_TIMEOUT_S).contains(&t) {
        return Err(format!(
            "--timeout must be between {MIN_TIMEOUT_S} and {MAX_TIMEOUT_S} seconds, not {s:?}"
        ));
    }
    Ok(t)
}

/// Shortest `--timeout` (seconds): a boot's set-up alone takes longer.
pub const MIN_TIMEOUT_S: f64 = 0.001;

/// Longest `--timeout` (seconds): one week.
pub const MAX_TIMEOUT_S: f64 = 604_800.0;

/// Highest `-F`: a sample costs at least a few microseconds of exit, capture
/// and unwind even on bare-metal KVM, so faster timers would only livelock
/// the vCPU in its signal handler.
pub const MAX_FREQ: u32 = 50_000;

fn parse_freq(s: &str) -> Result<u32, String> {
    let f: u32 = s
        .parse()
        .map_err(|_| format!("-F takes a whole number of samples per second, not {s:?}"))?;
    if f > MAX_FREQ {
        return Err(format!(
            "-F {f} is more than this host can deliver: at most {MAX_FREQ} samples per second per vCPU"
        ));
    }
    Ok(f)
}

impl RecordArgs {
    /// The recording these arguments ask for. `argv` is stored in the trace;
    /// `started` is when the process started. Fails on `--disk`/`--net`/
    /// `--root` values that do not fit together.
    pub fn into_config(
        self,
        argv: Vec<String>,
        started: Instant,
    ) -> Result<RecordConfig, crate::vmm::virtio::VirtioError> {
        // Checked by the value parser; a failure here would be a clap bug.
        let until = parse_until(&self.until).unwrap_or(crate::vmm::Until::User);
        let virtio =
            crate::vmm::virtio::VirtioConfig::parse(&self.disks, &self.nets, self.root.as_deref())?;
        Ok(RecordConfig {
            kernel: self.kernel,
            initrd: self.initrd,
            cmdline_extra: self.cmdline,
            mem: self.mem,
            cpus: self.cpus,
            hugepages: self.hugepages,
            populate: self.populate,
            timeout: Duration::from_secs_f64(self.timeout),
            until,
            until_text: self.until,
            compat: match self.compat {
                CompatArg::Auto => CompatChoice::Auto,
                CompatArg::None => CompatChoice::None,
                CompatArg::Pvm => CompatChoice::Pvm,
            },
            freq: self.freq,
            runs: self.runs,
            output: self.output,
            vmlinux: self.vmlinux,
            skip_decompressor: self.skip_decompressor,
            capture: match self.capture {
                CaptureArg::Sync => CaptureMode::Sync,
                CaptureArg::Ioctl => CaptureMode::Ioctl,
                CaptureArg::None => CaptureMode::None,
            },
            virtio,
            argv,
            started,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: RecordArgs,
    }

    fn parse(argv: &[&str]) -> Result<RecordArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("record").chain(argv.iter().copied())).map(|c| c.args)
    }

    /// The command line's defaults are `RecordConfig::new`'s.
    #[test]
    fn defaults_match_the_library() {
        let args = parse(&["bzImage"]).expect("parses");
        assert!(!args.quiet && !args.verbose);
        let t = Instant::now();
        let from_cli = args.into_config(Vec::new(), t).expect("config");
        let lib = RecordConfig::new("bzImage");
        assert_eq!(from_cli.kernel, lib.kernel);
        assert_eq!(from_cli.initrd, lib.initrd);
        assert_eq!(from_cli.cmdline_extra, lib.cmdline_extra);
        assert_eq!(from_cli.mem, lib.mem);
        assert_eq!(from_cli.cpus, lib.cpus);
        assert_eq!(from_cli.hugepages, lib.hugepages);
        assert_eq!(from_cli.populate, lib.populate);
        assert_eq!(from_cli.timeout, lib.timeout);
        assert_eq!(from_cli.until_text, lib.until_text);
        assert!(matches!(from_cli.until, crate::vmm::Until::User));
        assert_eq!(from_cli.compat, lib.compat);
        assert_eq!(from_cli.freq, lib.freq);
        assert_eq!(from_cli.runs, lib.runs);
        assert_eq!(from_cli.output, lib.output);
        assert_eq!(from_cli.vmlinux, lib.vmlinux);
        assert_eq!(from_cli.skip_decompressor, lib.skip_decompressor);
        assert_eq!(from_cli.capture, lib.capture);
    }

    #[test]
    fn options_reach_the_config() {
        let args = parse(&[
            "k",
            "--mem",
            "256M",
            "--cpus",
            "2",
            "-F",
            "0",
            "--until",
            "serial:Run /init",
            "--timeout",
            "1.5",
            "--compat",
            "none",
            "--capture",
            "ioctl",
            "-q",
            "-v",
        ])
        .expect("parses");
        assert!(args.quiet && args.verbose);
        let c = args
            .into_config(vec!["boottrace".into()], Instant::now())
            .expect("config");
        assert_eq!(c.mem, 256 << 20);
        assert_eq!(c.cpus, 2);
        assert_eq!(c.freq, Some(0));
        assert!(matches!(c.until, crate::vmm::Until::Serial(_)));
        assert_eq!(c.until_text, "serial:Run /init");
        assert_eq!(c.timeout, Duration::from_millis(1500));
        assert_eq!(c.compat, CompatChoice::None);
        assert_eq!(c.capture, CaptureMode::Ioctl);
        assert_eq!(c.argv, ["boottrace"]);
    }

    #[test]
    fn bad_values_are_rejected() {
        assert!(parse(&["k", "--until", "some time"]).is_err());
        assert!(parse(&["k", "--until", "serial:("]).is_err());
        assert!(parse(&["k", "--timeout", "-1"]).is_err());
        assert!(parse(&["k", "--timeout", "inf"]).is_err());
        assert!(parse(&["k", "--mem", "12Q"]).is_err());
        assert!(parse(&["k", "--cpus", "0"]).is_err());
        for t in ["nan", "1e20", "1e19", "0", "1e-9", "-0"] {
            assert!(parse(&["k", "--timeout", t]).is_err(), "--timeout {t}");
        }
        for f in ["200000", "1e9", "4294967295", "-1", "50001"] {
            assert!(parse(&["k", "-F", f]).is_err(), "-F {f}");
        }
        assert_eq!(
            parse(&["k", "-F", "50000"]).expect("max").freq,
            Some(50_000)
        );
        assert!(parse(&["k", "--timeout", "604800"]).is_ok());
    }
}
