//! Flow slots and what they cost in memory. A slot (its `Flow`, socket and
//! buffer range) is built the first time the free list runs dry, so start-up
//! memory does not grow with `max_flows`; freed slots are taken back most
//! recent first, so hot slots keep their pages and cold ones stay untouched.
//! Buffer pages of idle flows and cold free slots are given back by
//! [`Reclaim`](super::reclaim::Reclaim).

use smoltcp::iface::{SocketSet, SocketStorage};
use smoltcp::socket::tcp;

use super::reclaim::Reclaim;
use super::Flow;
use crate::net::arena::Arena;
use crate::net::device::SentSeq;
use crate::net::flow::{FlowKey, FlowTable};

/// A fresh slot: a closed socket over its buffers.
fn new_flow(rx: &'static mut [u8], tx: &'static mut [u8]) -> Flow {
    let socket = tcp::Socket::new(tcp::SocketBuffer::new(rx), tcp::SocketBuffer::new(tx));
    let mut sockets = SocketSet::new(vec![SocketStorage::EMPTY]);
    let handle = sockets.add(socket);
    Flow {
        sockets,
        handle,
        port: 0,
        listener: None,
        last_rx_us: 0,
        idle_timeout_us: 0,
        app_deadline_us: 0,
        connect_deadline_us: 0,
        seq_delta: 0,
        half_open: false,
        reserve: false,
        per_source: false,
        hold_unread: false,
        evictable: false,
        established: false,
        rst_seen: false,
        timed_out: false,
        ready_queued: false,
        dirty: false,
        sent: SentSeq::default(),
        rx_end: Default::default(),
        path_mtu: 0,
    }
}

/// `max_flows` slots built on demand over one buffer mapping (on `node`),
/// and the sweep that gives their buffer pages back.
pub(super) fn build(
    max_flows: usize,
    rx_len: usize,
    tx_len: usize,
    key: [u8; 16],
    node: Option<u32>,
) -> (FlowTable<Flow>, Reclaim) {
    let slot_len = rx_len + tx_len;
    let arena = Arena::on_node(max_flows * slot_len, node)
        .expect("mapping the socket buffer arena (out of address space?)")
        .leak();
    let reclaim = Reclaim::new(arena.as_mut_ptr() as usize, slot_len, max_flows);
    let mut chunks = arena.chunks_exact_mut(slot_len);
    let flows = FlowTable::lazy(max_flows, key, move || {
        let (rx, tx) = chunks
            .next()
            .expect("arena sized for max_flows")
            .split_at_mut(rx_len);
        new_flow(rx, tx)
    });
    (flows, reclaim)
}

/// What one slot and the per-slot tables cost, logged at start so a reader
/// sees where start-up and per-connection memory go.
pub(super) fn log_breakdown(worker: usize, max_flows: usize, rx_len: usize, tx_len: usize) {
    let flow = std::mem::size_of::<Flow>();
    // The socket lives in its own one-entry SocketSet on the heap.
    let socket = std::mem::size_of::<SocketStorage>();
    let key = std::mem::size_of::<Option<FlowKey>>();
    // Flow map (~8/7 buckets of key + slot + a control byte), timer position,
    // TIME-WAIT (8 entries per slot: map + queue), event queue (4 per slot).
    let map = (std::mem::size_of::<(FlowKey, u32)>() + 1) * 8 / 7;
    let tw = 8 * (2 * std::mem::size_of::<(FlowKey, u64)>() + 1);
    let per_slot_struct = flow + socket + key;
    log::info!(
        "worker {worker}: {max_flows} flow slots, built on first use: {per_slot_struct} B of structs \
         (Flow {flow} B, socket {socket} B, key {key} B) + {} KiB of buffers per slot used \
         (pages resident while data is queued, given back when idle); reserved address space \
         {} MiB of buffers, {} MiB of tables (flow map {map} B, TIME-WAIT {tw} B, timers 12 B, \
         events {} B per slot), touched as used",
        (rx_len + tx_len) >> 10,
        (max_flows * (rx_len + tx_len)) >> 20,
        (max_flows * (per_slot_struct + map + tw + 12 + 4 * std::mem::size_of::<super::Event>()))
            >> 20,
        4 * std::mem::size_of::<super::Event>(),
    );
}
