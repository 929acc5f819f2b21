//! TCP over IPv6: which flow a segment to one of the port's IPv6 addresses
//! goes to, or which listener makes one, like `demux` does for IPv4. The
//! rest of IPv6 (NDP, echo, what is malformed) stays with `net::ipv6`.

use std::net::Ipv6Addr;

use smoltcp::wire::TcpPacket;

use super::{FlowId, Stack};
use crate::dpdk::Mbuf;
use crate::net::admission::Verdict;
use crate::net::counters::Counter;
use crate::net::flow6::FlowKey6;
use crate::net::ipv6::ext;
use crate::net::ipv6::icmp::{Msg, Out};
use crate::net::ipv6::Ipv6Port;
use crate::net::source6::source_key6;

/// smoltcp forgets a neighbour after 60 s; tell it again after this long.
const GLEAN_EVERY_US: u64 = 30_000_000;
/// IPv6 neighbours remembered for gleaning.
const GLEANED_NEIGHBOURS: usize = 256;

/// A TCP segment to one of our IPv6 addresses.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tcp6 {
    pub key: FlowKey6,
    pub syn: bool,
    pub ack: bool,
    pub rst: bool,
    pub src_mac: [u8; 6],
}

/// TCP straight after the IPv6 header, to an address of ours past DAD,
/// from a unicast source; `None` for anything else (`net::ipv6` counts it).
pub(super) fn classify6(data: &[u8], v6: &Ipv6Port) -> Option<Tcp6> {
    let h = ext::parse(data.get(14..)?).ok()?;
    if h.next_header != ext::TCP
        || !v6.is_preferred(h.dst)
        || h.src.is_multicast()
        || h.src.is_unspecified()
    {
        return None;
    }
    let tcp = TcpPacket::new_checked(h.payload).ok()?;
    Some(Tcp6 {
        key: FlowKey6 {
            remote_ip: h.src,
            remote_port: tcp.src_port(),
            local_ip: h.dst,
            local_port: tcp.dst_port(),
        },
        syn: tcp.syn(),
        ack: tcp.ack(),
        rst: tcp.rst(),
        src_mac: data[6..12].try_into().expect("6 bytes"),
    })
}

impl Stack {
    pub(super) fn on_tcp6(&mut self, port: usize, m: Mbuf, t: Tcp6, handed: bool, now_us: u64) {
        let key = t.key;
        if let Some(f) = self.v6.lookup(&key) {
            return self.deliver(f, port, m, t.rst, now_us);
        }
        if !handed && self.inboxes.len() > 1 {
            let owner = self.owner6(port, &key);
            if owner != self.index {
                self.counters.add(Counter::Ipv6HandoffsOut, 1);
                return self.hand_off(owner, port, m, false);
            }
        }
        if self.ports[port].to_kernel.is_some()
            && !self.listening(port, key.local_port)
            && !self.v6.time_wait.contains(&key)
        {
            return self.pass_to_kernel(port, m, now_us);
        }
        if !t.syn || t.ack {
            // A cookie's ACK first, even in TIME-WAIT (see `orphan_steps`).
            let Some(m) = self.open_from_cookie6(port, m, key, now_us) else {
                return; // opened (or its ACK dropped for room)
            };
            if self.v6.time_wait.contains(&key) {
                // A late segment of a closed connection: not worth a RST.
                self.counters.add(Counter::DropTimeWait, 1);
                return self.ack_again_in_time_wait(port, m, super::cookie6::ends6(&key));
            }
            return self.answer_stateless(port, m, now_us); // RST: no such connection
        }
        if self.half_open < self.syn_backlog {
            self.glean6(port, key.remote_ip, key.local_ip, t.src_mac, now_us);
        }
        let listener = self
            .listeners
            .iter()
            .position(|l| l.port_index == port && l.tcp_port == key.local_port);
        let Some(l) = listener.filter(|_| !self.draining) else {
            return self.answer_stateless(port, m, now_us); // RST: closed port, or shutting down
        };
        if !self.listeners[l].allow6.allows(key.remote_ip) {
            self.counters.add(Counter::RefusedAcl, 1);
            return self.answer_stateless(port, m, now_us); // RST: not an allowed client network
        }
        // A trusted balancer's clients are limited by the application, which
        // sees them; the balancer itself is not.
        let exempt = self.listeners[l].exempts6(key.remote_ip);
        let (max, prefix) = match exempt {
            true => (0, 128),
            false => (self.listeners[l].max_per_source, self.listeners[l].prefix6),
        };
        let source = source_key6(key.remote_ip, prefix);
        if max > 0 && self.v6.per_source.holds(source) >= max {
            self.counters.add(Counter::RefusedPerSource, 1);
            return self.answer_stateless(port, m, now_us); // RST: this source holds enough
        }
        if let Some(rate) = self.listeners[l].conn_rate.filter(|_| !exempt) {
            let client = std::net::IpAddr::V6(key.remote_ip);
            if self
                .syn_limiter
                .check_ip(l as u32, client, prefix, rate, now_us)
                .is_err()
            {
                self.counters.add(Counter::RefusedRateLimit, 1);
                return self.answer_stateless(port, m, now_us); // RST: over its connection rate
            }
        }
        match self.admit_syn(l, now_us) {
            Verdict::Accept => {}
            Verdict::Cookie => {
                self.counters.add(Counter::Ipv6SynCookies, 1);
                let ends = super::cookie6::ends6(&key);
                return self.send_cookie(port, m, &key, ends, now_us);
            }
            Verdict::Drop(counter) => return self.counters.add(counter, 1),
        }
        let Some(f) = self.accept6(port, key, l, (max > 0).then_some(source), now_us) else {
            return;
        };
        self.flows.get_mut(f).half_open = true;
        self.half_open += 1;
        self.ingress(f, m, now_us);
    }

