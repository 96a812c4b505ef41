//! Recent matches: the source of `/stats` wait figures and of `queue-status` estimates.
//!
//! Figures are computed from the recorded samples when asked, never kept as running averages,
//! so they are exact over their window and fall back to zero when the window empties.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use crate::model::WaitBasis;
use crate::model::profile::Preferences;

/// Users "like" each other for wait estimates: the same hard filters. Interests are left out,
/// since they stop mattering after the relaxation delay.
pub(crate) type Segment = u64;

/// The segment of a user searching with `prefs`.
pub(crate) fn segment_of(prefs: &Preferences) -> Segment {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        &prefs.language,
        prefs.gender,
        prefs.age_range,
        &prefs.country,
    )
        .hash(&mut h);
    h.finish()
}

/// How far back wait-time figures look.
pub(crate) const WAIT_WINDOW: Duration = Duration::from_secs(300);
/// How far back the match rate looks.
pub(crate) const RATE_WINDOW: Duration = Duration::from_secs(60);
/// Most wait samples kept, so a burst of matches cannot grow memory without bound.
pub(crate) const MAX_WAIT_SAMPLES: usize = 20_000;

/// [`MatchHistory::estimate_wait`] from a rate estimate `rate` (`None`: no match in the last
/// minute), made here or by the node that matches for a cluster (which sees all its matches).
pub(crate) fn wait_from(rate: Option<u64>, position: usize, left_ms: u64) -> (u64, WaitBasis) {
    match rate {
        Some(ms) if ms <= left_ms => (ms, WaitBasis::Rate),
        Some(_) => (left_ms, WaitBasis::BeyondSearch),
        None => {
            let placeholder = RATE_WINDOW.as_millis() as u64 * position.max(1) as u64;
            (placeholder.min(left_ms), WaitBasis::Unknown)
        }
    }
}

/// Wait times and match times of the recent past.
#[derive(Debug, Default)]
pub(crate) struct MatchHistory {
    /// `(when, wait in ms)` of each matched user, oldest first.
    waits: VecDeque<(Instant, u64)>,
    /// The users matched in each second of [`RATE_WINDOW`] that saw a match, oldest first: the
    /// one record of recent matches (two users per match). Counted per second rather than kept
    /// per user, so that its memory follows the number of segments in use, not the match rate:
    /// one entry per user grew a server by 80 KB a second at 1,600 matches a second.
    seconds: VecDeque<Second>,
    /// How many users of `seconds` each segment has. Changed only where that deque is pushed
    /// and popped, so it always equals a sum over it, without walking it per estimate.
    per_segment: HashMap<Segment, usize>,
    total: u64,
}

/// The users matched during one second.
#[derive(Debug)]
struct Second {
    /// When the second began: its first match.
    start: Instant,
    /// Users matched in it (the sum of `by_segment`, kept so that a wait estimate for a user of
    /// an unseen segment adds sixty numbers, not every segment of every second).
    users: usize,
    /// Users matched in it, by segment.
    by_segment: HashMap<Segment, usize>,
}

/// How long one [`Second`] collects matches.
const SECOND: Duration = Duration::from_secs(1);

/// Wait-time figures over [`WAIT_WINDOW`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct WaitSummary {
    /// Mean wait in ms (0 without samples).
    pub average_ms: u64,
    /// 95th-percentile wait in ms (nearest rank; 0 without samples).
    pub p95_ms: u64,
    /// How many waits the figures cover.
    pub samples: usize,
}

impl MatchHistory {
    /// Records one match with the wait and segment of each of its two members.
    pub(crate) fn record(&mut self, now: Instant, members: [(Duration, Segment); 2]) {
        self.total += 1;
        let current = match self.seconds.back() {
            Some(s) => now.saturating_duration_since(s.start) < SECOND,
            None => false,
        };
        if !current {
            self.seconds.push_back(Second {
                start: now,
                users: 0,
                by_segment: HashMap::new(),
            });
        }
        let second = self.seconds.back_mut().expect("pushed above");
        for (w, segment) in members {
            self.waits.push_back((now, w.as_millis() as u64));
            second.users += 1;
            *second.by_segment.entry(segment).or_default() += 1;
            *self.per_segment.entry(segment).or_default() += 1;
        }
        self.prune(now);
    }

    /// Forgets samples older than their windows (also called by the core's tick, so that the
    /// estimates follow time when no match happens). A second is forgotten whole, once its
    /// start is older than [`RATE_WINDOW`].
    pub(crate) fn prune(&mut self, now: Instant) {
        while let Some(s) = self.seconds.front()
            && now.saturating_duration_since(s.start) > RATE_WINDOW
        {
            let s = self.seconds.pop_front().expect("front exists");
            for (segment, n) in s.by_segment {
                if let Some(total) = self.per_segment.get_mut(&segment) {
                    *total -= n;
                    if *total == 0 {
                        self.per_segment.remove(&segment);
                    }
                }
            }
        }
        while self.waits.len() > MAX_WAIT_SAMPLES
            || self
                .waits
                .front()
                .is_some_and(|(t, _)| now.saturating_duration_since(*t) > WAIT_WINDOW)
        {
            self.waits.pop_front();
        }
    }

