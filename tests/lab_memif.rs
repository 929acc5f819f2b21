//! The kernel-free bench end to end, at a low fixed rate: zproxy-world
//! (bench/world: generator and origin on DPDK + smoltcp, core 0) alone over
//! a memif pair of its own, then through ZProxy (core 1) over two memif
//! pairs with the bench's own config (bench/peers/zproxy-memif.toml), with
//! keep-alive off and on. Every response is checked byte for byte (status,
//! size, each body byte against the origin's pattern, and each upload byte
//! at the origin); every request must succeed, and ZProxy must have
//! proxied them.
//!
//! Needs root and free hugepages; takes the lab lock (ZProxy busy-polls core 1).

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::proxy::*;
use common::*;
use serde_json::Value;

const MGMT: &str = "127.0.0.1:9392";
/// Requests started per second (low: a check, not a measurement).
const RATE: u64 = 200;
const SECONDS: u64 = 3;

/// One world run: its JSON results and its own figures.
struct WorldRun {
    results: Value,
    world: Value,
}

fn memif(dir: &Path, sock: &str, role: &str, index: u8, mac: u8) -> String {
    format!(
        "net_memif{index},role={role},socket={}/{sock},socket-abstract=no,id=0,mac=02:00:00:00:8{index}:{mac:02x}",
        dir.display()
    )
}

/// Starts zproxy-world; `alone` joins its two ports to each other.
fn spawn_world(dir: &Path, tag: &str, alone: bool, extra: &[&str]) -> Child {
    let (client, origin, origin_addr, target) = if alone {
        // One process may not be both roles of one socket name: the client
        // names the same file through "./".
        (
            memif(dir, "w.sock", "server", 0, 1),
            memif(dir, "./w.sock", "client", 1, 2),
            "10.81.0.2/24",
            "10.81.0.2:80",
        )
    } else {
        (
            memif(dir, "client.sock", "server", 0, 1),
            memif(dir, "origin.sock", "server", 1, 1),
            "10.82.0.1/24",
            "10.81.0.2:80",
        )
    };
    let d = dir.display();
    let mut cmd = Command::new(workspace_bin("zproxy-world"));
    cmd.args(["--client-vdev", &client, "--client-addr", "10.81.0.1/24"])
        .args(["--origin-vdev", &origin, "--origin-addr", origin_addr])
        .args(["--target", target, "--cpu", "0"])
        .args(["--file-prefix", &format!("zplm{}{tag}", std::process::id())])
        .args(["--duration", &format!("{SECONDS}s"), "--warmup", "1s"])
        .args(["--rate", &RATE.to_string()])
        .args(["--mbufs", "8191", "--max-flows", "4096", "--verify"])
        .args([
            "--link-timeout",
            "20s",
            "--linger",
            if alone { "0s" } else { "30s" },
        ])
        .args(["--json", &format!("{d}/{tag}.json")])
        .args(["--world-json", &format!("{d}/{tag}.world.json")])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join(format!("{tag}.out"))).unwrap())
        .stderr(std::fs::File::create(dir.join(format!("{tag}.err"))).unwrap());
    cmd.spawn()
        .expect("spawn zproxy-world (cargo build --release -p zproxy-world)")
}

/// Waits for the world's run; on failure shows its errors and `context` (ZProxy's log).
fn finish_world(dir: &Path, tag: &str, mut child: Child, context: &dyn Fn() -> String) -> WorldRun {
    let mut status = None;
    wait_for(Duration::from_secs(60), "zproxy-world to finish", || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let err = std::fs::read_to_string(dir.join(format!("{tag}.err"))).unwrap_or_default();
    assert!(
        status.unwrap().success(),
        "zproxy-world failed:\n{err}\n{}",
        context()
    );
    let read = |f: String| -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(dir.join(&f)).unwrap_or_else(|e| panic!("{f}: {e}\n{err}")),
        )
        .unwrap()
    };
    WorldRun {
        results: read(format!("{tag}.json")),
        world: read(format!("{tag}.world.json")),
    }
}

/// Every request in the window succeeded, about as many as the rate asked.
fn assert_all_ok(what: &str, run: &WorldRun) {
    let r = &run.results["results"];
    let ok = r["successes"].as_u64().unwrap();
    assert_eq!(r["failures_total"], 0, "{what}: failures {}", r["failures"]);
    assert_eq!(r["completed"].as_u64().unwrap(), ok, "{what}");
    let want = RATE * SECONDS;
    assert!(
        ok >= want * 9 / 10 && ok <= want * 11 / 10,
        "{what}: {ok} successes, about {want} expected"
    );
    assert_eq!(
        run.world["origin_aborts"], 0,
        "{what}: the origin refused a request (a corrupt upload?)"
    );
    assert_eq!(run.world["connect_shortages"], 0, "{what}");
}

