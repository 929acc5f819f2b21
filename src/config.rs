//! The static config file (TOML): parsed and validated once, before any
//! device is touched. Unknown keys are errors; errors name the key and line.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub runtime: Runtime,
    #[serde(rename = "port")]
    pub ports: Vec<PortSection>,
    #[serde(rename = "listener", default)]
    pub listeners: Vec<Listener>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Runtime {
    /// The lcore that runs the control thread (never polls a queue).
    pub main_lcore: u32,
    /// Worker lcores, one per polled queue set.
    pub worker_lcores: Vec<u32>,
    /// hugetlbfs mount DPDK takes memory from.
    pub hugepage_dir: Option<PathBuf>,
    /// Run without hugepages (tests only: slower, not for production).
    pub no_huge: bool,
    /// Memory (MB) to take when `no_huge` is set.
    pub memory_mb: u32,
    /// Mbufs per pool (one pool per NUMA node in use).
    pub mbufs: u32,
    /// Per-lcore mbuf cache size.
    pub mbuf_cache: u32,
    /// Most TCP flows one worker holds at once; further SYNs are refused with a RST.
    pub max_flows: u32,
    /// Bytes of receive / send buffer per TCP socket.
    pub socket_rx_buffer: u32,
    pub socket_tx_buffer: u32,
    /// Longest a partly filled TX burst waits before it is flushed.
    pub tx_drain_us: u32,
    /// Extra EAL arguments, appended as given (e.g. ["--log-level=pmd.net.af_xdp:debug"]).
    pub eal_args: Vec<String>,
}

impl Default for Runtime {
    fn default() -> Self {
        Self {
            main_lcore: 0,
            worker_lcores: vec![1],
            hugepage_dir: None,
            no_huge: false,
            memory_mb: 512,
            mbufs: 16383,
            mbuf_cache: 256,
            max_flows: 16384,
            socket_rx_buffer: 4096,
            socket_tx_buffer: 4096,
            tx_drain_us: 100,
            eal_args: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSection {
    /// Name other sections refer to (e.g. "client", "upstream").
    pub name: String,
    /// A DPDK virtual device string, e.g. "net_af_xdp0,iface=eth1".
    pub vdev: Option<String>,
    /// A PCI address of a NIC bound to vfio-pci, e.g. "0000:03:00.0".
    pub pci: Option<String>,
    /// Our address on this link, "A.B.C.D/prefix".
    pub address: String,
    /// Next hop for destinations off the link.
    pub gateway: Option<Ipv4Addr>,
    #[serde(default = "one")]
    pub queues: u16,
    #[serde(default = "descriptors")]
    pub rx_descriptors: u16,
    #[serde(default = "descriptors")]
    pub tx_descriptors: u16,
    /// IP MTU; the device default when absent.
    pub mtu: Option<u16>,
}

fn one() -> u16 {
    1
}
fn descriptors() -> u16 {
    1024
}

impl PortSection {
    /// The device name DPDK knows the port by.
    pub fn device(&self) -> &str {
        self.vdev.as_deref().or(self.pci.as_deref()).unwrap_or("")
    }

    /// Address and prefix length (validated at load).
    pub fn cidr(&self) -> (Ipv4Addr, u8) {
        parse_cidr(&self.address).expect("validated at load")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Which port's address to listen on.
    pub port: String,
    /// TCP port.
    pub tcp_port: u16,
    pub mode: ListenerMode,
    /// For `mode = "static"`: the fixed response.
    #[serde(rename = "static")]
    pub static_response: Option<StaticResponse>,
    /// Close connections idle this long (ms).
    #[serde(default = "idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

fn idle_timeout_ms() -> u64 {
    60_000
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerMode {
    /// Answer every request with a fixed HTTP response (health endpoints, tests).
    Static,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticResponse {
    #[serde(default = "ok_status")]
    pub status: u16,
    #[serde(default)]
    pub body: String,
    #[serde(default = "text_plain")]
    pub content_type: String,
}

fn ok_status() -> u16 {
    200
}
fn text_plain() -> String {
    "text/plain".into()
}

/// A config problem, with the file, the line where known, and what to do.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for ConfigError {}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError(format!("{}: cannot read config file: {e}", path.display()))
        })?;
        Self::parse(&text).map_err(|e| ConfigError(format!("{}: {}", path.display(), e.0)))
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| format!("line {}: ", text[..s.start].matches('\n').count() + 1))
                .unwrap_or_default();
            ConfigError(format!("{line}{}", e.message()))
        })?;
        cfg.validate(text)?;
        Ok(cfg)
    }

