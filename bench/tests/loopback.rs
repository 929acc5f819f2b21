//! End-to-end tests of `zproxy-bench` against an in-process test server on
//! 127.0.0.1: counts must match what the server saw, and every injected failure
//! must be reported as its own kind, never as a success.

mod common;

use std::time::{Duration, Instant};

use common::{bench, closed_port, Mode, TestServer};

const BODY: &[u8] = b"hello, bench!";

/// Asserts that the only failure kind reported is `kind`, `n` times.
fn assert_only_failure(run: &common::BenchRun, kind: &str, n: u64) {
    assert_eq!(run.failure(kind), n, "{kind}: {}", run.json);
    assert_eq!(run.failure_kinds(), vec![kind.to_string()], "{}", run.json);
    assert_eq!(run.get("successes"), 0, "{}", run.json);
    assert_eq!(run.get("failures_total"), n);
    assert_eq!(run.get("completed"), n);
}

#[test]
fn ok_counts_match_server_connection_close() {
    let server = TestServer::start(Mode::Ok(BODY.to_vec()));
    let run = bench(
        server.port(),
        &[
            "--concurrency",
            "8",
            "--requests",
            "300",
            "--expect-size",
            "13",
            "--label",
            "ok-test",
        ],
    );
    assert_eq!(run.exit_code(), 0);
    assert_eq!(run.get("completed"), 300);
    assert_eq!(run.get("successes"), 300);
    assert_eq!(run.get("failures_total"), 0);
    assert_eq!(server.requests(), 300);
    assert_eq!(server.answered(), 300);
    assert_eq!(
        server.connections(),
        300,
        "keep-alive off opens one connection per request"
    );
    assert_eq!(run.get("connections_opened"), 300);
    assert_eq!(run.results()["status_codes"]["200"], 300);
    assert_eq!(run.results()["success_rate"].as_f64(), Some(100.0));
    let per_second: u64 = run.results()["per_second"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(per_second, 300);
    let lat = &run.results()["latency"];
    let (min, p50, max) = (
        lat["min_us"].as_u64().unwrap(),
        lat["p50_us"].as_u64().unwrap(),
        lat["max_us"].as_u64().unwrap(),
    );
    assert!(min > 0 && min <= p50 && p50 <= max, "{lat}");
    // Each response: head + 13 body bytes.
    assert!(run.get("bytes_received") > 300 * 13);
    assert!(run.report.contains("## Test Configuration"));
    assert!(run.report.contains("## Results"));
    assert!(run.report.contains("ok-test"));
    let stdout = String::from_utf8_lossy(&run.output.stdout);
    assert!(stdout.contains("## Results"), "report printed to stdout");
}

#[test]
fn keep_alive_reuses_connections() {
    let server = TestServer::start(Mode::Ok(BODY.to_vec()));
    let run = bench(
        server.port(),
        &[
            "--concurrency",
            "4",
            "--requests",
            "400",
            "--keep-alive",
            "on",
            "--expect-size",
            "13",
        ],
    );
    assert_eq!(run.get("successes"), 400, "{}", run.json);
    assert_eq!(run.get("failures_total"), 0);
    assert_eq!(server.requests(), 400);
    assert!(
        server.connections() <= 4,
        "{} connections",
        server.connections()
    );
}

#[test]
fn chunked_and_close_delimited_bodies() {
    let chunks = vec![b"abc".to_vec(), vec![b'z'; 5000], b"0123456789".to_vec()];
    let server = TestServer::start(Mode::Chunked(chunks));
    let run = bench(
        server.port(),
        &[
            "--concurrency",
            "4",
            "--requests",
            "100",
            "--expect-size",
            "5013",
        ],
    );
    assert_eq!(run.get("successes"), 100, "{}", run.json);
    assert_eq!(server.requests(), 100);
    let run = bench(
        server.port(),
        &[
            "--concurrency",
            "4",
            "--requests",
            "100",
            "--keep-alive",
            "on",
            "--expect-size",
            "5013",
        ],
    );
    assert_eq!(run.get("successes"), 100, "{}", run.json);

    let server = TestServer::start(Mode::CloseDelimited(vec![b'q'; 3000]));
    let run = bench(
        server.port(),
        &[
            "--concurrency",
            "4",
            "--requests",
            "100",
            "--expect-size",
            "3000",
        ],
    );
    assert_eq!(run.get("successes"), 100, "{}", run.json);
    assert_eq!(server.requests(), 100);
}

#[test]
fn truncated_response_is_a_failure() {
    let server = TestServer::start(Mode::Truncate);
    let run = bench(server.port(), &["--concurrency", "4", "--requests", "50"]);
    assert_only_failure(&run, "truncated", 50);
    assert_eq!(server.requests(), 50);
}

#[test]
fn reset_is_a_failure() {
    let server = TestServer::start(Mode::Reset);
    let run = bench(server.port(), &["--concurrency", "4", "--requests", "50"]);
    assert_only_failure(&run, "reset", 50);
    assert_eq!(server.requests(), 50);
}

#[test]
fn status_500_is_a_failure() {
    let server = TestServer::start(Mode::Status500);
    let run = bench(server.port(), &["--concurrency", "4", "--requests", "50"]);
    assert_only_failure(&run, "non_2xx", 50);
    assert_eq!(run.results()["status_codes"]["500"], 50);
    assert_eq!(server.requests(), 50);
    // Exit code: 0 by default, 1 with --fail-on-error.
    assert_eq!(run.exit_code(), 0);
    let run = bench(
        server.port(),
        &["--concurrency", "2", "--requests", "4", "--fail-on-error"],
    );
    assert_eq!(run.exit_code(), 1);
}

#[test]
fn malformed_response_is_a_failure() {
    let server = TestServer::start(Mode::Malformed);
    let run = bench(server.port(), &["--concurrency", "4", "--requests", "50"]);
    assert_only_failure(&run, "malformed", 50);
    assert_eq!(server.requests(), 50);
}

#[test]
fn size_mismatch_is_a_failure() {
    let server = TestServer::start(Mode::Ok(BODY.to_vec()));
    let run = bench(
        server.port(),
        &[
            "--concurrency",
            "4",
            "--requests",
            "50",
            "--expect-size",
            "12",
        ],
    );
    assert_only_failure(&run, "size_mismatch", 50);
    assert_eq!(server.requests(), 50);
}

#[test]
fn refused_when_nothing_listens() {
    let port = closed_port();
    let run = bench(port, &["--concurrency", "4", "--requests", "50"]);
    assert_only_failure(&run, "connect_refused", 50);
    assert_eq!(run.exit_code(), 0);
}

#[test]
fn request_timeout_is_a_failure() {
    let server = TestServer::start(Mode::Silent);
    let started = Instant::now();
    let run = bench(
        server.port(),
        &[
            "--concurrency",
            "2",
            "--requests",
            "4",
            "--timeout",
            "300ms",
        ],
    );
    assert_only_failure(&run, "timeout", 4);
    assert_eq!(server.requests(), 4);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn connect_timeout_is_a_failure() {
    // A listener with a full accept queue drops SYNs, so connect() never completes.
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    sock.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    sock.listen(0).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    let fillers: Vec<_> = (0..3)
        .filter_map(|_| {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()
        })
        .collect();
    assert!(!fillers.is_empty());
    let run = bench(
        addr.port(),
        &[
            "--concurrency",
            "2",
            "--requests",
            "4",
            "--timeout",
            "300ms",
        ],
    );
    assert_only_failure(&run, "connect_timeout", 4);
    drop(sock);
}

#[test]
fn post_body_is_sent() {
    let server = TestServer::start(Mode::Ok(BODY.to_vec()));
    let run = bench(
        server.port(),
        &[
            "--concurrency",
            "4",
            "--requests",
            "40",
            "--body-size",
            "100000",
        ],
    );
    assert_eq!(run.get("successes"), 40, "{}", run.json);
    assert_eq!(
        server
            .counters
            .posts
            .load(std::sync::atomic::Ordering::SeqCst),
        40
    );
    assert_eq!(
        server
            .counters
            .body_bytes
            .load(std::sync::atomic::Ordering::SeqCst),
        40 * 100_000
    );
    assert_eq!(run.json["config"]["method"], "POST");
}

#[test]
fn server_stopped_mid_run() {
    let mut server = TestServer::start(Mode::Ok(BODY.to_vec()));
    let port = server.port();
    let runner = std::thread::spawn(move || {
        bench(
            port,
            &[
                "--concurrency",
                "4",
                "--requests",
                "3000",
                "--timeout",
                "2s",
                "--threads",
                "2",
            ],
        )
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.answered() < 100 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    server.stop();
    let run = runner.join().unwrap();
    // Let handler threads that were mid-request finish counting.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(run.get("completed"), 3000);
    assert_eq!(run.get("successes"), server.answered(), "{}", run.json);
    assert!(run.failure("connect_refused") > 0, "{}", run.json);
    assert_eq!(run.get("successes") + run.get("failures_total"), 3000);
    // A response the stop cut short is truncated (seen on a loaded machine).
    for kind in run.failure_kinds() {
        assert!(
            kind == "connect_refused" || kind == "reset" || kind == "truncated",
            "unexpected {kind}: {}",
            run.json
        );
    }
}

#[test]
fn rate_limit_and_warmup() {
    let server = TestServer::start(Mode::Ok(BODY.to_vec()));
    let run = bench(
        server.port(),
        &[
            "--concurrency",
            "4",
            "--rate",
            "200",
            "--duration",
            "1s",
            "--warmup",
            "300ms",
            "--keep-alive",
            "on",
        ],
    );
    let ok = run.get("successes");
    assert!(
        (150..=250).contains(&ok),
        "rate-limited successes {ok}: {}",
        run.json
    );
    // Warm-up requests reached the server but are not in the results.
    assert!(
        server.requests() >= ok + 40,
        "server {} vs measured {ok}",
        server.requests()
    );
    assert_eq!(run.results()["per_second"].as_array().unwrap().len(), 1);
}

#[test]
fn bad_arguments_are_rejected() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zproxy-bench"))
        .args(["--host", "127.0.0.1", "--keep-alive", "maybe"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
