//! The generator's and the origin's connection logic against each other over
//! smoltcp's loopback device: real TCP sockets, no DPDK, no root.

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{Loopback, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};
use zproxy_bench::FailureKind;

use crate::client::{Client, Plan};
use crate::http::{build_request, Response};
use crate::origin::{Next, Reply, Served};

struct Net {
    iface: Interface,
    dev: Loopback,
    sockets: SocketSet<'static>,
    client: SocketHandle,
    server: SocketHandle,
    now_ms: i64,
}

fn socket() -> tcp::Socket<'static> {
    tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 65536]),
        tcp::SocketBuffer::new(vec![0; 65536]),
    )
}

impl Net {
    /// A client socket connected (handshake done) to a server socket on port 80.
    fn connected() -> Net {
        let mut dev = Loopback::new(Medium::Ethernet);
        let config = Config::new(EthernetAddress([0x02, 0, 0, 0, 0, 1]).into());
        let mut iface = Interface::new(config, &mut dev, Instant::from_millis(1000));
        iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8)).unwrap());
        let mut sockets = SocketSet::new(vec![]);
        let mut server = socket();
        server.listen(80).unwrap();
        let server = sockets.add(server);
        let client = sockets.add(socket());
        let mut net = Net {
            iface,
            dev,
            sockets,
            client,
            server,
            now_ms: 1000,
        };
        let cx = net.iface.context();
        net.sockets
            .get_mut::<tcp::Socket>(client)
            .connect(cx, (IpAddress::v4(127, 0, 0, 1), 80), 49152)
            .unwrap();
        for _ in 0..20 {
            net.poll();
        }
        assert_eq!(net.sock(client).state(), tcp::State::Established);
        net
    }

    fn poll(&mut self) {
        self.now_ms += 1;
        self.iface.poll(
            Instant::from_millis(self.now_ms),
            &mut self.dev,
            &mut self.sockets,
        );
    }

    fn now_us(&self) -> u64 {
        self.now_ms as u64 * 1000
    }

    fn sock(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }

    /// Runs both sides until the client's request ends (or `rounds` pass);
    /// the origin's last decision comes back too.
    fn exchange(
        &mut self,
        c: &mut Client,
        plan: &Plan,
        o: &mut Served,
        reply: &Reply,
        serve: bool,
    ) -> (Option<Response>, Next) {
        let mut next = Next::Wait;
        for _ in 0..20_000 {
            let now = self.now_us();
            let (client, server) = (self.client, self.server);
            if let Some(out) = c.step(self.sock(client), plan, now) {
                return (Some(out), next);
            }
            if serve && next == Next::Wait {
                next = o.step(self.sock(server), reply);
                match next {
                    Next::Close => self.sock(server).close(),
                    Next::Abort => self.sock(server).abort(),
                    Next::Wait => {}
                }
            }
            self.poll();
        }
        (None, next)
    }
}

fn plan(keep_alive: bool, upload: usize, expect_len: u64) -> Plan {
    Plan {
        request: build_request("127.0.0.1:80", "/", keep_alive, upload),
        keep_alive,
        hold_open: false,
        expect_len,
        verify: true,
        timeout_us: 5_000_000,
    }
}

#[test]
fn one_request_per_connection_ends_with_the_origins_close() {
    let mut net = Net::connected();
    let p = plan(false, 0, 64);
    let reply = Reply::new(64);
    let (mut c, mut o) = (Client::new(&p), Served::default());
    c.begin(net.now_us(), true);
    let (out, next) = net.exchange(&mut c, &p, &mut o, &reply, true);
    assert_eq!(out, Some(Response::Ok { close: true }));
    assert_eq!(
        next,
        Next::Close,
        "the origin closes after answering a Connection: close request"
    );
    assert_eq!(o.answered, 1);
    assert_eq!(c.sent(), p.request.len());
    assert_eq!(c.received(), reply_len(&reply));
}

fn reply_len(reply: &Reply) -> u64 {
    crate::http::build_response_head(reply.body_len, true).len() as u64 + reply.body_len
}

#[test]
fn kept_connections_carry_uploads_and_big_responses_byte_exact() {
    let mut net = Net::connected();
    let p = plan(true, 5000, 300_000);
    let reply = Reply::new(300_000);
    let (mut c, mut o) = (Client::new(&p), Served::default());
    for i in 1..=3 {
        c.begin(net.now_us(), true);
        let (out, next) = net.exchange(&mut c, &p, &mut o, &reply, true);
        assert_eq!(out, Some(Response::Ok { close: false }), "request {i}");
        assert_eq!(next, Next::Wait, "the origin keeps the connection");
        assert_eq!(o.answered, i);
    }
}

#[test]
fn a_corrupt_upload_is_reset_by_the_origin() {
    let mut net = Net::connected();
    let mut p = plan(true, 100, 64);
    let last = p.request.len() - 1;
    p.request[last] = b'!';
    let reply = Reply::new(64);
    let (mut c, mut o) = (Client::new(&p), Served::default());
    c.begin(net.now_us(), true);
    let (_, next) = net.exchange(&mut c, &p, &mut o, &reply, true);
    assert_eq!(next, Next::Abort);
    assert_eq!(o.answered, 0);
}

#[test]
fn an_unanswered_request_times_out() {
    let mut net = Net::connected();
    let mut p = plan(false, 0, 64);
    p.timeout_us = 50_000;
    let (mut c, mut o) = (Client::new(&p), Served::default());
    c.begin(net.now_us(), true);
    let (out, _) = net.exchange(&mut c, &p, &mut o, &Reply::new(64), false);
    assert_eq!(out, Some(Response::Failed(FailureKind::Timeout)));
}

#[test]
fn a_response_of_the_wrong_size_fails_and_a_close_midway_truncates() {
    let mut net = Net::connected();
    let p = plan(false, 0, 64);
    let (mut c, mut o) = (Client::new(&p), Served::default());
    c.begin(net.now_us(), true);
    let (out, _) = net.exchange(&mut c, &p, &mut o, &Reply::new(65), true);
    assert_eq!(out, Some(Response::Failed(FailureKind::SizeMismatch)));

    let mut net = Net::connected();
    let mut c = Client::new(&p);
    c.begin(net.now_us(), true);
    let server = net.server;
    net.sock(server)
        .send_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\nABC")
        .unwrap();
    net.sock(server).close();
    let (out, _) = net.exchange(&mut c, &p, &mut Served::default(), &Reply::new(64), false);
    assert_eq!(out, Some(Response::Failed(FailureKind::Truncated)));
}
