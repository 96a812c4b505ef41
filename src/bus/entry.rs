//! A search as it travels between nodes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::core::matchmaker::Seeker;
use crate::model::profile::{Preferences, Profile};
use crate::protocol::outgoing::now_ms;

/// A search as it travels between nodes (to the lease holder, and to a partner's node).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// The user.
    pub user: String,
    /// The node its socket is on.
    pub node: String,
    /// When the search began, in Unix milliseconds (nodes share wall time, not `Instant`s).
    pub since: u64,
    /// The user's profile.
    pub profile: Profile,
    /// What it asks of a partner.
    pub prefs: Preferences,
    /// The partner of its last room.
    pub previous: Option<String>,
    /// A random id of this one search: once claimed, the same search is never published again
    /// (a late retry of it would put a matched user back in the queue).
    #[serde(default)]
    pub search: u64,
}

impl Entry {
    /// The entry of a local waiting user's search `search`.
    pub(crate) fn of(s: &Seeker, search: u64, node: &str, now: Instant) -> Entry {
        Entry::at(s, search, node, now, now_ms())
    }

    /// [`Entry::of`] when the wall clock reads `wall` (Unix ms) at `now`.
    pub(crate) fn at(s: &Seeker, search: u64, node: &str, now: Instant, wall: u64) -> Entry {
        Entry {
            search,
            user: s.user.to_string(),
            node: node.to_string(),
            since: wall.saturating_sub(now.saturating_duration_since(s.since).as_millis() as u64),
            profile: Profile::clone(&s.profile),
            prefs: Preferences::clone(&s.prefs),
            previous: s.previous.as_deref().map(str::to_string),
        }
    }

    /// The entry as a local [`Seeker`] (for a ghost partner), its wait carried over.
    pub(crate) fn seeker(&self, now: Instant) -> Seeker {
        self.seeker_at(now, now_ms())
    }

    /// [`Entry::seeker`] when the wall clock reads `wall` (Unix ms) at `now`.
    pub(crate) fn seeker_at(&self, now: Instant, wall: u64) -> Seeker {
        let waited = Duration::from_millis(wall.saturating_sub(self.since));
        Seeker {
            user: self.user.as_str().into(),
            profile: Arc::new(self.profile.clone()),
            prefs: Arc::new(self.prefs.clone()),
            since: now.checked_sub(waited).unwrap_or(now),
            previous: self.previous.as_deref().map(Into::into),
        }
    }
}
