//! Where each received frame goes: to its flow's own socket set, to a new
//! flow for a listener (or a SYN cookie under a flood), to the core that
//! owns it, to smoltcp's stateless answers (ARP, ICMP, RST), or nowhere.

use std::net::{Ipv4Addr, SocketAddr};

use smoltcp::socket::tcp;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, IpAddress, IpProtocol, Ipv4Packet, TcpPacket,
};

use super::{instant, Event, FlowId, Stack};
use crate::dpdk::Mbuf;
use crate::net::admission::Verdict;
use crate::net::counters::Counter;
use crate::net::device::FrameDevice;
use crate::net::flow::FlowKey;
use crate::net::handoff::Handoff;
use crate::net::ratelimit::Rate;
use crate::net::segment;
use crate::net::syncookie::{CookieJar, CookieTuple};

/// Handed-off frames taken per poll.
const HANDOFFS_PER_POLL: usize = 64;
/// Challenge ACKs sent per second at most (RFC 5961 section 10; Linux's
/// `tcp_challenge_ack_limit` is 1000).
const CHALLENGE_ACKS_PER_SECOND: u32 = 1000;

/// What a received frame is, decided before smoltcp sees it.
enum Frame {
    Tcp {
        key: FlowKey,
        syn: bool,
        ack: bool,
        rst: bool,
        /// Where it came from (to glean the neighbour's MAC from a SYN).
        src_mac: EthernetAddress,
    },
    Arp,
    /// For `net::ipv6` when the port has IPv6 addresses; else like `Stateless`.
    Ipv6,
    /// ICMP, broadcasts: smoltcp answers with no socket involved.
    Stateless,
    Drop(Counter),
}

/// A listener's settings that may change while it runs (a config reload).
pub struct ListenSettings {
    pub idle_timeout_us: u64,
    pub allow: Vec<(Ipv4Addr, u8)>,
    pub allow6: crate::net::source6::Allow6,
    pub prefix6: u8,
    pub max_per_source: u32,
    pub conn_rate: Option<Rate>,
    pub exempt: Vec<(Ipv4Addr, u8)>,
    pub exempt6: Vec<(std::net::Ipv6Addr, u8)>,
}

impl Stack {
    /// New settings for listener `index`, for the connections it accepts from
    /// now on: open ones keep their idle timeout, and stay counted against
    /// the per-source limit they were accepted under.
    pub fn retune_listener(&mut self, index: usize, s: ListenSettings) {
        if let Some(l) = self.listeners.get_mut(index) {
            l.idle_timeout_us = s.idle_timeout_us;
            l.allow = s.allow;
            l.allow6 = s.allow6;
            l.prefix6 = s.prefix6;
            l.max_per_source = s.max_per_source;
            l.conn_rate = s.conn_rate;
            l.exempt = s.exempt;
            l.exempt6 = s.exempt6;
        }
    }

    /// A frame from this core's own rx queue (`handed` false) or from
    /// another core's (`handed` true: it is ours or no one's; never pass it on).
    pub(super) fn on_frame(&mut self, port: usize, m: Mbuf, handed: bool, now_us: u64) {
        let p = &self.ports[port];
        let frame = if m.is_chained() {
            Frame::Drop(Counter::DropMalformed)
        } else if p.rx_checksum_offload && crate::dpdk::rx_checksum_bad(m.ol_flags()) {
            Frame::Drop(Counter::DropChecksum)
        } else {
            classify(m.data(), p.ip, p.fleet.as_ref().and_then(|f| f.vip))
        };
        match frame {
            Frame::Tcp {
                key,
                syn,
                ack,
                rst,
                src_mac,
            } => self.on_tcp(port, m, key, (syn, ack, rst), src_mac, handed, now_us),
            Frame::Arp => {
                if !handed {
                    self.copy_to_other_cores(port, &m);
                    if self.ports[port].to_kernel.is_some() {
                        self.copy_to_kernel(port, &m, now_us);
                    }
                }
                self.answer_stateless(port, m, now_us);
                self.wake_connecting(now_us);
            }
            Frame::Ipv6 if self.ports[port].v6.is_some() => {
                let v6 = self.ports[port].v6.as_ref().expect("checked");
                if let Some(t) = super::demux6::classify6(m.data(), v6) {
                    return self.on_tcp6(port, m, t, handed, now_us);
                }
                let Some(m) = self.on_ptb6(port, m, handed) else {
                    return; // a Packet Too Big for one of our flows (taken or counted)
                };
                // Every worker keeps the port's NDP state: multicast and
                // adverts (its smoltcp learns upstreams' MACs) go to all.
                let advert = super::connect6::is_advert(m.data());
                if !handed && (m.data()[0] & 1 != 0 || advert) {
                    self.copy_to_other_cores(port, &m);
                }
                let link = &mut self.ports[port];
                crate::net::ipv6::receive(link, m.data(), !handed, now_us, &mut self.counters);
                if advert {
                    self.learn_advert(port, m, now_us);
                }
            }
            Frame::Stateless | Frame::Ipv6
                if self.ports[port].to_kernel.is_some()
                    && crate::net::exception::kernel_wants(m.data(), p.ip) =>
            {
                self.pass_to_kernel(port, m, now_us)
            }
            Frame::Stateless | Frame::Ipv6 => self.answer_stateless(port, m, now_us),
            Frame::Drop(reason) => self.counters.add(reason, 1),
        }
    }

