//! TLS end to end in the netns lab, with certificates made at test time
//! (openssl): an `https` listener with SNI (exact, wildcard, default),
//! TLS 1.3 and 1.2, ALPN, resumption, an old client refused, bad input
//! counted, upstream TLS to an nginx with `ssl` (and a 502 when its
//! certificate does not verify), SIGHUP swapping a certificate, and a
//! `tls` listener relaying TCP byte-exact with half-closes.
//!
//! Root only; takes the lab lock like the other lab tests.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::nginx::Nginx;
use common::proxy::*;
use common::*;

/// Runs a shell line on the host; panics with its output when it fails.
fn sh(line: &str) -> String {
    let out = Command::new("bash").args(["-c", line]).output().unwrap();
    assert!(out.status.success(), "{line}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A CA (`NAME.pem`, `NAME.key`) in `dir`.
fn ca(dir: &Path, name: &str) {
    let d = dir.display();
    sh(&format!("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {d}/{name}.key -out {d}/{name}.pem -days 30 -subj /CN={name} 2>/dev/null"));
}

/// A leaf `NAME.pem`/`NAME.key` for DNS `names`, signed by CA `by`;
/// `kind` "ec" (key in SEC1) or "rsa" (key in PKCS#1).
fn leaf(dir: &Path, name: &str, names: &[&str], kind: &str, by: &str, serial: u32) -> PathBuf {
    let d = dir.display();
    let newkey = match kind {
        "ec" => "ec -pkeyopt ec_paramgen_curve:P-256",
        _ => "rsa:2048",
    };
    let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!(
            "subjectAltName={}\nbasicConstraints=CA:FALSE\n",
            san.join(",")
        ),
    )
    .unwrap();
    sh(&format!(
        "openssl req -newkey {newkey} -nodes -keyout {d}/{name}.p8 -out {d}/{name}.csr -subj /CN={} 2>/dev/null && \
         openssl x509 -req -in {d}/{name}.csr -CA {d}/{by}.pem -CAkey {d}/{by}.key -set_serial {serial} -days 30 -extfile {d}/{name}.ext -out {d}/{name}.pem 2>/dev/null",
        names[0]
    ));
    let convert = match kind {
        "ec" => "openssl ec",
        _ => "openssl rsa -traditional",
    };
    sh(&format!(
        "{convert} -in {d}/{name}.p8 -out {d}/{name}.key 2>/dev/null"
    ));
    dir.join(format!("{name}.pem"))
}

/// The lab's certificates: CA "ca"; "a" (a.test, ECDSA), "b" (*.b.test,
/// RSA), "dflt" (default.test, ECDSA, listed first: the default).
fn pki(lab: &Lab) -> PathBuf {
    let dir = lab.run_dir().join("pki");
    std::fs::create_dir_all(&dir).unwrap();
    ca(&dir, "ca");
    ca(&dir, "other-ca");
    leaf(&dir, "dflt", &["default.test"], "ec", "ca", 0x1001);
    leaf(&dir, "a", &["a.test"], "ec", "ca", 0x1002);
    leaf(&dir, "b", &["*.b.test"], "rsa", "ca", 0x1003);
    leaf(&dir, "up", &["up.test"], "ec", "ca", 0x1004);
    leaf(&dir, "swap", &["swap.test"], "ec", "ca", 0x2001);
    dir
}

fn cert_table(dir: &Path, names: &[&str]) -> String {
    names
        .iter()
        .map(|n| {
            format!(
                "[[listener.tls.certificate]]\ncert = \"{0}/{n}.pem\"\nkey = \"{0}/{n}.key\"\n",
                dir.display()
            )
        })
        .collect()
}

/// :443 https (dflt, a, b) to the lab's nginx; :444 https (swap).
fn tls_config(dir: &Path, extra: &str) -> String {
    let body = listener(443, "https", "web")
        + "[listener.tls]\n"
        + &cert_table(dir, &["dflt", "a", "b"])
        + &listener(444, "https", "web")
        + "[listener.tls]\nhandshake_timeout_ms = 1000\n"
        + &cert_table(dir, &["swap"])
        + &upstream("web", &[("10.72.0.1:80", 1)], "")
        + extra;
    config(16384, &body)
}

/// `openssl s_client` in the client namespace against `port`; its whole output.
fn s_client(lab: &Lab, port: u16, args: &str, input: &str) -> String {
    let out = lab.exec(
        "client",
        [
            "bash",
            "-c",
            &format!(
                "printf '{input}' | timeout 10 openssl s_client -connect {PROXY_CLIENT_IP}:{port} {args} 2>&1"
            ),
        ],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const GET: &str = "GET / HTTP/1.1\\r\\nHost: a.test\\r\\nConnection: close\\r\\n\\r\\n";

/// curl over TLS with SNI `name` resolved to the proxy.
fn curl_tls(lab: &Lab, dir: &Path, port: u16, name: &str) -> (u32, String) {
    curl(
        lab,
        &[
            "--cacert",
            &format!("{}/ca.pem", dir.display()),
            "--resolve",
            &format!("{name}:{port}:{PROXY_CLIENT_IP}"),
            &format!("https://{name}:{port}/"),
        ],
    )
}

/// The subject CN and serial the proxy shows for SNI `name` (none: no SNI).
fn peer_cert(lab: &Lab, dir: &Path, port: u16, name: Option<&str>) -> String {
    let sni = name.map_or("-noservername".to_owned(), |n| format!("-servername {n}"));
    let out = lab.exec(
        "client",
        [
            "bash",
            "-c",
            &format!("timeout 10 openssl s_client -connect {PROXY_CLIENT_IP}:{port} {sni} -CAfile {}/ca.pem </dev/null 2>/dev/null | openssl x509 -noout -subject -serial", dir.display()),
        ],
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn wait_tls(lab: &Lab, z: &ZProxy, dir: &Path) {
    assert!(
        wait_until(Duration::from_secs(15), || curl_tls(
            lab, dir, 443, "a.test"
        )
        .0 == 200),
        "no 200 over TLS; zproxy log:\n{}",
        z.log()
    );
}

#[test]
fn https_sni_versions_alpn_resumption_and_bad_clients() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let dir = pki(&lab);
    // One handshake step per poll iteration: parallel handshakes must wait their turn.
    let text =
        tls_config(&dir, "").replacen("[runtime]\n", "[runtime]\ntls_handshakes_per_poll = 1\n", 1);
    let z = ZProxy::start(&lab, "zproxy", &text);
    wait_tls(&lab, &z, &dir);

    // A body larger than every buffer on the way (16 KiB socket buffers,
    // 16 KiB records): backpressure both ways, every byte through.
    let (status, body) = curl(
        &lab,
        &[
            "--cacert",
            &format!("{}/ca.pem", dir.display()),
            "--resolve",
            &format!("a.test:443:{PROXY_CLIENT_IP}"),
            "https://a.test:443/bytes/1000000",
        ],
    );
    assert_eq!((status, body.len()), (200, 1_000_000));
    assert!(body.bytes().all(|b| b == b'x'));

    // Many handshakes at once, one step per iteration: all served, some deferred.
    let out = lab.exec(
        "client",
        ["bash", "-c", &format!("seq 40 | xargs -P 40 -I{{}} curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time 10 --cacert {}/ca.pem --resolve a.test:443:{PROXY_CLIENT_IP} https://a.test:443/", dir.display())],
    );
    let codes = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(codes.lines().filter(|l| *l == "200").count(), 40, "{codes}");
    let deferred: u64 = fresh_stats(&lab)["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["tls_handshakes_deferred"].as_u64().unwrap())
        .sum();
    eprintln!("handshake steps deferred: {deferred}");
    assert!(deferred > 0, "no handshake waited for the budget");

    // SNI for two names: the right certificate, the upstream's body.
    for name in ["a.test", "x.b.test"] {
        let (status, body) = curl_tls(&lab, &dir, 443, name);
        assert_eq!((status, body.as_str()), (200, UPSTREAM_BODY), "{name}");
    }
    assert!(peer_cert(&lab, &dir, 443, Some("a.test")).contains("CN = a.test"));
    let b = peer_cert(&lab, &dir, 443, Some("x.b.test"));
    assert!(
        b.contains("CN = *.b.test") && b.contains("serial=1003"),
        "{b}"
    );
    // Wrong SNI, and none: the default (the first) certificate.
    for sni in [Some("nobody.test"), None] {
        let d = peer_cert(&lab, &dir, 443, sni);
        assert!(d.contains("CN = default.test"), "{sni:?}: {d}");
    }

    // TLS 1.3 and 1.2, ALPN http/1.1; the request goes through with X-Forwarded-Proto.
    let ca = format!("-CAfile {}/ca.pem -servername a.test", dir.display());
    let t13 = s_client(
        &lab,
        443,
        &format!("{ca} -tls1_3 -alpn http/1.1 -ign_eof"),
        GET,
    );
    assert!(t13.contains("New, TLSv1.3"), "{t13}");
    assert!(t13.contains("ALPN protocol: http/1.1"), "{t13}");
    assert!(t13.contains("Verify return code: 0 (ok)"), "{t13}");
    assert!(t13.contains(UPSTREAM_BODY.trim()), "{t13}");
    let t12 = s_client(&lab, 443, &format!("{ca} -tls1_2 -ign_eof"), GET);
    assert!(t12.contains("New, TLSv1.2"), "{t12}");
    assert!(t12.contains(UPSTREAM_BODY.trim()), "{t12}");
    // A client that offers only h2 gets an alert, not a connection.
    let h2 = s_client(&lab, 443, &format!("{ca} -alpn h2"), "");
    assert!(h2.contains("no application protocol"), "{h2}");
    // TLS 1.0 only: refused.
    let t10 = s_client(
        &lab,
        443,
        &format!("{ca} -tls1 -cipher DEFAULT@SECLEVEL=0"),
        "",
    );
    assert!(!t10.contains("New, TLSv1"), "{t10}");
    assert!(t10.contains("alert") || t10.contains("error"), "{t10}");

    // Resumption: a ticket from one connection resumes the next.
    let sess = lab.run_dir().join("tls.sess");
    let s = sess.display();
    let first = s_client(&lab, 443, &format!("{ca} -ign_eof -sess_out {s}"), GET);
    assert!(first.contains("New, TLSv1.3"), "{first}");
    let again = s_client(&lab, 443, &format!("{ca} -ign_eof -sess_in {s}"), GET);
    assert!(again.contains("Reused, TLSv1.3"), "{again}");
    assert!(again.contains(UPSTREAM_BODY.trim()), "{again}");

    // Bad input: garbage instead of a ClientHello, a stalled handshake.
    let before = fresh_stats(&lab);
    let sum = |v: &serde_json::Value, k: &str| -> u64 {
        v["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w[k].as_u64().unwrap())
            .sum()
    };
    let garbage = lab.exec(
        "client",
        ["bash", "-c", &format!("exec 3<>/dev/tcp/{PROXY_CLIENT_IP}/443; printf 'GET / HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n' >&3; timeout 3 head -c 64 <&3 | od -An -tx1")],
    );
    let reply = String::from_utf8_lossy(&garbage.stdout).into_owned();
    // A TLS alert record (type 0x15), not an HTTP answer.
    assert!(reply.trim().starts_with("15 03"), "{reply:?}");
    // :444's handshake timeout is 1 s: a client that sends nothing is cut.
    let stalled = lab.exec(
        "client",
        ["bash", "-c", &format!("exec 3<>/dev/tcp/{PROXY_CLIENT_IP}/444; printf '\\x16\\x03\\x01\\x00\\x80' >&3; timeout 4 cat <&3 >/dev/null; echo done")],
    );
    let _ = stalled;
    let after = fresh_stats(&lab);
    assert!(sum(&after, "tls_protocol_errors") > sum(&before, "tls_protocol_errors"));
    assert!(sum(&after, "tls_handshake_timeouts") > sum(&before, "tls_handshake_timeouts"));
    assert!(sum(&after, "tls_resumed") >= 1, "{after}");
    assert!(sum(&after, "tls_handshakes") >= 6, "{after}");
    // Still serving.
    assert_eq!(curl_tls(&lab, &dir, 443, "a.test").0, 200);
}

#[test]
fn upstream_tls_verifies_and_502s_when_it_cannot() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let dir = pki(&lab);
    let d = dir.display();
    let _up = Nginx::start(
        &lab,
        "tls-up",
        UPSTREAM_IP,
        8090,
        &format!(
            "listen {UPSTREAM_IP}:8443 ssl;
            ssl_certificate {d}/up.pem;
            ssl_certificate_key {d}/up.key;
            location / {{ default_type text/plain; return 200 \"tls upstream $https $http_x_forwarded_proto\\n\"; }}"
        ),
    );
    let extra = listener(446, "https", "good")
        + "[listener.tls]\n"
        + &cert_table(&dir, &["a"])
        + &listener(81, "http", "good")
        + &listener(82, "http", "bad")
        + &upstream(
            "good",
            &[(&format!("{UPSTREAM_IP}:8443"), 1)],
            &format!("tls = true\ntls_ca = \"{d}/ca.pem\"\ntls_sni = \"up.test\"\n"),
        )
        + &upstream(
            "bad",
            &[(&format!("{UPSTREAM_IP}:8443"), 1)],
            &format!("tls = true\ntls_ca = \"{d}/other-ca.pem\"\ntls_sni = \"up.test\"\n"),
        );
    let log = lab.run_dir().join("tls-access.log");
    let extra = extra + &format!("\n[access_log]\npath = \"{}\"\n", log.display());
    let z = ZProxy::start(&lab, "zproxy", &tls_config(&dir, &extra));
    wait_tls(&lab, &z, &dir);
    let (status, body) = curl(&lab, &[&url(81, "/")]);
    assert_eq!(
        (status, body.as_str()),
        (200, "tls upstream on http\n"),
        "{}",
        z.log()
    );
    // TLS both ways: the upstream hears that the client came over https.
    let (status, body) = curl_tls(&lab, &dir, 446, "a.test");
    assert_eq!((status, body.as_str()), (200, "tls upstream on https\n"));
    // The access log has the client's TLS version and suite, `-` for plain HTTP.
    let lines = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_for(
        Duration::from_secs(5),
        "access log lines for :446 and :81",
        || lines().contains(" client:446 ") && lines().contains(" client:81 "),
    );
    for l in lines().lines() {
        if l.contains(" client:446 ") {
            assert!(l.contains(" tls=TLSv1.3/TLS13_"), "{l}");
        } else if l.contains(" client:81 ") {
            assert!(l.ends_with(" tls=-"), "{l}");
        }
    }
    let (status, _) = curl(&lab, &[&url(82, "/")]);
    assert_eq!(status, 502);
    let v = fresh_stats(&lab);
    let tls_failures: u64 = v["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["failures_tls"].as_u64().unwrap())
        .sum();
    assert!(tls_failures >= 1, "{v}");
}

#[test]
fn sighup_swaps_a_certificate_and_open_connections_keep_theirs() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let dir = pki(&lab);
    let text = tls_config(&dir, "");
    let cfg = lab.run_dir().join("zproxy.toml");
    let z = ZProxy::start(&lab, "zproxy", &text);
    wait_tls(&lab, &z, &dir);
    let out = lab.run_dir().join("hold.out");
    let go = lab.run_dir().join("hold.go");
    let peer = repo_root().join("tests/peers/tls_hold.py");
    let mut hold = lab.spawn(
        "client",
        [
            "python3",
            peer.to_str().unwrap(),
            PROXY_CLIENT_IP,
            "444",
            "swap.test",
            &format!("{}/ca.pem", dir.display()),
            out.to_str().unwrap(),
            go.to_str().unwrap(),
        ],
    );
    wait_for(
        Duration::from_secs(10),
        "the held connection's first answer",
        || std::fs::read_to_string(&out).is_ok_and(|t| t.contains("status=")),
    );
    let first = std::fs::read_to_string(&out).unwrap();
    assert!(first.contains("serial=2001 status=200"), "{first}");

    // A new certificate for swap.test in the same files, then SIGHUP.
    leaf(&dir, "swap", &["swap.test"], "ec", "ca", 0x2002);
    std::fs::write(&cfg, &text).unwrap();
    let sent = Command::new("kill")
        .args(["-HUP", &z.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    wait_for(
        Duration::from_secs(10),
        "new connections to see serial 2002",
        || peer_cert(&lab, &dir, 444, Some("swap.test")).contains("serial=2002"),
    );
    std::fs::write(&go, "").unwrap();
    let _ = hold.wait();
    let all = std::fs::read_to_string(&out).unwrap();
    assert!(
        all.contains("again status=200"),
        "the open connection: {all}"
    );
}

/// `mode = "tls"`: TLS from the client, then the plain TCP relay to an
/// echo upstream. 1 MB of random bytes each way through 16 KiB buffers
/// (backpressure both ways), byte-exact, then the client's half-close
/// (a close_notify alone, and a TCP FIN alone) reaches the upstream, whose
/// trailer still comes back after it, and the proxy ends the stream with
/// close_notify.
#[test]
fn tls_listener_relays_tcp_byte_exact_with_half_close() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let dir = pki(&lab);
    let echo = repo_root().join("tests/peers/echo_upstream.py");
    let _echo = KillOnDrop(lab.spawn(
        "upstream",
        ["python3", echo.to_str().unwrap(), UPSTREAM_IP, "9000"],
    ));
    let body = listener(445, "tls", "echo")
        + "[listener.tls]\n"
        + &cert_table(&dir, &["a"])
        + &upstream("echo", &[(&format!("{UPSTREAM_IP}:9000"), 1)], "");
    let z = ZProxy::start(&lab, "zproxy", &config(16384, &body));
    let client = repo_root().join("tests/peers/tls_relay_client.py");
    let run = |how: &str| {
        let out = lab.exec(
            "client",
            [
                "python3",
                client.to_str().unwrap(),
                PROXY_CLIENT_IP,
                "445",
                "a.test",
                &format!("{}/ca.pem", dir.display()),
                "1000000",
                how,
            ],
        );
        (out.status.success(), describe(&out))
    };
    // The first try may meet a proxy (or echo peer) still starting.
    assert!(
        wait_until(Duration::from_secs(15), || run("notify").0),
        "no TLS relay on :445: {}\nzproxy log:\n{}",
        run("notify").1,
        z.log()
    );
    for how in ["notify", "fin"] {
        let (ok, out) = run(how);
        assert!(ok, "{how}: {out}\nzproxy log:\n{}", z.log());
        assert!(out.contains(&format!("ok {how}:")), "{out}");
    }
    let v = fresh_stats(&lab);
    let sum = |k: &str| -> u64 {
        v["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w[k].as_u64().unwrap())
            .sum()
    };
    assert!(sum("tls_handshakes") >= 3, "{v}");
    assert_eq!(sum("tls_protocol_errors"), 0, "{v}");
}

/// Kills a spawned peer when the test ends, passing or not.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
