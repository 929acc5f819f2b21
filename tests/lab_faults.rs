//! Faults, end to end in the netns lab: upstreams that refuse, reset, stall
//! or answer garbage (tests/peers/upstream.py in the upstream namespace),
//! clients that give up mid-upload and mid-download, an mbuf pool too small
//! for the load, and a full flow table.
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

use std::io::{BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use common::proxy::*;
use common::*;
use serde_json::Value;

// ---- clients ----------------------------------------------------------------------------

/// What one curl run saw.
#[derive(Debug)]
struct Seen {
    /// curl's exit status (0: complete transfer; 7: refused; 18: partial; 56: recv failure).
    exit: i32,
    status: u32,
    bytes: u64,
    took: Duration,
}

/// curl in the client namespace, body discarded.
fn fetch(lab: &Lab, args: &[&str]) -> Seen {
    let mut cmd = vec![
        "curl",
        "-sS",
        "--max-time",
        "15",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{size_download}",
    ];
    cmd.extend(args);
    let t = Instant::now();
    let out = lab.exec("client", &cmd);
    let took = t.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut w = text.split_whitespace();
    Seen {
        exit: out.status.code().unwrap_or(-1),
        status: w.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        bytes: w.next().and_then(|s| s.parse().ok()).unwrap_or(0),
        took,
    }
}

/// The appliance still serves: a GET through nginx and the process alive.
fn still_serving(lab: &Lab, z: &mut ZProxy) {
    assert!(z.running(), "zproxy exited:\n{}", z.log());
    let (code, text) = curl(lab, &[&url(80, "/")]);
    assert_eq!(
        (code, text.as_str()),
        (200, UPSTREAM_BODY),
        "a normal request after the fault; zproxy log:\n{}",
        z.log()
    );
    assert!(z.running(), "zproxy exited:\n{}", z.log());
}

/// Failures of a zproxy-bench result other than `allowed` kinds.
fn other_failures(r: &Value, allowed: &[&str]) -> Vec<(String, u64)> {
    r["failures"]
        .as_object()
        .expect("failures object")
        .iter()
        .filter(|(k, v)| !allowed.contains(&k.as_str()) && u(v) > 0)
        .map(|(k, v)| (k.clone(), u(v)))
        .collect()
}

fn status_codes(r: &Value) -> Vec<String> {
    r["status_codes"]
        .as_object()
        .expect("status_codes object")
        .keys()
        .cloned()
        .collect()
}

/// nginx on :80 (listener 80, group "web") for the still-serving checks, with
/// no upstream keep-alive pool: pooled connections are flows too, and
/// flows_active must fall back to 0.
fn web_unpooled() -> String {
    web("keepalive = 0")
}

/// A listener on `port` to a one-server group `name` at 10.72.0.1:`server_port`.
fn faulty(port: u16, name: &str, server_port: u16, extra: &str) -> String {
    listener(port, "http", name)
        + &upstream(
            name,
            &[(&format!("10.72.0.1:{server_port}"), 1)],
            &format!("keepalive = 0\n{extra}"),
        )
}

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

// ---- client faults -------------------------------------------------------------------------

/// A client that starts an upload (POST, 100 MB announced) or a download
/// (GET /stream), moves 4 MiB, says "ready", waits for a line on stdin,
/// then either resets its connection ("rst": SO_LINGER 0) or waits to be
/// killed ("kill").
const ABORTER: &str = r#"
import socket, struct, sys, time
host, port, what, how = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.create_connection((host, port), timeout=10)
if what == "upload":
    s.sendall(b"POST /upload HTTP/1.1\r\nHost: lab\r\nContent-Length: 104857600\r\n\r\n")
    chunk = b"u" * 65536
    for _ in range(64):
        s.sendall(chunk)
else:
    s.sendall(b"GET /stream HTTP/1.1\r\nHost: lab\r\n\r\n")
    got = 0
    while got < 4 << 20:
        b = s.recv(65536)
        if not b:
            print("eof", got, flush=True)
            sys.exit(1)
        got += len(b)
print("ready", flush=True)
sys.stdin.readline()
if how == "rst":
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    print("reset", flush=True)
else:
    time.sleep(60)  # holds the connection open: the point (the test ends it)
"#;

fn start_aborter(
    lab: &Lab,
    port: u16,
    what: &str,
    how: &str,
) -> (Child, ChildStdin, BufReader<ChildStdout>) {
    let mut child = lab
        .command("client", "python3")
        .args(["-c", ABORTER, PROXY_CLIENT_IP, &port.to_string(), what, how])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let stdin = child.stdin.take().unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    (child, stdin, out)
}

#[test]
fn client_aborts_mid_upload_and_mid_download_release_both_sides() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let sink = Peer::start(&lab, "sink", 9001);
    let stream = Peer::start(&lab, "stream", 9002);
    let body = web_unpooled() + &faulty(85, "sink", 9001, "") + &faulty(86, "stream", 9002, "");
    let mut z = ZProxy::start(&lab, "zproxy", &config(65536, &body));
    wait_proxy(&lab, &z, 80);
    wait_flows_at_most(&lab, &z, 0, 5);
    let baseline = stat(&lab, "flows_active");

    for (port, what, peer) in [(85, "upload", &sink), (86, "download", &stream)] {
        for how in ["rst", "kill"] {
            let accepted = peer.count("accept");
            let t = Instant::now();
            let (mut child, mut go, mut out) = start_aborter(&lab, port, what, how);
            assert_eq!(read_line(&mut out), "ready", "{what}/{how}");
            let moved = t.elapsed();
            // Mid-transfer: the upstream took the request (and, for an
            // upload, at least 1 MiB of its body; a download's client read 4 MiB).
            let started = wait_until(Duration::from_secs(10), || {
                peer.count("accept") == accepted + 1
                    && (what == "download" || peer.saw("progress", accepted + 1))
            });
            assert!(
                started,
                "{what}/{how}: the upstream never got the transfer: {:?}",
                peer.events()
            );
            // Both sides are open now: the client's and the upstream's
            // (counters are published every 100 ms).
            assert!(
                wait_until(Duration::from_secs(2), || stat(&lab, "flows_active")
                    >= baseline + 2),
                "{what}/{how}: both flows open mid-transfer; upstream saw {:?}; stats {}\nzproxy log:\n{}",
                peer.events(),
                stats(&lab),
                z.log()
            );
            match how {
                "rst" => {
                    writeln!(go, "go").unwrap();
                    assert_eq!(read_line(&mut out), "reset");
                    assert!(child.wait().unwrap().success());
                }
                _ => {
                    child.kill().unwrap();
                    child.wait().unwrap();
                }
            }
            drop(go);
            let t = Instant::now();
            wait_flows_at_most(&lab, &z, baseline, 10);
            peer.wait_all_closed(10);
            eprintln!(
                "{what} aborted ({how}) after 4 MiB in {moved:?}: both sides released within {:?}; upstream saw {:?}",
                t.elapsed(),
                peer.events().last()
            );
        }
    }
    // The sink never got a whole body.
    let events = sink.events();
    for l in events.iter().filter(|l| l.starts_with("got ")) {
        let n: u64 = l.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert!(n < 104_857_600, "{l}");
    }

    // Uploads and downloads still work.
    let src = lab.run_dir().join("upload-1m");
    std::fs::write(&src, vec![b'u'; 1 << 20]).unwrap();
    let (code, text) = curl(
        &lab,
        &[
            "--data-binary",
            &format!("@{}", src.display()),
            &url(85, "/upload"),
        ],
    );
    assert_eq!((code, text.as_str()), (200, "got 1048576\n"), "upload");
    let s = fetch(&lab, &[&url(80, "/bytes/1000000")]);
    assert_eq!((s.exit, s.status, s.bytes), (0, 200, 1_000_000), "{s:?}");
    still_serving(&lab, &mut z);
    wait_flows_at_most(&lab, &z, baseline, 10);
    stop_clean(z);
}

