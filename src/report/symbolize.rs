//! From a read trace to symbolized samples, for every report.
//!
//! Each sampled stack is raw guest addresses: `[0]` the RIP, then return
//! addresses. Every address goes through the run's [`RunLayout::classify`]
//! (KASLR slide, physical head code, decompressor) and then
//! [`Symbolizer::resolve`]; a return address is looked up at `addr - 1`, the
//! call instruction, so a call at the very end of a function (`noreturn`
//! callees) is not charged to the next one. Inline frames are expanded.
//! Identical symbolized stacks are interned: a sample holds a [`StackId`]
//! and the frames live once in [`SymTrace::stacks`].
//!
//! Symbol files come from [`SymbolArgs`]; when the user names none, files
//! next to the recorded kernel image (as `kernel/build.sh` leaves them:
//! `vmlinux`, `System.map`, `decompressor.elf`) are used if they match.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use boottrace_symbols::identity::KernelIdentity;
use boottrace_symbols::image::{ImageError, ImageFormat, KernelImage};
use boottrace_symbols::layout::{AddrSpace, RunLayout, START_KERNEL_MAP};
use boottrace_symbols::symbolizer::{SourceKind, Symbolizer, SymbolizerError, SymbolizerOptions};

use crate::report::fold::RunSelect;
use crate::trace::{RunData, StackEnd, Trace, TraceError};

/// Symbol options every report command shares.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SymbolArgs {
    /// vmlinux of the recorded kernel (ELF symbols; DWARF adds inline frames).
    /// Default: the one given to `record`, or `vmlinux` next to the kernel image.
    #[arg(long, value_name = "FILE")]
    pub vmlinux: Option<PathBuf>,
    /// System.map of the recorded kernel. Default: `System.map` next to the kernel image.
    #[arg(long, value_name = "FILE")]
    pub system_map: Option<PathBuf>,
    /// Kernel image to recover kallsyms from. Default: the image recorded in the trace.
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// Decompressor ELF (`arch/x86/boot/compressed/vmlinux`), to name decompressor samples.
    /// Default: `decompressor.elf` next to the kernel image.
    #[arg(long, value_name = "FILE")]
    pub decompressor: Option<PathBuf>,
    /// Use a vmlinux or image even if its identity does not match the recorded kernel.
    #[arg(long)]
    pub force: bool,
}

/// Why symbolization could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SymbolizeError {
    /// The trace could not be read.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// A symbol file named by the user is not the recorded kernel's.
    #[error("{0}\n(use --force to symbolize with it anyway)")]
    Mismatch(String),
    /// A kernel file named by the user could not be opened.
    #[error("{path}: {source}")]
    Image {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: ImageError,
    },
    /// The symbol sources could not be opened.
    #[error(transparent)]
    Symbolizer(#[from] SymbolizerError),
}

/// Index of an interned stack in [`SymTrace::stacks`].
pub type StackId = u32;

/// One sample, symbolized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SymSample {
    /// Run index.
    pub run: u32,
    /// vCPU index.
    pub vcpu: u32,
    /// Nanoseconds since the run's start.
    pub t_ns: u64,
    /// The symbolized stack (see [`SymTrace::frames`]).
    pub stack: StackId,
    /// Privilege level at the sample (3 = guest user mode).
    pub cpl: u8,
    /// How the unwind ended.
    pub stack_end: StackEnd,
    /// Host minor page faults of the vCPU thread since its previous sample.
    pub minflt: u64,
    /// Host major page faults since the previous sample.
    pub majflt: u64,
    /// Perf software page-fault events (the VMM's own faults) since the previous sample.
    pub perf_faults: u64,
    /// KVM exits since the previous sample (the `exits` stat; 0 if not recorded).
    pub exits: u64,
}

impl SymSample {
    /// Host page faults (minor + major) charged to this sample.
    pub fn faults(&self) -> u64 {
        self.minflt.saturating_add(self.majflt)
    }
}

/// The symbolized samples of one run, in time order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymRun {
    /// Run index.
    pub run: u32,
    /// Samples sorted by (time, vCPU).
    pub samples: Vec<SymSample>,
}

