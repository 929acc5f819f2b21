//! Support code for root-only integration tests that run ZProxy inside the netns lab
//! created by `bench/lab.sh` (see that script for the topology).
//!
//! Use from a test file with `mod common;`. This file uses only `std`; the
//! `proxy` module (the lab lock every lab test takes, config builders, curl,
//! zproxy-bench and `zproxy stats` helpers) adds `serde_json` and `libc`;
//! `nginx` starts extra upstream servers, `faults` has the fault tests'
//! clients and configs, `fleet` the fleet tests' network and instances.
//!
//! ```ignore
//! mod common;
//! use common::*;
//!
//! #[test]
//! fn proxies_get() {
//!     if !require_root() { return; }
//!     let lab = Lab::up();                    // torn down on drop, also on panic
//!     let out = lab.exec("upstream", ["curl", "-s", "http://10.72.0.1/"]);
//!     assert!(out.status.success());
//! }
//! ```
#![allow(dead_code)]

pub mod faults;
pub mod fleet;
pub mod nginx;
pub mod proxy;

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Address of `cli0` in the client namespace.
pub const CLIENT_IP: &str = "10.71.0.1";
/// ZProxy's client-facing address (default gateway of the client namespace).
pub const PROXY_CLIENT_IP: &str = "10.71.0.2";
/// Address of `ups0` in the upstream namespace; nginx listens on port 80 there.
pub const UPSTREAM_IP: &str = "10.72.0.1";
/// ZProxy's upstream-facing address (default gateway of the upstream namespace).
pub const PROXY_UPSTREAM_IP: &str = "10.72.0.2";

pub const CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 71, 0, 1);
pub const PROXY_CLIENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 71, 0, 2);
pub const UPSTREAM_ADDR: Ipv4Addr = Ipv4Addr::new(10, 72, 0, 1);
pub const PROXY_UPSTREAM_ADDR: Ipv4Addr = Ipv4Addr::new(10, 72, 0, 2);
/// The client's IPv6 address (`Lab::enable_ipv6`), and the one the IPv6
/// tests give ZProxy's client port, in the same /64.
pub const CLIENT_V6: &str = "2001:db8:71::1";
pub const PORT_V6: &str = "2001:db8:71::2";
/// Prefix length of both lab subnets.
pub const LAB_PREFIX_LEN: u8 = 24;

/// Interface names (fixed; only namespace names carry the lab prefix).
pub const CLIENT_IF: &str = "cli0"; // in <prefix>-client
pub const PROXY_CLIENT_IF: &str = "cli1"; // in <prefix>-proxy, peer of cli0
pub const PROXY_UPSTREAM_IF: &str = "ups1"; // in <prefix>-proxy, peer of ups0
pub const UPSTREAM_IF: &str = "ups0"; // in <prefix>-upstream

/// Body nginx in the upstream namespace returns for `GET /`.
pub const UPSTREAM_BODY: &str = "hello from upstream\n";
/// Sizes N served as `/bytes/N` (N bytes of 'x') by the upstream nginx.
pub const UPSTREAM_BYTES_SIZES: [usize; 5] = [100, 1000, 10_000, 100_000, 1_000_000];

/// Where lab.sh keeps per-lab runtime files (nginx config, logs, pid file).
pub const LAB_RUN_ROOT: &str = "/run/zproxy-lab";

/// Root of the repository (the root crate's manifest dir).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Path of `bench/lab.sh`.
pub fn lab_script() -> PathBuf {
    repo_root().join("bench/lab.sh")
}

/// Path of `hugepages/setup.sh`.
pub fn hugepages_script() -> PathBuf {
    repo_root().join("hugepages/setup.sh")
}

/// True when the effective uid is 0.
pub fn is_root() -> bool {
    if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
        for line in status.lines() {
            if let Some(rest) = line.strip_prefix("Uid:") {
                // real, effective, saved, fs
                if let Some(euid) = rest.split_whitespace().nth(1) {
                    return euid == "0";
                }
            }
        }
    }
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Returns true when the test may go on. When not root: prints a skip notice and returns
/// false, except under CI (env `CI` set), where it panics: CI must run these tests.
pub fn require_root() -> bool {
    if is_root() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("this test needs root, and CI is set: CI must run it as root");
    }
    eprintln!("skipping: needs root (network namespaces, hugepages)");
    false
}

