//! Rewriting heads for the other side: the request head's rewrite kept as
//! offsets into the client's head ([`Plan`]) and written from there, and
//! the response head written from its parse.

use crate::app::proxy::headers::{RequestId, Rules, Vars};
use crate::app::proxy::http;

/// How the request head goes upstream, found when it was parsed: the head
/// stays in the client's receive buffer and is rewritten from there into
/// the upstream's send buffer, without a second parse. Offsets are into the
/// head (u32: a head fits a socket buffer); header lines are numbered from
/// 0 after the request line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) struct Plan {
    pub(super) head_len: u32,
    /// The method is `[0, method_end)`.
    method_end: u32,
    /// The origin-form target (path and query) is `[rest.0, rest.1)`...
    rest: (u32, u32),
    /// ...after a `/` when the absolute-form target had no path.
    slash: bool,
    /// Header lines not forwarded (hop-by-hop, X-Forwarded-*, a repeated
    /// Content-Length); bit i for line i (at most `MAX_HEADERS` = 64 lines).
    drop: u64,
    /// The last X-Forwarded-For value, `[start, end)`.
    forwarded_for: Option<(u32, u32)>,
    /// The client's X-Request-Id goes on (a trusting listener): no generated one.
    client_id: bool,
    /// `Upgrade` goes on, with `Connection: upgrade`.
    upgrade: bool,
}

/// Where `part` (a slice of `whole`) starts in `whole`.
fn offset_in(whole: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - whole.as_ptr() as usize
}

/// The rewrite of a parsed, checked request head; `rules` drop lines,
/// a client's X-Request-Id stays only when `trust_id`, and `upgrade`: the
/// request's `Upgrade` goes upstream (see `upgrade::Policy`).
pub(super) fn plan_request(
    req: &httparse::Request,
    raw: &[u8],
    head_len: usize,
    rules: &Rules,
    trust_id: bool,
    upgrade: bool,
) -> Plan {
    let method = req.method.unwrap_or("GET");
    let path = req.path.unwrap_or("/");
    let target = http::request_target(path).expect("a checked target");
    let rest_start = offset_in(raw, target.rest.as_bytes()) as u32;
    let mut plan = Plan {
        head_len: head_len as u32,
        method_end: (offset_in(raw, method.as_bytes()) + method.len()) as u32,
        rest: (rest_start, rest_start + target.rest.len() as u32),
        // "http://h" or "http://h?q": origin form starts with '/'
        slash: target.route_path() != target.rest,
        drop: 0,
        forwarded_for: None,
        client_id: false,
        upgrade,
    };
    let mut length_seen = false;
    for (i, h) in req.headers.iter().enumerate() {
        let drop = if h.name.eq_ignore_ascii_case("x-forwarded-for") {
            let start = offset_in(raw, h.value) as u32;
            plan.forwarded_for = Some((start, start + h.value.len() as u32));
            true
        } else if h.name.eq_ignore_ascii_case("content-length") {
            // Equal repeats were accepted: exactly one goes on.
            std::mem::replace(&mut length_seen, true)
        } else if h.name.eq_ignore_ascii_case("x-request-id") {
            // One id goes on: the client's first (when trusted) or ours.
            !trust_id || std::mem::replace(&mut plan.client_id, true)
        } else if upgrade && h.name.eq_ignore_ascii_case("upgrade") {
            false
        } else {
            http::is_hop_by_hop(h.name)
                || h.name.eq_ignore_ascii_case("x-forwarded-proto")
                || rules.drops(h.name)
        };
        if drop {
            plan.drop |= 1 << i;
        }
    }
    plan
}

/// Request head for the upstream, from the client's head `raw` as `plan`
/// says: same method, the target in origin form, HTTP/1.1 (1.0 clients stay
/// 1.0 and close), the header lines as they came minus hop-by-hop ones,
/// X-Forwarded-For, X-Forwarded-Proto and X-Request-Id set, then the
/// listener's and route's header rules.
pub(super) fn write_request_head(
    raw: &[u8],
    plan: &Plan,
    client_ip: &[u8],
    http11: bool,
    rules: &Rules,
    vars: &Vars,
    out: &mut dyn FnMut(&[u8]),
) {
    out(&raw[..plan.method_end as usize]);
    out(b" ");
    if plan.slash {
        out(b"/");
    }
    out(&raw[plan.rest.0 as usize..plan.rest.1 as usize]);
    out(if http11 {
        b" HTTP/1.1\r\n"
    } else {
        b" HTTP/1.0\r\n"
    });
    // The header lines (checked: CRLF ends every line), up to the empty one.
    let mut lines = raw[..plan.head_len as usize].split(|&b| b == b'\n').skip(1);
    for i in 0.. {
        let Some(line) = lines.next() else { break };
        if line.len() <= 1 {
            break; // "\r": the end of the head
        }
        if i < 64 && plan.drop & (1 << i) != 0 {
            continue;
        }
        out(line);
        out(b"\n");
    }
    out(b"X-Forwarded-For: ");
    if let Some((start, end)) = plan.forwarded_for {
        out(&raw[start as usize..end as usize]);
        out(b", ");
    }
    out(client_ip);
    out(if vars.https {
        b"\r\nX-Forwarded-Proto: https\r\n"
    } else {
        b"\r\nX-Forwarded-Proto: http\r\n"
    });
    if !plan.client_id {
        let mut id = [0u8; 16];
        let _ = std::io::Write::write_fmt(
            &mut &mut id[..],
            format_args!("{}", RequestId(vars.request_id)),
        );
        out(b"X-Request-Id: ");
        out(&id);
        out(b"\r\n");
    }
    rules.write(vars, out);
    if !http11 {
        out(b"Connection: close\r\n");
    } else if plan.upgrade {
        out(b"Connection: upgrade\r\n");
    }
    out(b"\r\n");
}

