//! Cross-checks of a parsed config that serde cannot express; every error
//! names the key and, where it can be found, the line.

use super::locate::Place;
use super::{Config, ConfigError, ListenerMode, MAX_DURATION_MS};

/// The first line (1-based) that contains `needle`.
fn line_of(text: &str, needle: &str) -> Option<usize> {
    text.lines().position(|l| l.contains(needle)).map(|n| n + 1)
}

/// A value `key` (dotted, e.g. "upstream.local_ports") that the message explains.
pub(super) fn invalid(line: Option<usize>, key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        file: None,
        line,
        key: key.to_owned(),
        message: message.into(),
    }
}

impl Config {
    /// Cross-checks that serde cannot express.
    pub(super) fn validate(&self, text: &str) -> Result<(), ConfigError> {
        let at = |needle: &str| line_of(text, needle);
        let rt = &self.runtime;
        if rt.worker_lcores.is_empty() {
            return Err(invalid(
                at("worker_lcores"),
                "runtime.worker_lcores",
                "runtime.worker_lcores is empty: list at least one core, e.g. [1]",
            ));
        }
        let mut sorted = rt.worker_lcores.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != rt.worker_lcores.len() {
            return Err(invalid(
                at("worker_lcores"),
                "runtime.worker_lcores",
                "runtime.worker_lcores lists a core twice",
            ));
        }
        if rt
            .worker_cpus
            .as_ref()
            .is_some_and(|c| c.len() != rt.worker_lcores.len())
        {
            return Err(invalid(
                at("worker_cpus"),
                "runtime.worker_cpus",
                format!(
                    "runtime.worker_cpus must name one CPU per worker lcore ({} of them)",
                    rt.worker_lcores.len()
                ),
            ));
        }
        if rt.worker_lcores.contains(&rt.main_lcore) {
            return Err(invalid(at("worker_lcores"), "runtime.worker_lcores", format!("runtime.worker_lcores contains the main lcore {}: the control thread needs its own core", rt.main_lcore)));
        }
        if !(2..=4_000_000).contains(&rt.max_flows) {
            return Err(invalid(at("max_flows"), "runtime.max_flows", "runtime.max_flows must be 2..=4000000 (a proxied connection takes two: client and upstream)"));
        }
        if !(10..=3_600_000).contains(&rt.buffer_release_idle_ms) {
            let v = rt.buffer_release_idle_ms;
            return Err(invalid(at("buffer_release_idle_ms"), "runtime.buffer_release_idle_ms", format!("runtime.buffer_release_idle_ms = {v}: must be 10..=3600000 (how long an idle connection keeps its buffer pages)")));
        }
        for (key, v) in [
            ("socket_rx_buffer", rt.socket_rx_buffer),
            ("socket_tx_buffer", rt.socket_tx_buffer),
        ] {
            if !(536..=16 << 20).contains(&v) {
                return Err(invalid(
                    at(key),
                    &format!("runtime.{key}"),
                    format!("runtime.{key} = {v}: must be 536..=16777216 bytes"),
                ));
            }
        }
        // In u64: descriptors of many ports times many workers overflow u32.
        let min_mbufs = self
            .ports
            .iter()
            .map(|p| u64::from(p.rx_descriptors) + u64::from(p.tx_descriptors))
            .sum::<u64>()
            * rt.worker_lcores.len() as u64
            * 2;
        if u64::from(rt.mbufs) < min_mbufs {
            return Err(invalid(at("mbufs"), "runtime.mbufs", format!("runtime.mbufs = {}: too small for the ports' descriptor rings; use at least {min_mbufs}", rt.mbufs)));
        }
        if self.ports.is_empty() {
            return Err(invalid(
                None,
                "port",
                "no [[port]] section: configure at least one port",
            ));
        }
        super::exception::validate(&self.ports, |i| {
            Place::new("port", i).line(text, "exception")
        })?;
        for (i, p) in self.ports.iter().enumerate() {
            let where_ = Place::new("port", i).line(text, "name");
            match (&p.vdev, &p.pci) {
                (Some(_), Some(_)) => return Err(invalid(where_, "port.vdev", format!("port '{}': give either vdev or pci, not both", p.name))),
                (None, None) => return Err(invalid(where_, "port.vdev", format!("port '{}': give vdev (e.g. \"net_af_xdp0,iface=eth1\") or pci (e.g. \"0000:03:00.0\")", p.name))),
                _ => {}
            }
            if p.queues
                .is_some_and(|q| usize::from(q) != rt.worker_lcores.len())
            {
                return Err(invalid(where_, "port.queues", format!("port '{}': queues = {}: each of the {} workers polls one queue of every port, so queues must be {}", p.name, p.queues.unwrap_or(0), rt.worker_lcores.len(), rt.worker_lcores.len())));
            }
            if self.ports[..i].iter().any(|q| q.name == p.name) {
                return Err(invalid(
                    where_,
                    "port.name",
                    format!("port name '{}' is used twice", p.name),
                ));
            }
        }
        for l in &self.listeners {
            super::headers::check_listener(l, &at)?;
            if !self.ports.iter().any(|p| p.name == l.port) {
                let names: Vec<_> = self.ports.iter().map(|p| p.name.as_str()).collect();
                return Err(invalid(
                    at(&format!("\"{}\"", l.port)),
                    "listener.port",
                    format!(
                        "listener on tcp_port {}: port = \"{}\" names no [[port]] (have: {})",
                        l.tcp_port,
                        l.port,
                        names.join(", ")
                    ),
                ));
            }
            let lat = at(&format!("tcp_port = {}", l.tcp_port));
            match l.mode.base() {
                ListenerMode::Static if l.static_response.is_none() => {
                    return Err(invalid(lat, "listener.static", format!("listener on tcp_port {}: mode = \"static\" needs a [listener.static] table", l.tcp_port)));
                }
                ListenerMode::Tcp if l.upstream.is_none() => {
                    return Err(invalid(lat, "listener.upstream", format!("listener on tcp_port {}: mode = \"tcp\" needs upstream = \"<group name>\"", l.tcp_port)));
                }
                ListenerMode::Http if l.upstream.is_none() && l.routes.is_empty() => {
                    return Err(invalid(lat, "listener.upstream", format!("listener on tcp_port {}: mode = \"http\" needs [[listener.route]] tables or upstream = \"<group name>\"", l.tcp_port)));
                }
                _ => {}
            }
            let named = l
                .upstream
                .iter()
                .chain(l.routes.iter().map(|r| &r.upstream));
            for group in named {
                if !self.upstreams.iter().any(|u| &u.name == group) {
                    let names: Vec<_> = self.upstreams.iter().map(|u| u.name.as_str()).collect();
                    return Err(invalid(at(&format!("\"{group}\"")), "listener.upstream", format!("listener on tcp_port {}: upstream \"{group}\" names no [[upstream]] group (have: {})", l.tcp_port, names.join(", "))));
                }
            }
            if let Some(r) = l.routes.iter().find(|r| !r.path_prefix.starts_with('/')) {
                return Err(invalid(
                    at(&r.path_prefix),
                    "listener.route.path_prefix",
                    format!(
                        "route path_prefix = \"{}\" must start with '/'",
                        r.path_prefix
                    ),
                ));
            }
            if self
                .listeners
                .iter()
                .filter(|o| o.port == l.port && o.tcp_port == l.tcp_port)
                .count()
                > 1
            {
                return Err(invalid(
                    lat,
                    "listener.tcp_port",
                    format!("two listeners on port '{}' tcp_port {}", l.port, l.tcp_port),
                ));
            }
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&self.logging.level.as_str()) {
            return Err(invalid(
                at("level"),
                "logging.level",
                format!(
                    "logging.level = \"{}\": use error, warn, info, debug or trace",
                    self.logging.level
                ),
            ));
        }
        if !self.management.address.is_empty()
            && self
                .management
                .address
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return Err(invalid(at(&self.management.address), "management.address", format!("management.address = \"{}\" is not IP:port (e.g. \"127.0.0.1:9090\"; \"\" turns it off)", self.management.address)));
        }
        for (i, u) in self.upstreams.iter().enumerate() {
            let uat = Place::new("upstream", i).line(text, "name");
            if self.upstreams[..i].iter().any(|o| o.name == u.name) {
                return Err(invalid(
                    uat,
                    "upstream.name",
                    format!("upstream group name '{}' is used twice", u.name),
                ));
            }
            let Some(port) = self.ports.iter().find(|p| p.name == u.port) else {
                return Err(invalid(
                    at(&format!("\"{}\"", u.port)),
                    "upstream.port",
                    format!(
                        "upstream '{}': port = \"{}\" names no [[port]]",
                        u.name, u.port
                    ),
                ));
            };
            if u.servers.is_empty() {
                return Err(invalid(
                    Place::new("upstream", i).line(text, "servers"),
                    "upstream.servers",
                    format!("upstream '{}': servers is empty", u.name),
                ));
            }
            if u.servers.iter().all(|s| s.backup) {
                return Err(invalid(
                    Place::new("upstream", i).line(text, "servers"),
                    "upstream.servers.backup",
                    format!("upstream '{}': every server is a backup (backup = true); a backup takes traffic only while no primary is up, so the group needs at least one server without backup = true", u.name),
                ));
            }
            for s in &u.servers {
                if s.weight == 0 || s.weight > 1000 {
                    return Err(invalid(
                        at(&s.address.to_string()),
                        "upstream.servers.weight",
                        format!(
                            "upstream '{}': server {} weight must be 1..=1000",
                            u.name, s.address
                        ),
                    ));
                }
                if let Some(problem) = super::upstream6::server_problem(s.address, port) {
                    return Err(invalid(
                        at(&s.given),
                        "upstream.servers.address",
                        format!("upstream '{}': server {} {problem}", u.name, s.address),
                    ));
                }
            }
            let [lo, hi] = u.local_ports;
            if lo == 0 || lo > hi {
                return Err(invalid(at("local_ports"), "upstream.local_ports", format!("upstream '{}': local_ports = [{lo}, {hi}] must be an ascending range of non-zero ports", u.name)));
            }
            if self
                .listeners
                .iter()
                .any(|l| l.port == u.port && (lo..=hi).contains(&l.tcp_port))
            {
                return Err(invalid(
                    at("local_ports"),
                    "upstream.local_ports",
                    format!(
                        "upstream '{}': local_ports [{lo}, {hi}] overlap a listener on port '{}'",
                        u.name, u.port
                    ),
                ));
            }
            if let Some(h) = &u.health_check {
                if h.interval_ms < 100
                    || h.timeout_ms == 0
                    || h.timeout_ms > h.interval_ms
                    || h.fall == 0
                    || h.rise == 0
                {
                    return Err(invalid(at("health_check"), "upstream.health_check", format!("upstream '{}': health_check needs interval_ms >= 100, 0 < timeout_ms <= interval_ms, fall and rise >= 1", u.name)));
                }
                if !h.path.starts_with('/') {
                    return Err(invalid(
                        at(&h.path),
                        "upstream.health_check.path",
                        format!(
                            "upstream '{}': health_check path must start with '/'",
                            u.name
                        ),
                    ));
                }
            }
            if u.connect_timeout_ms == 0 || u.read_timeout_ms == 0 {
                return Err(invalid(
                    uat,
                    if u.connect_timeout_ms == 0 {
                        "upstream.connect_timeout_ms"
                    } else {
                        "upstream.read_timeout_ms"
                    },
                    format!("upstream '{}': timeouts must be > 0 ms", u.name),
                ));
            }
        }
        self.validate_rate_limits(text)?;
        self.validate_durations(&at)
    }

    /// Durations become microseconds (ms * 1000) and deadlines (now +
    /// duration) on the data path: bounded here so neither can overflow.
    fn validate_durations(&self, at: &dyn Fn(&str) -> Option<usize>) -> Result<(), ConfigError> {
        // (key, how the message names it, value)
        let mut durations = vec![(
            "management.drain_timeout_ms",
            "management.drain_timeout_ms".to_owned(),
            self.management.drain_timeout_ms,
        )];
        for l in &self.listeners {
            let on = format!("listener on tcp_port {}: ", l.tcp_port);
            durations.push((
                "listener.idle_timeout_ms",
                format!("{on}idle_timeout_ms"),
                l.idle_timeout_ms,
            ));
            durations.push((
                "listener.header_timeout_ms",
                format!("{on}header_timeout_ms"),
                l.header_timeout_ms,
            ));
        }
        for u in &self.upstreams {
            let on = format!("upstream '{}': ", u.name);
            durations.push((
                "upstream.connect_timeout_ms",
                format!("{on}connect_timeout_ms"),
                u.connect_timeout_ms,
            ));
            durations.push((
                "upstream.read_timeout_ms",
                format!("{on}read_timeout_ms"),
                u.read_timeout_ms,
            ));
            if let Some(h) = &u.health_check {
                durations.push((
                    "upstream.health_check.interval_ms",
                    format!("{on}health_check interval_ms"),
                    h.interval_ms,
                ));
                durations.push((
                    "upstream.health_check.timeout_ms",
                    format!("{on}health_check timeout_ms"),
                    h.timeout_ms,
                ));
            }
        }
        match durations.iter().find(|(_, _, ms)| *ms > MAX_DURATION_MS) {
            Some((key, name, ms)) => Err(invalid(
                at(&ms.to_string()),
                key,
                format!("{name} = {ms}: at most {MAX_DURATION_MS} ms (30 days)"),
            )),
            None => Ok(()),
        }
    }
}
