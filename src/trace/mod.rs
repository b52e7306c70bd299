//! The `boottrace.data` file: versioned, append-only, written while the guest
//! runs and readable after a crash.
//!
//! Layout: a 16-byte header (magic, major/minor version), then framed records
//! (`u32` length, `u32` CRC-32, `u8` type, postcard body; see [`frame`]). The
//! first record is [`TraceMeta`]; the last, written by `finish`, is
//! [`Finish`]. Everything in between is appended as it happens: runs, VMM
//! phases, serial lines, layouts, samples with raw addresses (symbols are
//! resolved at report time), the guest tasks they ran (2.1: `Task` and
//! `TaskSwitch`), the boot task's blocked stacks (`WaitStack`), run ends
//! and sampler costs, what each virtio device did (`DeviceStats`), and
//! exact boundaries and run figures (`Boundary`).
//! Format 3 stores samples
//! compactly ([`compact`]: each distinct stack once, samples in per-vCPU
//! blocks of deltas), and from 3.1 wait stacks too; plain `Sample` and
//! `WaitStack` records of older files still read. A
//! reader stops at the first truncated or corrupted frame and keeps
//! everything before it.
//!
//! The format owns its types: the layout record is [`TraceLayout`] (not the
//! symbols crate's `RunLayout`, which the reader hands out converted), and
//! phases, end reasons and the unwinder are enums stored by name. Format 3
//! is written; formats 2 and 1 (string-map options) are read, format 1
//! converted (`v1.rs`).
//!
//! Writing from several threads:
//! ```no_run
//! # use boottrace::trace::*;
//! # fn main() -> Result<(), TraceError> {
//! let writer = TraceWriter::create("boottrace.data", &TraceMeta::default())?.spawn()?;
//! let sink = writer.sink(); // clone one per vCPU thread
//! sink.append(Record::RunStart(RunStart { run: 0, wall_time_unix_ns: 0 }))?;
//! drop(sink);
//! writer.finish()?;
//! let trace = Trace::open("boottrace.data")?;
//! # Ok(()) }
//! ```

mod batch;
mod bodies;
pub mod compact;
mod error;
pub mod frame;
mod layout;
mod names;
mod options;
mod queue;
mod reader;
mod record;
pub mod samples;
pub mod synth;
mod v1;
mod writer;

pub use batch::RecordBatch;
pub use error::TraceError;
pub use frame::MAX_RECORD_LEN;
pub use layout::TraceLayout;
pub use names::{BoundaryKind, EndKind, PhaseName, UnwinderKind};
pub use options::RecordOptions;
pub use reader::{
    RunData, Trace, MAX_BOUNDARIES_PER_RUN, MAX_COUNTERS_PER_DEVICE, MAX_DEVICES_PER_RUN, MAX_RUNS,
    MAX_STACK_DEPTH, MAX_WAITS_PER_RUN,
};
pub use record::{
    Boundary, DeviceStats, Finish, HostFacts, KernelInfo, Layout, Phase, Record, RecordType,
    RunEnd, RunStart, Sample, SampleCost, SamplerCost, Serial, StackEnd, StatNames, Task,
    TaskSwitch, TraceMeta, WaitStack,
};
pub use samples::{SampleRow, SampleTable};
pub use writer::{TraceSink, TraceWriter, TraceWriterThread, FLUSH_BYTES, FLUSH_INTERVAL};
