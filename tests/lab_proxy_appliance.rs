//! The appliance around the proxy, end to end in the netns lab: SIGTERM
//! drains without losing started requests, the metrics count what was sent,
//! and two workers on two queues hand over what lands on the wrong core.
//!
//! Traffic only goes to the lab's namespace addresses (10.71.0.0/24 and
//! 10.72.0.0/24). Every test builds its own lab and zproxy, stops zproxy
//! with a real SIGINT and requires a clean exit with no mbuf leaked. The
//! tests take an exclusive lock (`lab_lock`, shared with the other lab test
//! files through tests/common/proxy.rs) so that two of them never run
//! zproxy at the same time, even when nextest runs them in parallel
//! processes. The other lab_proxy_* files hold the proxy's other themes.

mod common;

use std::time::Duration;

use common::proxy::*;
use common::*;
use serde_json::Value;

#[test]
fn sigterm_drains_without_losing_started_requests() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let body = web("");
    let z = ZProxy::start(&lab, "zproxy", &config(16384, &body));
    wait_proxy(&lab, &z, 80);
    let keep_alive = spawn_bench(
        &lab,
        80,
        "ka",
        &[
            "--concurrency",
            "50",
            "--duration",
            "5s",
            "--keep-alive",
            "on",
        ],
    );
    let closing = spawn_bench(
        &lab,
        80,
        "close",
        &[
            "--concurrency",
            "50",
            "--duration",
            "5s",
            "--keep-alive",
            "off",
        ],
    );
    // Drain while both loads are in full swing.
    let (accepted0, requests0) = (stat(&lab, "flows_accepted"), stat(&lab, "requests"));
    wait_for(
        Duration::from_secs(5),
        "both loads under way (300 closing connections, 300 keep-alive requests)",
        || {
            let accepted = stat(&lab, "flows_accepted") - accepted0;
            let requests = stat(&lab, "requests") - requests0;
            accepted >= 300 + 50 && requests >= accepted + 300
        },
    );
    let (ok, log) = z.stop("TERM");
    assert!(ok, "zproxy failed to drain:\n{log}");
    assert!(
        log.contains("SIGTERM: refusing new connections")
            && log.contains("drained: no connection left"),
        "{log}"
    );
    assert!(log.contains(" 0 leaked"), "{log}");
    for r in [wait_bench(keep_alive), wait_bench(closing)] {
        assert!(u(&r["successes"]) > 100, "{r}");
        // After the drain began, new connections are refused; nothing that
        // had started may be cut short.
        for kind in [
            "reset",
            "truncated",
            "timeout",
            "malformed",
            "non_2xx",
            "io_error",
        ] {
            assert_eq!(u(&r["failures"][kind]), 0, "{kind} during the drain: {r}");
        }
    }
}

#[test]
fn metrics_match_what_was_sent() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let body = web("");
    let z = ZProxy::start(&lab, "zproxy", &config(16384, &body));
    wait_proxy(&lab, &z, 80);
    // Counters published after what came before (wait_proxy's requests).
    let stats = || -> Value { fresh_stats(&lab)["workers"][0].clone() };
    let before = stats();
    let r = bench(
        &lab,
        80,
        &[
            "--concurrency",
            "20",
            "--requests",
            "2000",
            "--keep-alive",
            "off",
        ],
    );
    assert_eq!(u(&r["successes"]), 2000, "{r}");
    let after = stats();
    let d = |k: &str| u(&after[k]) - u(&before[k]);
    assert_eq!(
        d("requests"),
        2000,
        "requests counter: before {before}, after {after}"
    );
    assert_eq!(
        d("flows_accepted"),
        2000,
        "one accepted flow per connection"
    );
    assert_eq!(d("proxy_errors"), 0);
    assert_eq!(u(&after["flows_refused"]), 0);
    let prom = lab.exec_ok(
        "proxy",
        [env!("CARGO_BIN_EXE_zproxy"), "stats", "--prometheus"],
    );
    let line = format!(
        "zproxy_requests_total{{worker=\"0\"}} {}",
        u(&after["requests"])
    );
    assert!(
        prom.contains(&line),
        "{line} missing from /metrics:\n{prom}"
    );
    let all = serde_json::from_str::<Value>(
        &lab.exec_ok("proxy", [env!("CARGO_BIN_EXE_zproxy"), "stats"]),
    )
    .unwrap();
    let up = &all["upstreams"][0];
    assert_eq!(up["server"], "10.72.0.1:80", "{all}");
    assert!(u(&up["requests"]) >= 2000, "per-upstream requests: {up}");
    assert!(
        up["avg_response_ms"].as_f64().unwrap() > 0.0,
        "response time measured: {up}"
    );
    stop_clean(z);
}

