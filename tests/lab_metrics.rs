//! `/metrics` end to end in the netns lab: known traffic (200s, 404s from
//! the upstream, 502s from a refusing server) through two HTTP listeners,
//! the exposition parsed by the reference Python parser
//! (`tests/peers/prom_parse.py`, prometheus_client), and its figures
//! checked: requests by listener and status class, latency histograms that
//! moved by the number of requests, failures by cause, NIC counters equal
//! to the port's own (zproxy's exit line reads the same ethdev stats once
//! the lab is quiet), mbuf and flow gauges present.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::proxy::*;
use common::*;
use serde_json::Value;

const OK: usize = 20;
const NOT_FOUND: usize = 3;
const BAD_GATEWAY: usize = 2;

/// One scrape: sample values by name and labels (sorted "k=v" pairs).
struct Scrape {
    families: Value,
    samples: HashMap<(String, Vec<String>), f64>,
}

impl Scrape {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut key: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        key.sort();
        *self
            .samples
            .get(&(name.to_owned(), key.clone()))
            .unwrap_or_else(|| panic!("no sample {name}{key:?}"))
    }

    /// Every sample of `name` with its labels.
    fn all(&self, name: &str) -> Vec<(&Vec<String>, f64)> {
        self.samples
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|((_, l), v)| (l, *v))
            .collect()
    }
}