/// A client whose handshake ends in a RST: its SYN is answered, the SYN-ACK
/// never reaches it (dropped in the client namespace) and it gives up; the
/// SYN-ACK resent later meets no socket, so the client's kernel answers with
/// a RST (what a SYN scan does on purpose). Returns once zproxy released the
/// half-open flow (`flows_active` back to `held`).
fn abort_handshake(lab: &Lab, z: &ZProxy, port: u16, held: u64) {
    lab.exec_ok(
        "client",
        [
            "nft",
            &format!(
                "add table inet synack; add chain inet synack in {{ type filter hook input priority 0; }}; \
                 add rule inet synack in ip saddr {PROXY_CLIENT_IP} tcp sport {port} tcp flags & (syn|ack) == syn|ack drop"
            ),
        ],
    );
    let s = fetch(lab, &["--connect-timeout", "0.5", &url(port, "/")]);
    lab.exec_ok("client", ["nft", "delete table inet synack"]);
    assert_eq!(
        s.exit, 28,
        "the handshake must time out at the client: {s:?}"
    );
    // The SYN-ACK is resent after zproxy's retransmission timeout; the RST
    // that answers it returns the half-open flow's slot.
    wait_flows_at_most(lab, z, held, 15);
}

/// Waits until zproxy has let go of every connection (whatever a crash
/// would come from has run by then), or has exited.
fn let_go_or_died(lab: &Lab, z: &mut ZProxy) {
    wait_for(
        Duration::from_secs(10),
        "zproxy to let go of every connection (flows_active 0) or to exit",
        || !z.running() || stat(lab, "flows_active") == 0,
    );
}

