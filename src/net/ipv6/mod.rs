//! IPv6 on a port (TCP over IPv6 is `stack::demux6`'s): the port's addresses with
//! duplicate address detection, neighbour discovery (answering
//! solicitations, defending our addresses, resolving the gateway into a
//! small fixed cache) and ICMPv6 echo. Router advertisements are ignored
//! (the config gives addresses and gateway). Everything malformed is dropped
//! and counted; nothing here allocates after start.
//!
//! - [`ext`]: the IPv6 header and the extension-header walk.
//! - [`icmp`]: the ICMPv6 checksum and the frames we send.
//! - [`ndp`]: NDP options, address states and the neighbour cache.

pub mod ext;
pub mod icmp;
pub mod ndp;

use std::net::Ipv6Addr;

use self::icmp::{Msg, Out, ALL_NODES};
use self::ndp::{Addr, AddrState, Neighbours};
use super::counters::{Counter, Counters};
use super::link::Link;

/// IPv6 addresses one port may have (global and link-local together).
pub const MAX_ADDRESSES: usize = 4;
/// How long DAD waits for a defender (RFC 4861's RetransTimer).
const DAD_WAIT_US: u64 = 1_000_000;
/// An unresolved gateway is solicited again after this long...
const RESOLVE_RETRY_US: u64 = 1_000_000;
/// ...and a resolved one re-confirmed after this long.
const REFRESH_US: u64 = 20_000_000;
/// The timers are looked at this often at most.
const TICK_US: u64 = 100_000;
/// Frames one tick may send: a probe or an advert per address, and the gateway's NS.
pub const TICK_FRAMES: usize = MAX_ADDRESSES + 1;
const ETH_LEN: usize = 14;

/// True for fe80::/10.
pub fn is_link_local(a: Ipv6Addr) -> bool {
    a.segments()[0] & 0xffc0 == 0xfe80
}

/// True when `ip` is inside `net`/`len`.
pub fn in_network6(ip: Ipv6Addr, net: Ipv6Addr, len: u8) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len.min(128)))
    };
    u128::from(ip) & mask == u128::from(net) & mask
}

/// A port's IPv6 configuration, as a worker is given it.
#[derive(Debug, Clone, Default)]
pub struct Ipv6Spec {
    pub addresses: Vec<(Ipv6Addr, u8)>,
    pub gateway: Option<Ipv6Addr>,
}

pub struct Ipv6Port {
    mac: [u8; 6],
    addrs: Vec<Addr>,
    gateway: Option<Ipv6Addr>,
    pub neighbours: Neighbours,
    /// Our DAD probes carry this (RFC 7527): one of them looped back, or
    /// seen by another worker of the same port, is not a duplicate.
    nonce: [u8; 6],
    dad_started_us: Option<u64>,
    dad_done: bool,
    next_tick_us: u64,
    next_resolve_us: u64,
}

impl Ipv6Port {
    pub fn new(spec: &Ipv6Spec, mac: [u8; 6]) -> Ipv6Port {
        let addrs: Vec<Addr> = spec
            .addresses
            .iter()
            .take(MAX_ADDRESSES)
            .map(|&(ip, prefix_len)| Addr {
                ip,
                prefix_len,
                state: AddrState::Tentative,
            })
            .collect();
        // The same on every worker of the port, different between ports.
        let mut h = siphasher::sip::SipHasher13::new();
        std::hash::Hasher::write(&mut h, &mac);
        for a in &addrs {
            std::hash::Hasher::write(&mut h, &a.ip.octets());
        }
        let mut nonce = [0u8; 6];
        nonce.copy_from_slice(&std::hash::Hasher::finish(&h).to_be_bytes()[..6]);
        Ipv6Port {
            mac,
            addrs,
            gateway: spec.gateway,
            neighbours: Neighbours::default(),
            nonce,
            dad_started_us: None,
            dad_done: false,
            next_tick_us: 0,
            next_resolve_us: 0,
        }
    }

    /// Our address `ip`, in whatever state.
    fn ours(&self, ip: Ipv6Addr) -> Option<usize> {
        self.addrs.iter().position(|a| a.ip == ip)
    }

