//! `boottrace record`: boot a kernel (N times), sample it, write the trace,
//! print how each boot went.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::vmm::compat::{CompatChoice, CompatMode};
use crate::vmm::memory::MemoryOptions;
use crate::vmm::{self, BootConfig, BootOutcome, RunObserver, Until};

/// Default sampling rate. Real-KVM boots of microVMs take milliseconds: at
/// 10 kHz (one sample per 100 µs per vCPU, like a high `perf record -F`) a
/// 6 ms boot yields ~60 samples per run, so `--runs` adds statistical weight;
/// the per-sample cost (one exit + register capture + unwind) stays a few
/// percent on a real host.
pub const DEFAULT_FREQ: u32 = 10_000;

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
    #[arg(long, default_value_t = 600.0)]
    pub timeout: f64,
    /// When a boot ends: user (first user-mode instruction), shutdown, marker, serial:REGEX.
    #[arg(long, default_value = "user", value_parser = parse_until)]
    pub until: UntilArg,
    /// Host workarounds: auto-detect, none, or pvm.
    #[arg(long, value_enum, default_value = "auto")]
    pub compat: CompatChoice,
    /// Samples per second per vCPU; 0 records without sampling (the overhead baseline).
    #[arg(short = 'F', long = "freq", default_value_t = DEFAULT_FREQ)]
    pub freq: u32,
    /// Boot this many times into one trace.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub runs: u32,
    /// Output trace file.
    #[arg(short = 'o', long = "output", default_value = "boottrace.data")]
    pub output: PathBuf,
    /// vmlinux matching the kernel, stored as a hint for later symbolization.
    #[arg(long)]
    pub vmlinux: Option<PathBuf>,
    /// Do not echo the guest console.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `--until` as parsed.
#[derive(Debug, Clone)]
pub struct UntilArg(pub Until);

fn parse_until(s: &str) -> Result<UntilArg, String> {
    Ok(UntilArg(match s {
        "user" => Until::User,
        "shutdown" => Until::Shutdown,
        "marker" => Until::Marker,
        _ => match s.strip_prefix("serial:") {
            Some(re) => {
                Until::Serial(regex::Regex::new(re).map_err(|e| format!("bad regex: {e}"))?)
            }
            None => return Err("expected user, shutdown, marker or serial:REGEX".into()),
        },
    }))
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

/// Collects a run's phases and console lines and echoes the console.
pub struct ConsoleObserver {
    /// Echo lines to stdout.
    pub echo: bool,
    /// (name, t_ns) in arrival order.
    pub phases: Mutex<Vec<(String, u64)>>,
    /// (t_ns, line).
    pub lines: Mutex<Vec<(u64, String)>>,
}

impl RunObserver for ConsoleObserver {
    fn phase(&self, name: &str, t_ns: u64) {
        if let Ok(mut p) = self.phases.lock() {
            p.push((name.to_string(), t_ns));
        }
    }
    fn serial_line(&self, t_ns: u64, line: &str) {
        if self.echo {
            println!("[{:>10.6}] {line}", t_ns as f64 / 1e9);
        }
        if let Ok(mut l) = self.lines.lock() {
            l.push((t_ns, line.to_string()));
        }
    }
}

/// Runs `boottrace record`. `t_process` is when the process started.
pub fn run(args: &RecordArgs, t_process: Instant) -> Result<()> {
    let compat = CompatMode::resolve(args.compat);
    if compat == CompatMode::Pvm {
        println!(
            "boottrace: PVM nested-KVM host: applying workarounds ({}); guest times are emulated-KVM times, ~1000x bare metal",
            compat.workarounds().join("; ")
        );
    }
    if !args.kernel.exists() {
        bail!("kernel image {} does not exist", args.kernel.display());
    }
    if let Some(i) = &args.initrd {
        if !i.exists() {
            bail!("initrd {} does not exist", i.display());
        }
    }
    let cfg = BootConfig {
        kernel: args.kernel.clone(),
        initrd: args.initrd.clone(),
        cmdline_extra: args.cmdline.clone(),
        mem: MemoryOptions {
            size: args.mem,
            hugepages: args.hugepages,
            populate: args.populate,
        },
        cpus: args.cpus,
        timeout: Duration::from_secs_f64(args.timeout.max(0.001)),
        until: args.until.0.clone(),
        compat,
    };
    for run in 0..args.runs {
        let t0 = if run == 0 { t_process } else { Instant::now() };
        let obs = Arc::new(ConsoleObserver {
            echo: !args.quiet,
            phases: Mutex::new(Vec::new()),
            lines: Mutex::new(Vec::new()),
        });
        let outcome = vmm::boot(&cfg, t0, obs.clone(), None)
            .with_context(|| format!("boot {} of {}", run + 1, args.runs))?;
        print_summary(run, args.runs, &outcome, &obs);
        if vmm::was_interrupted() {
            break;
        }
    }
    Ok(())
}

fn print_summary(run: u32, runs: u32, outcome: &BootOutcome, obs: &ConsoleObserver) {
    let phases = obs.phases.lock().map(|p| p.clone()).unwrap_or_default();
    println!(
        "boottrace: run {}/{}: boot ended: {}",
        run + 1,
        runs,
        outcome.end
    );
    println!(
        "  phase               t (ms since {})",
        if run == 0 {
            "process start"
        } else {
            "run start"
        }
    );
    for (name, t) in &phases {
        println!("  {name:<18} {:>12.3}", *t as f64 / 1e6);
    }
    let first = phases
        .iter()
        .find(|(n, _)| n == "first_instruction")
        .map(|p| p.1);
    if let Some(f) = first {
        let boot = outcome.end_ns.saturating_sub(f);
        println!(
            "  boot time (first guest instruction -> end): {:.3} ms",
            boot as f64 / 1e6
        );
    }
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
        assert!(matches!(parse_until("user"), Ok(UntilArg(Until::User))));
        assert!(matches!(
            parse_until("serial:Run /init"),
            Ok(UntilArg(Until::Serial(_)))
        ));
        assert!(parse_until("serial:(").is_err());
        assert!(parse_until("sometime").is_err());
    }
}
