//! Symbolizer tests against the real `tiny-fp` test kernel
//! (`kernel/build.sh tiny-fp`, or the directory in `BOOTTRACE_TINY_FP`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use boottrace_symbols::dwarf::DwarfInfo;
use boottrace_symbols::elfsyms;
use boottrace_symbols::image::KernelImage;
use boottrace_symbols::layout::{AddrSpace, RunLayout};
use boottrace_symbols::mapped::MappedFile;
use boottrace_symbols::symbolizer::{
    Frame, SourceKind, Symbolizer, SymbolizerError, SymbolizerOptions,
};
use boottrace_symbols::sysmap::{self, SysmapError};
use boottrace_symbols::table::SymbolTable;

use gimli::{EndianSlice, RunTimeEndian};
use object::{Object, ObjectSection};

/// The tiny-fp build directory; builds the kernel (minutes) on first use.
fn tiny_fp() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(dir) = std::env::var_os("BOOTTRACE_TINY_FP") {
            return PathBuf::from(dir);
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernel/build.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("tiny-fp")
            .output()
            .expect("run kernel/build.sh");
        assert!(
            out.status.success(),
            "kernel/build.sh tiny-fp failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).expect("utf-8 path");
        PathBuf::from(
            stdout
                .lines()
                .last()
                .expect("build.sh prints the directory")
                .trim(),
        )
    })
}

fn file(name: &str) -> PathBuf {
    tiny_fp().join(name)
}

/// The tiny-fp bzImage, parsed once.
fn image() -> Arc<KernelImage> {
    static IMAGE: OnceLock<Arc<KernelImage>> = OnceLock::new();
    Arc::clone(
        IMAGE
            .get_or_init(|| Arc::new(KernelImage::open(&file("bzImage")).expect("bzImage parses"))),
    )
}

/// One symbolizer over the full vmlinux, shared by the tests of this binary.
fn full() -> &'static Symbolizer {
    static S: OnceLock<Symbolizer> = OnceLock::new();
    S.get_or_init(|| {
        Symbolizer::new(SymbolizerOptions {
            vmlinux: Some(file("vmlinux")),
            system_map: Some(file("System.map")),
            image: Some(image()),
            decompressor_elf: Some(file("decompressor.elf")),
        })
        .expect("symbolizer over tiny-fp")
    })
}

fn names(frames: &[Frame]) -> Vec<&str> {
    frames.iter().map(|f| &*f.function).collect()
}

/// `nm` output is System.map format: binutils as an independent reader.
fn nm(path: &Path) -> Option<SymbolTable> {
    let out = Command::new("nm").arg("-n").arg(path).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(
        sysmap::parse(&String::from_utf8(out.stdout).ok()?)
            .expect("nm output parses as System.map"),
    )
}

/// An inlined call found directly in the DWARF with gimli: the inlined
/// function's name, its first address, and the line it was called from.
#[derive(Debug)]
struct InlineSite {
    callee: String,
    low_pc: u64,
    call_line: u64,
}

