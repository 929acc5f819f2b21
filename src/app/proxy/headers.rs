//! Header rules and limits of an `http` listener, compiled at config load:
//! names lower-cased, values split into literal and variable pieces, a
//! listener's rules merged with each route's, so a request only looks up
//! one [`Rules`] and renders its lines straight into the send ring.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};

use crate::config::headers::{split_value, HeaderRules, Piece, MAX_HEADER_COUNT};
use crate::config::Listener;

/// What a variable in a header value renders (the order of `config::headers::VARIABLES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Var {
    ClientAddr,
    ClientPort,
    RequestId,
    UpstreamAddr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(Box<[u8]>),
    Var(Var),
}

/// One header line to append: its name as configured, its value's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    name: Box<[u8]>,
    value: Box<[Part]>,
}

/// One side's rules (request or response) for one route, merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Lower-case names whose lines are not forwarded (removed, or replaced by a `set`).
    drop: Vec<Box<str>>,
    /// Lines appended: the `set` ones, then the `add` ones.
    lines: Vec<Line>,
}

/// No rules (a session with no listener routes, e.g. in `tcp` mode).
pub static NO_RULES: (Rules, Rules) = (Rules::EMPTY, Rules::EMPTY);

/// The per-request values variables render.
#[derive(Debug, Clone, Copy, Default)]
pub struct Vars {
    pub client: Option<(IpAddr, u16)>,
    pub request_id: u64,
    pub upstream: Option<SocketAddr>,
    /// The client came over TLS (`X-Forwarded-Proto: https`).
    pub https: bool,
}

impl Rules {
    pub const EMPTY: Rules = Rules {
        drop: Vec::new(),
        lines: Vec::new(),
    };

    /// True when the header line `name` must not be forwarded.
    pub fn drops(&self, name: &str) -> bool {
        self.drop.iter().any(|d| name.eq_ignore_ascii_case(d))
    }

    pub fn is_empty(&self) -> bool {
        self.drop.is_empty() && self.lines.is_empty()
    }

    /// Writes the appended lines ("Name: value\r\n" each), without allocating.
    pub fn write(&self, vars: &Vars, out: &mut dyn FnMut(&[u8])) {
        for line in self.lines.iter() {
            out(&line.name);
            out(b": ");
            for part in line.value.iter() {
                match part {
                    Part::Literal(b) => out(b),
                    Part::Var(v) => render(*v, vars, out),
                }
            }
            out(b"\r\n");
        }
    }

    /// `listener`'s rules, then `route`'s (which win on a name both touch).
    fn merge(listener: &HeaderRules, route: &HeaderRules, label: &str) -> Rules {
        let lower = |n: &String| n.to_ascii_lowercase();
        let route_owns: Vec<String> = route.set.keys().chain(&route.remove).map(lower).collect();
        let mut drop: Vec<String> = listener
            .set
            .keys()
            .chain(&listener.remove)
            .map(lower)
            .chain(route_owns.iter().cloned())
            .collect();
        drop.sort();
        drop.dedup();
        let from_listener = listener
            .set
            .iter()
            .chain(&listener.add)
            .filter(|(n, _)| !route_owns.contains(&n.to_ascii_lowercase()));
        let lines = from_listener
            .chain(route.set.iter().chain(&route.add))
            .map(|(name, value)| Line {
                name: name.as_bytes().into(),
                value: compile_value(value, label),
            })
            .collect();
        Rules {
            drop: drop.into_iter().map(String::into_boxed_str).collect(),
            lines,
        }
    }
}

/// A checked value's parts; `$listener` is fixed per listener, so it becomes literal.
fn compile_value(value: &str, label: &str) -> Box<[Part]> {
    let pieces = split_value(value).expect("checked at config load");
    let mut parts: Vec<Part> = Vec::new();
    for piece in pieces {
        let (lit, var) = match piece {
            Piece::Literal(s) => (Some(s), None),
            Piece::Variable(0) => (None, Some(Var::ClientAddr)),
            Piece::Variable(1) => (None, Some(Var::ClientPort)),
            Piece::Variable(2) => (None, Some(Var::RequestId)),
            Piece::Variable(3) => (Some(label.to_owned()), None),
            Piece::Variable(_) => (None, Some(Var::UpstreamAddr)),
        };
        match (lit, var, parts.last_mut()) {
            (Some(s), _, Some(Part::Literal(prev))) => {
                *prev = [&prev[..], s.as_bytes()].concat().into();
            }
            (Some(s), _, _) => parts.push(Part::Literal(s.into_bytes().into())),
            (None, Some(v), _) => parts.push(Part::Var(v)),
            (None, None, _) => {}
        }
    }
    parts.into()
}

/// Writes one variable's value through a stack buffer.
fn render(var: Var, vars: &Vars, out: &mut dyn FnMut(&[u8])) {
    // Room for an IPv6 address or socket address in RFC 5952 form.
    let mut buf = [0u8; 64];
    let mut cur = std::io::Cursor::new(&mut buf[..]);
    let _ = match (var, vars.client, vars.upstream) {
        (Var::ClientAddr, Some((ip, _)), _) => write!(cur, "{ip}"),
        (Var::ClientPort, Some((_, port)), _) => write!(cur, "{port}"),
        (Var::RequestId, _, _) => write!(cur, "{}", RequestId(vars.request_id)),
        (Var::UpstreamAddr, _, Some(a)) => write!(cur, "{a}"),
        _ => write!(cur, "-"),
    };
    let n = cur.position() as usize;
    out(&buf[..n]);
}

