//! Client faults, end to end in the netns lab: clients that give up
//! mid-upload and mid-download, and handshakes a client resets.
//!
//! Each test checks what the client sees, then that the appliance keeps
//! serving: a normal request through nginx succeeds, the process still runs,
//! `flows_active` (from `zproxy stats`) falls back to its baseline, and at
//! SIGINT the log's mbuf accounting says "0 leaked" (`stop_clean`).
//!
//! Root only; every test takes the lab lock shared with the other lab test
//! files, so no two zproxy instances ever run at once. Assertions are about
//! correctness, never speed: time bounds only tell a reaction to a fault
//! (RST, parse error) from a timer, with generous slack for a 2-core machine.

mod common;

use std::io::{BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::time::{Duration, Instant};

use common::faults::*;
use common::proxy::*;
use common::*;

// ---- client faults -------------------------------------------------------------------------

/// A client that starts an upload (POST, 100 MB announced) or a download
/// (GET /stream), moves 4 MiB, says "ready", waits for a line on stdin,
/// then either resets its connection ("rst": SO_LINGER 0) or waits to be
/// killed ("kill").
const ABORTER: &str = r#"
import socket, struct, sys, time
host, port, what, how = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
s = socket.create_connection((host, port), timeout=10)
if what == "upload":
    s.sendall(b"POST /upload HTTP/1.1\r\nHost: lab\r\nContent-Length: 104857600\r\n\r\n")
    chunk = b"u" * 65536
    for _ in range(64):
        s.sendall(chunk)
else:
    s.sendall(b"GET /stream HTTP/1.1\r\nHost: lab\r\n\r\n")
    got = 0
    while got < 4 << 20:
        b = s.recv(65536)
        if not b:
            print("eof", got, flush=True)
            sys.exit(1)
        got += len(b)
print("ready", flush=True)
sys.stdin.readline()
if how == "rst":
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
    print("reset", flush=True)
else:
    time.sleep(60)  # holds the connection open: the point (the test ends it)
"#;

fn start_aborter(
    lab: &Lab,
    port: u16,
    what: &str,
    how: &str,
) -> (Child, ChildStdin, BufReader<ChildStdout>) {
    let mut child = lab
        .command("client", "python3")
        .args(["-c", ABORTER, PROXY_CLIENT_IP, &port.to_string(), what, how])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let stdin = child.stdin.take().unwrap();
    let out = BufReader::new(child.stdout.take().unwrap());
    (child, stdin, out)
}

#[test]
fn client_aborts_mid_upload_and_mid_download_release_both_sides() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let sink = Peer::start(&lab, "sink", 9001);
    let stream = Peer::start(&lab, "stream", 9002);
    let body = web_unpooled() + &faulty(85, "sink", 9001, "") + &faulty(86, "stream", 9002, "");
    let mut z = ZProxy::start(&lab, "zproxy", &config(65536, &body));
    wait_proxy(&lab, &z, 80);
    wait_flows_at_most(&lab, &z, 0, 5);
    let baseline = stat(&lab, "flows_active");

    for (port, what, peer) in [(85, "upload", &sink), (86, "download", &stream)] {
        for how in ["rst", "kill"] {
            let accepted = peer.count("accept");
            let t = Instant::now();
            let (mut child, mut go, mut out) = start_aborter(&lab, port, what, how);
            assert_eq!(read_line(&mut out), "ready", "{what}/{how}");
            let moved = t.elapsed();
            // Mid-transfer: the upstream took the request (and, for an
            // upload, at least 1 MiB of its body; a download's client read 4 MiB).
            let started = wait_until(Duration::from_secs(10), || {
                peer.count("accept") == accepted + 1
                    && (what == "download" || peer.saw("progress", accepted + 1))
            });
            assert!(
                started,
                "{what}/{how}: the upstream never got the transfer: {:?}",
                peer.events()
            );
            // Both sides are open now: the client's and the upstream's
            // (counters are published every 100 ms).
            assert!(
                wait_until(Duration::from_secs(2), || stat(&lab, "flows_active")
                    >= baseline + 2),
                "{what}/{how}: both flows open mid-transfer; upstream saw {:?}; stats {}\nzproxy log:\n{}",
                peer.events(),
                stats(&lab),
                z.log()
            );
            match how {
                "rst" => {
                    writeln!(go, "go").unwrap();
                    assert_eq!(read_line(&mut out), "reset");
                    assert!(child.wait().unwrap().success());
                }
                _ => {
                    child.kill().unwrap();
                    child.wait().unwrap();
                }
            }
            drop(go);
            let t = Instant::now();
            wait_flows_at_most(&lab, &z, baseline, 10);
            peer.wait_all_closed(10);
            eprintln!(
                "{what} aborted ({how}) after 4 MiB in {moved:?}: both sides released within {:?}; upstream saw {:?}",
                t.elapsed(),
                peer.events().last()
            );
        }
    }
    // The sink never got a whole body.
    let events = sink.events();
    for l in events.iter().filter(|l| l.starts_with("got ")) {
        let n: u64 = l.split_whitespace().nth(2).unwrap().parse().unwrap();
        assert!(n < 104_857_600, "{l}");
    }

    // Uploads and downloads still work.
    let src = lab.run_dir().join("upload-1m");
    std::fs::write(&src, vec![b'u'; 1 << 20]).unwrap();
    let (code, text) = curl(
        &lab,
        &[
            "--data-binary",
            &format!("@{}", src.display()),
            &url(85, "/upload"),
        ],
    );
    assert_eq!((code, text.as_str()), (200, "got 1048576\n"), "upload");
    let s = fetch(&lab, &[&url(80, "/bytes/1000000")]);
    assert_eq!((s.exit, s.status, s.bytes), (0, 200, 1_000_000), "{s:?}");
    still_serving(&lab, &mut z);
    wait_flows_at_most(&lab, &z, baseline, 10);
    stop_clean(z);
}