/// Direct children `DW_TAG_inlined_subroutine` of a subprogram, with a
/// contiguous range, in the first compilation unit (init/main.c).
fn inline_sites(vmlinux: &[u8], want: usize) -> Vec<InlineSite> {
    let obj = object::File::parse(vmlinux).expect("vmlinux ELF");
    let load = |id: gimli::SectionId| -> Result<EndianSlice<'_, RunTimeEndian>, gimli::Error> {
        let data = obj
            .section_by_name(id.name())
            .and_then(|s| s.data().ok())
            .unwrap_or(&[]);
        Ok(EndianSlice::new(data, RunTimeEndian::Little))
    };
    let dwarf = gimli::Dwarf::load(load).expect("DWARF sections");
    let header = dwarf.units().next().expect("units").expect("a first unit");
    let unit = dwarf.unit(header).expect("unit parses");
    let unit = unit.unit_ref(&dwarf);
    let name = unit
        .name
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    assert!(name.ends_with("init/main.c"), "first unit is {name}");

    let mut sites = Vec::new();
    let mut tags: Vec<gimli::DwTag> = Vec::new();
    let mut cursor = unit.entries();
    while let Some((delta, entry)) = cursor.next_dfs().expect("DIE walk") {
        // Keep `tags` as the chain of ancestors of `entry`.
        let depth = (tags.len() as isize - 1 + delta).max(0) as usize;
        tags.truncate(depth);
        let parent = tags.last().copied();
        tags.push(entry.tag());
        if entry.tag() != gimli::DW_TAG_inlined_subroutine
            || parent != Some(gimli::DW_TAG_subprogram)
        {
            continue;
        }
        let Some(low_pc) = entry
            .attr_value(gimli::DW_AT_low_pc)
            .expect("attr")
            .and_then(|v| unit.attr_address(v).expect("address"))
        else {
            continue;
        };
        // GCC leaves empty inlined ranges (high_pc 0) where the inline was optimized away.
        let len = match entry.attr_value(gimli::DW_AT_high_pc).expect("attr") {
            Some(gimli::AttributeValue::Udata(n)) => n,
            Some(v) => unit
                .attr_address(v)
                .expect("address")
                .map_or(0, |hi| hi.saturating_sub(low_pc)),
            None => 0,
        };
        if len == 0 {
            continue;
        }
        let Some(call_line) = entry
            .attr_value(gimli::DW_AT_call_line)
            .expect("attr")
            .and_then(|v| v.udata_value())
        else {
            continue;
        };
        let Some(gimli::AttributeValue::UnitRef(origin)) = entry
            .attr_value(gimli::DW_AT_abstract_origin)
            .expect("attr")
        else {
            continue;
        };
        let origin = unit.entry(origin).expect("origin DIE");
        let Some(callee) = origin.attr_value(gimli::DW_AT_name).expect("attr") else {
            continue;
        };
        let callee = unit
            .attr_string(callee)
            .expect("name string")
            .to_string_lossy()
            .into_owned();
        sites.push(InlineSite {
            callee,
            low_pc,
            call_line,
        });
        if sites.len() == want {
            break;
        }
    }
    sites
}

#[test]
fn inlined_functions_resolve_innermost_first_with_file_and_line() {
    let vmlinux = MappedFile::open(&file("vmlinux")).expect("map vmlinux");
    let sites = inline_sites(vmlinux.bytes(), 25);
    assert!(sites.len() >= 5, "init/main.c has inlined calls: {sites:?}");
    let s = full();
    assert_eq!(s.source(), SourceKind::VmlinuxDwarf);
    for site in &sites {
        let frames = s.resolve(AddrSpace::Kernel(site.low_pc));
        assert!(frames.len() >= 2, "{site:?}: {frames:?}");
        assert!(
            frames[0].inlined,
            "innermost frame is an inlined one: {frames:?}"
        );
        let outer = frames.last().expect("never empty");
        assert!(
            !outer.inlined,
            "outermost frame is a real function: {frames:?}"
        );
        // The symbol table names the containing function. Code no symbol
        // covers (a `__weak` function overridden at link time stays in .text
        // without a symbol: tiny-orc's init/main.c `free_initmem`) keeps
        // DWARF's name rather than a `[kernel 0x…]` label.
        match s.kernel_symbols().lookup(site.low_pc) {
            Some((containing, _)) => assert_eq!(*outer.function, containing.name, "{frames:?}"),
            None => assert!(!outer.function.starts_with('['), "{frames:?}"),
        }
        let k = frames
            .iter()
            .position(|f| f.inlined && *f.function == site.callee)
            .unwrap_or_else(|| panic!("{site:?} not among {:?}", names(&frames)));
        // The frame outside the inlined call sits on the line of the call.
        let caller = &frames[k + 1];
        assert_eq!(
            caller.line.map(u64::from),
            Some(site.call_line),
            "{site:?}: {frames:?}"
        );
        for f in frames.iter() {
            let file = f.file.as_deref().unwrap_or_else(|| panic!("file of {f:?}"));
            assert!(
                !file.starts_with('/'),
                "file names are tree-relative: {file}"
            );
            assert!(f.line.is_some_and(|l| l > 0), "line of {f:?}");
        }
    }
    // The containing function's own frame names init/main.c for an inline in start_kernel.
    let start_kernel = s
        .kernel_symbols()
        .by_name("start_kernel")
        .expect("start_kernel");
    let site = sites.iter().find(|site| {
        site.low_pc >= start_kernel.addr
            && site.low_pc - start_kernel.addr < start_kernel.size.unwrap_or(0)
    });
    if let Some(site) = site {
        let frames = s.resolve(AddrSpace::Kernel(site.low_pc));
        let outer = frames.last().expect("never empty");
        assert_eq!(outer.file.as_deref(), Some("init/main.c"), "{frames:?}");
    }
}