/// Polls `cond` every 20 ms until it returns true (-> true) or `timeout` passes (-> false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        // The polling interval (the condition is what is waited for).
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `cond` until it returns true; panics saying it waited for `what`
/// if it does not within `timeout`. Tests wait on conditions like this,
/// never on a sleep (a sleep is for pacing a client or holding a period).
pub fn wait_for(timeout: Duration, what: &str, cond: impl FnMut() -> bool) {
    let t = Instant::now();
    assert!(
        wait_until(timeout, cond),
        "gave up after {:?} waiting for {what}",
        t.elapsed()
    );
}

/// Formats a command's output for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "status {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Names of all network namespaces (`ip netns list`).
pub fn netns_list() -> Vec<String> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("run `ip netns list`");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

static LAB_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A running lab (three namespaces, two veth pairs, nginx upstream). `bench/lab.sh down`
/// runs on drop, also when the test panics; it kills whatever still runs in the namespaces.
pub struct Lab {
    pub prefix: String,
    /// veth queue count the lab was created with.
    pub queues: usize,
}

impl Lab {
    /// Brings up a lab with a unique prefix and single-queue veths. Panics on failure.
    pub fn up() -> Lab {
        Lab::up_with_queues(1)
    }

    /// Brings up a lab whose veth pairs have `queues` rx and tx queues (LAB_QUEUES).
    pub fn up_with_queues(queues: usize) -> Lab {
        let n = LAB_COUNTER.fetch_add(1, Ordering::SeqCst);
        // e.g. "zt123456-0": namespaces "zt123456-0-upstream"; interface names are fixed.
        let prefix = format!("zt{}-{}", std::process::id(), n);
        let out = Command::new("bash")
            .arg(lab_script())
            .args(["--prefix", &prefix, "up"])
            .env("LAB_QUEUES", queues.to_string())
            .stdin(Stdio::null())
            .output()
            .expect("run bench/lab.sh up");
        // lab.sh cleans up after itself when `up` fails.
        assert!(
            out.status.success(),
            "bench/lab.sh --prefix {prefix} up failed: {}",
            describe(&out)
        );
        Lab { prefix, queues }
    }

    /// Namespace name for role "client", "proxy" or "upstream".
    pub fn ns(&self, role: &str) -> String {
        assert!(
            matches!(role, "client" | "proxy" | "upstream"),
            "unknown lab role {role:?} (client, proxy, upstream)"
        );
        format!("{}-{}", self.prefix, role)
    }

    /// A `Command` that runs `program` inside the role's namespace (`ip netns exec`).
    pub fn command(&self, role: &str, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.arg("netns").arg("exec").arg(self.ns(role)).arg(program);
        c
    }

    fn command_args<I, S>(&self, role: &str, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new("ip");
        c.arg("netns").arg("exec").arg(self.ns(role)).args(args);
        c
    }

    /// Runs `args` (program first) in the role's namespace and waits for it.
    pub fn exec<I, S>(&self, role: &str, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command_args(role, args)
            .stdin(Stdio::null())
            .output()
            .expect("run ip netns exec")
    }