#[test]
fn two_workers_on_two_queues_hand_over_what_lands_on_the_wrong_core() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up_with_queues(2);
    // Two workers on a 2-core machine: lcore 2 shares CPU 0 with the control
    // thread and the clients, and sleeps when idle so they all get their turn.
    let body = web("");
    let cfg = config(16384, &body)
        .replace(
            "worker_lcores = [1]",
            "worker_lcores = [1, 2]\nworker_cpus = [1, 0]\nidle_sleep_us = 50",
        )
        .replace("mbufs = 16383", "mbufs = 32767")
        .replace("qpairs=1", "qpairs=2");
    let z = ZProxy::start(&lab, "zproxy", &cfg);
    wait_log(&z, "worker 1 on lcore 2 polling", 10);
    wait_proxy(&lab, &z, 80);
    let closing = bench(
        &lab,
        80,
        &[
            "--concurrency",
            "500",
            "--duration",
            "5s",
            "--keep-alive",
            "off",
        ],
    );
    assert_eq!(
        u(&closing["failures_total"]),
        0,
        "keep-alive off: {closing}"
    );
    let keep_alive = bench(
        &lab,
        80,
        &[
            "--concurrency",
            "100",
            "--duration",
            "4s",
            "--keep-alive",
            "on",
        ],
    );
    assert_eq!(
        u(&keep_alive["failures_total"]),
        0,
        "keep-alive on: {keep_alive}"
    );
    // Lost replies make the client's kernel time out and retransmit, and a
    // retransmission picks a new flow hash (net.core.txrehash), so veth
    // delivers the rest of the connection to the other queue: the owner must
    // still get every frame.
    let lossy = with_lost_replies(&lab, || {
        bench(
            &lab,
            80,
            &[
                "--concurrency",
                "100",
                "--duration",
                "4s",
                "--keep-alive",
                "off",
                "--timeout",
                "20s",
            ],
        )
    });
    assert_eq!(u(&lossy["failures_total"]), 0, "3% loss: {lossy}");
    // Workers publish their counters on their own schedule, and ARP copies
    // keep being handed over, so read until both sides of the handoff agree.
    let stats_now = || -> Value {
        serde_json::from_str(&lab.exec_ok("proxy", [env!("CARGO_BIN_EXE_zproxy"), "stats"]))
            .unwrap()
    };
    let handoffs = |stats: &Value, key: &str| -> u64 {
        stats["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| u(&w[key]))
            .sum()
    };
    let mut stats = stats_now();
    wait_until(Duration::from_secs(5), || {
        stats = stats_now();
        handoffs(&stats, "handoffs_out") == handoffs(&stats, "handoffs_in")
    });
    let workers = stats["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    for (i, w) in workers.iter().enumerate() {
        assert!(
            u(&w["flows_accepted"]) > 1000,
            "worker {i} took no share of the clients: {w}"
        );
        assert!(
            u(&w["handoffs_in"]) > 0,
            "veth's flow hash must send some upstream replies to the other worker: {w}"
        );
        assert_eq!(
            u(&w["handoff_drops"]),
            0,
            "worker {i} dropped handed-over frames: {w}"
        );
    }
    assert_eq!(
        handoffs(&stats, "handoffs_out"),
        handoffs(&stats, "handoffs_in"),
        "every handed-over frame arrived: {stats}"
    );
    // Stopped under load, one worker stops polling before the other and
    // frames keep being handed to it: they must still go back to the pool.
    let load = spawn_bench(
        &lab,
        80,
        "at-stop",
        &[
            "--concurrency",
            "200",
            "--duration",
            "4s",
            "--keep-alive",
            "off",
        ],
    );
    let accepted = stat(&lab, "flows_accepted");
    wait_for(Duration::from_secs(5), "load under way at the stop", || {
        stat(&lab, "flows_accepted") > accepted + 2000
    });
    stop_clean(z);
    let _ = load.0.wait_with_output();
}