#[test]
fn frames_agree_with_binutils_addr2line() {
    // A test that cannot run fails with its reason (run-tests.sh installs binutils).
    let probe = Command::new("addr2line")
        .arg("--version")
        .output()
        .expect("binutils addr2line is needed (apt-get install binutils)");
    assert!(probe.status.success());
    let s = full();
    // Every 97th sized function, at a quarter of its length: a spread of
    // addresses over the whole kernel, inlined or not.
    let addrs: Vec<u64> = s
        .kernel_symbols()
        .symbols()
        .iter()
        .filter(|sym| sym.size.is_some_and(|n| n >= 16) && !sym.name.starts_with("__pfx_"))
        .step_by(97)
        .map(|sym| sym.addr + sym.size.unwrap_or(0) / 4)
        .collect();
    assert!(addrs.len() > 50, "{} addresses", addrs.len());
    let out = Command::new("addr2line")
        .args(["-f", "-i", "-e"])
        .arg(file("vmlinux"))
        .args(addrs.iter().map(|a| format!("{a:#x}")))
        .arg("-a")
        .output()
        .expect("run addr2line");
    let text = String::from_utf8_lossy(&out.stdout);
    // Output: "0xADDR" line, then (function, file:line) pairs, innermost first.
    let mut chains: Vec<Vec<String>> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with("0x") {
            chains.push(Vec::new());
            continue;
        }
        let chain = chains.last_mut().expect("address line first");
        chain.push(line.to_owned());
        let _file_line = lines.next();
    }
    assert_eq!(chains.len(), addrs.len());
    let mut inlined = 0;
    for (addr, theirs) in addrs.iter().zip(&chains) {
        let ours = s.resolve(AddrSpace::Kernel(*addr));
        let ours = names(&ours);
        if theirs.iter().any(|f| f == "??") {
            continue;
        }
        assert_eq!(
            ours.len(),
            theirs.len(),
            "{addr:#x}: ours {ours:?}, binutils {theirs:?}"
        );
        // Inlined names must match exactly; the outermost comes from the
        // symbol table and may carry a `.constprop.0`-style suffix.
        let n = ours.len() - 1;
        assert_eq!(&ours[..n], &theirs[..n], "{addr:#x}");
        assert!(
            ours[n].starts_with(theirs[n].as_str()),
            "{addr:#x}: {} vs {}",
            ours[n],
            theirs[n]
        );
        inlined += usize::from(n > 0);
    }
    assert!(inlined > 0, "the sample includes inlined code");
}

#[test]
fn system_map_and_vmlinux_symtab_agree() {
    let map = sysmap::load(&file("System.map")).expect("System.map parses");
    let elf = elfsyms::load(&file("vmlinux")).expect("vmlinux symtab");
    let in_map = map
        .by_name("start_kernel")
        .expect("start_kernel in System.map");
    let in_elf = elf
        .by_name("start_kernel")
        .expect("start_kernel in vmlinux");
    assert_eq!(in_map.addr, in_elf.addr);
    assert!(in_elf.size.is_some_and(|n| n > 0), "ELF gives sizes");
    // Beyond one symbol: the text symbols of System.map are nearly all in the
    // ELF table at the same address (the rest are linker-script symbols).
    let text = map.text_only();
    let in_elf: std::collections::HashSet<(u64, &str)> = elf
        .symbols()
        .iter()
        .map(|e| (e.addr, e.name.as_str()))
        .collect();
    let found = text
        .symbols()
        .iter()
        .filter(|m| in_elf.contains(&(m.addr, m.name.as_str())))
        .count();
    assert!(text.len() > 5000, "{} text symbols", text.len());
    assert!(
        found * 100 >= text.len() * 98,
        "{found} of {} found",
        text.len()
    );
}

