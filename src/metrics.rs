//! Prometheus metrics at `/metrics`.
//!
//! Event counters (relays by event, errors by code, rate-limited events) and the wait-time
//! histogram are recorded where they happen. Everything that describes the state (connections,
//! queue, rooms, matches, call outcomes, grades, process CPU and memory) is read from the live
//! state when Prometheus scrapes, so it is exact and costs nothing between scrapes.
//!
//! The recorder is process-wide (the `metrics` facade has one global recorder); the state figures
//! are set from the hub being scraped, so each server reports its own.

use std::sync::OnceLock;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::model::ErrorCode;

/// Wait before a match, in seconds: from instant pairs to the 5-minute search limit.
const WAIT_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full("roulette_wait_seconds".into()), WAIT_BUCKETS)
            .expect("buckets are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed by an embedding program: then ours only renders
        // the state figures, which are set below on every scrape anyway.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows only state");
        }
        handle
    })
}

/// Installs the recorder (idempotent). Called at start so counters count from the first event.
pub(crate) fn init() {
    handle();
    // Every series the dashboard and the alert rules (deploy/monitoring/) query is exported from
    // the first scrape, at 0: a panel of a fresh node shows 0 rather than "no data", and `rate()`
    // and `increase()` see the first burst (a series born at its first increment hides it).
    counter!("roulette_connections_closed_backpressure_total").increment(0);
    counter!("roulette_connection_panics_total").increment(0);
    counter!("roulette_sessions_recovered_total").increment(0);
    counter!("roulette_events_replayed_total").increment(0);
    for why in crate::ws::recovery::Refused::ALL {
        counter!("roulette_recoveries_refused_total", "reason" => why.label()).increment(0);
    }
    counter!("roulette_kicks_total").increment(0);
    counter!("roulette_moderation_records_dropped_total").increment(0);
    for outcome in ["delivered", "retried", "failed", "dropped", "shed"] {
        counter!("roulette_webhooks_total", "outcome" => outcome).increment(0);
    }
    for source in ["operator", "reports"] {
        counter!("roulette_bans_total", "source" => source).increment(0);
    }
    for kind in RATE_LIMITED_KINDS {
        counter!("roulette_rate_limited_total", "kind" => kind).increment(0);
    }
    for code in ErrorCode::ALL {
        counter!("roulette_errors_total", "code" => code.as_str()).increment(0);
    }
    for reason in crate::core::quality::CALL_FAILURES {
        counter!("roulette_calls_failed_total", "reason" => reason).increment(0);
    }
    relay_counters();
    // Registered without a sample: its buckets are exported at 0.
    let _ = histogram!("roulette_wait_seconds");
}

/// What `roulette_rate_limited_total{kind}` counts: Socket.IO events, Socket.IO connections, HTTP
/// requests, and TCP connections dropped before their first request.
const RATE_LIMITED_KINDS: [&str; 4] = ["event", "connection", "request", "http-connection"];

/// Folds the histogram samples recorded since the last call into the histogram. The recorder
/// keeps every sample until then, and only a scrape did this before: a server nobody scraped
/// grew by 16 bytes per match for good (found with massif during a two-minute soak). The timer
/// calls this every few seconds.
pub(crate) fn upkeep() {
    handle().run_upkeep();
}

/// Every event relayed to a partner: the labels of `roulette_relayed_messages_total`.
const RELAYED: [&str; 7] = [
    "webrtc-ice-candidate",
    "webrtc-offer",
    "webrtc-answer",
    "chat-message",
    "partner-typing",
    "partner-quality-report",
    "partner-connection-status",
];

/// The relay counters, registered (at 0) on first use. `counter!` with a label builds and
/// hashes a key (and allocates the label) on every call, a measurable part of a relay: they are
/// looked up once.
fn relay_counters() -> &'static [metrics::Counter] {
    static COUNTERS: OnceLock<Vec<metrics::Counter>> = OnceLock::new();
    once::<Vec<_>>(&COUNTERS, || {
        RELAYED
            .iter()
            .map(|e| {
                let c = counter!("roulette_relayed_messages_total", "event" => *e);
                c.increment(0);
                c
            })
            .collect()
    })
}