    /// A flow for a new IPv6 connection to `listener` (see `accept`).
    pub(super) fn accept6(
        &mut self,
        port: usize,
        key: FlowKey6,
        listener: usize,
        source: Option<Ipv6Addr>,
        now_us: u64,
    ) -> Option<FlowId> {
        let reserve = self.listeners[listener].reserve_peer;
        let needed = if reserve { 2 } else { 1 };
        while self.spare_slots() < needed && self.evict_one(now_us) {}
        if self.spare_slots() < needed {
            self.counters.add(Counter::FlowsRefused, 1);
            return None;
        }
        self.v6.time_wait.remove(&key);
        let f = self
            .flows
            .insert_with(super::flows6::placeholder)
            .expect("a spare slot is free");
        if let Some(s) = source {
            self.v6.per_source.open(s, 0);
        }
        self.v6.insert(f, key, source);
        self.counters.add(Counter::FlowsAccepted, 1);
        self.counters.add(Counter::Ipv6TcpAccepted, 1);
        let idle_timeout_us = self.listeners[listener].idle_timeout_us;
        self.reset_flow(f, port, Some(listener), idle_timeout_us, now_us);
        if reserve {
            self.reserve(f);
        }
        let sock = self.flows.get_mut(f).socket();
        sock.listen(key.local_port)
            .expect("a released slot's socket is closed");
        sock.set_timeout(Some(smoltcp::time::Duration::from_micros(idle_timeout_us)));
        self.events
            .push_back(super::Event::Accepted { flow: f, listener });
        self.mark_dirty(f);
        Some(f)
    }

    /// The core that owns `key`'s flow (see `owner`).
    pub(super) fn owner6(&self, port: usize, key: &FlowKey6) -> usize {
        self.ports[port].steering6.as_ref().map_or(self.index, |s| {
            usize::from(s.queue(key.remote_ip, key.local_ip, key.remote_port, key.local_port))
        })
    }

