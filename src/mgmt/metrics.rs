//! `/metrics`: every figure in the Prometheus text format (0.0.4), encoded
//! by `prometheus-client` (names, HELP, TYPE, label escaping, histogram
//! series) on the control thread, once per scrape. The figures are sampled
//! into a `Snapshot` first, then encoded by a one-shot collector.

use std::fmt;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::help::{counter_help, metric_name};
use super::{Gauges, ReloadStatus};
use crate::app::proxy::engine::UpstreamStat;
use crate::app::proxy::session::Cause;
use crate::app::stats::{self, HistogramTotals, ListenerTotals, STATUS_CLASSES};
use crate::dpdk::{PortStats, QueueStats};
use crate::net::counters::{Counter, SharedCounters, N_COUNTERS};

pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Label values fixed at start: listeners and ports as the config names them.
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// By listener index: "port:tcp_port" (the config's listeners have no name).
    pub listeners: Vec<String>,
    /// By port index: the config's port names.
    pub ports: Vec<String>,
}

impl Names {
    pub fn of(cfg: &crate::config::Config) -> Names {
        Names {
            listeners: cfg.listeners.iter().map(|l| l.label()).collect(),
            ports: cfg.ports.iter().map(|p| p.name.clone()).collect(),
        }
    }
}

/// One mbuf pool's occupancy.
#[derive(Debug, Clone)]
pub struct PoolSample {
    pub name: String,
    pub in_use: u32,
    pub size: u32,
}

/// Everything one scrape shows, sampled before encoding.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Each worker's stack counters, by `Counter`.
    pub workers: Vec<[u64; N_COUNTERS]>,
    /// The control core's counters (the exception path's), if it has any.
    pub control: Option<[u64; N_COUNTERS]>,
    /// Each worker's share of busy cycles over the last window.
    pub busy_ratio: Vec<f64>,
    pub listeners: Vec<(String, ListenerTotals)>,
    pub upstreams: Vec<UpstreamStat>,
    /// Port name and its stats read now (`None`: the driver refused).
    pub ports: Vec<(String, Option<PortStats>)>,
    pub pools: Vec<PoolSample>,
    pub draining: bool,
    pub uptime_s: u64,
    pub reload: ReloadStatus,
    /// `[announce]`'s state, when configured.
    pub announce: Option<crate::announce::Status>,
}

impl Snapshot {
    /// Samples the workers' counters and what `g` points at (NIC counters
    /// are read from the devices here).
    pub fn take(workers: &[&SharedCounters], g: &Gauges) -> Snapshot {
        let s = &g.sources;
        let totals = stats::totals(s.names.listeners.len(), s.requests.iter().map(|r| &**r));
        Snapshot {
            workers: workers
                .iter()
                .map(|w| std::array::from_fn(|i| w.get(Counter::ALL[i])))
                .collect(),
            control: s
                .control
                .map(|w| std::array::from_fn(|i| w.get(Counter::ALL[i]))),
            busy_ratio: s.busy_ratio.to_vec(),
            listeners: s.names.listeners.iter().cloned().zip(totals).collect(),
            upstreams: g.upstreams.clone(),
            ports: s
                .names
                .ports
                .iter()
                .zip(s.ports)
                .map(|(name, p)| (name.clone(), p.stats().ok()))
                .collect(),
            pools: s
                .pools
                .iter()
                .map(|p| PoolSample {
                    name: p.name().to_owned(),
                    in_use: p.in_use(),
                    size: p.size(),
                })
                .collect(),
            draining: g.draining,
            uptime_s: g.uptime_s,
            reload: g.reload.clone(),
            announce: g.announce.clone(),
        }
    }

    /// The exposition text.
    pub fn encode(self) -> String {
        let mut registry = Registry::with_prefix("zproxy");
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        // Writing into a String cannot fail, nor can the collector.
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry) {
            log::error!("encoding /metrics failed: {e}");
        }
        out
    }
}

