//! Struct layouts from a vmlinux's DWARF, with `gimli`: the complete
//! definitions of a few named structs and their members' offsets, for
//! [`crate::typeinfo`].
//!
//! C types live in every compilation unit that uses them, so the first
//! complete definition (not a `DW_AT_declaration`) found at the top level of
//! a unit is taken; all copies come from the same headers and config. Units
//! are walked in order, skipping each top-level DIE's subtree, and the walk
//! stops as soon as the required structs are found (tiny-orc: unit 74 of
//! 879); optional ones are looked for only in the units walked until then.
//! Member types are resolved within their unit (typedefs, qualifiers and
//! arrays followed a bounded number of steps).

use gimli::{AttributeValue, DebuggingInformationEntry, Reader as _, Section as _, UnitOffset};

use crate::dwarf::{self, DwarfError, Reader};
use crate::mapped::MappedFile;
use crate::typedesc::{Aggregate, Member, TypeRef};

/// Most units walked (a distro vmlinux has ~3 000).
const MAX_UNITS: usize = 100_000;
/// Most members read from one struct (task_struct has ~250).
const MAX_MEMBERS: usize = 10_000;
/// Longest typedef/qualifier/array chain followed.
const MAX_CHAIN: usize = 32;
/// Units kept for resolving member types (one per struct found).
const MAX_KEPT_UNITS: usize = 64;

/// Why DWARF type information could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DwarfTypesError {
    /// Loading the sections failed.
    #[error(transparent)]
    Load(#[from] DwarfError),
    /// gimli rejected the DWARF.
    #[error("{0}")]
    Gimli(#[from] gimli::Error),
    /// More units than any kernel has.
    #[error("more than {MAX_UNITS} compilation units")]
    TooManyUnits,
    /// A struct has more members than any kernel struct.
    #[error("a struct has more than {MAX_MEMBERS} members")]
    TooManyMembers,
    /// A type chain is longer than any real one (or loops).
    #[error("type chain at DIE 0x{0:x} too long")]
    ChainTooLong(usize),
    /// A member's type is in another unit (`DW_FORM_ref_addr`), which this
    /// reader does not follow.
    #[error("member type at DIE 0x{0:x} is in another unit")]
    CrossUnitReference(usize),
    /// A type reference names no kept unit.
    #[error("dangling type reference")]
    DanglingReference,
}

/// The DWARF of one vmlinux, for struct lookups.
pub struct DwarfTypes {
    dwarf: gimli::Dwarf<Reader>,
    /// Units in which a wanted struct was found, kept to resolve member types.
    units: Vec<gimli::Unit<Reader>>,
}

impl std::fmt::Debug for DwarfTypes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DwarfTypes")
            .field("kept_units", &self.units.len())
            .finish_non_exhaustive()
    }
}

impl DwarfTypes {
    /// `None` when the file has no `.debug_info`.
    pub fn open(file: &MappedFile) -> Result<Option<Self>, DwarfTypesError> {
        let dwarf = dwarf::load_sections(file)?;
        if dwarf.debug_info.reader().is_empty() {
            return Ok(None);
        }
        Ok(Some(DwarfTypes {
            dwarf,
            units: Vec::new(),
        }))
    }

