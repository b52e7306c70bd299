//! Consuming a virtqueue the guest filled: rust-vmm's `virtio_queue` walks
//! the rings and bounds every chain (its length by the queue size, every
//! buffer by guest memory); this module turns what it rejects into a
//! [`QueueFault`] that marks the device broken, and caps the work one
//! notification can cause.

use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;

/// A chain as the devices see it.
pub type Chain<'a> = DescriptorChain<&'a GuestMemoryMmap>;

/// Something the guest driver did wrong; the device stops until it is reset.
#[derive(Debug, thiserror::Error)]
pub enum QueueFault {
    /// The avail ring's index or entries cannot be used (e.g. it claims more
    /// chains than the queue holds, or the ring lies outside guest memory).
    #[error("queue {queue}: unusable available ring: {source}")]
    AvailRing {
        /// Queue index.
        queue: usize,
        /// What `virtio_queue` found.
        source: virtio_queue::Error,
    },
    /// The used ring could not be written.
    #[error("queue {queue}: cannot write the used ring: {source}")]
    UsedRing {
        /// Queue index.
        queue: usize,
        /// What `virtio_queue` found.
        source: virtio_queue::Error,
    },
    /// A descriptor chain that does not follow the device's request format,
    /// or whose buffers lie outside guest memory.
    #[error("queue {queue}: malformed descriptor chain (head {head}): {what}")]
    Chain {
        /// Queue index.
        queue: usize,
        /// Head descriptor index.
        head: u16,
        /// What was wrong.
        what: String,
    },
}

/// What a device did with one chain.
pub enum Handled {
    /// Put the chain in the used ring with this many bytes written to it.
    Used(u32),
    /// Leave the chain (and the rest) available for later, e.g. an rx buffer
    /// with nothing to receive yet.
    Later,
}

/// Hands every chain the driver made available in `queues[index]` to
/// `handle`, returns the used ones, and reports whether the used ring
/// changed. One call consumes at most one queue's worth of chains (the
/// queue's size): a driver that keeps refilling cannot hold the VMM here.
pub fn drain<F>(
    queues: &mut [Queue],
    index: usize,
    mem: &GuestMemoryMmap,
    mut handle: F,
) -> Result<bool, QueueFault>
where
    F: FnMut(Chain<'_>) -> Result<Handled, String>,
{
    let Some(queue) = queues.get_mut(index) else {
        return Ok(false);
    };
    let limit = usize::from(queue.size());
    let mut used_any = false;
    for _ in 0..limit {
        let chain = {
            let mut iter = queue.iter(mem).map_err(|source| QueueFault::AvailRing {
                queue: index,
                source,
            })?;
            match iter.next() {
                Some(c) => c,
                None => break,
            }
        };
        let head = chain.head_index();
        match handle(chain).map_err(|what| QueueFault::Chain {
            queue: index,
            head,
            what,
        })? {
            Handled::Used(len) => {
                queue
                    .add_used(mem, head, len)
                    .map_err(|source| QueueFault::UsedRing {
                        queue: index,
                        source,
                    })?;
                used_any = true;
            }
            Handled::Later => {
                queue.go_to_previous_position();
                break;
            }
        }
    }
    if used_any {
        // Without VIRTIO_F_EVENT_IDX this honours the avail ring's
        // NO_INTERRUPT flag; a ring it cannot read means "interrupt".
        return Ok(queue.needs_notification(mem).unwrap_or(true));
    }
    Ok(false)
}
