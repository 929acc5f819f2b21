//! Bringing the world's DPDK side up: EAL on one core, one mbuf pool, the
//! two ports (waiting for their memif peers), and the stack over them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use zproxy::dpdk::{Eal, Mempool, Port, PortConfig, QueueId, ETHER_MTU, MBUF_DEFAULT_BUF_SIZE};
use zproxy::net::handoff::handoff_inboxes;
use zproxy::net::link::PortSpec;
use zproxy::net::stack::{Listen, Stack, StackSpec};

use crate::args::WorldArgs;

/// Port indices in the world's stack.
pub const CLIENT_PORT: usize = 0;
pub const ORIGIN_PORT: usize = 1;

/// What the world runs on; dropped in reverse order (ports before the pool, the EAL last).
pub struct Dpdk {
    pub ports: Vec<Port>,
    pub pool: Arc<Mempool>,
    pub eal: Eal,
}

/// The EAL command line: one lcore on `cpu`, no shared files, the two vdevs.
pub fn eal_args(a: &WorldArgs) -> Vec<String> {
    let mut args = vec![
        "zproxy-world".to_string(),
        "--lcores".into(),
        format!("0@{}", a.cpu),
        "--main-lcore".into(),
        "0".into(),
        "--file-prefix".into(),
        a.file_prefix.clone(),
        "--no-telemetry".into(),
        "--no-pci".into(),
        "--vdev".into(),
        a.client_vdev.clone(),
        "--vdev".into(),
        a.origin_vdev.clone(),
    ];
    if !a.eal.iter().any(|e| e == "--no-huge") {
        args.push("--in-memory".into());
    }
    args.extend(a.eal.iter().cloned());
    args
}

/// EAL, pool and ports, both links up.
pub fn bring_up(a: &WorldArgs) -> Result<Dpdk, String> {
    let eal = Eal::init(&eal_args(a)).map_err(|e| format!("starting DPDK: {}", chain(&e)))?;
    let pool = Arc::new(
        Mempool::new(
            &eal,
            "zpworld_mbufs",
            a.mbufs,
            256,
            MBUF_DEFAULT_BUF_SIZE,
            -1,
        )
        .map_err(|e| {
            format!(
                "making the mbuf pool (are hugepages reserved? hugepages/setup.sh): {}",
                chain(&e)
            )
        })?,
    );
    let cfg = PortConfig {
        rx_queues: 1,
        tx_queues: 1,
        rx_descriptors: 1024,
        tx_descriptors: 1024,
        mtu: None,
        rss_key: zproxy::net::rss::RSS_KEY,
    };
    let mut ports = Vec::new();
    for vdev in [&a.client_vdev, &a.origin_vdev] {
        let port = Port::start(&eal, vdev, &cfg, &[&pool])
            .map_err(|e| format!("starting {vdev}: {}", chain(&e)))?;
        ports.push(port);
    }
    let deadline = Instant::now() + a.link_timeout;
    for port in &ports {
        while !port.link().is_ok_and(|l| l.up) {
            if Instant::now() >= deadline {
                return Err(format!(
                    "{}: link still down after {:?}: is its memif peer (ZProxy, or the other port) \
                     running with the opposite role on the same socket?",
                    port.name(),
                    a.link_timeout
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(Dpdk { ports, pool, eal })
}

/// The stack: the generator's port and the origin's, a listener on the origin's.
pub fn stack(a: &WorldArgs, d: &Dpdk) -> Result<Stack, String> {
    let spec = |port: &Port, address| PortSpec {
        queue: port.queue(QueueId(0)),
        mac: port.mac(),
        address,
        gateway: None,
        ip_mtu: usize::from(ETHER_MTU),
        rx_checksum_offload: port.rx_checksum_offload(),
        reta_size: 128,
        exception: None,
        ipv6: None,
        fleet: None,
    };
    let secrets = zproxy::secrets::Secrets::from_os_rng()
        .map_err(|e| format!("no entropy from the OS for the world's ISNs: {e}"))?;
    Ok(Stack::new(StackSpec {
        ports: vec![
            spec(&d.ports[CLIENT_PORT], a.client_addr),
            spec(&d.ports[ORIGIN_PORT], a.origin_addr),
        ],
        listeners: vec![Listen {
            port_index: ORIGIN_PORT,
            tcp_port: a.origin_port,
            idle_timeout_us: 60_000_000,
            allow: Vec::new(),
            max_per_source: 0,
            conn_rate: None,
            exempt: Vec::new(),
            exempt6: Vec::new(),
            reserve_peer: false,
            allow6: Default::default(),
            prefix6: 128,
        }],
        max_flows: a.max_flows,
        socket_rx_buffer: a.socket_buffer,
        socket_tx_buffer: a.socket_buffer,
        tx_drain_us: 20,
        pool: d.pool.clone(),
        worker_index: 0,
        inboxes: handoff_inboxes(1),
        // The world is never flooded: state for every SYN, no cookies.
        syn_backlog: a.max_flows,
        // The world takes every connection it is offered.
        admit_flow_limit: a.max_flows,
        admit_backlog_us: 0,
        rate_limit_entries: 64,
        secrets,
    }))
}

/// After the run: the ports stay up, unpolled, until every link is down
/// (the memif peer left) or `max` passes. A memif peer must stop polling
/// before its partner goes: the PMD unmaps the shared regions on disconnect
/// (in its interrupt thread) while a poll may still be reading them, and
/// ZProxy's worker crashed so (SIGSEGV in librte_net_memif) when the world
/// left first after a stall. Unpolled, the world has no such race itself.
pub fn linger(d: &Dpdk, max: Duration) {
    let deadline = Instant::now() + max;
    while Instant::now() < deadline && d.ports.iter().any(|p| p.link().is_ok_and(|l| l.up)) {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// An error with its causes, one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
