//! SYN cookies: under a SYN flood a worker answers SYNs without keeping any
//! state, and opens a connection only when the client's ACK proves it got
//! the SYN-ACK: its acknowledgment number carries a keyed hash of the
//! 4-tuple, the client's ISN and a coarse clock, plus the MSS.
//!
//! smoltcp chooses its own ISN, so a connection opened from a cookie is
//! replayed into a fresh socket (a SYN and an ACK built here), and its
//! sequence numbers are shifted by the difference on the way in and out
//! (`segment::shift_ack`, `segment::shift_seq`), as a SYN proxy does.
//! Cookies carry no window scale, SACK or timestamps: connections opened
//! under a flood run without them.

use std::hash::Hasher;

use siphasher::sip::SipHasher24;

use super::flow::FlowKey;
use super::flow6::FlowKey6;

/// A 4-tuple a cookie can be made for: what its MAC covers, and the MSS
/// values its 2 bits can carry (the largest the client allows).
pub trait CookieTuple {
    const MSS_TABLE: [u16; 4];
    /// Feeds the tuple and the client's ISN to the MAC.
    fn write(&self, h: &mut SipHasher24, client_isn: u32);
}

impl CookieTuple for FlowKey {
    const MSS_TABLE: [u16; 4] = [536, 1220, 1440, 1460];

    fn write(&self, h: &mut SipHasher24, client_isn: u32) {
        h.write_u64(
            u64::from(u32::from(self.remote_ip)) << 32 | u64::from(u32::from(self.local_ip)),
        );
        h.write_u64(
            u64::from(self.remote_port) << 48
                | u64::from(self.local_port) << 32
                | u64::from(client_isn),
        );
    }
}

/// IPv6 headers take 20 bytes more: 1220 is the minimum MTU's (1280), 1440
/// a 1500-byte link's.
impl CookieTuple for FlowKey6 {
    const MSS_TABLE: [u16; 4] = [1220, 1380, 1420, 1440];

    fn write(&self, h: &mut SipHasher24, client_isn: u32) {
        h.write_u128(u128::from(self.remote_ip));
        h.write_u128(u128::from(self.local_ip));
        h.write_u64(
            u64::from(self.remote_port) << 48
                | u64::from(self.local_port) << 32
                | u64::from(client_isn),
        );
    }
}

/// The cookie clock ticks every 2^26 µs (about 67 s); a cookie is good for
/// the tick it was made in and the next.
const TICK_SHIFT: u32 = 26;
/// Bits of keyed hash in a cookie (the rest: 2 of clock, 2 of MSS).
const MAC_MASK: u32 = 0x0fff_ffff;

/// Makes and checks cookies with a secret 128-bit key.
pub struct CookieJar {
    /// SipHash-2-4's key, as two words (what its state starts from).
    key: (u64, u64),
}

impl CookieJar {
    /// A jar whose MAC is SipHash-2-4 keyed with `key` (as Linux keys its
    /// cookies): without the key, a cookie cannot be forged or predicted.
    pub fn new(key: [u8; 16]) -> CookieJar {
        CookieJar {
            key: SipHasher24::new_with_key(&key).keys(),
        }
    }

    fn mac<K: CookieTuple>(&self, key: &K, client_isn: u32, tick: u64) -> u32 {
        let mut h = SipHasher24::new_with_keys(self.key.0, self.key.1);
        key.write(&mut h, client_isn);
        h.write_u64(tick);
        (h.finish() as u32) & MAC_MASK
    }

    /// Our ISN for a SYN from `key` with ISN `client_isn` offering `client_mss`.
    pub fn make<K: CookieTuple>(
        &self,
        key: &K,
        client_isn: u32,
        client_mss: u16,
        now_us: u64,
    ) -> u32 {
        let tick = now_us >> TICK_SHIFT;
        let mss_index = K::MSS_TABLE
            .iter()
            .rposition(|&m| m <= client_mss)
            .unwrap_or(0) as u32;
        ((tick & 3) as u32) << 30 | mss_index << 28 | self.mac(key, client_isn, tick)
    }

    /// The MSS `cookie` carries, when it is one this jar made for `key` and
    /// `client_isn` in this tick or the one before.
    pub fn check<K: CookieTuple>(
        &self,
        key: &K,
        client_isn: u32,
        cookie: u32,
        now_us: u64,
    ) -> Option<u16> {
        let now = now_us >> TICK_SHIFT;
        [now, now.wrapping_sub(1)]
            .into_iter()
            .find(|&tick| {
                (tick & 3) as u32 == cookie >> 30
                    && self.mac(key, client_isn, tick) == cookie & MAC_MASK
            })
            .map(|_| K::MSS_TABLE[(cookie >> 28 & 3) as usize])
    }