    /// Like `exec` but panics unless the command succeeds; returns its stdout.
    pub fn exec_ok<I, S>(&self, role: &str, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let out = self.exec(role, &args);
        assert!(
            out.status.success(),
            "in {}: {:?} failed: {}",
            self.ns(role),
            args,
            describe(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts `args` in the role's namespace (stdin null, stdout/stderr inherited).
    /// Whatever is still running at drop time is killed by `lab.sh down`.
    pub fn spawn<I, S>(&self, role: &str, args: I) -> Child
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command_args(role, args)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn ip netns exec")
    }

    /// IPv6 on in the role's namespace (the lab turns it off everywhere), and
    /// `addr`/64 on its `ifc` (no DAD: usable at once).
    pub fn enable_ipv6(&self, role: &str, ifc: &str, addr: &str) {
        self.exec_ok(
            role,
            [
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=0",
                "net.ipv6.conf.default.disable_ipv6=0",
                &format!("net.ipv6.conf.{ifc}.disable_ipv6=0"),
            ],
        );
        self.exec_ok(
            role,
            [
                "ip",
                "-6",
                "addr",
                "add",
                &format!("{addr}/64"),
                "dev",
                ifc,
                "nodad",
            ],
        );
    }

    /// Runtime dir of this lab (nginx.conf, access.log, error.log, nginx.pid).
    pub fn run_dir(&self) -> PathBuf {
        Path::new(LAB_RUN_ROOT).join(&self.prefix)
    }

    /// Requests logged so far by the upstream nginx.
    pub fn upstream_access_log_lines(&self) -> usize {
        std::fs::read_to_string(self.run_dir().join("access.log"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// Runs `bench/lab.sh --prefix P ARGS...` for this lab.
    pub fn script(&self, args: &[&str]) -> Output {
        Command::new("bash")
            .arg(lab_script())
            .args(["--prefix", &self.prefix])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run bench/lab.sh")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        match Command::new("bash")
            .arg(lab_script())
            .args(["--prefix", &self.prefix, "down"])
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!("lab {}: down failed: {}", self.prefix, describe(&out)),
            Err(e) => eprintln!("lab {}: could not run lab.sh down: {e}", self.prefix),
        }
    }
}

/// A temporary directory removed on drop (also when the test panics).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = LAB_COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("zproxy-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `zproxy run` inside a lab's proxy namespace, its output in a log file.
/// Killed on drop if still running.
pub struct ZProxy {
    child: Option<Child>,
    pub log_path: PathBuf,
}

impl ZProxy {
    /// Writes `config` into the lab's run dir and starts zproxy on it; waits
    /// until the worker polls (panics with the log if it exits or stalls).
    pub fn start(lab: &Lab, name: &str, config: &str) -> ZProxy {
        let free = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("HugePages_Free:"))
                    .map(|v| v.trim().parse::<u64>().unwrap_or(0))
            })
            .unwrap_or(0);
        assert!(
            free >= 64,
            "needs free hugepages ({free} free): run `hugepages/setup.sh` first"
        );
        let cfg_path = lab.run_dir().join(format!("{name}.toml"));
        std::fs::write(&cfg_path, config).expect("write zproxy config");
        let log_path = lab.run_dir().join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path).expect("create zproxy log");
        let child = lab
            .command("proxy", env!("CARGO_BIN_EXE_zproxy"))
            .args(["run", "-c"])
            .arg(&cfg_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn zproxy");
        let mut z = ZProxy {
            child: Some(child),
            log_path,
        };
        let ready = wait_until(Duration::from_secs(20), || {
            z.log().contains("polling") || z.child.as_mut().unwrap().try_wait().unwrap().is_some()
        });
        assert!(
            ready && z.log().contains("polling"),
            "zproxy did not come up:\n{}",
            z.log()
        );
        z
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// True while the process has not exited.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().expect("try_wait zproxy").is_none())
    }

    /// Sends `signal` and waits (up to 20 s) for exit; returns (success, log).
    pub fn stop(mut self, signal: &str) -> (bool, String) {
        let mut child = self.child.take().expect("running");
        // `ip netns exec` execs zproxy, so the child pid is zproxy's.
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status();
        let mut status = None;
        wait_until(Duration::from_secs(20), || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        let status = match status {
            Some(s) => s,
            None => {
                let _ = child.kill();
                panic!(
                    "zproxy did not exit within 20 s of SIG{signal}:\n{}",
                    self.log()
                );
            }
        };
        (
            status.success(),
            format!("{}\n(exit: {status})", self.log()),
        )
    }
}

impl Drop for ZProxy {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Path of a workspace binary built next to this test (e.g. "zproxy-bench").
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join(name);
    assert!(
        bin.exists(),
        "{} not built: run `cargo build --workspace` (or the README's test command)",
        bin.display()
    );
    bin
}
