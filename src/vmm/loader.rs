//! Putting a kernel into guest memory: format detection by content, the
//! rust-vmm `linux-loader` loaders for bzImage and ELF, initrd placement and
//! the command line, each checked against what the kernel and memory allow.

use std::io::{Seek, SeekFrom};
use std::path::Path;

use boottrace_symbols::bzimage::SetupHeader;
use boottrace_symbols::elf::load_extent;
use boottrace_symbols::image::MAX_FILE;
use boottrace_symbols::input::{open_regular, InputError, InputFile};

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{BzImage, Elf, KernelLoader, PvhBootCapability};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{HIMEM_START, INITRD_ADDR_MAX_DEFAULT, MMIO_GAP_START};

/// Kernel image formats boottrace boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// A bzImage, booted through the 64-bit boot protocol: the first guest
    /// instruction is the decompressor's `startup_64`.
    BzImage,
    /// An ELF vmlinux: PVH entry when its note is present, else the 64-bit entry.
    Elf,
}

/// How the boot vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryMode {
    /// 64-bit long mode with identity paging, RSI = zero page.
    Long64,
    /// PVH: 32-bit protected mode, paging off, EBX = `hvm_start_info`.
    Pvh32,
}

/// Where and how a kernel was loaded.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// Detected format.
    pub format: KernelFormat,
    /// Guest-physical entry point.
    pub entry: u64,
    /// How the vCPU must be set up for `entry`.
    pub mode: EntryMode,
    /// Where the image was loaded (bzImage: protected-mode code; ELF: first segment).
    pub load_addr: u64,
    /// Lowest address above everything the kernel will use while booting
    /// (for a bzImage, the end of its decompression buffer).
    pub reserved_end: u64,
    /// The bzImage setup header, to seed the zero page.
    pub setup_header: Option<setup_header>,
    /// Longest command line the kernel accepts, without the NUL.
    pub cmdline_max: usize,
    /// Highest address the initrd may end at.
    pub initrd_addr_max: u64,
}

