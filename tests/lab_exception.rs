//! The kernel exception path in the netns lab: ZProxy runs in the proxy
//! namespace with `[port.exception]` on its client port, so a TAP interface
//! (`zpx0`, ZProxy's MAC and 10.71.0.2/24) appears in that namespace. From
//! the client namespace, a kernel listener on a port ZProxy does not own is
//! reached through it, ping works, ZProxy's own listener keeps working, and
//! a BGP session (BIRD 2, the client namespace as the router) comes up over
//! it and holds while HTTP load runs.
//!
//! The lab's net_af_packet port does not take frames away from the kernel's
//! `cli1`, which would then see the client's frames itself (weak host
//! model: 10.71.0.2 is local on `zpx0`). An nftables ingress rule on `cli1`
//! drops them after the packet socket has its copy, so the kernel hears the
//! wire only through the exception path.

mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::proxy::*;
use common::*;

const IFACE: &str = "zpx0";
/// A port no ZProxy listener has: the kernel's.
const KERNEL_PORT: u16 = 2222;

/// The lab config with the exception path on the client port. Its
/// net_af_packet has one queue pair (a second would be a second packet
/// socket in the same fanout group, taking half the flows), so worker 0
/// sends the kernel's frames.
fn exception_config(body: &str) -> String {
    config(16384, body).replacen(
        &format!("gateway = \"{CLIENT_IP}\"\n"),
        &format!(
            "gateway = \"{CLIENT_IP}\"\nexception = {{ kind = \"tap\", iface = \"{IFACE}\" }}\n"
        ),
        1,
    )
}

/// Keeps the proxy namespace's kernel off `cli1` (see the file comment).
fn kernel_off_cli1(lab: &Lab) {
    lab.exec_ok("proxy", ["nft", "add", "table", "netdev", "zpx"]);
    lab.exec_ok(
        "proxy",
        [
            "nft",
            "add chain netdev zpx in { type filter hook ingress device cli1 priority 0; policy drop; }",
        ],
    );
}

fn start(lab: &Lab, body: &str) -> ZProxy {
    kernel_off_cli1(lab);
    let cfg = exception_config(body);
    assert!(cfg.contains("exception ="), "{cfg}");
    let z = ZProxy::start(lab, "exception", &cfg);
    wait_log(&z, "exception path on", 10);
    z
}

/// Sends `line` from the client to `ip:port` with nc; true when it went.
fn nc_send(lab: &Lab, port: u16, line: &str) -> bool {
    let script = format!("printf '{line}\\n' | nc -N -w 3 {PROXY_CLIENT_IP} {port}");
    lab.exec("client", ["sh", "-c", &script]).status.success()
}

