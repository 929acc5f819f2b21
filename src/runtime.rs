//! The appliance's life: preflight checks, EAL, pools, ports, workers,
//! signals, and a clean shutdown that leaves nothing behind.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::access_writer as access_log;
use crate::app::proxy::engine::UpstreamStat;
use crate::app::stats::RequestStats;
use crate::app::worker::{Control, Reload, Worker, WorkerSpec};
use crate::config::{Config, Runtime};
use crate::dpdk::{lcore, Eal, Mempool, Port, PortConfig, QueueId};
use crate::mgmt;
use crate::net::counters::{Counter, SharedCounters};
use crate::net::handoff::{handoff_inboxes, Inboxes};
use crate::net::link::PortSpec;
use crate::plan::{self, Layout};
use crate::secrets::Secrets;

/// Bytes of data room per mbuf: a full 1500-byte-MTU frame plus headroom.
const MBUF_DATA_ROOM: u16 = crate::dpdk::MBUF_DEFAULT_BUF_SIZE;
/// How often the control thread looks at signals, the endpoint and the worker.
const CONTROL_TICK: Duration = Duration::from_millis(20);
/// Interval of the one-line summary in the log.
const SUMMARY_EVERY: Duration = Duration::from_secs(5);

/// Counts a worker out when it returns; a worker unwinding from a panic
/// also stops the others.
struct WorkerExit<'a>(&'a Control);

impl Drop for WorkerExit<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.stop.store(true, Ordering::Relaxed);
        }
        self.0.finished.fetch_add(1, Ordering::Relaxed);
    }
}

/// A counter summed over the workers.
fn total(workers: &[Arc<SharedCounters>], c: Counter) -> u64 {
    workers.iter().map(|w| w.get(c)).sum()
}

/// Per-server figures summed over the workers (all share one layout).
fn merged_upstream_stats(workers: &[Arc<Mutex<Vec<UpstreamStat>>>]) -> Vec<UpstreamStat> {
    let mut merged: Vec<UpstreamStat> = Vec::new();
    for w in workers {
        let Ok(stats) = w.lock() else { continue };
        for s in stats.iter() {
            match merged
                .iter_mut()
                .find(|m| m.group == s.group && m.server == s.server)
            {
                Some(m) => {
                    m.requests += s.requests;
                    m.connect_failures += s.connect_failures;
                    m.active += s.active;
                    m.response_us_sum += s.response_us_sum;
                    m.responses += s.responses;
                    m.healthy &= s.healthy;
                }
                None => merged.push(s.clone()),
            }
        }
    }
    merged
}

pub use crate::error::RunError;