/// Errors loading a kernel, initrd or command line.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// Not a regular file within the size cap, or unreadable.
    #[error(transparent)]
    Input(#[from] InputError),
    /// Neither a bzImage nor an ELF file.
    #[error("{0} is not a kernel image: neither a bzImage (no \"HdrS\" at 0x202) nor an ELF file")]
    NotAKernel(String),
    /// A bzImage shorter than its header says.
    #[error("{path} is a truncated bzImage: the header promises {expected} bytes, the file has {actual}")]
    Truncated {
        /// The file.
        path: String,
        /// Size implied by the setup header.
        expected: u64,
        /// Real size.
        actual: u64,
    },
    /// Too old for the 64-bit boot protocol.
    #[error("{path}: boot protocol {major}.{minor:02} without a 64-bit entry (need >= 2.12 with XLF_KERNEL_64)")]
    No64BitEntry {
        /// The file.
        path: String,
        /// Protocol major.
        major: u16,
        /// Protocol minor.
        minor: u16,
    },
    /// An ELF that is not a 64-bit x86 kernel, or another loader failure.
    #[error("cannot load {path}: {detail}")]
    Loader {
        /// The file.
        path: String,
        /// linux-loader's message.
        detail: String,
    },
    /// A header field that would put the kernel outside any guest memory.
    #[error("{path}: {detail}; refusing to load it")]
    BadHeader {
        /// The file.
        path: String,
        /// Which field, and why.
        detail: String,
    },
    /// Memory too small to hold what the kernel needs during boot.
    #[error("--mem {mem_mib} MiB is too small for this kernel: it needs at least {need_mib} MiB to decompress and boot")]
    MemTooSmall {
        /// Guest MiB.
        mem_mib: u64,
        /// Needed MiB.
        need_mib: u64,
    },
    /// The initrd does not fit between the kernel and the end of usable memory.
    #[error(
        "initrd {path} ({size_mib} MiB) does not fit in guest memory above the kernel; raise --mem"
    )]
    InitrdTooBig {
        /// The file.
        path: String,
        /// Its size in MiB (rounded up).
        size_mib: u64,
    },
    /// The initrd would fit in guest memory, but not below the highest
    /// address the kernel accepts for it (`initrd_addr_max`).
    #[error(
        "initrd {path} ({size_mib} MiB) does not fit below this kernel's initrd address limit \
         ({limit:#x}, {room_mib} MiB free above the kernel); a larger --mem does not help"
    )]
    InitrdAboveAddrLimit {
        /// The file.
        path: String,
        /// Its size in MiB (rounded up).
        size_mib: u64,
        /// The kernel's `initrd_addr_max`.
        limit: u64,
        /// MiB between the kernel and that limit.
        room_mib: u64,
    },
    /// The initrd file could not be read into guest memory.
    #[error("cannot read initrd {path}: {detail}")]
    InitrdRead {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
    /// The command line is longer than the kernel accepts.
    #[error("kernel command line is {len} bytes; this kernel accepts at most {max}")]
    CmdlineTooLong {
        /// Length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The command line contains a NUL byte or is otherwise unusable.
    #[error("invalid kernel command line: {0}")]
    CmdlineInvalid(String),
    /// Writing to guest memory failed (address outside RAM).
    #[error("cannot write {what} to guest memory at {addr:#x}")]
    GuestWrite {
        /// What.
        what: &'static str,
        /// Where.
        addr: u64,
    },
}

/// Default command line limit of x86_64 kernels (COMMAND_LINE_SIZE - 1).
const DEFAULT_CMDLINE_MAX: usize = 2047;
/// `xloadflags` bit: the kernel has a 64-bit entry at load address + 0x200.
const XLF_KERNEL_64: u16 = 1;

/// Bytes read to recognise the format and parse the headers.
const HEAD: usize = 0x1000;

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LoadError + '_ {
    move |source| LoadError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Recognises a kernel image by its content.
pub fn detect_format(head: &[u8], path: &Path) -> Result<KernelFormat, LoadError> {
    if head.len() >= 4 && &head[..4] == b"\x7fELF" {
        return Ok(KernelFormat::Elf);
    }
    if head.len() >= 0x206 && &head[0x202..0x206] == b"HdrS" {
        return Ok(KernelFormat::BzImage);
    }
    Err(LoadError::NotAKernel(path.display().to_string()))
}

/// A kernel image opened (regular files only, size capped) with its first
/// page read: its format and initrd limit are known before it is loaded.
#[derive(Debug)]
pub struct KernelFile {
    file: std::fs::File,
    size: u64,
    head: Vec<u8>,
    format: KernelFormat,
    path: std::path::PathBuf,
}

/// Opens the kernel image at `path` and reads its headers.
pub fn open_kernel(path: &Path) -> Result<KernelFile, LoadError> {
    let InputFile { mut file, size, .. } = open_regular(path, MAX_FILE, "kernel image")?;
    let mut head = Vec::with_capacity(HEAD);
    std::io::Read::read_to_end(&mut std::io::Read::take(&mut file, HEAD as u64), &mut head)
        .map_err(io_err(path))?;
    file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
    let format = detect_format(&head, path)?;
    Ok(KernelFile {
        file,
        size,
        head,
        format,
        path: path.to_path_buf(),
    })
}

impl KernelFile {
    /// The highest guest address the kernel accepts for its initrd, from its
    /// header alone (so the initrd can be placed and loaded beside the kernel).
    pub fn initrd_addr_max(&self) -> u64 {
        match self.format {
            KernelFormat::BzImage => bz_initrd_addr_max(&parse_setup_header(&self.head)),
            KernelFormat::Elf => INITRD_ADDR_MAX_DEFAULT,
        }
    }
}

/// Loads `kernel` into `mem` (of `mem_size` bytes).
pub fn load_kernel(
    mem: &GuestMemoryMmap,
    kernel: KernelFile,
    mem_size: u64,
) -> Result<LoadedKernel, LoadError> {
    let KernelFile {
        mut file,
        size: file_len,
        head,
        format,
        path,
    } = kernel;
    let path = path.as_path();
    let ram_top = mem_size.min(MMIO_GAP_START);
    let shown = path.display().to_string();
    let loader_err = |e: linux_loader::loader::Error| LoadError::Loader {
        path: shown.clone(),
        detail: e.to_string(),
    };
    let kernel = match format {
        KernelFormat::BzImage => {
            let hdr = parse_setup_header(&head);
            check_bzimage(&hdr, file_len, path)?;
            let res = BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START)))
                .map_err(loader_err)?;
            let hdr = res.setup_header.unwrap_or(hdr);
            let load_addr = res.kernel_load.0;
            // Where the decompressor will put the kernel, checked against
            // wrapping (pref_address and init_size come from the file).
            let reserved_end = SetupHeader::parse(&head)
                .and_then(|h| h.boot_end(load_addr))
                .map_err(|e| LoadError::BadHeader {
                    path: shown.clone(),
                    detail: e.to_string(),
                })?
                .max(res.kernel_end);
            LoadedKernel {
                format,
                entry: load_addr + 0x200,
                mode: EntryMode::Long64,
                load_addr,
                reserved_end,
                setup_header: Some(hdr),
                cmdline_max: if hdr.version >= 0x206 {
                    hdr.cmdline_size as usize
                } else {
                    255
                },
                initrd_addr_max: bz_initrd_addr_max(&hdr),
            }
        }
        KernelFormat::Elf => {
            // Check every segment against guest memory before linux-loader
            // writes any: it would fail on the first one outside RAM without
            // saying how much memory the image needs.
            let end = elf_segments_end(&mut file, path)?;
            if end > ram_top {
                return Err(LoadError::MemTooSmall {
                    mem_mib: mem_size >> 20,
                    need_mib: end.div_ceil(1 << 20),
                });
            }
            file.seek(SeekFrom::Start(0)).map_err(io_err(path))?;
            let res = Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START)))
                .map_err(loader_err)?;
            let (entry, mode) = match res.pvh_boot_cap {
                PvhBootCapability::PvhEntryPresent(addr) => (addr.0, EntryMode::Pvh32),
                _ => (res.kernel_load.0, EntryMode::Long64),
            };
            LoadedKernel {
                format,
                entry,
                mode,
                load_addr: res.kernel_load.0,
                reserved_end: res.kernel_end,
                setup_header: None,
                cmdline_max: DEFAULT_CMDLINE_MAX,
                initrd_addr_max: INITRD_ADDR_MAX_DEFAULT,
            }
        }
    };
    // Leave at least 16 MiB above the kernel for its early allocations.
    // reserved_end was checked against overflow, and is below 2^52.
    let need = kernel.reserved_end.saturating_add(16 << 20);
    if need > ram_top {
        return Err(LoadError::MemTooSmall {
            mem_mib: mem_size >> 20,
            need_mib: need.div_ceil(1 << 20),
        });
    }
    Ok(kernel)
}

