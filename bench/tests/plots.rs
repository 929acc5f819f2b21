//! `--plots PREFIX`: both SVGs are written, are well-formed XML, and carry
//! the run's data (axes, labels, a line with points); also when nothing
//! succeeded. And the throughput figures the lab runs read from the JSON.

mod common;

use std::path::Path;

use common::{bench, closed_port, temp_dir, Mode, TestServer};

/// Parses `path` as XML and checks the parts every chart has; returns the text.
fn check_svg(path: &Path) -> String {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} not written: {e}", path.display()));
    let doc = roxmltree::Document::parse(&text)
        .unwrap_or_else(|e| panic!("{} is not well-formed XML: {e}", path.display()));
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg", "{}", path.display());
    assert_eq!(
        root.tag_name().namespace(),
        Some("http://www.w3.org/2000/svg")
    );
    for attr in ["width", "height", "viewBox"] {
        assert!(root.attribute(attr).is_some(), "svg without {attr}");
    }
    // No NaN or infinite coordinates anywhere.
    for node in doc.descendants().filter(|n| n.is_element()) {
        for a in node.attributes() {
            let v = a.value().to_ascii_lowercase();
            assert!(
                !v.contains("nan") && !v.contains("inf"),
                "{}: <{} {}=\"{}\">",
                path.display(),
                node.tag_name().name(),
                a.name(),
                a.value()
            );
        }
    }
    text
}

/// Text content of every `<text>` element.
fn texts(svg: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(svg).unwrap();
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .map(|n| n.text().unwrap_or("").trim().to_string())
        .collect()
}

/// Point counts of every `<polyline>`.
fn polylines(svg: &str) -> Vec<usize> {
    let doc = roxmltree::Document::parse(svg).unwrap();
    doc.descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .map(|n| {
            n.attribute("points")
                .unwrap_or("")
                .split_whitespace()
                .count()
        })
        .collect()
}

#[test]
fn plots_are_written_and_well_formed() {
    let server = TestServer::start(Mode::Ok(vec![b'x'; 20_000]));
    let dir = temp_dir("plots");
    // A directory that does not exist yet: --plots creates it.
    let prefix = dir.join("charts").join("run1");
    let run = bench(
        server.port(),
        &[
            "--concurrency",
            "4",
            "--duration",
            "1500ms",
            "--keep-alive",
            "on",
            "--label",
            "plot <test> & co",
            "--plots",
            prefix.to_str().unwrap(),
        ],
    );
    assert_eq!(run.exit_code(), 0);
    let successes = run.get("successes");
    assert!(successes > 10, "{}", run.json);

    let latency = check_svg(&dir.join("charts/run1-latency.svg"));
    let t = texts(&latency);
    assert!(
        t.iter()
            .any(|s| s.starts_with("plot <test> & co: latency of ")
                && s.ends_with(" successful requests")),
        "title with the (escaped) label: {t:?}"
    );
    for want in [
        "CDF",
        "latency by percentile",
        "latency (ms, log scale)",
        "90%",
        "99%",
    ] {
        assert!(t.iter().any(|s| s == want), "missing text {want:?}: {t:?}");
    }
    assert!(t.iter().any(|s| s.starts_with("p99.9 ")), "{t:?}");
    assert!(
        polylines(&latency).iter().filter(|&&n| n >= 2).count() >= 2,
        "CDF and percentile lines"
    );

    let rate = check_svg(&dir.join("charts/run1-rate.svg"));
    let t = texts(&rate);
    for want in [
        "completed requests/s",
        "received Mbit/s",
        "seconds into the measured window",
    ] {
        assert!(t.iter().any(|s| s == want), "missing text {want:?}: {t:?}");
    }
    assert!(t.iter().any(|s| s.starts_with("mean ")), "{t:?}");
    // 1.5 s in 100 ms steps: 15 points per rate line.
    let lines = polylines(&rate);
    assert!(lines.iter().filter(|&&n| n == 15).count() >= 2, "{lines:?}");

    // The JSON carries what the lab report reads.
    let r = run.results();
    let tl = &r["timeline"];
    assert_eq!(tl["interval_ms"], 100);
    assert_eq!(tl["successes"].as_array().unwrap().len(), 15);
    let tick_ok: u64 = tl["successes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(tick_ok, successes);
    let tick_bytes: u64 = tl["bytes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(tick_bytes, run.get("window_bytes_received"));
    // Bytes of completed requests are a subset of what arrived in the window,
    // give or take the requests that started in it and ran past its end.
    assert!(tick_bytes >= successes * 20_000, "{}", run.json);
    let gbit = r["gbit_per_sec"].as_f64().unwrap();
    let want = tick_bytes as f64 * 8.0 / r["elapsed_secs"].as_f64().unwrap() / 1e9;
    assert!((gbit - want).abs() < 1e-9, "{gbit} vs {want}");
    assert!(run.get("requests_all") >= run.get("completed"));
    assert!(run.get("bytes_received_all") >= tick_bytes);
    let pct = r["latency_percentiles"].as_array().unwrap();
    assert_eq!(pct.first().unwrap()[0], 0.0);
    assert_eq!(pct.last().unwrap()[0], 100.0);
    assert_eq!(
        pct.last().unwrap()[1].as_u64(),
        r["latency"]["max_us"].as_u64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plots_without_successes() {
    let dir = temp_dir("plots-empty");
    let prefix = dir.join("refused");
    let run = bench(
        closed_port(),
        &[
            "--concurrency",
            "2",
            "--duration",
            "300ms",
            "--plots",
            prefix.to_str().unwrap(),
        ],
    );
    assert_eq!(run.get("successes"), 0);
    assert!(run.get("failures_total") > 0);
    let latency = check_svg(&dir.join("refused-latency.svg"));
    assert!(
        texts(&latency)
            .iter()
            .any(|s| s == "no successful requests"),
        "{:?}",
        texts(&latency)
    );
    let rate = check_svg(&dir.join("refused-rate.svg"));
    assert!(texts(&rate).iter().any(|s| s == "completed requests/s"));
    assert!(run.results()["latency_percentiles"]
        .as_array()
        .unwrap()
        .is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn plots_to_an_unwritable_place_fail_the_run() {
    let server = TestServer::start(Mode::Ok(b"ok".to_vec()));
    let dir = temp_dir("plots-bad");
    let file = dir.join("file");
    std::fs::write(&file, "").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_zproxy-bench"))
        .args(["--host", "127.0.0.1", "--port", &server.port().to_string()])
        .args(["--requests", "5", "--concurrency", "1", "--plots"])
        .arg(file.join("sub").join("x"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("plots"));
    let _ = std::fs::remove_dir_all(&dir);
}
