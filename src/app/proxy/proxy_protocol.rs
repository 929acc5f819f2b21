//! The PROXY protocol (HAProxy's spec, v1 text and v2 binary): the header a
//! load balancer puts before a connection's first byte to name the client.
//! [`parse`] reads one (any input: no panic, bounded length); [`write`]
//! makes one, without allocating, for an upstream connection.

use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::net::source6::{source_key6, Allow6};

/// The v2 header's first 12 bytes.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header (the spec's bound, CRLF included).
pub const V1_MAX: usize = 107;
/// The longest v2 header taken (16 fixed bytes and the addresses and TLVs
/// after them): TLVs beyond this mean a misconfigured sender.
pub const V2_MAX: usize = 16 + 1024;
/// Room [`write`] needs.
pub const HEADER_ROOM: usize = V1_MAX;

/// A listener's `accept_proxy_protocol` policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptProxy {
    /// Peers whose header is read (others' bytes are data).
    pub trusted: Vec<(Ipv4Addr, u8)>,
    /// The same for peers on IPv6.
    pub trusted6: Vec<(Ipv6Addr, u8)>,
    /// The listener's allow-list, checked again on the real client (the
    /// stack checked it on the peer at SYN time, with `trusted` added).
    pub allow: Vec<(Ipv4Addr, u8)>,
    /// The same allow-list for a real client on IPv6.
    pub allow6: Allow6,
    /// `per_source_prefix6`: an IPv6 real client is limited by its first
    /// this many bits, as a direct IPv6 client is by the stack.
    pub prefix6: u8,
    /// `max_connections_per_source` and `connection_rate_limit`, taken on
    /// the real client (the stack exempts the trusted proxies from them).
    pub max_per_source: u32,
    pub conn_rate: Option<crate::net::ratelimit::Rate>,
    /// Names the listener's connection-rate buckets ([`AcceptProxy::limit_id_of`]).
    pub limit_id: u32,
}

impl AcceptProxy {
    /// Bucket ids of connection rates: the top bit keeps them apart from
    /// request limits' (`RouteLimit::id`), which share the worker's table.
    pub fn limit_id_of(listener: usize) -> u32 {
        0x8000_0000 | (listener as u32 & 0x7fff_ffff)
    }

    /// The real client is in the listener's `allow` networks (any when empty).
    pub fn allows(&self, client: IpAddr) -> bool {
        match client {
            IpAddr::V4(client) => {
                self.allow.is_empty()
                    || self
                        .allow
                        .iter()
                        .any(|&(net, len)| crate::config::in_network(client, net, len))
            }
            IpAddr::V6(client) => self.allow6.allows(client),
        }
    }

    /// The key a real client's limits count under: an IPv6 one by its
    /// first `prefix6` bits, so rotating through a /64 does not dodge them.
    pub fn source_key(&self, client: IpAddr) -> IpAddr {
        match client {
            IpAddr::V4(_) => client,
            IpAddr::V6(ip) => IpAddr::V6(source_key6(ip, self.prefix6)),
        }
    }

    /// A trusted proxy: its header is read.
    pub fn trusts(&self, peer: IpAddr) -> bool {
        match peer {
            IpAddr::V4(peer) => self
                .trusted
                .iter()
                .any(|&(net, len)| crate::config::in_network(peer, net, len)),
            IpAddr::V6(peer) => self
                .trusted6
                .iter()
                .any(|&(net, len)| crate::net::ipv6::in_network6(peer, net, len)),
        }
    }
}

/// Which version to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// What the first bytes of a connection hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// A prefix of a header: wait for more bytes.
    Incomplete,
    /// Not a PROXY header, or a broken one.
    Invalid,
    /// A header of `len` bytes; `source` is the client of a TCP over IPv4
    /// or IPv6 connection, `None` for LOCAL (the balancer's own health
    /// check) and UNKNOWN.
    Header {
        len: usize,
        source: Option<SocketAddr>,
    },
}

