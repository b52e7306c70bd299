//! The bodies of the compact sample records ([`StackDef`], [`SampleBlock`])
//! decoded by hand, for [`SampleTable`](super::SampleTable): straight into
//! what a sample row needs, with no `Record`, no vector per block and none
//! per sample. A trace of a million samples is mostly these two records.
//!
//! The bytes are postcard's encoding of the two structs (field order,
//! varints, zigzag for signed, a byte for bools and option tags), read at
//! least as strictly as postcard reads them: whatever this refuses is
//! decoded the ordinary way instead, which accepts it or says what is
//! wrong, so a file reads the same either way.
//!
//! [`StackDef`]: super::compact::StackDef
//! [`SampleBlock`]: super::compact::SampleBlock

/// A position in a body.
pub struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// At the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Cursor<'a> {
        Cursor { bytes }
    }

    /// One byte (postcard's `u8`).
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(b)
    }

    /// A bool or an option's tag: 0 or 1, anything else refused.
    fn flag(&mut self) -> Option<bool> {
        match self.byte()? {
            0 => Some(false),
            1 => Some(true),
            _ => None,
        }
    }

    /// A varint of an integer `bits` wide, as postcard reads it: at most
    /// as many bytes as the width needs, the last one within its high bits.
    fn varint(&mut self, bits: u32) -> Option<u64> {
        let max_bytes = bits.div_ceil(7);
        let max_last = (1u8 << (bits % 7)) - 1;
        let mut out = 0u64;
        for i in 0..max_bytes {
            let b = self.byte()?;
            out |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return (i + 1 < max_bytes || b <= max_last).then_some(out);
            }
        }
        None
    }

    fn u16(&mut self) -> Option<u16> {
        self.varint(16).map(|v| v as u16)
    }

    fn u32(&mut self) -> Option<u32> {
        self.varint(32).map(|v| v as u32)
    }

    fn u64(&mut self) -> Option<u64> {
        self.varint(64)
    }

    /// A sequence length (postcard's `usize`, a `u64` varint here).
    fn len(&mut self) -> Option<u64> {
        self.varint(usize::BITS)
    }

    /// A zigzag-encoded `i64`.
    fn i64(&mut self) -> Option<i64> {
        let n = self.u64()?;
        Some(((n >> 1) as i64) ^ -((n & 1) as i64))
    }
}

/// A [`StackDef`](super::compact::StackDef) body: its id, the frames
/// (address deltas undone) appended to `frames`. `None`: not decoded.
pub fn stack_def(body: &[u8], frames: &mut Vec<u64>) -> Option<u32> {
    let mut c = Cursor::new(body);
    let id = c.u32()?;
    let n = c.len()?;
    let mut prev = 0u64;
    // Each frame takes a byte at least: `n` is bounded by the body.
    for _ in 0..n {
        prev = prev.wrapping_add(c.i64()? as u64);
        frames.push(prev);
    }
    Some(id)
}

/// The fields of a [`SampleBlock`](super::compact::SampleBlock) before its samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockHead {
    /// Run index.
    pub run: u32,
    /// vCPU index.
    pub vcpu: u32,
    /// Base time of the first sample.
    pub t_ns: u64,
    /// Number of samples that follow.
    pub samples: u64,
}

/// Reads a block's head; the cursor is then at its first sample.
pub fn block_head(c: &mut Cursor<'_>) -> Option<BlockHead> {
    Some(BlockHead {
        run: c.u32()?,
        vcpu: c.u32()?,
        t_ns: c.u64()?,
        samples: c.len()?,
    })
}

/// What a sample row takes from one [`CompactSample`](super::compact::CompactSample).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compact {
    /// Time since the previous sample.
    pub dt_ns: i64,
    /// RIP delta.
    pub drip: i64,
    /// CPL.
    pub cpl: u8,
    /// How the unwind ended.
    pub stack_end: u8,
    /// 0: no stack; k: definition k − 1.
    pub stack: u32,
    /// The stack starts with RIP.
    pub leaf_is_rip: bool,
    /// Minor + major faults.
    pub faults: u64,
    /// The delta of the KVM stat at the index asked for (0 when absent).
    pub exits: u64,
    /// The sampler's cost, ns.
    pub cost_ns: u64,
}