    /// Walks units until every name is found, or until the first
    /// `required` ones are (the rest are then looked for only in the units
    /// already walked).
    pub(crate) fn find(
        &mut self,
        names: &[&str],
        required: usize,
    ) -> Result<Vec<Option<Aggregate>>, DwarfTypesError> {
        let mut found: Vec<Option<Aggregate>> = vec![None; names.len()];
        let mut headers = self.dwarf.units();
        let mut walked = 0usize;
        while let Some(header) = headers.next()? {
            walked += 1;
            if walked > MAX_UNITS {
                return Err(DwarfTypesError::TooManyUnits);
            }
            let unit = self.dwarf.unit(header)?;
            let mut hits: Vec<(usize, UnitOffset)> = Vec::new();
            {
                let mut tree = unit.entries_tree(None)?;
                let root = tree.root()?;
                let mut children = root.children();
                while let Some(child) = children.next()? {
                    let e = child.entry();
                    if e.tag() != gimli::DW_TAG_structure_type || is_declaration(e)? {
                        continue;
                    }
                    let Some(name) = e.attr_value(gimli::DW_AT_name)? else {
                        continue;
                    };
                    let name = self.dwarf.attr_string(&unit, name)?;
                    let name = name.to_slice()?;
                    for (i, want) in names.iter().enumerate() {
                        if found[i].is_none()
                            && !hits.iter().any(|h| h.0 == i)
                            && *name == *want.as_bytes()
                        {
                            hits.push((i, e.offset()));
                        }
                    }
                }
            }
            if hits.is_empty() {
                continue;
            }
            if self.units.len() >= MAX_KEPT_UNITS {
                return Err(DwarfTypesError::TooManyUnits);
            }
            self.units.push(unit);
            let index = self.units.len() - 1;
            for (i, offset) in hits {
                found[i] = Some(self.read_aggregate(index, offset)?);
            }
            if found.iter().take(required).all(Option::is_some) {
                break;
            }
        }
        Ok(found)
    }

    pub(crate) fn read_aggregate(
        &self,
        index: usize,
        offset: UnitOffset,
    ) -> Result<Aggregate, DwarfTypesError> {
        let unit = self
            .units
            .get(index)
            .ok_or(DwarfTypesError::DanglingReference)?;
        let mut tree = unit.entries_tree(Some(offset))?;
        let root = tree.root()?;
        let size = root
            .entry()
            .attr_value(gimli::DW_AT_byte_size)?
            .and_then(|v| v.udata_value())
            .unwrap_or(0);
        let mut members = Vec::new();
        let mut children = root.children();
        while let Some(child) = children.next()? {
            let e = child.entry();
            if e.tag() != gimli::DW_TAG_member {
                continue;
            }
            if members.len() >= MAX_MEMBERS {
                return Err(DwarfTypesError::TooManyMembers);
            }
            let name = match e.attr_value(gimli::DW_AT_name)? {
                Some(v) => Some(
                    self.dwarf
                        .attr_string(unit, v)?
                        .to_string_lossy()?
                        .into_owned(),
                ),
                None => None,
            };
            let offset = member_offset(e)?;
            let shape = match e.attr_value(gimli::DW_AT_type)? {
                Some(AttributeValue::UnitRef(ty)) => shape(unit, ty)?,
                Some(_) => return Err(DwarfTypesError::CrossUnitReference(e.offset().0)),
                None => Shape::default(),
            };
            members.push(Member {
                name,
                offset,
                size: shape.size,
                array_len: shape.array_len,
                aggregate: shape.aggregate.map(|o| TypeRef::Dwarf {
                    unit: index,
                    offset: o.0,
                }),
            });
        }
        Ok(Aggregate { size, members })
    }
}

/// `DW_AT_data_member_location` as a constant (DWARF 3+) or a
/// `DW_OP_plus_uconst` expression (DWARF 2); `DW_AT_data_bit_offset` for
/// bitfields; 0 when absent (union members).
fn member_offset(e: &DebuggingInformationEntry<'_, '_, Reader>) -> Result<u64, DwarfTypesError> {
    match e.attr_value(gimli::DW_AT_data_member_location)? {
        Some(AttributeValue::Exprloc(expr)) => {
            let mut r = expr.0;
            let op = r.read_u8()?;
            if op == gimli::DW_OP_plus_uconst.0 {
                Ok(r.read_uleb128()?)
            } else {
                Ok(0)
            }
        }
        Some(v) => Ok(v.udata_value().unwrap_or(0)),
        None => Ok(e
            .attr_value(gimli::DW_AT_data_bit_offset)?
            .and_then(|v| v.udata_value())
            .map_or(0, |bits| bits / 8)),
    }
}

