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
mod port;

pub use eal::Eal;
pub use error::{DpdkError, Result};
pub use mbuf::{rx_checksum_bad, Mbuf, MbufBurst};
pub use mempool::Mempool;
pub use port::{LinkStatus, Port, PortConfig, PortId, PortQueue, PortStats, QueueId};

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
