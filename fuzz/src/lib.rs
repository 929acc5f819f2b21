//! Support code for the fuzz targets in `fuzz_targets/`: the strict reading
//! of HTTP framing the proxy is checked against (`strict`), and the worker
//! harness (`harness`, its input format `ops`, frames `wire`).

pub mod harness;
pub mod ops;
pub mod strict;
pub mod targets;
pub mod wire;
