//! Which family an upstream server may have: an IPv4 server needs the
//! port's IPv4 network or gateway, an IPv6 one an IPv6 address on the port
//! and its network (or link-local) or `gateway6` (issue #15).

use std::net::SocketAddr;

use super::ipv6::{in_network6, is_link_local};
use super::{in_network, PortSection};

/// What is wrong with `server` on `port`, for the message after
/// "upstream 'NAME': server ADDR ".
pub fn server_problem(server: SocketAddr, port: &PortSection) -> Option<String> {
    match server {
        SocketAddr::V4(s) => {
            let (addr, len) = port.cidr();
            (!in_network(*s.ip(), addr, len) && port.gateway.is_none()).then(|| {
                format!(
                    "is not on port '{}' ({}) and that port has no gateway",
                    port.name,
                    port.address4()
                )
            })
        }
        SocketAddr::V6(s) => {
            let ip = *s.ip();
            let nets = port.cidrs6();
            if nets.is_empty() {
                return Some(format!("is IPv6 and port '{}' has no IPv6 address: add one to the port's `addresses` (e.g. \"2001:db8::2/64\"), or give the server's IPv4 address", port.name));
            }
            if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() {
                return Some("is not a unicast address a port can reach".into());
            }
            let on_link = is_link_local(ip) || nets.iter().any(|&(n, l)| in_network6(ip, n, l));
            (!on_link && port.gateway6.is_none()).then(|| {
                format!(
                    "is not on port '{}''s IPv6 networks and that port has no gateway6",
                    port.name
                )
            })
        }
    }
}
