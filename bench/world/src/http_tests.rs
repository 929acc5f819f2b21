use super::*;

fn response(body_len: u64, close: bool) -> Vec<u8> {
    let mut r = build_response_head(body_len, close);
    let at = r.len();
    r.resize(at + body_len as usize, 0);
    fill_body(0, &mut r[at..]);
    r
}

/// Feeds `data` in pieces of `step` bytes; the outcome and the bytes used.
fn feed_in_steps(
    reader: &mut ResponseReader,
    data: &[u8],
    step: usize,
) -> (usize, Option<Response>) {
    let mut used = 0;
    while used < data.len() {
        let piece = &data[used..(used + step).min(data.len())];
        let (n, out) = reader.feed(piece);
        used += n;
        if out.is_some() {
            return (used, out);
        }
        assert_eq!(
            n,
            piece.len(),
            "a reader without an outcome takes everything"
        );
    }
    (used, None)
}

#[test]
fn pattern_fills_and_checks_at_any_offset() {
    let mut buf = vec![0u8; 10_000];
    fill_body(7, &mut buf);
    assert!(body_matches(7, &buf));
    assert!(
        !body_matches(8, &buf),
        "an off-by-one offset must not match"
    );
    assert_eq!(buf[0], b'A' + 7);
    assert_eq!(buf[PERIOD], buf[0]);
    buf[5000] ^= 1;
    assert!(!body_matches(7, &buf));
}

#[test]
fn reads_a_response_whole_and_in_any_split() {
    for (len, close) in [(0u64, true), (64, true), (64, false), (100_000, false)] {
        let r = response(len, close);
        for step in [1, 3, 64, 1500, r.len()] {
            let mut reader = ResponseReader::new(len, true);
            let (used, out) = feed_in_steps(&mut reader, &r, step);
            assert_eq!(out, Some(Response::Ok { close }), "len {len} step {step}");
            assert_eq!(used, r.len());
            assert_eq!(reader.received, r.len() as u64);
        }
    }
}

#[test]
fn leaves_the_next_response_unread() {
    let mut two = response(64, false);
    two.extend(response(64, false));
    let mut reader = ResponseReader::new(64, true);
    let (used, out) = reader.feed(&two);
    assert_eq!(out, Some(Response::Ok { close: false }));
    assert_eq!(used, two.len() / 2);
    reader.reset();
    assert_eq!(
        reader.feed(&two[used..]),
        (used, Some(Response::Ok { close: false }))
    );
}

#[test]
fn a_changed_body_byte_or_size_fails() {
    let mut r = response(1000, true);
    let last = r.len() - 1;
    r[last] ^= 0x20;
    let mut reader = ResponseReader::new(1000, true);
    assert_eq!(
        reader.feed(&r).1,
        Some(Response::Failed(FailureKind::SizeMismatch))
    );
    // Unchecked, the same bytes pass.
    let mut reader = ResponseReader::new(1000, false);
    assert_eq!(reader.feed(&r).1, Some(Response::Ok { close: true }));
    let mut reader = ResponseReader::new(999, true);
    assert_eq!(
        reader.feed(&response(1000, true)).1,
        Some(Response::Failed(FailureKind::SizeMismatch))
    );
}

#[test]
fn bad_heads_fail_by_kind() {
    let cases: [(&[u8], FailureKind); 4] = [
        (
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n",
            FailureKind::Status,
        ),
        (b"HTTP/1.1 200 OK\r\n\r\n", FailureKind::Malformed),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            FailureKind::Malformed,
        ),
        (b"garbage\r\n\r\n", FailureKind::Malformed),
    ];
    for (head, kind) in cases {
        let mut reader = ResponseReader::new(0, true);
        assert_eq!(
            reader.feed(head).1,
            Some(Response::Failed(kind)),
            "{:?}",
            String::from_utf8_lossy(head)
        );
    }
    let mut reader = ResponseReader::new(0, true);
    let long = vec![b'x'; HEAD_MAX + 1];
    assert_eq!(
        reader.feed(&long).1,
        Some(Response::Failed(FailureKind::Malformed))
    );
}

#[test]
fn eof_mid_response_is_truncated() {
    let r = response(64, true);
    let mut reader = ResponseReader::new(64, true);
    assert_eq!(reader.feed(&r[..r.len() - 1]).1, None);
    assert_eq!(reader.eof(), Some(Response::Failed(FailureKind::Truncated)));
    assert_eq!(
        reader.feed(&r[r.len() - 1..]).1,
        Some(Response::Ok { close: true })
    );
    assert_eq!(reader.eof(), None);
}

#[test]
fn origin_reads_requests_with_and_without_bodies() {
    for (keep_alive, body) in [(false, 0), (true, 0), (true, 5000), (false, 1 << 20)] {
        let req = build_request("10.0.0.1:80", "/", keep_alive, body);
        for step in [1, 7, 1500, req.len()] {
            let mut reader = RequestReader::new();
            let mut used = 0;
            let mut out = None;
            while used < req.len() && out.is_none() {
                let end = (used + step).min(req.len());
                let (n, o) = reader.feed(&req[used..end]);
                used += n;
                out = o;
            }
            assert_eq!(
                out,
                Some(Request::Complete { close: !keep_alive }),
                "body {body} step {step}"
            );
            assert_eq!(used, req.len());
        }
    }
}

#[test]
fn origin_refuses_a_corrupt_body_or_garbage() {
    let mut req = build_request("h", "/", true, 100);
    let last = req.len() - 1;
    req[last] = b'!';
    assert_eq!(RequestReader::new().feed(&req).1, Some(Request::Bad));
    assert_eq!(
        RequestReader::new().feed(b"\x16\x03\x01 hello\r\n\r\n").1,
        Some(Request::Bad)
    );
}

#[test]
fn requests_and_heads_say_what_they_should() {
    let req = String::from_utf8(build_request("10.0.0.1:80", "/x", false, 0)).unwrap();
    assert_eq!(
        req,
        "GET /x HTTP/1.1\r\nHost: 10.0.0.1:80\r\nUser-Agent: zproxy-world\r\nConnection: close\r\n\r\n"
    );
    let head = String::from_utf8(build_response_head(64, false)).unwrap();
    assert!(head.contains("Content-Length: 64\r\n") && !head.contains("close"));
}
