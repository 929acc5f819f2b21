//! Backup servers in every balance mode: none while a primary is up, only
//! backups once every primary is down, and a request whose primary failed
//! goes to a backup only when no other primary is left to try.

use super::tests::{group, C};
use super::*;
use std::net::Ipv4Addr;

const MODES: [Balance; 4] = [
    Balance::RoundRobin,
    Balance::LeastConn,
    Balance::SourceHash,
    Balance::ConsistentHash,
];

/// Servers 0 and 1 primaries, 2 and 3 backups.
fn with_backups(balance: Balance) -> Balancer {
    let mut b = group(balance, &[1, 1, 1, 1]);
    b.servers[2].backup = true;
    b.servers[3].backup = true;
    b
}

/// Where 400 requests from 400 clients (and keys) go, per server.
fn spread(b: &mut Balancer, now_us: u64, exclude: u64) -> [usize; 4] {
    let mut counts = [0; 4];
    for k in 0..400u32 {
        let client = Ipv4Addr::from(0x0a00_0000 + k);
        let key = Some(key_hash(&k.to_le_bytes()));
        if let Some(i) = b.pick_for(client.into(), key, now_us, exclude) {
            counts[i] += 1;
            b.servers[i].active += 1; // least_conn spreads by open connections
        }
    }
    counts
}

#[test]
fn backups_get_nothing_while_a_primary_is_up() {
    for mode in MODES {
        let mut b = with_backups(mode);
        let c = spread(&mut b, 0, 0);
        assert_eq!(c[2] + c[3], 0, "{mode:?}: {c:?}");
        assert_eq!(c[0] + c[1], 400, "{mode:?}: {c:?}");
        // One primary down: the other takes everything, still no backup.
        b.servers[0].healthy = false;
        let c = spread(&mut b, 0, 0);
        assert_eq!(c, [0, 400, 0, 0], "{mode:?}");
    }
}

#[test]
fn every_primary_down_spreads_over_the_backups_then_returns() {
    for mode in MODES {
        let mut b = with_backups(mode);
        b.servers[0].healthy = false;
        b.servers[1].healthy = false;
        let c = spread(&mut b, 0, 0);
        assert_eq!(c[0] + c[1], 0, "{mode:?}: {c:?}");
        assert_eq!(c[2] + c[3], 400, "{mode:?}: {c:?}");
        // Balanced over the backups as over primaries (source hash of one
        // client sticks, but 400 clients spread).
        assert!(c[2] >= 100 && c[3] >= 100, "{mode:?}: {c:?}");
        // A backup down too: the other backup.
        b.servers[3].healthy = false;
        assert_eq!(spread(&mut b, 0, 0), [0, 0, 400, 0], "{mode:?}");
        // Everything down: no server.
        b.servers[2].healthy = false;
        assert_eq!(b.pick(C, 0, 0), None, "{mode:?}");
        // A primary back: all of it again, none to the backups.
        b.servers[2].healthy = true;
        b.servers[1].healthy = true;
        assert_eq!(spread(&mut b, 0, 0), [0, 400, 0, 0], "{mode:?}");
    }
}

#[test]
fn primaries_marked_down_by_failed_connects_count_as_down() {
    for mode in MODES {
        let mut b = with_backups(mode);
        for s in 0..2 {
            b.connect_failed(s, 0);
            b.connect_failed(s, 0);
        }
        let c = spread(&mut b, 1, 0);
        assert_eq!(c[0] + c[1], 0, "{mode:?}: {c:?}");
        // The down period ends: primaries again.
        let c = spread(&mut b, DOWN_FOR_US, 0);
        assert_eq!(c[2] + c[3], 0, "{mode:?}: {c:?}");
    }
}

#[test]
fn a_retry_goes_to_another_primary_first_then_to_a_backup() {
    for mode in MODES {
        let mut b = with_backups(mode);
        let first = b.pick(C, 0, 0).unwrap();
        assert!(first < 2, "{mode:?}");
        // The first primary's connect failed: the other primary.
        let second = b.pick(C, 0, 1 << first).unwrap();
        assert_eq!(second, 1 - first, "{mode:?}");
        // Both primaries tried (though neither is marked down yet): a backup.
        let third = b.pick(C, 0, 0b11).unwrap();
        assert!(third >= 2, "{mode:?}");
        // ...and then the other backup, then nothing.
        let fourth = b.pick(C, 0, 0b11 | 1 << third).unwrap();
        assert_eq!(fourth, 5 - third, "{mode:?}");
        assert_eq!(b.pick(C, 0, 0b1111), None, "{mode:?}");
    }
}

#[test]
fn consistent_hash_over_backups_keeps_keys_and_agrees_across_instances() {
    let mut b = with_backups(Balance::ConsistentHash);
    b.servers[0].healthy = false;
    b.servers[1].healthy = false;
    let keys: Vec<Option<u64>> = (0..1000u64)
        .map(|k| Some(key_hash(&k.to_le_bytes())))
        .collect();
    let pick = |b: &mut Balancer, k| b.pick_for(C.into(), k, 0, 0).map(|i| b.servers[i].address);
    let first: Vec<_> = keys.iter().map(|&k| pick(&mut b, k)).collect();
    let again: Vec<_> = keys.iter().map(|&k| pick(&mut b, k)).collect();
    assert_eq!(first, again);
    // Another instance listing the servers in another order agrees.
    let mut other = with_backups(Balance::ConsistentHash);
    other.servers[0].healthy = false;
    other.servers[1].healthy = false;
    other.servers.reverse();
    let theirs: Vec<_> = keys.iter().map(|&k| pick(&mut other, k)).collect();
    assert_eq!(first, theirs);
}

#[test]
fn a_reload_can_turn_a_server_into_a_backup() {
    let mut b = group(Balance::RoundRobin, &[1, 1]);
    let mut next = group(Balance::RoundRobin, &[1, 1]);
    next.servers[1].backup = true;
    b.update(next);
    assert!((0..20).all(|_| b.pick(C, 0, 0) == Some(0)));
    b.servers[0].healthy = false;
    assert_eq!(b.pick(C, 0, 0), Some(1));
}
