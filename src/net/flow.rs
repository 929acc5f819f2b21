//! Flow identity and tables: 4-tuple keys hashed with a full 64-bit mixer,
//! a slab of preallocated flow slots found through a hash map, and compact
//! TIME-WAIT entries kept instead of whole sockets.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::net::Ipv4Addr;

/// A TCP connection as seen from our side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKey {
    pub remote_ip: Ipv4Addr,
    pub remote_port: u16,
    pub local_ip: Ipv4Addr,
    pub local_port: u16,
}

impl Hash for FlowKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        let a = (u64::from(u32::from(self.remote_ip)) << 32)
            | (u64::from(self.remote_port) << 16)
            | u64::from(self.local_port);
        h.write_u64(a ^ mix(u64::from(u32::from(self.local_ip))));
    }
}

/// splitmix64's finaliser: every input bit moves every output bit, so keys
/// that differ only in the client port spread over the whole table.
#[inline]
pub(crate) fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Hasher for [`FlowKey`] (which writes one u64).
#[derive(Default)]
pub struct FlowHasher(u64);

impl Hasher for FlowHasher {
    fn finish(&self) -> u64 {
        mix(self.0)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 ^= v;
    }
}

type FlowMap<V> = HashMap<FlowKey, V, BuildHasherDefault<FlowHasher>>;

/// A fixed number of flow slots, each holding a `T` built up front (its
/// socket and buffers), found by key. No allocation after construction.
pub struct FlowTable<T> {
    slots: Vec<T>,
    keys: Vec<Option<FlowKey>>,
    free: Vec<u32>,
    index: FlowMap<u32>,
}

impl<T> FlowTable<T> {
    pub fn new(capacity: usize, mut make: impl FnMut() -> T) -> Self {
        Self {
            slots: (0..capacity).map(|_| make()).collect(),
            keys: vec![None; capacity],
            // Pop from the end: low slots first.
            free: (0..capacity as u32).rev().collect(),
            index: HashMap::with_capacity_and_hasher(capacity, Default::default()),
        }
    }

    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<u32> {
        self.index.get(key).copied()
    }

    /// Takes a free slot for `key`; `None` when every slot is in use.
    pub fn insert(&mut self, key: FlowKey) -> Option<u32> {
        let slot = self.free.pop()?;
        self.keys[slot as usize] = Some(key);
        self.index.insert(key, slot);
        Some(slot)
    }

    /// Returns `slot` to the free list.
    pub fn remove(&mut self, slot: u32) {
        if let Some(key) = self.keys[slot as usize].take() {
            self.index.remove(&key);
            self.free.push(slot);
        }
    }

    /// Forgets `slot`'s key (lookups miss it) but keeps the slot out of
    /// reuse until [`reuse`](Self::reuse): its owner may still be told.
    pub fn retire(&mut self, slot: u32) {
        if let Some(key) = self.keys[slot as usize].take() {
            self.index.remove(&key);
        }
    }

    /// Puts a retired slot back on the free list.
    pub fn reuse(&mut self, slot: u32) {
        debug_assert!(self.keys[slot as usize].is_none(), "slot {slot} is live");
        self.free.push(slot);
    }

    #[inline]
    pub fn get_mut(&mut self, slot: u32) -> &mut T {
        &mut self.slots[slot as usize]
    }

    /// Two distinct slots at once (a client flow and its upstream).
    #[inline]
    pub fn pair_mut(&mut self, a: u32, b: u32) -> (&mut T, &mut T) {
        assert_ne!(a, b, "a flow cannot be its own peer");
        let (a, b) = (a as usize, b as usize);
        if a < b {
            let (low, high) = self.slots.split_at_mut(b);
            (&mut low[a], &mut high[0])
        } else {
            let (low, high) = self.slots.split_at_mut(a);
            (&mut high[0], &mut low[b])
        }
    }

    #[inline]
    pub fn key(&self, slot: u32) -> Option<FlowKey> {
        self.keys[slot as usize]
    }

    pub fn active(&self) -> usize {
        self.index.len()
    }

    pub fn free(&self) -> usize {
        self.free.len()
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }
}

