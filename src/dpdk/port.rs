//! Ethernet ports (ethdev): configure, start, burst rx/tx, stats, stop.

use std::ffi::CString;
use std::fmt;

use zproxy_ffi as ffi;

use super::error::{check, DpdkError, Result};
use super::mbuf::MbufBurst;
use super::mempool::Mempool;
use super::offloads::Offloads;
use super::Eal;

/// DPDK port id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortId(pub u16);

/// Queue index on one port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueueId(pub u16);

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port {}", self.0)
    }
}

/// How to set a port up.
#[derive(Debug, Clone)]
pub struct PortConfig {
    pub rx_queues: u16,
    pub tx_queues: u16,
    pub rx_descriptors: u16,
    pub tx_descriptors: u16,
    /// IP MTU; `None` keeps the device's default.
    pub mtu: Option<u16>,
    /// The Toeplitz key RSS hashes with, when there are several rx queues.
    pub rss_key: [u8; 40],
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStatus {
    pub up: bool,
    pub speed_mbps: u32,
    pub full_duplex: bool,
}

/// Queues whose figures ethdev keeps apart (`RTE_ETHDEV_QUEUE_STAT_CNTRS`).
pub const QUEUE_STATS_MAX: usize = 16;

/// One queue pair's figures, as far as the driver fills them (some leave
/// them at 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_errors: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// Frames the NIC dropped because no rx descriptor was free.
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_nombuf: u64,
    /// Per queue pair: the port's queues, up to `QUEUE_STATS_MAX`.
    queues: [QueueStats; QUEUE_STATS_MAX],
    queue_count: usize,
}

impl PortStats {
    pub fn queues(&self) -> &[QueueStats] {
        &self.queues[..self.queue_count]
    }

    /// These stats with the given queues' (the first `QUEUE_STATS_MAX`).
    pub fn with_queues(mut self, queues: &[QueueStats]) -> Self {
        self.queue_count = queues.len().min(QUEUE_STATS_MAX);
        self.queues[..self.queue_count].copy_from_slice(&queues[..self.queue_count]);
        self
    }
}

/// A started port. Dropping it stops and closes the device, which returns
/// every mbuf the driver held to its pool.
pub struct Port {
    id: PortId,
    name: String,
    mac: [u8; 6],
    /// Receive checksum offloads the device verifies for us (IPv4, TCP).
    rx_checksum_offload: bool,
    rx_queues: u16,
    tx_queues: u16,
    driver: String,
    /// Entries of the RSS redirection table, filled round robin over the rx
    /// queues; 0 when the device does not let us program it.
    reta_size: u16,
    /// The device hashes with our key (it took the key and the table).
    rss_programmed: bool,
}

/// The ring size of a memif vdev in zero-copy client mode
/// (`net_memif...,zero-copy=yes[,rsize=LOG2]`, default 2^10), else None.
fn memif_zero_copy_ring(vdev: &str) -> Option<u32> {
    let mut args = vdev.split(',');
    if !args.next()?.starts_with("net_memif") || !vdev.split(',').any(|a| a == "zero-copy=yes") {
        return None;
    }
    let log2 = args
        .find_map(|a| a.strip_prefix("rsize="))
        .and_then(|v| v.parse::<u32>().ok())
        .filter(|&v| v <= 14)
        .unwrap_or(10);
    Some(1 << log2)
}

/// DPDK 22.11's net_af_xdp fills each rx queue's fill ring with this many
/// mbufs from the pool and does not give them back when the port closes.
const AF_XDP_FILL_RING: u32 = 2048;

