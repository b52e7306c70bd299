//! What `record` learns about the kernel before booting it, once for all runs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{bail, Context, Result};
use boottrace_symbols::identity::find_banner;
use boottrace_symbols::image::{ImageFormat, KernelImage};
use boottrace_symbols::mapped::MappedFile;
use boottrace_symbols::orc::OrcTable;
use boottrace_symbols::typeinfo;

use crate::sample::kaslr::BootImage;
use crate::sample::late::{LateKernel, SampleKernel};
use crate::sample::task::TaskLocator;
use crate::sample::unwind::{Method, Unwinder};
use crate::trace::UnwinderKind;
use crate::vmm;
use crate::vmm::breakpoints::{BoundaryLinks, DO_ONE_INITCALL, NAMED_CHAIN};

/// The kernel image, read and checked, and how its runs will be booted.
pub struct KernelFacts {
    /// The image.
    pub image: Arc<KernelImage>,
    /// The unwinder its samples get (ORC when the image has the tables).
    pub unwinder: Unwinder,
    /// Which unwinder that is.
    pub unwinder_kind: UnwinderKind,
    /// Link-time address of the kernel's return-to-user path, from the image's own symbols.
    pub user_return_link: Option<u64>,
    /// The file the VMM boots: the image itself or its extracted ELF payload.
    pub boot_path: PathBuf,
    /// How the booted file is placed in guest memory (for layout detection).
    pub boot_image: BootImage,
    /// How samples find the running guest task (`None`: task awareness off).
    pub tasks: Option<TaskLocator>,
    /// One line on where task awareness came from, or why it is off.
    pub tasks_note: String,
    /// Keeps an extracted payload alive for every run.
    _payload: Option<tempfile::NamedTempFile>,
}

/// The kernel's analysis, running on a thread of its own from the start of
/// `record`, and what the boot needs before it is over.
pub struct Analysis {
    /// The file the VMM boots (known before the analysis: the image itself,
    /// unless a skipped decompressor made the analysis run first).
    pub boot_path: PathBuf,
    /// Parts published while the analysis runs.
    pub published: Published,
    /// The analysis thread's priority, low (or the thread held back) until
    /// the first instruction.
    pub priority: super::priority::StartupPriority,
    result: Arc<Pending>,
}

/// The analysis' facts, or why it failed (shared by the threads that wait).
type Outcome = Result<Arc<KernelFacts>, Arc<anyhow::Error>>;

/// The analysis' outcome once it is over, and when it was over (ns since
/// process start).
#[derive(Default)]
pub struct Pending {
    slot: std::sync::Mutex<Option<(Outcome, u64)>>,
    done: std::sync::Condvar,
}

impl Pending {
    fn set(&self, r: Result<KernelFacts>, at_ns: u64) {
        if let Ok(mut s) = self.slot.lock() {
            *s = Some((r.map(Arc::new).map_err(Arc::new), at_ns));
        }
        self.done.notify_all();
    }

    /// Waits for the analysis; its facts or why it failed.
    pub fn wait(&self) -> Result<Arc<KernelFacts>> {
        self.wait_timed().0
    }

    /// [`Pending::wait`], and when the analysis ended (ns since process start).
    pub fn wait_timed(&self) -> (Result<Arc<KernelFacts>>, u64) {
        let Ok(mut s) = self.slot.lock() else {
            return (Err(anyhow::anyhow!("kernel analysis lock poisoned")), 0);
        };
        loop {
            if let Some((r, at)) = s.as_ref() {
                let r = r.clone().map_err(|e| anyhow::anyhow!("{e:#}"));
                return (r, *at);
            }
            s = match self.done.wait(s) {
                Ok(s) => s,
                Err(_) => return (Err(anyhow::anyhow!("kernel analysis lock poisoned")), 0),
            };
        }
    }
}

impl Analysis {
    /// Starts analysing `cfg.kernel`. Fails at once when the file does not
    /// start like a kernel image (one page read); a later failure (a damaged
    /// payload) ends the boot through the trace writer and is returned by
    /// [`Analysis::wait`]. With `--skip-decompressor` the analysis runs here,
    /// before the boot (its payload is what boots).
    pub fn start(cfg: &super::RecordConfig) -> Result<Analysis> {
        let published = Published::default();
        let result = Arc::new(Pending::default());
        let started = cfg.started;
        let elapsed = move || u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        if cfg.skip_decompressor {
            let facts = analyse(&cfg.kernel, cfg.vmlinux.as_deref(), true, &published)?;
            let boot_path = facts.boot_path.clone();
            result.set(Ok(facts), elapsed());
            return Ok(Analysis {
                boot_path,
                published,
                priority: Default::default(),
                result,
            });
        }
        KernelImage::check_head(&cfg.kernel)
            .with_context(|| format!("cannot use {} as a kernel", cfg.kernel.display()))?;
        let (path, vmlinux) = (cfg.kernel.clone(), cfg.vmlinux.clone());
        let (out, slot) = (published.clone(), result.clone());
        let priority = super::priority::StartupPriority::for_host();
        let yielding = priority.clone();
        std::thread::Builder::new()
            .name("kernel-analysis".into())
            .spawn(move || {
                yielding.yield_current_thread();
                let r = analyse(&path, vmlinux.as_deref(), false, &out);
                slot.set(r, elapsed());
            })
            .context("cannot start the kernel analysis thread")?;
        Ok(Analysis {
            boot_path: cfg.kernel.clone(),
            published,
            priority,
            result,
        })
    }

