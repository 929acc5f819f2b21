//! The PROXY protocol end to end in the netns lab. Sending: HAProxy with
//! `accept-proxy` as the upstream of a `tcp` listener whose group sends v2
//! sees (answers and logs) the real client, 10.71.0.1, not ZProxy's upstream
//! address. Accepting: a client in the client namespace plays a load
//! balancer in `trusted_proxies` and sends a PROXY v2 header naming another
//! client; ZProxy's access log shows that client (X-Forwarded-For is
//! checked in `proxied_tests`), and the listener's allow-list admits or
//! resets by it; a trusted peer without a header is cut. Behind a real
//! HAProxy sending v2, the allow-list and `max_connections_per_source`
//! apply to the real clients, not to the balancer they share.
//!
//! Root only; takes the lab lock like the other lab tests.

mod common;

use std::fs::File;
use std::process::Child;
use std::time::Duration;

use common::proxy::*;
use common::*;

const HAPROXY_PORT: u16 = 8443;

/// HAProxy in the upstream namespace: takes PROXY headers on :8443 and
/// answers (and logs) the client address they name.
struct Haproxy(Child);

impl Haproxy {
    fn start(lab: &Lab) -> (Haproxy, std::path::PathBuf) {
        let frontend = format!(
            r#"defaults
    mode http
    log global
    log-format "haproxy client=%ci"
    timeout connect 1s
    timeout client 5s
    timeout server 5s
frontend pp
    bind {UPSTREAM_IP}:{HAPROXY_PORT} accept-proxy
    http-request return status 200 content-type text/plain lf-string "client=%[src]\n"
"#
        );
        Haproxy::run(lab, "upstream", "pp", &frontend, UPSTREAM_IP, HAPROXY_PORT)
    }

    /// HAProxy in `role`'s namespace with `body` (after a `global` that
    /// logs to stdout, kept in `<name>.log`); waits for `ip:port`.
    fn run(
        lab: &Lab,
        role: &str,
        name: &str,
        body: &str,
        ip: &str,
        port: u16,
    ) -> (Haproxy, std::path::PathBuf) {
        let dir = lab.run_dir();
        let cfg = dir.join(format!("haproxy-{name}.cfg"));
        let log = dir.join(format!("haproxy-{name}.log"));
        std::fs::write(
            &cfg,
            format!("global\n    log stdout format raw local0\n{body}"),
        )
        .unwrap();
        let child = lab
            .command(role, "haproxy")
            .args(["-db", "-f"])
            .arg(&cfg)
            .stdin(std::process::Stdio::null())
            .stdout(File::create(&log).unwrap())
            .spawn()
            .expect("spawn haproxy");
        let up = wait_until(Duration::from_secs(10), || accepts(lab, role, ip, port));
        assert!(up, "haproxy did not listen on {ip}:{port}");
        (Haproxy(child), log)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A PROXY v2 header for TCP over IPv4 from `client` to the proxy's :82.
fn v2(client: [u8; 4], port: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&client);
    h.extend_from_slice(&[10, 71, 0, 2]);
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&82u16.to_be_bytes());
    h
}

