//! The access log, end to end in the netns lab: after known traffic (200
//! and 404 through nginx, 502 from a refused upstream, 504 from a silent
//! one, a `tcp` connection) every field of every line is checked, in text
//! and in JSON; a writer that falls behind (a FIFO nobody reads) makes the
//! workers drop and count lines while every request is still answered; and
//! SIGUSR1 reopens the file after it was moved (logrotate).
//!
//! Root only; takes the lab lock like the other lab tests.

mod common;

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::faults::*;
use common::proxy::*;
use common::*;
use serde_json::Value;

/// nginx on :80, the same nginx as a `tcp` listener on :81, a refused
/// group on :85 and a silent one (1 s read timeout) on :86; then `log`.
fn log_config(log: &str) -> String {
    let body = web("")
        + &listener(81, "tcp", "web")
        + &faulty(85, "refused", 9001, "connect_timeout_ms = 8000")
        + &faulty(86, "silent", 9002, "read_timeout_ms = 1000")
        + "\n[access_log]\n"
        + log;
    config(16384, &body)
}

/// What curl saw: (status, bytes it sent, bytes of head and body it got).
fn request(lab: &Lab, port: u16, path: &str) -> (u32, u64, u64) {
    let out = lab.exec(
        "client",
        [
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{size_request} %{size_header} %{size_download}",
            &url(port, path),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let n: Vec<u64> = text
        .split_whitespace()
        .map(|w| w.parse().unwrap())
        .collect();
    assert_eq!(n.len(), 4, "curl: {}", describe(&out));
    (n[0] as u32, n[1], n[2] + n[3])
}

/// One exchange as the test knows it, and as a log line says it.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    time_ms: u64,
    client: String,
    listener: String,
    method: String,
    host: String,
    path: String,
    status: Option<u64>,
    bytes_in: u64,
    bytes_out: u64,
    upstream: Option<String>,
    connect_ms: Option<f64>,
    response_ms: Option<f64>,
    total_ms: f64,
    id: String,
    cause: Option<String>,
}

/// "2026-11-30T13:20:01.123Z" -> Unix ms.
fn parse_time(t: &str) -> u64 {
    let b = t.as_bytes();
    assert!(
        t.len() == 24 && b[4] == b'-' && b[10] == b'T' && b[19] == b'.' && b[23] == b'Z',
        "not RFC 3339 UTC with ms: {t}"
    );
    let n = |r: std::ops::Range<usize>| t[r].parse::<i64>().unwrap();
    let (y, m, d) = (n(0..4), n(5..7), n(8..10));
    // days_from_civil (Howard Hinnant)
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + n(11..13) * 3600 + n(14..16) * 60 + n(17..19);
    secs as u64 * 1000 + n(20..23) as u64
}

fn dash<T>(s: &str, f: impl Fn(&str) -> T) -> Option<T> {
    (s != "-").then(|| f(s))
}

fn parse_text(l: &str) -> Line {
    let f: Vec<&str> = l.split(' ').collect();
    assert_eq!(f.len(), 16, "fields of {l:?}");
    assert_eq!(f[15], "tls=-", "plain HTTP: {l:?}");
    let kv = |i: usize, key: &str| -> String {
        f[i].strip_prefix(key)
            .and_then(|r| r.strip_prefix('='))
            .unwrap_or_else(|| panic!("no {key}= in field {i} of {l:?}"))
            .to_owned()
    };
    let ms = |s: &str| s.parse::<f64>().unwrap();
    Line {
        time_ms: parse_time(f[0]),
        client: f[1].into(),
        listener: f[2].into(),
        method: f[3].into(),
        host: f[4].into(),
        path: f[5].into(),
        status: dash(f[6], |s| s.parse().unwrap()),
        bytes_in: f[7].parse().unwrap(),
        bytes_out: f[8].parse().unwrap(),
        upstream: dash(&kv(9, "up"), str::to_owned),
        connect_ms: dash(&kv(10, "connect_ms"), ms),
        response_ms: dash(&kv(11, "response_ms"), ms),
        total_ms: ms(&kv(12, "total_ms")),
        id: kv(13, "id"),
        cause: dash(&kv(14, "cause"), str::to_owned),
    }
}

fn parse_json(l: &str) -> Line {
    let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
    let keys: HashSet<&str> = v.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(keys.len(), 18, "{l}");
    assert_eq!(
        (&v["tls_version"], &v["tls_cipher"]),
        (&Value::Null, &Value::Null),
        "plain HTTP: {l}"
    );
    let s = |k: &str| v[k].as_str().map_or("-".to_owned(), str::to_owned);
    assert_eq!(v["truncated"], Value::Bool(false), "{l}");
    Line {
        time_ms: parse_time(v["time"].as_str().unwrap()),
        client: s("client"),
        listener: s("listener"),
        method: s("method"),
        host: s("host"),
        path: s("path"),
        status: v["status"].as_u64(),
        bytes_in: u(&v["bytes_in"]),
        bytes_out: u(&v["bytes_out"]),
        upstream: v["upstream"].as_str().map(str::to_owned),
        connect_ms: v["connect_ms"].as_f64(),
        response_ms: v["response_ms"].as_f64(),
        total_ms: v["total_ms"].as_f64().unwrap(),
        id: s("id"),
        cause: v["cause"].as_str().map(str::to_owned),
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The file's lines once one of them contains `what`.
fn wait_line(path: &Path, what: &str, z: &ZProxy) -> Vec<String> {
    let mut lines = Vec::new();
    let ok = wait_until(Duration::from_secs(10), || {
        lines = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        lines.iter().any(|l| l.contains(what))
    });
    assert!(
        ok,
        "no line with {what:?} in {}: {lines:#?}\nzproxy log:\n{}",
        path.display(),
        z.log()
    );
    lines
}

/// Known traffic, then every field of every line.
fn every_field(format: &str, parse: fn(&str) -> Line) {
    let _lock = lab_lock();
    let lab = Lab::up();
    let silent = Peer::start(&lab, "silent", 9002);
    let path = lab.run_dir().join(format!("access-{format}.log"));
    let _ = std::fs::remove_file(&path);
    let cfg = log_config(&format!(
        "path = \"{}\"\nformat = \"{format}\"\n",
        path.display()
    ));
    let z = ZProxy::start(&lab, "zproxy", &cfg);
    wait_proxy(&lab, &z, 80);
    let started = unix_ms();

    let ok = request(&lab, 80, "/");
    assert_eq!(ok.0, 200);
    let missing = request(&lab, 80, "/no/such/page?x=1");
    assert_eq!(missing.0, 404);
    let refused = request(&lab, 85, "/r");
    assert_eq!(refused.0, 502);
    let timeout = request(&lab, 86, "/s");
    assert_eq!(timeout.0, 504);
    let tcp_request = b"GET / HTTP/1.0\r\n\r\n";
    let tcp_answer = raw_exchange(&lab, 81, tcp_request);
    assert!(tcp_answer.ends_with(UPSTREAM_BODY), "{tcp_answer}");

    // The tcp connection ends last (one worker: lines keep their order).
    let lines = wait_line(&path, "client:81", &z);
    let done = unix_ms();
    stop_clean(z);
    silent.wait_all_closed(5);
    let all: Vec<Line> = lines.iter().map(|l| parse(l)).collect();
    assert!(all.len() >= 6, "the warm-up request and ours: {lines:#?}");
    let got = &all[all.len() - 5..];

    let nginx = Some("10.72.0.1:80".to_owned());
    let host = PROXY_CLIENT_IP.to_owned();
    let http = |listener: u16, path: &str, (status, sent, received): (u32, u64, u64)| Line {
        listener: format!("client:{listener}"),
        method: "GET".into(),
        // curl's Host names the port unless it is 80.
        host: match listener {
            80 => host.clone(),
            p => format!("{host}:{p}"),
        },
        path: path.into(),
        status: Some(u64::from(status)),
        bytes_in: sent,
        bytes_out: received,
        ..got[0].clone()
    };
    let want = [
        Line {
            upstream: nginx.clone(),
            cause: None,
            ..http(80, "/", ok)
        },
        Line {
            upstream: nginx.clone(),
            cause: None,
            ..http(80, "/no/such/page?x=1", missing)
        },
        Line {
            upstream: Some("10.72.0.1:9001".into()),
            cause: Some("refused".into()),
            ..http(85, "/r", refused)
        },
        Line {
            upstream: Some("10.72.0.1:9002".into()),
            cause: Some("timeout".into()),
            ..http(86, "/s", timeout)
        },
        Line {
            listener: "client:81".into(),
            method: "-".into(),
            host: "-".into(),
            path: "-".into(),
            status: None,
            bytes_in: tcp_request.len() as u64,
            bytes_out: tcp_answer.len() as u64,
            upstream: nginx,
            cause: None,
            ..got[0].clone()
        },
    ];
    let mut ids = HashSet::new();
    for (g, w) in got.iter().zip(&want) {
        // What only the proxy knows: checked for shape and order here.
        assert!(
            g.time_ms + 1000 >= started && g.time_ms <= done + 1000,
            "time {} outside the test's {started}..{done}: {g:?}",
            g.time_ms
        );
        let (ip, port) = g.client.split_once(':').unwrap();
        assert_eq!(ip, CLIENT_IP, "{g:?}");
        assert!(port.parse::<u16>().unwrap() > 0, "{g:?}");
        assert!(
            g.id.len() == 16 && g.id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{g:?}"
        );
        assert!(ids.insert(g.id.clone()), "request ids repeat: {g:?}");
        let answered = g.upstream.is_some() && g.cause.as_deref() != Some("refused");
        assert_eq!(g.connect_ms.is_some(), answered, "connect time: {g:?}");
        let responded = matches!(g.status, Some(200 | 404));
        assert_eq!(g.response_ms.is_some(), responded, "response time: {g:?}");
        let connect = g.connect_ms.unwrap_or(0.0);
        let response = g.response_ms.unwrap_or(connect);
        assert!(connect <= response && response <= g.total_ms, "{g:?}");
        // The rest is what the client saw.
        let w = Line {
            time_ms: g.time_ms,
            client: g.client.clone(),
            connect_ms: g.connect_ms,
            response_ms: g.response_ms,
            total_ms: g.total_ms,
            id: g.id.clone(),
            ..w.clone()
        };
        assert_eq!(g, &w);
    }
    assert!(
        got[3].total_ms >= 1000.0,
        "the 504 came with the 1 s read timeout: {:?}",
        got[3]
    );
}

#[test]
fn text_lines_have_every_field() {
    if !require_root() {
        return;
    }
    every_field("text", parse_text);
}

#[test]
fn json_lines_have_every_field() {
    if !require_root() {
        return;
    }
    every_field("json", parse_json);
}

/// A FIFO nobody reads: the writer blocks, the rings fill, the workers drop
/// and count lines; every request is still answered. Then the reader
/// catches up and gets exactly the lines that were not dropped.
#[test]
fn a_writer_that_falls_behind_drops_and_counts_lines() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let fifo = lab.run_dir().join("access.fifo");
    let _ = std::fs::remove_file(&fifo);
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // A reader must exist for zproxy's open to return; it reads nothing yet.
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .unwrap();
    let cfg = config(
        16384,
        &(web_and_static()
            + &format!(
                "\n[access_log]\npath = \"{}\"\nring_entries = 16\n",
                fifo.display()
            )),
    );
    let mut z = ZProxy::start(&lab, "zproxy", &cfg);
    wait_proxy(&lab, &z, 8080);
    let r = bench(
        &lab,
        8080,
        &[
            "--requests",
            "5000",
            "--concurrency",
            "8",
            "--keep-alive",
            "on",
            "--timeout",
            "5s",
        ],
    );
    assert_eq!(u(&r["failures_total"]), 0, "{r}");
    assert_eq!(u(&r["successes"]), 5000, "{r}");
    assert!(z.running(), "{}", z.log());
    let s = fresh_stats(&lab);
    let sum = |name: &str| -> u64 {
        s["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| u(&w[name]))
            .sum()
    };
    let (requests, dropped) = (sum("requests"), sum("access_log_dropped"));
    eprintln!("requests {requests}, access log lines dropped {dropped}");
    assert!(
        dropped > 0,
        "the FIFO was never read, yet nothing was dropped: {s}"
    );
    assert!(requests >= 5000);
    let text = lab.exec_ok("proxy", ["curl", "-sS", "http://127.0.0.1:9090/metrics"]);
    assert!(
        text.lines().any(
            |l| l.starts_with("zproxy_access_log_dropped_total{worker=\"0\"} ")
                && l.rsplit(' ').next().unwrap().parse::<u64>().unwrap() > 0
        ),
        "{text}"
    );

    // Unblock: read everything until zproxy exits (the writer drains and closes).
    // SAFETY: F_SETFL on a descriptor this test owns: back to blocking reads.
    let fl = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&reader), libc::F_GETFL) };
    // SAFETY: as above.
    unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&reader),
            libc::F_SETFL,
            fl & !libc::O_NONBLOCK,
        )
    };
    let drain = std::thread::spawn(move || {
        let mut all = String::new();
        reader.read_to_string(&mut all).unwrap();
        all
    });
    // The writer warns once it runs again.
    wait_log(&z, "lines dropped", 10);
    stop_clean(z);
    let all = drain.join().unwrap();
    let lines: Vec<Line> = all.lines().map(parse_text).collect();
    assert!(
        lines
            .iter()
            .all(|l| l.status.is_some() && l.listener.starts_with("client:")),
        "{all}"
    );
    assert_eq!(
        lines.len() as u64 + dropped,
        requests,
        "every request was either written or counted as dropped"
    );
}

