//! Frames as the peers of the worker send them (Ethernet / IPv4 / TCP, ARP,
//! ICMP, UDP, built by hand so they can be mangled on purpose), and the
//! checks every frame the worker sends must pass.

use std::net::Ipv4Addr;

use smoltcp::wire::{
    ArpOperation, ArpPacket, EthernetFrame, EthernetProtocol, IpProtocol, Ipv4Packet, TcpPacket,
};

use crate::ops::{BAD_TCP_CHECKSUM, BROADCAST_MAC, IP_OPTIONS, MORE_FRAGMENTS, PADDED};

pub type Mac = [u8; 6];
pub const BROADCAST: Mac = [0xff; 6];

/// The MAC the harness gives a host: 02:00 and its IPv4 address.
pub fn mac_of(ip: Ipv4Addr) -> Mac {
    let o = ip.octets();
    [0x02, 0x00, o[0], o[1], o[2], o[3]]
}

/// RFC 1071 over `data`, starting from `sum`.
fn sum16(mut sum: u32, data: &[u8]) -> u32 {
    for pair in data.chunks(2) {
        let word = u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]);
        sum += u32::from(word);
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub fn checksum(data: &[u8]) -> u16 {
    fold(sum16(0, data))
}

fn ethernet(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 packet (DF set, TTL 64) around `payload`.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload: &[u8], mangle: u8) -> Vec<u8> {
    let options: &[u8] = if mangle & IP_OPTIONS != 0 {
        &[1, 1, 1, 0] // NOP NOP NOP EOL
    } else {
        &[]
    };
    let hlen = 20 + options.len();
    let mut p = vec![0u8; hlen];
    p[0] = 0x40 | (hlen / 4) as u8;
    p[2..4].copy_from_slice(&((hlen + payload.len()) as u16).to_be_bytes());
    p[4..6].copy_from_slice(&0x1c46u16.to_be_bytes());
    let frag: u16 = if mangle & MORE_FRAGMENTS != 0 {
        0x2000
    } else {
        0x4000
    };
    p[6..8].copy_from_slice(&frag.to_be_bytes());
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..].copy_from_slice(options);
    let c = checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// A frame with an IPv4 packet; `PADDED` pads it to Ethernet's 60 bytes
/// plus some (garbage past the IP packet's end, as some NICs leave it).
pub fn ipv4_frame(dst: Mac, src: Mac, ip: Vec<u8>, mangle: u8) -> Vec<u8> {
    let dst = if mangle & BROADCAST_MAC != 0 {
        BROADCAST
    } else {
        dst
    };
    let mut f = ethernet(dst, src, 0x0800, &ip);
    if mangle & PADDED != 0 {
        let want = f.len().max(60) + 4;
        f.resize(want, 0xa5);
    }
    f
}

/// One TCP segment as a peer sends it.
pub struct Segment<'a> {
    pub src_mac: Mac,
    pub dst_mac: Mac,
    pub src: (Ipv4Addr, u16),
    pub dst: (Ipv4Addr, u16),
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub options: &'a [u8],
    pub payload: &'a [u8],
    pub mangle: u8,
}

pub fn tcp_frame(s: &Segment) -> Vec<u8> {
    let olen = s.options.len().min(40).div_ceil(4) * 4;
    let hlen = 20 + olen;
    let mut t = vec![0u8; hlen];
    t[0..2].copy_from_slice(&s.src.1.to_be_bytes());
    t[2..4].copy_from_slice(&s.dst.1.to_be_bytes());
    t[4..8].copy_from_slice(&s.seq.to_be_bytes());
    t[8..12].copy_from_slice(&s.ack.to_be_bytes());
    t[12] = ((hlen / 4) as u8) << 4;
    t[13] = s.flags;
    t[14..16].copy_from_slice(&s.window.to_be_bytes());
    let n = s.options.len().min(40);
    t[20..20 + n].copy_from_slice(&s.options[..n]);
    t.extend_from_slice(s.payload);
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&s.src.0.octets());
    pseudo.extend_from_slice(&s.dst.0.octets());
    pseudo.extend_from_slice(&[0, 6]);
    pseudo.extend_from_slice(&(t.len() as u16).to_be_bytes());
    let mut c = fold(sum16(sum16(0, &pseudo), &t));
    if s.mangle & BAD_TCP_CHECKSUM != 0 {
        c ^= 0x5a5a;
    }
    t[16..18].copy_from_slice(&c.to_be_bytes());
    let ip = ipv4(s.src.0, s.dst.0, 6, &t, s.mangle);
    ipv4_frame(s.dst_mac, s.src_mac, ip, s.mangle)
}

