//! The proxy (HTTP and TCP modes) end to end in the netns lab: real clients
//! (zproxy-bench, curl, python sockets) in the client namespace, zproxy on
//! net_af_packet in the proxy namespace, real nginx servers in the upstream
//! namespace. Every test builds its own lab and zproxy, stops zproxy with a
//! real SIGINT and requires a clean exit with no mbuf leaked.
//!
//! Traffic only goes to the lab's namespace addresses (10.71.0.0/24 and
//! 10.72.0.0/24). The tests take an exclusive lock (`lab_lock`, shared with
//! the other lab test files through tests/common/proxy.rs) so that two of
//! them never run zproxy at the same time, even when nextest runs them in
//! parallel processes.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::proxy::*;
use common::*;
use serde_json::Value;

fn sha256_file(p: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(p)
        .output()
        .expect("sha256sum");
    assert!(out.status.success(), "sha256sum: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned()
}

/// An extra nginx in the upstream namespace, with its own prefix dir and logs.
struct Nginx {
    dir: PathBuf,
    conf: PathBuf,
    listen: (String, u16),
}

impl Nginx {
    /// Writes a config around `server` (the body of one `server {}` block,
    /// without the listen line) and starts it.
    fn start(lab: &Lab, name: &str, ip: &str, port: u16, server: &str) -> Nginx {
        let dir = lab.run_dir().join(name);
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let d = dir.display();
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                r#"
worker_processes 1;
daemon on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    default_type application/octet-stream;
    keepalive_requests 1000000;
    server {{
        listen {ip}:{port} backlog=4096;
        {server}
    }}
}}
"#
            ),
        )
        .unwrap();
        // Workers run unprivileged: let them write bodies and uploads.
        let _ = std::process::Command::new("chmod")
            .args(["-R", "a+rwX"])
            .arg(&dir)
            .status();
        let n = Nginx {
            dir,
            conf,
            listen: (ip.to_owned(), port),
        };
        n.launch(lab);
        n
    }

    fn launch(&self, lab: &Lab) {
        let d = self.dir.to_str().unwrap();
        lab.exec_ok(
            "upstream",
            [
                "nginx",
                "-q",
                "-p",
                d,
                "-e",
                &format!("{d}/error.log"),
                "-c",
                self.conf.to_str().unwrap(),
            ],
        );
        let (ip, port) = (&self.listen.0, self.listen.1);
        assert!(
            wait_until(Duration::from_secs(5), || accepts(
                lab, "upstream", ip, port
            )),
            "nginx {} does not accept on {ip}:{port}",
            self.dir.display()
        );
    }

    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.dir.join("nginx.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Kills the master (SIGTERM: fast shutdown) and waits until it is gone.
    fn stop(&self, lab: &Lab) {
        let pid = self.pid().expect("nginx pid");
        // SAFETY: plain kill(2) of a process we started.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let (ip, port) = (&self.listen.0, self.listen.1);
        assert!(
            wait_until(Duration::from_secs(5), || {
                // SAFETY: signal 0 only checks that the pid exists.
                let gone = unsafe { libc::kill(pid, 0) } != 0;
                gone && !accepts(lab, "upstream", ip, port)
            }),
            "nginx {pid} did not stop"
        );
    }

    fn access_log(&self) -> PathBuf {
        self.dir.join("access.log")
    }

    fn requests(&self) -> usize {
        line_count(&self.access_log())
    }
}

// ---- 1. the judged benchmark's shape, through HTTP mode ---------------------------------

