//! Kernel structure layouts for task awareness: where `current` lives, and
//! the offsets inside `task_struct` (pid, comm, `thread.sp`, …) and
//! `inactive_task_frame` that a sampler needs to name the running task and
//! to unwind the saved stack of a task that is switched out.
//!
//! Offsets vary with the kernel's config, so they are never hard-coded: they
//! come from the vmlinux's DWARF ([`crate::dwarf_types`]) or, for a stock
//! kernel handed over without a vmlinux, from the BTF that kernels built with
//! `CONFIG_DEBUG_INFO_BTF` carry in their `.BTF` section ([`crate::btf`]).
//! [`load`] tries them in that order and says which one answered (or why
//! none did), so `record` can report "no type info" once.
//!
//! The symbols that locate the data at run time (`pcpu_hot` or
//! `current_task`, `__per_cpu_offset`, `init_task`) come from the existing
//! symbol sources; [`KernelTypeInfo::resolve_symbols`] reads them from a full
//! [`SymbolTable`] (data symbols included).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::btf::{Btf, BtfError};
use crate::dwarf_types::{DwarfTypes, DwarfTypesError};
use crate::image::KernelImage;
use crate::mapped::MappedFile;
use crate::table::{Symbol, SymbolTable};
use crate::typedesc::{Aggregate, Member, TypeRef};

/// Deepest chain of anonymous struct/union members followed to find a
/// named member (task_struct nests two or three).
const MAX_ANON_DEPTH: usize = 8;
/// Most anonymous members opened while looking for one member.
const MAX_ANON_VISITS: usize = 256;
/// Longest `comm` accepted (the kernel's TASK_COMM_LEN is 16).
const MAX_COMM_LEN: u64 = 256;
/// Largest `task_struct` accepted (distro kernels: ~10 KiB).
const MAX_TASK_STRUCT: u64 = 1 << 20;
/// Largest `inactive_task_frame` accepted (x86_64: 56 bytes).
const MAX_FRAME: u64 = 256;

/// Why type information could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TypeInfoError {
    /// The BTF data is malformed.
    #[error("BTF: {0}")]
    Btf(#[from] BtfError),
    /// The DWARF is malformed or unusable.
    #[error("DWARF types: {0}")]
    Dwarf(#[from] DwarfTypesError),
    /// A structure the sampler needs is not described.
    #[error("no complete definition of struct {0}")]
    MissingStruct(&'static str),
    /// A structure lacks a member the sampler needs.
    #[error("struct {structure} has no member {member}")]
    MissingMember {
        /// The structure.
        structure: &'static str,
        /// The member path, e.g. `thread.sp`.
        member: &'static str,
    },
    /// A member exists but its offset or size makes no sense for a kernel.
    #[error("struct {structure} member {member}: {reason}")]
    Implausible {
        /// The structure.
        structure: &'static str,
        /// The member path.
        member: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The vmlinux's ELF symbol table could not be read.
    #[error("ELF symbols: {0}")]
    ElfSymbols(String),
    /// A symbol needed to find `current` is absent from the symbol table.
    #[error("symbol {0} not found (a full symbol table with data symbols is needed)")]
    MissingSymbol(&'static str),
}

/// Which source the type information came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TypeInfoSource {
    /// The vmlinux's DWARF.
    Dwarf,
    /// BTF (`.BTF` of the vmlinux or of the bzImage's payload).
    Btf,
    /// None: task awareness is off.
    None,
}

impl fmt::Display for TypeInfoSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TypeInfoSource::Dwarf => "DWARF (vmlinux)",
            TypeInfoSource::Btf => "BTF (.BTF section)",
            TypeInfoSource::None => "none",
        })
    }
}

/// Byte offset and size of one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// Offset from the start of the outer structure, in bytes.
    pub offset: u64,
    /// Size in bytes (for `comm`: the array length, chars being bytes).
    pub size: u64,
}