/// Response head for the client: the upstream's status and headers, minus
/// hop-by-hop ones (and Content-Length when a transfer coding frames the
/// body, and a repeated Content-Length, and what `rules` drop), with our
/// own Connection decision and the lines `rules` add; a 101 that `switched`
/// keeps its `Upgrade` and says `Connection: upgrade`.
#[allow(clippy::too_many_arguments)] // flags and the rules' inputs, all plain
pub(super) fn write_response_head(
    resp: &httparse::Response,
    http11: bool,
    keep_alive: bool,
    switched: bool,
    drop_length: bool,
    rules: &Rules,
    vars: &Vars,
    out: &mut dyn FnMut(&[u8]),
) {
    out(if http11 { b"HTTP/1.1 " } else { b"HTTP/1.0 " });
    let code = resp.code.unwrap_or(502);
    let digits = [
        b'0' + (code / 100 % 10) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ];
    out(&digits);
    out(b" ");
    out(resp.reason.unwrap_or("").as_bytes());
    out(b"\r\n");
    let mut length_seen = drop_length;
    for h in resp.headers.iter() {
        let kept = switched && h.name.eq_ignore_ascii_case("upgrade");
        if (http::is_hop_by_hop(h.name) && !kept)
            || (h.name.eq_ignore_ascii_case("content-length")
                && std::mem::replace(&mut length_seen, true))
            || rules.drops(h.name)
        {
            continue;
        }
        out(h.name.as_bytes());
        out(b": ");
        out(h.value);
        out(b"\r\n");
    }
    rules.write(vars, out);
    match (keep_alive, http11) {
        _ if switched => out(b"Connection: upgrade\r\n"),
        (false, _) => out(b"Connection: close\r\n"),
        (true, false) => out(b"Connection: keep-alive\r\n"),
        (true, true) => {}
    }
    out(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::proxy::http::MAX_HEADERS;

    /// The request head `raw` as it goes upstream from client 10.0.0.9.
    fn rewrite(raw: &[u8]) -> String {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        let n = req.parse(raw).unwrap().unwrap();
        let plan = plan_request(&req, raw, n, &Rules::EMPTY, false, false);
        let mut out = Vec::new();
        let vars = Vars {
            https: false,
            request_id: 0x2a,
            ..Vars::default()
        };
        write_request_head(
            raw,
            &plan,
            b"10.0.0.9",
            true,
            &Rules::EMPTY,
            &vars,
            &mut |b| out.extend_from_slice(b),
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn absolute_form_goes_upstream_in_origin_form() {
        for (target, origin) in [
            ("http://x/a?b", "/a?b"),
            ("http://x", "/"),
            ("http://x?q", "/?q"),
        ] {
            let raw = format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n");
            let out = rewrite(raw.as_bytes());
            assert!(
                out.starts_with(&format!("GET {origin} HTTP/1.1\r\nHost: x\r\n")),
                "{out}"
            );
        }
    }

    #[test]
    fn request_head_is_rewritten() {
        let raw = b"GET /a?b HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nX-Forwarded-For: 1.2.3.4\r\nAccept: */*\r\n\r\n";
        assert_eq!(
            rewrite(raw),
            "GET /a?b HTTP/1.1\r\nHost: x\r\nAccept: */*\r\nX-Forwarded-For: 1.2.3.4, 10.0.0.9\r\nX-Forwarded-Proto: http\r\nX-Request-Id: 000000000000002a\r\n\r\n"
        );
    }

    #[test]
    fn equal_content_lengths_go_on_as_one() {
        let raw = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(
            rewrite(raw),
            "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nX-Forwarded-For: 10.0.0.9\r\nX-Forwarded-Proto: http\r\nX-Request-Id: 000000000000002a\r\n\r\n"
        );
    }

    #[test]
    fn response_head_gets_our_connection_header() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n";
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut headers);
        resp.parse(raw).unwrap();
        let mut out = Vec::new();
        write_response_head(
            &resp,
            true,
            false,
            false,
            false,
            &Rules::EMPTY,
            &Vars::default(),
            &mut |b| out.extend_from_slice(b),
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
        );
    }
}
