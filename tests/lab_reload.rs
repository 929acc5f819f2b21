//! SIGHUP and `zproxy reload`, end to end in the netns lab: one test per
//! class of key (see `reload::TABLE` and INSTALL.md "What SIGHUP reloads").
//! Each key either applies, and traffic shows it, or the reload is refused
//! with a message naming the key, and traffic shows the old config whole.
//!
//! Like the other lab files: each test builds its own lab and zproxy under
//! the global lab lock, and stops zproxy with SIGINT requiring a clean exit.

mod common;

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use common::nginx::Nginx;
use common::proxy::*;
use common::*;

/// The running instance's config file (`ZProxy::start` wrote it there).
fn cfg_path(lab: &Lab) -> PathBuf {
    lab.run_dir().join("zproxy.toml")
}

/// Rewrites the config and sends SIGHUP; waits for the `nth` outcome line,
/// and for /stats to count it (an applied reload counts once every worker
/// has it).
fn hup(lab: &Lab, z: &ZProxy, text: &str, nth: usize) -> String {
    std::fs::write(cfg_path(lab), text).unwrap();
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &z.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let outcomes = |log: &str| -> Vec<String> {
        log.lines()
            .filter(|l| l.contains("SIGHUP: reloaded") || l.contains("SIGHUP: reload refused"))
            .map(str::to_owned)
            .collect()
    };
    wait_for(
        Duration::from_secs(5),
        "the reload's outcome in the log",
        || outcomes(&z.log()).len() >= nth,
    );
    wait_for(Duration::from_secs(5), "/stats to count the reload", || {
        stats(lab)["reload"]["attempts"].as_u64() >= Some(nth as u64)
    });
    outcomes(&z.log())[nth - 1].clone()
}

/// `zproxy reload -c FILE` in the proxy namespace, after writing `text` there.
fn zproxy_reload(lab: &Lab, text: &str) -> Output {
    std::fs::write(cfg_path(lab), text).unwrap();
    lab.exec(
        "proxy",
        [
            env!("CARGO_BIN_EXE_zproxy").as_ref(),
            "reload".as_ref(),
            "-c".as_ref(),
            cfg_path(lab).as_os_str(),
        ],
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// curl's exit status for a GET on `port` (7: refused, a RST).
fn curl_status(lab: &Lab, port: u16) -> Option<i32> {
    lab.exec(
        "client",
        ["curl", "-sS", "--max-time", "2", &url(port, "/")],
    )
    .status
    .code()
}

#[test]
fn allow_list_edits_apply() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let body = |allow: &str| {
        listener(80, "http", "web")
            + &format!("allow = [{allow}]\n")
            + &upstream("web", &[("10.72.0.1:80", 1)], "")
    };
    let open = config(16384, &body(""));
    let z = ZProxy::start(&lab, "zproxy", &open);
    wait_proxy(&lab, &z, 80);

    let line = hup(&lab, &z, &config(16384, &body("\"192.0.2.0/24\"")), 1);
    assert!(
        line.contains("applied listener.allow (listener client:80)"),
        "{line}"
    );
    assert_eq!(
        curl_status(&lab, 80),
        Some(7),
        "a client outside the new allow-list must get a RST"
    );

    let out = zproxy_reload(&lab, &config(16384, &body("\"10.71.0.0/24\"")));
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        text(&out.stdout).contains("reloaded") && text(&out.stdout).contains("listener.allow"),
        "{}",
        describe(&out)
    );
    assert_eq!(curl(&lab, &[&url(80, "/")]).0, 200, "allowed again");
    let stats = stats(&lab);
    assert_eq!(stats["reload"]["attempts"], 2, "{stats}");
    assert_eq!(stats["reload"]["refused"], 0, "{stats}");
    assert_eq!(stats["reload"]["last_ok"], true, "{stats}");
    stop_clean(z);
}

/// Seconds until the proxy closes an idle connection on `port` (at most 6).
fn idle_close_secs(lab: &Lab, port: u16) -> f64 {
    const IDLE: &str = r#"
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=6)
t = time.monotonic()
try:
    while s.recv(65536):
        pass
