//! The file header and record framing.
//!
//! ```text
//! header:  magic (8) | major u16 LE | minor u16 LE | flags u32 LE (0)
//! record:  len u32 LE | crc32 u32 LE | type u8 | body (len - 1 bytes)
//! ```
//! `len` counts the type byte and the body; the CRC-32 (IEEE) covers the same
//! bytes. A reader stops at the first frame that is cut short, too long or
//! fails its CRC: everything before it is intact.

use std::io::{self, Read, Write};

use super::record::{Record, RecordType};
use super::v1;
use super::TraceError;

/// The first eight bytes of every trace file.
pub const MAGIC: [u8; 8] = *b"\x7fBTRACE\n";
/// Major format version written. Readers accept this one and every major
/// from [`OLDEST_READABLE_MAJOR`] on, converting older records.
///
/// 3: samples are stored compactly (interned stacks, blocks of
/// delta-encoded samples: `compact.rs`, issue 11). A major bump although the
/// older records are unchanged: a 2.x reader would skip every sample of such
/// a file and show an empty profile; refusing the file says what is wrong.
/// 2: typed recording options in the metadata; the layout record is the
/// trace's own struct (issue 8). 1: the first format.
pub const VERSION_MAJOR: u16 = 3;
/// The oldest major format version this build still reads.
pub const OLDEST_READABLE_MAJOR: u16 = 1;
/// Minor format version: new minor versions only add record types.
/// 3.1: compact wait stacks (`WaitBlock`, type 18: interned in the sample
/// stacks' table, delta-encoded times); a 3.0 reader skips them with a
/// warning and loses only the wait view. Plain `WaitStack` records (3.0)
/// still read. 3.0: interned stacks (`StackDef`) and compact samples
/// (`SampleBlock`), with the record types added since 2.1 (`DeviceStats`,
/// and the wait stacks and exact boundaries of the wall-clock view).
pub const VERSION_MINOR: u16 = 1;
/// Size of the file header in bytes.
pub const HEADER_LEN: usize = 16;
/// Size of a record's frame header (length + CRC) in bytes.
pub const FRAME_HEADER_LEN: usize = 8;
/// Largest accepted record (type byte + body); longer length fields are damage.
pub const MAX_RECORD_LEN: usize = 16 << 20;
/// Bytes a record buffer grows by while reading.
const READ_STEP: usize = 64 << 10;

/// Writes the file header.
pub fn write_header(w: &mut impl Write) -> io::Result<()> {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..10].copy_from_slice(&VERSION_MAJOR.to_le_bytes());
    h[10..12].copy_from_slice(&VERSION_MINOR.to_le_bytes());
    w.write_all(&h)
}

/// Appends one framed record to `out` (which it reuses as scratch space).
pub fn encode_frame(rec: &Record, out: &mut Vec<u8>) -> Result<(), TraceError> {
    let start = out.len();
    out.extend_from_slice(&[0u8; FRAME_HEADER_LEN]);
    let taken = std::mem::take(out);
    *out = rec.encode_into(taken)?;
    let payload = &out[start + FRAME_HEADER_LEN..];
    let len = payload.len();
    if len > MAX_RECORD_LEN {
        out.truncate(start);
        return Err(TraceError::RecordTooLarge {
            len,
            max: MAX_RECORD_LEN,
        });
    }
    let crc = crc32fast::hash(payload);
    // len <= MAX_RECORD_LEN < u32::MAX, checked above.
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Why the header could not be accepted.
#[derive(Debug)]
pub enum HeaderProblem {
    /// Reading failed (including a file shorter than the header).
    Io(io::Error),
    /// Wrong magic.
    BadMagic,
    /// Unsupported major version.
    Version(u16, u16),
    /// Flags this version does not define.
    Flags(u32),
}

/// Reads and checks the header; returns (major, minor).
pub fn read_header(r: &mut impl Read) -> Result<(u16, u16), HeaderProblem> {
    let mut h = [0u8; HEADER_LEN];
    let n = read_full(r, &mut h).map_err(HeaderProblem::Io)?;
    if n < MAGIC.len() || h[..8] != MAGIC {
        return Err(if n < MAGIC.len() && h[..n] == MAGIC[..n] {
            HeaderProblem::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file ends inside its header",
            ))
        } else {
            HeaderProblem::BadMagic
        });
    }
    if n < HEADER_LEN {
        return Err(HeaderProblem::Io(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "file ends inside its header",
        )));
    }
    let major = u16::from_le_bytes([h[8], h[9]]);
    let minor = u16::from_le_bytes([h[10], h[11]]);
    if !(OLDEST_READABLE_MAJOR..=VERSION_MAJOR).contains(&major) {
        return Err(HeaderProblem::Version(major, minor));
    }
    let flags = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
    if flags != 0 {
        return Err(HeaderProblem::Flags(flags));
    }
    Ok((major, minor))
}

