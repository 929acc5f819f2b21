//! Per-client rate limits: a token bucket per (limit, client address), kept
//! in a fixed-size table allocated at start, so that a flood of distinct
//! (spoofed) addresses can never grow it.
//!
//! # The bucket
//!
//! Each bucket is GCRA (the "virtual scheduling" form of a token bucket):
//! one number, the theoretical arrival time `tat` of the next conforming
//! event. An event at `now` conforms when `max(tat, now) + interval - now <=
//! burst * interval`, and moves `tat` on by one `interval` (1 / rate); a
//! refused event changes nothing. That is a bucket of `burst` tokens refilled
//! at `rate` per second, and a bucket with `tat <= now` is full: it carries
//! no state and is as good as absent.
//!
//! # The table
//!
//! `entries` slots (rounded up to a power of two), in sets of [`WAYS`]; a key
//! hashes (SipHash-1-3 under the process's secret flow key, so a client
//! cannot aim its addresses at one set) to one set and lives in one of its
//! ways. A new key takes an empty way, or else the way whose `tat` is
//! smallest: a full bucket when there is one (nothing is lost), otherwise
//! the bucket nearest to full, whose owner then starts again with a full
//! burst (counted in `evictions`). So lookups and inserts are O(1), memory
//! is `16 * entries` bytes whatever arrives, and a flood of new addresses
//! can at worst hand a limited client a fresh burst, never use more memory
//! or refuse anyone who is within their rate.

use std::hash::Hasher;
use std::net::{IpAddr, Ipv4Addr};

use siphasher::sip::SipHasher13;

/// Ways per set: a key may sit in any of these slots.
pub const WAYS: usize = 4;

/// A rate and a burst, as an interval between events and the most a burst
/// may run ahead of it (nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    interval_ns: u64,
    tolerance_ns: u64,
}