except (socket.timeout, ConnectionResetError):
    pass
print(round(time.monotonic() - t, 2))
"#;
    let said = lab.exec_ok(
        "client",
        ["python3", "-c", IDLE, PROXY_CLIENT_IP, &port.to_string()],
    );
    said.trim().parse().unwrap()
}

/// Seconds until a head trickled one header every 200 ms gets its answer
/// (408 expected), and the answer's first line.
fn slowloris(lab: &Lab, port: u16) -> (f64, String) {
    let started = Instant::now();
    let script = format!(
        "exec 3<>/dev/tcp/{PROXY_CLIENT_IP}/{port}; printf 'GET / HTTP/1.1\\r\\nHost: a\\r\\n' >&3; \
         for i in $(seq 30); do sleep 0.2; printf 'X-Slow: %s\\r\\n' $i >&3 2>/dev/null || break; done & \
         trickle=$!; timeout 4 head -1 <&3; kill $trickle 2>/dev/null"
    );
    let out = lab.exec("client", ["bash", "-c", &script]);
    (
        started.elapsed().as_secs_f64(),
        text(&out.stdout).trim().to_owned(),
    )
}

#[test]
fn timeouts_and_per_source_limit_apply() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    // :80 (http) for the header timeout; :81 (tcp, no header to wait for)
    // for the idle timeout and the per-source limit.
    let cfg = |header: u32, idle: u32, per_source: u32| {
        config(
            16384,
            &(listener(80, "http", "web")
                + &format!("header_timeout_ms = {header}\nmax_connections_per_source = 0\n")
                + &listener(81, "tcp", "web")
                + &format!(
                    "idle_timeout_ms = {idle}\nmax_connections_per_source = {per_source}\n"
                )
                + &upstream("web", &[("10.72.0.1:80", 1)], "")),
        )
    };
    let z = ZProxy::start(&lab, "zproxy", &cfg(10_000, 60_000, 0));
    wait_proxy(&lab, &z, 80);
    // Opened before the reload: it keeps its 60 s idle timeout.
    let (mut early, opened) = Holder::open(&lab, 81, 1);
    assert_eq!(opened, "open 1 errors 0");

    let line = hup(&lab, &z, &cfg(500, 2_000, 5), 1);
    for key in [
        "listener.header_timeout_ms (listener client:80)",
        "listener.idle_timeout_ms (listener client:81)",
        "listener.max_connections_per_source (listener client:81)",
    ] {
        assert!(line.contains(key), "{key} missing: {line}");
    }

    let (secs, answer) = slowloris(&lab, 80);
    assert!(
        answer.starts_with("HTTP/1.1 408") && secs < 2.5,
        "the new header timeout (500 ms): {answer:?} after {secs} s"
    );
    let secs = idle_close_secs(&lab, 81);
    assert!(
        (1.8..4.5).contains(&secs),
        "the new idle timeout (2 s) closed after {secs} s"
    );
    assert!(
        early.ask("get 0 /").starts_with("resp 0 200"),
        "a connection from before the reload keeps going, idle for over 2 s"
    );

    // The early connection was accepted without a limit and is not
    // counted: five new ones fit, the sixth is refused.
    let (mut five, opened) = Holder::open(&lab, 81, 5);
    assert_eq!(opened, "open 5 errors 0");
    assert_eq!(five.ask("new"), "new refused", "a sixth connection");
    five.close();
    early.close();
    assert!(
        wait_until(Duration::from_secs(5), || curl(
            &lab,
            &["--max-time", "2", &url(81, "/")]
        )
        .0 == 200),
        "accepted again once the five closed"
    );
    let log = stop_clean(z);
    assert!(
        last_counter(&log, "refused_per_source").is_some_and(|n| n >= 1),
        "{log}"
    );
}

const BACKENDS: [&str; 3] = ["10.72.0.11", "10.72.0.12", "10.72.0.13"];