fn parse_setup_header(head: &[u8]) -> setup_header {
    let mut hdr = setup_header::default();
    let size = std::mem::size_of::<setup_header>();
    if head.len() >= 0x1f1 + size {
        // SAFETY: setup_header is a plain-old-data repr(C, packed) struct of
        // integers; any byte pattern is a valid value and the source has `size` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(
                head[0x1f1..].as_ptr(),
                &mut hdr as *mut setup_header as *mut u8,
                size,
            );
        }
    }
    hdr
}

/// Highest physical end of the ELF's `PT_LOAD` segments, from its headers
/// alone, with the symbols crate's checks (ends that wrap or lie beyond
/// physical addresses, spans no kernel has): refused before anything is
/// written to guest memory.
fn elf_segments_end(file: &mut std::fs::File, path: &Path) -> Result<u64, LoadError> {
    let cache = object::ReadCache::new(&mut *file);
    let (_, end) = load_extent(&cache).map_err(|e| LoadError::BadHeader {
        path: path.display().to_string(),
        detail: e.to_string(),
    })?;
    Ok(end)
}

fn check_bzimage(hdr: &setup_header, file_len: u64, path: &Path) -> Result<(), LoadError> {
    let version = hdr.version;
    let xload = hdr.xloadflags;
    if version < 0x20c || xload & XLF_KERNEL_64 == 0 {
        return Err(LoadError::No64BitEntry {
            path: path.display().to_string(),
            major: version >> 8,
            minor: version & 0xff,
        });
    }
    let sects = if hdr.setup_sects == 0 {
        4
    } else {
        u64::from(hdr.setup_sects)
    };
    let expected = (sects + 1) * 512 + u64::from(hdr.syssize) * 16;
    if file_len < expected {
        return Err(LoadError::Truncated {
            path: path.display().to_string(),
            expected,
            actual: file_len,
        });
    }
    Ok(())
}

