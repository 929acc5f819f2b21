//! The proxy carries real traffic, end to end in the netns lab: the judged
//! benchmark's shape, keep-alive and closing clients at once, 1 GiB
//! transfers both ways in both modes, ten thousand idle connections. Real
//! clients (zproxy-bench, curl, python sockets) in the client namespace,
//! zproxy on net_af_packet in the proxy namespace, nginx in the upstream one.
//!
//! Traffic only goes to the lab's namespace addresses (10.71.0.0/24 and
//! 10.72.0.0/24). Every test builds its own lab and zproxy, stops zproxy
//! with a real SIGINT and requires a clean exit with no mbuf leaked. The
//! tests take an exclusive lock (`lab_lock`, shared with the other lab test
//! files through tests/common/proxy.rs) so that two of them never run
//! zproxy at the same time, even when nextest runs them in parallel
//! processes. The other lab_proxy_* files hold the proxy's other themes.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::nginx::*;
use common::proxy::*;
use common::*;

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
    let body = one_source_unlimited(&web("keepalive = 0"));
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
