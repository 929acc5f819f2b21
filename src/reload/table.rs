//! The decision table: what SIGHUP does with each config key (applies it
//! to the running appliance, or refuses the whole reload: needs a restart).
//! [`TABLE`] is the one place that decides; INSTALL.md ("What SIGHUP
//! reloads") says the same, and a test keeps the two in step. The
//! comparisons below destructure every section without `..`, so a new key
//! does not compile until it is compared here (and so placed in the table).

use std::fmt::Debug;

use crate::config::{
    AccessLog, Announce, Config, Fleet, HealthCheckConfig, Listener, Logging, Management,
    PortSection, Runtime, UpstreamGroup,
};

/// What a changed key does on SIGHUP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnChange {
    /// Applied to the running appliance (new connections see it; open ones keep going).
    Applies,
    /// The reload is refused: the key is fixed at start-up.
    Restart,
}

use OnChange::{Applies, Restart};

/// Every key, named as in the file, and what a change to it does. `port`,
/// `listener` and `upstream` alone stand for adding or removing one.
pub const TABLE: &[(&str, OnChange)] = &[
    ("runtime.main_lcore", Restart),
    ("runtime.cores", Restart),
    ("runtime.worker_lcores", Restart),
    ("runtime.worker_cpus", Restart),
    ("runtime.idle_sleep_us", Restart),
    ("runtime.hugepage_dir", Restart),
    ("runtime.no_huge", Restart),
    ("runtime.memory_mb", Restart),
    ("runtime.mbufs", Restart),
    ("runtime.mbuf_cache", Restart),
    ("runtime.max_flows", Restart),
    ("runtime.syn_backlog", Restart),
    ("runtime.admit_flows_percent", Restart),
    ("runtime.admit_backlog_ms", Restart),
    ("runtime.socket_rx_buffer", Restart),
    ("runtime.buffer_release_idle_ms", Restart),
    ("runtime.socket_tx_buffer", Restart),
    ("runtime.tx_drain_us", Restart),
    ("runtime.eal_args", Restart),
    ("runtime.rate_limit_entries", Restart),
    ("runtime.tls_handshakes_per_poll", Restart),
    ("port", Restart),
    ("port.name", Restart),
    ("port.vdev", Restart),
    ("port.pci", Restart),
    ("port.address", Restart),
    ("port.gateway", Restart),
    ("port.addresses", Restart),
    ("port.gateway6", Restart),
    ("port.queues", Restart),
    ("port.rx_descriptors", Restart),
    ("port.tx_descriptors", Restart),
    ("port.mtu", Restart),
    ("port.exception", Restart),
    ("port.exception.kind", Restart),
    ("port.exception.iface", Restart),
    ("port.exception.rate", Restart),
    ("port.exception.burst", Restart),
    ("listener", Restart),
    ("listener.port", Restart),
    ("listener.tcp_port", Restart),
    ("listener.mode", Restart),
    ("listener.static", Applies),
    ("listener.idle_timeout_ms", Applies),
    ("listener.upstream", Applies),
    ("listener.route", Applies),
    ("listener.header_timeout_ms", Applies),
    ("listener.max_connections_per_source", Applies),
    ("listener.allow", Applies),
    ("listener.per_source_prefix6", Applies),
    ("listener.rate_limit", Applies),
    ("listener.connection_rate_limit", Applies),
    ("listener.request_headers", Applies),
    ("listener.response_headers", Applies),
    ("listener.trust_request_id", Applies),
    ("listener.max_header_count", Applies),
    ("listener.max_header_bytes", Applies),
    ("listener.upgrade", Applies),
    ("listener.tunnel_idle_timeout_ms", Applies),
    ("listener.accept_proxy_protocol", Applies),
    ("listener.trusted_proxies", Applies),
    ("listener.tls", Applies),
    ("upstream", Applies),
    ("upstream.port", Restart),
    ("upstream.servers", Applies),
    ("upstream.servers.backup", Applies),
    ("upstream.balance", Applies),
    ("upstream.connect_timeout_ms", Applies),
    ("upstream.read_timeout_ms", Applies),
    ("upstream.keepalive", Applies),
    ("upstream.local_ports", Applies),
    ("upstream.health_check", Applies),
    ("upstream.proxy_protocol", Applies),
    ("upstream.hash_key", Applies),
    ("upstream.tls", Applies),
    ("upstream.tls_ca", Applies),
    ("upstream.tls_sni", Applies),
    ("upstream.tls_cert", Applies),
    ("upstream.tls_key", Applies),
    ("upstream.health_check.kind", Applies),
    ("upstream.health_check.path", Applies),
    ("upstream.health_check.expect_status", Applies),
    ("upstream.health_check.interval_ms", Applies),
    ("upstream.health_check.timeout_ms", Applies),
    ("upstream.health_check.fall", Applies),
    ("upstream.health_check.rise", Applies),
    ("management.address", Restart),
    ("management.drain_timeout_ms", Applies),
    ("logging.level", Restart),
    ("access_log.path", Restart),
    ("access_log.format", Restart),
    ("access_log.sample", Restart),
    ("access_log.ring_entries", Restart),
    ("announce", Restart),
    ("announce.vip", Restart),
    ("announce.bird_socket", Restart),
    ("announce.protocol", Restart),
    ("announce.listeners", Applies),
    ("announce.hold_down_ms", Applies),
    ("fleet", Restart),
    ("fleet.port", Restart),
    ("fleet.vip", Restart),
    ("fleet.peers", Applies),
];