/// TIME-WAIT as ~50 bytes per closed connection instead of a socket with
/// buffers. All entries live equally long, so expiry is a FIFO.
pub struct TimeWait {
    expiry: FlowMap<u64>,
    order: VecDeque<(FlowKey, u64)>,
    capacity: usize,
    ttl_us: u64,
}

impl TimeWait {
    pub fn new(capacity: usize, ttl_us: u64) -> Self {
        Self {
            expiry: HashMap::with_capacity_and_hasher(capacity, Default::default()),
            order: VecDeque::with_capacity(capacity),
            capacity,
            ttl_us,
        }
    }

    /// Remembers `key` until `now_us + ttl`. When full, the oldest entry is
    /// forgotten early (RFC 6191 allows reuse; the next SYN starts a fresh flow).
    pub fn insert(&mut self, key: FlowKey, now_us: u64) {
        if self.order.len() == self.capacity {
            self.pop_oldest();
        }
        let until = now_us + self.ttl_us;
        self.expiry.insert(key, until);
        self.order.push_back((key, until));
    }

    /// Forgets `key` (a new SYN reuses the tuple); true if it was there.
    pub fn remove(&mut self, key: &FlowKey) -> bool {
        // Its FIFO entry goes stale and is skipped when it expires.
        self.expiry.remove(key).is_some()
    }

    pub fn contains(&self, key: &FlowKey) -> bool {
        self.expiry.contains_key(key)
    }

    pub fn expire(&mut self, now_us: u64) {
        while self
            .order
            .front()
            .is_some_and(|&(_, until)| until <= now_us)
        {
            self.pop_oldest();
        }
    }

    pub fn len(&self) -> usize {
        self.expiry.len()
    }

    pub fn is_empty(&self) -> bool {
        self.expiry.is_empty()
    }

    fn pop_oldest(&mut self) {
        if let Some((key, until)) = self.order.pop_front() {
            // Only if this entry is the live one (not re-inserted since).
            if self.expiry.get(&key) == Some(&until) {
                self.expiry.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            remote_ip: Ipv4Addr::new(10, 0, 0, 1),
            remote_port: port,
            local_ip: Ipv4Addr::new(10, 0, 0, 2),
            local_port: 80,
        }
    }

    #[test]
    fn keys_differing_in_client_port_spread_over_buckets() {
        let build = BuildHasherDefault::<FlowHasher>::default();
        let mut buckets = [0u32; 1024];
        for port in 0..65535u16 {
            buckets[(build.hash_one(key(port)) & 1023) as usize] += 1;
        }
        let max = *buckets.iter().max().unwrap();
        // 64 per bucket on average; a weak hash puts thousands in one.
        assert!(max < 120, "worst bucket holds {max}");
    }

    #[test]
    fn table_reuses_slots_and_refuses_when_full() {
        let mut t = FlowTable::new(2, || 0u8);
        let a = t.insert(key(1)).unwrap();
        let b = t.insert(key(2)).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.insert(key(3)), None);
        assert_eq!(t.lookup(&key(2)), Some(b));
        t.remove(a);
        assert_eq!(t.lookup(&key(1)), None);
        assert_eq!(t.insert(key(3)), Some(a));
        assert_eq!(t.active(), 2);
        t.remove(a);
        t.remove(a); // double remove is harmless
        assert_eq!(t.active(), 1);
    }

    #[test]
    fn time_wait_expires_in_order_and_survives_reinsert() {
        let mut tw = TimeWait::new(3, 100);
        tw.insert(key(1), 0);
        tw.insert(key(2), 10);
        assert!(tw.remove(&key(1)));
        tw.insert(key(1), 50); // re-inserted: the stale first entry must not evict it
        tw.expire(120);
        assert!(!tw.contains(&key(2)));
        assert!(tw.contains(&key(1)));
        tw.expire(150);
        assert!(tw.is_empty());
        // Full: the oldest goes first.
        for p in 10..14 {
            tw.insert(key(p), 200);
        }
        assert_eq!(tw.len(), 3);
        assert!(!tw.contains(&key(10)));
    }
}
