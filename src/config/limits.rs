//! Values `zproxy run` would refuse late (DPDK at start-up) or quietly
//! mishandle: lcore ids, ring and pool sizes, the MTU, PCI addresses, EAL
//! flags, the ports' subnets, and listener keys that contradict the mode.
//! Each error names the key, the line of that key and what to do.

use super::locate::Place;
use super::validate::invalid;
use super::{in_network, Config, ConfigError, ListenerMode};

/// DPDK's `RTE_MAX_LCORE`: lcore ids are below it.
pub const MAX_LCORE: u32 = crate::dpdk::MAX_LCORE;
/// DPDK's `RTE_MEMPOOL_CACHE_MAX_SIZE`: the largest per-lcore mbuf cache.
pub const MAX_MBUF_CACHE: u32 = 512;
/// Most mbufs per pool: 2^24 mbufs of about 2.3 KiB are already 38 GiB of
/// hugepages per NUMA node.
pub const MAX_MBUFS: u32 = 1 << 24;
/// Most descriptors per ring (NICs take 4096 to 32768; the device's own
/// limit is checked when it starts).
pub const MAX_DESCRIPTORS: u16 = 32768;
/// Smallest IP MTU (RFC 791: every IPv4 host takes 576-byte datagrams).
pub const MIN_MTU: u16 = 576;
/// Largest IP MTU: a frame (14-byte Ethernet header included) must fit one
/// mbuf's data room; frames are never split over several mbufs.
pub const MAX_MTU: u16 = crate::dpdk::MBUF_DEFAULT_BUF_SIZE - crate::dpdk::PKTMBUF_HEADROOM - 14;

/// Most entries of a worker's access log ring (an entry is about 350 bytes).
pub const MAX_ACCESS_LOG_RING: u32 = 1 << 16;
/// Largest access log sampling interval.
pub const MAX_ACCESS_LOG_SAMPLE: u32 = 1_000_000;

/// EAL options `eal_args` may add: zproxy sets the lcores, memory and
/// devices itself (see [`OWN_EAL_FLAGS`]); anything else is refused.
pub const EAL_FLAGS: &[&str] = &[
    "--log-level",
    "--syslog",
    "--iova-mode",
    "--socket-mem",
    "--socket-limit",
    "-n",
    "-r",
    "--legacy-mem",
    "--single-file-segments",
    "--huge-unlink",
    "--match-allocations",
    "--base-virtaddr",
    "--vfio-intr",
    "--vfio-vf-token",
    "--no-hpet",
    "--force-max-simd-bitwidth",
    "--mbuf-pool-ops-name",
    "-d",
    "-b",
    "--block",
    "--trace",
    "--trace-dir",
    "--trace-bufsz",
    "--trace-mode",
];

/// EAL options zproxy derives from the config, and the key that sets each.
pub const OWN_EAL_FLAGS: &[(&str, &str)] = &[
    ("-l", "runtime.worker_lcores"),
    ("-c", "runtime.worker_lcores"),
    ("--lcores", "runtime.worker_lcores"),
    ("--main-lcore", "runtime.main_lcore"),
    ("--file-prefix", "nothing: each instance gets its own"),
    ("--proc-type", "nothing: zproxy is a primary process"),
    ("--in-memory", "runtime.no_huge"),
    ("--no-huge", "runtime.no_huge"),
    ("--no-shconf", "runtime.no_huge"),
    ("-m", "runtime.memory_mb"),
    ("--huge-dir", "runtime.hugepage_dir"),
    ("-a", "port.pci"),
    ("--allow", "port.pci"),
    ("--no-pci", "port.pci"),
    ("--vdev", "port.vdev"),
    (
        "--telemetry",
        "nothing: stats are served by management.address",
    ),
    (
        "--no-telemetry",
        "nothing: stats are served by management.address",
    ),
];

/// "DDDD:BB:DD.F" or "BB:DD.F", hex digits (device < 0x20, function < 8).
pub fn is_pci_address(s: &str) -> bool {
    let hex = |p: &str, n: usize| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit());
    let parts: Vec<&str> = s.split(':').collect();
    let (bus, devfn) = match parts.as_slice() {
        [dom, bus, devfn] if hex(dom, 4) => (*bus, *devfn),
        [bus, devfn] => (*bus, *devfn),
        _ => return false,
    };
    let Some((dev, func)) = devfn.split_once('.') else {
        return false;
    };
    hex(bus, 2)
        && hex(dev, 2)
        && u8::from_str_radix(dev, 16).is_ok_and(|d| d < 0x20)
        && func.len() == 1
        && func.parse::<u8>().is_ok_and(|f| f < 8)
}

