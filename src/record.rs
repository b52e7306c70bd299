//! `boottrace record`: boot a kernel (N times), sample it, write the trace,
//! print how each boot went.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

use boottrace_symbols::image::{ImageFormat, KernelImage};
use boottrace_symbols::layout::{AddrSpace, RunLayout};
use boottrace_symbols::orc::OrcTable;

use crate::sample::kaslr::{BootImage, LayoutDetector};
use crate::sample::sampler::{CaptureMode, CostTotals, RecordSampler, SharedLayout};
use crate::sample::unwind::{Method, Unwinder};
use crate::trace::{
    HostFacts, KernelInfo, Phase, Record, RunEnd, RunStart, SamplerCost, Serial, TraceMeta,
    TraceSink, TraceWriter,
};
use crate::vmm::compat::{CompatChoice, CompatMode};
use crate::vmm::loader::KernelFormat;
use crate::vmm::memory::MemoryOptions;
use crate::vmm::{self, BootConfig, BootOutcome, RunObserver, Until};

/// Default sampling rate. Real-KVM boots of microVMs take milliseconds: at
/// 10 kHz (one sample per 100 µs per vCPU, like a high `perf record -F`) a
/// 6 ms boot yields ~60 samples per run, so `--runs` adds statistical weight;
/// the per-sample cost (one exit + register capture + unwind) stays a few
/// percent on a real host.
pub const DEFAULT_FREQ: u32 = 10_000;

/// Default sampling rate on a PVM host, where every exit and re-entry costs
/// ~50 µs of emulation: 10 kHz would spend most of the boot sampling.
pub const PVM_DEFAULT_FREQ: u32 = 1_000;

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
    /// Samples per second per vCPU; 0 records without sampling (the overhead
    /// baseline). Default: 10000, or 1000 on a PVM host.
    #[arg(short = 'F', long = "freq")]
    pub freq: Option<u32>,
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
    /// Boot a bzImage's kernel proper (its ELF payload, through the PVH or
    /// 64-bit entry) instead of its decompressor: for hosts that cannot run
    /// the decompressor (e.g. zstd's BMI2 code under PVM). Skips decompression
    /// and KASLR, so it is not a faithful boot of the image.
    #[arg(long)]
    pub skip_decompressor: bool,
    /// How registers are read per sample: sync (SYNC_REGS, no ioctl) or ioctl
    /// (KVM_GET_REGS + KVM_GET_SREGS); for measuring the difference.
    #[arg(long, value_enum, default_value = "sync")]
    pub capture: CaptureMode,
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

/// Writes a run's phases and console lines to the trace, keeps the phases
/// for the summary, and echoes the console.
pub struct RunRecorder {
    /// Run index.
    pub run: u32,
    /// Echo lines to stdout.
    pub echo: bool,
    /// Trace destination.
    pub sink: TraceSink,
    /// (name, t_ns) in arrival order.
    pub phases: Mutex<Vec<(String, u64)>>,
}

impl RunObserver for RunRecorder {
    fn phase(&self, name: &str, t_ns: u64) {
        if let Ok(mut p) = self.phases.lock() {
            p.push((name.to_string(), t_ns));
        }
        let _ = self.sink.append(Record::Phase(Phase {
            run: self.run,
            name: name.to_string(),
            t_ns,
        }));
    }
    fn serial_line(&self, t_ns: u64, line: &str) {
        if self.echo {
            println!("[{:>10.6}] {line}", t_ns as f64 / 1e9);
        }
        let _ = self.sink.append(Record::Serial(Serial {
            run: self.run,
            t_ns,
            line: line.to_string(),
        }));
    }
}

/// What `record` knows about the kernel before booting it.
struct KernelFacts {
    image: Arc<KernelImage>,
    unwinder: Unwinder,
    unwinder_name: &'static str,
    /// Link-time address of the kernel's return-to-user path, from the image's own symbols.
    user_return_link: Option<u64>,
}

