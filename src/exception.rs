//! The control core's half of the kernel exception path: per port, a kernel
//! interface made by DPDK (TAP PMD, or virtio-user on vhost-net) carrying
//! the port's MAC and address, and a thread on the control core that moves
//! frames both ways: what the workers queued (`net::exception`) to the
//! kernel, control ring first; what the kernel sends, out of the port on a
//! tx queue of its own (the one after the workers').
//!
//! The kernel interface gets its address from `ip` (iproute2), run once at
//! start: no async netlink runtime for two calls, and `ip`'s own message
//! says what went wrong.

use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::app::worker::Control;
use crate::config::exception::ExceptionKind;
use crate::config::Config;
use crate::dpdk::{Eal, MbufBurst, Mempool, Port, PortConfig, PortQueue, QueueId};
use crate::error::RunError;
use crate::net::counters::{Counter, Counters, SharedCounters};
use crate::net::exception::{ExceptionSpec, Rings};

/// Mbufs for frames the kernel sends (its TAP rx queue).
const POOL_MBUFS: u32 = 2047;
const DESCRIPTORS: u16 = 512;
/// Frames per burst each way.
const BURST: usize = 32;
/// Bursts of control frames taken per round before one of the rest.
const CONTROL_BURSTS: usize = 4;
/// Sleep of an idle round (the control core is shared with management
/// work): short while frames came lately, then long, so an idle kernel
/// side costs about a thousand wake-ups a second, not twenty thousand.
const IDLE_SLEEP: Duration = Duration::from_micros(50);
const IDLE_SLEEP_LONG: Duration = Duration::from_millis(1);
/// Idle rounds (about 1 ms of short sleeps) before the long sleep.
const SHORT_IDLE_ROUNDS: u32 = 20;
const PUBLISH_EVERY: Duration = Duration::from_millis(100);

/// One port's kernel side.
struct KernelPort {
    tap: PortQueue,
    /// The data port's tx queue kept for the control core; `None`: the
    /// kernel's frames go to worker 0 over `Rings::from_kernel`.
    wire: Option<PortQueue>,
    rings: Arc<Rings>,
}

/// The started kernel interfaces; the thread that serves them is `spawn`ed.
pub struct ExceptionPath {
    ports: Vec<KernelPort>,
    /// Kept open for the thread's life; dropping one removes its interface.
    devices: Vec<Port>,
    /// Per config port: its rings, and whether worker 0 sends the kernel's frames.
    pub rings: Vec<Option<(Arc<Rings>, bool)>>,
    pub counters: Arc<SharedCounters>,
    pool: Option<Arc<Mempool>>,
}

/// The data port's tx queue count: one per worker, plus the control
/// core's when the port has an exception path and the device has a queue
/// to spare (`max`; otherwise worker 0 sends the kernel's frames).
pub fn tx_queues(cfg: &Config, port: usize, max: u16) -> u16 {
    let workers = cfg.runtime.worker_lcores.len() as u16;
    let own = cfg.ports[port].exception.is_some() && max > workers;
    workers + u16::from(own)
}