    /// How long after the last cookie was sent an ACK may still carry one.
    pub fn lifetime_us() -> u64 {
        2 << TICK_SHIFT
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const KEY_A: [u8; 16] = *b"cookie key numb1";
    const KEY_B: [u8; 16] = *b"cookie key numb2";

    fn key() -> FlowKey {
        FlowKey {
            remote_ip: Ipv4Addr::new(10, 71, 0, 1),
            remote_port: 40000,
            local_ip: Ipv4Addr::new(10, 71, 0, 2),
            local_port: 80,
        }
    }

    #[test]
    fn a_cookie_is_good_for_its_tuple_isn_and_two_ticks_only() {
        let jar = CookieJar::new(KEY_A);
        let t0 = 5 << TICK_SHIFT;
        let c = jar.make(&key(), 1000, 1460, t0);
        assert_eq!(jar.check(&key(), 1000, c, t0), Some(1460));
        assert_eq!(
            jar.check(&key(), 1000, c, t0 + (1 << TICK_SHIFT)),
            Some(1460)
        );
        assert_eq!(jar.check(&key(), 1000, c, t0 + (2 << TICK_SHIFT)), None);
        assert_eq!(jar.check(&key(), 1001, c, t0), None);
        let mut other = key();
        other.remote_port += 1;
        assert_eq!(jar.check(&other, 1000, c, t0), None);
        assert_eq!(CookieJar::new(KEY_B).check(&key(), 1000, c, t0), None);
        assert_eq!(jar.check(&key(), 1000, c ^ 1, t0), None);
        // The MSS is rounded down to one the cookie can carry.
        let c = jar.make(&key(), 1, 1300, t0);
        assert_eq!(jar.check(&key(), 1, c, t0), Some(1220));
        let c = jar.make(&key(), 1, 100, t0);
        assert_eq!(jar.check(&key(), 1, c, t0), Some(536));
    }

    #[test]
    fn guessing_a_cookie_almost_never_works() {
        let jar = CookieJar::new([99; 16]);
        let hits = (0..1_000_000u32)
            .filter(|&guess| {
                jar.check(&key(), 1234, guess.wrapping_mul(2_654_435_761), 1 << 40)
                    .is_some()
            })
            .count();
        assert!(hits <= 1, "{hits}");
    }

    #[test]
    fn another_key_makes_other_cookies_and_refuses_these() {
        let (a, b) = (CookieJar::new(KEY_A), CookieJar::new(KEY_B));
        let t0 = 9 << TICK_SHIFT;
        let (mut same, mut accepted) = (0, 0);
        for i in 0..10_000u32 {
            let mut k = key();
            k.remote_ip = Ipv4Addr::from(0x0a47_0000 + (i >> 8));
            k.remote_port = 40_000 + (i & 0xff) as u16;
            let (ca, cb) = (a.make(&k, i, 1460, t0), b.make(&k, i, 1460, t0));
            assert_eq!(a.check(&k, i, ca, t0), Some(1460));
            assert_eq!(b.check(&k, i, cb, t0), Some(1460));
            same += usize::from(ca == cb);
            accepted += usize::from(b.check(&k, i, ca, t0).is_some());
            accepted += usize::from(a.check(&k, i, cb, t0).is_some());
        }
        // 28 bits of MAC: two keys agree on one in 2^28.
        assert!(
            same <= 1,
            "{same} of 10000 cookies the same under both keys"
        );
        assert_eq!(accepted, 0, "cookies of one key accepted under the other");
    }

    /// IPv4 cookies are the MAC they were before the tuple became generic
    /// (cookies made before an upgrade stay good across it).
    #[test]
    fn ipv4_cookies_keep_their_mac_input() {
        let jar = CookieJar::new(KEY_A);
        let (k, isn, tick) = (key(), 0xdead_beef, 77u64);
        let mut h = SipHasher24::new_with_keys(jar.key.0, jar.key.1);
        h.write_u64(u64::from(u32::from(k.remote_ip)) << 32 | u64::from(u32::from(k.local_ip)));
        h.write_u64(
            u64::from(k.remote_port) << 48 | u64::from(k.local_port) << 32 | u64::from(isn),
        );
        h.write_u64(tick);
        assert_eq!(jar.mac(&k, isn, tick), (h.finish() as u32) & MAC_MASK);
    }

    fn key6(remote: &str) -> FlowKey6 {
        FlowKey6 {
            remote_ip: remote.parse().unwrap(),
            remote_port: 40000,
            local_ip: "2001:db8:71::2".parse().unwrap(),
            local_port: 80,
        }
    }

    #[test]
    fn an_ipv6_cookie_covers_the_whole_tuple_and_carries_an_ipv6_mss() {
        let jar = CookieJar::new(KEY_A);
        let t0 = 7 << TICK_SHIFT;
        let k = key6("2001:db8:71::1");
        let c = jar.make(&k, 1000, 1440, t0);
        assert_eq!(jar.check(&k, 1000, c, t0), Some(1440));
        assert_eq!(jar.check(&k, 1001, c, t0), None);
        // Addresses that differ only in the high 96 bits (what an IPv4-sized
        // MAC input would drop) are other tuples.
        assert_eq!(jar.check(&key6("2001:db9:71::1"), 1000, c, t0), None);
        let mut other = k;
        other.local_ip = "2001:db8:72::2".parse().unwrap();
        assert_eq!(jar.check(&other, 1000, c, t0), None);
        assert_eq!(CookieJar::new(KEY_B).check(&k, 1000, c, t0), None);
        // The IPv6 table: a 1500-byte link's 1440 and the minimum MTU's 1220.
        let c = jar.make(&k, 1, 1460, t0);
        assert_eq!(jar.check(&k, 1, c, t0), Some(1440));
        let c = jar.make(&k, 1, 1400, t0);
        assert_eq!(jar.check(&k, 1, c, t0), Some(1380));
        let c = jar.make(&k, 1, 536, t0);
        assert_eq!(jar.check(&k, 1, c, t0), Some(1220));
    }
}
