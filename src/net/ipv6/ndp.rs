//! Neighbour discovery's state: the options of a solicitation or
//! advertisement, our addresses and their duplicate address detection, and
//! a small fixed-size neighbour cache (no allocation after start).

use std::net::Ipv6Addr;

use super::icmp::{NDP_LEN, OPT_NONCE, OPT_SOURCE_LL, OPT_TARGET_LL};

/// Neighbours remembered per port (gateway and on-link peers); the oldest
/// entry makes room for a new one.
pub const NEIGHBOURS: usize = 16;

/// The options of an NS or NA that this stack reads.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub source_ll: Option<[u8; 6]>,
    pub target_ll: Option<[u8; 6]>,
    pub nonce: Option<[u8; 6]>,
}

/// Parses the options after an NS/NA's fixed part; `None` when one has a
/// zero length or runs past the message (RFC 4861 7.1.1: drop it).
pub fn options(msg: &[u8]) -> Option<Options> {
    let mut o = Options::default();
    let mut rest = msg.get(NDP_LEN..)?;
    while !rest.is_empty() {
        let len = usize::from(*rest.get(1)?) * 8;
        if len == 0 || len > rest.len() {
            return None;
        }
        let six = || {
            let mut m = [0u8; 6];
            m.copy_from_slice(&rest[2..8]);
            m
        };
        match rest[0] {
            OPT_SOURCE_LL if len == 8 => o.source_ll = Some(six()),
            OPT_TARGET_LL if len == 8 => o.target_ll = Some(six()),
            OPT_NONCE if len == 8 => o.nonce = Some(six()),
            _ => {} // other options, and longer nonces, are skipped
        }
        rest = &rest[len..];
    }
    Some(o)
}

/// Where an address of ours is in its life (RFC 4862 5.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddrState {
    /// DAD runs: the address is not answered for or used yet.
    Tentative,
    Preferred,
    /// Someone else has it: we never use it (logged once).
    Duplicate {
        logged: bool,
    },
}

#[derive(Debug, Clone, Copy)]
pub struct Addr {
    pub ip: Ipv6Addr,
    pub prefix_len: u8,
    pub state: AddrState,
}

/// One remembered neighbour.
#[derive(Debug, Clone, Copy)]
struct Entry {
    ip: Ipv6Addr,
    mac: [u8; 6],
    updated_us: u64,
}

/// A fixed array, searched linearly: 16 entries are one or two cache lines
/// of addresses, faster than hashing for this size.
pub struct Neighbours {
    entries: [Option<Entry>; NEIGHBOURS],
}

impl Default for Neighbours {
    fn default() -> Self {
        Neighbours {
            entries: [None; NEIGHBOURS],
        }
    }
}

impl Neighbours {
    /// The MAC of `ip` and when it was last confirmed.
    pub fn get(&self, ip: Ipv6Addr) -> Option<([u8; 6], u64)> {
        self.entries
            .iter()
            .flatten()
            .find(|e| e.ip == ip)
            .map(|e| (e.mac, e.updated_us))
    }

    /// Learns or refreshes `ip` at `mac`; true when it was not known with this MAC.
    pub fn learn(&mut self, ip: Ipv6Addr, mac: [u8; 6], now_us: u64) -> bool {
        let slot = match self
            .entries
            .iter()
            .position(|e| e.is_some_and(|e| e.ip == ip))
        {
            Some(i) => i,
            None => match self.entries.iter().position(Option::is_none) {
                Some(i) => i,
                None => self
                    .entries
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, e)| e.map_or(0, |e| e.updated_us))
                    .map_or(0, |(i, _)| i),
            },
        };
        let new = !self.entries[slot].is_some_and(|e| e.ip == ip && e.mac == mac);
        self.entries[slot] = Some(Entry {
            ip,
            mac,
            updated_us: now_us,
        });
        new
    }

    /// Neighbours remembered now.
    pub fn count(&self) -> usize {
        self.entries.iter().flatten().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_of_zero_length_or_past_the_end_refuse_the_message() {
        let mut msg = vec![0u8; NDP_LEN];
        msg.extend_from_slice(&[OPT_SOURCE_LL, 1, 2, 0, 0, 0, 0, 9]);
        msg.extend_from_slice(&[OPT_NONCE, 1, 1, 2, 3, 4, 5, 6]);
        let o = options(&msg).unwrap();
        assert_eq!(o.source_ll, Some([2, 0, 0, 0, 0, 9]));
        assert_eq!(o.nonce, Some([1, 2, 3, 4, 5, 6]));
        assert_eq!(o.target_ll, None);
        let mut zero = msg.clone();
        zero[NDP_LEN + 1] = 0;
        assert_eq!(options(&zero), None);
        let mut long = msg.clone();
        long[NDP_LEN + 9] = 2;
        assert_eq!(options(&long), None);
        assert_eq!(options(&msg[..NDP_LEN - 1]), None);
    }

    #[test]
    fn the_cache_is_fixed_and_forgets_the_oldest() {
        let mut n = Neighbours::default();
        let ip = |i: u16| Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, i);
        for i in 0..NEIGHBOURS as u16 {
            assert!(n.learn(ip(i), [2, 0, 0, 0, 0, i as u8], u64::from(i) + 10));
        }
        assert!(!n.learn(ip(3), [2, 0, 0, 0, 0, 3], 100), "known, same MAC");
        assert!(n.learn(ip(99), [2, 0, 0, 0, 0, 99], 101));
        assert_eq!(n.count(), NEIGHBOURS);
        assert_eq!(n.get(ip(0)), None, "the oldest made room");
        assert_eq!(n.get(ip(3)), Some(([2, 0, 0, 0, 0, 3], 100)));
        assert_eq!(n.get(ip(99)).unwrap().0, [2, 0, 0, 0, 0, 99]);
    }
}