/// :80 proxied to nginx (no upstream pool) and :8080 static.
fn web_and_static() -> String {
    web_unpooled()
        + "\n[[listener]]\nport = \"client\"\ntcp_port = 8080\nmode = \"static\"\n\
           [listener.static]\nstatus = 200\nbody = \"hello from zproxy\\n\"\n"
}

#[test]
fn handshake_reset_by_a_client_then_an_upstream_connect() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let mut z = ZProxy::start(&lab, "zproxy", &config(16384, &web_and_static()));
    wait_proxy(&lab, &z, 80);
    wait_flows_at_most(&lab, &z, 0, 5);

    // A keep-alive client, then a handshake reset on :80. The next request
    // of the keep-alive client needs an upstream connection (keepalive = 0),
    // which takes the slot the half-open flow left.
    let (mut holder, opened) = Holder::open(&lab, 80, 1);
    assert_eq!(opened, "open 1 errors 0");
    let ok = format!("resp 0 200 {}", UPSTREAM_BODY.len());
    assert_eq!(holder.ask("get 0 /"), ok);
    abort_handshake(&lab, &z, 80, 1);
    assert_eq!(
        holder.ask("get 0 /"),
        ok,
        "a request after a client reset its handshake; zproxy log:\n{}",
        z.log()
    );
    holder.close();
    assert!(
        !z.log().contains("invalid state"),
        "a connect failed on a slot left half-open:\n{}",
        z.log()
    );
    still_serving(&lab, &mut z);
    wait_flows_at_most(&lab, &z, 0, 10);
    stop_clean(z);
}

