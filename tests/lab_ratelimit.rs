//! Rate limits end to end in the netns lab: a client over its request rate
//! gets 429 with Retry-After while another client (a second address in the
//! client namespace) keeps 100% success; a `tcp` listener's connection
//! rate limit refuses SYNs over it; a flood of spoofed source addresses
//! fills the limiter's table to its bound and no further.
//!
//! Each test builds its own lab and zproxy under the lab lock, and stops
//! zproxy with SIGINT requiring a clean exit with no mbuf leaked.

mod common;

use std::process::Stdio;

use std::time::Duration;

use common::proxy::*;
use common::*;
use serde_json::Value;

/// The second client address, added to the client namespace.
const OTHER_CLIENT_IP: &str = "10.71.0.3";

fn peer_script() -> String {
    repo_root()
        .join("tests/peers/ratelimit_client.py")
        .to_str()
        .unwrap()
        .to_owned()
}

/// Starts the rate-limit client peer from `source`.
fn spawn_client(
    lab: &Lab,
    source: &str,
    port: u16,
    path: &str,
    rate: &str,
    secs: &str,
) -> std::process::Child {
    lab.command("client", "python3")
        .args([&peer_script(), PROXY_CLIENT_IP, &port.to_string(), path])
        .args(["--source", source, "--rate", rate, "--duration", secs])
        .stdout(Stdio::piped())
        .spawn()
        .expect("ratelimit_client.py")
}

fn result(child: std::process::Child) -> Value {
    let out = child.wait_with_output().expect("ratelimit_client.py");
    assert!(out.status.success(), "peer failed: {}", describe(&out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(&out)))
}

/// Connections that failed (refused, reset, timed out).
fn errors(r: &Value) -> u64 {
    r["errors"].as_object().unwrap().values().map(u).sum()
}

fn count(r: &Value, status: &str) -> u64 {
    r["statuses"][status].as_u64().unwrap_or(0)
}

#[test]
fn a_client_over_its_rate_gets_429_while_another_keeps_full_success() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    lab.exec_ok(
        "client",
        [
            "ip",
            "addr",
            "add",
            &format!("{OTHER_CLIENT_IP}/24"),
            "dev",
            CLIENT_IF,
        ],
    );
    // "/" is limited per client to 5/s with a burst of 5; "/bytes/" is not.
    let body = r#"
[[listener]]
port = "client"
tcp_port = 80
mode = "http"
max_connections_per_source = 0
[[listener.route]]
path_prefix = "/bytes/"
upstream = "web"
[[listener.route]]
path_prefix = "/"
upstream = "web"
rate_limit = { requests_per_second = 5.0, burst = 5 }
"#
    .to_owned()
        + &upstream("web", &[("10.72.0.1:80", 1)], "");
    let z = ZProxy::start(&lab, "zproxy", &config(16384, &body));
    wait_proxy(&lab, &z, 80);
    std::thread::sleep(std::time::Duration::from_millis(1200)); // wait_proxy's requests spent tokens

    // One client as fast as it can, the other at 3/s (under its own 5/s), at once.
    let greedy = spawn_client(&lab, CLIENT_IP, 80, "/", "0", "4");
    let polite = spawn_client(&lab, OTHER_CLIENT_IP, 80, "/", "3", "4");
    let greedy = result(greedy);
    let polite = result(polite);
    eprintln!("greedy: {greedy}\npolite: {polite}");

    let (ok, limited) = (count(&greedy, "200"), count(&greedy, "429"));
    assert!(limited > 20, "the greedy client was limited: {greedy}");
    // Its burst plus 5/s over 4 s (plus a little slack for timing).
    assert!(
        (5..=5 + 4 * 5 + 5).contains(&ok),
        "200s within its rate: {greedy}"
    );
    assert_eq!(greedy["retry_after"], serde_json::json!(["1"]), "{greedy}");
    assert_eq!(errors(&greedy), 0, "{greedy}");

    let sent = u(&polite["sent"]);
    assert!(sent >= 10, "{polite}");
    assert_eq!(count(&polite, "200"), sent, "100.00% success: {polite}");

    // Per route: the limited client still gets an unlimited route.
    let (code, _) = curl(&lab, &[&url(80, "/bytes/100")]);
    assert_eq!(code, 200);
    // Counters are published every 100 ms: wait for the last of them.
    wait_for(Duration::from_secs(5), "every 429 counted", || {
        stat(&lab, "failures_rate_limited") == limited
    });
    assert!(stat(&lab, "rate_limit_entries") >= 2);
    stop_clean(z);
}

#[test]
fn connection_rate_limit_and_a_spoofed_flood_stay_within_the_table() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let body = listener(80, "http", "web")
        + r#"
[[listener]]
port = "client"
tcp_port = 81
mode = "tcp"
upstream = "web"
connection_rate_limit = { connections_per_second = 2.0, burst = 3 }
"# + &upstream("web", &[("10.72.0.1:80", 1)], "");
    let cfg =
        config(16384, &body).replace("max_flows = ", "rate_limit_entries = 1024\nmax_flows = ");
    let z = ZProxy::start(&lab, "zproxy", &cfg);
    wait_proxy(&lab, &z, 80);

    // Connections as fast as can be for 0.3 s: the burst of 3 (and perhaps one
    // more refilled) get through, the rest are refused with a RST.
    let r = result(spawn_client(&lab, CLIENT_IP, 81, "/", "0", "0.3"));
    eprintln!("fast connections to the tcp listener: {r}");
    let ok = count(&r, "200");
    let refused = r["errors"]["ConnectionRefusedError"].as_u64().unwrap_or(0);
    assert_eq!(errors(&r), refused, "only refused connections: {r}");
    assert!((3..=4).contains(&ok), "{r}");
    assert!(refused >= 5, "{r}");
    wait_for(Duration::from_secs(5), "every refusal counted", || {
        stat(&lab, "refused_rate_limit") == refused
    });
    // At 1/s (under 2/s) every connection gets through.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let r = result(spawn_client(&lab, CLIENT_IP, 81, "/", "1", "3"));
    assert_eq!(count(&r, "200"), u(&r["sent"]), "{r}");

    // 30,000 SYNs from spoofed sources (a /16): each source is a new key,
    // and the table holds 1024 buckets whatever comes.
    let synflood = repo_root().join("bench/synflood.py");
    let out = lab.exec_ok(
        "client",
        [
            "python3",
            synflood.to_str().unwrap(),
            PROXY_CLIENT_IP,
            "--port",
            "81",
            "--count",
            "30000",
            "--rate",
            "20000",
        ],
    );
    eprintln!("synflood: {}", out.trim());
    let s = fresh_stats(&lab);
    let w = &s["workers"][0];
    eprintln!(
        "conn_rate_limit_entries {} rate_limit_evictions {}",
        w["conn_rate_limit_entries"], w["rate_limit_evictions"]
    );
    assert_eq!(u(&w["conn_rate_limit_entries"]), 1024, "full, and no more");
    assert!(u(&w["rate_limit_evictions"]) > 0);
    // The real client still connects after the flood.
    let (code, _) = curl(&lab, &[&url(81, "/")]);
    assert_eq!(code, 200);
    stop_clean(z);
}
