//! Per-worker counters: plain integers on the hot path, published to relaxed
//! atomics every `PUBLISH_US` for the control thread (no locks, no sharing of
//! cache lines on every packet).

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($variant:ident => $name:literal,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(usize)]
        pub enum Counter { $($variant,)* }

        impl Counter {
            pub const ALL: &'static [Counter] = &[$(Counter::$variant,)*];

            pub fn name(self) -> &'static str {
                match self { $(Counter::$variant => $name,)* }
            }
        }
    };
}

counters! {
    RxFrames => "rx_frames",
    RxBytes => "rx_bytes",
    TxFrames => "tx_frames",
    TxBytes => "tx_bytes",
    TxDropped => "tx_dropped",
    DropNotForUs => "drop_not_for_us",
    DropMalformed => "drop_malformed",
    DropChecksum => "drop_bad_checksum",
    DropTimeWait => "drop_time_wait",
    TimeWaitAcks => "time_wait_acks",
    RstChallenged => "rst_challenged",
    FlowsAccepted => "flows_accepted",
    FlowsRefused => "flows_refused",
    RefusedAcl => "refused_acl",
    RefusedPerSource => "refused_per_source",
    RefusedRateLimit => "refused_rate_limit",
    FlowsClosed => "flows_closed",
    FlowsTimedOut => "flows_timed_out",
    FlowsActive => "flows_active",
    TimeWaitEntries => "time_wait_entries",
    Requests => "requests",
    BadRequests => "bad_requests",
    UpstreamConnects => "upstream_connects",
    UpstreamConnectFailures => "upstream_connect_failures",
    UpstreamReused => "upstream_reused",
    UpstreamReuseRetries => "upstream_reuse_retries",
    UpstreamPooled => "upstream_pooled",
    NoUpstream => "no_upstream",
    ProxyErrors => "proxy_errors",
    FailRefused => "failures_refused",
    FailReset => "failures_reset",
    FailTimeout => "failures_timeout",
    FailNoServer => "failures_no_server",
    FailNoSlot => "failures_no_slot",
    FailBadResponse => "failures_bad_response",
    FailBadRequest => "failures_bad_request",
    FailClientAbort => "failures_client_abort",
    FailRateLimited => "failures_rate_limited",
    FailTls => "failures_tls",
    TlsHandshakes => "tls_handshakes",
    TlsResumed => "tls_resumed",
    TlsProtocolErrors => "tls_protocol_errors",
    TlsAlertsReceived => "tls_alerts_received",
    TlsHandshakeTimeouts => "tls_handshake_timeouts",
    TlsDeferred => "tls_handshakes_deferred",
    SynCookiesSent => "syn_cookies_sent",
    SynCookiesAccepted => "syn_cookies_accepted",
    SynDroppedBehind => "syn_dropped_behind",
    SynDroppedFull => "syn_dropped_table_full",
    CookieAcksDropped => "syn_cookie_acks_dropped",
    UpstreamTimeoutsExcused => "upstream_timeouts_excused",
    AdmitFlowLimit => "admit_flow_limit",
    AdmitBacklogMs => "admit_backlog_ms",
    SynBacklog => "syn_backlog",
    WorkerBehind => "worker_behind",
    HandoffsOut => "handoffs_out",
    HandoffsIn => "handoffs_in",
    HandoffDrops => "handoff_drops",
    AccessLogDropped => "access_log_dropped",
    RateLimitEntries => "rate_limit_entries",
    ConnRateLimitEntries => "conn_rate_limit_entries",
    RateLimitEvictions => "rate_limit_evictions",
    ExceptionToKernel => "exception_to_kernel",
    ExceptionRateDrops => "exception_rate_drops",
    ExceptionRingDrops => "exception_ring_drops",
    ExceptionFromKernel => "exception_from_kernel",
    SecondChanceForwarded => "second_chance_forwarded",
    SecondChanceReceived => "second_chance_received",
    BuffersReleased => "socket_buffers_released",
    SlotsBuilt => "flow_slots_built",
    SecondChanceDropped => "second_chance_dropped",
    ExceptionTxDrops => "exception_tx_drops",
    ExceptionKernelDrops => "exception_kernel_drops",
    Ipv6Frames => "ipv6_rx",
    Ipv6Malformed => "ipv6_drop_malformed",
    Ipv6NotForUs => "ipv6_drop_not_for_us",
    Ipv6BadChecksum => "ipv6_drop_bad_checksum",
    Ipv6ExtHeader => "ipv6_drop_ext_header",
    Ipv6RoutingType0 => "ipv6_drop_routing_type0",
    Ipv6Fragment => "ipv6_drop_fragment",
    Ipv6Jumbogram => "ipv6_drop_jumbogram",
    Ipv6BadNextHeader => "ipv6_drop_next_header",
    Ipv6NdpHopLimit => "ipv6_drop_ndp_hop_limit",
    Ipv6NdpInvalid => "ipv6_drop_ndp_invalid",
    Ipv6Unhandled => "ipv6_unhandled",
    Ipv6RouterAdverts => "ipv6_router_adverts_ignored",
    Ipv6NsAnswered => "ipv6_ns_answered",
    Ipv6EchoAnswered => "ipv6_echo_answered",
    Ipv6NeighboursLearned => "ipv6_neighbours_learned",
    Ipv6DadDuplicates => "ipv6_dad_duplicates",
    Ipv6AddressConflicts => "ipv6_address_conflicts",
    Ipv6TcpAccepted => "ipv6_tcp_accepted",
    Ipv6TcpConnects => "ipv6_tcp_connects",
    Ipv6SynCookies => "ipv6_syn_cookies_sent",
    Ipv6HandoffsOut => "ipv6_handoffs_out",
    Ipv6PtbApplied => "ipv6_ptb_applied",
    Ipv6PtbDropped => "ipv6_ptb_dropped",
    BusyCycles => "busy_cycles",
    TotalCycles => "total_cycles",
}

pub const N_COUNTERS: usize = Counter::ALL.len();

impl Counter {
    /// For the proxy's failures by cause (`failures_<cause>`): the cause,
    /// shown as a label of one metric.
    pub fn failure_cause(self) -> Option<&'static str> {
        self.name().strip_prefix("failures_")
    }
}

/// The worker's own copy.
pub struct Counters(pub [u64; N_COUNTERS]);

impl Counters {
    pub fn new() -> Self {
        Counters([0; N_COUNTERS])
    }

    #[inline]
    pub fn add(&mut self, c: Counter, n: u64) {
        self.0[c as usize] += n;
    }

    #[inline]
    pub fn set(&mut self, c: Counter, v: u64) {
        self.0[c as usize] = v;
    }

    #[inline]
    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize]
    }
}

impl Default for Counters {
    fn default() -> Self {
        Self::new()
    }
}

/// Counters as published for other threads (written only by their worker).
pub struct SharedCounters([AtomicU64; N_COUNTERS]);

impl Default for SharedCounters {
    fn default() -> Self {
        SharedCounters(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl SharedCounters {
    pub fn publish(&self, c: &Counters) {
        for (slot, v) in self.0.iter().zip(c.0.iter()) {
            slot.store(*v, Ordering::Relaxed);
        }
    }

    pub fn get(&self, c: Counter) -> u64 {
        self.0[c as usize].load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        Counter::ALL
            .iter()
            .map(|&c| (c.name(), self.get(c)))
            .collect()
    }
}
