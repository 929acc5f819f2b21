//! The management endpoint: `/metrics` (Prometheus text) and `/stats`
//! (JSON), served from a non-blocking kernel socket polled by the control
//! thread. It reads the workers' published counters; it never touches the
//! data path.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use crate::app::proxy::engine::UpstreamStat;
use crate::net::counters::{Counter, SharedCounters};

/// Values the control thread samples for each scrape, besides worker counters.
pub struct Gauges {
    pub mbufs_in_use: u32,
    pub mbufs_total: u32,
    pub draining: bool,
    pub uptime_s: u64,
    pub upstreams: Vec<UpstreamStat>,
    pub reload: ReloadStatus,
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
    let (status, ctype, body) = match path {
        "/metrics" => (
            "200 OK",
            "text/plain; version=0.0.4",
            prometheus(workers, gauges),
        ),
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

/// Counters are monotonic except these, which are gauges.
fn is_gauge(c: Counter) -> bool {
    matches!(
        c,
        Counter::FlowsActive | Counter::TimeWaitEntries | Counter::UpstreamPooled
    )
}

/// (metric name, Prometheus type, value of one server).
type UpstreamSeries = (&'static str, &'static str, fn(&UpstreamStat) -> String);

pub fn prometheus(workers: &[&SharedCounters], g: &Gauges) -> String {
    let mut out = String::new();
    out += "# TYPE zproxy_proxy_failures_total counter\n";
    for &c in Counter::ALL {
        let Some(cause) = c.failure_cause() else {
            continue;
        };
        for (i, w) in workers.iter().enumerate() {
            out += &format!(
                "zproxy_proxy_failures_total{{worker=\"{i}\",cause=\"{cause}\"}} {}\n",
                w.get(c)
            );
        }
    }
    for &c in Counter::ALL.iter().filter(|c| c.failure_cause().is_none()) {
        let kind = if is_gauge(c) { "gauge" } else { "counter" };
        let name = if is_gauge(c) {
            format!("zproxy_{}", c.name())
        } else {
            format!("zproxy_{}_total", c.name())
        };
        out += &format!("# TYPE {name} {kind}\n");
        for (i, w) in workers.iter().enumerate() {
            out += &format!("{name}{{worker=\"{i}\"}} {}\n", w.get(c));
        }
    }
    out += &format!(
        "# TYPE zproxy_mbufs_in_use gauge\nzproxy_mbufs_in_use {}\n",
        g.mbufs_in_use
    );
    out += &format!(
        "# TYPE zproxy_mbufs gauge\nzproxy_mbufs {}\n",
        g.mbufs_total
    );
    out += &format!(
        "# TYPE zproxy_draining gauge\nzproxy_draining {}\n",
        u8::from(g.draining)
    );
    out += &format!(
        "# TYPE zproxy_uptime_seconds gauge\nzproxy_uptime_seconds {}\n",
        g.uptime_s
    );
    let series: [UpstreamSeries; 6] = [
        ("zproxy_upstream_requests_total", "counter", |u| {
            u.requests.to_string()
        }),
        ("zproxy_upstream_connect_failures_total", "counter", |u| {
            u.connect_failures.to_string()
        }),
        ("zproxy_upstream_active", "gauge", |u| u.active.to_string()),
        ("zproxy_upstream_healthy", "gauge", |u| {
            u8::from(u.healthy && !u.retired).to_string()
        }),
        ("zproxy_upstream_response_seconds_sum", "counter", |u| {
            format!("{:.6}", u.response_us_sum as f64 / 1e6)
        }),
        ("zproxy_upstream_response_seconds_count", "counter", |u| {
            u.responses.to_string()
        }),
    ];
    for (name, kind, value) in series {
        out += &format!("# TYPE {name} {kind}\n");
        for u in &g.upstreams {
            out += &format!(
                "{name}{{group=\"{}\",server=\"{}\"}} {}\n",
                u.group,
                u.server,
                value(u)
            );
        }
    }
    out
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
                "{{\"group\":\"{}\",\"server\":\"{}\",\"requests\":{},\"connect_failures\":{},\"active\":{},\"healthy\":{},\"retired\":{},\"avg_response_ms\":{:.3}}}",
                u.group,
                u.server,
                u.requests,
                u.connect_failures,
                u.active,
                u.healthy,
                u.retired,
                u.response_us_sum as f64 / 1000.0 / u.responses.max(1) as f64
            )
        })
        .collect();
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
    format!(
        "{{{reload}\"uptime_s\":{},\"draining\":{},\"mbufs_in_use\":{},\"mbufs\":{},\"workers\":[{}],\"upstreams\":[{}]}}\n",
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
            upstreams: vec![UpstreamStat {
                group: "web".into(),
                server: "10.0.0.1:80".parse().unwrap(),
                requests: 5,
                connect_failures: 1,
                active: 2,
                healthy: true,
                retired: false,
                response_us_sum: 1500,
                responses: 3,
            }],
        };
        for (path, want) in [
            ("/stats", "\"server\":\"10.0.0.1:80\",\"requests\":5,\"connect_failures\":1,\"active\":2,\"healthy\":true,\"retired\":false,\"avg_response_ms\":0.500"),
            ("/metrics", "zproxy_upstream_requests_total{group=\"web\",server=\"10.0.0.1:80\"} 5\n"),
            ("/metrics", "zproxy_upstream_response_seconds_sum{group=\"web\",server=\"10.0.0.1:80\"} 0.001500\n"),
            ("/metrics", "zproxy_requests_total{worker=\"0\"} 0\n"),
            ("/stats", "\"mbufs_in_use\":7"),
            ("/stats", "\"reload\":{\"attempts\":2,\"refused\":1,\"last_ok\":false,\"last_unix_s\":9,\"last_message\":\"runtime.mbufs \\\"x\\\" changed\"}"),
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
