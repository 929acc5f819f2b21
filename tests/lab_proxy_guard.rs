//! What the proxy refuses, end to end in the netns lab: malformed requests
//! and smuggling vectors, upstream errors as 4xx/5xx, client networks not
//! allowed in, requests naming other hosts (never an open proxy), slowloris
//! heads (408, from the proxy and the static responder), per-source limits,
//! and a spoofed SYN flood (SYN cookies).
//!
//! Traffic only goes to the lab's namespace addresses (10.71.0.0/24 and
//! 10.72.0.0/24). Every test builds its own lab and zproxy, stops zproxy
//! with a real SIGINT and requires a clean exit with no mbuf leaked. The
//! tests take an exclusive lock (`lab_lock`, shared with the other lab test
//! files through tests/common/proxy.rs) so that two of them never run
//! zproxy at the same time, even when nextest runs them in parallel
//! processes. The other lab_proxy_* files hold the proxy's other themes.

mod common;

use std::time::{Duration, Instant};

use common::proxy::*;
use common::*;

// ---- 5. error responses -------------------------------------------------------------------

#[test]
fn error_responses() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    // A server that takes the request and never answers.
    let _silent = Peer::start(&lab, "silent", 8082);

    let body = listener(80, "http", "web")
        + r#"
[[listener]]
port = "client"
tcp_port = 84
mode = "http"
[[listener.route]]
path_prefix = "/api"
upstream = "web"
[[listener.route]]
path_prefix = "/bytes/"
upstream = "web"
"# + &listener(85, "http", "refused")
        + &listener(86, "http", "blackhole")
        + &listener(87, "http", "silent")
        + &upstream("web", &[("10.72.0.1:80", 1)], "")
        + &upstream("refused", &[("10.72.0.1:9", 1)], "")
        + &upstream(
            "blackhole",
            &[("10.72.0.99:80", 1)],
            "connect_timeout_ms = 300",
        )
        + &upstream("silent", &[("10.72.0.1:8082", 1)], "read_timeout_ms = 500");
    let z = ZProxy::start(&lab, "zproxy", &config(4096, &body));
    wait_proxy(&lab, &z, 80);

    // Malformed request line.
    let resp = raw_exchange(&lab, 80, b"GARBAGE\r\n\r\n");
    assert!(resp.starts_with("HTTP/1.1 400 "), "GARBAGE got: {resp:?}");

    // Request smuggling vectors: refused with 400, never forwarded.
    let logged = lab.upstream_access_log_lines();
    for (what, head) in [
        ("CL+TE", &b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..]),
        ("two lengths", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: x\r\nX: y\r\n folded\r\n\r\n"),
        ("bare LF", b"GET / HTTP/1.1\r\nHost: x\nX: y\r\n\r\n"),
        ("two codings", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
    ] {
        let resp = raw_exchange(&lab, 80, head);
        assert!(resp.starts_with("HTTP/1.1 400 "), "{what} got: {resp:?}");
    }
    // A good request behind them: once nginx logged it, whatever zproxy
    // forwarded before it would have been logged too.
    assert_eq!(curl(&lab, &[&url(80, "/")]).0, 200);
    wait_for(
        Duration::from_secs(5),
        "nginx to log the good request after the smuggling vectors",
        || lab.upstream_access_log_lines() > logged,
    );
    assert_eq!(
        lab.upstream_access_log_lines(),
        logged + 1,
        "a smuggling vector reached nginx"
    );

    // A request head bigger than the 4096-byte receive buffer.
    let mut big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 8192));
    big.extend(b"\r\n\r\n");
    let resp = raw_exchange(&lab, 80, &big);
    assert!(
        resp.starts_with("HTTP/1.1 431 "),
        "8 KiB head got: {resp:?}"
    );

    // Routes only: no match is a 404 from zproxy; matches go through.
    let (code, text) = curl(&lab, &[&url(84, "/other")]);
    assert_eq!((code, text.as_str()), (404, "no route\n\n"));
    let (code, text) = curl(&lab, &[&url(84, "/bytes/100")]);
    assert_eq!((code, text.len()), (200, 100));
    let logged = lab.upstream_access_log_lines();
    let (code, _) = curl(&lab, &[&url(84, "/api/x")]);
    assert_eq!(code, 404, "nginx has no /api");
    assert_eq!(
        lab.upstream_access_log_lines(),
        logged + 1,
        "/api reached nginx"
    );

    // Nothing listens (RST): 502.
    let t = Instant::now();
    let (code, text) = curl(&lab, &[&url(85, "/")]);
    eprintln!("errors: refused upstream -> {code} in {:?}", t.elapsed());
    assert_eq!(code, 502, "refused upstream: {text}");

    // No such host (connect times out after 300 ms): 502 or 503, quickly.
    let t = Instant::now();
    let (code, text) = curl(&lab, &[&url(86, "/")]);
    let took = t.elapsed();
    eprintln!("errors: unreachable upstream -> {code} in {took:?}");
    assert!(
        code == 502 || code == 503,
        "unreachable upstream: {code} {text}"
    );
    assert!(
        took < Duration::from_secs(4),
        "unreachable upstream took {took:?}"
    );

    // Accepts and never answers (read timeout 500 ms): 504.
    let t = Instant::now();
    let (code, text) = curl(&lab, &[&url(87, "/")]);
    let took = t.elapsed();
    eprintln!("errors: silent upstream -> {code} in {took:?}");
    assert_eq!(code, 504, "silent upstream: {text}");
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(4),
        "silent upstream took {took:?}"
    );

    // Still serving after all that.
    let (code, text) = curl(&lab, &[&url(80, "/")]);
    assert_eq!((code, text.as_str()), (200, UPSTREAM_BODY));
    stop_clean(z);
}