    /// True when `ip` is ours and past DAD.
    pub fn is_preferred(&self, ip: Ipv6Addr) -> bool {
        self.ours(ip)
            .is_some_and(|i| self.addrs[i].state == AddrState::Preferred)
    }

    /// True when `ip` is on the link: link-local, or inside one of our prefixes.
    pub fn on_link(&self, ip: Ipv6Addr) -> bool {
        is_link_local(ip)
            || self
                .addrs
                .iter()
                .any(|a| in_network6(ip, a.ip, a.prefix_len))
    }

    /// The neighbour that frames to `ip` go through.
    pub fn next_hop(&self, ip: Ipv6Addr) -> Option<Ipv6Addr> {
        if self.on_link(ip) {
            Some(ip)
        } else {
            self.gateway
        }
    }

    /// The preferred address to send to `to` from: of the same scope
    /// (link-local or not), one whose prefix holds it first.
    pub fn source_for(&self, to: Ipv6Addr) -> Option<Ipv6Addr> {
        let local = is_link_local(to);
        let usable = || {
            self.addrs
                .iter()
                .filter(|a| a.state == AddrState::Preferred)
        };
        usable()
            .find(|a| in_network6(to, a.ip, a.prefix_len))
            .or_else(|| usable().find(|a| is_link_local(a.ip) == local))
            .or_else(|| usable().next())
            .map(|a| a.ip)
    }

    /// A neighbour solicitation that resolves `target`.
    pub fn solicit(&self, target: Ipv6Addr) -> Option<Out> {
        let group = icmp::solicited_node(target);
        Some(Out {
            eth_src: self.mac,
            eth_dst: icmp::multicast_mac(group),
            src: self.source_for(target)?,
            dst: group,
            msg: Msg::Solicit {
                target,
                nonce: self.nonce,
            },
        })
    }

    /// One received IPv6 frame: what to send back, if anything (only when
    /// `answer`; a copy another worker answers changes state only).
    pub fn on_frame(
        &mut self,
        frame: &[u8],
        answer: bool,
        now_us: u64,
        c: &mut Counters,
    ) -> Option<Out> {
        c.add(Counter::Ipv6Frames, 1);
        let out = match self.classify(frame, now_us, c) {
            Ok(out) => out?,
            Err(reason) => {
                c.add(reason, 1);
                return None;
            }
        };
        if !answer {
            return None;
        }
        match out.msg {
            Msg::EchoReply { .. } => c.add(Counter::Ipv6EchoAnswered, 1),
            Msg::Advert { .. } => c.add(Counter::Ipv6NsAnswered, 1),
            Msg::Solicit { .. } => {}
        }
        Some(out)
    }

    /// `Err` carries the counter of a frame dropped or only noted.
    fn classify(
        &mut self,
        frame: &[u8],
        now_us: u64,
        c: &mut Counters,
    ) -> Result<Option<Out>, Counter> {
        let eth_src: [u8; 6] = frame
            .get(6..12)
            .ok_or(Counter::Ipv6Malformed)?
            .try_into()
            .expect("6 bytes");
        let h = ext::parse(frame.get(ETH_LEN..).ok_or(Counter::Ipv6Malformed)?)?;
        let for_us = self.ours(h.dst).is_some()
            || h.dst == ALL_NODES
            || self
                .addrs
                .iter()
                .any(|a| icmp::solicited_node(a.ip) == h.dst);
        if !for_us {
            return Err(Counter::Ipv6NotForUs);
        }
        if h.src.is_multicast() {
            return Err(Counter::Ipv6Malformed);
        }
        let (proto, at) = ext::walk(h.next_header, h.payload)?;
        if proto != ext::ICMPV6 {
            // UDP, and TCP that is not ours (`demux6` takes the rest).
            return Err(Counter::Ipv6Unhandled);
        }
        let msg = &h.payload[at..];
        if msg.len() < 8 {
            return Err(Counter::Ipv6Malformed);
        }
        if icmp::checksum(h.src, h.dst, msg) != 0 {
            return Err(Counter::Ipv6BadChecksum);
        }
        let ndp = (icmp::ROUTER_SOLICIT..=icmp::REDIRECT).contains(&msg[0]);
        if ndp && h.hop_limit != 255 {
            // Off-link: a router on the way would have decremented it
            // (RFC 4861 6.1.1, 7.1.1).
            return Err(Counter::Ipv6NdpHopLimit);
        }
        if ndp && msg[1] != 0 {
            return Err(Counter::Ipv6NdpInvalid);
        }
        match msg[0] {
            icmp::ECHO_REQUEST if self.is_preferred(h.dst) && !h.src.is_unspecified() => {
                Ok(Some(Out {
                    eth_src: self.mac,
                    eth_dst: eth_src,
                    src: h.dst,
                    dst: h.src,
                    msg: Msg::EchoReply {
                        at: ETH_LEN + ext::HEADER_LEN + at,
                        len: msg.len(),
                    },
                }))
            }
            icmp::NEIGHBOR_SOLICIT => self.on_solicit(&h, msg, eth_src, now_us, c),
            icmp::NEIGHBOR_ADVERT => self.on_advert(&h, msg, eth_src, now_us, c),
            icmp::ROUTER_ADVERT => Err(Counter::Ipv6RouterAdverts),
            _ => Err(Counter::Ipv6Unhandled),
        }
    }