pub fn prometheus(workers: &[&SharedCounters], g: &Gauges) -> String {
    Snapshot::take(workers, g).encode()
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// A value of one series.
enum Value<'a> {
    Counter(u64),
    /// A counter of seconds (or another fractional unit).
    CounterF(f64),
    Gauge(u64),
    /// A gauge of a fraction or fractional unit.
    GaugeF(f64),
    Histogram(&'a HistogramTotals),
}

/// Writes one metric family: HELP, TYPE and its series.
fn family<'a>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (Labels<'a>, Value<'a>)>,
) -> fmt::Result {
    let mut series = series.into_iter().peekable();
    // A family without series is left out (as client_golang does), so
    // that its type can follow from its values.
    let kind = match series.peek() {
        None => return Ok(()),
        Some((_, Value::Counter(_) | Value::CounterF(_))) => MetricType::Counter,
        Some((_, Value::Histogram(_))) => MetricType::Histogram,
        Some((_, Value::Gauge(_) | Value::GaugeF(_))) => MetricType::Gauge,
    };
    let mut metric = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in series {
        let mut m = metric.encode_family(&labels)?;
        match value {
            Value::Counter(v) => m.encode_counter::<NoLabelSet, _, u64>(&v, None)?,
            Value::CounterF(v) => m.encode_counter::<NoLabelSet, _, u64>(&v, None)?,
            Value::Gauge(v) => m.encode_gauge(&v)?,
            Value::GaugeF(v) => m.encode_gauge(&v)?,
            Value::Histogram(h) => {
                m.encode_histogram::<NoLabelSet>(
                    h.sum_us as f64 / 1e6,
                    h.count(),
                    &h.buckets_s(),
                    None,
                )?;
            }
        }
    }
    Ok(())
}

/// A family of one series without labels.
fn single(enc: &mut DescriptorEncoder, name: &str, help: &str, v: Value) -> fmt::Result {
    family(enc, name, help, [(Labels::new(), v)])
}

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        self.encode_requests(&mut enc)?;
        self.encode_workers(&mut enc)?;
        self.encode_upstreams(&mut enc)?;
        self.encode_announce(&mut enc)?;
        self.encode_nic(&mut enc)?;
        self.encode_process(&mut enc)
    }
}

impl Snapshot {
    fn encode_requests(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let per_listener = || self.listeners.iter().map(|(n, t)| (n.as_str(), t));
        family(
            enc,
            "http_requests",
            "HTTP requests finished, by listener and status class of the response sent (none: the connection was cut before a response).",
            per_listener().flat_map(|(l, t)| {
                STATUS_CLASSES.iter().zip(t.requests).map(move |(class, n)| {
                    (vec![("listener", l), ("status", *class)], Value::Counter(n))
                })
            }),
        )?;
        family(
            enc,
            "tcp_connections",
            "Connections of tcp-mode listeners finished, by listener.",
            per_listener().map(|(l, t)| (vec![("listener", l)], Value::Counter(t.tcp_connections))),
        )?;
        family(
            enc,
            "exchange_failures",
            "HTTP requests and tcp connections that ended on a failure, by listener and cause.",
            per_listener().flat_map(|(l, t)| {
                Cause::ALL.iter().zip(t.failures).map(move |(c, n)| {
                    (
                        vec![("listener", l), ("cause", c.label())],
                        Value::Counter(n),
                    )
                })
            }),
        )?;
        family(
            enc,
            "http_request_duration_seconds",
            "Time from a request's first byte to the end of its response, by listener.",
            per_listener().map(|(l, t)| (vec![("listener", l)], Value::Histogram(&t.request_time))),
        )?;
        family(
            enc,
            "http_upstream_response_duration_seconds",
            "Time from a proxied request's first byte to the upstream's response head, by listener.",
            per_listener().map(|(l, t)| {
                (vec![("listener", l)], Value::Histogram(&t.upstream_response_time))
            }),
        )
    }

    fn encode_workers(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let indices: Vec<String> = (0..self.workers.len()).map(|i| i.to_string()).collect();
        let per_worker = || indices.iter().map(String::as_str).zip(&self.workers);
        family(
            enc,
            "proxy_failures",
            "Proxied exchanges that failed, by worker and cause.",
            per_worker().flat_map(|(w, values)| {
                Counter::ALL.iter().filter_map(move |&c| {
                    let cause = c.failure_cause()?;
                    let v = Value::Counter(values[c as usize]);
                    Some((vec![("worker", w), ("cause", cause)], v))
                })
            }),
        )?;
        for &c in Counter::ALL.iter().filter(|c| c.failure_cause().is_none()) {
            let gauge = is_gauge(c);
            // The control core counts only the exception path's frames.
            let control = self
                .control
                .iter()
                .filter(|_| is_control(c))
                .map(|v| ("control", v));
            family(
                enc,
                metric_name(c),
                counter_help(c),
                per_worker().chain(control).map(|(w, values)| {
                    let v = values[c as usize];
                    let v = if gauge {
                        Value::Gauge(v)
                    } else {
                        Value::Counter(v)
                    };
                    (vec![("worker", w)], v)
                }),
            )?;
        }
        family(
            enc,
            "worker_busy_ratio",
            "Share of a worker's cycles spent in loop iterations that found work, over the last second.",
            per_worker()
                .zip(&self.busy_ratio)
                .map(|((w, _), r)| (vec![("worker", w)], Value::GaugeF(*r))),
        )
    }

