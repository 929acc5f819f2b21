//! The appliance's start-up and run-time errors, and printing an error
//! with its causes.

use std::error::Error;
use std::fmt;

use crate::dpdk::DpdkError;

/// Shows an error followed by its chain of causes: `{}` on one line
/// ("what: cause: cause", for logs), `{:#}` one cause per line
/// ("what\n  caused by: cause", for the terminal).
pub struct Chain<'a>(pub &'a dyn Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut cause = self.0.source();
        while let Some(c) = cause {
            if f.alternate() {
                write!(f, "\n  caused by: {c}")?;
            } else {
                write!(f, ": {c}")?;
            }
            cause = c.source();
        }
        Ok(())
    }
}

/// A start-up or run-time failure: what went wrong and what to do about it,
/// with the underlying error (DPDK's, the kernel's) as its cause.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(
        "zproxy lacks the capabilities its ports need: {missing}; run it as root, or grant \
         them: systemd `AmbientCapabilities={ambient}` (see packaging/zproxy.service), \
         by hand `setpriv --inh-caps=+{short} --ambient-caps=+{short} ...` \
         (INSTALL.md, \"Running as a service\")"
    )]
    MissingCapabilities {
        /// "CAP_X (port 'p': why), ...".
        missing: String,
        /// "CAP_X CAP_Y".
        ambient: String,
        /// "x,+y" (setpriv's spelling after the first '+').
        short: String,
    },
    #[error("cannot read this process's capabilities (/proc/self/status)")]
    Capabilities(#[source] caps::errors::CapsError),
    #[error(
        "no free hugepages: reserve and mount some first with `hugepages/setup.sh` \
         (check with `hugepages/setup.sh --check`)"
    )]
    NoHugepages {
        /// Why /proc/meminfo could not be read, when that is the reason.
        #[source]
        cause: Option<std::io::Error>,
    },
    #[error(
        "port '{port}': PCI device {pci} does not exist; list NICs with `dpdk-devbind.py --status`"
    )]
    NoPciDevice { port: String, pci: String },
    #[error(
        "port '{port}': interface '{iface}' (from vdev \"{vdev}\") does not exist in this network \
         namespace; check `ip link` (in the lab: run zproxy with `bench/lab.sh exec proxy ...`)"
    )]
    NoInterface {
        port: String,
        iface: String,
        vdev: String,
    },
    #[error("worker binding: {0}")]
    Binding(String),
    #[error(
        "access_log.path = \"{path}\": cannot open it for appending (check the directory \
         and permissions, or set path = \"stdout\" or \"\")"
    )]
    AccessLog {
        path: String,
        #[source]
        cause: std::io::Error,
    },
    #[error("installing the handler for signal {signal}")]
    Signal {
        signal: i32,
        #[source]
        cause: std::io::Error,
    },
    #[error(
        "management.address = \"{address}\": cannot listen there (is another zproxy running? \
         change management.address, or set it to \"\" to turn the endpoint off)"
    )]
    Management {
        address: String,
        #[source]
        cause: std::io::Error,
    },
    #[error(
        "starting DPDK (EAL) failed: see the EAL messages above; check hugepages \
         (`hugepages/setup.sh --check`) and the ports' vdev/pci in the config"
    )]
    Eal(#[source] DpdkError),
    #[error(
        "no mbuf pool for the workers on NUMA node {node}: reserve more hugepages on that node \
         or lower runtime.mbufs"
    )]
    Pool {
        node: i32,
        #[source]
        cause: DpdkError,
    },
    #[error("port '{port}' ({device}) could not be brought up: check the device and its settings in the config")]
    Port {
        port: String,
        device: String,
        #[source]
        cause: DpdkError,
    },
    #[error("port '{port}': exception interface {iface}: {message}")]
    Exception {
        port: String,
        iface: String,
        message: String,
    },
    #[error(
        "cannot launch worker {index} on lcore {lcore}: is the lcore listed in --lcores and idle?"
    )]
    Launch {
        index: usize,
        lcore: u32,
        #[source]
        cause: DpdkError,
    },
    #[error(
        "cannot read random bytes from the kernel (getrandom) for the workers' secret keys; \
         zproxy needs Linux >= 3.17 and getrandom(2) allowed by any seccomp filter"
    )]
    Entropy(#[source] crate::secrets::EntropyError),
    #[error("the worker(s) on lcore(s) {lcores:?} failed (see the log above)")]
    WorkersFailed { lcores: Vec<u32> },
    #[error("{leaked} mbufs leaked: this is a bug, please report it")]
    MbufLeak { leaked: u32 },
}

#[cfg(test)]
mod tests {
    use super::Chain;

    #[derive(Debug, thiserror::Error)]
    #[error("starting up")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_run_error_shows_what_to_do_then_dpdks_reason() {
        use crate::dpdk::{DpdkError, Errno};
        let e = super::RunError::Pool {
            node: 1,
            cause: DpdkError::PoolCreate {
                name: "zp_mbufs_1".into(),
                size: 16383,
                data_room: 2176,
                socket: 1,
                cause: Errno {
                    errno: 12,
                    text: "Cannot allocate memory".into(),
                },
            },
        };
        let shown = format!("{:#}", Chain(&e));
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 3, "{shown}");
        assert!(lines[0]
            .starts_with("no mbuf pool for the workers on NUMA node 1: reserve more hugepages"));
        assert!(lines[1].starts_with(
            "  caused by: creating mbuf pool 'zp_mbufs_1' (16383 mbufs of 2176 B on socket 1)"
        ));
        assert_eq!(lines[2], "  caused by: Cannot allocate memory (errno 12)");
        assert_eq!(e.to_string(), lines[0]);
    }

    #[test]
    fn chain_lists_every_cause() {
        let e = Outer(std::io::Error::other("disk on fire"));
        assert_eq!(Chain(&e).to_string(), "starting up: disk on fire");
        assert_eq!(
            format!("{:#}", Chain(&e)),
            "starting up\n  caused by: disk on fire"
        );
    }
}