/// A trace's samples, symbolized.
#[derive(Debug, Clone)]
pub struct SymTrace {
    /// Interned stacks, root first; a sample's [`SymSample::stack`] indexes this.
    pub stacks: Vec<Arc<[Arc<str>]>>,
    /// Runs in trace order.
    pub runs: Vec<SymRun>,
    /// Which kernel symbol source was used.
    pub source: SourceKind,
    /// One line naming the source and its file, for titles and reports.
    pub source_label: String,
    /// The file the kernel symbols came from, if any.
    pub source_file: Option<PathBuf>,
    /// What was skipped, degraded or assumed (for the report; may be empty).
    pub notes: Vec<String>,
}

impl SymTrace {
    /// The frames of a sample's stack, root first.
    pub fn frames(&self, s: &SymSample) -> &[Arc<str>] {
        self.stacks.get(s.stack as usize).map_or(&[], |f| &f[..])
    }

    /// The run with index `run`.
    pub fn run(&self, run: u32) -> Option<&SymRun> {
        self.runs.iter().find(|r| r.run == run)
    }

    /// All samples of all runs.
    pub fn samples(&self) -> impl Iterator<Item = &SymSample> {
        self.runs.iter().flat_map(|r| r.samples.iter())
    }
}

/// Pseudo-frame put at the root of stacks whose unwind was cut short, so a
/// flamegraph does not pass them off as complete.
pub const TRUNCATED_ROOT: &str = "[truncated stack]";

/// A symbolizer for a trace's kernel, with what was chosen and why.
pub struct SymbolSetup {
    /// The symbolizer.
    pub symbolizer: Symbolizer,
    /// Label of the chosen source (kind and file).
    pub label: String,
    /// The file the kernel symbols came from, if any.
    pub file: Option<PathBuf>,
    /// Notes on skipped or forced files.
    pub notes: Vec<String>,
}

/// Opens a trace and symbolizes it: the one call most commands need.
/// Reads and symbolizes `input` for a command that renders it: prints the
/// trace's warnings and the symbolizer's notes, and checks that the chosen
/// run exists.
pub fn load_for_output(
    input: &Path,
    args: &SymbolArgs,
    run: Option<u32>,
) -> anyhow::Result<(Trace, SymTrace, RunSelect)> {
    let (trace, sym) = load(input, args)?;
    for w in &trace.warnings {
        eprintln!("boottrace: warning: {}: {w}", input.display());
    }
    for n in &sym.notes {
        eprintln!("boottrace: note: {n}");
    }
    let runs = RunSelect::from_option(run);
    if let RunSelect::Run(k) = runs {
        anyhow::ensure!(
            trace.run(k).is_some(),
            "run {k} is not in {} (it has {} run(s))",
            input.display(),
            trace.runs.len()
        );
    }
    Ok((trace, sym, runs))
}

/// Reads `input` and symbolizes every sample.
pub fn load(input: &Path, args: &SymbolArgs) -> Result<(Trace, SymTrace), SymbolizeError> {
    let trace = Trace::open(input)?;
    let setup = setup(&trace, args)?;
    let sym = symbolize(&trace, &setup);
    Ok((trace, sym))
}

/// The file `name` in the directory of the recorded kernel image, if it exists.
fn sibling(kernel: &str, name: &str) -> Option<PathBuf> {
    let p = Path::new(kernel).parent()?.join(name);
    (p.is_file() && p != Path::new(kernel)).then_some(p)
}

/// Opens `path` as a kernel image and checks it against the recorded kernel.
/// `Ok(Some)` = use it; `Ok(None)` = skip it (auto-discovered, with a note);
/// `Err` = refuse (named by the user, and not `--force`d).
fn open_checked(
    recorded: &KernelIdentity,
    path: &Path,
    explicit: bool,
    force: bool,
    notes: &mut Vec<String>,
) -> Result<Option<KernelImage>, SymbolizeError> {
    let image = match KernelImage::open(path) {
        Ok(i) => i,
        Err(source) if explicit => {
            return Err(SymbolizeError::Image {
                path: path.to_path_buf(),
                source,
            })
        }
        Err(e) => {
            notes.push(format!("{} not used: {e}", path.display()));
            return Ok(None);
        }
    };
    match recorded.check_matches(image.identity()) {
        Ok(()) => Ok(Some(image)),
        Err(e) if explicit && force => {
            notes.push(format!("--force: using {} although {e}", path.display()));
            Ok(Some(image))
        }
        Err(e) if explicit => Err(SymbolizeError::Mismatch(e.to_string())),
        Err(e) => {
            notes.push(format!("{} not used: {e}", path.display()));
            Ok(None)
        }
    }
}