    /// Waits for the analysis to end (starting it now if it was held
    /// back for the first instruction).
    pub fn wait(&self) -> Result<Arc<KernelFacts>> {
        self.priority.restore();
        self.result.wait()
    }

    /// The outcome, for another thread to wait on.
    pub fn pending(&self) -> Arc<Pending> {
        self.result.clone()
    }
}

impl Drop for Analysis {
    fn drop(&mut self) {
        // A recording that ends before any boot started lets a held
        // analysis go (its thread ends with it instead of waiting forever).
        self.priority.restore();
    }
}

/// What the analysis hands to a boot that is already running, each part as
/// soon as it is known (the vCPU threads poll them).
#[derive(Default, Clone)]
pub struct Published {
    /// The parsed image and its unwinder, then the task locator.
    pub kernel: LateKernel,
    /// Link-time address of the return-to-user path (`None` inside: unnamed).
    pub user_return_link: Arc<OnceLock<Option<u64>>>,
    /// The exact boundaries to watch (initcalls, named points).
    pub boundaries: Arc<OnceLock<BoundaryLinks>>,
}

/// Reads the kernel image. With `skip_decompressor`, extracts a bzImage's
/// ELF payload to a temporary file that is booted instead.
/// `vmlinux` (or, without one, a vmlinux with the same banner next to the
/// image) gives DWARF for task awareness; else the image's `.BTF`.
pub fn read_kernel(
    path: &Path,
    vmlinux: Option<&Path>,
    skip_decompressor: bool,
) -> Result<KernelFacts> {
    analyse(path, vmlinux, skip_decompressor, &Published::default())
}

/// [`read_kernel`], publishing into `out` what a running boot can use as
/// soon as it is known, in the order the sampler needs it: the parsed image
/// and unwinder, the return-to-user symbol, the task locator; the image's
/// hash (for the trace's metadata) last.
pub fn analyse(
    path: &Path,
    vmlinux: Option<&Path>,
    skip_decompressor: bool,
    out: &Published,
) -> Result<KernelFacts> {
    let image = KernelImage::open(path)
        .with_context(|| format!("cannot use {} as a kernel", path.display()))?;
    // ORC when the image carries it (distro kernels, UNWINDER_ORC), else frame pointers.
    let (unwinder, unwinder_kind) = match OrcTable::from_elf(image.elf_bytes()) {
        Ok(t) if !t.is_empty() => (Unwinder::new(Method::Orc(Arc::new(t))), UnwinderKind::Orc),
        _ => (
            Unwinder::new(Method::FramePointer),
            UnwinderKind::FramePointer,
        ),
    };
    let (boot_path, payload) = if skip_decompressor {
        if image.format() != ImageFormat::BzImage {
            bail!(
                "--skip-decompressor needs a bzImage; {} is not one",
                path.display()
            );
        }
        let f = extract_payload(&image)?;
        (f.path().to_path_buf(), Some(f))
    } else {
        (path.to_path_buf(), None)
    };
    let boot_image = match image.format() {
        ImageFormat::BzImage if payload.is_none() => BootImage::BzImage {
            load_base: image
                .setup_header()
                .map_or(vmm::layout::HIMEM_START, |h| u64::from(h.code32_start)),
        },
        _ => BootImage::Elf {
            phys_start: image.phys_load_start(),
        },
    };
    let image = Arc::new(image);
    let sample_kernel = Arc::new(SampleKernel {
        image: image.clone(),
        boot_image,
        unwinder: unwinder.clone(),
        tasks: OnceLock::new(),
    });
    let _ = out.kernel.set(sample_kernel.clone());
    let user_return_link = image.kallsyms_ref().ok().and_then(|t| {
        t.by_name("swapgs_restore_regs_and_return_to_usermode")
            .map(|s| s.addr)
    });
    let _ = out.user_return_link.set(user_return_link);
    if let Ok(links) = boundary_links(&image, &vmm::Until::User) {
        let _ = out.boundaries.set(links);
    }
    let (tasks, tasks_note) = task_locator(&image, path, vmlinux);
    let _ = sample_kernel.tasks.set(tasks);
    // The hash and banner for the trace's metadata, last: nothing in the boot needs them.
    image.identity();
    Ok(KernelFacts {
        tasks,
        tasks_note,
        image,
        unwinder,
        unwinder_kind,
        user_return_link,
        boot_path,
        boot_image,
        _payload: payload,
    })
}

/// `--until FUNCTION` names a function the kernel's symbols do not have (a
/// usage error: exit status 2).
#[derive(Debug, thiserror::Error)]
#[error("--until {name}: {why}")]
pub struct UnknownFunction {
    /// The name given.
    pub name: String,
    /// Why it cannot be used.
    pub why: String,
}

