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

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::proxy::lab_lock;
use common::*;
use serde_json::Value;

const VIP: &str = "10.99.0.1";
const MACS: [&str; 2] = ["02:00:00:00:f1:0a", "02:00:00:00:f1:0b"];
const ADDRS: [&str; 2] = ["10.70.0.1", "10.70.0.2"];
const ROUTER: &str = "10.70.0.254";
const IFACES: [&str; 2] = ["a0", "b0"];
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

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The namespaces, links, nginx and the BIRDs; removed on drop (also on panic).
struct Net {
    id: String,
    dir: PathBuf,
}

impl Net {
    fn up() -> Net {
        let id = format!("zg{}", std::process::id());
        let dir = Path::new(LAB_RUN_ROOT).join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        let net = Net { id, dir };
        for role in ["client", "router", "pa", "pb", "upstream"] {
            sh(&["ip", "netns", "add", &net.ns(role)]);
            net.run(role, "ip link set lo up");
            net.run(
                role,
                "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1",
            );
        }
        for (a, ra, b, rb) in [
            ("c0", "client", "c1", "router"),
            ("u0", "upstream", "u1", "router"),
            ("a0", "pa", "a1", "router"),
            ("b0", "pb", "b1", "router"),
        ] {
            sh(&[
                "ip",
                "link",
                "add",
                a,
                "netns",
                &net.ns(ra),
                "type",
                "veth",
                "peer",
                "name",
                b,
                "netns",
                &net.ns(rb),
            ]);
            for (ns, ifc) in [(ra, a), (rb, b)] {
                // af_packet sees frames as the kernel left them: whole, with checksums.
                net.run(
                    ns,
                    &format!("ethtool -K {ifc} tso off gso off gro off tx off >/dev/null"),
                );
            }
        }
        for i in 0..2 {
            let (role, ifc) = (ROLES[i], IFACES[i]);
            net.run(role, &format!("ip link set {ifc} address {}", MACS[i]));
            net.run(role, &format!("ip link set {ifc} up"));
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
        net.run("router", "ip link add br0 type bridge");
        for ifc in ["a1", "b1"] {
            net.run("router", &format!("ip link set {ifc} master br0"));
        }
        for ifc in ["br0", "a1", "b1", "c1", "u1"] {
            net.run("router", &format!("ip link set {ifc} up"));
        }
        net.run("router", &format!("ip addr add {ROUTER}/24 dev br0"));
        net.run("router", "ip addr add 10.70.1.254/24 dev c1");
        net.run("router", "ip addr add 10.70.3.254/24 dev u1");
        net.run(
            "router",
            "sysctl -qw net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1",
        );
        net.run("client", "ip addr add 10.70.1.1/24 dev c0");
        net.run("client", "ip link set c0 up");
        net.run("client", "ip route add default via 10.70.1.254");
        net.run(
            "client",
            "sysctl -qw net.ipv4.ip_local_port_range='1024 65000'",
        );
        for a in UPSTREAMS {
            net.run("upstream", &format!("ip addr add {a}/24 dev u0"));
        }
        net.run("upstream", "ip link set u0 up");
        net.run("upstream", "ip route add default via 10.70.3.254");
        net.run("upstream", "nft add table inet zg");
        net.start_nginx();
        net
    }

    fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.id)
    }

    /// Runs a shell line in the role's namespace; panics unless it succeeds.
    fn run(&self, role: &str, line: &str) -> String {
        sh(&["ip", "netns", "exec", &self.ns(role), "bash", "-c", line])
    }

    /// nginx on both upstream addresses, port 80: `/small`, and `/big`
    /// (`BIG_KIB` KiB at `RATE` per connection).
    fn start_nginx(&self) {
        let d = self.dir.display();
        std::fs::create_dir_all(self.dir.join("tmp")).unwrap();
        std::fs::create_dir_all(self.dir.join("www")).unwrap();
        sh(&[
            "bash",
            "-c",
            &format!("head -c {} /dev/urandom > {d}/www/big", BIG_KIB << 10),
        ]);
        let listen: String = UPSTREAMS
            .iter()
            .map(|a| format!("listen {a}:80 backlog=4096;\n"))
            .collect();
        let conf = format!(
            r#"
worker_processes 1;
daemon on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    server {{
        {listen}
        root {d}/www;
        location = /big {{ limit_rate {RATE}; }}
        location = /small {{ default_type text/plain; return 200 "small\n"; }}
    }}
}}
"#
        );
        std::fs::write(self.dir.join("nginx.conf"), conf).unwrap();
        self.run(
            "upstream",
            &format!("nginx -q -p {d} -e {d}/error.log -c {d}/nginx.conf"),
        );
        wait_for(Duration::from_secs(10), "nginx", || {
            UPSTREAMS.iter().all(|a| {
                Command::new("ip")
                    .args(["netns", "exec", &self.ns("upstream"), "bash", "-c"])
                    .arg(format!("exec 3<>/dev/tcp/{a}/80"))
                    .status()
                    .is_ok_and(|s| s.success())
            })
        });
    }

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

