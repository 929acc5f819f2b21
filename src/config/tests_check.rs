//! What `zproxy check` refuses beyond the loader's first checks: one row per
//! wrong config, with the message expected and the line it must point at.

use std::path::Path;

use super::*;

/// Line numbers below count from the first line of this text.
const BASE: &str = r#"[runtime]
main_lcore = 0
worker_lcores = [1]
mbufs = 16383
mbuf_cache = 256

[[port]]
name = "client"
vdev = "net_af_xdp0,iface=cli1"
address = "10.71.0.2/24"
gateway = "10.71.0.1"

[[port]]
name = "upstream"
vdev = "net_af_xdp1,iface=ups1"
address = "10.72.0.2/24"

[[listener]]
port = "client"
tcp_port = 80
mode = "http"
upstream = "web"

[[listener]]
port = "client"
tcp_port = 81
mode = "tcp"
upstream = "web"

[[listener]]
port = "client"
tcp_port = 8080
mode = "static"
[listener.static]
status = 200
body = "ok\n"

[[upstream]]
name = "web"
port = "upstream"
servers = [{ address = "10.72.0.1:80" }]
"#;

/// BASE with `from` replaced by `to` (which must be there).
fn with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?} is not in BASE");
    BASE.replacen(from, to, 1)
}

#[test]
fn the_base_config_is_valid_and_quiet() {
    let c = Config::parse(BASE).unwrap();
    assert!(c.warnings(BASE).is_empty(), "{:?}", c.warnings(BASE));
    assert_eq!(
        MAX_MTU, 2034,
        "a 2048-byte mbuf data room less the Ethernet header"
    );
    for text in [
        include_str!("../../configs/lab.toml"),
        include_str!("../../configs/zproxy.toml"),
    ] {
        let c = Config::parse(text).unwrap();
        assert!(c.warnings(text).is_empty(), "{:?}", c.warnings(text));
    }
}

