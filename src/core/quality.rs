//! Call quality: did each call connect, how long did it take, how good was it.
//!
//! Clients report what their `RTCPeerConnection` sees (`connection-status`) and its numbers
//! (`quality-report`). The server keeps, per open room, when it was matched and whether a member
//! has reported `connected`; when a room closes its outcome is recorded:
//! - **connected**: a member reported `connected` (counted at that moment; the time from
//!   `matched` is a sample of the time-to-connect figures);
//! - **failed**: a member reported `failed`, or the room ended while its members had reported
//!   only `connecting` / `disconnected` (the reason says which);
//! - **unreported**: nobody reported anything (a client that does not send `connection-status`).
//!   These are left out of the success rate, which is connected / (connected + failed).
//!
//! Grades are computed by the server from the raw numbers of each `quality-report`, never taken
//! from the client (see [`grade`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::RoomId;
use crate::model::call::{ConnectionState, Quality, QualityStats};

/// How many time-to-connect samples are kept for the percentiles.
const SAMPLES: usize = 2000;

/// The grade of a call from its raw numbers: the worst grade any given number earns.
///
/// | grade | packet loss | round-trip time | jitter | bandwidth |
/// |---|---|---|---|---|
/// | excellent | < 1 % | < 100 ms | < 30 ms | > 500 kbit/s |
/// | good | < 3 % | < 200 ms | < 50 ms | > 300 kbit/s |
/// | fair | < 5 % | < 400 ms | < 100 ms | > 150 kbit/s |
/// | poor | otherwise | | | |
///
/// Numbers a client did not send are not held against it; with none at all there is no grade.
/// The loss, RTT and bandwidth thresholds are those of the clients already in use (so the
/// server's grade and theirs agree); jitter thresholds follow the usual VoIP guidance.
pub(crate) fn grade(s: &QualityStats) -> Option<Quality> {
    // Each metric: its value, then the bounds of excellent, good and fair.
    let lower_is_better = [
        (s.packet_loss, [1.0, 3.0, 5.0]),
        (s.latency, [100.0, 200.0, 400.0]),
        (s.jitter, [30.0, 50.0, 100.0]),
    ];
    let mut worst: Option<u8> = None;
    for (value, bounds) in lower_is_better {
        if let Some(v) = value {
            let g = bounds.iter().position(|b| v < *b).unwrap_or(3) as u8;
            worst = Some(worst.map_or(g, |w| w.max(g)));
        }
    }
    if let Some(bw) = s.bandwidth {
        let g = [500.0, 300.0, 150.0]
            .iter()
            .position(|b| bw > *b)
            .unwrap_or(3) as u8;
        worst = Some(worst.map_or(g, |w| w.max(g)));
    }
    worst.map(|g| match g {
        0 => Quality::Excellent,
        1 => Quality::Good,
        2 => Quality::Fair,
        _ => Quality::Poor,
    })
}

/// What is known of one open room's call.
#[derive(Debug)]
struct Call {
    matched: Instant,
    connected: bool,
    /// Time from `matched` to the first `connected` report.
    time_to_connect: Option<Duration>,
    /// The set-up failed (`failed` before `connected`): counted once, kept for the outcome.
    failed: bool,
    /// The last state a member reported, if any.
    last: Option<ConnectionState>,
}

/// Every reason a call fails for (the keys of [`QualitySummary::failures_by_reason`]).
pub(crate) const CALL_FAILURES: [&str; 3] = [
    "ice-failed",
    "ended-while-connecting",
    "ended-after-disconnect",
];

/// Aggregated call outcomes and grades.
#[derive(Debug, Default)]
pub(crate) struct CallQuality {
    open: HashMap<RoomId, Call>,
    matched: u64,
    connected: u64,
    unreported: u64,
    failures: BTreeMap<&'static str, u64>,
    time_to_connect: VecDeque<Duration>,
    grades: [u64; 4],
}

/// How one call went, told when its room closes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CallOutcome {
    /// A member reported `connected`.
    pub connected: bool,
    /// Time from `matched` to the first `connected`, in ms.
    pub time_to_connect_ms: Option<u64>,
    /// The last state a member reported.
    pub last_state: Option<ConnectionState>,
    /// `connected`, `ice-failed`, `ended-while-connecting`, `ended-after-disconnect` or
    /// `unreported`.
    pub outcome: &'static str,
}

