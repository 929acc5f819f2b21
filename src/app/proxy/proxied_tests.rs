//! The PROXY protocol in a session over real smoltcp TCP (see `testnet`):
//! a trusted peer's header names the client; an upstream gets one first.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;

use smoltcp::socket::tcp::State as TcpState;

use super::client_limits::Refused;
use super::proxy_protocol::{write, AcceptProxy, Version, HEADER_ROOM};
use super::session::Mode;
use super::testnet::{head_len, Net, HEADER_TIMEOUT_US};

const STEPS: usize = 20_000;
/// The testnet's address: the peer (the "load balancer") and us.
const HERE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);

fn real() -> SocketAddrV4 {
    "192.0.2.7:5555".parse().unwrap()
}

fn header(v: Version, client: SocketAddrV4) -> Vec<u8> {
    let mut out = [0u8; HEADER_ROOM];
    let n = write(
        v,
        client.into(),
        SocketAddrV4::new(HERE, 80).into(),
        &mut out,
    );
    out[..n].to_vec()
}

/// A session whose peer is a trusted proxy, with the listener's allow-list.
fn behind_proxy(mode: Mode, allow: &[(Ipv4Addr, u8)]) -> Net {
    behind_limited_proxy(mode, allow, 0)
}

/// The same, with `max_connections_per_source` for the real client.
fn behind_limited_proxy(mode: Mode, allow: &[(Ipv4Addr, u8)], max_per_source: u32) -> Net {
    let mut net = Net::new(mode, 2048);
    let accept = policy(allow, max_per_source);
    assert!(accept.trusts(HERE.into()));
    net.session
        .set_proxying(SocketAddrV4::new(HERE, 80).into(), Some(Arc::new(accept)));
    net
}

fn policy(allow: &[(Ipv4Addr, u8)], max_per_source: u32) -> AcceptProxy {
    AcceptProxy {
        trusted: vec![(Ipv4Addr::new(10, 0, 0, 0), 8)],
        trusted6: Vec::new(),
        allow: allow.to_vec(),
        allow6: Default::default(),
        prefix6: 128,
        max_per_source,
        conn_rate: None,
        limit_id: AcceptProxy::limit_id_of(0),
    }
}

fn reset(net: &mut Net) -> bool {
    net.run_until(STEPS, |n| {
        matches!(
            n.client_sock().state(),
            TcpState::Closed | TcpState::TimeWait
        )
    })
}

#[test]
fn a_trusted_v2_header_names_the_client_for_xff_and_the_log() {
    let mut net = behind_proxy(Mode::Http, &[(Ipv4Addr::new(192, 0, 2, 0), 24)]);
    net.client.send(&header(Version::V2, real()));
    net.client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(net.run_until(STEPS, |n| n
        .servers
        .last()
        .is_some_and(|s| head_len(&s.rx).is_some())));
    let head = String::from_utf8_lossy(&net.servers[0].rx).into_owned();
    assert_eq!(
        head,
        "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 192.0.2.7\r\nX-Forwarded-Proto: http\r\nX-Request-Id: 0000000000000001\r\n\r\n"
    );
    net.server()
        .send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert!(net.run_until(STEPS, |n| !n.outcomes.is_empty()));
    assert_eq!(net.outcomes[0].client, Some(((*real().ip()).into(), 5555)));
}

#[test]
fn an_ipv6_client_behind_the_balancer_is_itself() {
    // v1 TCP6 and v2 0x21 (as an IPv6 balancer writes them) into an http listener.
    let client: std::net::SocketAddr = "[2001:db8:71::7]:5555".parse().unwrap();
    for v in [Version::V1, Version::V2] {
        let mut net = behind_proxy(Mode::Http, &[]);
        let mut out = [0u8; HEADER_ROOM];
        let n = write(v, client, "[2001:db8:71::2]:80".parse().unwrap(), &mut out);
        net.client.send(&out[..n]);
        net.client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(net.run_until(STEPS, |n| n
            .servers
            .last()
            .is_some_and(|s| head_len(&s.rx).is_some())));
        let head = String::from_utf8_lossy(&net.servers[0].rx).into_owned();
        assert!(
            head.contains("\r\nX-Forwarded-For: 2001:db8:71::7\r\n"),
            "{v:?}: {head}"
        );
        net.server()
            .send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        assert!(net.run_until(STEPS, |n| !n.outcomes.is_empty()));
        assert_eq!(net.outcomes[0].client, Some((client.ip(), 5555)), "{v:?}");
        assert_eq!(net.session.take_counted(), Some(client.ip()), "{v:?}");
    }
}

