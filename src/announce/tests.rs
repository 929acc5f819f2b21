//! The announcer against a fake BIRD: what it sends, when, and what it
//! counts (the decision itself is tested in `decide`).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// A BIRD that carries out `n` enable/disable commands, then goes away;
/// the commands it got.
fn fake_bird(
    tag: &str,
    n: usize,
) -> (
    PathBuf,
    Arc<Mutex<Vec<String>>>,
    std::thread::JoinHandle<()>,
) {
    let dir = std::env::temp_dir().join(format!("zp-announcer-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bird.ctl");
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path).unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let seen = got.clone();
    let server = std::thread::spawn(move || {
        for _ in 0..n {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"0001 BIRD 2.0.12 ready.\n").unwrap();
            let mut line = String::new();
            BufReader::new(&s).read_line(&mut line).unwrap();
            let line = line.trim().to_owned();
            let reply = match line.split_once(' ') {
                Some(("enable", p)) => format!("0011-{p}: enabled\n0000 \n"),
                Some(("disable", p)) => format!("0009-{p}: disabled\n0000 \n"),
                _ => "9001 syntax error\n".into(),
            };
            s.write_all(reply.as_bytes()).unwrap();
            seen.lock().unwrap().push(line);
        }
    });
    (path, got, server)
}

fn config(socket: &std::path::Path) -> Config {
    Config::parse(&format!(
        r#"
[[port]]
name = "client"
vdev = "net_ring0"
address = "10.0.0.2/24"

[[listener]]
port = "client"
tcp_port = 80
mode = "tcp"
upstream = "web"

[[upstream]]
name = "web"
port = "client"
servers = [{{ address = "10.0.0.5:80" }}]

[announce]
vip = "10.99.0.1/32"
listeners = ["client:80"]
bird_socket = "{}"
hold_down_ms = 0
"#,
        socket.display()
    ))
    .unwrap()
}

fn web(healthy: bool) -> Vec<UpstreamStat> {
    vec![UpstreamStat {
        group: "web".into(),
        server: "10.0.0.5:80".parse().unwrap(),
        requests: 0,
        connect_failures: 0,
        active: 0,
        healthy,
        retired: false,
        backup: false,
        response_us_sum: 0,
        responses: 0,
    }]
}

#[test]
fn tells_bird_each_change_once_and_retries_errors_at_the_retry_pace() {
    let (path, got, server) = fake_bird("changes", 3);
    let cfg = config(&path);
    let mut a = Announcer::new(cfg.announce.as_ref().unwrap());
    let t0 = Instant::now();
    let ms = |n: u64| t0 + Duration::from_millis(n);
    // Not up yet: BIRD is told "withdrawn" (it may hold a crashed run's state).
    a.tick(ms(0), &cfg, &web(true), false, false);
    a.tick(ms(20), &cfg, &web(true), true, false);
    // Nothing new to tell: no command.
    a.tick(ms(40), &cfg, &web(true), true, false);
    a.tick(ms(60), &cfg, &web(false), true, false);
    server.join().unwrap();
    assert_eq!(
        *got.lock().unwrap(),
        [
            "disable zproxy_vip",
            "enable zproxy_vip",
            "disable zproxy_vip"
        ]
    );
    let s = a.status();
    assert_eq!((s.announced, s.transitions, s.errors), (false, 2, 0));

    // BIRD is gone: one error, no retry before RETRY, then another.
    a.tick(ms(80), &cfg, &web(true), true, false);
    assert_eq!((a.status().announced, a.status().errors), (false, 1));
    a.tick(ms(80) + RETRY / 2, &cfg, &web(true), true, false);
    assert_eq!(a.status().errors, 1, "retried before RETRY");
    a.tick(ms(80) + RETRY, &cfg, &web(true), true, false);
    assert_eq!(a.status().errors, 2);
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn resyncs_and_withdraws_at_exit() {
    let (path, got, server) = fake_bird("resync", 3);
    let cfg = config(&path);
    let mut a = Announcer::new(cfg.announce.as_ref().unwrap());
    let t0 = Instant::now();
    a.tick(t0, &cfg, &web(true), true, false);
    a.tick(t0 + RESYNC, &cfg, &web(true), true, false);
    a.withdraw("test");
    server.join().unwrap();
    assert_eq!(
        *got.lock().unwrap(),
        [
            "enable zproxy_vip",
            "enable zproxy_vip",
            "disable zproxy_vip"
        ]
    );
    let s = a.status();
    assert_eq!((s.announced, s.transitions), (false, 2));
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}
