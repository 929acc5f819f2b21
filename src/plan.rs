//! From the config to what a worker runs: listeners and upstream groups with
//! stable indices. Indices must survive a reload (open connections refer to
//! their group and server by index), so the control thread keeps a
//! [`Layout`]: groups and servers only ever get appended; those a new config
//! drops are retired, not removed.

use crate::net::ratelimit::Rate;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::app::proxy::balance::{Balancer, ServerState};
use crate::app::proxy::engine::GroupSpec;
use crate::app::proxy::health::HealthCheck;
use crate::app::proxy::proxy_protocol::{AcceptProxy, Version};
use crate::app::proxy::session::Routes;
use crate::app::proxy::upgrade::Policy;
use crate::app::responder::Responder;
use crate::app::worker::{ListenerApp, ListenerSpec};
use crate::config::{parse_cidr, Config, ListenerMode, ProxyProtocol, UpstreamGroup};

/// Every group and server ever configured, in index order.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    groups: Vec<(UpstreamGroup, Vec<SocketAddr>)>,
}

impl Layout {
    /// The layout with `cfg`'s groups and servers merged in.
    pub fn merge(&self, cfg: &Config) -> Layout {
        let mut next = self.clone();
        for g in &cfg.upstreams {
            let servers = g.servers.iter().map(|s| s.address);
            match next.groups.iter_mut().find(|(old, _)| old.name == g.name) {
                Some((old, known)) => {
                    *old = g.clone();
                    for a in servers {
                        if !known.contains(&a) {
                            known.push(a);
                        }
                    }
                }
                None => next.groups.push((g.clone(), servers.collect())),
            }
        }
        next
    }

    /// Every server's address, by group and server index.
    pub fn servers(&self) -> Vec<Vec<SocketAddr>> {
        self.groups.iter().map(|(_, s)| s.clone()).collect()
    }

    fn group_index(&self, name: &str) -> usize {
        self.groups
            .iter()
            .position(|(g, _)| g.name == name)
            .expect("validated at load and merged")
    }
}

/// Upstream groups in layout order; what `cfg` no longer names is retired.
pub fn groups(cfg: &Config, layout: &Layout) -> Vec<GroupSpec> {
    let port_index = |name: &str| cfg.ports.iter().position(|p| p.name == name);
    layout
        .groups
        .iter()
        .map(|(last, addresses)| {
            let live = cfg.upstreams.iter().find(|u| u.name == last.name);
            let servers = addresses
                .iter()
                .map(|&a| {
                    let current = live.and_then(|u| u.servers.iter().find(|s| s.address == a));
                    let mut s = ServerState::new(a, current.map_or(1, |s| s.weight));
                    s.retired = current.is_none();
                    s.backup = current.is_some_and(|s| s.backup);
                    s
                })
                .collect();
            let g = live.unwrap_or(last);
            GroupSpec {
                name: last.name.clone(),
                // A retired group keeps the port it had (ports never change on reload).
                port_index: port_index(&g.port).unwrap_or(0),
                balancer: Balancer::new(g.balance, servers),
                connect_timeout_us: g.connect_timeout_ms * 1000,
                read_timeout_us: g.read_timeout_ms * 1000,
                // A PROXY header names one client: its connection serves no other.
                keepalive: if g.proxy_protocol.is_some() {
                    0
                } else {
                    g.keepalive as usize
                },
                local_ports: (g.local_ports[0], g.local_ports[1]),
                // A retired group is not probed.
                health: live
                    .and_then(|u| u.health_check.as_ref())
                    .map(HealthCheck::new),
                proxy_protocol: g.proxy_protocol.map(|v| match v {
                    ProxyProtocol::V1 => Version::V1,
                    ProxyProtocol::V2 => Version::V2,
                }),
                tls: crate::app::proxy::tls::plan::upstream(g),
            }
        })
        .collect()
}

/// What each listener does, with group names resolved to layout indices.
pub fn listener_apps(cfg: &Config, layout: &Layout) -> Vec<ListenerApp> {
    cfg.listeners
        .iter()
        .enumerate()
        .map(|(i, l)| match l.mode {
            ListenerMode::Static => ListenerApp::Static(Arc::new(Responder::new(
                l.static_response.as_ref().expect("validated at load"),
            ))),
            ListenerMode::Tcp | ListenerMode::Tls => ListenerApp::Tcp {
                group: layout.group_index(l.upstream.as_deref().expect("validated at load")),
            },
            ListenerMode::Http | ListenerMode::Https => ListenerApp::Http(Arc::new(Routes {
                routes: l
                    .routes
                    .iter()
                    .map(|r| {
                        (
                            r.host.as_ref().map(|h| h.to_ascii_lowercase()),
                            r.path_prefix.clone(),
                            layout.group_index(&r.upstream),
                        )
                    })
                    .collect(),
                default: l.upstream.as_deref().map(|g| layout.group_index(g)),
                limits: crate::app::proxy::ratelimit::route_limits(i, l),
                hash_keys: hash_keys(cfg, l),
                headers: crate::app::proxy::headers::Headers::compile(l),
                upgrade: Policy::new(
                    l.upgrade.as_deref(),
                    l.routes.iter().map(|r| r.upgrade.as_deref()).collect(),
                    l.tunnel_idle_timeout_ms * 1000,
                ),
            })),
        })
        .collect()
}

