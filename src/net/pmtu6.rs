//! Path MTU for IPv6 flows (RFC 8201): reading an ICMPv6 Packet Too Big
//! that quotes one of our TCP segments, and cutting a flow's segments to a
//! lowered path MTU.
//!
//! smoltcp 0.14 takes a socket's segment size from its interface's MTU,
//! read once at `Interface::new`, and the peer's MSS option (a private
//! field); one interface serves every flow of a port, so there is no way to
//! lower one flow's MSS without patching it. Instead the device cuts a
//! segment longer than the flow's path MTU into several, as a NIC's TSO
//! would: smoltcp sent one segment, the peer receives (and acknowledges)
//! several, which TCP allows. Only flows a valid PTB lowered pay for it.

use std::net::Ipv6Addr;

use smoltcp::wire::{Icmpv6Packet, IpProtocol, Ipv6Packet, TcpPacket};

use super::flow6::FlowKey6;

/// The smallest MTU IPv6 allows (RFC 8200 section 5).
pub const MIN_MTU: u16 = 1280;
const ETH: usize = 14;
const IP6: usize = 40;

/// What a Packet Too Big says about a segment of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooBig {
    /// The flow the quoted segment belongs to (our key: remote is its destination).
    pub key: FlowKey6,
    pub mtu: u32,
    /// The quoted segment's sequence number.
    pub seq: u32,
}

/// Why a Packet Too Big is not acted on (each counted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not a PTB, or not one quoting TCP from `ours` (left to `net::ipv6`).
    NotPtb,
    /// Cut short, or a bad ICMPv6 checksum.
    Malformed,
    /// An MTU below 1280.
    TooSmall,
}

/// Reads an Ethernet/IPv6/ICMPv6 frame to `ours`: a Packet Too Big (type
/// 2, code 0) quoting a TCP segment sent from `ours`.
pub fn parse(frame: &[u8], ours: impl Fn(Ipv6Addr) -> bool) -> Result<TooBig, Refused> {
    let ip = frame
        .get(ETH..)
        .and_then(|b| Ipv6Packet::new_checked(b).ok())
        .ok_or(Refused::NotPtb)?;
    if ip.next_header() != IpProtocol::Icmpv6 || !ours(ip.dst_addr()) {
        return Err(Refused::NotPtb);
    }
    let icmp = Icmpv6Packet::new_checked(ip.payload()).map_err(|_| Refused::NotPtb)?;
    if icmp.msg_type() != smoltcp::wire::Icmpv6Message::PktTooBig || icmp.msg_code() != 0 {
        return Err(Refused::NotPtb);
    }
    if !icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()) {
        return Err(Refused::Malformed);
    }
    let body = ip.payload();
    let mtu = u32::from_be_bytes(body[4..8].try_into().expect("4 bytes"));
    // The quote: our IPv6 header and at least the TCP ports and sequence number.
    let quoted = body.get(8..).ok_or(Refused::Malformed)?;
    if quoted.len() < IP6 + 8 || quoted[0] >> 4 != 6 {
        return Err(Refused::Malformed);
    }
    if quoted[6] != 6 {
        return Err(Refused::NotPtb); // not TCP straight after the header
    }
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&quoted[8..24]).expect("16 bytes"));
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&quoted[24..40]).expect("16 bytes"));
    if !ours(src) {
        return Err(Refused::NotPtb);
    }
    if mtu < u32::from(MIN_MTU) {
        return Err(Refused::TooSmall);
    }
    let t = &quoted[IP6..];
    Ok(TooBig {
        key: FlowKey6 {
            remote_ip: dst,
            remote_port: u16::from_be_bytes([t[2], t[3]]),
            local_ip: src,
            local_port: u16::from_be_bytes([t[0], t[1]]),
        },
        mtu,
        seq: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
    })
}

/// The quoted sequence number is one we sent and is not yet acknowledged
/// (as Linux checks, SND.UNA <= seq < SND.NXT). smoltcp does not expose
/// SND.UNA: its send queue (sent and unsent bytes not yet acknowledged)
/// bounds what is in flight from above, so the range is at most that wide.
pub fn in_flight(snd_nxt: u32, send_queue: usize, seq: u32) -> bool {
    let behind = snd_nxt.wrapping_sub(seq);
    behind >= 1 && behind as usize <= send_queue
}

/// How an Ethernet/IPv6/TCP frame longer than `path_mtu` is cut:
/// (bytes of the headers, payload bytes, payload bytes per piece).
pub fn plan(frame: &[u8], path_mtu: u16) -> Option<(usize, usize, usize)> {
    if frame.len() <= ETH + usize::from(path_mtu) || frame.get(12..14)? != [0x86, 0xdd] {
        return None;
    }
    if frame[ETH + 6] != 6 {
        return None;
    }
    let tcp = frame.get(ETH + IP6..)?;
    let doff = usize::from(tcp.get(12)? >> 4) * 4;
    let segment = usize::from(u16::from_be_bytes([frame[ETH + 4], frame[ETH + 5]]));
    if tcp[13] & 0x02 != 0 || doff < 20 || segment > tcp.len() || segment <= doff {
        return None; // a SYN, or nothing to cut
    }
    let per_piece = usize::from(path_mtu).checked_sub(IP6 + doff)?.max(1);
    Some((ETH + IP6 + doff, segment - doff, per_piece))
}

/// Writes piece `i` of `frame` (cut as `plan` says) into `out`, which is
/// `headers + its payload` long: its own sequence number, payload length
/// and checksum; FIN and PSH only on the last piece.
pub fn write_piece(
    frame: &[u8],
    (headers, payload, per): (usize, usize, usize),
    i: usize,
    out: &mut [u8],
) {
    let start = i * per;
    let len = per.min(payload - start);
    out[..headers].copy_from_slice(&frame[..headers]);
    out[headers..headers + len].copy_from_slice(&frame[headers + start..headers + start + len]);
    let tcp_len = headers - ETH - IP6 + len;
    out[ETH + 4..ETH + 6].copy_from_slice(&(tcp_len as u16).to_be_bytes());
    let t = ETH + IP6;
    let seq = u32::from_be_bytes(out[t + 4..t + 8].try_into().expect("4 bytes"));
    out[t + 4..t + 8].copy_from_slice(&seq.wrapping_add(start as u32).to_be_bytes());
    if start + len < payload {
        out[t + 13] &= !0x09; // FIN, PSH: the last piece's
    }
    let src = Ipv6Addr::from(<[u8; 16]>::try_from(&out[ETH + 8..ETH + 24]).expect("16 bytes"));
    let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&out[ETH + 24..ETH + 40]).expect("16 bytes"));
    let mut tcp = TcpPacket::new_unchecked(&mut out[t..t + tcp_len]);
    tcp.fill_checksum(&src.into(), &dst.into());
}

/// Pieces of a plan.
pub fn pieces((_, payload, per): (usize, usize, usize)) -> usize {
    payload.div_ceil(per)
}

#[cfg(test)]
#[path = "pmtu6_tests.rs"]
mod tests;
