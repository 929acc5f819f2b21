//! IPv6 flows under attack and across workers, in the netns lab: SYN
//! cookies carry `curl -6` and zproxy-bench clients through a spoofed IPv6
//! SYN flood (tests/peers/synflood6.py), as lab_proxy_guard's IPv4 test
//! does. The lab disables IPv6 in every namespace; these tests turn it on in
//! the client namespace only.
//!
//! Root only; every test takes the lab lock shared with the other lab test files.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::proxy::*;
use common::*;

const CLIENT_V6: &str = "2001:db8:71::1";
const PORT_V6: &str = "2001:db8:71::2";

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

fn enable_client_ipv6(lab: &Lab) {
    lab.exec_ok(
        "client",
        [
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=0",
            "net.ipv6.conf.default.disable_ipv6=0",
            "net.ipv6.conf.cli0.disable_ipv6=0",
        ],
    );
    let addr = format!("{CLIENT_V6}/64");
    lab.exec_ok(
        "client",
        ["ip", "-6", "addr", "add", &addr, "dev", CLIENT_IF, "nodad"],
    );
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

/// zproxy-bench from the client namespace to `[PORT_V6]:port`, no keep-alive.
fn bench6(lab: &Lab, port: u16, tag: &str, args: &[&str]) -> serde_json::Value {
    let json = lab.run_dir().join(format!("bench6-{tag}.json"));
    let _ = std::fs::remove_file(&json);
    let bin = workspace_bin("zproxy-bench");
    let port = port.to_string();
    let mut cmd = vec![
        "timeout",
        "120",
        bin.to_str().unwrap(),
        "--host",
        PORT_V6,
        "--port",
        &port,
        "--keep-alive",
        "off",
        "--json",
        json.to_str().unwrap(),
    ];
    cmd.extend(args);
    lab.exec_ok("client", cmd);
    read_results(&json)
}

#[test]
fn ipv6_syn_cookies_carry_real_clients_through_a_spoofed_flood() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    enable_client_ipv6(&lab);

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
    let synflood6 = repo_root().join("tests/peers/synflood6.py");
    let flood = lab
        .command("client", "python3")
        .arg(synflood6)
        .args([CLIENT_IF, &mac, PORT_V6])
        .args(["--rate", "20000", "--duration", "6"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("synflood6.py");
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
    let out = flood.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let sent: u64 = said
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    eprintln!(
        "IPv6 syn flood: {} ; real clients: {} conn/s, {} completed, {} failed",
        said.trim(),
        real["connections_per_sec"],
        real["completed"],
        real["failures_total"]
    );
    assert!(out.status.success() && sent > 10_000, "synflood6: {said}");
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
    enable_client_ipv6(&lab);
    let body = config6("").replace(
        "\n[[upstream]]",
        "\n[[listener]]\nport = \"client\"\ntcp_port = 8080\nmode = \"static\"\n\
         [listener.static]\nstatus = 200\nbody = \"hello\\n\"\n\n[[upstream]]",
    );
    let z = ZProxy::start(&lab, "zproxy", &body);
    wait_proxy6(&lab, &z, 80);
    let script = repo_root().join("tests/peers/blind_reset.py");
    for port in [80u16, 8080] {
        let out = lab.exec_ok(
            "client",
            [
                "python3",
                script.to_str().unwrap(),
                CLIENT_IF,
                PORT_V6,
                &port.to_string(),
            ],
        );
        eprintln!("port {port}: {out}");
        let seen: serde_json::Value =
            serde_json::from_str(out.trim()).expect("blind_reset.py JSON");
        assert_eq!(seen["first"], true, "port {port}: no first answer: {seen}");
        for case in ["rst-in-window", "rstack-in-window"] {
            assert_eq!(
                seen[case]["alive"], true,
                "port {port}: an in-window {case} closed the connection: {seen}"
            );
            assert!(
                u(&seen[case]["challenge_acks"]) >= 1,
                "port {port}: no challenge ACK for {case}: {seen}"
            );
        }
        assert_eq!(
            seen["rst-exact"]["alive"], false,
            "port {port}: an exact RST must close: {seen}"
        );
    }
    wait_for(
        Duration::from_secs(5),
        "rst_challenged to count the 4 challenged RSTs",
        || stat(&lab, "rst_challenged") >= 4,
    );
    stop_clean(z);
}