#[test]
fn listeners_let_in_only_allowed_client_networks() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let open = listener(80, "http", "web");
    let closed = listener(81, "http", "web") + "allow = [\"10.99.0.0/16\", \"192.0.2.0/24\"]\n";
    let body = open + &closed + &upstream("web", &[("10.72.0.1:80", 1)], "");
    let z = ZProxy::start(&lab, "zproxy", &config(16384, &body));
    wait_proxy(&lab, &z, 80);
    let before = lab.upstream_access_log_lines();
    let (code, _) = curl(&lab, &["--max-time", "2", &url(81, "/")]);
    assert_eq!(
        code, 0,
        "a client outside the allowed networks got an HTTP answer"
    );
    // A RST is refused at once (curl: exit 7, "Couldn't connect" after ~0 ms).
    let started = Instant::now();
    let out = lab.exec("client", ["curl", "-sS", "--max-time", "2", &url(81, "/")]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "expected a refused connect: {out:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "a refusal must be immediate (a RST), not a timeout"
    );
    assert_eq!(
        lab.upstream_access_log_lines(),
        before,
        "nothing may reach the upstream"
    );

    // The management endpoint: on loopback in the proxy's own namespace by
    // default, nowhere on the data plane.
    let listening = lab.exec_ok("proxy", ["ss", "-Hltn"]);
    assert!(
        listening.contains("127.0.0.1:9090"),
        "management endpoint not on loopback:\n{listening}"
    );
    assert!(
        !listening.contains("0.0.0.0:9090") && !listening.contains("*:9090"),
        "management endpoint on every address:\n{listening}"
    );
    let (code, _) = curl(&lab, &["--max-time", "2", &url(9090, "/stats")]);
    assert_eq!(
        code, 0,
        "the management endpoint answered on the client port"
    );

    let log = stop_clean(z);
    assert!(
        last_counter(&log, "refused_acl").is_some_and(|n| n >= 2),
        "refusals not counted:\n{log}"
    );
}

