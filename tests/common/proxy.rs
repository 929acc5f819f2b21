//! Shared by the lab tests that run `zproxy` as a proxy (`lab_proxy_*`,
//! `lab_faults_*`): the lab lock, config builders, curl / zproxy-bench in the
//! client namespace, counters from the log and from `zproxy stats`.
//!
//! Use with `mod common;` and `use common::proxy::*;`.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::*;

// ---- serialisation --------------------------------------------------------------------

/// An exclusive `flock` on a file in /run: held for a test's lifetime so that
/// two zproxy instances (each busy-polling lcore 1) never run at once.
pub struct LabLock(#[allow(dead_code)] std::fs::File);

pub fn lab_lock() -> LabLock {
    let _ = std::fs::create_dir_all(LAB_RUN_ROOT);
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(Path::new(LAB_RUN_ROOT).join(".lab_proxy.lock"))
        .expect("open lock file");
    // SAFETY: flock on a file descriptor we own; does not block.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return LabLock(f);
    }
    // Another lab test, bench/soak.sh or a lab benchmark has the lab: say so,
    // since the wait counts against nextest's slow-timeout.
    eprintln!("waiting for the lab lock ({LAB_RUN_ROOT}/.lab_proxy.lock)");
    let t = std::time::Instant::now();
    // SAFETY: as above; blocks until the lock is ours.
    let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
    eprintln!("got the lab lock after {:?}", t.elapsed());
    LabLock(f)
}

// ---- configuration --------------------------------------------------------------------

pub const VDEV_CLIENT: &str = "net_af_packet0,iface=cli1,qpairs=1";
pub const VDEV_UPSTREAM: &str = "net_af_packet1,iface=ups1,qpairs=1";

/// A whole zproxy config: runtime and both ports, then `body` (listeners, upstreams).
pub fn config(socket_buffer: u32, body: &str) -> String {
    format!(
        r#"
[runtime]
worker_lcores = [1]
mbufs = 16383
max_flows = 16384
socket_rx_buffer = {socket_buffer}
socket_tx_buffer = {socket_buffer}

[[port]]
name = "client"
vdev = "{VDEV_CLIENT}"
address = "{PROXY_CLIENT_IP}/24"
gateway = "{CLIENT_IP}"

[[port]]
name = "upstream"
vdev = "{VDEV_UPSTREAM}"
address = "{PROXY_UPSTREAM_IP}/24"
{body}
"#
    )
}

/// `body` with no per-source connection limit on any listener: the lab has
/// one client address, and the default (max_flows / 4) would stop a test
/// that fills the table from it.
pub fn one_source_unlimited(body: &str) -> String {
    let mut out = String::new();
    for line in body.lines() {
        out += line;
        out += "\n";
        if line.starts_with("mode = ") {
            out += "max_connections_per_source = 0\n";
        }
    }
    out
}

/// A `[[listener]]` on the client port; `mode` is "http" or "tcp".
pub fn listener(tcp_port: u16, mode: &str, group: &str) -> String {
    format!(
        r#"
[[listener]]
port = "client"
tcp_port = {tcp_port}
mode = "{mode}"
upstream = "{group}"
"#
    )
}

/// The usual front: an HTTP listener on :80 to group "web", the lab's nginx
/// (10.72.0.1:80); `extra` adds keys to the group.
pub fn web(extra: &str) -> String {
    listener(80, "http", "web") + &upstream("web", &[("10.72.0.1:80", 1)], extra)
}

/// An `[[upstream]]` group on the upstream port; `extra` adds keys (balance, timeouts).
pub fn upstream(name: &str, servers: &[(&str, u32)], extra: &str) -> String {
    let servers: Vec<String> = servers
        .iter()
        .map(|(a, w)| format!("{{ address = \"{a}\", weight = {w} }}"))
        .collect();
    format!(
        r#"
[[upstream]]
name = "{name}"
port = "upstream"
servers = [{}]
{extra}
"#,
        servers.join(", ")
    )
}

// ---- helpers --------------------------------------------------------------------------

