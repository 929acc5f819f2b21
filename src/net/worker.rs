//! One polling core: rx burst per port queue, demux each frame to its flow's
//! own socket set, run the application, transmit, and poll only the flows
//! whose timers are due (DPDK l3fwd's loop shape, with smoltcp per flow).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use smoltcp::iface::{
    Config as IfaceConfig, Interface, PollResult, SocketHandle, SocketSet, SocketStorage,
};
use smoltcp::phy::DeviceCapabilities;
use smoltcp::socket::tcp;
use smoltcp::time::{Duration, Instant};
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, HardwareAddress, IpCidr, IpProtocol,
    Ipv4Packet, TcpPacket,
};

use super::device::{self, FrameDevice, TxQueue, BURST};
use super::flow::{FlowKey, FlowTable, TimeWait};
use super::timers::Timers;
use crate::app::responder::{Responder, ResponderState};
use crate::dpdk::{rdtsc, tsc_hz, Mbuf, MbufBurst, Mempool, PortQueue};

/// smoltcp's TIME-WAIT length, kept here as compact state instead.
const TIME_WAIT_US: u64 = 10_000_000;
/// Most due timers handled per loop iteration, so rx is never starved.
const TIMERS_PER_ITERATION: usize = 256;
/// `poll_egress` sends one segment per socket per call; bound the loop.
const EGRESS_ROUNDS: usize = 64;
/// How often counters are published for the control thread.
const PUBLISH_US: u64 = 100_000;
/// Longest the worker waits at exit for the NIC to take and complete its last frames.
const SHUTDOWN_DRAIN: std::time::Duration = std::time::Duration::from_millis(20);
/// smoltcp treats instant 0 specially ("send now"); start the clock later.
const CLOCK_ORIGIN_US: u64 = 1_000_000;

/// One port as this worker sees it.
pub struct PortSpec {
    pub queue: PortQueue,
    pub mac: [u8; 6],
    pub address: (Ipv4Addr, u8),
    pub gateway: Option<Ipv4Addr>,
    pub ip_mtu: usize,
    pub rx_checksum_offload: bool,
}

/// A TCP listener on one of the worker's ports.
pub struct ListenerSpec {
    pub port_index: usize,
    pub tcp_port: u16,
    pub responder: Arc<Responder>,
    pub idle_timeout_us: u64,
}

pub struct WorkerSpec {
    pub ports: Vec<PortSpec>,
    pub listeners: Vec<ListenerSpec>,
    pub max_flows: usize,
    pub socket_rx_buffer: usize,
    pub socket_tx_buffer: usize,
    pub tx_drain_us: u64,
    pub pool: Arc<Mempool>,
    /// Seed for smoltcp's ISNs and ports (must differ per run).
    pub random_seed: u64,
}

/// Per-worker counters; the worker owns plain copies and publishes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Counter {
    RxFrames,
    TxFrames,
    TxDropped,
    DropNotForUs,
    DropMalformed,
    DropChecksum,
    DropTimeWait,
    FlowsAccepted,
    FlowsRefused,
    FlowsClosed,
    FlowsTimedOut,
    FlowsActive,
    TimeWaitEntries,
    Requests,
    BadRequests,
    BusyCycles,
    TotalCycles,
}