/// Chooses and opens the symbol sources for `trace` (see the module docs).
pub fn setup(trace: &Trace, args: &SymbolArgs) -> Result<SymbolSetup, SymbolizeError> {
    let recorded = trace.meta.kernel.to_identity();
    let kernel_path = trace.meta.kernel.path.as_str();
    let mut notes = Vec::new();
    let auto = args.vmlinux.is_none() && args.system_map.is_none() && args.kernel.is_none();

    // The recorded image, if it is still there and unchanged: a source of
    // kallsyms, and the proof that files next to it belong to the same build.
    let recorded_image = if args.kernel.is_none() && Path::new(kernel_path).is_file() {
        open_checked(&recorded, Path::new(kernel_path), false, false, &mut notes)?
    } else {
        None
    };
    let siblings_ok = recorded_image.is_some();

    let mut vmlinux = None;
    if let Some(v) = &args.vmlinux {
        open_checked(&recorded, v, true, args.force, &mut notes)?;
        vmlinux = Some(v.clone());
    } else if auto {
        let recorded_vmlinux = trace
            .meta
            .vmlinux
            .as_ref()
            .map(PathBuf::from)
            .filter(|p| p.is_file());
        // A recorded ELF vmlinux is its own best symbol source.
        let itself = recorded_image
            .as_ref()
            .filter(|i| i.format() == ImageFormat::Elf)
            .map(|_| PathBuf::from(kernel_path));
        let candidates = recorded_vmlinux
            .into_iter()
            .chain(itself)
            .chain(sibling(kernel_path, "vmlinux"));
        for c in candidates {
            if open_checked(&recorded, &c, false, false, &mut notes)?.is_some() {
                vmlinux = Some(c);
                break;
            }
        }
    }
    let system_map = match &args.system_map {
        Some(p) => Some(p.clone()),
        None if auto && vmlinux.is_none() && siblings_ok => sibling(kernel_path, "System.map"),
        None => None,
    };
    let decompressor_elf = match &args.decompressor {
        Some(p) => Some(p.clone()),
        None if siblings_ok => sibling(kernel_path, "decompressor.elf"),
        None => None,
    };
    let image = match &args.kernel {
        Some(k) => open_checked(&recorded, k, true, args.force, &mut notes)?,
        None => recorded_image,
    };

    let opts = SymbolizerOptions {
        vmlinux: vmlinux.clone(),
        system_map: system_map.clone(),
        image: image.map(Arc::new),
        decompressor_elf,
    };
    let symbolizer = Symbolizer::new(opts)?;
    notes.extend(symbolizer.notes());
    let file = match symbolizer.source() {
        SourceKind::VmlinuxDwarf | SourceKind::VmlinuxSymtab => vmlinux,
        SourceKind::SystemMap => system_map,
        SourceKind::Kallsyms => args
            .kernel
            .clone()
            .or_else(|| Some(PathBuf::from(kernel_path))),
        SourceKind::None => None,
    };
    let label = match &file {
        Some(f) => format!("{} ({})", symbolizer.source(), f.display()),
        None => symbolizer.source().to_string(),
    };
    Ok(SymbolSetup {
        symbolizer,
        label,
        file,
        notes,
    })
}

/// Replaces the characters folded-stack formats use as separators.
fn clean_name(name: &str) -> Arc<str> {
    if name
        .chars()
        .any(|c| c == ';' || c.is_control() || c == '\u{2028}')
    {
        name.chars()
            .map(|c| match c {
                ';' => ':',
                c if c.is_control() || c == '\u{2028}' => '?',
                c => c,
            })
            .collect::<String>()
            .into()
    } else {
        Arc::from(name)
    }
}

