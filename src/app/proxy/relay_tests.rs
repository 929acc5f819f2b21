//! Session over real smoltcp TCP (see `testnet`): client <-> Session <->
//! upstream server, byte for byte.

use smoltcp::socket::tcp::State as TcpState;

use super::session::{Cause, Failure, Step};
use super::testnet::{chunked, pattern, Net, READ_TIMEOUT_US};

const STEPS: usize = 20_000;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn client_has(net: &mut Net, n: usize) {
    assert!(
        net.run_until(STEPS * 10, |net| net.client.rx.len() >= n),
        "client got {} of {n} bytes: {:?}",
        net.client.rx.len(),
        text(&net.client.rx[..net.client.rx.len().min(300)])
    );
}

/// The client saw the proxy's FIN (or a reset).
fn client_closed(net: &mut Net) -> bool {
    !matches!(
        net.client_sock().state(),
        TcpState::Established | TcpState::SynSent | TcpState::FinWait1 | TcpState::FinWait2
    )
}

#[test]
fn partial_heads_in_one_byte_segments() {
    let mut net = Net::http(2048);
    net.client.chunk = 1;
    net.server_chunk = 1;
    net.client
        .send(b"GET /x?y HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nConnection: keep-alive\r\n\r\n");
    let head = net.server_head(0, STEPS);
    assert_eq!(
        head,
        "GET /x?y HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Request-Id: 0000000000000001\r\n\r\n"
    );
    let resp = b"HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 2\r\n\r\nok";
    net.server().send(resp);
    client_has(&mut net, resp.len());
    assert_eq!(text(&net.client.rx), text(resp));
    net.run(20);
    assert!(net.failures.is_empty(), "{:?}", net.failures);
    assert_eq!(
        net.steps.last(),
        Some(&Step::ReleaseUpstream { reusable: true })
    );
}

#[test]
fn large_bodies_are_relayed_byte_for_byte() {
    let mut net = Net::http(2048);
    let up = pattern(1 << 20, 7);
    net.client.send(
        format!(
            "PUT /big HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n",
            up.len()
        )
        .as_bytes(),
    );
    net.client.send(&up);
    let head = net.server_head(0, STEPS);
    assert!(head.contains("Content-Length: 1048576\r\n"), "{head}");
    let at = head.len();
    assert!(net.run_until(STEPS * 50, |n| n.servers[0].rx.len() >= at + up.len()));
    assert!(net.servers[0].rx[at..] == up[..], "request body differs");
    let down = pattern(1 << 20, 11);
    let body = chunked(&down, 3);
    let resp_head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
    net.server().send(resp_head);
    net.server().send(&body);
    client_has(&mut net, resp_head.len() + body.len());
    assert_eq!(text(&net.client.rx[..resp_head.len()]), text(resp_head));
    assert!(
        net.client.rx[resp_head.len()..] == body[..],
        "response body differs"
    );
    net.run(20);
    assert!(net.failures.is_empty(), "{:?}", net.failures);
    assert_eq!(net.session.requests, 1);
}

