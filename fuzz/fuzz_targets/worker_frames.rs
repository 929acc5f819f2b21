//! Frames into a real worker (`src/app/worker.rs` over `src/net/stack/`):
//! the demux, the flow table, smoltcp and the applications behind it (HTTP
//! and TCP proxy, static responder), on DPDK's `net_ring` ports with
//! connections open.
//! See `src/harness.rs` for the set-up and the checks, `src/ops.rs` for the
//! input format. Needs root (DPDK EAL).
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use zproxy_fuzz::harness::Harness;

thread_local! {
    static HARNESS: RefCell<Option<Harness>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    HARNESS.with(|h| {
        h.borrow_mut().get_or_insert_with(Harness::new).run(data);
    });
});
