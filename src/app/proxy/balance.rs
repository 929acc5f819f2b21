//! Upstream server choice: weighted round robin, least connections,
//! source-IP hash and consistent (rendezvous) hash over the servers that
//! are not marked down, with passive health marking (connect failures take
//! a server out for a while). Backup servers are a second tier: the same
//! choice runs over them only when no primary is usable.

use std::hash::Hasher;
use std::net::{IpAddr, SocketAddr};

use siphasher::sip::SipHasher13;

use crate::config::Balance;

/// The key of the source hash. Fixed, not secret: a client must reach the
/// same server from every worker, after a restart and through every zproxy
/// of a cluster, which a per-process key would break. Knowing it only lets
/// a client tell which server its own address goes to.
const SOURCE_HASH_KEY: (u64, u64) = (0x7a70_726f_7879_2073, 0x6f75_7263_6520_6970);

/// Where `client` falls in source-hash balancing (SipHash-1-3 of its octets).
fn source_hash(client: IpAddr) -> u64 {
    match client {
        IpAddr::V4(ip) => key_hash(&ip.octets()),
        IpAddr::V6(ip) => key_hash(&ip.octets()),
    }
}

/// A request key's hash (a header's or cookie's value, or a client
/// address): the same on every instance, as `SOURCE_HASH_KEY` says.
pub fn key_hash(bytes: &[u8]) -> u64 {
    let mut h = SipHasher13::new_with_keys(SOURCE_HASH_KEY.0, SOURCE_HASH_KEY.1);
    h.write(bytes);
    h.finish()
}