/// The figures in `/stats` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QualitySummary {
    /// Rooms opened since start.
    pub calls_matched: u64,
    /// Calls that reached `connected`.
    pub calls_connected: u64,
    /// Calls that failed (sum of `failuresByReason`).
    pub calls_failed: u64,
    /// Calls that ended without any `connection-status` report.
    pub calls_unreported: u64,
    /// connected / (connected + failed); `null` before any outcome.
    pub connection_success_rate: Option<f64>,
    /// Time from `matched` to the first `connected` report, over the recent calls.
    pub time_to_connect_ms: Percentiles,
    /// Failed calls by reason: `ice-failed`, `ended-while-connecting`, `ended-after-disconnect`.
    pub failures_by_reason: BTreeMap<&'static str, u64>,
    /// `quality-report`s by the grade the server computed.
    pub grades: Grades,
}

/// p50 and p95 in ms (`null` without samples).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Percentiles {
    /// Median.
    pub p50: Option<u64>,
    /// 95th percentile.
    pub p95: Option<u64>,
}

/// Counts of reports by grade.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Grades {
    /// Excellent.
    pub excellent: u64,
    /// Good.
    pub good: u64,
    /// Fair.
    pub fair: u64,
    /// Poor.
    pub poor: u64,
}

impl CallQuality {
    /// A room opened at `now`.
    pub(crate) fn opened(&mut self, room: &RoomId, now: Instant) {
        self.matched += 1;
        self.open.insert(
            room.clone(),
            Call {
                matched: now,
                connected: false,
                time_to_connect: None,
                failed: false,
                last: None,
            },
        );
    }

    /// A member of `room` reported its connection state.
    pub(crate) fn status(&mut self, room: &str, state: ConnectionState, now: Instant) {
        let Some(call) = self.open.get_mut(room) else {
            return;
        };
        if call.failed {
            return;
        }
        if state == ConnectionState::Connected && !call.connected {
            // Counted at once, so the success rate moves while calls are still running.
            call.connected = true;
            self.connected += 1;
            if self.time_to_connect.len() == SAMPLES {
                self.time_to_connect.pop_front();
            }
            let took = now.saturating_duration_since(call.matched);
            call.time_to_connect = Some(took);
            self.time_to_connect.push_back(took);
        }
        // A failure after the call connected is a dropped call, not a failed set-up; only the
        // first outcome counts.
        if state == ConnectionState::Failed && !call.connected {
            call.failed = true;
            *self.failures.entry("ice-failed").or_default() += 1;
            return;
        }
        call.last = Some(state);
    }

    /// A member of some room sent a quality report; returns the server's grade.
    pub(crate) fn report(&mut self, stats: &QualityStats) -> Option<Quality> {
        let g = grade(stats)?;
        self.grades[g as usize] += 1;
        Some(g)
    }

    /// `room` closed: its outcome is recorded, and returned.
    pub(crate) fn closed(&mut self, room: &str) -> Option<CallOutcome> {
        let call = self.open.remove(room)?;
        let outcome = |outcome| CallOutcome {
            connected: call.connected,
            time_to_connect_ms: call.time_to_connect.map(|d| d.as_millis() as u64),
            last_state: call.last,
            outcome,
        };
        if call.connected {
            return Some(outcome("connected"));
        }
        if call.failed {
            return Some(outcome("ice-failed"));
        }
        let reason = match call.last {
            None => {
                self.unreported += 1;
                return Some(outcome("unreported"));
            }
            Some(ConnectionState::Disconnected) => "ended-after-disconnect",
            Some(_) => "ended-while-connecting",
        };
        *self.failures.entry(reason).or_default() += 1;
        Some(outcome(reason))
    }

    /// The figures.
    pub(crate) fn summary(&self) -> QualitySummary {
        let failed: u64 = self.failures.values().sum();
        let decided = self.connected + failed;
        let mut ms: Vec<u64> = self
            .time_to_connect
            .iter()
            .map(|d| d.as_millis() as u64)
            .collect();
        ms.sort_unstable();
        let pct = |p: usize| (!ms.is_empty()).then(|| ms[(ms.len() - 1) * p / 100]);
        QualitySummary {
            calls_matched: self.matched,
            calls_connected: self.connected,
            calls_failed: failed,
            calls_unreported: self.unreported,
            connection_success_rate: (decided > 0).then(|| self.connected as f64 / decided as f64),
            time_to_connect_ms: Percentiles {
                p50: pct(50),
                p95: pct(95),
            },
            failures_by_reason: self.failures.clone(),
            grades: Grades {
                excellent: self.grades[0],
                good: self.grades[1],
                fair: self.grades[2],
                poor: self.grades[3],
            },
        }
    }