/// Reads one compact sample; `exits` is the index of the KVM stat whose
/// delta goes into [`Compact::exits`].
pub fn compact(c: &mut Cursor<'_>, exits: Option<u16>) -> Option<Compact> {
    let dt_ns = c.i64()?;
    let drip = c.i64()?;
    let _drsp = c.i64()?;
    let _drbp = c.i64()?;
    let cpl = c.byte()?;
    let stack_end = c.byte()?;
    let stack = c.u32()?;
    let leaf_is_rip = c.flag()?;
    if c.flag()? {
        // Control registers and CS: not in a row.
        for _ in 0..4 {
            c.u64()?;
        }
        c.u16()?;
    }
    let mut faults = 0;
    if c.flag()? {
        let minflt = c.u64()?;
        let majflt = c.u64()?;
        let _perf_faults = c.u64()?;
        faults = minflt.saturating_add(majflt);
    }
    let mut value = None;
    // Each pair takes two bytes at least: bounded by the body.
    for _ in 0..c.len()? {
        let (i, v) = (c.u16()?, c.u64()?);
        if value.is_none() && Some(i) == exits {
            value = Some(v);
        }
    }
    let mut cost_ns = 0;
    for _ in 0..4 {
        cost_ns += u64::from(c.u32()?);
    }
    Some(Compact {
        dt_ns,
        drip,
        cpl,
        stack_end,
        stack,
        leaf_is_rip,
        faults,
        exits: value.unwrap_or(0),
        cost_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::compact::{CompactSample, Faults, SampleBlock, StackDef, SysRegs};
    use crate::trace::record::{Record, RecordType, SampleCost};

    fn body(r: &Record) -> Vec<u8> {
        let mut b = r.encode_into(Vec::new()).expect("encode");
        b.remove(0);
        b
    }

    #[test]
    fn bodies_read_as_postcard_wrote_them() {
        let frames = vec![0xffff_ffff_8100_1000, 5, u64::MAX, 0];
        let def = Record::StackDef(StackDef {
            id: 70_000,
            frames: frames.clone(),
        });
        let mut got = Vec::new();
        assert_eq!(stack_def(&body(&def), &mut got), Some(70_000));
        assert_eq!(got, frames);

        let samples = vec![
            CompactSample {
                dt_ns: -5,
                drip: i64::MIN,
                drsp: 3,
                cpl: 3,
                stack_end: 2,
                stack: u32::MAX,
                leaf_is_rip: true,
                sys: Some(SysRegs {
                    cr0: u64::MAX,
                    cs: u16::MAX,
                    ..SysRegs::default()
                }),
                faults: Some(Faults {
                    minflt: 7,
                    majflt: u64::MAX,
                    perf_faults: 1,
                }),
                kvm: vec![(1, 9), (4, 1 << 40), (4, 3)],
                cost: SampleCost {
                    kick_ns: u32::MAX,
                    capture_ns: 1,
                    unwind_ns: 2,
                    write_ns: 3,
                },
                ..CompactSample::default()
            },
            CompactSample::default(),
        ];
        let block = Record::SampleBlock(SampleBlock {
            run: 3,
            vcpu: 1,
            t_ns: 1 << 50,
            samples,
        });
        let b = body(&block);
        let mut c = Cursor::new(&b);
        let head = block_head(&mut c).expect("head");
        assert_eq!(
            head,
            BlockHead {
                run: 3,
                vcpu: 1,
                t_ns: 1 << 50,
                samples: 2
            }
        );
        let first = compact(&mut c, Some(4)).expect("first");
        assert_eq!(
            first,
            Compact {
                dt_ns: -5,
                drip: i64::MIN,
                cpl: 3,
                stack_end: 2,
                stack: u32::MAX,
                leaf_is_rip: true,
                faults: u64::MAX,
                exits: 1 << 40,
                cost_ns: u64::from(u32::MAX) + 6,
            }
        );
        assert_eq!(compact(&mut c, Some(4)), Some(Compact::default()));
        assert_eq!(compact(&mut c, Some(4)), None, "the body ends");
        // Cut anywhere, the body is refused, as postcard refuses it.
        for cut in 0..b.len() {
            let mut c = Cursor::new(&b[..cut]);
            let ok = block_head(&mut c).is_some()
                && compact(&mut c, None).is_some()
                && compact(&mut c, None).is_some();
            assert!(!ok, "cut at {cut}");
            assert!(Record::decode(RecordType::SampleBlock, &b[..cut]).is_err());
        }
    }

    #[test]
    fn varints_are_refused_where_postcard_refuses_them() {
        // (bytes, width): postcard's limits on length and on the last byte.
        let cases: [(&[u8], u32); 8] = [
            (&[0xff, 0xff, 0x03], 16),
            (&[0xff, 0xff, 0x04], 16),
            (&[0xff, 0xff, 0xff, 0xff, 0x0f], 32),
            (&[0xff, 0xff, 0xff, 0xff, 0x10], 32),
            (&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00], 32),
            (&[0xff; 9], 64),
            (&[0x80, 0x00], 64),
            (&[0x80; 10], 64),
        ];
        for (bytes, bits) in cases {
            let mine = Cursor::new(bytes).varint(bits);
            let theirs = match bits {
                16 => postcard::from_bytes::<u16>(bytes).map(u64::from),
                32 => postcard::from_bytes::<u32>(bytes).map(u64::from),
                _ => postcard::from_bytes::<u64>(bytes),
            };
            assert_eq!(mine, theirs.ok(), "{bytes:x?} as a {bits}-bit varint");
        }
        assert_eq!(Cursor::new(&[2]).flag(), None);
        assert!(postcard::from_bytes::<bool>(&[2]).is_err());
    }
}