fn kernel_facts(path: &std::path::Path) -> Result<KernelFacts> {
    let image = KernelImage::open(path)
        .with_context(|| format!("cannot use {} as a kernel", path.display()))?;
    // ORC when the image carries it (distro kernels, UNWINDER_ORC), else frame pointers.
    let (unwinder, unwinder_name) = match OrcTable::from_elf(image.elf_bytes()) {
        Ok(t) if !t.is_empty() => (Unwinder::new(Method::Orc(Arc::new(t))), "orc"),
        _ => (Unwinder::new(Method::FramePointer), "frame-pointer"),
    };
    let user_return_link = image.kallsyms().ok().and_then(|t| {
        t.by_name("swapgs_restore_regs_and_return_to_usermode")
            .map(|s| s.addr)
    });
    Ok(KernelFacts {
        image: Arc::new(image),
        unwinder,
        unwinder_name,
        user_return_link,
    })
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

/// Moves an existing trace aside (like perf.data.old) so a new recording
/// never destroys an old one.
fn keep_old(path: &std::path::Path) -> Result<()> {
    if path.exists() {
        let mut old = path.as_os_str().to_owned();
        old.push(".old");
        std::fs::rename(path, &old)
            .with_context(|| format!("cannot move the old {} aside", path.display()))?;
    }
    Ok(())
}

fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn trace_meta(args: &RecordArgs, facts: &KernelFacts, compat: CompatMode, freq: u32) -> TraceMeta {
    let mut identity = KernelInfo::from(facts.image.identity());
    identity.path = args.kernel.display().to_string();
    let options: BTreeMap<String, String> = [
        ("mem", args.mem.to_string()),
        ("cpus", args.cpus.to_string()),
        ("freq", freq.to_string()),
        ("runs", args.runs.to_string()),
        ("until", format!("{:?}", args.until.0)),
        ("timeout_s", args.timeout.to_string()),
        ("hugepages", args.hugepages.to_string()),
        ("populate", args.populate.to_string()),
        ("capture", format!("{:?}", args.capture)),
        ("skip_decompressor", args.skip_decompressor.to_string()),
        (
            "initrd",
            args.initrd
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
        ),
        ("cmdline_extra", args.cmdline.clone()),
        (
            "virtio",
            vmm::virtio::VirtioConfig::parse(&args.disks, &args.nets, args.root.as_deref())
                .map(|v| v.describe())
                .unwrap_or_default(),
        ),
        ("root", args.root.clone().unwrap_or_default()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    TraceMeta {
        boottrace_version: env!("CARGO_PKG_VERSION").to_string(),
        argv: std::env::args().collect(),
        kernel: identity,
        kernel_cmdline: String::new(),
        options,
        host: host_facts(compat),
        unwinder: if freq == 0 {
            "none".into()
        } else {
            facts.unwinder_name.into()
        },
        vmlinux: args.vmlinux.as_ref().map(|p| p.display().to_string()),
        sample_freq_hz: freq,
        wall_start_unix_ns: unix_ns(),
    }
}

/// Runs `boottrace record`. `t_process` is when the process started.
pub fn run(args: &RecordArgs, t_process: Instant) -> Result<()> {
    let compat = CompatMode::resolve(args.compat);
    let freq = args.freq.unwrap_or(if compat == CompatMode::Pvm {
        PVM_DEFAULT_FREQ
    } else {
        DEFAULT_FREQ
    });
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
    let virtio = vmm::virtio::VirtioConfig::parse(&args.disks, &args.nets, args.root.as_deref())?;
    virtio.check()?;
    let facts = kernel_facts(&args.kernel)?;
    // Reading the image (decompression, hashing, ORC, kallsyms) happens before
    // the VM exists; recorded as its own phase so VMM set-up time stays visible.
    let analysis_ns = t_process.elapsed().as_nanos() as u64;
    // Keeps the extracted payload alive for every run.
    let mut payload_file = None;
    let boot_kernel = if args.skip_decompressor {
        if facts.image.format() != ImageFormat::BzImage {
            bail!(
                "--skip-decompressor needs a bzImage; {} is not one",
                args.kernel.display()
            );
        }
        let mut f = tempfile::NamedTempFile::new()
            .context("cannot create a file for the kernel payload")?;
        std::io::Write::write_all(&mut f, facts.image.elf_bytes())
            .context("cannot write the kernel payload")?;
        let path = f.path().to_path_buf();
        payload_file = Some(f);
        println!("boottrace: booting the bzImage's ELF payload directly (--skip-decompressor: no decompression, no KASLR)");
        path
    } else {
        args.kernel.clone()
    };
    let cfg = BootConfig {
        kernel: boot_kernel,
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
        user_return_link: facts.user_return_link,
        virtio: virtio.clone(),
    };
    let meta = trace_meta(args, &facts, compat, freq);
    keep_old(&args.output)?;
    let writer = TraceWriter::create(&args.output, &meta)
        .with_context(|| format!("cannot create {}", args.output.display()))?
        .spawn()
        .context("cannot start the trace writer")?;
    let stat_names_written = Arc::new(AtomicBool::new(false));
    let mut failures = 0;
    let mut done = 0;
    for run in 0..args.runs {
        let sink = writer.sink();
        let t0 = if run == 0 { t_process } else { Instant::now() };
        let _ = sink.append(Record::RunStart(RunStart {
            run,
            wall_time_unix_ns: unix_ns(),
        }));
        let recorder = Arc::new(RunRecorder {
            run,
            echo: !args.quiet,
            sink: sink.clone(),
            phases: Mutex::new(Vec::new()),
        });
        if run == 0 {
            recorder.phase("kernel_analysis", analysis_ns);
        }
        let totals = Arc::new(CostTotals::default());
        let boot_image = match facts.image.format() {
            ImageFormat::BzImage if payload_file.is_none() => BootImage::BzImage {
                load_base: facts
                    .image
                    .setup_header()
                    .map_or(vmm::layout::HIMEM_START, |h| u64::from(h.code32_start)),
            },
            _ => BootImage::Elf {
                phys_start: facts.image.phys_load_start(),
            },
        };
        let layout = Arc::new(SharedLayout::new(LayoutDetector::new(
            facts.image.clone(),
            boot_image,
        )));
        let sampler: Option<Arc<dyn vmm::SamplerFactory>> = (freq > 0).then(|| {
            Arc::new(RecordSampler {
                run,
                freq,
                sink: sink.clone(),
                unwinder: Some(facts.unwinder.clone()),
                capture: args.capture,
                layout: Arc::new(SharedLayout::new(LayoutDetector::new(
                    facts.image.clone(),
                    boot_image,
                ))),
                totals: totals.clone(),
                stat_names_written: stat_names_written.clone(),
            }) as Arc<dyn vmm::SamplerFactory>
        });
        let outcome = match vmm::boot(
            &cfg,
            t0,
            recorder.clone(),
            sampler,
            Some(layout.clone() as Arc<dyn vmm::KernelLocator>),
        ) {
            Ok(o) => o,
            Err(e) => {
                // Keep what earlier runs recorded: the file stays readable.
                drop(sink);
                let _ = writer.finish();
                return Err(anyhow::Error::new(e).context(format!(
                    "boot {} of {}",
                    run + 1,
                    args.runs
                )));
            }
        };
        let _ = sink.append(Record::RunEnd(RunEnd {
            run,
            t_ns: outcome.end_ns,
            reason: outcome.end.kind().to_string(),
            detail: Some(outcome.end.to_string()),
        }));
        let _ = sink.append(Record::SamplerCost(SamplerCost {
            run,
            samples: totals.samples.load(Ordering::Relaxed),
            total_kick_ns: totals.kick_ns.load(Ordering::Relaxed),
            total_capture_ns: totals.capture_ns.load(Ordering::Relaxed),
            total_unwind_ns: totals.unwind_ns.load(Ordering::Relaxed),
            total_write_ns: totals.write_ns.load(Ordering::Relaxed),
        }));
        let phases = recorder
            .phases
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default();
        if run == 0 {
            let format = if outcome.kernel.format == KernelFormat::BzImage {
                "bzImage"
            } else {
                "ELF"
            };
            println!(
                "boottrace: {format} kernel, entry {:#x} ({:?}), unwinder {}, sampling at {} Hz per vCPU",
                outcome.kernel.entry, outcome.kernel.mode, meta.unwinder, meta.sample_freq_hz
            );
            println!("boottrace: kernel command line: {}", outcome.cmdline);
        }
        let run_layout = layout.current();
        print_summary(
            run,
            args.runs,
            &outcome,
            &phases,
            &totals,
            &facts.image,
            run_layout.as_ref(),
        );
        if !matches!(
            outcome.end.kind(),
            "user" | "marker" | "serial" | "shutdown" | "reset"
        ) {
            failures += 1;
        }
        done += 1;
        if vmm::was_interrupted() {
            break;
        }
    }
    let records = writer
        .finish()
        .with_context(|| format!("cannot finish {}", args.output.display()))?;
    println!(
        "boottrace: wrote {} ({records} records)",
        args.output.display()
    );
    if failures == done {
        bail!("no boot reached its end condition ({failures} of {done} ended otherwise; the trace keeps what they did)");
    }
    Ok(())
}

fn print_summary(
    run: u32,
    runs: u32,
    outcome: &BootOutcome,
    phases: &[(String, u64)],
    totals: &CostTotals,
    image: &KernelImage,
    layout: Option<&RunLayout>,
) {
    println!(
        "boottrace: run {}/{}: boot ended: {}",
        run + 1,
        runs,
        outcome.end
    );
    if let vmm::control::EndReason::EmulationFailure { rip, cpl, .. } = &outcome.end {
        if let Some(sym) = symbol_near(image, layout, *rip, *cpl) {
            println!("  at {sym}");
        }
    }
    println!(
        "  phase               t (ms since {})",
        if run == 0 {
            "process start"
        } else {
            "run start"
        }
    );
    for (name, t) in phases {
        println!("  {name:<18} {:>12.3}", *t as f64 / 1e6);
    }
    if let Some(f) = phases
        .iter()
        .find(|(n, _)| n == "first_instruction")
        .map(|p| p.1)
    {
        let boot = outcome.end_ns.saturating_sub(f);
        println!(
            "  boot time (first guest instruction -> end): {:.3} ms",
            boot as f64 / 1e6
        );
    }
    for d in &outcome.devices {
        println!("  {d}");
    }
    let n = totals.samples.load(Ordering::Relaxed);
    if n > 0 {
        let per =
            |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed) as f64 / n as f64 / 1e3;
        println!(
            "  samples: {n}; per sample: kick {:.1} us, capture {:.1} us, unwind+counters {:.1} us, write {:.1} us; complete unwinds {}/{} kernel-mode samples",
            per(&totals.kick_ns),
            per(&totals.capture_ns),
            per(&totals.unwind_ns),
            per(&totals.write_ns),
            totals.complete.load(Ordering::Relaxed),
            totals.unwound.load(Ordering::Relaxed),
        );
        let spent: u64 = [
            &totals.kick_ns,
            &totals.capture_ns,
            &totals.unwind_ns,
            &totals.write_ns,
        ]
        .iter()
        .map(|v| v.load(Ordering::Relaxed))
        .sum();
        let boot = outcome.end_ns.max(1);
        if spent * 100 / boot > 30 {
            println!(
                "  warning: sampling took {}% of this boot's host time; lower -F for a less perturbed boot",
                spent * 100 / boot
            );
        }
    }
}

/// Names the address where a boot stopped, through the run's layout: kernel
/// addresses from the image's own kallsyms, decompressor addresses as such.
fn symbol_near(
    image: &KernelImage,
    layout: Option<&RunLayout>,
    addr: u64,
    cpl: u8,
) -> Option<String> {
    match layout?.classify(addr, cpl) {
        AddrSpace::Kernel(link) => {
            let table = image.kallsyms_ref().ok()?;
            let (sym, off) = table.lookup(link)?;
            Some(format!("{}+{:#x} (kernel; image kallsyms)", sym.name, off))
        }
        AddrSpace::Decompressor(off) => Some(format!(
            "[decompressor]+{off:#x} (the bzImage's decompressor)"
        )),
        AddrSpace::Setup(a) => Some(format!("[setup] {a:#x}")),
        AddrSpace::User => Some("[user]".into()),
        AddrSpace::Unknown(_) => None,
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