#[test]
fn source_selection_prefers_vmlinux_then_system_map_then_nothing() {
    let map = Some(file("System.map"));
    let vmlinux = Some(file("vmlinux"));
    assert_eq!(full().source(), SourceKind::VmlinuxDwarf);

    let all_but_vmlinux = SymbolizerOptions {
        system_map: map.clone(),
        image: Some(image()),
        ..Default::default()
    };
    assert_eq!(
        Symbolizer::new(all_but_vmlinux).expect("map").source(),
        SourceKind::SystemMap
    );
    let only_map = Symbolizer::new(SymbolizerOptions {
        system_map: map.clone(),
        ..Default::default()
    })
    .expect("System.map only");
    assert_eq!(only_map.source(), SourceKind::SystemMap);
    assert!(only_map
        .kernel_symbols()
        .symbols()
        .iter()
        .all(|s| s.is_text()));
    let sk = only_map
        .kernel_symbols()
        .by_name("start_kernel")
        .expect("start_kernel")
        .addr;
    let frames = only_map.resolve(AddrSpace::Kernel(sk + 1));
    assert_eq!(names(&frames), ["start_kernel"]);
    assert_eq!(frames[0].file, None);

    let none = Symbolizer::new(SymbolizerOptions::default()).expect("nothing");
    assert_eq!(none.source(), SourceKind::None);
    assert_eq!(
        names(&none.resolve(AddrSpace::Kernel(sk))),
        [format!("[kernel {sk:#x}]")]
    );

    // Without DWARF (objcopy --strip-debug) the vmlinux symtab still beats System.map;
    // without any symbols (--strip-all) it is skipped for System.map, with a note.
    let dir = tempfile::tempdir().expect("tempdir");
    for (flag, expect) in [
        ("--strip-debug", SourceKind::VmlinuxSymtab),
        ("--strip-all", SourceKind::SystemMap),
    ] {
        let out = dir.path().join(flag.trim_start_matches('-'));
        let ok = Command::new("objcopy")
            .arg(flag)
            .arg(file("vmlinux"))
            .arg(&out)
            .status();
        assert!(
            ok.is_ok_and(|s| s.success()),
            "objcopy {flag} failed or is missing (apt-get install binutils)"
        );
        let s = Symbolizer::new(SymbolizerOptions {
            vmlinux: Some(out),
            system_map: map.clone(),
            ..Default::default()
        })
        .expect("stripped vmlinux");
        assert_eq!(s.source(), expect, "{flag}");
        assert_eq!(
            names(&s.resolve(AddrSpace::Kernel(sk + 1))),
            ["start_kernel"],
            "{flag}"
        );
        assert_eq!(
            s.notes().is_empty(),
            expect != SourceKind::SystemMap,
            "{flag}: {:?}",
            s.notes()
        );
    }
    // The DWARF source also names start_kernel, with a line.
    let frames = full().resolve(AddrSpace::Kernel(sk + 1));
    assert_eq!(frames.last().map(|f| &*f.function), Some("start_kernel"));
    assert!(frames.last().is_some_and(|f| f.line.is_some()));
    drop(vmlinux);
}

#[test]
fn kallsyms_from_the_image_is_used_when_nothing_better_is_given() {
    let map = Some(file("System.map"));
    let k = Symbolizer::new(SymbolizerOptions {
        image: Some(image()),
        ..Default::default()
    })
    .expect("image only");
    assert_eq!(k.source(), SourceKind::Kallsyms, "{:?}", k.notes());
    let with_map = Symbolizer::new(SymbolizerOptions {
        image: Some(image()),
        system_map: map.clone(),
        ..Default::default()
    })
    .expect("image and map");
    assert_eq!(with_map.source(), SourceKind::SystemMap);

    // Kallsyms names every address inside a System.map text symbol as the
    // System.map does (or as an alias at the same start address).
    let table = with_map.kernel_symbols();
    let pairs: std::collections::HashSet<(u64, &str)> = table
        .symbols()
        .iter()
        .map(|m| (m.addr, m.name.as_str()))
        .collect();
    let mut checked = 0;
    for m in table.symbols().iter().step_by(7) {
        let addr = m.addr + 1;
        let (theirs, _) = table.lookup(addr).expect("map covers its own symbol");
        let frames = k.resolve(AddrSpace::Kernel(addr));
        let ours = k
            .kernel_symbols()
            .lookup(addr)
            .expect("kallsyms covers it")
            .0;
        assert_eq!(names(&frames), [ours.name.as_str()]);
        assert_eq!(
            ours.addr, theirs.addr,
            "{} vs {} at {addr:#x}",
            ours.name, theirs.name
        );
        assert!(
            pairs.contains(&(ours.addr, ours.name.as_str())),
            "{} at {addr:#x}",
            ours.name
        );
        checked += 1;
    }
    assert!(checked > 1000, "{checked} addresses checked");
}

