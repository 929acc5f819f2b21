//! Toeplitz steering for TCP/IPv6 (issue #15): which worker owns an IPv6
//! flow, and upstream local ports whose replies land on a chosen queue. A
//! table of its own (36 input bytes × 256 values, 36 KiB, built at start)
//! beside `rss::Steering`'s IPv4 one, so IPv4 lookups do not change.

use std::net::Ipv6Addr;

use super::rss::{first_port, queue_of, tcp6_input, ByteTable};

/// The IPv6 counterpart of `rss::Steering`.
pub struct Steering6 {
    table: ByteTable<36>,
    reta_size: u32,
    queues: u16,
}

impl Steering6 {
    pub fn new(key: &[u8; 40], reta_size: u32, queues: u16) -> Steering6 {
        Steering6 {
            table: ByteTable::new(key),
            reta_size: reta_size.max(1),
            queues: queues.max(1),
        }
    }

    /// Toeplitz hash of a TCP/IPv6 frame from `src` to `dst`.
    pub fn hash(&self, src: Ipv6Addr, dst: Ipv6Addr, src_port: u16, dst_port: u16) -> u32 {
        self.table.hash(&tcp6_input(src, dst, src_port, dst_port))
    }

    /// The queue a frame from `src` to `dst` belongs on.
    pub fn queue(&self, src: Ipv6Addr, dst: Ipv6Addr, src_port: u16, dst_port: u16) -> u16 {
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
        server: (Ipv6Addr, u16),
        local_ip: Ipv6Addr,
        ports: (u16, u16),
        start: u16,
        queue: u16,
    ) -> Option<u16> {
        first_port(ports, start, |port| {
            self.queue(server.0, local_ip, server.1, port) == queue
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::rss::{tcp6_hash, RSS_KEY};

    #[test]
    fn the_table_hash_matches_microsofts_ipv6_vectors() {
        let steering = Steering6::new(&RSS_KEY, 128, 4);
        let cases = [
            (
                "3ffe:2501:200:1fff::7",
                2794,
                "3ffe:2501:200:3::1",
                1766,
                0x4020_7d3du32,
            ),
            (
                "3ffe:501:8::260:97ff:fe40:efab",
                14230,
                "ff02::1",
                4739,
                0xdde5_1bbf,
            ),
            (
                "3ffe:1900:4545:3:200:f8ff:fe21:67cf",
                44251,
                "fe80::200:f8ff:fe21:67cf",
                38024,
                0x02d1_feef,
            ),
        ];
        for (src, sport, dst, dport, want) in cases {
            let (s, d) = (src.parse().unwrap(), dst.parse().unwrap());
            assert_eq!(
                steering.hash(s, d, sport, dport),
                want,
                "[{src}]:{sport} -> [{dst}]:{dport}"
            );
        }
    }

    #[test]
    fn the_table_hash_is_the_bitwise_hash() {
        let steering = Steering6::new(&RSS_KEY, 128, 4);
        let mut x = 0x0fed_cba9_8765_4321u64;
        for _ in 0..2_000 {
            let mut words = [0u64; 4];
            for w in &mut words {
                x = crate::net::flow::mix(x);
                *w = x;
            }
            let src = Ipv6Addr::from(u128::from(words[0]) << 64 | u128::from(words[1]));
            let dst = Ipv6Addr::from(u128::from(words[2]) << 64 | u128::from(words[3]));
            let (sport, dport) = (x as u16, (x >> 16) as u16);
            assert_eq!(
                steering.hash(src, dst, sport, dport),
                tcp6_hash(&RSS_KEY, src, dst, sport, dport)
            );
        }
    }

    #[test]
    fn steered_ports_land_on_the_intended_queue() {
        let steering = Steering6::new(&RSS_KEY, 128, 4);
        let server: (Ipv6Addr, u16) = ("2001:db8:72::10".parse().unwrap(), 80);
        let local: Ipv6Addr = "2001:db8:72::2".parse().unwrap();
        for queue in 0..4 {
            let port = steering
                .steered_port(server, local, (32768, 60999), 40000, queue)
                .unwrap();
            assert!((32768..=60999).contains(&port));
            let hash = tcp6_hash(&RSS_KEY, server.0, local, server.1, port);
            assert_eq!(queue_of(hash, 128, 4), queue, "port {port}");
        }
        // A one-port range holds one queue's port only.
        let only = steering.queue(server.0, local, server.1, 40000);
        let other = (only + 1) % 4;
        assert_eq!(
            steering.steered_port(server, local, (40000, 40000), 40000, other),
            None
        );
    }
}
