//! Flow identity and tables: 4-tuple keys hashed with SipHash-1-3 under a
//! per-process secret key, a slab of preallocated flow slots found through a
//! hash map, and compact TIME-WAIT entries kept instead of whole sockets.
//!
//! The 4-tuples are chosen by whoever sends us packets. With a hash anyone
//! can compute, an attacker can pick tuples that all land in one bucket and
//! make every lookup walk all of them; keyed, the buckets cannot be predicted.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::Ipv4Addr;

use siphasher::sip::SipHasher13;

/// A TCP connection as seen from our side.
#[derive(Debug, Clone, Copy, Eq)]
pub struct FlowKey {
    pub remote_ip: Ipv4Addr,
    pub remote_port: u16,
    pub local_ip: Ipv4Addr,
    pub local_port: u16,
}

impl PartialEq for FlowKey {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        #[cfg(test)]
        probes::count();
        self.remote_ip == other.remote_ip
            && self.remote_port == other.remote_port
            && self.local_ip == other.local_ip
            && self.local_port == other.local_port
    }
}

impl Hash for FlowKey {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        // All 96 bits, in two writes (SipHash takes them as one 12-byte message).
        h.write_u64(
            u64::from(u32::from(self.remote_ip)) << 32 | u64::from(u32::from(self.local_ip)),
        );
        h.write_u32(u32::from(self.remote_port) << 16 | u32::from(self.local_port));
    }
}

/// splitmix64's finaliser: every input bit moves every output bit. Unkeyed,
/// so for spreading our own numbers only, never for attacker-chosen keys.
#[inline]
#[cfg(test)]
pub(in crate::net) fn mix(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Builds the hasher of [`FlowKey`]s: SipHash-1-3 under a secret 128-bit key
/// (`Secrets::flow_key`). Cheap enough per packet: a 12-byte key takes two
/// compression rounds and three finalisation rounds.
#[derive(Clone, Copy)]
pub struct FlowHashKey {
    k0: u64,
    k1: u64,
}

impl FlowHashKey {
    pub fn new(key: [u8; 16]) -> FlowHashKey {
        let (k0, k1) = SipHasher13::new_with_key(&key).keys();
        FlowHashKey { k0, k1 }
    }
}

impl BuildHasher for FlowHashKey {
    type Hasher = SipHasher13;

    #[inline]
    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.k0, self.k1)
    }
}

/// What a flow table can be keyed by: today's IPv4 [`FlowKey`] and the
/// IPv6 `flow6::FlowKey6` (a table per family, so IPv4 keys stay 12 bytes).
pub trait Key: Copy + Eq + Hash {}
impl<K: Copy + Eq + Hash> Key for K {}

type FlowMap<K, V> = HashMap<K, V, FlowHashKey>;

/// A fixed number of flow slots, each holding a `T` (its socket and
/// buffers), found by key. Built up front ([`new`](Self::new)) or on first
/// use ([`lazy`](Self::lazy)): then a slot's `T` is made the first time the
/// free list runs dry, so memory follows the peak of open flows, not the
/// capacity. Either way no allocation once a slot exists.
pub struct FlowTable<T, K = FlowKey> {
    slots: Vec<T>,
    keys: Vec<Option<K>>,
    /// Slots built and free, most recently freed last (taken first: a hot
    /// slot's pages are reused, cold ones stay untouched).
    free: Vec<u32>,
    index: FlowMap<K, u32>,
    capacity: usize,
    /// Makes the next slot (lazy tables); `None` once built up front.
    make: Option<Box<dyn FnMut() -> T + Send>>,
}

impl<T, K: Key> FlowTable<T, K> {
    /// `capacity` slots made by `make`, indexed by a hash keyed with `key`.
    pub fn new(capacity: usize, key: [u8; 16], mut make: impl FnMut() -> T) -> Self {
        Self {
            slots: (0..capacity).map(|_| make()).collect(),
            keys: vec![None; capacity],
            // Pop from the end: low slots first.
            free: (0..capacity as u32).rev().collect(),
            index: HashMap::with_capacity_and_hasher(capacity, FlowHashKey::new(key)),
            capacity,
            make: None,
        }
    }