#[test]
fn wrong_values_name_key_line_and_fix() {
    // (config, message substring, line)
    let cases: Vec<(String, &str, Option<usize>)> = vec![
        (with("main_lcore = 0", "main_lcore = 999"), "runtime.main_lcore = 999: DPDK lcore ids are 0..=", Some(2)),
        (with("worker_lcores = [1]", "worker_lcores = [1000]"), "lcore 1000 is beyond DPDK's lcore ids", Some(3)),
        (with("tcp_port = 81", "tcp_port = 0"), "tcp_port must be 1..=65535", Some(26)),
        (with("status = 200", "status = 0"), "static status = 0: must be 200..=599", Some(35)),
        (with("status = 200", "status = 999"), "static status = 999: must be 200..=599", Some(35)),
        (with("status = 200", "status = 101"), "1xx are interim responses", Some(35)),
        (with("status = 200", "status = 204"), "static status = 204 must not carry a body", Some(35)),
        (with("address = \"10.71.0.2/24\"", "address = \"10.71.0.2/24\"\nrx_descriptors = 0"), "port 'client': rx_descriptors = 0: must be 1..=32768", Some(11)),
        (with("address = \"10.72.0.2/24\"", "address = \"10.72.0.2/24\"\ntx_descriptors = 40000").replace("mbufs = 16383", "mbufs = 131071"), "port 'upstream': tx_descriptors = 40000: must be 1..=32768", Some(17)),
        (with("address = \"10.71.0.2/24\"", "address = \"10.71.0.2/24\"\nmtu = 100"), "port 'client': mtu = 100: must be 576..=", Some(11)),
        (with("address = \"10.71.0.2/24\"", "address = \"10.71.0.2/24\"\nmtu = 9000"), "jumbo frames are not supported", Some(11)),
        (with("mbuf_cache = 256", "mbuf_cache = 100000"), "runtime.mbuf_cache = 100000: DPDK takes at most 512", Some(5)),
        (with("mbufs = 16383\nmbuf_cache = 256", "mbufs = 600\nmbuf_cache = 512").replace("/24\"\n", "/24\"\nrx_descriptors = 8\ntx_descriptors = 8\n"), "larger than mbufs / 1.5 (400)", Some(5)),
        (with("mbufs = 16383", "mbufs = 4294967295"), "runtime.mbufs = 4294967295: at most 16777216", Some(4)),
        (with("gateway = \"10.71.0.1\"", "gateway = \"10.9.0.1\""), "port 'client': gateway 10.9.0.1 is not on the port's link (10.71.0.2/24): give the next hop's address inside 10.71.0.0/24", Some(11)),
        (with("gateway = \"10.71.0.1\"", "gateway = \"10.71.0.2\""), "is the port's own address", Some(11)),
        (with("address = \"10.72.0.2/24\"", "address = \"10.71.0.3/24\"").replace("10.72.0.1:80", "10.71.0.9:80"), "port 'upstream': address 10.71.0.3/24 is in the same subnet as port 'client'", Some(16)),
        (with("address = \"10.72.0.2/24\"", "address = \"10.0.0.2/8\"").replace("10.72.0.1:80", "10.9.0.9:80"), "in the same subnet as port 'client'", Some(16)),
        (with("worker_lcores = [1]", "worker_lcores = [1]\neal_args = [\"--foo\"]"), "runtime.eal_args: unknown EAL option --foo: allowed are --log-level", Some(4)),
        (with("worker_lcores = [1]", "worker_lcores = [1]\neal_args = [\"--lcores=0@0\"]"), "--lcores is set by zproxy itself (from runtime.worker_lcores)", Some(4)),
        (with("worker_lcores = [1]", "worker_lcores = [1]\neal_args = [\"foo\"]"), "\"foo\" is not an EAL option", Some(4)),
        (with("address = \"10.71.0.2/24\"", "addresses = [\"10.71.0.2/24\", \"10.71.0.3/24\"]"), "port 'client': 2 IPv4 addresses: a port takes exactly one IPv4 address", Some(10)),
        (with("address = \"10.71.0.2/24\"", "addresses = [\"2001:db8::2/64\"]"), "port 'client': 0 IPv4 addresses", Some(10)),
        (with("address = \"10.71.0.2/24\"", "address = \"2001:db8::2/64\""), "IPv6 addresses go in addresses = [...]", Some(10)),
        (with("address = \"10.71.0.2/24\"", "address = \"10.71.0.2/24\"\naddresses = [\"2001:db8::zz/64\"]"), "addresses entry \"2001:db8::zz/64\" is not A.B.C.D/prefix or an IPv6 address", Some(11)),
        (with("address = \"10.71.0.2/24\"", "address = \"10.71.0.2/24\"\naddresses = [\"ff02::1/64\"]"), "ff02::1 cannot be a port's address", Some(11)),
        (with("address = \"10.71.0.2/24\"", "address = \"10.71.0.2/24\"\naddresses = [\"2001:db8::2/64\", \"2001:db8::2/64\"]"), "2001:db8::2 is listed twice", Some(11)),
        (with("address = \"10.71.0.2/24\"", "address = \"10.71.0.2/24\"\naddresses = [\"2001:db8::2/129\"]"), "is not A.B.C.D/prefix or an IPv6 address", Some(11)),
        (with("address = \"10.71.0.2/24\"", "address = \"10.71.0.2/24\"\naddresses = [\"1::1/64\", \"2::1/64\", \"3::1/64\", \"4::1/64\", \"5::1/64\"]"), "5 IPv6 addresses: at most 4", Some(11)),
        (with("gateway = \"10.71.0.1\"", "gateway = \"10.71.0.1\"\ngateway6 = \"fe80::1\""), "gateway6 = \"fe80::1\" but the port has no IPv6 address", Some(12)),
        (with("gateway = \"10.71.0.1\"", "addresses = [\"2001:db8::2/64\"]\ngateway6 = \"2001:db9::1\""), "gateway6 2001:db9::1 is not on the port's link", Some(12)),
        (with("gateway = \"10.71.0.1\"", "addresses = [\"2001:db8::2/64\"]\ngateway6 = \"2001:db8::2\""), "must be a neighbour's unicast address, not the port's own", Some(12)),
        (with("mode = \"http\"\n", "mode = \"http\"\nallow = [\"2001:db8::/200\"]\n"), "tcp_port 80: allow entry \"2001:db8::/200\" is not A.B.C.D/prefix or IPv6/prefix", Some(22)),
        (with("mode = \"http\"\n", "mode = \"http\"\nper_source_prefix6 = 0\n"), "tcp_port 80: per_source_prefix6 = 0: must be 1..=128", Some(22)),
        (with("vdev = \"net_af_xdp0,iface=cli1\"", "pci = \"not-a-pci\""), "port 'client': pci = \"not-a-pci\" is not a PCI address: use DDDD:BB:DD.F or BB:DD.F", Some(9)),
        (with("vdev = \"net_af_xdp0,iface=cli1\"", "pci = \"0000:03:00.9\""), "is not a PCI address", Some(9)),
        (with("gateway = \"10.71.0.1\"", "gateway = \"10.71.0.1\"\nexception = { kind = \"tap\", iface = \"much-too-long-name\" }"), "port 'client': exception.iface = \"much-too-long-name\" is not an interface name", Some(12)),
        (with("gateway = \"10.71.0.1\"", "gateway = \"10.71.0.1\"\nexception = { kind = \"tap\", iface = \"zp0\", rate = 0 }"), "port 'client': exception.rate = 0 would pass nothing to the kernel", Some(12)),
        (with("gateway = \"10.71.0.1\"", "gateway = \"10.71.0.1\"\nexception = { kind = \"tap\", iface = \"zp0\", burst = 0 }"), "exception.burst must be at least 1", Some(12)),
        (with("address = \"10.72.0.2/24\"", "address = \"10.72.0.2/24\"\nexception = { kind = \"tap\", iface = \"zp0\" }").replace("gateway = \"10.71.0.1\"", "gateway = \"10.71.0.1\"\nexception = { kind = \"tap\", iface = \"zp0\" }"), "port 'upstream': exception.iface = \"zp0\" is used by another port", Some(18)),
        (with("mode = \"tcp\"\nupstream = \"web\"", "mode = \"tcp\"\nupstream = \"web\"\n[[listener.route]]\npath_prefix = \"/\"\nupstream = \"web\""), "[[listener.route]] only applies to mode = \"http\" (a tcp listener", Some(29)),
        (with("mode = \"static\"", "mode = \"static\"\n[[listener.route]]\nupstream = \"web\""), "a static listener never reads", Some(34)),
        (with("mode = \"static\"", "mode = \"static\"\nupstream = \"web\""), "tcp_port 8080: upstream does nothing on a static listener", Some(34)),
        (with("upstream = \"web\"\n", "upstream = \"web\"\nmax_header_count = 65\n"), "tcp_port 80: max_header_count = 65: must be 1..=64", Some(23)),
        (with("upstream = \"web\"\n", "upstream = \"web\"\nmax_header_bytes = 0\n"), "tcp_port 80: max_header_bytes = 0: must be > 0", Some(23)),
        (with("upstream = \"web\"\n", "upstream = \"web\"\nrequest_headers = { set = { \"X-A\" = \"$nope\" } }\n"), "tcp_port 80: request_headers: header X-A: unknown variable '$nope'", Some(23)),
        (with("upstream = \"web\"\n", "upstream = \"web\"\nresponse_headers = { add = { \"X-A\" = \"a\\r\\nB: c\" } }\n"), "header X-A: the value may hold visible ASCII, spaces and tabs only (no CR, LF", Some(23)),
        (with("upstream = \"web\"\n", "upstream = \"web\"\nrequest_headers = { remove = [\"Content-Length\"] }\n"), "header Content-Length is set by the proxy itself", Some(23)),
        (with("upstream = \"web\"\n", "upstream = \"web\"\nrequest_headers = { set = { \"Bad Name\" = \"v\" } }\n"), "header name \"Bad Name\" is not a token", Some(23)),
        (with("upstream = \"web\"\n", "upstream = \"web\"\n[[listener.route]]\npath_prefix = \"/a\"\nupstream = \"web\"\nresponse_headers = { set = { \"X-A\" = \"${client_addr\" } }\n"), "tcp_port 80: route.response_headers: header X-A: '${' without '}'", Some(26)),
        (with("mode = \"tcp\"\nupstream = \"web\"", "mode = \"tcp\"\nupstream = \"web\"\nmax_header_bytes = 100"), "tcp_port 81: header rules, trust_request_id and max_header_* apply to mode = \"http\" only", Some(29)),
        (with("upstream = \"web\"\n", "upstream = \"web\"\nheader_timeout_ms = 0\n"), "tcp_port 80: header_timeout_ms must be > 0: 0 turns the slowloris guard off", Some(23)),
        (with("mode = \"static\"", "mode = \"static\"\nheader_timeout_ms = 0"), "tcp_port 8080: header_timeout_ms must be > 0", Some(34)),
        (with("upstream = \"web\"\n", "upstream = \"web\"\nupgrade = [\"h2c\"]\n"), "tcp_port 80: upgrade entry \"h2c\" is never forwarded", Some(23)),
        (with("upstream = \"web\"\n", "upstream = \"web\"\nupgrade = [\"web socket\"]\n"), "upgrade entry \"web socket\" is not a protocol name", Some(23)),
        (with("upstream = \"web\"\n", "upstream = \"web\"\ntunnel_idle_timeout_ms = 0\n"), "tcp_port 80: tunnel_idle_timeout_ms = 0: must be 1..=", Some(23)),
        (with("mode = \"tcp\"\nupstream = \"web\"", "mode = \"tcp\"\nupstream = \"web\"\nupgrade = [\"websocket\"]"), "tcp_port 81: upgrade only applies to mode = \"http\"", Some(29)),
        (with("mode = \"http\"\nupstream = \"web\"", "mode = \"http\"\nupstream = \"web\"\n[[listener.route]]\npath_prefix = \"/ws\"\nupstream = \"web\"\nupgrade = [\"\"]"), "upgrade entry \"\" is not a protocol name", Some(26)),
        (BASE.to_owned() + "[access_log]\npath = \"/tmp/a.log\"\nring_entries = 0\n", "access_log.ring_entries = 0: must be 1..=65536", Some(44)),
        (BASE.to_owned() + "[access_log]\nring_entries = 70000\n", "access_log.ring_entries = 70000", Some(43)),
        (BASE.to_owned() + "[access_log]\npath = \"stdout\"\nsample = 0\n", "access_log.sample = 0: must be 1..=1000000", Some(44)),
        (BASE.to_owned() + "[access_log]\npath = \" /tmp/a.log\"\n", "no NUL bytes or surrounding spaces", Some(43)),
        (BASE.to_owned() + "[access_log]\nformat = \"xml\"\n", "unknown variant `xml`, expected `text` or `json`", Some(43)),
        (with("upstream = \"web\"\n", "upstream = \"web\"\nrate_limit = { requests_per_second = 0.0, burst = 5 }\n"), "listener on tcp_port 80: rate_limit requests per second = 0: must be 0.001..=1000000000", Some(23)),
        (with("upstream = \"web\"\n", "upstream = \"web\"\nrate_limit = { requests_per_second = 10.0, burst = 0 }\n"), "listener on tcp_port 80: rate_limit burst = 0: must be 1..=1000000", Some(23)),
        (with("upstream = \"web\"\n", "upstream = \"web\"\nrate_limit = { requests_per_second = 10.0 }\n"), "missing field `burst`", Some(23)),
        (with("mode = \"tcp\"\nupstream = \"web\"", "mode = \"tcp\"\nupstream = \"web\"\nrate_limit = { requests_per_second = 10.0, burst = 5 }"), "listener on tcp_port 81: rate_limit limits HTTP requests and needs mode = \"http\"; for connections use connection_rate_limit", Some(29)),
        (with("mode = \"tcp\"\nupstream = \"web\"", "mode = \"tcp\"\nupstream = \"web\"\nconnection_rate_limit = { connections_per_second = nan, burst = 5 }"), "listener on tcp_port 81: connection_rate_limit connections per second = NaN: must be 0.001..=1000000000", Some(29)),
        (with("upstream = \"web\"\n", "upstream = \"web\"\n[[listener.route]]\npath_prefix = \"/api\"\nupstream = \"web\"\nrate_limit = { requests_per_second = 1.0, burst = 2000000 }\n"), "listener on tcp_port 80: route rate_limit burst = 2000000: must be 1..=1000000", Some(26)),
        (with("mbuf_cache = 256", "mbuf_cache = 256\nrate_limit_entries = 2"), "runtime.rate_limit_entries = 2: must be 4..=16777216", Some(6)),
        // PROXY protocol keys.
        (with("mode = \"http\"\n", "mode = \"http\"\naccept_proxy_protocol = true\n"), "tcp_port 80: accept_proxy_protocol = true needs trusted_proxies", Some(22)),
        (with("mode = \"http\"\n", "mode = \"http\"\ntrusted_proxies = [\"10.0.0.0/8\"]\n"), "tcp_port 80: trusted_proxies does nothing without accept_proxy_protocol = true", Some(22)),
        (with("mode = \"http\"\n", "mode = \"http\"\naccept_proxy_protocol = true\ntrusted_proxies = [\"10.0.0.0\"]\n"), "trusted_proxies entry \"10.0.0.0\" is not an IPv4 or IPv6 network with a prefix length", Some(23)),
        (with("mode = \"http\"\n", "mode = \"http\"\naccept_proxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/8\", \"2001:db8::/129\"]\n"), "trusted_proxies entry \"2001:db8::/129\" is not an IPv4 or IPv6 network", Some(23)),
        (with("mode = \"http\"\n", "mode = \"http\"\naccept_proxy_protocol = true\ntrusted_proxies = [\"fe80::1%eth0/64\"]\n"), "trusted_proxies entry \"fe80::1%eth0/64\" is not an IPv4 or IPv6 network", Some(23)),
        (with("mode = \"static\"", "mode = \"static\"\naccept_proxy_protocol = true\ntrusted_proxies = [\"10.0.0.0/8\"]"), "tcp_port 8080: accept_proxy_protocol needs mode = \"tcp\" or \"http\"", Some(34)),
        (with("port = \"upstream\"\n", "port = \"upstream\"\nproxy_protocol = \"v3\"\n"), "unknown variant `v3`, expected `v1` or `v2`", Some(41)),
        // Consistent hashing keys.
        (with("port = \"upstream\"\n", "port = \"upstream\"\nhash_key = \"header:X-User\"\n"), "upstream \"web\": hash_key is used by balance = \"consistent_hash\" only", Some(41)),
        (with("port = \"upstream\"\n", "port = \"upstream\"\nbalance = \"consistent_hash\"\nhash_key = \"header:X User\"\n"), "hash_key \"header:X User\": \"X User\" is not a valid header name", Some(42)),
        (with("port = \"upstream\"\n", "port = \"upstream\"\nbalance = \"consistent_hash\"\nhash_key = \"query:id\"\n"), "is not \"client\", \"header:NAME\" or \"cookie:NAME\"", Some(42)),
        // TLS keys.
        (with("mode = \"http\"\n", "mode = \"https\"\n"), "tcp_port 80: mode = \"https\"/\"tls\" needs [listener.tls]", Some(21)),
        (with("mode = \"tcp\"\n", "mode = \"tls\"\n"), "tcp_port 81: mode = \"https\"/\"tls\" needs [listener.tls]", Some(27)),
        (with("upstream = \"web\"\n", "upstream = \"web\"\n[listener.tls]\n[[listener.tls.certificate]]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n"), "tcp_port 80: [listener.tls] only applies to mode = \"https\" or \"tls\"", Some(21)),
        (with("mode = \"http\"\nupstream = \"web\"\n", "mode = \"https\"\nupstream = \"web\"\n[listener.tls]\nmin_version = \"1.3\"\n"), "missing field `certificate`", Some(23)),
        (with("mode = \"http\"\nupstream = \"web\"\n", "mode = \"https\"\nupstream = \"web\"\n[listener.tls]\n[[listener.tls.certificate]]\ncert = \"/nonexistent/c.pem\"\nkey = \"/nonexistent/k.pem\"\n"), "tcp_port 80: /nonexistent/c.pem: cannot read", Some(21)),
        (with("port = \"upstream\"\n", "port = \"upstream\"\ntls_sni = \"a.example\"\n"), "upstream web: tls_ca, tls_sni, tls_cert and tls_key need tls = true", Some(39)),
        (with("port = \"upstream\"\n", "port = \"upstream\"\ntls = true\ntls_cert = \"/c.pem\"\n"), "upstream web: tls_cert and tls_key go together", Some(39)),
        (with("port = \"upstream\"\n", "port = \"upstream\"\ntls = true\ntls_ca = \"/nonexistent/ca.pem\"\n"), "upstream web: /nonexistent/ca.pem: cannot read", Some(39)),
        (with("mbuf_cache = 256", "mbuf_cache = 256\ntls_handshakes_per_poll = 0"), "runtime: tls_handshakes_per_poll = 0: must be 1..=1024", None),
        (with("mbuf_cache = 256", "mbuf_cache = 256\nadmit_flows_percent = 0"), "runtime.admit_flows_percent = 0: must be 1..=100", Some(6)),
        (with("mbuf_cache = 256", "mbuf_cache = 256\nadmit_flows_percent = 101"), "runtime.admit_flows_percent = 101: must be 1..=100", Some(6)),
        (with("mbuf_cache = 256", "mbuf_cache = 256\nbuffer_release_idle_ms = 5"), "runtime.buffer_release_idle_ms = 5: must be 10..=3600000", Some(6)),
        (with("mbuf_cache = 256", "mbuf_cache = 256\nadmit_backlog_ms = 70000"), "runtime.admit_backlog_ms = 70000: must be 0..=10000", Some(6)),
        // [announce] (the section starts at line 42).
        (BASE.to_owned() + "[announce]\nvip = \"10.99.0.1\"\nlisteners = [\"client:80\"]\n", "announce: vip \"10.99.0.1\" is not A.B.C.D/prefix", Some(43)),
        (BASE.to_owned() + "[announce]\nvip = \"10.99.0.1/32\"\nlisteners = []\n", "announce: listeners is empty", Some(44)),
        (BASE.to_owned() + "[announce]\nvip = \"10.99.0.1/32\"\nlisteners = [\"client:99\"]\n", "no listener \"client:99\" (listeners are named PORT:TCP_PORT: client:80, client:81, client:8080)", Some(44)),
        (BASE.to_owned() + "[announce]\nvip = \"10.99.0.1/32\"\nlisteners = [\"client:8080\"]\n", "listener \"client:8080\" sends to no upstream group", Some(44)),
        (BASE.to_owned() + "[announce]\nvip = \"10.99.0.1/32\"\nlisteners = [\"client:80\"]\nprotocol = \"vip\\nshutdown\"\n", "protocol \"vip\\nshutdown\" is not a BIRD protocol name", Some(45)),
        (BASE.to_owned() + "[announce]\nvip = \"10.99.0.1/32\"\nlisteners = [\"client:80\"]\nbird_socket = \"\"\n", "bird_socket must be the path of BIRD's control socket", Some(45)),
        (BASE.to_owned() + "[announce]\nvip = \"10.99.0.1/32\"\nlisteners = [\"client:80\"]\nhold_down_ms = 9999999999999\n", "hold_down_ms = 9999999999999: at most", Some(45)),
        (BASE.to_owned() + "[announce]\nvip = \"10.99.0.1/32\"\n", "missing field `listeners`", Some(42)),
        // [fleet] (the section starts at line 42).
        (BASE.to_owned() + "[fleet]\nport = \"edge\"\n", "fleet: no port \"edge\" (ports: client, upstream)", Some(43)),
        (BASE.to_owned() + "[fleet]\nport = \"client\"\nvip = \"10.71.0.2\"\n", "fleet: vip 10.71.0.2 is port \"client\"'s own address", Some(44)),
        (BASE.to_owned() + "[fleet]\nport = \"client\"\nvip = \"224.0.0.9\"\n", "fleet: vip 224.0.0.9 is not a unicast address", Some(44)),
        (BASE.to_owned() + "[fleet]\nport = \"client\"\npeers = [{ mac = \"02:00:00:0b\" }]\n", "fleet: peer 1 has mac \"02:00:00:0b\": write six hex bytes", Some(44)),
        (BASE.to_owned() + "[fleet]\nport = \"client\"\npeers = [{ mac = \"ff:ff:ff:ff:ff:ff\" }]\n", "fleet: peer 1 has mac ff:ff:ff:ff:ff:ff: not a unicast MAC", Some(44)),
        (BASE.to_owned() + "[fleet]\nport = \"client\"\npeers = [{ mac = \"02:00:00:00:00:0b\" }, { mac = \"02:00:00:00:00:0B\" }]\n", "fleet: mac 02:00:00:00:00:0B is listed twice", Some(44)),
        (BASE.to_owned() + "[fleet]\nport = \"client\"\npeers = [{ mac = \"02:00:00:00:00:0b\", nam = \"b\" }]\n", "unknown field `nam`", Some(44)),
        // Servers by name: a typo is refused before it reaches the resolver.
        (with("10.72.0.1:80", "web_1.lab:80"), "upstream 'web': server \"web_1.lab:80\" is not A.B.C.D:port or HOST:port", Some(41)),
        // An empty group is reported at the group, not at a listener naming it.
        (with("servers = [{ address = \"10.72.0.1:80\" }]", "servers = []"), "upstream 'web': servers is empty", Some(41)),
        (with("servers = [{ address = \"10.72.0.1:80\" }]", "servers = [{ address = \"10.72.0.1:80\", backup = true }, { address = \"10.72.0.3:80\", backup = true }]"), "upstream 'web': every server is a backup (backup = true)", Some(41)),
        (with("servers = [{ address = \"10.72.0.1:80\" }]", "servers = [{ address = \"10.72.0.1:80\", backup = \"yes\" }]"), "invalid type: string \"yes\", expected a boolean", Some(41)),
        // A port's errors point into that port, not at the first mention of its name.
        (with("name = \"upstream\"\n", "name = \"upstream\"\nqueues = 3\n"), "port 'upstream': queues = 3", Some(14)),
        (with("10.72.0.1:80", "[2001:db8:72::1]:80"), "server [2001:db8:72::1]:80 is IPv6 and port 'upstream' has no IPv6 address: add one to the port's `addresses`", Some(41)),
        (with("address = \"10.72.0.2/24\"", "addresses = [\"10.72.0.2/24\", \"2001:db8:72::2/64\"]").replace("10.72.0.1:80", "[2001:db8:99::1]:80"), "server [2001:db8:99::1]:80 is not on port 'upstream''s IPv6 networks and that port has no gateway6", Some(41)),
        (with("address = \"10.72.0.2/24\"", "addresses = [\"10.72.0.2/24\", \"2001:db8:72::2/64\"]").replace("10.72.0.1:80", "[::1]:80"), "server [::1]:80 is not a unicast address a port can reach", Some(41)),
    ];
    for (text, want, line) in &cases {
        let e = Config::parse(text).unwrap_err();
        let got = e.to_string();
        assert!(got.contains(want), "want {want:?} in {got:?}");
        assert_eq!(e.line(), *line, "line of {got:?}");
    }
}