#[test]
fn never_an_open_proxy_whatever_the_request_names() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    // A bait server next to the configured upstream, which a request may
    // name but ZProxy must never connect to (it logs every accept).
    let bait = Peer::start(&lab, "silent", 9099);
    let body = web("");
    let z = ZProxy::start(&lab, "zproxy", &config(16384, &body));
    wait_proxy(&lab, &z, 80);

    let bait_url = format!("http://{UPSTREAM_IP}:9099/");
    let bait_host = format!("{UPSTREAM_IP}:9099");
    let last_logged = || {
        let log = std::fs::read_to_string(lab.run_dir().join("access.log")).unwrap_or_default();
        log.lines().last().unwrap_or("").to_owned()
    };
    // Used as a forward proxy: the configured upstream answers, in origin form.
    let (code, text) = curl(&lab, &["-x", &url(80, ""), &bait_url]);
    assert_eq!((code, text.as_str()), (200, UPSTREAM_BODY), "curl -x");
    assert!(
        last_logged().contains("\"GET / HTTP/1.1\""),
        "nginx got: {}",
        last_logged()
    );
    // A Host naming the bait: routed to the configured upstream all the same.
    let resp = raw_exchange(
        &lab,
        80,
        format!("GET / HTTP/1.1\r\nHost: {bait_host}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    assert!(resp.starts_with("HTTP/1.1 200 "), "Host: bait got {resp:?}");
    // Absolute-form naming another host than Host: ambiguous, refused.
    let resp = raw_exchange(
        &lab,
        80,
        format!("GET {bait_url} HTTP/1.1\r\nHost: {UPSTREAM_IP}\r\n\r\n").as_bytes(),
    );
    assert!(
        resp.starts_with("HTTP/1.1 400 "),
        "mismatched absolute-form got {resp:?}"
    );
    // CONNECT: never a tunnel.
    let resp = raw_exchange(
        &lab,
        80,
        format!("CONNECT {bait_host} HTTP/1.1\r\nHost: {bait_host}\r\n\r\n").as_bytes(),
    );
    assert!(resp.starts_with("HTTP/1.1 405 "), "CONNECT got {resp:?}");
    let out = lab.exec(
        "client",
        [
            "curl",
            "-sS",
            "--max-time",
            "5",
            "-p",
            "-x",
            &url(80, ""),
            &bait_url,
        ],
    );
    assert!(
        !out.status.success(),
        "curl through a CONNECT tunnel: {}",
        describe(&out)
    );

    assert_eq!(
        bait.count("accept"),
        0,
        "zproxy connected to the bait: {:?}",
        bait.events()
    );
    let log = stop_clean(z);
    assert!(
        last_counter(&log, "proxy_errors").is_some_and(|n| n >= 3),
        "refusals counted as proxy errors:\n{log}"
    );
}

#[test]
fn slowloris_and_per_source_limits() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let body = listener(80, "http", "web")
        + "header_timeout_ms = 500\nmax_connections_per_source = 20\n"
        + &upstream("web", &[("10.72.0.1:80", 1)], "")
        + "\n[[listener]]\nport = \"client\"\ntcp_port = 8080\nmode = \"static\"\n\
           header_timeout_ms = 500\n[listener.static]\nstatus = 200\nbody = \"hi\\n\"\n";
    let z = ZProxy::start(&lab, "zproxy", &config(16384, &body));
    wait_proxy(&lab, &z, 80);
    assert_eq!(curl(&lab, &[&url(8080, "/")]), (200, "hi\n".into()));

    // A head trickled one header every 200 ms gets a 408 after 500 ms (the
    // script's `sleep 0.2` paces the slow client: the point of the test),
    // from the proxy and from the static responder alike.
    for port in [80, 8080] {
        let started = Instant::now();
        let script = format!(
            "exec 3<>/dev/tcp/{PROXY_CLIENT_IP}/{port}; printf 'GET / HTTP/1.1\\r\\nHost: a\\r\\n' >&3; \
             for i in $(seq 20); do sleep 0.2; printf 'X-Slow: %s\\r\\n' $i >&3 2>/dev/null || break; done & \
             trickle=$!; timeout 5 cat <&3; kill $trickle 2>/dev/null"
        );
        let out = lab.exec("client", ["bash", "-c", &script]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with("HTTP/1.1 408 Request Timeout"),
            "slowloris on :{port} got: {text:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the 408 on :{port} came after {:?}",
            started.elapsed()
        );
    }

    // A partial head, then the client's FIN: the static responder owes
    // nothing and closes at once (not at the header or idle timeout).
    const HALF_CLOSE: &str = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n")
s.shutdown(socket.SHUT_WR)
t = time.monotonic()
got = b""
while True:
    b = s.recv(65536)
    if not b:
        break
    got += b
print(len(got), round((time.monotonic() - t) * 1000))
"#;
    let said = lab.exec_ok(
        "client",
        ["python3", "-c", HALF_CLOSE, PROXY_CLIENT_IP, "8080"],
    );
    let (bytes, ms) = said.trim().split_once(' ').expect("bytes ms");
    assert_eq!(
        bytes, "0",
        "a half-closed partial head got an answer: {said}"
    );
    let ms: u64 = ms.parse().unwrap();
    assert!(ms < 400, "closed after {ms} ms, not at once");

    // 20 idle connections from one address: the 21st is refused, at once.
    let (holder, opened) = Holder::open(&lab, 80, 20);
    assert_eq!(opened, "open 20 errors 0");
    let out = lab.exec("client", ["curl", "-sS", "--max-time", "2", &url(80, "/")]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "the 21st connection was not refused: {out:?}"
    );
    holder.close();
    assert!(
        wait_until(Duration::from_secs(5), || curl(
            &lab,
            &["--max-time", "2", &url(80, "/")]
        )
        .0 == 200),
        "connections are accepted again once the others closed"
    );
    let log = stop_clean(z);
    assert!(
        last_counter(&log, "refused_per_source").is_some_and(|n| n >= 1),
        "{log}"
    );
}

