//! IPv6 flows under attack and across workers, in the netns lab: SYN
//! cookies carry `curl -6` and zproxy-bench clients through a spoofed IPv6
//! SYN flood (bench/synflood.py), as lab_proxy_guard's IPv4 test
//! does. The lab disables IPv6 in every namespace; these tests turn it on in
//! the client namespace only.
//!
//! Root only; every test takes the lab lock shared with the other lab test files.

mod common;

use std::time::Duration;

use common::proxy::*;
use common::*;

/// :80 http and :81 tcp to the lab's nginx, on a client port that also has
/// `PORT_V6`; `runtime` adds [runtime] keys.
fn config6(runtime: &str) -> String {
    let body = one_source_unlimited(&(listener(80, "http", "web") + &listener(81, "tcp", "web")))
        + &upstream("web", &[(&format!("{UPSTREAM_IP}:80"), 1)], "");
    config(16384, &body)
        .replace(
            &format!("address = \"{PROXY_CLIENT_IP}/24\""),
            &format!("addresses = [\"{PROXY_CLIENT_IP}/24\", \"{PORT_V6}/64\"]"),
        )
        .replace("max_flows = ", &format!("{runtime}\nmax_flows = "))
}

fn url6(port: u16, path: &str) -> String {
    format!("http://[{PORT_V6}]:{port}{path}")
}

/// Waits for a 200 over IPv6 from `port` (DAD takes a second first).
fn wait_proxy6(lab: &Lab, z: &ZProxy, port: u16) {
    let url = url6(port, "/");
    assert!(
        wait_until(Duration::from_secs(15), || curl(
            lab,
            &["-6", "-g", "--max-time", "2", &url]
        )
        .0 == 200),
        "no 200 from {url}; zproxy log:\n{}",
        z.log()
    );
}

#[test]
fn ipv6_syn_cookies_carry_real_clients_through_a_spoofed_flood() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    lab.enable_ipv6("client", CLIENT_IF, CLIENT_V6);

    // Every IPv6 connection through a cookie: the handshake replay and the
    // sequence shift must carry whole exchanges, small and large.
    let z = ZProxy::start(&lab, "zproxy", &config6("syn_backlog = 0"));
    wait_proxy6(&lab, &z, 80);
    let (code, page) = curl(&lab, &["-6", "-g", &url6(80, "/bytes/1000000")]);
    assert_eq!((code, page.len()), (200, 1_000_000));
    let only = bench6(
        &lab,
        80,
        "cookies-only",
        &["--concurrency", "200", "--duration", "3s"],
    );
    assert!(u(&only["successes"]) > 500, "{only}");
    assert_eq!(u(&only["failures_total"]), 0, "{only}");
    let log = stop_clean(z);
    let cookies6 = last_counter(&log, "ipv6_syn_cookies_sent").unwrap_or(0);
    let accepted = last_counter(&log, "flows_accepted").unwrap();
    assert!(accepted > 500, "{log}");
    assert_eq!(
        last_counter(&log, "syn_cookies_accepted"),
        Some(accepted),
        "every connection opened from a cookie: {log}"
    );
    assert!(
        cookies6 >= accepted,
        "ipv6_syn_cookies_sent {cookies6} < flows_accepted {accepted}: {log}"
    );

    // A spoofed flood: past 256 half-open connections SYNs get cookies and
    // leave no state, so real IPv6 clients keep getting through.
    let z = ZProxy::start(&lab, "zproxy", &config6("syn_backlog = 256"));
    wait_proxy6(&lab, &z, 80);
    let mac = lab
        .exec_ok(
            "proxy",
            ["cat", &format!("/sys/class/net/{PROXY_CLIENT_IF}/address")],
        )
        .trim()
        .to_owned();
    let before = stats(&lab);
    let accepted_before = u(&before["workers"][0]["flows_accepted"]);
    let cookies_before = u(&before["workers"][0]["ipv6_syn_cookies_sent"]);
    let flood = start_synflood(&lab, &[CLIENT_IF, &mac, PORT_V6]);
    wait_for(
        Duration::from_secs(5),
        "the flood to fill the SYN backlog (ipv6_syn_cookies_sent to move)",
        || stat(&lab, "ipv6_syn_cookies_sent") > cookies_before,
    );
    let real = bench6(
        &lab,
        81,
        "flooded",
        &["--concurrency", "100", "--duration", "4s"],
    );
    let (code, body) = curl(&lab, &["-6", "-g", &url6(80, "/")]);
    let (done, sent, said) = wait_synflood(flood);
    eprintln!(
        "IPv6 syn flood: {} ; real clients: {} conn/s, {} completed, {} failed",
        said.trim(),
        real["connections_per_sec"],
        real["completed"],
        real["failures_total"]
    );
    assert!(done && sent > 10_000, "synflood (IPv6): {said}");
    assert_eq!(
        (code, body.as_str()),
        (200, UPSTREAM_BODY),
        "curl -6 during the flood"
    );
    assert!(u(&real["successes"]) > 0, "{real}");
    assert_eq!(
        u(&real["failures_total"]),
        0,
        "real clients during the flood: {real}"
    );
    let log = stop_clean(z);
    let cookies = last_counter(&log, "ipv6_syn_cookies_sent").unwrap() - cookies_before;
    // A worker behind its rx queue drops SYNs instead (net::admission).
    let dropped = last_counter(&log, "syn_dropped_behind").unwrap_or(0);
    assert!(
        cookies + dropped + 256 >= sent,
        "sent {sent}, IPv6 cookies {cookies}, dropped while behind {dropped}: {log}"
    );
    // State was held for the backlog and the real clients, not for the flood.
    let held = last_counter(&log, "flows_accepted").unwrap() - accepted_before;
    let served = u(&real["completed"]) + 1;
    assert!(
        held <= 2 * served + 256 + 300,
        "{held} flows for {served} real connections: {log}"
    );
}

