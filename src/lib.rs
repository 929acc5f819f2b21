//! ZProxy: a kernel-bypass TCP/HTTP proxy.
//!
//! Layers, bottom up:
//! - [`dpdk`]: the safe layer over the `zproxy-ffi` bindings (EAL, mempools,
//!   mbufs, ports, lcores). The only module that calls DPDK.
//! - [`net`]: per-core smoltcp stacks over mbufs with a per-flow demux.
//! - [`app`]: what runs on accepted connections.
//! - [`client`]: `zproxy stats` and `zproxy reload`, via the management endpoint.
//! - [`config`]: the static config file.
//! - [`access_writer`], [`access_format`]: the access log's writer thread
//!   and its line formats.
//! - [`announce`]: the VIP announced through BIRD while healthy (control thread).
//! - [`runtime`]: start-up checks, bringing ports up, launching workers, shutdown.
//! - [`error`]: start-up and run-time errors ([`error::RunError`]), and
//!   printing an error with its causes ([`error::Chain`]).
//! - [`privileges`]: the Linux capabilities `run` needs, checked at start.
//! - [`notify`]: readiness for systemd (`Type=notify`).
//! - [`reload`]: what SIGHUP applies and what needs a restart.
//! - [`secrets`]: the hash keys and ISN seed, from the OS RNG.

pub mod access_format;
pub mod access_writer;
pub mod announce;
pub mod app;
pub mod capture;
pub mod client;
pub mod config;
pub mod dpdk;
pub mod error;
pub mod exception;
pub mod mgmt;
pub mod net;
pub mod notify;
pub mod plan;
pub mod privileges;
pub mod reload;
pub mod runtime;
pub mod secrets;
pub mod topology;
