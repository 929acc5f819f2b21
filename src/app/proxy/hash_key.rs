//! The request key `balance = "consistent_hash"` hashes when its group's
//! `hash_key` names a header or a cookie (`config::HashKey`).

use super::balance::key_hash;
use crate::config::HashKey;

/// The hash of `key`'s value in a request's `headers`; `None` when the key
/// is the client address, or the request has no such header or cookie (the
/// balancer then hashes the client address).
pub fn request_key(key: &HashKey, headers: &[httparse::Header<'_>]) -> Option<u64> {
    let value = match key {
        HashKey::Client => None,
        HashKey::Header(name) => headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.trim_ascii()),
        HashKey::Cookie(name) => headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
            .flat_map(|h| h.value.split(|&b| b == b';'))
            .find_map(|pair| {
                let pair = pair.trim_ascii();
                let eq = pair.iter().position(|&b| b == b'=')?;
                (&pair[..eq] == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
            }),
    };
    value.filter(|v| !v.is_empty()).map(key_hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &HashKey, head: &str) -> Option<u64> {
        let mut headers = [httparse::EMPTY_HEADER; 16];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(head.as_bytes()).unwrap();
        request_key(k, req.headers)
    }

    #[test]
    fn header_and_cookie_values_are_the_key() {
        let user = HashKey::Header("x-user".into());
        let sid = HashKey::Cookie("sid".into());
        let a = key(&user, "GET / HTTP/1.1\r\nX-User:  alice \r\n\r\n");
        assert_eq!(a, Some(key_hash(b"alice")), "trimmed, any case of name");
        assert_eq!(
            a,
            key(
                &user,
                "GET /x HTTP/1.1\r\nx-user: alice\r\nCookie: sid=b\r\n\r\n"
            )
        );
        assert_eq!(key(&user, "GET / HTTP/1.1\r\nX-Other: alice\r\n\r\n"), None);
        assert_eq!(
            key(&user, "GET / HTTP/1.1\r\nX-User:\r\n\r\n"),
            None,
            "empty"
        );
        let c = key(
            &sid,
            "GET / HTTP/1.1\r\nCookie: a=1; sid=s3cr3t; b=2\r\n\r\n",
        );
        assert_eq!(c, Some(key_hash(b"s3cr3t")));
        assert_eq!(
            c,
            key(
                &sid,
                "GET / HTTP/1.1\r\nCookie: a=1\r\nCookie: sid=s3cr3t\r\n\r\n"
            )
        );
        assert_eq!(
            key(&sid, "GET / HTTP/1.1\r\nCookie: xsid=1; sid\r\n\r\n"),
            None
        );
        assert_eq!(
            key(&HashKey::Client, "GET / HTTP/1.1\r\nX-User: a\r\n\r\n"),
            None
        );
    }
}
