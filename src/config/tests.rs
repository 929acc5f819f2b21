//! The loader's tests: good configs, and bad ones naming key and line.

use std::net::Ipv4Addr;

use super::*;

const GOOD: &str = r#"
[runtime]
worker_lcores = [1]

[[port]]
name = "client"
vdev = "net_af_xdp0,iface=cli1"
address = "10.71.0.2/24"
gateway = "10.71.0.1"

[[listener]]
port = "client"
tcp_port = 80
mode = "static"
[listener.static]
body = "hi\n"
"#;

fn err(text: &str) -> String {
    Config::parse(text).unwrap_err().to_string()
}

#[test]
fn good_config_parses_with_defaults() {
    let c = Config::parse(GOOD).unwrap();
    assert_eq!(c.ports[0].cidr(), (Ipv4Addr::new(10, 71, 0, 2), 24));
    assert_eq!(c.listeners[0].static_response.as_ref().unwrap().status, 200);
    let args = c.eal_args("zp1");
    assert!(args.contains(&"--no-pci".to_owned()));
    assert!(args
        .windows(2)
        .any(|w| w == ["--vdev", "net_af_xdp0,iface=cli1"]));
    assert!(args.windows(2).any(|w| w == ["--lcores", "0@0,1@1"]));
}

#[test]
fn several_workers_map_lcores_and_queues() {
    let two = GOOD
        .replace(
            "worker_lcores = [1]",
            "worker_lcores = [1, 2]\nworker_cpus = [1, 0]",
        )
        .replace("[runtime]", "[runtime]\nmbufs = 32767");
    let c = Config::parse(&two).unwrap();
    let args = c.eal_args("p");
    assert!(
        args.windows(2).any(|w| w == ["--lcores", "0@0,1@1,2@0"]),
        "{args:?}"
    );
    let bad: &[(&str, &str)] = &[
        (
            &two.replace("worker_cpus = [1, 0]", "worker_cpus = [1]"),
            "worker_cpus must name one CPU per worker lcore (2 of them)",
        ),
        (
            &two.replace("worker_lcores = [1, 2]", "worker_lcores = [1, 1]"),
            "worker_lcores lists a core twice",
        ),
        (
            &two.replace("gateway = ", "queues = 1\ngateway = "),
            "queues = 1: each of the 2 workers polls one queue of every port, so queues must be 2",
        ),
        (
            &two.replace("mbufs = 32767", "mbufs = 8000"),
            "use at least 8192",
        ),
    ];
    for (text, want) in bad {
        let got = err(text);
        assert!(got.contains(want), "want {want:?} in {got:?}");
    }
}