/// Reads until `buf` is full or EOF; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// One step of reading records.
// A short-lived return value: boxing the record would cost an allocation per record.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Next {
    /// A decoded record.
    Record(Record),
    /// A record that was skipped (unknown type, undecodable body); reading goes on.
    Skipped(String),
    /// The file ends cleanly at a record boundary.
    End,
    /// Damage: reading stops here. The message says where and why.
    Damaged(String),
}

/// What reading one frame gave: an intact frame of a known type (its
/// type, byte offset and index; the body in the reader's buffer), or what
/// to return instead.
enum Step {
    Intact(RecordType, u64, u64),
    Not(Next),
}

/// Reads framed records one by one after the header.
pub struct FrameReader<R> {
    inner: R,
    major: u16,
    offset: u64,
    index: u64,
    buf: Vec<u8>,
    stopped: bool,
}

impl<R: Read> FrameReader<R> {
    /// A reader positioned just after the header of a current-format file.
    pub fn new(inner: R) -> Self {
        FrameReader::with_major(inner, VERSION_MAJOR)
    }

    /// A reader positioned just after the header of a file of format `major`.
    pub fn with_major(inner: R, major: u16) -> Self {
        FrameReader {
            inner,
            major,
            offset: HEADER_LEN as u64,
            index: 0,
            buf: Vec::new(),
            stopped: false,
        }
    }

    /// Byte offset of the next frame.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Reads the next record; after `End` or `Damaged` it keeps returning `End`.
    pub fn next_record(&mut self) -> Next {
        if self.stopped {
            return Next::End;
        }
        let next = match self.step() {
            Step::Intact(ty, at, idx) => self.decode(ty, at, idx),
            Step::Not(next) => next,
        };
        self.stop_at(&next);
        next
    }

    /// [`FrameReader::next_record`], but an intact frame's body is first
    /// offered to `take` (its type, the body after the type byte): when
    /// `take` returns true the record is its caller's (a reader that
    /// decodes some types itself) and `None` is returned; else the record
    /// is decoded as usual.
    pub fn next_record_or(&mut self, take: impl FnOnce(RecordType, &[u8]) -> bool) -> Option<Next> {
        if self.stopped {
            return Some(Next::End);
        }
        let next = match self.step() {
            Step::Intact(ty, _, _) if take(ty, &self.buf[1..]) => return None,
            Step::Intact(ty, at, idx) => self.decode(ty, at, idx),
            Step::Not(next) => next,
        };
        self.stop_at(&next);
        Some(next)
    }

    /// After the end or damage, reading stops.
    fn stop_at(&mut self, next: &Next) {
        if matches!(next, Next::End | Next::Damaged(_)) {
            self.stopped = true;
        }
    }

    /// The record of the intact frame in `buf` (index `idx`, at byte `at`).
    fn decode(&self, ty: RecordType, at: u64, idx: u64) -> Next {
        match Record::decode_version(self.major, ty, &self.buf[1..]) {
            Ok(r) => Next::Record(r),
            Err(e) => Next::Skipped(format!(
                "record {idx} at byte {at}: {ty:?} record could not be decoded ({e}); skipped"
            )),
        }
    }