impl ExceptionPath {
    /// Makes each port's kernel interface (the data ports are started, so
    /// their MACs are known), gives it the port's address and brings it up.
    pub fn start(eal: &Eal, cfg: &Config, data: &[Port]) -> Result<ExceptionPath, RunError> {
        let mut path = ExceptionPath {
            ports: Vec::new(),
            devices: Vec::new(),
            rings: vec![None; cfg.ports.len()],
            counters: Arc::default(),
            pool: None,
        };
        let workers = cfg.runtime.worker_lcores.len() as u16;
        for (i, (pc, port)) in cfg.ports.iter().zip(data).enumerate() {
            let Some(e) = &pc.exception else { continue };
            let fail = |message: String| RunError::Exception {
                port: pc.name.clone(),
                iface: e.iface.clone(),
                message,
            };
            if crate::privileges::interface_exists(&e.iface) {
                return Err(fail("an interface of that name exists already: pick another exception.iface, or remove it (ip link del)".into()));
            }
            let pool = match &path.pool {
                Some(p) => p.clone(),
                None => {
                    let p = Mempool::new(
                        eal,
                        "zp_exception",
                        POOL_MBUFS,
                        0,
                        crate::dpdk::MBUF_DEFAULT_BUF_SIZE,
                        -1,
                    )
                    .map_err(|c| fail(format!("no mbuf pool for it: {c}")))?;
                    path.pool.insert(Arc::new(p)).clone()
                }
            };
            let vdev = e.vdev(path.devices.len(), port.mac());
            if e.kind == ExceptionKind::VirtioUser
                && !std::path::Path::new("/dev/vhost-net").exists()
            {
                return Err(fail("kind = \"virtio_user\" needs /dev/vhost-net (modprobe vhost_net), or use kind = \"tap\"".into()));
            }
            eal.probe_vdev(&vdev)
                .map_err(|c| fail(format!("DPDK could not make {vdev}: {c}")))?;
            let dev = Port::start(
                eal,
                &vdev,
                &PortConfig {
                    rx_queues: 1,
                    tx_queues: 1,
                    rx_descriptors: DESCRIPTORS,
                    tx_descriptors: DESCRIPTORS,
                    mtu: None,
                    rss_key: crate::net::rss::RSS_KEY,
                },
                &[&pool],
            )
            .map_err(|c| fail(format!("{vdev} did not start: {c}")))?;
            let (addr, len) = pc.cidr();
            ip(&["addr", "add", &format!("{addr}/{len}"), "dev", &e.iface]).map_err(&fail)?;
            if let Some(mtu) = pc.mtu {
                ip(&["link", "set", "dev", &e.iface, "mtu", &mtu.to_string()]).map_err(&fail)?;
            }
            ip(&["link", "set", "dev", &e.iface, "up"]).map_err(&fail)?;
            log::info!(
                "port '{}': exception path on {} ({vdev}): frames that are not ZProxy's go to the kernel, up to {} per second per worker and class",
                pc.name, e.iface, e.rate
            );
            let rings = Rings::new();
            let own_queue = port.tx_queues() > workers;
            if !own_queue {
                log::info!("port '{}': the device has no tx queue to spare for the control core: worker 0 sends the kernel's frames", pc.name);
            }
            path.rings[i] = Some((rings.clone(), !own_queue));
            path.ports.push(KernelPort {
                tap: dev.queue(QueueId(0)),
                wire: own_queue.then(|| port.queue(QueueId(workers))),
                rings,
            });
            path.devices.push(dev);
        }
        Ok(path)
    }

    /// The pool of the kernel's frames, if any port has an exception path.
    pub fn pool(&self) -> Option<Arc<Mempool>> {
        self.pool.clone()
    }

    pub fn is_on(&self) -> bool {
        !self.ports.is_empty()
    }

    /// Serves the kernel interfaces on a thread of the control core (it
    /// inherits the control thread's CPU) until `control.stop`.
    pub fn spawn(self, control: Arc<Control>) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("zp-exception".into())
            .spawn(move || self.run(&control))
    }

    fn run(self, control: &Control) {
        let mut c = Counters::new();
        let mut burst = MbufBurst::<BURST>::default();
        let mut published = Instant::now();
        let mut idle_rounds = 0u32;
        while !control.stop.load(Ordering::Relaxed) {
            let mut work = 0;
            for p in &self.ports {
                // Kernel to wire.
                let n = p.tap.rx_burst(&mut burst);
                if n > 0 {
                    work += n;
                    match p.wire {
                        Some(q) => {
                            let sent = q.tx_burst(&mut burst);
                            c.add(Counter::ExceptionFromKernel, sent as u64);
                        }
                        // Worker 0 sends them (and counts them).
                        None => {
                            for m in burst.drain() {
                                if p.rings.from_kernel.push(m).is_err() {
                                    c.add(Counter::ExceptionTxDrops, 1);
                                }
                            }
                        }
                    }
                    c.add(Counter::ExceptionTxDrops, burst.len() as u64);
                    burst.drain().for_each(drop);
                }
                // Wire to kernel: control frames first.
                for _ in 0..CONTROL_BURSTS {
                    let n = to_kernel(&p.rings.control, p.tap, &mut burst, &mut c);
                    work += n;
                    if n < BURST {
                        break;
                    }
                }
                work += to_kernel(&p.rings.other, p.tap, &mut burst, &mut c);
            }
            if published.elapsed() >= PUBLISH_EVERY {
                published = Instant::now();
                self.counters.publish(&c);
            }
            if work > 0 {
                idle_rounds = 0;
            } else {
                idle_rounds = idle_rounds.saturating_add(1);
                std::thread::sleep(if idle_rounds <= SHORT_IDLE_ROUNDS {
                    IDLE_SLEEP
                } else {
                    IDLE_SLEEP_LONG
                });
            }
        }
        self.counters.publish(&c);
        // Frames still queued are freed with the rings; the devices close on drop.
    }
}

