//! smoltcp `phy::Device` over DPDK mbufs.
//!
//! RX lends the received mbuf's bytes to smoltcp without copying; TX has
//! smoltcp write straight into a fresh mbuf, which joins a burst that is
//! flushed when full or after `tx_drain_us`.

use std::sync::Arc;

use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

use crate::dpdk::{rdtsc, Mbuf, MbufBurst, Mempool, PortQueue};

/// Frames per rx/tx burst.
pub const BURST: usize = 32;
/// Frames a transmit queue keeps while the driver's ring is full. A burst
/// of SYNs or SYN-ACKs to thousands of new connections outruns the ring for
/// a moment; one burst of room dropped them, and each drop cost its
/// connection a 1 s retransmission. Bounded, so a congested link still
/// drops rather than holding the pool's mbufs.
pub const TX_BACKLOG: usize = 256;

/// Largest Ethernet frame smoltcp may build (IP MTU 1500 + 14 B header).
pub const DEFAULT_FRAME_MTU: usize = 1514;

/// The TX side of one port queue: a pending burst and its pool.
pub struct TxQueue {
    queue: PortQueue,
    pool: Arc<Mempool>,
    pending: MbufBurst<TX_BACKLOG>,
    /// TSC of the oldest pending frame.
    pending_since: u64,
    drain_cycles: u64,
    /// Frames dropped because the pool was empty or the driver kept refusing.
    pub dropped: u64,
    pub sent: u64,
    /// Bytes of the frames built for this queue (sent or still pending).
    pub sent_bytes: u64,
    /// Scratch for smoltcp to write into when no mbuf could be had.
    scratch: Box<[u8]>,
    /// A running `zproxy capture` of this port (see `Stack::set_capture`).
    pub capture: Option<Arc<crate::capture::Session>>,
    /// Pending frames already offered to the capture (they stay pending
    /// when the driver refuses them).
    captured: usize,
}

impl TxQueue {
    pub fn new(queue: PortQueue, pool: Arc<Mempool>, drain_cycles: u64) -> Self {
        Self {
            queue,
            pool,
            pending: MbufBurst::default(),
            pending_since: 0,
            drain_cycles,
            dropped: 0,
            sent: 0,
            sent_bytes: 0,
            scratch: vec![0; 9216 + 14].into_boxed_slice(),
            capture: None,
            captured: 0,
        }
    }

    /// Hands pending frames to the driver; what it refuses stays pending.
    pub fn flush(&mut self) {
        if let Some(c) = &self.capture {
            self.pending
                .frames()
                .skip(self.captured)
                .for_each(|f| c.offer(f));
            self.captured = self.pending.len();
        }
        let n = self.queue.tx_burst(&mut self.pending);
        self.sent += n as u64;
        self.captured = self.captured.saturating_sub(n);
    }

    /// Starts or stops offering what this queue sends to a capture.
    pub fn set_capture(&mut self, c: Option<Arc<crate::capture::Session>>) {
        self.capture = c;
        self.captured = 0;
    }

    /// Flushes when the oldest pending frame waited `tx_drain_us`, or
    /// unconditionally when `idle` (nothing else to batch with).
    pub fn flush_if_due(&mut self, now_tsc: u64, idle: bool) {
        if !self.pending.is_empty()
            && (idle || now_tsc.wrapping_sub(self.pending_since) >= self.drain_cycles)
        {
            self.flush();
        }
    }

    /// Queues a frame built elsewhere (the kernel's, on the exception path).
    pub fn push_frame(&mut self, m: Mbuf) {
        self.sent_bytes += m.data().len() as u64;
        self.push(m);
    }

    fn push(&mut self, m: Mbuf) {
        if self.pending.is_empty() {
            self.pending_since = rdtsc();
        }
        if self.pending.push(m).is_err() {
            // The backlog is full and the driver takes nothing: the link
            // is congested. Drop (freed here).
            self.dropped += 1;
        }
        // Hand the driver each full burst; what it refuses waits in the
        // backlog, tried again a burst later (not on every push: asking a
        // full ring reads indices the other side keeps writing) or when due.
        if self.pending.len() % BURST == 0 {
            self.flush();
        }
    }

