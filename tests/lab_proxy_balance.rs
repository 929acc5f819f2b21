//! Upstream groups, end to end in the netns lab: balancing (round robin,
//! weights, least connections, source hash, consistent hash), failover and recovery, active
//! health checks, backup servers, and SIGHUP adding and removing servers
//! under load, with extra nginx servers in the upstream namespace.
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

use common::nginx::*;
use common::proxy::*;
use common::*;
use serde_json::Value;

// ---- 4. balancing, failover, recovery ----------------------------------------------------

const BACKENDS: [&str; 3] = ["10.72.0.11", "10.72.0.12", "10.72.0.13"];

/// An nginx on each of `BACKENDS`, answering with its own address.
fn three_backends(lab: &Lab, tag: &str) -> Vec<Nginx> {
    BACKENDS
        .iter()
        .enumerate()
        .map(|(i, ip)| Nginx::named(lab, &format!("{tag}{i}"), ip))
        .collect()
}

fn backend_requests(b: &[Nginx]) -> Vec<usize> {
    b.iter().map(Nginx::requests).collect()
}

fn delta(after: &[usize], before: &[usize]) -> Vec<usize> {
    after.iter().zip(before).map(|(a, b)| a - b).collect()
}

#[test]
fn balancing_failover_and_recovery() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let backends = three_backends(&lab, "b");
    let servers = |w: [u32; 3]| -> Vec<(String, u32)> {
        (0..3)
            .map(|i| (format!("{}:80", BACKENDS[i]), w[i]))
            .collect()
    };
    let group = |name: &str, w: [u32; 3], balance: &str| {
        let s = servers(w);
        let s: Vec<(&str, u32)> = s.iter().map(|(a, w)| (a.as_str(), *w)).collect();
        upstream(name, &s, &format!("balance = \"{balance}\""))
    };
    let body = listener(80, "http", "rr")
        + &listener(81, "http", "weighted")
        + &listener(82, "http", "lc")
        + &listener(83, "http", "sh")
        + &group("rr", [1, 1, 1], "round_robin")
        + &group("weighted", [3, 1, 1], "round_robin")
        + &group("lc", [1, 1, 1], "least_conn")
        + &group("sh", [1, 1, 1], "source_hash");
    let z = ZProxy::start(&lab, "zproxy", &config(4096, &body));
    wait_proxy(&lab, &z, 80);
    // Each server names itself.
    let mut named = std::collections::BTreeSet::new();
    for _ in 0..3 {
        let (code, text) = curl(&lab, &[&url(80, "/")]);
        assert_eq!(code, 200);
        named.insert(text.trim().to_owned());
    }
    assert_eq!(named.len(), 3, "round robin over 3 requests: {named:?}");

    let run = |port: u16, args: &[&str]| -> (Value, Vec<usize>) {
        let before = backend_requests(&backends);
        let r = bench(&lab, port, args);
        (r, delta(&backend_requests(&backends), &before))
    };
    let n3000 = [
        "--requests",
        "3000",
        "--concurrency",
        "50",
        "--keep-alive",
        "off",
    ];

    // (a) equal weights: ~1000 each.
    let (r, d) = run(80, &n3000);
    eprintln!("balance: round_robin 1,1,1 over 3000: {d:?}");
    assert_eq!(u(&r["successes"]), 3000, "{r}");
    for n in &d {
        assert!((900..=1100).contains(n), "round robin 1,1,1: {d:?}");
    }

    // (b) weights 3,1,1: ~60/20/20 %.
    let (r, d) = run(81, &n3000);
    eprintln!("balance: round_robin 3,1,1 over 3000: {d:?}");
    assert_eq!(u(&r["successes"]), 3000, "{r}");
    for (n, want) in d.iter().zip([1800usize, 600, 600]) {
        assert!(
            n * 10 >= want * 9 && n * 10 <= want * 11,
            "round robin 3,1,1: {d:?}"
        );
    }

    // least_conn: every server gets a share.
    let (r, d) = run(82, &n3000);
    eprintln!("balance: least_conn over 3000: {d:?}");
    assert_eq!(u(&r["successes"]), 3000, "{r}");
    assert!(d.iter().all(|&n| n >= 300), "least_conn: {d:?}");

    // source_hash: one client address, one server.
    let (r, d) = run(
        83,
        &[
            "--requests",
            "600",
            "--concurrency",
            "20",
            "--keep-alive",
            "off",
        ],
    );
    eprintln!("balance: source_hash over 600 from one client: {d:?}");
    assert_eq!(u(&r["successes"]), 600, "{r}");
    assert_eq!(
        d.iter().filter(|&&n| n > 0).count(),
        1,
        "source_hash spread one client: {d:?}"
    );
    assert_eq!(d.iter().sum::<usize>(), 600, "{d:?}");

    // (c) one server stops mid-run: its share moves to the others.
    let before = backend_requests(&backends);
    let t = Instant::now();
    let running = spawn_bench(
        &lab,
        80,
        "failover",
        &[
            "--duration",
            "10s",
            "--concurrency",
            "50",
            "--keep-alive",
            "off",
        ],
    );
    wait_for(
        Duration::from_secs(8),
        "the load to reach server 3 (100 requests) before it stops",
        || backends[2].requests() >= before[2] + 100,
    );
    backends[2].stop(&lab);
    let stopped_at = t.elapsed();
    let r = wait_bench(running);
    let d = delta(&backend_requests(&backends), &before);
    eprintln!(
        "failover: server 3 stopped at {stopped_at:?}; {} successes, {} failures {}; per server {d:?}; status codes {}",
        r["successes"], r["failures_total"], r["failures"], r["status_codes"]
    );
    let successes = u(&r["successes"]);
    assert!(successes > 0, "{r}");
    let f = &r["failures"];
    for kind in [
        "timeout",
        "connect_timeout",
        "truncated",
        "malformed",
        "size_mismatch",
        "io_error",
        "connect_refused",
        "connect_error",
    ] {
        assert_eq!(u(&f[kind]), 0, "failover: {kind} failures: {r}");
    }
    let codes = r["status_codes"].as_object().unwrap();
    assert!(
        codes
            .keys()
            .all(|k| ["200", "502", "503"].contains(&k.as_str())),
        "failover: unexpected status: {r}"
    );
    let failures = u(&r["failures_total"]);
    assert!(
        failures * 100 <= successes,
        "failover: {failures} failures for {successes} successes (> 1 %): {r}"
    );
    let after_stop = d[0] + d[1];
    assert!(
        after_stop > 0 && d[0].abs_diff(d[1]) * 10 <= after_stop,
        "{d:?}"
    );

    // (d) it comes back: after the down period, real requests probe it again.
    backends[2].launch(&lab);
    // It is marked down for a while: requests reach it once that is over.
    let down = backends[2].requests();
    wait_for(
        Duration::from_secs(15),
        "the restarted server 3 to get a request again",
        || {
            curl(&lab, &[&url(80, "/")]);
            backends[2].requests() > down
        },
    );
    let (r, d) = run(80, &n3000);
    eprintln!("recovery: server 3 restarted; 3000 requests: {d:?}");
    assert_eq!(u(&r["successes"]), 3000, "{r}");
    assert!(d[2] > 0, "the restarted server got no request: {d:?}");
    stop_clean(z);
}

