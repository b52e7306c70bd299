//! A small reader of BTF (BPF Type Format, the kernel's
//! Documentation/bpf/btf.rst): enough to find structs by name and read their
//! members' offsets, which is all [`crate::typeinfo`] asks.
//!
//! Written here rather than taken from a crate: `btf-rs` (the maintained
//! one) is LGPL-2.1 while this project is Apache-2.0 OR MIT; `aya-obj`
//! keeps struct members crate-private; `btf` (arcjustin) only opens files by
//! path and seeks once per string; `btfdump` is a tool that pulls in clap,
//! goblin and a second `object` and panics on bad type ids. The format is
//! three parts — a header, a type section of variable-length records, a
//! string section — so one bounded pass indexes it.
//!
//! Everything is file input: the header's offsets are checked against the
//! data, every record is read with checked slicing, the type count is
//! bounded, and chains of typedefs/qualifiers are followed a bounded number
//! of steps.

use object::{Object, ObjectSection};

use crate::typedesc::{Aggregate, Member, TypeRef};

/// `BTF_MAGIC`.
const MAGIC: u16 = 0xeb9f;
/// Most types accepted (a distro vmlinux has ~150 000).
pub const MAX_TYPES: usize = 4 << 20;
/// Longest typedef/qualifier/array chain followed to a type's size.
const MAX_CHAIN: usize = 32;
/// Pointer size: BTF does not record it; the kernels read here are x86_64.
const POINTER_SIZE: u64 = 8;

// BTF_KIND_* values.
const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Why bytes are not usable BTF.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BtfError {
    /// The data is shorter than the header or does not start with the magic.
    #[error("not BTF data (no 0xeb9f magic header)")]
    NotBtf,
    /// The header's section offsets or lengths lie outside the data.
    #[error("header describes sections outside the {0}-byte data")]
    BadHeader(usize),
    /// A type record runs past the end of the type section.
    #[error("type {id} runs past the end of the type section")]
    Truncated {
        /// The type id being read.
        id: usize,
    },
    /// A type record has a kind this reader does not know the size of.
    #[error("type {id} has unknown kind {kind}")]
    UnknownKind {
        /// The type id.
        id: usize,
        /// Its kind number.
        kind: u32,
    },
    /// More types than any kernel has.
    #[error("more than {MAX_TYPES} types")]
    TooManyTypes,
    /// A name offset points outside the string section, or at no NUL.
    #[error("type {id}: bad name offset {offset}")]
    BadString {
        /// The type id.
        id: usize,
        /// The offset.
        offset: u32,
    },
    /// A member refers to a type id that does not exist.
    #[error("type id {0} does not exist")]
    BadTypeId(u32),
    /// A typedef/qualifier/array chain is longer than any real one (or loops).
    #[error("type {0}: chain of typedefs/qualifiers/arrays too long")]
    ChainTooLong(u32),
    /// The ELF holding the `.BTF` section is malformed.
    #[error("ELF: {0}")]
    Elf(String),
}

/// The `.BTF` section's bytes of an ELF file, when it has one.
pub fn elf_btf_section(elf: &[u8]) -> Result<Option<&[u8]>, BtfError> {
    let obj = object::File::parse(elf).map_err(|e| BtfError::Elf(e.to_string()))?;
    let Some(section) = obj.section_by_name(".BTF") else {
        return Ok(None);
    };
    section
        .data()
        .map(Some)
        .map_err(|e| BtfError::Elf(e.to_string()))
}

/// Parsed BTF: an index of the type records, borrowing the data.
#[derive(Debug)]
pub struct Btf<'a> {
    big_endian: bool,
    /// The type section.
    types: &'a [u8],
    /// The string section.
    strings: &'a [u8],
    /// Byte offset of each type record in `types`; entry `i` is type id `i + 1`.
    index: Vec<u32>,
}

/// One type record's fixed part.
#[derive(Debug, Clone, Copy)]
struct Header {
    name_off: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    /// `size` or `type`, by kind.
    size_or_type: u32,
    /// Offset of the kind-specific data in the type section.
    extra: usize,
}

