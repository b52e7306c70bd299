//! The I/O thread: one per VM with virtio devices, waiting for queue
//! notifications (ioeventfds) and tap frames, and handing them to their
//! devices under the device's lock.

use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use super::mmio::MmioTransport;

/// Something the I/O thread waits for.
pub(super) struct Watch {
    /// The fd to poll.
    pub fd: i32,
    /// What it is.
    pub what: WatchKind,
    /// The device it belongs to.
    pub transport: Arc<Mutex<MmioTransport>>,
}

/// Kinds of fds the I/O thread polls.
pub(super) enum WatchKind {
    /// The ioeventfd of a queue's notifications.
    Queue(usize, EventFd),
    /// Frames waiting on a tap.
    Tap,
}

/// The I/O thread: waits for queue notifications and tap frames (or the
/// stop signal) and hands them to their devices.
pub(super) fn io_loop(watches: &[Watch], stop: &EventFd) {
    use std::os::fd::AsRawFd;
    let mut fds: Vec<libc::pollfd> = watches
        .iter()
        .map(|w| w.fd)
        .chain(std::iter::once(stop.as_raw_fd()))
        .map(|fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let Some(stop_index) = fds.len().checked_sub(1) else {
        return;
    };
    loop {
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds for the whole
        // call; every fd stays open: the eventfds are owned by `watches`, the
        // taps by their devices (kept alive by `watches`' transports), `stop`
        // is borrowed for this function.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 1000) };
        if r < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        if fds[stop_index].revents != 0 {
            return;
        }
        for (w, p) in watches.iter().zip(fds.iter_mut()) {
            if p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                // A tap that went away: stop watching it.
                p.fd = -1;
                continue;
            }
            if p.revents & libc::POLLIN == 0 {
                continue;
            }
            let Ok(mut t) = w.transport.lock() else {
                return;
            };
            match &w.what {
                WatchKind::Queue(q, evt) => {
                    // Resets the counter; several notifications mean one pass.
                    let _ = evt.read();
                    t.notify(*q);
                }
                WatchKind::Tap => t.backend_event(),
            }
        }
    }
}
