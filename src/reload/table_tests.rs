//! The decision table: every key is compared, decided, and documented.

use super::*;
use crate::config::{
    Balance, ConnectionRateLimit, Cores, HealthKind, ListenerMode, ProxyProtocol, RateLimit, Route,
    Server, StaticResponse,
};

const BASE: &str = r#"
[[port]]
name = "client"
vdev = "net_ring0"
address = "10.0.0.2/24"
gateway = "10.0.0.1"

[[port]]
name = "up"
vdev = "net_ring1"
address = "10.1.0.2/24"
exception = { kind = "tap", iface = "zp1" }

[[listener]]
port = "client"
tcp_port = 80
mode = "http"
upstream = "web"

[[upstream]]
name = "web"
port = "up"
servers = [{ address = "10.1.0.5:80" }]
health_check = { kind = "tcp" }

[announce]
vip = "10.99.0.1/32"
listeners = ["client:80"]

[fleet]
port = "client"
vip = "10.99.0.1"
peers = [{ mac = "02:00:00:00:00:0b", name = "b" }]
"#;

/// The exception path of the base config's second port (the one that has it),
/// or of the first once an edit gave it one.
fn exc(c: &mut Config) -> &mut crate::config::exception::Exception {
    let i = usize::from(c.ports[0].exception.is_none());
    c.ports[i]
        .exception
        .as_mut()
        .expect("the base's port \"up\" has one")
}

fn base() -> Config {
    Config::parse(BASE).unwrap()
}