// ---- the appliance: health checks, reload, drain, metrics ------------------------------

/// Two extra nginx servers on 10.72.0.11 and .12 answering their own name.
/// Which server answers each of `users` (by `X-User`), through `port`.
fn servers_of(lab: &Lab, port: u16, users: &[String]) -> Vec<String> {
    users
        .iter()
        .map(|user| {
            let header = format!("X-User: {user}");
            let (code, body) = curl(lab, &["-H", &header, &url(port, "/")]);
            assert_eq!(code, 200, "{user}: {body}");
            body.trim().to_owned()
        })
        .collect()
}

#[test]
fn consistent_hash_keeps_each_key_on_its_server() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let backends = three_backends(&lab, "c");
    let body = |order: [usize; 3]| {
        let servers: Vec<(String, u32)> = order
            .iter()
            .map(|&i| (format!("{}:80", BACKENDS[i]), 1))
            .collect();
        let s: Vec<(&str, u32)> = servers.iter().map(|(a, w)| (a.as_str(), *w)).collect();
        listener(84, "http", "ch")
            + &upstream(
                "ch",
                &s,
                "balance = \"consistent_hash\"\nhash_key = \"header:X-User\"",
            )
    };
    let users: Vec<String> = (0..24).map(|u| format!("user{u}")).collect();
    let z = ZProxy::start(&lab, "zproxy", &config(4096, &body([0, 1, 2])));
    wait_proxy(&lab, &z, 84);
    let first = servers_of(&lab, 84, &users);
    assert_eq!(
        servers_of(&lab, 84, &users),
        first,
        "a key keeps its server"
    );
    let used: std::collections::BTreeSet<&String> = first.iter().collect();
    eprintln!(
        "consistent_hash: 24 users over {} servers: {first:?}",
        used.len()
    );
    assert_eq!(used.len(), 3, "24 keys reach every server: {first:?}");

    // Server 2 stops: only its keys move (a refused connect is retried on
    // the key's next server, so no request fails).
    let lost = BACKENDS[1];
    backends[1].stop(&lab);
    let without = servers_of(&lab, 84, &users);
    for ((user, was), now) in users.iter().zip(&first).zip(&without) {
        if was.contains(lost) {
            assert!(!now.contains(lost), "{user} still on the stopped server");
        } else {
            assert_eq!(was, now, "{user} moved although its server is up");
        }
    }
    backends[1].launch(&lab);
    stop_clean(z);

    // Another instance, whose config lists the servers in another order,
    // sends every key where the first one did.
    let z = ZProxy::start(&lab, "zproxy", &config(4096, &body([2, 1, 0])));
    wait_proxy(&lab, &z, 84);
    assert_eq!(servers_of(&lab, 84, &users), first);
    stop_clean(z);
}