/// logrotate: the file is moved, SIGUSR1, new lines go to a new file at the path.
#[test]
fn sigusr1_reopens_the_file() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let path = lab.run_dir().join("access.log");
    let moved = lab.run_dir().join("access.log.1");
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&moved);
    let cfg = config(
        16384,
        &(web_and_static() + &format!("\n[access_log]\npath = \"{}\"\n", path.display())),
    );
    let z = ZProxy::start(&lab, "zproxy", &cfg);
    wait_proxy(&lab, &z, 8080);
    wait_line(&path, " / 200 ", &z);
    std::fs::rename(&path, &moved).unwrap();
    // Until SIGUSR1 the writer keeps the moved file.
    assert_eq!(request(&lab, 8080, "/still-old").0, 200);
    wait_line(&moved, " /still-old 200 ", &z);
    let sent = Command::new("kill")
        .args(["-USR1", &z.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    wait_log(&z, "access log: reopened", 10);
    assert_eq!(request(&lab, 8080, "/new").0, 200);
    let new = wait_line(&path, " /new 200 ", &z);
    assert_eq!(new.len(), 1, "only the new request: {new:#?}");
    stop_clean(z);
    let old = std::fs::read_to_string(&moved).unwrap();
    assert!(!old.contains(" /new "), "{old}");
}