    /// Takes back the frames not yet handed to the driver (a queue that is
    /// never flushed serves to capture what smoltcp sends).
    pub fn take_pending(&mut self) -> impl Iterator<Item = Mbuf> + '_ {
        self.pending.drain()
    }

    /// Sends what is pending and lets the driver release completed frames,
    /// for up to `wait`, so no mbuf stays in flight at shutdown.
    pub fn drain(&mut self, wait: std::time::Duration) {
        let until = std::time::Instant::now() + wait;
        loop {
            self.flush();
            self.queue.reap_tx();
            if self.pending.is_empty() || std::time::Instant::now() >= until {
                break;
            }
        }
        // What the driver still refuses after `wait` is dropped (freed).
        self.dropped += self.pending.len() as u64;
        self.pending.drain().for_each(drop);
    }
}

/// What smoltcp sees for one call: at most one received frame, plus TX.
pub struct FrameDevice<'a> {
    pub rx: Option<Mbuf>,
    pub tx: &'a mut TxQueue,
    pub caps: &'a DeviceCapabilities,
    /// Added to the sequence number of every TCP segment sent (a connection
    /// opened from a SYN cookie, see `syncookie`); 0 for all others.
    pub seq_delta: u32,
    /// Where the sequence numbers of a flow's segments are recorded.
    pub sent: Option<&'a mut SentSeq>,
    /// A flow's lowered IPv6 path MTU: longer segments are cut (0: none).
    pub path_mtu: u16,
}

impl<'a> FrameDevice<'a> {
    pub fn new(
        rx: Option<Mbuf>,
        tx: &'a mut TxQueue,
        caps: &'a DeviceCapabilities,
        seq_delta: u32,
    ) -> Self {
        FrameDevice {
            rx,
            tx,
            caps,
            seq_delta,
            sent: None,
            path_mtu: 0,
        }
    }
}

/// What a flow last told its peer: the next sequence number it will send
/// and the next one it expects (RCV.NXT), read from the segments smoltcp
/// builds (smoltcp does not expose them). A RST must carry exactly
/// `rcv_nxt` to be taken (RFC 5961).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SentSeq {
    pub snd_nxt: u32,
    pub rcv_nxt: u32,
    /// A segment with an ACK went out (so `rcv_nxt` is known).
    pub acked: bool,
}

impl SentSeq {
    /// Reads an Ethernet/IPv4/TCP or Ethernet/IPv6/TCP frame smoltcp just built.
    pub(crate) fn record(&mut self, frame: &[u8]) {
        let Some(span) = crate::net::segment::span(frame) else {
            return;
        };
        if span.rst {
            return; // a RST moves nothing
        }
        self.snd_nxt = span.end;
        if let Some(ack) = span.ack {
            self.rcv_nxt = ack;
            self.acked = true;
        }
    }
}

impl phy::Device for FrameDevice<'_> {
    type RxToken<'b>
        = RxToken
    where
        Self: 'b;
    type TxToken<'b>
        = TxToken<'b>
    where
        Self: 'b;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let m = self.rx.take()?;
        Some((
            RxToken(m),
            TxToken {
                tx: self.tx,
                seq_delta: self.seq_delta,
                sent: self.sent.as_deref_mut(),
                path_mtu: self.path_mtu,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        Some(TxToken {
            tx: self.tx,
            seq_delta: self.seq_delta,
            sent: self.sent.as_deref_mut(),
            path_mtu: self.path_mtu,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        self.caps.clone()
    }
}

pub struct RxToken(Mbuf);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        // The mbuf goes back to its pool when the token is consumed.
        f(self.0.data())
    }
}

pub struct TxToken<'a> {
    tx: &'a mut TxQueue,
    seq_delta: u32,
    sent: Option<&'a mut SentSeq>,
    path_mtu: u16,
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let tx = self.tx;
        match tx.pool.alloc() {
            Some(mut m) => match m.append(len) {
                Some(buf) => {
                    let r = f(buf);
                    if self.seq_delta != 0 {
                        crate::net::segment::shift_seq(buf, self.seq_delta);
                    }
                    if let Some(sent) = self.sent {
                        sent.record(buf);
                    }
                    tx.sent_bytes += len as u64;
                    let cut = (self.path_mtu != 0)
                        .then(|| crate::net::pmtu6::plan(buf, self.path_mtu))
                        .flatten();
                    match cut {
                        Some(plan) => send_cut(tx, m, plan),
                        None => tx.push(m),
                    }
                    r
                }
                None => {
                    tx.dropped += 1;
                    f(&mut tx.scratch[..len.min(9230)])
                }
            },
            None => {
                // Pool empty: let smoltcp build the frame, then drop it; TCP retransmits.
                tx.dropped += 1;
                f(&mut tx.scratch[..len.min(9230)])
            }
        }
    }
}

