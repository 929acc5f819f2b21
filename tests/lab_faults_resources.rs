//! Resource exhaustion, end to end in the netns lab: an mbuf pool too small
//! for the load, a lost last ACK answered from TIME-WAIT, a full flow table.
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

use std::time::{Duration, Instant};

use common::faults::*;
use common::proxy::*;
use common::*;

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
/// upstream connection. New connections to either listener then go
/// unanswered (their SYNs dropped, no RST: see `net::admission`), every held
/// one can still complete a request, and once
/// they close the table is free again. With `warm_pool`, idle pooled
/// upstream connections hold slots first: clients must still get theirs.
fn flow_table_full(port: u16, path: &str, want_held: usize, want_body: usize, warm_pool: bool) {
    let _lock = lab_lock();
    let lab = Lab::up();
    let cfg = config(16384, &one_source_unlimited(&web_and_static()))
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
    let dropped_before = stat(&lab, "syn_dropped_table_full");

    // Past the table, connects are not answered: given up after 1 s each.
    let (mut holder, opened) = Holder::open_with_timeout(&lab, port, MAX_FLOWS, 1);
    let want = format!("open {want_held} errors {}", MAX_FLOWS - want_held);
    assert_eq!(opened, want, "clients holding the table\n{}", z.log());
    let held = want_held;
    assert!(
        wait_until(Duration::from_secs(5), || stat(&lab, "flows_active")
            == held as u64),
        "the held connections are open at the proxy: {}",
        stats(&lab)
    );

    // New connections to either listener: their SYNs dropped (no RST, no
    // state), so the client's TCP tries again until it gives up.
    for p in [80, 8080] {
        let s = fetch(&lab, &["--connect-timeout", "2", &url(p, "/")]);
        eprintln!("flow table full: new connection to :{p}: {s:?}");
        assert_eq!(s.exit, 28, "a new connection must go unanswered: {s:?}");
        assert!(s.took >= Duration::from_secs(2), "not reset: {s:?}");
    }
    let new = holder.ask("new");
    assert!(
        new.starts_with("new error"),
        "unanswered, not refused: {new}"
    );
    // Every dropped SYN counted (counters are published every 100 ms); a
    // client sends its SYN again, so there are at least as many as clients.
    let clients = (MAX_FLOWS - held) as u64 + 3;
    assert!(
        wait_until(Duration::from_secs(2), || stat(
            &lab,
            "syn_dropped_table_full"
        ) >= dropped_before + clients),
        "dropped SYNs counted: {}",
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