    /// Reads the next frame into `buf`: its type, byte offset and index
    /// when it is intact and of a known type, else what to return instead.
    fn step(&mut self) -> Step {
        let at = self.offset;
        let idx = self.index;
        let mut fh = [0u8; FRAME_HEADER_LEN];
        let n = match read_full(&mut self.inner, &mut fh) {
            Ok(n) => n,
            Err(e) => {
                return Step::Not(Next::Damaged(format!(
                    "record {idx} at byte {at}: read error: {e}"
                )))
            }
        };
        if n == 0 {
            return Step::Not(Next::End);
        }
        if n < FRAME_HEADER_LEN {
            return Step::Not(Next::Damaged(format!(
                "record {idx} at byte {at}: file ends inside the record header (truncated)"
            )));
        }
        let len = u32::from_le_bytes([fh[0], fh[1], fh[2], fh[3]]) as usize;
        let crc = u32::from_le_bytes([fh[4], fh[5], fh[6], fh[7]]);
        if len == 0 || len > MAX_RECORD_LEN {
            return Step::Not(Next::Damaged(format!(
                "record {idx} at byte {at}: implausible length {len} (corrupted)"
            )));
        }
        // Grow the buffer in steps as data actually arrives, so a lying length
        // field cannot make us allocate more than the file holds (+64 KiB).
        self.buf.clear();
        let mut got = 0;
        while got < len {
            let want = (len - got).min(READ_STEP);
            self.buf.resize(got + want, 0);
            let n = match read_full(&mut self.inner, &mut self.buf[got..got + want]) {
                Ok(n) => n,
                Err(e) => {
                    return Step::Not(Next::Damaged(format!(
                        "record {idx} at byte {at}: read error: {e}"
                    )))
                }
            };
            got += n;
            if n < want {
                break;
            }
        }
        if got < len {
            return Step::Not(Next::Damaged(format!(
                "record {idx} at byte {at}: file ends after {got} of {len} bytes (truncated)"
            )));
        }
        if crc32fast::hash(&self.buf) != crc {
            return Step::Not(Next::Damaged(format!(
                "record {idx} at byte {at}: checksum mismatch (corrupted)"
            )));
        }
        self.offset += (FRAME_HEADER_LEN + len) as u64;
        self.index += 1;
        let ty_byte = self.buf[0];
        let Some(ty) = RecordType::from_u8(ty_byte) else {
            return Step::Not(Next::Skipped(format!(
                "record {idx} at byte {at}: unknown record type {ty_byte} skipped (newer format?)"
            )));
        };
        Step::Intact(ty, at, idx)
    }
}

/// Decoding bodies depends on the file's format version, which this module
/// owns: it lives here rather than in `record` (which only encodes today's
/// format), so that `record` needs neither this module nor the converters
/// of older formats (`v1`).
impl Record {
    /// Decodes a body of a known type in the current format. Trailing bytes
    /// are ignored.
    pub fn decode(ty: RecordType, body: &[u8]) -> Result<Record, postcard::Error> {
        Record::decode_version(VERSION_MAJOR, ty, body)
    }

