//! Writing a trace while the guest runs.
//!
//! [`TraceWriter`] frames records into a memory buffer and hands the buffer
//! to the kernel every [`FLUSH_INTERVAL`] or [`FLUSH_BYTES`], whichever comes
//! first, so a killed `record` loses at most that much. vCPU threads do not
//! share the writer: [`TraceWriter::spawn`] moves it to a thread fed by a
//! channel, and each vCPU holds a cloned [`TraceSink`] (encoding happens on
//! the writer thread, off the vCPU's sampling path).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::batch::{BatchPool, RecordBatch};
use super::compact::Compactor;
use super::frame::{encode_frame, write_header};
use super::queue::{queue, QueueReceiver, QueueSender};
use super::record::{Finish, Record, TraceMeta};
use super::TraceError;

/// Longest time a record waits in memory before it is written to the file.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// Buffered bytes that trigger a write to the file.
pub const FLUSH_BYTES: usize = 64 << 10;
/// Records a [`TraceSink`] may queue before `append` blocks (back-pressure).
pub const SINK_QUEUE: usize = 16 << 10;

/// Appends records to a trace file (single-threaded use; see [`TraceWriter::spawn`]).
pub struct TraceWriter {
    path: PathBuf,
    file: File,
    pending: Vec<u8>,
    pending_since: Option<Instant>,
    records: u64,
    /// Interns stacks and blocks samples (format 3).
    compactor: Compactor,
    /// Reused for the compacted records of one append.
    scratch: Vec<Record>,
}

impl TraceWriter {
    /// Creates (truncates) `path`, writes the header and the metadata record,
    /// and puts them in the file at once.
    pub fn create(path: impl AsRef<Path>, meta: &TraceMeta) -> Result<TraceWriter, TraceError> {
        let path = path.as_ref().to_path_buf();
        let file = File::create(&path).map_err(|source| TraceError::Io {
            path: path.clone(),
            source,
        })?;
        TraceWriter::with_file(path, file, meta)
    }

    /// Like [`TraceWriter::create`], on a `file` the caller created (safely,
    /// e.g. with `output::create_in_place`) at `path`.
    pub fn with_file(
        path: PathBuf,
        file: File,
        meta: &TraceMeta,
    ) -> Result<TraceWriter, TraceError> {
        let mut w = TraceWriter {
            path,
            file,
            pending: Vec::with_capacity(FLUSH_BYTES + 4096),
            pending_since: None,
            records: 0,
            compactor: Compactor::default(),
            scratch: Vec::new(),
        };
        write_header(&mut w.pending).map_err(|source| w.io(source))?;
        w.append(&Record::Meta(Box::new(meta.clone())))?;
        w.flush()?;
        Ok(w)
    }

    /// The file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records appended so far (the metadata record included).
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Appends one record; writes the buffer out when it is due. A sample
    /// or wait stack is stored compactly (a block of one, and its stack's
    /// definition when new).
    pub fn append(&mut self, rec: &Record) -> Result<(), TraceError> {
        if let Record::Sample(_) | Record::WaitStack(_) = rec {
            return self.append_batch(vec![rec.clone()]);
        }
        self.frame(rec)?;
        self.flush_if_due()
    }

    /// Appends records in order; consecutive samples of one vCPU become one
    /// block, and so do its wait stacks (the sampler hands them over in
    /// batches).
    pub fn append_batch(&mut self, recs: Vec<Record>) -> Result<(), TraceError> {
        let mut out = std::mem::take(&mut self.scratch);
        self.compactor.compact(recs, &mut out);
        let mut result = Ok(());
        for rec in out.drain(..) {
            result = self.frame(&rec);
            if result.is_err() {
                break;
            }
        }
        out.clear();
        self.scratch = out;
        result?;
        self.flush_if_due()
    }