/// A request id as the access log prints it (`id=`) and `X-Request-Id` carries it.
pub struct RequestId(pub u64);

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// An `http` listener's header rules and limits, compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    /// (request, response) rules for requests no route took (the default upstream).
    default: (Rules, Rules),
    /// The same per route, in the listener's route order.
    routes: Box<[(Rules, Rules)]>,
    /// A client's X-Request-Id goes upstream instead of a generated one.
    pub trust_request_id: bool,
    /// More header lines than this: 431.
    pub max_count: usize,
    /// A longer request head (request line included): 431.
    pub max_bytes: usize,
}

impl Default for Headers {
    fn default() -> Self {
        Headers {
            default: Default::default(),
            routes: Box::new([]),
            trust_request_id: false,
            max_count: MAX_HEADER_COUNT as usize,
            max_bytes: usize::MAX,
        }
    }
}

impl Headers {
    /// Compiles a checked listener's rules and limits.
    pub fn compile(l: &Listener) -> Headers {
        let label = l.label();
        let none = HeaderRules::default();
        let side = |route_req: &HeaderRules, route_resp: &HeaderRules| {
            (
                Rules::merge(&l.request_headers, route_req, &label),
                Rules::merge(&l.response_headers, route_resp, &label),
            )
        };
        Headers {
            default: side(&none, &none),
            routes: l
                .routes
                .iter()
                .map(|r| side(&r.request_headers, &r.response_headers))
                .collect(),
            trust_request_id: l.trust_request_id,
            max_count: l.max_header_count.unwrap_or(MAX_HEADER_COUNT) as usize,
            max_bytes: l.max_header_bytes.map_or(usize::MAX, |b| b as usize),
        }
    }

    /// The (request, response) rules of a request `route` took (`None`: the default).
    /// An index a reload left behind gets the default's.
    pub fn rules(&self, route: Option<u16>) -> &(Rules, Rules) {
        route
            .and_then(|r| self.routes.get(r as usize))
            .unwrap_or(&self.default)
    }
}

/// Request ids of one worker: its index in the top 16 bits, a count below
/// (unique per process; never 0, which means "not numbered yet").
#[derive(Debug, Clone, Default)]
pub struct RequestIds {
    worker: u64,
    count: u64,
}

impl RequestIds {
    pub fn new(worker: usize) -> RequestIds {
        RequestIds {
            worker: worker as u64,
            count: 0,
        }
    }

    pub fn take(&mut self) -> u64 {
        self.count += 1;
        self.worker << 48 | (self.count & ((1 << 48) - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::headers::HeaderRules;
    use std::net::Ipv4Addr;

    fn rules(set: &[(&str, &str)], add: &[(&str, &str)], remove: &[&str]) -> HeaderRules {
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        HeaderRules {
            set: map(set),
            add: map(add),
            remove: remove.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn written(r: &Rules, vars: &Vars) -> String {
        let mut out = Vec::new();
        r.write(vars, &mut |b| out.extend_from_slice(b));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn variables_render_per_request() {
        let l = rules(
            &[("X-Client", "$client_addr:$client_port")],
            &[(
                "X-Via",
                "zp ${listener} id=$request_id up=$upstream_addr $$",
            )],
            &[],
        );
        let r = Rules::merge(&l, &HeaderRules::default(), "client:80");
        let vars = Vars {
            https: false,
            client: Some((Ipv4Addr::new(10, 0, 0, 9).into(), 40000)),
            request_id: 0x1_0000_0000_002a,
            upstream: Some("10.1.0.5:8080".parse().unwrap()),
        };
        assert_eq!(
            written(&r, &vars),
            "X-Client: 10.0.0.9:40000\r\nX-Via: zp client:80 id=000100000000002a up=10.1.0.5:8080 $\r\n"
        );
        let none = Vars::default();
        assert!(
            written(&r, &none).contains("up=- $"),
            "{}",
            written(&r, &none)
        );
        assert!(r.drops("x-client") && r.drops("X-CLIENT") && !r.drops("x-via"));
    }

    #[test]
    fn a_route_overrides_its_listener_on_the_names_it_touches() {
        let l = rules(&[("X-A", "l"), ("X-B", "l")], &[("X-C", "l")], &["X-Gone"]);
        let route = rules(&[("x-b", "r")], &[], &["X-C"]);
        let r = Rules::merge(&l, &route, "p:80");
        assert_eq!(written(&r, &Vars::default()), "X-A: l\r\nx-b: r\r\n");
        for name in ["x-a", "x-b", "x-c", "x-gone"] {
            assert!(r.drops(name), "{name}");
        }
        assert!(Rules::merge(&HeaderRules::default(), &HeaderRules::default(), "").is_empty());
    }

    #[test]
    fn request_ids_carry_the_worker() {
        let mut ids = RequestIds::new(3);
        assert_eq!(ids.take(), 3 << 48 | 1);
        assert_eq!(ids.take(), 3 << 48 | 2);
        assert_eq!(RequestId(0xab).to_string(), "00000000000000ab");
    }
}