#[test]
fn proxy_protocol_sent_to_haproxy_and_accepted_from_a_balancer() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let (_haproxy, haproxy_log) = Haproxy::start(&lab);
    let access = lab.run_dir().join("access-pp.log");
    let _ = std::fs::remove_file(&access);
    let body = web("")
        + &listener(81, "tcp", "pp")
        + &upstream(
            "pp",
            &[(&format!("{UPSTREAM_IP}:{HAPROXY_PORT}"), 1)],
            "proxy_protocol = \"v2\"",
        )
        + &format!(
            r#"
[[listener]]
port = "client"
tcp_port = 82
mode = "http"
upstream = "web"
accept_proxy_protocol = true
trusted_proxies = ["{CLIENT_IP}/32"]
allow = ["192.0.2.0/24"]
"#
        )
        + &format!("\n[access_log]\npath = \"{}\"\n", access.display());
    let z = ZProxy::start(&lab, "zproxy", &config(16384, &body));
    wait_proxy(&lab, &z, 80);

    // Sending: HAProxy (accept-proxy) sees the client, not 10.72.0.2.
    let answer = raw_exchange(&lab, 81, b"GET / HTTP/1.0\r\n\r\n");
    assert!(
        answer.ends_with(&format!("client={CLIENT_IP}\n")),
        "haproxy answered {answer:?}\nzproxy log:\n{}",
        z.log()
    );
    let logged = wait_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&haproxy_log)
            .unwrap_or_default()
            .contains(&format!("haproxy client={CLIENT_IP}"))
    });
    assert!(
        logged,
        "haproxy log: {:?}",
        std::fs::read_to_string(&haproxy_log)
    );

    // Accepting: the trusted balancer's header names 192.0.2.7, which the
    // allow-list admits; the log and X-Forwarded-For say so.
    let mut admitted = v2([192, 0, 2, 7], 40007);
    admitted.extend_from_slice(b"GET /?pp HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let answer = raw_exchange(&lab, 82, &admitted);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");
    let line = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&access)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("client:82") && l.contains("192.0.2.7:40007"))
    });
    assert!(line, "access log: {:?}", std::fs::read_to_string(&access));
    let nginx = std::fs::read_to_string(lab.run_dir().join("access.log")).unwrap_or_default();
    assert!(
        nginx.lines().any(|l| l.contains("/?pp")),
        "nginx saw no /?pp: {nginx}"
    );

    // 198.51.100.9 is not in the allow-list: reset after the header, nothing upstream.
    let refused_before = stat(&lab, "refused_acl");
    let mut refused = v2([198, 51, 100, 9], 40009);
    refused.extend_from_slice(b"GET /?refused HTTP/1.1\r\nHost: a\r\n\r\n");
    let answer = raw_exchange(&lab, 82, &refused);
    assert!(!answer.contains("HTTP/1.1"), "{answer:?}");
    wait_for(Duration::from_secs(5), "refused_acl to count it", || {
        stat(&lab, "refused_acl") > refused_before
    });
    // Without a header the trusted balancer's connection is cut unanswered.
    let answer = raw_exchange(&lab, 82, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(!answer.contains("HTTP/1.1"), "{answer:?}");
    let nginx = std::fs::read_to_string(lab.run_dir().join("access.log")).unwrap_or_default();
    assert!(!nginx.contains("/?refused"), "{nginx}");
    stop_clean(z);
}

