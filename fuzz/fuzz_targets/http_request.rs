//! HTTP request heads as the proxy's `ReadHead` state handles them: see
//! `zproxy_fuzz::targets::http_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| zproxy_fuzz::targets::http_request(data));
