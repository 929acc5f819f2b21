//! Receive-side scaling as NICs compute it: the Toeplitz hash of a TCP/IPv4
//! 4-tuple under a 40-byte key, and the choice of an upstream local port
//! whose replies the NIC's RSS steers to a given queue. Port steering is the
//! exception-free path on NICs with Toeplitz RSS; where the device cannot
//! steer (veth in the lab), replies are handed over between workers.

use std::net::Ipv4Addr;

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
    let mut input = [0u8; 12];
    input[0..4].copy_from_slice(&src.octets());
    input[4..8].copy_from_slice(&dst.octets());
    input[8..10].copy_from_slice(&src_port.to_be_bytes());
    input[10..12].copy_from_slice(&dst_port.to_be_bytes());
    toeplitz(key, &input)
}

/// The queue a NIC with a redirection table of `reta_size` entries filled
/// round robin over `queues` (DPDK's default) puts a hash on.
pub fn queue_of(hash: u32, reta_size: u32, queues: u16) -> u16 {
    ((hash % reta_size) % u32::from(queues)) as u16
}

/// The first local port in `ports` (tried from `start`, wrapping) whose
/// replies from `server` RSS steers to `queue`.
pub fn steered_port(
    server: (Ipv4Addr, u16),
    local_ip: Ipv4Addr,
    ports: (u16, u16),
    start: u16,
    queue: u16,
    queues: u16,
    reta_size: u32,
) -> Option<u16> {
    let (lo, hi) = ports;
    let span = u32::from(hi - lo) + 1;
    (0..span)
        .map(|i| lo + ((u32::from(start.clamp(lo, hi) - lo) + i) % span) as u16)
        .find(|&port| {
            // Replies come from the server to us: the server is the source.
            let hash = tcp4_hash(&RSS_KEY, server.0, local_ip, server.1, port);
            queue_of(hash, reta_size, queues) == queue
        })
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

    #[test]
    fn steered_ports_land_on_the_intended_queue() {
        let server = (Ipv4Addr::new(10, 72, 0, 1), 80);
        let me = Ipv4Addr::new(10, 72, 0, 2);
        for queues in [2u16, 4, 8] {
            for queue in 0..queues {
                let mut start = 20_000;
                for _ in 0..200 {
                    let port =
                        steered_port(server, me, (20_000, 60_999), start, queue, queues, 128)
                            .expect("a port");
                    let hash = tcp4_hash(&RSS_KEY, server.0, me, server.1, port);
                    assert_eq!(queue_of(hash, 128, queues), queue);
                    start = port + 1;
                }
            }
        }
    }
}
