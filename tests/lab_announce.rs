//! `[announce]` end to end: BIRD in two namespaces of our own joined by a
//! veth (a proxy-side BIRD with the shipped `configs/bird-proxy.conf`, a
//! router BIRD with `configs/bird-router.conf`), ZProxy in the usual lab
//! driving the proxy-side BIRD's control socket. The router's `birdc show
//! route` has the VIP while the upstream is healthy, loses it when the
//! upstream stops, has it again after recovery, and loses it when SIGTERM
//! starts a drain (ZProxy still running, one connection still open).
//!
//! BGP runs over the plain veth, not through ZProxy's data path (that needs
//! the exception path, #16). Root only; takes the lab lock.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::nginx::Nginx;
use common::proxy::*;
use common::*;

const VIP: &str = "10.99.0.1/32";
const PROXY_SIDE: &str = "10.98.0.1";
const ROUTER: &str = "10.98.0.2";

/// Two namespaces with a BIRD each; everything is removed on drop, also
/// when the test panics.
struct Bgp {
    ns: [String; 2],
    dir: PathBuf,
}

impl Bgp {
    fn up() -> Bgp {
        let id = std::process::id();
        let bgp = Bgp {
            ns: [format!("za{id}-bp"), format!("za{id}-br")],
            dir: std::env::temp_dir().join(format!("zp-announce-{id}")),
        };
        std::fs::create_dir_all(&bgp.dir).unwrap();
        for ns in &bgp.ns {
            run(&["ip", "netns", "add", ns]);
        }
        let (a, r) = (&bgp.ns[0], &bgp.ns[1]);
        run(&[
            "ip", "link", "add", "bgp0", "netns", a, "type", "veth", "peer", "name", "bgp0",
            "netns", r,
        ]);
        for (ns, ip) in [(a, PROXY_SIDE), (r, ROUTER)] {
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/30"),
                "dev",
                "bgp0",
            ]);
            run(&["ip", "-n", ns, "link", "set", "bgp0", "up"]);
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        // The shipped configs, on this link's addresses.
        for name in ["proxy", "router"] {
            let text =
                std::fs::read_to_string(repo_root().join(format!("configs/bird-{name}.conf")))
                    .unwrap()
                    .replace("192.0.2.10", PROXY_SIDE)
                    .replace("192.0.2.1", ROUTER);
            std::fs::write(bgp.dir.join(format!("{name}.conf")), text).unwrap();
            bgp.start(name);
        }
        bgp
    }

    /// Starts the BIRD `name` ("proxy" or "router") in its namespace.
    fn start(&self, name: &str) {
        let ns = &self.ns[usize::from(name == "router")];
        let conf = self.dir.join(format!("{name}.conf"));
        let sock = self.socket(name);
        let pid = self.dir.join(format!("{name}.pid"));
        run(&[
            "ip",
            "netns",
            "exec",
            ns,
            "bird",
            "-c",
            conf.to_str().unwrap(),
            "-s",
            sock.to_str().unwrap(),
            "-P",
            pid.to_str().unwrap(),
        ]);
    }

    /// Stops the BIRD `name` and waits until it is gone.
    fn stop(&self, name: &str) {
        let pid: i32 = std::fs::read_to_string(self.dir.join(format!("{name}.pid")))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // SAFETY: kill(2) of the BIRD this test started (its pid file).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        wait_for(Duration::from_secs(10), "BIRD to exit", || {
            !Path::new(&format!("/proc/{pid}")).exists()
        });
    }

    fn socket(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.ctl"))
    }

    fn birdc(&self, name: &str, cmd: &str) -> String {
        let out = Command::new("birdc")
            .arg("-s")
            .arg(self.socket(name))
            .args(cmd.split(' '))
            .output()
            .expect("run birdc");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The router has a route to the VIP (learned by BGP from the proxy side).
    fn router_has_vip(&self) -> bool {
        let out = self.birdc("router", &format!("show route {VIP}"));
        out.lines()
            .any(|l| l.starts_with(VIP) && l.contains("[zproxy1"))
    }
}

