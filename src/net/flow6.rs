//! IPv6 flow identity (issue #15, `docs/ipv6-next.md`): a 36-byte key for
//! a second flow table and TIME-WAIT (`FlowTable<T, FlowKey6>`,
//! `TimeWait<FlowKey6>`), so IPv4 keys stay 12 bytes and IPv4 packets never
//! look at the IPv6 table; flow ids with the top bit set name IPv6 slots, so
//! events and the application keep one `u32` id.

use std::hash::{Hash, Hasher};
use std::net::Ipv6Addr;

/// A TCP connection over IPv6 as seen from our side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKey6 {
    pub remote_ip: Ipv6Addr,
    pub remote_port: u16,
    pub local_ip: Ipv6Addr,
    pub local_port: u16,
}

impl Hash for FlowKey6 {
    #[inline]
    fn hash<H: Hasher>(&self, h: &mut H) {
        // All 288 bits in five writes (one 36-byte SipHash message).
        let (r, l) = (u128::from(self.remote_ip), u128::from(self.local_ip));
        h.write_u64((r >> 64) as u64);
        h.write_u64(r as u64);
        h.write_u64((l >> 64) as u64);
        h.write_u64(l as u64);
        h.write_u32(u32::from(self.remote_port) << 16 | u32::from(self.local_port));
    }
}

/// The bit that marks a flow id as a slot of the IPv6 table.
pub const V6_BIT: u32 = 1 << 31;

/// The flow id of IPv6 table slot `slot`.
#[inline]
pub fn v6_id(slot: u32) -> u32 {
    debug_assert!(slot < V6_BIT, "IPv6 slot {slot} too large for an id");
    slot | V6_BIT
}

/// Whether flow id `id` names an IPv6 slot, and which slot of its table.
#[inline]
pub fn split_id(id: u32) -> (bool, u32) {
    (id & V6_BIT != 0, id & !V6_BIT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::flow::{FlowHashKey, FlowTable, TimeWait};
    use std::hash::BuildHasher;

    fn key(remote: &str, port: u16) -> FlowKey6 {
        FlowKey6 {
            remote_ip: remote.parse().unwrap(),
            remote_port: port,
            local_ip: "2001:db8:71::2".parse().unwrap(),
            local_port: 80,
        }
    }

    #[test]
    fn the_ipv6_table_finds_inserts_and_frees_by_the_whole_tuple() {
        let mut t: FlowTable<u32, FlowKey6> = FlowTable::new(4, [7; 16], || 0);
        let a = t.insert(key("2001:db8:71::1", 40000)).unwrap();
        let b = t.insert(key("2001:db8:71::1", 40001)).unwrap();
        // Same low 32 bits of address, another /64: another flow.
        let c = t.insert(key("2001:db8:72::1", 40000)).unwrap();
        assert_eq!(t.lookup(&key("2001:db8:71::1", 40000)), Some(a));
        assert_eq!(t.lookup(&key("2001:db8:71::1", 40001)), Some(b));
        assert_eq!(t.lookup(&key("2001:db8:72::1", 40000)), Some(c));
        assert_eq!(t.lookup(&key("2001:db8:73::1", 40000)), None);
        assert_eq!(t.key(a), Some(key("2001:db8:71::1", 40000)));
        t.remove(a);
        assert_eq!(t.lookup(&key("2001:db8:71::1", 40000)), None);
        assert_eq!((t.active(), t.free()), (2, 2));
    }

    #[test]
    fn ipv6_time_wait_expires_in_order() {
        let mut tw: TimeWait<FlowKey6> = TimeWait::new(2, 100, [3; 16]);
        tw.insert(key("2001:db8::1", 1), 0);
        tw.insert(key("2001:db8::1", 2), 10);
        assert!(tw.contains(&key("2001:db8::1", 1)));
        tw.expire(105);
        assert!(!tw.contains(&key("2001:db8::1", 1)));
        assert!(tw.contains(&key("2001:db8::1", 2)));
        // Full: the oldest goes early.
        tw.insert(key("2001:db8::1", 3), 20);
        tw.insert(key("2001:db8::1", 4), 30);
        assert!(!tw.contains(&key("2001:db8::1", 2)));
        assert_eq!(tw.len(), 2);
    }

    #[test]
    fn every_byte_of_the_key_moves_the_hash() {
        let h = FlowHashKey::new([5; 16]);
        let base = key("2001:db8:71::1", 40000);
        let hash = |k: &FlowKey6| h.hash_one(k);
        for bit in 0..128 {
            let mut k = base;
            k.remote_ip = Ipv6Addr::from(u128::from(k.remote_ip) ^ 1u128 << bit);
            assert_ne!(hash(&k), hash(&base), "remote bit {bit}");
            let mut k = base;
            k.local_ip = Ipv6Addr::from(u128::from(k.local_ip) ^ 1u128 << bit);
            assert_ne!(hash(&k), hash(&base), "local bit {bit}");
        }
        let mut k = base;
        k.local_port ^= 1;
        assert_ne!(hash(&k), hash(&base));
    }

    #[test]
    fn ids_with_the_top_bit_name_ipv6_slots() {
        assert_eq!(split_id(v6_id(0)), (true, 0));
        assert_eq!(split_id(v6_id(12345)), (true, 12345));
        assert_eq!(split_id(12345), (false, 12345));
    }
}
