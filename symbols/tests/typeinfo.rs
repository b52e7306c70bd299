//! Kernel struct layouts for task awareness, checked against independent
//! readers: gdb's own DWARF reader on the test kernels' vmlinux, pahole's
//! BTF encoder on the same DWARF, and `bpftool btf dump` on the BTF of
//! Debian's stock cloud kernel (which has no vmlinux, only a vmlinuz). A
//! kernel or tool that cannot be found fails the test with the reason:
//! install `gdb`, `bpftool` and `dwarves` (apt; examples/run-tests.sh does),
//! build the test kernels (`kernel/build.sh`), fetch the Debian kernel
//! (`kernel/fetch-debian-cloud.sh`).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use boottrace_symbols::image::KernelImage;
use boottrace_symbols::mapped::MappedFile;
use boottrace_symbols::sysmap;
use boottrace_symbols::typeinfo::{
    self, CurrentTaskField, KernelTypeInfo, PerCpuAddressing, TypeInfoSource,
};

/// Runs `program args…`, failing the test with a reason when it cannot run
/// or exits non-zero.
fn run(program: &str, args: &[&str], hint: &str) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({hint}): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({hint}):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// gdb's values of C expressions evaluated against `vmlinux`'s DWARF.
fn gdb_values(vmlinux: &Path, exprs: &[String]) -> Vec<u64> {
    let mut args = vec!["-batch".to_owned(), "-nx".to_owned()];
    for e in exprs {
        args.push("-ex".to_owned());
        args.push(format!("print/d {e}"));
    }
    args.push(vmlinux.display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run("gdb", &args, "apt-get install gdb");
    let values: Vec<u64> = out
        .lines()
        .filter_map(|l| l.strip_prefix('$')?.split_once(" = "))
        .map(|(_, v)| v.trim().parse().expect("gdb printed a decimal"))
        .collect();
    assert_eq!(values.len(), exprs.len(), "gdb output:\n{out}");
    values
}

fn offset_of(ty: &str, member: &str) -> String {
    format!("(long)&((struct {ty} *)0)->{member}")
}

fn size_of(ty: &str, member: &str) -> String {
    format!("sizeof(((struct {ty} *)0)->{member})")
}

/// DWARF offsets of a test kernel agree with gdb's, and the symbols that
/// locate `current` resolve from the vmlinux's ELF symbol table to the
/// values its System.map lists.
fn check_dwarf(kernel: &str, smp: bool) {
    let dir = common::kernel_dir(kernel);
    let vmlinux = dir.join("vmlinux");
    let file = MappedFile::open(&vmlinux).expect("vmlinux maps");
    let t = Instant::now();
    let lookup = typeinfo::load(Some(&file), None);
    let elapsed = t.elapsed();
    eprintln!("{kernel}: type info from DWARF in {elapsed:?}: {lookup:?}");
    assert_eq!(lookup.source(), TypeInfoSource::Dwarf, "{:?}", lookup.notes);
    let info = lookup.info.expect("type info");

    let t = &info.task;
    let members = [
        ("pid", t.pid),
        ("tgid", t.tgid),
        ("comm", t.comm),
        ("__state", t.state),
        ("flags", t.flags),
        ("stack", t.stack),
        ("thread.sp", t.thread_sp),
        ("tasks", t.tasks.expect("tasks found")),
    ];
    let mut exprs = vec!["sizeof(struct task_struct)".to_owned()];
    for (m, _) in &members {
        exprs.push(offset_of("task_struct", m));
        exprs.push(size_of("task_struct", m));
    }
    exprs.push("sizeof(struct inactive_task_frame)".to_owned());
    exprs.push(offset_of("inactive_task_frame", "bp"));
    exprs.push(offset_of("inactive_task_frame", "ret_addr"));
    exprs.push(offset_of("pcpu_hot", "current_task"));
    let gdb = gdb_values(&vmlinux, &exprs);
    let mut mine = vec![t.size];
    for (_, f) in &members {
        mine.extend([f.offset, f.size]);
    }
    let CurrentTaskField::PcpuHot { offset } = info.current else {
        panic!("6.12 has pcpu_hot: {:?}", info.current)
    };
    mine.extend([info.frame.size, info.frame.bp, info.frame.ret_addr, offset]);
    let rows: Vec<_> = exprs.iter().zip(mine.iter().zip(&gdb)).collect();
    for (expr, (mine, gdb)) in &rows {
        assert_eq!(mine, gdb, "{kernel}: {expr}: boottrace {mine}, gdb {gdb}");
    }

    let table = typeinfo::elf_symbols(file.bytes(), &info.needed_symbols()).expect("ELF symbols");
    let symbols = info.resolve_symbols(&table).expect("symbols resolve");
    let map = sysmap::load(&dir.join("System.map")).expect("System.map");
    let addr = |name: &str| map.by_name(name).map(|s| s.addr);
    assert_eq!(Some(symbols.current.symbol_value), addr("pcpu_hot"));
    assert_eq!(Some(symbols.init_task), addr("init_task"));
    assert_eq!(symbols.per_cpu_offset, addr("__per_cpu_offset"));
    let expected = if smp {
        PerCpuAddressing::GsRelative
    } else {
        PerCpuAddressing::Global
    };
    assert_eq!(symbols.current.addressing, expected, "{kernel}");
}

#[test]
fn tiny_fp_dwarf_layouts_match_gdb() {
    check_dwarf("tiny-fp", false);
}

#[test]
fn tiny_orc_dwarf_layouts_match_gdb() {
    check_dwarf("tiny-orc", true);
}

/// The two readers agree on one kernel: BTF that pahole encodes from the
/// tiny-orc vmlinux's DWARF gives the layout the DWARF reader gives (the
/// test kernels are built without `CONFIG_DEBUG_INFO_BTF`).
#[test]
fn pahole_btf_of_tiny_orc_agrees_with_its_dwarf() {
    let dir = common::kernel_dir("tiny-orc");
    let vmlinux = dir.join("vmlinux");
    let file = MappedFile::open(&vmlinux).expect("vmlinux maps");
    let dwarf = KernelTypeInfo::from_dwarf(&file)
        .expect("DWARF read")
        .expect("DWARF present");
    let tmp = tempfile::NamedTempFile::new().expect("temp file");
    let encode = format!("--btf_encode_detached={}", tmp.path().display());
    run(
        "pahole",
        &[&encode, vmlinux.to_str().expect("UTF-8 path")],
        "apt-get install dwarves",
    );
    let btf = std::fs::read(tmp.path()).expect("pahole wrote BTF");
    let from_btf = KernelTypeInfo::from_btf(&btf).expect("BTF read");
    assert_eq!(from_btf.source, TypeInfoSource::Btf);
    assert_eq!(
        KernelTypeInfo {
            source: TypeInfoSource::Dwarf,
            ..from_btf
        },
        dwarf
    );
}

/// The vmlinuz of Debian's 6.12 cloud kernel; fails with the reason when it
/// cannot be fetched.
fn debian_vmlinuz() -> PathBuf {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../kernel/fetch-debian-cloud.sh");
    let out = run(
        script.to_str().expect("UTF-8 path"),
        &["6.12"],
        "Debian's cloud kernel package must be fetchable with apt",
    );
    PathBuf::from(out.lines().last().expect("a path printed").trim())
}

/// One BTF type as `bpftool -j btf dump` prints it.
type BtfJson = serde_json::Map<String, serde_json::Value>;

/// bpftool's reading of a BTF blob: types by id and struct ids by name.
struct Bpftool {
    types: HashMap<u64, BtfJson>,
    structs: HashMap<String, u64>,
}

impl Bpftool {
    fn dump(btf: &[u8]) -> Bpftool {
        let tmp = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(tmp.path(), btf).expect("write BTF");
        let path = tmp.path().to_str().expect("UTF-8 path");
        let out = run(
            "bpftool",
            &["-j", "btf", "dump", "file", path],
            "apt-get install bpftool",
        );
        let json: serde_json::Value = serde_json::from_str(&out).expect("bpftool JSON");
        let mut types = HashMap::new();
        let mut structs = HashMap::new();
        for t in json["types"].as_array().expect("types array") {
            let t = t.as_object().expect("type object").clone();
            let id = t["id"].as_u64().expect("id");
            if t["kind"] == "STRUCT" {
                if let Some(name) = t["name"].as_str() {
                    structs.entry(name.to_owned()).or_insert(id);
                }
            }
            types.insert(id, t);
        }
        Bpftool { types, structs }
    }

    /// The type behind typedefs and qualifiers.
    fn strip(&self, mut id: u64) -> &BtfJson {
        loop {
            let t = &self.types[&id];
            match t["kind"].as_str() {
                Some("TYPEDEF" | "CONST" | "VOLATILE" | "RESTRICT" | "TYPE_TAG") => {
                    id = t["type_id"].as_u64().expect("type_id");
                }
                _ => return t,
            }
        }
    }

    fn size(&self, id: u64) -> u64 {
        let t = self.strip(id);
        match t["kind"].as_str() {
            Some("PTR") => 8,
            Some("ARRAY") => {
                t["nr_elems"].as_u64().expect("nr_elems")
                    * self.size(t["type_id"].as_u64().expect("elem"))
            }
            _ => t["size"].as_u64().expect("size"),
        }
    }

    /// `(byte offset, type id)` of `name` in struct/union `id`, looking into
    /// anonymous members.
    fn member(&self, id: u64, name: &str) -> Option<(u64, u64)> {
        let t = self.strip(id);
        for m in t["members"].as_array()? {
            let bits = m["bits_offset"].as_u64().expect("bits_offset");
            let ty = m["type_id"].as_u64().expect("type_id");
            if m["name"] == name {
                return Some((bits / 8, ty));
            }
            if m["name"] == "(anon)" {
                if let Some((off, ty)) = self.member(ty, name) {
                    return Some((off + bits / 8, ty));
                }
            }
        }
        None
    }

    /// `(offset, size)` of a dotted member path in struct `s`.
    fn field(&self, s: &str, path: &str) -> (u64, u64) {
        let mut id = self.structs[s];
        let mut offset = 0;
        let mut ty = id;
        for part in path.split('.') {
            let (off, t) = self
                .member(id, part)
                .unwrap_or_else(|| panic!("bpftool: {s} has no {path}"));
            offset += off;
            ty = t;
            id = t;
        }
        (offset, self.size(ty))
    }
}

#[test]
fn debian_cloud_btf_layouts_match_bpftool() {
    let path = debian_vmlinuz();
    let t = Instant::now();
    let image = KernelImage::open(&path).expect("vmlinuz opens");
    let opened = t.elapsed();
    let t = Instant::now();
    let lookup = typeinfo::load(None, Some(&image));
    let elapsed = t.elapsed();
    eprintln!(
        "{}: image opened in {opened:?}, type info from BTF in {elapsed:?}: {lookup:?}",
        path.display()
    );
    assert_eq!(lookup.source(), TypeInfoSource::Btf, "{:?}", lookup.notes);
    let info = lookup.info.expect("type info");

    let (_, btf) = image.section(".BTF").expect(".BTF in the payload");
    // The payload ELF read directly gives the same answer.
    let from_elf = KernelTypeInfo::from_elf_btf(image.elf_bytes()).expect("ELF .BTF read");
    assert_eq!(from_elf, Some(info));
    let tool = Bpftool::dump(btf);
    let task = &info.task;
    let check = |s: &str, path: &str, mine: (u64, u64)| {
        let theirs = tool.field(s, path);
        assert_eq!(
            mine, theirs,
            "{s}.{path}: boottrace (offset, size) {mine:?}, bpftool {theirs:?}"
        );
    };
    let task_size = tool.types[&tool.structs["task_struct"]]["size"].as_u64();
    assert_eq!(Some(task.size), task_size);
    for (path, f) in [
        ("pid", task.pid),
        ("tgid", task.tgid),
        ("__state", task.state),
        ("flags", task.flags),
        ("stack", task.stack),
        ("thread.sp", task.thread_sp),
        ("tasks", task.tasks.expect("tasks found")),
    ] {
        check("task_struct", path, (f.offset, f.size));
    }
    // comm: the length of the char array (bytes, as chars are bytes).
    check("task_struct", "comm", (task.comm.offset, task.comm.size));
    check("inactive_task_frame", "bp", (info.frame.bp, 8));
    check("inactive_task_frame", "ret_addr", (info.frame.ret_addr, 8));
    let CurrentTaskField::PcpuHot { offset } = info.current else {
        panic!("6.12 has pcpu_hot: {:?}", info.current)
    };
    check("pcpu_hot", "current_task", (offset, 8));

    // The symbols come from the image's own kallsyms (Debian: KALLSYMS_ALL).
    let table = image.kallsyms_ref().expect("kallsyms");
    let symbols = info.resolve_symbols(table).expect("symbols resolve");
    assert_eq!(symbols.current.addressing, PerCpuAddressing::GsRelative);
    assert!(
        symbols.current.symbol_value < image.text_start(),
        "pcpu_hot is an offset into the zero-based per-CPU area: {:#x}",
        symbols.current.symbol_value
    );
    assert!(symbols.init_task >= image.text_start());
    assert!(symbols.per_cpu_offset.is_some());

    // Cut short, the same BTF is an error, never a panic or a wrong layout.
    for len in [0, 23, 24, btf.len() / 2, btf.len() - 1] {
        assert!(
            KernelTypeInfo::from_btf(&btf[..len]).is_err(),
            "{len} bytes of BTF accepted"
        );
    }
}

/// Real BTF with bytes flipped (header and anywhere) and cut short: an
/// error or a layout, never a panic or a hang. `BOOTTRACE_MUTATIONS=N`
/// scales the count, as in tests/mutations.rs.
#[test]
fn mutated_debian_btf_never_panics() {
    let image = KernelImage::open(&debian_vmlinuz()).expect("vmlinuz opens");
    let (_, btf) = image.section(".BTF").expect(".BTF in the payload");
    let scale: usize = std::env::var("BOOTTRACE_MUTATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut data = btf.to_vec();
    let (mut ok, mut err) = (0, 0);
    let t = Instant::now();
    for _ in 0..300 * scale {
        data.copy_from_slice(btf);
        for _ in 0..1 + next() % 4 {
            // A quarter of the hits go to the 24-byte header.
            let span = if next() % 4 == 0 { 24 } else { data.len() };
            let at = (next() % span as u64) as usize;
            data[at] = next() as u8;
        }
        let len = if next() % 8 == 0 {
            (next() % data.len() as u64) as usize
        } else {
            data.len()
        };
        match KernelTypeInfo::from_btf(&data[..len]) {
            Ok(_) => ok += 1,
            Err(_) => err += 1,
        }
    }
    eprintln!(
        "mutated BTF: {ok} parsed, {err} rejected, in {:?}",
        t.elapsed()
    );
    assert!(err > 0, "no mutation was ever detected");
}

#[test]
fn no_type_info_is_reported_with_reasons() {
    let none = typeinfo::load(None, None);
    assert_eq!(none.source(), TypeInfoSource::None);
    assert!(!none.notes.is_empty());

    // The test kernels are built without BTF: their bzImage has no .BTF.
    let dir = common::kernel_dir("tiny-fp");
    let image = KernelImage::open(&dir.join("bzImage")).expect("bzImage opens");
    let lookup = typeinfo::load(None, Some(&image));
    assert_eq!(lookup.source(), TypeInfoSource::None);
    assert!(
        lookup.notes.iter().any(|n| n.contains(".BTF")),
        "{:?}",
        lookup.notes
    );

    // An ELF without DWARF (the decompressor) has none either.
    let file = MappedFile::open(&dir.join("decompressor.elf")).expect("maps");
    assert!(KernelTypeInfo::from_dwarf(&file)
        .expect("not an error")
        .is_none());
}