fn zproxy_config(dir: &Path, keepalive: u32) -> String {
    let template =
        std::fs::read_to_string(repo_root().join("bench/peers/zproxy-memif.toml")).unwrap();
    let text = template
        .replace("@RUN@", &dir.display().to_string())
        .replace("127.0.0.1:@MGMT@", MGMT)
        .replace("max_flows = 65536", "max_flows = 4096")
        .replace("mbufs = 32767", "mbufs = 16383")
        .replace("keepalive = 0", &format!("keepalive = {keepalive}"));
    assert!(
        text.contains("max_flows = 4096") && text.contains(&format!("keepalive = {keepalive}"))
    );
    text
}

fn zproxy_requests() -> u64 {
    let out = Command::new(env!("CARGO_BIN_EXE_zproxy"))
        .args(["stats", "-a", MGMT])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("zproxy stats: {}", describe(&out)));
    v["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["requests"].as_u64().unwrap())
        .sum()
}

/// The world through a fresh ZProxy; ZProxy's `requests` counter at the end.
fn proxied(dir: &Path, tag: &str, keepalive: u32, extra: &[&str]) -> (WorldRun, u64) {
    let world = spawn_world(dir, tag, false, extra);
    wait_for(Duration::from_secs(20), "the world's memif sockets", || {
        dir.join("client.sock").exists() && dir.join("origin.sock").exists()
    });
    let cfg = dir.join(format!("{tag}.toml"));
    std::fs::write(&cfg, zproxy_config(dir, keepalive)).unwrap();
    let log = dir.join(format!("{tag}.log"));
    let mut z = Command::new(env!("CARGO_BIN_EXE_zproxy"))
        .args(["run", "-c"])
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.join(format!("{tag}.stderr"))).unwrap())
        .spawn()
        .unwrap();
    let mut world = world;
    // The world writes its results (the world JSON last), then lingers until
    // ZProxy has left: a memif side still polling when its peer goes may crash.
    wait_for(Duration::from_secs(60), "the world's results", || {
        dir.join(format!("{tag}.world.json")).exists() || world.try_wait().unwrap().is_some()
    });
    let requests = zproxy_requests();
    let _ = Command::new("kill")
        .args(["-INT", &z.id().to_string()])
        .status();
    let mut status = None;
    wait_for(Duration::from_secs(20), "zproxy to exit", || {
        status = z.try_wait().unwrap();
        status.is_some()
    });
    let stderr = std::fs::read_to_string(dir.join(format!("{tag}.stderr"))).unwrap_or_default();
    assert!(status.unwrap().success(), "zproxy failed:\n{stderr}");
    let run = finish_world(dir, tag, world, &|| {
        let read = |f: String| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        format!(
            "zproxy:\n{}{}",
            read(format!("{tag}.log")),
            read(format!("{tag}.stderr"))
        )
    });
    for s in ["client.sock", "origin.sock"] {
        let _ = std::fs::remove_file(dir.join(s));
    }
    (run, requests)
}

#[test]
fn world_alone_and_through_zproxy_over_memif_byte_exact() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let tmp = TempDir::new("memif");
    let dir = tmp.path();

    // A 10,000-byte response spans several segments; a 3,000-byte upload too.
    let sizes = [
        "--response-size",
        "10000",
        "--request-size",
        "3000",
        "--concurrency",
        "16",
    ];
    let alone = finish_world(
        dir,
        "alone",
        spawn_world(dir, "alone", true, &sizes),
        &String::new,
    );
    assert_all_ok("world alone", &alone);
    assert_eq!(
        alone.world["origin_requests"].as_u64().unwrap(),
        alone.results["results"]["requests_all"].as_u64().unwrap(),
        "the origin answered exactly the requests the generator saw end"
    );

    let (close, requests) = proxied(dir, "close", 0, &sizes);
    assert_all_ok("through ZProxy, keep-alive off", &close);
    let ok = close.results["results"]["successes"].as_u64().unwrap();
    assert!(
        requests >= ok,
        "ZProxy proxied {requests} requests, the world saw {ok} succeed"
    );

    // Keep-alive on: 4 kept connections take turns at the same rate, and
    // ZProxy keeps its upstream connections in a pool.
    let mut ka = sizes[..4].to_vec();
    ka.extend(["--keep-alive", "on", "--concurrency", "4"]);
    let (kept, requests) = proxied(dir, "ka", 256, &ka);
    assert_all_ok("through ZProxy, keep-alive on", &kept);
    let r = &kept.results["results"];
    assert!(
        r["connections_opened"].as_u64().unwrap() <= 4,
        "kept connections were reused: {} opened",
        r["connections_opened"]
    );
    let ok = r["successes"].as_u64().unwrap();
    assert!(
        requests >= ok,
        "ZProxy proxied {requests} requests, the world saw {ok} succeed"
    );
}