/// A bzImage header's `initrd_addr_max` (protocol 2.03 and later), else the default.
fn bz_initrd_addr_max(hdr: &setup_header) -> u64 {
    let (version, max) = (hdr.version, hdr.initrd_addr_max);
    if version >= 0x203 && max != 0 {
        u64::from(max)
    } else {
        INITRD_ADDR_MAX_DEFAULT
    }
}

/// An initrd opened and placed before the kernel is loaded: as high as
/// memory and the kernel's `initrd_addr_max` allow (that address does not
/// depend on the kernel's size; [`PlacedInitrd::check`] checks it against the
/// loaded kernel afterwards, with the errors that say which limit binds).
#[derive(Debug)]
pub struct PlacedInitrd {
    file: std::fs::File,
    path: String,
    size: u64,
    addr_max: u64,
    mem_size: u64,
    /// Where it goes; `None` when it fits nowhere (the check says why).
    addr: Option<u64>,
}

/// Opens the initrd at `path` (regular files only: a directory opens but
/// cannot be read, a FIFO would block) and places it for a kernel that
/// accepts it up to `addr_max`, in `mem_size` bytes of guest memory.
pub fn place_initrd(path: &Path, mem_size: u64, addr_max: u64) -> Result<PlacedInitrd, LoadError> {
    let InputFile { file, size, .. } = open_regular(path, u64::MAX, "initrd")?;
    let mut placed = PlacedInitrd {
        file,
        path: path.display().to_string(),
        size,
        addr_max,
        mem_size,
        addr: None,
    };
    placed.addr = placed.placement(0).ok();
    Ok(placed)
}

impl PlacedInitrd {
    /// The address for a kernel whose boot needs memory up to `reserved_end`.
    fn placement(&self, reserved_end: u64) -> Result<u64, LoadError> {
        let size = self.size;
        let mem_top = self.mem_size.min(MMIO_GAP_START);
        let addr_top = self.addr_max.saturating_add(1);
        let size_mib = size.div_ceil(1 << 20);
        let fits_below = |top: u64| {
            top.checked_sub(size)
                .map(|a| a & !0xfff)
                .filter(|&a| a >= reserved_end)
        };
        let Some(addr) = fits_below(mem_top.min(addr_top)) else {
            // Say which limit binds: more memory helps only if memory is the limit.
            if addr_top < mem_top && fits_below(mem_top).is_some() {
                return Err(LoadError::InitrdAboveAddrLimit {
                    path: self.path.clone(),
                    size_mib,
                    limit: self.addr_max,
                    room_mib: addr_top.saturating_sub(reserved_end) >> 20,
                });
            }
            return Err(LoadError::InitrdTooBig {
                path: self.path.clone(),
                size_mib,
            });
        };
        Ok(addr)
    }