/// The members of `struct task_struct` a sampler reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStructLayout {
    /// `sizeof(struct task_struct)`.
    pub size: u64,
    /// `pid` (pid_t).
    pub pid: Field,
    /// `tgid` (pid_t).
    pub tgid: Field,
    /// `comm` (`char[TASK_COMM_LEN]`); `size` is the length.
    pub comm: Field,
    /// `__state` (5.14+) or `state`: the task's run state.
    pub state: Field,
    /// `flags` (PF_*).
    pub flags: Field,
    /// `stack`: the task's kernel stack base.
    pub stack: Field,
    /// `thread.sp`: the stack pointer `__switch_to_asm` saved.
    pub thread_sp: Field,
    /// `tasks`: the list_head linking every task (`init_task.tasks.next` is
    /// the first task forked: pid 1); optional.
    pub tasks: Option<Field>,
    /// `on_cpu` (SMP kernels only): non-zero while the task is on a CPU or
    /// being switched, when `thread.sp` is stale.
    #[serde(default)]
    pub on_cpu: Option<Field>,
    /// `nvcsw` (voluntary context switches): with `nivcsw`, tells whether a
    /// switched-out task ran since it was last seen.
    #[serde(default)]
    pub nvcsw: Option<Field>,
    /// `nivcsw` (involuntary context switches).
    #[serde(default)]
    pub nivcsw: Option<Field>,
}

/// `struct inactive_task_frame`: what `__switch_to_asm` pushed before saving
/// `thread.sp` (r15, r14, r13, r12, bx, bp, ret_addr on x86_64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InactiveTaskFrameLayout {
    /// Size of the frame; the switched-out stack continues above it.
    pub size: u64,
    /// Offset of the saved frame pointer.
    pub bp: u64,
    /// Offset of the return address (into `__schedule`'s caller chain).
    pub ret_addr: u64,
}

/// Where `current` is stored, as a type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CurrentTaskField {
    /// 6.2+: member `current_task` of the per-CPU `struct pcpu_hot pcpu_hot`,
    /// at this offset.
    PcpuHot {
        /// Offset of `current_task` inside `struct pcpu_hot`.
        offset: u64,
    },
    /// Before 6.2: the per-CPU pointer variable `current_task`.
    CurrentTaskVar,
}

impl CurrentTaskField {
    /// The symbol holding the per-CPU variable.
    pub fn symbol(&self) -> &'static str {
        match self {
            CurrentTaskField::PcpuHot { .. } => "pcpu_hot",
            CurrentTaskField::CurrentTaskVar => "current_task",
        }
    }

    /// Offset of the task pointer from the symbol.
    pub fn offset(&self) -> u64 {
        match self {
            CurrentTaskField::PcpuHot { offset } => *offset,
            CurrentTaskField::CurrentTaskVar => 0,
        }
    }
}

/// Everything the sampler needs to know about the kernel's types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelTypeInfo {
    /// Where the offsets came from.
    pub source: TypeInfoSource,
    /// `task_struct` members.
    pub task: TaskStructLayout,
    /// `inactive_task_frame` members.
    pub frame: InactiveTaskFrameLayout,
    /// Where `current` lives.
    pub current: CurrentTaskField,
}

/// How a per-CPU symbol's value turns into an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PerCpuAddressing {
    /// Uniprocessor kernel (`__per_cpu_offset` absent): per-CPU variables
    /// are ordinary globals, read at the symbol's (KASLR-shifted) address.
    Global,
    /// SMP kernel: the kernel reads `%gs:symbol`, so the address is the
    /// CPU's kernel GS base (`MSR_GS_BASE` in kernel mode, `MSR_KERNEL_GS_BASE`
    /// while in user mode) plus the symbol's value. On x86_64 before 6.15 the
    /// value is a small offset (the per-CPU section is linked at 0) and does
    /// not move with KASLR; `__per_cpu_offset[cpu]` is the same base read
    /// from memory.
    GsRelative,
}

/// The run-time location of `current`, from the symbol table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrentTaskLocation {
    /// Link-time value of the per-CPU symbol (`pcpu_hot` or `current_task`).
    pub symbol_value: u64,
    /// Offset of the `task_struct *` from the symbol.
    pub field_offset: u64,
    /// How to turn the value into an address.
    pub addressing: PerCpuAddressing,
}

/// Symbol values a task-aware sampler needs, all link-time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSymbols {
    /// Where `current` is.
    pub current: CurrentTaskLocation,
    /// `init_task` (pid 0, the boot CPU's task until `rest_init`).
    pub init_task: u64,
    /// `__per_cpu_offset` (SMP only): the array of per-CPU area bases.
    pub per_cpu_offset: Option<u64>,
}