#[test]
fn cores_auto_takes_the_topology() {
    let root = std::env::temp_dir().join(format!("zproxy-cfg-auto-{}", std::process::id()));
    for (node, cpus) in [(0, "0-3"), (1, "4-7")] {
        let d = root.join(format!("devices/system/node/node{node}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("cpulist"), cpus).unwrap();
    }
    let d = root.join("bus/pci/devices/0000:81:00.0");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("numa_node"), "1\n").unwrap();
    let auto = GOOD
        .replace("worker_lcores = [1]", "cores = \"auto\"\nmbufs = 65535")
        .replace(
            "vdev = \"net_af_xdp0,iface=cli1\"",
            "pci = \"0000:81:00.0\"",
        );
    let c = Config::parse_on(&auto, &root).unwrap();
    assert_eq!(c.runtime.worker_lcores, [4, 5, 6, 7]);
    assert!(c
        .eal_args("p")
        .windows(2)
        .any(|w| w == ["--lcores", "0@0,4@4,5@5,6@6,7@7"]));
    let two = auto.replace("gateway = ", "queues = 2\ngateway = ");
    assert_eq!(
        Config::parse_on(&two, &root).unwrap().runtime.worker_lcores,
        [4, 5]
    );
    let bad: &[(&str, &str)] = &[
        (
            &auto.replace("cores = \"auto\"", "cores = \"auto\"\nworker_lcores = [1]"),
            "remove worker_lcores",
        ),
        (&auto.replace("\"auto\"", "\"all\""), "expected `auto`"),
        (
            &auto.replace("gateway = ", "queues = 8\ngateway = "),
            "the ports have 8 queues",
        ),
    ];
    for (text, want) in bad {
        let got = Config::parse_on(text, &root).unwrap_err().to_string();
        assert!(got.contains(want), "want {want:?} in {got:?}");
    }
    std::fs::remove_dir_all(root).unwrap();
}

/// Found writing fuzz/ (config; the input is larger than the fuzzer's
/// 4 KiB): enough ports times workers overflowed the u32 mbufs floor (a
/// panic in debug builds, a wrapped floor that let too few mbufs through
/// in release ones).
#[test]
fn mbufs_floor_does_not_overflow() {
    let lcores: Vec<String> = (1..=16385).map(|i| i.to_string()).collect();
    let text = GOOD
        .replace(
            "worker_lcores = [1]",
            &format!("worker_lcores = [{}]", lcores.join(", ")),
        )
        .replace(
            "address = \"10.71.0.2/24\"",
            "address = \"10.71.0.2/24\"\nrx_descriptors = 65535\ntx_descriptors = 65535",
        );
    let got = err(&text);
    assert!(got.contains("use at least 4295163900"), "{got}");
}

#[test]
fn shipped_configs_are_valid() {
    for (name, text) in [
        ("configs/lab.toml", include_str!("../../configs/lab.toml")),
        (
            "configs/zproxy.toml",
            include_str!("../../configs/zproxy.toml"),
        ),
    ] {
        if let Err(e) = Config::parse(text) {
            panic!("{name}: {e}");
        }
    }
}

#[test]
fn bad_configs_name_key_and_line() {
    let cases: &[(&str, &str)] = &[
        (
            &GOOD.replace("tcp_port = 80", "tcp_port = 80\nbogus = 1"),
            "line 14: unknown field `bogus`",
        ),
        (
            &GOOD.replace("10.71.0.2/24", "10.71.0.2"),
            "line 8: port 'client': address = \"10.71.0.2\" is not A.B.C.D/prefix",
        ),
        (
            &GOOD.replace("port = \"client\"", "port = \"nope\""),
            "names no [[port]] (have: client)",
        ),
        (
            &GOOD.replace("worker_lcores = [1]", "worker_lcores = [0]"),
            "line 3: runtime.worker_lcores contains the main lcore 0",
        ),
        (
            &GOOD.replace("[runtime]", "[runtime]\nmax_flows = 1"),
            "runtime.max_flows must be 2..=4000000",
        ),
        (
            &GOOD.replace("mode = \"static\"", "mode = \"udp\""),
            "line 14: unknown variant `udp`",
        ),
        (
            &GOOD.replace("vdev = ", "pci = \"0000:01:00.0\"\nvdev = "),
            "give either vdev or pci, not both",
        ),
        (
            &GOOD.replace("tcp_port = 80", "tcp_port = 99999"),
            "line 13:",
        ),
    ];
    // A proxy config and its cross-checks.
    let proxy = GOOD.replace("mode = \"static\"\n[listener.static]\nbody = \"hi\\n\"", "mode = \"http\"\nupstream = \"web\"")
        + "\n[[upstream]]\nname = \"web\"\nport = \"client\"\nservers = [{ address = \"10.71.0.9:80\" }]\n";
    Config::parse(&proxy).expect("the proxy variant is valid");
    let proxy_cases: &[(&str, &str)] = &[
        (&proxy.replace("upstream = \"web\"", "upstream = \"nope\""), "line 15: listener on tcp_port 80: upstream \"nope\" names no [[upstream]] group (have: web)"),
        (&proxy.replace("mode = \"http\"\nupstream = \"web\"", "mode = \"tcp\""), "mode = \"tcp\" needs upstream"),
        (&proxy.replace("port = \"client\"\nservers", "port = \"nic9\"\nservers"), "upstream 'web': port = \"nic9\" names no [[port]]"),
        (&proxy.replace("10.71.0.9:80", "192.0.2.1:80").replace("gateway = \"10.71.0.1\"\n", ""), "server 192.0.2.1:80 is not on port 'client' (10.71.0.2/24) and that port has no gateway"),
        (&proxy.replace("10.71.0.9:80\" }", "10.71.0.9:80\", weight = 0 }"), "weight must be 1..=1000"),
        (&proxy.replace("10.71.0.9:80\" }]", "10.71.0.9:80\" }]\nlocal_ports = [70, 90]"), "local_ports [70, 90] overlap a listener on port 'client'"),
        (&proxy.replace("10.71.0.9:80\" }]", "10.71.0.9:80\" }]\nlocal_ports = [9000, 100]"), "must be an ascending range"),
        (&(proxy.clone() + "[management]\naddress = \"localhost\"\n"), "management.address = \"localhost\" is not IP:port"),
        (&proxy.replace("upstream = \"web\"\n", "upstream = \"web\"\nallow = [\"10.0.0.0\"]\n"), "allow entry \"10.0.0.0\" is not A.B.C.D/prefix"),
        (&(proxy.clone() + "[logging]\nlevel = \"loud\"\n"), "logging.level = \"loud\": use error, warn, info, debug or trace"),
        (&(proxy.clone() + "[[listener]]\nport = \"client\"\ntcp_port = 80\nmode = \"tcp\"\nupstream = \"web\"\n"), "two listeners on port 'client' tcp_port 80"),
        (&proxy.replace("servers = [{ address = \"10.71.0.9:80\" }]", "servers = [{ address = \"10.71.0.9\" }]"), "line 20: upstream 'web': server \"10.71.0.9\" is not A.B.C.D:port or HOST:port"),
        // Found by fuzz/ (config): accepted, then `ms * 1000` overflowed in plan.
        (&proxy.replace("upstream = \"web\"\n", "upstream = \"web\"\nidle_timeout_ms = 9223372036854775807\n"), "line 16: listener on tcp_port 80: idle_timeout_ms = 9223372036854775807: at most 2592000000 ms (30 days)"),
        (&proxy.replace("10.71.0.9:80\" }]", "10.71.0.9:80\" }]\nread_timeout_ms = 18446744073709552"), "upstream 'web': read_timeout_ms = 18446744073709552: at most"),
        (&(proxy.clone() + "[management]\ndrain_timeout_ms = 2592000001\n"), "management.drain_timeout_ms = 2592000001: at most"),
    ];
    for (text, want) in cases.iter().chain(proxy_cases) {
        let got = err(text);
        assert!(got.contains(want), "want {want:?} in {got:?}");
    }
}

#[test]
fn errors_carry_key_line_and_file() {
    let e = Config::parse(&GOOD.replace("worker_lcores = [1]", "worker_lcores = [0]")).unwrap_err();
    assert_eq!(e.key(), Some("runtime.worker_lcores"));
    assert_eq!(e.line(), Some(3));
    let e = e.in_file(std::path::Path::new("/etc/zproxy.toml"));
    assert!(
        e.to_string().starts_with(
            "/etc/zproxy.toml: line 3: runtime.worker_lcores contains the main lcore 0"
        ),
        "{e}"
    );
    let e = Config::parse(&GOOD.replace("tcp_port = 80", "tcp_port = 80\nbogus = 1")).unwrap_err();
    assert!(
        matches!(e, ConfigError::Syntax { line: Some(14), .. }),
        "{e:?}"
    );
    let e = Config::load(std::path::Path::new("/nonexistent/zproxy.toml")).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
    let cause = std::error::Error::source(&e).expect("the I/O error is the cause");
    assert!(cause.to_string().contains("No such file"), "{cause}");
}

#[test]
fn a_zero_copy_memif_gets_single_file_segments() {
    let memif = |extra: &str| {
        GOOD.replace(
            "vdev = \"net_af_xdp0,iface=cli1\"",
            &format!("vdev = \"net_memif0,role=client,socket=/r/c.sock{extra}\""),
        )
    };
    let single = "--single-file-segments".to_owned();
    let zc = Config::parse(&memif(",zero-copy=yes"))
        .unwrap()
        .eal_args("p");
    assert_eq!(zc.iter().filter(|a| **a == single).count(), 1, "{zc:?}");
    let copy = Config::parse(&memif("")).unwrap().eal_args("p");
    assert!(!copy.contains(&single), "{copy:?}");
}