    /// Room for `capacity` slots, each made by `make` when first needed
    /// (slot `i` is the `i`-th made). The vectors are reserved, not filled:
    /// their untouched pages cost address space only.
    pub fn lazy(capacity: usize, key: [u8; 16], make: impl FnMut() -> T + Send + 'static) -> Self {
        Self {
            slots: Vec::with_capacity(capacity),
            keys: Vec::with_capacity(capacity),
            free: Vec::with_capacity(capacity),
            index: HashMap::with_capacity_and_hasher(capacity, FlowHashKey::new(key)),
            capacity,
            make: Some(Box::new(make)),
        }
    }

    /// Slots whose `T` exists (all of them for a table built up front).
    pub fn built(&self) -> usize {
        self.slots.len()
    }

    /// The slots' contents, for sweeps that look at every built slot.
    pub fn slot(&mut self, slot: u32) -> Option<&mut T> {
        self.slots.get_mut(slot as usize)
    }

    /// A free slot: the most recently freed, else a new one.
    fn take(&mut self) -> Option<u32> {
        if let Some(slot) = self.free.pop() {
            return Some(slot);
        }
        let make = self.make.as_mut()?;
        if self.slots.len() >= self.capacity {
            return None;
        }
        // Within the reserved capacity: no reallocation.
        self.slots.push(make());
        self.keys.push(None);
        Some(self.slots.len() as u32 - 1)
    }

    #[inline]
    pub fn lookup(&self, key: &K) -> Option<u32> {
        self.index.get(key).copied()
    }

    /// Takes a free slot for `key`; `None` when every slot is in use.
    pub fn insert(&mut self, key: K) -> Option<u32> {
        self.insert_with(|_| key)
    }