impl<'a> Btf<'a> {
    /// Indexes raw BTF data (a `.BTF` section or a `/sys/kernel/btf/vmlinux` copy).
    pub fn parse(data: &'a [u8]) -> Result<Self, BtfError> {
        let magic = data.get(..2).ok_or(BtfError::NotBtf)?;
        let big_endian = match [magic[0], magic[1]] {
            m if u16::from_le_bytes(m) == MAGIC => false,
            m if u16::from_be_bytes(m) == MAGIC => true,
            _ => return Err(BtfError::NotBtf),
        };
        let word = |off: usize| -> Result<u32, BtfError> {
            read_u32(data, off, big_endian).ok_or(BtfError::NotBtf)
        };
        // magic u16, version u8, flags u8, hdr_len, type_off, type_len, str_off, str_len.
        let hdr_len = word(4)? as usize;
        let (type_off, type_len) = (word(8)? as usize, word(12)? as usize);
        let (str_off, str_len) = (word(16)? as usize, word(20)? as usize);
        let bad = || BtfError::BadHeader(data.len());
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off).ok_or_else(bad)?;
            let end = start.checked_add(len).ok_or_else(bad)?;
            data.get(start..end).ok_or_else(bad)
        };
        if hdr_len < 24 {
            return Err(bad());
        }
        let mut btf = Btf {
            big_endian,
            types: section(type_off, type_len)?,
            strings: section(str_off, str_len)?,
            index: Vec::new(),
        };
        btf.build_index()?;
        Ok(btf)
    }

    /// Number of types (ids `1..=count`; id 0 is `void`).
    pub fn type_count(&self) -> usize {
        self.index.len()
    }

    fn build_index(&mut self) -> Result<(), BtfError> {
        let mut pos = 0usize;
        while pos < self.types.len() {
            let id = self.index.len() + 1;
            if self.index.len() >= MAX_TYPES {
                return Err(BtfError::TooManyTypes);
            }
            let h = self.header_at(pos, id)?;
            let extra_len = match h.kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * h.vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * h.vlen,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                kind => return Err(BtfError::UnknownKind { id, kind }),
            };
            let end = h
                .extra
                .checked_add(extra_len)
                .filter(|&e| e <= self.types.len())
                .ok_or(BtfError::Truncated { id })?;
            // The section is at most 4 GiB (u32 lengths in the header).
            self.index.push(pos as u32);
            pos = end;
        }
        Ok(())
    }

    fn header_at(&self, pos: usize, id: usize) -> Result<Header, BtfError> {
        let w = |k: usize| {
            pos.checked_add(4 * k)
                .and_then(|off| read_u32(self.types, off, self.big_endian))
                .ok_or(BtfError::Truncated { id })
        };
        let info = w(1)?;
        Ok(Header {
            name_off: w(0)?,
            kind: (info >> 24) & 0x1f,
            vlen: (info & 0xffff) as usize,
            kind_flag: info >> 31 == 1,
            size_or_type: w(2)?,
            extra: pos + 12,
        })
    }

    fn header(&self, id: u32) -> Result<Header, BtfError> {
        let pos = id
            .checked_sub(1)
            .and_then(|i| self.index.get(i as usize))
            .ok_or(BtfError::BadTypeId(id))?;
        self.header_at(*pos as usize, id as usize)
    }

    fn extra_u32(&self, h: &Header, word: usize, id: u32) -> Result<u32, BtfError> {
        h.extra
            .checked_add(4 * word)
            .and_then(|off| read_u32(self.types, off, self.big_endian))
            .ok_or(BtfError::Truncated { id: id as usize })
    }

    /// The NUL-terminated string at `offset` of the string section.
    fn string(&self, offset: u32, id: usize) -> Result<&'a [u8], BtfError> {
        let bad = BtfError::BadString { id, offset };
        let rest = self.strings.get(offset as usize..).ok_or(bad.clone())?;
        let len = memchr::memchr(0, rest).ok_or(bad)?;
        Ok(&rest[..len])
    }

    /// Ids of the structs named `name` (BTF has no forward declarations
    /// among STRUCT records: those are FWD).
    pub(crate) fn struct_ids(&self, names: &[&str]) -> Result<Vec<Option<u32>>, BtfError> {
        let mut found = vec![None; names.len()];
        for (i, &pos) in self.index.iter().enumerate() {
            let id = i + 1;
            let h = self.header_at(pos as usize, id)?;
            if h.kind != KIND_STRUCT || h.name_off == 0 {
                continue;
            }
            let name = self.string(h.name_off, id)?;
            for (slot, want) in found.iter_mut().zip(names) {
                if slot.is_none() && name == want.as_bytes() {
                    *slot = Some(id as u32);
                }
            }
            if found.iter().all(Option::is_some) {
                break;
            }
        }
        Ok(found)
    }

    /// A struct or union's members.
    pub(crate) fn read_aggregate(&self, id: u32) -> Result<Aggregate, BtfError> {
        let h = self.header(id)?;
        if h.kind != KIND_STRUCT && h.kind != KIND_UNION {
            return Err(BtfError::BadTypeId(id));
        }
        let mut members = Vec::with_capacity(h.vlen);
        for i in 0..h.vlen {
            let name_off = self.extra_u32(&h, 3 * i, id)?;
            let ty = self.extra_u32(&h, 3 * i + 1, id)?;
            let raw = self.extra_u32(&h, 3 * i + 2, id)?;
            // kind_flag: bits 0-23 are the bit offset, 24-31 the bitfield size.
            let bits = if h.kind_flag { raw & 0x00ff_ffff } else { raw };
            let name = match name_off {
                0 => None,
                off => Some(String::from_utf8_lossy(self.string(off, id as usize)?).into_owned()),
            };
            let shape = self.shape(ty)?;
            members.push(Member {
                name,
                offset: u64::from(bits / 8),
                size: shape.size,
                array_len: shape.array_len,
                aggregate: shape.aggregate.map(TypeRef::Btf),
            });
        }
        Ok(Aggregate {
            size: u64::from(h.size_or_type),
            members,
        })
    }

    /// Size, array length and struct/union behind type `id`.
    fn shape(&self, id: u32) -> Result<Shape, BtfError> {
        let mut id = id;
        let mut array_len: Option<u64> = None;
        for _ in 0..MAX_CHAIN {
            if id == 0 {
                return Ok(Shape::default()); // void
            }
            let h = self.header(id)?;
            match h.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = h.size_or_type;
                }
                KIND_ARRAY => {
                    let elem = self.extra_u32(&h, 0, id)?;
                    let n = u64::from(self.extra_u32(&h, 2, id)?);
                    array_len = Some(array_len.unwrap_or(1).saturating_mul(n));
                    id = elem;
                }
                kind => {
                    let elem_size = match kind {
                        KIND_PTR => Some(POINTER_SIZE),
                        KIND_INT | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT | KIND_STRUCT
                        | KIND_UNION => Some(u64::from(h.size_or_type)),
                        _ => None,
                    };
                    let aggregate = (array_len.is_none()
                        && matches!(kind, KIND_STRUCT | KIND_UNION))
                    .then_some(id);
                    let size = match array_len {
                        Some(n) => elem_size.and_then(|s| s.checked_mul(n)),
                        None => elem_size,
                    };
                    return Ok(Shape {
                        size,
                        array_len,
                        aggregate,
                    });
                }
            }
        }
        Err(BtfError::ChainTooLong(id))
    }
}