impl Config {
    /// The limits above, after the cross-checks of `validate`.
    pub(super) fn validate_limits(&self, text: &str) -> Result<(), ConfigError> {
        let rt = &self.runtime;
        let rt_at = |key: &str| Place::new("runtime", 0).line(text, key);
        if rt.main_lcore >= MAX_LCORE {
            return Err(invalid(rt_at("main_lcore"), "runtime.main_lcore", format!("runtime.main_lcore = {}: DPDK lcore ids are 0..={} (RTE_MAX_LCORE {MAX_LCORE}); use a CPU of this machine (0..nproc)", rt.main_lcore, MAX_LCORE - 1)));
        }
        if let Some(l) = rt.worker_lcores.iter().find(|&&l| l >= MAX_LCORE) {
            return Err(invalid(rt_at("worker_lcores"), "runtime.worker_lcores", format!("runtime.worker_lcores: lcore {l} is beyond DPDK's lcore ids 0..={} (RTE_MAX_LCORE {MAX_LCORE}); number the lcores from 1 and map them with worker_cpus if the CPUs are higher", MAX_LCORE - 1)));
        }
        if rt.mbufs > MAX_MBUFS {
            return Err(invalid(rt_at("mbufs"), "runtime.mbufs", format!("runtime.mbufs = {}: at most {MAX_MBUFS} (each mbuf takes about 2.3 KiB of hugepage memory, per NUMA node in use); size it at 2 x the descriptor rings plus what the flows hold, e.g. 16383 or 65535", rt.mbufs)));
        }
        if rt.mbuf_cache > MAX_MBUF_CACHE {
            return Err(invalid(rt_at("mbuf_cache"), "runtime.mbuf_cache", format!("runtime.mbuf_cache = {}: DPDK takes at most {MAX_MBUF_CACHE} (RTE_MEMPOOL_CACHE_MAX_SIZE); use 256", rt.mbuf_cache)));
        }
        if u64::from(rt.mbuf_cache) * 3 / 2 > u64::from(rt.mbufs) {
            return Err(invalid(rt_at("mbuf_cache"), "runtime.mbuf_cache", format!("runtime.mbuf_cache = {}: DPDK refuses a cache larger than mbufs / 1.5 ({}): lower mbuf_cache or raise mbufs", rt.mbuf_cache, rt.mbufs * 2 / 3)));
        }
        self.validate_eal_args(rt_at("eal_args"))?;
        self.validate_access_log(text)?;
        for (i, p) in self.ports.iter().enumerate() {
            let at = |key: &str| Place::new("port", i).line(text, key);
            if let Some(pci) = p.pci.as_deref().filter(|a| !is_pci_address(a)) {
                return Err(invalid(at("pci"), "port.pci", format!("port '{}': pci = \"{pci}\" is not a PCI address: use DDDD:BB:DD.F or BB:DD.F in hex, e.g. \"0000:03:00.0\" (see `dpdk-devbind.py --status`)", p.name)));
            }
            for (key, n) in [
                ("rx_descriptors", p.rx_descriptors),
                ("tx_descriptors", p.tx_descriptors),
            ] {
                if n == 0 || n > MAX_DESCRIPTORS {
                    return Err(invalid(at(key), &format!("port.{key}"), format!("port '{}': {key} = {n}: must be 1..={MAX_DESCRIPTORS} (0 would let the device pick a size the mbuf pool was not sized for); 1024 suits most NICs", p.name)));
                }
            }
            if let Some(mtu) = p.mtu.filter(|m| !(MIN_MTU..=MAX_MTU).contains(m)) {
                return Err(invalid(at("mtu"), "port.mtu", format!("port '{}': mtu = {mtu}: must be {MIN_MTU}..={MAX_MTU} (IPv4 hosts must take 576-byte datagrams; a frame must fit one mbuf, jumbo frames are not supported); remove it for the device default (1500)", p.name)));
            }
            let (addr, len) = p.cidr();
            if let Some(gw) = p.gateway {
                if gw == addr || !in_network(gw, addr, len) {
                    let what = if gw == addr {
                        "is the port's own address"
                    } else {
                        "is not on the port's link"
                    };
                    return Err(invalid(at("gateway"), "port.gateway", format!("port '{}': gateway {gw} {what} ({}): give the next hop's address inside {}/{len}, or widen the prefix", p.name, p.address4(), mask(addr, len))));
                }
            }
            for o in &self.ports[..i] {
                let (oaddr, olen) = o.cidr();
                let common = len.min(olen);
                if in_network(addr, oaddr, common) {
                    return Err(invalid(at("address"), "port.address", format!("port '{}': address {} is in the same subnet as port '{}' ({}): a destination there would have two ports; give each port its own subnet", p.name, p.address4(), o.name, o.address4())));
                }
            }
        }
        for (i, l) in self.listeners.iter().enumerate() {
            let at = |key: &str| Place::new("listener", i).line(text, key);
            let on = format!("listener on port '{}' tcp_port {}", l.port, l.tcp_port);
            if l.tcp_port == 0 {
                return Err(invalid(
                    at("tcp_port"),
                    "listener.tcp_port",
                    format!("{on}: tcp_port must be 1..=65535 (0 is no port to listen on)"),
                ));
            }
            if l.mode.base() != ListenerMode::Tcp && l.header_timeout_ms == 0 {
                return Err(invalid(at("header_timeout_ms"), "listener.header_timeout_ms", format!("{on}: header_timeout_ms must be > 0: 0 turns the slowloris guard off (a client could hold a connection forever sending half a request head); the default is 10000")));
            }
            if !l.routes.is_empty() && l.mode.base() != ListenerMode::Http {
                return Err(invalid(Place::new("listener", i).sub("route", 0).line(text, "\0"), "listener.route", format!("{on}: [[listener.route]] only applies to mode = \"http\" (a {} listener never reads a Host or path): remove the routes, or use mode = \"http\"", mode_name(l.mode))));
            }
            if l.mode == ListenerMode::Static && l.upstream.is_some() {
                return Err(invalid(at("upstream"), "listener.upstream", format!("{on}: upstream does nothing on a static listener (it answers every request itself): remove it, or use mode = \"http\" or \"tcp\"")));
            }
            if let (ListenerMode::Static, Some(s)) = (l.mode, &l.static_response) {
                let sat = Place::new("listener", i)
                    .sub("static", 0)
                    .line(text, "status");
                if !(200..=599).contains(&s.status) {
                    return Err(invalid(sat, "listener.static.status", format!("{on}: static status = {}: must be 200..=599 (HTTP codes are 100..=599, and 1xx are interim responses: a client waits for a final one that never comes)", s.status)));
                }
                if matches!(s.status, 204 | 304) && !s.body.is_empty() {
                    return Err(invalid(sat, "listener.static.status", format!("{on}: static status = {} must not carry a body (RFC 9110; clients would read it as the start of the next response): remove body, or use 200", s.status)));
                }
            }
        }
        Ok(())
    }

