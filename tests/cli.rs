//! The command line as an operator meets it: `check` output, config errors,
//! `--version`, and `run` refusing politely before touching any device.

use std::process::Command;

mod common;

fn zproxy(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_zproxy"))
        .args(args)
        .output()
        .expect("run zproxy");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn check_prints_the_resolved_plan() {
    let (ok, out, err) = zproxy(&["check", "-c", &repo("configs/lab.toml")]);
    assert!(ok, "{err}");
    for want in [
        "configs/lab.toml: OK",
        "EAL arguments: zproxy --lcores 0@0,1@1 --main-lcore 0",
        "--in-memory --no-pci --vdev net_af_packet0,iface=cli1,qpairs=1",
        "port 'upstream': net_af_packet1,iface=ups1,qpairs=1 address 10.72.0.2/24",
        "listener: port 'client' tcp 80 mode Http",
        "listener: port 'client' tcp 81 mode Tcp",
        "listener: port 'client' tcp 8080 mode Static",
        "worker 0: lcore 1 on CPU 1 (node 0) polls queue 0 of client (node unknown), upstream (node unknown)",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
}

#[test]
fn a_bad_config_names_file_line_and_fix() {
    let dir = common::TempDir::new("cli");
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(repo("configs/lab.toml"))
        .unwrap()
        .replace("tcp_port = 81", "tcp_port = 81\ntimeout = 5");
    std::fs::write(&bad, text).unwrap();
    for cmd in ["check", "run"] {
        let (ok, _, err) = zproxy(&[cmd, "-c", bad.to_str().unwrap()]);
        assert!(!ok);
        assert!(
            err.contains("bad.toml: line ")
                && err.contains("unknown field `timeout`, expected one of"),
            "{cmd}: {err}"
        );
    }
    let (ok, _, err) = zproxy(&["check", "-c", "/nonexistent/zproxy.toml"]);
    assert!(
        !ok && err.contains("/nonexistent/zproxy.toml: cannot read config file"),
        "{err}"
    );
}

#[test]
fn check_refuses_a_binding_on_a_cpu_that_does_not_exist() {
    let dir = common::TempDir::new("cli-cpu");
    let bad = dir.path().join("cpu.toml");
    let text = std::fs::read_to_string(repo("configs/lab.toml"))
        .unwrap()
        .replace(
            "worker_lcores = [1]",
            "worker_lcores = [1]\nworker_cpus = [4095]",
        );
    std::fs::write(&bad, text).unwrap();
    let (ok, _, err) = zproxy(&["check", "-c", bad.to_str().unwrap()]);
    assert!(
        !ok && err.contains("worker binding: worker CPU 4095 does not exist"),
        "{err}"
    );
}

#[test]
fn check_with_cores_auto_binds_every_cpu_but_the_control_one() {
    let dir = common::TempDir::new("cli-auto");
    let path = dir.path().join("auto.toml");
    let text = std::fs::read_to_string(repo("configs/lab.toml"))
        .unwrap()
        .replace("worker_lcores = [1]", "cores = \"auto\"");
    std::fs::write(&path, text).unwrap();
    let (ok, out, err) = zproxy(&["check", "-c", path.to_str().unwrap()]);
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    let cpus = zproxy::topology::parse_cpulist(&online);
    let expected = cpus.iter().filter(|&&c| c != 0).count();
    if expected == 0 {
        assert!(!ok && err.contains("no CPU for workers"), "{err}");
        return;
    }
    assert!(ok, "{err}");
    assert_eq!(out.matches("polls queue").count(), expected, "{out}");
    assert!(
        !out.lines()
            .any(|l| l.starts_with("worker") && l.contains("on CPU 0 ")),
        "no worker on the control CPU: {out}"
    );
    assert!(
        out.contains(&format!("worker 0: lcore {0} on CPU {0}", cpus[1])),
        "{out}"
    );
}

#[test]
fn version_and_help() {
    let (ok, out, _) = zproxy(&["--version"]);
    assert!(ok && out.starts_with("zproxy "), "{out}");
    let (ok, out, _) = zproxy(&["--help"]);
    assert!(
        ok && out.contains("run") && out.contains("check") && out.contains("stats"),
        "{out}"
    );
}

/// Without root and without the capabilities its af_packet ports need,
/// `run` names each one and why, before EAL touches anything.
#[test]
fn run_names_missing_capabilities_before_touching_devices() {
    let check = |err: &str| {
        assert!(
            err.contains("lacks the capabilities its ports need")
                && err.contains("CAP_NET_RAW (port 'client': net_af_packet opens a packet socket)")
                && err.contains("CAP_NET_ADMIN")
                && err.contains("AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN")
                && !err.contains("EAL:"),
            "{err}"
        );
    };
    if !common::is_root() {
        // Already unprivileged (and, as a rule, without capabilities).
        let (ok, _, err) = zproxy(&["run", "-c", &repo("configs/lab.toml")]);
        assert!(!ok);
        check(&err);
        return;
    }
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            env!("CARGO_BIN_EXE_zproxy"),
            "run",
            "-c",
        ])
        .arg(repo("configs/lab.toml"))
        .output()
        .expect("setpriv (util-linux)");
    assert!(!out.status.success());
    check(&String::from_utf8_lossy(&out.stderr));
}