type Edit = (&'static str, fn(&mut Config));

/// One edit per key of the table, each changing that key alone.
const EDITS: &[Edit] = &[
    ("runtime.main_lcore", |c| c.runtime.main_lcore = 3),
    ("runtime.cores", |c| c.runtime.cores = Some(Cores::Auto)),
    ("runtime.worker_lcores", |c| {
        c.runtime.worker_lcores = vec![2]
    }),
    ("runtime.worker_cpus", |c| {
        c.runtime.worker_cpus = Some(vec![1])
    }),
    ("runtime.idle_sleep_us", |c| c.runtime.idle_sleep_us = 5),
    ("runtime.hugepage_dir", |c| {
        c.runtime.hugepage_dir = Some("/mnt/huge".into())
    }),
    ("runtime.no_huge", |c| c.runtime.no_huge = true),
    ("runtime.memory_mb", |c| c.runtime.memory_mb = 64),
    ("runtime.mbufs", |c| c.runtime.mbufs = 8191),
    ("runtime.mbuf_cache", |c| c.runtime.mbuf_cache = 32),
    ("runtime.max_flows", |c| c.runtime.max_flows = 100),
    ("runtime.syn_backlog", |c| c.runtime.syn_backlog = 1),
    ("runtime.admit_flows_percent", |c| {
        c.runtime.admit_flows_percent = 90
    }),
    ("runtime.admit_backlog_ms", |c| {
        c.runtime.admit_backlog_ms = 20
    }),
    ("runtime.buffer_release_idle_ms", |c| {
        c.runtime.buffer_release_idle_ms = 50
    }),
    ("runtime.socket_rx_buffer", |c| {
        c.runtime.socket_rx_buffer = 1
    }),
    ("runtime.socket_tx_buffer", |c| {
        c.runtime.socket_tx_buffer = 1
    }),
    ("runtime.tx_drain_us", |c| c.runtime.tx_drain_us = 1),
    ("runtime.tls_handshakes_per_poll", |c| {
        c.runtime.tls_handshakes_per_poll = 9
    }),
    ("runtime.rate_limit_entries", |c| {
        c.runtime.rate_limit_entries = 64
    }),
    ("runtime.eal_args", |c| {
        c.runtime.eal_args = vec!["-v".into()]
    }),
    ("port", |c| {
        let mut p = c.ports[1].clone();
        p.name = "third".into();
        c.ports.push(p);
    }),
    ("port.name", |c| c.ports[1].name = "other".into()),
    ("port.vdev", |c| c.ports[0].vdev = Some("net_ring7".into())),
    ("port.pci", |c| c.ports[0].pci = Some("0000:03:00.0".into())),
    ("port.address", |c| {
        c.ports[0].address = "10.0.0.3/24".into()
    }),
    ("port.gateway", |c| c.ports[0].gateway = None),
    ("port.addresses", |c| {
        c.ports[0].addresses = vec!["2001:db8::2/64".into()]
    }),
    ("port.gateway6", |c| {
        c.ports[0].gateway6 = Some("fe80::1".parse().unwrap())
    }),
    ("port.queues", |c| c.ports[0].queues = Some(1)),
    ("port.rx_descriptors", |c| c.ports[0].rx_descriptors = 512),
    ("port.tx_descriptors", |c| c.ports[0].tx_descriptors = 512),
    ("port.mtu", |c| c.ports[0].mtu = Some(1400)),
    ("port.exception", |c| {
        c.ports[0].exception = c.ports[1].exception.clone();
        exc(c).iface = "zp0".into();
    }),
    ("port.exception.kind", |c| {
        exc(c).kind = crate::config::exception::ExceptionKind::VirtioUser
    }),
    ("port.exception.iface", |c| exc(c).iface = "zp9".into()),
    ("port.exception.rate", |c| exc(c).rate = 7),
    ("port.exception.burst", |c| exc(c).burst = 7),
    ("listener", |c| {
        let mut l = c.listeners[0].clone();
        l.tcp_port = 81;
        c.listeners.push(l);
    }),
    ("listener.port", |c| c.listeners[0].port = "up".into()),
    ("listener.tcp_port", |c| c.listeners[0].tcp_port = 81),
    ("listener.mode", |c| c.listeners[0].mode = ListenerMode::Tcp),
    ("listener.static", |c| {
        c.listeners[0].static_response = Some(StaticResponse {
            status: 200,
            body: "x".into(),
            content_type: "text/plain".into(),
        })
    }),
    ("listener.idle_timeout_ms", |c| {
        c.listeners[0].idle_timeout_ms = 1
    }),
    ("listener.upstream", |c| c.listeners[0].upstream = None),
    ("listener.route", |c| {
        c.listeners[0].routes.push(Route {
            host: None,
            path_prefix: "/a".into(),
            upstream: "web".into(),
            rate_limit: None,
            request_headers: Default::default(),
            response_headers: Default::default(),
            upgrade: None,
        })
    }),
    ("listener.header_timeout_ms", |c| {
        c.listeners[0].header_timeout_ms = 1
    }),
    ("listener.max_connections_per_source", |c| {
        c.listeners[0].max_connections_per_source = Some(1)
    }),
    ("listener.allow", |c| {
        c.listeners[0].allow = vec!["10.0.0.0/8".into()]
    }),
    ("listener.per_source_prefix6", |c| {
        c.listeners[0].per_source_prefix6 = Some(64)
    }),
    ("listener.rate_limit", |c| {
        c.listeners[0].rate_limit = Some(RateLimit {
            requests_per_second: 5.0,
            burst: 10,
        })
    }),
    ("listener.connection_rate_limit", |c| {
        c.listeners[0].connection_rate_limit = Some(ConnectionRateLimit {
            connections_per_second: 5.0,
            burst: 10,
        })
    }),
    ("listener.request_headers", |c| {
        c.listeners[0].request_headers.remove = vec!["X-A".into()]
    }),
    ("listener.response_headers", |c| {
        c.listeners[0].response_headers.remove = vec!["X-A".into()]
    }),
    ("listener.trust_request_id", |c| {
        c.listeners[0].trust_request_id = true
    }),
    ("listener.max_header_count", |c| {
        c.listeners[0].max_header_count = Some(10)
    }),
    ("listener.max_header_bytes", |c| {
        c.listeners[0].max_header_bytes = Some(1000)
    }),
    ("listener.upgrade", |c| {
        c.listeners[0].upgrade = Some(vec!["foo".into()])
    }),
    ("listener.tunnel_idle_timeout_ms", |c| {
        c.listeners[0].tunnel_idle_timeout_ms = 1
    }),
    ("listener.accept_proxy_protocol", |c| {
        c.listeners[0].accept_proxy_protocol = true
    }),
    ("listener.trusted_proxies", |c| {
        c.listeners[0].trusted_proxies = vec!["10.0.0.0/8".into()]
    }),
    ("listener.tls", |c| {
        c.listeners[0].tls = Some(crate::config::TlsListener {
            certificates: Vec::new(),
            min_version: "1.3".into(),
            ciphers: Vec::new(),
            handshake_timeout_ms: 1,
        })
    }),
    ("upstream", |c| {
        let mut g = c.upstreams[0].clone();
        g.name = "api".into();
        c.upstreams.push(g);
    }),
    ("upstream.port", |c| c.upstreams[0].port = "client".into()),
    ("upstream.servers", |c| {
        c.upstreams[0].servers.push(Server {
            given: "10.1.0.6:80".into(),
            address: "10.1.0.6:80".parse().unwrap(),
            weight: 1,
            backup: false,
        })
    }),
    ("upstream.servers.backup", |c| {
        c.upstreams[0].servers[0].backup = true
    }),
    ("upstream.balance", |c| {
        c.upstreams[0].balance = Balance::LeastConn
    }),
    ("upstream.connect_timeout_ms", |c| {
        c.upstreams[0].connect_timeout_ms = 1
    }),
    ("upstream.read_timeout_ms", |c| {
        c.upstreams[0].read_timeout_ms = 1
    }),
    ("upstream.keepalive", |c| c.upstreams[0].keepalive = 0),
    ("upstream.local_ports", |c| {
        c.upstreams[0].local_ports = [30_000, 31_000]
    }),
    ("upstream.health_check", |c| {
        c.upstreams[0].health_check = None
    }),
    ("upstream.proxy_protocol", |c| {
        c.upstreams[0].proxy_protocol = Some(ProxyProtocol::V2)
    }),
    ("upstream.hash_key", |c| {
        c.upstreams[0].hash_key = crate::config::HashKey::Header("x-user".into())
    }),
    ("upstream.tls", |c| c.upstreams[0].tls = true),
    ("upstream.tls_ca", |c| {
        c.upstreams[0].tls_ca = Some("/ca.pem".into())
    }),
    ("upstream.tls_sni", |c| {
        c.upstreams[0].tls_sni = Some("a.example".into())
    }),
    ("upstream.tls_cert", |c| {
        c.upstreams[0].tls_cert = Some("/c.pem".into())
    }),
    ("upstream.tls_key", |c| {
        c.upstreams[0].tls_key = Some("/k.pem".into())
    }),
    ("upstream.health_check.kind", |c| {
        hc(c).kind = HealthKind::Http
    }),
    ("upstream.health_check.path", |c| hc(c).path = "/h".into()),
    ("upstream.health_check.expect_status", |c| {
        hc(c).expect_status = 204
    }),
    ("upstream.health_check.interval_ms", |c| {
        hc(c).interval_ms = 100
    }),
    ("upstream.health_check.timeout_ms", |c| {
        hc(c).timeout_ms = 100
    }),
    ("upstream.health_check.fall", |c| hc(c).fall = 5),
    ("upstream.health_check.rise", |c| hc(c).rise = 5),
    ("management.address", |c| {
        c.management.address = "127.0.0.1:9191".into()
    }),
    ("management.drain_timeout_ms", |c| {
        c.management.drain_timeout_ms = 5
    }),
    ("logging.level", |c| c.logging.level = "debug".into()),
    ("access_log.path", |c| c.access_log.path = "stdout".into()),
    ("access_log.format", |c| {
        c.access_log.format = crate::config::AccessLogFormat::Json
    }),
    ("access_log.sample", |c| c.access_log.sample = 10),
    ("access_log.ring_entries", |c| {
        c.access_log.ring_entries = 64
    }),
    ("announce", |c| c.announce = None),
    ("announce.vip", |c| ann(c).vip = "10.99.0.2/32".into()),
    ("announce.bird_socket", |c| {
        ann(c).bird_socket = "/tmp/b.ctl".into()
    }),
    ("announce.protocol", |c| ann(c).protocol = "vip2".into()),
    ("announce.listeners", |c| ann(c).listeners.clear()),
    ("announce.hold_down_ms", |c| ann(c).hold_down_ms = 1),
    ("fleet", |c| c.fleet = None),
    ("fleet.port", |c| fleet(c).port = "up".into()),
    ("fleet.vip", |c| fleet(c).vip = None),
    ("fleet.peers", |c| fleet(c).peers.clear()),
];

fn fleet(c: &mut Config) -> &mut crate::config::Fleet {
    c.fleet.as_mut().unwrap()
}

fn ann(c: &mut Config) -> &mut crate::config::Announce {
    c.announce.as_mut().unwrap()
}

fn hc(c: &mut Config) -> &mut HealthCheckConfig {
    c.upstreams[0].health_check.as_mut().unwrap()
}

#[test]
fn every_key_is_compared_and_decided() {
    let running = base();
    assert!(diff(&running, &running).changes.is_empty());
    for (key, edit) in EDITS {
        let mut next = running.clone();
        edit(&mut next);
        let d = diff(&running, &next);
        let keys: Vec<&str> = d.changes.iter().map(|c| c.key).collect();
        assert_eq!(keys, [*key], "editing {key}");
        assert!(TABLE.iter().any(|(k, _)| k == key), "{key} not in TABLE");
        match on_change(key) {
            Restart => {
                let why = d.refusal().expect("refused");
                assert!(
                    why.starts_with(key) && why.contains("changed: needs a restart"),
                    "{why}"
                );
            }
            Applies => assert_eq!(d.refusal(), None, "{key}"),
        }
    }
    // ...and every key of the table has its edit above.
    for (key, _) in TABLE {
        assert!(EDITS.iter().any(|(k, _)| k == key), "no edit for {key}");
    }
}

#[test]
fn restart_keys_are_what_start_up_fixes() {
    for key in [
        "runtime.mbufs",
        "runtime.worker_lcores",
        "runtime.max_flows",
        "port.address",
        "port.mtu",
        "listener",
        "listener.tcp_port",
        "management.address",
    ] {
        assert_eq!(on_change(key), Restart, "{key}");
    }
    for key in [
        "listener.allow",
        "listener.idle_timeout_ms",
        "listener.header_timeout_ms",
        "listener.max_connections_per_source",
        "listener.route",
        "listener.request_headers",
        "listener.max_header_bytes",
        "listener.upgrade",
        "listener.tunnel_idle_timeout_ms",
        "upstream.servers",
        "upstream.servers.backup",
        "upstream.health_check.interval_ms",
        "management.drain_timeout_ms",
    ] {
        assert_eq!(on_change(key), Applies, "{key}");
    }
    assert_eq!(
        on_change("runtime.no_such_key"),
        Restart,
        "unknown: safe side"
    );
}

#[test]
fn messages_name_each_key_and_where() {
    let running = base();
    let mut next = running.clone();
    next.runtime.mbufs = 8191;
    next.ports[0].mtu = Some(1400);
    next.listeners[0].allow = vec!["10.0.0.0/8".into()];
    assert_eq!(
        diff(&running, &next).refusal().unwrap(),
        "runtime.mbufs, port.mtu (port \"client\") changed: needs a restart \
         (systemctl restart zproxy); keeping the running config"
    );
    let mut next = running.clone();
    next.listeners[0].allow = vec!["10.0.0.0/8".into()];
    next.upstreams[0].servers[0].weight = 3;
    next.upstreams[0].servers[0].backup = true;
    next.upstreams[0].servers.push(Server {
        given: "10.1.0.6:80".into(),
        address: "10.1.0.6:80".parse().unwrap(),
        weight: 1,
        backup: false,
    });
    let d = diff(&running, &next);
    assert_eq!(d.refusal(), None);
    assert_eq!(
        d.summary(),
        "applied listener.allow (listener client:80), upstream.servers (upstream \"web\"): \
         10.1.0.5:80 weight 1->3 +10.1.0.6:80, upstream.servers.backup (upstream \"web\"): \
         10.1.0.5:80 backup false->true"
    );
    assert_eq!(diff(&running, &running).summary(), "no change");
}

#[test]
fn install_md_lists_every_key() {
    let doc = include_str!("../../INSTALL.md");
    let section = doc
        .split("### What SIGHUP reloads")
        .nth(1)
        .expect("INSTALL.md has a \"What SIGHUP reloads\" section");
    let section = section.split("\n## ").next().unwrap_or(section);
    for (key, on) in TABLE {
        let row = section
            .lines()
            .find(|l| l.starts_with(&format!("| `{key}`")))
            .unwrap_or_else(|| panic!("INSTALL.md: no row for `{key}`"));
        let says = match on {
            Applies => "| applies",
            Restart => "| restart",
        };
        assert!(row.contains(says), "INSTALL.md row for {key}: {row}");
    }
}