impl Port {
    /// Finds a probed device by name (a vdev name such as `net_af_xdp0`, or a
    /// PCI address such as `0000:03:00.0`), configures it and starts it.
    /// Rx queue i takes its buffers from `pools[i]` (the pool on the node of
    /// the core that polls it).
    pub fn start(_eal: &Eal, device: &str, cfg: &PortConfig, pools: &[&Mempool]) -> Result<Port> {
        let id = find(device)?;
        let ctx = |what: &str| format!("{what} for {device} ({id})");

        let mut info = ffi::rte_eth_dev_info::default();
        // SAFETY: id is a valid port; info is a writable struct of the right type.
        let ret = unsafe { ffi::rte_eth_dev_info_get(id.0, &mut info) };
        check(ret, || ctx("rte_eth_dev_info_get"))?;
        if cfg.rx_queues > info.max_rx_queues || cfg.tx_queues > info.max_tx_queues {
            return Err(DpdkError::other(
                ctx("configuring queues"),
                format!(
                    "asked for {} rx / {} tx queues, the device has at most {} / {}",
                    cfg.rx_queues, cfg.tx_queues, info.max_rx_queues, info.max_tx_queues
                ),
            ));
        }

        // SAFETY: driver_name is a static NUL-terminated string owned by the driver.
        let driver = unsafe { std::ffi::CStr::from_ptr(info.driver_name) }
            .to_string_lossy()
            .into_owned();

        let mut conf = ffi::rte_eth_conf::default();
        let mut rss_key = cfg.rss_key;
        let rss = (ffi::RTE_ETH_RSS_IP | ffi::RTE_ETH_RSS_TCP) as u64 & info.flow_type_rss_offloads;
        let use_rss = cfg.rx_queues > 1 && rss != 0;
        let key_taken = use_rss && usize::from(info.hash_key_size) == rss_key.len();
        if use_rss {
            conf.rxmode.mq_mode = ffi::rte_eth_rx_mq_mode_RTE_ETH_MQ_RX_RSS;
            conf.rx_adv_conf.rss_conf.rss_hf = rss;
            if key_taken {
                // The device copies the key during configure; rss_key outlives the call.
                conf.rx_adv_conf.rss_conf.rss_key = rss_key.as_mut_ptr();
                conf.rx_adv_conf.rss_conf.rss_key_len = rss_key.len() as u8;
            }
        }
        let want_csum =
            (ffi::RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | ffi::RTE_ETH_RX_OFFLOAD_TCP_CKSUM) as u64;
        let rx_checksum_offload = info.rx_offload_capa & want_csum == want_csum;
        if rx_checksum_offload {
            conf.rxmode.offloads |= want_csum;
        }
        // SAFETY: id is valid; conf is a fully initialised rte_eth_conf.
        let ret = unsafe { ffi::rte_eth_dev_configure(id.0, cfg.rx_queues, cfg.tx_queues, &conf) };
        check(ret, || ctx("rte_eth_dev_configure"))?;
        if let Some(mtu) = cfg.mtu {
            // SAFETY: id is a valid, configured port.
            check(unsafe { ffi::rte_eth_dev_set_mtu(id.0, mtu) }, || {
                ctx(&format!("setting MTU {mtu}"))
            })?;
        }

        let (mut nb_rx, mut nb_tx) = (cfg.rx_descriptors, cfg.tx_descriptors);
        // SAFETY: id is valid; the two counts are writable u16s.
        let ret = unsafe { ffi::rte_eth_dev_adjust_nb_rx_tx_desc(id.0, &mut nb_rx, &mut nb_tx) };
        check(ret, || ctx("adjusting descriptor counts"))?;
        // SAFETY: id is valid.
        let socket = unsafe { ffi::rte_eth_dev_socket_id(id.0) };
        let socket = if socket < 0 {
            ffi::SOCKET_ID_ANY
        } else {
            socket
        } as u32;
        if pools.len() != usize::from(cfg.rx_queues) {
            return Err(DpdkError::other(
                ctx("setting up rx queues"),
                format!(
                    "{} rx queues need one pool each, got {}",
                    cfg.rx_queues,
                    pools.len()
                ),
            ));
        }
        for (q, pool) in (0..cfg.rx_queues).zip(pools) {
            // SAFETY: id is configured with rx_queues queues; a NULL rxconf takes
            // the driver's defaults; pool outlives the port (the caller keeps
            // it for the port's whole life).
            let ret = unsafe {
                ffi::rte_eth_rx_queue_setup(id.0, q, nb_rx, socket, std::ptr::null(), pool.as_ptr())
            };
            check(ret, || ctx(&format!("setting up rx queue {q}")))?;
        }
        for q in 0..cfg.tx_queues {
            // SAFETY: as above, for tx queues.
            let ret =
                unsafe { ffi::rte_eth_tx_queue_setup(id.0, q, nb_tx, socket, std::ptr::null()) };
            check(ret, || ctx(&format!("setting up tx queue {q}")))?;
        }
        // SAFETY: queues are set up.
        check(unsafe { ffi::rte_eth_dev_start(id.0) }, || {
            ctx("rte_eth_dev_start")
        })?;
        let reta_programmed =
            use_rss && key_taken && program_reta(id, info.reta_size, cfg.rx_queues).is_ok();
        // Promiscuous mode is best effort (some vdevs do not support it).
        // SAFETY: id is a started port.
        let _ = unsafe { ffi::rte_eth_promiscuous_enable(id.0) };

        let mut mac = ffi::rte_ether_addr::default();
        // SAFETY: id is valid; mac is writable.
        check(unsafe { ffi::rte_eth_macaddr_get(id.0, &mut mac) }, || {
            ctx("rte_eth_macaddr_get")
        })?;

        let offloads = Offloads {
            rx: info.rx_offload_capa,
            tx: info.tx_offload_capa,
        };
        log::info!(
            "port {device} ({driver}): rx offloads offered [{}], tx offloads offered [{}]; using rx checksum: {}",
            offloads.rx_names(),
            offloads.tx_names(),
            if rx_checksum_offload { "yes" } else { "no" }
        );
        Ok(Port {
            id,
            name: device.to_owned(),
            mac: mac.addr_bytes,
            rx_checksum_offload,
            rx_queues: cfg.rx_queues,
            tx_queues: cfg.tx_queues,
            driver,
            reta_size: if reta_programmed { info.reta_size } else { 0 },
            rss_programmed: reta_programmed,
        })
    }