#[test]
fn syn_cookies_carry_real_clients_through_a_spoofed_syn_flood() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let body = listener(80, "http", "web")
        + &listener(81, "tcp", "web")
        + &upstream("web", &[("10.72.0.1:80", 1)], "");
    // Every connection through a cookie: the handshake replay and the
    // sequence shift must carry whole exchanges, small and large.
    let always = config(16384, &body).replace("max_flows = ", "syn_backlog = 0\nmax_flows = ");
    let z = ZProxy::start(&lab, "zproxy", &always);
    wait_proxy(&lab, &z, 80);
    let (code, page) = curl(&lab, &[&url(80, "/bytes/1000000")]);
    assert_eq!((code, page.len()), (200, 1_000_000));
    let cookies_only = bench(
        &lab,
        80,
        &[
            "--concurrency",
            "200",
            "--duration",
            "3s",
            "--keep-alive",
            "off",
        ],
    );
    assert_eq!(u(&cookies_only["failures_total"]), 0, "{cookies_only}");
    let log = stop_clean(z);
    let accepted = last_counter(&log, "flows_accepted").unwrap();
    assert!(accepted > 1000, "{log}");
    assert_eq!(
        last_counter(&log, "syn_cookies_accepted"),
        Some(accepted),
        "{log}"
    );

    // A flood from spoofed sources: past 256 half-open connections SYNs get
    // cookies and leave no state, so real clients keep getting through.
    let flooded = config(16384, &body).replace("max_flows = ", "syn_backlog = 256\nmax_flows = ");
    let z = ZProxy::start(&lab, "zproxy", &flooded);
    wait_proxy(&lab, &z, 80);
    // SYNs with bad checksums are dropped before any flow is made for them
    // (they used to take a slot each, counted as accepted, until smoltcp
    // refused them), and counted as such.
    let synflood = repo_root().join("bench/synflood.py");
    let synflood = synflood.to_str().unwrap();
    let w = &fresh_stats(&lab)["workers"][0];
    let accepted_before_bad = u(&w["flows_accepted"]);
    let (rx_before, bad_before) = (u(&w["rx_frames"]), u(&w["drop_bad_checksum"]));
    lab.exec_ok(
        "client",
        [
            "python3",
            synflood,
            PROXY_CLIENT_IP,
            "--count",
            "20000",
            "--bad-checksum",
        ],
    );
    assert_eq!(
        curl(&lab, &[&url(81, "/")]).0,
        200,
        "a new connection on another port"
    );
    // The flood's SYNs came in before the curl's (one queue, one worker):
    // counters published after it count all of them.
    let before = u(&fresh_stats(&lab)["workers"][0]["flows_accepted"]);
    assert_eq!(
        before - accepted_before_bad,
        1,
        "only the curl's connection is accepted, no bad-checksum SYN"
    );
    // Every bad SYN that reached ZProxy is counted (the lab's kernel may
    // lose some of the burst before it; the curl's and ARP frames are not).
    let (rx, bad) = (
        stat(&lab, "rx_frames") - rx_before,
        stat(&lab, "drop_bad_checksum") - bad_before,
    );
    assert!(
        bad >= 10_000 && bad + 100 >= rx && bad <= rx,
        "{bad} bad-checksum drops of {rx} frames received"
    );
    let cookies_before = stat(&lab, "syn_cookies_sent");
    let flood = start_synflood(&lab, &[PROXY_CLIENT_IP]);
    wait_for(
        Duration::from_secs(5),
        "the flood to fill the SYN backlog (syn_cookies_sent to move)",
        || stat(&lab, "syn_cookies_sent") > cookies_before,
    );
    // Real clients come to the L4 listener: every connection takes a slot
    // for a new socket on another port, and one for a new upstream connection.
    let real = bench(
        &lab,
        81,
        &[
            "--concurrency",
            "100",
            "--duration",
            "4s",
            "--keep-alive",
            "off",
        ],
    );
    let (done, sent, said) = wait_synflood(flood);
    assert!(done && sent > 10_000, "synflood: {said}");
    eprintln!(
        "syn flood: {} ; real clients: {} conn/s, {} completed, {} failed",
        said.trim(),
        real["connections_per_sec"],
        real["completed"],
        real["failures_total"]
    );
    assert_eq!(
        u(&real["failures_total"]),
        0,
        "real clients during the flood: {real}"
    );
    let log = stop_clean(z);
    let cookies = last_counter(&log, "syn_cookies_sent").unwrap();
    // A worker behind its rx queue drops SYNs instead (net::admission).
    let dropped = last_counter(&log, "syn_dropped_behind").unwrap_or(0);
    assert!(
        cookies + dropped + 256 >= sent,
        "sent {sent}, cookies {cookies}, dropped while behind {dropped}: {log}"
    );
    // State was held for the backlog and the real clients, not for the flood.
    let held = last_counter(&log, "flows_accepted").unwrap() - before;
    let served = u(&real["completed"]);
    assert!(
        held <= served + 256 + 300,
        "{held} flows for {served} real connections: {log}"
    );
}
