//! The fleet with BGP: two ZProxy instances, each in its own namespace with
//! its own host-side BIRD (the shipped `configs/bird-proxy.conf`) whose BGP
//! session runs over that instance's exception path (a TAP carrying the
//! port's address), and a router BIRD (`configs/bird-router.conf`, one
//! `protocol bgp` per instance, `merge paths` in its kernel protocol) that
//! installs a kernel ECMP route to the VIP (`fib_multipath_hash_policy = 1`):
//!
//! ```text
//! client ns            router ns (BIRD)                pa ns / pb ns           upstream ns
//! c0 10.70.1.1 --- c1 10.70.1.254                      a0 ZProxy A .1 (+ BIRD on its TAP)
//!                      br0 10.70.0.254 [a1 b1] ------- b0 ZProxy B .2 (+ BIRD on its TAP)
//!                      u1 10.70.3.254 ---------------------------------------- u0 nginx
//! ```
//!
//! Each instance has its own upstream address (A: 10.70.3.2, B: 10.70.3.1,
//! one nginx), followed by `[announce]`. One set-up serves every check:
//! both sessions come up, the route has both next hops, connections from
//! many client ports spread over both; A's upstream stops (its address
//! refuses connections), A withdraws, the route drops A and clients keep
//! getting answers from B; A's upstream comes back and A is announced
//! again. Root only; takes the lab lock.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::fleet::*;
use common::proxy::lab_lock;
use common::*;
use serde_json::Value;

const MACS: [&str; 2] = ["02:00:00:00:f1:0a", "02:00:00:00:f1:0b"];
const ROLES: [&str; 2] = ["pa", "pb"];
/// Each instance's own upstream address (one nginx answers on both).
const UPSTREAMS: [&str; 2] = ["10.70.3.2", "10.70.3.1"];
/// Health checks: `FALL` failed checks `INTERVAL_MS` apart mark a server
/// down, and the VIP is withdrawn at once.
const INTERVAL_MS: u64 = 300;
const FALL: u64 = 2;
/// The transfers that outlive A's return (16 s each).
const LONG: usize = 20;
const BIG_KIB: usize = 1024;
const RATE: &str = "64k";

/// Each instance in its own namespace, its kernel kept off its port, and
/// nginx on both upstream addresses; the BIRDs start later.
fn net_up() -> Net {
    let net = Net::up(Layout {
        tag: "zg",
        proxies: ROLES,
        macs: MACS,
        mgmt: ["127.0.0.1:9101", "127.0.0.1:9101"],
        upstreams: &UPSTREAMS,
    });
    for (role, ifc) in ROLES.into_iter().zip(IFACES) {
        // The kernel's ephemeral ports (BIRD's) apart from ZProxy's local_ports.
        net.run(
            role,
            "sysctl -qw net.ipv4.ip_local_port_range='61000 65000'",
        );
        // af_packet leaves the kernel its copy of every frame, and the
        // TAP gives the kernel the port's address: without this it would
        // answer the other instance's connects to that address (a backup
        // server, its health checks) with a RST of its own. Its traffic
        // comes through the TAP (the exception path), not this device.
        net.run(
            role,
            &format!(
                "nft add table inet zk && \
                 nft add chain inet zk in '{{ type filter hook input priority 0; }}' && \
                 nft add rule inet zk in iifname {ifc} drop"
            ),
        );
    }
    net.run("upstream", "nft add table inet zg");
    net.start_nginx(BIG_KIB << 10, RATE, "backlog=4096", "");
    net
}

impl Net {
    /// Instance `i`'s upstream refuses connections (`up` false: a RST to
    /// every SYN, as from a stopped server), or serves again.
    fn upstream(&self, i: usize, up: bool) {
        let line = if up {
            "nft flush table inet zg".to_owned()
        } else {
            format!(
                "nft add chain inet zg in '{{ type filter hook input priority 0; }}' && \
                 nft add rule inet zg in ip daddr {} tcp dport 80 reject with tcp reset",
                UPSTREAMS[i]
            )
        };
        self.run("upstream", &line);
    }