#[test]
fn decompressor_addresses_resolve_through_its_elf() {
    let theirs =
        nm(&file("decompressor.elf")).expect("binutils nm is needed (apt-get install binutils)");
    let extract = theirs
        .by_name("extract_kernel")
        .expect("extract_kernel in decompressor");
    // As the VMM sees it: the decompressor relocated itself to some base.
    let size = theirs.symbols().last().map_or(0, |s| s.addr) + 0x1000;
    let layout = RunLayout {
        decompressor_bases: vec![0x100_0000, 0x100_0000 + 2 * size],
        decompressor_size: size,
        ..Default::default()
    };
    let with = full();
    let without = Symbolizer::new(SymbolizerOptions::default()).expect("nothing");
    for base in &layout.decompressor_bases {
        let space = layout.classify(base + extract.addr + 8, 0);
        assert_eq!(space, AddrSpace::Decompressor(extract.addr + 8));
        assert_eq!(
            names(&with.resolve(space)),
            ["[decompressor] extract_kernel"]
        );
        assert_eq!(names(&without.resolve(space)), ["[decompressor]"]);
    }
    let startup = theirs.by_name("startup_64").expect("startup_64");
    assert_eq!(
        names(&with.resolve(AddrSpace::Decompressor(startup.addr))),
        ["[decompressor] startup_64"]
    );
    // Every symbol of the decompressor resolves to a name nm gives that address.
    let ours = with.decompressor_symbols().expect("decompressor symbols");
    assert!(ours.len() > 20, "{} symbols", ours.len());
    for sym in ours.symbols() {
        let frames = with.resolve(AddrSpace::Decompressor(sym.addr));
        let name = frames[0]
            .function
            .strip_prefix("[decompressor] ")
            .expect("named");
        assert!(
            theirs
                .symbols()
                .iter()
                .any(|t| t.addr == sym.addr && t.name == name),
            "{name} at {:#x}",
            sym.addr
        );
    }
}

