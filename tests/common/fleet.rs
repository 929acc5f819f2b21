//! The fleet labs' network and instances (`lab_fleet`, `lab_fleet_bgp`):
//! a client, a router with a bridge to both instances' ports, the
//! instances' namespace(s) and an upstream with nginx, all under one
//! run dir; each test file adds its route (static or BGP) and configs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::*;

pub const VIP: &str = "10.99.0.1";
/// The instances' port addresses, on the router's bridge.
pub const ADDRS: [&str; 2] = ["10.70.0.1", "10.70.0.2"];
pub const ROUTER: &str = "10.70.0.254";
pub const IFACES: [&str; 2] = ["a0", "b0"];

/// What sets one fleet lab apart from the other.
pub struct Layout {
    /// The namespaces' prefix (before the pid).
    pub tag: &'static str,
    /// The namespace of each instance (the same one for both, or one each).
    pub proxies: [&'static str; 2],
    pub macs: [&'static str; 2],
    /// Each instance's management address.
    pub mgmt: [&'static str; 2],
    /// The upstream namespace's addresses (nginx listens on each, port 80).
    pub upstreams: &'static [&'static str],
}

/// The namespaces, links and nginx; removed on drop (also on panic).
pub struct Net {
    pub id: String,
    pub dir: PathBuf,
    pub layout: Layout,
}

/// Runs a command; panics unless it succeeds. Its stdout.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Net {
    /// The namespaces and links, addressed; no route to the VIP, no nginx.
    pub fn up(layout: Layout) -> Net {
        let id = format!("{}{}", layout.tag, std::process::id());
        let dir = Path::new(LAB_RUN_ROOT).join(&id);
        std::fs::create_dir_all(dir.join("out")).unwrap();
        let net = Net { id, dir, layout };
        for role in net.roles() {
            sh(&["ip", "netns", "add", &net.ns(role)]);
            net.run(role, "ip link set lo up");
            net.run(
                role,
                "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1",
            );
        }
        let [pa, pb] = net.layout.proxies;
        for (a, ra, b, rb) in [
            ("c0", "client", "c1", "router"),
            ("u0", "upstream", "u1", "router"),
            ("a0", pa, "a1", "router"),
            ("b0", pb, "b1", "router"),
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
        for (i, ifc) in IFACES.iter().enumerate() {
            let role = net.layout.proxies[i];
            let mac = net.layout.macs[i];
            net.run(role, &format!("ip link set {ifc} address {mac}"));
            net.run(role, &format!("ip link set {ifc} up"));
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
        for a in net.layout.upstreams {
            net.run("upstream", &format!("ip addr add {a}/24 dev u0"));
        }
        net.run("upstream", "ip link set u0 up");
        net.run("upstream", "ip route add default via 10.70.3.254");
        net
    }

    /// Every role, each once.
    fn roles(&self) -> Vec<&'static str> {
        let mut roles = vec!["client", "router"];
        for p in self.layout.proxies {
            if !roles.contains(&p) {
                roles.push(p);
            }
        }
        roles.push("upstream");
        roles
    }

    pub fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.id)
    }

    /// Runs a shell line in the role's namespace; panics unless it succeeds.
    pub fn run(&self, role: &str, line: &str) -> String {
        sh(&["ip", "netns", "exec", &self.ns(role), "bash", "-c", line])
    }

