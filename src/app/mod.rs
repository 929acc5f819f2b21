//! Applications that run on accepted TCP flows.
//!
//! - [`responder`]: a fixed HTTP response (health endpoints, tests, the
//!   datapath benchmark).

pub mod proxy;
pub mod responder;
