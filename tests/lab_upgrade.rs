//! Upgrade tunnels and `Expect: 100-continue` end to end in the netns lab:
//! a WebSocket echo upstream (tests/peers/ws_echo.py, python3-websockets)
//! and real WebSocket clients (tests/peers/ws_client.py) through ZProxy,
//! and curl uploading 10 MiB with `Expect: 100-continue` to an upstream that
//! answers 100, then 200 with the body's length and sha256
//! (tests/peers/continue_upstream.py).
//!
//! Root only; every test takes the lab lock. Time bounds only tell a close
//! that travelled from one that waited for the client library's 10 s timer.

mod common;

use std::io::BufReader;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use common::proxy::*;
use common::*;

/// The WebSocket echo upstream's port (group "ws", route /ws).
const WS_PORT: u16 = 9100;
/// The 100-continue upstream's port (group "cont", route /up).
const CONTINUE_PORT: u16 = 9101;

/// The Debian package's interpreter: another python3 first in PATH (pyenv)
/// would not see python3-websockets.
const PYTHON: &str = "/usr/bin/python3";

/// HTTP on :80: /ws to the WebSocket upstream, /up to the 100-continue one,
/// the rest to the lab's nginx.
fn body() -> String {
    body_with("", "")
}

/// `body()` with `front` keys on the listener and `ws` keys on group "ws".
fn body_with(front: &str, ws: &str) -> String {
    let front = listener(80, "http", "web")
        + front
        + "[[listener.route]]\npath_prefix = \"/ws\"\nupstream = \"ws\"\n"
        + "[[listener.route]]\npath_prefix = \"/up\"\nupstream = \"cont\"\n";
    one_source_unlimited(&front)
        + &upstream("web", &[("10.72.0.1:80", 1)], "")
        + &upstream("ws", &[(&format!("{UPSTREAM_IP}:{WS_PORT}"), 1)], ws)
        + &upstream(
            "cont",
            &[(&format!("{UPSTREAM_IP}:{CONTINUE_PORT}"), 1)],
            "",
        )
}

/// A Python peer; killed on drop.
struct Py {
    child: Child,
    stdin: Option<ChildStdin>,
    out: BufReader<ChildStdout>,
}

impl Py {
    fn start(lab: &Lab, role: &str, script: &str, args: &[&str]) -> Py {
        let mut child = lab
            .command(role, "bash")
            .args(["-c", "ulimit -n 20000 && exec \"$0\" \"$@\"", PYTHON])
            .arg(repo_root().join("tests/peers").join(script))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {script}: {e}"));
        let stdin = child.stdin.take();
        let out = BufReader::new(child.stdout.take().unwrap());
        Py { child, stdin, out }
    }

    fn line(&mut self) -> String {
        read_line(&mut self.out)
    }

    fn ask(&mut self, command: &str) -> String {
        use std::io::Write;
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
        self.line()
    }
}

impl Drop for Py {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ws_upstream(lab: &Lab) -> Py {
    let mut p = Py::start(
        lab,
        "upstream",
        "ws_echo.py",
        &[UPSTREAM_IP, &WS_PORT.to_string()],
    );
    assert_eq!(p.line(), "listening", "ws_echo.py did not start");
    p
}

/// One `ws_client.py` run in the client namespace to completion: its output.
fn ws_client(lab: &Lab, path: &str, args: &[&str]) -> String {
    let mut cmd = vec![
        "timeout".to_string(),
        "120".into(),
        PYTHON.into(),
        repo_root()
            .join("tests/peers/ws_client.py")
            .to_str()
            .unwrap()
            .into(),
        url(80, path).replace("http:", "ws:"),
    ];
    cmd.extend(args.iter().map(|s| s.to_string()));
    let out = lab.exec("client", &cmd);
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// "closed CODE SECONDS": the close code and how long the close took.
fn closed(out: &str) -> (u32, f64) {
    let w: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(w.first(), Some(&"closed"), "{out}");
    (w[1].parse().unwrap(), w[2].parse().unwrap())
}

#[test]
fn websocket_echo_is_byte_exact_and_closes_travel_both_ways() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let _ws = ws_upstream(&lab);
    let z = ZProxy::start(&lab, "zproxy", &config(65536, &body()));
    wait_proxy(&lab, &z, 80);

    // 1,000 messages each way, 1 B to 1 MiB, compared byte for byte.
    let out = ws_client(&lab, "/ws", &["echo", "1000"]);
    let w: Vec<&str> = out.split_whitespace().collect();
    assert!(
        w.len() >= 4 && w[0] == "ok" && w[1] == "1000" && w[2] == w[3],
        "{out}\nzproxy log:\n{}",
        z.log()
    );
    eprintln!("websocket echo: 1000 messages, {} bytes each way", w[2]);

    // A close from the client, then one from the upstream: each completes
    // the WebSocket closing handshake and the TCP close through the tunnel.
    for (path, mode) in [("/ws", "client-close"), ("/ws/close", "server-close")] {
        let out = ws_client(&lab, path, &[mode]);
        let (code, secs) = closed(&out);
        assert_eq!(code, 1000, "{mode}: {out}");
        assert!(secs < 5.0, "{mode}: the close did not travel: {out}");
    }

    // Plain HTTP on the same listener still works.
    assert_eq!(curl(&lab, &[&url(80, "/")]).0, 200);
    stop_clean(z);
}

#[test]
fn five_hundred_websockets_held_while_plain_http_succeeds() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let _ws = ws_upstream(&lab);
    let z = ZProxy::start(&lab, "zproxy", &config(16384, &body()));
    wait_proxy(&lab, &z, 80);

