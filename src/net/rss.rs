//! Receive-side scaling as NICs compute it: the Toeplitz hash of a TCP/IPv4
//! or TCP/IPv6 4-tuple under a 40-byte key, and the choice of an upstream local port
//! whose replies the NIC's RSS steers to a given queue. Port steering is the
//! exception-free path on NICs with Toeplitz RSS; where the device cannot
//! steer (veth in the lab), replies are handed over between workers.

use std::net::{Ipv4Addr, Ipv6Addr};

/// The key ZProxy programs: Microsoft's well-known default RSS key, which
/// DPDK's documentation and the published verification vectors use.
pub const RSS_KEY: [u8; 40] = [
    0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2, 0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
    0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4, 0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
    0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
];

/// Toeplitz hash of `input` under `key` (as `rte_softrss` computes it).
pub fn toeplitz(key: &[u8; 40], input: &[u8]) -> u32 {
    let mut hash = 0u32;
    // The 32-bit window of the key that lines up with the current input bit.
    let mut window = u32::from_be_bytes([key[0], key[1], key[2], key[3]]);
    for (i, &byte) in input.iter().enumerate() {
        for bit in (0..8).rev() {
            if byte & (1 << bit) != 0 {
                hash ^= window;
            }
            // Slide the window one bit: shift in the next key bit.
            let next_bit_index = (i + 4) * 8 + (7 - bit);
            let next = key
                .get(next_bit_index / 8)
                .map_or(0, |b| (b >> (7 - next_bit_index % 8)) & 1);
            window = (window << 1) | u32::from(next);
        }
    }
    hash
}

/// The hash of a received TCP/IPv4 frame: source address and port first,
/// as the sender filled them in.
pub fn tcp4_hash(
    key: &[u8; 40],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    src_port: u16,
    dst_port: u16,
) -> u32 {
    toeplitz(key, &tcp4_input(src, dst, src_port, dst_port))
}

/// The hash of a received TCP/IPv6 frame: source address, destination
/// address, source port, destination port (the RSS spec's IPv6 input; no
/// extension headers are hashed).
pub fn tcp6_hash(
    key: &[u8; 40],
    src: Ipv6Addr,
    dst: Ipv6Addr,
    src_port: u16,
    dst_port: u16,
) -> u32 {
    toeplitz(key, &tcp6_input(src, dst, src_port, dst_port))
}

/// The hash of an IPv6 frame that is not TCP (addresses only).
pub fn ip6_hash(key: &[u8; 40], src: Ipv6Addr, dst: Ipv6Addr) -> u32 {
    toeplitz(key, &tcp6_input(src, dst, 0, 0)[..32])
}

pub(super) fn tcp6_input(src: Ipv6Addr, dst: Ipv6Addr, src_port: u16, dst_port: u16) -> [u8; 36] {
    let mut input = [0u8; 36];
    input[0..16].copy_from_slice(&src.octets());
    input[16..32].copy_from_slice(&dst.octets());
    input[32..34].copy_from_slice(&src_port.to_be_bytes());
    input[34..36].copy_from_slice(&dst_port.to_be_bytes());
    input
}

fn tcp4_input(src: Ipv4Addr, dst: Ipv4Addr, src_port: u16, dst_port: u16) -> [u8; 12] {
    let mut input = [0u8; 12];
    input[0..4].copy_from_slice(&src.octets());
    input[4..8].copy_from_slice(&dst.octets());
    input[8..10].copy_from_slice(&src_port.to_be_bytes());
    input[10..12].copy_from_slice(&dst_port.to_be_bytes());
    input
}

/// The queue a NIC with a redirection table of `reta_size` entries filled
/// round robin over `queues` (what `Port` programs) puts a hash on.
pub fn queue_of(hash: u32, reta_size: u32, queues: u16) -> u16 {
    ((hash % reta_size) % u32::from(queues)) as u16
}