#[test]
fn a_tcp_relay_sends_the_real_client_upstream_first() {
    let mut net = behind_proxy(Mode::Tcp, &[]);
    net.session.send_proxy_header(Some(Version::V1));
    // In as v2, out as v1: what reaches the server is ours, not relayed.
    net.client.send(&header(Version::V2, real()));
    net.client.send(b"hello");
    let want = b"PROXY TCP4 192.0.2.7 10.0.0.1 5555 80\r\nhello";
    assert!(net.run_until(STEPS, |n| n
        .servers
        .first()
        .is_some_and(|s| s.rx.len() >= want.len())));
    assert_eq!(net.servers[0].rx, want);
}

#[test]
fn v2_goes_upstream_as_binary() {
    let mut net = Net::new(Mode::Tcp, 2048);
    net.session
        .set_proxying(SocketAddrV4::new(HERE, 80).into(), None);
    net.session.send_proxy_header(Some(Version::V2));
    net.client.send(b"x");
    let mut want = header(Version::V2, "10.0.0.1:40000".parse().unwrap());
    want.push(b'x');
    assert!(net.run_until(STEPS, |n| n
        .servers
        .first()
        .is_some_and(|s| s.rx.len() >= want.len())));
    assert_eq!(net.servers[0].rx, want);
}

#[test]
fn the_allow_list_is_checked_on_the_real_client() {
    let mut net = behind_proxy(Mode::Http, &[(Ipv4Addr::new(198, 51, 100, 0), 24)]);
    net.client.send(&header(Version::V2, real()));
    net.client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(reset(&mut net), "a refused client is reset");
    assert!(net.servers.is_empty(), "nothing went upstream");
    assert_eq!(net.session.take_refusal(), Some(Refused::Acl));
    // A LOCAL header (the balancer's health check) has no client to admit.
    let mut net = behind_proxy(Mode::Tcp, &[(Ipv4Addr::new(198, 51, 100, 0), 24)]);
    net.client.send(b"PROXY UNKNOWN\r\n");
    assert!(reset(&mut net));
    assert!(net.servers.is_empty());
}

#[test]
fn per_source_limits_count_the_real_client_not_the_balancer() {
    // The real client already holds its one connection (on another flow).
    let mut net = behind_limited_proxy(Mode::Tcp, &[], 1);
    let held = std::net::IpAddr::from(*real().ip());
    let policy = policy(&[], 1);
    assert_eq!(net.open.admit(&policy, held, &mut net.limiter, 0), Ok(held));
    net.client.send(&header(Version::V2, real()));
    assert!(reset(&mut net), "its second connection is reset");
    assert!(net.servers.is_empty(), "nothing went upstream");
    assert_eq!(net.session.take_refusal(), Some(Refused::PerSource));
    assert_eq!(
        net.session.take_counted(),
        None,
        "a refused one is not counted"
    );

    // Another client behind the same balancer still gets in, and is counted.
    let mut net = behind_limited_proxy(Mode::Tcp, &[], 1);
    let other = std::net::IpAddr::from(Ipv4Addr::new(192, 0, 2, 99));
    assert_eq!(
        net.open.admit(&policy, other, &mut net.limiter, 0),
        Ok(other)
    );
    net.client.send(&header(Version::V2, real()));
    net.client.send(b"hello");
    assert!(net.run_until(STEPS, |n| n
        .servers
        .last()
        .is_some_and(|s| s.rx == b"hello")));
    assert_eq!(net.session.take_counted(), Some(held));
}

#[test]
fn a_trusted_peer_without_a_header_is_cut() {
    let mut net = behind_proxy(Mode::Tcp, &[]);
    net.client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(reset(&mut net));
    assert!(net.servers.is_empty(), "no byte of it was relayed");
    assert_eq!(net.session.take_refusal(), None);
}

#[test]
fn a_header_that_never_ends_times_out() {
    let mut net = behind_proxy(Mode::Http, &[]);
    net.client.send(b"PROXY TCP4 192.0.2.7 ");
    net.run(50);
    assert_eq!(
        net.client_sock().state(),
        TcpState::Established,
        "waits for the rest"
    );
    net.now_us += HEADER_TIMEOUT_US;
    assert!(reset(&mut net));
    assert!(net.servers.is_empty());
    assert!(
        net.client.rx.is_empty(),
        "cut, not answered as an HTTP request"
    );
}