/// The outcome of [`load`]: type info from the best source, or none with
/// the reasons each source failed.
#[derive(Debug)]
pub struct TypeInfoLookup {
    /// The type info, when some source had it.
    pub info: Option<KernelTypeInfo>,
    /// Why sources were skipped or failed (may be non-empty on success: a
    /// DWARF failure before BTF answered).
    pub notes: Vec<String>,
}

impl TypeInfoLookup {
    /// The source that answered, or [`TypeInfoSource::None`].
    pub fn source(&self) -> TypeInfoSource {
        self.info
            .as_ref()
            .map_or(TypeInfoSource::None, |info| info.source)
    }
}

/// Type info from the best source available: the vmlinux's DWARF, then the
/// vmlinux's `.BTF`, then the `.BTF` in `image`'s kernel ELF (the bzImage
/// payload). Reads only what it needs; call it once (it walks DWARF units
/// until the structures are found).
pub fn load(vmlinux: Option<&MappedFile>, image: Option<&KernelImage>) -> TypeInfoLookup {
    let mut notes = Vec::new();
    if vmlinux.is_none() && image.is_none() {
        notes.push("neither a vmlinux nor a kernel image given".to_owned());
    }
    let info = vmlinux
        .and_then(|file| from_vmlinux(file, &mut notes))
        .or_else(|| image.and_then(|image| from_image(image, &mut notes)));
    TypeInfoLookup { info, notes }
}

/// DWARF, then `.BTF`, of a vmlinux; each failure becomes a note.
fn from_vmlinux(file: &MappedFile, notes: &mut Vec<String>) -> Option<KernelTypeInfo> {
    let shown = file.path().display();
    match KernelTypeInfo::from_dwarf(file) {
        Ok(Some(info)) => return Some(info),
        Ok(None) => notes.push(format!("{shown}: no DWARF")),
        Err(e) => notes.push(format!("{shown}: {e}")),
    }
    match KernelTypeInfo::from_elf_btf(file.bytes()) {
        Ok(Some(info)) => return Some(info),
        Ok(None) => notes.push(format!("{shown}: no .BTF section")),
        Err(e) => notes.push(format!("{shown}: {e}")),
    }
    None
}

/// The `.BTF` of the image's kernel ELF (a bzImage's payload).
fn from_image(image: &KernelImage, notes: &mut Vec<String>) -> Option<KernelTypeInfo> {
    let Some((_, bytes)) = image.section(".BTF") else {
        notes.push("kernel image has no .BTF section".to_owned());
        return None;
    };
    KernelTypeInfo::from_btf(bytes)
        .map_err(|e| notes.push(format!("kernel image .BTF: {e}")))
        .ok()
}

impl KernelTypeInfo {
    /// From the DWARF of a vmlinux; `None` when it has no `.debug_info`.
    pub fn from_dwarf(file: &MappedFile) -> Result<Option<Self>, TypeInfoError> {
        let Some(mut types) = DwarfTypes::open(file)? else {
            return Ok(None);
        };
        Self::from_types(&mut types, TypeInfoSource::Dwarf).map(Some)
    }

    /// From raw BTF data (the contents of a `.BTF` section).
    pub fn from_btf(bytes: &[u8]) -> Result<Self, TypeInfoError> {
        let mut btf = Btf::parse(bytes)?;
        Self::from_types(&mut btf, TypeInfoSource::Btf)
    }

    /// From the `.BTF` section of an ELF file; `None` when it has none.
    pub fn from_elf_btf(elf: &[u8]) -> Result<Option<Self>, TypeInfoError> {
        match crate::btf::elf_btf_section(elf)? {
            Some(bytes) => Self::from_btf(bytes).map(Some),
            None => Ok(None),
        }
    }