/// Layout used for a run without a `Layout` record: the kernel text mapping
/// without KASLR, so unrelocated kernels still get names.
fn fallback_layout() -> RunLayout {
    RunLayout {
        kernel_virt_slide: 0,
        virt_slide_method: "assumed: no layout recorded".into(),
        kernel_phys_start: None,
        kernel_link_start: START_KERNEL_MAP,
        kernel_size: 1 << 30,
        decompressor_bases: Vec::new(),
        decompressor_size: 0,
    }
}

/// Interns names per address and stacks per address sequence.
struct Interner<'a> {
    symbolizer: &'a Symbolizer,
    /// Address → index into `addr_frames` (names root first).
    by_addr: HashMap<AddrSpace, u32>,
    /// Name lists, deduplicated, so addresses in the same function share an id.
    by_names: HashMap<Vec<Arc<str>>, u32>,
    addr_frames: Vec<Vec<Arc<str>>>,
    by_key: HashMap<Vec<u32>, StackId>,
    stacks: Vec<Arc<[Arc<str>]>>,
    truncated: u32,
    key: Vec<u32>,
}

impl<'a> Interner<'a> {
    fn new(symbolizer: &'a Symbolizer) -> Self {
        let mut i = Interner {
            symbolizer,
            by_addr: HashMap::new(),
            by_names: HashMap::new(),
            addr_frames: Vec::new(),
            by_key: HashMap::new(),
            stacks: Vec::new(),
            truncated: 0,
            key: Vec::new(),
        };
        let root = vec![Arc::from(TRUNCATED_ROOT)];
        i.by_names.insert(root.clone(), 0);
        i.addr_frames.push(root);
        i
    }

    fn addr(&mut self, space: AddrSpace) -> u32 {
        if let Some(&id) = self.by_addr.get(&space) {
            return id;
        }
        let frames = self.symbolizer.resolve(space);
        // Symbolizer gives innermost first; stacks here are root first.
        let names: Vec<Arc<str>> = frames
            .iter()
            .rev()
            .map(|f| clean_name(&f.function))
            .collect();
        let id = match self.by_names.get(&names) {
            Some(&id) => id,
            None => {
                let id = self.addr_frames.len() as u32;
                self.addr_frames.push(names.clone());
                self.by_names.insert(names, id);
                id
            }
        };
        self.by_addr.insert(space, id);
        id
    }

    fn stack(
        &mut self,
        layout: &RunLayout,
        raw: &[u64],
        rip: u64,
        cpl: u8,
        end: StackEnd,
    ) -> StackId {
        let mut key = std::mem::take(&mut self.key);
        key.clear();
        if matches!(end, StackEnd::Truncated | StackEnd::DepthLimit) {
            key.push(self.truncated);
        }
        let leaf_only = [rip];
        let raw = if raw.is_empty() { &leaf_only[..] } else { raw };
        // Root first: walk the innermost-first raw stack backwards.
        for (depth, &a) in raw.iter().enumerate().rev() {
            let at = if depth == 0 { a } else { a.wrapping_sub(1) };
            let mut id = self.addr(layout.classify(at, cpl));
            // A frame that is not a return address (a pt_regs IP, or a new
            // task's first "return" to the start of ret_from_fork_asm) can sit
            // at a symbol's first byte: `addr - 1` then names nothing.
            if at != a
                && self.addr_frames[id as usize]
                    .first()
                    .is_some_and(|f| f.starts_with("[kernel 0x"))
            {
                id = self.addr(layout.classify(a, cpl));
            }
            key.push(id);
        }
        let id = match self.by_key.get(&key) {
            Some(&id) => id,
            None => {
                let frames: Arc<[Arc<str>]> = key
                    .iter()
                    .flat_map(|&k| self.addr_frames[k as usize].iter().cloned())
                    .collect();
                let id = self.stacks.len() as StackId;
                self.stacks.push(frames);
                self.by_key.insert(key.clone(), id);
                id
            }
        };
        self.key = key;
        id
    }
}

/// Symbolizes every sample of `trace` with `setup`'s symbolizer.
pub fn symbolize(trace: &Trace, setup: &SymbolSetup) -> SymTrace {
    let mut notes = setup.notes.clone();
    let exits_idx = trace.stat_index("exits");
    let mut interner = Interner::new(&setup.symbolizer);
    let runs = trace
        .runs
        .iter()
        .map(|run| symbolize_run(run, exits_idx, &mut interner, &mut notes))
        .collect();
    SymTrace {
        stacks: interner.stacks,
        runs,
        source: setup.symbolizer.source(),
        source_label: setup.label.clone(),
        source_file: setup.file.clone(),
        notes,
    }
}