fn two_backends(lab: &Lab) -> Vec<Nginx> {
    BACKENDS[..2]
        .iter()
        .enumerate()
        .map(|(i, ip)| Nginx::named(lab, &format!("b{i}"), ip))
        .collect()
}

/// Health-check requests in a server's access log.
fn probe_lines(n: &Nginx) -> usize {
    std::fs::read_to_string(n.access_log())
        .map(|s| s.matches("zproxy-health").count())
        .unwrap_or(0)
}

fn probes_since(n: &Nginx, before: &usize) -> usize {
    probe_lines(n) - before
}
#[test]
fn active_health_checks_take_servers_out_and_back() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let b = two_backends(&lab);
    let check = "keepalive = 0\n[upstream.health_check]\nkind = \"http\"\npath = \"/\"\ninterval_ms = 300\ntimeout_ms = 250\nfall = 2\nrise = 2\n";
    let body = listener(80, "http", "web")
        + &upstream("web", &[("10.72.0.11:80", 1), ("10.72.0.12:80", 1)], check);
    let z = ZProxy::start(&lab, "zproxy", &config(16384, &body));
    wait_proxy(&lab, &z, 80);

    b[1].stop(&lab);
    wait_log(
        &z,
        "upstream 10.72.0.12:80: health check failed 2 times: out of rotation",
        5,
    );
    let before = backend_requests(&b);
    let before_probes = probe_lines(&b[0]);
    let r = bench(
        &lab,
        80,
        &[
            "--concurrency",
            "20",
            "--requests",
            "1000",
            "--keep-alive",
            "off",
        ],
    );
    assert_eq!(
        u(&r["failures_total"]),
        0,
        "requests failed although the dead server was out: {r}"
    );
    // Probes (User-Agent zproxy-health) land in the access log too.
    assert_eq!(
        delta(&backend_requests(&b), &before)[0] - probes_since(&b[0], &before_probes),
        1000,
        "everything goes to the healthy server"
    );

    b[1].launch(&lab);
    wait_log(
        &z,
        "upstream 10.72.0.12:80: health check passed 2 times: back in rotation",
        5,
    );
    let before = backend_requests(&b);
    let r = bench(
        &lab,
        80,
        &[
            "--concurrency",
            "20",
            "--requests",
            "1000",
            "--keep-alive",
            "off",
        ],
    );
    assert_eq!(u(&r["failures_total"]), 0, "{r}");
    let d = delta(&backend_requests(&b), &before);
    assert!(
        d[1] >= 400,
        "the recovered server is back in rotation: {d:?}"
    );
    stop_clean(z);
}

