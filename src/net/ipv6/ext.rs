//! The IPv6 header and the walk over its extension headers to the upper
//! layer. What a host that forwards nothing and reassembles nothing must
//! refuse is refused here, each with its counter: routing type 0 (RFC 5095),
//! fragments (not reassembled this round), jumbograms (RFC 2675), option
//! types that say "discard", and next headers this stack does not know.

use std::net::Ipv6Addr;

use crate::net::counters::Counter;

pub const HEADER_LEN: usize = 40;
pub const HOP_BY_HOP: u8 = 0;
pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ROUTING: u8 = 43;
pub const FRAGMENT: u8 = 44;
pub const ICMPV6: u8 = 58;
pub const NO_NEXT: u8 = 59;
pub const DEST_OPTIONS: u8 = 60;
/// Extension headers walked at most: a longer chain is an attack, not traffic.
const MAX_EXT_HEADERS: usize = 8;
/// The Jumbo Payload option (RFC 2675).
const JUMBO_OPTION: u8 = 0xc2;

/// A parsed IPv6 header and the payload its length field gives.
#[derive(Debug, Clone, Copy)]
pub struct Header<'a> {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub hop_limit: u8,
    pub next_header: u8,
    /// Exactly `payload length` bytes (Ethernet padding cut off).
    pub payload: &'a [u8],
}

/// The fixed header of `packet` (an Ethernet payload).
pub fn parse(packet: &[u8]) -> Result<Header<'_>, Counter> {
    if packet.len() < HEADER_LEN || packet[0] >> 4 != 6 {
        return Err(Counter::Ipv6Malformed);
    }
    let len = usize::from(u16::from_be_bytes([packet[4], packet[5]]));
    let next_header = packet[6];
    if len == 0 && next_header == HOP_BY_HOP {
        // A zero length with a hop-by-hop header announces a jumbogram.
        return Err(Counter::Ipv6Jumbogram);
    }
    let Some(payload) = packet.get(HEADER_LEN..HEADER_LEN + len) else {
        return Err(Counter::Ipv6Malformed);
    };
    let addr = |at: usize| {
        let mut b = [0u8; 16];
        b.copy_from_slice(&packet[at..at + 16]);
        Ipv6Addr::from(b)
    };
    Ok(Header {
        src: addr(8),
        dst: addr(24),
        hop_limit: packet[7],
        next_header,
        payload,
    })
}

/// Walks the extension headers of `payload` from `first`: the upper-layer
/// protocol (ICMPv6, TCP, UDP or "no next header") and where it starts.
pub fn walk(first: u8, payload: &[u8]) -> Result<(u8, usize), Counter> {
    let (mut next, mut at) = (first, 0);
    for n in 0..MAX_EXT_HEADERS {
        match next {
            ICMPV6 | TCP | UDP | NO_NEXT => return Ok((next, at)),
            // RFC 8200 4.1: hop-by-hop options come first or not at all.
            HOP_BY_HOP if n != 0 => return Err(Counter::Ipv6ExtHeader),
            HOP_BY_HOP | DEST_OPTIONS => {
                let (nh, len) = ext_len(payload, at)?;
                options(&payload[at + 2..at + len])?;
                (next, at) = (nh, at + len);
            }
            ROUTING => {
                let (nh, len) = ext_len(payload, at)?;
                let (kind, segments_left) = (payload[at + 2], payload[at + 3]);
                if kind == 0 {
                    return Err(Counter::Ipv6RoutingType0);
                }
                if segments_left != 0 {
                    // We would have to forward it: a host does not.
                    return Err(Counter::Ipv6ExtHeader);
                }
                (next, at) = (nh, at + len);
            }
            FRAGMENT => return Err(Counter::Ipv6Fragment),
            _ => return Err(Counter::Ipv6BadNextHeader),
        }
    }
    Err(Counter::Ipv6ExtHeader)
}

/// An extension header's next header and length in bytes, if it fits.
fn ext_len(payload: &[u8], at: usize) -> Result<(u8, usize), Counter> {
    let head = payload.get(at..at + 8).ok_or(Counter::Ipv6Malformed)?;
    let len = (usize::from(head[1]) + 1) * 8;
    if at + len > payload.len() {
        return Err(Counter::Ipv6Malformed);
    }
    Ok((head[0], len))
}

