//! `[fleet]`: the other instances on this instance's L2 segment, for
//! second-chance forwarding (`net::stack::second_chance`), and the service
//! address (VIP) every instance answers on besides its own port address.

use std::net::Ipv4Addr;

use serde::Deserialize;

use super::locate::Place;
use super::{Config, ConfigError};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fleet {
    /// The port that shares a segment with the router and the peers.
    pub port: String,
    /// The service address this instance answers on besides the port's own
    /// (what the router's ECMP route points at, through each instance's
    /// own address). None: the port's address is the service address.
    pub vip: Option<Ipv4Addr>,
    /// The other instances. Empty: no forwarding (a lone instance).
    #[serde(default)]
    pub peers: Vec<FleetPeer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FleetPeer {
    /// The peer's port MAC on the shared segment, "02:00:00:00:00:0b".
    pub mac: String,
    /// A name for the log and for people.
    #[serde(default)]
    pub name: String,
}

/// "aa:bb:cc:dd:ee:ff" (or with '-') as six bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.split([':', '-']);
    for b in out.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

impl Fleet {
    /// The peers' MACs (checked by `validate_fleet`).
    pub fn peer_macs(&self) -> Vec<[u8; 6]> {
        self.peers
            .iter()
            .filter_map(|p| parse_mac(&p.mac))
            .collect()
    }
}

impl Config {
    pub(super) fn validate_fleet(&self, text: &str) -> Result<(), ConfigError> {
        let Some(f) = &self.fleet else {
            return Ok(());
        };
        let bad = |key: &str, message: String| ConfigError::Invalid {
            file: None,
            line: Place::new("fleet", 0).line(text, key),
            key: format!("fleet.{key}"),
            message: format!("fleet: {message}"),
        };
        let Some(port) = self.ports.iter().find(|p| p.name == f.port) else {
            let known: Vec<&str> = self.ports.iter().map(|p| p.name.as_str()).collect();
            return Err(bad(
                "port",
                format!(
                    "no port \"{}\" (ports: {}): name the port that shares a segment with the router and the peers",
                    f.port,
                    known.join(", ")
                ),
            ));
        };
        if let Some(vip) = f.vip {
            if vip.is_unspecified() || vip.is_multicast() || vip.is_broadcast() {
                return Err(bad(
                    "vip",
                    format!("vip {vip} is not a unicast address: give the service address the router routes to every instance"),
                ));
            }
            if port.cidr().0 == vip {
                return Err(bad(
                    "vip",
                    format!("vip {vip} is port \"{}\"'s own address: give the shared service address, or leave vip out", f.port),
                ));
            }
        }
        for (i, p) in f.peers.iter().enumerate() {
            let Some(mac) = parse_mac(&p.mac) else {
                return Err(bad(
                    "peers",
                    format!(
                        "peer {} has mac {:?}: write six hex bytes, e.g. \"02:00:00:00:00:0b\"",
                        i + 1,
                        p.mac
                    ),
                ));
            };
            if mac[0] & 1 == 1 || mac == [0; 6] {
                return Err(bad(
                    "peers",
                    format!("peer {} has mac {}: not a unicast MAC (a peer is one other instance's port)", i + 1, p.mac),
                ));
            }
            if f.peer_macs()[..i].contains(&mac) {
                return Err(bad(
                    "peers",
                    format!("mac {} is listed twice: each peer once", p.mac),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_mac;

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(parse_mac("02:00:00:00:00:0b"), Some([2, 0, 0, 0, 0, 0x0b]));
        assert_eq!(
            parse_mac("02-AA-00-00-00-0B"),
            Some([2, 0xaa, 0, 0, 0, 0x0b])
        );
        for bad in [
            "",
            "02:00:00:00:00",
            "02:00:00:00:00:0b:01",
            "2:0:0:0:0:b",
            "zz:00:00:00:00:00",
        ] {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
    }
}