/// A client whose handshake ends in a RST: its SYN is answered, the SYN-ACK
/// never reaches it (dropped in the client namespace) and it gives up; the
/// SYN-ACK resent later meets no socket, so the client's kernel answers with
/// a RST (what a SYN scan does on purpose). Returns once zproxy released the
/// half-open flow (`flows_active` back to `held`).
fn abort_handshake(lab: &Lab, z: &ZProxy, port: u16, held: u64) {
    lab.exec_ok(
        "client",
        [
            "nft",
            &format!(
                "add table inet synack; add chain inet synack in {{ type filter hook input priority 0; }}; \
                 add rule inet synack in ip saddr {PROXY_CLIENT_IP} tcp sport {port} tcp flags & (syn|ack) == syn|ack drop"
            ),
        ],
    );
    let s = fetch(lab, &["--connect-timeout", "0.5", &url(port, "/")]);
    lab.exec_ok("client", ["nft", "delete table inet synack"]);
    assert_eq!(
        s.exit, 28,
        "the handshake must time out at the client: {s:?}"
    );
    // The SYN-ACK is resent after zproxy's retransmission timeout; the RST
    // that answers it returns the half-open flow's slot.
    wait_flows_at_most(lab, z, held, 15);
}

/// Waits until zproxy has let go of every connection (whatever a crash
/// would come from has run by then), or has exited.
fn let_go_or_died(lab: &Lab, z: &mut ZProxy) {
    wait_for(
        Duration::from_secs(10),
        "zproxy to let go of every connection (flows_active 0) or to exit",
        || !z.running() || stat(lab, "flows_active") == 0,
    );
}

#[test]
fn handshake_reset_by_a_client_then_an_upstream_connect() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let mut z = ZProxy::start(&lab, "zproxy", &config(16384, &web_and_static()));
    wait_proxy(&lab, &z, 80);
    wait_flows_at_most(&lab, &z, 0, 5);

    // A keep-alive client, then a handshake reset on :80. The next request
    // of the keep-alive client needs an upstream connection (keepalive = 0),
    // which takes the slot the half-open flow left.
    let (mut holder, opened) = Holder::open(&lab, 80, 1);
    assert_eq!(opened, "open 1 errors 0");
    let ok = format!("resp 0 200 {}", UPSTREAM_BODY.len());
    assert_eq!(holder.ask("get 0 /"), ok);
    abort_handshake(&lab, &z, 80, 1);
    assert_eq!(
        holder.ask("get 0 /"),
        ok,
        "a request after a client reset its handshake; zproxy log:\n{}",
        z.log()
    );
    holder.close();
    assert!(
        !z.log().contains("invalid state"),
        "a connect failed on a slot left half-open:\n{}",
        z.log()
    );
    still_serving(&lab, &mut z);
    wait_flows_at_most(&lab, &z, 0, 10);
    stop_clean(z);
}

#[test]
fn handshake_reset_by_a_client_then_another_listener() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let mut z = ZProxy::start(&lab, "zproxy", &config(16384, &web_and_static()));
    wait_proxy(&lab, &z, 80);
    wait_flows_at_most(&lab, &z, 0, 5);

    // A handshake reset on :80, then a connection to :8080 takes its slot.
    abort_handshake(&lab, &z, 80, 0);
    let s = fetch(&lab, &[&url(8080, "/")]);
    let_go_or_died(&lab, &mut z);
    assert!(
        z.running(),
        "zproxy died when a client connected after another reset its handshake:\n{}",
        z.log()
    );
    assert_eq!((s.exit, s.status), (0, 200), "{s:?}\n{}", z.log());
    // And the other way round.
    abort_handshake(&lab, &z, 8080, 0);
    let s = fetch(&lab, &[&url(80, "/")]);
    let_go_or_died(&lab, &mut z);
    assert!(z.running(), "zproxy died:\n{}", z.log());
    assert_eq!((s.exit, s.status), (0, 200), "{s:?}\n{}", z.log());
    still_serving(&lab, &mut z);
    wait_flows_at_most(&lab, &z, 0, 10);
    stop_clean(z);
}