pub fn listeners(cfg: &Config, layout: &Layout) -> Vec<ListenerSpec> {
    cfg.listeners
        .iter()
        .zip(listener_apps(cfg, layout))
        .enumerate()
        .map(|(i, (l, app))| ListenerSpec {
            port_index: cfg
                .ports
                .iter()
                .position(|p| p.name == l.port)
                .expect("validated at load"),
            tcp_port: l.tcp_port,
            app,
            idle_timeout_us: l.idle_timeout_ms * 1000,
            header_timeout_us: l.header_timeout_ms * 1000,
            conn_rate: conn_rate(l),
            max_per_source: max_per_source(cfg, l),
            allow: stack_allow(l),
            allow6: stack_allow6(l),
            prefix6: l.per_source_prefix6.unwrap_or(128),
            tls: crate::app::proxy::tls::plan::listener(l),
            accept_proxy: l.accept_proxy_protocol.then(|| {
                Arc::new(AcceptProxy {
                    trusted: cidrs(&l.trusted_proxies),
                    trusted6: cidrs6(&l.trusted_proxies),
                    allow: cidrs(&l.allow),
                    allow6: crate::net::source6::Allow6::new(&allow_nets(l)),
                    prefix6: l.per_source_prefix6.unwrap_or(128),
                    max_per_source: max_per_source(cfg, l),
                    conn_rate: conn_rate(l),
                    limit_id: AcceptProxy::limit_id_of(i),
                })
            }),
        })
        .collect()
}

/// Per route of `l`, then for its default upstream: what its group hashes;
/// empty when every one hashes the client address.
fn hash_keys(cfg: &Config, l: &crate::config::Listener) -> Vec<crate::config::HashKey> {
    let of = |group: Option<&str>| {
        cfg.upstreams
            .iter()
            .find(|g| Some(g.name.as_str()) == group)
            .map(|g| g.hash_key.clone())
            .unwrap_or_default()
    };
    let keys: Vec<_> = l
        .routes
        .iter()
        .map(|r| of(Some(&r.upstream)))
        .chain([of(l.upstream.as_deref())])
        .collect();
    if keys.iter().all(|k| *k == crate::config::HashKey::Client) {
        return Vec::new();
    }
    keys
}

fn conn_rate(l: &crate::config::Listener) -> Option<Rate> {
    l.connection_rate_limit
        .map(|r| Rate::new(r.connections_per_second, r.burst))
}

fn max_per_source(cfg: &Config, l: &crate::config::Listener) -> u32 {
    l.max_connections_per_source
        .unwrap_or(cfg.runtime.max_flows / 4)
}

/// The IPv4 networks of a list that may hold IPv6 ones too (the data path
/// is IPv4 this round). A list of IPv6 networks only admits no IPv4 client:
/// it becomes 255.255.255.255/32, which no client can be (an empty list would
/// admit every one).
fn cidrs(nets: &[String]) -> Vec<(std::net::Ipv4Addr, u8)> {
    let v4: Vec<_> = nets.iter().filter_map(|a| parse_cidr(a)).collect();
    if v4.is_empty() && !nets.is_empty() {
        return vec![(std::net::Ipv4Addr::BROADCAST, 32)];
    }
    v4
}

/// The IPv6 networks of a list that may hold IPv4 ones too.
fn cidrs6(nets: &[String]) -> Vec<(std::net::Ipv6Addr, u8)> {
    nets.iter()
        .filter_map(|a| crate::config::ipv6::parse_cidr6(a))
        .collect()
}

/// The allow-list the stack checks at SYN time, on the peer: a listener
/// that accepts PROXY headers lets its trusted proxies in too (the session
/// checks the real client after the header).
fn stack_allow(l: &crate::config::Listener) -> Vec<(std::net::Ipv4Addr, u8)> {
    let mut allow = cidrs(&l.allow);
    if l.accept_proxy_protocol && !allow.is_empty() {
        allow.extend(cidrs(&l.trusted_proxies));
    }
    allow
}

/// A listener's allow-list, IPv4 and IPv6 entries (for the real client
/// behind a PROXY header).
fn allow_nets(l: &crate::config::Listener) -> Vec<(std::net::IpAddr, u8)> {
    l.allow
        .iter()
        .filter_map(|a| crate::config::ipv6::parse_net(a))
        .collect()
}

/// `stack_allow` for IPv6 clients (a list of IPv4 networks only admits none).
fn stack_allow6(l: &crate::config::Listener) -> crate::net::source6::Allow6 {
    let mut nets: Vec<_> = l
        .allow
        .iter()
        .filter_map(|a| crate::config::ipv6::parse_net(a))
        .collect();
    if l.accept_proxy_protocol && !nets.is_empty() {
        nets.extend(
            l.trusted_proxies
                .iter()
                .filter_map(|a| crate::config::ipv6::parse_net(a)),
        );
    }
    if nets.is_empty() && !l.allow.is_empty() {
        // Nothing parsed (validation rejects this): admit no one rather than all.
        nets.push((std::net::Ipv4Addr::BROADCAST.into(), 32));
    }
    crate::net::source6::Allow6::new(&nets)
}

