//! ZProxy as a service: run as an unprivileged user with only the
//! capabilities it checks for, sd_notify readiness (a datagram socket as
//! NOTIFY_SOCKET), and the shipped unit under a real systemd
//! (`systemd-nspawn --boot` of this machine's /usr with a copy of /etc),
//! plus the unit's `systemd-analyze security` exposure.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::proxy::*;
use common::*;

fn unit_file() -> PathBuf {
    repo_root().join("packaging/zproxy.service")
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

// ---- the unit's exposure ----------------------------------------------------------------

#[test]
fn unit_exposure_is_at_most_5() {
    // --threshold is in tenths: 50 fails the run above an exposure of 5.0.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=50"])
        .arg(unit_file())
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for zproxy.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {}", describe(&out)));
    assert!(
        out.status.success() && score <= 5.0,
        "exposure {score} (over 5.0?): {}",
        describe(&out)
    );
}

// ---- unprivileged, with NOTIFY_SOCKET -----------------------------------------------------

/// Capability bits of CAP_NET_ADMIN (12) and CAP_NET_RAW (13).
const NET_ADMIN_RAW: u64 = (1 << 12) | (1 << 13);

/// "Uid:" and "CapEff:" from a process's /proc/PID/status.
fn uid_and_caps(status: &str) -> (String, u64) {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let uid = field("Uid:")
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_owned();
    let caps = u64::from_str_radix(&field("CapEff:"), 16).expect("CapEff hex");
    (uid, caps)
}

fn next_message(sock: &UnixDatagram, what: &str, log: &Path) -> String {
    let mut buf = [0u8; 4096];
    match sock.recv(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(e) => panic!(
            "no notification ({what}) from zproxy: {e}; its log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        ),
    }
}

#[test]
fn runs_unprivileged_and_notifies_ready_and_stopping() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let dir = TempDir::new("notify");
    chmod(dir.path(), 0o755);
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind the notify socket");
    // zproxy runs as nobody: it must be able to send to the socket.
    chmod(&sock_path, 0o777);
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let cfg = dir.path().join("zproxy.toml");
    std::fs::write(&cfg, config(16384, &web(""))).unwrap();
    chmod(&cfg, 0o644);
    let log = lab.run_dir().join("unprivileged.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let caps = "-all,+net_raw,+net_admin";
    let mut child = lab
        .command("proxy", "setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(format!("--inh-caps={caps}"))
        .arg(format!("--ambient-caps={caps}"))
        .arg(format!("--bounding-set={caps}"))
        .arg(env!("CARGO_BIN_EXE_zproxy"))
        .arg("run")
        .arg("-c")
        .arg(&cfg)
        .env("NOTIFY_SOCKET", &sock_path)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().unwrap())
        .stderr(log_file)
        .spawn()
        .expect("spawn setpriv zproxy");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();

    let ready = next_message(&sock, "READY=1", &log);
    // READY=1 is the first word zproxy says, and only once the ports are
    // up and the worker polls.
    assert!(
        ready.lines().any(|l| l == "READY=1"),
        "first message: {ready:?}"
    );
    let at_ready = read_log();
    assert!(
        at_ready.contains("polling") && at_ready.contains("link up"),
        "READY=1 before the ports were up and the worker polled:\n{at_ready}"
    );
    // setpriv execs zproxy: the child's pid is zproxy's.
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    let (uid, eff) = uid_and_caps(&status);
    assert_eq!(
        (uid.as_str(), eff),
        ("65534", NET_ADMIN_RAW),
        "not nobody with CAP_NET_RAW and CAP_NET_ADMIN only"
    );
    // Serving at READY=1: the first request, no retry.
    let (code, body) = curl(&lab, &[&url(80, "/")]);
    assert_eq!(
        (code, body.as_str()),
        (200, UPSTREAM_BODY),
        "log:\n{}",
        read_log()
    );

    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let stopping = next_message(&sock, "STOPPING=1", &log);
    assert!(
        stopping.lines().any(|l| l == "STOPPING=1"),
        "after SIGTERM: {stopping:?}"
    );
    let status = wait_exit(&mut child, &read_log);
    let out = read_log();
    assert!(status.success() && out.contains(" 0 leaked"), "{out}");
}

fn wait_exit(child: &mut Child, log: &dyn Fn() -> String) -> std::process::ExitStatus {
    let mut status = None;
    wait_until(Duration::from_secs(20), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    status.unwrap_or_else(|| {
        let _ = child.kill();
        panic!("zproxy did not exit within 20 s of SIGTERM:\n{}", log())
    })
}

// ---- the unit under a real systemd ------------------------------------------------------

/// A booted systemd in a container (`systemd-nspawn --boot`) whose root is
/// made of this machine's /usr (read-only) and a copy of its /etc. It shares
/// the host's network namespace and sees /run/netns, so a unit can join a
/// lab namespace (NetworkNamespacePath=). Powered off on drop.
struct Container {
    nspawn: Option<Child>,
    leader: u32,
    name: String,
    log: PathBuf,
    _root: TempDir,
}

impl Container {
    /// `install(root)` puts files into the tree before the boot.
    fn boot(name: &str, install: impl FnOnce(&Path)) -> Container {
        let root = TempDir::new("nspawn");
        let r = root.path();
        for d in ["bin", "sbin", "lib", "lib64"] {
            std::os::unix::fs::symlink(format!("usr/{d}"), r.join(d)).unwrap();
        }
        for d in [
            "usr",
            "var",
            "run",
            "tmp",
            "proc",
            "sys",
            "dev",
            "root",
            "usr-local",
        ] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        let cp = Command::new("cp")
            .args(["-a", "/etc"])
            .arg(r.join("etc"))
            .output()
            .unwrap();
        assert!(cp.status.success(), "copy /etc: {}", describe(&cp));
        let etc = r.join("etc");
        // Its own machine id (journal), os-release without the /usr link
        // (nspawn checks it before /usr is mounted), and nothing of the
        // host's services (nginx, haproxy, ...) started at boot.
        std::fs::write(etc.join("machine-id"), "").unwrap();
        let _ = std::fs::remove_file(etc.join("os-release"));
        std::fs::copy("/usr/lib/os-release", etc.join("os-release")).unwrap();
        let wants = etc.join("systemd/system/multi-user.target.wants");
        let _ = std::fs::remove_dir_all(&wants);
        std::fs::create_dir_all(&wants).unwrap();
        install(r);

        let log = r.with_extension("console.log");
        let console = std::fs::File::create(&log).unwrap();
        let nspawn = Command::new("systemd-nspawn")
            .arg("-D")
            .arg(r)
            .args(["--register=no", "--keep-unit", "-M", name])
            // The host's network namespace drops CAP_NET_ADMIN from
            // the container's bounding set unless asked for.
            .args(["--capability=CAP_NET_ADMIN,CAP_IPC_LOCK", "--bind-ro=/usr"])
            .arg(format!(
                "--bind-ro={}:/usr/local",
                r.join("usr-local").display()
            ))
            .args(["--bind=/run/netns", "--boot"])
            .stdin(Stdio::null())
            .stdout(console.try_clone().unwrap())
            .stderr(console)
            .spawn()
            .expect("systemd-nspawn (Debian package systemd-container; tests/deps.sh)");
        let mut c = Container {
            leader: 0,
            name: name.to_owned(),
            nspawn: Some(nspawn),
            log,
            _root: root,
        };
        let pid = c.nspawn.as_ref().unwrap().id();
        let children = format!("/proc/{pid}/task/{pid}/children");
        // nspawn's first child may be a helper that goes away: wait for
        // the one that runs systemd.
        wait_for(Duration::from_secs(20), "the container's init", || {
            c.leader = std::fs::read_to_string(&children)
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse().ok())
                .unwrap_or(0);
            let comm = std::fs::read_to_string(format!("/proc/{}/comm", c.leader));
            c.leader != 0 && comm.is_ok_and(|c| c.trim() == "systemd")
        });
        let mut state = String::new();
        let booted = wait_until(Duration::from_secs(60), || {
            state = String::from_utf8_lossy(&c.exec(&["systemctl", "is-system-running"]).stdout)
                .trim()
                .to_owned();
            state == "running" || state == "degraded"
        });
        assert!(
            booted,
            "the container's systemd did not finish booting (state {state:?}); console:\n{}",
            c.console()
        );
        c
    }

    /// Runs a command inside the container (its mount, pid, ipc, uts namespaces).
    fn exec(&self, args: &[&str]) -> Output {
        Command::new("nsenter")
            .args(["-t", &self.leader.to_string(), "-m", "-u", "-i", "-p", "--"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("nsenter")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "{args:?} in the container: {}\njournal:\n{}",
            describe(&out),
            self.journal()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn show(&self, property: &str) -> String {
        self.ok(&["systemctl", "show", "-p", property, "--value", "zproxy"])
            .trim()
            .to_owned()
    }

    fn journal(&self) -> String {
        let out = self.exec(&["journalctl", "-u", "zproxy", "--no-pager", "-o", "cat"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn console(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let Some(mut nspawn) = self.nspawn.take() else {
            return;
        };
        if self.leader != 0 {
            let _ = self.exec(&["systemctl", "poweroff"]);
        }
        if !wait_until(Duration::from_secs(30), || {
            nspawn.try_wait().ok().flatten().is_some()
        }) {
            let _ = nspawn.kill();
            let _ = nspawn.wait();
        }
        let _ = std::fs::remove_file(&self.log);
        // nspawn leaves this (empty) directory behind when it cannot unmount it.
        let _ = std::fs::remove_dir(format!("/run/systemd/nspawn/propagate/{}", self.name));
    }
}

fn copy(from: &Path, to: &Path, mode: u32) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
    chmod(to, mode);
}

#[test]
fn the_unit_under_systemd_starts_ready_reloads_and_stops() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let proxy_ns = lab.ns("proxy");
    let ct = Container::boot(&format!("zpsvc{}", std::process::id()), |root| {
        // Installed as INSTALL.md says, under the container's root.
        let local = root.join("usr-local/sbin");
        copy(
            Path::new(env!("CARGO_BIN_EXE_zproxy")),
            &local.join("zproxy"),
            0o755,
        );
        copy(&hugepages_script(), &local.join("zproxy-hugepages"), 0o755);
        let etc = root.join("etc");
        std::fs::create_dir_all(etc.join("zproxy")).unwrap();
        std::fs::write(etc.join("zproxy/zproxy.toml"), config(16384, &web(""))).unwrap();
        chmod(&etc.join("zproxy/zproxy.toml"), 0o644);
        copy(
            &unit_file(),
            &etc.join("systemd/system/zproxy.service"),
            0o644,
        );
        let sysusers = Command::new("systemd-sysusers")
            .arg(format!("--root={}", root.display()))
            .arg(repo_root().join("packaging/zproxy.sysusers"))
            .output()
            .expect("systemd-sysusers");
        assert!(sysusers.status.success(), "{}", describe(&sysusers));
        // The lab's namespace; and the hugepage step checks instead of
        // reserving, because the container's /sys is read-only.
        let dropin = etc.join("systemd/system/zproxy.service.d");
        std::fs::create_dir_all(&dropin).unwrap();
        std::fs::write(
            dropin.join("lab.conf"),
            format!(
                "[Service]\nNetworkNamespacePath=/run/netns/{proxy_ns}\nExecStartPre=\n\
                 ExecStartPre=+/usr/local/sbin/zproxy-hugepages --check --pages 64\n\
                 ExecStartPre=/usr/local/sbin/zproxy check -c /etc/zproxy/zproxy.toml\n"
            ),
        )
        .unwrap();
    });

    // Active only after READY=1: while it is starting, systemd says
    // "activating"; once "active", the worker already polls.
    ct.ok(&["systemctl", "start", "--no-block", "zproxy"]);
    let mut states = Vec::new();
    wait_for(
        Duration::from_secs(90),
        "zproxy.service to become active",
        || {
            let s = ct.show("ActiveState");
            if states.last() != Some(&s) {
                states.push(s.clone());
            }
            assert!(
                // A failed start shows as "activating (auto-restart)".
                (s == "activating" || s == "active") && ct.show("NRestarts") == "0",
                "zproxy.service went {states:?}, restarts {}; journal:\n{}",
                ct.show("NRestarts"),
                ct.journal()
            );
            s == "active"
        },
    );
    let journal = ct.journal();
    let polling = journal
        .find("polling")
        .expect("no 'polling' in the journal");
    let started = journal
        .find("Started zproxy.service")
        .unwrap_or_else(|| panic!("not started:\n{journal}"));
    assert!(
        polling < started,
        "active before the worker polled:\n{journal}"
    );
    assert_eq!(ct.show("StatusText"), "serving: 1 worker(s) polling");
    // As the unit says: user zproxy, three capabilities.
    let pid = ct.show("MainPID");
    let (uid, eff) = uid_and_caps(&ct.ok(&["cat", &format!("/proc/{pid}/status")]));
    assert_ne!(uid, "0", "runs as root");
    assert_eq!(
        eff,
        NET_ADMIN_RAW | (1 << 14),
        "CapEff is not NET_RAW|NET_ADMIN|IPC_LOCK"
    );

    // Curl through it.
    let (code, body) = curl(&lab, &[&url(80, "/")]);
    assert_eq!(
        (code, body.as_str()),
        (200, UPSTREAM_BODY),
        "{}",
        ct.journal()
    );

    // `systemctl reload` (ExecReload): the group now points at a port where
    // nothing listens, so requests fail with a 5xx.
    let cfg = ct._root.path().join("etc/zproxy/zproxy.toml");
    let moved = upstream("web", &[("10.72.0.1:81", 1)], "");
    std::fs::write(&cfg, config(16384, &(listener(80, "http", "web") + &moved))).unwrap();
    ct.ok(&["systemctl", "reload", "zproxy"]);
    assert_eq!(ct.show("ActiveState"), "active");
    assert!(
        ct.journal()
            .contains("SIGHUP: reloaded /etc/zproxy/zproxy.toml"),
        "{}",
        ct.journal()
    );
    assert_eq!(ct.show("StatusText"), "reloaded");
    let mut code = 0;
    let applied = wait_until(Duration::from_secs(10), || {
        code = curl(&lab, &[&url(80, "/")]).0;
        code >= 500
    });
    assert!(applied, "still {code} after the reload:\n{}", ct.journal());

    // `systemctl stop`: SIGTERM drains, zproxy exits 0, nothing leaked.
    ct.ok(&["systemctl", "stop", "zproxy"]);
    let journal = ct.journal();
    assert!(
        journal.contains("SIGTERM: refusing new connections") && journal.contains(" 0 leaked"),
        "{journal}"
    );
    assert_eq!(ct.show("Result"), "success", "{journal}");
    assert_eq!(ct.show("ExecMainStatus"), "0", "{journal}");
}
