//! TCP segments a worker reads and writes itself, outside smoltcp: the SYN
//! cookie exchange (a SYN-ACK sent, a handshake replayed into a socket, the
//! sequence shift of a cookie connection) and the ACK of a FIN retransmitted
//! into TIME-WAIT, the challenge ACK of RFC 5961), over IPv4 or IPv6.

use std::net::IpAddr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    EthernetAddress, EthernetFrame, EthernetProtocol, EthernetRepr, IpProtocol, Ipv4Packet,
    Ipv4Repr, Ipv6Packet, Ipv6Repr, TcpControl, TcpOption, TcpPacket, TcpRepr, TcpSeqNumber,
};

const ETH_LEN: usize = 14;
const IP_LEN: usize = 20;
const IP6_LEN: usize = 40;

/// The fields of a received TCP segment (IPv4, or IPv6 with TCP straight
/// after the fixed header) the worker answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub src_mac: EthernetAddress,
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    pub syn: bool,
    pub ack_flag: bool,
    pub rst: bool,
    pub fin: bool,
    pub payload_len: u32,
    /// The MSS option (SYNs).
    pub mss: Option<u16>,
}

/// Reads a frame `classify` (or `classify6`) already found to be TCP for us.
pub fn parse(frame: &[u8]) -> Option<Segment> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let tcp = match eth.ethertype() {
        EthernetProtocol::Ipv4 => {
            TcpPacket::new_checked(Ipv4Packet::new_checked(eth.payload()).ok()?.payload()).ok()?
        }
        EthernetProtocol::Ipv6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
            if ip.next_header() != IpProtocol::Tcp {
                return None;
            }
            TcpPacket::new_checked(ip.payload()).ok()?
        }
        _ => return None,
    };
    let mut mss = None;
    let mut options = tcp.options();
    while !options.is_empty() {
        let Ok((rest, option)) = TcpOption::parse(options) else {
            break;
        };
        match option {
            TcpOption::EndOfList => break,
            TcpOption::MaxSegmentSize(m) => mss = Some(m),
            _ => {}
        }
        options = rest;
    }
    Some(Segment {
        src_mac: eth.src_addr(),
        seq: tcp.seq_number().0 as u32,
        ack: tcp.ack_number().0 as u32,
        window: tcp.window_len(),
        syn: tcp.syn(),
        ack_flag: tcp.ack(),
        rst: tcp.rst(),
        fin: tcp.fin(),
        payload_len: tcp.payload().len() as u32,
        mss,
    })
}

/// A segment to build: who it goes between and its TCP header.
pub struct Build {
    pub src_mac: EthernetAddress,
    pub dst_mac: EthernetAddress,
    /// Both ends of one family (an IPv4 and an IPv6 end build nothing).
    pub src: (IpAddr, u16),
    pub dst: (IpAddr, u16),
    pub syn: bool,
    pub seq: u32,
    pub ack: Option<u32>,
    pub window: u16,
    pub mss: Option<u16>,
}

