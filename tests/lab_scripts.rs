//! Tests of the lab scripts themselves: bench/lab.sh (root) and hugepages/setup.sh.

mod common;

use common::*;
use std::fs;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ns_with_prefix(prefix: &str) -> Vec<String> {
    let p = format!("{prefix}-");
    netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&p))
        .collect()
}

#[test]
fn lab_up_creates_namespaces_and_upstream_serves() {
    if !require_root() {
        return;
    }
    let lab = Lab::up();

    let mut found = ns_with_prefix(&lab.prefix);
    found.sort();
    assert_eq!(
        found,
        vec![lab.ns("client"), lab.ns("proxy"), lab.ns("upstream")]
    );

    // nginx answers inside the upstream namespace.
    let before = lab.upstream_access_log_lines();
    let body = lab.exec_ok(
        "upstream",
        [
            "curl",
            "-sS",
            "--max-time",
            "5",
            &format!("http://{UPSTREAM_IP}/"),
        ],
    );
    assert_eq!(body, UPSTREAM_BODY);
    let big = lab.exec_ok(
        "upstream",
        [
            "curl",
            "-sS",
            "--max-time",
            "5",
            &format!("http://{UPSTREAM_IP}/bytes/10000"),
        ],
    );
    assert_eq!(big.len(), 10_000);
    assert!(
        wait_until(Duration::from_secs(2), || lab.upstream_access_log_lines()
            >= before + 2),
        "access log did not grow: {} lines",
        lab.upstream_access_log_lines()
    );

    // Client side: own address works, default route points at ZProxy's address.
    lab.exec_ok("client", ["ping", "-c1", "-W2", CLIENT_IP]);
    let route = lab.exec_ok("client", ["ip", "-4", "route", "show", "default"]);
    assert!(
        route.contains(&format!("via {PROXY_CLIENT_IP} dev {CLIENT_IF}")),
        "client route: {route}"
    );
    let route = lab.exec_ok("upstream", ["ip", "-4", "route", "show", "default"]);
    assert!(
        route.contains(&format!("via {PROXY_UPSTREAM_IP} dev {UPSTREAM_IF}")),
        "upstream route: {route}"
    );

    // Proxy side: both veth ends up, without IPv4 addresses.
    for ifc in [PROXY_CLIENT_IF, PROXY_UPSTREAM_IF] {
        let link = lab.exec_ok("proxy", ["ip", "-br", "link", "show", ifc]);
        assert!(link.contains("UP"), "{ifc} not up: {link}");
        let addr = lab.exec_ok("proxy", ["ip", "-4", "-br", "addr", "show", ifc]);
        assert!(!addr.contains("10."), "{ifc} must have no address: {addr}");
    }

    // Kernel-side ends must not hand out partial checksums.
    for (role, ifc) in [("client", CLIENT_IF), ("upstream", UPSTREAM_IF)] {
        let k = lab.exec_ok(role, ["ethtool", "-k", ifc]);
        assert!(
            k.lines().any(|l| l == "tx-checksumming: off"),
            "{ifc}: tx checksum offload on:\n{k}"
        );
    }

    let range = lab.exec_ok("client", ["sysctl", "-n", "net.ipv4.ip_local_port_range"]);
    assert_eq!(
        range.split_whitespace().collect::<Vec<_>>(),
        ["1024", "65000"]
    );

    // Nothing of ours in the root namespace.
    let root_links = Command::new("ip").args(["-br", "link"]).output().unwrap();
    for ifc in [CLIENT_IF, PROXY_CLIENT_IF, PROXY_UPSTREAM_IF, UPSTREAM_IF] {
        assert!(
            !stdout(&root_links)
                .lines()
                .any(|l| l.starts_with(&format!("{ifc} ")) || l.starts_with(&format!("{ifc}@"))),
            "{ifc} leaked into the root namespace"
        );
    }

    let st = lab.script(&["status"]);
    assert!(st.status.success(), "status: {}", describe(&st));
    assert!(
        stdout(&st).contains("nginx: running"),
        "status: {}",
        describe(&st)
    );
}