#[test]
fn the_kernel_side_is_reached_through_the_exception_path() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let z = start(&lab, &web(""));
    let addrs = lab.exec_ok("proxy", ["ip", "-4", "addr", "show", "dev", IFACE]);
    assert!(addrs.contains("10.71.0.2/24"), "{addrs}");
    assert!(addrs.contains("UP"), "{addrs}");

    // A kernel listener on a port ZProxy does not own.
    let mut server = lab
        .command("proxy", "nc")
        .args(["-l", "-N", &KERNEL_PORT.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn nc -l in the proxy namespace");
    let sent = wait_until(Duration::from_secs(10), || {
        nc_send(&lab, KERNEL_PORT, "hello kernel")
    });
    let mut got = String::new();
    let waited = wait_until(Duration::from_secs(5), || {
        server.try_wait().unwrap().is_some()
    });
    if !waited {
        let _ = server.kill();
    }
    server
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut got)
        .unwrap();
    assert!(
        sent && got.contains("hello kernel"),
        "nc to the kernel's port {KERNEL_PORT} failed (sent {sent}, got {got:?}); log:\n{}",
        z.log()
    );

    // Echo requests: answered (by ZProxy; see INSTALL.md).
    let ping = lab.exec(
        "client",
        ["ping", "-c", "3", "-i", "0.2", "-W", "2", PROXY_CLIENT_IP],
    );
    assert!(ping.status.success(), "{}", describe(&ping));
    // The kernel pings out through the exception path, and gets its replies.
    let ping = lab.exec(
        "proxy",
        ["ping", "-c", "2", "-i", "0.2", "-W", "2", CLIENT_IP],
    );
    assert!(ping.status.success(), "{}", describe(&ping));

    // ZProxy's own listener keeps working.
    wait_proxy(&lab, &z, 80);
    let (code, body) = curl(&lab, &[&url(80, "/")]);
    assert_eq!((code, body.as_str()), (200, UPSTREAM_BODY));

    let s = fresh_stats(&lab);
    let worker = &s["workers"][0];
    assert!(u(&worker["exception_to_kernel"]) > 0, "{s}");
    let from_kernel =
        u(&worker["exception_from_kernel"]) + u(&s["control"]["exception_from_kernel"]);
    assert!(from_kernel > 0, "{s}");
    let metrics = lab.exec_ok("proxy", ["curl", "-s", "http://127.0.0.1:9090/metrics"]);
    assert!(
        metrics.contains("zproxy_exception_from_kernel_total{worker=\"control\"}"),
        "{metrics}"
    );
    stop_clean(z);
    assert!(
        !lab.exec_ok("proxy", ["ip", "-o", "link"]).contains(IFACE),
        "the TAP interface outlived zproxy"
    );
}

/// A BIRD 2 config: one BGP session, exporting `prefix` (a static blackhole).
fn bird_conf(router_id: &str, local_as: u32, neighbor: &str, peer_as: u32, prefix: &str) -> String {
    format!(
        r#"
router id {router_id};
protocol device {{ }}
protocol static {{ ipv4; route {prefix} blackhole; }}
protocol bgp peer {{
  local as {local_as};
  neighbor {neighbor} as {peer_as};
  hold time 9;
  keepalive time 3;
  connect retry time 2;
  ipv4 {{ import all; export all; }};
}}
"#
    )
}

struct Bird {
    socket: String,
    role: &'static str,
}

impl Bird {
    fn start(lab: &Lab, role: &'static str, conf: &str) -> Bird {
        let dir = lab.run_dir();
        let conf_path = dir.join(format!("bird-{role}.conf"));
        std::fs::write(&conf_path, conf).unwrap();
        let socket = dir.join(format!("bird-{role}.ctl")).display().to_string();
        let pid = dir.join(format!("bird-{role}.pid")).display().to_string();
        // bird daemonises; lab.sh down kills what still runs in the namespace.
        lab.exec_ok(
            role,
            [
                "bird",
                "-c",
                conf_path.to_str().unwrap(),
                "-s",
                &socket,
                "-P",
                &pid,
            ],
        );
        Bird { socket, role }
    }

    fn show(&self, lab: &Lab, what: &[&str]) -> String {
        let mut args = vec!["birdc", "-s", &self.socket];
        args.extend(what);
        String::from_utf8_lossy(&lab.exec(self.role, &args).stdout).into_owned()
    }

    /// The `peer` line of `show protocols` (state and since when).
    fn session(&self, lab: &Lab) -> String {
        self.show(lab, &["show", "protocols", "peer"])
            .lines()
            .find(|l| l.starts_with("peer"))
            .unwrap_or_default()
            .to_owned()
    }
}

