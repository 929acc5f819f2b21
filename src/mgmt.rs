//! The management endpoint: `/metrics` (Prometheus text, `metrics`) and
//! `/stats` (JSON), served from a non-blocking kernel socket polled by the
//! control thread. It reads the workers' published counters and request
//! metrics, and the NIC counters when asked; it never touches the data path.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use std::sync::Arc;

use crate::app::proxy::engine::UpstreamStat;
use crate::app::stats::RequestStats;
use crate::dpdk::{Mempool, Port};
use crate::net::counters::SharedCounters;

mod busy;
mod help;
pub mod metrics;

pub use busy::BusyWindow;
pub use metrics::{prometheus, Names};

/// Values the control thread samples for each scrape, besides worker counters.
pub struct Gauges<'a> {
    pub mbufs_in_use: u32,
    pub mbufs_total: u32,
    pub draining: bool,
    pub uptime_s: u64,
    pub upstreams: Vec<UpstreamStat>,
    pub reload: ReloadStatus,
    /// `[announce]`'s state, when configured.
    pub announce: Option<crate::announce::Status>,
    /// What `/metrics` reads only when it is asked.
    pub sources: Sources<'a>,
}

/// Where `/metrics` reads its figures at scrape time.
pub struct Sources<'a> {
    pub names: &'a Names,
    /// The ports, in the order of `names.ports` (NIC counters are read live).
    pub ports: &'a [Port],
    pub pools: &'a [Arc<Mempool>],
    /// Each worker's request metrics.
    pub requests: &'a [Arc<RequestStats>],
    /// Each worker's busy share (`BusyWindow`).
    pub busy_ratio: &'a [f64],
    /// The control core's counters (the exception path), when it has any.
    pub control: Option<&'a SharedCounters>,
    /// Where `/capture` posts a session for the workers.
    pub capture: Option<&'a Arc<crate::capture::Board>>,
}

impl Sources<'static> {
    /// Nothing to read (tests, and before anything runs).
    pub fn none() -> Self {
        static NO_NAMES: Names = Names {
            listeners: Vec::new(),
            ports: Vec::new(),
        };
        Sources {
            names: &NO_NAMES,
            ports: &[],
            pools: &[],
            requests: &[],
            busy_ratio: &[],
            control: None,
            capture: None,
        }
    }
}

/// What the SIGHUP reloads so far did (kept by the control thread).
#[derive(Debug, Clone, Default)]
pub struct ReloadStatus {
    /// Reloads tried, and how many of them were refused.
    pub attempts: u64,
    pub refused: u64,
    /// The last one: applied (`true`) or refused, when (Unix seconds), and
    /// the message logged for it.
    pub last_ok: bool,
    pub last_unix_s: u64,
    pub last_message: String,
}

pub struct Endpoint {
    listener: TcpListener,
}

/// Longest a scraper may take to send its request line.
const READ_TIMEOUT: Duration = Duration::from_millis(200);