/// nginx on .11 and .12 answering their own address; .13 has an address
/// and nothing listening (a server that is down).
fn backends(lab: &Lab) -> Vec<Nginx> {
    BACKENDS
        .iter()
        .enumerate()
        .filter_map(|(i, ip)| {
            if i < 2 {
                Some(Nginx::named(lab, &format!("b{i}"), ip))
            } else {
                Nginx::add_address(lab, ip);
                None
            }
        })
        .collect()
}

fn healthy(lab: &Lab, server: &str) -> Option<bool> {
    stats(lab)["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["server"] == server)
        .and_then(|u| u["healthy"].as_bool())
}

#[test]
fn groups_servers_and_health_checks_apply() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let b = backends(&lab);
    // A long interval: after the start-up probes, only a reload brings the
    // next ones soon.
    let check = |interval: u32, expect: u16| {
        format!("keepalive = 0\n[upstream.health_check]\nkind = \"http\"\npath = \"/\"\nexpect_status = {expect}\ninterval_ms = {interval}\ntimeout_ms = 250\nfall = 2\nrise = 2\n")
    };
    let cfg = |servers: &[(&str, u32)], check: &str| {
        config(
            16384,
            &(listener(80, "http", "web") + &upstream("web", servers, check)),
        )
    };
    let z = ZProxy::start(
        &lab,
        "zproxy",
        &cfg(&[("10.72.0.11:80", 1)], &check(60_000, 200)),
    );
    wait_proxy(&lab, &z, 80);

    let all = [
        ("10.72.0.11:80", 1),
        ("10.72.0.12:80", 1),
        ("10.72.0.13:80", 1),
    ];
    let line = hup(&lab, &z, &cfg(&all, &check(60_000, 200)), 1);
    assert!(
        line.contains("upstream.servers (upstream \"web\"): +10.72.0.12:80 +10.72.0.13:80"),
        "{line}"
    );
    wait_log(
        &z,
        "upstream 10.72.0.13:80: added by a reload, failed its first health check: not in rotation",
        5,
    );
    wait_log(
        &z,
        "upstream 10.72.0.12:80: added by a reload, passed its first health check: in rotation",
        5,
    );
    // Workers publish per-server figures every 100 ms.
    wait_for(
        Duration::from_secs(2),
        "/stats: 10.72.0.13:80 not healthy",
        || healthy(&lab, "10.72.0.13:80") == Some(false),
    );
    let before: Vec<usize> = b.iter().map(Nginx::requests).collect();
    let r = bench(
        &lab,
        80,
        &[
            "--concurrency",
            "10",
            "--requests",
            "300",
            "--keep-alive",
            "off",
        ],
    );
    assert_eq!(u(&r["failures_total"]), 0, "{r}");
    let got: Vec<usize> = b
        .iter()
        .zip(&before)
        .map(|(n, b)| n.requests() - b)
        .collect();
    assert!(
        got.iter().all(|&n| n >= 100),
        "both live servers share the load: {got:?}"
    );
    let down = stats(&lab)["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["server"] == "10.72.0.13:80")
        .cloned()
        .unwrap();
    assert_eq!(
        (&down["requests"], &down["connect_failures"]),
        (&0.into(), &0.into()),
        "the down server was never tried: {down}"
    );

    // A changed check (a status no server answers, probed every 300 ms)
    // takes effect at once, not at the old 60 s interval.
    let line = hup(&lab, &z, &cfg(&all, &check(300, 204)), 2);
    assert!(line.contains("applied upstream.health_check."), "{line}");
    wait_log(
        &z,
        "upstream 10.72.0.11:80: health check failed 2 times: out of rotation",
        5,
    );
    let line = hup(&lab, &z, &cfg(&all, &check(300, 200)), 3);
    assert!(line.contains("applied upstream.health_check."), "{line}");
    wait_log(
        &z,
        "upstream 10.72.0.11:80: health check passed 2 times: back in rotation",
        5,
    );
    assert_eq!(curl(&lab, &[&url(80, "/")]).0, 200);
    stop_clean(z);
}

#[test]
fn restart_keys_are_refused_and_the_old_config_keeps_serving() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let running = config(16384, &web(""));
    let z = ZProxy::start(&lab, "zproxy", &running);
    wait_proxy(&lab, &z, 80);
    // Each refused file also narrows the allow-list: were anything applied,
    // the client would be refused.
    let narrowed = running.replace(
        "upstream = \"web\"\n",
        "upstream = \"web\"\nallow = [\"192.0.2.0/24\"]\n",
    );
    assert_ne!(narrowed, running);
    for (edit, key) in [
        (
            narrowed.replace("mbufs = 16383", "mbufs = 32767"),
            "runtime.mbufs",
        ),
        (
            narrowed.replace(
                "worker_lcores = [1]",
                "worker_lcores = [2]\nworker_cpus = [1]",
            ),
            "runtime.worker_lcores",
        ),
        (
            narrowed.replace("address = \"10.72.0.2/24\"", "address = \"10.72.0.3/24\""),
            "port.address (port \"upstream\")",
        ),
        (
            narrowed.replace("tcp_port = 80", "tcp_port = 8000"),
            "listener.tcp_port (listener client:80)",
        ),
    ] {
        assert_ne!(edit, narrowed, "{key}: the edit must change the file");
        let out = zproxy_reload(&lab, &edit);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{key}: {}", describe(&out));
        assert!(
            err.contains("zproxy: reload refused:")
                && err.contains(key)
                && err.contains("changed: needs a restart"),
            "{key}: {err}"
        );
        assert!(
            !err.contains("listener.allow"),
            "only the restart keys are named: {err}"
        );
        assert_eq!(
            curl(&lab, &[&url(80, "/")]).0,
            200,
            "{key}: the old config (no allow-list) keeps serving"
        );
    }
    let log = z.log();
    assert_eq!(log.matches("SIGHUP: reload refused").count(), 4, "{log}");
    assert!(!log.contains("SIGHUP: reloaded"), "{log}");
    let s = stats(&lab);
    assert_eq!(
        (&s["reload"]["attempts"], &s["reload"]["refused"]),
        (&4.into(), &4.into()),
        "{s}"
    );
    assert_eq!(s["reload"]["last_ok"], false);
    stop_clean(z);
}