pub fn url(port: u16, path: &str) -> String {
    format!("http://{PROXY_CLIENT_IP}:{port}{path}")
}

/// `curl` in the client namespace: (http status or 0, body).
pub fn curl(lab: &Lab, args: &[&str]) -> (u32, String) {
    let (code, _, body) = curl_with_head(lab, args);
    (code, body)
}

/// `curl` in the client namespace: (http status or 0, response head, body).
pub fn curl_with_head(lab: &Lab, args: &[&str]) -> (u32, String, String) {
    let mut cmd = vec![
        "curl",
        "-sS",
        "--max-time",
        "10",
        "-D",
        "/dev/stderr",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
    ];
    cmd.extend(args);
    let out = lab.exec("client", &cmd);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    let head = String::from_utf8_lossy(&out.stderr).into_owned();
    (code.trim().parse().unwrap_or(0), head, body.to_owned())
}

/// Waits until a GET through the proxy gets a 200 (the device warms up).
pub fn wait_proxy(lab: &Lab, z: &ZProxy, port: u16) {
    let u = url(port, "/");
    assert!(
        wait_until(Duration::from_secs(15), || curl(
            lab,
            &["--max-time", "2", &u]
        )
        .0 == 200),
        "no 200 from {u}; zproxy log:\n{}",
        z.log()
    );
}

pub fn bench_cmd(lab: &Lab, port: u16, json: &Path, args: &[&str]) -> Vec<String> {
    let bin = workspace_bin("zproxy-bench");
    let mut cmd: Vec<String> = vec![
        "timeout".into(),
        "120".into(),
        bin.to_str().unwrap().into(),
        "--host".into(),
        PROXY_CLIENT_IP.into(),
        "--port".into(),
        port.to_string(),
        "--json".into(),
        json.to_str().unwrap().into(),
    ];
    cmd.extend(args.iter().map(|s| s.to_string()));
    let _ = lab;
    cmd
}

pub fn read_results(json: &Path) -> Value {
    let v: Value = serde_json::from_str(&std::fs::read_to_string(json).expect("bench json"))
        .expect("bench json parses");
    v["results"].clone()
}

/// Runs zproxy-bench in the client namespace (bounded by `timeout 120`).
pub fn bench(lab: &Lab, port: u16, args: &[&str]) -> Value {
    let json = lab.run_dir().join(format!("bench-{port}.json"));
    let _ = std::fs::remove_file(&json);
    lab.exec_ok("client", bench_cmd(lab, port, &json, args));
    read_results(&json)
}

