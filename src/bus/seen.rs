//! What a node's inbox took already of each sender's messages, so that a message heard twice
//! (published again after its answer was lost, or heard over Redis and a direct link) is taken
//! once.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// What this node's inbox took already: per sending process and channel, the last sequence
/// number (frames of one sender on one channel arrive in order, retries included).
pub(crate) struct Seen {
    /// This process's id in its own stamps (a node restarted under the same `NODE_ID` starts
    /// counting again, under a new id).
    pub(super) boot: u64,
    /// Per sending process, its channels (a node's own and the broadcast one: a short list,
    /// searched without allocating a key) and the last number taken on each.
    last: Mutex<HashMap<u64, Channels>>,
}

/// A sending process's channels: each with the last number taken on it, and when.
type Channels = Vec<(Box<str>, u64, Instant)>;

/// Senders remembered at most; past it, those silent for ten minutes are forgotten.
const MAX_SENDERS: usize = 4096;

impl Seen {
    pub(super) fn new() -> Seen {
        Seen {
            boot: crate::model::uuid_v4().as_u64_pair().0,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// How many of the first of `count` messages heard in one frame on `channel`, the first
    /// stamped `stamp`, were taken already (published again after an answer was lost: a retry's
    /// frame may hold more messages than the one heard before). Unstamped messages (older
    /// nodes) are always new.
    #[cfg(test)]
    pub(crate) fn taken(&self, channel: &str, stamp: Option<(u64, u64)>, count: usize) -> usize {
        self.take(channel, stamp, count).0
    }

    /// The last number taken from process `boot` on `channel` (0: none yet).
    pub(super) fn had(&self, boot: u64, channel: &str) -> u64 {
        let seen = self.last.lock();
        seen.get(&boot)
            .and_then(|c| c.iter().find(|(c, _, _)| **c == *channel))
            .map_or(0, |(_, had, _)| *had)
    }

    /// As [`Seen::taken`], with the last number taken from the frame's sender on `channel`
    /// after it (0 for an unstamped frame), which a direct link acknowledges.
    pub(crate) fn take(
        &self,
        channel: &str,
        stamp: Option<(u64, u64)>,
        count: usize,
    ) -> (usize, u64) {
        let (Some((boot, first)), Some(last)) = (stamp, count.checked_sub(1)) else {
            return (0, 0);
        };
        let last = first.saturating_add(last as u64);
        let now = Instant::now();
        let mut seen = self.last.lock();
        if seen.len() > MAX_SENDERS {
            seen.retain(|_, channels| {
                channels.retain(|(_, _, at)| {
                    now.saturating_duration_since(*at) < Duration::from_secs(600)
                });
                !channels.is_empty()
            });
        }
        let channels = seen.entry(boot).or_default();
        let Some((_, had, at)) = channels.iter_mut().find(|(c, _, _)| **c == *channel) else {
            channels.push((channel.into(), last, now));
            return (0, last);
        };
        let skip = had
            .saturating_add(1)
            .saturating_sub(first)
            .min(count as u64) as usize;
        if last > *had {
            *had = last;
            *at = now;
        }
        (skip, *had)
    }

    /// Whether the message `text` heard on `channel` is new (see [`Seen::taken`]).
    #[cfg(test)]
    pub(crate) fn first_time(&self, channel: &str, text: &str) -> bool {
        self.taken(channel, super::frame::read_stamp(text), 1) == 0
    }
}