#[test]
fn a_bgp_session_over_the_exception_path_holds_under_load() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let z = start(&lab, &web(""));
    wait_proxy(&lab, &z, 80);
    let proxy_bird = Bird::start(
        &lab,
        "proxy",
        &bird_conf(PROXY_CLIENT_IP, 65001, CLIENT_IP, 65002, "192.0.2.0/24"),
    );
    let router = Bird::start(
        &lab,
        "client",
        &bird_conf(CLIENT_IP, 65002, PROXY_CLIENT_IP, 65001, "198.51.100.0/24"),
    );
    let mut up = String::new();
    let established = wait_until(Duration::from_secs(30), || {
        up = router.session(&lab);
        up.contains("Established")
    });
    assert!(
        established,
        "BGP did not come up over the exception path: router {up:?}, proxy {:?}; log:\n{}",
        proxy_bird.session(&lab),
        z.log()
    );
    // Each side learns the other's prefix.
    for (bird, prefix) in [(&router, "192.0.2.0/24"), (&proxy_bird, "198.51.100.0/24")] {
        let mut routes = String::new();
        let learnt = wait_until(Duration::from_secs(15), || {
            routes = bird.show(&lab, &["show", "route", "all"]);
            routes.contains(prefix)
        });
        assert!(learnt, "{} did not learn {prefix}: {routes}", bird.role);
    }

    // 60 s of the seed-shape benchmark (500 concurrent, keep-alive off)
    // through ZProxy; the session must not drop meanwhile.
    let load = spawn_bench(
        &lab,
        80,
        "bgp-load",
        &[
            "--duration",
            "60s",
            "--concurrency",
            "500",
            "--keep-alive",
            "off",
        ],
    );
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        // Holding a period: the session is looked at every 5 s.
        std::thread::sleep(Duration::from_secs(5));
        let now = router.session(&lab);
        assert_eq!(
            now,
            up,
            "the BGP session changed under load; log:\n{}",
            z.log()
        );
    }
    let r = wait_bench(load);
    eprintln!(
        "exception: BGP held under {} conn/s, {} successes, {} failures",
        r["connections_per_sec"], r["successes"], r["failures_total"]
    );
    assert!(u(&r["successes"]) > 1000, "the load ran: {r}");
    let s = fresh_stats(&lab);
    assert_eq!(u(&s["workers"][0]["exception_rate_drops"]), 0, "{s}");
    assert_eq!(u(&s["workers"][0]["exception_ring_drops"]), 0, "{s}");
    stop_clean(z);
}

/// Starts `zproxy capture` of `port` in the proxy namespace for `secs`,
/// writing `file`; returns once the capture is live (the pcap header is
/// written only then).
fn start_capture(
    lab: &Lab,
    port: &str,
    secs: u64,
    file: &std::path::Path,
    filter: &[&str],
) -> std::process::Child {
    let mut args = vec![
        env!("CARGO_BIN_EXE_zproxy").to_owned(),
        "capture".into(),
        "--port".into(),
        port.into(),
        "--seconds".into(),
        secs.to_string(),
        "-w".into(),
        file.display().to_string(),
    ];
    args.extend(filter.iter().map(|s| s.to_string()));
    let child = lab
        .command("proxy", &args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn zproxy capture");
    wait_for(Duration::from_secs(5), "the capture to go live", || {
        std::fs::metadata(file).is_ok_and(|m| m.len() >= 24)
    });
    child
}

/// Waits for a capture to end; its summary line (stderr).
fn end_capture(child: std::process::Child) -> String {
    let out = child.wait_with_output().expect("wait for zproxy capture");
    let summary = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "zproxy capture failed: {summary}");
    summary
}