    /// IPv6 neighbour discovery's timers (DAD, the gateway) on every port.
    pub fn tick_ipv6(&mut self, now_us: u64) {
        for link in &mut self.ports {
            crate::net::ipv6::tick(link, now_us);
        }
    }

    /// Hands a frame that is not ZProxy's to the port's exception path.
    pub(super) fn pass_to_kernel(&mut self, port: usize, m: Mbuf, now_us: u64) {
        if let Some(k) = &mut self.ports[port].to_kernel {
            k.send(m, now_us, &mut self.counters);
        }
    }

    /// Sends what the kernel sent on ports whose control core has no tx
    /// queue of its own (this worker transmits for it; see `ExceptionSpec`).
    pub(super) fn take_from_kernel(&mut self) -> usize {
        let mut sent = 0;
        for p in self.ports.iter_mut() {
            let Some(k) = &p.to_kernel else { continue };
            while sent < HANDOFFS_PER_POLL {
                let Some(m) = k.from_kernel() else { break };
                p.tx.push_frame(m);
                sent += 1;
            }
        }
        self.counters.add(Counter::ExceptionFromKernel, sent as u64);
        sent
    }

    /// The kernel keeps its own neighbour table: give it a copy of ARP too.
    fn copy_to_kernel(&mut self, port: usize, m: &Mbuf, now_us: u64) {
        let Some(mut copy) = self.pool.alloc() else {
            return;
        };
        let Some(buf) = copy.append(m.data().len()) else {
            return;
        };
        buf.copy_from_slice(m.data());
        self.pass_to_kernel(port, copy, now_us);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_tcp(
        &mut self,
        port: usize,
        m: Mbuf,
        key: FlowKey,
        (syn, ack, rst): (bool, bool, bool),
        src_mac: EthernetAddress,
        handed: bool,
        now_us: u64,
    ) {
        let from_peer = self.came_from_peer(port, src_mac, handed);
        if let Some(f) = self.flows.lookup(&key) {
            return self.deliver(f, port, m, rst, now_us);
        }
        if !handed && self.inboxes.len() > 1 {
            let owner = self.owner(port, &key);
            if owner != self.index {
                return self.hand_off(owner, port, m, false);
            }
        }
        if self.ports[port].to_kernel.is_some()
            && !self.listening(port, key.local_port)
            && !self.time_wait.contains(&key)
        {
            // No flow, no listener: the kernel's (its SSH, BGP, own connections).
            return self.pass_to_kernel(port, m, now_us);
        }
        let pure_syn = syn && !ack;
        let software_checksum = !self.ports[port].rx_checksum_offload;
        if software_checksum && !rst && !checksums_ok(m.data()) {
            // Before any state is made for it (smoltcp would drop it later).
            return self.counters.add(Counter::DropChecksum, 1);
        }
        if !pure_syn {
            let mut m = m;
            for step in orphan_steps(self.time_wait.contains(&key)) {
                m = match step {
                    Orphan::Cookie => match self.open_from_cookie(port, m, key, now_us) {
                        Some(m) => m,
                        None => return, // opened (or its ACK dropped for room)
                    },
                    Orphan::TimeWait => {
                        // A late segment of a closed connection: not worth a RST.
                        self.counters.add(Counter::DropTimeWait, 1);
                        let ends = (
                            SocketAddr::new(key.local_ip.into(), key.local_port),
                            SocketAddr::new(key.remote_ip.into(), key.remote_port),
                        );
                        return self.ack_again_in_time_wait(port, m, ends);
                    }
                    Orphan::SecondChance => {
                        return self.second_chance(port, m, key, from_peer, now_us);
                        // to the peers, or a RST
                    }
                };
            }
            return;
        }
        // Under a SYN flood (cookies) sources are not trusted yet; a peer's
        // frame carries the peer's MAC, not the client's.
        if self.half_open < self.syn_backlog && !from_peer {
            self.glean_neighbour(port, key.remote_ip, src_mac, now_us);
        }
        let listener = self
            .listeners
            .iter()
            .position(|l| l.port_index == port && l.tcp_port == key.local_port);
        if listener.is_some_and(|l| !self.listeners[l].allows(key.remote_ip)) {
            self.counters.add(Counter::RefusedAcl, 1);
            return self.answer_stateless(port, m, now_us); // RST: not an allowed client network
        }
        if let Some(l) = listener.filter(|&l| !self.listeners[l].exempts(key.remote_ip)) {
            let max = self.listeners[l].max_per_source;
            if max > 0
                && self
                    .per_source
                    .get(&key.remote_ip)
                    .is_some_and(|&n| n >= max)
            {
                self.counters.add(Counter::RefusedPerSource, 1);
                return self.answer_stateless(port, m, now_us); // RST: this address holds enough
            }
            if !self.syn_admitted(l, key.remote_ip, now_us) {
                self.counters.add(Counter::RefusedRateLimit, 1);
                return self.answer_stateless(port, m, now_us); // RST: over its connection rate
            }
        }
        let Some(listener) = listener.filter(|_| !self.draining) else {
            if listener.is_some() {
                // Before the router has heard the withdrawal: a peer opens it.
                return self.syn_while_draining(port, m, key, from_peer, now_us);
            }
            return self.answer_stateless(port, m, now_us); // RST: closed port
        };
        // Refused cheaply and early, and silently: its TCP asks again later.
        match self.admit_syn(listener, now_us) {
            Verdict::Accept => {}
            Verdict::Cookie => {
                let ends = (
                    SocketAddr::new(key.local_ip.into(), key.local_port),
                    SocketAddr::new(key.remote_ip.into(), key.remote_port),
                );
                return self.send_cookie(port, m, &key, ends, now_us);
            }
            Verdict::Drop(counter) => return self.counters.add(counter, 1),
        }
        let Some(f) = self.accept(port, key, listener, now_us) else {
            return; // no slot after all (counted): dropped, as above
        };
        self.flows.get_mut(f).half_open = true;
        self.half_open += 1;
        self.ingress(f, m, now_us);
    }

    /// A listener of ours takes connections to `tcp_port` on `port`.
    pub(super) fn listening(&self, port: usize, tcp_port: u16) -> bool {
        self.listeners
            .iter()
            .any(|l| l.port_index == port && l.tcp_port == tcp_port)
    }

    /// Within listener `l`'s `conn_rate` for `client` (a fixed-size table:
    /// a flood of spoofed sources cannot grow it; see `net::ratelimit`).
    fn syn_admitted(&mut self, l: usize, client: Ipv4Addr, now_us: u64) -> bool {
        let Some(rate) = self.listeners[l].conn_rate else {
            return true;
        };
        self.syn_limiter
            .check(l as u32, client, rate, now_us)
            .is_ok()
    }

    /// A segment of a flow this worker holds (either family): a RST only
    /// if it carries the exact sequence number, then to the flow's socket.
    pub(super) fn deliver(&mut self, f: FlowId, port: usize, m: Mbuf, rst: bool, now_us: u64) {
        if rst {
            if !self.rst_acceptable(f, port, &m, now_us) {
                return;
            }
            self.flows.get_mut(f).rst_seen = true;
        }
        self.ingress(f, m, now_us);
        self.mark_ready(f)
    }

    /// RFC 5961 3.2: a RST is taken only when its sequence number is exactly
    /// the next one expected. One elsewhere in the window gets a challenge
    /// ACK (a peer that really reset answers it with an exact RST); one
    /// outside the window is dropped. smoltcp takes any in-window RST.
    pub(super) fn rst_acceptable(&mut self, f: FlowId, port: usize, m: &Mbuf, now_us: u64) -> bool {
        let flow = self.flows.get_mut(f);
        let sent = flow.sent;
        let handshake = matches!(
            flow.socket().state(),
            tcp::State::SynSent | tcp::State::Listen
        );
        let window = flow.socket().recv_capacity() as u32;
        let verdict = super::rst::check(sent, handshake, window, m.data());
        if verdict != super::rst::Rst::Take {
            self.counters.add(Counter::RstChallenged, 1);
        }
        if let super::rst::Rst::Challenge(seg) = verdict {
            if self.challenge_ack_allowed(now_us) {
                // Either family: the flow's own ends, not the slot's IPv4 key.
                let ends = self.local(f).zip(self.remote(f)).expect("live flow");
                self.send_ack(port, ends, seg.src_mac, sent.snd_nxt, sent.rcv_nxt);
            }
        }
        verdict == super::rst::Rst::Take
    }

    /// A bare ACK from `local` to `remote`, built here (not by smoltcp).
    pub(super) fn send_ack(
        &mut self,
        port: usize,
        (local, remote): (SocketAddr, SocketAddr),
        to: EthernetAddress,
        seq: u32,
        ack: u32,
    ) {
        let p = &mut self.ports[port];
        p.send_segment(&segment::Build {
            src_mac: p.mac,
            dst_mac: to,
            src: (local.ip(), local.port()),
            dst: (remote.ip(), remote.port()),
            syn: false,
            seq,
            ack: Some(ack),
            window: self.own_window,
            mss: None,
        });
    }

    fn challenge_ack_allowed(&mut self, now_us: u64) -> bool {
        if now_us >= self.challenge_window_end_us {
            self.challenge_window_end_us = now_us + 1_000_000;
            self.challenge_acks_left = CHALLENGE_ACKS_PER_SECOND;
        }
        if self.challenge_acks_left == 0 {
            return false;
        }
        self.challenge_acks_left -= 1;
        true
    }

    /// A flow for a new connection to `listener`, its socket listening for
    /// the SYN; `None` (counted) when no slot is spare (admission keeps
    /// this from happening). A listener that
    /// reserves a peer needs two: its own and one for its upstream, so a
    /// table full of clients still lets each of them reach an upstream.
    fn accept(&mut self, port: usize, key: FlowKey, listener: usize, now_us: u64) -> Option<u32> {
        let reserve = self.listeners[listener].reserve_peer;
        let needed = if reserve { 2 } else { 1 };
        while self.spare_slots() < needed && self.evict_one(now_us) {}
        if self.spare_slots() < needed {
            // Refused: dropped rather than hold state.
            self.counters.add(Counter::FlowsRefused, 1);
            return None;
        }
        self.time_wait.remove(&key);
        let f = self.flows.insert(key).expect("a spare slot is free");
        self.counters.add(Counter::FlowsAccepted, 1);
        let l = &self.listeners[listener];
        let idle_timeout_us = l.idle_timeout_us;
        let counted = l.max_per_source > 0 && !l.exempts(key.remote_ip);
        if counted {
            *self.per_source.entry(key.remote_ip).or_insert(0) += 1;
        }
        self.reset_flow(f, port, Some(listener), idle_timeout_us, now_us);
        self.flows.get_mut(f).per_source = counted;
        if reserve {
            self.reserve(f);
        }
        let sock = self.flows.get_mut(f).socket();
        sock.listen(key.local_port)
            .expect("a released slot's socket is closed");
        // Resending unacknowledged data for longer than this is pointless.
        sock.set_timeout(Some(smoltcp::time::Duration::from_micros(idle_timeout_us)));
        self.events.push_back(Event::Accepted { flow: f, listener });
        self.mark_dirty(f);
        Some(f)
    }

    /// Under a SYN flood: answers a SYN with a SYN-ACK whose sequence number
    /// is a cookie, and keeps nothing. `key` is the family's tuple (the
    /// cookie's MAC input and MSS table), `ends` ours and the client's.
    pub(super) fn send_cookie<K: CookieTuple>(
        &mut self,
        port: usize,
        m: Mbuf,
        key: &K,
        (local, remote): (SocketAddr, SocketAddr),
        now_us: u64,
    ) {
        let Some(syn) = segment::parse(m.data()) else {
            return self.counters.add(Counter::DropMalformed, 1);
        };
        drop(m);
        let p = &mut self.ports[port];
        let headers = if local.is_ipv6() { 14 + 60 } else { 14 + 40 };
        let our_mss = (p.caps.max_transmission_unit - headers) as u16;
        let client_mss = syn.mss.unwrap_or(536).min(our_mss);
        p.send_segment(&segment::Build {
            src_mac: p.mac,
            dst_mac: syn.src_mac,
            src: (local.ip(), local.port()),
            dst: (remote.ip(), remote.port()),
            syn: true,
            seq: self.cookies.make(key, syn.seq, client_mss, now_us),
            ack: Some(syn.seq.wrapping_add(1)),
            window: self.own_window,
            mss: Some(our_mss),
        });
        self.cookies_valid_until_us = now_us + CookieJar::lifetime_us();
        self.counters.add(Counter::SynCookiesSent, 1);
    }

    /// A FIN again in TIME-WAIT: our last ACK was lost, and the peer waits
    /// in LAST-ACK until one arrives (RFC 9293 3.10.7.4). The segment has
    /// all it takes: its ACK field is our next sequence number.
    pub(super) fn ack_again_in_time_wait(
        &mut self,
        port: usize,
        m: Mbuf,
        ends: (SocketAddr, SocketAddr),
    ) {
        let Some(fin) =
            segment::parse(m.data()).filter(|s| s.fin && s.ack_flag && !s.syn && !s.rst)
        else {
            return;
        };
        drop(m);
        let ack = fin.seq.wrapping_add(fin.payload_len).wrapping_add(1);
        self.send_ack(port, ends, fin.src_mac, fin.ack, ack);
        self.counters.add(Counter::TimeWaitAcks, 1);
    }

    /// An ACK for no flow: when it carries a cookie this core sent, opens
    /// the connection it completes (replaying the handshake into a fresh
    /// socket); otherwise gives the frame back, to be answered with a RST.
    fn open_from_cookie(
        &mut self,
        port: usize,
        m: Mbuf,
        key: FlowKey,
        now_us: u64,
    ) -> Option<Mbuf> {
        if now_us >= self.cookies_valid_until_us {
            return Some(m);
        }
        let Some(seg) = segment::parse(m.data()).filter(|s| s.ack_flag && !s.syn && !s.rst) else {
            return Some(m);
        };
        let client_isn = seg.seq.wrapping_sub(1);
        let cookie = seg.ack.wrapping_sub(1);
        let Some(mss) = self.cookies.check(&key, client_isn, cookie, now_us) else {
            return Some(m);
        };
        let Some(listener) = self.listeners.iter().position(|l| {
            l.port_index == port && l.tcp_port == key.local_port && l.allows(key.remote_ip)
        }) else {
            return Some(m);
        };
        if self.draining {
            return Some(m);
        }
        // This client holds an open connection: never a RST for want of room.
        if let Verdict::Drop(counter) = self.admit_cookie_ack(listener, now_us) {
            self.counters.add(counter, 1);
            return None;
        }
        let f = self.accept(port, key, listener, now_us)?;
        // The client proved its address: smoltcp may send to it straight away.
        self.glean_neighbour(port, key.remote_ip, seg.src_mac, now_us);
        let client = SocketAddr::new(key.remote_ip.into(), key.remote_port);
        let us = SocketAddr::new(key.local_ip.into(), key.local_port);
        self.replay_cookie(f, port, m, &seg, (client, us), (mss, cookie), now_us)
    }

    /// Feeds a segment built here to `f`'s socket.
    pub(super) fn ingress_built(
        &mut self,
        f: FlowId,
        segment: &segment::Build,
        now_us: u64,
    ) -> Option<()> {
        let mut m = self.pool.alloc()?;
        segment.emit(m.append(segment.frame_len())?);
        self.ingress(f, m, now_us);
        Some(())
    }

    /// Lets `f`'s socket send its SYN-ACK into the capture queue and
    /// returns the ISN it chose; nothing reaches the wire.
    pub(super) fn capture_syn_ack(&mut self, f: FlowId, now_us: u64) -> Option<u32> {
        let flow = self.flows.get_mut(f);
        let p = &mut self.ports[flow.port];
        let mut dev = FrameDevice::new(None, &mut p.capture, &p.caps, 0);
        p.iface
            .poll_egress(instant(now_us), &mut dev, &mut flow.sockets);
        p.capture
            .take_pending()
            .filter_map(|m| segment::parse(m.data()))
            .find(|s| s.syn && s.ack_flag)
            .map(|s| s.seq)
    }

    /// Hands a frame to the flow's own socket set.
    pub(super) fn ingress(&mut self, f: FlowId, mut m: Mbuf, now_us: u64) {
        let flow = self.flows.get_mut(f);
        flow.last_rx_us = now_us;
        flow.rx_end.record(m.data());
        if flow.seq_delta != 0 {
            segment::shift_ack(m.data_mut(), flow.seq_delta);
        }
        let p = &mut self.ports[flow.port];
        let mut dev = FrameDevice {
            rx: Some(m),
            tx: &mut p.tx,
            caps: &p.caps,
            seq_delta: flow.seq_delta,
            sent: Some(&mut flow.sent),
            path_mtu: flow.path_mtu,
        };
        p.iface
            .poll_ingress_single(instant(now_us), &mut dev, &mut flow.sockets);
    }

    /// The core that owns `key`'s flow: the one polling the queue RSS puts
    /// it on. Local ports of connections we open are chosen so that replies
    /// come back to the core that opened them (`free_local_port`); where the
    /// device spreads frames otherwise (veth), they are handed over.
    fn owner(&self, port: usize, key: &FlowKey) -> usize {
        usize::from(self.ports[port].steering.queue(
            key.remote_ip,
            key.local_ip,
            key.remote_port,
            key.local_port,
        ))
    }

    pub(super) fn hand_off(&mut self, owner: usize, port: usize, mbuf: Mbuf, arp_copy: bool) {
        match self.inboxes[owner].push(Handoff {
            port,
            mbuf,
            arp_copy,
        }) {
            Ok(()) => self.counters.add(Counter::HandoffsOut, 1),
            // Full: the frame is dropped (freed with the rejected Handoff); TCP resends.
            Err(_) => self.counters.add(Counter::HandoffDrops, 1),
        }
    }

    /// Every core keeps its own neighbour cache: give each a copy of ARP.
    fn copy_to_other_cores(&mut self, port: usize, m: &Mbuf) {
        let me = self.index;
        for owner in (0..self.inboxes.len()).filter(|&w| w != me) {
            let Some(mut copy) = self.pool.alloc() else {
                return;
            };
            let Some(buf) = copy.append(m.data().len()) else {
                return;
            };
            buf.copy_from_slice(m.data());
            self.hand_off(owner, port, copy, true);
        }
    }

    /// Frames other cores passed to this one.
    pub(super) fn take_handoffs(&mut self, now_us: u64) -> usize {
        let mut taken = 0;
        while taken < HANDOFFS_PER_POLL {
            let Some(h) = self.inboxes[self.index].pop() else {
                break;
            };
            taken += 1;
            self.counters.add(Counter::HandoffsIn, 1);
            self.on_frame(h.port, h.mbuf, true, now_us);
        }
        taken
    }

    /// Lets smoltcp answer a frame that belongs to no flow.
    pub(super) fn answer_stateless(&mut self, port: usize, m: Mbuf, now_us: u64) {
        let p = &mut self.ports[port];
        let mut dev = FrameDevice::new(Some(m), &mut p.tx, &p.caps, 0);
        p.iface
            .poll_ingress_single(instant(now_us), &mut dev, &mut self.no_sockets);
    }

    /// Tells smoltcp the MAC a SYN came from, as an ARP reply would (see `Link::glean`).
    fn glean_neighbour(&mut self, port: usize, ip: Ipv4Addr, mac: EthernetAddress, now_us: u64) {
        if let Some(arp) = self.ports[port].glean(ip, mac, now_us, &self.pool) {
            self.answer_stateless(port, arp, now_us);
        }
    }

    /// An ARP answer arrived: connects waiting for it can send their SYN now.
    pub(super) fn wake_connecting(&mut self, now_us: u64) {
        let mut i = 0;
        while i < self.connecting.len() {
            let f = self.connecting[i];
            if self.flows.key(f).is_some() && self.flows.get_mut(f).connect_deadline_us != 0 {
                self.finish(f, now_us);
                i += 1;
            } else {
                self.connecting.swap_remove(i);
            }
        }
    }
}

/// What may become of a segment (not a pure SYN) that no flow owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Orphan {
    /// The ACK of a SYN cookie: opens the connection.
    Cookie,
    /// A late segment of a connection in TIME-WAIT: dropped.
    TimeWait,
    /// Another core's or a fleet peer's, else answered with a RST.
    SecondChance,
}