/// Reads the header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    match buf.first() {
        None => Parsed::Incomplete,
        Some(b'P') => parse_v1(buf),
        Some(b'\r') => parse_v2(buf),
        Some(_) => Parsed::Invalid,
    }
}

fn parse_v1(buf: &[u8]) -> Parsed {
    const PREFIX: &[u8] = b"PROXY ";
    let n = buf.len().min(PREFIX.len());
    if buf[..n] != PREFIX[..n] {
        return Parsed::Invalid;
    }
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Parsed::Invalid
        } else {
            Parsed::Incomplete
        };
    };
    let len = end + 2;
    let Ok(line) = std::str::from_utf8(&buf[PREFIX.len().min(end)..end]) else {
        return Parsed::Invalid;
    };
    let mut f = line.split(' ');
    match f.next() {
        // The rest of an UNKNOWN line is to be ignored (spec 2.1).
        Some("UNKNOWN") => Parsed::Header { len, source: None },
        Some(proto @ ("TCP4" | "TCP6")) => {
            let fields: [Option<&str>; 4] = [f.next(), f.next(), f.next(), f.next()];
            let [Some(src), Some(dst), Some(sport), Some(dport)] = fields else {
                return Parsed::Invalid;
            };
            if f.next().is_some() || !is_port(sport) || !is_port(dport) {
                return Parsed::Invalid;
            }
            if proto == "TCP6" {
                return match (
                    src.parse::<Ipv6Addr>(),
                    dst.parse::<Ipv6Addr>(),
                    sport.parse(),
                ) {
                    (Ok(ip), Ok(_), Ok(port)) => Parsed::Header {
                        len,
                        source: Some(SocketAddrV6::new(ip, port, 0, 0).into()),
                    },
                    _ => Parsed::Invalid,
                };
            }
            match (
                src.parse::<Ipv4Addr>(),
                dst.parse::<Ipv4Addr>(),
                sport.parse(),
            ) {
                (Ok(ip), Ok(_), Ok(port)) => Parsed::Header {
                    len,
                    source: Some(SocketAddrV4::new(ip, port).into()),
                },
                _ => Parsed::Invalid,
            }
        }
        _ => Parsed::Invalid,
    }
}

/// A decimal port as the spec writes it: no sign, no leading zero.
fn is_port(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 5
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'))
        && s.parse::<u16>().is_ok()
}

fn parse_v2(buf: &[u8]) -> Parsed {
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] != V2_SIGNATURE[..n] {
        return Parsed::Invalid;
    }
    let Some(fixed) = buf.get(..16) else {
        return Parsed::Incomplete;
    };
    let (ver_cmd, family) = (fixed[12], fixed[13]);
    let body = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    let len = 16 + body;
    if ver_cmd >> 4 != 2 || len > V2_MAX {
        return Parsed::Invalid;
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Parsed::Invalid,
    };
    // Address family (high nibble) and transport (low nibble).
    let need = match family {
        0x00 => 0,
        0x11 | 0x12 => 12,
        0x21 | 0x22 => 36,
        0x31 | 0x32 => 216,
        _ => return Parsed::Invalid,
    };
    if body < need {
        return Parsed::Invalid;
    }
    let Some(addr) = buf.get(16..len) else {
        return Parsed::Incomplete;
    };
    let source = match family {
        0x11 if !local => Some(SocketAddr::from(SocketAddrV4::new(
            Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]),
            u16::from_be_bytes([addr[8], addr[9]]),
        ))),
        // Source address (16), destination (16), source port, destination port.
        0x21 if !local => {
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&addr[..16]);
            Some(SocketAddr::from(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                u16::from_be_bytes([addr[32], addr[33]]),
                0,
                0,
            )))
        }
        // UDP is no client of a TCP listener.
        0x12 | 0x22 | 0x32 if !local => return Parsed::Invalid,
        _ => None,
    };
    Parsed::Header { len, source }
}

