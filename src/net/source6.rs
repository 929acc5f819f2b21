//! Who an IPv6 client is, for a listener's allow-list and its per-source
//! connection limit (issue #15). An IPv6 client may hold a whole /64 and
//! rotate through it, so the per-source key is the address's first
//! `per_source_prefix6` bits: one /64 is then one source.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};

use super::flow::FlowHashKey;
use super::ipv6::in_network6;

/// The key an IPv6 client is counted under: its address's first `prefix`
/// bits (`per_source_prefix6`; 128, the whole address, when unset).
#[inline]
pub fn source_key6(ip: Ipv6Addr, prefix: u8) -> Ipv6Addr {
    let mask = match prefix {
        0 => 0,
        p => u128::MAX << (128 - u32::from(p.min(128))),
    };
    Ipv6Addr::from(u128::from(ip) & mask)
}

/// A listener's allow-list as IPv6 clients see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allow6 {
    nets: Vec<(Ipv6Addr, u8)>,
    /// The listener has an allow-list at all: then an IPv6 client must be
    /// in one of its IPv6 networks (a list of IPv4 networks only lets no
    /// IPv6 client in, rather than all of them).
    restricted: bool,
}

impl Allow6 {
    /// From a listener's whole allow-list, IPv4 and IPv6 entries together.
    pub fn new(allow: &[(IpAddr, u8)]) -> Allow6 {
        Allow6 {
            nets: allow
                .iter()
                .filter_map(|&(net, len)| match net {
                    IpAddr::V6(net) => Some((net, len)),
                    IpAddr::V4(_) => None,
                })
                .collect(),
            restricted: !allow.is_empty(),
        }
    }

    pub fn allows(&self, client: Ipv6Addr) -> bool {
        !self.restricted
            || self
                .nets
                .iter()
                .any(|&(net, len)| in_network6(client, net, len))
    }
}

/// Open connections per IPv6 source (its `source_key6`), for
/// `max_connections_per_source`. Sized at start for every IPv6 flow, so
/// counting never allocates; keyed like the flow table, because clients
/// choose the keys.
pub struct PerSource6 {
    open: HashMap<Ipv6Addr, u32, FlowHashKey>,
    prefix: u8,
}

impl PerSource6 {
    /// Room for `max_flows` sources, keyed by their first `prefix` bits.
    pub fn new(max_flows: usize, prefix: u8, key: [u8; 16]) -> PerSource6 {
        PerSource6 {
            open: HashMap::with_capacity_and_hasher(max_flows, FlowHashKey::new(key)),
            prefix,
        }
    }

    /// Counts a new connection from `client` unless its source already
    /// holds `max` (0: no limit); false means refuse it.
    pub fn open(&mut self, client: Ipv6Addr, max: u32) -> bool {
        let n = self
            .open
            .entry(source_key6(client, self.prefix))
            .or_insert(0);
        if max > 0 && *n >= max {
            return false;
        }
        *n += 1;
        true
    }

    /// Connections `source` (a key already masked) holds now.
    pub fn holds(&self, source: Ipv6Addr) -> u32 {
        self.open
            .get(&source_key6(source, self.prefix))
            .copied()
            .unwrap_or(0)
    }

    /// A connection `open` counted has closed.
    pub fn close(&mut self, client: Ipv6Addr) {
        let key = source_key6(client, self.prefix);
        if let Some(n) = self.open.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                self.open.remove(&key);
            }
        }
    }

    /// Sources holding at least one connection.
    pub fn sources(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    #[test]
    fn a_64_prefix_counts_a_whole_64_as_one_source() {
        let (a, b) = (ip("2001:db8:1:2:aaaa::1"), ip("2001:db8:1:2:bbbb::9"));
        assert_eq!(source_key6(a, 64), source_key6(b, 64));
        assert_eq!(source_key6(a, 64), ip("2001:db8:1:2::"));
        assert_ne!(source_key6(a, 64), source_key6(ip("2001:db8:1:3::1"), 64));
        assert_eq!(source_key6(a, 128), a);
        assert_eq!(source_key6(a, 56), ip("2001:db8:1::"));
        assert_eq!(source_key6(a, 0), Ipv6Addr::UNSPECIFIED);
    }

    #[test]
    fn rotating_addresses_in_one_64_does_not_dodge_the_limit() {
        let mut limit = PerSource6::new(16, 64, [1; 16]);
        assert!(limit.open(ip("2001:db8:1:2::1"), 2));
        assert!(limit.open(ip("2001:db8:1:2::2"), 2));
        assert!(!limit.open(ip("2001:db8:1:2::3"), 2), "third from the /64");
        // Another /64 is another source.
        assert!(limit.open(ip("2001:db8:1:3::1"), 2));
        assert_eq!(limit.sources(), 2);
        // Closing one frees room for the whole /64.
        limit.close(ip("2001:db8:1:2::1"));
        assert!(limit.open(ip("2001:db8:1:2::4"), 2));
        for a in ["2001:db8:1:2::2", "2001:db8:1:2::4", "2001:db8:1:3::1"] {
            limit.close(ip(a));
        }
        assert_eq!(limit.sources(), 0);
    }

    #[test]
    fn the_whole_address_is_the_source_with_prefix_128_and_0_is_no_limit() {
        let mut limit = PerSource6::new(16, 128, [1; 16]);
        assert!(limit.open(ip("2001:db8::1"), 1));
        assert!(!limit.open(ip("2001:db8::1"), 1));
        assert!(limit.open(ip("2001:db8::2"), 1));
        let mut none = PerSource6::new(16, 64, [1; 16]);
        assert!((0..100).all(|_| none.open(ip("2001:db8::1"), 0)));
        // A refused connection is not counted: one close empties the source.
        let mut shut = PerSource6::new(16, 64, [1; 16]);
        assert!(shut.open(ip("2001:db8::1"), 1));
        assert!(!shut.open(ip("2001:db8::2"), 1));
        shut.close(ip("2001:db8::1"));
        assert_eq!(shut.sources(), 0);
    }

    #[test]
    fn the_allow_list_applies_its_ipv6_networks_to_ipv6_clients() {
        let nets = [
            ("10.0.0.0".parse().unwrap(), 8),
            ("2001:db8:1::".parse().unwrap(), 48),
        ];
        let allow = Allow6::new(&nets);
        assert!(allow.allows(ip("2001:db8:1:ffff::1")));
        assert!(!allow.allows(ip("2001:db8:2::1")));
        // IPv4 networks only: no IPv6 client is in them.
        let v4_only = Allow6::new(&nets[..1]);
        assert!(!v4_only.allows(ip("2001:db8:1::1")));
        // No list: everyone.
        assert!(Allow6::new(&[]).allows(ip("2001:db8:2::1")));
    }
}
