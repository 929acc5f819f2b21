//! A live flow's pages given back under real smoltcp sockets over the
//! arena's buffers (a wire in memory, no device): out-of-order data kept
//! past `recv_queue`, data after a release, half-close, TIME-WAIT.

use std::collections::VecDeque;

use smoltcp::iface::{Config, Interface, SocketHandle};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};

use super::*;
use crate::net::device::SentSeq;
use crate::net::flow::FlowKey;
use crate::net::stack::rx_end::RxEnd;
use crate::net::stack::slots;

const BUF: usize = 16384;
const PORT: u16 = 80;

/// Frames between the flow's socket and its peer (both on one interface),
/// recorded as the stack records them: every segment to the flow before
/// smoltcp takes it (`ingress`), every one from it as built (`TxToken`).
#[derive(Default)]
struct Wire {
    frames: VecDeque<Vec<u8>>,
    /// Data segments from the peer still to lose.
    lose: usize,
    /// The last one lost (seq, end): its resend carries only its own bytes.
    lost: Option<(u32, u32)>,
    rx_end: RxEnd,
    sent: SentSeq,
}

fn ports(frame: &[u8]) -> (u16, u16) {
    let t = crate::net::segment::tcp_offset(frame).expect("a TCP frame");
    let port = |at: usize| u16::from_be_bytes([frame[at], frame[at + 1]]);
    (port(t), port(t + 2))
}

impl Wire {
    fn carry(&mut self, frame: Vec<u8>) {
        let Some(span) = crate::net::segment::span(&frame) else {
            self.frames.push_back(frame); // ARP
            return;
        };
        let (src, dst) = ports(&frame);
        let mut frame = frame;
        if src == PORT {
            self.sent.record(&frame);
        } else if dst == PORT && span.end != span.seq {
            if self.lose > 0 {
                self.lose -= 1;
                self.lost = Some((span.seq, span.end));
                return;
            }
            if let Some((_, end)) = self.lost.filter(|&(seq, _)| seq == span.seq) {
                // smoltcp resends all it has unacknowledged in one segment;
                // a SACK peer (Linux) resends only the hole: cut it so.
                cut(&mut frame, span.end.wrapping_sub(end));
                debug_assert_eq!(crate::net::segment::span(&frame).unwrap().end, end);
                self.lost = None;
            }
            self.rx_end.record(&frame);
        }
        self.frames.push_back(frame);
    }
}

/// Drops the last `by` sequence numbers of an IPv4 segment (a FIN among
/// them first). The wire checks no checksums.
fn cut(frame: &mut Vec<u8>, by: u32) {
    let t = crate::net::segment::tcp_offset(frame).unwrap();
    let mut bytes = by as usize;
    if by > 0 && frame[t + 13] & 0x01 != 0 {
        frame[t + 13] &= !0x01;
        bytes -= 1;
    }
    let total = u16::from_be_bytes([frame[16], frame[17]]) - bytes as u16;
    frame[16..18].copy_from_slice(&total.to_be_bytes());
    frame.truncate(frame.len() - bytes);
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut Wire);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut frame = vec![0u8; len];
        let r = f(&mut frame);
        self.0.carry(frame);
        r
    }
}

impl phy::Device for Wire {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(Rx, Tx<'_>)> {
        let frame = self.frames.pop_front()?;
        Some((Rx(frame), Tx(self)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<Tx<'_>> {
        Some(Tx(self))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps.checksum = phy::ChecksumCapabilities::ignored();
        caps
    }
}

/// One flow slot (accepting on `PORT`) and a peer connected to it.
struct Pair {
    flows: FlowTable<Flow>,
    reclaim: Reclaim,
    f: u32,
    peer: SocketHandle,
    iface: Interface,
    wire: Wire,
    ms: i64,
    /// The stack's clock for the sweep (µs), moved on by each `sweep`.
    now_us: u64,
}

impl Pair {
    fn new() -> Pair {
        let (mut flows, reclaim) = slots::build(1, BUF, BUF, [3; 16], None);
        let f = flows
            .insert(FlowKey {
                remote_ip: std::net::Ipv4Addr::new(127, 0, 0, 1),
                remote_port: 40000,
                local_ip: std::net::Ipv4Addr::new(127, 0, 0, 1),
                local_port: PORT,
            })
            .unwrap();
        let mut wire = Wire::default();
        let config = Config::new(EthernetAddress([2, 0, 0, 0, 0, 1]).into());
        let mut iface = Interface::new(config, &mut wire, Instant::from_millis(0));
        iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8)).unwrap());
        let flow = flows.get_mut(f);
        flow.socket().listen(PORT).unwrap();
        let mut peer = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; BUF]),
            tcp::SocketBuffer::new(vec![0; BUF]),
        );
        // Each send its own segment, however many are unacknowledged.
        peer.set_nagle_enabled(false);
        peer.connect(iface.context(), (IpAddress::v4(127, 0, 0, 1), PORT), 40000)
            .unwrap();
        let peer = flow.sockets.add(peer);
        let mut p = Pair {
            flows,
            reclaim,
            f,
            peer,
            iface,
            wire,
            ms: 0,
            now_us: 0,
        };
        p.run(20);
        assert_eq!(p.flow().state(), tcp::State::Established);
        p
    }

    /// `ms` milliseconds of polling, a millisecond at a time.
    fn run(&mut self, ms: i64) {
        let flow = self.flows.get_mut(self.f);
        for _ in 0..ms {
            self.ms += 1;
            self.iface.poll(
                Instant::from_millis(self.ms),
                &mut self.wire,
                &mut flow.sockets,
            );
        }
    }

    fn flow(&mut self) -> &mut tcp::Socket<'static> {
        self.flows.get_mut(self.f).socket()
    }

    fn peer(&mut self) -> &mut tcp::Socket<'static> {
        let flow = self.flows.get_mut(self.f);
        flow.sockets.get_mut::<tcp::Socket>(self.peer)
    }

    /// The flow's frames are all in; it then stays quiet past `IDLE_US`
    /// and the sweep looks at it: whether its pages were given back.
    fn sweep(&mut self) -> bool {
        self.now_us += 1;
        let flow = self.flows.get_mut(self.f);
        flow.last_rx_us = self.now_us;
        flow.rx_end = self.wire.rx_end;
        flow.sent = self.wire.sent;
        self.now_us += IDLE_US + SWEEP_EVERY_US;
        let released = self.reclaim.sweep(&mut self.flows, self.now_us) == 1;
        if released {
            assert_eq!(resident(&self.reclaim), 0, "given back");
        }
        released
    }

    fn read(&mut self, from_flow: bool, want: &[u8]) {
        let mut got = vec![0u8; want.len()];
        let sock = if from_flow { self.flow() } else { self.peer() };
        assert_eq!(sock.recv_slice(&mut got), Ok(want.len()));
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
    }
}

