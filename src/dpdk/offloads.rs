//! What a device offers to take off the worker (`rte_eth_dev_info`'s
//! rx/tx offload capabilities), named as DPDK names them, for the start-up
//! log: which checksum and segmentation work a PMD could do, and which of
//! it ZProxy uses (today: receive checksum verification only).

use std::ffi::CStr;

use zproxy_ffi as ffi;

/// A device's offload capabilities (`rx_offload_capa`, `tx_offload_capa`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads {
    pub rx: u64,
    pub tx: u64,
}

impl Offloads {
    /// The receive capabilities' names, comma-separated ("none" for none).
    pub fn rx_names(&self) -> String {
        names(self.rx, |bit| {
            // SAFETY: a pure lookup in DPDK's static name table; any bit is
            // accepted ("UNKNOWN" for one it does not know).
            unsafe { ffi::rte_eth_dev_rx_offload_name(bit) }
        })
    }

    /// The transmit capabilities' names, comma-separated ("none" for none).
    pub fn tx_names(&self) -> String {
        names(self.tx, |bit| {
            // SAFETY: as in `rx_names`, for the tx table.
            unsafe { ffi::rte_eth_dev_tx_offload_name(bit) }
        })
    }
}

fn names(capa: u64, name: impl Fn(u64) -> *const std::os::raw::c_char) -> String {
    let mut out = String::new();
    for i in 0..64 {
        let bit = 1u64 << i;
        if capa & bit == 0 {
            continue;
        }
        let p = name(bit);
        if !out.is_empty() {
            out.push(',');
        }
        if p.is_null() {
            out.push_str(&format!("bit{i}"));
        } else {
            // SAFETY: DPDK returns a static NUL-terminated string.
            out.push_str(&unsafe { CStr::from_ptr(p) }.to_string_lossy());
        }
    }
    if out.is_empty() {
        out.push_str("none");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_are_named_as_dpdk_names_them() {
        let o = Offloads {
            rx: (ffi::RTE_ETH_RX_OFFLOAD_IPV4_CKSUM | ffi::RTE_ETH_RX_OFFLOAD_TCP_CKSUM) as u64,
            tx: (ffi::RTE_ETH_TX_OFFLOAD_TCP_CKSUM | ffi::RTE_ETH_TX_OFFLOAD_TCP_TSO) as u64,
        };
        assert_eq!(o.rx_names(), "IPV4_CKSUM,TCP_CKSUM");
        assert_eq!(o.tx_names(), "TCP_CKSUM,TCP_TSO");
        assert_eq!(Offloads::default().rx_names(), "none");
        assert_eq!(Offloads::default().tx_names(), "none");
    }
}
