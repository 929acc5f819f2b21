//! The Linux capabilities `run` needs for the configured ports. Checked
//! before any device is touched, so that zproxy can run as an ordinary user
//! holding just these (systemd `AmbientCapabilities=`, `setpriv`, `setcap`)
//! instead of as root.
//!
//! Found by running the lab as `nobody` with one capability less at a time
//! (INSTALL.md, "Running as a service"); the PCI drivers' needs follow
//! DPDK's guides and were not testable here.

use std::fmt;
use std::path::Path;

use caps::{CapSet, Capability};

use crate::config::Config;
use crate::error::RunError;

/// One capability and why a port needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub cap: Capability,
    pub why: String,
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.cap, self.why)
    }
}

/// What the ports of `cfg` need, in the order first needed, each
/// capability once. `sys` is the sysfs root (a PCI port's needs depend on
/// the driver it is bound to); `memlock_unlimited` says whether
/// RLIMIT_MEMLOCK is infinite, which makes CAP_IPC_LOCK unnecessary.
pub fn needed(cfg: &Config, sys: &Path, memlock_unlimited: bool) -> Vec<Need> {
    use Capability::*;
    let mut out: Vec<Need> = Vec::new();
    let mut add = |cap, port: &str, why: &str| {
        if !out.iter().any(|n| n.cap == cap) {
            out.push(Need {
                cap,
                why: format!("port '{port}': {why}"),
            });
        }
    };
    let lock = !memlock_unlimited;
    for p in &cfg.ports {
        let name = p.name.as_str();
        if let Some(vdev) = &p.vdev {
            if vdev.starts_with("net_af_packet") {
                add(CAP_NET_RAW, name, "net_af_packet opens a packet socket");
                add(CAP_NET_ADMIN, name, "net_af_packet sets promiscuous mode");
            } else if vdev.starts_with("net_af_xdp") {
                add(CAP_NET_RAW, name, "net_af_xdp opens an XDP socket");
                add(CAP_NET_ADMIN, name, "net_af_xdp attaches an XDP program");
                add(CAP_SYS_ADMIN, name, "libxdp looks up loaded BPF programs");
                if lock {
                    add(CAP_IPC_LOCK, name, "net_af_xdp locks its UMEM in memory");
                }
            }
        }
        if p.exception.is_some() {
            add(
                CAP_NET_ADMIN,
                name,
                "the exception path makes a kernel interface and gives it the port's address",
            );
        }
        if let Some(pci) = &p.pci {
            let driver = std::fs::read_link(sys.join("bus/pci/devices").join(pci).join("driver"))
                .ok()
                .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
                .unwrap_or_default();
            match driver.as_str() {
                "mlx5_core" => {
                    add(CAP_NET_RAW, name, "mlx5 opens raw verbs queues");
                    add(CAP_NET_ADMIN, name, "mlx5 configures its kernel netdev");
                    add(CAP_IPC_LOCK, name, "mlx5 pins DMA memory");
                }
                "vfio-pci" => {
                    if lock {
                        add(CAP_IPC_LOCK, name, "vfio pins DMA memory");
                    }
                }
                // uio drivers and anything unknown: physical addresses
                // (pagemap) and raw device access, i.e. nearly root.
                _ => {
                    add(CAP_IPC_LOCK, name, "DMA memory is pinned");
                    add(
                        CAP_SYS_ADMIN,
                        name,
                        "physical addresses from /proc/self/pagemap",
                    );
                    add(
                        CAP_SYS_RAWIO,
                        name,
                        "raw access to the device (not vfio-pci)",
                    );
                }
            }
        }
    }
    out
}

/// Refuses to start, naming each missing capability and why, when this
/// process's effective set lacks one that the ports need.
pub fn check(cfg: &Config) -> Result<(), RunError> {
    let needs = needed(cfg, Path::new("/sys"), memlock_unlimited());
    let lacking = missing(needs).map_err(RunError::Capabilities)?;
    if lacking.is_empty() {
        return Ok(());
    }
    let list = |f: &dyn Fn(&Need) -> String, sep: &str| {
        lacking.iter().map(f).collect::<Vec<_>>().join(sep)
    };
    Err(RunError::MissingCapabilities {
        missing: list(&|n| n.to_string(), ", "),
        ambient: list(&|n| n.cap.to_string(), " "),
        short: short_names(&lacking).replace(',', ",+"),
    })
}

