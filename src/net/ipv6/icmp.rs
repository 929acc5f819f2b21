//! ICMPv6: the checksum over the IPv6 pseudo-header, and the frames this
//! stack sends (echo replies, neighbour solicitations and advertisements),
//! written straight into a transmit buffer.

use std::net::Ipv6Addr;

use super::ext::{HEADER_LEN, ICMPV6};

pub const ECHO_REQUEST: u8 = 128;
pub const ECHO_REPLY: u8 = 129;
pub const ROUTER_SOLICIT: u8 = 133;
pub const ROUTER_ADVERT: u8 = 134;
pub const NEIGHBOR_SOLICIT: u8 = 135;
pub const NEIGHBOR_ADVERT: u8 = 136;
pub const REDIRECT: u8 = 137;

const ETH_LEN: usize = 14;
const ETHERTYPE_IPV6: [u8; 2] = [0x86, 0xdd];
/// NS and NA: type, code, checksum, flags/reserved, target.
pub const NDP_LEN: usize = 24;
/// One link-layer address option (or nonce option) of 8 bytes.
const OPTION_LEN: usize = 8;
pub const OPT_SOURCE_LL: u8 = 1;
pub const OPT_TARGET_LL: u8 = 2;
pub const OPT_NONCE: u8 = 14;