/// What a change to `key` does; a key missing from the table needs a restart.
pub fn on_change(key: &str) -> OnChange {
    TABLE
        .iter()
        .find(|(k, _)| *k == key)
        .map_or(Restart, |&(_, o)| o)
}

/// One changed key: its table name and which section it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: &'static str,
    /// E.g. `listener client:80`, `upstream "web"`; empty for a plain `[table]`.
    pub at: String,
    /// What changed, when the key alone does not say (servers added...).
    pub detail: String,
}

impl Change {
    fn describe(&self) -> String {
        let mut s = self.key.to_owned();
        if !self.at.is_empty() {
            s += &format!(" ({})", self.at);
        }
        if !self.detail.is_empty() {
            s += &format!(": {}", self.detail);
        }
        s
    }
}

/// Everything a new file changes against the running config.
#[derive(Debug, Default)]
pub struct Diff {
    pub changes: Vec<Change>,
}

impl Diff {
    /// `None` when the reload may go ahead; else the refusal, naming each key.
    pub fn refusal(&self) -> Option<String> {
        let keys: Vec<String> = self
            .changes
            .iter()
            .filter(|c| on_change(c.key) == Restart)
            .map(Change::describe)
            .collect();
        (!keys.is_empty()).then(|| {
            format!(
                "{} changed: needs a restart (systemctl restart zproxy); keeping the running config",
                keys.join(", ")
            )
        })
    }

    /// What an applied reload changed, for the log ("no change" when nothing).
    pub fn summary(&self) -> String {
        if self.changes.is_empty() {
            return "no change".into();
        }
        let all: Vec<String> = self.changes.iter().map(Change::describe).collect();
        format!("applied {}", all.join(", "))
    }

    fn cmp<T: Debug + ?Sized>(&mut self, key: &'static str, at: &str, a: &T, b: &T) {
        // Debug text compares every nested value, and the config types need
        // no PartialEq for it; reloads are rare.
        if format!("{a:?}") != format!("{b:?}") {
            self.changes.push(Change {
                key,
                at: at.to_owned(),
                detail: String::new(),
            });
        }
    }

    fn push(&mut self, key: &'static str, at: String, detail: String) {
        self.changes.push(Change { key, at, detail });
    }
}