    /// Tx queues the port was started with.
    pub fn tx_queues(&self) -> u16 {
        self.tx_queues
    }

    /// The most tx queues a probed device offers (before it is started).
    pub fn max_tx_queues(_eal: &Eal, device: &str) -> Result<u16> {
        let id = find(device)?;
        let mut info = ffi::rte_eth_dev_info::default();
        // SAFETY: id is a valid port; info is a writable struct of the right type.
        let ret = unsafe { ffi::rte_eth_dev_info_get(id.0, &mut info) };
        check(ret, || format!("rte_eth_dev_info_get for {device} ({id})"))?;
        Ok(info.max_tx_queues)
    }

    /// Whether the device spreads TCP flows over its rx queues with our key
    /// and a round-robin redirection table of `reta_size()` entries, so that
    /// every frame lands on the queue `net::rss::Steering` computes.
    pub fn rss_programmed(&self) -> bool {
        self.rss_programmed
    }

    pub fn reta_size(&self) -> u16 {
        self.reta_size
    }

    /// The PMD's name, e.g. `net_af_packet`.
    pub fn driver(&self) -> &str {
        &self.driver
    }

    /// Mbufs the driver is known to keep out of the pool after it closes
    /// (not ours to free; counted so that a leak check stays exact).
    pub fn mbufs_kept_after_close(&self) -> u32 {
        if self.driver == "net_af_xdp" {
            AF_XDP_FILL_RING * u32::from(self.rx_queues)
        } else if let Some(ring) = memif_zero_copy_ring(&self.name) {
            // A zero-copy memif client hands its own mbufs to the rings
            // (rx refills, tx until the peer is done) and keeps them at
            // close: at most a full ring per queue.
            ring * u32::from(self.rx_queues + self.tx_queues)
        } else {
            0
        }
    }

