//! Where symbols come from: [`SymbolConfig`] names files (all optional);
//! [`setup`] finds the rest next to the recorded kernel image (as
//! `kernel/build.sh` leaves them: `vmlinux`, `System.map`,
//! `decompressor.elf`), checks every file against the recorded kernel's
//! identity, and opens the [`Symbolizer`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use boottrace_symbols::identity::KernelIdentity;
use boottrace_symbols::image::{ImageError, ImageFormat, KernelImage};
use boottrace_symbols::symbolizer::{SourceKind, Symbolizer, SymbolizerError, SymbolizerOptions};

use crate::trace::{Trace, TraceError};

/// Symbol files named by the user; `None` = find it (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SymbolConfig {
    /// vmlinux of the recorded kernel (ELF symbols; DWARF adds inline frames).
    pub vmlinux: Option<PathBuf>,
    /// System.map of the recorded kernel.
    pub system_map: Option<PathBuf>,
    /// Kernel image to recover kallsyms from.
    pub kernel: Option<PathBuf>,
    /// Decompressor ELF (`arch/x86/boot/compressed/vmlinux`).
    pub decompressor: Option<PathBuf>,
    /// Use a vmlinux or image even if its identity does not match the recorded kernel.
    pub force: bool,
}

/// Why symbolization could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SymbolError {
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
) -> Result<Option<KernelImage>, SymbolError> {
    let image = match KernelImage::open(path) {
        Ok(i) => i,
        Err(source) if explicit => {
            return Err(SymbolError::Image {
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
        Err(e) if explicit => Err(SymbolError::Mismatch(e.to_string())),
        Err(e) => {
            notes.push(format!("{} not used: {e}", path.display()));
            Ok(None)
        }
    }
}

/// Chooses and opens the symbol sources for `trace` (see the module docs).
pub fn setup(trace: &Trace, args: &SymbolConfig) -> Result<SymbolSetup, SymbolError> {
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