/// Every key `next` changes against `running`.
pub fn diff(running: &Config, next: &Config) -> Diff {
    let mut d = Diff::default();
    let Config {
        runtime,
        ports,
        listeners,
        upstreams,
        management,
        logging,
        access_log,
        announce,
        fleet,
    } = running;
    runtime_diff(&mut d, runtime, &next.runtime);
    if ports.len() != next.ports.len() {
        d.push("port", String::new(), "ports added or removed".into());
    }
    for (a, b) in ports.iter().zip(&next.ports) {
        port_diff(&mut d, a, b);
    }
    if listeners.len() != next.listeners.len() {
        d.push(
            "listener",
            String::new(),
            "listeners added or removed".into(),
        );
    }
    for (a, b) in listeners.iter().zip(&next.listeners) {
        listener_diff(&mut d, a, b);
    }
    for a in upstreams {
        match next.upstreams.iter().find(|b| b.name == a.name) {
            Some(b) => group_diff(&mut d, a, b),
            None => d.push("upstream", format!("\"{}\"", a.name), "removed".into()),
        }
    }
    for b in &next.upstreams {
        if !upstreams.iter().any(|a| a.name == b.name) {
            d.push("upstream", format!("\"{}\"", b.name), "added".into());
        }
    }
    let Management {
        address,
        drain_timeout_ms,
    } = management;
    let m = &next.management;
    d.cmp("management.address", "", address, &m.address);
    d.cmp(
        "management.drain_timeout_ms",
        "",
        drain_timeout_ms,
        &m.drain_timeout_ms,
    );
    let Logging { level } = logging;
    d.cmp("logging.level", "", level, &next.logging.level);
    // The writer thread and the workers' rings are built at start.
    let AccessLog {
        path,
        format,
        sample,
        ring_entries,
    } = access_log;
    let n = &next.access_log;
    d.cmp("access_log.path", "", path, &n.path);
    d.cmp("access_log.format", "", format, &n.format);
    d.cmp("access_log.sample", "", sample, &n.sample);
    d.cmp("access_log.ring_entries", "", ring_entries, &n.ring_entries);
    announce_diff(&mut d, announce.as_ref(), next.announce.as_ref());
    fleet_diff(&mut d, fleet.as_ref(), next.fleet.as_ref());
    d
}

/// Workers get the VIP when they start; the peers with a reload.
fn fleet_diff(d: &mut Diff, a: Option<&Fleet>, b: Option<&Fleet>) {
    let (a, b) = match (a, b) {
        (None, None) => return,
        (Some(a), Some(b)) => (a, b),
        _ => return d.push("fleet", String::new(), "[fleet] added or removed".into()),
    };
    let Fleet { port, vip, peers } = a;
    d.cmp("fleet.port", "", port, &b.port);
    d.cmp("fleet.vip", "", vip, &b.vip);
    d.cmp("fleet.peers", "", peers, &b.peers);
}

/// The announcer talks to one BIRD protocol from start; what it follows
/// and its hold-down are read on every tick.
fn announce_diff(d: &mut Diff, a: Option<&Announce>, b: Option<&Announce>) {
    let (a, b) = match (a, b) {
        (None, None) => return,
        (Some(a), Some(b)) => (a, b),
        _ => {
            return d.push(
                "announce",
                String::new(),
                "[announce] added or removed".into(),
            )
        }
    };
    let Announce {
        vip,
        listeners,
        bird_socket,
        protocol,
        hold_down_ms,
    } = a;
    d.cmp("announce.vip", "", vip, &b.vip);
    d.cmp("announce.bird_socket", "", bird_socket, &b.bird_socket);
    d.cmp("announce.protocol", "", protocol, &b.protocol);
    d.cmp("announce.listeners", "", listeners, &b.listeners);
    d.cmp("announce.hold_down_ms", "", hold_down_ms, &b.hold_down_ms);
}

