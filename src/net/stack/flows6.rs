//! IPv6 flows beside the IPv4 ones. Both families share one table of slots
//! (sockets, buffers, ids the application indexes by): an IPv6 flow holds a
//! slot under a placeholder IPv4 key no packet can carry, and is found by
//! its own [`FlowKey6`] here. IPv4 packets never look at this index, so
//! their cost is unchanged (see docs/ipv6-next.md).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use smoltcp::socket::tcp;

use super::{FlowId, Stack};
use crate::net::flow::{FlowHashKey, FlowKey, TimeWait};
use crate::net::flow6::FlowKey6;
use crate::net::source6::PerSource6;

pub(super) struct Flows6 {
    index: HashMap<FlowKey6, u32, FlowHashKey>,
    /// By slot: the IPv6 4-tuple of an IPv6 flow.
    keys: Vec<Option<FlowKey6>>,
    /// By slot: the per-source key (masked address) the flow is counted under.
    counted: Vec<Option<Ipv6Addr>>,
    pub time_wait: TimeWait<FlowKey6>,
    /// Open accepted connections per source, for listeners with a limit.
    pub per_source: PerSource6,
}

/// The IPv4 table's key for an IPv6 flow's slot: from 0.0.0.0:0 to an
/// address in 0.0.0.0/8 (the slot number), which no frame we take carries
/// (`classify` takes only frames to our own address).
pub(super) fn placeholder(slot: u32) -> FlowKey {
    FlowKey {
        remote_ip: Ipv4Addr::UNSPECIFIED,
        remote_port: 0,
        local_ip: Ipv4Addr::from(slot & 0x00ff_ffff),
        local_port: 0,
    }
}

impl Flows6 {
    pub fn new(max_flows: usize, time_wait: usize, ttl_us: u64, key: [u8; 16]) -> Flows6 {
        Flows6 {
            index: HashMap::with_capacity_and_hasher(max_flows, FlowHashKey::new(key)),
            keys: vec![None; max_flows],
            counted: vec![None; max_flows],
            time_wait: TimeWait::new(time_wait, ttl_us, key),
            // Keys come masked by the listener's prefix (see `source_key6`).
            per_source: PerSource6::new(max_flows, 128, key),
        }
    }

    #[inline]
    pub fn lookup(&self, key: &FlowKey6) -> Option<u32> {
        self.index.get(key).copied()
    }

    pub fn insert(&mut self, slot: u32, key: FlowKey6, counted: Option<Ipv6Addr>) {
        self.keys[slot as usize] = Some(key);
        self.counted[slot as usize] = counted;
        self.index.insert(key, slot);
    }

    /// (Empty when no port has IPv6: nothing is kept per slot then.)
    #[inline]
    pub fn key(&self, slot: u32) -> Option<FlowKey6> {
        self.keys.get(slot as usize).copied().flatten()
    }
}

impl Stack {
    /// The flow's remote end (the client of an accepted flow), while it lives.
    pub fn remote(&self, f: FlowId) -> Option<SocketAddr> {
        match self.v6.key(f) {
            Some(k) => Some(SocketAddr::new(IpAddr::V6(k.remote_ip), k.remote_port)),
            None => self
                .flows
                .key(f)
                .map(|k| SocketAddr::new(IpAddr::V4(k.remote_ip), k.remote_port)),
        }
    }

    /// The flow's local end (our address and port), while it lives.
    pub fn local(&self, f: FlowId) -> Option<SocketAddr> {
        match self.v6.key(f) {
            Some(k) => Some(SocketAddr::new(IpAddr::V6(k.local_ip), k.local_port)),
            None => self
                .flows
                .key(f)
                .map(|k| SocketAddr::new(IpAddr::V4(k.local_ip), k.local_port)),
        }
    }

    /// A released slot's IPv6 side: its key leaves the index (into
    /// TIME-WAIT when it ended there) and its source is uncounted. False
    /// for an IPv4 flow.
    pub(super) fn release6(&mut self, f: FlowId, state: tcp::State, now_us: u64) -> bool {
        let v6 = &mut self.v6;
        let Some(key) = v6.keys.get_mut(f as usize).and_then(Option::take) else {
            return false;
        };
        v6.index.remove(&key);
        if let Some(source) = v6.counted[f as usize].take() {
            v6.per_source.close(source);
        }
        if state == tcp::State::TimeWait {
            v6.time_wait.insert(key, now_us);
        }
        true
    }
}
