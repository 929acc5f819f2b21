//! Writes the seed corpus of the `worker_frames` target
//! (`corpus/worker_frames/`): exchanges as real clients, nginx upstreams and
//! hosts of the netns lab make them, in the input format of `src/ops.rs`.
//!
//! ```sh
//! cd fuzz && cargo run --example worker_seeds
//! ```
//!
//! After the harness's set-up the peers are: 0 a client on :80 (HTTP), 1 a
//! client on :81 (TCP proxy), 2 that connection's upstream (10.72.0.3:80),
//! 3 an off-link client on :8080 (static), 4 a client on :8081 (static,
//! allow-list); the next connection the worker makes upstream is 5.

use std::net::Ipv4Addr;

use zproxy_fuzz::harness::{CLIENT_SIDE, GATEWAY};
use zproxy_fuzz::ops::{self, Encoder, Op, ACK, FIN, PSH, RST, SYN};
use zproxy_fuzz::wire::{self, mac_of};

const HTTP: u8 = 0;
const TCP: u8 = 1;
const TCP_UP: u8 = 2;
const STATIC: u8 = 3;
const NEXT_UP: u8 = 5;
const PEER: u8 = ops::AUTO_ACCEPT_UPSTREAM | ops::AUTO_ACK;

const CURL_GET: &[u8] =
    b"GET / HTTP/1.1\r\nHost: 10.71.0.2\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n";