/// A real HAProxy in front: in the client namespace, on loopback, sending
/// PROXY v2 to ZProxy; curl on loopback is the real client (127.0.0.1),
/// the balancer is 10.71.0.1. ZProxy logs 127.0.0.1, its allow-list on
/// :84 admits 127.0.0.1 and on :85 (127.0.0.2 only) resets it.
#[test]
fn behind_a_real_haproxy_sending_proxy_v2() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    lab.exec("client", ["ip", "link", "set", "lo", "up"]);
    let access = lab.run_dir().join("access-behind.log");
    let _ = std::fs::remove_file(&access);
    let accepting = |tcp_port: u16, allow: &str| {
        format!(
            r#"
[[listener]]
port = "client"
tcp_port = {tcp_port}
mode = "http"
upstream = "web"
accept_proxy_protocol = true
trusted_proxies = ["{CLIENT_IP}/32"]
allow = ["{allow}"]
"#
        )
    };
    // Two open connections per real client (not per balancer).
    let limited = format!(
        r#"
[[listener]]
port = "client"
tcp_port = 86
mode = "tcp"
upstream = "web"
accept_proxy_protocol = true
trusted_proxies = ["{CLIENT_IP}/32"]
max_connections_per_source = 2
"#
    );
    let body = web("")
        + &accepting(84, "127.0.0.1/32")
        + &accepting(85, "127.0.0.2/32")
        + &limited
        + &format!("\n[access_log]\npath = \"{}\"\n", access.display());
    let z = ZProxy::start(&lab, "zproxy", &config(16384, &body));
    wait_proxy(&lab, &z, 80);
    let front = format!(
        r#"defaults
    mode tcp
    timeout connect 1s
    timeout client 30s
    timeout server 30s
listen admitted
    bind 127.0.0.1:8084
    server zp {PROXY_CLIENT_IP}:84 send-proxy-v2
listen refused
    bind 127.0.0.1:8085
    server zp {PROXY_CLIENT_IP}:85 send-proxy-v2
listen limited
    bind 127.0.0.1:8086
    server zp {PROXY_CLIENT_IP}:86 send-proxy-v2
"#
    );
    let (_front, _) = Haproxy::run(&lab, "client", "front", &front, "127.0.0.1", 8084);

    let (code, _) = curl(&lab, &["http://127.0.0.1:8084/?viahaproxy"]);
    assert_eq!(code, 200, "through HAProxy:\n{}", z.log());
    let logged = wait_until(Duration::from_secs(10), || {
        std::fs::read_to_string(&access)
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains("client:84 GET") && l.contains(" 127.0.0.1:"))
    });
    assert!(logged, "access log: {:?}", std::fs::read_to_string(&access));

    let refused_before = stat(&lab, "refused_acl");
    let (code, _) = curl(&lab, &["http://127.0.0.1:8085/?refused"]);
    assert_eq!(code, 0, "127.0.0.1 is not allowed on :85");
    wait_for(Duration::from_secs(5), "refused_acl to count it", || {
        stat(&lab, "refused_acl") > refused_before
    });
    let nginx = std::fs::read_to_string(lab.run_dir().join("access.log")).unwrap_or_default();
    assert!(nginx.contains("/?viahaproxy"), "{nginx}");
    assert!(!nginx.contains("/?refused"), "{nginx}");

    // 127.0.0.1 holds its two connections through HAProxy (idle for less
    // than its 30 s timeouts); a third of its
    // own is refused, while 127.0.0.2 behind the same balancer gets in.
    let accepted = stat(&lab, "flows_accepted");
    let mut holder = lab.spawn(
        "client",
        [
            "/usr/bin/python3",
            "-c",
            "import socket,time\n\
             s=[socket.create_connection(('127.0.0.1',8086)) for _ in range(2)]\n\
             [c.sendall(b'GET /?held HTTP/1.1\\r\\n') for c in s]\n\
             time.sleep(30)",
        ],
    );
    wait_for(Duration::from_secs(10), "two held client flows", || {
        stat(&lab, "flows_accepted") >= accepted + 2
    });
    let refused_before = stat(&lab, "refused_per_source");
    let (code, _) = curl(&lab, &["http://127.0.0.1:8086/?third"]);
    assert_eq!(
        code,
        0,
        "a third connection of 127.0.0.1 is refused:\n{}",
        z.log()
    );
    wait_for(
        Duration::from_secs(5),
        "refused_per_source to count it",
        || stat(&lab, "refused_per_source") > refused_before,
    );
    let (code, _) = curl(
        &lab,
        &["--interface", "127.0.0.2", "http://127.0.0.1:8086/?other"],
    );
    assert_eq!(
        code,
        200,
        "another client behind the balancer:\n{}",
        z.log()
    );
    let _ = holder.kill();
    let _ = holder.wait();
    // Their close gives the count back: 127.0.0.1 gets in again.
    wait_for(
        Duration::from_secs(10),
        "127.0.0.1 to be admitted again",
        || curl(&lab, &["http://127.0.0.1:8086/?again"]).0 == 200,
    );
    stop_clean(z);
}

/// A line of /etc/hosts for the test's life (removed on drop, also when
/// the test fails).
struct HostsEntry(String);

impl HostsEntry {
    fn add(ip: &str, name: &str) -> HostsEntry {
        let line = format!("{ip} {name}");
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap();
        std::fs::write("/etc/hosts", format!("{hosts}{line}\n")).unwrap();
        HostsEntry(line)
    }
}

impl Drop for HostsEntry {
    fn drop(&mut self) {
        let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        let kept: String = hosts
            .lines()
            .filter(|l| *l != self.0)
            .map(|l| format!("{l}\n"))
            .collect();
        let _ = std::fs::write("/etc/hosts", kept);
    }
}