    /// Decodes a body written in format `major` (1 or the current one),
    /// converting older records to today's structs.
    pub fn decode_version(
        major: u16,
        ty: RecordType,
        body: &[u8],
    ) -> Result<Record, postcard::Error> {
        use postcard::from_bytes as de;
        Ok(match ty {
            RecordType::Meta if major == 1 => {
                Record::Meta(Box::new(de::<v1::TraceMetaV1>(body)?.into()))
            }
            RecordType::Meta => Record::Meta(Box::new(de(body)?)),
            RecordType::RunStart => Record::RunStart(de(body)?),
            RecordType::Phase => Record::Phase(de(body)?),
            RecordType::Serial => Record::Serial(de(body)?),
            RecordType::Layout => Record::Layout(de(body)?),
            RecordType::StatNames => Record::StatNames(de(body)?),
            RecordType::Sample => Record::Sample(de(body)?),
            RecordType::RunEnd => Record::RunEnd(de(body)?),
            RecordType::SamplerCost => Record::SamplerCost(de(body)?),
            RecordType::Finish => Record::Finish(de(body)?),
            RecordType::Task => Record::Task(de(body)?),
            RecordType::TaskSwitch => Record::TaskSwitch(de(body)?),
            RecordType::DeviceStats => Record::DeviceStats(de(body)?),
            // Compact samples exist from format 3 on: in an older file they
            // are damage, not data.
            RecordType::StackDef | RecordType::SampleBlock | RecordType::WaitBlock if major < 3 => {
                return Err(postcard::Error::DeserializeBadEncoding)
            }
            RecordType::StackDef => Record::StackDef(de(body)?),
            RecordType::SampleBlock => Record::SampleBlock(de(body)?),
            RecordType::Boundary => Record::Boundary(de(body)?),
            RecordType::WaitStack => Record::WaitStack(de(body)?),
            RecordType::WaitBlock => Record::WaitBlock(de(body)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::record::{Phase, RunStart};

    #[test]
    fn frames_round_trip_and_detect_damage() {
        let recs = [
            Record::RunStart(RunStart {
                run: 0,
                wall_time_unix_ns: 5,
            }),
            Record::Phase(Phase {
                run: 0,
                name: "create_vm".into(),
                t_ns: 42,
            }),
        ];
        let mut buf = Vec::new();
        for r in &recs {
            encode_frame(r, &mut buf).expect("encode");
        }
        let mut rd = FrameReader::new(&buf[..]);
        for r in &recs {
            match rd.next_record() {
                Next::Record(got) => assert_eq!(&got, r),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(matches!(rd.next_record(), Next::End));

        let mut bad = buf.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        let mut rd = FrameReader::new(&bad[..]);
        assert!(matches!(rd.next_record(), Next::Record(_)));
        assert!(matches!(rd.next_record(), Next::Damaged(m) if m.contains("checksum")));
        assert!(matches!(rd.next_record(), Next::End));
    }

    #[test]
    fn huge_length_is_damage_not_allocation() {
        let mut buf = [0u8; 8];
        buf[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        let mut rd = FrameReader::new(&buf[..]);
        assert!(matches!(rd.next_record(), Next::Damaged(m) if m.contains("length")));
        // A length under the limit but beyond the file: truncated, and no 16 MiB buffer.
        buf[..4].copy_from_slice(&((MAX_RECORD_LEN as u32) - 1).to_le_bytes());
        let mut rd = FrameReader::new(&buf[..]);
        assert!(matches!(rd.next_record(), Next::Damaged(m) if m.contains("truncated")));
        assert!(rd.buf.capacity() < 1 << 20);
    }

    #[test]
    fn header_checks() {
        let mut h = Vec::new();
        write_header(&mut h).expect("header");
        assert_eq!(h.len(), HEADER_LEN);
        assert!(matches!(
            read_header(&mut &h[..]),
            Ok((VERSION_MAJOR, VERSION_MINOR))
        ));
        assert!(matches!(
            read_header(&mut &b"ELF\x7f-not-a-trace"[..]),
            Err(HeaderProblem::BadMagic)
        ));
        assert!(matches!(
            read_header(&mut &h[..5]),
            Err(HeaderProblem::Io(_))
        ));
        let mut fl = h.clone();
        fl[15] = 1;
        assert!(matches!(
            read_header(&mut &fl[..]),
            Err(HeaderProblem::Flags(0x0100_0000))
        ));
        // Format 1 is still read (and converted); 0 and 3 are not.
        let mut v1 = h.clone();
        v1[8] = 1;
        v1[10] = 0;
        assert!(matches!(read_header(&mut &v1[..]), Ok((1, 0))));
        for major in [0u8, 4] {
            let mut other = h.clone();
            other[8] = major;
            assert!(matches!(
                read_header(&mut &other[..]),
                Err(HeaderProblem::Version(m, VERSION_MINOR)) if m == u16::from(major)
            ));
        }
    }
}
