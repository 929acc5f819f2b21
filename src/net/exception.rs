//! The worker's half of the kernel exception path: which frames are the
//! kernel's, and handing them to the control core over two bounded
//! lock-free rings (control traffic on its own, so that a flood of other
//! frames cannot starve ARP or BGP), each class within its own token bucket.
//! The control core's half (the kernel interface) is `crate::exception`.

use std::net::Ipv4Addr;
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use smoltcp::wire::{
    EthernetFrame, EthernetProtocol, Icmpv4Message, Icmpv4Packet, IpProtocol, Ipv4Packet, TcpPacket,
};

use super::counters::{Counter, Counters};
use crate::dpdk::Mbuf;

/// Frames the control ring holds (ARP, BGP, OSPF: small and rare).
const CONTROL_RING: usize = 512;
/// Frames the ring of everything else holds.
const OTHER_RING: usize = 2048;
/// BGP's TCP port.
const BGP_PORT: u16 = 179;
/// OSPF's IP protocol number.
const OSPF: u8 = 89;

/// Which ring a frame for the kernel takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Routing and neighbour traffic: ARP, BGP (TCP 179), OSPF.
    Control,
    Other,
}

/// The two rings from every worker to the control core, for one port,
/// and the one back for a port with no tx queue to spare for the control
/// core (then worker 0 sends what the kernel sends).
pub struct Rings {
    pub control: ArrayQueue<Mbuf>,
    pub other: ArrayQueue<Mbuf>,
    pub from_kernel: ArrayQueue<Mbuf>,
}

impl Rings {
    pub fn new() -> Arc<Rings> {
        Arc::new(Rings {
            control: ArrayQueue::new(CONTROL_RING),
            other: ArrayQueue::new(OTHER_RING),
            from_kernel: ArrayQueue::new(OTHER_RING),
        })
    }
}

/// A port's exception path as one worker is given it.
#[derive(Clone)]
pub struct ExceptionSpec {
    pub rings: Arc<Rings>,
    /// Frames per second per class this worker passes to the kernel.
    pub rate: u32,
    pub burst: u32,
    /// This worker sends the kernel's frames (`Rings::from_kernel`).
    pub transmits: bool,
}

/// A token bucket: `rate` frames per second, up to `burst` at once.
/// Integer arithmetic in millionths of a frame, so one microsecond at
/// `rate` frames per second adds exactly `rate` units.
#[derive(Debug, Clone)]
pub struct Bucket {
    units: u64,
    cap: u64,
    rate: u64,
    last_us: u64,
}

const UNIT: u64 = 1_000_000;

impl Bucket {
    /// A full bucket.
    pub fn new(rate: u32, burst: u32) -> Bucket {
        let cap = u64::from(burst.max(1)) * UNIT;
        Bucket {
            units: cap,
            cap,
            rate: u64::from(rate),
            last_us: 0,
        }
    }

    /// Takes one frame's token at `now_us` if there is one.
    pub fn take(&mut self, now_us: u64) -> bool {
        let elapsed = now_us.saturating_sub(self.last_us);
        self.last_us = self.last_us.max(now_us);
        self.units = self
            .units
            .saturating_add(elapsed.saturating_mul(self.rate))
            .min(self.cap);
        if self.units >= UNIT {
            self.units -= UNIT;
            true
        } else {
            false
        }
    }
}

/// One worker's way to the kernel for one port.
pub struct ToKernel {
    rings: Arc<Rings>,
    control: Bucket,
    other: Bucket,
    transmits: bool,
}

impl ToKernel {
    pub fn new(spec: &ExceptionSpec) -> ToKernel {
        ToKernel {
            rings: spec.rings.clone(),
            control: Bucket::new(spec.rate, spec.burst),
            other: Bucket::new(spec.rate, spec.burst),
            transmits: spec.transmits,
        }
    }

    /// The next frame the kernel sent, for the worker that transmits them.
    #[inline]
    pub fn from_kernel(&self) -> Option<Mbuf> {
        if self.transmits {
            self.rings.from_kernel.pop()
        } else {
            None
        }
    }

    /// Queues `m` for the kernel, or drops it (counted) when its class is
    /// over its rate or its ring is full. Never waits.
    pub fn send(&mut self, m: Mbuf, now_us: u64, counters: &mut Counters) {
        let class = class_of(m.data());
        let (bucket, ring) = match class {
            Class::Control => (&mut self.control, &self.rings.control),
            Class::Other => (&mut self.other, &self.rings.other),
        };
        if !bucket.take(now_us) {
            return counters.add(Counter::ExceptionRateDrops, 1);
        }
        match ring.push(m) {
            Ok(()) => counters.add(Counter::ExceptionToKernel, 1),
            // The rejected frame is freed with the error.
            Err(_) => counters.add(Counter::ExceptionRingDrops, 1),
        }
    }
}

/// Control traffic (ARP, BGP either way, OSPF) or the rest.
pub fn class_of(data: &[u8]) -> Class {
    let Ok(eth) = EthernetFrame::new_checked(data) else {
        return Class::Other;
    };
    match eth.ethertype() {
        EthernetProtocol::Arp => return Class::Control,
        EthernetProtocol::Ipv4 => {}
        _ => return Class::Other,
    }
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return Class::Other;
    };
    match ip.next_header() {
        IpProtocol::Unknown(OSPF) => Class::Control,
        IpProtocol::Tcp => match TcpPacket::new_checked(ip.payload()) {
            Ok(t) if t.src_port() == BGP_PORT || t.dst_port() == BGP_PORT => Class::Control,
            _ => Class::Other,
        },
        _ => Class::Other,
    }
}

