//! The exposition's shape: HELP and TYPE for every family, Prometheus
//! naming, label escaping, histogram series, NIC and reload figures.

use super::*;
use crate::app::outcome::Outcome;
use crate::app::stats::RequestStats;
use crate::dpdk::QueueStats;

fn snapshot() -> Snapshot {
    let listener = "we\"b\\1:80";
    let reqs = RequestStats::new(1);
    for (status, total_us) in [(200, 300), (200, 700), (404, 2_000), (502, 40_000)] {
        reqs.record(&Outcome {
            status,
            total_us,
            response_us: (status != 404).then_some(total_us / 2),
            ..Outcome::default()
        });
    }
    let mut port = PortStats::default();
    port.rx_packets = 11;
    port.tx_packets = 12;
    port.rx_missed = 3;
    port.rx_nombuf = 4;
    let port = port.with_queues(&[
        QueueStats {
            rx_packets: 5,
            ..QueueStats::default()
        },
        QueueStats {
            rx_packets: 6,
            ..QueueStats::default()
        },
    ]);
    let mut control = [0; N_COUNTERS];
    control[Counter::ExceptionFromKernel as usize] = 11;
    Snapshot {
        workers: vec![[0; N_COUNTERS]; 2],
        control: Some(control),
        busy_ratio: vec![0.5, 0.25],
        listeners: vec![(listener.into(), stats::totals(1, [&reqs]).remove(0))],
        upstreams: vec![UpstreamStat {
            group: "g\"q".into(),
            server: "10.0.0.1:80".parse().unwrap(),
            requests: 5,
            connect_failures: 1,
            active: 2,
            healthy: true,
            retired: false,
            backup: false,
            response_us_sum: 1_500,
            responses: 3,
        }],
        ports: vec![("wan".into(), Some(port)), ("down".into(), None)],
        pools: vec![PoolSample {
            name: "zp_mbufs_0".into(),
            in_use: 7,
            size: 100,
        }],
        draining: false,
        uptime_s: 9,
        reload: ReloadStatus {
            attempts: 2,
            refused: 1,
            last_ok: false,
            last_unix_s: 1_700_000_000,
            last_message: "x".into(),
        },
        announce: Some(crate::announce::Status {
            vip: "10.99.0.1/32".into(),
            protocol: "zproxy_vip".into(),
            announced: true,
            transitions: 3,
            errors: 2,
        }),
    }
}

fn has(text: &str, line: &str) {
    assert!(
        text.lines().any(|l| l == line),
        "missing line {line:?} in:\n{text}"
    );
}

#[test]
fn every_family_has_help_and_type_and_follows_the_naming_rules() {
    let text = snapshot().encode();
    let mut typed: Vec<(String, String)> = Vec::new();
    let mut helped: Vec<String> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap();
            assert!(!help.is_empty(), "{line}");
            helped.push(name.into());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert_eq!(
                helped.last().map(String::as_str),
                Some(name),
                "TYPE after its HELP: {line}"
            );
            assert_eq!(
                kind == "counter",
                name.ends_with("_total"),
                "_total on counters only: {line}"
            );
            assert!(name.starts_with("zproxy_"), "{line}");
            typed.push((name.into(), kind.into()));
        } else {
            // A sample belongs to the family declared last.
            let (family, kind) = typed.last().expect("a sample before any TYPE");
            let name = line.split(['{', ' ']).next().unwrap();
            let ok = match kind.as_str() {
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|s| name == format!("{family}{s}")),
                _ => name == family,
            };
            assert!(ok, "sample {line:?} under family {family}");
        }
    }
    assert_eq!(helped.len(), typed.len());
    let kind = |n: &str| typed.iter().find(|(m, _)| m == n).map(|(_, k)| k.as_str());
    assert_eq!(kind("zproxy_flows_active"), Some("gauge"));
    assert_eq!(kind("zproxy_worker_cycles_total"), Some("counter"));
    assert_eq!(
        kind("zproxy_http_request_duration_seconds"),
        Some("histogram")
    );
    assert!(!text.contains("total_cycles"), "{text}");
}

#[test]
fn label_values_are_escaped() {
    let text = snapshot().encode();
    has(
        &text,
        r#"zproxy_http_requests_total{listener="we\"b\\1:80",status="2xx"} 2"#,
    );
    has(
        &text,
        r#"zproxy_upstream_requests_total{group="g\"q",server="10.0.0.1:80"} 5"#,
    );
}