    /// Drops the open calls without an outcome (at shutdown, when every room vanishes).
    pub(crate) fn forget_open(&mut self) {
        self.open.clear();
    }

    /// Open calls being tracked (equals the open rooms).
    pub(crate) fn tracked(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(loss: Option<f64>, rtt: Option<f64>, bw: Option<f64>) -> QualityStats {
        QualityStats {
            packet_loss: loss,
            latency: rtt,
            bandwidth: bw,
            ..Default::default()
        }
    }

    #[test]
    fn grades_follow_the_documented_thresholds() {
        assert_eq!(
            grade(&stats(Some(0.5), Some(50.0), Some(800.0))),
            Some(Quality::Excellent)
        );
        assert_eq!(
            grade(&stats(Some(2.0), Some(50.0), Some(800.0))),
            Some(Quality::Good)
        );
        assert_eq!(
            grade(&stats(Some(0.0), Some(350.0), None)),
            Some(Quality::Fair)
        );
        assert_eq!(grade(&stats(None, None, Some(100.0))), Some(Quality::Poor));
        assert_eq!(
            grade(&stats(Some(9.0), Some(10.0), Some(900.0))),
            Some(Quality::Poor),
            "the worst number decides"
        );
        let jittery = QualityStats {
            jitter: Some(60.0),
            ..Default::default()
        };
        assert_eq!(grade(&jittery), Some(Quality::Fair));
        assert_eq!(grade(&QualityStats::default()), None);
        // Boundaries: "< 1 %" is strict.
        assert_eq!(grade(&stats(Some(1.0), None, None)), Some(Quality::Good));
    }

    #[test]
    fn outcomes_success_rate_and_time_to_connect() {
        let t = Instant::now();
        let mut q = CallQuality::default();
        let rooms: Vec<RoomId> = (0..5).map(|i| format!("r{i}").into()).collect();
        for r in &rooms {
            q.opened(r, t);
        }
        q.status("r0", ConnectionState::Connecting, t);
        q.status(
            "r0",
            ConnectionState::Connected,
            t + Duration::from_millis(800),
        );
        q.status(
            "r0",
            ConnectionState::Connected,
            t + Duration::from_millis(900),
        );
        q.status(
            "r1",
            ConnectionState::Connected,
            t + Duration::from_millis(1200),
        );
        q.status(
            "r2",
            ConnectionState::Failed,
            t + Duration::from_millis(5000),
        );
        q.status("r3", ConnectionState::Connecting, t);
        for r in &rooms {
            q.closed(r);
        }
        q.closed("r0");
        let s = q.summary();
        assert_eq!(s.calls_matched, 5);
        assert_eq!(s.calls_connected, 2);
        assert_eq!(s.calls_failed, 2);
        assert_eq!(s.calls_unreported, 1, "r4 said nothing");
        assert_eq!(s.connection_success_rate, Some(0.5));
        assert_eq!(s.failures_by_reason.get("ice-failed"), Some(&1));
        assert_eq!(s.failures_by_reason.get("ended-while-connecting"), Some(&1));
        assert!(
            s.failures_by_reason
                .keys()
                .all(|r| CALL_FAILURES.contains(r)),
            "the reasons /metrics exports from the start"
        );
        assert_eq!(
            s.time_to_connect_ms.p50,
            Some(800),
            "the first connected report counts"
        );
        assert_eq!(s.time_to_connect_ms.p95, Some(800));
        assert_eq!(q.tracked(), 0, "closed rooms are forgotten");
    }

    #[test]
    fn a_drop_after_connecting_does_not_undo_the_success() {
        let t = Instant::now();
        let mut q = CallQuality::default();
        q.opened(&"r".into(), t);
        q.status("r", ConnectionState::Connected, t);
        q.status("r", ConnectionState::Failed, t);
        q.closed("r");
        assert_eq!(q.summary().connection_success_rate, Some(1.0));
    }
}