#[test]
fn handshake_reset_by_a_client_then_another_listener() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let mut z = ZProxy::start(&lab, "zproxy", &config(16384, &web_and_static()));
    wait_proxy(&lab, &z, 80);
    wait_flows_at_most(&lab, &z, 0, 5);

    // A handshake reset on :80, then a connection to :8080 takes its slot.
    abort_handshake(&lab, &z, 80, 0);
    let s = fetch(&lab, &[&url(8080, "/")]);
    let_go_or_died(&lab, &mut z);
    assert!(
        z.running(),
        "zproxy died when a client connected after another reset its handshake:\n{}",
        z.log()
    );
    assert_eq!((s.exit, s.status), (0, 200), "{s:?}\n{}", z.log());
    // And the other way round.
    abort_handshake(&lab, &z, 8080, 0);
    let s = fetch(&lab, &[&url(80, "/")]);
    let_go_or_died(&lab, &mut z);
    assert!(z.running(), "zproxy died:\n{}", z.log());
    assert_eq!((s.exit, s.status), (0, 200), "{s:?}\n{}", z.log());
    still_serving(&lab, &mut z);
    wait_flows_at_most(&lab, &z, 0, 10);
    stop_clean(z);
}

// ---- resource exhaustion -------------------------------------------------------------------

#[test]
fn mbuf_pool_exhaustion_drops_then_recovers() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    // 64 mbufs, no per-core cache, 8-entry rings (the smallest the config
    // allows for 64 mbufs): two half-full TX bursts empty the pool.
    let cfg = config(65536, &web_unpooled())
        .replace("mbufs = 16383", "mbufs = 64\nmbuf_cache = 0")
        .replace(
            "address = \"10.71.0.2/24\"",
            "address = \"10.71.0.2/24\"\nrx_descriptors = 8\ntx_descriptors = 8",
        )
        .replace(
            "address = \"10.72.0.2/24\"",
            "address = \"10.72.0.2/24\"\nrx_descriptors = 8\ntx_descriptors = 8",
        );
    let mut z = ZProxy::start(&lab, "zproxy", &cfg);
    wait_proxy(&lab, &z, 80);
    let s = fetch(&lab, &[&url(80, "/bytes/1000000")]);
    assert_eq!((s.exit, s.status, s.bytes), (0, 200, 1_000_000), "{s:?}");
    let dropped_before = stat(&lab, "tx_dropped");

    // Heavy load for a few seconds: large downloads and new connections.
    let downloads = spawn_bench(
        &lab,
        80,
        "downloads",
        &[
            "--path",
            "/bytes/1000000",
            "--concurrency",
            "40",
            "--duration",
            "4s",
            "--keep-alive",
            "on",
            "--timeout",
            "20s",
        ],
    );
    let connects = spawn_bench(
        &lab,
        80,
        "connects",
        &[
            "--concurrency",
            "200",
            "--duration",
            "4s",
            "--keep-alive",
            "off",
            "--timeout",
            "20s",
        ],
    );
    let mut peak = 0;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(4) {
        peak = peak.max(u(&stats(&lab)["mbufs_in_use"]));
        assert!(z.running(), "zproxy died under load:\n{}", z.log());
        // Sampling pace while the load runs its fixed 4 s: not a wait.
        std::thread::sleep(Duration::from_millis(100));
    }
    let downloads = wait_bench(downloads);
    let connects = wait_bench(connects);
    eprintln!(
        "mbufs: under load, downloads {} ok / {} failed {} {}, connections {} ok / {} failed {} {}; peak in use (sampled) {peak} of 64",
        downloads["successes"],
        downloads["failures_total"],
        downloads["failures"],
        downloads["status_codes"],
        connects["successes"],
        connects["failures_total"],
        connects["failures"],
        connects["status_codes"],
    );
    assert!(z.running(), "zproxy died under load:\n{}", z.log());

    // Full recovery once the load is gone. Connects to nginx failed while
    // SYNs were dropped, so the server may be marked down (503) for up to
    // 5 s (passive marking): wait for that to pass.
    wait_flows_at_most(&lab, &z, 0, 30);
    let t = Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || curl(
            &lab,
            &["--max-time", "2", &url(80, "/")]
        )
        .0 == 200),
        "no 200 after the load; stats {}\nzproxy log:\n{}",
        stats(&lab),
        z.log()
    );
    eprintln!(
        "mbufs: first 200 {:?} after the load; upstream connect failures {}, no_upstream {}",
        t.elapsed(),
        stat(&lab, "upstream_connect_failures"),
        stat(&lab, "no_upstream")
    );
    let idle_in_use = |lab: &Lab| u(&stats(lab)["mbufs_in_use"]);
    assert!(
        wait_until(Duration::from_secs(5), || idle_in_use(&lab) == 0),
        "idle, yet mbufs stay in use: {}",
        stats(&lab)
    );
    let dropped = stat(&lab, "tx_dropped") - dropped_before;
    let r = bench(
        &lab,
        80,
        &[
            "--requests",
            "300",
            "--concurrency",
            "10",
            "--keep-alive",
            "off",
        ],
    );
    assert_eq!(u(&r["successes"]), 300, "after the load: {r}");
    let s = fetch(&lab, &[&url(80, "/bytes/1000000")]);
    assert_eq!((s.exit, s.status, s.bytes), (0, 200, 1_000_000), "{s:?}");
    still_serving(&lab, &mut z);
    let log = stop_clean(z);
    let nombuf = rx_nombuf(&log);
    eprintln!("mbufs: drops counted: tx_dropped {dropped}, rx no-mbuf {nombuf}");
    assert!(
        dropped + nombuf > 0,
        "a 64-mbuf pool under this load must run dry, and the drops be counted:\n{log}"
    );
    assert!(log.contains("of 64 mbufs in use at exit"), "{log}");
}