#[test]
fn requests_by_status_class_and_latency_histograms() {
    let text = snapshot().encode();
    let l = r#"listener="we\"b\\1:80""#;
    for (class, n) in [("1xx", 0), ("2xx", 2), ("4xx", 1), ("5xx", 1), ("none", 0)] {
        has(
            &text,
            &format!("zproxy_http_requests_total{{{l},status=\"{class}\"}} {n}"),
        );
    }
    let h = "zproxy_http_request_duration_seconds";
    has(&text, &format!("{h}_bucket{{{l},le=\"0.0005\"}} 1"));
    has(&text, &format!("{h}_bucket{{{l},le=\"0.001\"}} 2"));
    has(&text, &format!("{h}_bucket{{{l},le=\"0.0025\"}} 3"));
    has(&text, &format!("{h}_bucket{{{l},le=\"0.05\"}} 4"));
    has(&text, &format!("{h}_bucket{{{l},le=\"+Inf\"}} 4"));
    has(&text, &format!("{h}_count{{{l}}} 4"));
    has(&text, &format!("{h}_sum{{{l}}} 0.043"));
    let u = "zproxy_http_upstream_response_duration_seconds";
    has(&text, &format!("{u}_count{{{l}}} 3"));
}

#[test]
fn nic_pools_workers_and_reloads() {
    let text = snapshot().encode();
    has(&text, r#"zproxy_nic_rx_packets_total{port="wan"} 11"#);
    has(&text, r#"zproxy_nic_tx_packets_total{port="wan"} 12"#);
    has(&text, r#"zproxy_nic_rx_missed_total{port="wan"} 3"#);
    has(&text, r#"zproxy_nic_rx_nombuf_total{port="wan"} 4"#);
    has(
        &text,
        r#"zproxy_nic_queue_rx_packets_total{port="wan",queue="1"} 6"#,
    );
    assert!(
        !text.contains(r#"port="down""#),
        "a port whose stats failed is left out"
    );
    has(&text, r#"zproxy_mbufs_in_use{pool="zp_mbufs_0"} 7"#);
    has(&text, r#"zproxy_worker_busy_ratio{worker="1"} 0.25"#);
    // The control core shows in the exception path's families alone.
    has(
        &text,
        r#"zproxy_exception_from_kernel_total{worker="control"} 11"#,
    );
    assert!(!text.contains(r#"zproxy_rx_frames_total{worker="control"}"#));
    has(&text, "zproxy_reloads_total 2");
    has(&text, "zproxy_reloads_refused_total 1");
    has(&text, "zproxy_reload_last_success 0");
    has(&text, "zproxy_reload_last_timestamp_seconds 1700000000");
    has(
        &text,
        r#"zproxy_upstream_up{group="g\"q",server="10.0.0.1:80"} 1"#,
    );
}

#[test]
fn announce_state_and_counts() {
    let text = snapshot().encode();
    let l = r#"vip="10.99.0.1/32",protocol="zproxy_vip""#;
    has(&text, &format!("zproxy_announce_vip_announced{{{l}}} 1"));
    has(
        &text,
        &format!("zproxy_announce_transitions_total{{{l}}} 3"),
    );
    has(&text, &format!("zproxy_announce_errors_total{{{l}}} 2"));
    let off = Snapshot {
        announce: None,
        ..snapshot()
    }
    .encode();
    assert!(!off.contains("zproxy_announce"), "{off}");
}

#[test]
fn a_family_without_series_is_left_out() {
    let text = Snapshot {
        upstreams: Vec::new(),
        ..snapshot()
    }
    .encode();
    assert!(!text.contains("zproxy_upstream_requests"), "{text}");
    assert!(
        text.contains("# TYPE zproxy_reloads_total counter"),
        "{text}"
    );
}

#[test]
fn backups_are_marked_and_what_they_serve_is_counted() {
    let mut s = snapshot();
    let mut backup = s.upstreams[0].clone();
    backup.server = "10.0.0.2:80".parse().unwrap();
    backup.backup = true;
    backup.requests = 7;
    s.upstreams.push(backup);
    let text = s.encode();
    has(
        &text,
        r#"zproxy_upstream_backup{group="g\"q",server="10.0.0.1:80"} 0"#,
    );
    has(
        &text,
        r#"zproxy_upstream_backup{group="g\"q",server="10.0.0.2:80"} 1"#,
    );
    has(
        &text,
        r#"zproxy_upstream_backup_requests_total{group="g\"q"} 7"#,
    );
}