/// Rendezvous (highest random weight) score of `server` for `key`, with
/// weights as Schindelhauer and Schomaker's logarithmic method gives them:
/// `weight / -ln(u)`, `u` uniform in (0, 1) from a hash of (key, server).
/// It depends on the server's address, not its place in the config, so
/// every instance agrees, and a server's loss moves only the keys it held.
///
/// An IPv4 server hashes its 4 address bytes (scores unchanged since IPv4
/// only), an IPv6 one its 16.
fn rendezvous_score(key: u64, server: SocketAddr, weight: u32) -> f64 {
    let mut h = SipHasher13::new_with_keys(SOURCE_HASH_KEY.0, SOURCE_HASH_KEY.1);
    h.write_u64(key);
    match server.ip() {
        IpAddr::V4(ip) => h.write(&ip.octets()),
        IpAddr::V6(ip) => h.write(&ip.octets()),
    }
    h.write_u16(server.port());
    let u = ((h.finish() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    f64::from(weight) / -u.ln()
}

/// Consecutive connect failures that mark a server down.
pub const FAILS_TO_MARK_DOWN: u32 = 2;
/// How long a server marked down is skipped before a request probes it again.
pub const DOWN_FOR_US: u64 = 5_000_000;

#[derive(Debug, Clone)]
pub struct ServerState {
    pub address: SocketAddr,
    pub weight: u32,
    /// Connections open to it (for least_conn).
    pub active: u32,
    /// Smooth weighted round robin's running weight.
    current: i64,
    fails: u32,
    down_until_us: u64,
    pub requests: u64,
    pub failures: u64,
    /// Response times (request sent to response head), summed, and how many.
    pub response_us_sum: u64,
    pub responses: u64,
    /// Removed from the config by a reload: no new requests; its index stays
    /// valid for the connections still open to it.
    pub retired: bool,
    /// What the active health check last concluded (true without checks).
    pub healthy: bool,
    /// Picked only when no primary (non-backup) server is usable.
    pub backup: bool,
}

impl ServerState {
    pub fn new(address: SocketAddr, weight: u32) -> Self {
        ServerState {
            address,
            weight,
            active: 0,
            current: 0,
            fails: 0,
            down_until_us: 0,
            requests: 0,
            failures: 0,
            response_us_sum: 0,
            responses: 0,
            retired: false,
            healthy: true,
            backup: false,
        }
    }

    pub fn is_up(&self, now_us: u64) -> bool {
        !self.retired && self.healthy && now_us >= self.down_until_us
    }
}

pub struct Balancer {
    pub balance: Balance,
    pub servers: Vec<ServerState>,
}

impl Balancer {
    pub fn new(balance: Balance, servers: Vec<ServerState>) -> Self {
        Balancer { balance, servers }
    }

    /// Takes a reload's view of the servers (same indices, maybe more of
    /// them, some retired) and keeps the running state of the known ones.
    pub fn update(&mut self, new: Balancer) {
        self.balance = new.balance;
        for (i, s) in new.servers.into_iter().enumerate() {
            match self.servers.get_mut(i) {
                Some(old) => {
                    debug_assert_eq!(old.address, s.address, "reloads keep server indices");
                    old.weight = s.weight;
                    old.retired = s.retired;
                    old.backup = s.backup;
                }
                None => self.servers.push(s),
            }
        }
    }

    /// Picks a server for a client, skipping `exclude` (already tried for
    /// this request) and servers marked down. `None`: no server is usable.
    pub fn pick(&mut self, client: impl Into<IpAddr>, now_us: u64, exclude: u64) -> Option<usize> {
        self.pick_for(client.into(), None, now_us, exclude)
    }

    /// [`Balancer::pick`] for a request whose `hash_key` hashed to
    /// `request_key` (`None`: the group hashes the client, or the request
    /// had no such header or cookie). The primaries first; the backups when
    /// every primary is down or already tried for this request.
    pub fn pick_for(
        &mut self,
        client: IpAddr,
        request_key: Option<u64>,
        now_us: u64,
        exclude: u64,
    ) -> Option<usize> {
        self.pick_tier(client, request_key, now_us, exclude, false)
            .or_else(|| self.pick_tier(client, request_key, now_us, exclude, true))
    }

    /// The balance mode's choice among the usable servers whose `backup` is `backup`.
    fn pick_tier(
        &mut self,
        client: IpAddr,
        request_key: Option<u64>,
        now_us: u64,
        exclude: u64,
        backup: bool,
    ) -> Option<usize> {
        let usable = |i: usize, s: &ServerState| {
            s.backup == backup && s.is_up(now_us) && exclude & (1 << (i % 64)) == 0
        };
        match self.balance {
            Balance::RoundRobin => {
                // nginx's smooth weighted round robin.
                let mut best: Option<usize> = None;
                let mut total = 0i64;
                for i in 0..self.servers.len() {
                    if !usable(i, &self.servers[i]) {
                        continue;
                    }
                    let w = i64::from(self.servers[i].weight);
                    self.servers[i].current += w;
                    total += w;
                    if best.is_none_or(|b| self.servers[i].current > self.servers[b].current) {
                        best = Some(i);
                    }
                }
                let b = best?;
                self.servers[b].current -= total;
                Some(b)
            }
            Balance::LeastConn => self
                .servers
                .iter()
                .enumerate()
                .filter(|(i, s)| usable(*i, s))
                // active/weight compared without division: a/w < b/v <=> a*v < b*w
                .min_by(|(_, a), (_, b)| {
                    (u64::from(a.active) * u64::from(b.weight))
                        .cmp(&(u64::from(b.active) * u64::from(a.weight)))
                })
                .map(|(i, _)| i),
            Balance::SourceHash => {
                let total: u64 = self
                    .servers
                    .iter()
                    .enumerate()
                    .filter(|(i, s)| usable(*i, s))
                    .map(|(_, s)| u64::from(s.weight))
                    .sum();
                if total == 0 {
                    return None;
                }
                let mut point = source_hash(client) % total;
                for (i, s) in self
                    .servers
                    .iter()
                    .enumerate()
                    .filter(|(i, s)| usable(*i, s))
                {
                    if point < u64::from(s.weight) {
                        return Some(i);
                    }
                    point -= u64::from(s.weight);
                }
                None
            }
            Balance::ConsistentHash => {
                let key = request_key.unwrap_or_else(|| source_hash(client));
                self.servers
                    .iter()
                    .enumerate()
                    .filter(|(i, s)| usable(*i, s) && s.weight > 0)
                    .map(|(i, s)| (i, rendezvous_score(key, s.address, s.weight)))
                    .max_by(|a, b| a.1.total_cmp(&b.1))
                    .map(|(i, _)| i)
            }
        }
    }

    /// A connect to `i` failed (refused, reset or timed out).
    pub fn connect_failed(&mut self, i: usize, now_us: u64) {
        let s = &mut self.servers[i];
        s.failures += 1;
        if now_us < s.down_until_us {
            return; // connects started before it went down: already dealt with
        }
        s.fails += 1;
        if s.fails >= FAILS_TO_MARK_DOWN {
            s.down_until_us = now_us + DOWN_FOR_US;
            s.fails = 0;
            log::warn!(
                "upstream {} marked down for {} s after failed connects",
                s.address,
                DOWN_FOR_US / 1_000_000
            );
        }
    }

    /// A connect to `i` succeeded.
    pub fn connected(&mut self, i: usize) {
        self.servers[i].fails = 0;
    }
}

/// Whether a failed connect counts against its server's health: a refusal
/// (the server's RST) always; a timeout only when this worker was not
/// losing frames itself meanwhile (`lost_locally`: behind its rx queue, or
/// a tx queue full), for then its SYN or the SYN-ACK may have died here,
/// and marking the only server down would turn our overload into 503s.
pub fn failure_is_the_servers(timed_out: bool, lost_locally: bool) -> bool {
    !(timed_out && lost_locally)
}

#[cfg(test)]
#[path = "balance_backup_tests.rs"]
mod backup_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    pub(super) fn group(balance: Balance, weights: &[u32]) -> Balancer {
        let servers = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                ServerState::new(
                    SocketAddr::from((Ipv4Addr::new(10, 0, 0, i as u8 + 1), 80)),
                    w,
                )
            })
            .collect();
        Balancer::new(balance, servers)
    }

    pub(super) const C: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    #[test]
    fn round_robin_follows_weights_smoothly() {
        let mut b = group(Balance::RoundRobin, &[5, 1, 1]);
        let picks: Vec<usize> = (0..7).map(|_| b.pick(C, 0, 0).unwrap()).collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]); // nginx's documented sequence
        let mut counts = [0; 3];
        for _ in 0..700 {
            counts[b.pick(C, 0, 0).unwrap()] += 1;
        }
        assert_eq!(counts, [500, 100, 100]);
    }

    #[test]
    fn least_conn_prefers_fewest_per_weight() {
        let mut b = group(Balance::LeastConn, &[1, 2]);
        b.servers[0].active = 2;
        b.servers[1].active = 3; // 3/2 < 2/1
        assert_eq!(b.pick(C, 0, 0), Some(1));
        b.servers[1].active = 5;
        assert_eq!(b.pick(C, 0, 0), Some(0));
    }

    #[test]
    fn source_hash_is_stable_and_spreads() {
        let mut b = group(Balance::SourceHash, &[1, 1, 1]);
        let first = b.pick(C, 0, 0);
        assert!((0..10).all(|_| b.pick(C, 0, 0) == first));
        let mut counts = [0; 3];
        for i in 0..3000u32 {
            counts[b.pick(Ipv4Addr::from(0x0a00_0000 + i), 0, 0).unwrap()] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }

    #[test]
    fn source_hash_does_not_change_between_builds() {
        // Pinned: a client keeps its server across restarts and upgrades.
        assert_eq!(source_hash(C.into()), 6_913_585_331_178_620_566);
    }

    #[test]
    fn failed_servers_are_skipped_then_return() {
        let mut b = group(Balance::RoundRobin, &[1, 1]);
        b.connect_failed(0, 0);
        b.connect_failed(0, 0);
        assert!((0..10).all(|_| b.pick(C, 1, 0) == Some(1)));
        assert_eq!(
            b.pick(C, 1, 0b10),
            None,
            "the only usable server was excluded"
        );
        assert!(
            (0..10).any(|_| b.pick(C, DOWN_FOR_US, 0) == Some(0)),
            "back after the down period"
        );
    }

    #[test]
    fn timeouts_while_this_worker_loses_frames_are_not_the_servers() {
        assert!(failure_is_the_servers(false, false), "refused");
        assert!(failure_is_the_servers(false, true), "refused while behind");
        assert!(failure_is_the_servers(true, false), "timed out");
        assert!(
            !failure_is_the_servers(true, true),
            "timed out while behind"
        );
    }

    #[test]
    fn failures_while_down_do_not_extend_it() {
        let mut b = group(Balance::RoundRobin, &[1, 1]);
        b.connect_failed(0, 0);
        b.connect_failed(0, 0);
        // Connects started before it went down fail too: no new mark.
        b.connect_failed(0, 10);
        b.connect_failed(0, 20);
        assert_eq!(b.servers[0].failures, 4);
        assert!(
            (0..10).any(|_| b.pick(C, DOWN_FOR_US, 0) == Some(0)),
            "back when the first down period ends"
        );
        b.connect_failed(0, DOWN_FOR_US);
        assert!(
            (0..10).any(|_| b.pick(C, DOWN_FOR_US + 1, 0) == Some(0)),
            "one failure after coming back does not mark it down"
        );
    }

    #[test]
    fn reload_retires_and_adds_servers_keeping_indices() {
        let mut b = group(Balance::RoundRobin, &[1, 1]);
        b.servers[0].active = 3;
        let mut next = group(Balance::RoundRobin, &[1, 1, 1]);
        next.servers[1].retired = true;
        b.update(next);
        assert_eq!(b.servers.len(), 3);
        assert_eq!(b.servers[0].active, 3, "running state kept");
        assert!(
            (0..20).all(|_| b.pick(C, 0, 0) != Some(1)),
            "retired server picked"
        );
        assert!(
            (0..20).any(|_| b.pick(C, 0, 0) == Some(2)),
            "new server never picked"
        );
    }

    /// Which server each of `keys` goes to.
    fn choices(b: &mut Balancer, keys: u64) -> Vec<Option<SocketAddr>> {
        (0..keys)
            .map(|k| {
                let i = b.pick_for(C.into(), Some(key_hash(&k.to_le_bytes())), 0, 0);
                i.map(|i| b.servers[i].address)
            })
            .collect()
    }

    #[test]
    fn consistent_hash_spreads_by_weight_and_agrees_across_instances() {
        let mut b = group(Balance::ConsistentHash, &[1, 1, 2]);
        let mut counts = [0usize; 3];
        for k in 0..40_000u64 {
            counts[b
                .pick_for(C.into(), Some(key_hash(&k.to_le_bytes())), 0, 0)
                .unwrap()] += 1;
        }
        // 10k, 10k, 20k expected; 5 % slack.
        for (n, want) in counts.iter().zip([10_000usize, 10_000, 20_000]) {
            assert!(n * 100 >= want * 95 && n * 100 <= want * 105, "{counts:?}");
        }
        // Another instance listing the servers in another order agrees.
        let mut other = group(Balance::ConsistentHash, &[1, 1, 2]);
        other.servers.reverse();
        assert_eq!(choices(&mut b, 10_000), choices(&mut other, 10_000));
        // Without a request key, the client address is the key.
        let first = b.pick(C, 0, 0);
        assert!((0..10).all(|_| b.pick(C, 0, 0) == first));
    }

    #[test]
    fn consistent_hash_moves_only_the_lost_servers_keys() {
        let mut b = group(Balance::ConsistentHash, &[1, 1, 1, 1, 1]);
        let before = choices(&mut b, 10_000);
        let lost = b.servers[1].address;
        b.servers[1].healthy = false;
        let after = choices(&mut b, 10_000);
        let mut moved = 0;
        for (was, now) in before.iter().zip(&after) {
            if *was == Some(lost) {
                assert_ne!(*now, Some(lost));
                moved += 1;
            } else {
                assert_eq!(was, now, "a key of a live server moved");
            }
        }
        assert!(
            (1800..2200).contains(&moved),
            "{moved} of 10000 on one of 5"
        );
        // It comes back: its keys return, the others stay.
        b.servers[1].healthy = true;
        assert_eq!(choices(&mut b, 10_000), before);
        // A retry skips the server that failed, to the key's next choice.
        let k = Some(key_hash(b"alice"));
        let first = b.pick_for(C.into(), k, 0, 0).unwrap();
        let second = b.pick_for(C.into(), k, 0, 1 << first).unwrap();
        assert_ne!(first, second);
    }

    #[test]
    fn ipv4_scores_are_those_of_the_ipv4_only_hash_and_ipv6_servers_spread() {
        // The recipe before IPv6 upstreams: key, 4 address bytes, port.
        let old = |key: u64, ip: Ipv4Addr, port: u16| {
            let mut h = SipHasher13::new_with_keys(SOURCE_HASH_KEY.0, SOURCE_HASH_KEY.1);
            h.write_u64(key);
            h.write(&ip.octets());
            h.write_u16(port);
            let u = ((h.finish() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
            3.0 / -u.ln()
        };
        for key in 0..1000u64 {
            let ip = Ipv4Addr::new(10, 0, 0, (key % 250) as u8);
            let got = rendezvous_score(key, SocketAddr::from((ip, 8080)), 3);
            assert_eq!(got.to_bits(), old(key, ip, 8080).to_bits());
        }
        // IPv6 servers: whole addresses count (they differ only in the last
        // bytes here), so the keys spread evenly.
        let servers = (1..=4u16)
            .map(|i| {
                let ip: std::net::Ipv6Addr = format!("2001:db8::{i}").parse().unwrap();
                ServerState::new(SocketAddr::from((ip, 80)), 1)
            })
            .collect();
        let mut b = Balancer::new(Balance::ConsistentHash, servers);
        let mut counts = [0usize; 4];
        for k in 0..40_000u64 {
            counts[b
                .pick_for(C.into(), Some(key_hash(&k.to_le_bytes())), 0, 0)
                .unwrap()] += 1;
        }
        assert!(
            counts.iter().all(|&n| (9_500..10_500).contains(&n)),
            "{counts:?}"
        );
    }
}