    /// Writes the BIRD configs from the shipped ones and starts the three BIRDs.
    fn start_birds(&self) {
        let shipped = |name: &str| {
            std::fs::read_to_string(repo_root().join(format!("configs/bird-{name}.conf"))).unwrap()
        };
        // The router: the shipped file's `protocol bgp zproxy1`, once per instance.
        let router = shipped("router");
        let at = router
            .find("protocol bgp zproxy1")
            .expect("zproxy1 in bird-router.conf");
        let (head, session) = router.split_at(at);
        let mut text = head.replace("192.0.2.1", ROUTER);
        for (i, addr) in ADDRS.iter().enumerate() {
            text += &session
                .replace("zproxy1", &format!("zproxy{}", i + 1))
                .replace("192.0.2.10", addr)
                .replace("192.0.2.1", ROUTER);
        }
        self.bird("router", &text);
        for (i, addr) in ADDRS.iter().enumerate() {
            let text = shipped("proxy")
                .replace("192.0.2.10", addr)
                .replace("192.0.2.1", ROUTER);
            self.bird(ROLES[i], &text);
        }
    }

    fn bird(&self, role: &str, conf: &str) {
        let path = self.dir.join(format!("bird-{role}.conf"));
        std::fs::write(&path, conf).unwrap();
        let (sock, pid) = (self.socket(role), self.dir.join(format!("bird-{role}.pid")));
        self.run(
            role,
            &format!(
                "bird -c {} -s {} -P {}",
                path.display(),
                sock.display(),
                pid.display()
            ),
        );
    }

    fn socket(&self, role: &str) -> PathBuf {
        self.dir.join(format!("bird-{role}.ctl"))
    }

