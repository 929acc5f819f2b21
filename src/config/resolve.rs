//! Upstream servers given by host name ("web1.lab:80"): resolved with the
//! system resolver when the config is loaded - at start, on SIGHUP and by
//! `zproxy check` - on the control thread, never by a worker. As nginx
//! does for `server name`, a name becomes one server per address (each
//! with the entry's weight), IPv4 ones first: every IPv4 address, and every
//! IPv6 address when the upstream's port has an IPv6 address (else they are
//! left out: that port cannot reach them). A reload that sees new addresses
//! adds and retires servers as an edited address list would.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

use super::locate::Place;
use super::{Config, ConfigError, Server};

/// How names are looked up: the system resolver, or a stand-in (fuzzing and
/// tests must not reach the network).
pub type Resolve<'a> = &'a dyn Fn(&str) -> io::Result<Vec<SocketAddr>>;

/// `getaddrinfo` through std (/etc/hosts, then DNS as nsswitch says).
pub fn system(host_port: &str) -> io::Result<Vec<SocketAddr>> {
    host_port.to_socket_addrs().map(Iterator::collect)
}

impl Config {
    /// Fills every server's `address` from what was written.
    pub(super) fn resolve_servers(
        &mut self,
        text: &str,
        resolve: Resolve,
    ) -> Result<(), ConfigError> {
        let ports = &self.ports;
        for (i, u) in self.upstreams.iter_mut().enumerate() {
            // A port this upstream cannot use fails validation later.
            let has_v6 = ports
                .iter()
                .find(|p| p.name == u.port)
                .is_some_and(|p| !p.cidrs6().is_empty());
            let mut out = Vec::with_capacity(u.servers.len());
            for s in &u.servers {
                let bad = |message: String| ConfigError::Invalid {
                    file: None,
                    line: Place::new("upstream", i).line(text, "servers"),
                    key: "upstream.servers.address".into(),
                    message: format!("upstream '{}': server \"{}\" {message}", u.name, s.given),
                };
                if let Ok(a) = s.given.parse::<SocketAddr>() {
                    out.push(Server {
                        address: a,
                        ..s.clone()
                    });
                    continue;
                }
                let Some((host, port)) = s.given.rsplit_once(':') else {
                    return Err(bad(
                        "is not A.B.C.D:port or HOST:port or [IPV6]:port (e.g. \"web1.lab:80\")"
                            .into(),
                    ));
                };
                if !is_host_name(host) || port.parse::<u16>().map_or(true, |p| p == 0) {
                    return Err(bad(
                        "is not A.B.C.D:port or HOST:port or [IPV6]:port (e.g. \"web1.lab:80\")"
                            .into(),
                    ));
                }
                let found = resolve(&s.given).map_err(|e| {
                    bad(format!("cannot be resolved ({e}): fix the name, /etc/hosts or the DNS, or give A.B.C.D:port"))
                })?;
                let any = !found.is_empty();
                // Sorted: IPv4 before IPv6, each by address.
                let mut found: Vec<SocketAddr> = found
                    .into_iter()
                    .filter(|a| a.is_ipv4() || has_v6)
                    .collect();
                found.sort_unstable();
                found.dedup();
                if found.is_empty() {
                    return Err(bad(format!(
                        "resolves to no {}address: {}",
                        if any { "IPv4 " } else { "" },
                        if any {
                            format!("give port '{}' an IPv6 address (`addresses`) to reach its IPv6 ones, or give A.B.C.D:port", u.port)
                        } else {
                            "fix the name, /etc/hosts or the DNS".into()
                        }
                    )));
                }
                out.extend(found.into_iter().map(|a| Server {
                    address: a,
                    ..s.clone()
                }));
            }
            u.servers = out;
        }
        Ok(())
    }
}