    /// nginx on every upstream address, port 80 (`listen` its options):
    /// `/small`, `/big` (`big` random bytes at `rate` per connection) and
    /// the `extra` locations.
    pub fn start_nginx(&self, big: usize, rate: &str, listen: &str, extra: &str) {
        let d = self.dir.display();
        std::fs::create_dir_all(self.dir.join("tmp")).unwrap();
        std::fs::create_dir_all(self.dir.join("www")).unwrap();
        sh(&[
            "bash",
            "-c",
            &format!("head -c {big} /dev/urandom > {d}/www/big"),
        ]);
        let listen: String = self
            .layout
            .upstreams
            .iter()
            .map(|a| format!("listen {a}:80 {listen};\n        "))
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
        {listen}root {d}/www;
        location = /big {{ limit_rate {rate}; }}
        {extra}
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
            self.layout.upstreams.iter().all(|a| {
                Command::new("ip")
                    .args(["netns", "exec", &self.ns("upstream"), "bash", "-c"])
                    .arg(format!("exec 3<>/dev/tcp/{a}/80"))
                    .status()
                    .is_ok_and(|s| s.success())
            })
        });
    }

    /// The sha256 of `/big`.
    pub fn big_sha(&self) -> String {
        let out = sh(&["sha256sum", self.dir.join("www/big").to_str().unwrap()]);
        out[..64].to_owned()
    }

    /// Runs a shell line in the client namespace, in the background.
    pub fn spawn_client(&self, script: &str) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.ns("client"), "bash", "-c", script])
            .stdin(Stdio::null())
            .spawn()
            .unwrap()
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
        for role in self.roles() {
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

/// One ZProxy instance in its namespace; killed on drop.
pub struct Instance {
    child: Option<Child>,
    log: PathBuf,
    role: &'static str,
    pub mgmt: &'static str,
}

impl Instance {
    /// Instance `i` running `config`, once it polls.
    pub fn start(net: &Net, i: usize, config: &Path) -> Instance {
        let role = net.layout.proxies[i];
        let log = net.dir.join(format!("zproxy{i}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &net.ns(role)])
            .arg(env!("CARGO_BIN_EXE_zproxy"))
            .args(["run", "-c"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        let mut z = Instance {
            child: Some(child),
            log,
            role,
            mgmt: net.layout.mgmt[i],
        };
        wait_for(Duration::from_secs(30), "the instance to poll", || {
            z.log().contains("polling") || !z.running()
        });
        assert!(z.running(), "instance {i} did not come up:\n{}", z.log());
        z
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    pub fn signal(&self, sig: i32) {
        let pid = self.child.as_ref().unwrap().id() as i32;
        // SAFETY: kill(2) of the zproxy this test started (`ip netns exec` execs it).
        unsafe { libc::kill(pid, sig) };
    }

    /// `/stats`, or None while the endpoint does not answer.
    pub fn stats(&self, net: &Net) -> Option<Value> {
        let out = Command::new("ip")
            .args(["netns", "exec", &net.ns(self.role)])
            .arg(env!("CARGO_BIN_EXE_zproxy"))
            .args(["stats", "-a", self.mgmt])
            .output()
            .ok()?;
        serde_json::from_slice::<Value>(&out.stdout)
            .ok()
            .filter(|v| v["workers"].is_array())
    }

    /// A counter summed over the workers.
    pub fn stat(&self, net: &Net, name: &str) -> u64 {
        let mut v = None;
        wait_for(Duration::from_secs(5), "/stats", || {
            v = self.stats(net);
            v.is_some()
        });
        sum(&v.unwrap(), name)
    }

    /// A counter as published after this call began (workers publish every
    /// 100 ms; `total_cycles` moves on with every publication).
    pub fn fresh_stat(&self, net: &Net, name: &str) -> u64 {
        let first = self.stat(net, "total_cycles");
        let mut v = None;
        wait_for(Duration::from_secs(5), "fresh counters", || {
            v = self.stats(net).filter(|v| sum(v, "total_cycles") > first);
            v.is_some()
        });
        sum(&v.unwrap(), name)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A counter summed over the workers of a `/stats` answer.
pub fn sum(v: &Value, name: &str) -> u64 {
    v["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w[name].as_u64().unwrap_or(0))
        .sum()
}

/// `n` curls from the client namespace, one connection each: their status
/// codes. Those not begun within 60 s are not made, so a stuck instance
/// fails the test, never hangs it.
pub fn short_requests(net: &Net, n: usize) -> Vec<String> {
    net.run(
        "client",
        &format!(
            "end=$((SECONDS + 60)); for i in $(seq {n}); do [ $SECONDS -lt $end ] || break; curl -s --max-time 10 -o /dev/null -w '%{{http_code}}\\n' http://{VIP}/small; done"
        ),
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

/// How many of `codes` are 200.
pub fn oks(codes: &[String]) -> usize {
    codes.iter().filter(|c| *c == "200").count()
}

/// Starts `n` rate-limited downloads of /big from the client namespace,
/// each ending within `max_secs`; each leaves its exit code, headers, body
/// sha256 and curl errors in `tag/`.
pub fn start_long(net: &Net, tag: &str, n: usize, max_secs: u64) -> Child {
    let out = net.dir.join(tag);
    std::fs::create_dir_all(&out).unwrap();
    net.spawn_client(&format!(
        r#"for i in $(seq {n}); do
  ( curl -sS --max-time {max_secs} -D {o}/$i.head http://{VIP}/big 2> {o}/$i.err | sha256sum | cut -c1-64 > {o}/$i.sha
    echo "${{PIPESTATUS[0]}}" > {o}/$i.rc ) &
done
wait"#,
        o = out.display()
    ))
}

/// The downloads of `tag/` (once done): (byte-exact ones, what went wrong
/// with the others).
pub fn long_results(net: &Net, tag: &str, n: usize) -> (usize, Vec<String>) {
    let want = net.big_sha();
    let out = net.dir.join(tag);
    let (mut ok, mut bad) = (0, Vec::new());
    for i in 1..=n {
        let read = |ext: &str| {
            std::fs::read_to_string(out.join(format!("{i}.{ext}")))
                .unwrap_or_default()
                .trim()
                .to_owned()
        };
        if read("rc") == "0" && read("sha") == want {
            ok += 1;
        } else {
            // An error page is a success to curl: name its status line.
            let status = read("head")
                .lines()
                .next()
                .unwrap_or("no response")
                .to_owned();
            bad.push(format!(
                "#{i}: rc {} {} ({status})",
                read("rc"),
                read("err")
            ));
        }
    }
    (ok, bad)
}

/// Short connections in the background until `stop_short`: one curl after
/// another, each status code a line of `out/short`.
pub fn start_short(net: &Net) -> Child {
    let o = net.dir.join("out");
    net.spawn_client(&format!(
        "while [ ! -e {o}/stop ]; do curl -s --max-time 10 -o /dev/null -w '%{{http_code}}\\n' http://{VIP}/small >> {o}/short; done",
        o = o.display()
    ))
}

/// The short connections' codes written so far.
pub fn short_count(net: &Net) -> usize {
    std::fs::read_to_string(net.dir.join("out/short"))
        .unwrap_or_default()
        .lines()
        .count()
}

/// Stops the short connections: every code, in order.
pub fn stop_short(net: &Net, mut short: Child) -> Vec<String> {
    std::fs::write(net.dir.join("out/stop"), "").unwrap();
    let _ = short.wait();
    std::fs::read_to_string(net.dir.join("out/short"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}