    let ws_url = url(80, "/ws").replace("http:", "ws:");
    let mut held = Py::start(&lab, "client", "ws_client.py", &[&ws_url, "hold", "500"]);
    assert_eq!(held.line(), "open 500 errors 0", "zproxy log:\n{}", z.log());
    let load = spawn_bench(
        &lab,
        80,
        "plain",
        &[
            "--concurrency",
            "50",
            "--duration",
            "5s",
            "--keep-alive",
            "off",
        ],
    );
    // Every tunnel carries a message while the plain load runs.
    assert_eq!(held.ask("echo"), "echoed 500");
    let r = wait_bench(load);
    eprintln!(
        "500 WebSockets held: plain HTTP {} successes, {} failures",
        r["successes"], r["failures_total"]
    );
    assert!(u(&r["successes"]) > 0, "{r}");
    assert_eq!(u(&r["failures_total"]), 0, "{r}");
    let codes = r["status_codes"].as_object().unwrap();
    assert!(codes.keys().all(|k| k == "200"), "{r}");
    // Still all open and working after the load.
    assert_eq!(held.ask("echo"), "echoed 500");
    assert_eq!(held.ask("close"), "closed 500");
    stop_clean(z);
}

/// A quiet tunnel outlives the listener's idle timeout and the group's read
/// timeout (1 s each), and is closed after its own (4 s).
#[test]
fn tunnels_have_their_own_idle_timeout() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let _ws = ws_upstream(&lab);
    let body = body_with(
        "idle_timeout_ms = 1000\ntunnel_idle_timeout_ms = 4000\n",
        "read_timeout_ms = 1000",
    );
    let z = ZProxy::start(&lab, "zproxy", &config(16384, &body));
    wait_proxy(&lab, &z, 80);
    let ws_url = url(80, "/ws").replace("http:", "ws:");
    let mut held = Py::start(&lab, "client", "ws_client.py", &[&ws_url, "hold", "5"]);
    assert_eq!(held.line(), "open 5 errors 0", "zproxy log:\n{}", z.log());
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(held.ask("echo"), "echoed 5", "quiet for 2.5 s: still open");
    std::thread::sleep(std::time::Duration::from_millis(7000));
    assert_eq!(held.ask("echo"), "echoed 0", "quiet for 7 s: closed");
    assert_eq!(held.ask("close"), "closed 5");
    stop_clean(z);
}

#[test]
fn expect_100_continue_relays_the_interim_and_the_body_intact() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let mut up = Py::start(
        &lab,
        "upstream",
        "continue_upstream.py",
        &[UPSTREAM_IP, &CONTINUE_PORT.to_string()],
    );
    assert_eq!(up.line(), "listening");
    let z = ZProxy::start(&lab, "zproxy", &config(65536, &body()));
    wait_proxy(&lab, &z, 80);

    // 10 MiB of pseudo-random bytes, and their sha256.
    let file = lab.run_dir().join("upload-10MiB");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..10 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(&file, &data).unwrap();
    let sum = Command::new("sha256sum").arg(&file).output().unwrap();
    let sum = String::from_utf8_lossy(&sum.stdout);
    let sum = sum.split_whitespace().next().unwrap().to_owned();

    let out = lab.exec(
        "client",
        [
            "curl",
            "-sS",
            "-v",
            "--max-time",
            "60",
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            &format!("@{}", file.display()),
            &url(80, "/up"),
        ],
    );
    let body = String::from_utf8_lossy(&out.stdout);
    let verbose = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}", describe(&out));
    assert!(
        verbose.contains("< HTTP/1.1 100 Continue"),
        "curl saw no 100 Continue:\n{verbose}"
    );
    assert_eq!(
        body.trim(),
        format!("{} {sum} expect", 10 << 20),
        "{verbose}"
    );
    let _ = std::fs::remove_file(&file);
    stop_clean(z);
}
