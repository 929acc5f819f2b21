//! Idle open connections give their buffer pages back, and no relayed byte
//! changes for it: bodies downloaded across a lossy link (3 % of the
//! upstream's frames to ZProxy dropped, so its receive rings hold
//! out-of-order data while a hole waits for a retransmission) come out
//! byte-exact while keep-alive clients sit idle past a short release delay
//! (`runtime.buffer_release_idle_ms = 10`). Releasing on empty queues alone
//! zeroed such out-of-order data (8c02934); this lab did not catch that
//! build in a short run (its holes are filled within the delay), so the
//! proof of the cause and of the rule is `reclaim_flow_tests`, and this
//! test guards the whole path: every body byte-exact, the idle clients'
//! pages given back while open, and served again after.

mod common;

use std::path::Path;
use std::time::Duration;

use common::proxy::*;
use common::*;

/// Idle keep-alive clients, each having made a request.
const IDLE: usize = 100;
/// Parallel downloads per round, and rounds.
const DOWNLOADS: usize = 8;
const ROUNDS: usize = 3;

fn sha256(p: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(p)
        .output()
        .expect("sha256sum");
    assert!(out.status.success(), "sha256sum: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout)[..64].to_owned()
}

/// Drops `pct` % of the TCP frames from port 80 that `role` sends (`hook`
/// output) or receives (input).
fn lossy(lab: &Lab, role: &str, hook: &str, pct: u32) {
    lab.exec_ok(
        role,
        [
            "nft",
            &format!(
                "add table inet loss; add chain inet loss c {{ type filter hook {hook} priority 0; }}; \
                 add rule inet loss c tcp sport 80 numgen random mod 100 < {pct} drop"
            ),
        ],
    );
}

#[test]
fn idle_flows_give_pages_back_and_lossy_bodies_stay_exact() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let conf = std::fs::read_to_string(lab.run_dir().join("nginx.conf")).unwrap();
    let www = conf
        .lines()
        .find_map(|l| l.trim().strip_prefix("root ")?.strip_suffix(';'))
        .expect("root in the lab's nginx.conf");
    let body = Path::new(www).join("body");
    let out = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "head -c 2097152 /dev/urandom > '{0}' && chmod a+r '{0}'",
            body.display()
        ))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let want = sha256(&body);

    let cfg = config(
        16384,
        &one_source_unlimited(&web("read_timeout_ms = 30000")),
    )
    .replace(
        "max_flows = 16384",
        "max_flows = 16384\nbuffer_release_idle_ms = 10",
    );
    let z = ZProxy::start(&lab, "zproxy", &cfg);
    wait_proxy(&lab, &z, 80);

    let (mut holder, opened) = Holder::open(&lab, 80, IDLE);
    assert_eq!(opened, format!("open {IDLE} errors 0"), "{}", z.log());
    for i in 0..IDLE {
        let got = holder.ask(&format!("get {i} /"));
        assert_eq!(got, format!("resp {i} 200 {}", UPSTREAM_BODY.len()));
    }
    // Every held client (and its pooled upstream connection) is quiet with
    // empty buffers: their pages go while they stay open.
    wait_for(
        Duration::from_secs(12),
        "idle open flows' pages given back",
        || last_counter(&z.log(), "socket_buffers_released").is_some_and(|n| n >= IDLE as u64),
    );
    assert_eq!(
        last_counter(&z.log(), "flows_active").map(|n| n >= IDLE as u64),
        Some(true),
        "the idle clients are still open: {}",
        z.log()
    );

    // The upstream's frames to ZProxy: holes in its receive rings, with
    // the data past them held until the upstream resends.
    lossy(&lab, "upstream", "output", 3);
    let out_dir = lab.run_dir().join("downloads");
    std::fs::create_dir_all(&out_dir).unwrap();
    for round in 0..ROUNDS {
        let script = format!(
            "for i in $(seq {DOWNLOADS}); do \
               ( curl -sS --fail --max-time 60 -o {o}/$i.body {} 2> {o}/$i.err; echo $? > {o}/$i.rc ) & \
             done; wait",
            url(80, "/body"),
            o = out_dir.display()
        );
        lab.exec_ok("client", ["bash", "-c", &script]);
        for i in 1..=DOWNLOADS {
            let read = |ext: &str| {
                std::fs::read_to_string(out_dir.join(format!("{i}.{ext}"))).unwrap_or_default()
            };
            assert_eq!(
                read("rc").trim(),
                "0",
                "round {round}, download {i}: {}\n{}",
                read("err"),
                z.log()
            );
            assert_eq!(
                sha256(&out_dir.join(format!("{i}.body"))),
                want,
                "round {round}, download {i}: body changed on the way\n{}",
                z.log()
            );
        }
        // The idle clients sat through it; their pages were given back and
        // come back zeroed under the next request.
        for i in (0..IDLE).step_by(10) {
            let got = holder.ask(&format!("get {i} /"));
            assert_eq!(got, format!("resp {i} 200 {}", UPSTREAM_BODY.len()));
        }
    }
    holder.close();
    let log = stop_clean(z);
    let fin = log
        .lines()
        .find(|l| l.contains("final counters"))
        .expect("final counters");
    eprintln!("{fin}");
}