#[test]
fn lab_up_twice_recreates() {
    if !require_root() {
        return;
    }
    let lab = Lab::up();
    let again = lab.script(&["up"]);
    assert!(again.status.success(), "second up: {}", describe(&again));
    assert_eq!(ns_with_prefix(&lab.prefix).len(), 3);
    let body = lab.exec_ok(
        "upstream",
        [
            "curl",
            "-sS",
            "--max-time",
            "5",
            &format!("http://{UPSTREAM_IP}/"),
        ],
    );
    assert_eq!(body, UPSTREAM_BODY);
}

#[test]
fn lab_multi_queue() {
    if !require_root() {
        return;
    }
    let lab = Lab::up_with_queues(2);
    let ch = lab.exec_ok("proxy", ["ethtool", "-l", PROXY_CLIENT_IF]);
    // "Current hardware settings:" section reports RX: 2 / TX: 2
    let current = ch.split("Current hardware settings:").nth(1).unwrap_or("");
    assert!(
        current.contains("RX:\t\t2") && current.contains("TX:\t\t2"),
        "ethtool -l: {ch}"
    );
}

#[test]
fn lab_down_removes_everything() {
    if !require_root() {
        return;
    }
    let lab = Lab::up();
    let prefix = lab.prefix.clone();
    let run_dir = lab.run_dir();
    let nginx_pid: u32 = fs::read_to_string(run_dir.join("nginx.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // A process that runs until `down` kills it (not a wait).
    let mut sleeper = lab.spawn("proxy", ["sleep", "600"]);
    assert!(run_dir.exists());

    drop(lab); // runs lab.sh down

    assert!(
        ns_with_prefix(&prefix).is_empty(),
        "left over: {:?}",
        ns_with_prefix(&prefix)
    );
    assert!(!run_dir.exists(), "{} still exists", run_dir.display());
    assert!(
        !Path::new(&format!("/proc/{nginx_pid}")).exists(),
        "nginx {nginx_pid} still running"
    );
    assert!(
        wait_until(Duration::from_secs(5), || sleeper
            .try_wait()
            .unwrap()
            .is_some()),
        "process started in the lab survived down"
    );

    // down again: nothing to do, still succeeds.
    let out = Command::new("bash")
        .arg(lab_script())
        .args(["--prefix", &prefix, "down"])
        .output()
        .unwrap();
    assert!(out.status.success(), "second down: {}", describe(&out));
}

#[test]
fn lab_help_and_errors() {
    let out = Command::new("bash")
        .arg(lab_script())
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    assert!(stdout(&out).contains("Usage:"));
    let out = Command::new("bash")
        .arg(lab_script())
        .arg("frobnicate")
        .output()
        .unwrap();
    assert!(!out.status.success());
}

// ---- hugepages/setup.sh ------------------------------------------------------

/// A fake sysfs with 2M pages only, two NUMA nodes, and a mount table.
struct FakeSys {
    dir: TempDir,
}

impl FakeSys {
    fn new(total: (u32, u32), nodes: &[(u32, u32)], mounts: &str) -> FakeSys {
        let dir = TempDir::new("hugepages");
        let g = dir.path().join("sys/kernel/mm/hugepages/hugepages-2048kB");
        fs::create_dir_all(&g).unwrap();
        fs::write(g.join("nr_hugepages"), format!("{}\n", total.0)).unwrap();
        fs::write(g.join("free_hugepages"), format!("{}\n", total.1)).unwrap();
        for (i, (nr, free)) in nodes.iter().enumerate() {
            let d = dir.path().join(format!(
                "sys/devices/system/node/node{i}/hugepages/hugepages-2048kB"
            ));
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("nr_hugepages"), format!("{nr}\n")).unwrap();
            fs::write(d.join("free_hugepages"), format!("{free}\n")).unwrap();
        }
        fs::write(dir.path().join("mounts"), mounts).unwrap();
        FakeSys { dir }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(hugepages_script())
            .args(args)
            .env("HUGEPAGES_SYSFS", self.dir.path().join("sys"))
            .env("HUGEPAGES_MOUNTS", self.dir.path().join("mounts"))
            .env("HUGEPAGES_STATE_DIR", self.dir.path().join("state"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

const HUGE_MOUNT: &str = "nodev /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n";

#[test]
fn hugepages_check_enough() {
    let fake = FakeSys::new((100, 90), &[(60, 55), (40, 35)], HUGE_MOUNT);
    let out = fake.run(&["--check", "--pages", "90"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let s = stdout(&out);
    assert!(
        s.contains("hugepages: all nodes  size 2M: reserved 100, free 90"),
        "{s}"
    );
    assert!(
        s.contains("node0      size 2M: reserved 60, free 55"),
        "{s}"
    );
    assert!(
        s.contains("node1      size 2M: reserved 40, free 35"),
        "{s}"
    );
    assert!(s.contains("/dev/hugepages (pagesize 2M)"), "{s}");

    // --mb: 180 MB = 90 pages of 2M
    let out = fake.run(&["--check", "--mb", "180"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    // per node
    let out = fake.run(&["--check", "--node", "1", "--pages", "35"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
}

#[test]
fn hugepages_check_not_enough() {
    let fake = FakeSys::new((100, 90), &[(60, 55), (40, 35)], HUGE_MOUNT);
    let out = fake.run(&["--check", "--pages", "91"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("only 90 free 2M pages"),
        "{}",
        describe(&out)
    );

    let out = fake.run(&["--check", "--mb", "182"]); // 91 pages
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));

    let out = fake.run(&["--check", "--node", "1", "--pages", "36"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stderr(&out).contains("only 35 free 2M pages on node 1"),
        "{}",
        describe(&out)
    );

    // default request is 512 pages
    let out = fake.run(&["--check"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
}

#[test]
fn hugepages_check_needs_mount() {
    let fake = FakeSys::new((100, 90), &[(100, 90)], "proc /proc proc rw 0 0\n");
    let out = fake.run(&["--check", "--pages", "10"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        stdout(&out).contains("no hugetlbfs mounted"),
        "{}",
        describe(&out)
    );
    assert!(
        stderr(&out).contains("no hugetlbfs with pagesize 2M is mounted"),
        "{}",
        describe(&out)
    );

    // A 1G mount does not count for 2M pages.
    let fake = FakeSys::new(
        (100, 90),
        &[(100, 90)],
        "nodev /mnt/h1g hugetlbfs rw,pagesize=1024M 0 0\n",
    );
    let out = fake.run(&["--check", "--pages", "10"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
}

#[test]
fn hugepages_unsupported_size_and_bad_args() {
    let fake = FakeSys::new((100, 90), &[(100, 90)], HUGE_MOUNT);
    let out = fake.run(&["--check", "--size", "1G"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(
        stderr(&out).contains("supported sizes: 2M"),
        "{}",
        describe(&out)
    );

    let out = fake.run(&["--check", "--node", "7"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let out = fake.run(&["--pages", "1", "--mb", "2"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let out = fake.run(&["--bogus"]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
}

#[test]
fn hugepages_reserve_on_fake_tree() {
    if !require_root() {
        return;
    }
    // Reserve writes nr_hugepages in the fake tree; a 2M mount exists, so nothing is mounted.
    let fake = FakeSys::new((4, 4), &[(4, 4)], HUGE_MOUNT);
    let out = fake.run(&["--pages", "16"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let nr = |p: &str| {
        fs::read_to_string(fake.dir.path().join(p))
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(
        nr("sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"),
        "16"
    );
    // never shrinks
    let out = fake.run(&["--pages", "8"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        nr("sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"),
        "16"
    );
    // per node
    let out = fake.run(&["--pages", "6", "--node", "0"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        nr("sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages"),
        "6"
    );
    // clear: back to 0
    let out = fake.run(&["--clear"]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    assert_eq!(
        nr("sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"),
        "0"
    );
}

#[test]
fn hugepages_help() {
    let out = Command::new("bash")
        .arg(hugepages_script())
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let s = stdout(&out);
    assert!(
        s.contains("Usage:") && s.contains("--check") && s.contains("--clear"),
        "{s}"
    );
}
