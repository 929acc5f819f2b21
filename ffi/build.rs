//! Finds DPDK through pkg-config, generates bindings for exactly what ZProxy
//! calls, and compiles the C shim for DPDK's `static inline` functions.

use std::env;
use std::path::PathBuf;

/// Functions ZProxy calls directly (exported symbols of librte_*).
const FUNCTIONS: &[&str] = &[
    "rte_eal_init",
    "rte_eal_cleanup",
    "rte_strerror",
    "rte_eal_remote_launch",
    "rte_eal_wait_lcore",
    "rte_get_main_lcore",
    "rte_lcore_count",
    "rte_lcore_to_socket_id",
    "rte_socket_id",
    "rte_get_tsc_hz",
    "rte_eth_dev_count_avail",
    "rte_eth_dev_get_port_by_name",
    "rte_eth_dev_is_valid_port",
    "rte_eth_dev_socket_id",
    "rte_eth_dev_info_get",
    "rte_eth_dev_rx_offload_name",
    "rte_eth_dev_tx_offload_name",
    "rte_eth_dev_configure",
    "rte_eth_dev_adjust_nb_rx_tx_desc",
    "rte_eth_rx_queue_setup",
    "rte_eth_tx_queue_setup",
    "rte_eth_dev_start",
    "rte_eth_dev_stop",
    "rte_eth_dev_close",
    "rte_eth_dev_set_mtu",
    "rte_eth_promiscuous_enable",
    "rte_eth_macaddr_get",
    "rte_eth_link_get_nowait",
    "rte_eth_stats_get",
    "rte_eth_tx_done_cleanup",
    "rte_eth_dev_rss_reta_update",
    "rte_pktmbuf_pool_create",
    "rte_pktmbuf_free_bulk",
    "rte_mempool_free",
    "rte_mempool_in_use_count",
    "rte_dev_probe",
    "zp_.*",
];

/// Types that cross the boundary by value or through pointers we dereference.
const TYPES: &[&str] = &[
    "rte_eth_conf",
    "rte_eth_dev_info",
    "rte_eth_rxconf",
    "rte_eth_txconf",
    "rte_eth_link",
    "rte_eth_stats",
    "rte_eth_rss_reta_entry64",
    "rte_ether_addr",
    "rte_mbuf",
    "rte_mempool",
    "lcore_function_t",
];

/// Constants (bit flags are function-like macros; `clang_macro_fallback` evaluates them).
const VARS: &[&str] = &[
    "RTE_MAX_ETHPORTS",
    "RTE_MAX_LCORE",
    "RTE_MBUF_DEFAULT_BUF_SIZE",
    "RTE_PKTMBUF_HEADROOM",
    "RTE_ETH_MQ_RX_RSS",
    "RTE_ETH_MQ_RX_NONE",
    "RTE_ETH_MQ_TX_NONE",
    "RTE_ETH_RSS_IP",
    "RTE_ETH_RSS_TCP",
    "RTE_ETH_RSS_UDP",
    "RTE_ETH_RETA_GROUP_SIZE",
    "RTE_ETH_RX_OFFLOAD_IPV4_CKSUM",
    "RTE_ETH_RX_OFFLOAD_TCP_CKSUM",
    "RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE",
    "RTE_ETH_TX_OFFLOAD_TCP_CKSUM",
    "RTE_ETH_TX_OFFLOAD_TCP_TSO",
    "RTE_MBUF_F_RX_IP_CKSUM_MASK",
    "RTE_MBUF_F_RX_IP_CKSUM_GOOD",
    "RTE_MBUF_F_RX_L4_CKSUM_MASK",
    "RTE_MBUF_F_RX_L4_CKSUM_GOOD",
    "RTE_ETH_LINK_UP",
    "RTE_ETH_LINK_FULL_DUPLEX",
    "RTE_ETHER_MTU",
    "SOCKET_ID_ANY",
    "LCORE_ID_ANY",
];

fn main() {
    println!("cargo:rerun-if-changed=shim/shim.h");
    println!("cargo:rerun-if-changed=shim/shim.c");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    // Probing also emits the link flags (shared librte_* libraries).
    if let Err(e) = pkg_config::Config::new()
        .atleast_version("22.11")
        .probe("libdpdk")
    {
        panic!(
            "\n\nzproxy-ffi: DPDK 22.11 was not found through `pkg-config libdpdk` ({e}).\n\
             Install it with: apt-get install libdpdk-dev pkg-config\n\
             (or point PKG_CONFIG_PATH at a DPDK build's lib/pkgconfig directory).\n\n"
        );
    }

    // pkg-config's cflags carry `-include rte_config.h` and `-march=...`; both
    // must reach the shim and clang, or struct layouts and inline code differ.
    let extra_cflags: Vec<String> = std::process::Command::new("pkg-config")
        .args(["--cflags", "libdpdk"])
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();

    let mut shim = cc::Build::new();
    shim.file("shim/shim.c").opt_level(3).warnings(false);
    for flag in &extra_cflags {
        shim.flag(flag);
    }
    shim.compile("zproxy_shim");

    let mut builder = bindgen::Builder::default()
        .header("shim/shim.h")
        .clang_args(&extra_cflags)
        .clang_macro_fallback()
        .allowlist_recursively(true)
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(false)
        // Packed structs holding aligned types do not compile in Rust (E0588).
        .opaque_type("rte_arp_hdr")
        .opaque_type("rte_l2tpv2_combined_msg_hdr")
        .opaque_type("rte_gtp_psc_generic_hdr")
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    for f in FUNCTIONS {
        builder = builder.allowlist_function(f);
    }
    for t in TYPES {
        builder = builder.allowlist_type(t);
    }
    for v in VARS {
        builder = builder.allowlist_var(v);
    }
    let bindings = builder.generate().expect(
        "zproxy-ffi: bindgen could not parse the DPDK headers (is clang/libclang-dev installed?)",
    );

    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("bindings.rs");
    bindings.write_to_file(&out).expect("write bindings.rs");
}