#[test]
fn http_seed_shape() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let body = web("");
    let z = ZProxy::start(&lab, "zproxy", &config(4096, &body));
    wait_proxy(&lab, &z, 80);
    let (code, text) = curl(&lab, &[&url(80, "/")]);
    assert_eq!((code, text.as_str()), (200, UPSTREAM_BODY));

    let logged_before = lab.upstream_access_log_lines();
    let t = Instant::now();
    let r = bench(
        &lab,
        80,
        &[
            "--concurrency",
            "500",
            "--duration",
            "10s",
            "--keep-alive",
            "off",
        ],
    );
    eprintln!(
        "http_seed_shape: {} successes in {:?} ({} conn/s), failures {}",
        r["successes"],
        t.elapsed(),
        r["connections_per_sec"],
        r["failures"]
    );
    let successes = u(&r["successes"]);
    assert!(successes > 0, "{r}");
    assert_eq!(u(&r["failures_total"]), 0, "{r}");
    let codes = r["status_codes"].as_object().unwrap();
    assert!(
        codes.keys().all(|k| k == "200"),
        "a status other than 200: {r}"
    );
    let logged = lab.upstream_access_log_lines() - logged_before;
    assert!(
        logged as u64 >= successes,
        "nginx logged {logged} requests, the client counted {successes} successes"
    );
    stop_clean(z);
}

// ---- 2. keep-alive and closing clients at once ------------------------------------------

#[test]
fn keep_alive_and_closing_clients_mixed() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let body = web("");
    let z = ZProxy::start(&lab, "zproxy", &config(4096, &body));
    wait_proxy(&lab, &z, 80);

    let ka = spawn_bench(
        &lab,
        80,
        "ka",
        &[
            "--keep-alive",
            "on",
            "--concurrency",
            "50",
            "--duration",
            "5s",
        ],
    );
    let close = spawn_bench(
        &lab,
        80,
        "close",
        &[
            "--keep-alive",
            "off",
            "--concurrency",
            "200",
            "--duration",
            "5s",
        ],
    );
    let ka = wait_bench(ka);
    let close = wait_bench(close);
    eprintln!(
        "mixed: keep-alive {} successes ({} req/s), closing {} successes ({} conn/s)",
        ka["successes"], ka["requests_per_sec"], close["successes"], close["connections_per_sec"]
    );
    assert!(u(&ka["successes"]) > 0, "keep-alive: {ka}");
    assert_eq!(u(&ka["failures_total"]), 0, "keep-alive: {ka}");
    assert!(u(&close["successes"]) > 0, "closing: {close}");
    assert_eq!(u(&close["failures_total"]), 0, "closing: {close}");
    stop_clean(z);
}

// ---- 3. large transfers, both directions, both modes -------------------------------------

/// Size of each transfer: 1 GiB. The suite runs release builds
/// (tests/run.sh); with the dev build a 1 GiB transfer took ~110 s.
const BIG: &str = "1G";
const BIG_BYTES: u64 = 1 << 30;