impl Rate {
    /// `per_second` events per second (> 0, validated), up to `burst` (>= 1) at once.
    pub fn new(per_second: f64, burst: u32) -> Rate {
        let interval_ns = (1e9 / per_second).round().clamp(1.0, u64::MAX as f64 / 4e6) as u64;
        Rate {
            interval_ns,
            tolerance_ns: interval_ns.saturating_mul(u64::from(burst.max(1))),
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Entry {
    key: u64,
    /// Theoretical arrival time (ns); 0: the way is empty.
    tat_ns: u64,
}

/// The fixed-size table of buckets (one per worker and use: no locks).
pub struct Limiter {
    ways: Box<[Entry]>,
    /// Sets - 1 (sets are a power of two).
    set_mask: u64,
    k0: u64,
    k1: u64,
    used: usize,
    evictions: u64,
}

impl Limiter {
    /// Room for `entries` buckets (at least one set), hashed under `key`.
    pub fn new(entries: usize, key: [u8; 16]) -> Limiter {
        let sets = entries.div_ceil(WAYS).max(1).next_power_of_two();
        let (k0, k1) = SipHasher13::new_with_key(&key).keys();
        Limiter {
            ways: vec![Entry::default(); sets * WAYS].into_boxed_slice(),
            set_mask: sets as u64 - 1,
            k0,
            k1,
            used: 0,
            evictions: 0,
        }
    }

    /// Buckets the table can hold.
    pub fn capacity(&self) -> usize {
        self.ways.len()
    }

    /// Ways in use (never more than `capacity`).
    pub fn used(&self) -> usize {
        self.used
    }

    /// Buckets dropped before they were full, to make room for another key.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// One event of `client` under limit `limit` (any number naming the
    /// limit: a route, a listener) at `now_us`: `Ok` when within `rate`,
    /// else how long (µs, rounded up) until it would be.
    pub fn check(
        &mut self,
        limit: u32,
        client: Ipv4Addr,
        rate: Rate,
        now_us: u64,
    ) -> Result<(), u64> {
        self.check_key(
            (u64::from(limit) << 32) | u64::from(u32::from(client)),
            rate,
            now_us,
        )
    }

    /// [`check`](Self::check) for any client: an IPv6 one by its first
    /// `prefix6` bits (`per_source_prefix6`), so one holding a /64 is one client.
    pub fn check_ip(
        &mut self,
        limit: u32,
        client: IpAddr,
        prefix6: u8,
        rate: Rate,
        now_us: u64,
    ) -> Result<(), u64> {
        match client {
            IpAddr::V4(ip) => self.check(limit, ip, rate, now_us),
            IpAddr::V6(ip) => {
                // Keyed, like the sets: 64 bits of a 160-bit input.
                let mut h = SipHasher13::new_with_keys(self.k1, self.k0);
                h.write_u32(limit);
                h.write_u128(u128::from(super::source6::source_key6(ip, prefix6)));
                self.check_key(h.finish(), rate, now_us)
            }
        }
    }

    fn check_key(&mut self, key: u64, rate: Rate, now_us: u64) -> Result<(), u64> {
        let now_ns = now_us.saturating_mul(1000).max(1);
        let set = self.set_of(key);
        let ways = &mut self.ways[set * WAYS..(set + 1) * WAYS];
        let way = match ways.iter().position(|e| e.tat_ns != 0 && e.key == key) {
            Some(w) => w,
            None => {
                let (w, victim) = ways
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, e)| e.tat_ns)
                    .expect("WAYS > 0");
                if victim.tat_ns == 0 {
                    self.used += 1;
                } else if victim.tat_ns > now_ns {
                    self.evictions += 1;
                }
                ways[w] = Entry { key, tat_ns: 0 };
                w
            }
        };
        let e = &mut ways[way];
        let next = e.tat_ns.max(now_ns) + rate.interval_ns;
        if next - now_ns > rate.tolerance_ns {
            if e.tat_ns == 0 {
                // Cannot happen with burst >= 1; keep the way empty if it does.
                self.used -= 1;
            }
            return Err((next - now_ns - rate.tolerance_ns).div_ceil(1000));
        }
        e.tat_ns = next;
        Ok(())
    }

    fn set_of(&self, key: u64) -> usize {
        let mut h = SipHasher13::new_with_keys(self.k0, self.k1);
        h.write_u64(key);
        (h.finish() & self.set_mask) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_limited_by_its_prefix() {
        let mut l = Limiter::new(64, [7; 16]);
        let r = Rate::new(1.0, 1);
        let ip = |s: &str| IpAddr::V6(s.parse().unwrap());
        assert!(l.check_ip(1, ip("2001:db8:1::1"), 64, r, S).is_ok());
        // Another address of the same /64 is the same client...
        assert!(l.check_ip(1, ip("2001:db8:1::ffff"), 64, r, S).is_err());
        // ...but not under a /128 key, nor another /64, nor another limit.
        assert!(l.check_ip(1, ip("2001:db8:1::ffff"), 128, r, S).is_ok());
        assert!(l.check_ip(1, ip("2001:db8:2::1"), 64, r, S).is_ok());
        assert!(l.check_ip(2, ip("2001:db8:1::1"), 64, r, S).is_ok());
        // IPv4 clients keep their own keys.
        assert!(l.check_ip(1, IpAddr::V4(A), 64, r, S).is_ok());
        assert!(l.check(1, A, r, S).is_err());
    }

    const A: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const S: u64 = 1_000_000;

    fn limiter(entries: usize) -> Limiter {
        Limiter::new(entries, [7; 16])
    }

    #[test]
    fn a_burst_then_the_rate() {
        let mut l = limiter(64);
        let r = Rate::new(10.0, 5);
        let t = 100 * S;
        for i in 0..5 {
            assert_eq!(l.check(1, A, r, t), Ok(()), "burst event {i}");
        }
        // The sixth must wait one interval (100 ms).
        assert_eq!(l.check(1, A, r, t), Err(100_000));
        assert_eq!(l.check(1, A, r, t + 99_999), Err(1));
        assert_eq!(l.check(1, A, r, t + 100_000), Ok(()));
        assert!(l.check(1, A, r, t + 100_000).is_err());
        // A refused event costs nothing: after a second the bucket is full again.
        let later = t + 100_000 + S;
        for _ in 0..5 {
            assert_eq!(l.check(1, A, r, later), Ok(()));
        }
        assert!(l.check(1, A, r, later).is_err());
    }

    #[test]
    fn a_sustained_rate_is_kept() {
        let mut l = limiter(64);
        let r = Rate::new(100.0, 1);
        // 1000 events 10 ms apart: all pass; at 5 ms apart, half do.
        assert!((0..1000).all(|i| l.check(1, A, r, S + i * 10_000).is_ok()));
        let start = 20 * S;
        let ok = (0..1000)
            .filter(|i| l.check(1, A, r, start + i * 5_000).is_ok())
            .count();
        assert_eq!(ok, 500);
    }

    #[test]
    fn slow_rates_wait_seconds() {
        let mut l = limiter(64);
        let r = Rate::new(0.5, 1);
        assert_eq!(l.check(1, A, r, S), Ok(()));
        assert_eq!(l.check(1, A, r, S), Err(2 * S));
    }

    #[test]
    fn clients_and_limits_are_separate() {
        let mut l = limiter(64);
        let r = Rate::new(1.0, 1);
        assert!(l.check(1, A, r, S).is_ok());
        assert!(l.check(1, A, r, S).is_err());
        assert!(l.check(1, B, r, S).is_ok(), "another client");
        assert!(l.check(2, A, r, S).is_ok(), "another limit");
    }

    #[test]
    fn the_table_never_grows_past_its_bound() {
        let mut l = limiter(1000);
        assert_eq!(l.capacity(), 1024);
        let r = Rate::new(1.0, 10);
        for i in 0..100_000u32 {
            let _ = l.check(1, Ipv4Addr::from(i), r, S);
            assert!(l.used() <= l.capacity());
        }
        assert_eq!(l.used(), l.capacity(), "every way is taken");
        assert!(l.evictions() > 0);
    }

    #[test]
    fn full_buckets_are_replaced_before_live_ones() {
        // One set: a limited client stays while full buckets make room.
        let mut l = limiter(WAYS);
        let r = Rate::new(1.0, 2);
        assert!(l.check(1, A, r, S).is_ok());
        assert!(l.check(1, A, r, S).is_ok());
        assert!(l.check(1, A, r, S).is_err(), "A is limited");
        // Three others fill the set; their buckets are full again 1 ms later.
        let r_fast = Rate::new(1000.0, 1);
        for i in 0..3u32 {
            assert!(l.check(2, Ipv4Addr::from(i), r_fast, S).is_ok());
        }
        // A's bucket is not full yet (2 s to refill); many new clients come,
        // each one's bucket full again by the time the next arrives.
        let later = S + 500_000;
        for i in 0..100u64 {
            let client = Ipv4Addr::from(100 + i as u32);
            assert!(l.check(3, client, r_fast, later + i * 1000).is_ok());
        }
        assert_eq!(l.evictions(), 0, "only full buckets were replaced");
        assert!(l.check(1, A, r, later).is_err(), "A is still limited");
    }

    #[test]
    fn a_full_set_evicts_the_bucket_nearest_to_full() {
        let mut l = limiter(WAYS);
        let r = Rate::new(1.0, 1);
        for i in 0..WAYS as u64 {
            // Client i spends its token at S + i ms: client 0's bucket refills first.
            assert!(l
                .check(1, Ipv4Addr::from(i as u32), r, S + i * 1000)
                .is_ok());
        }
        assert!(l.check(1, B, r, S + 10_000).is_ok());
        assert_eq!(l.evictions(), 1);
        assert!(
            l.check(1, Ipv4Addr::from(0), r, S + 10_000).is_ok(),
            "client 0 was evicted: it starts with a full bucket"
        );
        assert!(l.check(1, Ipv4Addr::from(3), r, S + 10_000).is_err());
    }
}