/// Client sockets to the proxy in LAST-ACK (their FIN sent, its ACK not seen).
fn clients_in_last_ack(lab: &Lab) -> usize {
    lab.exec_ok("client", ["ss", "-Htn", "state", "last-ack"])
        .lines()
        .filter(|l| l.contains(PROXY_CLIENT_IP))
        .count()
}

#[test]
fn a_lost_last_ack_is_sent_again_from_time_wait() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let mut z = ZProxy::start(&lab, "zproxy", &config(16384, &web_and_static()));
    wait_proxy(&lab, &z, 80);

    // ZProxy closes first (the client asks for Connection: close), so it
    // ACKs the client's FIN and keeps the 4-tuple in TIME-WAIT. The client
    // namespace drops that ACK (and every empty ACK from :8080) for a while.
    lab.exec_ok(
        "client",
        [
            "nft",
            "add table inet lastack; add chain inet lastack in { type filter hook input priority 0; }; \
             add rule inet lastack in tcp sport 8080 tcp flags == ack ip length 40 counter drop",
        ],
    );
    let s = fetch(&lab, &["-H", "Connection: close", &url(8080, "/")]);
    assert_eq!((s.exit, s.status), (0, 200), "{s:?}");
    assert!(
        wait_until(Duration::from_secs(2), || clients_in_last_ack(&lab) == 1),
        "the client does not wait for the lost ACK: {}\n{}",
        lab.exec_ok("client", ["ss", "-tan"]),
        lab.exec_ok("client", ["nft", "list", "table", "inet", "lastack"])
    );
    // The loss lasts a while: holding it is the point of the test.
    std::thread::sleep(Duration::from_secs(1));
    lab.exec_ok("client", ["nft", "delete table inet lastack"]);

    // The client sends its FIN again (RTO backoff: well within the 10 s
    // TIME-WAIT); ZProxy ACKs it and the client closes.
    let t = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || clients_in_last_ack(&lab) == 0),
        "the client still waits in LAST-ACK: {}",
        stats(&lab)
    );
    eprintln!(
        "lost last ACK: client closed {:?} after the loss ended",
        t.elapsed()
    );
    assert!(stat(&lab, "time_wait_acks") >= 1, "{}", stats(&lab));
    still_serving(&lab, &mut z);
    stop_clean(z);
}

const MAX_FLOWS: usize = 64;

