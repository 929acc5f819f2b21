//! Frames that arrive on a worker that does not own their flow travel to the
//! owner through a lock-free ring per worker (and every worker gets a copy
//! of ARP, since each keeps its own neighbour cache).

use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::dpdk::Mbuf;

/// A frame on its way to the worker that owns its flow (or a copy of an
/// ARP frame every worker must see).
pub struct Handoff {
    pub port: usize,
    pub mbuf: Mbuf,
    pub arp_copy: bool,
}

/// One lock-free inbox per worker.
pub type Inboxes = Arc<Vec<ArrayQueue<Handoff>>>;

/// Frames one worker's inbox holds; more are dropped and counted.
const INBOX_CAPACITY: usize = 4096;

pub fn handoff_inboxes(workers: usize) -> Inboxes {
    Arc::new(
        (0..workers)
            .map(|_| ArrayQueue::new(INBOX_CAPACITY))
            .collect(),
    )
}