/// `zproxy stats --prometheus`, parsed by prometheus_client (the peer fails
/// on any parse error and on a family without HELP or TYPE).
fn scrape(lab: &Lab) -> Scrape {
    let text = lab.exec_ok(
        "proxy",
        [env!("CARGO_BIN_EXE_zproxy"), "stats", "--prometheus"],
    );
    // The Debian package's interpreter: another python3 first in PATH
    // (pyenv) would not see python3-prometheus-client.
    let mut parser = Command::new("/usr/bin/python3")
        .arg(repo_root().join("tests/peers/prom_parse.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run /usr/bin/python3 (tests/deps.sh installs python3-prometheus-client)");
    parser
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = parser.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client refused /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut samples = HashMap::new();
    for s in parsed["samples"].as_array().unwrap() {
        let mut labels: Vec<String> = s[1]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
            .collect();
        labels.sort();
        samples.insert(
            (s[0].as_str().unwrap().to_owned(), labels),
            s[2].as_f64().unwrap(),
        );
    }
    Scrape {
        families: parsed["families"].clone(),
        samples,
    }
}

fn get_n(lab: &Lab, port: u16, path: &str, n: usize, want: u32) {
    for _ in 0..n {
        let (status, body) = curl(lab, &[&url(port, path)]);
        assert_eq!(status, want, "GET :{port}{path}: {body}");
    }
}

#[test]
fn metrics_parse_and_count_the_traffic() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    // :81 goes to a server that refuses (nothing listens on port 9): 502.
    let body =
        web("") + &listener(81, "http", "dead") + &upstream("dead", &[("10.72.0.1:9", 1)], "");
    let z = ZProxy::start(&lab, "zproxy", &config(16384, &body));
    wait_proxy(&lab, &z, 80);
    let before = scrape(&lab);
    let web_l = ("listener", "client:80");
    let dead_l = ("listener", "client:81");
    get_n(&lab, 80, "/", OK, 200);
    get_n(&lab, 80, "/no-such-page", NOT_FOUND, 404);
    get_n(&lab, 81, "/", BAD_GATEWAY, 502);

    // Request metrics are written when an exchange ends, which may be just
    // after curl has its response.
    let requests =
        |s: &Scrape, l, class| s.get("zproxy_http_requests_total", &[l, ("status", class)]);
    let moved = |s: &Scrape, l, class| requests(s, l, class) - requests(&before, l, class);
    let mut after = scrape(&lab);
    wait_for(
        Duration::from_secs(5),
        "request metrics to count the traffic",
        || {
            after = scrape(&lab);
            moved(&after, web_l, "2xx") >= OK as f64
                && moved(&after, web_l, "4xx") >= NOT_FOUND as f64
                && moved(&after, dead_l, "5xx") >= BAD_GATEWAY as f64
        },
    );
    let s = &after;
    for (l, class, n) in [
        (web_l, "1xx", 0),
        (web_l, "2xx", OK),
        (web_l, "3xx", 0),
        (web_l, "4xx", NOT_FOUND),
        (web_l, "5xx", 0),
        (web_l, "none", 0),
        (dead_l, "2xx", 0),
        (dead_l, "5xx", BAD_GATEWAY),
    ] {
        assert_eq!(moved(s, l, class), n as f64, "{l:?} {class}");
    }
    let delta =
        |name: &str, labels: &[(&str, &str)]| s.get(name, labels) - before.get(name, labels);
    assert_eq!(
        delta(
            "zproxy_exchange_failures_total",
            &[dead_l, ("cause", "refused")]
        ),
        BAD_GATEWAY as f64
    );

    // Histograms: the count, the +Inf bucket and the 10 s bucket moved by
    // one per request; the sum by something.
    let h = "zproxy_http_request_duration_seconds";
    let web_requests = (OK + NOT_FOUND) as f64;
    assert_eq!(delta(&format!("{h}_count"), &[web_l]), web_requests);
    assert_eq!(
        delta(&format!("{h}_bucket"), &[web_l, ("le", "+Inf")]),
        web_requests
    );
    assert_eq!(
        delta(&format!("{h}_bucket"), &[web_l, ("le", "10")]),
        web_requests
    );
    assert!(delta(&format!("{h}_sum"), &[web_l]) > 0.0);
    assert_eq!(delta(&format!("{h}_count"), &[dead_l]), BAD_GATEWAY as f64);
    // Every request of :80 had an upstream response (nginx sent the 404s);
    // the refused ones of :81 had none.
    let u = "zproxy_http_upstream_response_duration_seconds";
    assert_eq!(delta(&format!("{u}_count"), &[web_l]), web_requests);
    assert_eq!(delta(&format!("{u}_count"), &[dead_l]), 0.0);
    // Buckets are cumulative: never decreasing with le.
    let mut buckets: Vec<(f64, f64)> = s
        .all(&format!("{h}_bucket"))
        .into_iter()
        .filter(|(l, _)| l.contains(&"listener=client:80".to_owned()))
        .map(|(l, v)| {
            let le = l.iter().find_map(|x| x.strip_prefix("le=")).unwrap();
            (le.parse::<f64>().unwrap(), v)
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");

    // Families the issue asks for, with their types.
    for (family, kind) in [
        ("zproxy_mbufs_in_use", "gauge"),
        ("zproxy_flows_active", "gauge"),
        ("zproxy_worker_busy_ratio", "gauge"),
        ("zproxy_upstream_up", "gauge"),
        ("zproxy_reloads", "counter"),
        ("zproxy_nic_rx_missed", "counter"),
        ("zproxy_nic_rx_nombuf", "counter"),
    ] {
        assert_eq!(s.families[family]["type"], kind, "{family}: {}", s.families);
    }
    assert!(!s.all("zproxy_mbufs_in_use").is_empty());
    assert_eq!(
        s.get(
            "zproxy_upstream_up",
            &[("group", "dead"), ("server", "10.72.0.1:9")]
        ) + s.get(
            "zproxy_upstream_up",
            &[("group", "web"), ("server", "10.72.0.1:80")]
        ),
        s.all("zproxy_upstream_up")
            .iter()
            .map(|(_, v)| v)
            .sum::<f64>()
    );

    // NIC counters against the port's own, read by zproxy's exit line once
    // the lab is quiet (two scrapes 300 ms apart agree).
    let nic = |s: &Scrape, port| {
        (
            s.get("zproxy_nic_rx_packets_total", &[("port", port)]),
            s.get("zproxy_nic_tx_packets_total", &[("port", port)]),
        )
    };
    let mut quiet = scrape(&lab);
    wait_for(Duration::from_secs(10), "the ports to go quiet", || {
        std::thread::sleep(Duration::from_millis(300));
        let next = scrape(&lab);
        let same = ["client", "upstream"]
            .iter()
            .all(|p| nic(&next, p) == nic(&quiet, p));
        quiet = next;
        same
    });
    for port in ["client", "upstream"] {
        let (rx, tx) = nic(&quiet, port);
        // Each request above took at least a frame each way on each port.
        assert!(
            rx >= OK as f64 && tx >= OK as f64,
            "{port}: rx {rx} tx {tx}"
        );
        // One queue pair: the queue's counters are the port's.
        let q = [("port", port), ("queue", "0")];
        assert_eq!(
            quiet.get("zproxy_nic_queue_rx_packets_total", &q),
            rx,
            "{port}"
        );
        assert_eq!(
            quiet.get("zproxy_nic_queue_tx_packets_total", &q),
            tx,
            "{port}"
        );
    }
    // zproxy resets the connections still open when it exits (the pooled
    // upstream ones): one more frame each after the last scrape.
    let open = quiet.get("zproxy_flows_active", &[("worker", "0")]) as u64;
    let log = stop_clean(z);
    let mut reset_at_exit = 0;
    for (port, vdev) in [("client", VDEV_CLIENT), ("upstream", VDEV_UPSTREAM)] {
        let (rx, tx) = nic(&quiet, port);
        let line = log
            .lines()
            .find(|l| l.contains(&format!("port {vdev}: rx ")))
            .unwrap_or_else(|| panic!("no exit line for {vdev}:\n{log}"));
        let exit_rx = counter_after(line, "rx ");
        let exit_tx = counter_after(line, "tx ");
        assert_eq!(exit_rx, rx as u64, "{port}: {line}");
        assert!(exit_tx >= tx as u64, "{port}: {line}");
        reset_at_exit += exit_tx - tx as u64;
    }
    assert_eq!(
        reset_at_exit, open,
        "frames sent at exit vs connections open"
    );
}

/// N in "... WHAT N frames" of zproxy's exit line of a port.
fn counter_after(line: &str, what: &str) -> u64 {
    line.split(", ")
        .find_map(|part| {
            part.rsplit_once(what)?
                .1
                .strip_suffix(" frames")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no '{what}N frames' in {line}"))
}