fn runtime_diff(d: &mut Diff, a: &Runtime, b: &Runtime) {
    let Runtime {
        main_lcore,
        cores,
        worker_lcores,
        worker_cpus,
        idle_sleep_us,
        hugepage_dir,
        no_huge,
        memory_mb,
        mbufs,
        mbuf_cache,
        max_flows,
        admit_flows_percent,
        admit_backlog_ms,
        syn_backlog,
        socket_rx_buffer,
        socket_tx_buffer,
        buffer_release_idle_ms,
        tx_drain_us,
        eal_args,
        rate_limit_entries,
        tls_handshakes_per_poll,
    } = a;
    d.cmp("runtime.main_lcore", "", main_lcore, &b.main_lcore);
    d.cmp("runtime.cores", "", cores, &b.cores);
    d.cmp("runtime.worker_lcores", "", worker_lcores, &b.worker_lcores);
    d.cmp("runtime.worker_cpus", "", worker_cpus, &b.worker_cpus);
    d.cmp("runtime.idle_sleep_us", "", idle_sleep_us, &b.idle_sleep_us);
    d.cmp("runtime.hugepage_dir", "", hugepage_dir, &b.hugepage_dir);
    d.cmp("runtime.no_huge", "", no_huge, &b.no_huge);
    d.cmp("runtime.memory_mb", "", memory_mb, &b.memory_mb);
    d.cmp("runtime.mbufs", "", mbufs, &b.mbufs);
    d.cmp("runtime.mbuf_cache", "", mbuf_cache, &b.mbuf_cache);
    d.cmp("runtime.max_flows", "", max_flows, &b.max_flows);
    d.cmp("runtime.syn_backlog", "", syn_backlog, &b.syn_backlog);
    d.cmp(
        "runtime.admit_flows_percent",
        "",
        admit_flows_percent,
        &b.admit_flows_percent,
    );
    d.cmp(
        "runtime.admit_backlog_ms",
        "",
        admit_backlog_ms,
        &b.admit_backlog_ms,
    );
    d.cmp(
        "runtime.buffer_release_idle_ms",
        "",
        buffer_release_idle_ms,
        &b.buffer_release_idle_ms,
    );
    d.cmp(
        "runtime.socket_rx_buffer",
        "",
        socket_rx_buffer,
        &b.socket_rx_buffer,
    );
    d.cmp(
        "runtime.socket_tx_buffer",
        "",
        socket_tx_buffer,
        &b.socket_tx_buffer,
    );
    d.cmp("runtime.tx_drain_us", "", tx_drain_us, &b.tx_drain_us);
    d.cmp("runtime.eal_args", "", eal_args, &b.eal_args);
    d.cmp(
        "runtime.tls_handshakes_per_poll",
        "",
        tls_handshakes_per_poll,
        &b.tls_handshakes_per_poll,
    );
    d.cmp(
        "runtime.rate_limit_entries",
        "",
        rate_limit_entries,
        &b.rate_limit_entries,
    );
}

fn port_diff(d: &mut Diff, a: &PortSection, b: &PortSection) {
    let PortSection {
        name,
        vdev,
        pci,
        address,
        addresses,
        gateway,
        gateway6,
        queues,
        rx_descriptors,
        tx_descriptors,
        mtu,
        exception,
    } = a;
    let at = format!("port \"{name}\"");
    d.cmp("port.name", &at, name, &b.name);
    d.cmp("port.vdev", &at, vdev, &b.vdev);
    d.cmp("port.pci", &at, pci, &b.pci);
    d.cmp("port.address", &at, address, &b.address);
    d.cmp("port.gateway", &at, gateway, &b.gateway);
    d.cmp("port.addresses", &at, addresses, &b.addresses);
    d.cmp("port.gateway6", &at, gateway6, &b.gateway6);
    d.cmp("port.queues", &at, queues, &b.queues);
    d.cmp(
        "port.rx_descriptors",
        &at,
        rx_descriptors,
        &b.rx_descriptors,
    );
    d.cmp(
        "port.tx_descriptors",
        &at,
        tx_descriptors,
        &b.tx_descriptors,
    );
    d.cmp("port.mtu", &at, mtu, &b.mtu);
    match (exception, &b.exception) {
        (Some(x), Some(y)) => {
            d.cmp("port.exception.kind", &at, &x.kind, &y.kind);
            d.cmp("port.exception.iface", &at, &x.iface, &y.iface);
            d.cmp("port.exception.rate", &at, &x.rate, &y.rate);
            d.cmp("port.exception.burst", &at, &x.burst, &y.burst);
        }
        _ => d.cmp("port.exception", &at, exception, &b.exception),
    }
}

