//! The per-core network stack: smoltcp over DPDK mbufs, with one socket set
//! per TCP flow found through a hash table, so per-packet cost does not grow
//! with the number of open connections.
//!
//! - [`arena`]: socket buffer memory on the worker's NUMA node.
//! - [`device`]: smoltcp `phy::Device` over mbufs, with batched TX.
//! - [`flow`]: 4-tuple keys, the flow table and compact TIME-WAIT state.
//! - [`rss`]: Toeplitz hashing and which worker owns a flow.
//! - [`segment`]: TCP segments the worker reads and writes outside smoltcp.
//! - [`syncookie`]: stateless SYN-ACKs under a SYN flood.
//! - [`timers`]: an indexed heap of per-flow deadlines (`poll_at`).
//! - [`worker`]: the polling loop of one core.

pub mod arena;
pub mod counters;
pub mod device;
pub mod flow;
pub mod rss;
pub mod segment;
pub mod syncookie;
pub mod timers;
pub mod worker;