    pub fn id(&self) -> PortId {
        self.id
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// True when the device verifies IPv4 and TCP checksums on receive and
    /// flags bad ones in `ol_flags`.
    pub fn rx_checksum_offload(&self) -> bool {
        self.rx_checksum_offload
    }

    pub fn link(&self) -> Result<LinkStatus> {
        let mut link = ffi::rte_eth_link::default();
        // SAFETY: id is a started port; link is writable.
        let ret = unsafe { ffi::rte_eth_link_get_nowait(self.id.0, &mut link) };
        check(ret, || format!("rte_eth_link_get_nowait for {}", self.name))?;
        Ok(LinkStatus {
            up: link.link_status() == ffi::RTE_ETH_LINK_UP as u16,
            speed_mbps: link.link_speed,
            full_duplex: link.link_duplex() == ffi::RTE_ETH_LINK_FULL_DUPLEX as u16,
        })
    }

    pub fn stats(&self) -> Result<PortStats> {
        let mut s = ffi::rte_eth_stats::default();
        // SAFETY: id is a started port; s is writable.
        check(unsafe { ffi::rte_eth_stats_get(self.id.0, &mut s) }, || {
            format!("rte_eth_stats_get for {}", self.name)
        })?;
        Ok(PortStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
            queues: std::array::from_fn(|q| {
                let at = |a: &[u64]| a.get(q).copied().unwrap_or(0);
                QueueStats {
                    rx_packets: at(&s.q_ipackets),
                    tx_packets: at(&s.q_opackets),
                    rx_bytes: at(&s.q_ibytes),
                    tx_bytes: at(&s.q_obytes),
                    rx_errors: at(&s.q_errors),
                }
            }),
            queue_count: usize::from(self.rx_queues).min(QUEUE_STATS_MAX),
        })
    }

    /// The handle a worker polls one queue pair through.
    pub fn queue(&self, queue: QueueId) -> PortQueue {
        PortQueue {
            port: self.id,
            queue,
        }
    }
}

impl Drop for Port {
    fn drop(&mut self) {
        // SAFETY: the port was started by `start`; workers that polled it have
        // returned (the runtime joins them before dropping ports).
        unsafe {
            let ret = ffi::rte_eth_dev_stop(self.id.0);
            if ret < 0 {
                log::warn!(
                    "{}",
                    crate::error::Chain(&DpdkError::from_ret(
                        format!("stopping {}", self.name),
                        ret
                    ))
                );
            }
            let ret = ffi::rte_eth_dev_close(self.id.0);
            if ret < 0 {
                log::warn!(
                    "{}",
                    crate::error::Chain(&DpdkError::from_ret(
                        format!("closing {}", self.name),
                        ret
                    ))
                );
            }
        }
    }
}

/// One (port, queue) pair, polled by exactly one worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortQueue {
    pub port: PortId,
    pub queue: QueueId,
}

impl PortQueue {
    /// Receives into the free tail of `burst`; returns how many arrived.
    #[inline]
    pub fn rx_burst<const N: usize>(&self, burst: &mut MbufBurst<N>) -> usize {
        let room = (N - burst.len) as u16;
        // SAFETY: the port is started (the runtime keeps it so while workers
        // run); ptrs[len..] has room for `room` pointers, which become owned
        // by the burst.
        let n = unsafe {
            ffi::rte_eth_rx_burst(
                self.port.0,
                self.queue.0,
                burst.ptrs.as_mut_ptr().add(burst.len),
                room,
            )
        } as usize;
        burst.len += n;
        n
    }

    /// Sends what the driver takes from the front of `burst`; the rest stays.
    #[inline]
    pub fn tx_burst<const N: usize>(&self, burst: &mut MbufBurst<N>) -> usize {
        if burst.len == 0 {
            return 0;
        }
        // SAFETY: the port is started; ptrs[..len] are valid mbufs; the driver
        // takes ownership of the first `n` it returns.
        let n = unsafe {
            ffi::rte_eth_tx_burst(
                self.port.0,
                self.queue.0,
                burst.ptrs.as_mut_ptr(),
                burst.len as u16,
            )
        } as usize;
        burst.consume_front(n);
        n
    }