#[test]
fn large_transfers_both_modes() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let started = Instant::now();
    let lab = Lab::up();

    // The lab nginx's document root, from its config.
    let conf = std::fs::read_to_string(lab.run_dir().join("nginx.conf")).unwrap();
    let www = conf
        .lines()
        .find_map(|l| l.trim().strip_prefix("root ")?.strip_suffix(';'))
        .expect("root in the lab's nginx.conf");
    let big = Path::new(www).join("big");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "head -c {BIG} /dev/urandom > '{}' && chmod a+r '{}'",
            big.display(),
            big.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let want = sha256_file(&big);

    // The upload target: a second nginx with WebDAV PUT.
    let store = lab.run_dir().join("dav-store");
    std::fs::create_dir_all(&store).unwrap();
    let dav = Nginx::start(
        &lab,
        "dav",
        UPSTREAM_IP,
        8081,
        &format!(
            "location / {{ root {}; dav_methods PUT; client_max_body_size 2g; create_full_put_path on; }}",
            store.display()
        ),
    );
    let _ = std::process::Command::new("chmod")
        .args(["a+rwx"])
        .arg(&store)
        .status();
    let src = lab.run_dir().join("upload-src");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("head -c {BIG} /dev/urandom > '{}'", src.display()))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let src_sha = sha256_file(&src);
    eprintln!(
        "large: setup (2 x {BIG} files, hashes) {:?}",
        started.elapsed()
    );

    let body = listener(80, "http", "web")
        + &listener(81, "tcp", "web")
        + &listener(82, "http", "dav")
        + &listener(83, "tcp", "dav")
        + &upstream("web", &[("10.72.0.1:80", 1)], "read_timeout_ms = 30000")
        + &upstream("dav", &[("10.72.0.1:8081", 1)], "read_timeout_ms = 30000");
    let z = ZProxy::start(&lab, "zproxy", &config(65536, &body));
    wait_proxy(&lab, &z, 80);

    let mib = BIG_BYTES as f64 / (1 << 20) as f64;
    for (port, mode) in [(80, "http"), (81, "tcp")] {
        let t = Instant::now();
        let out = lab.exec(
            "client",
            [
                "bash",
                "-c",
                &format!(
                    "set -o pipefail; curl -sS --fail --max-time 200 {} | sha256sum",
                    url(port, "/big")
                ),
            ],
        );
        let secs = t.elapsed().as_secs_f64();
        assert!(
            out.status.success(),
            "download via {mode}: {}\nzproxy log:\n{}",
            describe(&out),
            z.log()
        );
        let got = String::from_utf8_lossy(&out.stdout);
        eprintln!(
            "large: download {BIG} via {mode} (port {port}): {secs:.1} s, {:.0} MiB/s",
            mib / secs
        );
        assert_eq!(
            got.split_whitespace().next(),
            Some(want.as_str()),
            "download via {mode} corrupted"
        );
    }
    for (port, mode, name) in [(82, "http", "up-http"), (83, "tcp", "up-tcp")] {
        let t = Instant::now();
        let (code, text) = curl(
            &lab,
            &[
                "--max-time",
                "200",
                "-T",
                src.to_str().unwrap(),
                &url(port, &format!("/{name}")),
            ],
        );
        let secs = t.elapsed().as_secs_f64();
        assert_eq!(
            code,
            201,
            "upload via {mode}: {text}\nzproxy log:\n{}",
            z.log()
        );
        eprintln!(
            "large: upload {BIG} via {mode} (port {port}): {secs:.1} s, {:.0} MiB/s",
            mib / secs
        );
        let stored = store.join(name);
        assert_eq!(
            std::fs::metadata(&stored).map(|m| m.len()).ok(),
            Some(BIG_BYTES),
            "upload via {mode}: size"
        );
        assert_eq!(sha256_file(&stored), src_sha, "upload via {mode} corrupted");
        let _ = std::fs::remove_file(&stored);
    }
    drop(dav);
    stop_clean(z);
    eprintln!("large: total {:?}", started.elapsed());
}

// ---- 4. balancing, failover, recovery ----------------------------------------------------

const BACKENDS: [&str; 3] = ["10.72.0.11", "10.72.0.12", "10.72.0.13"];

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
    let backends: Vec<Nginx> = BACKENDS
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            lab.exec_ok(
                "upstream",
                ["ip", "addr", "add", &format!("{ip}/24"), "dev", UPSTREAM_IF],
            );
            Nginx::start(
                &lab,
                &format!("b{i}"),
                ip,
                80,
                &format!(
                    "location / {{ default_type text/plain; return 200 \"server {ip}\\n\"; }}"
                ),
            )
        })
        .collect();
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

// ---- 6. ten thousand idle connections ----------------------------------------------------

