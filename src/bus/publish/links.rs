//! The publisher's side of the direct links ([`crate::bus::link`]): which channels a link may
//! carry this round, what it acknowledged, and when it gives way to Redis.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Cluster, Flight, Held, flying};

/// How long a direct link may leave what was written to it unacknowledged before it is taken
/// for broken and Redis carries the channel again (the link acknowledges every 20 ms at most).
const LINK_STALL: Duration = Duration::from_secs(1);

/// How long a channel's messages wait, when its link comes up, for the node to acknowledge what
/// went on Redis before, and how often the publisher looks meanwhile.
const SWITCH_WAIT: Duration = Duration::from_millis(300);
const SWITCH_LOOK: Duration = Duration::from_millis(10);

/// Writes each channel's new messages to its node's direct link when it has one that may carry
/// them ([`crate::bus::link`]), and lets go of what the node acknowledged; the rest go on Redis.
pub(super) fn over_links(
    cluster: &Cluster,
    held: &mut HashMap<Arc<str>, Held>,
    published: &HashMap<Arc<str>, u64>,
    sent: &metrics::Counter,
    flight: &Option<Flight<'_>>,
    now: Instant,
) {
    for (node, h) in held.iter_mut() {
        h.via_link = false;
        if flying(flight, node) {
            continue;
        }
        let Some(link) = cluster.links.to(node) else {
            // Broken: what it did not acknowledge goes on Redis, oldest first, now.
            if h.linked != 0 {
                h.retry_at = None;
            }
            h.linked = 0;
            h.linked_at = None;
            // A wait for the switch to a link starts again with the next link.
            h.switching = None;
            continue;
        };
        h.on_link(link.generation());
        let acked = link.acked();
        let taken = h.msgs.iter().take_while(|(seq, _)| *seq <= acked).count();
        if taken > 0 {
            h.drop_front(taken);
            sent.increment(taken as u64);
            h.stuck_since = None;
            h.linked_at = (h.linked > acked).then_some(now);
        }
        if h.linked <= acked {
            h.linked = 0;
            h.linked_at = None;
        }
        // Until the node took what went on Redis, a link frame could overtake it: the channel
        // waits a moment for the acknowledgement (else, under steady traffic, Redis would
        // always be a step ahead of it), then goes on Redis again (a node restarted under the
        // same name never acknowledges what its previous process took).
        if let Some(p) = published.get(node).copied().filter(|p| *p > acked) {
            if p != h.gave_up {
                let since = *h.switching.get_or_insert(now);
                if now.saturating_duration_since(since) < SWITCH_WAIT {
                    h.via_link = true;
                    h.retry_at = Some(now + SWITCH_LOOK);
                    continue;
                }
                // On Redis in this very round.
                h.gave_up = p;
                h.retry_at = None;
            }
            h.switching = None;
            continue;
        }
        h.switching = None;
        if h.linked_at
            .is_some_and(|at| now.saturating_duration_since(at) > LINK_STALL)
        {
            tracing::warn!(channel = %node, "a direct link stopped acknowledging: Redis instead");
            link.close();
            h.linked = 0;
            h.linked_at = None;
            continue;
        }
        h.via_link = true;
        let mut start = h.first_unlinked();
        while start < h.msgs.len() {
            let n = h.frame_len(start);
            if !link.send(h.frame(start, n, cluster.seen.boot)) {
                // The link failed: no later frame may follow on it (the node would take it
                // past the gap); everything held goes on Redis in this round.
                h.via_link = false;
                h.linked = 0;
                h.linked_at = None;
                h.retry_at = None;
                break;
            }
            start += n;
        }
        if !h.via_link {
            continue;
        }
        if let Some((last, _)) = h.msgs.back() {
            h.linked = *last;
            h.linked_at.get_or_insert(now);
        }
        h.retry_at = h.linked_at.map(|at| at + LINK_STALL);
    }
    held.retain(|_, h| !h.msgs.is_empty());
}