/// Checks that need no device: capabilities, hugepages, the interfaces vdevs name.
pub fn preflight(cfg: &Config) -> Result<(), RunError> {
    crate::privileges::check(cfg)?;
    if !cfg.runtime.no_huge {
        match hugepages_free() {
            Ok(0) => return Err(RunError::NoHugepages { cause: None }),
            Ok(_) => {}
            Err(e) => return Err(RunError::NoHugepages { cause: Some(e) }),
        }
    }
    for p in &cfg.ports {
        if let Some(pci) = &p.pci {
            if !Path::new("/sys/bus/pci/devices").join(pci).exists() {
                return Err(RunError::NoPciDevice {
                    port: p.name.clone(),
                    pci: pci.clone(),
                });
            }
        }
        if let Some(vdev) = &p.vdev {
            if let Some(iface) = vdev.split(',').find_map(|kv| kv.strip_prefix("iface=")) {
                if !crate::privileges::interface_exists(iface) {
                    return Err(RunError::NoInterface {
                        port: p.name.clone(),
                        iface: iface.to_owned(),
                        vdev: vdev.clone(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Free hugepages of the default size, from /proc/meminfo (0 when it does
/// not say).
fn hugepages_free() -> std::io::Result<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")?;
    Ok(meminfo
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

/// Runs the appliance until SIGINT or SIGTERM.
pub fn run(cfg: Config, config_path: &Path) -> Result<(), RunError> {
    preflight(&cfg)?;
    // Before anything else is set up: no secrets, no start.
    let secrets = Secrets::from_os_rng().map_err(RunError::Entropy)?;
    let (plan_lines, warnings) =
        plan::binding(&cfg, Path::new("/sys")).map_err(RunError::Binding)?;
    for line in plan_lines {
        log::info!("{line}");
    }
    for w in warnings {
        log::warn!("binding: {w}");
    }
    // SIGINT stops at once; SIGTERM drains first; SIGHUP re-reads the
    // config; SIGUSR1 reopens the access log.
    let interrupt = Arc::new(AtomicBool::new(false));
    let terminate = Arc::new(AtomicBool::new(false));
    let hangup = Arc::new(AtomicBool::new(false));
    let reopen_log = Arc::new(AtomicBool::new(false));
    for (sig, flag) in [
        (signal_hook::consts::SIGINT, &interrupt),
        (signal_hook::consts::SIGTERM, &terminate),
        (signal_hook::consts::SIGHUP, &hangup),
        (signal_hook::consts::SIGUSR1, &reopen_log),
    ] {
        signal_hook::flag::register(sig, flag.clone())
            .map_err(|cause| RunError::Signal { signal: sig, cause })?;
    }
    let endpoint = match cfg.management.address.as_str() {
        "" => None,
        addr => Some(
            mgmt::Endpoint::bind(addr).map_err(|cause| RunError::Management {
                address: addr.to_owned(),
                cause,
            })?,
        ),
    };

    let prefix = format!("zproxy-{}", std::process::id());
    let eal = Eal::init(&cfg.eal_args(&prefix)).map_err(RunError::Eal)?;
    let rt = &cfg.runtime;
    let NodePools {
        mut pools,
        of_worker: worker_pools,
    } = node_pools(&eal, rt)?;
    let ports = bring_up_ports(&eal, &cfg, &worker_pools)?;
    let exception = crate::exception::ExceptionPath::start(&eal, &cfg, &ports)?;
    // Kept to the end with the others: the kernel's frames may sit in the
    // data ports' tx rings until they close, and are counted at exit.
    pools.extend(exception.pool());
    let control_counters = exception.counters.clone();
    let workers = rt.worker_lcores.len();
    let control = Arc::new(Control::new(workers));
    let capture = Arc::new(crate::capture::Board::default());
    let inboxes = handoff_inboxes(workers);
    let mut layout = Layout::default().merge(&cfg);
    let shared: Vec<Arc<SharedCounters>> = (0..workers).map(|_| Arc::default()).collect();
    let upstream_stats: Vec<Arc<Mutex<Vec<UpstreamStat>>>> =
        (0..workers).map(|_| Arc::default()).collect();
    let access_log = access_log::start(&cfg, &layout, &shared, reopen_log)?;
    let request_stats: Vec<Arc<RequestStats>> = (0..workers)
        .map(|_| Arc::new(RequestStats::new(cfg.listeners.len())))
        .collect();
    let mut launched = Vec::with_capacity(workers);
    let mut ready = crate::notify::Readiness::new(workers);
    for (index, &lcore_id) in rt.worker_lcores.iter().enumerate() {
        let spec = worker_spec(
            &cfg,
            &layout,
            &ports,
            worker_pools[index].clone(),
            upstream_stats[index].clone(),
            request_stats[index].clone(),
            index,
            inboxes.clone(),
            secrets.for_worker(index),
        )?;
        let mut spec = WorkerSpec {
            access_log: access_log.as_ref().map(|a| a.for_worker(index)),
            capture: capture.clone(),
            ..spec
        };
        let to_kernel = crate::exception::worker_side(&cfg, &exception.rings, index);
        for (p, k) in spec.ports.iter_mut().zip(to_kernel) {
            p.exception = k;
        }
        let (control, shared) = (control.clone(), shared[index].clone());
        let polling = ready.counter();
        let job = lcore::launch(lcore_id, move || {
            // A worker that dies (panics) stops the appliance, which exits
            // non-zero so that its supervisor restarts it.
            let _exit = WorkerExit(&control);
            let mut w = Worker::new(spec, shared);
            log::info!("worker {index} on lcore {} polling", lcore::current());
            polling.fetch_add(1, Ordering::Relaxed);
            w.run(&control);
            0
        })
        .map_err(|cause| RunError::Launch {
            index,
            lcore: lcore_id,
            cause,
        })?;
        launched.push(job);
    }
    let exception_thread = match exception.is_on() {
        true => Some(
            exception
                .spawn(control.clone())
                .map_err(|e| RunError::Exception {
                    port: String::new(),
                    iface: String::new(),
                    message: format!("cannot start its thread: {e}"),
                })?,
        ),
        false => None,
    };
    let mut cfg = cfg;
    if let Some(ep) = &endpoint {
        log::info!(
            "management endpoint on http://{}/metrics and /stats",
            ep.local_addr().map_err(|cause| RunError::Management {
                address: cfg.management.address.clone(),
                cause
            })?
        );
    }

    let started = Instant::now();
    let metric_names = mgmt::Names::of(&cfg);
    let mut busy = mgmt::BusyWindow::new(workers, started);
    let mut last_summary = Instant::now();
    let mut drain_deadline: Option<Instant> = None;
    let mut reloads = crate::reload::Reloads::default();
    let mut announcer = cfg.announce.as_ref().map(crate::announce::Announcer::new);
    while !control.stop.load(Ordering::Relaxed)
        && control.finished.load(Ordering::Relaxed) < workers
    {
        std::thread::sleep(CONTROL_TICK);
        let up = ready.check();
        if interrupt.load(Ordering::Relaxed) {
            log::info!("SIGINT: stopping now");
            crate::notify::stopping("SIGINT: stopping now");
            control.stop.store(true, Ordering::Relaxed);
        }
        if terminate.load(Ordering::Relaxed) && drain_deadline.is_none() {
            // Read now: a reload may have changed it.
            let drain_timeout = Duration::from_millis(cfg.management.drain_timeout_ms);
            log::info!(
                "SIGTERM: refusing new connections, draining for up to {} ms",
                drain_timeout.as_millis()
            );
            control.draining.store(true, Ordering::Relaxed);
            crate::notify::stopping("SIGTERM: draining");
            drain_deadline = Some(Instant::now() + drain_timeout);
        }
        // Right after a drain starts: the VIP goes before anything else.
        let upstreams = match (&endpoint, &announcer) {
            (None, None) => Vec::new(),
            _ => merged_upstream_stats(&upstream_stats),
        };
        if let Some(a) = &mut announcer {
            a.tick(
                Instant::now(),
                &cfg,
                &upstreams,
                up,
                drain_deadline.is_some(),
            );
        }
        if hangup.swap(false, Ordering::Relaxed) {
            crate::notify::reloading();
            let next = reloads.attempt(&cfg, &layout, config_path);
            crate::notify::reloaded(match next {
                Some(_) => "reloaded",
                None => "reload refused: running config kept (see the log)",
            });
            if let Some((next_cfg, next_layout)) = next {
                let mut replaced = 0;
                for queue in &control.reload {
                    let update = Reload {
                        groups: plan::groups(&next_cfg, &next_layout),
                        listeners: plan::listeners(&next_cfg, &next_layout),
                        fleet_peers: next_cfg.fleet.as_ref().map(|f| f.peer_macs()),
                    };
                    if queue.force_push(update).is_some() {
                        log::debug!("an earlier reload was not picked up yet: replaced");
                        replaced += 1;
                    }
                }
                reloads.handed(workers, replaced);
                (cfg, layout) = (next_cfg, next_layout);
                if let Some(a) = &access_log {
                    a.rename(&cfg, &layout);
                }
            }
        }
        reloads.poll(control.reloaded.load(Ordering::Acquire));
        if drain_deadline.is_some() && total(&shared, Counter::FlowsActive) == 0 {
            log::info!("drained: no connection left");
            control.stop.store(true, Ordering::Relaxed);
        }
        if drain_deadline.is_some_and(|d| Instant::now() >= d) {
            log::warn!(
                "drain timeout: stopping with {} connections open",
                total(&shared, Counter::FlowsActive)
            );
            control.stop.store(true, Ordering::Relaxed);
        }
        if let Some(ep) = &endpoint {
            let per_worker: Vec<&SharedCounters> = shared.iter().map(|s| &**s).collect();
            busy.update(Instant::now(), &per_worker);
            let gauges = mgmt::Gauges {
                mbufs_in_use: pools.iter().map(|p| p.in_use()).sum(),
                mbufs_total: pools.iter().map(|p| p.size()).sum(),
                draining: drain_deadline.is_some(),
                uptime_s: started.elapsed().as_secs(),
                upstreams,
                announce: announcer.as_ref().map(|a| a.status().clone()),
                reload: reloads.status().clone(),
                sources: mgmt::Sources {
                    names: &metric_names,
                    ports: &ports,
                    pools: &pools,
                    requests: &request_stats,
                    busy_ratio: busy.ratios(),
                    control: exception_thread.as_ref().map(|_| &*control_counters),
                    capture: Some(&capture),
                },
            };
            ep.poll(&per_worker, &gauges);
        }
        if last_summary.elapsed() >= SUMMARY_EVERY {
            last_summary = Instant::now();
            log::info!("{}", summary(&shared, started.elapsed()));
        }
    }
    control.stop.store(true, Ordering::Relaxed);
    if let Some(a) = &mut announcer {
        a.withdraw("stopping");
    }
    crate::notify::stopping("stopping: waiting for the workers");
    log::info!("stopping: waiting for the workers");
    let failed: Vec<u32> = launched
        .into_iter()
        .filter_map(|w| {
            let lcore_id = w.lcore();
            (w.wait() != 0).then_some(lcore_id)
        })
        .collect();
    // A frame handed to a worker that had already stopped still sits in its
    // inbox: free it now, before the pools count what is left.
    drop(inboxes);
    if let Some(t) = exception_thread {
        if t.join().is_err() {
            log::error!("the exception path's thread panicked");
        }
    }
    if let Some(a) = access_log {
        a.stop();
    }
    log::info!("final counters: {}", summary(&shared, started.elapsed()));
    for p in &ports {
        if let Ok(s) = p.stats() {
            log::info!(
                "port {}: rx {} frames, tx {} frames, missed {}, rx errors {}, tx errors {}, no-mbuf {}",
                p.name(), s.rx_packets, s.tx_packets, s.rx_missed, s.rx_errors, s.tx_errors, s.rx_nombuf
            );
        }
    }
    // Stopping the ports returns the mbufs their rings held (but see
    // `Port::mbufs_kept_after_close`).
    let kept_by_drivers: u32 = ports.iter().map(Port::mbufs_kept_after_close).sum();
    drop(ports);
    drop(worker_pools);
    let in_use: u32 = pools.iter().map(|p| p.in_use()).sum();
    let leaked = in_use.saturating_sub(kept_by_drivers);
    let names: Vec<&str> = pools.iter().map(|p| p.name()).collect();
    log::info!(
        "mbuf pools {names:?}: {in_use} of {} mbufs in use at exit, {kept_by_drivers} kept by drivers after close, {leaked} leaked",
        pools.iter().map(|p| p.size()).sum::<u32>()
    );
    drop(pools);
    drop(eal);
    if !failed.is_empty() {
        return Err(RunError::WorkersFailed { lcores: failed });
    }
    if leaked != 0 {
        return Err(RunError::MbufLeak { leaked });
    }
    Ok(())
}

/// One mbuf pool per NUMA node that runs workers, in that node's memory,
/// so that a worker's frames never cross the interconnect.
struct NodePools {
    pools: Vec<Arc<Mempool>>,
    /// Worker i's pool (the one on its node).
    of_worker: Vec<Arc<Mempool>>,
}

fn node_pools(eal: &Eal, rt: &Runtime) -> Result<NodePools, RunError> {
    let mut nodes: Vec<i32> = Vec::new();
    let mut pools: Vec<Arc<Mempool>> = Vec::new();
    let mut of_worker = Vec::with_capacity(rt.worker_lcores.len());
    for &lcore in &rt.worker_lcores {
        // -1 (any node) for an lcore EAL cannot place.
        let node = lcore::node_of(lcore).map_or(-1, |n| n as i32);
        let i = match nodes.iter().position(|&n| n == node) {
            Some(i) => i,
            None => {
                let pool = Mempool::new(
                    eal,
                    &format!("zp_mbufs_{node}"),
                    rt.mbufs,
                    rt.mbuf_cache,
                    MBUF_DATA_ROOM,
                    node,
                )
                .map_err(|cause| RunError::Pool { node, cause })?;
                log::info!(
                    "mbuf pool '{}': {} mbufs on NUMA node {node}",
                    pool.name(),
                    pool.size()
                );
                nodes.push(node);
                pools.push(Arc::new(pool));
                pools.len() - 1
            }
        };
        of_worker.push(pools[i].clone());
    }
    Ok(NodePools { pools, of_worker })
}

/// Starts every port; rx queue i takes its buffers from worker i's pool.
fn bring_up_ports(
    eal: &Eal,
    cfg: &Config,
    worker_pools: &[Arc<Mempool>],
) -> Result<Vec<Port>, RunError> {
    let queue_pools: Vec<&Mempool> = worker_pools.iter().map(|p| &**p).collect();
    cfg.ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let port = Port::start(
                eal,
                p.device(),
                &PortConfig {
                    rx_queues: cfg.runtime.worker_lcores.len() as u16,
                    tx_queues: crate::exception::tx_queues(
                        cfg,
                        i,
                        Port::max_tx_queues(eal, p.device()).unwrap_or(0),
                    ),
                    rx_descriptors: p.rx_descriptors,
                    tx_descriptors: p.tx_descriptors,
                    mtu: p.mtu,
                    rss_key: crate::net::rss::RSS_KEY,
                },
                &queue_pools,
            )
            .map_err(|cause| RunError::Port {
                port: p.name.clone(),
                device: p.device().to_owned(),
                cause,
            })?;
            let m = port.mac();
            let link = port.link().map(|l| if l.up { format!("up {} Mb/s", l.speed_mbps) } else { "down".into() });
            log::info!(
                "port '{}' ({}, driver {}) {}: mac {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}, address {}, link {}, rx checksum offload {}",
                p.name, p.device(), port.driver(), port.id(), m[0], m[1], m[2], m[3], m[4], m[5], p.address4(),
                link.unwrap_or_else(|e| crate::error::Chain(&e).to_string()), port.rx_checksum_offload()
            );
            let workers = cfg.runtime.worker_lcores.len();
            if workers > 1 && port.rss_programmed() {
                log::info!("port '{}': RSS programmed ({} table entries): every flow arrives on its owner's queue", p.name, port.reta_size());
            } else if workers > 1 {
                log::info!("port '{}': the device does not take our RSS key and table: frames that arrive on another worker's queue are handed to their owner", p.name);
            }
            Ok(port)
        })
        .collect()
}

#[allow(clippy::too_many_arguments)] // one per thing a worker is handed
fn worker_spec(
    cfg: &Config,
    layout: &Layout,
    ports: &[Port],
    pool: Arc<Mempool>,
    upstream_stats: Arc<Mutex<Vec<UpstreamStat>>>,
    request_stats: Arc<RequestStats>,
    index: usize,
    inboxes: Inboxes,
    secrets: Secrets,
) -> Result<WorkerSpec, RunError> {
    let rt = &cfg.runtime;
    let port_specs = cfg
        .ports
        .iter()
        .zip(ports)
        .map(|(pc, port)| PortSpec {
            queue: port.queue(QueueId(index as u16)),
            mac: port.mac(),
            address: pc.cidr(),
            gateway: pc.gateway,
            ip_mtu: usize::from(pc.mtu.unwrap_or(crate::dpdk::ETHER_MTU)),
            rx_checksum_offload: port.rx_checksum_offload(),
            // Without a programmed table, ownership follows a 128-entry one.
            reta_size: match port.reta_size() {
                0 => 128,
                n => u32::from(n),
            },
            exception: None,
            ipv6: (!pc.cidrs6().is_empty()).then(|| crate::net::ipv6::Ipv6Spec {
                addresses: pc.cidrs6(),
                gateway: pc.gateway6,
            }),
            fleet: (cfg.fleet.as_ref()).filter(|f| f.port == pc.name).map(|f| {
                crate::net::stack::FleetSpec {
                    vip: f.vip,
                    peers: f.peer_macs(),
                }
            }),
        })
        .collect();
    let listeners = plan::listeners(cfg, layout);
    let groups = plan::groups(cfg, layout);
    Ok(WorkerSpec {
        tls_handshakes_per_poll: rt.tls_handshakes_per_poll,
        ports: port_specs,
        listeners,
        groups,
        max_flows: rt.max_flows as usize,
        socket_rx_buffer: rt.socket_rx_buffer as usize,
        socket_tx_buffer: rt.socket_tx_buffer as usize,
        buffer_release_idle_us: u64::from(rt.buffer_release_idle_ms) * 1000,
        tx_drain_us: u64::from(rt.tx_drain_us),
        rate_limit_entries: rt.rate_limit_entries as usize,
        pool,
        upstream_stats,
        request_stats,
        worker_index: index,
        inboxes,
        idle_sleep_us: u64::from(cfg.runtime.idle_sleep_us),
        syn_backlog: cfg.runtime.syn_backlog as usize,
        admit_flow_limit: cfg.runtime.admit_flow_limit(),
        admit_backlog_us: u64::from(cfg.runtime.admit_backlog_ms) * 1000,
        secrets,
        access_log: None,
        capture: Arc::default(),
    })
}

fn summary(workers: &[Arc<SharedCounters>], up: Duration) -> String {
    let t = |c| total(workers, c);
    let busy = t(Counter::BusyCycles) as f64 / t(Counter::TotalCycles).max(1) as f64;
    // Each core's share of cycles spent in loop iterations that found work.
    let per_core: Vec<String> = workers
        .iter()
        .map(|w| {
            let b = w.get(Counter::BusyCycles) as f64 / w.get(Counter::TotalCycles).max(1) as f64;
            format!("{:.1}%", b * 100.0)
        })
        .collect();
    let all: Vec<String> = Counter::ALL
        .iter()
        .map(|&c| format!("{}={}", c.name(), t(c)))
        .collect();
    format!(
        "up {}s: rx {} tx {} frames, flows accepted {} active {} refused {}, requests {}, busy {:.1}% (per worker: {}), tsc_hz={} {}",
        up.as_secs(),
        t(Counter::RxFrames),
        t(Counter::TxFrames),
        t(Counter::FlowsAccepted),
        t(Counter::FlowsActive),
        t(Counter::FlowsRefused),
        t(Counter::Requests),
        busy * 100.0,
        per_core.join(" "),
        crate::dpdk::tsc_hz(),
        all.join(" ")
    )
}
