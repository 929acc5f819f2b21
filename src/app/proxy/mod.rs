//! The proxy: client connections relayed to upstream servers.
//!
//! - [`http`]: HTTP/1.1 framing and request validation.
//! - [`balance`]: picking a server of an upstream group.
//! - [`engine`]: one core's proxy: sessions, groups, pools, connects, probes.
//! - [`health`]: active health checks.
//! - [`ratelimit`]: HTTP request rate limits and the 429.
//! - [`proxy_protocol`]: PROXY protocol v1/v2 headers, read and written.
//! - [`session`]: one client connection's state machine over two sockets.
//! - [`tls`]: TLS for `https`/`tls` listeners and upstream groups.
//! - [`upgrade`]: which protocol upgrades (WebSocket) go upstream.

pub mod balance;
pub mod client_limits;
pub mod engine;
pub mod hash_key;
pub mod headers;
pub mod health;
pub mod http;
pub mod proxy_protocol;
pub mod ratelimit;
pub mod session;
pub mod tls;
pub mod upgrade;

#[cfg(test)]
mod headers_tests;
#[cfg(test)]
mod outcome_tests;
#[cfg(test)]
mod proxied_tests;
#[cfg(test)]
mod relay_tests;
#[cfg(test)]
mod retry_tests;
#[cfg(test)]
pub(crate) mod testnet;
#[cfg(test)]
mod upgrade_tests;
