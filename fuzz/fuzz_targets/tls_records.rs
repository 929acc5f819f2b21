//! Client-side TLS bytes into a real worker's HTTPS listener (rustls under
//! the session, `src/app/proxy/tls/`): garbage, split and repeated
//! ClientHellos, alerts, huge records, stalled handshakes. See
//! `Harness::run_tls` for the input format. Needs root (DPDK EAL).
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use zproxy_fuzz::harness::Harness;

thread_local! {
    static HARNESS: RefCell<Option<Harness>> = const { RefCell::new(None) };
}

fuzz_target!(|data: &[u8]| {
    HARNESS.with(|h| {
        h.borrow_mut().get_or_insert_with(Harness::new).run_tls(data);
    });
});