fn symbolize_run(
    run: &RunData,
    exits_idx: Option<u16>,
    interner: &mut Interner<'_>,
    notes: &mut Vec<String>,
) -> SymRun {
    let layout = match &run.layout {
        Some(l) => l.clone(),
        None => {
            if !run.samples.is_empty() {
                notes.push(format!(
                    "run {} has no layout record: assuming an unrelocated kernel",
                    run.run
                ));
            }
            fallback_layout()
        }
    };
    let samples = run
        .samples
        .iter()
        .map(|s| {
            let end = StackEnd::from_u8(s.stack_end);
            SymSample {
                run: s.run,
                vcpu: s.vcpu,
                t_ns: s.t_ns,
                stack: interner.stack(&layout, &s.stack, s.rip, s.cpl, end),
                cpl: s.cpl,
                stack_end: end,
                minflt: s.minflt,
                majflt: s.majflt,
                perf_faults: s.perf_faults,
                exits: exits_idx.map_or(0, |i| s.kvm_stat(i)),
            }
        })
        .collect();
    SymRun {
        run: run.run,
        samples,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::synth::{self, SynthOptions};

    fn sysmap_setup(dir: &Path) -> SymbolSetup {
        let map = dir.join("System.map");
        std::fs::write(&map, synth::system_map()).expect("write map");
        let args = SymbolArgs {
            system_map: Some(map),
            ..SymbolArgs::default()
        };
        let trace = synthetic_trace(dir);
        setup(&trace, &args).expect("setup")
    }

    fn synthetic_trace(dir: &Path) -> Trace {
        let path = dir.join("t.data");
        synth::write(&path, &SynthOptions::default()).expect("write");
        Trace::open(&path).expect("open")
    }

    #[test]
    fn stacks_are_named_root_first_and_interned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let setup = sysmap_setup(dir.path());
        let trace = synthetic_trace(dir.path());
        let sym = symbolize(&trace, &setup);
        assert_eq!(sym.source, SourceKind::SystemMap);
        assert_eq!(sym.runs.len(), trace.runs.len());
        let n: usize = sym.runs.iter().map(|r| r.samples.len()).sum();
        assert_eq!(n, trace.sample_count());
        for s in sym.samples() {
            let f = sym.frames(s);
            assert_eq!(&*f[0], "x86_64_start_kernel", "{f:?}");
        }
        // Far fewer distinct stacks than samples; equal stacks share one id.
        assert!(sym.stacks.len() <= 8, "{} stacks", sym.stacks.len());
        let exits: u64 = sym.samples().map(|s| s.exits).sum();
        assert!(exits > 0);
    }

    #[test]
    fn return_addresses_are_looked_up_before_the_call() {
        let dir = tempfile::tempdir().expect("tempdir");
        let setup = sysmap_setup(dir.path());
        let mut trace = synthetic_trace(dir.path());
        let start = synth::addr_of("start_kernel").expect("sym");
        let setup_arch = synth::addr_of("setup_arch").expect("sym");
        // A return address equal to the start of setup_arch belongs to the
        // call at the end of start_kernel (the function before it).
        let s = &mut trace.runs[0].samples[0];
        s.stack = vec![setup_arch + 0x10, setup_arch];
        s.rip = setup_arch + 0x10;
        s.stack_end = StackEnd::Truncated.as_u8();
        let sym = symbolize(&trace, &setup);
        let frames: Vec<&str> = sym
            .frames(&sym.runs[0].samples[0])
            .iter()
            .map(|f| &**f)
            .collect();
        assert_eq!(frames, [TRUNCATED_ROOT, "start_kernel", "setup_arch"]);
        assert!(start < setup_arch);
    }

    #[test]
    fn names_with_separators_are_cleaned() {
        assert_eq!(&*clean_name("a;b\nc"), "a:b?c");
        assert_eq!(&*clean_name("plain"), "plain");
    }
}