    /// Matches made since the server started.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Matches made in the last minute before `now` (to the second).
    pub(crate) fn matches_last_minute(&self, now: Instant) -> usize {
        let users: usize = self
            .seconds
            .iter()
            .rev()
            .take_while(|s| now.saturating_duration_since(s.start) <= RATE_WINDOW)
            .map(|s| s.users)
            .sum();
        users / 2
    }

    /// Average and p95 wait over the window ending at `now`.
    pub(crate) fn wait_summary(&self, now: Instant) -> WaitSummary {
        let mut recent: Vec<u64> = self
            .waits
            .iter()
            .rev()
            .take_while(|(t, _)| now.saturating_duration_since(*t) <= WAIT_WINDOW)
            .map(|(_, w)| *w)
            .collect();
        if recent.is_empty() {
            return WaitSummary::default();
        }
        recent.sort_unstable();
        let n = recent.len();
        let sum: u64 = recent.iter().sum();
        // Nearest-rank percentile: the smallest sample with at least 95 % of samples at or below it.
        let rank = (n * 95).div_ceil(100).max(1);
        WaitSummary {
            average_ms: sum / n as u64,
            p95_ms: recent[rank - 1],
            samples: n,
        }
    }

    /// Expected remaining wait for the user at `position` (1 = next) whose search has `left_ms`
    /// before `search-timeout`, in ms, and what it rests on. Never more than `left_ms`: a figure
    /// past the end of the search is no wait anyone will see. From the recent match rate (see
    /// [`rate_estimate_ms`](Self::rate_estimate_ms)); when nobody was matched in the last minute
    /// there is no estimate, and the figure is the whole window for each user ahead and this
    /// one (a minute without a match says a match takes at least that long).
    pub(crate) fn estimate_wait(
        &self,
        position: usize,
        segment: Option<Segment>,
        left_ms: u64,
    ) -> (u64, WaitBasis) {
        wait_from(self.rate_estimate_ms(position, segment), position, left_ms)
    }