/// The Internet checksum of `icmp` under the IPv6 pseudo-header: 0 when a
/// received message's checksum field is right.
pub fn checksum(src: Ipv6Addr, dst: Ipv6Addr, icmp: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut add = |bytes: &[u8]| {
        let mut chunks = bytes.chunks_exact(2);
        for c in &mut chunks {
            sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
        }
        if let [last] = chunks.remainder() {
            sum += u64::from(*last) << 8;
        }
    };
    add(&src.octets());
    add(&dst.octets());
    add(&(icmp.len() as u32).to_be_bytes());
    add(&[0, 0, 0, ICMPV6]);
    add(icmp);
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A frame to send: its addresses and what the ICMPv6 message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Out {
    pub eth_src: [u8; 6],
    pub eth_dst: [u8; 6],
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub msg: Msg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msg {
    /// A neighbour advertisement for `target` with our MAC as target address.
    Advert { target: Ipv6Addr, solicited: bool },
    /// A neighbour solicitation for `target`; from `::` (DAD) it carries
    /// `nonce` instead of our MAC (RFC 7527).
    Solicit { target: Ipv6Addr, nonce: [u8; 6] },
    /// An echo reply with the request's identifier, sequence and data:
    /// `len` bytes of the request's ICMPv6 message at `at` in its frame.
    EchoReply { at: usize, len: usize },
}

impl Out {
    /// The whole frame's length.
    pub fn frame_len(&self) -> usize {
        ETH_LEN + HEADER_LEN + self.icmp_len()
    }

    fn icmp_len(&self) -> usize {
        match self.msg {
            Msg::Advert { .. } | Msg::Solicit { .. } => NDP_LEN + OPTION_LEN,
            Msg::EchoReply { len, .. } => len,
        }
    }

    /// Writes the frame into `buf` (exactly `frame_len()` bytes); `request` is the
    /// frame being answered (an echo reply copies its data).
    pub fn emit(&self, buf: &mut [u8], request: &[u8]) {
        buf[0..6].copy_from_slice(&self.eth_dst);
        buf[6..12].copy_from_slice(&self.eth_src);
        buf[12..14].copy_from_slice(&ETHERTYPE_IPV6);
        let icmp_len = self.icmp_len();
        let ip = &mut buf[ETH_LEN..ETH_LEN + HEADER_LEN];
        ip.fill(0);
        ip[0] = 0x60;
        ip[4..6].copy_from_slice(&(icmp_len as u16).to_be_bytes());
        ip[6] = ICMPV6;
        // NDP must arrive with 255 (RFC 4861 7.1); echo replies are routed.
        ip[7] = if matches!(self.msg, Msg::EchoReply { .. }) {
            64
        } else {
            255
        };
        ip[8..24].copy_from_slice(&self.src.octets());
        ip[24..40].copy_from_slice(&self.dst.octets());
        let icmp = &mut buf[ETH_LEN + HEADER_LEN..ETH_LEN + HEADER_LEN + icmp_len];
        match self.msg {
            Msg::Advert { target, solicited } => {
                icmp.fill(0);
                icmp[0] = NEIGHBOR_ADVERT;
                // Override, and Solicited when it answers a solicitation.
                icmp[4] = 0x20 | if solicited { 0x40 } else { 0 };
                icmp[8..24].copy_from_slice(&target.octets());
                icmp[24] = OPT_TARGET_LL;
                icmp[25] = 1;
                icmp[26..32].copy_from_slice(&self.eth_src);
            }
            Msg::Solicit { target, nonce } => {
                icmp.fill(0);
                icmp[0] = NEIGHBOR_SOLICIT;
                icmp[8..24].copy_from_slice(&target.octets());
                if self.src.is_unspecified() {
                    icmp[24] = OPT_NONCE;
                    icmp[26..32].copy_from_slice(&nonce);
                } else {
                    icmp[24] = OPT_SOURCE_LL;
                    icmp[26..32].copy_from_slice(&self.eth_src);
                }
                icmp[25] = 1;
            }
            Msg::EchoReply { at, len } => {
                icmp.copy_from_slice(&request[at..at + len]);
                icmp[0] = ECHO_REPLY;
                icmp[1] = 0;
            }
        }
        icmp[2..4].fill(0);
        let sum = checksum(self.src, self.dst, icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    }
}

/// The Ethernet address IPv6 multicast `group` maps to (RFC 2464 7).
pub fn multicast_mac(group: Ipv6Addr) -> [u8; 6] {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// `addr`'s solicited-node multicast group, ff02::1:ffXX:XXXX.
pub fn solicited_node(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::from([
        0xff, 0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0xff, o[13], o[14], o[15],
    ])
}

pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emitted_advert_checks_and_says_who_we_are() {
        let out = Out {
            eth_src: [2, 0, 0, 0, 0, 1],
            eth_dst: [2, 0, 0, 0, 0, 2],
            src: "2001:db8::1".parse().unwrap(),
            dst: "2001:db8::2".parse().unwrap(),
            msg: Msg::Advert {
                target: "2001:db8::1".parse().unwrap(),
                solicited: true,
            },
        };
        let mut buf = vec![0u8; out.frame_len()];
        out.emit(&mut buf, &[]);
        assert_eq!(buf.len(), 14 + 40 + 32);
        assert_eq!(checksum(out.src, out.dst, &buf[54..]), 0);
        assert_eq!(buf[54], NEIGHBOR_ADVERT);
        assert_eq!(buf[54 + 4], 0x60);
        assert_eq!(&buf[54 + 26..], &[2, 0, 0, 0, 0, 1]);
        assert_eq!(buf[21], 255, "NDP hop limit");
    }

    #[test]
    fn solicited_node_groups_and_their_macs() {
        let a: Ipv6Addr = "2001:db8::12:3456".parse().unwrap();
        assert_eq!(
            solicited_node(a),
            "ff02::1:ff12:3456".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(
            multicast_mac(solicited_node(a)),
            [0x33, 0x33, 0xff, 0x12, 0x34, 0x56]
        );
    }

    /// An odd-length message verifies once its checksum is filled in, and
    /// stops verifying when one bit of it flips.
    #[test]
    fn the_checksum_of_an_odd_length_message_pads_with_zero() {
        let (s, d): (Ipv6Addr, Ipv6Addr) = ("fe80::1".parse().unwrap(), "fe80::2".parse().unwrap());
        let mut msg = vec![ECHO_REQUEST, 0, 0, 0, 0, 1, 0, 1, 0xab];
        let sum = checksum(s, d, &msg);
        msg[2..4].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(checksum(s, d, &msg), 0);
        msg[8] ^= 1;
        assert_ne!(checksum(s, d, &msg), 0);
    }
}
