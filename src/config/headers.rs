//! Header rules and header limits of an `http` listener (and its routes):
//! the config shape and its checks. The worker runs them compiled
//! (`app::proxy::headers`).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ConfigError, Listener, ListenerMode};

/// `request_headers = { set = {..}, add = {..}, remove = [..] }` (and
/// `response_headers`): `remove` drops every line of a name, `set` replaces
/// every line of a name with one, `add` appends a line. Values may hold
/// variables (`VARIABLES`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderRules {
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

impl HeaderRules {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

/// The variables a header value may hold, as `$name` or `${name}` (`$$` is a `$`).
pub const VARIABLES: [&str; 5] = [
    "client_addr",
    "client_port",
    "request_id",
    "listener",
    "upstream_addr",
];

/// Headers whose lines the proxy itself decides besides the hop-by-hop ones
/// (`http::is_hop_by_hop`): framing and X-Forwarded-*. A rule may not touch them.
const RESERVED: [&str; 4] = [
    "content-length",
    "transfer-encoding",
    "x-forwarded-for",
    "x-forwarded-proto",
];

/// The most header lines a request may have (the parser's array).
pub const MAX_HEADER_COUNT: u32 = 64;

/// One piece of a header value: literal bytes or a variable (its index in `VARIABLES`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Literal(String),
    Variable(usize),
}

/// Splits a value into literal and variable pieces; the error says what is wrong.
pub fn split_value(value: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut rest = value;
    while let Some(at) = rest.find('$') {
        lit.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            lit.push('$');
            rest = tail;
            continue;
        }
        let (name, tail) = match after.strip_prefix('{') {
            Some(b) => {
                let end = b
                    .find('}')
                    .ok_or_else(|| format!("'${{' without '}}' in {value:?}"))?;
                (&b[..end], &b[end + 1..])
            }
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            }
        };
        let var = VARIABLES.iter().position(|v| *v == name).ok_or_else(|| {
            format!(
                "unknown variable '${name}' in {value:?}: use one of ${} (or $$ for a '$')",
                VARIABLES.join(", $")
            )
        })?;
        if !lit.is_empty() {
            pieces.push(Piece::Literal(std::mem::take(&mut lit)));
        }
        pieces.push(Piece::Variable(var));
        rest = tail;
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        pieces.push(Piece::Literal(lit));
    }
    Ok(pieces)
}

/// A field name is a token (RFC 9110 5.1).
pub(super) fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// What is wrong with a rule set (`request`: a request side's), if anything.
pub fn check_rules(rules: &HeaderRules, request: bool) -> Result<(), String> {
    let names = rules
        .set
        .keys()
        .chain(rules.add.keys())
        .chain(rules.remove.iter());
    for name in names {
        if !is_token(name) {
            return Err(format!(
                "header name {name:?} is not a token (letters, digits and !#$%&'*+-.^_`|~ only)"
            ));
        }
        if crate::app::proxy::http::is_hop_by_hop(name)
            || RESERVED.iter().any(|r| name.eq_ignore_ascii_case(r))
        {
            return Err(format!(
                "header {name} is set by the proxy itself (framing, hop-by-hop, X-Forwarded-*): a rule may not change it"
            ));
        }
        if request && name.eq_ignore_ascii_case("x-request-id") {
            return Err(format!(
                "header {name} goes upstream from the proxy's own id: use trust_request_id to forward the client's instead of a rule"
            ));
        }
    }
    for (name, value) in rules.set.iter().chain(rules.add.iter()) {
        // Field values: visible ASCII, SP and HTAB, never CR, LF or NUL (RFC 9110 5.5).
        if value
            .bytes()
            .any(|b| b != b'\t' && !(b' '..=b'~').contains(&b))
        {
            return Err(format!(
                "header {name}: the value may hold visible ASCII, spaces and tabs only (no CR, LF or other control bytes)"
            ));
        }
        split_value(value).map_err(|e| format!("header {name}: {e}"))?;
    }
    Ok(())
}

/// Checks one listener's header rules and limits (its routes' rules too).
pub fn check_listener(l: &Listener, at: &dyn Fn(&str) -> Option<usize>) -> Result<(), ConfigError> {
    let on = format!("listener on tcp_port {}", l.tcp_port);
    let invalid = |needle: &str, key: &str, message: String| ConfigError::Invalid {
        file: None,
        line: at(needle),
        key: key.to_owned(),
        message,
    };
    let used = !l.request_headers.is_empty()
        || !l.response_headers.is_empty()
        || l.trust_request_id
        || l.max_header_count.is_some()
        || l.max_header_bytes.is_some();
    if used && l.mode.base() != ListenerMode::Http {
        return Err(invalid(
            "_header",
            "listener.request_headers",
            format!("{on}: header rules, trust_request_id and max_header_* apply to mode = \"http\" only: remove them here"),
        ));
    }
    if let Some(n) = l.max_header_count {
        if n == 0 || n > MAX_HEADER_COUNT {
            return Err(invalid(
                "max_header_count",
                "listener.max_header_count",
                format!("{on}: max_header_count = {n}: must be 1..={MAX_HEADER_COUNT}"),
            ));
        }
    }
    if l.max_header_bytes == Some(0) {
        return Err(invalid(
            "max_header_bytes",
            "listener.max_header_bytes",
            format!("{on}: max_header_bytes = 0: must be > 0 (leave it out for the socket buffer's size)"),
        ));
    }
    let sides = [
        ("request_headers", &l.request_headers),
        ("response_headers", &l.response_headers),
    ];
    let routes = l.routes.iter().flat_map(|r| {
        [
            ("route.request_headers", &r.request_headers),
            ("route.response_headers", &r.response_headers),
        ]
    });
    for (key, rules) in sides.into_iter().chain(routes) {
        if let Err(e) = check_rules(rules, key.ends_with("request_headers")) {
            let needle = key.trim_start_matches("route.");
            return Err(invalid(
                needle,
                &format!("listener.{key}"),
                format!("{on}: {key}: {e}"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_split_into_literals_and_variables() {
        assert_eq!(
            split_value("a $client_addr:${client_port}b $$x").unwrap(),
            vec![
                Piece::Literal("a ".into()),
                Piece::Variable(0),
                Piece::Literal(":".into()),
                Piece::Variable(1),
                Piece::Literal("b $x".into()),
            ]
        );
        assert_eq!(split_value("").unwrap(), vec![]);
        assert!(split_value("$nope")
            .unwrap_err()
            .contains("unknown variable '$nope'"));
        assert!(split_value("${request_id").is_err());
    }

    #[test]
    fn bad_names_and_values_are_refused() {
        let rules = |f: fn(&mut HeaderRules)| {
            let mut r = HeaderRules::default();
            f(&mut r);
            check_rules(&r, true)
        };
        assert!(rules(|r| drop(r.set.insert("X-A".into(), "ok $request_id".into()))).is_ok());
        assert!(rules(|r| drop(r.set.insert("X A".into(), "v".into()))).is_err());
        assert!(rules(|r| drop(r.add.insert("X-A".into(), "a\r\nB: c".into()))).is_err());
        assert!(rules(|r| r.remove.push("Content-Length".into())).is_err());
        assert!(rules(|r| drop(r.set.insert("x-forwarded-for".into(), "v".into()))).is_err());
        assert!(rules(|r| r.remove.push("X-Request-Id".into())).is_err());
        let mut response = HeaderRules::default();
        response
            .set
            .insert("X-Request-Id".into(), "$request_id".into());
        assert!(check_rules(&response, false).is_ok());
    }
}