    /// Asks the driver to free the mbufs of completed transmissions now
    /// (some drivers only do so on the next send). Used before shutdown.
    pub fn reap_tx(&self) {
        // SAFETY: the port is started; 0 means "as many as possible".
        let ret = unsafe { ffi::rte_eth_tx_done_cleanup(self.port.0, self.queue.0, 0) };
        if ret < 0 {
            // Not supported: an empty burst makes e.g. af_xdp drain its completion ring.
            let mut none: [*mut ffi::rte_mbuf; 1] = [std::ptr::null_mut()];
            // SAFETY: nb_pkts is 0, so the driver reads no pointer from the array.
            unsafe { ffi::rte_eth_tx_burst(self.port.0, self.queue.0, none.as_mut_ptr(), 0) };
        }
    }
}

/// Looks a probed device up by name.
fn find(device: &str) -> Result<PortId> {
    // DPDK names a vdev port after the part before the first comma.
    let name = device.split(',').next().unwrap_or(device);
    let cname = CString::new(name).map_err(|e| DpdkError::nul(format!("port name {name:?}"), e))?;
    let mut id = 0u16;
    // SAFETY: cname is a valid C string; id is writable.
    let ret = unsafe { ffi::rte_eth_dev_get_port_by_name(cname.as_ptr(), &mut id) };
    if ret < 0 {
        // SAFETY: plain getter.
        let count = unsafe { ffi::rte_eth_dev_count_avail() };
        return Err(DpdkError::NoSuchPort {
            name: name.to_owned(),
            probed: count,
        });
    }
    Ok(PortId(id))
}

/// Fills the RSS redirection table round robin: entry i sends to queue i % queues.
fn program_reta(id: PortId, reta_size: u16, queues: u16) -> Result<()> {
    let group = ffi::RTE_ETH_RETA_GROUP_SIZE as usize;
    if reta_size == 0 || usize::from(reta_size) % group != 0 {
        return Err(DpdkError::other(
            format!("programming RSS for {id}"),
            format!("redirection table of {reta_size} entries"),
        ));
    }
    let mut table: Vec<ffi::rte_eth_rss_reta_entry64> = (0..usize::from(reta_size) / group)
        .map(|g| {
            let mut entry = ffi::rte_eth_rss_reta_entry64 {
                mask: u64::MAX,
                ..Default::default()
            };
            for (i, queue) in entry.reta.iter_mut().enumerate() {
                *queue = ((g * group + i) % usize::from(queues)) as u16;
            }
            entry
        })
        .collect();
    // SAFETY: id is a started port; table holds reta_size / 64 entries, as
    // rte_eth_dev_rss_reta_update reads for a table of reta_size.
    let ret = unsafe { ffi::rte_eth_dev_rss_reta_update(id.0, table.as_mut_ptr(), reta_size) };
    check(ret, || {
        format!("programming the RSS redirection table of {id}")
    })
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::memif_zero_copy_ring;

    #[test]
    fn a_zero_copy_memif_keeps_up_to_a_ring_per_queue() {
        let zc = "net_memif0,role=client,socket=/r/c.sock,zero-copy=yes";
        assert_eq!(memif_zero_copy_ring(zc), Some(1024));
        assert_eq!(memif_zero_copy_ring(&format!("{zc},rsize=12")), Some(4096));
        assert_eq!(
            memif_zero_copy_ring("net_memif0,role=client,zero-copy=no"),
            None
        );
        assert_eq!(memif_zero_copy_ring("net_memif0,role=client"), None);
        assert_eq!(
            memif_zero_copy_ring("net_af_packet0,iface=a,zero-copy=yes"),
            None
        );
    }
}