/// A relayed event reached the partner's queue.
pub(crate) fn relayed(event: &str) {
    match RELAYED.iter().position(|e| *e == event) {
        Some(i) => relay_counters()[i].increment(1),
        None => {
            counter!("roulette_relayed_messages_total", "event" => event.to_owned()).increment(1)
        }
    }
}

/// A refusal was sent (as an `error` or `auth-error` event, or in an acknowledgement).
pub(crate) fn error(code: ErrorCode) {
    counter!("roulette_errors_total", "code" => code.as_str()).increment(1);
}

/// An event, connection or request was refused by a rate limit (`what`: one of
/// [`RATE_LIMITED_KINDS`]).
pub(crate) fn rate_limited(what: &'static str) {
    counter!("roulette_rate_limited_total", "kind" => what).increment(1);
}

/// A TCP connection was dropped before its first request: its address held
/// `MAX_HTTP_CONNECTIONS_PER_IP` connections in the HTTP stage already.
pub(crate) fn http_connection_refused() {
    counter!("roulette_rate_limited_total", "kind" => "http-connection").increment(1);
}

/// A moderation record could not be queued for the store (the disk does not keep up).
pub(crate) fn moderation_record_dropped() {
    counter!("roulette_moderation_records_dropped_total").increment(1);
}

/// A ban was made, by `source` (`operator` or `reports`).
pub(crate) fn banned(source: &'static str) {
    counter!("roulette_bans_total", "source" => source).increment(1);
}

/// A webhook event was `delivered`, `retried`, `failed` (given up), `dropped` (queue full) or
/// `shed` (a `user.reported` event while reports held their share of the queue).
pub(crate) fn webhook(outcome: &'static str) {
    counter!("roulette_webhooks_total", "outcome" => outcome).increment(1);
}

/// An operator kicked a user.
pub(crate) fn kicked() {
    counter!("roulette_kicks_total").increment(1);
}

/// A user was matched after waiting `ms`.
pub(crate) fn waited(ms: u64) {
    static WAITS: OnceLock<metrics::Histogram> = OnceLock::new();
    once(&WAITS, || histogram!("roulette_wait_seconds")).record(ms as f64 / 1000.0);
}

/// A relay from another node reached its recipient's queue.
pub(crate) fn relayed_in() {
    static RELAYS_IN: OnceLock<metrics::Counter> = OnceLock::new();
    once(&RELAYS_IN, || counter!("roulette_cluster_relays_in_total")).increment(1);
}

/// Series looked up once, after the recorder is installed: `counter!` and `histogram!` build
/// and hash the key on every call, which every relay paid (and, in a cluster, every message).
fn once<T>(cell: &'static OnceLock<T>, make: impl FnOnce() -> T) -> &'static T {
    cell.get_or_init(|| {
        handle();
        make()
    })
}

/// What the node's figures are at one moment: `/metrics` renders from this, not from the node.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// The core's figures.
    pub stats: crate::core::CoreStats,
    /// Open Engine.IO sessions.
    pub connections: usize,
    /// The transport's output queues.
    pub output: crate::ws::Output,
    /// Sessions held for clients to recover, and the bytes kept for them.
    pub held: crate::ws::Held,
    /// Bans in force.
    pub bans: usize,
    /// Webhook events waiting to be delivered (`None`: no webhooks).
    pub webhook_queue: Option<usize>,
    /// `DATA_DIR` is set and cannot be written: bans and reports are kept in memory only.
    pub moderation_store_failing: bool,
    /// In a cluster: whether Redis answers, the whole cluster's figures, and how many direct
    /// links this node has up to other nodes.
    pub cluster: Option<(bool, crate::bus::ClusterFigures, usize)>,
}