    fn on_solicit(
        &mut self,
        h: &ext::Header,
        msg: &[u8],
        eth_src: [u8; 6],
        now_us: u64,
        c: &mut Counters,
    ) -> Result<Option<Out>, Counter> {
        let target = target(msg)?;
        let opts = ndp::options(msg).ok_or(Counter::Ipv6NdpInvalid)?;
        let dad = h.src.is_unspecified();
        if dad && (!h.dst.is_multicast() || opts.source_ll.is_some()) {
            return Err(Counter::Ipv6NdpInvalid); // RFC 4861 7.1.1
        }
        if let (false, Some(mac)) = (dad, opts.source_ll) {
            if self.neighbours.learn(h.src, mac, now_us) {
                c.add(Counter::Ipv6NeighboursLearned, 1);
            }
        }
        let i = self.ours(target).ok_or(Counter::Ipv6NotForUs)?;
        match self.addrs[i].state {
            AddrState::Tentative if dad && opts.nonce != Some(self.nonce) => {
                // Someone else starts to use it too: it is not ours.
                self.addrs[i].state = AddrState::Duplicate { logged: false };
                Err(Counter::Ipv6DadDuplicates)
            }
            AddrState::Preferred if dad => {
                // Defend it: the prober sees it taken (RFC 4862 5.4.3).
                c.add(Counter::Ipv6AddressConflicts, 1);
                Ok(Some(self.advert(
                    target,
                    ALL_NODES,
                    icmp::multicast_mac(ALL_NODES),
                    false,
                )))
            }
            AddrState::Preferred => {
                let mac = opts.source_ll.unwrap_or(eth_src);
                Ok(Some(self.advert(target, h.src, mac, true)))
            }
            _ => Ok(None),
        }
    }

    fn on_advert(
        &mut self,
        h: &ext::Header,
        msg: &[u8],
        eth_src: [u8; 6],
        now_us: u64,
        c: &mut Counters,
    ) -> Result<Option<Out>, Counter> {
        let target = target(msg)?;
        let solicited = msg[4] & 0x40 != 0;
        if solicited && h.dst.is_multicast() {
            return Err(Counter::Ipv6NdpInvalid); // RFC 4861 7.1.2
        }
        let opts = ndp::options(msg).ok_or(Counter::Ipv6NdpInvalid)?;
        if let Some(i) = self.ours(target) {
            return match self.addrs[i].state {
                AddrState::Tentative => {
                    self.addrs[i].state = AddrState::Duplicate { logged: false };
                    Err(Counter::Ipv6DadDuplicates)
                }
                _ => Err(Counter::Ipv6AddressConflicts),
            };
        }
        // Adverts only refresh neighbours we track (the gateway, or asked for).
        let tracked = Some(target) == self.gateway || self.neighbours.get(target).is_some();
        if let Some(mac) = opts.target_ll.or(solicited.then_some(eth_src)) {
            if tracked && self.neighbours.learn(target, mac, now_us) {
                c.add(Counter::Ipv6NeighboursLearned, 1);
            }
        }
        Ok(None)
    }

