//! Header rules, X-Request-Id and header limits through a session over
//! real smoltcp TCP (see `testnet`).

use super::headers::Headers;
use super::testnet::{head_len, Net};
use crate::config::Listener;

const STEPS: usize = 20_000;

/// A net whose listener has `extra` config lines (header rules, limits).
fn net_with(extra: &str) -> Net {
    let text = format!("port = \"client\"\ntcp_port = 80\nmode = \"http\"\n{extra}");
    let l: Listener = toml::from_str(&text).unwrap();
    crate::config::headers::check_listener(&l, &|_| None).unwrap();
    let mut net = Net::http(4096);
    net.routes.headers = Headers::compile(&l);
    net
}

fn client_head(net: &mut Net) -> String {
    assert!(
        net.run_until(STEPS, |n| head_len(&n.client.rx).is_some()),
        "no response head reached the client: {:?}",
        String::from_utf8_lossy(&net.client.rx)
    );
    String::from_utf8_lossy(&net.client.rx[..head_len(&net.client.rx).unwrap()]).into_owned()
}

const RULES: &str = r#"
request_headers = { set = { "X-Client" = "$client_addr:$client_port", "User-Agent" = "zp" }, add = { "X-Via" = "$listener id=$request_id" }, remove = ["Cookie"] }
response_headers = { set = { "X-Request-Id" = "$request_id", "X-Upstream" = "$upstream_addr" }, remove = ["Server"] }
"#;

#[test]
fn rules_rewrite_both_heads_and_the_id_is_generated() {
    let mut net = net_with(RULES);
    net.client.send(
        b"GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: curl\r\nCookie: s=1\r\nX-Request-Id: forged\r\nAccept: */*\r\n\r\n",
    );
    let head = net.server_head(0, STEPS);
    assert!(
        head.starts_with(
            "GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nX-Forwarded-For: 10.0.0.1\r\n"
        ),
        "{head}"
    );
    assert!(
        head.contains("\r\nX-Request-Id: 0000000000000001\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nX-Client: 10.0.0.1:"), "{head}");
    assert!(head.contains("\r\nUser-Agent: zp\r\n"), "{head}");
    assert!(
        head.contains("\r\nX-Via: client:80 id=0000000000000001\r\n"),
        "{head}"
    );
    for gone in ["curl", "Cookie", "forged"] {
        assert!(!head.contains(gone), "{gone} in {head}");
    }
    net.server().send(
        b"HTTP/1.1 200 OK\r\nServer: secret\r\nX-Request-Id: theirs\r\nContent-Length: 0\r\n\r\n",
    );
    let resp = client_head(&mut net);
    assert_eq!(
        resp,
        "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Request-Id: 0000000000000001\r\nX-Upstream: 10.0.0.1:8080\r\n\r\n"
    );
}

#[test]
fn a_trusting_listener_forwards_the_clients_id() {
    let mut net = net_with("trust_request_id = true\n");
    net.client
        .send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: abc-1\r\nX-Request-Id: abc-2\r\n\r\n");
    let head = net.server_head(0, STEPS);
    assert_eq!(head.matches("X-Request-Id").count(), 1, "{head}");
    assert!(head.contains("X-Request-Id: abc-1\r\n"), "{head}");
}

#[test]
fn too_many_or_too_large_headers_get_431() {
    for (extra, request) in [
        (
            "max_header_count = 2\n",
            "GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n".to_owned(),
        ),
        (
            "max_header_bytes = 100\n",
            format!(
                "GET / HTTP/1.1\r\nHost: a\r\nA: {}\r\n\r\n",
                "x".repeat(100)
            ),
        ),
        // Larger than the limit before its end even arrives.
        (
            "max_header_bytes = 100\n",
            format!("GET / HTTP/1.1\r\nHost: a\r\nA: {}", "x".repeat(200)),
        ),
    ] {
        let mut net = net_with(extra);
        net.client.send(request.as_bytes());
        let resp = client_head(&mut net);
        assert!(resp.starts_with("HTTP/1.1 431 "), "{extra}: {resp}");
        assert!(net.servers.is_empty(), "{extra}: no upstream was asked");
    }
    // Within the limits: forwarded.
    let mut net = net_with("max_header_count = 2\nmax_header_bytes = 100\n");
    net.client
        .send(b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\n\r\n");
    assert!(net.server_head(0, STEPS).starts_with("GET / HTTP/1.1\r\n"));
}