impl Endpoint {
    pub fn bind(address: &str) -> std::io::Result<Endpoint> {
        let listener = TcpListener::bind(address)?;
        listener.set_nonblocking(true)?;
        Ok(Endpoint { listener })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    /// Answers the connections waiting now (one request each).
    pub fn poll(&self, workers: &[&SharedCounters], gauges: &Gauges) {
        while let Ok((stream, _)) = self.listener.accept() {
            if let Err(e) = serve(stream, workers, gauges) {
                log::debug!("management request: {e}");
            }
        }
    }
}

fn serve(
    mut stream: TcpStream,
    workers: &[&SharedCounters],
    gauges: &Gauges,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    // The whole head: a request may come in several segments, and closing
    // with unread bytes would reset the connection under the answer.
    let mut buf = [0u8; 1024];
    let mut n = 0;
    let deadline = std::time::Instant::now() + READ_TIMEOUT;
    while n < buf.len()
        && !buf[..n].windows(4).any(|w| w == b"\r\n\r\n")
        && std::time::Instant::now() < deadline
    {
        match stream.read(&mut buf[n..])? {
            0 => break,
            got => n += got,
        }
    }
    let request = std::str::from_utf8(&buf[..n]).unwrap_or("");
    let path = request.split_whitespace().nth(1).unwrap_or("");
    if let (Some(query), Some(board)) = (path.strip_prefix("/capture?"), gauges.sources.capture) {
        let ports = &gauges.sources.names.ports;
        crate::capture::serve::start(stream, query, ports, workers.len(), board);
        return Ok(());
    }
    let (status, ctype, body) = match path {
        "/metrics" => ("200 OK", metrics::CONTENT_TYPE, prometheus(workers, gauges)),
        "/stats" => ("200 OK", "application/json", json(workers, gauges)),
        _ => (
            "404 Not Found",
            "text/plain",
            "try /metrics or /stats\n".to_owned(),
        ),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

pub fn json(workers: &[&SharedCounters], g: &Gauges) -> String {
    let per_worker: Vec<String> = workers
        .iter()
        .map(|w| {
            let fields: Vec<String> = w
                .snapshot()
                .iter()
                .map(|(k, v)| format!("\"{k}\":{v}"))
                .collect();
            format!("{{{}}}", fields.join(","))
        })
        .collect();
    let upstreams: Vec<String> = g
        .upstreams
        .iter()
        .map(|u| {
            format!(
                "{{\"group\":\"{}\",\"server\":\"{}\",\"requests\":{},\"connect_failures\":{},\"active\":{},\"healthy\":{},\"retired\":{},\"backup\":{},\"avg_response_ms\":{:.3}}}",
                u.group,
                u.server,
                u.requests,
                u.connect_failures,
                u.active,
                u.healthy,
                u.retired,
                u.backup,
                u.response_us_sum as f64 / 1000.0 / u.responses.max(1) as f64
            )
        })
        .collect();
    let control = g.sources.control.map_or(String::new(), |c| {
        let fields: Vec<String> = c
            .snapshot()
            .iter()
            .filter(|(k, _)| k.starts_with("exception_"))
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!("\"control\":{{{}}},", fields.join(","))
    });
    let r = &g.reload;
    // What `zproxy reload` needs: whom to signal, and the outcome to wait for.
    let reload = format!(
        "\"pid\":{},\"reload\":{{\"attempts\":{},\"refused\":{},\"last_ok\":{},\"last_unix_s\":{},\"last_message\":{}}},",
        std::process::id(),
        r.attempts,
        r.refused,
        r.last_ok,
        r.last_unix_s,
        serde_json::Value::from(r.last_message.as_str())
    );
    let announce = match &g.announce {
        Some(a) => format!(
            "\"announce\":{{\"vip\":{},\"protocol\":{},\"announced\":{},\"transitions\":{},\"errors\":{}}},",
            serde_json::Value::from(a.vip.as_str()),
            serde_json::Value::from(a.protocol.as_str()),
            u8::from(a.announced),
            a.transitions,
            a.errors
        ),
        None => String::new(),
    };
    format!(
        "{{{reload}{control}{announce}\"uptime_s\":{},\"draining\":{},\"mbufs_in_use\":{},\"mbufs\":{},\"workers\":[{}],\"upstreams\":[{}]}}\n",
        g.uptime_s,
        g.draining,
        g.mbufs_in_use,
        g.mbufs_total,
        per_worker.join(","),
        upstreams.join(",")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_metrics_and_stats_over_loopback() {
        let ep = Endpoint::bind("127.0.0.1:0").unwrap();
        let addr = ep.local_addr().unwrap();
        let w = SharedCounters::default();
        let g = Gauges {
            mbufs_in_use: 7,
            mbufs_total: 100,
            draining: false,
            uptime_s: 3,
            reload: ReloadStatus {
                attempts: 2,
                refused: 1,
                last_ok: false,
                last_unix_s: 9,
                last_message: "runtime.mbufs \"x\" changed".into(),
            },
            sources: Sources::none(),
            announce: Some(crate::announce::Status {
                vip: "10.99.0.1/32".into(),
                protocol: "zproxy_vip".into(),
                announced: true,
                transitions: 1,
                errors: 0,
            }),
            upstreams: vec![UpstreamStat {
                group: "web".into(),
                server: "10.0.0.1:80".parse().unwrap(),
                requests: 5,
                connect_failures: 1,
                active: 2,
                healthy: true,
                retired: false,
                backup: true,
                response_us_sum: 1500,
                responses: 3,
            }],
        };
        for (path, want) in [
            ("/stats", "\"server\":\"10.0.0.1:80\",\"requests\":5,\"connect_failures\":1,\"active\":2,\"healthy\":true,\"retired\":false,\"backup\":true,\"avg_response_ms\":0.500"),
            ("/metrics", "zproxy_upstream_requests_total{group=\"web\",server=\"10.0.0.1:80\"} 5\n"),
            ("/metrics", "zproxy_upstream_response_seconds_total{group=\"web\",server=\"10.0.0.1:80\"} 0.0015\n"),
            ("/metrics", "zproxy_requests_total{worker=\"0\"} 0\n"),
            ("/stats", "\"mbufs_in_use\":7"),
            ("/stats", "\"reload\":{\"attempts\":2,\"refused\":1,\"last_ok\":false,\"last_unix_s\":9,\"last_message\":\"runtime.mbufs \\\"x\\\" changed\"}"),
            ("/stats", "\"announce\":{\"vip\":\"10.99.0.1/32\",\"protocol\":\"zproxy_vip\",\"announced\":1,\"transitions\":1,\"errors\":0}"),
            ("/metrics", "zproxy_announce_vip_announced{vip=\"10.99.0.1/32\",protocol=\"zproxy_vip\"} 1\n"),
            ("/nope", "404 Not Found"),
        ] {
            // The request is in the socket before the endpoint polls: no
            // thread and no timing involved.
            let mut client = TcpStream::connect(addr).unwrap();
            write!(client, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            ep.poll(&[&w], &g);
            let mut out = String::new();
            client.read_to_string(&mut out).unwrap();
            assert!(out.contains(want), "{path}: {out}");
            if path == "/stats" {
                let body = out.split_once("\r\n\r\n").unwrap().1;
                let v: serde_json::Value = serde_json::from_str(body).expect("valid JSON");
                assert_eq!(v["pid"], std::process::id());
            }
        }
        assert!(prometheus(&[&w], &g).contains("# TYPE zproxy_flows_active gauge"));
    }
}
