//! `zproxy-world`: a load generator and an origin on DPDK + smoltcp (the
//! project's own `net` stack), in one process on one core, over two ports
//! such as `net_memif` pairs: `client → ZProxy → origin` with no kernel on
//! the path, or the generator straight to the origin for the world's own
//! capacity. Reports in `zproxy-bench`'s shape (`bench/report.py` reads it).
//!
//! - [`http`]: pre-built requests and heads, pattern bodies, readers.
//! - [`client`]: the generator's side of a connection.
//! - [`origin`]: the origin's side of a connection.
//! - [`world`]: the poll loop over the stack.
//! - [`setup`]: EAL, pool, ports and stack.
//! - [`args`]: the command line.

pub mod args;
pub mod client;
pub mod http;
pub mod origin;
pub mod setup;
pub mod world;

#[cfg(test)]
mod loopback_tests;
