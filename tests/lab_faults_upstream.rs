//! Upstream faults, end to end in the netns lab: upstreams that refuse,
//! reset, stall or answer garbage (tests/peers/upstream.py in the upstream
//! namespace).
//!
//! Each test checks what the client sees, then that the appliance keeps
//! serving: a normal request through nginx succeeds, the process still runs,
//! `flows_active` (from `zproxy stats`) falls back to its baseline, and at
//! SIGINT the log's mbuf accounting says "0 leaked" (`stop_clean`).
//!
//! Root only; every test takes the lab lock shared with the other lab test
//! files, so no two zproxy instances ever run at once. Assertions are about
//! correctness, never speed: time bounds only tell a reaction to a fault
//! (RST, parse error) from a timer, with generous slack for a 2-core machine.

mod common;

use std::time::Duration;

use common::faults::*;
use common::proxy::*;
use common::*;

// ---- upstream faults ----------------------------------------------------------------------

#[test]
fn refused_upstream_gets_502_then_503_once_marked_down() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    // Nothing listens on 9001 or 9002. A long connect timeout: a refusal
    // must come from the RST, not from the timer.
    let body = web_unpooled()
        + &faulty(85, "refused", 9001, "connect_timeout_ms = 8000")
        + &faulty(
            86,
            "checked",
            9002,
            "connect_timeout_ms = 8000\n[upstream.health_check]\nkind = \"tcp\"\ninterval_ms = 200\ntimeout_ms = 200\nfall = 2\nrise = 2\n",
        );
    let mut z = ZProxy::start(&lab, "zproxy", &config(16384, &body));
    wait_proxy(&lab, &z, 80);

    // Passive marking: two failed connects take the server out for a while;
    // until then 502, after it 503 (no server to try).
    let mut codes = Vec::new();
    for _ in 0..5 {
        let s = fetch(&lab, &[&url(85, "/")]);
        eprintln!("refused: {s:?}");
        assert!(
            s.took < Duration::from_secs(4),
            "a refused connect must be answered at once, not after the 8 s connect timeout: {s:?}"
        );
        codes.push(s.status);
    }
    assert_eq!(
        codes[0], 502,
        "first request to a refusing server: {codes:?}"
    );
    assert!(
        codes.iter().all(|c| *c == 502 || *c == 503),
        "refused upstream: {codes:?}"
    );
    assert_eq!(
        *codes.last().unwrap(),
        503,
        "the server is marked down after failed connects: {codes:?}"
    );

    // Many at once: every one answered 502/503, nothing cut or hung.
    let r = bench(
        &lab,
        85,
        &[
            "--requests",
            "300",
            "--concurrency",
            "30",
            "--keep-alive",
            "off",
            "--timeout",
            "10s",
        ],
    );
    eprintln!("refused: bench {r}");
    assert_eq!(u(&r["successes"]), 0, "{r}");
    assert_eq!(u(&r["failures"]["non_2xx"]), 300, "{r}");
    assert!(
        status_codes(&r).iter().all(|c| c == "502" || c == "503"),
        "{r}"
    );

    // Active checks: once out of rotation, 503 at once.
    wait_log(
        &z,
        "upstream 10.72.0.1:9002: health check failed 2 times: out of rotation",
        10,
    );
    let s = fetch(&lab, &[&url(86, "/")]);
    eprintln!("all servers down: {s:?}");
    assert_eq!(s.status, 503, "{s:?}");
    assert!(s.took < Duration::from_secs(4), "{s:?}");
    // And back when something listens again.
    let peer = Peer::start(&lab, "sink", 9002);
    wait_log(
        &z,
        "upstream 10.72.0.1:9002: health check passed 2 times: back in rotation",
        10,
    );
    let s = fetch(&lab, &[&url(86, "/")]);
    assert_eq!((s.exit, s.status), (0, 200), "after recovery: {s:?}");
    drop(peer);

    still_serving(&lab, &mut z);
    // Health probes come and go: wait for a moment with no probe open.
    wait_flows_at_most(&lab, &z, 0, 10);
    let log = stop_clean(z);
    assert!(
        last_counter(&log, "upstream_connect_failures").is_some_and(|n| n >= 2),
        "connect failures counted:\n{log}"
    );
}

#[test]
fn upstream_reset_mid_response_cuts_the_client() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let mid = Peer::start(&lab, "reset-body", 9001);
    let before_head = Peer::start(&lab, "reset-head", 9002);
    let body = web_unpooled() + &faulty(85, "mid", 9001, "") + &faulty(86, "head", 9002, "");
    let mut z = ZProxy::start(&lab, "zproxy", &config(16384, &body));
    wait_proxy(&lab, &z, 80);

    // A head announcing 10 MB, 256 KiB of body, then a RST: the client got
    // a 200 head, so the only honest thing left is to cut its connection.
    for _ in 0..3 {
        let s = fetch(&lab, &[&url(85, "/")]);
        eprintln!("reset mid-response: {s:?}");
        assert_ne!(s.exit, 0, "a cut response must not look complete: {s:?}");
        assert!(
            matches!(s.exit, 18 | 56),
            "curl: 18 (partial) or 56 (recv failure), got {s:?}"
        );
        assert!(s.bytes < 10_000_000, "{s:?}");
        assert!(
            s.took < Duration::from_secs(10),
            "the client must be cut, not left waiting: {s:?}"
        );
    }
    let r = bench(
        &lab,
        85,
        &[
            "--requests",
            "40",
            "--concurrency",
            "10",
            "--keep-alive",
            "on",
            "--timeout",
            "10s",
        ],
    );
    eprintln!("reset mid-response: bench {r}");
    assert_eq!(u(&r["successes"]), 0, "{r}");
    assert_eq!(
        other_failures(&r, &["reset", "truncated"]),
        vec![],
        "only cut connections: {r}"
    );

    // A RST before any byte of the answer: 502.
    for _ in 0..3 {
        let s = fetch(&lab, &[&url(86, "/")]);
        eprintln!("reset before the response: {s:?}");
        assert_eq!((s.exit, s.status), (0, 502), "{s:?}");
    }

    mid.wait_all_closed(5);
    before_head.wait_all_closed(5);
    still_serving(&lab, &mut z);
    wait_flows_at_most(&lab, &z, 0, 10);
    stop_clean(z);
}