#[test]
fn shipped_eal_flags_and_pci_forms_are_accepted() {
    for args in [
        r#"["--log-level=pmd.net.af_xdp:debug"]"#,
        r#"["--log-level", "lib.eal:debug", "--iova-mode=va", "--legacy-mem"]"#,
    ] {
        let text = with(
            "worker_lcores = [1]",
            &format!("worker_lcores = [1]\neal_args = {args}"),
        );
        Config::parse(&text).unwrap_or_else(|e| panic!("{args}: {e}"));
    }
    for pci in ["0000:03:00.0", "03:00.1", "0000:af:1f.7"] {
        assert!(limits::is_pci_address(pci), "{pci}");
    }
    for pci in [
        "not-a-pci",
        "0000:03:00",
        "3:00.0",
        "0000:03:20.0",
        "0000:03:00.8",
        "00000:03:00.0",
    ] {
        assert!(!limits::is_pci_address(pci), "{pci}");
    }
    let low = with(
        "address = \"10.71.0.2/24\"",
        "address = \"10.71.0.2/24\"\nmtu = 576\nrx_descriptors = 8",
    );
    Config::parse(&low).expect("the smallest MTU and an 8-entry ring are fine");
}

#[test]
fn check_warns_of_keys_that_do_nothing() {
    let text = with("mode = \"tcp\"\nupstream = \"web\"", "mode = \"tcp\"\nupstream = \"web\"\nheader_timeout_ms = 500\n[listener.static]\nbody = \"x\"")
        .replacen("mbuf_cache = 256", "mbuf_cache = 256\nmemory_mb = 64", 1)
        + "[upstream.health_check]\nkind = \"tcp\"\npath = \"/h\"\n";
    let c = Config::parse(&text).unwrap();
    let w = c.warnings(&text);
    let want = [
        "line 6: runtime.memory_mb does nothing without no_huge = true",
        "line 30: listener on port 'client' tcp_port 81: header_timeout_ms does nothing in mode = \"tcp\"",
        "line 31: listener on port 'client' tcp_port 81: [listener.static] does nothing unless mode = \"static\"",
        "line 48: upstream 'web': health_check path does nothing with kind = \"tcp\"",
    ];
    assert_eq!(w.len(), want.len(), "{w:#?}");
    for (got, want) in w.iter().zip(want) {
        assert!(got.starts_with(want), "want {want:?}, got {got:?}");
    }
}

