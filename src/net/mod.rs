//! The per-core network stack: smoltcp over DPDK mbufs, with one socket set
//! per TCP flow found through a hash table, so per-packet cost does not grow
//! with the number of open connections. It knows no application: nothing
//! here imports the application layer.
//!
//! - [`arena`]: socket buffer memory on the worker's NUMA node.
//! - [`counters`]: per-core counters, published to the control thread.
//! - [`device`]: smoltcp `phy::Device` over mbufs, with batched TX.
//! - [`exception`]: frames that are the kernel's, on their way to the control core.
//! - [`flow`]: 4-tuple keys, the flow table and compact TIME-WAIT state.
//! - [`flow6`]: IPv6 flow keys and IPv6 flow ids.
//! - [`handoff`]: lock-free rings that carry frames to the core owning them.
//! - [`ipv6`]: a port's IPv6 addresses: NDP, DAD and ICMPv6 echo (no TCP yet).
//! - [`link`]: one port's interface, addresses, neighbours and own frames.
//! - [`rss`]: Toeplitz hashing and which core owns a flow.
//! - [`rss6`]: Toeplitz steering of TCP/IPv6 flows.
//! - [`segment`]: TCP segments the stack reads and writes outside smoltcp.
//! - [`source6`]: IPv6 clients' allow-list and per-source (/64) limits.
//! - [`stack`]: the stack itself: flows, demux, timers, events.
//! - [`syncookie`]: stateless SYN-ACKs under a SYN flood.
//! - [`timers`]: an indexed heap of per-flow deadlines (`poll_at`).

pub mod admission;
pub mod arena;
pub mod counters;
pub mod device;
pub mod exception;
pub mod flow;
pub mod flow6;
pub mod handoff;
pub mod ipv6;
pub mod link;
pub mod pmtu6;
pub mod ratelimit;
pub mod rss;
pub mod rss6;
pub mod segment;
pub mod source6;
pub mod stack;
pub mod syncookie;
pub mod timers;
