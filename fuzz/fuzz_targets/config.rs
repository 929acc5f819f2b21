//! The config loader and what is done with a config before any device is
//! touched: see `zproxy_fuzz::targets::config`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let sysfs = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/sysfs"));
    zproxy_fuzz::targets::config(data, sysfs)
});
