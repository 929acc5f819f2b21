//! Header rules, X-Request-Id and header limits end to end in the netns
//! lab: an nginx upstream answers with the headers it received (so the
//! test reads what went upstream), curl reads what came back, and the
//! access log's `id=` is the id the upstream and the client saw.
//!
//! Root only; takes the lab lock like the other lab tests.

mod common;

use std::time::Duration;

use common::nginx::Nginx;
use common::proxy::*;
use common::*;

const ECHO_PORT: u16 = 8091;

/// An nginx that answers every request with the headers the test looks
/// for, as it received them, and headers of its own the proxy must remove.
fn echo(lab: &Lab) -> Nginx {
    Nginx::start(
        lab,
        "echo-headers",
        UPSTREAM_IP,
        ECHO_PORT,
        r#"location / {
            add_header X-Secret upstream-only always;
            return 200 "id=$http_x_request_id client=$http_x_client via=$http_x_via cookie=[$http_cookie] route=[$http_x_route] ua=$http_user_agent\n";
        }"#,
    )
}

/// :80 with rules (and a route that adds its own), :82 trusting client ids; access log at `log`.
fn headers_config(log: &str) -> String {
    let rules = r#"request_headers = { set = { "X-Client" = "$client_addr:$client_port", "User-Agent" = "zproxy-test" }, add = { "X-Via" = "$listener" }, remove = ["Cookie"] }
response_headers = { set = { "X-Request-Id" = "$request_id", "X-Upstream" = "$upstream_addr" }, remove = ["Server", "X-Secret"] }
max_header_count = 20
max_header_bytes = 2048
[[listener.route]]
path_prefix = "/r"
upstream = "echo"
request_headers = { set = { "X-Route" = "r" } }
"#;
    let body = listener(80, "http", "echo")
        + rules
        + &listener(82, "http", "echo")
        + "trust_request_id = true\n"
        + &upstream("echo", &[(&format!("{UPSTREAM_IP}:{ECHO_PORT}"), 1)], "")
        + &format!("\n[access_log]\npath = \"{log}\"\n");
    config(16384, &body)
}

/// The value of response header `name` (case-insensitive), if any.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The word after `key=` in the echoed body.
fn echoed<'a>(body: &'a str, key: &str) -> &'a str {
    let at = body
        .find(&format!("{key}="))
        .unwrap_or_else(|| panic!("no {key}= in {body}"));
    body[at + key.len() + 1..]
        .split_whitespace()
        .next()
        .unwrap_or("")
}

#[test]
fn rules_reach_the_upstream_and_the_client_and_ids_agree() {
    if !require_root() {
        return;
    }
    let _lock = lab_lock();
    let lab = Lab::up();
    let _echo = echo(&lab);
    let log = lab.run_dir().join("headers-access.log");
    let _ = std::fs::remove_file(&log);
    let z = ZProxy::start(&lab, "zproxy", &headers_config(log.to_str().unwrap()));
    wait_proxy(&lab, &z, 80);

    let u = url(80, "/r/x");
    let (status, head, body) = curl_with_head(
        &lab,
        &["-H", "Cookie: s=1", "-H", "X-Request-Id: forged", &u],
    );
    assert_eq!(status, 200, "{head}{body}");
    // What the upstream received.
    let id = echoed(&body, "id");
    assert_eq!(id.len(), 16, "a generated hex id, not the client's: {body}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{body}");
    assert!(
        echoed(&body, "client").starts_with(&format!("{CLIENT_IP}:")),
        "{body}"
    );
    assert_eq!(echoed(&body, "via"), "client:80", "{body}");
    assert_eq!(echoed(&body, "ua"), "zproxy-test", "{body}");
    assert_eq!(echoed(&body, "cookie"), "[]", "{body}");
    assert_eq!(echoed(&body, "route"), "[r]", "the route's rule: {body}");
    // What the client received.
    assert_eq!(header(&head, "x-request-id"), Some(id), "{head}");
    assert_eq!(
        header(&head, "x-upstream"),
        Some(&*format!("{UPSTREAM_IP}:{ECHO_PORT}")),
        "{head}"
    );
    assert_eq!(header(&head, "server"), None, "{head}");
    assert_eq!(header(&head, "x-secret"), None, "{head}");
    // Off the route: the listener's rules only.
    let (_, _, body) = curl_with_head(&lab, &[&url(80, "/other")]);
    assert_eq!(echoed(&body, "route"), "[]", "{body}");
    // The access log prints the same id.
    let line = format!(" id={id} ");
    assert!(
        wait_until(Duration::from_secs(10), || std::fs::read_to_string(&log)
            .is_ok_and(|t| t.contains(&line))),
        "no access log line with{line}: {:?}",
        std::fs::read_to_string(&log)
    );

    // A trusting listener forwards the client's id; others get one generated.
    let (_, head, body) = curl_with_head(&lab, &["-H", "X-Request-Id: client-42", &url(82, "/")]);
    assert_eq!(echoed(&body, "id"), "client-42", "{body}");
    assert_eq!(
        header(&head, "server").map(|s| s.starts_with("nginx")),
        Some(true),
        "no rules on :82: {head}"
    );
    let (_, _, body) = curl_with_head(&lab, &[&url(82, "/")]);
    assert_eq!(echoed(&body, "id").len(), 16, "{body}");

    // Header limits: 431, and the upstream never sees the request.
    let many: Vec<String> = (0..25).map(|i| format!("X-H{i}: {i}")).collect();
    let mut args: Vec<&str> = many.iter().flat_map(|h| ["-H", h.as_str()]).collect();
    let u = url(80, "/too-many");
    args.push(&u);
    assert_eq!(curl_with_head(&lab, &args).0, 431);
    let big = format!("X-Big: {}", "b".repeat(3000));
    assert_eq!(
        curl_with_head(&lab, &["-H", &big, &url(80, "/too-big")]).0,
        431
    );
    // Within the limits on the same listener: served.
    assert_eq!(
        curl_with_head(&lab, &["-H", "X-H: 1", &url(80, "/fine")]).0,
        200
    );
    let text = std::fs::read_to_string(_echo.access_log()).unwrap();
    assert!(
        !text.contains("/too-many") && !text.contains("/too-big"),
        "{text}"
    );
    assert!(text.contains("/fine"), "{text}");
    stop_clean(z);
}