/// `write` for a connection with an IPv6 end (the family byte 0x21).
fn write6(
    version: Version,
    client: SocketAddr,
    local: SocketAddr,
    out: &mut [u8; HEADER_ROOM],
) -> usize {
    let v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => ip.to_ipv6_mapped(),
        IpAddr::V6(ip) => ip,
    };
    match version {
        Version::V1 => {
            let mut cur = std::io::Cursor::new(&mut out[..]);
            // Fits: the longest TCP6 line is 104 bytes.
            let _ = write!(
                cur,
                "PROXY TCP6 {} {} {} {}\r\n",
                v6(client),
                v6(local),
                client.port(),
                local.port()
            );
            cur.position() as usize
        }
        Version::V2 => {
            out[..12].copy_from_slice(&V2_SIGNATURE);
            out[12] = 0x21; // version 2, PROXY
            out[13] = 0x21; // TCP over IPv6
            out[14..16].copy_from_slice(&36u16.to_be_bytes());
            out[16..32].copy_from_slice(&v6(client).octets());
            out[32..48].copy_from_slice(&v6(local).octets());
            out[48..50].copy_from_slice(&client.port().to_be_bytes());
            out[50..52].copy_from_slice(&local.port().to_be_bytes());
            52
        }
    }
}

/// Writes the header naming `client` (connected to us at `local`) into
/// `out`; returns its length.
pub fn write(
    version: Version,
    client: SocketAddr,
    local: SocketAddr,
    out: &mut [u8; HEADER_ROOM],
) -> usize {
    let (client, local) = match (client, local) {
        (SocketAddr::V4(c), SocketAddr::V4(l)) => (c, l),
        // IPv6 on either side: TCP6 (an IPv4 end as its mapped address).
        _ => return write6(version, client, local, out),
    };
    match version {
        Version::V1 => {
            let mut cur = std::io::Cursor::new(&mut out[..]);
            // Fits: the longest TCP4 line is 56 bytes.
            let _ = write!(
                cur,
                "PROXY TCP4 {} {} {} {}\r\n",
                client.ip(),
                local.ip(),
                client.port(),
                local.port()
            );
            cur.position() as usize
        }
        Version::V2 => {
            out[..12].copy_from_slice(&V2_SIGNATURE);
            out[12] = 0x21; // version 2, PROXY
            out[13] = 0x11; // TCP over IPv4
            out[14..16].copy_from_slice(&12u16.to_be_bytes());
            out[16..20].copy_from_slice(&client.ip().octets());
            out[20..24].copy_from_slice(&local.ip().octets());
            out[24..26].copy_from_slice(&client.port().to_be_bytes());
            out[26..28].copy_from_slice(&local.port().to_be_bytes());
            28
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_connection_gets_the_tcp6_family() {
        let client: SocketAddr = "[2001:db8:71::1]:40000".parse().unwrap();
        let local: SocketAddr = "[2001:db8:71::2]:80".parse().unwrap();
        let mut out = [0u8; HEADER_ROOM];
        let n = write(Version::V2, client, local, &mut out);
        assert_eq!(n, 52);
        assert_eq!(out[..12], V2_SIGNATURE);
        assert_eq!((out[12], out[13]), (0x21, 0x21), "v2 PROXY, TCP over IPv6");
        assert_eq!(u16::from_be_bytes([out[14], out[15]]), 36);
        let ip = |a: SocketAddr| match a.ip() {
            IpAddr::V6(ip) => ip.octets(),
            IpAddr::V4(_) => unreachable!(),
        };
        assert_eq!(out[16..32], ip(client));
        assert_eq!(out[32..48], ip(local));
        assert_eq!(out[48..52], [0x9c, 0x40, 0, 80]);
        let n = write(Version::V1, client, local, &mut out);
        assert_eq!(
            &out[..n],
            b"PROXY TCP6 2001:db8:71::1 2001:db8:71::2 40000 80\r\n"
        );
        // The longest TCP6 line fits.
        let max: SocketAddr = "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
            .parse()
            .unwrap();
        let n = write(Version::V1, max, max, &mut out);
        assert_eq!(n, 104);
    }

    fn addr(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    #[test]
    fn v1_and_v2_round_trip() {
        for v in [Version::V1, Version::V2] {
            let mut out = [0u8; HEADER_ROOM];
            let n = write(
                v,
                addr("192.0.2.7:51000").into(),
                addr("10.0.0.2:80").into(),
                &mut out,
            );
            let mut buf = out[..n].to_vec();
            buf.extend_from_slice(b"GET / HTTP/1.1\r\n");
            let want = Parsed::Header {
                len: n,
                source: Some(addr("192.0.2.7:51000").into()),
            };
            assert_eq!(parse(&buf), want, "{v:?}");
            // Every prefix is incomplete, never wrong.
            for k in 0..n {
                assert_eq!(parse(&buf[..k]), Parsed::Incomplete, "{v:?} prefix {k}");
            }
        }
        let mut out = [0u8; HEADER_ROOM];
        let n = write(
            Version::V1,
            addr("255.255.255.255:65535").into(),
            addr("255.255.255.255:65535").into(),
            &mut out,
        );
        assert_eq!(
            &out[..n],
            b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n"
        );
    }

    #[test]
    fn v1_forms() {
        let ok = |s: &[u8], source: Option<&str>| {
            assert_eq!(
                parse(s),
                Parsed::Header {
                    len: s.len(),
                    source: source.map(|a| a.parse().unwrap())
                },
                "{}",
                String::from_utf8_lossy(s)
            )
        };
        ok(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", Some("1.2.3.4:1"));
        ok(b"PROXY UNKNOWN\r\n", None);
        ok(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n", None);
        // An IPv6 client behind the balancer is itself.
        ok(b"PROXY TCP6 ::1 ::2 1000 80\r\n", Some("[::1]:1000"));
        ok(
            b"PROXY TCP6 2001:db8:71::1 2001:db8:71::2 40000 80\r\n",
            Some("[2001:db8:71::1]:40000"),
        );
        for bad in [
            &b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP6 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 ::1 ::2 1 2\r\n",
            b"PROXY TCP6 ::1 ::2 1\r\n",
            b"PROXY TCP6 ::1 ::2 1 2 3\r\n",
            b"PROXY TCP6 ::1 ::2 01 2\r\n",
            b"PROXY TCP6 ::1 ::2 1 65536\r\n",
            b"PROXY TCP6 ::g ::2 1 2\r\n",
            b"PROXY TCP6 [::1] ::2 1 2\r\n",
            b"PROXY TCP6 fe80::1%eth0 ::2 1 2\r\n",
            b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY\r\n",
            b"GET / HTTP/1.1\r\n",
            b"PROXZ",
            b"\x00",
        ] {
            assert_eq!(
                parse(bad),
                Parsed::Invalid,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // No CRLF within the spec's 107 bytes: not a header.
        let long = [b"PROXY UNKNOWN ".as_slice(), &[b'x'; 120]].concat();
        assert_eq!(parse(&long), Parsed::Invalid);
        assert_eq!(parse(&long[..100]), Parsed::Incomplete);
    }

    #[test]
    fn v2_forms() {
        let head = |cmd: u8, fam: u8, body: &[u8]| {
            let mut v = V2_SIGNATURE.to_vec();
            v.extend_from_slice(&[cmd, fam]);
            v.extend_from_slice(&(body.len() as u16).to_be_bytes());
            v.extend_from_slice(body);
            v
        };
        let ip4 = [192, 0, 2, 1, 10, 0, 0, 2, 0x1f, 0x90, 0, 80];
        // TLVs after the addresses are skipped.
        let mut tlv = ip4.to_vec();
        tlv.extend_from_slice(&[0x04, 0, 3, b'a', b'b', b'c']);
        let h = head(0x21, 0x11, &tlv);
        assert_eq!(
            parse(&h),
            Parsed::Header {
                len: h.len(),
                source: Some(addr("192.0.2.1:8080").into())
            }
        );
        // LOCAL (a health check): no client, whatever the addresses say.
        let h = head(0x20, 0x11, &ip4);
        let local = Parsed::Header {
            len: h.len(),
            source: None,
        };
        assert_eq!(parse(&h), local);
        // TCP over IPv6 (0x21): the client is the first 16 bytes and its
        // port follows both addresses; TLVs after them are skipped.
        let src: std::net::Ipv6Addr = "2001:db8:71::1".parse().unwrap();
        let dst: std::net::Ipv6Addr = "2001:db8:71::2".parse().unwrap();
        let mut ip6 = [src.octets(), dst.octets()].concat();
        ip6.extend_from_slice(&[0x9c, 0x40, 0, 80]);
        let want6 = |h: &[u8]| Parsed::Header {
            len: h.len(),
            source: Some("[2001:db8:71::1]:40000".parse().unwrap()),
        };
        let h = head(0x21, 0x21, &ip6);
        assert_eq!(parse(&h), want6(&h));
        let mut tlv6 = ip6.clone();
        tlv6.extend_from_slice(&[0x04, 0, 1, b'z']);
        let h = head(0x21, 0x21, &tlv6);
        assert_eq!(parse(&h), want6(&h));
        for k in 0..h.len() {
            assert_eq!(parse(&h[..k]), Parsed::Incomplete, "0x21 prefix {k}");
        }
        // What `write` sends upstream reads back as the same client.
        let client: SocketAddr = "[2001:db8:71::1]:40000".parse().unwrap();
        let mut out = [0u8; HEADER_ROOM];
        for v in [Version::V1, Version::V2] {
            let n = write(v, client, "[2001:db8:71::2]:80".parse().unwrap(), &mut out);
            assert_eq!(parse(&out[..n]), want6(&out[..n]), "{v:?}");
        }
        // LOCAL over IPv6: no client.
        let h = head(0x20, 0x21, &ip6);
        assert_eq!(
            parse(&h),
            Parsed::Header {
                len: h.len(),
                source: None
            }
        );
        for bad in [
            head(0x11, 0x11, &ip4),         // version 1 in a v2 signature
            head(0x22, 0x11, &ip4),         // unknown command
            head(0x21, 0x11, &ip4[..8]),    // addresses cut short
            head(0x21, 0x12, &ip4),         // UDP
            head(0x21, 0x21, &ip6[..35]),   // IPv6 addresses cut short
            head(0x21, 0x21, &ip4),         // IPv4 lengths under an IPv6 family
            head(0x21, 0x22, &ip6),         // UDP over IPv6
            head(0x21, 0x41, &ip4),         // unknown family
            head(0x21, 0x11, &[0u8; 1100]), // over the bound
        ] {
            assert_eq!(parse(&bad), Parsed::Invalid, "{bad:?}");
        }
        let mut wrong_sig = head(0x21, 0x11, &ip4);
        wrong_sig[5] = b'X';
        assert_eq!(parse(&wrong_sig), Parsed::Invalid);
    }

    #[test]
    fn no_panic_on_any_short_input() {
        // Every 1- and 2-byte input, and every truncation and byte flip of
        // valid headers (the fuzz target goes further).
        for a in 0..=255u8 {
            let _ = parse(&[a]);
            for b in 0..=255u8 {
                let _ = parse(&[a, b]);
            }
        }
        let mut out = [0u8; HEADER_ROOM];
        for v in [Version::V1, Version::V2] {
            let n = write(
                v,
                addr("1.2.3.4:5").into(),
                addr("6.7.8.9:10").into(),
                &mut out,
            );
            for i in 0..n {
                for x in [0u8, 0xff, b' ', b'\r', b'\n', b'9'] {
                    let mut m = out[..n].to_vec();
                    m[i] = x;
                    for k in 0..=n {
                        let _ = parse(&m[..k]);
                    }
                }
            }
        }
    }
}
