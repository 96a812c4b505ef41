//! What a `queue-status` wait figure rests on.

/// What a waiting user's estimated wait rests on. The core decides it; the wording of
/// `queue-status.message` follows it, so that a person is never shown a figure that means
/// nothing as if it were an estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitBasis {
    /// The recent match rate of users like this one; it fits in the time the search has left.
    Rate,
    /// At the recent rate this user would be matched only after its search ended: the figure is
    /// the time left before `search-timeout`.
    BeyondSearch,
    /// Nobody was matched in the last minute: nothing to estimate from. The figure (a minute for
    /// each user ahead and this one, at most the time left) is a placeholder for clients that
    /// print a number.
    Unknown,
}