/// What to try for such a segment, in order. The cookie comes first even
/// in TIME-WAIT: a new connection's SYN on a 4-tuple still in TIME-WAIT may
/// have got a cookie (which, unlike an accepted SYN, keeps no state and so
/// leaves the entry), and the ACK that completes it must open it. Taken for
/// a late segment of the old connection, every segment of the new one was
/// dropped and its client waited out its retransmissions (1 s, 3 s...):
/// with 10,000 clients, more than a connection in twenty.
fn orphan_steps(in_time_wait: bool) -> &'static [Orphan] {
    if in_time_wait {
        &[Orphan::Cookie, Orphan::TimeWait]
    } else {
        &[Orphan::Cookie, Orphan::SecondChance]
    }
}

/// The IPv4 header and TCP checksums of a frame `classify` found to be
/// TCP/IPv4 (checked in software when the NIC does not).
fn checksums_ok(data: &[u8]) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(data) else {
        return false;
    };
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return false;
    };
    let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else {
        return false;
    };
    ip.verify_checksum()
        && tcp.verify_checksum(
            &IpAddress::Ipv4(ip.src_addr()),
            &IpAddress::Ipv4(ip.dst_addr()),
        )
}

/// Decides what a frame is from its headers alone (ours: to the port's
/// address or to the fleet's `vip`). After `new_checked`, no accessor panics.
fn classify(data: &[u8], our_ip: Ipv4Addr, vip: Option<Ipv4Addr>) -> Frame {
    let Ok(eth) = EthernetFrame::new_checked(data) else {
        return Frame::Drop(Counter::DropMalformed);
    };
    match eth.ethertype() {
        EthernetProtocol::Ipv4 => {}
        EthernetProtocol::Arp => return Frame::Arp,
        EthernetProtocol::Ipv6 => return Frame::Ipv6,
        _ => return Frame::Stateless,
    }
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return Frame::Drop(Counter::DropMalformed);
    };
    if ip.dst_addr() != our_ip && Some(ip.dst_addr()) != vip {
        // Broadcast and multicast may still concern us; unicast to others does not.
        return if ip.dst_addr().is_broadcast() || ip.dst_addr().is_multicast() {
            Frame::Stateless
        } else {
            Frame::Drop(Counter::DropNotForUs)
        };
    }
    if ip.next_header() != IpProtocol::Tcp {
        return Frame::Stateless;
    }
    if ip.more_frags() || ip.frag_offset() != 0 {
        return Frame::Drop(Counter::DropMalformed);
    }
    let Ok(tcp) = TcpPacket::new_checked(ip.payload()) else {
        return Frame::Drop(Counter::DropMalformed);
    };
    Frame::Tcp {
        key: FlowKey {
            remote_ip: ip.src_addr(),
            remote_port: tcp.src_port(),
            local_ip: ip.dst_addr(),
            local_port: tcp.dst_port(),
        },
        syn: tcp.syn(),
        ack: tcp.ack(),
        rst: tcp.rst(),
        src_mac: eth.src_addr(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal Ethernet/IPv4/TCP frame from 10.0.0.1:40000 to `dst`:80,
    /// with correct checksums.
    fn tcp_frame(dst: [u8; 4], flags: u8, frag: u16) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        let ip = &mut f[14..34];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&40u16.to_be_bytes());
        ip[6..8].copy_from_slice(&frag.to_be_bytes());
        ip[8] = 64;
        ip[9] = 6;
        ip[12..16].copy_from_slice(&[10, 0, 0, 1]);
        ip[16..20].copy_from_slice(&dst);
        let tcp = &mut f[34..54];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = flags;
        let mut ip = Ipv4Packet::new_unchecked(&mut f[14..]);
        ip.fill_checksum();
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let mut tcp = TcpPacket::new_unchecked(&mut f[34..]);
        tcp.fill_checksum(&IpAddress::Ipv4(src), &IpAddress::Ipv4(dst));
        f
    }

    const US: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    fn classify_us(data: &[u8], us: Ipv4Addr) -> Frame {
        classify(data, us, None)
    }

    #[test]
    fn a_cookies_ack_opens_its_connection_even_in_time_wait() {
        assert_eq!(orphan_steps(true)[0], Orphan::Cookie);
        assert_eq!(orphan_steps(true).last(), Some(&Orphan::TimeWait));
        assert_eq!(orphan_steps(false), &[Orphan::Cookie, Orphan::SecondChance]);
    }

    #[test]
    fn the_fleets_vip_is_ours_too() {
        let vip = Some(Ipv4Addr::new(10, 99, 0, 1));
        let to_vip = tcp_frame([10, 99, 0, 1], 0x10, 0);
        assert!(matches!(classify(&to_vip, US, vip), Frame::Tcp { .. }));
        assert!(matches!(
            classify(&to_vip, US, None),
            Frame::Drop(Counter::DropNotForUs)
        ));
        assert!(matches!(
            classify(&tcp_frame([10, 0, 0, 2], 0x10, 0), US, vip),
            Frame::Tcp { .. }
        ));
    }

    #[test]
    fn classifies_syn_to_us() {
        match classify_us(&tcp_frame([10, 0, 0, 2], 0x02, 0), US) {
            Frame::Tcp {
                key, syn, ack, rst, ..
            } => {
                assert!(syn && !ack && !rst);
                assert_eq!(key.remote_port, 40000);
                assert_eq!(key.local_port, 80);
                assert_eq!(key.remote_ip, Ipv4Addr::new(10, 0, 0, 1));
            }
            _ => panic!("not classified as TCP"),
        }
    }

    #[test]
    fn drops_what_is_not_ours_or_broken() {
        assert!(matches!(
            classify_us(&tcp_frame([10, 0, 0, 9], 0x02, 0), US),
            Frame::Drop(Counter::DropNotForUs)
        ));
        assert!(matches!(
            classify_us(&tcp_frame([10, 0, 0, 2], 0x02, 0x2000), US),
            Frame::Drop(Counter::DropMalformed)
        ));
        let full = tcp_frame([10, 0, 0, 2], 0x02, 0);
        for cut in [0, 10, 14, 20, 33, 40, 53] {
            assert!(
                matches!(
                    classify_us(&full[..cut], US),
                    Frame::Drop(Counter::DropMalformed)
                ),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn arp_and_broadcast_go_to_the_stack() {
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(matches!(classify_us(&arp, US), Frame::Arp));
        assert!(matches!(
            classify_us(&tcp_frame([255, 255, 255, 255], 0x02, 0), US),
            Frame::Stateless
        ));
    }

    #[test]
    fn checksums_are_verified_before_a_flow_exists() {
        let good = tcp_frame([10, 0, 0, 2], 0x02, 0);
        assert!(checksums_ok(&good));
        let mut bad_tcp = good.clone();
        bad_tcp[34 + 16] ^= 0xff;
        assert!(!checksums_ok(&bad_tcp));
        let mut bad_ip = good.clone();
        bad_ip[14 + 10] ^= 0xff;
        assert!(!checksums_ok(&bad_ip));
    }
}