fn listener_diff(d: &mut Diff, a: &Listener, b: &Listener) {
    let Listener {
        port,
        tcp_port,
        mode,
        static_response,
        idle_timeout_ms,
        upstream,
        routes,
        header_timeout_ms,
        max_connections_per_source,
        allow,
        per_source_prefix6,
        rate_limit,
        connection_rate_limit,
        request_headers,
        response_headers,
        trust_request_id,
        max_header_count,
        max_header_bytes,
        upgrade,
        tunnel_idle_timeout_ms,
        accept_proxy_protocol,
        trusted_proxies,
        tls,
    } = a;
    let at = format!("listener {port}:{tcp_port}");
    d.cmp("listener.port", &at, port, &b.port);
    d.cmp("listener.tcp_port", &at, tcp_port, &b.tcp_port);
    d.cmp("listener.mode", &at, mode, &b.mode);
    d.cmp("listener.static", &at, static_response, &b.static_response);
    d.cmp(
        "listener.idle_timeout_ms",
        &at,
        idle_timeout_ms,
        &b.idle_timeout_ms,
    );
    d.cmp("listener.upstream", &at, upstream, &b.upstream);
    d.cmp("listener.route", &at, routes, &b.routes);
    d.cmp(
        "listener.header_timeout_ms",
        &at,
        header_timeout_ms,
        &b.header_timeout_ms,
    );
    d.cmp(
        "listener.max_connections_per_source",
        &at,
        max_connections_per_source,
        &b.max_connections_per_source,
    );
    d.cmp("listener.allow", &at, allow, &b.allow);
    d.cmp(
        "listener.per_source_prefix6",
        &at,
        per_source_prefix6,
        &b.per_source_prefix6,
    );
    d.cmp("listener.rate_limit", &at, rate_limit, &b.rate_limit);
    d.cmp(
        "listener.connection_rate_limit",
        &at,
        connection_rate_limit,
        &b.connection_rate_limit,
    );
    d.cmp(
        "listener.request_headers",
        &at,
        request_headers,
        &b.request_headers,
    );
    d.cmp(
        "listener.response_headers",
        &at,
        response_headers,
        &b.response_headers,
    );
    d.cmp(
        "listener.trust_request_id",
        &at,
        trust_request_id,
        &b.trust_request_id,
    );
    d.cmp(
        "listener.max_header_count",
        &at,
        max_header_count,
        &b.max_header_count,
    );
    d.cmp(
        "listener.max_header_bytes",
        &at,
        max_header_bytes,
        &b.max_header_bytes,
    );
    d.cmp("listener.upgrade", &at, upgrade, &b.upgrade);
    d.cmp(
        "listener.tunnel_idle_timeout_ms",
        &at,
        tunnel_idle_timeout_ms,
        &b.tunnel_idle_timeout_ms,
    );
    d.cmp(
        "listener.accept_proxy_protocol",
        &at,
        accept_proxy_protocol,
        &b.accept_proxy_protocol,
    );
    d.cmp(
        "listener.trusted_proxies",
        &at,
        trusted_proxies,
        &b.trusted_proxies,
    );
    d.cmp("listener.tls", &at, tls, &b.tls);
}