    /// Cross-checks that serde cannot express.
    fn validate(&self, text: &str) -> Result<(), ConfigError> {
        let at = |needle: &str| -> String {
            text.lines()
                .position(|l| l.contains(needle))
                .map(|n| format!("line {}: ", n + 1))
                .unwrap_or_default()
        };
        let rt = &self.runtime;
        if rt.worker_lcores.is_empty() {
            return Err(ConfigError(format!(
                "{}runtime.worker_lcores is empty: list at least one core, e.g. [1]",
                at("worker_lcores")
            )));
        }
        if rt.worker_lcores.len() > 1 {
            return Err(ConfigError(format!(
                "{}runtime.worker_lcores: this version runs one worker; give exactly one core",
                at("worker_lcores")
            )));
        }
        if rt.worker_lcores.contains(&rt.main_lcore) {
            return Err(ConfigError(format!(
                "{}runtime.worker_lcores contains the main lcore {}: the control thread needs its own core",
                at("worker_lcores"),
                rt.main_lcore
            )));
        }
        if rt.max_flows == 0 || rt.max_flows > 4_000_000 {
            return Err(ConfigError(format!(
                "{}runtime.max_flows must be 1..=4000000",
                at("max_flows")
            )));
        }
        for (key, v) in [
            ("socket_rx_buffer", rt.socket_rx_buffer),
            ("socket_tx_buffer", rt.socket_tx_buffer),
        ] {
            if !(536..=16 << 20).contains(&v) {
                return Err(ConfigError(format!(
                    "{}runtime.{key} = {v}: must be 536..=16777216 bytes",
                    at(key)
                )));
            }
        }
        let min_mbufs = self
            .ports
            .iter()
            .map(|p| u32::from(p.rx_descriptors) + u32::from(p.tx_descriptors))
            .sum::<u32>()
            * 2;
        if rt.mbufs < min_mbufs {
            return Err(ConfigError(format!(
                "{}runtime.mbufs = {}: too small for the ports' descriptor rings; use at least {min_mbufs}",
                at("mbufs"),
                rt.mbufs
            )));
        }
        if self.ports.is_empty() {
            return Err(ConfigError(
                "no [[port]] section: configure at least one port".into(),
            ));
        }
        for (i, p) in self.ports.iter().enumerate() {
            let where_ = at(&format!("\"{}\"", p.name));
            match (&p.vdev, &p.pci) {
                (Some(_), Some(_)) => return Err(ConfigError(format!("{where_}port '{}': give either vdev or pci, not both", p.name))),
                (None, None) => return Err(ConfigError(format!("{where_}port '{}': give vdev (e.g. \"net_af_xdp0,iface=eth1\") or pci (e.g. \"0000:03:00.0\")", p.name))),
                _ => {}
            }
            if parse_cidr(&p.address).is_none() {
                return Err(ConfigError(format!(
                    "{}port '{}': address = \"{}\" is not A.B.C.D/prefix (e.g. \"10.0.0.2/24\")",
                    at(&p.address),
                    p.name,
                    p.address
                )));
            }
            if p.queues != 1 {
                return Err(ConfigError(format!(
                    "{where_}port '{}': queues = {}: this version polls one queue per port",
                    p.name, p.queues
                )));
            }
            if self.ports[..i].iter().any(|q| q.name == p.name) {
                return Err(ConfigError(format!(
                    "{where_}port name '{}' is used twice",
                    p.name
                )));
            }
        }
        for l in &self.listeners {
            if !self.ports.iter().any(|p| p.name == l.port) {
                let names: Vec<_> = self.ports.iter().map(|p| p.name.as_str()).collect();
                return Err(ConfigError(format!(
                    "{}listener on tcp_port {}: port = \"{}\" names no [[port]] (have: {})",
                    at(&format!("\"{}\"", l.port)),
                    l.tcp_port,
                    l.port,
                    names.join(", ")
                )));
            }
            if l.mode == ListenerMode::Static && l.static_response.is_none() {
                return Err(ConfigError(format!(
                    "{}listener on tcp_port {}: mode = \"static\" needs a [listener.static] table",
                    at("mode"),
                    l.tcp_port
                )));
            }
        }
        Ok(())
    }

