//! IPv6 foundations in the netns lab, on both virtual devices that exchange
//! frames with a kernel peer (net_af_packet and net_af_xdp): the client
//! namespace's kernel resolves the port's global address by neighbour
//! discovery (`ip -6 neigh` shows the port's MAC), pings it, and a
//! neighbour solicitation sent with hop limit 64 (off-link) is dropped and
//! counted, not answered. The lab disables IPv6 in every namespace; this test
//! turns it on in the client namespace only (the proxy namespace's kernel
//! stays out of the way on the port's interface).

mod common;

use std::time::Duration;

use common::proxy::{lab_lock, stat};
use common::*;

const CLIENT_V6: &str = "2001:db8:71::1";
const PORT_V6: &str = "2001:db8:71::2";
const PORT_LL: &str = "fe80::71:2";

fn config(vdev_client: &str, vdev_upstream: &str) -> String {
    format!(
        r#"
[runtime]
worker_lcores = [1]
mbufs = 16383
max_flows = 1024

[[port]]
name = "client"
vdev = "{vdev_client}"
addresses = ["{PROXY_CLIENT_IP}/24", "{PORT_V6}/64", "{PORT_LL}/64"]
gateway = "{CLIENT_IP}"
gateway6 = "{CLIENT_V6}"

[[port]]
name = "upstream"
vdev = "{vdev_upstream}"
address = "{PROXY_UPSTREAM_IP}/24"

[[listener]]
port = "client"
tcp_port = 80
mode = "static"
[listener.static]
body = "v4 still works\n"
"#
    )
}

/// Sends one neighbour solicitation for `target` from the client's global
/// address with the given hop limit, on `cli0` (a raw frame: the kernel
/// always sends 255).
const SEND_NS: &str = r#"
import socket, struct, sys
src = socket.inet_pton(socket.AF_INET6, sys.argv[1])
target = socket.inet_pton(socket.AF_INET6, sys.argv[2])
hop = int(sys.argv[3])
mac = bytes.fromhex(open('/sys/class/net/cli0/address').read().strip().replace(':', ''))
group = bytes.fromhex('ff0200000000000000000001ff') + target[13:]
icmp = bytearray(struct.pack('!BBHI', 135, 0, 0, 0) + target + bytes([1, 1]) + mac)
pseudo = src + group + struct.pack('!I', len(icmp)) + bytes([0, 0, 0, 58])
data = pseudo + icmp
s = sum(struct.unpack('!%dH' % (len(data) // 2), data))
while s >> 16:
    s = (s & 0xffff) + (s >> 16)
struct.pack_into('!H', icmp, 2, ~s & 0xffff)
ip6 = struct.pack('!IHBB', 6 << 28, len(icmp), 58, hop) + src + group
eth = bytes([0x33, 0x33]) + group[12:] + mac + b'\x86\xdd'
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind(('cli0', 0))
sock.send(eth + ip6 + bytes(icmp))
"#;

fn ipv6(vdev_client: &str, vdev_upstream: &str) {
    let _lock = lab_lock();
    let lab = Lab::up();
    lab.exec_ok(
        "client",
        [
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=0",
            "net.ipv6.conf.default.disable_ipv6=0",
            "net.ipv6.conf.cli0.disable_ipv6=0",
        ],
    );
    lab.exec_ok(
        "client",
        [
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{CLIENT_V6}/64"),
            "dev",
            CLIENT_IF,
            "nodad",
        ],
    );
    let z = ZProxy::start(&lab, "zproxy", &config(vdev_client, vdev_upstream));
    let ping = ["ping", "-6", "-c", "1", "-W", "1", PORT_V6];
    assert!(
        wait_until(Duration::from_secs(15), || lab
            .exec("client", ping)
            .status
            .success()),
        "ping -6 {PORT_V6} never answered; zproxy log:\n{}",
        z.log()
    );
    let ping = lab.exec_ok(
        "client",
        ["ping", "-6", "-c", "5", "-i", "0.2", "-W", "1", PORT_V6],
    );
    assert!(ping.contains(" 0% packet loss"), "ping -6: {ping}");

    // The client's kernel learned the port's MAC by NDP.
    let mac = lab
        .exec_ok(
            "proxy",
            ["cat", &format!("/sys/class/net/{PROXY_CLIENT_IF}/address")],
        )
        .trim()
        .to_owned();
    let neigh = lab.exec_ok(
        "client",
        ["ip", "-6", "neigh", "show", PORT_V6, "dev", CLIENT_IF],
    );
    assert!(
        neigh.contains(&format!("lladdr {mac}"))
            && ["REACHABLE", "STALE", "DELAY", "PROBE"]
                .iter()
                .any(|s| neigh.contains(s)),
        "ip -6 neigh: {neigh:?} (want lladdr {mac}, REACHABLE or STALE)"
    );
    // Workers publish their counters every 100 ms: wait for the last pings.
    wait_for(Duration::from_secs(5), "6 echo requests answered", || {
        stat(&lab, "ipv6_echo_answered") >= 6
    });
    // (The client may have learned the MAC from the port's own NS for
    // gateway6, so its NS need not have come: the raw NS below checks answers.)
    // The port resolved its IPv6 gateway (the client) by NDP too.
    wait_for(
        Duration::from_secs(5),
        "the IPv6 gateway to be resolved",
        || stat(&lab, "ipv6_neighbours_learned") >= 1,
    );
    // IPv4 is as it was.
    let (code, body) = proxy::curl(&lab, &[&format!("http://{PROXY_CLIENT_IP}/")]);
    assert_eq!((code, body.as_str()), (200, "v4 still works\n"));

    // An NS with hop limit 64 came from off the link: dropped and counted,
    // while the same NS with 255 is answered.
    let answered = stat(&lab, "ipv6_ns_answered");
    let send = |hop: &str| {
        lab.exec_ok(
            "client",
            ["python3", "-c", SEND_NS, CLIENT_V6, PORT_V6, hop],
        );
    };
    send("64");
    wait_for(
        Duration::from_secs(5),
        "the hop-limit-64 NS to be counted",
        || stat(&lab, "ipv6_drop_ndp_hop_limit") == 1,
    );
    send("255");
    wait_for(
        Duration::from_secs(5),
        "the hop-limit-255 NS to be answered",
        || stat(&lab, "ipv6_ns_answered") > answered,
    );
    assert_eq!(stat(&lab, "ipv6_drop_ndp_hop_limit"), 1);
    let (ok, log) = z.stop("INT");
    assert!(ok, "zproxy exited with an error:\n{log}");
}

#[test]
fn ipv6_ping_and_ndp_af_packet() {
    if !require_root() {
        return;
    }
    ipv6(
        "net_af_packet0,iface=cli1,qpairs=1",
        "net_af_packet1,iface=ups1,qpairs=1",
    );
}

#[test]
fn ipv6_ping_and_ndp_af_xdp() {
    if !require_root() {
        return;
    }
    ipv6(
        "net_af_xdp0,iface=cli1,start_queue=0,queue_count=1",
        "net_af_xdp1,iface=ups1,start_queue=0,queue_count=1",
    );
}
