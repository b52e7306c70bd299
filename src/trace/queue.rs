//! The writer thread's queue: bounded like `mpsc::sync_channel`, but its
//! memory grows with use. `sync_channel(n)` allocates and initialises all
//! `n` slots when it is made; at [`super::writer::SINK_QUEUE`] slots that is
//! ~650 KiB of fresh pages, ~0.5 ms of page faults on the path to the
//! guest's first instruction on a nested host. An unbounded channel
//! allocates its blocks as messages arrive; a count of queued messages
//! keeps the bound (a sender past it waits for the writer to catch up).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// How long a sender past the bound sleeps before looking again.
const ROOM_POLL: Duration = Duration::from_micros(200);

#[derive(Debug, Default)]
struct Shared {
    /// Messages sent and not yet received.
    queued: AtomicUsize,
    /// The receiver is gone: nobody will make room.
    closed: AtomicBool,
}

/// The sending side; cloned for every sink.
#[derive(Debug)]
pub(super) struct QueueSender<T> {
    tx: mpsc::Sender<T>,
    shared: Arc<Shared>,
    bound: usize,
}

impl<T> Clone for QueueSender<T> {
    fn clone(&self) -> Self {
        QueueSender {
            tx: self.tx.clone(),
            shared: self.shared.clone(),
            bound: self.bound,
        }
    }
}

/// The receiving side (the writer thread's).
#[derive(Debug)]
pub(super) struct QueueReceiver<T> {
    rx: mpsc::Receiver<T>,
    shared: Arc<Shared>,
}

/// A queue that holds up to `bound` messages before senders wait.
pub(super) fn queue<T>(bound: usize) -> (QueueSender<T>, QueueReceiver<T>) {
    let (tx, rx) = mpsc::channel();
    let shared = Arc::new(Shared::default());
    (
        QueueSender {
            tx,
            shared: shared.clone(),
            bound: bound.max(1),
        },
        QueueReceiver { rx, shared },
    )
}

impl<T> QueueSender<T> {
    /// Queues `msg`; waits while the queue is past its bound and the
    /// receiver lives. Fails (giving `msg` back) once the receiver is gone.
    pub(super) fn send(&self, msg: T) -> Result<(), mpsc::SendError<T>> {
        // Counted before it is sent, so the receiver never counts below zero.
        let n = self.shared.queued.fetch_add(1, Ordering::AcqRel) + 1;
        if let Err(e) = self.tx.send(msg) {
            self.shared.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(e);
        }
        if n > self.bound {
            while self.shared.queued.load(Ordering::Acquire) > self.bound
                && !self.shared.closed.load(Ordering::Acquire)
            {
                std::thread::sleep(ROOM_POLL);
            }
        }
        Ok(())
    }
}

impl<T> QueueReceiver<T> {
    /// The next message; `Err` once every sender is gone and the queue is empty.
    pub(super) fn recv(&self) -> Result<T, mpsc::RecvError> {
        let m = self.rx.recv()?;
        self.shared.queued.fetch_sub(1, Ordering::AcqRel);
        Ok(m)
    }

    /// [`Self::recv`] with a timeout.
    pub(super) fn recv_timeout(&self, timeout: Duration) -> Result<T, mpsc::RecvTimeoutError> {
        let m = self.rx.recv_timeout(timeout)?;
        self.shared.queued.fetch_sub(1, Ordering::AcqRel);
        Ok(m)
    }
}

impl<T> Drop for QueueReceiver<T> {
    fn drop(&mut self) {
        // Senders waiting for room stop waiting; their next send fails.
        self.shared.closed.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn messages_arrive_in_order() {
        let (tx, rx) = queue(4);
        for i in 0..4 {
            tx.send(i).expect("send");
        }
        let got: Vec<i32> = (0..4).map(|_| rx.recv().expect("recv")).collect();
        assert_eq!(got, [0, 1, 2, 3]);
        drop(tx);
        assert!(rx.recv().is_err(), "every sender gone");
    }

    /// A sender past the bound waits until the receiver takes messages.
    #[test]
    fn a_sender_past_the_bound_waits_for_room() {
        let (tx, rx) = queue(2);
        tx.send(0).expect("send");
        tx.send(1).expect("send");
        let t0 = Instant::now();
        let sender = std::thread::spawn(move || {
            tx.send(2).expect("send");
            t0.elapsed()
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!sender.is_finished(), "the third send waits");
        assert_eq!(rx.recv().expect("recv"), 0);
        let waited = sender.join().expect("sender");
        assert!(waited >= Duration::from_millis(50), "{waited:?}");
        assert_eq!(rx.recv().expect("recv"), 1);
        assert_eq!(rx.recv().expect("recv"), 2);
    }

    /// A receiver that goes away releases a waiting sender; later sends fail.
    #[test]
    fn a_dropped_receiver_releases_waiting_senders() {
        let (tx, rx) = queue(1);
        tx.send(0).expect("send");
        let tx2 = tx.clone();
        let sender = std::thread::spawn(move || tx2.send(1));
        // Past the bound: the second message is in and its sender waits.
        let shared = rx.shared.clone();
        while shared.queued.load(Ordering::Acquire) < 2 {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(rx);
        // The message went in before the receiver left; waiting then ended.
        assert!(sender.join().expect("sender").is_ok());
        assert!(tx.send(2).is_err());
    }
}