impl Counter {
    pub const ALL: [Counter; 17] = [
        Counter::RxFrames,
        Counter::TxFrames,
        Counter::TxDropped,
        Counter::DropNotForUs,
        Counter::DropMalformed,
        Counter::DropChecksum,
        Counter::DropTimeWait,
        Counter::FlowsAccepted,
        Counter::FlowsRefused,
        Counter::FlowsClosed,
        Counter::FlowsTimedOut,
        Counter::FlowsActive,
        Counter::TimeWaitEntries,
        Counter::Requests,
        Counter::BadRequests,
        Counter::BusyCycles,
        Counter::TotalCycles,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Counter::RxFrames => "rx_frames",
            Counter::TxFrames => "tx_frames",
            Counter::TxDropped => "tx_dropped",
            Counter::DropNotForUs => "drop_not_for_us",
            Counter::DropMalformed => "drop_malformed",
            Counter::DropChecksum => "drop_bad_checksum",
            Counter::DropTimeWait => "drop_time_wait",
            Counter::FlowsAccepted => "flows_accepted",
            Counter::FlowsRefused => "flows_refused",
            Counter::FlowsClosed => "flows_closed",
            Counter::FlowsTimedOut => "flows_timed_out",
            Counter::FlowsActive => "flows_active",
            Counter::TimeWaitEntries => "time_wait_entries",
            Counter::Requests => "requests",
            Counter::BadRequests => "bad_requests",
            Counter::BusyCycles => "busy_cycles",
            Counter::TotalCycles => "total_cycles",
        }
    }
}

const N_COUNTERS: usize = Counter::ALL.len();

/// Counters as published for other threads (relaxed atomics, written only
/// by the owning worker).
#[derive(Default)]
pub struct SharedCounters([AtomicU64; N_COUNTERS]);

impl SharedCounters {
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize].load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        Counter::ALL
            .iter()
            .map(|&c| (c.name(), self.get(c)))
            .collect()
    }
}

struct PortState {
    rx: PortQueue,
    tx: TxQueue,
    iface: Interface,
    caps: DeviceCapabilities,
    ip: Ipv4Addr,
    rx_checksum_offload: bool,
}

struct Flow {
    sockets: SocketSet<'static>,
    handle: SocketHandle,
    port: usize,
    listener: usize,
    app: ResponderState,
    /// Last time the flow received a frame (for the idle timeout).
    last_rx_us: u64,
}

/// What a received frame is, decided before smoltcp sees it.
enum Frame {
    Tcp {
        key: FlowKey,
        syn: bool,
        ack: bool,
    },
    /// ARP, ICMP, broadcasts: smoltcp answers with no socket involved.
    Stateless,
    Drop(Counter),
}

pub struct Worker {
    ports: Vec<PortState>,
    listeners: Vec<ListenerSpec>,
    flows: FlowTable<Flow>,
    timers: Timers,
    time_wait: TimeWait,
    /// A socket set with no sockets: frames without a flow get smoltcp's
    /// stateless answers (ARP reply, echo reply, RST).
    no_sockets: SocketSet<'static>,
    scratch: Box<[u8]>,
    counters: [u64; N_COUNTERS],
    shared: Arc<SharedCounters>,
    clock: std::time::Instant,
}