#[test]
fn a_broken_file_is_refused_and_the_old_config_keeps_serving() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let running = config(16384, &web(""));
    let z = ZProxy::start(&lab, "zproxy", &running);
    wait_proxy(&lab, &z, 80);
    let line = hup(&lab, &z, &(running.clone() + "\n[[listener]\n"), 1);
    assert!(
        line.contains("SIGHUP: reload refused:") && line.contains("zproxy.toml"),
        "{line}"
    );
    assert_eq!(curl(&lab, &[&url(80, "/")]).0, 200, "after a syntax error");
    // Valid TOML, invalid config: a route to a group that does not exist.
    let dangling = running.replace("upstream = \"web\"\n", "upstream = \"nowhere\"\n");
    assert_ne!(dangling, running);
    let line = hup(&lab, &z, &dangling, 2);
    assert!(
        line.contains("SIGHUP: reload refused:") && line.contains("nowhere"),
        "{line}"
    );
    assert_eq!(curl(&lab, &[&url(80, "/")]).0, 200, "after an invalid file");
    let line = hup(&lab, &z, &running, 3);
    assert!(
        line.contains("SIGHUP: reloaded") && line.ends_with("no change"),
        "{line}"
    );
    let s = stats(&lab);
    assert_eq!(
        (&s["reload"]["attempts"], &s["reload"]["refused"]),
        (&3.into(), &2.into()),
        "{s}"
    );
    // The drain timeout applies too (the control thread reads it at SIGTERM).
    let drain = running.clone() + "\n[management]\ndrain_timeout_ms = 1234\n";
    let line = hup(&lab, &z, &drain, 4);
    assert!(
        line.ends_with("applied management.drain_timeout_ms"),
        "{line}"
    );
    let (ok, log) = z.stop("TERM");
    assert!(ok && log.contains(" 0 leaked"), "{log}");
    assert!(log.contains("draining for up to 1234 ms"), "{log}");
}