    /// `runtime.eal_args`: known EAL options only, and none zproxy sets itself.
    fn validate_access_log(&self, text: &str) -> Result<(), ConfigError> {
        let a = &self.access_log;
        let at = |key: &str| Place::new("access_log", 0).line(text, key);
        if a.ring_entries == 0 || a.ring_entries > MAX_ACCESS_LOG_RING {
            return Err(invalid(at("ring_entries"), "access_log.ring_entries", format!("access_log.ring_entries = {}: must be 1..={MAX_ACCESS_LOG_RING} (lines per worker waiting for the writer); 4096 suits most loads", a.ring_entries)));
        }
        if a.sample == 0 || a.sample > MAX_ACCESS_LOG_SAMPLE {
            return Err(invalid(at("sample"), "access_log.sample", format!("access_log.sample = {}: must be 1..={MAX_ACCESS_LOG_SAMPLE} (log 1 exchange in N; 1 logs all)", a.sample)));
        }
        if a.path.contains('\0') || (a.path.trim() != a.path) {
            return Err(invalid(at("path"), "access_log.path", format!("access_log.path = {:?}: no NUL bytes or surrounding spaces: use \"\" (off), \"stdout\" or a file path", a.path)));
        }
        Ok(())
    }

    fn validate_eal_args(&self, line: Option<usize>) -> Result<(), ConfigError> {
        let mut value_allowed = false;
        for arg in &self.runtime.eal_args {
            if !arg.starts_with('-') {
                if value_allowed {
                    value_allowed = false;
                    continue;
                }
                return Err(invalid(line, "runtime.eal_args", format!("runtime.eal_args: \"{arg}\" is not an EAL option (options start with '-'; give a value right after its option or as --option=value)")));
            }
            let name = arg.split_once('=').map_or(arg.as_str(), |(n, _)| n);
            if let Some((_, key)) = OWN_EAL_FLAGS.iter().find(|(f, _)| *f == name) {
                return Err(invalid(
                    line,
                    "runtime.eal_args",
                    format!(
                        "runtime.eal_args: {name} is set by zproxy itself (from {key}): remove it"
                    ),
                ));
            }
            if !EAL_FLAGS.contains(&name) {
                return Err(invalid(
                    line,
                    "runtime.eal_args",
                    format!(
                        "runtime.eal_args: unknown EAL option {name}: allowed are {}",
                        EAL_FLAGS.join(" ")
                    ),
                ));
            }
            value_allowed = !arg.contains('=');
        }
        Ok(())
    }
}

fn mode_name(m: ListenerMode) -> &'static str {
    match m {
        ListenerMode::Static => "static",
        ListenerMode::Tcp => "tcp",
        ListenerMode::Http => "http",
        ListenerMode::Https => "https",
        ListenerMode::Tls => "tls",
    }
}

/// The network of `addr/len`.
fn mask(addr: std::net::Ipv4Addr, len: u8) -> std::net::Ipv4Addr {
    let m = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    (u32::from(addr) & m).into()
}