/// Whether this network namespace has the interface. Asks the kernel, not
/// /sys/class/net: a process that joined a namespace (systemd's
/// `NetworkNamespacePath=`) still sees the sysfs of the one it came from.
pub fn interface_exists(iface: &str) -> bool {
    let Ok(name) = std::ffi::CString::new(iface) else {
        return false;
    };
    // SAFETY: `name` is a NUL-terminated string that outlives the call.
    unsafe { libc::if_nametoindex(name.as_ptr()) != 0 }
}

/// Whether RLIMIT_MEMLOCK of this process is infinite.
pub fn memlock_unlimited() -> bool {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct we own.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) };
    rc == 0 && lim.rlim_cur == libc::RLIM_INFINITY
}

/// The needs this process's effective set lacks.
pub fn missing(needs: Vec<Need>) -> Result<Vec<Need>, caps::errors::CapsError> {
    let have = caps::read(None, CapSet::Effective)?;
    Ok(needs
        .into_iter()
        .filter(|n| !have.contains(&n.cap))
        .collect())
}

/// "net_raw,net_admin": the list `setpriv --ambient-caps` and friends take.
pub fn short_names(needs: &[Need]) -> String {
    needs
        .iter()
        .map(|n| {
            n.cap
                .to_string()
                .trim_start_matches("CAP_")
                .to_ascii_lowercase()
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(ports: &str) -> Config {
        let text = format!(
            "{ports}\n[[listener]]\nport = \"a\"\ntcp_port = 80\nmode = \"static\"\n[listener.static]\nbody = \"x\"\n"
        );
        Config::parse(&text).expect("test config parses")
    }

    fn caps_of(n: &[Need]) -> Vec<Capability> {
        n.iter().map(|n| n.cap).collect()
    }

    #[test]
    fn af_packet_needs_net_raw_and_net_admin_only() {
        let c = cfg("[[port]]\nname = \"a\"\nvdev = \"net_af_packet0,iface=x\"\naddress = \"10.0.0.1/24\"\n[[port]]\nname = \"b\"\nvdev = \"net_af_packet1,iface=y\"\naddress = \"10.0.1.1/24\"");
        let n = needed(&c, Path::new("/nonexistent"), false);
        use Capability::*;
        assert_eq!(caps_of(&n), [CAP_NET_RAW, CAP_NET_ADMIN]);
        assert!(n[0].why.contains("port 'a'"), "{}", n[0]);
        assert_eq!(short_names(&n), "net_raw,net_admin");
    }

    #[test]
    fn af_xdp_needs_ipc_lock_only_under_a_memlock_limit() {
        let c = cfg(
            "[[port]]\nname = \"a\"\nvdev = \"net_af_xdp0,iface=x\"\naddress = \"10.0.0.1/24\"",
        );
        use Capability::*;
        let limited = needed(&c, Path::new("/nonexistent"), false);
        assert_eq!(
            caps_of(&limited),
            [CAP_NET_RAW, CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_IPC_LOCK]
        );
        let unlimited = needed(&c, Path::new("/nonexistent"), true);
        assert_eq!(
            caps_of(&unlimited),
            [CAP_NET_RAW, CAP_NET_ADMIN, CAP_SYS_ADMIN]
        );
    }

    #[test]
    fn pci_needs_follow_the_bound_driver() {
        use Capability::*;
        let root = std::env::temp_dir().join(format!("zproxy-privs-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let dev = |pci: &str, driver: &str| {
            let d = root.join("bus/pci/devices").join(pci);
            std::fs::create_dir_all(&d).unwrap();
            let target = root.join("bus/pci/drivers").join(driver);
            std::fs::create_dir_all(&target).unwrap();
            std::os::unix::fs::symlink(&target, d.join("driver")).unwrap();
        };
        dev("0000:03:00.0", "vfio-pci");
        dev("0000:04:00.0", "mlx5_core");
        let port = |pci: &str| {
            cfg(&format!(
                "[[port]]\nname = \"a\"\npci = \"{pci}\"\naddress = \"10.0.0.1/24\""
            ))
        };
        assert_eq!(
            caps_of(&needed(&port("0000:03:00.0"), &root, false)),
            [CAP_IPC_LOCK]
        );
        assert!(needed(&port("0000:03:00.0"), &root, true).is_empty());
        assert_eq!(
            caps_of(&needed(&port("0000:04:00.0"), &root, true)),
            [CAP_NET_RAW, CAP_NET_ADMIN, CAP_IPC_LOCK]
        );
        // Not bound to a driver we know: ask for what uio would need.
        assert_eq!(
            caps_of(&needed(&port("0000:05:00.0"), &root, true)),
            [CAP_IPC_LOCK, CAP_SYS_ADMIN, CAP_SYS_RAWIO]
        );
        std::fs::remove_dir_all(root).unwrap();
    }
}