#[test]
fn sighup_adds_and_removes_upstreams_under_load() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let b = two_backends(&lab);
    let cfg_with = |servers: &[(&str, u32)]| {
        config(
            16384,
            &(listener(80, "http", "web") + &upstream("web", servers, "")),
        )
    };
    let z = ZProxy::start(&lab, "zproxy", &cfg_with(&[("10.72.0.11:80", 1)]));
    wait_proxy(&lab, &z, 80);
    let cfg_path = lab.run_dir().join("zproxy.toml");
    let hup = |text: &str| {
        std::fs::write(&cfg_path, text).unwrap();
        let _ = std::process::Command::new("kill")
            .args(["-HUP", &z.pid().to_string()])
            .status();
    };

    let load = spawn_bench(
        &lab,
        80,
        "hup",
        &[
            "--concurrency",
            "50",
            "--duration",
            "8s",
            "--keep-alive",
            "off",
        ],
    );
    let b0_before = b[0].requests();
    wait_for(
        Duration::from_secs(5),
        "the load to reach b0 (200 requests) before the first reload",
        || b[0].requests() >= b0_before + 200,
    );
    hup("this is not toml [");
    wait_log(&z, "keeping the running config", 3);
    hup(&cfg_with(&[("10.72.0.11:80", 1), ("10.72.0.12:80", 1)]));
    wait_log(&z, "config reloaded", 3);
    wait_for(
        Duration::from_secs(5),
        "the added server b1 to get 200 requests",
        || b[1].requests() >= 200,
    );
    hup(&cfg_with(&[("10.72.0.12:80", 1)]));
    wait_for(
        Duration::from_secs(3),
        "the second \"config reloaded\" in the log",
        || z.log().matches("config reloaded").count() == 2,
    );
    // Requests to b0 that started before the removal end long before b1
    // serves 200 more: each of the 50 clients sends one at a time.
    let b1_at_removal = b[1].requests();
    wait_for(
        Duration::from_secs(5),
        "b1 to serve 200 requests after b0's removal",
        || b[1].requests() >= b1_at_removal + 200,
    );
    let b0_after_removal = b[0].requests();
    let r = wait_bench(load);
    assert_eq!(
        u(&r["failures_total"]),
        0,
        "reloads must not fail requests: {r}"
    );
    assert!(
        b[1].requests() > 1000,
        "the added server got traffic: {}",
        b[1].requests()
    );
    assert_eq!(
        b[0].requests(),
        b0_after_removal,
        "the removed server still got requests"
    );
    stop_clean(z);
}

// ---- backup servers ----------------------------------------------------------------------

/// The primary refuses new connections (a RST to each SYN, as from a
/// server that stopped listening) while the connections it has finish, or
/// accepts again. (Stopping nginx would also reset connections the kernel
/// had accepted for it but nginx had not: requests already sent, which no
/// proxy may retry.)
fn refuse(lab: &Lab, ip: &str, on: bool) {
    let line = if on {
        format!(
            "nft add table inet zb && \
             nft add chain inet zb in '{{ type filter hook input priority 0; }}' && \
             nft add rule inet zb in ip daddr {ip} tcp dport 80 'tcp flags & (syn | ack) == syn' reject with tcp reset"
        )
    } else {
        "nft delete table inet zb".to_owned()
    };
    lab.exec_ok("upstream", ["bash", "-c", &line]);
}

/// `/stats`'s requests to each of `servers`, and whether each is a backup.
fn requests_and_roles(lab: &Lab, servers: &[&str]) -> Vec<(u64, bool)> {
    let s = fresh_stats(lab);
    servers
        .iter()
        .map(|a| {
            let e = s["upstreams"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["server"] == *a)
                .unwrap_or_else(|| panic!("{a} not in /stats: {s}"));
            (u(&e["requests"]), e["backup"].as_bool().unwrap())
        })
        .collect()
}