/// `servers` by host name: resolved (here from /etc/hosts, with a name
/// unique to this run) when zproxy starts; a name that resolves nowhere
/// fails `zproxy check`, naming the server.
#[test]
fn upstream_host_names_resolve_at_start() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let name = format!("zproxy-web-{}.lab", std::process::id());
    let _entry = HostsEntry::add(UPSTREAM_IP, &name);
    let body = listener(80, "http", "web") + &upstream("web", &[(&format!("{name}:80"), 1)], "");
    let z = ZProxy::start(&lab, "zproxy", &config(16384, &body));
    wait_proxy(&lab, &z, 80);
    let (status, got) = curl(&lab, &[&url(80, "/")]);
    assert_eq!((status, got.as_str()), (200, UPSTREAM_BODY), "{}", z.log());
    stop_clean(z);

    let bad = lab.run_dir().join("zproxy-badname.toml");
    let nowhere = format!("nowhere-{}.invalid:80", std::process::id());
    let body = listener(80, "http", "web") + &upstream("web", &[(&nowhere, 1)], "");
    std::fs::write(&bad, config(16384, &body)).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zproxy"))
        .args(["check", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "check passed: {}", describe(&out));
    assert!(
        err.contains(&format!("server \"{nowhere}\" cannot be resolved")),
        "{err}"
    );
}

/// A PROXY v2 header for TCP over IPv6 (family 0x21) from `client`.
fn v2_tcp6(client: &str, port: u16) -> Vec<u8> {
    let ip = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap().octets();
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x21, 0, 36]);
    h.extend_from_slice(&ip(client));
    h.extend_from_slice(&ip("2001:db8:71::2"));
    h.extend_from_slice(&port.to_be_bytes());
    h.extend_from_slice(&87u16.to_be_bytes());
    h
}

/// An IPv6 balancer's headers, sent over IPv4 by a trusted peer: a v1
/// `TCP6` line and a v2 0x21 header each name an IPv6 client, which the
/// upstream sees in X-Forwarded-For (RFC 5952) and the access log logs;
/// the allow-list is checked on that IPv6 client.
#[test]
fn proxy_headers_from_an_ipv6_balancer() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let mut xff = start_xff_upstream(&lab, 8091);
    let access = lab.run_dir().join("access-pp6.log");
    let _ = std::fs::remove_file(&access);
    let body = web("")
        + &upstream("xff", &[(&format!("{UPSTREAM_IP}:8091"), 1)], "")
        + &format!(
            r#"
[[listener]]
port = "client"
tcp_port = 87
mode = "http"
upstream = "xff"
accept_proxy_protocol = true
trusted_proxies = ["{CLIENT_IP}/32"]
allow = ["2001:db8:71::/48"]
"#
        )
        + &format!("\n[access_log]\npath = \"{}\"\n", access.display());
    let z = ZProxy::start(&lab, "zproxy", &config(16384, &body));
    wait_proxy(&lab, &z, 80);
    let request = b"GET /?pp6 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";

    // v1: the TCP6 line's client, in RFC 5952 form (zeros compressed).
    let mut v1 =
        b"PROXY TCP6 2001:0db8:0071:0000:0000:0000:0000:0007 2001:db8:71::2 40007 87\r\n".to_vec();
    v1.extend_from_slice(request);
    let answer = raw_exchange(&lab, 87, &v1);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("\r\n\r\n2001:db8:71::7"),
        "v1 TCP6: {answer:?}\nzproxy log:\n{}",
        z.log()
    );
    // v2, family 0x21.
    let mut v2 = v2_tcp6("2001:db8:71:1::8", 40008);
    v2.extend_from_slice(request);
    let answer = raw_exchange(&lab, 87, &v2);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("\r\n\r\n2001:db8:71:1::8"),
        "v2 0x21: {answer:?}\nzproxy log:\n{}",
        z.log()
    );
    let logged = wait_until(Duration::from_secs(10), || {
        let log = std::fs::read_to_string(&access).unwrap_or_default();
        log.contains("2001:db8:71::7") && log.contains("2001:db8:71:1::8")
    });
    assert!(logged, "access log: {:?}", std::fs::read_to_string(&access));

    // An IPv6 client outside the allow-list is reset after the header.
    let refused_before = stat(&lab, "refused_acl");
    let mut outside = b"PROXY TCP6 2001:db9::9 2001:db8:71::2 40009 87\r\n".to_vec();
    outside.extend_from_slice(request);
    let answer = raw_exchange(&lab, 87, &outside);
    assert!(!answer.contains("HTTP/1.1"), "{answer:?}");
    wait_for(Duration::from_secs(5), "refused_acl to count it", || {
        stat(&lab, "refused_acl") > refused_before
    });
    let _ = xff.kill();
    let _ = xff.wait();
    stop_clean(z);
}

