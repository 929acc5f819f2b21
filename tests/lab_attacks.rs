//! What attack tools found, as lab tests: each reproduces a finding against
//! a live ZProxy in the netns lab and checks that it no longer holds.
//!
//! Root only; every test takes the lab lock shared with the other lab test
//! files. Assertions are about correctness, never speed.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::proxy::*;
use common::*;

/// :80 proxied to the lab's nginx, :8080 a static "hello".
fn web_and_hello() -> String {
    web("")
        + "\n[[listener]]\nport = \"client\"\ntcp_port = 8080\nmode = \"static\"\n\
           [listener.static]\nstatus = 200\nbody = \"hello\\n\"\n"
}

/// Runs tests/peers/cancelled_uploads.py in the client namespace.
fn spawn_attacker(lab: &Lab, port: u16, rate: u32, seconds: u32) -> std::process::Child {
    let script = repo_root().join("tests/peers/cancelled_uploads.py");
    lab.command("client", "python3")
        .arg(script)
        .args([
            PROXY_CLIENT_IP.to_owned(),
            port.to_string(),
            rate.to_string(),
            seconds.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn the attacker")
}

/// Finding 1: requests whose body is malformed or cut short made ZProxy
/// abort the upstream connection it had just opened; when the abort and the
/// connect's completion met in one poll round it counted as a failed
/// connect, and two marked the only server down (legitimate clients got
/// 503s). A client's failure must never count against a server.
#[test]
fn cancelled_uploads_never_take_the_upstream_down() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let z = ZProxy::start(&lab, "zproxy", &config(16384, &web("")));
    wait_proxy(&lab, &z, 80);

    for rate in [5, 50] {
        let seconds = 10;
        let attacker = spawn_attacker(&lab, 80, rate, seconds);
        let legit = spawn_bench(
            &lab,
            80,
            &format!("legit-{rate}"),
            &[
                "--concurrency",
                "10",
                "--duration",
                &format!("{seconds}s"),
                "--keep-alive",
                "off",
                "--timeout",
                "10s",
            ],
        );
        let legit = wait_bench(legit);
        let out = attacker.wait_with_output().expect("attacker");
        let said = String::from_utf8_lossy(&out.stdout);
        let sent: u64 = said
            .trim()
            .strip_prefix("sent ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("attacker said {said:?}"));
        let st = fresh_stats(&lab);
        let server = &st["upstreams"][0];
        eprintln!(
            "rate {rate}/s: attacker sent {sent}; legit: {} of {} ok; upstream connect_failures {}; \
             client aborts {}, bad requests {}",
            legit["successes"],
            legit["completed"],
            server["connect_failures"],
            st["workers"][0]["failures_client_abort"],
            st["workers"][0]["failures_bad_request"],
        );
        assert!(
            sent >= u64::from(rate * seconds) * 9 / 10,
            "attacker sent {sent}"
        );
        assert!(u(&legit["successes"]) > 0, "{legit}");
        assert_eq!(
            u(&legit["failures_total"]),
            0,
            "legitimate client failed: {legit}"
        );
        assert_eq!(
            u(&server["connect_failures"]),
            0,
            "a client's cancelled upload counted against the server: {st}"
        );
        assert!(
            !z.log().contains("marked down"),
            "upstream marked down:\n{}",
            z.log()
        );
    }
    // The attacks reached ZProxy and were told apart from the server's failures.
    wait_for(
        Duration::from_secs(5),
        "the attacks to show in the failure counters",
        || stat(&lab, "failures_client_abort") + stat(&lab, "failures_bad_request") > 0,
    );
    stop_clean(z);
}

/// Finding 4: a RST whose sequence number was inside the window but not
/// exactly the next expected one (and RST|ACK likewise) closed a live
/// connection. RFC 5961 3.2: only an exact RST is taken; one elsewhere in
/// the window gets a challenge ACK and the connection lives on.
#[test]
fn blind_resets_get_a_challenge_ack_and_only_an_exact_one_closes() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let body = web_and_hello();
    let z = ZProxy::start(&lab, "zproxy", &config(16384, &body));
    wait_proxy(&lab, &z, 80);
    assert_blind_resets_challenged(&lab, PROXY_CLIENT_IP);
    stop_clean(z);
}

/// Finding 3: every listener shares one flow table, and with no per-source
/// limit by default one address holding idle connections filled it, so
/// legitimate clients were refused on every listener. By default one address
/// may hold a quarter of the table (`max_flows / 4`).
#[test]
fn one_address_cannot_fill_the_flow_table() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let body = web_and_hello();
    let cfg = config(16384, &body).replace("max_flows = 16384", "max_flows = 256");
    let z = ZProxy::start(&lab, "zproxy", &cfg);
    wait_proxy(&lab, &z, 80);
    // A second client address, for the legitimate client.
    let legit_ip = "10.71.0.3";
    lab.exec_ok(
        "client",
        [
            "ip",
            "addr",
            "add",
            &format!("{legit_ip}/24"),
            "dev",
            CLIENT_IF,
        ],
    );

    // More idle connections than the table has slots, from one address.
    let (holder, opened) = Holder::open(&lab, 8080, 300);
    eprintln!("attacker: {opened}");
    let held: usize = opened.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        held <= 256 / 4,
        "one address holds {held} of 256 slots: {opened}"
    );
    // Counters are published every 100 ms.
    wait_for(
        Duration::from_secs(5),
        "the refusals to show in refused_per_source",
        || stat(&lab, "refused_per_source") > 0,
    );
    for port in [8080u16, 80] {
        let (code, _) = curl(&lab, &["--interface", legit_ip, &url(port, "/")]);
        assert_eq!(
            code, 200,
            "another address is refused on :{port} while one holds {held}"
        );
    }
    holder.close();
    stop_clean(z);
}