/// A Toeplitz hash over `N`-byte inputs by table: the hash is linear over
/// GF(2), the XOR of each input byte's own contribution, looked up here by
/// position and value (N × 256 entries, built once at start).
pub(super) struct ByteTable<const N: usize>(Box<[[u32; 256]; N]>);

impl<const N: usize> ByteTable<N> {
    pub(super) fn new(key: &[u8; 40]) -> Self {
        let mut table = Box::new([[0u32; 256]; N]);
        for (position, row) in table.iter_mut().enumerate() {
            for (value, entry) in row.iter_mut().enumerate() {
                let mut input = [0u8; N];
                input[position] = value as u8;
                *entry = toeplitz(key, &input);
            }
        }
        ByteTable(table)
    }

    pub(super) fn hash(&self, input: &[u8; N]) -> u32 {
        input
            .iter()
            .zip(self.0.iter())
            .fold(0, |hash, (&byte, row)| hash ^ row[usize::from(byte)])
    }
}

/// The first local port in `ports` (tried from `start`, wrapping) for which
/// `on_queue` holds.
pub(super) fn first_port(
    ports: (u16, u16),
    start: u16,
    on_queue: impl Fn(u16) -> bool,
) -> Option<u16> {
    let (lo, hi) = ports;
    let span = u32::from(hi - lo) + 1;
    (0..span)
        .map(|i| lo + ((u32::from(start.clamp(lo, hi) - lo) + i) % span) as u16)
        .find(|&port| on_queue(port))
}

/// Which receive queue a TCP/IPv4 frame belongs on, as a NIC programmed with
/// `RSS_KEY` and a round-robin redirection table puts it. Every worker owns
/// the flows of its queue, so this is also the rule for which worker owns a
/// flow, whatever queue the device really delivered a frame to.
pub struct Steering {
    table: ByteTable<12>,
    reta_size: u32,
    queues: u16,
}

impl Steering {
    pub fn new(key: &[u8; 40], reta_size: u32, queues: u16) -> Steering {
        Steering {
            table: ByteTable::new(key),
            reta_size: reta_size.max(1),
            queues: queues.max(1),
        }
    }

    /// Toeplitz hash of a TCP/IPv4 frame from `src` to `dst`.
    pub fn hash(&self, src: Ipv4Addr, dst: Ipv4Addr, src_port: u16, dst_port: u16) -> u32 {
        self.table.hash(&tcp4_input(src, dst, src_port, dst_port))
    }

    /// The queue a frame from `src` to `dst` belongs on.
    pub fn queue(&self, src: Ipv4Addr, dst: Ipv4Addr, src_port: u16, dst_port: u16) -> u16 {
        queue_of(
            self.hash(src, dst, src_port, dst_port),
            self.reta_size,
            self.queues,
        )
    }

