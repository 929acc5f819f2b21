//! The safe DPDK layer: the only code in `zproxy` that calls `zproxy_ffi`.
//!
//! - [`Eal`] owns the Environment Abstraction Layer (init once, cleanup on drop).
//! - [`Mempool`] / [`Mbuf`] own packet buffers from hugepage-backed pools.
//! - [`Port`] configures an ethdev (PCI or virtual device) and bursts frames.
//! - [`lcore`] launches worker closures on EAL lcores.

mod eal;
mod error;
pub mod lcore;
mod mbuf;
mod mempool;
mod offloads;
mod port;

pub use eal::Eal;
pub use error::{DpdkError, Errno, Result};
pub use mbuf::{rx_checksum_bad, Mbuf, MbufBurst};
pub use mempool::Mempool;
pub use port::{
    LinkStatus, Port, PortConfig, PortId, PortQueue, PortStats, QueueId, QueueStats,
    QUEUE_STATS_MAX,
};

/// Default mbuf data room (`RTE_MBUF_DEFAULT_BUF_SIZE`): a full
/// 1500-byte-MTU frame plus headroom.
pub const MBUF_DEFAULT_BUF_SIZE: u16 = zproxy_ffi::RTE_MBUF_DEFAULT_BUF_SIZE as u16;
const _: () = assert!(zproxy_ffi::RTE_MBUF_DEFAULT_BUF_SIZE <= u16::MAX as u32);

/// Headroom DPDK keeps before a packet's data (`RTE_PKTMBUF_HEADROOM`).
pub const PKTMBUF_HEADROOM: u16 = zproxy_ffi::RTE_PKTMBUF_HEADROOM as u16;

/// Lcore ids are below this (`RTE_MAX_LCORE`).
pub const MAX_LCORE: u32 = zproxy_ffi::RTE_MAX_LCORE;

/// The standard Ethernet MTU (`RTE_ETHER_MTU`, 1500 bytes of IP).
pub const ETHER_MTU: u16 = zproxy_ffi::RTE_ETHER_MTU as u16;

/// Cycles of the CPU's time stamp counter (for busy-fraction accounting).
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: reads the TSC; no memory is touched.
    unsafe { zproxy_ffi::rte_rdtsc() }
}

/// TSC frequency measured by EAL (valid after [`Eal::init`]).
pub fn tsc_hz() -> u64 {
    // SAFETY: plain getter of a value EAL computed at init.
    unsafe { zproxy_ffi::rte_get_tsc_hz() }
}
