//! IPv6 in the config: a port's several addresses (`address` and/or
//! `addresses`, IPv4 and IPv6 with prefix lengths), its IPv6 gateway
//! (`gateway6`), and IPv6 prefixes in listeners' allow-lists with
//! `per_source_prefix6`. This round the TCP data path is IPv4 only: a port
//! answers NDP and ping on its IPv6 addresses, and the IPv6 allow-list
//! entries and `per_source_prefix6` are checked here but not applied yet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::locate::Place;
use super::validate::invalid;
use super::{parse_cidr, Config, ConfigError, PortSection};

/// IPv6 addresses a port may have (global and link-local together).
pub const MAX_V6_ADDRESSES: usize = crate::net::ipv6::MAX_ADDRESSES;

/// "2001:db8::1/64" -> (2001:db8::1, 64).
pub fn parse_cidr6(s: &str) -> Option<(Ipv6Addr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let len: u8 = len.parse().ok()?;
    (len <= 128).then_some((ip.parse().ok()?, len))
}

/// An IPv4 or IPv6 network "addr/len".
pub fn parse_net(s: &str) -> Option<(IpAddr, u8)> {
    parse_cidr(s)
        .map(|(a, l)| (IpAddr::V4(a), l))
        .or_else(|| parse_cidr6(s).map(|(a, l)| (IpAddr::V6(a), l)))
}

pub use crate::net::ipv6::{in_network6, is_link_local};

impl PortSection {
    /// Every address the port is given, in order: `address`, then `addresses`.
    fn all_addresses(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.address.as_str())
            .filter(|a| !a.is_empty())
            .chain(self.addresses.iter().map(String::as_str))
    }

    /// The port's IPv4 address and prefix (validated at load: exactly one).
    pub fn cidr(&self) -> (Ipv4Addr, u8) {
        self.all_addresses()
            .find_map(parse_cidr)
            .expect("validated at load")
    }

    /// The port's IPv6 addresses and prefixes, as written.
    pub fn cidrs6(&self) -> Vec<(Ipv6Addr, u8)> {
        self.all_addresses().filter_map(parse_cidr6).collect()
    }

    /// The IPv4 address as written ("A.B.C.D/len"), for messages.
    pub fn address4(&self) -> String {
        let (a, l) = self.cidr();
        format!("{a}/{l}")
    }
}

impl Config {
    /// The ports' addresses and gateways, and the listeners' IPv6 keys.
    pub(super) fn validate_addresses(&self, text: &str) -> Result<(), ConfigError> {
        for (i, p) in self.ports.iter().enumerate() {
            let line = |key: &str| Place::new("port", i).line(text, key);
            let bad = |key: &str, message: String| {
                invalid(
                    line(key),
                    &format!("port.{key}"),
                    format!("port '{}': {message}", p.name),
                )
            };
            if p.address.is_empty() && p.addresses.is_empty() {
                return Err(bad("name", "no address: give address = \"10.0.0.2/24\" or addresses = [\"10.0.0.2/24\", \"2001:db8::2/64\", \"fe80::2/64\"]".into()));
            }
            let key = if p.address.is_empty() {
                "addresses"
            } else {
                "address"
            };
            if !p.address.is_empty() && parse_cidr(&p.address).is_none() {
                return Err(bad("address", format!("address = \"{}\" is not A.B.C.D/prefix (e.g. \"10.0.0.2/24\"); IPv6 addresses go in addresses = [...]", p.address)));
            }
            if let Some(a) = p.addresses.iter().find(|a| parse_net(a).is_none()) {
                return Err(bad("addresses", format!("addresses entry \"{a}\" is not A.B.C.D/prefix or an IPv6 address with prefix (e.g. \"2001:db8::2/64\")")));
            }
            let v4 = p
                .all_addresses()
                .filter(|a| parse_cidr(a).is_some())
                .count();
            if v4 != 1 {
                return Err(bad(key, format!("{v4} IPv4 addresses: a port takes exactly one IPv4 address (the data path is IPv4; IPv6 answers NDP and ping)")));
            }
            let v6 = p.cidrs6();
            if v6.len() > MAX_V6_ADDRESSES {
                return Err(bad(
                    "addresses",
                    format!("{} IPv6 addresses: at most {MAX_V6_ADDRESSES}", v6.len()),
                ));
            }
            for (n, &(a, len)) in v6.iter().enumerate() {
                if a.is_unspecified() || a.is_loopback() || a.is_multicast() {
                    return Err(bad("addresses", format!("{a} cannot be a port's address (unspecified, loopback or multicast): give a unicast address")));
                }
                if !(1..=128).contains(&len) {
                    return Err(bad(
                        "addresses",
                        format!("{a}/{len}: the prefix length must be 1..=128 (usually 64)"),
                    ));
                }
                if v6[..n].iter().any(|&(o, _)| o == a) {
                    return Err(bad("addresses", format!("{a} is listed twice")));
                }
            }
            if let Some(gw) = p.gateway6 {
                let on_link = is_link_local(gw) || v6.iter().any(|&(a, l)| in_network6(gw, a, l));
                if v6.is_empty() {
                    return Err(bad("gateway6", format!("gateway6 = \"{gw}\" but the port has no IPv6 address: add one to addresses")));
                } else if gw.is_multicast()
                    || gw.is_unspecified()
                    || v6.iter().any(|&(a, _)| a == gw)
                {
                    return Err(bad("gateway6", format!("gateway6 = \"{gw}\" must be a neighbour's unicast address, not the port's own or multicast")));
                } else if !on_link {
                    return Err(bad("gateway6", format!("gateway6 {gw} is not on the port's link: give the router's link-local (fe80::...) address or one inside the port's IPv6 prefixes")));
                }
            }
        }
        for (i, l) in self.listeners.iter().enumerate() {
            let bad = |key: &str, message: String| {
                invalid(
                    Place::new("listener", i).line(text, key),
                    &format!("listener.{key}"),
                    format!("listener on tcp_port {}: {message}", l.tcp_port),
                )
            };
            if let Some(a) = l.allow.iter().find(|a| parse_net(a).is_none()) {
                return Err(bad("allow", format!("allow entry \"{a}\" is not A.B.C.D/prefix or IPv6/prefix (e.g. \"10.0.0.0/8\", \"2001:db8::/32\")")));
            }
            if let Some(n) = l.per_source_prefix6.filter(|n| !(1..=128).contains(n)) {
                return Err(bad("per_source_prefix6", format!("per_source_prefix6 = {n}: must be 1..=128 (64 counts a client's whole /64 as one source)")));
            }
        }
        Ok(())
    }
}