impl Drop for Bgp {
    fn drop(&mut self) {
        for name in ["proxy", "router"] {
            if let Some(pid) = std::fs::read_to_string(self.dir.join(format!("{name}.pid")))
                .ok()
                .and_then(|p| p.trim().parse::<i32>().ok())
            {
                // SAFETY: kill(2) of the BIRD this test started (its pid file).
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
        }
        for ns in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", describe(&out));
}

fn announce_stats(lab: &Lab) -> serde_json::Value {
    stats(lab)["announce"].clone()
}

/// Time until `cond`, panicking with `what` after `timeout`.
fn time_until(timeout: Duration, what: &str, cond: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    wait_for(timeout, what, cond);
    t.elapsed()
}

#[test]
fn the_vip_follows_health_and_drain() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let bgp = Bgp::up();
    wait_for(Duration::from_secs(30), "the BGP session", || {
        bgp.birdc("router", "show protocols zproxy1")
            .contains("Established")
    });
    assert!(
        !bgp.router_has_vip(),
        "announced before ZProxy said so: {}",
        bgp.birdc("router", "show route")
    );

    let web = Nginx::named(&lab, "vipweb", "10.72.0.7");
    let body = listener(80, "http", "web")
        + &upstream(
            "web",
            &[("10.72.0.7:80", 1)],
            "[upstream.health_check]\nkind = \"tcp\"\ninterval_ms = 300\ntimeout_ms = 300\nfall = 2\nrise = 2\n",
        )
        + &format!(
            "\n[announce]\nvip = \"{VIP}\"\nlisteners = [\"client:80\"]\nbird_socket = \"{}\"\nhold_down_ms = 1500\n",
            bgp.socket("proxy").display()
        );
    let cfg = config(16384, &body).replace(
        "[runtime]\n",
        "[management]\ndrain_timeout_ms = 8000\n\n[runtime]\n",
    );
    let z = ZProxy::start(&lab, "zproxy", &cfg);
    wait_proxy(&lab, &z, 80);
    let t = time_until(Duration::from_secs(15), "the VIP at the router", || {
        bgp.router_has_vip()
    });
    eprintln!("announced {t:?} after the proxy answered");
    let a = announce_stats(&lab);
    assert_eq!(a["announced"], 1, "{a}");
    assert_eq!(a["transitions"], 1, "{a}");

    // The upstream goes: two failed checks (2 x 300 ms) mark it down, and
    // the VIP goes at once.
    web.stop(&lab);
    let t = time_until(Duration::from_secs(10), "the withdrawal", || {
        !bgp.router_has_vip()
    });
    eprintln!("withdrawn {t:?} after the upstream stopped (checks: 2 x 300 ms)");
    assert!(
        z.log()
            .contains("a followed upstream group has no healthy server"),
        "{}",
        z.log()
    );

    // Back: announced again after rise (2 checks) and the hold-down.
    web.launch(&lab);
    let t = time_until(Duration::from_secs(15), "the re-announcement", || {
        bgp.router_has_vip()
    });
    eprintln!("announced again {t:?} after the upstream came back (hold-down 1500 ms)");
    assert!(
        t >= Duration::from_millis(1500),
        "the hold-down was not held: {t:?}"
    );
    let a = announce_stats(&lab);
    assert_eq!(a["transitions"], 3, "{a}");

    // The host's BIRD goes away: logged, retried, and the proxy serves on.
    // Restarted, it comes up with the protocol disabled; ZProxy enables it
    // again and the router learns the VIP once BGP is back.
    bgp.stop("proxy");
    wait_for(
        Duration::from_secs(20),
        "the BIRD error in the log (at the next resync, 10 s)",
        || {
            z.log().contains("announce: could not announce VIP 10.99.0.1/32: cannot connect to BIRD's control socket")
        },
    );
    assert_eq!(curl(&lab, &["-s", &url(80, "/")]).0, 200, "{}", z.log());
    assert!(!bgp.router_has_vip());
    bgp.start("proxy");
    wait_for(
        Duration::from_secs(30),
        "the VIP after BIRD's restart",
        || bgp.router_has_vip(),
    );
    assert!(
        z.log()
            .contains("announce: BIRD carries out commands again"),
        "{}",
        z.log()
    );

    // SIGTERM with a connection open: the drain keeps ZProxy running, and
    // the VIP is already gone.
    let (holder, opened) = Holder::open(&lab, 80, 1);
    assert_eq!(opened, "open 1 errors 0");
    // Workers publish their counters every 100 ms: the drain must see it.
    wait_for(
        Duration::from_secs(5),
        "the held connection in the counters",
        || stat(&lab, "flows_active") >= 1,
    );
    let pid = z.pid();
    // SAFETY: kill(2) of the zproxy this test started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    wait_for(
        Duration::from_secs(5),
        "the withdrawal at drain start",
        || !bgp.router_has_vip(),
    );
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "zproxy left before the check"
    );
    let log = z.log();
    assert!(
        log.contains("withdrawn (BIRD protocol 'zproxy_vip' disabled): draining"),
        "{log}"
    );
    assert!(
        !log.contains("stopping: waiting for the workers"),
        "not draining any more:\n{log}"
    );
    holder.close();
    let (ok, log) = z.stop("TERM");
    assert!(ok, "{log}");
    assert!(!bgp.router_has_vip());
}