    /// Expected remaining wait for the user at `position` (1 = next), from how many users of its
    /// segment were matched over the last minute (all users when none of its segment were), as of
    /// the last [`prune`](Self::prune).
    /// `None` before any match in that window.
    pub(crate) fn rate_estimate_ms(
        &self,
        position: usize,
        segment: Option<Segment>,
    ) -> Option<u64> {
        // Counts over the window as of the last prune (at most one tick old).
        let matched_users = match segment.and_then(|s| self.per_segment.get(&s)) {
            Some(&n) => n,
            None => self.seconds.iter().map(|s| s.users).sum(),
        };
        if matched_users == 0 {
            return None;
        }
        let per_ms = matched_users as f64 / RATE_WINDOW.as_millis() as f64;
        Some((position as f64 / per_ms).round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_figures_are_exact_and_expire() {
        let t = Instant::now();
        let mut h = MatchHistory::default();
        assert_eq!(h.wait_summary(t), WaitSummary::default());
        for i in 1..=10u64 {
            h.record(
                t,
                [(Duration::from_millis(i * 100), 1), (Duration::ZERO, 1)],
            );
        }
        let s = h.wait_summary(t);
        assert_eq!(s.samples, 20);
        assert_eq!(s.average_ms, 5500 / 20);
        // 20 samples: rank 19 of [0 x10, 100..1000] is 900.
        assert_eq!(s.p95_ms, 900);
        assert_eq!(h.matches_last_minute(t), 10);
        assert_eq!(h.total(), 10);
        let later = t + WAIT_WINDOW + Duration::from_secs(1);
        assert_eq!(h.wait_summary(later).samples, 0);
        assert_eq!(h.matches_last_minute(later), 0);
        assert_eq!(h.total(), 10, "the total never decreases");
    }

    #[test]
    fn estimate_follows_the_match_rate() {
        let t = Instant::now();
        let mut h = MatchHistory::default();
        assert_eq!(h.rate_estimate_ms(1, None), None);
        // 30 matches a minute = 60 users a minute = one user a second.
        for _ in 0..30 {
            h.record(t, [(Duration::ZERO, 1); 2]);
        }
        assert_eq!(h.rate_estimate_ms(1, None), Some(1000));
        assert_eq!(h.rate_estimate_ms(5, None), Some(5000));
        // Users like them (segment 2) were matched at a tenth of that rate.
        for _ in 0..3 {
            h.record(t, [(Duration::ZERO, 2); 2]);
        }
        assert_eq!(h.rate_estimate_ms(1, Some(2)), Some(10_000));
        // A segment never seen falls back to everyone.
        assert_eq!(h.rate_estimate_ms(1, Some(3)), Some(909));
        // A minute later, once pruned, nothing is known any more.
        let later = t + RATE_WINDOW + Duration::from_secs(1);
        h.prune(later);
        assert_eq!(h.rate_estimate_ms(1, Some(2)), None);
        assert_eq!(h.matches_last_minute(later), 0);
    }

    #[test]
    fn without_a_recent_match_there_is_no_estimate_only_a_placeholder() {
        let h = MatchHistory::default();
        let hour = 3_600_000;
        assert_eq!(h.estimate_wait(1, None, hour), (60_000, WaitBasis::Unknown));
        assert_eq!(
            h.estimate_wait(3, Some(2), hour),
            (180_000, WaitBasis::Unknown)
        );
        // 201 users ahead, 5 minutes left: not "3 h 21 min".
        assert_eq!(
            h.estimate_wait(201, Some(2), 300_000),
            (300_000, WaitBasis::Unknown)
        );
    }

    #[test]
    fn an_estimate_past_the_end_of_the_search_is_the_time_left() {
        let t = Instant::now();
        let mut h = MatchHistory::default();
        // One user of segment 2 matched in the last minute: a minute per position.
        h.record(t, [(Duration::ZERO, 2), (Duration::ZERO, 3)]);
        h.prune(t);
        assert_eq!(
            h.estimate_wait(2, Some(2), 300_000),
            (120_000, WaitBasis::Rate)
        );
        assert_eq!(
            h.estimate_wait(200, Some(2), 300_000),
            (300_000, WaitBasis::BeyondSearch)
        );
        assert_eq!(
            h.estimate_wait(2, Some(2), 90_000),
            (90_000, WaitBasis::BeyondSearch)
        );
        assert_eq!(h.estimate_wait(2, Some(2), 0), (0, WaitBasis::BeyondSearch));
    }

    proptest::proptest! {
        /// Whatever matched recently, wherever the user stands and however long its search has
        /// left, the figure never goes past the end of the search, and it is the rate's figure
        /// whenever that fits.
        #[test]
        fn the_estimate_never_outlasts_the_search(
            matches in proptest::collection::vec((0u64..120_000, 0u64..4, 0u64..4), 0..50),
            position in 1usize..100_000,
            segment in proptest::option::of(0u64..5),
            left_ms in 0u64..86_400_000,
        ) {
            let t = Instant::now();
            let mut h = MatchHistory::default();
            let mut last = t;
            let mut sorted = matches.clone();
            sorted.sort_unstable();
            for (at, a, b) in sorted {
                last = t + Duration::from_millis(at);
                h.record(last, [(Duration::ZERO, a), (Duration::ZERO, b)]);
            }
            h.prune(last);
            let (ms, basis) = h.estimate_wait(position, segment, left_ms);
            proptest::prop_assert!(ms <= left_ms, "{ms} > {left_ms}");
            match h.rate_estimate_ms(position, segment) {
                Some(rate) if rate <= left_ms => {
                    proptest::prop_assert_eq!((ms, basis), (rate, WaitBasis::Rate))
                }
                Some(_) => proptest::prop_assert_eq!((ms, basis), (left_ms, WaitBasis::BeyondSearch)),
                None => proptest::prop_assert_eq!(basis, WaitBasis::Unknown),
            }
        }
    }

    #[test]
    fn memory_follows_the_segments_not_the_match_rate() {
        let t = Instant::now();
        let mut h = MatchHistory::default();
        // 100,000 matches over 10 s, among 3 segments.
        for i in 0..100_000u64 {
            let now = t + Duration::from_micros(i * 100);
            h.record(now, [(Duration::ZERO, i % 3), (Duration::ZERO, 7)]);
        }
        let end = t + Duration::from_secs(10);
        assert_eq!(h.seconds.len(), 10, "one record per second");
        assert!(h.seconds.iter().all(|s| s.by_segment.len() <= 4));
        assert!(
            h.seconds
                .iter()
                .all(|s| s.users == s.by_segment.values().sum::<usize>())
        );
        assert!(h.waits.len() <= MAX_WAIT_SAMPLES);
        assert_eq!(h.matches_last_minute(end), 100_000);
        // Segment 7 had a member of every match: 100,000 users in 60 s.
        assert_eq!(h.rate_estimate_ms(1_000, Some(7)), Some(600));
        // The oldest second leaves the window first, whole.
        h.prune(t + RATE_WINDOW + Duration::from_millis(500));
        assert_eq!(
            h.matches_last_minute(t + RATE_WINDOW + Duration::from_millis(500)),
            90_000
        );
        assert_eq!(h.per_segment[&7], 90_000);
    }
}