/// The Prometheus text for a node's figures.
pub(crate) fn render(snap: &Snapshot) -> String {
    let h = handle();
    let stats = &snap.stats;
    let live = stats.live;
    gauge!("roulette_connections").set(snap.connections as f64);
    gauge!("roulette_users_connected").set(live.connected_users as f64);
    gauge!("roulette_users_waiting").set(live.waiting_users as f64);
    gauge!("roulette_users_reconnecting").set(stats.reconnecting_users as f64);
    gauge!("roulette_rooms_active").set(live.active_rooms as f64);
    gauge!("roulette_blocks").set(stats.blocks as f64);
    gauge!("roulette_bans_active").set(snap.bans as f64);
    gauge!("roulette_webhook_queue_depth").set(snap.webhook_queue.unwrap_or(0) as f64);
    gauge!("roulette_moderation_store_failing")
        .set(f64::from(u8::from(snap.moderation_store_failing)));
    let out = &snap.output;
    gauge!("roulette_output_queued_bytes").set(out.queued_bytes as f64);
    gauge!("roulette_connections_paused").set(out.paused as f64);
    gauge!("roulette_sessions_held").set(snap.held.sessions as f64);
    gauge!("roulette_recovery_held_bytes").set(snap.held.bytes as f64);
    counter!("roulette_matches_total").absolute(stats.total_matches);
    counter!("roulette_reports_total").absolute(stats.reports);
    let q = &stats.quality;
    counter!("roulette_calls_total", "outcome" => "connected").absolute(q.calls_connected);
    counter!("roulette_calls_total", "outcome" => "unreported").absolute(q.calls_unreported);
    for (reason, n) in &q.failures_by_reason {
        counter!("roulette_calls_failed_total", "reason" => *reason).absolute(*n);
    }
    // Unknown before the first outcome: NaN, as a Prometheus summary without observations
    // exports its quantiles. The series exists from the first scrape, and a NaN compares false,
    // so `roulette_connection_success_ratio < 0.8` does not fire on a node that had no call.
    gauge!("roulette_connection_success_ratio").set(q.connection_success_rate.unwrap_or(f64::NAN));
    for (p, v) in [
        ("0.5", q.time_to_connect_ms.p50),
        ("0.95", q.time_to_connect_ms.p95),
    ] {
        let secs = v.map_or(f64::NAN, |ms| ms as f64 / 1000.0);
        gauge!("roulette_time_to_connect_seconds", "quantile" => p).set(secs);
    }
    for (grade, n) in [
        ("excellent", q.grades.excellent),
        ("good", q.grades.good),
        ("fair", q.grades.fair),
        ("poor", q.grades.poor),
    ] {
        counter!("roulette_quality_reports_total", "grade" => grade).absolute(n);
    }
    if let Some((redis_up, f, links)) = &snap.cluster {
        gauge!("roulette_cluster_redis_up").set(if *redis_up { 1.0 } else { 0.0 });
        gauge!("roulette_cluster_links_up").set(*links as f64);
        gauge!("roulette_cluster_nodes").set(f.nodes as f64);
        gauge!("roulette_cluster_connections").set(f.connections as f64);
        gauge!("roulette_cluster_users_connected").set(f.users as f64);
        gauge!("roulette_cluster_users_waiting").set(f.waiting as f64);
        gauge!("roulette_cluster_rooms_active").set(f.rooms as f64);
        counter!("roulette_cluster_matches_total").absolute(f.total_matches);
    }
    let p = process();
    gauge!("process_resident_memory_bytes").set(p.rss_bytes as f64);
    // A float that only grows: Prometheus calls it a counter, the facade's counters are integers.
    gauge!("process_cpu_seconds_total").set(p.cpu_seconds);
    gauge!("process_open_fds").set(p.open_fds as f64);
    h.run_upkeep();
    h.render()
}

/// Process figures from `/proc/self` (zero where unavailable).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Process {
    /// Resident set size.
    pub rss_bytes: u64,
    /// User plus system CPU time.
    pub cpu_seconds: f64,
    /// Open file descriptors.
    pub open_fds: usize,
}

/// Reads the current figures.
pub(crate) fn process() -> Process {
    // Clock ticks per second: 100 on every Linux this runs on (USER_HZ is fixed by the ABI).
    const TICKS: f64 = 100.0;
    let rss_pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name (which may contain spaces) start at ") ".
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / TICKS)
        })
        .unwrap_or(0.0);
    let open_fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0);
    Process {
        rss_bytes: rss_pages * 4096,
        cpu_seconds: cpu,
        open_fds,
    }
}