#[test]
fn ten_thousand_idle_connections() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    // No upstream keep-alive pool: pooled upstream connections are flows too,
    // and flows_active must fall back to 0 once the clients are gone.
    let body = web("keepalive = 0");
    // Each proxied client is admitted with a slot kept for its upstream.
    let cfg = config(4096, &body).replace("max_flows = 16384", "max_flows = 20480");
    let z = ZProxy::start(&lab, "zproxy", &cfg);
    wait_proxy(&lab, &z, 80);

    // Two holders: one process's sockets are bounded by its fd limit.
    const PER: usize = 5000;
    let t = Instant::now();
    let holders: Vec<Holder> = (0..2)
        .map(|_| {
            let (holder, opened) = Holder::open(&lab, 80, PER);
            assert_eq!(
                opened,
                format!("open {PER} errors 0"),
                "holder did not open its connections; zproxy log:\n{}",
                z.log()
            );
            holder
        })
        .collect();
    eprintln!("idle: 10000 connections open after {:?}", t.elapsed());

    // All held at the proxy (the summary line comes every 5 s).
    assert!(
        wait_until(Duration::from_secs(12), || last_counter(
            &z.log(),
            "flows_active"
        )
        .is_some_and(|n| n >= 2 * PER as u64)),
        "flows_active never reached {}:\n{}",
        2 * PER,
        z.log()
    );
    // And it still serves.
    let (code, text) = curl(&lab, &[&url(80, "/")]);
    assert_eq!((code, text.as_str()), (200, UPSTREAM_BODY), "{}", z.log());
    let r = bench(
        &lab,
        80,
        &[
            "--requests",
            "500",
            "--concurrency",
            "20",
            "--keep-alive",
            "off",
        ],
    );
    assert_eq!(u(&r["successes"]), 500, "with 10000 idle: {r}");

    // Close them all: the flows go away (the proxy closes passively: no TIME-WAIT).
    let t = Instant::now();
    holders.into_iter().for_each(Holder::close);
    let summaries_before = z.log().matches("flows_active=").count();
    assert!(
        wait_until(Duration::from_secs(20), || {
            let log = z.log();
            log.matches("flows_active=").count() > summaries_before
                && last_counter(&log, "flows_active") == Some(0)
        }),
        "flows_active did not return to 0:\n{}",
        z.log()
    );
    eprintln!(
        "idle: flows_active back to 0 within {:?} of closing",
        t.elapsed()
    );
    let log = stop_clean(z);
    let final_line = log
        .lines()
        .find(|l| l.contains("final counters"))
        .expect("final counters");
    assert_eq!(counter(final_line, "flows_active"), Some(0), "{final_line}");
    assert!(
        counter(final_line, "flows_accepted").unwrap() >= 2 * PER as u64,
        "{final_line}"
    );
}

// ---- the appliance: health checks, reload, drain, metrics ------------------------------

/// Two extra nginx servers on 10.72.0.11 and .12 answering their own name.
fn two_backends(lab: &Lab) -> Vec<Nginx> {
    BACKENDS[..2]
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            lab.exec_ok(
                "upstream",
                ["ip", "addr", "add", &format!("{ip}/24"), "dev", UPSTREAM_IF],
            );
            Nginx::start(
                lab,
                &format!("b{i}"),
                ip,
                80,
                &format!(
                    "location / {{ default_type text/plain; return 200 \"server {ip}\\n\"; }}"
                ),
            )
        })
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
    lab.exec_ok(
        "client",
        [
            "nft",
            "add table inet loss; add chain inet loss in { type filter hook input priority 0; }; \
             add rule inet loss in tcp sport 80 numgen random mod 100 < 3 drop",
        ],
    );
    let lossy = bench(
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
    );
    lab.exec_ok("client", ["nft", "delete table inet loss"]);
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
    stop_clean(z);
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
    // SYNs with bad checksums: smoltcp drops them, and the slots they took
    // must come back closed (a slot left listening cannot serve again).
    let synflood = repo_root().join("bench/synflood.py");
    let synflood = synflood.to_str().unwrap();
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
    let cookies_before = stat(&lab, "syn_cookies_sent");
    let flood = lab
        .command("client", "python3")
        .args([synflood, PROXY_CLIENT_IP])
        .args(["--rate", "20000", "--duration", "6"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("synflood.py");
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
    let out = flood.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    let sent: u64 = said
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(out.status.success() && sent > 10_000, "synflood: {said}");
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
    assert!(
        cookies + 256 >= sent,
        "sent {sent}, cookies {cookies}: {log}"
    );
    // State was held for the backlog and the real clients, not for the flood.
    let held = last_counter(&log, "flows_accepted").unwrap() - before;
    let served = u(&real["completed"]);
    assert!(
        held <= served + 256 + 300,
        "{held} flows for {served} real connections: {log}"
    );
}
