//! Upgrade tunnels and interim responses over real smoltcp TCP (see `testnet`).

use smoltcp::socket::tcp::State as TcpState;

use super::session::Step;
use super::testnet::{pattern, Net};
use super::upgrade::Policy;

const STEPS: usize = 200_000;

const WS_REQUEST: &[u8] = b"GET /chat HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
const SWITCH: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn closed(s: TcpState) -> bool {
    matches!(s, TcpState::Closed | TcpState::TimeWait)
}

#[test]
fn websocket_upgrade_becomes_a_tunnel_with_half_close() {
    let mut net = Net::http(4096);
    net.routes.upgrade = Policy::new(None, Vec::new(), 123_000_000);
    net.client.send(WS_REQUEST);
    let head = net.server_head(0, STEPS);
    assert!(head.contains("\r\nUpgrade: websocket\r\n"), "{head}");
    assert!(head.contains("\r\nConnection: upgrade\r\n"), "{head}");
    assert!(head.contains("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
    let first = b"\x81\x05hello"; // bytes right behind the 101, in the same segment
    let mut down = SWITCH.to_vec();
    down.extend_from_slice(first);
    net.server().send(&down);
    assert!(net.run_until(STEPS, |n| n.client.rx.len() >= down.len()));
    let got = text(&net.client.rx);
    assert!(
        got.starts_with("HTTP/1.1 101 Switching Protocols\r\n"),
        "{got}"
    );
    assert!(got.contains("\r\nUpgrade: websocket\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nConnection: upgrade\r\n\r\n"), "{got}");
    assert!(net.client.rx.ends_with(first));
    assert!(net.steps.contains(&Step::Tunnel {
        idle_us: 123_000_000
    }));
    let head_out = net.client.rx.len() - first.len();
    // Bytes both ways, larger than any buffer, byte for byte.
    let from = net.servers[0].rx.len();
    let up = pattern(300_000, 31);
    net.client.send(&up);
    net.client.fin = true; // then the client half-closes
    assert!(net.run_until(STEPS, |n| n.servers[0].rx.len() >= from + up.len()));
    assert!(net.servers[0].rx[from..] == up[..]);
    assert!(
        net.run_until(STEPS, |n| {
            let h = n.servers[0].h;
            !n.sock(h).may_recv()
        }),
        "the client's FIN did not reach the server"
    );
    // Half-closed: the server still sends, and the client still gets it.
    let down2 = pattern(200_000, 32);
    net.server().send(&down2);
    net.server().fin = true;
    let want = net.client.rx.len() + down2.len();
    assert!(net.run_until(STEPS, |n| n.client.rx.len() >= want
        && closed(n.client_sock().state())));
    assert!(net.client.rx.ends_with(&down2));
    net.run(50);
    assert!(net.failures.is_empty(), "{:?}", net.failures);
    assert_eq!(net.pooled(), 0, "an upgraded upstream is never pooled");
    assert_eq!(net.outcomes.len(), 1, "{:?}", net.outcomes);
    let o = &net.outcomes[0];
    assert_eq!(o.status, 101);
    assert_eq!(o.cause, None);
    assert_eq!(o.bytes_in, (WS_REQUEST.len() + up.len()) as u64);
    assert_eq!(o.bytes_out, (head_out + first.len() + down2.len()) as u64);
}

#[test]
fn a_close_from_the_upstream_closes_the_client() {
    let mut net = Net::http(4096);
    net.client.send(WS_REQUEST);
    net.server_head(0, STEPS);
    net.server().send(SWITCH);
    net.server().send(b"bye");
    net.server().fin = true;
    assert!(net.run_until(STEPS, |n| n.client.rx.ends_with(b"bye")
        && !n.client_sock().may_recv()));
    net.client.fin = true;
    assert!(net.run_until(STEPS, |n| closed(n.client_sock().state())));
    net.run(50);
    assert!(net.failures.is_empty(), "{:?}", net.failures);
    assert_eq!(net.outcomes.len(), 1);
    assert_eq!(net.outcomes[0].status, 101);
}

#[test]
fn upgrade_refused_by_the_upstream_keeps_http() {
    let mut net = Net::http(2048);
    net.client.send(WS_REQUEST);
    net.server_head(0, STEPS);
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno";
    net.server().send(resp);
    assert!(net.run_until(STEPS, |n| n.client.rx.ends_with(b"no")));
    net.run(10);
    assert_eq!(
        net.steps.last(),
        Some(&Step::ReleaseUpstream { reusable: true })
    );
    assert!(!net.steps.iter().any(|s| matches!(s, Step::Tunnel { .. })));
    assert_eq!(net.outcomes[0].status, 200);
}

#[test]
fn not_allowed_and_h2c_upgrades_are_not_forwarded() {
    for (offer, allowed) in [("h2c", vec!["h2c".to_string()]), ("foo", vec![])] {
        let mut net = Net::http(2048);
        net.routes.upgrade = Policy::new(Some(&allowed), Vec::new(), 1);
        net.client.send(
            format!("GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: {offer}\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n")
                .as_bytes(),
        );
        let head = net.server_head(0, STEPS);
        assert!(!head.to_ascii_lowercase().contains("upgrade"), "{head}");
        // A 101 nobody asked for is a bad response.
        net.server()
            .send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n");
        assert!(net.run_until(STEPS, |n| !n.client.rx.is_empty()));
        assert!(text(&net.client.rx).starts_with("HTTP/1.1 502 "), "{offer}");
    }
}

/// `Expect: 100-continue` from a client that does not wait for the 100:
/// the body and the interim response cross, the final response follows.
#[test]
fn continue_crosses_a_body_sent_without_waiting() {
    let mut net = Net::http(2048);
    let body = pattern(100_000, 33);
    net.client.send(
        format!(
            "PUT /up HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    net.client.send(&body);
    let head = net.server_head(0, STEPS);
    assert!(head.contains("\r\nExpect: 100-continue\r\n"), "{head}");
    let hl = head.len();
    net.server().send(b"HTTP/1.1 100 Continue\r\n\r\n");
    assert!(net.run_until(STEPS, |n| n.servers[0].rx.len() >= hl + body.len()));
    assert!(net.servers[0].rx[hl..] == body[..]);
    net.server()
        .send(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone");
    assert!(net.run_until(STEPS, |n| n.client.rx.ends_with(b"done")));
    let got = text(&net.client.rx);
    assert!(
        got.starts_with("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"),
        "{got}"
    );
    assert!(net.failures.is_empty(), "{:?}", net.failures);
    assert_eq!(net.outcomes[0].status, 200);
}