/// `tcpdump -n -r FILE` (with `-A`: payloads as text).
fn tcpdump(file: &std::path::Path) -> String {
    let out = std::process::Command::new("tcpdump")
        .args(["-n", "-A", "-r"])
        .arg(file)
        .output()
        .expect("run tcpdump");
    assert!(out.status.success(), "tcpdump -r: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The summary lines of a tcpdump listing (one per frame).
fn frames(listing: &str) -> Vec<&str> {
    listing
        .lines()
        .filter(|l| {
            l.chars().next().is_some_and(|c| c.is_ascii_digit()) && l.contains(" IP ")
                || l.contains(" ARP,")
        })
        .collect()
}

#[test]
fn capture_of_a_request_through_the_proxy_reads_back_with_tcpdump() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let z = ZProxy::start(&lab, "capture", &config(16384, &web("keepalive = 0")));
    wait_proxy(&lab, &z, 80);
    let dir = TempDir::new("capture");

    // Both sides of one request, filtered to `tcp port 80`, with ping noise.
    let client_side = dir.path().join("client.pcap");
    let upstream_side = dir.path().join("upstream.pcap");
    let everything = dir.path().join("all.pcap");
    let cap = start_capture(&lab, "client", 3, &client_side, &["tcp", "port", "80"]);
    let ping = lab.exec("client", ["ping", "-c", "2", "-i", "0.2", PROXY_CLIENT_IP]);
    assert!(ping.status.success(), "{}", describe(&ping));
    let (code, body) = curl(&lab, &[&url(80, "/")]);
    assert_eq!((code, body.as_str()), (200, UPSTREAM_BODY));
    let summary = end_capture(cap);
    assert!(summary.contains("0 dropped"), "{summary}");
    let listing = tcpdump(&client_side);
    let f = frames(&listing);
    assert!(!f.is_empty(), "{listing}");
    assert!(
        f.iter().all(|l| l.contains(".80 ") || l.contains(".80:")),
        "only port 80: {listing}"
    );
    assert!(
        !listing.contains("ICMP"),
        "the filter keeps ping out: {listing}"
    );
    let client = format!("{CLIENT_IP}.");
    for (what, needle) in [
        ("SYN", "Flags [S]"),
        ("SYN-ACK", "Flags [S.]"),
        ("request", "GET / HTTP/1.1"),
        ("response", "HTTP/1.1 200"),
        ("FIN", "Flags [F."),
    ] {
        assert!(
            listing.contains(needle),
            "no {what} ({needle}) in:\n{listing}"
        );
    }
    assert!(f.iter().any(|l| l.contains(&client)), "{listing}");

    let cap = start_capture(&lab, "upstream", 3, &upstream_side, &["tcp", "port", "80"]);
    let (code, _) = curl(&lab, &[&url(80, "/")]);
    assert_eq!(code, 200);
    end_capture(cap);
    let listing = tcpdump(&upstream_side);
    let upstream = format!("{UPSTREAM_IP}.80");
    for needle in [
        "Flags [S]",
        "Flags [S.]",
        "GET / HTTP/1.1",
        "HTTP/1.1 200",
        "Flags [F.",
    ] {
        assert!(listing.contains(needle), "no {needle} upstream:\n{listing}");
    }
    assert!(
        frames(&listing).iter().all(|l| l.contains(&upstream)),
        "{listing}"
    );

    // Without a filter the same ping is there: the filter is what kept it out.
    let cap = start_capture(&lab, "client", 2, &everything, &[]);
    let ping = lab.exec("client", ["ping", "-c", "2", "-i", "0.2", PROXY_CLIENT_IP]);
    assert!(ping.status.success(), "{}", describe(&ping));
    end_capture(cap);
    let listing = tcpdump(&everything);
    assert!(
        listing.contains("ICMP echo request") && listing.contains("ICMP echo reply"),
        "{listing}"
    );

    // A capture whose client walks away ends, or the next would be refused (one at a time).
    let mut cap = start_capture(&lab, "client", 3600, &dir.path().join("gone.pcap"), &[]);
    cap.kill().unwrap();
    cap.wait().unwrap();
    let again = dir.path().join("again.pcap");
    let again = again.to_str().unwrap();
    let zp = env!("CARGO_BIN_EXE_zproxy");
    let args = [
        zp,
        "capture",
        "--port",
        "client",
        "--seconds",
        "1",
        "-w",
        again,
    ];
    let mut last = String::new();
    let ran = wait_until(Duration::from_secs(5), || {
        let out = lab.exec("proxy", args);
        last = describe(&out);
        out.status.success()
    });
    assert!(ran, "no capture after an abandoned one: {last}");
    stop_clean(z);
}
