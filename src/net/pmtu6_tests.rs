use smoltcp::wire::{EthernetAddress, Icmpv6Packet, Ipv6Packet, TcpPacket};

use super::*;
use crate::net::segment::{self, Build};

const US: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x71, 0, 0, 0, 0, 2);
const CLIENT: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x99, 0, 0, 0, 0, 1);
const ROUTER: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x71, 0, 0, 0, 0, 1);

fn ours(a: Ipv6Addr) -> bool {
    a == US
}

/// A TCP segment of ours with `payload` bytes (0..=255 repeating).
fn segment(seq: u32, payload: usize, flags: u8) -> Vec<u8> {
    let b = Build {
        src_mac: EthernetAddress([2, 0, 0, 0, 0, 2]),
        dst_mac: EthernetAddress([2, 0, 0, 0, 0, 1]),
        src: (US.into(), 80),
        dst: (CLIENT.into(), 40000),
        syn: false,
        seq,
        ack: Some(1),
        window: 1000,
        mss: None,
    };
    let mut f = vec![0u8; b.frame_len()];
    b.emit(&mut f);
    f.extend((0..payload).map(|i| i as u8));
    let plen = (f.len() - 54) as u16;
    f[18..20].copy_from_slice(&plen.to_be_bytes());
    f[54 + 13] |= flags;
    let mut tcp = TcpPacket::new_unchecked(&mut f[54..]);
    tcp.fill_checksum(&US.into(), &CLIENT.into());
    f
}

/// A Packet Too Big from `ROUTER` to `to` saying `mtu`, quoting `quoted`'s IP packet.
fn ptb(to: Ipv6Addr, mtu: u32, quoted: &[u8]) -> Vec<u8> {
    let quote = &quoted[14..quoted.len().min(14 + 1232)];
    let mut f = vec![0u8; 14 + 40 + 8];
    f[12..14].copy_from_slice(&[0x86, 0xdd]);
    f[14] = 0x60;
    f[18..20].copy_from_slice(&((8 + quote.len()) as u16).to_be_bytes());
    f[20] = 58;
    f[21] = 64;
    f[22..38].copy_from_slice(&ROUTER.octets());
    f[38..54].copy_from_slice(&to.octets());
    f[54] = 2;
    f[58..62].copy_from_slice(&mtu.to_be_bytes());
    f.extend_from_slice(quote);
    let mut icmp = Icmpv6Packet::new_unchecked(&mut f[54..]);
    icmp.fill_checksum(&ROUTER, &to);
    f
}

#[test]
fn a_ptb_quoting_our_segment_names_its_flow_mtu_and_sequence() {
    let got = parse(&ptb(US, 1400, &segment(7777, 1000, 0)), ours).unwrap();
    assert_eq!(
        got.key,
        FlowKey6 {
            remote_ip: CLIENT,
            remote_port: 40000,
            local_ip: US,
            local_port: 80
        }
    );
    assert_eq!((got.mtu, got.seq), (1400, 7777));
}

#[test]
fn what_is_not_a_usable_ptb_is_refused() {
    let quoted = segment(7777, 1000, 0);
    assert_eq!(parse(&ptb(US, 1279, &quoted), ours), Err(Refused::TooSmall));
    assert_eq!(
        parse(&ptb(ROUTER, 1400, &quoted), ours),
        Err(Refused::NotPtb)
    );
    let mut bad = ptb(US, 1400, &quoted);
    bad[60] ^= 1; // the MTU, after the checksum
    assert_eq!(parse(&bad, ours), Err(Refused::Malformed));
    // A quote cut before the sequence number.
    let short = ptb(US, 1400, &quoted[..14 + 40 + 4]);
    assert_eq!(parse(&short, ours), Err(Refused::Malformed));
    // A quote of someone else's packet (its source is not ours).
    let mut theirs = quoted.clone();
    theirs[22..38].copy_from_slice(&CLIENT.octets());
    assert_eq!(parse(&ptb(US, 1400, &theirs), ours), Err(Refused::NotPtb));
    // Another ICMPv6 message.
    let mut echo = ptb(US, 1400, &quoted);
    echo[54] = 128;
    assert_eq!(parse(&echo, ours), Err(Refused::NotPtb));
    // Nothing of this parses as a panic.
    let whole = ptb(US, 1400, &quoted);
    for cut in 0..whole.len() {
        let _ = parse(&whole[..cut], ours);
    }
}

#[test]
fn only_an_unacknowledged_sequence_number_is_in_flight() {
    assert!(in_flight(10_000, 3000, 9_999));
    assert!(in_flight(10_000, 3000, 7_000));
    assert!(!in_flight(10_000, 3000, 6_999), "already acknowledged");
    assert!(!in_flight(10_000, 3000, 10_000), "not sent yet");
    assert!(!in_flight(10_000, 0, 9_999), "nothing in flight");
    assert!(in_flight(5, 100, u32::MAX - 10), "across the wrap");
}

#[test]
fn a_long_segment_is_cut_to_the_path_mtu() {
    let f = segment(1_000, 3_000, 0x09); // PSH|FIN
    assert!(plan(&f, 9000).is_none(), "fits a 9000 MTU");
    let p = plan(&f, 1280).expect("longer than 1280");
    assert_eq!(p, (74, 3_000, 1220));
    assert_eq!(pieces(p), 3);
    let mut payload = Vec::new();
    let mut seq = 1_000;
    for i in 0..pieces(p) {
        let len = 74 + (p.2).min(p.1 - i * p.2);
        let mut out = vec![0u8; len];
        write_piece(&f, p, i, &mut out);
        assert!(out.len() <= 14 + 1280);
        let ip = Ipv6Packet::new_checked(&out[14..]).unwrap();
        assert_eq!(usize::from(ip.payload_len()), out.len() - 54);
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        assert!(tcp.verify_checksum(&US.into(), &CLIENT.into()), "piece {i}");
        assert_eq!(tcp.seq_number().0 as u32, seq);
        let last = i + 1 == pieces(p);
        assert_eq!((tcp.fin(), tcp.psh()), (last, last), "piece {i}");
        assert!(tcp.ack());
        seq += tcp.payload().len() as u32;
        payload.extend_from_slice(tcp.payload());
        assert_eq!(segment::parse(&out).unwrap().seq, tcp.seq_number().0 as u32);
    }
    assert_eq!(payload, (0..3_000).map(|i| i as u8).collect::<Vec<_>>());
    // SYNs are never cut.
    let mut syn = f.clone();
    syn[54 + 13] |= 0x02;
    assert!(plan(&syn, 1280).is_none());
}