/// For a frame the stack would answer without a flow (ICMP, other IP
/// protocols, broadcasts, other ethertypes): true when the kernel should
/// have it instead. ZProxy keeps answering ICMP echo requests to its own
/// address (as it does with the exception path off, and within no rate
/// bound); every other such frame is the kernel's (echo replies to its own
/// pings, errors about its connections, UDP, IPv6 and NDP...).
pub fn kernel_wants(data: &[u8], our_ip: Ipv4Addr) -> bool {
    let Ok(eth) = EthernetFrame::new_checked(data) else {
        return false;
    };
    if eth.ethertype() != EthernetProtocol::Ipv4 {
        return true;
    }
    let Ok(ip) = Ipv4Packet::new_checked(eth.payload()) else {
        return false;
    };
    if ip.dst_addr() != our_ip || ip.next_header() != IpProtocol::Icmp {
        return true;
    }
    match Icmpv4Packet::new_checked(ip.payload()) {
        Ok(icmp) => icmp.msg_type() != Icmpv4Message::EchoRequest,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

    /// An Ethernet/IPv4 frame to `dst` with protocol `proto` and `l4` after the IP header.
    fn ip_frame(dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20];
        f[12..14].copy_from_slice(&[0x08, 0x00]);
        f[14] = 0x45;
        f[16..18].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        f[22] = 64;
        f[23] = proto;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&dst);
        f.extend_from_slice(l4);
        f
    }

    fn tcp(src: u16, dst: u16) -> Vec<u8> {
        let mut t = vec![0u8; 20];
        t[0..2].copy_from_slice(&src.to_be_bytes());
        t[2..4].copy_from_slice(&dst.to_be_bytes());
        t[12] = 5 << 4;
        t
    }

    fn icmp(kind: u8) -> Vec<u8> {
        vec![kind, 0, 0, 0, 0, 1, 0, 1]
    }

    #[test]
    fn control_traffic_is_arp_bgp_and_ospf() {
        let mut arp = vec![0u8; 42];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(class_of(&arp), Class::Control);
        assert_eq!(
            class_of(&ip_frame([10, 0, 0, 2], 6, &tcp(40000, 179))),
            Class::Control
        );
        assert_eq!(
            class_of(&ip_frame([10, 0, 0, 2], 6, &tcp(179, 40000))),
            Class::Control
        );
        assert_eq!(
            class_of(&ip_frame([224, 0, 0, 5], 89, &[0; 24])),
            Class::Control
        );
        assert_eq!(
            class_of(&ip_frame([10, 0, 0, 2], 6, &tcp(40000, 22))),
            Class::Other
        );
        assert_eq!(
            class_of(&ip_frame([10, 0, 0, 2], 17, &[0; 8])),
            Class::Other
        );
        assert_eq!(class_of(&[0u8; 5]), Class::Other, "a runt is not control");
    }

    #[test]
    fn zproxy_keeps_echo_requests_the_kernel_gets_the_rest() {
        assert!(!kernel_wants(&ip_frame([10, 0, 0, 2], 1, &icmp(8)), US));
        assert!(
            kernel_wants(&ip_frame([10, 0, 0, 2], 1, &icmp(0)), US),
            "echo reply"
        );
        assert!(
            kernel_wants(&ip_frame([10, 0, 0, 2], 1, &icmp(3)), US),
            "unreachable"
        );
        assert!(
            kernel_wants(&ip_frame([10, 0, 0, 2], 17, &[0; 8]), US),
            "UDP"
        );
        assert!(
            kernel_wants(&ip_frame([10, 0, 0, 2], 47, &[0; 8]), US),
            "GRE"
        );
        assert!(kernel_wants(
            &ip_frame([255, 255, 255, 255], 1, &icmp(8)),
            US
        ));
        let mut v6 = vec![0u8; 60];
        v6[12..14].copy_from_slice(&[0x86, 0xdd]);
        assert!(kernel_wants(&v6, US), "IPv6 (and NDP)");
        assert!(!kernel_wants(&[0u8; 5], US), "a runt is dropped");
    }

    #[test]
    fn the_bucket_bounds_the_rate_and_refills() {
        let mut b = Bucket::new(1000, 10);
        let t0 = 5_000_000;
        let burst = (0..100).filter(|_| b.take(t0)).count();
        assert_eq!(burst, 10, "a full bucket passes its burst at once");
        assert!(!b.take(t0));
        // 1000 per second: one more every millisecond.
        assert!(!b.take(t0 + 999));
        assert!(b.take(t0 + 1000));
        // Drained, it passes the rate and no more: 999 in the next 999.99 ms.
        let passed = (0..1_000_000u64)
            .step_by(10)
            .filter(|us| b.take(t0 + 1000 + us))
            .count();
        assert_eq!(passed, 999);
        // A clock that steps back takes nothing and breaks nothing.
        assert!(!b.take(t0));
    }
}