/// A full flow table: `MAX_FLOWS` idle connections to `port` try to take
/// every slot. Clients of a static listener get them all; clients of a
/// proxying listener get half, since each is promised a slot for its
/// upstream connection. New connections to either listener are then refused
/// at once (RST), every held one can still complete a request, and once
/// they close the table is free again. With `warm_pool`, idle pooled
/// upstream connections hold slots first: clients must still get theirs.
fn flow_table_full(port: u16, path: &str, want_held: usize, want_body: usize, warm_pool: bool) {
    let _lock = lab_lock();
    let lab = Lab::up();
    let cfg = config(16384, &web_and_static())
        .replace("max_flows = 16384", &format!("max_flows = {MAX_FLOWS}"))
        .replace("keepalive = 0", "keepalive = 16");
    let mut z = ZProxy::start(&lab, "zproxy", &cfg);
    wait_proxy(&lab, &z, 80);
    if warm_pool {
        bench(
            &lab,
            port,
            &[
                "--duration",
                "1s",
                "--concurrency",
                "16",
                "--keep-alive",
                "on",
            ],
        );
        // Once its clients are gone, what is open is the pool (at most 16).
        assert!(
            wait_until(Duration::from_secs(5), || stat(&lab, "flows_active") <= 16),
            "the keep-alive run's clients closed: {}",
            stats(&lab)
        );
        let pooled = stat(&lab, "flows_active");
        eprintln!("flow table full: {pooled} idle upstream connections pooled");
        assert!(
            pooled >= 4,
            "idle upstream connections wait in the pool: {}",
            stats(&lab)
        );
    } else {
        wait_flows_at_most(&lab, &z, 1, 5);
    }
    let refused_before = stat(&lab, "flows_refused");

    let (mut holder, opened) = Holder::open(&lab, port, MAX_FLOWS);
    let want = format!("open {want_held} errors {}", MAX_FLOWS - want_held);
    assert_eq!(opened, want, "clients holding the table\n{}", z.log());
    let held = want_held;
    assert!(
        wait_until(Duration::from_secs(5), || stat(&lab, "flows_active")
            == held as u64),
        "the held connections are open at the proxy: {}",
        stats(&lab)
    );

    // New connections to either listener: refused with a RST, at once.
    for p in [80, 8080] {
        let s = fetch(&lab, &[&url(p, "/")]);
        eprintln!("flow table full: new connection to :{p}: {s:?}");
        assert_eq!(s.exit, 7, "a new connection must be refused: {s:?}");
        assert!(s.took < Duration::from_secs(3), "refused by a RST: {s:?}");
    }
    assert_eq!(holder.ask("new"), "new refused");
    // Every refusal counted (counters are published every 100 ms).
    let refusals = (MAX_FLOWS - held) as u64 + 3;
    assert!(
        wait_until(Duration::from_secs(2), || stat(&lab, "flows_refused")
            >= refused_before + refusals),
        "refusals counted: {}",
        stats(&lab)
    );

    // The held connections are unharmed: every one can still complete a request.
    for i in 0..held {
        let answer = holder.ask(&format!("get {i} {path}"));
        assert_eq!(
            answer,
            format!("resp {i} 200 {want_body}"),
            "held connection {i} with the table full; stats {}\nzproxy log:\n{}",
            stats(&lab),
            z.log()
        );
    }
    assert!(z.running(), "{}", z.log());

    // Closing them frees the table.
    holder.close();
    wait_flows_at_most(&lab, &z, 0, 10);
    still_serving(&lab, &mut z);
    let s = fetch(&lab, &[&url(8080, "/")]);
    assert_eq!((s.exit, s.status), (0, 200), "{s:?}");
    stop_clean(z);
}

#[test]
fn flow_table_full_of_static_clients() {
    if !require_root() {
        return;
    }
    flow_table_full(8080, "/", MAX_FLOWS, "hello from zproxy\n".len(), false);
}

#[test]
fn flow_table_full_of_proxied_clients() {
    if !require_root() {
        return;
    }
    flow_table_full(80, "/", MAX_FLOWS / 2, UPSTREAM_BODY.len(), true);
}