fn is_declaration(e: &DebuggingInformationEntry<'_, '_, Reader>) -> Result<bool, DwarfTypesError> {
    Ok(matches!(
        e.attr_value(gimli::DW_AT_declaration)?,
        Some(AttributeValue::Flag(true))
    ))
}

/// What a member's type amounts to.
#[derive(Debug, Default, Clone, Copy)]
struct Shape {
    size: Option<u64>,
    array_len: Option<u64>,
    aggregate: Option<UnitOffset>,
}

/// Size, array length and struct/union behind the type DIE at `offset`.
// gimli's DW_TAG_* constants keep the DWARF spelling.
#[allow(non_upper_case_globals)]
fn shape(unit: &gimli::Unit<Reader>, offset: UnitOffset) -> Result<Shape, DwarfTypesError> {
    use gimli::constants::*;
    let mut offset = offset;
    let mut array_len: Option<u64> = None;
    for _ in 0..MAX_CHAIN {
        let e = unit.entry(offset)?;
        let byte_size = e.attr_value(DW_AT_byte_size)?.and_then(|v| v.udata_value());
        let next = match e.attr_value(DW_AT_type)? {
            Some(AttributeValue::UnitRef(t)) => Some(t),
            Some(_) => return Err(DwarfTypesError::CrossUnitReference(offset.0)),
            None => None,
        };
        match e.tag() {
            DW_TAG_typedef | DW_TAG_const_type | DW_TAG_volatile_type | DW_TAG_restrict_type
            | DW_TAG_atomic_type => match next {
                Some(t) => offset = t,
                None => return Ok(Shape::default()), // void
            },
            DW_TAG_array_type => {
                let n = array_count(unit, offset)?;
                array_len = Some(array_len.unwrap_or(1).saturating_mul(n));
                match next {
                    Some(t) => offset = t,
                    None => return Ok(Shape::default()),
                }
            }
            tag => {
                let elem = match tag {
                    DW_TAG_pointer_type => Some(byte_size.unwrap_or(8)),
                    _ if is_declaration(&e)? => None,
                    _ => byte_size,
                };
                let aggregate = (array_len.is_none()
                    && matches!(tag, DW_TAG_structure_type | DW_TAG_union_type))
                .then_some(offset);
                let size = match array_len {
                    Some(n) => elem.and_then(|s| s.checked_mul(n)),
                    None => elem,
                };
                return Ok(Shape {
                    size,
                    array_len,
                    aggregate,
                });
            }
        }
    }
    Err(DwarfTypesError::ChainTooLong(offset.0))
}

/// Element count of an array DIE: the product of its subranges' counts
/// (`DW_AT_count`, or `DW_AT_upper_bound` + 1; 0 for a flexible array).
fn array_count(unit: &gimli::Unit<Reader>, offset: UnitOffset) -> Result<u64, DwarfTypesError> {
    let mut tree = unit.entries_tree(Some(offset))?;
    let root = tree.root()?;
    let mut children = root.children();
    let mut count = 1u64;
    let mut dims = 0usize;
    while let Some(child) = children.next()? {
        let e = child.entry();
        if e.tag() != gimli::DW_TAG_subrange_type {
            continue;
        }
        dims += 1;
        if dims > MAX_CHAIN {
            return Err(DwarfTypesError::ChainTooLong(offset.0));
        }
        let n = match e
            .attr_value(gimli::DW_AT_count)?
            .and_then(|v| v.udata_value())
        {
            Some(n) => n,
            None => e
                .attr_value(gimli::DW_AT_upper_bound)?
                .and_then(|v| v.udata_value())
                .map_or(0, |ub| ub.saturating_add(1)),
        };
        count = count.saturating_mul(n);
    }
    Ok(if dims == 0 { 0 } else { count })
}
