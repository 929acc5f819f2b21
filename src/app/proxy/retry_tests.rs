//! A request lost on a reused upstream connection (see `session/retry`):
//! the server drops its idle keep-alive connection just as the request
//! arrives on it. Over real smoltcp TCP (`testnet`).

use smoltcp::socket::tcp::State as TcpState;

use super::session::{Cause, Failure};
use super::testnet::Net;

const STEPS: usize = 20_000;
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// One exchange that leaves the upstream connection in the pool.
fn pooled_net() -> Net {
    let mut net = Net::http(2048);
    net.client.send(b"GET /first HTTP/1.1\r\nHost: a\r\n\r\n");
    net.server_head(0, STEPS);
    net.server().send(OK);
    assert!(net.run_until(STEPS, |n| n.client.rx.len() >= OK.len() && n.pooled() == 1));
    net.client.rx.clear();
    net
}

/// Sends `request` (it goes on the pooled connection) and waits until the
/// first server connection holds it whole.
fn send_on_pooled(net: &mut Net, request: &[u8]) {
    let from = net.servers[0].rx.len();
    net.client.send(request);
    let head = net.server_head(from, STEPS);
    assert_eq!(net.pooled(), 0, "the request went on the pooled connection");
    assert_eq!(net.servers.len(), 1);
    let want = request.len();
    assert!(net.run_until(STEPS, |n| n.servers[0].rx.len() >= from + want));
    assert!(head.starts_with(&text(&request[..10])), "{head}");
}

fn client_done(net: &mut Net) -> bool {
    !matches!(
        net.client_sock().state(),
        TcpState::Established | TcpState::SynSent
    )
}

/// The request went out again, on a second (fresh) server connection.
fn assert_sent_again(net: &mut Net, start: &str) {
    assert!(
        net.run_until(STEPS, |n| n.servers.len() == 2),
        "no fresh connection: {}",
        text(&net.client.rx)
    );
    let head = net.server_head(0, STEPS);
    assert!(head.starts_with(start), "{head}");
}

/// The pooled server resets as the GET arrives: the client still gets the
/// 200, from a second (fresh) connection, and one retry is counted.
#[test]
fn get_lost_on_a_reset_pooled_connection_is_retried() {
    let mut net = pooled_net();
    send_on_pooled(&mut net, b"GET /again HTTP/1.1\r\nHost: a\r\n\r\n");
    let h = net.servers[0].h;
    net.sock(h).abort();
    assert_sent_again(&mut net, "GET /again ");
    net.server().send(OK);
    assert!(net.run_until(STEPS, |n| n.client.rx.len() >= OK.len()));
    assert_eq!(text(&net.client.rx), text(OK));
    assert_eq!((net.retries, net.connects), (1, 2));
    assert!(net.failures.is_empty(), "{:?}", net.failures);
    let last = net.outcomes.last().expect("the exchange was recorded");
    assert_eq!(last.status, 200);
    assert!(
        last.connect_us.is_some(),
        "the fresh connection's connect time"
    );
}

/// The same with a FIN (an empty response): retried too.
#[test]
fn get_lost_on_a_closed_pooled_connection_is_retried() {
    let mut net = pooled_net();
    send_on_pooled(&mut net, b"HEAD /again HTTP/1.1\r\nHost: a\r\n\r\n");
    let h = net.servers[0].h;
    net.sock(h).close();
    assert_sent_again(&mut net, "HEAD /again ");
    net.server()
        .send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");
    assert!(net.run_until(STEPS, |n| n.client.rx.starts_with(b"HTTP/1.1 200 ")));
    assert_eq!(net.retries, 1);
    assert!(net.failures.is_empty(), "{:?}", net.failures);
}

/// A POST is not idempotent: the same race answers 502, nothing is retried.
#[test]
fn post_lost_on_a_pooled_connection_is_not_retried() {
    let mut net = pooled_net();
    send_on_pooled(
        &mut net,
        b"POST /order HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    );
    let h = net.servers[0].h;
    net.sock(h).abort();
    assert!(net.run_until(STEPS, client_done));
    assert!(
        net.client.rx.starts_with(b"HTTP/1.1 502 "),
        "{}",
        text(&net.client.rx)
    );
    assert_eq!((net.retries, net.servers.len()), (0, 1));
    assert_eq!(
        net.failures,
        [Failure {
            status: Some(502),
            cause: Cause::Reset
        }]
    );
}

/// Response bytes arrived before the reset: the request may have been
/// acted on, so it is not retried.
#[test]
fn failure_after_response_bytes_is_not_retried() {
    let mut net = pooled_net();
    send_on_pooled(&mut net, b"GET /again HTTP/1.1\r\nHost: a\r\n\r\n");
    net.server().send(b"HTTP/1.1 200 OK\r\nConte");
    assert!(net.run_until(STEPS, |n| n.server().flushed()));
    net.run(20);
    let h = net.servers[0].h;
    net.sock(h).abort();
    assert!(net.run_until(STEPS, client_done));
    assert!(
        net.client.rx.starts_with(b"HTTP/1.1 502 "),
        "{}",
        text(&net.client.rx)
    );
    assert_eq!((net.retries, net.servers.len()), (0, 1));
}
