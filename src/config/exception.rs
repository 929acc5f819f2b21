//! `[port.exception]`: the kernel interface that takes the frames that are
//! not ZProxy's (see `crate::exception`), and the DPDK vdev that makes it.

use serde::Deserialize;

use super::validate::invalid;
use super::{ConfigError, PortSection};

/// Frames per second each worker may pass to the kernel, per class, by default.
const DEFAULT_RATE: u32 = 20_000;
/// Frames a worker may pass at once above the rate, by default.
const DEFAULT_BURST: u32 = 1_000;

/// Which DPDK driver makes the kernel interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExceptionKind {
    /// DPDK's TAP PMD (`net_tap`): needs only TUN/TAP in the kernel.
    Tap,
    /// virtio-user on the kernel's vhost-net (`/dev/vhost-net`): DPDK's
    /// recommended exception path since KNI's deprecation.
    VirtioUser,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exception {
    pub kind: ExceptionKind,
    /// The kernel interface's name (at most 15 bytes), e.g. "zp0".
    pub iface: String,
    /// Frames per second one worker passes to the kernel, per class
    /// (control: ARP, BGP, OSPF; other); more are dropped and counted.
    #[serde(default = "rate")]
    pub rate: u32,
    /// Frames one worker may pass at once above `rate`, per class.
    #[serde(default = "burst")]
    pub burst: u32,
}

fn rate() -> u32 {
    DEFAULT_RATE
}

fn burst() -> u32 {
    DEFAULT_BURST
}

impl Exception {
    /// The vdev string for the `index`th exception port, carrying `mac`.
    pub fn vdev(&self, index: usize, mac: [u8; 6]) -> String {
        let mac = mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        match self.kind {
            ExceptionKind::Tap => format!("net_tap{index},iface={},mac={mac}", self.iface),
            ExceptionKind::VirtioUser => format!(
                "virtio_user{index},path=/dev/vhost-net,iface={},mac={mac},queues=1",
                self.iface
            ),
        }
    }

    /// The name DPDK gives the vdev's port (the vdev string up to its first comma).
    pub fn device_name(&self, index: usize) -> String {
        let v = self.vdev(index, [0; 6]);
        v.split(',').next().unwrap_or_default().to_owned()
    }
}

/// Checks every port's `exception` table; `line` finds a port's line.
pub(super) fn validate(
    ports: &[PortSection],
    line: impl Fn(usize) -> Option<usize>,
) -> Result<(), ConfigError> {
    let mut names: Vec<&str> = Vec::new();
    for (i, p) in ports.iter().enumerate() {
        let Some(e) = &p.exception else { continue };
        let bad = |key: &str, msg: String| Err(invalid(line(i), key, msg));
        let iface = e.iface.as_str();
        if iface.is_empty()
            || iface.len() > 15
            || !iface
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return bad("port.exception.iface", format!("port '{}': exception.iface = \"{iface}\" is not an interface name: use 1 to 15 letters, digits, '-', '_' or '.' (e.g. \"zp0\")", p.name));
        }
        if names.contains(&iface) {
            return bad(
                "port.exception.iface",
                format!(
                    "port '{}': exception.iface = \"{iface}\" is used by another port: give each its own",
                    p.name
                ),
            );
        }
        names.push(iface);
        if e.rate == 0 {
            return bad("port.exception.rate", format!("port '{}': exception.rate = 0 would pass nothing to the kernel: use frames per second per worker (default {DEFAULT_RATE}), or remove [port.exception]", p.name));
        }
        if e.burst == 0 {
            return bad(
                "port.exception.burst",
                format!(
                    "port '{}': exception.burst must be at least 1 (default {DEFAULT_BURST})",
                    p.name
                ),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vdev_strings_carry_the_mac_and_the_name() {
        let mut e = Exception {
            kind: ExceptionKind::Tap,
            iface: "zp0".into(),
            rate: 1,
            burst: 1,
        };
        let mac = [0x02, 0, 0, 0, 0xab, 0x01];
        assert_eq!(e.vdev(0, mac), "net_tap0,iface=zp0,mac=02:00:00:00:ab:01");
        assert_eq!(e.device_name(3), "net_tap3");
        e.kind = ExceptionKind::VirtioUser;
        assert_eq!(
            e.vdev(1, mac),
            "virtio_user1,path=/dev/vhost-net,iface=zp0,mac=02:00:00:00:ab:01,queues=1"
        );
        assert_eq!(e.device_name(1), "virtio_user1");
    }
}