    fn encode_announce(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        let Some(a) = &self.announce else {
            return Ok(());
        };
        let labels = || vec![("vip", a.vip.as_str()), ("protocol", a.protocol.as_str())];
        family(
            enc,
            "announce_vip_announced",
            "1 while BIRD has confirmed the VIP's static protocol enabled (announced), else 0.",
            [(labels(), Value::Gauge(u64::from(a.announced)))],
        )?;
        family(
            enc,
            "announce_transitions",
            "Announcements and withdrawals of the VIP that BIRD confirmed.",
            [(labels(), Value::Counter(a.transitions))],
        )?;
        family(
            enc,
            "announce_errors",
            "Commands to BIRD that failed (unreachable, refused); each is retried.",
            [(labels(), Value::Counter(a.errors))],
        )
    }

    fn encode_upstreams(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        type Series = (
            &'static str,
            &'static str,
            fn(&UpstreamStat) -> Value<'static>,
        );
        let series: [Series; 7] = [
            ("upstream_up", "1 if the server is in rotation (healthy, not retired by a reload), else 0.", |u| {
                Value::Gauge(u64::from(u.healthy && !u.retired))
            }),
            ("upstream_backup", "1 if the server is a backup (takes traffic only while no primary of its group is up), else 0.", |u| {
                Value::Gauge(u64::from(u.backup))
            }),
            ("upstream_active_connections", "Connections open to the server.", |u| {
                Value::Gauge(u64::from(u.active))
            }),
            ("upstream_requests", "Requests and connections sent to the server.", |u| {
                Value::Counter(u.requests)
            }),
            ("upstream_connect_failures", "Connections to the server that failed.", |u| {
                Value::Counter(u.connect_failures)
            }),
            ("upstream_responses", "Response heads received from the server.", |u| {
                Value::Counter(u.responses)
            }),
            ("upstream_response_seconds", "Time to the response head summed over the server's responses (divide by upstream_responses_total for the mean).", |u| {
                Value::CounterF(u.response_us_sum as f64 / 1e6)
            }),
        ];
        let servers: Vec<String> = self
            .upstreams
            .iter()
            .map(|u| u.server.to_string())
            .collect();
        for (name, help, value) in series {
            family(
                enc,
                name,
                help,
                self.upstreams.iter().zip(&servers).map(|(u, s)| {
                    (
                        vec![("group", u.group.as_str()), ("server", s.as_str())],
                        value(u),
                    )
                }),
            )?;
        }
        let mut groups: Vec<(&str, u64)> = Vec::new();
        for u in &self.upstreams {
            let sent = if u.backup { u.requests } else { 0 };
            match groups.iter_mut().find(|(g, _)| *g == u.group) {
                Some((_, n)) => *n += sent,
                None => groups.push((u.group.as_str(), sent)),
            }
        }
        family(
            enc,
            "upstream_backup_requests",
            "Requests and connections the group sent to its backup servers (its primaries were down or had failed them).",
            groups
                .into_iter()
                .map(|(g, n)| (vec![("group", g)], Value::Counter(n))),
        )
    }
}

/// Stack counters that go up and down.
/// Counted by the control core's exception path (besides the workers).
fn is_control(c: Counter) -> bool {
    matches!(
        c,
        Counter::ExceptionFromKernel | Counter::ExceptionTxDrops | Counter::ExceptionKernelDrops
    )
}

fn is_gauge(c: Counter) -> bool {
    matches!(
        c,
        Counter::FlowsActive
            | Counter::SlotsBuilt
            | Counter::TimeWaitEntries
            | Counter::UpstreamPooled
            | Counter::RateLimitEntries
            | Counter::ConnRateLimitEntries
            | Counter::AdmitFlowLimit
            | Counter::AdmitBacklogMs
            | Counter::SynBacklog
            | Counter::WorkerBehind
    )
}

