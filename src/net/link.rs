//! One port as a worker's stack sees it: its queues, smoltcp interface,
//! addresses and neighbours, and the frames the stack sends outside any
//! flow (ARP requests, gleaned neighbours, its own TCP segments).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use smoltcp::iface::{Config as IfaceConfig, Interface};
use smoltcp::phy::{DeviceCapabilities, TxToken as _};
use smoltcp::time::Instant;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, HardwareAddress, IpCidr,
};

use super::device::{self, FrameDevice, TxQueue};
use super::rss::{Steering, RSS_KEY};
use super::segment;
use crate::dpdk::{Mbuf, Mempool, PortQueue};

/// On-link neighbours remembered for gleaning (smoltcp's cache holds 256).
const GLEANED_NEIGHBOURS: usize = 256;
/// smoltcp forgets a neighbour after 60 s; tell it again after this long.
const GLEAN_EVERY_US: u64 = 30_000_000;

/// One port as a worker is given it.
pub struct PortSpec {
    pub queue: PortQueue,
    pub mac: [u8; 6],
    pub address: (Ipv4Addr, u8),
    pub gateway: Option<Ipv4Addr>,
    pub ip_mtu: usize,
    pub rx_checksum_offload: bool,
    /// Entries in the port's RSS redirection table (see `rss::Steering`).
    pub reta_size: u32,
    /// The port's exception path (rings to the control core, rate, burst), if on.
    pub exception: Option<super::exception::ExceptionSpec>,
    /// The port's IPv6 addresses and gateway, if it has any.
    pub ipv6: Option<super::ipv6::Ipv6Spec>,
    /// The port's fleet (VIP, peers), if `[fleet]` names it.
    pub fleet: Option<super::stack::FleetSpec>,
}

/// True when `ip` is inside `net`/`len`.
pub fn in_network(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(ip) & mask == u32::from(net) & mask
}

pub struct Link {
    pub rx: PortQueue,
    pub tx: TxQueue,
    /// Never flushed: where a cookie connection's SYN-ACK is caught.
    pub capture: TxQueue,
    pub iface: Interface,
    pub caps: DeviceCapabilities,
    pub ip: Ipv4Addr,
    pub mac: EthernetAddress,
    /// Next hop for destinations off the link.
    pub gateway: Option<Ipv4Addr>,
    prefix_len: u8,
    pub rx_checksum_offload: bool,
    /// Which worker owns a flow on this port.
    pub steering: Steering,
    /// When each on-link neighbour's MAC was last given to smoltcp (µs).
    gleaned: HashMap<Ipv4Addr, u64>,
    /// Where frames that are not ZProxy's go, when the port has an exception path.
    pub to_kernel: Option<super::exception::ToKernel>,
    /// IPv6 neighbour discovery and echo, when the port has IPv6 addresses.
    pub v6: Option<super::ipv6::Ipv6Port>,
    /// Second-chance forwarding's peers and the VIP, when in a fleet.
    pub fleet: Option<super::stack::Fleet>,
    /// Which worker owns an IPv6 flow (built only for ports with IPv6).
    pub steering6: Option<super::rss6::Steering6>,
    /// When each IPv6 neighbour's MAC was last given to smoltcp (µs).
    pub gleaned6: HashMap<std::net::Ipv6Addr, u64>,
}

impl Link {
    pub fn new(
        p: &PortSpec,
        pool: &Arc<Mempool>,
        drain_cycles: u64,
        random_seed: u64,
        workers: u16,
        clock_origin: Instant,
    ) -> Link {
        let caps = device::capabilities(p.ip_mtu, p.rx_checksum_offload);
        let mut tx = TxQueue::new(p.queue, pool.clone(), drain_cycles);
        let mac = EthernetAddress(p.mac);
        let mut config = IfaceConfig::new(HardwareAddress::Ethernet(mac));
        config.random_seed = random_seed;
        let mut dev = FrameDevice::new(None, &mut tx, &caps, 0);
        let mut iface = Interface::new(config, &mut dev, clock_origin);
        iface.update_ip_addrs(|addrs| {
            addrs
                .push(IpCidr::new(p.address.0.into(), p.address.1))
                .expect("one address per port");
            if let Some(vip) = p.fleet.as_ref().and_then(|f| f.vip) {
                // The shared service address: a /32, routed here by the router.
                addrs
                    .push(IpCidr::new(vip.into(), 32))
                    .expect("room for the VIP (IFACE_MAX_ADDR_COUNT)");
            }
            // TCP over IPv6 runs in smoltcp too (NDP and echo do not: `net::ipv6`).
            for &(ip, len) in p
                .ipv6
                .iter()
                .flat_map(|s| &s.addresses)
                .take(super::ipv6::MAX_ADDRESSES)
            {
                addrs
                    .push(IpCidr::new(ip.into(), len))
                    .expect("room for the IPv6 addresses (iface-max-addr-count-8)");
            }
        });
        if let Some(gw) = p.ipv6.as_ref().and_then(|s| s.gateway) {
            iface
                .routes_mut()
                .add_default_ipv6_route(gw)
                .expect("one default IPv6 route");
        }
        if let Some(gw) = p.gateway {
            iface
                .routes_mut()
                .add_default_ipv4_route(gw)
                .expect("one default route");
        }
        Link {
            rx: p.queue,
            tx,
            capture: TxQueue::new(p.queue, pool.clone(), drain_cycles),
            iface,
            caps,
            ip: p.address.0,
            mac,
            gateway: p.gateway,
            prefix_len: p.address.1,
            rx_checksum_offload: p.rx_checksum_offload,
            steering: Steering::new(&RSS_KEY, p.reta_size, workers),
            gleaned: HashMap::with_capacity(GLEANED_NEIGHBOURS),
            to_kernel: p.exception.as_ref().map(super::exception::ToKernel::new),
            v6: p
                .ipv6
                .as_ref()
                .map(|s| super::ipv6::Ipv6Port::new(s, p.mac)),
            fleet: p.fleet.as_ref().map(super::stack::Fleet::new),
            steering6: p
                .ipv6
                .as_ref()
                .map(|_| super::rss6::Steering6::new(&RSS_KEY, p.reta_size, workers)),
            gleaned6: HashMap::with_capacity(if p.ipv6.is_some() {
                GLEANED_NEIGHBOURS
            } else {
                0
            }),
        }
    }