/// The worker binding this config asks for, checked against the machine's
/// topology under `sysfs` (normally `/sys`): (plan lines, warnings), or why
/// the plan cannot work.
pub fn binding(
    cfg: &Config,
    sysfs: &std::path::Path,
) -> Result<(Vec<String>, Vec<String>), String> {
    use crate::topology::{check_binding, pci_node, Topology};
    let topo = Topology::read(sysfs);
    let rt = &cfg.runtime;
    let cpus = rt
        .worker_cpus
        .clone()
        .unwrap_or_else(|| rt.worker_lcores.clone());
    let port_nodes: Vec<(String, Option<u32>)> = cfg
        .ports
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.pci.as_deref().and_then(|a| pci_node(sysfs, a)),
            )
        })
        .collect();
    let warnings = check_binding(&topo, rt.main_lcore, &cpus, &port_nodes)?;
    let node = |cpu| {
        topo.node_of_cpu(cpu)
            .map_or("?".to_owned(), |n| n.to_string())
    };
    let mut lines = vec![format!(
        "control thread: lcore {} on CPU {} (node {})",
        rt.main_lcore,
        rt.main_lcore,
        node(rt.main_lcore)
    )];
    for (i, (lcore, cpu)) in rt.worker_lcores.iter().zip(&cpus).enumerate() {
        let ports: Vec<String> = port_nodes
            .iter()
            .map(|(name, n)| {
                format!(
                    "{name} (node {})",
                    n.map_or("unknown".to_owned(), |n| n.to_string())
                )
            })
            .collect();
        lines.push(format!(
            "worker {i}: lcore {lcore} on CPU {cpu} (node {}) polls queue {i} of {}",
            node(*cpu),
            ports.join(", ")
        ));
    }
    Ok((lines, warnings))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
[[port]]
name = "up"
vdev = "net_ring0"
address = "10.0.0.2/24"

[[listener]]
port = "up"
tcp_port = 80
mode = "http"
upstream = "a"

[[upstream]]
name = "a"
port = "up"
servers = [{ address = "10.0.0.5:80" }, { address = "10.0.0.6:80" }]
"#;

    #[test]
    fn reload_keeps_indices_retires_and_appends() {
        let c1 = Config::parse(BASE).unwrap();
        let l1 = Layout::default().merge(&c1);
        let c2 = Config::parse(
            &BASE.replace("{ address = \"10.0.0.5:80\" }, ", "").replace(
                "10.0.0.6:80\" }]",
                "10.0.0.6:80\" }, { address = \"10.0.0.7:80\", weight = 3 }]",
            ),
        )
        .unwrap();
        assert_eq!(crate::reload::diff(&c1, &c2).refusal(), None);
        let l2 = l1.merge(&c2);
        let g = &groups(&c2, &l2)[0];
        let view: Vec<_> = g
            .balancer
            .servers
            .iter()
            .map(|s| (s.address.to_string(), s.weight, s.retired))
            .collect();
        assert_eq!(
            view,
            [
                ("10.0.0.5:80".into(), 1, true),
                ("10.0.0.6:80".into(), 1, false),
                ("10.0.0.7:80".into(), 3, false)
            ]
        );
        let moved = Config::parse(&BASE.replace("10.0.0.2/24", "10.0.0.3/24")).unwrap();
        assert!(crate::reload::diff(&c1, &moved).refusal().is_some());
    }

    #[test]
    fn one_source_may_hold_a_quarter_of_the_flow_table_unless_told() {
        let c = Config::parse(&format!("[runtime]\nmax_flows = 1000\n{BASE}")).unwrap();
        let l = Layout::default().merge(&c);
        assert_eq!(listeners(&c, &l)[0].max_per_source, 250);
        let told = BASE.replace(
            "mode = \"http\"",
            "mode = \"http\"\nmax_connections_per_source = 0",
        );
        let c = Config::parse(&format!("[runtime]\nmax_flows = 1000\n{told}")).unwrap();
        assert_eq!(listeners(&c, &l)[0].max_per_source, 0, "0: no limit");
    }

    #[test]
    fn an_allow_list_of_ipv6_networks_only_admits_no_ipv4_client() {
        let v6 = ["2001:db8::/32".to_string()];
        let allow = cidrs(&v6);
        assert!(!allow.is_empty(), "an empty list would admit everyone");
        for client in [[10, 0, 0, 1], [192, 0, 2, 7], [0, 0, 0, 0]] {
            let ip = std::net::Ipv4Addr::from(client);
            assert!(!allow
                .iter()
                .any(|&(n, l)| crate::config::in_network(ip, n, l)));
        }
        let mixed = ["2001:db8::/32".to_string(), "10.0.0.0/8".to_string()];
        assert_eq!(
            cidrs(&mixed),
            vec![(std::net::Ipv4Addr::new(10, 0, 0, 0), 8)]
        );
    }
}