impl Drop for Net {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(self.dir.join("nginx.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            // SAFETY: kill(2) of the nginx this test started (its pid file).
            unsafe { libc::kill(pid, libc::SIGQUIT) };
        }
        for role in ["client", "router", "pa", "pb", "upstream"] {
            // Whatever still runs there (BIRD, curl, zproxy) goes with it.
            if let Ok(o) = Command::new("ip")
                .args(["netns", "pids", &self.ns(role)])
                .output()
            {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<i32>() {
                        // SAFETY: kill(2) of a process in this test's own namespace.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(role)])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One ZProxy instance in its own namespace; killed on drop.
struct Instance {
    child: Option<Child>,
    log: PathBuf,
    role: &'static str,
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

impl Instance {
    fn start(net: &Net, i: usize, peers: bool) -> Instance {
        let path = config(net, i, peers);
        let log = net.dir.join(format!("zproxy{i}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &net.ns(ROLES[i])])
            .arg(env!("CARGO_BIN_EXE_zproxy"))
            .args(["run", "-c"])
            .arg(&path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        let mut z = Instance {
            child: Some(child),
            log,
            role: ROLES[i],
        };
        wait_for(Duration::from_secs(30), "the instance to poll", || {
            z.log().contains("polling") || !z.running()
        });
        assert!(z.running(), "instance {i} did not come up:\n{}", z.log());
        z
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        // SAFETY: kill(2) of the zproxy this test started (`ip netns exec` execs it).
        unsafe { libc::kill(pid, sig) };
    }

    /// `/stats`, or None while the endpoint does not answer.
    fn stats(&self, net: &Net) -> Option<Value> {
        let out = Command::new("ip")
            .args(["netns", "exec", &net.ns(self.role)])
            .arg(env!("CARGO_BIN_EXE_zproxy"))
            .args(["stats", "-a", "127.0.0.1:9101"])
            .output()
            .ok()?;
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .filter(|v| v["workers"].is_array())
    }

    /// A counter summed over the workers, as published after this call
    /// began (workers publish every 100 ms; `total_cycles` moves on with
    /// every publication).
    fn fresh_stat(&self, net: &Net, name: &str) -> u64 {
        let first = self.stats(net).map(|v| sum(&v, "total_cycles"));
        let mut v = None;
        wait_for(Duration::from_secs(5), "fresh counters", || {
            v = self
                .stats(net)
                .filter(|v| first.is_some_and(|f| sum(v, "total_cycles") > f));
            v.is_some()
        });
        sum(&v.unwrap(), name)
    }

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

fn sum(v: &Value, name: &str) -> u64 {
    v["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w[name].as_u64().unwrap_or(0))
        .sum()
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `n` curls from the client namespace, one connection each: their codes.
fn short_requests(net: &Net, n: usize) -> Vec<String> {
    net.run(
        "client",
        &format!(
            "for i in $(seq {n}); do curl -s --max-time 10 -o /dev/null -w '%{{http_code}}\\n' http://{VIP}/small; done"
        ),
    )
    .lines()
    .map(str::to_owned)
    .collect()
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
    let net = Net::up();
    // A starts alone (no peers); a reload gives it B later.
    let z = [
        Instance::start(&net, 0, false),
        Instance::start(&net, 1, true),
    ];
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
    let cut = count_lines(&net);
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
    let long = start_long(&net, LONG);
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
    let (ok, bad) = long_results(&net, long);
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

/// Starts `LONG` rate-limited downloads of /big from the client namespace;
/// each leaves its exit code, its body's sha256 and curl's errors in `long/`.
fn start_long(net: &Net, n: usize) -> Child {
    let out = net.dir.join("long");
    std::fs::create_dir_all(&out).unwrap();
    let script = format!(
        r#"for i in $(seq {n}); do
  ( curl -sS --max-time 120 http://{VIP}/big 2> {o}/$i.err | sha256sum | cut -c1-64 > {o}/$i.sha
    echo "${{PIPESTATUS[0]}}" > {o}/$i.rc ) &
done
wait"#,
        o = out.display()
    );
    Command::new("ip")
        .args(["netns", "exec", &net.ns("client"), "bash", "-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits for the downloads: (byte-exact ones, what went wrong with the others).
fn long_results(net: &Net, mut long: Child) -> (usize, Vec<String>) {
    let _ = long.wait();
    let want = sh(&["sha256sum", net.dir.join("www/big").to_str().unwrap()])[..64].to_owned();
    let out = net.dir.join("long");
    let (mut ok, mut bad) = (0, Vec::new());
    for i in 1..=LONG {
        let read = |ext: &str| {
            std::fs::read_to_string(out.join(format!("{i}.{ext}")))
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        if read("rc") == "0" && read("sha") == want {
            ok += 1;
        } else {
            bad.push(format!("#{i}: rc {} {}", read("rc"), read("err")));
        }
    }
    (ok, bad)
}

/// Short connections in the background until `stop_short`: one curl after
/// another, each status code a line of `short`.
fn start_short(net: &Net) -> Child {
    let o = net.dir.display();
    let script = format!(
        "while [ ! -e {o}/stop ]; do curl -s --max-time 10 -o /dev/null -w '%{{http_code}}\\n' http://{VIP}/small >> {o}/short; done"
    );
    Command::new("ip")
        .args(["netns", "exec", &net.ns("client"), "bash", "-c", &script])
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

/// The codes written so far.
fn count_lines(net: &Net) -> usize {
    std::fs::read_to_string(net.dir.join("short"))
        .unwrap_or_default()
        .lines()
        .count()
}

fn stop_short(net: &Net, mut short: Child) -> Vec<String> {
    std::fs::write(net.dir.join("stop"), "").unwrap();
    let _ = short.wait();
    std::fs::read_to_string(net.dir.join("short"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
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
    let net = Net::up();
    let mut z = [
        Some(Instance::start(&net, 0, true)),
        Some(Instance::start(&net, 1, true)),
    ];
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
        z[i] = Some(Instance::start(&net, i, true));
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