    /// The first local port in `ports` (tried from `start`, wrapping) whose
    /// replies from `server` belong on `queue`.
    pub fn steered_port(
        &self,
        server: (Ipv4Addr, u16),
        local_ip: Ipv4Addr,
        ports: (u16, u16),
        start: u16,
        queue: u16,
    ) -> Option<u16> {
        // Replies come from the server to us: the server is the source.
        first_port(ports, start, |port| {
            self.queue(server.0, local_ip, server.1, port) == queue
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Microsoft's RSS verification suite (IPv4 with TCP ports), the vectors
    /// DPDK's `test_thash` checks `rte_softrss` against.
    #[test]
    fn matches_the_published_verification_vectors() {
        let cases = [
            (
                (66, 9, 149, 187),
                2794,
                (161, 142, 100, 80),
                1766,
                0x51cc_c178u32,
            ),
            (
                (199, 92, 111, 2),
                14230,
                (65, 69, 140, 83),
                4739,
                0xc626_b0ea,
            ),
            (
                (24, 19, 198, 95),
                12898,
                (12, 22, 207, 184),
                38024,
                0x5c2b_394a,
            ),
            (
                (38, 27, 205, 30),
                48228,
                (209, 142, 163, 6),
                2217,
                0xafc7_327f,
            ),
            (
                (153, 39, 163, 191),
                44251,
                (202, 188, 127, 2),
                1303,
                0x10e8_28a2,
            ),
        ];
        for ((a, b, c, d), sport, (e, f, g, h), dport, want) in cases {
            let got = tcp4_hash(
                &RSS_KEY,
                Ipv4Addr::new(a, b, c, d),
                Ipv4Addr::new(e, f, g, h),
                sport,
                dport,
            );
            assert_eq!(
                got, want,
                "{a}.{b}.{c}.{d}:{sport} -> {e}.{f}.{g}.{h}:{dport}"
            );
        }
    }

    /// The same page's IPv6 table: (destination, port), (source, port),
    /// "IPv6 only", "IPv6 with TCP".
    #[test]
    fn matches_the_published_ipv6_verification_vectors() {
        let cases = [
            (
                ("3ffe:2501:200:3::1", 1766),
                ("3ffe:2501:200:1fff::7", 2794),
                0x2cc1_8cd5u32,
                0x4020_7d3du32,
            ),
            (
                ("ff02::1", 4739),
                ("3ffe:501:8::260:97ff:fe40:efab", 14230),
                0x0f0c_461c,
                0xdde5_1bbf,
            ),
            (
                ("fe80::200:f8ff:fe21:67cf", 38024),
                ("3ffe:1900:4545:3:200:f8ff:fe21:67cf", 44251),
                0x4b61_e985,
                0x02d1_feef,
            ),
        ];
        for ((dst, dport), (src, sport), ip_only, with_tcp) in cases {
            let (d, s): (Ipv6Addr, Ipv6Addr) = (dst.parse().unwrap(), src.parse().unwrap());
            assert_eq!(ip6_hash(&RSS_KEY, s, d), ip_only, "{src} -> {dst}");
            assert_eq!(
                tcp6_hash(&RSS_KEY, s, d, sport, dport),
                with_tcp,
                "[{src}]:{sport} -> [{dst}]:{dport}"
            );
        }
    }

    #[test]
    fn the_table_hash_is_the_bitwise_hash() {
        let steering = Steering::new(&RSS_KEY, 128, 4);
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..10_000 {
            x = crate::net::flow::mix(x);
            let [a, b, c, d, e, f, g, h] = x.to_be_bytes();
            let (src, dst) = (Ipv4Addr::new(a, b, c, d), Ipv4Addr::new(e, f, g, h));
            let (sport, dport) = (x as u16, (x >> 16) as u16);
            assert_eq!(
                steering.hash(src, dst, sport, dport),
                tcp4_hash(&RSS_KEY, src, dst, sport, dport)
            );
        }
    }

    #[test]
    fn steered_ports_land_on_the_intended_queue() {
        let server = (Ipv4Addr::new(10, 72, 0, 1), 80);
        let me = Ipv4Addr::new(10, 72, 0, 2);
        for (queues, reta_size) in [(2u16, 128u32), (3, 512), (4, 128), (8, 64)] {
            let steering = Steering::new(&RSS_KEY, reta_size, queues);
            for queue in 0..queues {
                let mut start = 20_000;
                for _ in 0..200 {
                    let port = steering
                        .steered_port(server, me, (20_000, 60_999), start, queue)
                        .expect("a port");
                    assert!((20_000..=60_999).contains(&port));
                    let hash = tcp4_hash(&RSS_KEY, server.0, me, server.1, port);
                    assert_eq!(queue_of(hash, reta_size, queues), queue);
                    start = port + 1;
                }
            }
        }
    }

    #[test]
    fn a_port_range_too_small_for_a_queue_has_no_port() {
        let steering = Steering::new(&RSS_KEY, 128, 8);
        let server = (Ipv4Addr::new(10, 72, 0, 1), 80);
        let me = Ipv4Addr::new(10, 72, 0, 2);
        let found = (0..8)
            .filter(|&q| {
                steering
                    .steered_port(server, me, (40_000, 40_001), 40_000, q)
                    .is_some()
            })
            .count();
        assert!(found <= 2);
    }
}