/// Letters, digits, '-' and '.', labels of 1..=63 (RFC 1123): anything else
/// is a typo, not something to send to the resolver.
fn is_host_name(h: &str) -> bool {
    h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        // All digits and dots is an IPv4 address gone wrong, not a name.
        && !h.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    const BASE: &str = r#"[[port]]
name = "u"
vdev = "net_null0"
address = "10.72.0.2/24"

[[upstream]]
name = "web"
port = "u"
servers = [{ address = "10.72.0.1:80" }, { address = "web1.lab:8080", weight = 3 }]
"#;

    fn fake(host_port: &str) -> io::Result<Vec<SocketAddr>> {
        let port = |a: &str| format!("{a}:{}", host_port.rsplit_once(':').unwrap().1);
        match host_port.rsplit_once(':').unwrap().0 {
            "web1.lab" => Ok(vec![
                port("10.72.0.9").parse().unwrap(),
                port("[2001:db8:72::9]").parse().unwrap(),
                port("10.72.0.8").parse().unwrap(),
                port("10.72.0.9").parse().unwrap(),
            ]),
            "six.lab" => Ok(vec![port("[2001:db8:72::9]").parse().unwrap()]),
            _ => Err(io::Error::new(io::ErrorKind::NotFound, "no such host")),
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse_with(text, std::path::Path::new("/nonexistent"), &fake)
    }

    #[test]
    fn names_become_one_server_per_ipv4_address() {
        let c = parse(BASE).unwrap();
        let got: Vec<(SocketAddr, u32, &str)> = c.upstreams[0]
            .servers
            .iter()
            .map(|s| (s.address, s.weight, s.given.as_str()))
            .collect();
        let a = |ip: [u8; 4], port| SocketAddr::from((Ipv4Addr::from(ip), port));
        assert_eq!(
            got,
            [
                (a([10, 72, 0, 1], 80), 1, "10.72.0.1:80"),
                (a([10, 72, 0, 8], 8080), 3, "web1.lab:8080"),
                (a([10, 72, 0, 9], 8080), 3, "web1.lab:8080"),
            ]
        );
    }

    #[test]
    fn a_port_with_ipv6_takes_a_names_ipv6_addresses_too_after_ipv4() {
        let text = BASE
            .replace(
                "address = \"10.72.0.2/24\"",
                "addresses = [\"10.72.0.2/24\", \"2001:db8:72::2/64\"]",
            )
            .replace("10.72.0.1:80", "[2001:db8:72::1]:80");
        let c = parse(&text).unwrap();
        let got: Vec<String> = c.upstreams[0]
            .servers
            .iter()
            .map(|s| s.address.to_string())
            .collect();
        assert_eq!(
            got,
            [
                "[2001:db8:72::1]:80",
                "10.72.0.8:8080",
                "10.72.0.9:8080",
                "[2001:db8:72::9]:8080"
            ]
        );
        // A name with only IPv6 addresses is then a server too.
        let c = parse(&text.replace("web1.lab:8080", "six.lab:81")).unwrap();
        assert_eq!(
            c.upstreams[0].servers[1].address.to_string(),
            "[2001:db8:72::9]:81"
        );
    }

    #[test]
    fn bad_or_unresolvable_names_are_refused_clearly() {
        for (entry, want) in [
            (
                "nowhere.lab:80",
                "server \"nowhere.lab:80\" cannot be resolved (no such host)",
            ),
            ("six.lab:80", "resolves to no IPv4 address"),
            ("web1.lab", "is not A.B.C.D:port or HOST:port"),
            ("web1.lab:0", "is not A.B.C.D:port or HOST:port"),
            ("10.72.0.1:99999", "is not A.B.C.D:port or HOST:port"),
            ("web 1.lab:80", "is not A.B.C.D:port or HOST:port"),
        ] {
            let text = BASE.replace("web1.lab:8080", entry);
            let e = parse(&text).unwrap_err();
            assert!(e.to_string().contains(want), "{entry}: {e}");
            assert_eq!(e.line(), Some(9), "{entry}: {e}");
        }
    }
}