#[test]
fn check_tests_the_machine_too() {
    let root = std::env::temp_dir().join(format!("zproxy-cfg-check-{}", std::process::id()));
    let d = root.join("devices/system/node/node0");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("cpulist"), "0-3").unwrap();
    let ok = Config::check_text(BASE, &root).unwrap();
    for path in ["stdout", "", "access.log", "/tmp/access.log"] {
        let text = BASE.to_owned() + &format!("[access_log]\npath = \"{path}\"\n");
        Config::check_text(&text, &root).unwrap_or_else(|e| panic!("{path}: {e}"));
    }
    assert!(
        ok.binding[0].starts_with("control thread: lcore 0 on CPU 0"),
        "{:?}",
        ok.binding
    );
    let cases = [
        (
            with("main_lcore = 0", "main_lcore = 99"),
            "line 2: worker binding: control CPU 99 (main_lcore) does not exist",
        ),
        (
            with("worker_lcores = [1]", "worker_lcores = [64]"),
            "line 3: worker binding: worker CPU 64 does not exist",
        ),
        (
            with(
                "mbufs = 16383",
                "mbufs = 16383\nhugepage_dir = \"/nonexistent/hugepages\"",
            ),
            "line 5: runtime.hugepage_dir = \"/nonexistent/hugepages\" is not a directory",
        ),
        (
            BASE.to_owned() + "[access_log]\nformat = \"json\"\npath = \"/nonexistent/logs/access.log\"\n",
            "line 44: access_log.path = \"/nonexistent/logs/access.log\": directory /nonexistent/logs does not exist",
        ),
    ];
    for (text, want) in &cases {
        let got = match Config::check_text(text, &root) {
            Ok(_) => panic!("accepted: {want}"),
            Err(e) => e.to_string(),
        };
        assert!(got.starts_with(want), "want {want:?}, got {got:?}");
    }
    std::fs::remove_dir_all(root).unwrap();
    // The file's name is on every error.
    let e = Config::check_file(Path::new("/nonexistent/z.toml"), Path::new("/sys"))
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("/nonexistent/z.toml: cannot read"),
        "{e}"
    );
}

#[test]
fn a_dual_stack_port_keeps_its_ipv4_address_and_lists_its_ipv6_ones() {
    let text = with(
        "address = \"10.71.0.2/24\"\ngateway = \"10.71.0.1\"",
        "addresses = [\"2001:db8::2/64\", \"10.71.0.2/24\", \"fe80::2/64\"]\ngateway = \"10.71.0.1\"\ngateway6 = \"fe80::1\"",
    )
    .replace("mode = \"http\"\n", "mode = \"http\"\nallow = [\"2001:db8::/32\"]\nper_source_prefix6 = 64\n");
    let c = Config::parse(&text).unwrap();
    let p = &c.ports[0];
    assert_eq!(p.cidr(), ("10.71.0.2".parse().unwrap(), 24));
    assert_eq!(
        p.cidrs6(),
        vec![
            ("2001:db8::2".parse().unwrap(), 64),
            ("fe80::2".parse().unwrap(), 64)
        ]
    );
    assert_eq!(p.gateway6, Some("fe80::1".parse().unwrap()));
    assert_eq!(c.listeners[0].per_source_prefix6, Some(64));
}
