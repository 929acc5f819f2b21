//! SYN cookies over IPv6: the ACK of a cookie SYN-ACK (sent by
//! `send_cookie`, either family) opens its connection, as `open_from_cookie`
//! does for IPv4. The handshake replay is shared (`replay_cookie`).

use std::net::{IpAddr, SocketAddr};

use super::Stack;
use crate::dpdk::Mbuf;
use crate::net::admission::Verdict;
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
        let source = (max > 0).then(|| source_key6(key.remote_ip, prefix));
        let f = self.accept6(port, key, l, source, now_us)?;
        // The client proved its address: smoltcp may send to it straight away.
        self.glean6(port, key.remote_ip, key.local_ip, seg.src_mac.0, now_us);
        let (us, client) = ends6(&key);
        self.replay_cookie(f, port, m, &seg, (client, us), (mss, cookie), now_us)
    }
}