/// What a member's type amounts to.
#[derive(Debug, Default, Clone, Copy)]
struct Shape {
    size: Option<u64>,
    array_len: Option<u64>,
    aggregate: Option<u32>,
}

fn read_u32(data: &[u8], off: usize, big_endian: bool) -> Option<u32> {
    let b: [u8; 4] = data.get(off..off.checked_add(4)?)?.try_into().ok()?;
    Some(if big_endian {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::typeinfo::TypeSource;

    /// A tiny BTF blob: int (id 1), struct inner { int a; int b; } (2),
    /// char[16] via array (3), struct outer { int x; struct inner in; char name[16]; } (4),
    /// typedef inner_t (5).
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0inner\0a\0b\0outer\0x\0in\0name\0inner_t\0".to_vec();
        let s = |name: &str| -> u32 {
            let pat = format!("\0{name}\0");
            strings
                .windows(pat.len())
                .position(|w| w == pat.as_bytes())
                .expect("string") as u32
                + 1
        };
        let mut t = Vec::new();
        let mut push = |words: &[u32]| {
            words
                .iter()
                .for_each(|w| t.extend_from_slice(&w.to_le_bytes()))
        };
        push(&[s("int"), KIND_INT << 24, 4, 32]);
        push(&[
            s("inner"),
            KIND_STRUCT << 24 | 2,
            8,
            s("a"),
            1,
            0,
            s("b"),
            1,
            32,
        ]);
        push(&[0, KIND_ARRAY << 24, 0, 1, 1, 16]);
        push(&[
            s("outer"),
            KIND_STRUCT << 24 | 3,
            28,
            s("x"),
            1,
            0,
            s("in"),
            5,
            32,
            s("name"),
            3,
            96,
        ]);
        push(&[s("inner_t"), KIND_TYPEDEF << 24, 2]);
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            t.len() as u32,
            t.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&t);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn reads_structs_members_and_nested_types() {
        let data = sample();
        let mut btf = Btf::parse(&data).expect("parses");
        assert_eq!(btf.type_count(), 5);
        let found = btf.find_structs(&["outer", "missing"], 2).expect("lookup");
        let outer = found[0].as_ref().expect("outer found");
        assert!(found[1].is_none());
        assert_eq!(outer.size, 28);
        let names: Vec<_> = outer.members.iter().map(|m| m.name.clone()).collect();
        assert_eq!(
            names,
            [Some("x".into()), Some("in".into()), Some("name".into())]
        );
        let inner_ref = outer.members[1]
            .aggregate
            .expect("typedef resolved to struct");
        assert_eq!(outer.members[1].offset, 4);
        assert_eq!(outer.members[1].size, Some(8));
        assert_eq!(outer.members[2].array_len, Some(16));
        assert_eq!(outer.members[2].size, Some(64));
        let inner = btf.aggregate(inner_ref).expect("inner");
        assert_eq!(inner.members[1].offset, 4);
    }

    #[test]
    fn every_truncation_and_corruption_is_an_error_not_a_panic() {
        let data = sample();
        for len in 0..data.len() {
            if let Ok(mut btf) = Btf::parse(&data[..len]) {
                let _ = btf.find_structs(&["outer"], 1);
            }
        }
        for i in 0..data.len() {
            for v in [0u8, 0xff, 0x7f, 0x13] {
                let mut d = data.clone();
                d[i] = v;
                if let Ok(mut btf) = Btf::parse(&d) {
                    if let Ok(found) = btf.find_structs(&["outer", "inner"], 2) {
                        for agg in found.into_iter().flatten() {
                            for m in agg.members {
                                if let Some(r) = m.aggregate {
                                    let _ = btf.aggregate(r);
                                }
                            }
                        }
                    }
                }
            }
        }
        assert_eq!(Btf::parse(b"\0\0").unwrap_err(), BtfError::NotBtf);
    }

    #[test]
    fn typedef_loops_are_bounded() {
        let mut data = sample();
        // Make typedef 5 point at itself.
        let t_end = data.len() - b"\0int\0inner\0a\0b\0outer\0x\0in\0name\0inner_t\0".len();
        let last = t_end - 4;
        data[last..t_end].copy_from_slice(&5u32.to_le_bytes());
        let btf = Btf::parse(&data).expect("parses");
        assert_eq!(btf.shape(5).unwrap_err(), BtfError::ChainTooLong(5));
    }
}