/// The link-time addresses of the exact boundaries, from the image's own
/// symbols (kallsyms): `do_one_initcall`, the named chain, and the
/// `--until FUNCTION` goal, which must exist.
pub fn boundary_links(
    image: &KernelImage,
    until: &vmm::Until,
) -> std::result::Result<BoundaryLinks, UnknownFunction> {
    let table = image.kallsyms_ref().ok();
    let addr = |name: &str| table.and_then(|t| t.by_name(name)).map(|s| s.addr);
    let until = match until {
        vmm::Until::Function(name) => match (table, addr(name)) {
            (Some(_), Some(a)) => Some((name.clone(), a)),
            (Some(_), None) => {
                return Err(UnknownFunction {
                    name: name.clone(),
                    why: "no such function in the kernel's symbols".into(),
                })
            }
            (None, _) => {
                return Err(UnknownFunction {
                    name: name.clone(),
                    why: "the kernel image has no symbol table (kallsyms) to find it in".into(),
                })
            }
        },
        _ => None,
    };
    Ok(BoundaryLinks {
        until,
        do_one_initcall: addr(DO_ONE_INITCALL),
        named: NAMED_CHAIN
            .iter()
            .filter_map(|(b, name)| addr(name).map(|a| (*b, a)))
            .collect(),
    })
}

fn extract_payload(image: &KernelImage) -> Result<tempfile::NamedTempFile> {
    let mut f =
        tempfile::NamedTempFile::new().context("cannot create a file for the kernel payload")?;
    std::io::Write::write_all(&mut f, image.elf_bytes())
        .context("cannot write the kernel payload")?;
    Ok(f)
}

/// Type info and symbols for task awareness, read once per recording: the
/// locator, or `None` with the reason, in one line for the reporter.
fn task_locator(
    image: &KernelImage,
    path: &Path,
    vmlinux: Option<&Path>,
) -> (Option<TaskLocator>, String) {
    let (vmlinux_file, open_note) = match vmlinux_for_types(image, path, vmlinux) {
        Ok(f) => (f, None),
        Err(e) => (None, Some(e)),
    };
    let lookup = typeinfo::load(vmlinux_file.as_ref(), Some(image));
    let Some(types) = lookup.info else {
        let notes: Vec<String> = open_note.into_iter().chain(lookup.notes).collect();
        return (
            None,
            format!("no type info: task awareness off ({})", notes.join("; ")),
        );
    };
    // The image's kallsyms first (KALLSYMS_ALL keeps data symbols), then the
    // vmlinux's ELF symbol table.
    let from_kallsyms = image
        .kallsyms_ref()
        .map_err(|e| e.to_string())
        .and_then(|t| types.resolve_symbols(t).map_err(|e| e.to_string()));
    let symbols = match (from_kallsyms, &vmlinux_file) {
        (Ok(s), _) => Ok(s),
        (Err(first), Some(file)) => typeinfo::elf_symbols(file.bytes(), &types.needed_symbols())
            .and_then(|t| types.resolve_symbols(&t))
            .map_err(|e| format!("kallsyms: {first}; vmlinux: {e}")),
        (Err(first), None) => Err(format!("kallsyms: {first}")),
    };
    match symbols {
        Ok(symbols) => {
            let note = format!(
                "task awareness on: types from {}, current at {} ({:?})",
                types.source,
                types.current.symbol(),
                symbols.current.addressing
            );
            (Some(TaskLocator { types, symbols }), note)
        }
        Err(e) => (
            None,
            format!("no symbols for current: task awareness off ({e})"),
        ),
    }
}

/// The vmlinux whose DWARF describes the image: the one given, the image
/// itself when it is an ELF, or a `vmlinux` beside the image carrying the
/// same `Linux version` banner (a stale one beside it is not used). An
/// error says why a vmlinux the user named cannot be used.
fn vmlinux_for_types(
    image: &KernelImage,
    path: &Path,
    vmlinux: Option<&Path>,
) -> std::result::Result<Option<MappedFile>, String> {
    // The banner, not the whole identity: hashing the image can wait.
    let banner = || find_banner(image.elf_bytes());
    if let Some(v) = vmlinux {
        let file = MappedFile::open(v).map_err(|e| e.to_string())?;
        // Offsets from another kernel's DWARF would read garbage.
        return match (banner(), find_banner(file.bytes())) {
            (Some(a), Some(b)) if a != b => Err(format!(
                "{} is another kernel than the image (version banners differ)",
                v.display()
            )),
            _ => Ok(Some(file)),
        };
    }
    if image.format() != ImageFormat::BzImage {
        return Ok(MappedFile::open(path).ok());
    }
    let Some(sibling) = path.parent().map(|d| d.join("vmlinux")) else {
        return Ok(None);
    };
    if !sibling.is_file() {
        return Ok(None);
    }
    let Ok(file) = MappedFile::open(&sibling) else {
        return Ok(None);
    };
    let Some(banner) = banner() else {
        return Ok(None);
    };
    Ok((find_banner(file.bytes()) == Some(banner)).then_some(file))
}