/// An ARP packet in an Ethernet frame.
pub fn arp_frame(
    eth_dst: Mac,
    operation: u16,
    sender: (Mac, Ipv4Addr),
    target: (Mac, Ipv4Addr),
) -> Vec<u8> {
    let mut a = vec![0u8; 28];
    a[0..2].copy_from_slice(&1u16.to_be_bytes());
    a[2..4].copy_from_slice(&0x0800u16.to_be_bytes());
    a[4] = 6;
    a[5] = 4;
    a[6..8].copy_from_slice(&operation.to_be_bytes());
    a[8..14].copy_from_slice(&sender.0);
    a[14..18].copy_from_slice(&sender.1.octets());
    a[18..24].copy_from_slice(&target.0);
    a[24..28].copy_from_slice(&target.1.octets());
    ethernet(eth_dst, sender.0, 0x0806, &a)
}

/// ICMP echo request (type 8) with `id`, `seq` and `payload`.
pub fn icmp_echo(id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut m = vec![8, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(payload);
    let c = checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// A UDP datagram (checksum 0: none, as IPv4 allows).
pub fn udp(src_port: u16, dst_port: u16, payload: &[u8]) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + payload.len());
    u.extend_from_slice(&src_port.to_be_bytes());
    u.extend_from_slice(&dst_port.to_be_bytes());
    u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(payload);
    u
}

/// `addr`'s solicited-node multicast group (RFC 4291 2.7.1).
pub fn solicited_node(addr: std::net::Ipv6Addr) -> std::net::Ipv6Addr {
    let o = addr.octets();
    std::net::Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// The ICMPv6 checksum of `icmp` from `src` to `dst`, as the field holds it.
fn icmpv6_checksum(src: &[u8], dst: &[u8], icmp: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(40);
    pseudo.extend_from_slice(src);
    pseudo.extend_from_slice(dst);
    pseudo.extend_from_slice(&(icmp.len() as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 58]);
    fold(sum16(sum16(0, &pseudo), icmp))
}

/// An Ethernet/IPv6 frame with ICMPv6 message `icmp` (checksum filled in,
/// or spoiled with `bad_checksum`) behind extension header `ext`: 0
/// hop-by-hop with PadN, 1 destination options, 2 routing type 0, 3 a fragment.
pub fn ipv6_icmp_frame(
    dst_mac: Mac,
    src_mac: Mac,
    (src, dst, hop_limit): (std::net::Ipv6Addr, std::net::Ipv6Addr, u8),
    ext: Option<u8>,
    icmp: &[u8],
    bad_checksum: bool,
) -> Vec<u8> {
    let mut icmp = icmp.to_vec();
    if icmp.len() >= 4 {
        icmp[2..4].fill(0);
        let sum = icmpv6_checksum(&src.octets(), &dst.octets(), &icmp) ^ u16::from(bad_checksum);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    let (first, ext_bytes): (u8, &[u8]) = match ext {
        None => (58, &[]),
        Some(0) => (0, &[58, 0, 1, 4, 0, 0, 0, 0]),
        Some(1) => (60, &[58, 0, 1, 4, 0, 0, 0, 0]),
        Some(2) => (43, &[58, 0, 0, 1, 0, 0, 0, 0]),
        Some(_) => (44, &[58, 0, 0, 0, 0, 0, 0, 1]),
    };
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&((ext_bytes.len() + icmp.len()) as u16).to_be_bytes());
    p.extend_from_slice(&[first, hop_limit]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(ext_bytes);
    p.extend_from_slice(&icmp);
    let dst_mac = if dst.is_multicast() {
        let o = dst.octets();
        [0x33, 0x33, o[12], o[13], o[14], o[15]]
    } else {
        dst_mac
    };
    ethernet(dst_mac, src_mac, 0x86dd, &p)
}

pub fn raw_ethernet(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    ethernet(dst, src, ethertype, payload)
}

/// What the worker sent, as far as the harness cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    ArpRequest {
        target: Ipv4Addr,
    },
    Tcp {
        dst: (Ipv4Addr, u16),
        src_port: u16,
        seq: u32,
        ack: u32,
        flags: u8,
        len: usize,
    },
    Other,
}

