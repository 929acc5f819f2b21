//! The release logic on real slots (a real buffer mapping and sockets), no
//! device: which slots give their pages back, and that the pages go.

use smoltcp::iface::{Config, Interface};
use smoltcp::phy::{Loopback, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, IpAddress, IpCidr};

use super::*;
use crate::net::flow::FlowKey;
use crate::net::stack::slots;

const BUF: usize = 16384;

fn key(port: u16) -> FlowKey {
    FlowKey {
        remote_ip: std::net::Ipv4Addr::new(10, 0, 0, 1),
        remote_port: port,
        local_ip: std::net::Ipv4Addr::new(10, 0, 0, 2),
        local_port: 80,
    }
}

/// Resident pages of `slot`'s buffers (mincore).
fn resident(r: &Reclaim, slot: u32) -> usize {
    let pages = r.slot_len / r.page;
    let mut vec = vec![0u8; pages];
    let addr = r.base + slot as usize * r.slot_len;
    // SAFETY: the range is a page-aligned part of the live buffer mapping
    // (16 KiB buffers); vec has one byte per page.
    let rc = unsafe { libc::mincore(addr as *mut libc::c_void, r.slot_len, vec.as_mut_ptr()) };
    assert_eq!(rc, 0, "mincore: {}", std::io::Error::last_os_error());
    vec.iter().filter(|&&b| b & 1 == 1).count()
}

/// Writes into every page of `slot`'s buffers, as flowing data would.
fn touch(r: &Reclaim, slot: u32) {
    for off in (0..r.slot_len).step_by(r.page) {
        let p = (r.base + slot as usize * r.slot_len + off) as *mut u8;
        // SAFETY: inside the slot's buffers, which no socket reads in this
        // test while it is written (its rings are empty).
        unsafe { p.write_volatile(7) };
    }
}

/// A table of `n` slots, each taken once (built), all quiet since `at_us`.
fn table(n: u16, at_us: u64) -> (FlowTable<Flow>, Reclaim) {
    let (mut flows, r) = slots::build(n as usize, BUF, BUF, [3; 16], None);
    for i in 0..n {
        let f = flows.insert(key(i)).unwrap();
        flows.get_mut(f).last_rx_us = at_us;
        touch(&r, f);
    }
    (flows, r)
}

#[test]
fn quiet_flows_with_empty_rings_and_free_slots_give_pages_back_once() {
    let (mut flows, mut r) = table(3, 1_000);
    flows.remove(2); // a free slot, quiet as long
    flows.get_mut(1).last_rx_us = IDLE_US; // heard from recently
    let pages = 2 * BUF / r.page;
    assert_eq!(resident(&r, 0), pages);
    // Not quiet long enough yet: nothing goes.
    assert_eq!(r.sweep(&mut flows, IDLE_US), 0);
    let now = IDLE_US + 1_000 + SWEEP_EVERY_US;
    // Slot 0 is live, quiet, its rings empty and nothing received (see
    // `flow_tests` for out-of-order data); slot 1 was heard from recently.
    assert_eq!(
        r.sweep(&mut flows, now),
        2,
        "slots 0 (idle, empty) and 2 (free)"
    );
    assert_eq!(
        (resident(&r, 0), resident(&r, 1), resident(&r, 2)),
        (0, pages, 0)
    );
    // Given back pages read as zeros; the socket is as it was.
    let p = r.base as *const u8;
    // SAFETY: slot 0's first byte, inside the mapping.
    assert_eq!(unsafe { p.read_volatile() }, 0);
    assert_eq!(flows.get_mut(0).socket().state(), tcp::State::Closed);
    // Nothing heard since: the next sweep makes no call for them again.
    assert_eq!(r.sweep(&mut flows, now + SWEEP_EVERY_US), 0);
    // Heard from, then quiet again: given back again.
    flows.get_mut(0).last_rx_us = now;
    touch(&r, 0);
    // Slot 0 again, and slot 1, quiet by now too.
    assert_eq!(r.sweep(&mut flows, now + IDLE_US + 2 * SWEEP_EVERY_US), 2);
    assert_eq!((resident(&r, 0), resident(&r, 1)), (0, 0));
}

#[test]
fn a_sweep_waits_its_turn_and_is_bounded() {
    let n = SLOTS_PER_SWEEP as u16 + 100;
    let (mut flows, mut r) = table(n, 0);
    // Every other slot free and quiet: no two adjacent, one call each (the
    // others are live and heard from until after the last sweep below).
    for i in (0..n).step_by(2) {
        flows.remove(u32::from(i));
    }
    for i in (1..n).step_by(2) {
        flows.get_mut(u32::from(i)).last_rx_us = 100 * IDLE_US;
    }
    let now = 10 * IDLE_US;
    let first = r.sweep(&mut flows, now);
    assert!(first > 0 && first <= u64::from(CALLS_PER_SWEEP), "{first}");
    // Before SWEEP_EVERY_US has passed: no work at all.
    assert_eq!(r.sweep(&mut flows, now + 1), 0);
    // The rest follow in later sweeps (round-robin), each bounded.
    let mut total = first;
    for k in 1..200 {
        let got = r.sweep(&mut flows, now + k * SWEEP_EVERY_US);
        assert!(got <= u64::from(CALLS_PER_SWEEP));
        total += got;
    }
    assert_eq!(total, u64::from(n).div_ceil(2));
}

#[test]
fn a_flow_with_bytes_queued_keeps_its_pages() {
    let (mut flows, mut r) = slots::build(1, BUF, BUF, [3; 16], None);
    let f = flows.insert(key(1)).unwrap();
    // A peer in the flow's own socket set, over smoltcp's loopback device.
    let mut dev = Loopback::new(Medium::Ethernet);
    let config = Config::new(EthernetAddress([2, 0, 0, 0, 0, 1]).into());
    let mut iface = Interface::new(config, &mut dev, Instant::from_millis(0));
    iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8)).unwrap());
    let flow = flows.get_mut(f);
    flow.socket().listen(80).unwrap();
    let mut peer = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; BUF]),
        tcp::SocketBuffer::new(vec![0; BUF]),
    );
    peer.connect(iface.context(), (IpAddress::v4(127, 0, 0, 1), 80), 40000)
        .unwrap();
    let peer = flow.sockets.add(peer);
    for ms in 1..20 {
        iface.poll(Instant::from_millis(ms), &mut dev, &mut flow.sockets);
    }
    assert_eq!(flow.socket().state(), tcp::State::Established);
    let sent = flow
        .sockets
        .get_mut::<tcp::Socket>(peer)
        .send_slice(b"unread")
        .unwrap();
    assert_eq!(sent, 6);
    for ms in 20..30 {
        iface.poll(Instant::from_millis(ms), &mut dev, &mut flow.sockets);
    }
    assert_eq!(flow.socket().recv_queue(), 6);
    flow.last_rx_us = 0;
    let now = 10 * IDLE_US;
    assert_eq!(r.sweep(&mut flows, now), 0, "6 bytes unread: pages stay");
    let mut buf = [0u8; 6];
    assert_eq!(flows.get_mut(f).socket().recv_slice(&mut buf), Ok(6));
    assert_eq!(&buf, b"unread");
    // Read: now the rings are empty and the pages may go.
    assert_eq!(r.sweep(&mut flows, now + SWEEP_EVERY_US), 1);
}