    fn from_types(src: &mut dyn TypeSource, source: TypeInfoSource) -> Result<Self, TypeInfoError> {
        // pcpu_hot is optional (6.2+); where it exists, every unit that
        // describes task_struct uses `current` and so describes it too.
        let found = src.find_structs(&[TASK_STRUCT, INACTIVE_FRAME, PCPU_HOT], 2)?;
        let mut found = found.into_iter();
        let task = found
            .next()
            .flatten()
            .ok_or(TypeInfoError::MissingStruct(TASK_STRUCT))?;
        let frame = found
            .next()
            .flatten()
            .ok_or(TypeInfoError::MissingStruct(INACTIVE_FRAME))?;
        let pcpu_hot = found.next().flatten();

        if task.size == 0 || task.size > MAX_TASK_STRUCT {
            return Err(TypeInfoError::Implausible {
                structure: TASK_STRUCT,
                member: "(size)",
                reason: format!("size {} bytes", task.size),
            });
        }
        let pid = task_field(src, &task, "pid", &["pid"])?;
        let tgid = task_field(src, &task, "tgid", &["tgid"])?;
        let comm = task_field(src, &task, "comm", &["comm"])?;
        let state = match task_field(src, &task, "__state", &["__state"]) {
            Err(TypeInfoError::MissingMember { .. }) => {
                task_field(src, &task, "state", &["state"])?
            }
            other => other?,
        };
        let flags = task_field(src, &task, "flags", &["flags"])?;
        let stack = task_field(src, &task, "stack", &["stack"])?;
        let thread_sp = task_field(src, &task, "thread.sp", &["thread", "sp"])?;
        let tasks = match task_field(src, &task, "tasks", &["tasks"]) {
            Ok(f) => Some(f),
            Err(TypeInfoError::MissingMember { .. }) => None,
            Err(e) => return Err(e),
        };
        // Optional members for blocked stacks: a kernel without them still
        // gets task awareness.
        let on_cpu = optional_field(src, &task, "on_cpu", &["on_cpu"], 4)?;
        let nvcsw = optional_field(src, &task, "nvcsw", &["nvcsw"], 8)?;
        let nivcsw = optional_field(src, &task, "nivcsw", &["nivcsw"], 8)?;
        // The sampler reads these as u32 / u64: any other size means the
        // type source was misread.
        for (name, f, want) in [
            ("pid", pid, 4),
            ("tgid", tgid, 4),
            ("thread.sp", thread_sp, 8),
            ("stack", stack, 8),
        ] {
            if f.size != want {
                return Err(TypeInfoError::Implausible {
                    structure: TASK_STRUCT,
                    member: name,
                    reason: format!("{} bytes, expected {want}", f.size),
                });
            }
        }
        if comm.size == 0 || comm.size > MAX_COMM_LEN {
            return Err(TypeInfoError::Implausible {
                structure: TASK_STRUCT,
                member: "comm",
                reason: format!("length {}", comm.size),
            });
        }

        let bp = struct_field(src, &frame, INACTIVE_FRAME, "bp", &["bp"])?;
        let ret_addr = struct_field(src, &frame, INACTIVE_FRAME, "ret_addr", &["ret_addr"])?;
        // Seven saved registers on x86_64; the unwinder reads the frame whole.
        if frame.size > MAX_FRAME || bp.size != 8 || ret_addr.size != 8 {
            return Err(TypeInfoError::Implausible {
                structure: INACTIVE_FRAME,
                member: "(layout)",
                reason: format!(
                    "{} bytes, bp {} bytes, ret_addr {} bytes",
                    frame.size, bp.size, ret_addr.size
                ),
            });
        }
        let current = match pcpu_hot {
            Some(hot) => match struct_field(src, &hot, PCPU_HOT, "current_task", &["current_task"])
            {
                Ok(f) => CurrentTaskField::PcpuHot { offset: f.offset },
                Err(TypeInfoError::MissingMember { .. }) => CurrentTaskField::CurrentTaskVar,
                Err(e) => return Err(e),
            },
            None => CurrentTaskField::CurrentTaskVar,
        };
        Ok(KernelTypeInfo {
            source,
            task: TaskStructLayout {
                size: task.size,
                pid,
                tgid,
                comm,
                state,
                flags,
                stack,
                thread_sp,
                tasks,
                on_cpu,
                nvcsw,
                nivcsw,
            },
            frame: InactiveTaskFrameLayout {
                size: frame.size,
                bp: bp.offset,
                ret_addr: ret_addr.offset,
            },
            current,
        })
    }

    /// Symbol names the sampler needs from the symbol table: the per-CPU
    /// variable holding `current`, `init_task`, and `__per_cpu_offset`
    /// (present only on SMP kernels).
    pub fn needed_symbols(&self) -> [&'static str; 3] {
        [self.current.symbol(), "init_task", "__per_cpu_offset"]
    }

