//! SYN cookies over IPv6: the ACK of a cookie SYN-ACK (sent by
//! `send_cookie`, either family) opens its connection, as `open_from_cookie`
//! does for IPv4; and the handshake replay both families share.

use std::net::{IpAddr, SocketAddr};

use smoltcp::socket::tcp;

use super::{FlowId, Stack};
use crate::dpdk::Mbuf;
use crate::net::admission::Verdict;
use crate::net::counters::Counter;
use crate::net::flow6::FlowKey6;
use crate::net::segment;
use crate::net::source6::source_key6;

/// Our end and the client's of an IPv6 tuple.
pub(super) fn ends6(key: &FlowKey6) -> (SocketAddr, SocketAddr) {
    (
        SocketAddr::new(IpAddr::V6(key.local_ip), key.local_port),
        SocketAddr::new(IpAddr::V6(key.remote_ip), key.remote_port),
    )
}

impl Stack {
    /// An IPv6 ACK for no flow: when it carries a cookie this core sent,
    /// opens the connection; otherwise gives the frame back (for a RST).
    pub(super) fn open_from_cookie6(
        &mut self,
        port: usize,
        m: Mbuf,
        key: FlowKey6,
        now_us: u64,
    ) -> Option<Mbuf> {
        if now_us >= self.cookies_valid_until_us || self.draining {
            return Some(m);
        }
        let Some(seg) = segment::parse(m.data()).filter(|s| s.ack_flag && !s.syn && !s.rst) else {
            return Some(m);
        };
        let cookie = seg.ack.wrapping_sub(1);
        let Some(mss) = self
            .cookies
            .check(&key, seg.seq.wrapping_sub(1), cookie, now_us)
        else {
            return Some(m);
        };
        let Some(l) = self.listeners.iter().position(|l| {
            l.port_index == port && l.tcp_port == key.local_port && l.allow6.allows(key.remote_ip)
        }) else {
            return Some(m);
        };
        // This client holds an open connection: never a RST for want of room.
        if let Verdict::Drop(counter) = self.admit_cookie_ack(l, now_us) {
            self.counters.add(counter, 1);
            return None;
        }
        let (max, prefix) = (self.listeners[l].max_per_source, self.listeners[l].prefix6);
        let exempt = self.listeners[l].exempts6(key.remote_ip);
        let source = (max > 0 && !exempt).then(|| source_key6(key.remote_ip, prefix));
        let f = self.accept6(port, key, l, source, now_us)?;
        // The client proved its address: smoltcp may send to it straight away.
        self.glean6(port, key.remote_ip, key.local_ip, seg.src_mac.0, now_us);
        let (us, client) = ends6(&key);
        self.replay_cookie(f, port, m, &seg, (client, us), (mss, cookie), now_us)
    }

    /// Replays the handshake a cookie's ACK completes into `f`'s fresh
    /// socket (either family), then gives it the ACK. Gives the ACK back
    /// (and `f` up) when the socket did not take it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn replay_cookie(
        &mut self,
        f: FlowId,
        port: usize,
        m: Mbuf,
        seg: &segment::Segment,
        (client, us): (SocketAddr, SocketAddr),
        (mss, cookie): (u16, u32),
        now_us: u64,
    ) -> Option<Mbuf> {
        let p = &self.ports[port];
        let syn = segment::Build {
            src_mac: seg.src_mac,
            dst_mac: p.mac,
            src: (client.ip(), client.port()),
            dst: (us.ip(), us.port()),
            syn: true,
            seq: seg.seq.wrapping_sub(1),
            ack: None,
            window: seg.window,
            mss: Some(mss),
        };
        let established = self.ingress_built(f, &syn, now_us).is_some()
            && self.capture_syn_ack(f, now_us).is_some_and(|isn| {
                let ack = segment::Build {
                    syn: false,
                    seq: seg.seq,
                    ack: Some(isn.wrapping_add(1)),
                    mss: None,
                    ..syn
                };
                self.ingress_built(f, &ack, now_us).is_some() && {
                    let flow = self.flows.get_mut(f);
                    flow.seq_delta = cookie.wrapping_sub(isn);
                    flow.socket().state() == tcp::State::Established
                }
            });
        if !established {
            self.release(f, tcp::State::Closed, now_us);
            return Some(m);
        }
        self.counters.add(Counter::SynCookiesAccepted, 1);
        self.ingress(f, m, now_us); // the client's ACK, perhaps with its request
        None
    }
}