    /// Like [`insert`](Self::insert), the key made from the slot taken (a
    /// flow another table finds gets a key no packet can carry).
    pub fn insert_with(&mut self, key: impl FnOnce(u32) -> K) -> Option<u32> {
        // Take (or build) the slot first: its number makes the key.
        let slot = self.take()?;
        let key = key(slot);
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
    pub fn key(&self, slot: u32) -> Option<K> {
        self.keys.get(slot as usize).copied().flatten()
    }

    pub fn active(&self) -> usize {
        self.index.len()
    }

    /// Slots a new flow can take (free ones and those not yet built).
    pub fn free(&self) -> usize {
        self.free.len() + (self.capacity - self.slots.len())
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Keys compared by a lookup of `key`: 1 for a hit in its own bucket,
    /// more when others share its bucket and hash tag.
    #[cfg(test)]
    pub(crate) fn probe_len(&self, key: &K) -> u64 {
        probes::during(|| {
            self.lookup(key);
        })
    }
}

/// TIME-WAIT as ~50 bytes per closed connection instead of a socket with
/// buffers. All entries live equally long, so expiry is a FIFO.
pub struct TimeWait<K = FlowKey> {
    expiry: FlowMap<K, u64>,
    order: VecDeque<(K, u64)>,
    capacity: usize,
    ttl_us: u64,
}

impl<K: Key> TimeWait<K> {
    /// Room for `capacity` entries of `ttl_us` each, indexed by a hash keyed with `key`.
    pub fn new(capacity: usize, ttl_us: u64, key: [u8; 16]) -> Self {
        Self {
            expiry: HashMap::with_capacity_and_hasher(capacity, FlowHashKey::new(key)),
            order: VecDeque::with_capacity(capacity),
            capacity,
            ttl_us,
        }
    }

    /// Remembers `key` until `now_us + ttl`. When full, the oldest entry is
    /// forgotten early (RFC 6191 allows reuse; the next SYN starts a fresh flow).
    pub fn insert(&mut self, key: K, now_us: u64) {
        if self.order.len() == self.capacity {
            self.pop_oldest();
        }
        let until = now_us + self.ttl_us;
        self.expiry.insert(key, until);
        self.order.push_back((key, until));
    }

    /// Forgets `key` (a new SYN reuses the tuple); true if it was there.
    pub fn remove(&mut self, key: &K) -> bool {
        // Its FIFO entry goes stale and is skipped when it expires.
        self.expiry.remove(key).is_some()
    }

    pub fn contains(&self, key: &K) -> bool {
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

    /// Keys compared by a lookup of `key` (see `FlowTable::probe_len`).
    #[cfg(test)]
    pub(crate) fn probe_len(&self, key: &K) -> u64 {
        probes::during(|| {
            self.contains(key);
        })
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

/// Counts [`FlowKey`] comparisons (the probes of a hash map lookup) on
/// this thread.
#[cfg(test)]
mod probes {
    use std::cell::Cell;

    thread_local! {
        static COMPARED: Cell<u64> = const { Cell::new(0) };
    }

    pub fn count() {
        COMPARED.with(|c| c.set(c.get() + 1));
    }

    /// Comparisons made while `f` runs.
    pub fn during(f: impl FnOnce()) -> u64 {
        let before = COMPARED.with(Cell::get);
        f();
        COMPARED.with(Cell::get) - before
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasherDefault;

    fn key(port: u16) -> FlowKey {
        FlowKey {
            remote_ip: Ipv4Addr::new(10, 0, 0, 1),
            remote_port: port,
            local_ip: Ipv4Addr::new(10, 0, 0, 2),
            local_port: 80,
        }
    }

    const KEY: [u8; 16] = *b"flow table key 1";

    #[test]
    fn keys_differing_in_client_port_spread_over_buckets() {
        let build = FlowHashKey::new(KEY);
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
        let mut t = FlowTable::new(2, KEY, || 0u8);
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
    fn lazy_table_builds_slots_on_demand_and_reuses_the_hottest() {
        use std::sync::atomic::Ordering;
        let made = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let m = made.clone();
        let mut t = FlowTable::lazy(3, KEY, move || m.fetch_add(1, Ordering::Relaxed));
        assert_eq!((t.built(), t.free(), t.capacity()), (0, 3, 3));
        assert_eq!(t.key(2), None, "an unbuilt slot has no key");
        let a = t.insert(key(1)).unwrap();
        let b = t.insert(key(2)).unwrap();
        // Slot i holds the i-th value made: nothing past those taken.
        assert_eq!((a, b, t.built()), (0, 1, 2));
        assert_eq!((*t.get_mut(a), *t.get_mut(b)), (0, 1));
        t.remove(a);
        t.remove(b);
        // The most recently freed comes back first; nothing new is built.
        assert_eq!(t.insert(key(3)), Some(b));
        assert_eq!(t.insert(key(4)), Some(a));
        assert_eq!(t.built(), 2);
        assert_eq!(t.insert(key(5)), Some(2));
        assert_eq!(t.insert(key(6)), None);
        assert_eq!((made.load(Ordering::Relaxed), t.free()), (3, 0));
    }

    #[test]
    fn insert_with_keys_the_slot_it_takes_in_a_lazy_table() {
        // The key is made from the slot: a slot not yet built must be
        // built first, not refused (an empty free list is not a full table).
        let mut t = FlowTable::lazy(2, KEY, || ());
        let a = t
            .insert_with(|s| key(100 + s as u16))
            .expect("a slot to build");
        assert_eq!(t.lookup(&key(100 + a as u16)), Some(a));
        let b = t
            .insert_with(|s| key(100 + s as u16))
            .expect("a second slot");
        assert_eq!((a, b, t.lookup(&key(101))), (0, 1, Some(1)));
        assert_eq!(t.insert_with(|s| key(100 + s as u16)), None);
    }

    #[test]
    fn time_wait_expires_in_order_and_survives_reinsert() {
        let mut tw = TimeWait::new(3, 100, KEY);
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

    /// The index as it was before it was keyed: FlowKey folded into one u64
    /// and put through `mix`, the same for every process and known to all.
    #[derive(Default)]
    struct OldHasher(u64);

    impl Hasher for OldHasher {
        fn finish(&self) -> u64 {
            mix(self.0)
        }
        fn write(&mut self, _: &[u8]) {
            unreachable!("old_hash writes one u64");
        }
        fn write_u64(&mut self, v: u64) {
            self.0 ^= v;
        }
    }

    /// What the old `Hash for FlowKey` wrote.
    struct OldKey(FlowKey);

    impl Hash for OldKey {
        fn hash<H: Hasher>(&self, h: &mut H) {
            let k = &self.0;
            let a = (u64::from(u32::from(k.remote_ip)) << 32)
                | (u64::from(k.remote_port) << 16)
                | u64::from(k.local_port);
            h.write_u64(a ^ mix(u64::from(u32::from(k.local_ip))));
        }
    }

    impl PartialEq for OldKey {
        fn eq(&self, other: &Self) -> bool {
            self.0 == other.0
        }
    }

    impl Eq for OldKey {}

    fn old_hash(k: FlowKey) -> u64 {
        BuildHasherDefault::<OldHasher>::default().hash_one(OldKey(k))
    }

    /// `n` distinct keys with one and the same old hash: the old hash was
    /// mix(a ^ mix(local_ip)) with `a` the other three fields, so for any
    /// local address, a = C ^ mix(local_ip) collides with all the others.
    fn old_collisions(n: u32) -> Vec<FlowKey> {
        const C: u64 = 0x0a47_0001_9c40_0050;
        (0..n)
            .map(|i| {
                let local_ip = 0x0a48_0000 + i;
                let a = C ^ mix(u64::from(local_ip));
                FlowKey {
                    remote_ip: Ipv4Addr::from((a >> 32) as u32),
                    remote_port: (a >> 16) as u16,
                    local_ip: Ipv4Addr::from(local_ip),
                    local_port: a as u16,
                }
            })
            .collect()
    }

    fn mean_max(probes: impl Iterator<Item = u64>) -> (f64, u64) {
        let (mut n, mut sum, mut max) = (0u64, 0u64, 0u64);
        for p in probes {
            n += 1;
            sum += p;
            max = max.max(p);
        }
        (sum as f64 / n as f64, max)
    }

    #[test]
    fn keys_colliding_under_the_old_hash_stay_one_probe_away() {
        const N: u32 = 50_000;
        let keys = old_collisions(N);
        let first = old_hash(keys[0]);
        assert!(keys.iter().all(|&k| old_hash(k) == first));

        let mut t = FlowTable::new(N as usize, KEY, || ());
        for &k in &keys {
            t.insert(k).expect("room for every key");
        }
        assert_eq!(t.active(), N as usize);
        let (mean, max) = mean_max(keys.iter().map(|k| t.probe_len(k)));
        let mut tw = TimeWait::new(N as usize, 1, KEY);
        for &k in &keys {
            tw.insert(k, 0);
        }
        let (tw_mean, tw_max) = mean_max(keys.iter().map(|k| tw.probe_len(k)));

        // The old index, on a tenth of the keys (all N would take N²/2
        // comparisons just to build): every lookup walks the whole chain.
        let few = &keys[..N as usize / 10];
        let mut old: HashMap<OldKey, u32, BuildHasherDefault<OldHasher>> = HashMap::default();
        for (i, &k) in few.iter().enumerate() {
            old.insert(OldKey(k), i as u32);
        }
        let (old_mean, old_max) = mean_max(few.iter().map(|&k| {
            probes::during(|| {
                old.get(&OldKey(k));
            })
        }));
        println!(
            "{N} keys with one old hash: keyed flow table probes mean {mean:.3} max {max}, \
             TIME-WAIT mean {tw_mean:.3} max {tw_max}; old index with {} of them: mean {old_mean:.1} max {old_max}",
            few.len()
        );
        assert!(mean < 4.0 && max <= 16, "flow table: mean {mean} max {max}");
        assert!(
            tw_mean < 4.0 && tw_max <= 16,
            "TIME-WAIT: mean {tw_mean} max {tw_max}"
        );
        assert!(
            old_mean > few.len() as f64 / 4.0,
            "old index: mean {old_mean}"
        );
    }
}