/// Hop-by-hop or destination options: padding and skippable options pass;
/// a jumbo payload, or an unknown option whose type says "discard", does not.
fn options(mut opts: &[u8]) -> Result<(), Counter> {
    while let Some(&kind) = opts.first() {
        if kind == 0 {
            opts = &opts[1..]; // Pad1
            continue;
        }
        let len = usize::from(*opts.get(1).ok_or(Counter::Ipv6Malformed)?);
        if 2 + len > opts.len() {
            return Err(Counter::Ipv6Malformed);
        }
        match kind {
            JUMBO_OPTION => return Err(Counter::Ipv6Jumbogram),
            // PadN, Router Alert (MLD), and any "skip if unknown" type.
            1 | 5 => {}
            k if k >> 6 == 0 => {}
            _ => return Err(Counter::Ipv6ExtHeader),
        }
        opts = &opts[2 + len..];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; HEADER_LEN];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(payload.len() as u16).to_be_bytes());
        p[6] = next;
        p[7] = 64;
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn the_header_gives_addresses_and_exactly_its_payload() {
        let mut p = header(ICMPV6, &[1, 2, 3]);
        p[8 + 15] = 1;
        p[24 + 15] = 2;
        p.extend_from_slice(&[0xee; 6]); // Ethernet padding
        let h = parse(&p).unwrap();
        assert_eq!(h.src, "::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(h.dst, "::2".parse::<Ipv6Addr>().unwrap());
        assert_eq!(h.payload, &[1, 2, 3]);
        assert_eq!(parse(&p[..42]).unwrap_err(), Counter::Ipv6Malformed);
        p[0] = 0x40;
        assert_eq!(parse(&p).unwrap_err(), Counter::Ipv6Malformed);
        assert_eq!(
            parse(&header(HOP_BY_HOP, &[])).unwrap_err(),
            Counter::Ipv6Jumbogram
        );
    }

    #[test]
    fn bad_chains_are_refused_each_with_its_counter() {
        let hbh = |next: u8, opt: &[u8]| {
            let mut h = vec![next, 0];
            h.extend_from_slice(opt);
            h
        };
        // Hop-by-hop with PadN, then ICMPv6 at 8.
        assert_eq!(
            walk(HOP_BY_HOP, &hbh(ICMPV6, &[1, 4, 0, 0, 0, 0])),
            Ok((ICMPV6, 8))
        );
        assert_eq!(
            walk(HOP_BY_HOP, &hbh(ICMPV6, &[0xc2, 4, 0, 1, 0, 0])),
            Err(Counter::Ipv6Jumbogram)
        );
        // An unknown option of type 10xxxxxx: discard.
        assert_eq!(
            walk(HOP_BY_HOP, &hbh(ICMPV6, &[0x9e, 4, 0, 0, 0, 0])),
            Err(Counter::Ipv6ExtHeader)
        );
        assert_eq!(
            walk(HOP_BY_HOP, &hbh(ICMPV6, &[1, 9, 0, 0, 0, 0])),
            Err(Counter::Ipv6Malformed)
        );
        // Hop-by-hop after a destination options header.
        let mut chain = hbh(HOP_BY_HOP, &[1, 4, 0, 0, 0, 0]);
        chain.extend(hbh(ICMPV6, &[1, 4, 0, 0, 0, 0]));
        assert_eq!(walk(DEST_OPTIONS, &chain), Err(Counter::Ipv6ExtHeader));
        assert_eq!(
            walk(ROUTING, &[ICMPV6, 0, 0, 1, 0, 0, 0, 0]),
            Err(Counter::Ipv6RoutingType0)
        );
        assert_eq!(
            walk(ROUTING, &[ICMPV6, 0, 4, 1, 0, 0, 0, 0]),
            Err(Counter::Ipv6ExtHeader)
        );
        assert_eq!(
            walk(ROUTING, &[ICMPV6, 0, 4, 0, 0, 0, 0, 0]),
            Ok((ICMPV6, 8))
        );
        assert_eq!(
            walk(FRAGMENT, &[ICMPV6, 0, 0, 1, 0, 0, 0, 1]),
            Err(Counter::Ipv6Fragment)
        );
        assert_eq!(walk(253, &[0; 8]), Err(Counter::Ipv6BadNextHeader));
        assert_eq!(
            walk(DEST_OPTIONS, &[ICMPV6, 1, 0, 0]),
            Err(Counter::Ipv6Malformed)
        );
        // A chain longer than anyone sends.
        let long: Vec<u8> = (0..10)
            .flat_map(|_| hbh(DEST_OPTIONS, &[1, 4, 0, 0, 0, 0]))
            .collect();
        assert_eq!(walk(DEST_OPTIONS, &long), Err(Counter::Ipv6ExtHeader));
    }
}