#[test]
fn chunked_request_and_length_response() {
    let mut net = Net::http(1024);
    let up = chunked(&pattern(100_000, 5), 9);
    net.client
        .send(b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    net.client.send(&up);
    let head = net.server_head(0, STEPS);
    let at = head.len();
    assert!(net.run_until(STEPS * 10, |n| n.servers[0].rx.len() >= at + up.len()));
    assert!(net.servers[0].rx[at..] == up[..]);
    let down = pattern(300_000, 13);
    let resp_head = format!(
        "HTTP/1.1 201 Created\r\nContent-Length: {}\r\n\r\n",
        down.len()
    );
    net.server().send(resp_head.as_bytes());
    net.server().send(&down);
    client_has(&mut net, resp_head.len() + down.len());
    assert_eq!(text(&net.client.rx[..resp_head.len()]), resp_head);
    assert!(net.client.rx[resp_head.len()..] == down[..]);
}

#[test]
fn pipelined_requests_keep_their_order_on_one_upstream() {
    let mut net = Net::http(2048);
    net.client.send(
        b"GET /1 HTTP/1.1\r\nHost: a\r\n\r\nPOST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /3 HTTP/1.1\r\nHost: a\r\n\r\n",
    );
    let mut want = Vec::new();
    let mut from = 0;
    for (i, body) in ["one", "two!", "three"].iter().enumerate() {
        let head = net.server_head(from, STEPS);
        assert!(head.contains(&format!("/{} HTTP/1.1", i + 1)), "{head}");
        from += head.len();
        if i == 1 {
            assert!(net.run_until(STEPS, |n| n.servers[0].rx.len() >= from + 5));
            assert_eq!(&net.servers[0].rx[from..from + 5], b"hello");
            from += 5;
        }
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        net.server().send(resp.as_bytes());
        want.extend_from_slice(resp.as_bytes());
        client_has(&mut net, want.len());
    }
    assert_eq!(text(&net.client.rx), text(&want));
    assert_eq!(net.connects, 1, "the upstream is reused");
    assert_eq!(net.session.requests, 3);
}

#[test]
fn keep_alive_reuses_the_upstream() {
    let mut net = Net::http(2048);
    net.client.send(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n");
    net.server_head(0, STEPS);
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA";
    net.server().send(resp);
    client_has(&mut net, resp.len());
    net.run(10);
    assert_eq!(
        net.steps.last(),
        Some(&Step::ReleaseUpstream { reusable: true })
    );
    assert_eq!(net.pooled(), 1);
    let from = net.servers[0].rx.len();
    net.client.send(b"GET /b HTTP/1.1\r\nHost: a\r\n\r\n");
    let head = net.server_head(from, STEPS);
    assert!(head.starts_with("GET /b "));
    net.server().send(resp);
    client_has(&mut net, 2 * resp.len());
    assert_eq!((net.connects, net.servers.len()), (1, 1));
}

#[test]
fn upstream_close_mid_body_cuts_the_client() {
    let mut net = Net::http(2048);
    net.client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    net.server_head(0, STEPS);
    net.server()
        .send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
    net.server().fin = true;
    assert!(net.run_until(STEPS, client_closed));
    assert_eq!(
        net.client_sock().state(),
        TcpState::Closed,
        "reset, not a clean end"
    );
    assert_eq!(
        net.failures,
        [Failure {
            status: None,
            cause: Cause::BadResponse
        }]
    );
}

#[test]
fn interim_responses_go_to_http11_clients() {
    let mut net = Net::http(2048);
    net.client
        .send(b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    net.server_head(0, STEPS);
    net.server().send(b"HTTP/1.1 100 Continue\r\n\r\n");
    client_has(&mut net, 25);
    assert_eq!(text(&net.client.rx), "HTTP/1.1 100 Continue\r\n\r\n");
    net.client.send(b"abc");
    assert!(net.run_until(STEPS, |n| n.servers[0].rx.ends_with(b"abc")));
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    net.server().send(resp);
    client_has(&mut net, 25 + resp.len());
    assert!(net.failures.is_empty());
}

#[test]
fn head_response_has_no_body() {
    let mut net = Net::http(2048);
    net.client.send(b"HEAD /h HTTP/1.1\r\nHost: a\r\n\r\n");
    net.server_head(0, STEPS);
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
    net.server().send(resp);
    client_has(&mut net, resp.len());
    net.run(10);
    assert_eq!(
        net.steps.last(),
        Some(&Step::ReleaseUpstream { reusable: true })
    );
    // The next request on the same connection is served.
    let from = net.servers[0].rx.len();
    net.client.send(b"GET /n HTTP/1.1\r\nHost: a\r\n\r\n");
    net.server_head(from, STEPS);
    net.server()
        .send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi");
    client_has(&mut net, resp.len() + 40);
    assert!(text(&net.client.rx).ends_with("\r\n\r\nhi"));
}

#[test]
fn client_abort_mid_upload() {
    let mut net = Net::http(2048);
    net.client
        .send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n");
    net.client.send(&pattern(1000, 1));
    net.server_head(0, STEPS);
    net.client.fin = true;
    assert!(net.run_until(STEPS, |n| n.session.is_done()));
    assert_eq!(
        net.failures,
        [Failure {
            status: None,
            cause: Cause::ClientAbort
        }]
    );
    assert!(net.run_until(STEPS, |n| {
        let h = n.servers[0].h;
        n.sock(h).state() == TcpState::Closed
    }));
}

// --- attack findings ---

/// (a) Content-Length with Transfer-Encoding: the length is not forwarded
/// and the upstream connection is not pooled.
#[test]
fn response_with_length_and_chunked_goes_on_without_length() {
    let mut net = Net::http(2048);
    net.client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    net.server_head(0, STEPS);
    net.server().send(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    let want = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
    client_has(&mut net, want.len());
    net.run(10);
    assert_eq!(text(&net.client.rx), want);
    assert_eq!(
        net.steps.last(),
        Some(&Step::ReleaseUpstream { reusable: false })
    );
}

/// (a) A coding other than chunked with a Content-Length: read to close,
/// without the length.
#[test]
fn response_with_length_and_other_coding_is_read_to_close() {
    let mut net = Net::http(2048);
    net.client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    net.server_head(0, STEPS);
    net.server()
        .send(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: gzip\r\n\r\nabcdefgh");
    net.server().fin = true;
    assert!(net.run_until(STEPS, client_closed));
    assert_eq!(
        text(&net.client.rx),
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\nabcdefgh"
    );
}

/// (b) An overflowing chunk size: 400 before the chunk goes upstream.
#[test]
fn overflowing_chunk_size_is_refused_before_forwarding() {
    let mut net = Net::http(2048);
    net.client
        .send(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    let head = net.server_head(0, STEPS);
    net.client.send(b"ffffffffffffffff\r\nxyz");
    assert!(net.run_until(STEPS, |n| n.client.rx.starts_with(b"HTTP/1.1 400 ")));
    net.run(20);
    assert_eq!(
        net.servers[0].rx.len(),
        head.len(),
        "nothing of the body went on"
    );
    assert_eq!(
        net.failures,
        [Failure {
            status: Some(400),
            cause: Cause::BadRequest
        }]
    );
}

/// (c) An early final response: relayed, then both connections close
/// without waiting for the rest of the request body.
#[test]
fn early_final_response_closes_both() {
    let mut net = Net::http(2048);
    net.client
        .send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1000000\r\n\r\n");
    net.client.send(&pattern(3000, 2));
    net.server_head(0, STEPS);
    let resp = b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nbig!";
    net.server().send(resp);
    assert!(
        net.run_until(STEPS, client_closed),
        "client got {:?}",
        text(&net.client.rx)
    );
    assert_eq!(
        text(&net.client.rx),
        "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbig!"
    );
    assert!(net
        .steps
        .contains(&Step::ReleaseUpstream { reusable: false }));
}

/// (d) At most 8 interim responses per request.
#[test]
fn interim_responses_are_bounded() {
    let mut net = Net::http(2048);
    net.client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    net.server_head(0, STEPS);
    for _ in 0..9 {
        net.server().send(b"HTTP/1.1 102 Processing\r\n\r\n");
    }
    net.server()
        .send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    assert!(net.run_until(STEPS, client_closed));
    assert!(
        text(&net.client.rx).contains("HTTP/1.1 502 "),
        "{}",
        text(&net.client.rx)
    );
    assert_eq!(
        net.failures,
        [Failure {
            status: Some(502),
            cause: Cause::BadResponse
        }]
    );
}

/// (d) Interim responses do not restart the read timeout.
#[test]
fn interim_responses_do_not_extend_the_read_timeout() {
    let mut net = Net::http(2048);
    net.client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    net.server_head(0, STEPS);
    let sent = net.now_us;
    // One interim response every 2 s: 8 of them would take 16 s.
    for _ in 0..8 {
        net.server().send(b"HTTP/1.1 102 Processing\r\n\r\n");
        net.run(2000);
        if client_closed(&mut net) {
            break;
        }
    }
    assert!(client_closed(&mut net));
    assert!(net.now_us - sent <= READ_TIMEOUT_US + 2_100_000);
    assert_eq!(
        net.failures,
        [Failure {
            status: None,
            cause: Cause::Timeout
        }]
    );
}

/// (d) An HTTP/1.0 client never sees interim responses.
#[test]
fn interim_responses_are_not_sent_to_http10_clients() {
    let mut net = Net::http(2048);
    net.client.send(b"GET / HTTP/1.0\r\n\r\n");
    net.server_head(0, STEPS);
    net.server().send(b"HTTP/1.1 100 Continue\r\n\r\n");
    net.server()
        .send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    assert!(net.run_until(STEPS, client_closed));
    assert_eq!(
        text(&net.client.rx),
        "HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    );
}

/// (d) A 101 that no forwarded Upgrade asked for is a bad response (see upgrade_tests).
#[test]
fn switching_protocols_is_a_bad_response() {
    let mut net = Net::http(2048);
    net.client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    net.server_head(0, STEPS);
    net.server()
        .send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\nraw bytes");
    assert!(net.run_until(STEPS, client_closed));
    assert!(text(&net.client.rx).starts_with("HTTP/1.1 502 "));
}

/// (e) Equal repeated Content-Length headers go upstream as one.
#[test]
fn equal_content_lengths_go_upstream_once() {
    let mut net = Net::http(2048);
    net.client
        .send(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi");
    let head = net.server_head(0, STEPS);
    assert_eq!(head.matches("Content-Length").count(), 1, "{head}");
}

/// (e) Trailer lines without a colon: 400.
#[test]
fn trailer_without_colon_is_refused() {
    let mut net = Net::http(2048);
    net.client.send(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nGET /smuggled HTTP/1.1\r\n\r\n",
    );
    assert!(net.run_until(STEPS, |n| n.client.rx.starts_with(b"HTTP/1.1 400 ")));
}

/// (f) After an error response, a client still sending gets its input read
/// and dropped (lingering close): it can finish sending and sees our FIN.
#[test]
fn lingering_close_after_431_lets_the_client_finish() {
    let mut net = Net::http(2048);
    let mut head = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
    head.extend(std::iter::repeat_n(b'x', 6000));
    net.client.send(&head);
    assert!(net.run_until(STEPS, |n| n.client.rx.starts_with(b"HTTP/1.1 431 ")));
    assert!(
        net.run_until(2000, |n| n.client.flushed()
            && n.client_sock().send_queue() == 0),
        "the client's input is not read: it is stuck behind a zero window"
    );
    net.client.fin = true;
    assert!(net.run_until(STEPS, |n| n.session.is_done()));
    assert_eq!(net.session.deadline_us(), None);
}

/// (f) The lingering close is bounded: input that keeps coming is cut.
#[test]
fn lingering_close_is_bounded() {
    let mut net = Net::http(2048);
    // No Host: 400; then the client keeps sending.
    net.client.send(b"GET / HTTP/1.1\r\n\r\n");
    net.client.send(&pattern(200_000, 4));
    assert!(net.run_until(STEPS * 5, |n| n.session.is_done()));
    assert!(net.client.rx.starts_with(b"HTTP/1.1 400 "));
    net.run(20);
    assert_eq!(
        net.client_sock().state(),
        TcpState::Closed,
        "cut with a reset"
    );
}

/// (g) A partial head and the client's FIN: closed at once, not at the
/// header timeout.
#[test]
fn partial_head_then_fin_closes_now() {
    let mut net = Net::http(2048);
    net.client.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Par");
    net.client.fin = true;
    assert!(net.run_until(200, |n| n.session.is_done()));
    assert!(net.run_until(200, client_closed));
    assert!(net.failures.is_empty());
}

/// Heads that wrap the receive ring's end (pipelined behind others, in a
/// small buffer) are found and forwarded intact.
#[test]
fn pipelined_heads_across_the_ring_end() {
    let mut net = Net::http(512);
    let mut all = Vec::new();
    for i in 0..40 {
        let pad = "p".repeat(i * 7 % 90);
        all.extend_from_slice(
            format!("GET /{i} HTTP/1.1\r\nHost: a\r\nX-Pad: {pad}\r\n\r\n").as_bytes(),
        );
    }
    net.client.send(&all);
    let mut from = 0;
    for i in 0..40 {
        let head = net.server_head(from, STEPS);
        let pad = "p".repeat(i * 7 % 90);
        assert_eq!(
            head,
            format!("GET /{i} HTTP/1.1\r\nHost: a\r\nX-Pad: {pad}\r\nX-Forwarded-For: 10.0.0.1\r\nX-Forwarded-Proto: http\r\nX-Request-Id: {:016x}\r\n\r\n", i + 1)
        );
        from += head.len();
        net.server().send(b"HTTP/1.1 204 No Content\r\n\r\n");
    }
    client_has(&mut net, 40 * 27);
    assert_eq!(net.session.requests, 40);
    assert!(net.failures.is_empty(), "{:?}", net.failures);
}

/// Refused connects are retried; when no server is left the 502 names the
/// last upstream failure.
#[test]
fn refused_upstreams_answer_502_refused() {
    let mut net = Net::http(2048);
    net.back_port = 9999; // nothing listens
    net.max_connects = 2;
    net.client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(net.run_until(STEPS, client_closed));
    assert!(net.client.rx.starts_with(b"HTTP/1.1 502 "));
    assert_eq!(net.connects, 2);
    assert_eq!(
        net.failures,
        [Failure {
            status: Some(502),
            cause: Cause::Refused
        }]
    );
}

/// No server at all: 503 with the caller's cause.
#[test]
fn no_server_answers_503() {
    let mut net = Net::http(2048);
    net.max_connects = 0;
    net.client.send(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    assert!(net.run_until(STEPS, client_closed));
    assert!(net.client.rx.starts_with(b"HTTP/1.1 503 "));
    assert_eq!(
        net.failures,
        [Failure {
            status: Some(503),
            cause: Cause::NoServer
        }]
    );
}

#[test]
fn causes_have_labels() {
    let labels: Vec<_> = Cause::ALL.iter().map(|c| c.label()).collect();
    assert_eq!(
        labels,
        [
            "refused",
            "reset",
            "timeout",
            "no_server",
            "no_slot",
            "bad_response",
            "bad_request",
            "client_abort",
            "rate_limited",
            "tls"
        ]
    );
}

/// TCP mode: bytes both ways, half-close travels.
#[test]
fn tcp_mode_relays_both_ways() {
    let mut net = Net::new(super::session::Mode::Tcp, 1024);
    let up = pattern(200_000, 21);
    net.client.send(&up);
    net.client.fin = true;
    assert!(net.run_until(STEPS * 10, |n| n
        .servers
        .first()
        .is_some_and(|s| s.rx.len() >= up.len())));
    assert!(net.servers[0].rx == up);
    let down = pattern(150_000, 22);
    net.server().send(&down);
    net.server().fin = true;
    assert!(
        net.run_until(STEPS * 10, |n| n.client.rx.len() >= down.len()
            && client_closed(n))
    );
    assert!(net.client.rx == down);
    assert!(net.failures.is_empty(), "{:?}", net.failures);
}