impl Snapshot {
    fn encode_nic(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        type Field = (&'static str, &'static str, fn(&PortStats) -> u64);
        let port_fields: [Field; 8] = [
            ("nic_rx_packets", "Frames the port received (ethdev ipackets).", |s| s.rx_packets),
            ("nic_tx_packets", "Frames the port sent (ethdev opackets).", |s| s.tx_packets),
            ("nic_rx_bytes", "Bytes the port received (ethdev ibytes).", |s| s.rx_bytes),
            ("nic_tx_bytes", "Bytes the port sent (ethdev obytes).", |s| s.tx_bytes),
            ("nic_rx_missed", "Frames the port dropped because no rx descriptor was free (ethdev imissed): the workers did not keep up.", |s| s.rx_missed),
            ("nic_rx_errors", "Erroneous frames the port received (ethdev ierrors).", |s| s.rx_errors),
            ("nic_tx_errors", "Frames the port failed to send (ethdev oerrors).", |s| s.tx_errors),
            ("nic_rx_nombuf", "Receive failures for want of an mbuf (ethdev rx_nombuf): the pool is too small.", |s| s.rx_nombuf),
        ];
        let read: Vec<(&str, &PortStats)> = self
            .ports
            .iter()
            .filter_map(|(n, s)| Some((n.as_str(), s.as_ref()?)))
            .collect();
        for (name, help, value) in port_fields {
            family(
                enc,
                name,
                help,
                read.iter()
                    .map(|(port, s)| (vec![("port", *port)], Value::Counter(value(s)))),
            )?;
        }
        type QueueField = (&'static str, &'static str, fn(&QueueStats) -> u64);
        let queue_fields: [QueueField; 5] = [
            ("nic_queue_rx_packets", "Frames received on one rx queue (ethdev q_ipackets; 0 where the driver does not count per queue).", |q| q.rx_packets),
            ("nic_queue_tx_packets", "Frames sent on one tx queue (ethdev q_opackets).", |q| q.tx_packets),
            ("nic_queue_rx_bytes", "Bytes received on one rx queue (ethdev q_ibytes).", |q| q.rx_bytes),
            ("nic_queue_tx_bytes", "Bytes sent on one tx queue (ethdev q_obytes).", |q| q.tx_bytes),
            ("nic_queue_rx_errors", "Erroneous frames on one rx queue (ethdev q_errors).", |q| q.rx_errors),
        ];
        let max_queues = read
            .iter()
            .map(|(_, s)| s.queues().len())
            .max()
            .unwrap_or(0);
        let queue_names: Vec<String> = (0..max_queues).map(|q| q.to_string()).collect();
        for (name, help, value) in queue_fields {
            family(
                enc,
                name,
                help,
                read.iter().flat_map(|(port, s)| {
                    s.queues().iter().zip(&queue_names).map(move |(q, n)| {
                        (
                            vec![("port", *port), ("queue", n.as_str())],
                            Value::Counter(value(q)),
                        )
                    })
                }),
            )?;
        }
        Ok(())
    }

    fn encode_process(&self, enc: &mut DescriptorEncoder) -> fmt::Result {
        family(
            enc,
            "mbufs_in_use",
            "Mbufs of the pool out of it now (in rings, flows and caches).",
            self.pools.iter().map(|p| {
                (
                    vec![("pool", p.name.as_str())],
                    Value::Gauge(u64::from(p.in_use)),
                )
            }),
        )?;
        family(
            enc,
            "mbufs",
            "Mbufs the pool holds in all.",
            self.pools.iter().map(|p| {
                (
                    vec![("pool", p.name.as_str())],
                    Value::Gauge(u64::from(p.size)),
                )
            }),
        )?;
        single(
            enc,
            "draining",
            "1 while draining after SIGTERM, else 0.",
            Value::Gauge(u64::from(self.draining)),
        )?;
        single(
            enc,
            "uptime_seconds",
            "Seconds since the appliance started.",
            Value::Gauge(self.uptime_s),
        )?;
        let r = &self.reload;
        single(
            enc,
            "reloads",
            "Config reloads tried (SIGHUP).",
            Value::Counter(r.attempts),
        )?;
        single(
            enc,
            "reloads_refused",
            "Config reloads refused (the running config stayed).",
            Value::Counter(r.refused),
        )?;
        // As Prometheus does for its own config: the one loaded at start counts as a success.
        single(
            enc,
            "reload_last_success",
            "1 if the last reload was applied (or none was tried), 0 if it was refused.",
            Value::Gauge(u64::from(r.last_ok || r.attempts == 0)),
        )?;
        single(
            enc,
            "reload_last_timestamp_seconds",
            "When the last reload was tried (Unix time; 0: never).",
            Value::Gauge(r.last_unix_s),
        )
    }
}

#[cfg(test)]
#[path = "metrics_tests.rs"]
mod tests;
