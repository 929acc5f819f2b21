//! The datapath end to end in the netns lab, on the two virtual devices that
//! exchange frames with a kernel peer: net_af_xdp and net_af_packet. Real
//! clients (ping, arping, curl, zproxy-bench) in the client namespace talk to
//! zproxy's static responder; zproxy is stopped with a real SIGINT and must
//! leave no mbuf, hugepage file or runtime dir behind.

mod common;

use common::*;
use serde_json::Value;

const BODY: &str = "hello from zproxy\n";

fn config(vdev_client: &str, vdev_upstream: &str) -> String {
    format!(
        r#"
[runtime]
worker_lcores = [1]
mbufs = 16383
max_flows = 4096

[[port]]
name = "client"
vdev = "{vdev_client}"
address = "{PROXY_CLIENT_IP}/24"
gateway = "{CLIENT_IP}"

[[port]]
name = "upstream"
vdev = "{vdev_upstream}"
address = "{PROXY_UPSTREAM_IP}/24"

[[listener]]
port = "client"
tcp_port = 80
mode = "static"
[listener.static]
body = "{}"
"#,
        BODY.escape_default()
    )
}

/// Runs zproxy-bench in the client namespace; returns its JSON results.
fn bench(lab: &Lab, args: &[&str]) -> Value {
    let json = lab.run_dir().join("bench.json");
    let bin = workspace_bin("zproxy-bench");
    let mut cmd = vec![
        bin.to_str().unwrap(),
        "--host",
        PROXY_CLIENT_IP,
        "--port",
        "80",
        "--json",
        json.to_str().unwrap(),
    ];
    cmd.extend(args);
    lab.exec_ok("client", &cmd);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    v["results"].clone()
}

fn hugepage_files() -> Vec<String> {
    std::fs::read_dir("/dev/hugepages")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn datapath(vdev_client: &str, vdev_upstream: &str) {
    // Alone in the lab (no other zproxy on lcore 1 or in /dev/hugepages).
    let _lock = common::proxy::lab_lock();
    let lab = Lab::up();
    let huge_before = hugepage_files();
    let zproxy = ZProxy::start(&lab, "zproxy", &config(vdev_client, vdev_upstream));
    let pid = zproxy.pid();

    // TCP: the fixed response (retried while the device warms up).
    let curl = [
        "curl",
        "-s",
        "--max-time",
        "2",
        &format!("http://{PROXY_CLIENT_IP}/"),
    ];
    assert!(
        wait_until(std::time::Duration::from_secs(10), || lab
            .exec("client", curl)
            .stdout
            == BODY.as_bytes()),
        "curl never got the fixed response; zproxy log:\n{}",
        zproxy.log()
    );

    // ARP and ICMP on both ports.
    let arping = lab.exec_ok(
        "client",
        [
            "arping",
            "-c",
            "3",
            "-w",
            "5",
            "-I",
            CLIENT_IF,
            PROXY_CLIENT_IP,
        ],
    );
    assert!(arping.contains("Received 3 response"), "arping: {arping}");
    let ping = lab.exec_ok(
        "client",
        ["ping", "-c", "5", "-i", "0.2", "-W", "1", PROXY_CLIENT_IP],
    );
    assert!(ping.contains(" 0% packet loss"), "ping: {ping}");
    let ping = lab.exec_ok(
        "upstream",
        ["ping", "-c", "3", "-i", "0.2", "-W", "1", PROXY_UPSTREAM_IP],
    );
    assert!(
        ping.contains(" 0% packet loss"),
        "ping upstream side: {ping}"
    );

    // 10,000 sequential connections, then 500 concurrent: every one succeeds.
    let seq = bench(
        &lab,
        &[
            "--concurrency",
            "1",
            "--requests",
            "10000",
            "--keep-alive",
            "off",
        ],
    );
    assert_eq!(seq["successes"], 10000, "sequential: {seq}");
    assert_eq!(seq["failures_total"], 0, "sequential: {seq}");
    let conc = bench(
        &lab,
        &[
            "--concurrency",
            "500",
            "--requests",
            "30000",
            "--keep-alive",
            "off",
        ],
    );
    assert_eq!(conc["successes"], 30000, "500 concurrent: {conc}");
    assert_eq!(conc["failures_total"], 0, "500 concurrent: {conc}");
    let ka = bench(
        &lab,
        &[
            "--concurrency",
            "50",
            "--requests",
            "5000",
            "--keep-alive",
            "on",
        ],
    );
    assert_eq!(ka["successes"], 5000, "keep-alive: {ka}");

    // A real SIGINT: clean exit, every mbuf back, nothing left behind.
    let (ok, log) = zproxy.stop("INT");
    assert!(ok, "zproxy exited with an error:\n{log}");
    assert!(
        log.contains(" 0 leaked"),
        "leak check missing or failed:\n{log}"
    );
    // 45,000 from the benchmarks plus the one curl that succeeded.
    assert!(
        log.contains("requests=45001 "),
        "the worker's request counter disagrees with the clients:\n{log}"
    );
    assert!(
        !std::path::Path::new(&format!("/var/run/dpdk/zproxy-{pid}")).exists(),
        "EAL runtime dir left behind"
    );
    assert_eq!(hugepage_files(), huge_before, "hugepage files left behind");
}

#[test]
fn af_packet_datapath() {
    if !require_root() {
        return;
    }
    datapath(
        "net_af_packet0,iface=cli1,qpairs=1",
        "net_af_packet1,iface=ups1,qpairs=1",
    );
}

#[test]
fn af_xdp_datapath() {
    if !require_root() {
        return;
    }
    datapath(
        "net_af_xdp0,iface=cli1,start_queue=0,queue_count=1",
        "net_af_xdp1,iface=ups1,start_queue=0,queue_count=1",
    );
}

#[test]
fn refuses_to_start_on_a_missing_interface() {
    if !require_root() {
        return;
    }
    let lab = Lab::up();
    let cfg = config("net_af_packet0,iface=nosuch0", "net_af_packet1,iface=ups1");
    let path = lab.run_dir().join("bad.toml");
    std::fs::write(&path, cfg).unwrap();
    let out = lab.exec(
        "proxy",
        [
            env!("CARGO_BIN_EXE_zproxy"),
            "run",
            "-c",
            path.to_str().unwrap(),
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("interface 'nosuch0'") && err.contains("does not exist"),
        "{err}"
    );
}
