//! The type descriptions both type sources (BTF, DWARF) produce and
//! [`crate::typeinfo`] reads: structs and unions with their direct members.

/// A reference to a struct or union type inside one type source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TypeRef {
    /// A BTF type id.
    Btf(u32),
    /// A DIE: index of its unit among the units the reader kept, and the
    /// DIE's offset inside that unit.
    Dwarf {
        /// Index into the reader's kept units.
        unit: usize,
        /// Offset inside the unit.
        offset: usize,
    },
}

/// A struct or union with its direct members.
#[derive(Debug, Clone)]
pub(crate) struct Aggregate {
    /// `sizeof`.
    pub size: u64,
    /// Direct members, in declaration order.
    pub members: Vec<Member>,
}

/// One member of an [`Aggregate`].
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// `None` for an anonymous struct/union member.
    pub name: Option<String>,
    /// Byte offset inside the aggregate (bitfields: the byte holding the first bit).
    pub offset: u64,
    /// Size of the member's type, when known.
    pub size: Option<u64>,
    /// Element count when the member is an array (product for multi-dimensional ones).
    pub array_len: Option<u64>,
    /// The member's type when it is a struct or union (through typedefs and qualifiers).
    pub aggregate: Option<TypeRef>,
}