impl Worker {
    /// Builds every flow slot (sockets and buffers) up front; run this on the
    /// worker's own core so the memory is local to it.
    pub fn new(spec: WorkerSpec, shared: Arc<SharedCounters>) -> Worker {
        let clock = std::time::Instant::now();
        let drain_cycles = spec.tx_drain_us * tsc_hz() / 1_000_000;
        let ports = spec
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let caps = device::capabilities(p.ip_mtu, p.rx_checksum_offload);
                let mut tx = TxQueue::new(p.queue, spec.pool.clone(), drain_cycles);
                let mut config =
                    IfaceConfig::new(HardwareAddress::Ethernet(EthernetAddress(p.mac)));
                config.random_seed =
                    spec.random_seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
                let mut dev = FrameDevice {
                    rx: None,
                    tx: &mut tx,
                    caps: &caps,
                };
                let mut iface = Interface::new(
                    config,
                    &mut dev,
                    Instant::from_micros(CLOCK_ORIGIN_US as i64),
                );
                iface.update_ip_addrs(|addrs| {
                    addrs
                        .push(IpCidr::new(p.address.0.into(), p.address.1))
                        .expect("one address per port");
                });
                if let Some(gw) = p.gateway {
                    iface
                        .routes_mut()
                        .add_default_ipv4_route(gw)
                        .expect("one default route");
                }
                PortState {
                    rx: p.queue,
                    tx,
                    iface,
                    caps,
                    ip: p.address.0,
                    rx_checksum_offload: p.rx_checksum_offload,
                }
            })
            .collect();
        let (rx_len, tx_len) = (spec.socket_rx_buffer, spec.socket_tx_buffer);
        let flows = FlowTable::new(spec.max_flows, || {
            let socket = tcp::Socket::new(
                tcp::SocketBuffer::new(vec![0u8; rx_len]),
                tcp::SocketBuffer::new(vec![0u8; tx_len]),
            );
            let mut sockets = SocketSet::new(vec![SocketStorage::EMPTY]);
            let handle = sockets.add(socket);
            Flow {
                sockets,
                handle,
                port: 0,
                listener: 0,
                app: ResponderState::default(),
                last_rx_us: 0,
            }
        });
        Worker {
            ports,
            listeners: spec.listeners,
            timers: Timers::new(spec.max_flows),
            time_wait: TimeWait::new(spec.max_flows * 8, TIME_WAIT_US),
            flows,
            no_sockets: SocketSet::new(Vec::new()),
            scratch: vec![0u8; rx_len].into_boxed_slice(),
            counters: [0; N_COUNTERS],
            shared,
            clock,
        }
    }

    /// Polls until `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool) {
        let mut rx = MbufBurst::<BURST>::default();
        let mut last_publish_us = 0;
        let mut last_tsc = rdtsc();
        while !stop.load(Ordering::Relaxed) {
            let now_us = self.now_us();
            let mut work = 0;
            for p in 0..self.ports.len() {
                let n = self.ports[p].rx.rx_burst(&mut rx);
                work += n;
                self.counters[Counter::RxFrames as usize] += n as u64;
                for m in rx.drain() {
                    self.on_frame(p, m, now_us);
                }
            }
            work += self.run_timers(now_us);
            self.time_wait.expire(now_us);
            let tsc = rdtsc();
            for port in &mut self.ports {
                port.tx.flush_if_due(tsc, work == 0);
            }
            let cycles = tsc.wrapping_sub(last_tsc);
            last_tsc = tsc;
            self.counters[Counter::TotalCycles as usize] += cycles;
            if work > 0 {
                self.counters[Counter::BusyCycles as usize] += cycles;
            }
            if now_us - last_publish_us >= PUBLISH_US {
                last_publish_us = now_us;
                self.publish();
            }
        }
        for port in &mut self.ports {
            port.tx.drain(SHUTDOWN_DRAIN);
        }
        self.publish();
    }

    fn now_us(&self) -> u64 {
        CLOCK_ORIGIN_US + self.clock.elapsed().as_micros() as u64
    }

    fn publish(&mut self) {
        self.counters[Counter::FlowsActive as usize] = self.flows.active() as u64;
        self.counters[Counter::TimeWaitEntries as usize] = self.time_wait.len() as u64;
        self.counters[Counter::TxFrames as usize] = self.ports.iter().map(|p| p.tx.sent).sum();
        self.counters[Counter::TxDropped as usize] = self.ports.iter().map(|p| p.tx.dropped).sum();
        for (i, v) in self.counters.iter().enumerate() {
            self.shared.0[i].store(*v, Ordering::Relaxed);
        }
    }

    #[inline]
    fn count(&mut self, c: Counter) {
        self.counters[c as usize] += 1;
    }

    fn on_frame(&mut self, port: usize, m: Mbuf, now_us: u64) {
        let p = &self.ports[port];
        let frame = if m.is_chained() {
            Frame::Drop(Counter::DropMalformed)
        } else if p.rx_checksum_offload && checksum_bad(m.ol_flags()) {
            Frame::Drop(Counter::DropChecksum)
        } else {
            classify(m.data(), p.ip)
        };
        match frame {
            Frame::Tcp { key, syn, ack } => self.on_tcp(port, m, key, syn && !ack, now_us),
            Frame::Stateless => self.answer_stateless(port, m, now_us),
            Frame::Drop(reason) => self.count(reason),
        }
    }

    fn on_tcp(&mut self, port: usize, m: Mbuf, key: FlowKey, pure_syn: bool, now_us: u64) {
        if let Some(slot) = self.flows.lookup(&key) {
            let flow = self.flows.get_mut(slot);
            flow.last_rx_us = now_us;
            let p = &mut self.ports[flow.port];
            let mut dev = FrameDevice {
                rx: Some(m),
                tx: &mut p.tx,
                caps: &p.caps,
            };
            p.iface
                .poll_ingress_single(instant(now_us), &mut dev, &mut flow.sockets);
            self.after_activity(slot, now_us);
            return;
        }
        if !pure_syn {
            if self.time_wait.contains(&key) {
                // A late segment of a closed connection: not worth a RST.
                self.count(Counter::DropTimeWait);
            } else {
                self.answer_stateless(port, m, now_us); // RST
            }
            return;
        }
        let Some(listener) = self
            .listeners
            .iter()
            .position(|l| l.port_index == port && l.tcp_port == key.local_port)
        else {
            return self.answer_stateless(port, m, now_us); // RST: closed port
        };
        self.time_wait.remove(&key);
        let Some(slot) = self.flows.insert(key) else {
            // Every slot is in use: refuse with a RST rather than hold state.
            self.count(Counter::FlowsRefused);
            return self.answer_stateless(port, m, now_us);
        };
        self.count(Counter::FlowsAccepted);
        let idle_timeout_us = self.listeners[listener].idle_timeout_us;
        let flow = self.flows.get_mut(slot);
        flow.port = port;
        flow.listener = listener;
        flow.app = ResponderState::default();
        flow.last_rx_us = now_us;
        let sock = flow.sockets.get_mut::<tcp::Socket>(flow.handle);
        sock.listen(key.local_port)
            .expect("a released slot's socket is closed");
        sock.set_nagle_enabled(false);
        // Resending unacknowledged data for longer than this is pointless.
        sock.set_timeout(Some(Duration::from_micros(idle_timeout_us)));
        let p = &mut self.ports[port];
        let mut dev = FrameDevice {
            rx: Some(m),
            tx: &mut p.tx,
            caps: &p.caps,
        };
        p.iface
            .poll_ingress_single(instant(now_us), &mut dev, &mut flow.sockets);
        self.after_activity(slot, now_us);
    }

    /// Lets smoltcp answer a frame that belongs to no flow.
    fn answer_stateless(&mut self, port: usize, m: Mbuf, now_us: u64) {
        let p = &mut self.ports[port];
        let mut dev = FrameDevice {
            rx: Some(m),
            tx: &mut p.tx,
            caps: &p.caps,
        };
        p.iface
            .poll_ingress_single(instant(now_us), &mut dev, &mut self.no_sockets);
    }

    /// After a frame or a timer: run the app, send what is due, then either
    /// release the flow or arm its next deadline.
    fn after_activity(&mut self, slot: u32, now_us: u64) {
        let flow = self.flows.get_mut(slot);
        let listener = &self.listeners[flow.listener];
        let sock = flow.sockets.get_mut::<tcp::Socket>(flow.handle);
        let idle_deadline = flow.last_rx_us + listener.idle_timeout_us;
        let timed_out = now_us >= idle_deadline && sock.is_open();
        if timed_out {
            sock.abort();
        } else {
            let served = listener
                .responder
                .serve(&mut flow.app, sock, &mut self.scratch);
            self.counters[Counter::Requests as usize] += u64::from(served.requests);
            self.counters[Counter::BadRequests as usize] += u64::from(served.bad_requests);
        }
        let p = &mut self.ports[flow.port];
        let mut dev = FrameDevice {
            rx: None,
            tx: &mut p.tx,
            caps: &p.caps,
        };
        for _ in 0..EGRESS_ROUNDS {
            if p.iface
                .poll_egress(instant(now_us), &mut dev, &mut flow.sockets)
                == PollResult::None
            {
                break;
            }
        }
        let state = flow.sockets.get::<tcp::Socket>(flow.handle).state();
        match state {
            tcp::State::TimeWait | tcp::State::Closed | tcp::State::Listen => {
                let key = self.flows.key(slot).expect("live slot has a key");
                if state == tcp::State::TimeWait {
                    self.time_wait.insert(key, now_us);
                }
                self.timers.remove(slot);
                self.flows.remove(slot);
                self.count(if timed_out {
                    Counter::FlowsTimedOut
                } else {
                    Counter::FlowsClosed
                });
            }
            _ => {
                let deadline = match p.iface.poll_at(instant(now_us), &flow.sockets) {
                    Some(at) => (at.total_micros().max(0) as u64).min(idle_deadline),
                    None => idle_deadline,
                };
                self.timers.set(slot, deadline);
            }
        }
    }

    fn run_timers(&mut self, now_us: u64) -> usize {
        let mut done = 0;
        while done < TIMERS_PER_ITERATION {
            let Some(slot) = self.timers.pop_due(now_us) else {
                break;
            };
            self.after_activity(slot, now_us);
            done += 1;
        }
        done
    }
}