/// The balancer connects over IPv6, from the client namespace's address.
const BALANCER_V6: &str = CLIENT_V6;

/// Opens two connections to [argv1]:argv2, each sending the bytes of one
/// hex argument (argv3, argv4), writes argv5 and holds them until killed.
const HOLD_TWO: &str = r#"
import socket, sys, time
s = [socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) for _ in range(2)]
for c, h in zip(s, sys.argv[3:5]):
    c.sendall(bytes.fromhex(h))
open(sys.argv[5], 'w').write('held')
time.sleep(60)
"#;

/// A balancer that itself connects over IPv6: trusted by its IPv6 network,
/// its headers name the clients (X-Forwarded-For), and the stack does not
/// hold it to `max_connections_per_source` (one balancer, many clients):
/// with a limit of 1 it holds two connections and opens a third. Without a
/// header it is cut.
#[test]
fn proxy_headers_from_a_balancer_on_ipv6() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    lab.enable_ipv6("client", CLIENT_IF, BALANCER_V6);
    let mut xff = start_xff_upstream(&lab, 8091);
    let body = web("")
        + &upstream("xff", &[(&format!("{UPSTREAM_IP}:8091"), 1)], "")
        + &format!(
            r#"
[[listener]]
port = "client"
tcp_port = 88
mode = "http"
upstream = "xff"
accept_proxy_protocol = true
trusted_proxies = ["192.0.2.0/24", "{BALANCER_V6}/128"]
max_connections_per_source = 1
per_source_prefix6 = 64
"#
        );
    let cfg = config(16384, &body).replace(
        &format!("address = \"{PROXY_CLIENT_IP}/24\""),
        &format!("addresses = [\"{PROXY_CLIENT_IP}/24\", \"{PORT_V6}/64\"]"),
    );
    let z = ZProxy::start(&lab, "zproxy", &cfg);
    wait_proxy(&lab, &z, 80);
    let hex = |client: &str| -> String {
        let mut h = v2_tcp6(client, 40000);
        h.extend_from_slice(b"GET /?held HTTP/1.1\r\n");
        h.iter().map(|b| format!("{b:02x}")).collect()
    };
    let held = lab.run_dir().join("held6");
    let _ = std::fs::remove_file(&held);
    let accepted = stat(&lab, "flows_accepted");
    let (a, b) = (hex("2001:db8:71:a::1"), hex("2001:db8:71:b::1"));
    let mut holder = lab.spawn(
        "client",
        [
            "python3",
            "-c",
            HOLD_TWO,
            PORT_V6,
            "88",
            &a,
            &b,
            held.to_str().unwrap(),
        ],
    );
    wait_for(Duration::from_secs(10), "two held balancer flows", || {
        held.exists() && stat(&lab, "flows_accepted") >= accepted + 2
    });
    // A third connection of the balancer, naming a third client.
    let mut third = v2_tcp6("2001:db8:71:c::1", 40003);
    third.extend_from_slice(b"GET /?third HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    let answer = raw_exchange_to(&lab, PORT_V6, 88, &third);
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("\r\n\r\n2001:db8:71:c::1"),
        "a third connection of the IPv6 balancer: {answer:?}\nzproxy log:\n{}",
        z.log()
    );
    assert_eq!(stat(&lab, "refused_per_source"), 0);
    // Trusted, so a header is required: without one the balancer is cut.
    let answer = raw_exchange_to(
        &lab,
        PORT_V6,
        88,
        b"GET /?bare HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assert!(!answer.contains("HTTP/1.1"), "{answer:?}");
    let _ = holder.kill();
    let _ = holder.wait();
    let _ = xff.kill();
    let _ = xff.wait();
    stop_clean(z);
}