    /// EAL arguments for this config; `file_prefix` keeps instances apart.
    pub fn eal_args(&self, file_prefix: &str) -> Vec<String> {
        let rt = &self.runtime;
        let mut lcores = vec![rt.main_lcore];
        lcores.extend(&rt.worker_lcores);
        let mut args = vec![
            "zproxy".to_owned(),
            "-l".into(),
            lcores
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
            "--main-lcore".into(),
            rt.main_lcore.to_string(),
            "--file-prefix".into(),
            file_prefix.into(),
            // Its socket would outlive us in the runtime dir; stats are served by zproxy.
            "--no-telemetry".into(),
        ];
        if rt.no_huge {
            // Anonymous memory: no files to leave behind (and --in-memory would clash).
            args.extend([
                "--no-huge".into(),
                "--no-shconf".into(),
                "-m".into(),
                rt.memory_mb.to_string(),
            ]);
        } else {
            // No shared files: nothing is left in the huge dir or /var/run/dpdk.
            args.push("--in-memory".into());
            if let Some(dir) = &rt.hugepage_dir {
                args.extend(["--huge-dir".into(), dir.display().to_string()]);
            }
        }
        if self.ports.iter().all(|p| p.pci.is_none()) {
            args.push("--no-pci".into());
        }
        for p in &self.ports {
            match (&p.vdev, &p.pci) {
                (Some(v), _) => args.extend(["--vdev".into(), v.clone()]),
                (_, Some(pci)) => args.extend(["-a".into(), pci.clone()]),
                _ => {}
            }
        }
        args.extend(rt.eal_args.iter().cloned());
        args
    }
}

/// "10.0.0.2/24" -> (10.0.0.2, 24).
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let len: u8 = len.parse().ok()?;
    (len <= 32).then_some((ip.parse().ok()?, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[runtime]
worker_lcores = [1]

[[port]]
name = "client"
vdev = "net_af_xdp0,iface=cli1"
address = "10.71.0.2/24"
gateway = "10.71.0.1"

[[listener]]
port = "client"
tcp_port = 80
mode = "static"
[listener.static]
body = "hi\n"
"#;

    fn err(text: &str) -> String {
        Config::parse(text).unwrap_err().0
    }

    #[test]
    fn good_config_parses_with_defaults() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.ports[0].cidr(), (Ipv4Addr::new(10, 71, 0, 2), 24));
        assert_eq!(c.listeners[0].static_response.as_ref().unwrap().status, 200);
        let args = c.eal_args("zp1");
        assert!(args.contains(&"--no-pci".to_owned()));
        assert!(args
            .windows(2)
            .any(|w| w == ["--vdev", "net_af_xdp0,iface=cli1"]));
        assert!(args.windows(2).any(|w| w == ["-l", "0,1"]));
    }

    #[test]
    fn bad_configs_name_key_and_line() {
        let cases: &[(&str, &str)] = &[
            (
                &GOOD.replace("tcp_port = 80", "tcp_port = 80\nbogus = 1"),
                "line 14: unknown field `bogus`",
            ),
            (
                &GOOD.replace("10.71.0.2/24", "10.71.0.2"),
                "line 8: port 'client': address = \"10.71.0.2\" is not A.B.C.D/prefix",
            ),
            (
                &GOOD.replace("port = \"client\"", "port = \"nope\""),
                "names no [[port]] (have: client)",
            ),
            (
                &GOOD.replace("worker_lcores = [1]", "worker_lcores = [0]"),
                "line 3: runtime.worker_lcores contains the main lcore 0",
            ),
            (
                &GOOD.replace("mode = \"static\"", "mode = \"udp\""),
                "line 14: unknown variant `udp`",
            ),
            (
                &GOOD.replace("vdev = ", "pci = \"0000:01:00.0\"\nvdev = "),
                "give either vdev or pci, not both",
            ),
            (
                &GOOD.replace("tcp_port = 80", "tcp_port = 99999"),
                "line 13:",
            ),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(got.contains(want), "want {want:?} in {got:?}");
        }
    }
}