fn instant(us: u64) -> Instant {
    Instant::from_micros(us as i64)
}

/// True when the NIC flagged the IP or L4 checksum bad.
fn checksum_bad(ol_flags: u64) -> bool {
    use zproxy_ffi::{
        RTE_MBUF_F_RX_IP_CKSUM_GOOD as IP_GOOD, RTE_MBUF_F_RX_IP_CKSUM_MASK as IP_MASK,
        RTE_MBUF_F_RX_L4_CKSUM_GOOD as L4_GOOD, RTE_MBUF_F_RX_L4_CKSUM_MASK as L4_MASK,
    };
    // "Unknown" (neither good nor bad) is left to smoltcp... which does not
    // verify when offload is on, so only GOOD passes.
    let ip = ol_flags & u64::from(IP_MASK);
    let l4 = ol_flags & u64::from(L4_MASK);
    ip != u64::from(IP_GOOD) || l4 != u64::from(L4_GOOD)
}

/// Decides what a frame is from its headers alone. After `new_checked`, no
/// accessor panics.
fn classify(data: &[u8], our_ip: Ipv4Addr) -> Frame {
    let Ok(eth) = EthernetFrame::new_checked(data) else {
        return Frame::Drop(Counter::DropMalformed);
    };
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return Frame::Stateless;
    }
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return Frame::Drop(Counter::DropMalformed);
    };
    if ip.dst_addr() != our_ip {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal Ethernet/IPv4/TCP frame from 10.0.0.1:40000 to `dst`:80.
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
        f
    }

    const US: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    #[test]
    fn classifies_syn_to_us() {
        match classify(&tcp_frame([10, 0, 0, 2], 0x02, 0), US) {
            Frame::Tcp { key, syn, ack } => {
                assert!(syn && !ack);
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
            classify(&tcp_frame([10, 0, 0, 9], 0x02, 0), US),
            Frame::Drop(Counter::DropNotForUs)
        ));
        assert!(matches!(
            classify(&tcp_frame([10, 0, 0, 2], 0x02, 0x2000), US),
            Frame::Drop(Counter::DropMalformed)
        ));
        let full = tcp_frame([10, 0, 0, 2], 0x02, 0);
        for cut in [0, 10, 14, 20, 33, 40, 53] {
            assert!(
                matches!(
                    classify(&full[..cut], US),
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
        assert!(matches!(classify(&arp, US), Frame::Stateless));
        assert!(matches!(
            classify(&tcp_frame([255, 255, 255, 255], 0x02, 0), US),
            Frame::Stateless
        ));
    }
}