/// Sends `m` as the pieces `plan` cuts it into (see `pmtu6`); a piece
/// with no mbuf is dropped (TCP resends it).
fn send_cut(tx: &mut TxQueue, m: Mbuf, plan: (usize, usize, usize)) {
    for i in 0..crate::net::pmtu6::pieces(plan) {
        let len = plan.0 + plan.2.min(plan.1 - i * plan.2);
        let Some(mut piece) = tx.pool.alloc() else {
            tx.dropped += 1;
            continue;
        };
        let Some(out) = piece.append(len) else {
            tx.dropped += 1;
            continue;
        };
        crate::net::pmtu6::write_piece(m.data(), plan, i, out);
        tx.push(piece);
    }
}

/// Capabilities for a port: Ethernet, its MTU, and software checksums except
/// what the device verifies on receive.
pub fn capabilities(ip_mtu: usize, rx_checksum_offload: bool) -> DeviceCapabilities {
    let mut caps = DeviceCapabilities::default();
    caps.medium = Medium::Ethernet;
    caps.max_transmission_unit = ip_mtu + 14;
    caps.max_burst_size = Some(BURST);
    if rx_checksum_offload {
        // The worker drops frames the NIC flagged bad before smoltcp sees them.
        caps.checksum.ipv4 = phy::Checksum::Tx;
        caps.checksum.tcp = phy::Checksum::Tx;
    }
    caps
}

#[cfg(test)]
mod tests {
    use super::SentSeq;
    use crate::net::segment::Build;
    use smoltcp::wire::EthernetAddress;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    fn frame(src: IpAddr, dst: IpAddr, seq: u32, ack: Option<u32>, payload: usize) -> Vec<u8> {
        let b = Build {
            src_mac: EthernetAddress([2, 0, 0, 0, 0, 1]),
            dst_mac: EthernetAddress([2, 0, 0, 0, 0, 2]),
            src: (src, 80),
            dst: (dst, 40000),
            syn: false,
            seq,
            ack,
            window: 1000,
            mss: None,
        };
        let mut f = vec![0u8; b.frame_len()];
        b.emit(&mut f);
        // Payload bytes the IP header counts (checksums do not matter here).
        f.extend(std::iter::repeat_n(0, payload));
        if src.is_ipv6() {
            let len = u16::from_be_bytes([f[18], f[19]]) + payload as u16;
            f[18..20].copy_from_slice(&len.to_be_bytes());
        } else {
            let len = u16::from_be_bytes([f[16], f[17]]) + payload as u16;
            f[16..18].copy_from_slice(&len.to_be_bytes());
        }
        f
    }

    #[test]
    fn records_what_a_flow_sent_in_both_families() {
        let v4 = (
            Ipv4Addr::new(10, 0, 0, 2).into(),
            Ipv4Addr::new(10, 0, 0, 1).into(),
        );
        let v6 = (
            "2001:db8::2".parse::<Ipv6Addr>().unwrap().into(),
            "2001:db8::1".parse::<Ipv6Addr>().unwrap().into(),
        );
        for (us, them) in [v4, v6] {
            let mut sent = SentSeq::default();
            sent.record(&frame(us, them, 1000, None, 0));
            assert!(!sent.acked, "no ACK flag: rcv_nxt unknown");
            sent.record(&frame(us, them, 1000, Some(7), 100));
            assert_eq!(
                sent,
                SentSeq {
                    snd_nxt: 1100,
                    rcv_nxt: 7,
                    acked: true
                },
                "{us}"
            );
            // Ethernet padding past the IP length is not payload.
            let mut padded = frame(us, them, 2000, Some(9), 0);
            padded.extend([0u8; 10]);
            sent.record(&padded);
            assert_eq!((sent.snd_nxt, sent.rcv_nxt), (2000, 9), "{us}");
        }
    }
}