impl Build {
    fn tcp(&self) -> TcpRepr<'static> {
        TcpRepr {
            src_port: self.src.1,
            dst_port: self.dst.1,
            control: if self.syn {
                TcpControl::Syn
            } else {
                TcpControl::None
            },
            seq_number: TcpSeqNumber(self.seq as i32),
            ack_number: self.ack.map(|a| TcpSeqNumber(a as i32)),
            window_len: self.window,
            window_scale: None,
            max_seg_size: self.mss,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        }
    }

    fn ip_len(&self) -> usize {
        if self.src.0.is_ipv6() {
            IP6_LEN
        } else {
            IP_LEN
        }
    }

    /// Bytes of the whole frame.
    pub fn frame_len(&self) -> usize {
        ETH_LEN + self.ip_len() + self.tcp().header_len()
    }

    /// Writes the frame (checksums included) into `buf`, `frame_len()` bytes long.
    pub fn emit(&self, buf: &mut [u8]) {
        let tcp = self.tcp();
        let caps = ChecksumCapabilities::default();
        let mut eth = EthernetFrame::new_unchecked(&mut buf[..]);
        let ethertype = if self.src.0.is_ipv6() {
            EthernetProtocol::Ipv6
        } else {
            EthernetProtocol::Ipv4
        };
        EthernetRepr {
            src_addr: self.src_mac,
            dst_addr: self.dst_mac,
            ethertype,
        }
        .emit(&mut eth);
        let (ip_header, tcp_bytes) = eth.payload_mut().split_at_mut(self.ip_len());
        match (self.src.0, self.dst.0) {
            (IpAddr::V4(src_addr), IpAddr::V4(dst_addr)) => Ipv4Repr {
                src_addr,
                dst_addr,
                next_header: IpProtocol::Tcp,
                payload_len: tcp.header_len(),
                hop_limit: 64,
            }
            .emit(&mut Ipv4Packet::new_unchecked(ip_header), &caps),
            (IpAddr::V6(src_addr), IpAddr::V6(dst_addr)) => Ipv6Repr {
                src_addr,
                dst_addr,
                next_header: IpProtocol::Tcp,
                payload_len: tcp.header_len(),
                hop_limit: 64,
            }
            .emit(&mut Ipv6Packet::new_unchecked(ip_header)),
            _ => return, // mixed families: not a segment (no caller builds one)
        }
        let mut packet = TcpPacket::new_unchecked(tcp_bytes);
        tcp.emit(&mut packet, &self.src.0.into(), &self.dst.0.into(), &caps);
    }
}

/// Where the TCP header of an Ethernet/IPv4/TCP frame (or Ethernet/IPv6/TCP
/// with no extension header, all we build or take) starts, if it is one.
pub(crate) fn tcp_offset(frame: &[u8]) -> Option<usize> {
    let offset = match frame.get(12..14)? {
        [0x08, 0x00] if frame.len() >= ETH_LEN + IP_LEN && frame[ETH_LEN + 9] == 6 => {
            ETH_LEN + usize::from(frame[ETH_LEN] & 0x0f) * 4
        }
        [0x86, 0xdd] if frame.len() >= ETH_LEN + IP6_LEN && frame[ETH_LEN + 6] == 6 => {
            ETH_LEN + IP6_LEN
        }
        _ => return None,
    };
    (frame.len() >= offset + 20).then_some(offset)
}

/// The sequence range of an Ethernet/IPv4/TCP or Ethernet/IPv6/TCP frame:
/// read from the headers alone (no checksum, no options), per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    pub seq: u32,
    /// `seq` + payload + SYN + FIN: the next sequence number after it.
    pub end: u32,
    pub ack: Option<u32>,
    pub rst: bool,
}

pub(crate) fn span(frame: &[u8]) -> Option<Span> {
    let t = tcp_offset(frame)?;
    // The TCP segment's length: to the IP header's end, not the frame's.
    let segment_len = if frame[12] == 0x86 {
        usize::from(u16::from_be_bytes([frame[18], frame[19]]))
    } else {
        let ihl = usize::from(frame[14] & 0x0f) * 4;
        usize::from(u16::from_be_bytes([frame[16], frame[17]])).saturating_sub(ihl)
    };
    let word =
        |at: usize| u32::from_be_bytes([frame[at], frame[at + 1], frame[at + 2], frame[at + 3]]);
    let flags = frame[t + 13];
    let doff = usize::from(frame[t + 12] >> 4) * 4;
    let payload = segment_len.saturating_sub(doff) as u32;
    let syn_fin = u32::from(flags & 0x02 != 0) + u32::from(flags & 0x01 != 0);
    let seq = word(t + 4);
    Some(Span {
        seq,
        end: seq.wrapping_add(payload + syn_fin),
        ack: (flags & 0x10 != 0).then(|| word(t + 8)),
        rst: flags & 0x04 != 0,
    })
}