    /// Reads the initrd into guest memory at its place (nothing when it fits
    /// nowhere: [`PlacedInitrd::check`] says why). The fit bounds the read.
    pub fn load(&mut self, mem: &GuestMemoryMmap) -> Result<(), LoadError> {
        let Some(addr) = self.addr else {
            return Ok(());
        };
        let len = usize::try_from(self.size).map_err(|_| LoadError::InitrdTooBig {
            path: self.path.clone(),
            size_mib: self.size.div_ceil(1 << 20),
        })?;
        mem.read_exact_volatile_from(GuestAddress(addr), &mut self.file, len)
            .map_err(|e| LoadError::InitrdRead {
                path: self.path.clone(),
                detail: e.to_string(),
            })
    }

    /// Checks the place against the loaded kernel (above what its boot
    /// needs, below its limit); returns (guest address, size).
    pub fn check(&self, kernel: &LoadedKernel) -> Result<(u64, u64), LoadError> {
        let addr = self.placement(kernel.reserved_end)?;
        if kernel.initrd_addr_max != self.addr_max || Some(addr) != self.addr {
            // Both come from the same header and sizes; a difference is a bug here.
            return Err(LoadError::InitrdRead {
                path: self.path.clone(),
                detail: format!(
                    "placed at {:?} for limit {:#x} before the kernel was loaded, {addr:#x} for {:#x} after",
                    self.addr, self.addr_max, kernel.initrd_addr_max
                ),
            });
        }
        Ok((addr, self.size))
    }
}

/// Builds the command line: boottrace's defaults, then the workaround
/// arguments, then the user's own (later arguments win in Linux).
pub fn build_cmdline(parts: &[&str], max: usize) -> Result<String, LoadError> {
    let line = parts
        .iter()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if line.bytes().any(|b| b == 0) {
        return Err(LoadError::CmdlineInvalid("contains a NUL byte".into()));
    }
    if line.len() > max {
        return Err(LoadError::CmdlineTooLong {
            len: line.len(),
            max,
        });
    }
    Ok(line)
}

