//! The `Outcome` a session hands over for each exchange (see `testnet`):
//! every field, for a proxied request, a pooled one, errors we answer, a
//! client abort and a `tcp` connection.

use std::net::Ipv4Addr;

use smoltcp::socket::tcp::State as TcpState;

use super::session::{Cause, Mode};
use super::testnet::{head_len, pattern, Net, READ_TIMEOUT_US};
use crate::app::outcome::{Kind, Outcome};

const STEPS: usize = 20_000;

fn client_closed(net: &mut Net) -> bool {
    !matches!(
        net.client_sock().state(),
        TcpState::Established | TcpState::SynSent | TcpState::FinWait1 | TcpState::FinWait2
    )
}

fn server_got_head(net: &mut Net, from: usize) {
    assert!(net
        .run_until(STEPS, |n| n.servers.last().is_some_and(|s| s.rx.len()
            > from
            && head_len(&s.rx[from..]).is_some())));
}

fn only(net: &Net) -> Outcome {
    assert_eq!(net.outcomes.len(), 1, "{:?}", net.outcomes);
    net.outcomes[0]
}

fn text<const N: usize>(t: &crate::app::outcome::Text<N>) -> &str {
    std::str::from_utf8(t.as_bytes()).unwrap()
}

#[test]
fn proxied_request_fills_every_field_and_a_pooled_one_connects_in_0() {
    let mut net = Net::http(2048);
    net.run(3);
    let req = b"GET /x?y HTTP/1.1\r\nHost: a.example\r\n\r\n";
    net.client.send(req);
    server_got_head(&mut net, 0);
    net.run(5); // the upstream takes its time
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    net.server().send(resp);
    assert!(net.run_until(STEPS, |n| !n.outcomes.is_empty()));
    net.run(20);
    let o = only(&net);
    assert_eq!(o.kind, Kind::Http);
    assert_eq!(o.listener, 0);
    assert_eq!(o.client, Some((Ipv4Addr::new(10, 0, 0, 1).into(), 40000)));
    assert_eq!(
        (text(&o.method), text(&o.host), text(&o.path)),
        ("GET", "a.example", "/x?y")
    );
    assert_eq!(o.status, 200);
    assert_eq!(o.bytes_in, req.len() as u64);
    assert_eq!(o.bytes_out, net.client.rx.len() as u64);
    assert_eq!(o.upstream, Some((0, 0)));
    let connect = o.connect_us.expect("connect time");
    let response = o.response_us.expect("response time");
    assert!(connect > 0 && response >= connect + 5_000, "{o:?}");
    assert!(o.total_us >= response && o.start_us > 0, "{o:?}");
    assert_eq!(o.cause, None);

    let from = net.servers[0].rx.len();
    let got = net.client.rx.len();
    net.client
        .send(b"GET /b HTTP/1.1\r\nHost: a.example\r\n\r\n");
    server_got_head(&mut net, from);
    net.server().send(resp);
    assert!(net.run_until(STEPS, |n| n.outcomes.len() == 2));
    net.run(20);
    let o = net.outcomes[1];
    assert_eq!(text(&o.path), "/b");
    assert_eq!(o.connect_us, Some(0), "pooled");
    assert_eq!(o.bytes_out, (net.client.rx.len() - got) as u64);
}

#[test]
fn refused_upstream_is_a_502_with_its_cause() {
    let mut net = Net::http(2048);
    net.back_port = 9999; // nothing listens
    net.max_connects = 1;
    net.client.send(b"GET /r HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(net.run_until(STEPS, client_closed));
    let o = only(&net);
    assert_eq!((o.status, o.cause), (502, Some(Cause::Refused)));
    assert_eq!(o.upstream, Some((0, 0)));
    assert_eq!((o.connect_us, o.response_us), (None, None));
    assert_eq!(o.bytes_out, net.client.rx.len() as u64);
    assert_eq!(text(&o.path), "/r");
}

#[test]
fn silent_upstream_is_a_504_after_the_read_timeout() {
    let mut net = Net::http(2048);
    net.client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    server_got_head(&mut net, 0);
    assert!(net.run_until(STEPS, client_closed));
    let o = only(&net);
    assert_eq!((o.status, o.cause), (504, Some(Cause::Timeout)));
    assert!(o.connect_us.is_some() && o.response_us.is_none());
    assert!(o.total_us >= READ_TIMEOUT_US, "{o:?}");
}

#[test]
fn no_route_is_a_404_without_upstream() {
    let mut net = Net::http(2048);
    net.routes.default = None;
    net.client
        .send(b"DELETE /nowhere HTTP/1.1\r\nHost: b\r\n\r\n");
    assert!(net.run_until(STEPS, client_closed));
    let o = only(&net);
    assert_eq!((o.status, o.cause), (404, Some(Cause::BadRequest)));
    assert_eq!((text(&o.method), text(&o.path)), ("DELETE", "/nowhere"));
    assert_eq!((o.upstream, o.connect_us), (None, None));
}

#[test]
fn a_client_over_its_rate_gets_429_with_retry_after_and_no_upstream() {
    use super::ratelimit::RouteLimit;
    let mut net = Net::http(2048);
    // The default route's limit: one request per 4 s; the client spent it.
    let limit = RouteLimit::new(0, None, 0.25, 1);
    net.routes.limits = vec![Some(limit)];
    let client = Ipv4Addr::new(10, 0, 0, 1);
    assert_eq!(
        net.limiter.check(Some(limit), client.into(), net.now_us),
        None
    );
    net.client.send(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(net.run_until(STEPS, client_closed));
    let o = only(&net);
    assert_eq!((o.status, o.cause), (429, Some(Cause::RateLimited)));
    assert_eq!((o.upstream, o.connect_us), (None, None));
    let rx = String::from_utf8_lossy(&net.client.rx).into_owned();
    assert!(rx.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{rx}");
    assert!(rx.contains("\r\nRetry-After: 4\r\n"), "{rx}");
    assert_eq!(net.connects, 0);
}

#[test]
fn client_gone_mid_request_is_a_client_abort() {
    let mut net = Net::http(2048);
    net.client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    server_got_head(&mut net, 0);
    assert!(net.outcomes.is_empty());
    // The engine calls this on the client flow's `Closed`.
    net.session.client_gone(net.now_us + 7);
    net.step();
    let o = only(&net);
    assert_eq!((o.status, o.cause), (0, Some(Cause::ClientAbort)));
}

#[test]
fn a_tcp_connection_is_one_outcome_with_its_bytes() {
    let mut net = Net::new(Mode::Tcp, 1024);
    let up = pattern(5000, 1);
    net.client.send(&up);
    net.client.fin = true;
    assert!(net.run_until(STEPS, |n| n
        .servers
        .first()
        .is_some_and(|s| s.rx.len() >= up.len())));
    let down = pattern(7000, 2);
    net.server().send(&down);
    net.server().fin = true;
    assert!(net.run_until(STEPS, |n| n.client.rx.len() >= down.len()
        && client_closed(n)));
    assert!(net.outcomes.is_empty(), "ends with the client connection");
    net.session.client_gone(net.now_us);
    net.step();
    let o = only(&net);
    assert_eq!(o.kind, Kind::Tcp);
    assert_eq!((o.bytes_in, o.bytes_out), (5000, 7000));
    assert_eq!((o.status, o.cause, o.upstream), (0, None, Some((0, 0))));
    assert!(o.connect_us.is_some() && o.total_us >= o.connect_us.unwrap());
}