/// Resident pages of slot 0's buffers (mincore).
fn resident(r: &Reclaim) -> usize {
    let mut vec = vec![0u8; r.slot_len / r.page];
    // SAFETY: slot 0's buffers: a page-aligned start of the live mapping
    // (16 KiB buffers); vec has one byte per page.
    let rc = unsafe { libc::mincore(r.base as *mut libc::c_void, r.slot_len, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().filter(|&&b| b & 1 == 1).count()
}

#[test]
fn out_of_order_data_in_the_ring_survives_the_sweep() {
    let mut p = Pair::new();
    // The first segment is lost; the second waits in the flow's receive
    // ring past a hole, where `recv_queue` does not count it.
    p.wire.lose = 1;
    assert_eq!(p.peer().send_slice(b"first "), Ok(6));
    p.run(2);
    assert_eq!(p.peer().send_slice(b"second"), Ok(6));
    p.run(2);
    assert_eq!((p.flow().recv_queue(), p.flow().send_queue()), (0, 0));
    let released = p.sweep();
    // The peer resends the first segment: the hole fills.
    for _ in 0..500 {
        if p.flow().recv_queue() == 12 {
            break;
        }
        p.run(10);
    }
    // Zeroed pages would deliver "first " and then zeros.
    p.read(true, b"first second");
    assert!(!released, "out-of-order bytes in the ring: pages stay");
    // Everything received is delivered and acknowledged: the pages go.
    assert!(
        p.sweep(),
        "an idle flow with nothing held gives its pages back"
    );
    // Data after a release lands on fresh zeroed pages, both ways.
    assert_eq!(p.peer().send_slice(b"again"), Ok(5));
    p.run(20);
    p.read(true, b"again");
    assert_eq!(p.flow().send_slice(b"reply"), Ok(5));
    p.run(20);
    p.read(false, b"reply");
    assert!(p.sweep());
    // Half-close: the peer's FIN (after a lost segment, so it waits too).
    p.wire.lose = 1;
    assert_eq!(p.peer().send_slice(b"last "), Ok(5));
    p.run(2);
    assert_eq!(p.peer().send_slice(b"words"), Ok(5));
    p.peer().close();
    p.run(2);
    assert!(!p.sweep(), "data and FIN past a hole: pages stay");
    for _ in 0..500 {
        if p.flow().state() == tcp::State::CloseWait {
            break;
        }
        p.run(10);
    }
    assert_eq!(p.flow().state(), tcp::State::CloseWait);
    p.read(true, b"last words");
    assert!(p.sweep(), "FIN taken, nothing held");
    // The flow still sends after the peer's FIN, over given-back pages.
    assert_eq!(p.flow().send_slice(b"answer"), Ok(6));
    p.run(20);
    p.read(false, b"answer");
}

#[test]
fn a_flow_that_closed_first_gives_pages_back_in_time_wait() {
    let mut p = Pair::new();
    assert_eq!(p.peer().send_slice(b"request"), Ok(7));
    p.run(20);
    p.read(true, b"request");
    assert_eq!(p.flow().send_slice(b"response"), Ok(8));
    p.flow().close();
    // Unacknowledged bytes in the send ring keep the pages.
    assert!(!p.sweep(), "response not yet acknowledged");
    p.run(20);
    p.read(false, b"response");
    assert_eq!(p.flow().state(), tcp::State::FinWait2);
    // Half-closed by us: the peer may still send.
    assert!(p.sweep());
    assert_eq!(p.peer().send_slice(b"more"), Ok(4));
    p.peer().close();
    p.run(20);
    p.read(true, b"more");
    assert_eq!(p.flow().state(), tcp::State::TimeWait);
    assert!(p.sweep(), "TIME-WAIT reads nothing from the rings");
    assert_eq!(p.flow().state(), tcp::State::TimeWait);
}
