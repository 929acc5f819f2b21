//! The port's IPv6 behaviour on hand-made frames: what it answers, what it
//! drops and counts, and DAD.

use super::icmp::{self, checksum, Msg};
use super::*;

const MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x10];
const PEER_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x20];

fn ip(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn port() -> Ipv6Port {
    Ipv6Port::new(
        &Ipv6Spec {
            addresses: vec![(ip("2001:db8::1"), 64), (ip("fe80::1"), 64)],
            gateway: Some(ip("fe80::99")),
        },
        MAC,
    )
}

/// The port past DAD (nothing answered its probes).
fn ready() -> Ipv6Port {
    let mut p = port();
    let mut out = [None; TICK_FRAMES];
    p.tick(0, &mut out);
    p.tick(DAD_WAIT_US, &mut out);
    assert!(p.is_preferred(ip("2001:db8::1")));
    p
}

/// An Ethernet/IPv6 frame carrying ICMPv6 `icmp` (checksum filled in).
fn frame(src: Ipv6Addr, dst: Ipv6Addr, hop_limit: u8, mut icmp: Vec<u8>) -> Vec<u8> {
    let sum = checksum(src, dst, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut f = vec![0u8; 14 + 40];
    f[0..6].copy_from_slice(&icmp::multicast_mac(dst));
    f[6..12].copy_from_slice(&PEER_MAC);
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    f[14] = 0x60;
    f[18..20].copy_from_slice(&(icmp.len() as u16).to_be_bytes());
    f[20] = 58;
    f[21] = hop_limit;
    f[22..38].copy_from_slice(&src.octets());
    f[38..54].copy_from_slice(&dst.octets());
    f.extend_from_slice(&icmp);
    f
}

fn ns(target: Ipv6Addr, option: Option<(u8, [u8; 6])>) -> Vec<u8> {
    let mut m = vec![icmp::NEIGHBOR_SOLICIT, 0, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(&target.octets());
    if let Some((kind, v)) = option {
        m.extend_from_slice(&[kind, 1]);
        m.extend_from_slice(&v);
    }
    m
}

fn na(target: Ipv6Addr, flags: u8, mac: [u8; 6]) -> Vec<u8> {
    let mut m = vec![icmp::NEIGHBOR_ADVERT, 0, 0, 0, flags, 0, 0, 0];
    m.extend_from_slice(&target.octets());
    m.extend_from_slice(&[icmp::OPT_TARGET_LL, 1]);
    m.extend_from_slice(&mac);
    m
}

#[test]
fn a_solicitation_for_our_address_gets_a_solicited_advert_with_our_mac() {
    let mut p = ready();
    let mut c = Counters::new();
    let us = ip("2001:db8::1");
    let peer = ip("2001:db8::2");
    let f = frame(
        peer,
        icmp::solicited_node(us),
        255,
        ns(us, Some((icmp::OPT_SOURCE_LL, PEER_MAC))),
    );
    let out = p.on_frame(&f, true, 5, &mut c).expect("an advert");
    assert_eq!(out.eth_dst, PEER_MAC);
    assert_eq!((out.src, out.dst), (us, peer));
    assert_eq!(
        out.msg,
        Msg::Advert {
            target: us,
            solicited: true
        }
    );
    let mut buf = vec![0u8; out.frame_len()];
    out.emit(&mut buf, &f);
    assert_eq!(checksum(us, peer, &buf[54..]), 0);
    assert_eq!(&buf[54 + 26..54 + 32], &MAC);
    assert_eq!(c.get(Counter::Ipv6NsAnswered), 1);
    assert_eq!(
        p.neighbours.get(peer),
        Some((PEER_MAC, 5)),
        "learned from the NS"
    );
    // The copy another worker gets changes state but is not answered twice.
    assert!(p.on_frame(&f, false, 6, &mut c).is_none());
}

#[test]
fn ndp_from_off_link_bad_checksums_and_bad_options_are_dropped_and_counted() {
    let mut p = ready();
    let mut c = Counters::new();
    let us = ip("2001:db8::1");
    let peer = ip("2001:db8::2");
    let group = icmp::solicited_node(us);
    let sll = Some((icmp::OPT_SOURCE_LL, PEER_MAC));
    assert!(p
        .on_frame(&frame(peer, group, 64, ns(us, sll)), true, 0, &mut c)
        .is_none());
    assert_eq!(c.get(Counter::Ipv6NdpHopLimit), 1);
    let mut bad_sum = frame(peer, group, 255, ns(us, sll));
    bad_sum[54 + 10] ^= 0xff;
    assert!(p.on_frame(&bad_sum, true, 0, &mut c).is_none());
    assert_eq!(c.get(Counter::Ipv6BadChecksum), 1);
    let mut zero_len = ns(us, sll);
    zero_len[25] = 0;
    assert!(p
        .on_frame(&frame(peer, group, 255, zero_len), true, 0, &mut c)
        .is_none());
    assert_eq!(c.get(Counter::Ipv6NdpInvalid), 1);
    // Another node's address, and a unicast to someone else.
    assert!(p
        .on_frame(
            &frame(peer, ip("2001:db8::77"), 255, ns(us, sll)),
            true,
            0,
            &mut c
        )
        .is_none());
    assert_eq!(c.get(Counter::Ipv6NotForUs), 1);
    assert_eq!(c.get(Counter::Ipv6NsAnswered), 0);
    // A router advertisement is ignored (counted).
    let ra = vec![
        icmp::ROUTER_ADVERT,
        0,
        0,
        0,
        64,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    assert!(p
        .on_frame(&frame(ip("fe80::99"), ALL_NODES, 255, ra), true, 0, &mut c)
        .is_none());
    assert_eq!(c.get(Counter::Ipv6RouterAdverts), 1);
}

#[test]
fn echo_requests_to_our_address_are_answered_with_their_data() {
    let mut p = ready();
    let mut c = Counters::new();
    let us = ip("2001:db8::1");
    let peer = ip("2001:db8::2");
    let req = vec![
        icmp::ECHO_REQUEST,
        0,
        0,
        0,
        0x12,
        0x34,
        0,
        7,
        b'h',
        b'i',
        b'!',
    ];
    let f = frame(peer, us, 64, req);
    let out = p.on_frame(&f, true, 0, &mut c).expect("an echo reply");
    let mut buf = vec![0u8; out.frame_len()];
    out.emit(&mut buf, &f);
    assert_eq!(&buf[0..6], &PEER_MAC);
    assert_eq!(buf[54], icmp::ECHO_REPLY);
    assert_eq!(&buf[54 + 4..], &[0x12, 0x34, 0, 7, b'h', b'i', b'!']);
    assert_eq!(checksum(us, peer, &buf[54..]), 0);
    assert_eq!(c.get(Counter::Ipv6EchoAnswered), 1);
    // Not before DAD is done.
    assert!(port().on_frame(&f, true, 0, &mut c).is_none());
}

#[test]
fn dad_probes_then_announces_and_refuses_an_address_someone_defends() {
    let mut p = port();
    let mut c = Counters::new();
    let mut out = [None; TICK_FRAMES];
    p.tick(0, &mut out);
    let probes: Vec<_> = out.iter().flatten().copied().collect();
    assert_eq!(probes.len(), 2, "one probe per address");
    assert!(probes.iter().all(|o| o.src.is_unspecified()));
    // Our own probe looped back (same nonce) is no duplicate; the link-local
    // address's defender is.
    let mut own = vec![0u8; probes[0].frame_len()];
    probes[0].emit(&mut own, &[]);
    assert!(p.on_frame(&own, true, 1, &mut c).is_none());
    assert_eq!(c.get(Counter::Ipv6DadDuplicates), 0);
    let ll = ip("fe80::1");
    let defence = frame(ip("fe80::5"), ALL_NODES, 255, na(ll, 0x20, PEER_MAC));
    assert!(p.on_frame(&defence, true, 2, &mut c).is_none());
    assert_eq!(c.get(Counter::Ipv6DadDuplicates), 1);
    let mut out = [None; TICK_FRAMES];
    p.tick(DAD_WAIT_US, &mut out);
    assert!(p.is_preferred(ip("2001:db8::1")));
    assert!(!p.is_preferred(ll), "refused");
    let sent: Vec<_> = out.iter().flatten().collect();
    assert_eq!(sent.len(), 2, "one unsolicited NA, and the gateway's NS");
    assert_eq!(
        sent[0].msg,
        Msg::Advert {
            target: ip("2001:db8::1"),
            solicited: false
        }
    );
    assert_eq!(sent[0].dst, ALL_NODES);
    assert!(matches!(sent[1].msg, Msg::Solicit { target, .. } if target == ip("fe80::99")));
    // The link-local source is gone: the gateway is solicited from the global one.
    assert_eq!(sent[1].src, ip("2001:db8::1"));
    // A DAD probe for our preferred address is answered: we defend it.
    let probe = frame(
        Ipv6Addr::UNSPECIFIED,
        icmp::solicited_node(ip("2001:db8::1")),
        255,
        ns(ip("2001:db8::1"), Some((icmp::OPT_NONCE, [9; 6]))),
    );
    let d = p
        .on_frame(&probe, true, DAD_WAIT_US + 1, &mut c)
        .expect("defended");
    assert_eq!(
        (d.dst, d.msg),
        (
            ALL_NODES,
            Msg::Advert {
                target: ip("2001:db8::1"),
                solicited: false
            }
        )
    );
}

#[test]
fn the_gateway_resolves_from_its_advert_and_is_refreshed_later() {
    let mut p = ready();
    let mut c = Counters::new();
    let gw = ip("fe80::99");
    let gw_mac = [2, 0, 0, 0, 0, 0x99];
    let f = frame(gw, ip("fe80::1"), 255, na(gw, 0x60, gw_mac));
    assert!(p.on_frame(&f, true, DAD_WAIT_US + 10, &mut c).is_none());
    assert_eq!(p.neighbours.get(gw).map(|n| n.0), Some(gw_mac));
    assert_eq!(c.get(Counter::Ipv6NeighboursLearned), 1);
    assert_eq!(p.next_hop(ip("2001:db9::1")), Some(gw));
    assert_eq!(p.next_hop(ip("2001:db8::5")), Some(ip("2001:db8::5")));
    // Someone else's advert for an address we do not track is not learned.
    let other = frame(
        ip("fe80::5"),
        ALL_NODES,
        255,
        na(ip("fe80::5"), 0x20, PEER_MAC),
    );
    p.on_frame(&other, true, DAD_WAIT_US + 11, &mut c);
    assert_eq!(p.neighbours.get(ip("fe80::5")), None);
    let mut out = [None; TICK_FRAMES];
    p.tick(DAD_WAIT_US + 2 * TICK_US, &mut out);
    assert!(out.iter().all(Option::is_none), "resolved: nothing to send");
    p.tick(DAD_WAIT_US + 10 + REFRESH_US, &mut out);
    assert!(matches!(out[0].map(|o| o.msg), Some(Msg::Solicit { target, .. }) if target == gw));
}

#[test]
fn bad_extension_headers_are_dropped_with_their_counter() {
    let mut p = ready();
    let mut c = Counters::new();
    let us = ip("2001:db8::1");
    let mut f = frame(
        ip("2001:db8::2"),
        us,
        64,
        vec![icmp::ECHO_REQUEST, 0, 0, 0, 0, 1, 0, 1],
    );
    // Put a routing header (type 0) in front of the ICMPv6 message.
    f[20] = 43;
    f.splice(54..54, [58u8, 0, 0, 1, 0, 0, 0, 0]);
    f[18..20].copy_from_slice(&16u16.to_be_bytes());
    assert!(p.on_frame(&f, true, 0, &mut c).is_none());
    assert_eq!(c.get(Counter::Ipv6RoutingType0), 1);
    f[54 + 2] = 4; // segment routing with segments left: not forwarded
    p.on_frame(&f, true, 0, &mut c);
    f[20] = 44; // a fragment
    p.on_frame(&f, true, 0, &mut c);
    f[20] = 6; // TCP over IPv6: not this round
    p.on_frame(&f, true, 0, &mut c);
    f.truncate(60); // shorter than its payload length
    p.on_frame(&f, true, 0, &mut c);
    assert_eq!(c.get(Counter::Ipv6ExtHeader), 1);
    assert_eq!(c.get(Counter::Ipv6Fragment), 1);
    assert_eq!(c.get(Counter::Ipv6Unhandled), 1);
    assert_eq!(c.get(Counter::Ipv6Malformed), 1);
    assert_eq!(c.get(Counter::Ipv6Frames), 5);
}