#[test]
fn stats_explains_an_unreachable_endpoint() {
    let (ok, _, err) = zproxy(&["stats", "--address", "127.0.0.1:1"]);
    assert!(
        !ok && err.contains("cannot reach the management endpoint at 127.0.0.1:1"),
        "{err}"
    );
}

#[test]
fn check_output_into_a_closed_pipe_exits_quietly() {
    use std::process::Stdio;
    // `zproxy check -c X | head -1`, with a reader that closes before a byte is read.
    let mut child = Command::new(env!("CARGO_BIN_EXE_zproxy"))
        .args(["check", "-c", &repo("configs/lab.toml")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run zproxy");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait zproxy");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("panicked"),
        "{:?}: {err}",
        out.status
    );
}

#[test]
fn check_refuses_a_worker_on_a_missing_cpu_without_saying_ok() {
    let dir = common::TempDir::new("cli-lcore");
    let bad = dir.path().join("lcore.toml");
    let text = std::fs::read_to_string(repo("configs/lab.toml"))
        .unwrap()
        .replace("worker_lcores = [1]", "worker_lcores = [127]");
    std::fs::write(&bad, text).unwrap();
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap();
    if zproxy::topology::parse_cpulist(&online).contains(&127) {
        return;
    }
    let (ok, out, err) = zproxy(&["check", "-c", bad.to_str().unwrap()]);
    assert!(!ok && !out.contains("OK"), "{out}");
    assert!(
        err.contains("lcore.toml: line 10: worker binding: worker CPU 127 does not exist"),
        "{err}"
    );
}

#[test]
fn reload_says_when_it_cannot_reach_the_instance() {
    let dir = common::TempDir::new("cli-reload");
    let cfg = dir.path().join("z.toml");
    // Port 1 on loopback: nothing listens there.
    let text = std::fs::read_to_string(repo("configs/lab.toml")).unwrap();
    let text = format!("[management]\naddress = \"127.0.0.1:1\"\n{text}");
    std::fs::write(&cfg, &text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_zproxy"))
        .args(["reload", "-c", cfg.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("zproxy: error: cannot reach the management endpoint at 127.0.0.1:1")
            && err.contains("is zproxy running"),
        "{err}"
    );

    // Not TOML: refused before anything is sent (the instance would refuse it too).
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, format!("{text}\n[[listener]\n")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_zproxy"))
        .args(["reload", "-c", broken.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("zproxy: reload refused:")
            && err.contains("broken.toml: not valid TOML")
            && err.contains("nothing was sent"),
        "{err}"
    );

    let off = dir.path().join("off.toml");
    std::fs::write(&off, text.replace("127.0.0.1:1", "")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_zproxy"))
        .args(["reload", "-c", off.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("management.address is empty") && err.contains("systemctl kill -s HUP zproxy"),
        "{err}"
    );
}

/// `check` loads TLS material: a certificate expiring within 30 days is a
/// warning; a key that is not the certificate's is an error naming both.
#[test]
fn check_warns_about_expiry_and_refuses_a_mismatched_key() {
    let dir = std::env::temp_dir().join(format!("zproxy-cli-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.display();
    for (name, days) in [("soon", 10), ("other", 400)] {
        let ok = Command::new("bash")
            .args(["-c", &format!("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {d}/{name}.key -out {d}/{name}.pem -days {days} -subj /CN={name}.test -addext subjectAltName=DNS:{name}.test 2>/dev/null")])
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let lab = std::fs::read_to_string(repo("configs/lab.toml")).unwrap();
    let config = |key: &str| {
        lab.clone()
            + &format!(
                "\n[[listener]]\nport = \"client\"\ntcp_port = 443\nmode = \"https\"\nupstream = \"web\"\nmax_connections_per_source = 0\n[listener.tls]\n[[listener.tls.certificate]]\ncert = \"{d}/soon.pem\"\nkey = \"{d}/{key}.key\"\n"
            )
    };
    let path = dir.join("zproxy.toml");
    std::fs::write(&path, config("soon")).unwrap();
    let (ok, out, err) = zproxy(&["check", "-c", path.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(
        out.contains("soon.pem: the certificate expires in 9 days: renew it")
            || out.contains("soon.pem: the certificate expires in 10 days: renew it"),
        "{out}{err}"
    );
    assert!(
        out.contains("listener: port 'client' tcp 443 mode Https"),
        "{out}"
    );
    std::fs::write(&path, config("other")).unwrap();
    let (ok, _, err) = zproxy(&["check", "-c", path.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("other.key: the key does not belong to the certificate")
            && err.contains("soon.pem"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