/// Runs zproxy-bench to `[PORT_V6]:port` in the client namespace, a
/// connection per request (bounded by `timeout 120`); results by `tag`.
pub fn bench6(lab: &Lab, port: u16, tag: &str, args: &[&str]) -> Value {
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

/// 4 s of `bench6` to :80 while 3 % of the replies are lost: some requests
/// succeed and none fails.
pub fn bench6_under_loss(lab: &Lab) {
    let lossy = with_lost_replies(lab, || {
        bench6(
            lab,
            80,
            "lossy",
            &[
                "--concurrency",
                "100",
                "--duration",
                "4s",
                "--timeout",
                "20s",
            ],
        )
    });
    assert!(u(&lossy["successes"]) > 0, "3% loss: {lossy}");
    assert_eq!(u(&lossy["failures_total"]), 0, "3% loss: {lossy}");
}

/// Runs `f` while the client namespace drops 3 % of what port 80 sends it,
/// at random: lost replies make its kernel retransmit.
pub fn with_lost_replies<T>(lab: &Lab, f: impl FnOnce() -> T) -> T {
    lab.exec_ok(
        "client",
        [
            "nft",
            "add table inet loss; add chain inet loss in { type filter hook input priority 0; }; \
             add rule inet loss in tcp sport 80 numgen random mod 100 < 3 drop",
        ],
    );
    let r = f();
    lab.exec_ok("client", ["nft", "delete table inet loss"]);
    r
}

/// Starts zproxy-bench in the client namespace; `wait_bench` collects it.
pub fn spawn_bench(lab: &Lab, port: u16, tag: &str, args: &[&str]) -> (Child, PathBuf) {
    let json = lab.run_dir().join(format!("bench-{tag}.json"));
    let _ = std::fs::remove_file(&json);
    let child = lab
        .command("client", "env")
        .args(bench_cmd(lab, port, &json, args))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn zproxy-bench");
    (child, json)
}

pub fn wait_bench((mut child, json): (Child, PathBuf)) -> Value {
    let status = child.wait().expect("wait zproxy-bench");
    assert!(status.success(), "zproxy-bench failed: {status}");
    read_results(&json)
}

pub fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Stops zproxy with SIGINT; asserts a clean exit and no leaked mbuf.
pub fn stop_clean(z: ZProxy) -> String {
    let (ok, log) = z.stop("INT");
    assert!(ok, "zproxy exited with an error:\n{log}");
    assert!(
        log.contains(" 0 leaked"),
        "leak check missing or failed:\n{log}"
    );
    log
}

/// `name=N` from a zproxy summary line.
pub fn counter(line: &str, name: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// The value of `name` in the last summary line of the log that has it.
pub fn last_counter(log: &str, name: &str) -> Option<u64> {
    log.lines().rev().find_map(|l| counter(l, name))
}

pub fn line_count(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// True when something accepts TCP connections on `ip:port` in the role's namespace.
pub fn accepts(lab: &Lab, role: &str, ip: &str, port: u16) -> bool {
    lab.exec(
        role,
        [
            "timeout",
            "2",
            "bash",
            "-c",
            // An IPv6 address as written in a URL or nginx's listen: bare for bash.
            &format!("exec 3<>/dev/tcp/{}/{port}", ip.trim_matches(['[', ']'])),
        ],
    )
    .status
    .success()
}

/// `tests/peers/xff_upstream.py` (answers with the X-Forwarded-For it got)
/// on the upstream namespace's `UPSTREAM_IP:port`, once it listens.
pub fn start_xff_upstream(lab: &Lab, port: u16) -> Child {
    let script = repo_root().join("tests/peers/xff_upstream.py");
    let port_arg = port.to_string();
    let xff = lab.spawn(
        "upstream",
        [
            "python3",
            script.to_str().unwrap(),
            UPSTREAM_IP,
            port_arg.as_str(),
        ],
    );
    let up = wait_until(Duration::from_secs(10), || {
        accepts(lab, "upstream", UPSTREAM_IP, port)
    });
    assert!(up, "the X-Forwarded-For upstream did not listen on :{port}");
    xff
}

/// `bench/synflood.py` with `args` (its target) from the client namespace:
/// 20,000 SYNs/s for 6 s, in the background.
pub fn start_synflood(lab: &Lab, args: &[&str]) -> Child {
    lab.command("client", "python3")
        .arg(repo_root().join("bench/synflood.py"))
        .args(args)
        .args(["--rate", "20000", "--duration", "6"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("synflood.py")
}

/// Waits for a `start_synflood`: whether it exited cleanly, how many SYNs
/// it sent, and its words.
pub fn wait_synflood(flood: Child) -> (bool, u64, String) {
    let out = flood.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    let sent = said
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (out.status.success(), sent, said)
}

/// `tests/peers/blind_reset.py` against `target` on :80 and :8080 (an
/// http and a static listener): in-window RSTs and RST|ACKs get challenge
/// ACKs and leave the connection up, an exact RST closes it, and
/// `rst_challenged` counts the 4 challenged.
pub fn assert_blind_resets_challenged(lab: &Lab, target: &str) {
    let script = repo_root().join("tests/peers/blind_reset.py");
    for port in [80u16, 8080] {
        let out = lab.exec_ok(
            "client",
            [
                "python3",
                script.to_str().unwrap(),
                CLIENT_IF,
                target,
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
        || stat(lab, "rst_challenged") >= 4,
    );
}

/// Sends `data` raw to the proxy from the client namespace and returns
/// everything it answers until it closes (or 5 s of silence / a reset, marked).
pub fn raw_exchange(lab: &Lab, port: u16, data: &[u8]) -> String {
    raw_exchange_to(lab, PROXY_CLIENT_IP, port, data)
}

/// [`raw_exchange`] with ZProxy at `host` (an IPv6 address of its port, say).
pub fn raw_exchange_to(lab: &Lab, host: &str, port: u16, data: &[u8]) -> String {
    const SCRIPT: &str = r#"
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
s.sendall(sys.stdin.buffer.read())
out = b''
try:
    while True:
        b = s.recv(65536)
        if not b:
            break
        out += b
except socket.timeout:
    out += b'<<timeout>>'
except ConnectionResetError:
    out += b'<<reset>>'
sys.stdout.buffer.write(out)
"#;
    let mut child = lab
        .command("client", "timeout")
        .args(["20", "python3", "-c", SCRIPT, host, &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    child.stdin.take().unwrap().write_all(data).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "raw client: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits up to `secs` for `what` to appear in zproxy's log.
pub fn wait_log(z: &ZProxy, what: &str, secs: u64) {
    assert!(
        wait_until(Duration::from_secs(secs), || z.log().contains(what)),
        "no {what:?} in the log within {secs} s:\n{}",
        z.log()
    );
}

/// `zproxy stats` (JSON) from the proxy namespace.
///
/// Retried a few times: `zproxy stats` sends its request in several TCP
/// segments and the endpoint answers after a single read, so about 1 call
/// in 100 fails with "Broken pipe" or "Connection reset by peer" (reported;
/// see the lab_faults report). The retry keeps tests about other things
/// from failing on it.
pub fn stats(lab: &Lab) -> Value {
    let mut last = String::new();
    for _ in 0..5 {
        let out = lab.exec("proxy", [env!("CARGO_BIN_EXE_zproxy"), "stats"]);
        if out.status.success() {
            match serde_json::from_slice::<Value>(&out.stdout) {
                Ok(v) if v["workers"].is_array() => return v,
                _ => last = describe(&out),
            }
        } else {
            last = describe(&out);
        }
        // Retry pacing, not synchronisation: the failure is a race in the
        // stats endpoint, and the next call usually succeeds.
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("zproxy stats failed 5 times; last: {last}");
}

/// `zproxy stats` with every worker's counters published after this call
/// began (workers publish every 100 ms, so one read may show older
/// counters): what happened before the call is in them. A worker's
/// `total_cycles` moves on with every publication.
pub fn fresh_stats(lab: &Lab) -> Value {
    let cycles = |v: &Value| -> Vec<u64> {
        v["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| u(&w["total_cycles"]))
            .collect()
    };
    let first = cycles(&stats(lab));
    let mut fresh = Value::Null;
    wait_for(
        Duration::from_secs(5),
        "every worker to publish its counters again (total_cycles to move)",
        || {
            fresh = stats(lab);
            cycles(&fresh)
                .iter()
                .zip(&first)
                .all(|(now, then)| now > then)
        },
    );
    fresh
}

/// A counter summed over every worker, from `zproxy stats`.
pub fn stat(lab: &Lab, name: &str) -> u64 {
    let v = stats(lab);
    v["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            w[name]
                .as_u64()
                .unwrap_or_else(|| panic!("no counter {name} in {w}"))
        })
        .sum()
}

/// Waits (up to `secs`) until `flows_active` from `zproxy stats` is at most
/// `at_most`; panics with the stats and the log otherwise.
pub fn wait_flows_at_most(lab: &Lab, z: &ZProxy, at_most: u64, secs: u64) {
    let mut seen = 0;
    let ok = wait_until(Duration::from_secs(secs), || {
        seen = stat(lab, "flows_active");
        seen <= at_most
    });
    assert!(
        ok,
        "flows_active stayed at {seen} (> {at_most}) for {secs} s; stats: {}\nzproxy log:\n{}",
        stats(lab),
        z.log()
    );
}

/// The port lines of the final log ("no-mbuf N"), summed: receive drops for want of an mbuf.
pub fn rx_nombuf(log: &str) -> u64 {
    log.lines()
        .filter(|l| l.contains("no-mbuf"))
        .filter_map(|l| l.rsplit("no-mbuf ").next()?.trim().parse::<u64>().ok())
        .sum()
}

// ---- misbehaving upstreams ---------------------------------------------------------

/// `tests/peers/upstream.py MODE` on 10.72.0.1:PORT in the upstream
/// namespace; killed on drop. Its event log says what it saw.
pub struct Peer {
    child: Child,
    events: PathBuf,
    pub mode: &'static str,
}

impl Peer {
    pub fn start(lab: &Lab, mode: &'static str, port: u16) -> Peer {
        let events = lab.run_dir().join(format!("peer-{port}.events"));
        let _ = std::fs::remove_file(&events);
        let child = lab
            .command("upstream", "python3")
            .arg(repo_root().join("tests/peers/upstream.py"))
            .args([mode, UPSTREAM_IP, &port.to_string()])
            .arg(&events)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn tests/peers/upstream.py");
        let p = Peer {
            child,
            events,
            mode,
        };
        assert!(
            wait_until(Duration::from_secs(10), || p.count("listening") == 1),
            "peer {mode} on port {port} did not start: {:?}",
            p.events()
        );
        p
    }

    pub fn events(&self) -> Vec<String> {
        std::fs::read_to_string(&self.events)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Events whose first word is `kind`.
    pub fn count(&self, kind: &str) -> usize {
        self.events()
            .iter()
            .filter(|l| l.split_whitespace().next() == Some(kind))
            .count()
    }

    /// True when the peer logged a `kind` event for connection `id`.
    pub fn saw(&self, kind: &str, id: usize) -> bool {
        let id = id.to_string();
        self.events().iter().any(|l| {
            let mut w = l.split_whitespace();
            w.next() == Some(kind) && w.next() == Some(id.as_str())
        })
    }

    /// Waits until every connection the peer accepted has ended.
    pub fn wait_all_closed(&self, secs: u64) {
        assert!(
            wait_until(Duration::from_secs(secs), || self.count("closed")
                >= self.count("accept")),
            "peer {}: zproxy did not let go of every upstream connection within {secs} s: {:?}",
            self.mode,
            self.events()
        );
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---- held client connections ----------------------------------------------------------

/// One line a child printed, trimmed.
pub fn read_line(out: &mut BufReader<ChildStdout>) -> String {
    let mut line = String::new();
    out.read_line(&mut line).expect("read child stdout");
    line.trim().to_owned()
}

/// `tests/peers/holder.py`: N held keep-alive connections, driven line by
/// line (`open` answers its first line: "open K errors E").
pub struct Holder {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Holder {
    pub fn open(lab: &Lab, port: u16, n: usize) -> (Holder, String) {
        Holder::open_with_timeout(lab, port, n, 5)
    }

    /// As `open`, with connects given up after `timeout_s` (a server that
    /// drops the SYNs it will not take never answers them).
    pub fn open_with_timeout(lab: &Lab, port: u16, n: usize, timeout_s: u32) -> (Holder, String) {
        // Room for thousands of sockets in one process.
        let mut child = lab
            .command("client", "bash")
            .env("HOLDER_TIMEOUT", timeout_s.to_string())
            .args(["-c", "ulimit -n 20000 && exec python3 \"$0\" \"$@\""])
            .arg(repo_root().join("tests/peers/holder.py"))
            .args([PROXY_CLIENT_IP, &port.to_string(), &n.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn tests/peers/holder.py");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let first = read_line(&mut stdout);
        (
            Holder {
                child,
                stdin,
                stdout,
            },
            first,
        )
    }

    pub fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        read_line(&mut self.stdout)
    }

    pub fn close(mut self) {
        assert_eq!(self.ask("close"), "closed");
        assert!(self.child.wait().unwrap().success());
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