    /// smoltcp learns IPv6 neighbours only from NDP, which `net::ipv6`
    /// answers: tell it the MAC a SYN came from (the client's, or on its
    /// way the router's) with an advertisement, once per `GLEAN_EVERY_US`.
    pub(super) fn glean6(
        &mut self,
        port: usize,
        ip: Ipv6Addr,
        ours: Ipv6Addr,
        mac: [u8; 6],
        now_us: u64,
    ) {
        let link = &mut self.ports[port];
        let Some(hop) = link.v6.as_ref().and_then(|v6| v6.next_hop(ip)) else {
            return;
        };
        if mac[0] & 1 != 0
            || link
                .gleaned6
                .get(&hop)
                .is_some_and(|&at| now_us < at + GLEAN_EVERY_US)
        {
            return;
        }
        if link.gleaned6.len() >= GLEANED_NEIGHBOURS {
            link.gleaned6.clear();
        }
        link.gleaned6.insert(hop, now_us);
        let na = Out {
            eth_src: mac,
            eth_dst: link.mac.0,
            src: hop,
            dst: ours,
            msg: Msg::Advert {
                target: hop,
                solicited: true,
            },
        };
        let Some(mut m) = self.pool.alloc() else {
            return;
        };
        let Some(buf) = m.append(na.frame_len()) else {
            return;
        };
        na.emit(buf, &[]);
        self.answer_stateless(port, m, now_us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::ipv6::{Ipv6Spec, TICK_FRAMES};

    const US: &str = "2001:db8:71::2";
    const CLIENT: &str = "2001:db8:71::1";

    /// A port whose address `US` passed DAD.
    fn port() -> Ipv6Port {
        let spec = Ipv6Spec {
            addresses: vec![(US.parse().unwrap(), 64)],
            gateway: None,
        };
        let mut p = Ipv6Port::new(&spec, [2, 0, 0, 0, 0, 2]);
        let mut out = [None; TICK_FRAMES];
        p.tick(0, &mut out);
        p.tick(1_200_000, &mut out);
        assert!(p.is_preferred(US.parse().unwrap()));
        p
    }

    /// Ethernet/IPv6/TCP from `CLIENT`:40000 to `dst`:80 with `flags`.
    fn frame(dst: &str, next_header: u8, flags: u8) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 40 + 20];
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f[12..14].copy_from_slice(&[0x86, 0xdd]);
        f[14] = 0x60;
        f[18..20].copy_from_slice(&20u16.to_be_bytes());
        f[20] = next_header;
        f[21] = 64;
        f[22..38].copy_from_slice(&CLIENT.parse::<Ipv6Addr>().unwrap().octets());
        f[38..54].copy_from_slice(&dst.parse::<Ipv6Addr>().unwrap().octets());
        f[54..56].copy_from_slice(&40000u16.to_be_bytes());
        f[56..58].copy_from_slice(&80u16.to_be_bytes());
        f[66] = 5 << 4;
        f[67] = flags;
        f
    }

    #[test]
    fn tcp_to_our_address_gets_its_ipv6_key() {
        let t = classify6(&frame(US, ext::TCP, 0x02), &port()).expect("TCP to us");
        assert!(t.syn && !t.ack && !t.rst);
        assert_eq!(t.key.remote_ip, CLIENT.parse::<Ipv6Addr>().unwrap());
        assert_eq!(t.key.local_ip, US.parse::<Ipv6Addr>().unwrap());
        assert_eq!((t.key.remote_port, t.key.local_port), (40000, 80));
        assert_eq!(t.src_mac, [2, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn the_rest_stays_with_net_ipv6() {
        let p = port();
        // Another address, not TCP, cut short, or an address still in DAD.
        assert!(classify6(&frame("2001:db8:71::9", ext::TCP, 0x02), &p).is_none());
        assert!(classify6(&frame(US, ext::UDP, 0x02), &p).is_none());
        assert!(classify6(&frame(US, ext::TCP, 0x02)[..60], &p).is_none());
        let tentative = Ipv6Port::new(
            &Ipv6Spec {
                addresses: vec![(US.parse().unwrap(), 64)],
                gateway: None,
            },
            [2, 0, 0, 0, 0, 2],
        );
        assert!(classify6(&frame(US, ext::TCP, 0x02), &tentative).is_none());
    }

    #[test]
    fn placeholder_keys_name_no_address_we_answer_on() {
        for slot in [0, 1, 65_535, 1 << 20] {
            let k = super::super::flows6::placeholder(slot);
            assert!(k.remote_ip.is_unspecified() && k.remote_port == 0);
            assert_eq!(k.local_ip.octets()[0], 0, "0.0.0.0/8");
        }
        assert_ne!(
            super::super::flows6::placeholder(1),
            super::super::flows6::placeholder(2)
        );
    }
}
