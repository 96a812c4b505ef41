//! The pairing rule as a plain function over a list of waiting users.
//!
//! [`PreferenceMatchmaker`](super::matchmaker::PreferenceMatchmaker) applies the rule through
//! its index; this plain scan is the reference its property test (`matchmaker/tests.rs`) checks
//! it against. A cluster runs the same indexed matchmaker at its lease holder, and the model
//! test in `bus/holder/tests.rs` checks that the cluster pairs as one node does.

use crate::model::profile::{Preferences, Profile, compatible};

/// A user as the rule sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Candidate<'a> {
    /// Who.
    pub user: &'a str,
    /// Their profile.
    pub profile: &'a Profile,
    /// What they ask of a partner.
    pub prefs: &'a Preferences,
    /// True while they still insist on a shared interest (they have interests and have not
    /// waited the relaxation time yet).
    pub insists: bool,
    /// The partner of their last room.
    pub previous: Option<&'a str>,
}

/// Whether `a` and `b` may pair, and if so whether they share an interest. `blocked(x, y)` says
/// whether either of two users blocked the other.
pub(crate) fn eligible(
    a: &Candidate<'_>,
    b: &Candidate<'_>,
    blocked: &dyn Fn(&str, &str) -> bool,
) -> Option<bool> {
    if a.user == b.user
        || !compatible((a.profile, a.prefs), (b.profile, b.prefs))
        || blocked(a.user, b.user)
    {
        return None;
    }
    let shares = a
        .prefs
        .interests
        .iter()
        .any(|t| b.prefs.interests.contains(t));
    (shares || (!a.insists && !b.insists)).then_some(shares)
}

/// The index of the partner the rule picks for `seeker` in `queue` (arrival order): those sharing
/// an interest first, then the rest, the longest-waiting first within each group; a previous
/// partner only when nobody else qualifies.
pub(crate) fn pick(
    seeker: &Candidate<'_>,
    queue: &[Candidate<'_>],
    blocked: &dyn Fn(&str, &str) -> bool,
) -> Option<usize> {
    let is_previous =
        |w: &Candidate<'_>| seeker.previous == Some(w.user) || w.previous == Some(seeker.user);
    let best = |allow_previous: bool| {
        let mut best: Option<(bool, usize)> = None;
        for (i, w) in queue.iter().enumerate() {
            if is_previous(w) != allow_previous {
                continue;
            }
            if let Some(shares) = eligible(seeker, w, blocked)
                && best.is_none_or(|(had, _)| shares && !had)
            {
                best = Some((shares, i));
                if shares {
                    break;
                }
            }
        }
        best.map(|(_, i)| i)
    };
    best(false).or_else(|| best(true))
}