#[test]
fn stalled_upstream_gets_504_at_the_read_timeout() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let silent = Peer::start(&lab, "silent", 9001);
    let stalls = Peer::start(&lab, "stall-body", 9002);
    let body = web_unpooled()
        + &faulty(85, "silent", 9001, "read_timeout_ms = 1000")
        + &faulty(86, "stalls", 9002, "read_timeout_ms = 1000");
    let mut z = ZProxy::start(&lab, "zproxy", &config(16384, &body));
    wait_proxy(&lab, &z, 80);

    // Accepts, reads the request, never answers: 504 once the 1 s read
    // timeout fires (not before; and not much after).
    for _ in 0..3 {
        let s = fetch(&lab, &[&url(85, "/")]);
        eprintln!("silent upstream: {s:?}");
        assert_eq!((s.exit, s.status), (0, 504), "{s:?}");
        assert!(
            s.took >= Duration::from_millis(900) && s.took < Duration::from_secs(5),
            "the 504 must come with the 1 s read timeout: {s:?}"
        );
    }
    let r = bench(
        &lab,
        85,
        &[
            "--requests",
            "40",
            "--concurrency",
            "20",
            "--keep-alive",
            "off",
            "--timeout",
            "15s",
        ],
    );
    eprintln!("silent upstream: bench {r}");
    assert_eq!(u(&r["failures"]["non_2xx"]), 40, "{r}");
    assert_eq!(status_codes(&r), vec!["504".to_string()], "{r}");
    // The proxy gave up on every upstream connection it opened.
    silent.wait_all_closed(5);

    // A response that stops halfway: nothing more can be said to the
    // client than cutting its connection, at the read timeout.
    let s = fetch(&lab, &[&url(86, "/")]);
    eprintln!("stalled body: {s:?}");
    assert!(
        matches!(s.exit, 18 | 56),
        "curl: partial transfer, got {s:?}"
    );
    assert_eq!(s.status, 200, "{s:?}");
    assert!(s.bytes < 1_048_576, "{s:?}");
    assert!(
        s.took >= Duration::from_millis(900) && s.took < Duration::from_secs(8),
        "cut by the read timeout, not by curl's own: {s:?}"
    );
    stalls.wait_all_closed(5);

    still_serving(&lab, &mut z);
    wait_flows_at_most(&lab, &z, 0, 10);
    stop_clean(z);
}

#[test]
fn garbage_from_the_upstream_gets_502() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let peers = [
        (85, Peer::start(&lab, "garbage", 9001)),
        (86, Peer::start(&lab, "garbage-open", 9002)),
        (87, Peer::start(&lab, "binary", 9003)),
        (88, Peer::start(&lab, "endless-head", 9004)),
    ];
    // A 10 s read timeout: a 502 here comes from parsing, not from a timer.
    let body = web_unpooled()
        + &faulty(85, "g1", 9001, "read_timeout_ms = 10000")
        + &faulty(86, "g2", 9002, "read_timeout_ms = 10000")
        + &faulty(87, "g3", 9003, "read_timeout_ms = 10000")
        + &faulty(88, "g4", 9004, "read_timeout_ms = 10000");
    let mut z = ZProxy::start(&lab, "zproxy", &config(16384, &body));
    wait_proxy(&lab, &z, 80);

    for (port, peer) in &peers {
        for _ in 0..2 {
            let s = fetch(&lab, &[&url(*port, "/")]);
            eprintln!("garbage ({}): {s:?}", peer.mode);
            assert_eq!((s.exit, s.status), (0, 502), "{}: {s:?}", peer.mode);
            assert!(s.took < Duration::from_secs(8), "{}: {s:?}", peer.mode);
        }
    }
    let r = bench(
        &lab,
        86,
        &[
            "--requests",
            "100",
            "--concurrency",
            "20",
            "--keep-alive",
            "off",
            "--timeout",
            "15s",
        ],
    );
    eprintln!("garbage: bench {r}");
    assert_eq!(u(&r["failures"]["non_2xx"]), 100, "{r}");
    assert_eq!(status_codes(&r), vec!["502".to_string()], "{r}");
    for (_, peer) in &peers {
        peer.wait_all_closed(5);
    }

    still_serving(&lab, &mut z);
    wait_flows_at_most(&lab, &z, 0, 10);
    let log = stop_clean(z);
    assert!(
        last_counter(&log, "proxy_errors").is_some_and(|n| n >= 108),
        "502s counted as proxy errors:\n{log}"
    );
}