/// Checks a frame the worker sent on the port with `mac` and `ip`: every one
/// must be well formed, from us, with correct checksums. Panics otherwise.
pub fn check_sent(frame: &[u8], mac: Mac, ip: Ipv4Addr, mtu: usize) -> Sent {
    assert!(
        frame.len() <= mtu + 14,
        "sent a {} byte frame, MTU {mtu}",
        frame.len()
    );
    let eth = EthernetFrame::new_checked(frame).expect("sent a truncated Ethernet frame");
    assert_eq!(eth.src_addr().0, mac, "sent from another MAC");
    match eth.ethertype() {
        EthernetProtocol::Arp => {
            let arp = ArpPacket::new_checked(eth.payload()).expect("sent a truncated ARP packet");
            assert_eq!(arp.source_hardware_addr(), &mac[..], "ARP for another MAC");
            assert_eq!(
                arp.source_protocol_addr(),
                &ip.octets()[..],
                "ARP for another IP"
            );
            if arp.operation() == ArpOperation::Request {
                let t = arp.target_protocol_addr();
                return Sent::ArpRequest {
                    target: Ipv4Addr::new(t[0], t[1], t[2], t[3]),
                };
            }
            Sent::Other
        }
        EthernetProtocol::Ipv4 => {
            let p = Ipv4Packet::new_checked(eth.payload()).expect("sent a truncated IPv4 packet");
            // Computed here: smoltcp's verify_checksum is always true when
            // built for fuzzing (cfg(fuzzing)).
            let header = &eth.payload()[..usize::from(p.header_len())];
            assert_eq!(checksum(header), 0, "sent a bad IPv4 checksum");
            assert_eq!(p.src_addr(), ip, "sent from another IP");
            assert!(!p.more_frags() && p.frag_offset() == 0, "sent a fragment");
            if p.next_header() != IpProtocol::Tcp {
                return Sent::Other;
            }
            let t = TcpPacket::new_checked(p.payload()).expect("sent a truncated TCP segment");
            let mut pseudo = [0u8; 12];
            pseudo[..4].copy_from_slice(&p.src_addr().octets());
            pseudo[4..8].copy_from_slice(&p.dst_addr().octets());
            pseudo[9] = 6;
            pseudo[10..].copy_from_slice(&(p.payload().len() as u16).to_be_bytes());
            assert_eq!(
                fold(sum16(sum16(0, &pseudo), p.payload())),
                0,
                "sent a bad TCP checksum"
            );
            let mut flags = 0;
            for (set, bit) in [
                (t.fin(), crate::ops::FIN),
                (t.syn(), crate::ops::SYN),
                (t.rst(), crate::ops::RST),
                (t.psh(), crate::ops::PSH),
                (t.ack(), crate::ops::ACK),
            ] {
                if set {
                    flags |= bit;
                }
            }
            assert!(
                !(t.syn() && (t.fin() || t.rst())),
                "sent impossible flags {flags:#x}"
            );
            Sent::Tcp {
                dst: (p.dst_addr(), t.dst_port()),
                src_port: t.src_port(),
                seq: t.seq_number().0 as u32,
                ack: t.ack_number().0 as u32,
                flags,
                len: t.payload().len(),
            }
        }
        EthernetProtocol::Ipv6 => {
            // NDP and echo replies (`net::ipv6`): well formed, checksummed,
            // never from a multicast address, NDP with hop limit 255.
            let p = eth.payload();
            assert!(p.len() >= 40 && p[0] >> 4 == 6, "sent a bad IPv6 header");
            let len = usize::from(u16::from_be_bytes([p[4], p[5]]));
            assert_eq!(
                p.len(),
                40 + len,
                "sent an IPv6 length that disagrees with the frame"
            );
            assert_eq!(p[6], 58, "sent IPv6 other than ICMPv6");
            assert_ne!(p[8], 0xff, "sent from a multicast address");
            let icmp = &p[40..];
            assert!(icmp.len() >= 8, "sent a truncated ICMPv6 message");
            assert_eq!(
                icmpv6_checksum(&p[8..24], &p[24..40], icmp),
                0,
                "sent a bad ICMPv6 checksum"
            );
            if (133..=137).contains(&icmp[0]) {
                assert_eq!(p[7], 255, "sent NDP with hop limit {}", p[7]);
            }
            Sent::Other
        }
        other => panic!("sent a frame of ethertype {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_frames_pass_the_checks() {
        let ip = Ipv4Addr::new(10, 71, 0, 2);
        let f = tcp_frame(&Segment {
            src_mac: mac_of(ip),
            dst_mac: BROADCAST,
            src: (ip, 80),
            dst: (Ipv4Addr::new(10, 71, 0, 1), 40000),
            seq: 1,
            ack: 2,
            flags: crate::ops::ACK,
            window: 100,
            options: &[2, 4, 5, 0xb4],
            payload: b"hi",
            mangle: 0,
        });
        assert!(matches!(
            check_sent(&f, mac_of(ip), ip, 1500),
            Sent::Tcp { len: 2, .. }
        ));
    }
}