    fn advert(&self, target: Ipv6Addr, dst: Ipv6Addr, eth_dst: [u8; 6], solicited: bool) -> Out {
        Out {
            eth_src: self.mac,
            eth_dst,
            src: target,
            dst,
            msg: Msg::Advert { target, solicited },
        }
    }

    /// The timers: DAD at start (a probe per address; after `DAD_WAIT_US`
    /// the survivors become preferred and are announced with an unsolicited
    /// NA), then the gateway's resolution. Frames to send go into `out`.
    pub fn tick(&mut self, now_us: u64, out: &mut [Option<Out>; TICK_FRAMES]) {
        if now_us < self.next_tick_us {
            return;
        }
        self.next_tick_us = now_us + TICK_US;
        let mut frames = out.iter_mut();
        let Some(started) = self.dad_started_us else {
            self.dad_started_us = Some(now_us);
            for (a, slot) in self.addrs.iter().zip(&mut frames) {
                let group = icmp::solicited_node(a.ip);
                *slot = Some(Out {
                    eth_src: self.mac,
                    eth_dst: icmp::multicast_mac(group),
                    src: Ipv6Addr::UNSPECIFIED,
                    dst: group,
                    msg: Msg::Solicit {
                        target: a.ip,
                        nonce: self.nonce,
                    },
                });
            }
            return;
        };
        for a in &mut self.addrs {
            if a.state == (AddrState::Duplicate { logged: false }) {
                a.state = AddrState::Duplicate { logged: true };
                log::error!("IPv6 address {} is in use by another node on the link (duplicate address detection): not using it; give the port another address", a.ip);
            }
        }
        if !self.dad_done && now_us >= started + DAD_WAIT_US {
            self.dad_done = true;
            for i in 0..self.addrs.len() {
                if self.addrs[i].state == AddrState::Tentative {
                    self.addrs[i].state = AddrState::Preferred;
                    let ip = self.addrs[i].ip;
                    log::info!("IPv6 address {ip} is ours (no duplicate answered)");
                    let na = self.advert(ip, ALL_NODES, icmp::multicast_mac(ALL_NODES), false);
                    if let Some(slot) = frames.next() {
                        *slot = Some(na);
                    }
                }
            }
        }
        let Some(gw) = self.gateway else { return };
        if !self.dad_done || now_us < self.next_resolve_us {
            return;
        }
        match self.neighbours.get(gw) {
            Some((_, at)) if now_us < at + REFRESH_US => self.next_resolve_us = at + REFRESH_US,
            _ => {
                self.next_resolve_us = now_us + RESOLVE_RETRY_US;
                if let (Some(ns), Some(slot)) = (self.solicit(gw), frames.next()) {
                    *slot = Some(ns);
                }
            }
        }
    }
}

/// An NS or NA's target: there, and not multicast.
fn target(msg: &[u8]) -> Result<Ipv6Addr, Counter> {
    let bytes: [u8; 16] = msg
        .get(8..24)
        .ok_or(Counter::Ipv6NdpInvalid)?
        .try_into()
        .expect("16 bytes");
    let t = Ipv6Addr::from(bytes);
    if t.is_multicast() {
        return Err(Counter::Ipv6NdpInvalid);
    }
    Ok(t)
}

/// An IPv6 frame received on `link`'s port; `answer` false for a copy
/// that another worker answers.
pub fn receive(link: &mut Link, frame: &[u8], answer: bool, now_us: u64, c: &mut Counters) {
    let Some(v6) = link.v6.as_mut() else {
        return;
    };
    if let Some(out) = v6.on_frame(frame, answer, now_us, c) {
        link.send_frame(out.frame_len(), |buf| out.emit(buf, frame));
    }
}

/// `link`'s IPv6 timers (see [`Ipv6Port::tick`]).
pub fn tick(link: &mut Link, now_us: u64) {
    let Some(v6) = link.v6.as_mut() else {
        return;
    };
    let mut out = [None; TICK_FRAMES];
    v6.tick(now_us, &mut out);
    for o in out.iter().flatten() {
        link.send_frame(o.frame_len(), |buf| o.emit(buf, &[]));
    }
}

#[cfg(test)]
mod tests;