    pub fn on_link(&self, ip: Ipv4Addr) -> bool {
        in_network(ip, self.ip, self.prefix_len)
    }

    /// The neighbour that frames to `ip` go through.
    pub fn next_hop(&self, ip: Ipv4Addr) -> Option<Ipv4Addr> {
        if self.on_link(ip) {
            Some(ip)
        } else {
            self.gateway
        }
    }

    /// Sends a `len`-byte frame that `emit` writes, outside any flow.
    pub fn send_frame(&mut self, len: usize, emit: impl FnOnce(&mut [u8])) {
        let mut dev = FrameDevice::new(None, &mut self.tx, &self.caps, 0);
        let token =
            smoltcp::phy::Device::transmit(&mut dev, Instant::from_micros(0)).expect("tx token");
        token.consume(len, emit);
    }

    /// Sends a TCP segment built outside smoltcp.
    pub fn send_segment(&mut self, seg: &segment::Build) {
        self.send_frame(seg.frame_len(), |buf| seg.emit(buf));
    }

    /// Broadcasts "who has `target`?".
    pub fn send_arp_request(&mut self, target: Ipv4Addr) {
        let frame = ArpFrame::new(
            ArpOperation::Request,
            (self.mac, self.ip),
            (EthernetAddress([0; 6]), target),
            EthernetAddress::BROADCAST,
        );
        self.send_frame(frame.len(), |buf| frame.emit(buf));
    }

    /// smoltcp learns neighbours only from ARP, so a SYN from a client it
    /// has not heard an ARP from would get its SYN-ACK a second late (after
    /// an ARP round and a retransmit). Returns an ARP reply frame with the
    /// MAC the SYN came from, to be fed to smoltcp, once per neighbour and
    /// `GLEAN_EVERY_US`.
    pub fn glean(
        &mut self,
        ip: Ipv4Addr,
        mac: EthernetAddress,
        now_us: u64,
        pool: &Mempool,
    ) -> Option<Mbuf> {
        if !self.on_link(ip) || !mac.is_unicast() {
            return None; // off-link clients come through the gateway, resolved by ARP
        }
        if self
            .gleaned
            .get(&ip)
            .is_some_and(|&at| now_us < at + GLEAN_EVERY_US)
        {
            return None;
        }
        if self.gleaned.len() >= GLEANED_NEIGHBOURS {
            self.gleaned.clear();
        }
        self.gleaned.insert(ip, now_us);
        let frame = ArpFrame::new(
            ArpOperation::Reply,
            (mac, ip),
            (self.mac, self.ip),
            self.mac,
        );
        let mut m = pool.alloc()?;
        frame.emit(m.append(frame.len())?);
        Some(m)
    }
}

/// An ARP packet in its Ethernet frame, from the sender's MAC.
struct ArpFrame {
    eth: EthernetRepr,
    arp: ArpRepr,
}

impl ArpFrame {
    fn new(
        operation: ArpOperation,
        (sender_mac, sender_ip): (EthernetAddress, Ipv4Addr),
        (target_mac, target_ip): (EthernetAddress, Ipv4Addr),
        eth_dst: EthernetAddress,
    ) -> ArpFrame {
        ArpFrame {
            eth: EthernetRepr {
                src_addr: sender_mac,
                dst_addr: eth_dst,
                ethertype: EthernetProtocol::Arp,
            },
            arp: ArpRepr::EthernetIpv4 {
                operation,
                source_hardware_addr: sender_mac,
                source_protocol_addr: sender_ip,
                target_hardware_addr: target_mac,
                target_protocol_addr: target_ip,
            },
        }
    }

    fn len(&self) -> usize {
        self.eth.buffer_len() + self.arp.buffer_len()
    }

    /// Writes the frame into `buf` (exactly `len()` bytes).
    fn emit(&self, buf: &mut [u8]) {
        let mut frame = EthernetFrame::new_unchecked(buf);
        self.eth.emit(&mut frame);
        self.arp
            .emit(&mut ArpPacket::new_unchecked(frame.payload_mut()));
    }
}