const NGINX_OK: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 28 Nov 2023 10:00:00 GMT\r\nContent-Type: text/html\r\nContent-Length: 13\r\nLast-Modified: Tue, 28 Nov 2023 09:00:00 GMT\r\nConnection: keep-alive\r\nETag: \"6565ad20-d\"\r\nAccept-Ranges: bytes\r\n\r\nhello, world\n";

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let mut add = |name, e: &mut Encoder| out.push((name, std::mem::take(&mut e.0)));

    // curl through the HTTP proxy; nginx answers; the client closes.
    let mut e = Encoder::new(PEER);
    e.send(HTTP, CURL_GET)
        .send(NEXT_UP, NGINX_OK)
        .flags(HTTP, FIN | ACK)
        .op(&Op::Wait { ms: 50 })
        .flags(NEXT_UP, FIN | ACK);
    add("http_get_nginx", &mut e);

    // Keep-alive: two requests on one client connection, the upstream
    // connection pooled in between; the second routed to the api group.
    let mut e = Encoder::new(PEER);
    e.send(HTTP, b"GET /index.html HTTP/1.1\r\nHost: www.example.com\r\nAccept-Encoding: gzip\r\nConnection: keep-alive\r\n\r\n")
        .send(NEXT_UP, NGINX_OK)
        .send(HTTP, b"GET /v1/users/7 HTTP/1.1\r\nHost: api.example\r\nAccept: application/json\r\n\r\n")
        .send(NEXT_UP + 1, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n11\r\n{\"id\":7,\"n\":\"a\"}\n\r\n0\r\n\r\n")
        .flags(HTTP, FIN | ACK);
    add("http_keepalive_two_groups", &mut e);

    // A chunked upload in pieces, Expect: 100-continue, an interim response.
    let mut e = Encoder::new(PEER);
    e.send(HTTP, b"POST /upload HTTP/1.1\r\nHost: 10.71.0.2\r\nUser-Agent: curl/7.88.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n")
        .send(NEXT_UP, b"HTTP/1.1 100 Continue\r\n\r\n")
        .send(HTTP, b"1a;name=part1\r\nabcdefghijklmnopqrstuvwxyz\r\n")
        .send(HTTP, b"5\r\nhello\r\n0\r\nX-Checksum: 1f\r\n\r\n")
        .send(NEXT_UP, b"HTTP/1.1 201 Created\r\nLocation: /upload/1\r\nContent-Length: 0\r\n\r\n")
        .flags(HTTP, FIN | ACK);
    add("http_chunked_upload", &mut e);

    // Pipelined requests in one segment, the last with Connection: close.
    let mut e = Encoder::new(PEER);
    e.send(HTTP, b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nHEAD /b HTTP/1.1\r\nHost: a\r\n\r\nGET /c HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .send(NEXT_UP, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .flags(NEXT_UP, FIN | ACK);
    add("http_pipelined", &mut e);

    // What the proxy refuses: CL+TE, a head larger than the buffer, junk.
    let mut big = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 1400));
    let mut e = Encoder::new(PEER);
    e.send(HTTP, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
        .connect(2, 0, true)
        .send(NEXT_UP, &big)
        .send(NEXT_UP, b"\r\nX-More: b\r\n")
        .connect(3, 0, true)
        .send(NEXT_UP + 1, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http\r\n\r\n");
    add("http_refusals", &mut e);

    // A slow client (header timeout: 408) and a slow upstream (504).
    let mut e = Encoder::new(PEER);
    e.send(HTTP, b"GET /slow HTTP/1.1\r\nHost: a\r\n")
        .op(&Op::Wait { ms: 2500 })
        .connect(1, 0, true)
        .send(NEXT_UP, CURL_GET)
        .op(&Op::Wait { ms: 3500 })
        .op(&Op::AckAll { window: 64240 });
    add("http_timeouts", &mut e);

    // Upstream refuses (RST), the proxy retries the other server, which
    // never answers its SYN (connect timeout).
    let mut e = Encoder::new(ops::AUTO_ACK);
    e.send(HTTP, CURL_GET)
        .op(&Op::Segment {
            flow: NEXT_UP,
            flags: RST | ACK,
            seq_off: 0,
            ack_off: 0,
            window: 0,
            options: Vec::new(),
            payload: Vec::new(),
            mangle: 0,
        })
        .op(&Op::Wait { ms: 1200 })
        .op(&Op::AckAll { window: 64240 });
    add("http_upstream_refused", &mut e);

    // TCP proxy: bytes both ways, half-close from the client first.
    let mut e = Encoder::new(PEER);
    e.send(TCP, b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")
        .send(TCP_UP, b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u1\r\n")
        .send(
            TCP,
            &[0x00, 0x00, 0x05, 0xdc, 0x0a, 0x14, 0x8a, 0x4f, 0x11, 0x32],
        )
        .flags(TCP, FIN | ACK)
        .send(TCP_UP, b"bye\n")
        .flags(TCP_UP, FIN | ACK);
    add("tcp_relay_half_close", &mut e);

    // TCP proxy: the upstream resets mid-stream; a large write.
    let mut e = Encoder::new(PEER);
    e.send(TCP, &vec![0x42; 1460])
        .send(TCP, &vec![0x43; 1460])
        .flags(TCP_UP, RST | ACK);
    add("tcp_relay_upstream_reset", &mut e);

    // The static responder: keep-alive, then close; a zero window.
    let mut e = Encoder::new(0);
    e.send(STATIC, b"GET /health HTTP/1.1\r\nHost: 10.71.0.2:8080\r\nUser-Agent: zproxy-bench/0.1.0\r\nAccept: */*\r\n\r\n")
        .op(&Op::Segment {
            flow: STATIC,
            flags: ACK,
            seq_off: 0,
            ack_off: 0,
            window: 0,
            options: Vec::new(),
            payload: Vec::new(),
            mangle: 0,
        })
        .send(STATIC, b"GET /health HTTP/1.1\r\nHost: 10.71.0.2:8080\r\nConnection: close\r\n\r\n")
        .op(&Op::Wait { ms: 300 })
        .op(&Op::AckAll { window: 64240 })
        .flags(STATIC, FIN | ACK);
    add("static_keepalive_zero_window", &mut e);

    // Out of order, duplicate and overlapping segments, a retransmission.
    let mut e = Encoder::new(ops::AUTO_ACK);
    let req = b"GET /x HTTP/1.1\r\nHost: 10.71.0.2\r\n\r\n";
    let seg = |seq_off: i16, payload: &[u8]| Op::Segment {
        flow: STATIC,
        flags: ACK | PSH,
        seq_off,
        ack_off: 0,
        window: 502,
        options: vec![1, 1, 8, 10, 0, 0, 0x20, 0, 0, 0, 0x10, 0],
        payload: payload.to_vec(),
        mangle: ops::PADDED,
    };
    e.op(&seg(10, &req[10..]))
        .op(&seg(5, &req[5..20]))
        .op(&seg(0, &req[..10]))
        .op(&Op::Wait { ms: 250 })
        .op(&seg(0, &req[10..]));
    add("static_out_of_order", &mut e);

    // Listener checks: a client outside :8081's allow-list, then one over
    // its per-source limit; a closed port; a SYN to a live tuple.
    let mut e = Encoder::new(0);
    e.connect(4, 3, true)
        .connect(2, 3, true)
        .connect(2, 3, true)
        .connect(0, 4, false)
        .connect(0x80, 2, true)
        .connect(0x80, 2, false);
    add("listener_acl_limits", &mut e);

    // A SYN flood: more half-open connections than the worker's syn_backlog
    // (4), so SYN cookies answer; then a client completes its handshake from
    // a cookie and is proxied (peers 5-10 are the flood, 11 that client).
    let mut e = Encoder::new(PEER);
    for i in 0..6u8 {
        e.connect(0x80 | i << 3 | 4, 2, false);
    }
    e.connect(1, 0, true)
        .send(11, CURL_GET)
        .send(12, NGINX_OK)
        .flags(11, FIN | ACK);
    add("syn_flood_cookies", &mut e);

    // Frames of the lab's hosts that belong to no connection.
    let lab_client = Ipv4Addr::new(10, 71, 0, 1);
    let mut e = Encoder::new(0);
    e.op(&Op::Raw {
        port: 0,
        frame: wire::arp_frame(wire::BROADCAST, 1, (mac_of(lab_client), lab_client), ([0; 6], CLIENT_SIDE)),
    })
    .op(&Op::Stateless { port: 0, kind: 2, field: 0x0001_4d2e, payload: b"abcdefghijklmnopqrstuvwabcdefghi".to_vec() })
    .op(&Op::Stateless { port: 1, kind: 0, field: 0x0100_0000, payload: Vec::new() })
    .op(&Op::Stateless { port: 0, kind: 4, field: 0x3500_0035, payload: b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01".to_vec() })
    .op(&Op::Stateless { port: 0, kind: 6, field: 0x0004_0105, payload: Vec::new() })
    .op(&Op::Stateless { port: 0, kind: 7, field: 0, payload: vec![0x60, 0, 0, 0, 0, 8, 58, 255] })
    .op(&Op::Stateless { port: 0, kind: 1, field: 0x0100_0000, payload: vec![0x02, 0, 0, 0, 0, 0x99] });
    add("stateless_lab_frames", &mut e);

    // IPv6 on the client port (`Harness::ipv6`): DAD runs out, then an NS
    // with a source link-layer option, an echo request, a DAD probe for our
    // address (defended), an NA, an NS with hop limit 64, routing type 0.
    let mut e = Encoder::new(0);
    e.op(&Op::Wait { ms: 1500 })
    .op(&Op::Stateless { port: 0, kind: 7 | 1 << 3, field: 0x0100_0008, payload: vec![1, 1, 2, 0, 0, 0, 0, 1] })
    .op(&Op::Stateless { port: 0, kind: 7 | 4 << 3, field: 0x0100_4000, payload: b"ping".to_vec() })
    .op(&Op::Stateless { port: 0, kind: 7 | 2 << 3, field: 0x0000_0008, payload: vec![14, 1, 1, 2, 3, 4, 5, 6] })
    .op(&Op::Stateless { port: 0, kind: 7 | 3 << 3, field: 0x0120_0050, payload: vec![2, 1, 2, 0, 0, 0, 0, 1] })
    .op(&Op::Stateless { port: 0, kind: 7 | 5 << 3, field: 0x0100_4008, payload: vec![1, 1, 2, 0, 0, 0, 0, 1] })
    .op(&Op::Stateless { port: 0, kind: 7 | 12 << 3, field: 0x0100_4100, payload: b"ping".to_vec() });
    add("ipv6_ndp_echo", &mut e);

    // A raw SYN as Linux sends it, to the HTTP port, then its ACK (raw: the
    // harness does not know this connection).
    let client = Ipv4Addr::new(10, 71, 0, 13);
    let syn = wire::tcp_frame(&wire::Segment {
        src_mac: mac_of(client),
        dst_mac: [0; 6],
        src: (client, 51234),
        dst: (CLIENT_SIDE, 80),
        seq: 0x1234_5678,
        ack: 0,
        flags: SYN,
        window: 64240,
        options: &[
            2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 1, 2, 3, 0, 0, 0, 0, 1, 3, 3, 7,
        ],
        payload: &[],
        mangle: 0,
    });
    let mut e = Encoder::new(0);
    e.op(&Op::Raw {
        port: 0,
        frame: syn,
    })
    .op(&Op::Raw {
        port: 0,
        frame: wire::tcp_frame(&wire::Segment {
            src_mac: mac_of(GATEWAY),
            dst_mac: [0; 6],
            src: (client, 51234),
            dst: (CLIENT_SIDE, 80),
            seq: 0x1234_5679,
            ack: 1,
            flags: ACK,
            window: 502,
            options: &[],
            payload: &[],
            mangle: ops::PADDED,
        }),
    });
    add("raw_syn_linux", &mut e);
    out
}

fn main() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/worker_frames");
    std::fs::create_dir_all(&dir).expect("corpus dir");
    for (name, bytes) in seeds() {
        std::fs::write(dir.join(name), &bytes).expect("write seed");
        println!("{name}: {} bytes", bytes.len());
    }
}