    /// Resolves [`Self::needed_symbols`] in `table` (a full table: vmlinux
    /// ELF symbols, System.map, or the image's kallsyms — not a text-only one).
    pub fn resolve_symbols(&self, table: &SymbolTable) -> Result<TaskSymbols, TypeInfoError> {
        let symbol = self.current.symbol();
        let value = table
            .by_name(symbol)
            .ok_or(TypeInfoError::MissingSymbol(symbol))?
            .addr;
        let init_task = table
            .by_name("init_task")
            .ok_or(TypeInfoError::MissingSymbol("init_task"))?
            .addr;
        let per_cpu_offset = table.by_name("__per_cpu_offset").map(|s| s.addr);
        Ok(TaskSymbols {
            current: CurrentTaskLocation {
                symbol_value: value,
                field_offset: self.current.offset(),
                addressing: if per_cpu_offset.is_some() {
                    PerCpuAddressing::GsRelative
                } else {
                    PerCpuAddressing::Global
                },
            },
            init_task,
            per_cpu_offset,
        })
    }
}

/// The data symbols named in `names` from an ELF's symbol table (any
/// section, per-CPU ones included), for [`KernelTypeInfo::resolve_symbols`]
/// when the caller holds a vmlinux but no System.map: the symbolizer's ELF
/// table keeps code symbols only.
pub fn elf_symbols(elf: &[u8], names: &[&str]) -> Result<SymbolTable, TypeInfoError> {
    use object::{Object, ObjectSymbol};
    let obj = object::File::parse(elf).map_err(|e| TypeInfoError::ElfSymbols(e.to_string()))?;
    let mut found = Vec::new();
    for sym in obj.symbols() {
        if sym.is_undefined() {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        if names.contains(&name) && !found.iter().any(|s: &Symbol| s.name == name) {
            found.push(Symbol {
                addr: sym.address(),
                size: Some(sym.size()).filter(|&s| s > 0),
                name: name.to_owned(),
                kind: if sym.is_global() { 'D' } else { 'd' },
            });
        }
    }
    Ok(SymbolTable::new(found))
}

const TASK_STRUCT: &str = "task_struct";
const INACTIVE_FRAME: &str = "inactive_task_frame";
const PCPU_HOT: &str = "pcpu_hot";

/// An optional `task_struct` member of a known size: `None` when absent,
/// an error when present with another size (the type source was misread).
fn optional_field(
    src: &mut dyn TypeSource,
    task: &Aggregate,
    member: &'static str,
    path: &[&str],
    size: u64,
) -> Result<Option<Field>, TypeInfoError> {
    match task_field(src, task, member, path) {
        Ok(f) if f.size == size => Ok(Some(f)),
        Ok(f) => Err(TypeInfoError::Implausible {
            structure: TASK_STRUCT,
            member,
            reason: format!("{} bytes, expected {size}", f.size),
        }),
        Err(TypeInfoError::MissingMember { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn task_field(
    src: &mut dyn TypeSource,
    task: &Aggregate,
    member: &'static str,
    path: &[&str],
) -> Result<Field, TypeInfoError> {
    struct_field(src, task, TASK_STRUCT, member, path)
}

/// The member at `path` (nested through named struct members, e.g.
/// `thread.sp`), with its offset from the start of `outer`; checked to lie
/// inside `outer`.
fn struct_field(
    src: &mut dyn TypeSource,
    outer: &Aggregate,
    structure: &'static str,
    member: &'static str,
    path: &[&str],
) -> Result<Field, TypeInfoError> {
    let missing = || TypeInfoError::MissingMember { structure, member };
    let implausible = |reason: String| TypeInfoError::Implausible {
        structure,
        member,
        reason,
    };
    let mut agg = outer.clone();
    let mut base = 0u64;
    let mut last = None;
    for (i, name) in path.iter().enumerate() {
        let mut budget = MAX_ANON_VISITS;
        let m = find_member(src, &agg, name, 0, &mut budget)?.ok_or_else(missing)?;
        base = base
            .checked_add(m.offset)
            .ok_or_else(|| implausible("offset overflows".into()))?;
        if i + 1 < path.len() {
            let r = m.aggregate.ok_or_else(missing)?;
            agg = src.aggregate(r)?;
        }
        last = Some(m);
    }
    let m = last.ok_or_else(missing)?;
    let size = match m.array_len {
        // char comm[16]: the length is what a reader wants.
        Some(len) => len,
        None => m.size.ok_or_else(|| implausible("size unknown".into()))?,
    };
    let end = base
        .checked_add(size)
        .ok_or_else(|| implausible("size overflows".into()))?;
    if end > outer.size {
        return Err(implausible(format!(
            "bytes {base}..{end} lie outside the {}-byte struct",
            outer.size
        )));
    }
    Ok(Field { offset: base, size })
}

/// A named member of `agg`, looking through anonymous struct/union members
/// (their offsets added).
fn find_member(
    src: &mut dyn TypeSource,
    agg: &Aggregate,
    name: &str,
    depth: usize,
    budget: &mut usize,
) -> Result<Option<Member>, TypeInfoError> {
    if let Some(m) = agg.members.iter().find(|m| m.name.as_deref() == Some(name)) {
        return Ok(Some(m.clone()));
    }
    if depth >= MAX_ANON_DEPTH {
        return Ok(None);
    }
    for anon in agg.members.iter().filter(|m| m.name.is_none()) {
        let Some(r) = anon.aggregate else { continue };
        // Depth alone does not bound a hostile file: many anonymous members
        // per level multiply. Real structs open a handful in all.
        *budget = budget
            .checked_sub(1)
            .ok_or_else(|| TypeInfoError::Implausible {
                structure: "(anonymous)",
                member: "(nested)",
                reason: format!("more than {MAX_ANON_VISITS} anonymous members searched"),
            })?;
        let inner = src.aggregate(r)?;
        if let Some(mut m) = find_member(src, &inner, name, depth + 1, budget)? {
            m.offset =
                m.offset
                    .checked_add(anon.offset)
                    .ok_or_else(|| TypeInfoError::Implausible {
                        structure: "(anonymous)",
                        member: "(nested)",
                        reason: "offset overflows".into(),
                    })?;
            return Ok(Some(m));
        }
    }
    Ok(None)
}

/// What the layout code asks of DWARF or BTF.
pub(crate) trait TypeSource {
    /// The complete definitions of the named structs, in the order asked
    /// (`None` for each one not defined). The first `required` names are
    /// needed; a source whose full search is costly (DWARF) may stop looking
    /// for the others once those are found.
    fn find_structs(
        &mut self,
        names: &[&str],
        required: usize,
    ) -> Result<Vec<Option<Aggregate>>, TypeInfoError>;
    /// The struct or union behind a reference from a [`Member`].
    fn aggregate(&mut self, r: TypeRef) -> Result<Aggregate, TypeInfoError>;
}

// The two sources' adapters live here, not in their modules, so that btf
// and dwarf_types stay below typeinfo (no import cycle).
impl TypeSource for Btf<'_> {
    /// One pass over the index finds every name: cheap, so optional names
    /// are always searched for.
    fn find_structs(
        &mut self,
        names: &[&str],
        _required: usize,
    ) -> Result<Vec<Option<Aggregate>>, TypeInfoError> {
        self.struct_ids(names)?
            .into_iter()
            .map(|id| id.map(|id| self.read_aggregate(id)).transpose())
            .collect::<Result<_, _>>()
            .map_err(TypeInfoError::from)
    }

    fn aggregate(&mut self, r: TypeRef) -> Result<Aggregate, TypeInfoError> {
        match r {
            TypeRef::Btf(id) => Ok(self.read_aggregate(id)?),
            TypeRef::Dwarf { .. } => Err(BtfError::BadTypeId(0).into()),
        }
    }
}

impl TypeSource for DwarfTypes {
    fn find_structs(
        &mut self,
        names: &[&str],
        required: usize,
    ) -> Result<Vec<Option<Aggregate>>, TypeInfoError> {
        Ok(self.find(names, required)?)
    }

    fn aggregate(&mut self, r: TypeRef) -> Result<Aggregate, TypeInfoError> {
        match r {
            TypeRef::Dwarf { unit, offset } => {
                Ok(self.read_aggregate(unit, gimli::UnitOffset(offset))?)
            }
            TypeRef::Btf(_) => Err(DwarfTypesError::DanglingReference.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A made-up type source: named structs, and aggregates by index.
    struct Fake {
        named: Vec<(&'static str, Aggregate)>,
        by_ref: Vec<Aggregate>,
    }

    impl TypeSource for Fake {
        fn find_structs(
            &mut self,
            names: &[&str],
            _required: usize,
        ) -> Result<Vec<Option<Aggregate>>, TypeInfoError> {
            Ok(names
                .iter()
                .map(|n| {
                    self.named
                        .iter()
                        .find(|(name, _)| name == n)
                        .map(|(_, a)| a.clone())
                })
                .collect())
        }

        fn aggregate(&mut self, r: TypeRef) -> Result<Aggregate, TypeInfoError> {
            match r {
                TypeRef::Btf(i) => Ok(self.by_ref[i as usize].clone()),
                TypeRef::Dwarf { .. } => unreachable!("the fake hands out Btf refs only"),
            }
        }
    }

    fn m(name: Option<&str>, offset: u64, size: u64) -> Member {
        Member {
            name: name.map(str::to_owned),
            offset,
            size: Some(size),
            array_len: None,
            aggregate: None,
        }
    }

    /// A pre-5.14, pre-6.2 kernel: `state` not `__state`, no `pcpu_hot`,
    /// `pid` inside an anonymous struct, `thread.sp` nested.
    fn old_kernel() -> Fake {
        let thread = Aggregate {
            size: 64,
            members: vec![m(Some("es"), 0, 2), m(Some("sp"), 24, 8)],
        };
        let anon = Aggregate {
            size: 8,
            members: vec![m(Some("pid"), 0, 4), m(Some("tgid"), 4, 4)],
        };
        let mut comm = m(Some("comm"), 200, 16);
        comm.array_len = Some(16);
        let mut thread_member = m(Some("thread"), 400, 64);
        thread_member.aggregate = Some(TypeRef::Btf(0));
        let mut anon_member = m(None, 100, 8);
        anon_member.aggregate = Some(TypeRef::Btf(1));
        let task = Aggregate {
            size: 512,
            members: vec![
                m(Some("state"), 0, 8),
                m(Some("stack"), 8, 8),
                m(Some("flags"), 20, 4),
                anon_member,
                comm,
                thread_member,
            ],
        };
        let frame = Aggregate {
            size: 56,
            members: vec![m(Some("bp"), 40, 8), m(Some("ret_addr"), 48, 8)],
        };
        Fake {
            named: vec![("task_struct", task), ("inactive_task_frame", frame)],
            by_ref: vec![thread, anon],
        }
    }

    #[test]
    fn old_layouts_use_state_current_task_and_anonymous_members() {
        let info =
            KernelTypeInfo::from_types(&mut old_kernel(), TypeInfoSource::Btf).expect("layout");
        assert_eq!(info.task.state, Field { offset: 0, size: 8 });
        assert_eq!(
            info.task.pid,
            Field {
                offset: 100,
                size: 4
            }
        );
        assert_eq!(
            info.task.tgid,
            Field {
                offset: 104,
                size: 4
            }
        );
        assert_eq!(
            info.task.comm,
            Field {
                offset: 200,
                size: 16
            }
        );
        assert_eq!(
            info.task.thread_sp,
            Field {
                offset: 424,
                size: 8
            }
        );
        assert_eq!(info.task.tasks, None);
        assert_eq!(info.current, CurrentTaskField::CurrentTaskVar);
        assert_eq!(info.needed_symbols()[0], "current_task");

        let table = SymbolTable::new(vec![
            Symbol {
                addr: 0x1_7bc0,
                size: None,
                name: "current_task".into(),
                kind: 'D',
            },
            Symbol {
                addr: 0xffff_ffff_8200_0000,
                size: None,
                name: "init_task".into(),
                kind: 'D',
            },
            Symbol {
                addr: 0xffff_ffff_8210_0000,
                size: None,
                name: "__per_cpu_offset".into(),
                kind: 'D',
            },
        ]);
        let symbols = info.resolve_symbols(&table).expect("resolved");
        assert_eq!(symbols.current.symbol_value, 0x1_7bc0);
        assert_eq!(symbols.current.field_offset, 0);
        assert_eq!(symbols.current.addressing, PerCpuAddressing::GsRelative);
        let up = SymbolTable::new(
            table
                .symbols()
                .iter()
                .filter(|s| s.name != "__per_cpu_offset")
                .cloned()
                .collect(),
        );
        let symbols = info.resolve_symbols(&up).expect("resolved");
        assert_eq!(symbols.current.addressing, PerCpuAddressing::Global);
        let empty = SymbolTable::default();
        assert!(matches!(
            info.resolve_symbols(&empty),
            Err(TypeInfoError::MissingSymbol("current_task"))
        ));
    }

    #[test]
    fn missing_or_implausible_members_are_typed_errors() {
        let mut fake = old_kernel();
        fake.named[0]
            .1
            .members
            .retain(|m| m.name.as_deref() != Some("stack"));
        assert!(matches!(
            KernelTypeInfo::from_types(&mut fake, TypeInfoSource::Btf),
            Err(TypeInfoError::MissingMember {
                member: "stack",
                ..
            })
        ));

        let mut fake = old_kernel();
        fake.by_ref[1].members[0].size = Some(8); // pid as a u64
        assert!(matches!(
            KernelTypeInfo::from_types(&mut fake, TypeInfoSource::Btf),
            Err(TypeInfoError::Implausible { member: "pid", .. })
        ));

        let mut fake = old_kernel();
        fake.named[0].1.size = 300; // thread.sp at 424 lies outside
        assert!(matches!(
            KernelTypeInfo::from_types(&mut fake, TypeInfoSource::Btf),
            Err(TypeInfoError::Implausible {
                member: "thread.sp",
                ..
            })
        ));

        let mut fake = old_kernel();
        fake.named.remove(1);
        assert!(matches!(
            KernelTypeInfo::from_types(&mut fake, TypeInfoSource::Btf),
            Err(TypeInfoError::MissingStruct("inactive_task_frame"))
        ));
    }

    #[test]
    fn blocked_stack_members_are_optional_but_checked() {
        let info =
            KernelTypeInfo::from_types(&mut old_kernel(), TypeInfoSource::Btf).expect("layout");
        assert_eq!(
            (info.task.on_cpu, info.task.nvcsw, info.task.nivcsw),
            (None, None, None)
        );
        assert_eq!(
            (info.frame.size, info.frame.bp, info.frame.ret_addr),
            (56, 40, 48)
        );
        let mut fake = old_kernel();
        let task = &mut fake.named[0].1;
        task.members.push(m(Some("on_cpu"), 24, 4));
        task.members.push(m(Some("nvcsw"), 296, 8));
        task.members.push(m(Some("nivcsw"), 304, 8));
        let info = KernelTypeInfo::from_types(&mut fake, TypeInfoSource::Btf).expect("layout");
        assert_eq!(
            info.task.on_cpu,
            Some(Field {
                offset: 24,
                size: 4
            })
        );
        assert_eq!(
            info.task.nvcsw,
            Some(Field {
                offset: 296,
                size: 8
            })
        );
        assert_eq!(
            info.task.nivcsw,
            Some(Field {
                offset: 304,
                size: 8
            })
        );
        // A counter that is not a u64 means a misread source.
        fake.named[0].1.members.last_mut().expect("nivcsw").size = Some(2);
        assert!(matches!(
            KernelTypeInfo::from_types(&mut fake, TypeInfoSource::Btf),
            Err(TypeInfoError::Implausible {
                member: "nivcsw",
                ..
            })
        ));
    }

    #[test]
    fn anonymous_member_cycles_are_bounded() {
        // An anonymous member whose type is its own struct: a hostile file.
        let mut anon = m(None, 0, 8);
        anon.aggregate = Some(TypeRef::Btf(0));
        let looped = Aggregate {
            size: 8,
            members: vec![anon.clone()],
        };
        let mut fake = Fake {
            named: vec![],
            by_ref: vec![looped.clone()],
        };
        let mut budget = MAX_ANON_VISITS;
        assert!(find_member(&mut fake, &looped, "pid", 0, &mut budget)
            .expect("no error")
            .is_none());
        // Fifty anonymous self-references per level would be 50^8 visits
        // without the budget.
        let wide = Aggregate {
            size: 8,
            members: vec![anon; 50],
        };
        let mut fake = Fake {
            named: vec![],
            by_ref: vec![wide.clone()],
        };
        let mut budget = MAX_ANON_VISITS;
        assert!(find_member(&mut fake, &wide, "pid", 0, &mut budget).is_err());
    }
}