#[test]
fn bad_system_map_lines_are_errors_with_line_numbers() {
    let real = std::fs::read_to_string(file("System.map")).expect("System.map");
    let mut lines: Vec<&str> = real.lines().take(500).collect();
    lines.insert(
        321,
        "ffffffffffffffff B The real System.map is in the linux-image-dbg package",
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("System.map");
    std::fs::write(&path, lines.join("\n")).expect("write");
    match sysmap::load(&path) {
        Err(SysmapError::BadLine { line, .. }) => assert_eq!(line, 322),
        other => panic!("expected a bad line, got {other:?}"),
    }
    let err = Symbolizer::new(SymbolizerOptions {
        system_map: Some(path),
        ..Default::default()
    })
    .expect_err("bad System.map is refused");
    assert!(matches!(err, SymbolizerError::SystemMap(_)));
    assert!(err.to_string().contains("line 322"), "{err}");
    // A missing vmlinux the user named is an error too, not a silent fallback.
    let err = Symbolizer::new(SymbolizerOptions {
        vmlinux: Some(dir.path().join("missing")),
        system_map: Some(file("System.map")),
        ..Default::default()
    })
    .expect_err("missing vmlinux");
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn garbage_addresses_get_labels() {
    let s = full();
    let text = s.kernel_symbols();
    let first = text.symbols().first().expect("symbols").addr;
    let cases = [
        (
            AddrSpace::Kernel(first - 0x1000),
            format!("[kernel {:#x}]", first - 0x1000),
        ),
        (
            AddrSpace::Kernel(u64::MAX),
            "[kernel 0xffffffffffffffff]".to_owned(),
        ),
        (
            AddrSpace::Unknown(0xdead_beef),
            "[unknown 0xdeadbeef]".to_owned(),
        ),
        (AddrSpace::User, "[user]".to_owned()),
        (AddrSpace::Setup(0x7c00), "[setup]".to_owned()),
        (
            AddrSpace::Decompressor(u64::MAX - 7),
            "[decompressor]".to_owned(),
        ),
    ];
    for (space, label) in cases {
        let frames = s.resolve(space);
        assert_eq!(names(&frames), [label.as_str()], "{space:?}");
        assert_eq!(
            (frames[0].file.as_deref(), frames[0].line, frames[0].inlined),
            (None, None, false)
        );
    }
    // Raw guest RIPs through the layout: garbage below the kernel half and in
    // it, on a layout with no kernel placement known.
    let layout = RunLayout::default();
    for rip in [0x1234_5678, 0xffff_8000_0000_0000, 0x8000_0000_0000_0000] {
        let frames = s.resolve(layout.classify(rip, 0));
        assert!(frames[0].function.starts_with('['), "{frames:?}");
        assert!(!frames.is_empty());
    }
}

#[test]
fn kaslr_slide_and_physical_head_addresses_resolve_like_link_addresses() {
    let s = full();
    let sk = s
        .kernel_symbols()
        .by_name("start_kernel")
        .expect("start_kernel")
        .addr;
    let startup = s
        .kernel_symbols()
        .by_name("startup_64")
        .expect("startup_64")
        .addr;
    let text = s
        .kernel_symbols()
        .by_name("_text")
        .map_or(0xffff_ffff_8100_0000, |t| t.addr);
    let slide = 0x2e0_0000_i64;
    let layout = RunLayout {
        kernel_virt_slide: slide,
        virt_slide_method: "test".into(),
        kernel_phys_start: Some(0x100_0000 + slide as u64),
        kernel_link_start: text,
        kernel_size: 0x200_0000,
        ..Default::default()
    };
    let at = |space| s.resolve(space);
    assert_eq!(
        at(layout.classify(sk + 5 + slide as u64, 0)),
        at(AddrSpace::Kernel(sk + 5))
    );
    // Head code at its physical address, before the switch to virtual ones.
    let phys = 0x100_0000 + slide as u64 + (startup - text);
    assert_eq!(layout.classify(phys, 0), AddrSpace::Kernel(startup));
    assert_eq!(
        names(&at(layout.classify(phys, 0))).last(),
        Some(&"startup_64")
    );
}

#[test]
fn dwarf_is_parsed_only_when_an_address_needs_it() {
    let vmlinux = MappedFile::open(&file("vmlinux")).expect("map");
    let sk = full()
        .kernel_symbols()
        .by_name("start_kernel")
        .expect("start_kernel")
        .addr;
    let dwarf = DwarfInfo::open(&vmlinux, Some(sk))
        .expect("ELF")
        .expect("has DWARF");
    assert!(!dwarf.is_parsed());
    let frames = dwarf.frames(sk).expect("lookup");
    assert!(dwarf.is_parsed());
    assert_eq!(
        frames.last().and_then(|f| f.function.as_deref()),
        Some("start_kernel")
    );
    assert_eq!(
        frames.last().and_then(|f| f.file.as_deref()),
        Some("init/main.c")
    );
    // The decompressor ELF has no DWARF at all.
    let dec = MappedFile::open(&file("decompressor.elf")).expect("map");
    assert!(DwarfInfo::open(&dec, None).expect("ELF").is_none());
}

#[test]
fn concurrent_resolution_is_consistent() {
    let s = full();
    let addrs: Vec<u64> = s
        .kernel_symbols()
        .symbols()
        .iter()
        .step_by(53)
        .map(|x| x.addr)
        .collect();
    let results: Vec<Vec<Arc<[Frame]>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..4)
            .map(|_| {
                scope.spawn(|| {
                    addrs
                        .iter()
                        .map(|&a| s.resolve(AddrSpace::Kernel(a)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    for r in &results[1..] {
        assert_eq!(r, &results[0]);
    }
}

#[test]
fn truncated_and_corrupted_elf_files_are_errors_not_panics() {
    let bytes = std::fs::read(file("decompressor.elf")).expect("read");
    let dir = tempfile::tempdir().expect("tempdir");
    for len in [0usize, 16, 64, 1000, bytes.len() / 2, bytes.len() - 1] {
        let path = dir.path().join(format!("cut{len}"));
        std::fs::write(&path, &bytes[..len]).expect("write");
        // Parsing may succeed on a partial symtab or fail; it must not panic.
        let _ = elfsyms::load(&path);
        let _ = Symbolizer::new(SymbolizerOptions {
            vmlinux: Some(path.clone()),
            ..Default::default()
        });
    }
    let mut flipped = bytes.clone();
    for i in (0..flipped.len()).step_by(251) {
        flipped[i] ^= 0xa5;
    }
    let path = dir.path().join("flipped");
    std::fs::write(&path, &flipped).expect("write");
    let _ = elfsyms::load(&path);
}
