//! Names and HELP texts of the stack counters in `/metrics` (the names in
//! `/stats` stay `Counter::name`).

use crate::net::counters::Counter;

/// The metric's name without the `zproxy_` prefix and without `_total`
/// (the encoder adds it to counters).
pub fn metric_name(c: Counter) -> &'static str {
    match c {
        Counter::BusyCycles => "worker_busy_cycles",
        Counter::TotalCycles => "worker_cycles",
        Counter::UpstreamPooled => "upstream_pooled_connections",
        _ => c.name(),
    }
}

pub fn counter_help(c: Counter) -> &'static str {
    use Counter::*;
    match c {
        RxFrames => "Frames the worker took from its rx queues.",
        RxBytes => "Bytes of the frames the worker took from its rx queues.",
        TxFrames => "Frames the worker handed to its tx queues.",
        TxBytes => "Bytes of the frames the worker handed to its tx queues.",
        TxDropped => "Frames the tx queue did not take (full) and the worker dropped.",
        DropNotForUs => "Frames dropped that were for another address, protocol or port.",
        DropMalformed => "Frames dropped as malformed.",
        DropChecksum => "Frames dropped for a bad IPv4 or TCP checksum.",
        DropTimeWait => "Segments dropped for a connection in TIME-WAIT.",
        TimeWaitAcks => "ACKs sent for connections in TIME-WAIT.",
        RstChallenged => "RSTs answered with a challenge ACK (RFC 5961).",
        FlowsAccepted => "Client connections accepted.",
        FlowsRefused => "Client connections refused (no free flow, draining, or a limit).",
        RefusedAcl => "Client connections refused by a listener's allow list.",
        RefusedPerSource => "Client connections refused by max_connections_per_source.",
        RefusedRateLimit => "Client connections refused (RST) by connection_rate_limit.",
        FlowsClosed => "Connections closed.",
        FlowsTimedOut => "Connections closed for being idle too long.",
        FlowsActive => "Flows in use now (client and upstream connections).",
        TimeWaitEntries => "Connections in TIME-WAIT now.",
        Requests => "HTTP requests answered by the worker (proxied or static).",
        BadRequests => "HTTP requests refused as malformed.",
        UpstreamConnects => "Connections opened to upstream servers.",
        UpstreamConnectFailures => "Connections to upstream servers that failed.",
        UpstreamReused => "Requests sent on a pooled upstream connection.",
        UpstreamReuseRetries => "Requests replayed on a new connection after a pooled one failed before any response byte.",
        UpstreamPooled => "Idle upstream connections kept for reuse now.",
        NoUpstream => "Requests that matched no route and no default upstream.",
        ProxyErrors => "Proxied exchanges that failed (all causes; see proxy_failures_total).",
        FailRefused | FailReset | FailTimeout | FailNoServer | FailNoSlot | FailBadResponse
        | FailBadRequest | FailClientAbort | FailRateLimited | FailTls => {
            "Proxied exchanges that failed for this cause."
        }
        TlsHandshakes => "TLS handshakes completed (clients and upstreams).",
        TlsResumed => "TLS handshakes that resumed a session (ticket or session id).",
        TlsProtocolErrors => {
            "TLS connections ended by bad input or a failed verification (an alert was sent)."
        }
        TlsAlertsReceived => "TLS connections ended by a fatal alert from the peer.",
        TlsHandshakeTimeouts => "TLS handshakes that did not finish within handshake_timeout_ms.",
        TlsDeferred => {
            "TLS handshake steps put off to the next poll iteration (tls_handshakes_per_poll)."
        }
        SynCookiesSent => "SYN cookies sent (SYN backlog full).",
        SynCookiesAccepted => "Connections accepted from a valid SYN cookie.",
        SynDroppedBehind => {
            "SYNs dropped (no RST, no state) while the worker was behind its rx queue (runtime.admit_backlog_ms); the client sends them again."
        }
        SynDroppedFull => {
            "SYNs dropped (no RST, no state) because the flow slots in use reached admit_flow_limit; the client sends them again."
        }
        CookieAcksDropped => {
            "ACKs with a valid SYN cookie dropped for want of a flow slot (the client sends them again; never a RST)."
        }
        UpstreamTimeoutsExcused => {
            "Upstream connects that timed out while this worker was losing frames itself (behind or tx full): not held against the server's health."
        }
        AdmitFlowLimit => {
            "Flow slots in use past which new clients are not taken (runtime.admit_flows_percent of max_flows)."
        }
        AdmitBacklogMs => {
            "Milliseconds of rx backlog after which the worker drops new SYNs (runtime.admit_backlog_ms; 0: never)."
        }
        SynBacklog => "Half-open connections held before SYNs get cookies (runtime.syn_backlog).",
        WorkerBehind => "1 while the worker is behind its rx queue and drops new SYNs, else 0.",
        HandoffsOut => "Frames handed to the worker that owns their flow.",
        HandoffsIn => "Frames received from another worker for a flow this one owns.",
        HandoffDrops => "Frames dropped because the owner's handoff ring was full.",
        ExceptionToKernel => "Frames queued for the kernel's exception interface (not ZProxy's).",
        SecondChanceForwarded => "Segments for no flow here sent on to the fleet's peers ([fleet]).",
        SecondChanceReceived => "Frames that came from a fleet peer (second chances and their flows).",
        SecondChanceDropped => "Second chances from a peer that matched no flow here (dropped, no RST).",
        BuffersReleased => "Flow slots whose socket buffer pages were given back to the kernel (free slots quiet for a second).",
        SlotsBuilt => "Flow slots built so far (each is built on first use; at most max_flows).",
        ExceptionRateDrops => "Frames for the kernel dropped over port.exception.rate.",
        ExceptionRingDrops => {
            "Frames for the kernel dropped because the control core's ring was full."
        }
        ExceptionFromKernel => {
            "Frames the kernel sent that went out of the port (by the control core, or by worker 0 where the port has no tx queue to spare)."
        }
        ExceptionTxDrops => {
            "Frames the kernel sent that were dropped: the port or worker 0's ring did not take them (worker=\"control\")."
        }
        ExceptionKernelDrops => {
            "Frames for the kernel its interface did not take (worker=\"control\")."
        }
        Ipv6Frames => "IPv6 frames seen on ports with IPv6 addresses.",
        Ipv6Malformed => "IPv6 frames dropped as malformed (short, bad length, multicast source).",
        Ipv6NotForUs => "IPv6 frames dropped that were for another address.",
        Ipv6BadChecksum => "ICMPv6 messages dropped for a bad checksum.",
        Ipv6ExtHeader => "IPv6 frames dropped for an extension header we refuse (options to discard, source routes, long chains).",
        Ipv6RoutingType0 => "IPv6 frames dropped for a type 0 routing header (RFC 5095).",
        Ipv6Fragment => "IPv6 fragments dropped (not reassembled).",
        Ipv6Jumbogram => "IPv6 jumbograms dropped.",
        Ipv6BadNextHeader => "IPv6 frames dropped for an unknown or unsupported next header.",
        Ipv6NdpHopLimit => "Neighbour discovery messages dropped for a hop limit other than 255 (off-link).",
        Ipv6NdpInvalid => "Neighbour discovery messages dropped as invalid (code, target, option lengths).",
        Ipv6Unhandled => "IPv6 frames not handled yet (TCP and UDP over IPv6, other ICMPv6).",
        Ipv6RouterAdverts => "Router advertisements ignored (addresses and gateway come from the config).",
        Ipv6NsAnswered => "Neighbour solicitations answered with an advertisement.",
        Ipv6EchoAnswered => "ICMPv6 echo requests answered.",
        Ipv6NeighboursLearned => "IPv6 neighbours learned or changed in the neighbour cache.",
        Ipv6DadDuplicates => "Our IPv6 addresses found in use by another node (duplicate address detection).",
        Ipv6AddressConflicts => "Claims by another node on an IPv6 address of ours after DAD.",
        Ipv6TcpAccepted => "TCP connections accepted from IPv6 clients.",
        Ipv6TcpConnects => "TCP connections opened to IPv6 upstream servers (and health checks).",
        Ipv6SynCookies => "IPv6 SYNs answered with a SYN cookie (also in syn_cookies_sent).",
        Ipv6HandoffsOut => "IPv6 TCP frames passed to the worker that owns their flow (also in handoffs_out).",
        Ipv6PtbApplied => "ICMPv6 Packet Too Big messages that lowered an open flow's path MTU.",
        Ipv6PtbDropped => "ICMPv6 Packet Too Big messages ignored: no flow of ours, MTU below 1280 or not lower, a sequence number not in flight, malformed.",
        BusyCycles => "TSC cycles of loop iterations that found work.",
        TotalCycles => "TSC cycles the worker's loop ran.",
        RateLimitEntries => {
            "Request rate-limit buckets in use now (bounded by runtime.rate_limit_entries)."
        }
        ConnRateLimitEntries => {
            "Connection rate-limit buckets in use now (bounded by runtime.rate_limit_entries)."
        }
        RateLimitEvictions => {
            "Rate-limit buckets dropped before they were full, to make room for another client."
        }
        AccessLogDropped => "Access log lines dropped because the writer fell behind (ring full).",
    }
}