/// Writes the NUL-terminated command line at `addr`.
pub fn write_cmdline(mem: &GuestMemoryMmap, addr: u64, line: &str) -> Result<(), LoadError> {
    let mut bytes = line.as_bytes().to_vec();
    bytes.push(0);
    mem.write_slice(&bytes, GuestAddress(addr))
        .map_err(|_| LoadError::GuestWrite {
            what: "command line",
            addr,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_by_content_not_name() {
        let p = Path::new("x");
        assert_eq!(
            detect_format(b"\x7fELF\x02\x01", p).ok(),
            Some(KernelFormat::Elf)
        );
        let mut bz = vec![0u8; 0x300];
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        assert_eq!(detect_format(&bz, p).ok(), Some(KernelFormat::BzImage));
        assert!(matches!(
            detect_format(b"#!/bin/sh\n", p),
            Err(LoadError::NotAKernel(_))
        ));
    }

    /// An initrd placed before the kernel is loaded lands where the old
    /// one-step placement put it: as high as memory and the limit allow; the
    /// check against the loaded kernel refuses an overlap and says which
    /// limit binds.
    #[test]
    fn initrd_placed_before_the_kernel_is_checked_after_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("initrd.cpio");
        std::fs::write(&path, vec![7u8; 5 << 20]).expect("write");
        let kernel = |reserved_end: u64, initrd_addr_max: u64| LoadedKernel {
            format: KernelFormat::BzImage,
            entry: 0x10_0200,
            mode: EntryMode::Long64,
            load_addr: 0x10_0000,
            reserved_end,
            setup_header: None,
            cmdline_max: 2047,
            initrd_addr_max,
        };
        let mem = 64 << 20;
        let p = place_initrd(&path, mem, INITRD_ADDR_MAX_DEFAULT).expect("place");
        let top = (mem - (5 << 20)) & !0xfff;
        assert_eq!(p.addr, Some(top));
        assert_eq!(
            p.check(&kernel(20 << 20, INITRD_ADDR_MAX_DEFAULT)).ok(),
            Some((top, 5 << 20))
        );
        // A kernel whose boot needs the memory the initrd is in.
        assert!(matches!(
            p.check(&kernel(62 << 20, INITRD_ADDR_MAX_DEFAULT)),
            Err(LoadError::InitrdTooBig { .. })
        ));
        // Below a low limit there is no room above the kernel; memory has some.
        let low = place_initrd(&path, mem, (24 << 20) - 1).expect("place");
        assert!(matches!(
            low.check(&kernel(20 << 20, (24 << 20) - 1)),
            Err(LoadError::InitrdAboveAddrLimit { .. })
        ));
        // Too big for memory at all: nothing to load, the check says why.
        let mut none = place_initrd(&path, 4 << 20, INITRD_ADDR_MAX_DEFAULT).expect("place");
        assert_eq!(none.addr, None);
        let gm = vm_memory::GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 4 << 20)])
            .expect("memory");
        assert!(none.load(&gm).is_ok());
        assert!(matches!(
            none.check(&kernel(2 << 20, INITRD_ADDR_MAX_DEFAULT)),
            Err(LoadError::InitrdTooBig { .. })
        ));
    }

    #[test]
    fn cmdline_limits() {
        assert_eq!(
            build_cmdline(&["a=1", " ", "b"], 10).ok().as_deref(),
            Some("a=1 b")
        );
        assert!(matches!(
            build_cmdline(&["abcdef", "ghijk"], 10),
            Err(LoadError::CmdlineTooLong { len: 12, max: 10 })
        ));
    }

    /// A one-segment ELF64 x86_64 file with `jmp $` at `paddr`.
    fn elf_file(dir: &Path, paddr: u64, memsz: u64) -> std::path::PathBuf {
        let mut f = vec![0u8; 64];
        f[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
        f[16..18].copy_from_slice(&2u16.to_le_bytes());
        f[18..20].copy_from_slice(&62u16.to_le_bytes());
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[24..32].copy_from_slice(&paddr.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes());
        f[52..54].copy_from_slice(&64u16.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&1u16.to_le_bytes());
        let mut ph = vec![0u8; 56];
        ph[0..4].copy_from_slice(&1u32.to_le_bytes());
        ph[4..8].copy_from_slice(&5u32.to_le_bytes());
        ph[8..16].copy_from_slice(&0x1000u64.to_le_bytes());
        ph[16..24].copy_from_slice(&paddr.to_le_bytes());
        ph[24..32].copy_from_slice(&paddr.to_le_bytes());
        ph[32..40].copy_from_slice(&2u64.to_le_bytes());
        ph[40..48].copy_from_slice(&memsz.to_le_bytes());
        f.extend_from_slice(&ph);
        f.resize(0x1000, 0);
        f.extend_from_slice(&[0xeb, 0xfe]);
        let p = dir.join(format!("k-{paddr:x}-{memsz:x}.elf"));
        std::fs::write(&p, f).expect("write");
        p
    }

    #[test]
    fn elf_segments_are_checked_before_loading() {
        let dir = tempfile::tempdir().expect("tempdir");
        let end = |p: &Path| {
            let mut f = std::fs::File::open(p).expect("open");
            elf_segments_end(&mut f, p)
        };
        assert_eq!(
            end(&elf_file(dir.path(), 0x20_0000, 2)).ok(),
            Some(0x20_0002)
        );
        // e_memsz_huge: p_memsz near 2^64 wrapped the memory check.
        let err = end(&elf_file(dir.path(), 0x20_0000, u64::MAX - 0x1000)).expect_err("wraps");
        assert!(err.to_string().contains("wraps around 2^64"), "{err}");
        let err = end(&elf_file(dir.path(), 0xffff_ffff_fff0_0000, 0x20_0000)).expect_err("wraps");
        assert!(
            err.to_string().contains("p_paddr 0xfffffffffff00000"),
            "{err}"
        );
    }
}