/// A primary and a backup: the backup gets nothing while the primary is
/// up; the primary refuses connects under load and every request
/// still succeeds (the failed connect is retried on the backup, then the
/// health check takes the primary out); the primary returns and takes all
/// the traffic back.
#[test]
fn a_backup_serves_only_while_the_primary_is_down() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let b = two_backends(&lab);
    let (primary, backup) = ("10.72.0.11:80", "10.72.0.12:80");
    // TCP checks (not in the access logs) and no pooled connections (a
    // pooled one the stopping primary closes could take a request).
    let check = "keepalive = 0\n[upstream.health_check]\nkind = \"tcp\"\ninterval_ms = 300\ntimeout_ms = 250\nfall = 2\nrise = 2\n";
    let body = listener(80, "http", "web")
        + &format!(
            "\n[[upstream]]\nname = \"web\"\nport = \"upstream\"\nservers = [{{ address = \"{primary}\" }}, {{ address = \"{backup}\", backup = true }}]\n{check}"
        );
    let z = ZProxy::start(&lab, "zproxy", &config(16384, &body));
    wait_proxy(&lab, &z, 80);
    let n1000 = [
        "--concurrency",
        "20",
        "--requests",
        "1000",
        "--keep-alive",
        "off",
    ];

    // The primary up: the backup gets nothing.
    let before = backend_requests(&b);
    let r = bench(&lab, 80, &n1000);
    let d = delta(&backend_requests(&b), &before);
    eprintln!("backup: primary up, 1000 requests: per server {d:?}");
    assert_eq!(u(&r["failures_total"]), 0, "{r}");
    assert_eq!(
        d,
        [1000, 0],
        "the backup took traffic while the primary was up"
    );
    let seen = requests_and_roles(&lab, &[primary, backup]);
    assert!(!seen[0].1, "the primary shown as a backup");
    assert_eq!(seen[1], (0, true), "/stats: the backup's requests and role");

    // The primary stops under load: every request succeeds.
    let before = backend_requests(&b);
    let running = spawn_bench(
        &lab,
        80,
        "backup",
        &[
            "--duration",
            "8s",
            "--concurrency",
            "20",
            "--keep-alive",
            "off",
        ],
    );
    wait_for(
        Duration::from_secs(6),
        "the load to reach the primary (200 requests) before it stops",
        || b[0].requests() >= before[0] + 200,
    );
    refuse(&lab, "10.72.0.11", true);
    let r = wait_bench(running);
    let d = delta(&backend_requests(&b), &before);
    eprintln!(
        "backup: primary refusing connects under load: {} ok, {} failed {}; per server {d:?}",
        r["successes"], r["failures_total"], r["failures"]
    );
    assert_eq!(u(&r["failures_total"]), 0, "requests failed: {r}");
    assert!(d[1] > 200, "the backup served little after the stop: {d:?}");
    wait_log(
        &z,
        "upstream 10.72.0.11:80: health check failed 2 times: out of rotation",
        5,
    );
    let before = backend_requests(&b);
    let r = bench(&lab, 80, &n1000);
    assert_eq!(u(&r["failures_total"]), 0, "{r}");
    assert_eq!(delta(&backend_requests(&b), &before), [0, 1000]);
    let seen = requests_and_roles(&lab, &[primary, backup]);
    assert!(seen[1].0 >= 1000 + d[1] as u64, "/stats: {seen:?}");

    // The primary returns: all the traffic goes back to it.
    refuse(&lab, "10.72.0.11", false);
    wait_log(
        &z,
        "upstream 10.72.0.11:80: health check passed 2 times: back in rotation",
        10,
    );
    // Failed connects also marked it down for a while (passive checks).
    wait_for(
        Duration::from_secs(10),
        "a request to reach the primary again",
        || curl(&lab, &[&url(80, "/")]).1.contains("10.72.0.11"),
    );
    let before = backend_requests(&b);
    let r = bench(&lab, 80, &n1000);
    let d = delta(&backend_requests(&b), &before);
    eprintln!("backup: primary back, 1000 requests: per server {d:?}");
    assert_eq!(u(&r["failures_total"]), 0, "{r}");
    assert_eq!(d, [1000, 0], "traffic did not return to the primary");
    stop_clean(z);
}