    fn frame(&mut self, rec: &Record) -> Result<(), TraceError> {
        encode_frame(rec, &mut self.pending)?;
        self.records += 1;
        self.pending_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Writes the buffer out if it is big or old enough.
    pub fn flush_if_due(&mut self) -> Result<(), TraceError> {
        let old = self
            .pending_since
            .is_some_and(|t| t.elapsed() >= FLUSH_INTERVAL);
        if old || self.pending.len() >= FLUSH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    /// When the buffered records must be written at the latest.
    fn flush_deadline(&self) -> Option<Instant> {
        self.pending_since.map(|t| t + FLUSH_INTERVAL)
    }

    /// Writes every buffered record to the file (to the OS: survives a kill of
    /// this process, not a power cut).
    pub fn flush(&mut self) -> Result<(), TraceError> {
        if !self.pending.is_empty() {
            let r = self.file.write_all(&self.pending);
            self.pending.clear();
            r.map_err(|source| self.io(source))?;
        }
        self.pending_since = None;
        Ok(())
    }

    /// Writes the final record, flushes and syncs; returns the number of
    /// records before the final one.
    pub fn finish(mut self) -> Result<u64, TraceError> {
        let records = self.records;
        self.append(&Record::Finish(Finish { records }))?;
        self.flush()?;
        self.file.sync_all().map_err(|source| self.io(source))?;
        Ok(records)
    }

    /// Moves the writer to a thread of its own and returns its handle; get
    /// [`TraceSink`]s for other threads from [`TraceWriterThread::sink`].
    pub fn spawn(self) -> Result<TraceWriterThread, TraceError> {
        let (tx, rx) = queue(SINK_QUEUE);
        let path = self.path.clone();
        let failure = Arc::new(Mutex::new(None));
        let failed = failure.clone();
        let pool = Arc::new(BatchPool::default());
        let returns = pool.clone();
        let handle = std::thread::Builder::new()
            .name("trace-writer".into())
            .spawn(move || {
                let result = writer_loop(self, rx, &returns);
                if let (Err(e), Ok(mut f)) = (&result, failed.lock()) {
                    // Sinks see this at once (e.g. disk full ends the boot).
                    *f = Some(e.to_string());
                }
                result
            })
            .map_err(|source| TraceError::Io { path, source })?;
        Ok(TraceWriterThread {
            tx: Some(tx),
            handle: Some(handle),
            failure,
            pool,
        })
    }

    /// Starts a writer thread on `file` (created by the caller at `path`,
    /// empty) before the metadata is known: the thread writes the header
    /// and `meta()`'s record first, then what sinks queued meanwhile (they
    /// wait in the channel). If `meta` fails, the empty file is removed and
    /// the sinks see the failure (a recording then ends with it).
    pub fn spawn_deferred(
        path: PathBuf,
        file: File,
        meta: Box<dyn FnOnce() -> Result<TraceMeta, String> + Send>,
    ) -> Result<TraceWriterThread, TraceError> {
        let (tx, rx) = queue(SINK_QUEUE);
        let failure = Arc::new(Mutex::new(None));
        let failed = failure.clone();
        let pool = Arc::new(BatchPool::default());
        let returns = pool.clone();
        let shown = path.clone();
        let handle = std::thread::Builder::new()
            .name("trace-writer".into())
            .spawn(move || {
                let result = match meta() {
                    Ok(m) => TraceWriter::with_file(path, file, &m)
                        .and_then(|w| writer_loop(w, rx, &returns)),
                    Err(e) => {
                        drop(file);
                        let _ = std::fs::remove_file(&path);
                        Err(TraceError::NoMeta(e))
                    }
                };
                if let (Err(e), Ok(mut f)) = (&result, failed.lock()) {
                    *f = Some(e.to_string());
                }
                result
            })
            .map_err(|source| TraceError::Io {
                path: shown,
                source,
            })?;
        Ok(TraceWriterThread {
            tx: Some(tx),
            handle: Some(handle),
            failure,
            pool,
        })
    }

    fn io(&self, source: std::io::Error) -> TraceError {
        TraceError::Io {
            path: self.path.clone(),
            source,
        }
    }
}

enum Msg {
    Record(Box<Record>),
    Batch(Vec<Record>),
    Packed(RecordBatch),
    Flush(mpsc::Sender<()>),
    Finish,
}

/// Runs on the writer thread until `Finish` or until every sender is gone;
/// emptied batches go back to `pool`.
fn writer_loop(
    mut w: TraceWriter,
    rx: QueueReceiver<Msg>,
    pool: &BatchPool,
) -> Result<u64, TraceError> {
    loop {
        let msg = match w.flush_deadline() {
            None => rx.recv().ok(),
            Some(deadline) => {
                match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => {
                        w.flush()?;
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => None,
                }
            }
        };
        match msg {
            Some(Msg::Record(rec)) => w.append(&rec)?,
            Some(Msg::Batch(recs)) => w.append_batch(recs)?,
            // Rebuilt here: the records' vectors are allocated and freed on
            // this thread only.
            Some(Msg::Packed(mut batch)) => {
                let records = batch.take_records();
                pool.give_back(batch);
                w.append_batch(records)?;
            }
            Some(Msg::Flush(ack)) => {
                w.flush()?;
                // The requester may have given up waiting; nothing to do then.
                let _ = ack.send(());
            }
            Some(Msg::Finish) => return w.finish(),
            // Every sink dropped without `finish`: keep what we have, no final record.
            None => {
                w.flush()?;
                return Ok(w.records);
            }
        }
    }
}

/// A cloneable handle that appends records from any thread.
#[derive(Clone)]
pub struct TraceSink {
    tx: QueueSender<Msg>,
    failure: Arc<Mutex<Option<String>>>,
    pool: Arc<BatchPool>,
}

impl TraceSink {
    /// Why the writer thread stopped, once an I/O error stopped it (e.g. the
    /// disk is full): records appended from then on are lost.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok()?.clone()
    }

    /// Queues a record for the writer thread. Blocks only when the queue is
    /// full; fails once the writer has stopped.
    pub fn append(&self, rec: Record) -> Result<(), TraceError> {
        self.tx
            .send(Msg::Record(Box::new(rec)))
            .map_err(|_| TraceError::WriterClosed)
    }

    /// Queues several records at once: one wake-up of the writer thread for
    /// all of them (the sampler batches so the vCPU thread rarely yields the
    /// CPU to the writer).
    pub fn append_batch(&self, recs: Vec<Record>) -> Result<(), TraceError> {
        if recs.is_empty() {
            return Ok(());
        }
        self.tx
            .send(Msg::Batch(recs))
            .map_err(|_| TraceError::WriterClosed)
    }

    /// Queues a [`RecordBatch`]: like [`Self::append_batch`], without a heap
    /// allocation per record on the calling thread.
    pub fn append_packed(&self, batch: RecordBatch) -> Result<(), TraceError> {
        if batch.is_empty() {
            return Ok(());
        }
        self.tx
            .send(Msg::Packed(batch))
            .map_err(|_| TraceError::WriterClosed)
    }

    /// An empty batch for [`Self::append_packed`], if the writer has one
    /// it emptied (or one reserved is left).
    pub fn try_take_batch(&self) -> Option<RecordBatch> {
        self.pool.try_take()
    }

    /// Makes `n` batches of `records` records ready for
    /// [`Self::try_take_batch`] (their pages touched by the calling thread
    /// now); the writer keeps emptied batches near that size.
    pub fn reserve_batches(&self, n: usize, records: usize) {
        self.pool.reserve(n, records);
    }

    /// Waits until every record queued before this call is in the file.
    pub fn flush(&self) -> Result<(), TraceError> {
        let (ack_tx, ack_rx) = mpsc::channel();
        self.tx
            .send(Msg::Flush(ack_tx))
            .map_err(|_| TraceError::WriterClosed)?;
        ack_rx.recv().map_err(|_| TraceError::WriterClosed)
    }
}

/// The writer thread; [`TraceWriterThread::finish`] ends the file.
pub struct TraceWriterThread {
    tx: Option<QueueSender<Msg>>,
    handle: Option<JoinHandle<Result<u64, TraceError>>>,
    failure: Arc<Mutex<Option<String>>>,
    pool: Arc<BatchPool>,
}

impl TraceWriterThread {
    /// A new sink feeding this writer.
    pub fn sink(&self) -> TraceSink {
        // `tx` is only taken by `finish`, which consumes self.
        TraceSink {
            tx: self.tx.clone().expect("sender present until finish"),
            failure: self.failure.clone(),
            pool: self.pool.clone(),
        }
    }

    /// Writes the final record after everything queued so far, waits for the
    /// thread, and returns the number of records before the final one (or the
    /// I/O error that stopped the writer).
    pub fn finish(mut self) -> Result<u64, TraceError> {
        if let Some(tx) = self.tx.take() {
            // If the thread already stopped, its result below says why.
            let _ = tx.send(Msg::Finish);
        }
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            _ => Err(TraceError::WriterClosed),
        }
    }
}

impl Drop for TraceWriterThread {
    fn drop(&mut self) {
        // Dropped without `finish` (e.g. an error path): stop accepting and let
        // the thread flush and exit once the remaining sinks are gone.
        self.tx.take();
    }
}