/// Moves up to a burst from `ring` to the kernel's interface.
fn to_kernel(
    ring: &crossbeam_queue::ArrayQueue<crate::dpdk::Mbuf>,
    tap: PortQueue,
    burst: &mut MbufBurst<BURST>,
    c: &mut Counters,
) -> usize {
    while !burst.is_full() {
        let Some(m) = ring.pop() else { break };
        // Cannot fail: the burst has room.
        let _ = burst.push(m);
    }
    let n = burst.len();
    if n > 0 {
        tap.tx_burst(burst);
        c.add(Counter::ExceptionKernelDrops, burst.len() as u64);
        burst.drain().for_each(drop);
    }
    n
}

/// Runs `ip ARGS`; its error output is the message.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run `ip` (iproute2): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// What each worker gets of `rings` for its ports: the rings, the rate and
/// the burst of the port's exception path, if on.
pub fn worker_side(
    cfg: &Config,
    rings: &[Option<(Arc<Rings>, bool)>],
    worker: usize,
) -> Vec<Option<ExceptionSpec>> {
    cfg.ports
        .iter()
        .zip(rings)
        .map(|(p, r)| {
            let e = p.exception.as_ref()?;
            let (rings, by_worker_0) = r.clone()?;
            Some(ExceptionSpec {
                rings,
                rate: e.rate,
                burst: e.burst,
                transmits: by_worker_0 && worker == 0,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: &str = r#"
[runtime]
worker_lcores = [1, 2]
mbufs = 65535

[[port]]
name = "client"
vdev = "net_ring0"
address = "10.0.0.2/24"
exception = { kind = "tap", iface = "zp0", rate = 50, burst = 5 }

[[port]]
name = "up"
vdev = "net_ring1"
address = "10.1.0.2/24"

[[listener]]
port = "client"
tcp_port = 80
mode = "static"
[listener.static]
body = "ok"
"#;

    #[test]
    fn only_exception_ports_get_a_queue_for_the_control_core_and_only_if_spare() {
        let cfg = Config::parse(CFG).unwrap();
        assert_eq!(
            tx_queues(&cfg, 0, 16),
            3,
            "two workers and the control core"
        );
        assert_eq!(
            tx_queues(&cfg, 0, 2),
            2,
            "none to spare: worker 0 sends for it"
        );
        assert_eq!(tx_queues(&cfg, 1, 16), 2, "no exception path");
    }

    #[test]
    fn worker_0_transmits_for_a_port_without_a_spare_queue() {
        let cfg = Config::parse(CFG).unwrap();
        let rings = vec![Some((Rings::new(), true)), None];
        let w0 = worker_side(&cfg, &rings, 0);
        let w1 = worker_side(&cfg, &rings, 1);
        let e0 = w0[0].as_ref().unwrap();
        assert!(e0.transmits && (e0.rate, e0.burst) == (50, 5));
        assert!(!w1[0].as_ref().unwrap().transmits);
        assert!(w0[1].is_none() && w1[1].is_none());
        let own_queue = vec![Some((Rings::new(), false)), None];
        assert!(
            !worker_side(&cfg, &own_queue, 0)[0]
                .as_ref()
                .unwrap()
                .transmits
        );
    }
}