fn group_diff(d: &mut Diff, a: &UpstreamGroup, b: &UpstreamGroup) {
    let UpstreamGroup {
        name,
        port,
        servers,
        balance,
        connect_timeout_ms,
        read_timeout_ms,
        keepalive,
        local_ports,
        health_check,
        proxy_protocol,
        hash_key,
        tls,
        tls_ca,
        tls_sni,
        tls_cert,
        tls_key,
    } = a;
    let at = format!("upstream \"{name}\"");
    d.cmp("upstream.port", &at, port, &b.port);
    let mut what = Vec::new();
    for s in &b.servers {
        match servers.iter().find(|o| o.address == s.address) {
            None => what.push(format!("+{}", s.address)),
            Some(o) if o.weight != s.weight => {
                what.push(format!("{} weight {}->{}", s.address, o.weight, s.weight));
            }
            Some(_) => {}
        }
    }
    for o in servers {
        if !b.servers.iter().any(|s| s.address == o.address) {
            what.push(format!("-{}", o.address));
        }
    }
    if !what.is_empty() {
        d.push("upstream.servers", at.clone(), what.join(" "));
    }
    let flipped: Vec<String> = b
        .servers
        .iter()
        .filter_map(|s| {
            let o = servers.iter().find(|o| o.address == s.address)?;
            (o.backup != s.backup)
                .then(|| format!("{} backup {}->{}", s.address, o.backup, s.backup))
        })
        .collect();
    if !flipped.is_empty() {
        d.push("upstream.servers.backup", at.clone(), flipped.join(" "));
    }
    d.cmp("upstream.balance", &at, balance, &b.balance);
    d.cmp("upstream.hash_key", &at, hash_key, &b.hash_key);
    d.cmp(
        "upstream.connect_timeout_ms",
        &at,
        connect_timeout_ms,
        &b.connect_timeout_ms,
    );
    d.cmp(
        "upstream.read_timeout_ms",
        &at,
        read_timeout_ms,
        &b.read_timeout_ms,
    );
    d.cmp("upstream.keepalive", &at, keepalive, &b.keepalive);
    d.cmp("upstream.local_ports", &at, local_ports, &b.local_ports);
    d.cmp(
        "upstream.proxy_protocol",
        &at,
        proxy_protocol,
        &b.proxy_protocol,
    );
    d.cmp("upstream.tls", &at, tls, &b.tls);
    d.cmp("upstream.tls_ca", &at, tls_ca, &b.tls_ca);
    d.cmp("upstream.tls_sni", &at, tls_sni, &b.tls_sni);
    d.cmp("upstream.tls_cert", &at, tls_cert, &b.tls_cert);
    d.cmp("upstream.tls_key", &at, tls_key, &b.tls_key);
    match (health_check, &b.health_check) {
        (Some(h), Some(n)) => health_diff(d, &at, h, n),
        (None, Some(_)) => d.push("upstream.health_check", at, "added".into()),
        (Some(_), None) => d.push("upstream.health_check", at, "removed".into()),
        (None, None) => {}
    }
}

fn health_diff(d: &mut Diff, at: &str, a: &HealthCheckConfig, b: &HealthCheckConfig) {
    let HealthCheckConfig {
        kind,
        path,
        expect_status,
        interval_ms,
        timeout_ms,
        fall,
        rise,
    } = a;
    d.cmp("upstream.health_check.kind", at, kind, &b.kind);
    d.cmp("upstream.health_check.path", at, path, &b.path);
    d.cmp(
        "upstream.health_check.expect_status",
        at,
        expect_status,
        &b.expect_status,
    );
    d.cmp(
        "upstream.health_check.interval_ms",
        at,
        interval_ms,
        &b.interval_ms,
    );
    d.cmp(
        "upstream.health_check.timeout_ms",
        at,
        timeout_ms,
        &b.timeout_ms,
    );
    d.cmp("upstream.health_check.fall", at, fall, &b.fall);
    d.cmp("upstream.health_check.rise", at, rise, &b.rise);
}

#[cfg(test)]
#[path = "table_tests.rs"]
mod tests;