/// RFC 5961 3.2 over IPv6 (as lab_attacks' blind-reset test for IPv4): a
/// spoofed RST (or RST|ACK) in the window but not exactly at RCV.NXT gets a
/// challenge ACK and the connection lives on; only an exact one closes it.
#[test]
fn ipv6_blind_resets_get_a_challenge_ack_and_only_an_exact_one_closes() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    lab.enable_ipv6("client", CLIENT_IF, CLIENT_V6);
    let body = config6("").replace(
        "\n[[upstream]]",
        "\n[[listener]]\nport = \"client\"\ntcp_port = 8080\nmode = \"static\"\n\
         [listener.static]\nstatus = 200\nbody = \"hello\\n\"\n\n[[upstream]]",
    );
    let z = ZProxy::start(&lab, "zproxy", &body);
    wait_proxy6(&lab, &z, 80);
    assert_blind_resets_challenged(&lab, PORT_V6);
    stop_clean(z);
}

/// Two workers on two queues: IPv6 connections whose Toeplitz hash
/// (`Steering6`) names the other worker are handed to it and served there.
/// veth picks the rx queue by its own hash, so frames arrive on either
/// queue; the owner must still get every one, also when lost replies move
/// a connection to the other queue mid-way. Both workers accept IPv6
/// connections, IPv6 frames are handed over, and every request succeeds
/// (with the IPv6 handoff disabled, the lossy run fails).
#[test]
fn ipv6_connections_are_handed_to_the_worker_that_owns_them() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up_with_queues(2);
    lab.enable_ipv6("client", CLIENT_IF, CLIENT_V6);
    let cfg = config6("")
        .replace(
            "worker_lcores = [1]",
            "worker_lcores = [1, 2]\nworker_cpus = [1, 0]\nidle_sleep_us = 50",
        )
        .replace("mbufs = 16383", "mbufs = 32767")
        .replace("qpairs=1", "qpairs=2");
    let z = ZProxy::start(&lab, "zproxy", &cfg);
    wait_proxy6(&lab, &z, 80);
    let r = bench6(
        &lab,
        80,
        "two",
        &["--concurrency", "200", "--requests", "5000"],
    );
    assert_eq!(u(&r["successes"]), 5000, "two workers: {r}");
    assert_eq!(u(&r["failures_total"]), 0, "two workers: {r}");
    let r = bench6(
        &lab,
        81,
        "two-tcp",
        &["--concurrency", "100", "--requests", "2000"],
    );
    assert_eq!(u(&r["successes"]), 2000, "two workers, tcp listener: {r}");
    // Lost replies make the client's kernel retransmit with a new flow hash
    // (net.core.txrehash): veth moves the rest of the connection to the
    // other queue, and only the handoff gets those frames to their owner.
    bench6_under_loss(&lab);
    // Each connection is served by the worker its Toeplitz hash names,
    // whichever queue veth put its SYN on (by veth's own hash, so without
    // the handoff about half of them would be served elsewhere).
    let reta = z
        .log()
        .lines()
        .find_map(|l| {
            l.split("RSS programmed (")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(128); // without a programmed table (runtime.rs)
    let steering = zproxy::net::rss6::Steering6::new(&zproxy::net::rss::RSS_KEY, reta, 2);
    let accepted = |st: &serde_json::Value| -> Vec<u64> {
        let w = st["workers"].as_array().unwrap();
        w.iter().map(|w| u(&w["ipv6_tcp_accepted"])).collect()
    };
    let (client, us) = (CLIENT_V6.parse().unwrap(), PORT_V6.parse().unwrap());
    let mut owners = [0usize; 2];
    // The benches may have left a port in TIME-WAIT (the lab widens the
    // ephemeral range): a port curl cannot bind is skipped.
    for sport in 20000u16..21000 {
        if owners.iter().sum::<usize>() == 16 {
            break;
        }
        let owner = usize::from(steering.queue(client, us, sport, 80));
        let before = accepted(&fresh_stats(&lab));
        let sport_arg = sport.to_string();
        let (code, head, _) = curl_with_head(
            &lab,
            &["-6", "-g", "--local-port", &sport_arg, &url6(80, "/")],
        );
        if head.contains("bind failed") {
            continue;
        }
        assert_eq!(code, 200, "from port {sport}: {head}");
        owners[owner] += 1;
        let after = accepted(&fresh_stats(&lab));
        assert_eq!(
            (
                after[owner] - before[owner],
                after[1 - owner] - before[1 - owner]
            ),
            (1, 0),
            "the connection from port {sport} is worker {owner}'s (reta {reta}): \
             accepted before {before:?}, after {after:?}"
        );
    }
    assert!(
        owners[0] > 0 && owners[1] > 0,
        "ports of both workers: {owners:?}"
    );
    let sum = |st: &serde_json::Value, key: &str| -> u64 {
        st["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| u(&w[key]))
            .sum()
    };
    // Workers publish on their own schedule: read until both sides agree.
    let mut st = fresh_stats(&lab);
    wait_until(Duration::from_secs(5), || {
        st = fresh_stats(&lab);
        sum(&st, "handoffs_out") == sum(&st, "handoffs_in")
    });
    eprintln!(
        "IPv6 handoffs: {} of {} handoffs_out; accepted per worker: {:?}",
        sum(&st, "ipv6_handoffs_out"),
        sum(&st, "handoffs_out"),
        st["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| u(&w["ipv6_tcp_accepted"]))
            .collect::<Vec<_>>()
    );
    let workers = st["workers"].as_array().unwrap();
    assert_eq!(workers.len(), 2);
    for (i, w) in workers.iter().enumerate() {
        assert!(
            u(&w["ipv6_tcp_accepted"]) > 500,
            "worker {i} served no share of the IPv6 clients: {w}"
        );
        assert_eq!(
            u(&w["handoff_drops"]),
            0,
            "worker {i} dropped handed-over frames: {w}"
        );
    }
    assert!(
        sum(&st, "ipv6_handoffs_out") > 1000,
        "IPv6 frames must reach the other worker by handoff: {st}"
    );
    assert_eq!(sum(&st, "handoffs_out"), sum(&st, "handoffs_in"), "{st}");
    stop_clean(z);
}

/// ICMPv6 Packet Too Big into an open transfer (tests/peers/ptb6.py): an
/// off-path one (a sequence number not in flight) is dropped and counted;
/// one quoting the flow's segment lowers its path MTU to 1280, the rest of
/// the transfer comes in packets that fit, and it completes.
#[test]
fn ipv6_packet_too_big_lowers_an_open_flows_segments() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    lab.enable_ipv6("client", CLIENT_IF, CLIENT_V6);
    let z = ZProxy::start(&lab, "zproxy", &config6(""));
    wait_proxy6(&lab, &z, 80);
    let script = repo_root().join("tests/peers/ptb6.py");
    let out = lab.exec_ok(
        "client",
        [
            "timeout",
            "60",
            "python3",
            script.to_str().unwrap(),
            CLIENT_IF,
            PORT_V6,
            "80",
            "1280",
        ],
    );
    eprintln!("ptb6.py: {out}");
    let seen: serde_json::Value = serde_json::from_str(out.trim()).expect("ptb6.py JSON");
    assert!(
        u(&seen["received"]) > 1_000_000,
        "the transfer completes: {seen}"
    );
    assert_eq!(
        u(&seen["max_before"]),
        1500,
        "full-size packets first: {seen}"
    );
    let after = u(&seen["max_after"]);
    assert!(after > 0 && after <= 1280, "packets after the PTB: {seen}");
    let st = fresh_stats(&lab);
    let w = &st["workers"][0];
    assert_eq!(u(&w["ipv6_ptb_applied"]), 1, "{w}");
    assert_eq!(u(&w["ipv6_ptb_dropped"]), 1, "the off-path one: {w}");
    stop_clean(z);
}