    fn birdc(&self, role: &str, cmd: &str) -> String {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(self.socket(role))
            .args(cmd.split(' '))
            .output()
            .expect("run birdc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The next hops of the router's kernel route to the VIP (what the
    /// data path uses, not BIRD's view).
    fn hops(&self) -> Vec<String> {
        let out = self.run("router", &format!("ip route show {VIP}"));
        let mut hops: Vec<String> = out
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .filter(|w| w[0] == "via")
            .map(|w| w[1].to_owned())
            .collect();
        hops.sort();
        hops
    }
}
/// Instance `i`'s config, listing the other as its peer or none.
fn config(net: &Net, i: usize, peers: bool) -> PathBuf {
    let peer = if peers {
        format!(
            "{{ mac = \"{}\", name = \"{}\" }}",
            MACS[1 - i],
            ROLES[1 - i]
        )
    } else {
        String::new()
    };
    let cfg = format!(
        r#"
[runtime]
worker_lcores = [1]
mbufs = 8191
max_flows = 4096

# framecnt: as in lab_fleet, the default ring (512 frames) overflows while
# both instances busy-poll core 1.
[[port]]
name = "edge"
vdev = "net_af_packet{i},iface={ifc},qpairs=1,framecnt=4096"
address = "{addr}/24"
gateway = "{ROUTER}"
exception = {{ kind = "tap", iface = "zpe" }}

[[listener]]
port = "edge"
tcp_port = 80
mode = "http"
upstream = "web"
max_connections_per_source = 0

[[upstream]]
name = "web"
port = "edge"
servers = [{{ address = "{up}:80" }}, {{ address = "{other}:80", backup = true }}]

[upstream.health_check]
kind = "tcp"
interval_ms = {INTERVAL_MS}
timeout_ms = {INTERVAL_MS}
fall = {FALL}
rise = 2

[management]
address = "127.0.0.1:9101"
drain_timeout_ms = 20000

[announce]
vip = "{VIP}/32"
listeners = ["edge:80"]
bird_socket = "{sock}"
hold_down_ms = 1000

[fleet]
port = "edge"
vip = "{VIP}"
peers = [{peer}]
"#,
        ifc = IFACES[i],
        addr = ADDRS[i],
        up = UPSTREAMS[i],
        // The other instance's own address (not the VIP, which is local
        // here too): what reaches this one while its upstream is gone and
        // the router has not yet heard the withdrawal is served there.
        other = ADDRS[1 - i],
        sock = net.socket(ROLES[i]).display(),
    );
    let path = net.dir.join(format!("zproxy{i}.toml"));
    std::fs::write(&path, cfg).unwrap();
    path
}

/// Instance `i` (see `config`).
fn start(net: &Net, i: usize, peers: bool) -> Instance {
    Instance::start(net, i, &config(net, i, peers))
}

impl Instance {
    /// The failure counters by cause (`failures_*`), fresh.
    fn failures(&self, net: &Net) -> Vec<(&'static str, u64)> {
        self.fresh_stat(net, "total_cycles");
        let v = self.stats(net).expect("/stats");
        [
            "refused",
            "reset",
            "timeout",
            "no_server",
            "no_slot",
            "bad_response",
        ]
        .into_iter()
        .map(|k| (k, sum(&v, &format!("failures_{k}"))))
        .collect()
    }

    /// Requests sent to backup servers, from `/stats` (fresh, as above).
    fn backup_requests(&self, net: &Net) -> u64 {
        self.fresh_stat(net, "total_cycles");
        let v = self.stats(net).expect("/stats");
        v["upstreams"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|u| u["backup"] == true)
            .map(|u| u["requests"].as_u64().unwrap_or(0))
            .sum()
    }
}

fn all_ok(codes: &[String]) -> bool {
    codes.iter().all(|c| c == "200")
}

#[test]
fn bgp_ecmp_spreads_and_an_unhealthy_instance_withdraws() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let net = net_up();
    // A starts alone (no peers); a reload gives it B later.
    let z = [start(&net, 0, false), start(&net, 1, true)];
    net.start_birds();

    // Both sessions come up over the exception paths; the router installs
    // one kernel route with both instances as next hops.
    let t = Instant::now();
    wait_for(Duration::from_secs(60), "both BGP sessions", || {
        let p = net.birdc("router", "show protocols");
        ["zproxy1", "zproxy2"].iter().all(|n| {
            p.lines()
                .any(|l| l.starts_with(n) && l.contains("Established"))
        })
    });
    eprintln!(
        "both BGP sessions up {:?} after the BIRDs started",
        t.elapsed()
    );
    let both: Vec<String> = ADDRS.iter().map(|a| a.to_string()).collect();
    let mut hops = Vec::new();
    let ecmp = wait_until(Duration::from_secs(30), || {
        hops = net.hops();
        hops == both
    });
    assert!(
        ecmp,
        "the router's route to the VIP is not two-way: {hops:?}\n{}\n{}",
        net.run("router", &format!("ip route show {VIP}")),
        net.birdc("router", &format!("show route {VIP}/32 all"))
    );
    for (i, z) in z.iter().enumerate() {
        let exc = z.fresh_stat(&net, "exception_to_kernel");
        assert!(exc > 0, "instance {i}'s BGP did not use its exception path");
    }

    // Many client ports spread over both instances.
    wait_for(
        Duration::from_secs(15),
        "a first answer through the VIP",
        || all_ok(&short_requests(&net, 1)),
    );
    // Requests, not accepted flows: each instance health-checks the other
    // (its backup), and those probes are flows too.
    let before: Vec<u64> = z.iter().map(|z| z.fresh_stat(&net, "requests")).collect();
    let n = 100;
    let codes = short_requests(&net, n);
    assert!(all_ok(&codes) && codes.len() == n, "{codes:?}");
    let after: Vec<u64> = z.iter().map(|z| z.fresh_stat(&net, "requests")).collect();
    let (sa, sb) = (after[0] - before[0], after[1] - before[1]);
    eprintln!("{n} connections over BGP ECMP: A served {sa}, B {sb}");
    assert_eq!(sa + sb, n as u64);
    assert!(sa >= 20 && sb >= 20, "not spread: A {sa}, B {sb}");

    // A's upstream stops: A withdraws, the router's route drops A within
    // the health checks' detection time (plus BGP's update), and clients
    // are answered by B; those that still reach A before the route changes
    // are served through A's backup (B's own address): every request succeeds.
    let via_backup = z[0].backup_requests(&net);
    let failed_before = z[0].failures(&net);
    let short = start_short(&net);
    std::thread::sleep(Duration::from_secs(1));
    net.upstream(0, false);
    let stopped = Instant::now();
    let bound = Duration::from_millis(FALL * INTERVAL_MS + 3000);
    let mut hops = Vec::new();
    let dropped = wait_until(bound, || {
        hops = net.hops();
        hops == [ADDRS[1]]
    });
    let took = stopped.elapsed();
    let cut = short_count(&net);
    assert!(
        dropped,
        "the route still has {hops:?} {took:?} after A's upstream stopped:\nA:\n{}",
        z[0].log()
    );
    eprintln!("A's upstream stopped: the router dropped A after {took:?} (checks {FALL} x {INTERVAL_MS} ms)");
    assert!(
        z[0].log()
            .contains("a followed upstream group has no healthy server"),
        "{}",
        z[0].log()
    );
    std::thread::sleep(Duration::from_secs(3));
    let codes = stop_short(&net, short);
    // One curl at a time: the one in flight when the route changed may
    // have gone to A before; the ones after it started with A out.
    let (window, since) = codes.split_at((cut + 1).min(codes.len()));
    let ok = since.iter().filter(|c| *c == "200").count();
    let window_ok = window.iter().filter(|c| *c == "200").count();
    let via_backup = z[0].backup_requests(&net) - via_backup;
    let failed: Vec<(&str, u64)> = z[0]
        .failures(&net)
        .into_iter()
        .zip(&failed_before)
        .map(|((k, n), (_, was))| (k, n - was))
        .filter(|(_, n)| *n > 0)
        .collect();
    let all = codes.iter().filter(|c| *c == "200").count();
    // Pooling is on: requests lost on a pooled connection the stopping
    // upstream closed are replayed on a fresh one (the backup's).
    let replayed = z[0].fresh_stat(&net, "upstream_reuse_retries");
    eprintln!(
        "clients after the withdrawal: {ok}/{} ({:.2} %); in the {took:?} before it: {window_ok}/{} answered; \
         A sent {via_backup} to its backup (B), replayed {replayed} lost on pooled connections, \
         its failures meanwhile {failed:?}; in all {all}/{} ({:.2} %)",
        since.len(),
        100.0 * ok as f64 / since.len().max(1) as f64,
        window.len(),
        codes.len(),
        100.0 * all as f64 / codes.len().max(1) as f64,
    );
    assert!(!since.is_empty());
    assert_eq!(ok, since.len(), "requests failed after A withdrew");
    assert_eq!(
        window_ok,
        window.len(),
        "requests failed in the {took:?} before the route dropped A (A's backup did not serve them): {window:?}\nA:\n{}",
        z[0].log()
    );
    assert!(
        via_backup > 0,
        "no request reached A between the stop and the withdrawal: the window was not tested"
    );

    // Transfers that start while A is out all run on B. A reload gives A
    // its peer; when A is announced again (rise, hold-down) the router
    // re-hashes about half of them onto A, which hands their segments on
    // to B: every transfer completes. Without the reload A has no peers and
    // answers them with RSTs.
    let mut long = start_long(&net, "long", LONG, 120);
    wait_for(Duration::from_secs(20), "the transfers on B", || {
        z[1].fresh_stat(&net, "flows_active") >= 2 * LONG as u64
    });
    config(&net, 0, true);
    z[0].signal(libc::SIGHUP);
    wait_for(Duration::from_secs(10), "A's reload", || {
        z[0].log().contains("SIGHUP: reloaded")
    });
    net.upstream(0, true);
    let t = Instant::now();
    wait_for(Duration::from_secs(15), "A back in the route", || {
        net.hops() == both
    });
    eprintln!(
        "A announced again {:?} after its upstream came back",
        t.elapsed()
    );
    let codes = short_requests(&net, 50);
    assert!(all_ok(&codes), "{codes:?}");
    let _ = long.wait();
    let (ok, bad) = long_results(&net, "long", LONG);
    let forwarded = z[0].fresh_stat(&net, "second_chance_forwarded");
    let received = z[1].fresh_stat(&net, "second_chance_received");
    eprintln!(
        "after A's reload (peers added): transfers byte-exact {ok}/{LONG}; A forwarded {forwarded}, B received {received}"
    );
    assert!(
        forwarded > 0,
        "A forwarded nothing after the reload gave it a peer"
    );
    assert_eq!(ok, LONG, "broken transfers: {bad:#?}");
}

/// Waits until the router's route to the VIP has exactly these instances.
fn wait_route(net: &Net, want: &[usize], what: &str) -> Duration {
    let want: Vec<String> = want.iter().map(|&i| ADDRS[i].to_owned()).collect();
    let t = Instant::now();
    let mut hops = Vec::new();
    let ok = wait_until(Duration::from_secs(60), || {
        hops = net.hops();
        hops == want
    });
    assert!(ok, "{what}: the route has {hops:?}, not {want:?}");
    t.elapsed()
}

/// The seed-shape load (keep-alive off: a connection per request) from the
/// client namespace for `secs`, at most `rate` requests/s over `conns`
/// connections in flight; results in `bench.json`.
fn start_bench(net: &Net, secs: u64, rate: u32, conns: u32) -> Child {
    let bin = workspace_bin("zproxy-bench");
    Command::new("ip")
        .args(["netns", "exec", &net.ns("client"), "timeout"])
        .arg((secs + 60).to_string())
        .arg(bin)
        .args(["--host", VIP, "--port", "80", "--path", "/small"])
        .args(["--keep-alive", "off", "--timeout", "5s"])
        .arg(format!("--duration={secs}s"))
        .arg(format!("--rate={rate}"))
        .arg(format!("--concurrency={conns}"))
        .arg("--json")
        .arg(net.dir.join("bench.json"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// Both instances restarted one at a time, the BGP way: SIGTERM withdraws
/// the VIP and starts the drain, the instance exits once its connections
/// end, a new one starts and announces once healthy (after the
/// hold-down), and the router puts it back; all under the seed-shape load.
/// SYNs that reach a draining instance before the router has heard the
/// withdrawal go on to the peer, which opens them. Every request succeeds
/// and no client sees a RST.
#[test]
fn a_rolling_restart_under_the_seed_load_over_bgp() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let net = net_up();
    let mut z = [Some(start(&net, 0, true)), Some(start(&net, 1, true))];
    net.start_birds();
    wait_route(&net, &[0, 1], "at start");
    wait_for(
        Duration::from_secs(15),
        "a first answer through the VIP",
        || all_ok(&short_requests(&net, 1)),
    );
    // 2 cores carry both instances' workers (busy-polling one core), three
    // BIRDs, nginx and the load: 1,000 requests/s over 32 connections
    // leaves the core room; the bench reports what it reached.
    let (secs, rate, conns) = (50, 1000, 32);
    let mut bench = start_bench(&net, secs, rate, conns);
    let begun = Instant::now();
    let mut forwarded = 0;
    std::thread::sleep(Duration::from_secs(5));
    for i in 0..2 {
        let mut old = z[i].take().unwrap();
        old.signal(libc::SIGTERM);
        let t = wait_route(&net, &[1 - i], "after SIGTERM");
        eprintln!("instance {i}: withdrawn {t:?} after SIGTERM");
        wait_for(
            Duration::from_secs(30),
            "the drained instance to exit",
            || !old.running(),
        );
        assert!(
            old.log().contains("drained: no connection left"),
            "{}",
            old.log()
        );
        forwarded += z[1 - i]
            .as_ref()
            .unwrap()
            .fresh_stat(&net, "second_chance_forwarded");
        z[i] = Some(start(&net, i, true));
        let t = wait_route(&net, &[0, 1], "after the restart");
        eprintln!("instance {i}: back in the route {t:?} after its restart");
        std::thread::sleep(Duration::from_secs(3));
    }
    assert!(
        begun.elapsed() < Duration::from_secs(secs - 5),
        "the restarts outlasted the load ({:?}): lengthen it",
        begun.elapsed()
    );
    let status = bench.wait().unwrap();
    assert!(status.success(), "zproxy-bench: {status}");
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(net.dir.join("bench.json")).unwrap())
            .unwrap();
    let r = &v["results"];
    let (ok, failed) = (
        r["successes"].as_u64().unwrap(),
        r["failures_total"].as_u64().unwrap(),
    );
    eprintln!(
        "rolling restart over BGP under the seed shape ({rate}/s, {conns} in flight, keep-alive off): \
         {ok} ok, {failed} failed ({:.2} % success), {} conn/s, failures {}; second chances forwarded {forwarded}",
        100.0 * ok as f64 / (ok + failed).max(1) as f64,
        r["connections_per_sec"],
        r["failures"]
    );
    assert!(ok > 1000, "the load did not run: {r}");
    assert_eq!(failed, 0, "requests failed: {}", r["failures"]);
}