/// Replaces the 32-bit field at `at` in a TCP header at `tcp` with
/// `f(old)`, updating the checksum incrementally (RFC 1624).
fn rewrite(frame: &mut [u8], tcp: usize, at: usize, f: impl Fn(u32) -> u32) {
    let field = tcp + at;
    let old = u32::from_be_bytes(frame[field..field + 4].try_into().expect("4 bytes"));
    let new = f(old);
    frame[field..field + 4].copy_from_slice(&new.to_be_bytes());
    let check = u16::from_be_bytes([frame[tcp + 16], frame[tcp + 17]]);
    let mut sum = u32::from(!check);
    for (o, n) in [(old >> 16, new >> 16), (old & 0xffff, new & 0xffff)] {
        sum += u32::from(!(o as u16)) + n;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[tcp + 16..tcp + 18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

/// Outbound: the socket's sequence number plus `delta` is what the client expects.
pub fn shift_seq(frame: &mut [u8], delta: u32) {
    if let Some(tcp) = tcp_offset(frame) {
        rewrite(frame, tcp, 4, |seq| seq.wrapping_add(delta));
    }
}

/// Inbound: the client's acknowledgment minus `delta` is what the socket sent.
pub fn shift_ack(frame: &mut [u8], delta: u32) {
    if let Some(tcp) = tcp_offset(frame) {
        if frame[tcp + 13] & 0x10 != 0 {
            rewrite(frame, tcp, 8, |ack| ack.wrapping_sub(delta));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::{Ipv4Addr, Ipv6Addr};

    fn segment(syn: bool, seq: u32, ack: Option<u32>, mss: Option<u16>) -> Vec<u8> {
        build(
            Ipv4Addr::new(10, 71, 0, 1).into(),
            Ipv4Addr::new(10, 71, 0, 2).into(),
            (syn, seq, ack, mss),
        )
    }

    const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x71, 0, 0, 0, 0, 1);
    const US6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x71, 0, 0, 0, 0, 2);

    fn segment6(syn: bool, seq: u32, ack: Option<u32>, mss: Option<u16>) -> Vec<u8> {
        build(CLIENT6.into(), US6.into(), (syn, seq, ack, mss))
    }

    fn build(
        src: IpAddr,
        dst: IpAddr,
        (syn, seq, ack, mss): (bool, u32, Option<u32>, Option<u16>),
    ) -> Vec<u8> {
        let b = Build {
            src_mac: EthernetAddress([2, 0, 0, 0, 0, 1]),
            dst_mac: EthernetAddress([2, 0, 0, 0, 0, 2]),
            src: (src, 40000),
            dst: (dst, 80),
            syn,
            seq,
            ack,
            window: 29200,
            mss,
        };
        let mut f = vec![0u8; b.frame_len()];
        b.emit(&mut f);
        f
    }

    /// smoltcp's own parser checks the IPv6 pseudo-header checksum.
    fn checksum6_ok(frame: &[u8]) -> bool {
        let eth = EthernetFrame::new_checked(frame).unwrap();
        assert_eq!(eth.ethertype(), EthernetProtocol::Ipv6);
        let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
        let repr = Ipv6Repr::parse(&ip).unwrap();
        assert_eq!((repr.src_addr, repr.dst_addr), (CLIENT6, US6));
        assert_eq!(repr.next_header, IpProtocol::Tcp);
        assert_eq!(repr.payload_len, ip.payload().len());
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        tcp.verify_checksum(&CLIENT6.into(), &US6.into())
            && TcpRepr::parse(
                &tcp,
                &CLIENT6.into(),
                &US6.into(),
                &ChecksumCapabilities::default(),
            )
            .is_ok()
    }

    #[test]
    fn ipv6_segments_are_built_with_the_ipv6_pseudo_header() {
        let f = segment6(true, 77, Some(9), Some(1440));
        assert_eq!(f.len(), ETH_LEN + IP6_LEN + 24);
        assert!(checksum6_ok(&f));
        let s = parse(&f).unwrap();
        assert!(s.syn && s.ack_flag && !s.rst);
        assert_eq!((s.seq, s.ack, s.window, s.mss), (77, 9, 29200, Some(1440)));
        // One flipped address byte breaks the checksum.
        let mut bad = f.clone();
        bad[ETH_LEN + 8] ^= 1;
        let ip = Ipv6Packet::new_checked(&bad[ETH_LEN..]).unwrap();
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(!tcp.verify_checksum(&ip.src_addr().into(), &US6.into()));
        // Mixed families build nothing.
        let b = Build {
            src_mac: EthernetAddress([2, 0, 0, 0, 0, 1]),
            dst_mac: EthernetAddress([2, 0, 0, 0, 0, 2]),
            src: (CLIENT6.into(), 1),
            dst: (Ipv4Addr::LOCALHOST.into(), 2),
            syn: true,
            seq: 0,
            ack: None,
            window: 0,
            mss: None,
        };
        let mut zero = vec![0u8; b.frame_len()];
        b.emit(&mut zero);
        assert_eq!(parse(&zero), None);
    }

    #[test]
    fn ipv6_shifting_keeps_the_checksum_right() {
        for (seq, ack, delta) in [(1u32, 2u32, 3u32), (0xffff_fff0, 0x10, 0x20)] {
            let mut f = segment6(false, seq, Some(ack), None);
            shift_seq(&mut f, delta);
            shift_ack(&mut f, delta);
            assert!(checksum6_ok(&f), "{seq:#x} {ack:#x} {delta:#x}");
            let s = parse(&f).unwrap();
            assert_eq!(s.seq, seq.wrapping_add(delta));
            assert_eq!(s.ack, ack.wrapping_sub(delta));
        }
        // An extension header before TCP: left alone, not misread.
        let mut f = segment6(false, 5, Some(6), None);
        f[ETH_LEN + 6] = 0; // hop-by-hop
        let before = f.clone();
        shift_seq(&mut f, 7);
        assert_eq!(f, before);
        assert_eq!(parse(&f), None);
    }

    fn checksum_ok(frame: &[u8]) -> bool {
        let ip = Ipv4Packet::new_checked(&frame[ETH_LEN..]).unwrap();
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        ip.verify_checksum() && tcp.verify_checksum(&ip.src_addr().into(), &ip.dst_addr().into())
    }

    #[test]
    fn built_segments_parse_back() {
        let f = segment(true, 77, None, Some(1460));
        assert!(checksum_ok(&f));
        let s = parse(&f).unwrap();
        assert!(s.syn && !s.ack_flag && !s.rst);
        assert_eq!((s.seq, s.window, s.mss), (77, 29200, Some(1460)));
        let s = parse(&segment(false, 78, Some(5), None)).unwrap();
        assert!(!s.syn && s.ack_flag);
        assert_eq!((s.seq, s.ack, s.mss), (78, 5, None));
        assert_eq!(parse(&f[..40]), None);
    }

    #[test]
    fn shifting_keeps_the_checksum_right() {
        for (seq, ack, delta) in [
            (1u32, 2u32, 3u32),
            (0xffff_fff0, 0x10, 0x20),
            (0x1234_5678, 0x9abc_def0, 0xfedc_ba98),
            (0, 0, 0x8000_0000),
        ] {
            let mut f = segment(false, seq, Some(ack), None);
            shift_seq(&mut f, delta);
            shift_ack(&mut f, delta);
            assert!(checksum_ok(&f), "{seq:#x} {ack:#x} {delta:#x}");
            let s = parse(&f).unwrap();
            assert_eq!(s.seq, seq.wrapping_add(delta));
            assert_eq!(s.ack, ack.wrapping_sub(delta));
        }
        // Frames that are not TCP/IPv4 are left alone.
        let mut arp = vec![0u8; 60];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let before = arp.clone();
        shift_seq(&mut arp, 5);
        assert_eq!(arp, before);
    }
}
