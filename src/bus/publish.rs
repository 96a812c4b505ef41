//! The ordered publisher: every message to another node leaves here, in the order it was
//! queued, and is published again until the receiving node has heard it.
//!
//! A client is told `ok` for a relay as soon as it is queued, so a publish that fails (Redis
//! restarting, a Sentinel promoting a replica) must not lose it. `PUBLISH` answers how many
//! subscribers received the message; 0 means the recipient's subscription is not there (its
//! subscriber is still reconnecting to the new master). So a message is done only when at least
//! one subscriber heard it; until then it waits, with every later message to the same channel,
//! and is tried again. A round with several messages for one channel is one `MULTI`/`EXEC`:
//! Redis runs it at once, so no subscription can start half-way through, and the messages of one
//! channel in a round are heard all or none, never with a gap that a retry would fill out of
//! order (a round of one message per channel is a plain pipeline).
//!
//! A message is published again when Redis did not answer in time, yet it may have run it (the
//! answer lost with the connection): so each message carries its channel's sequence number from
//! this process (`"_seq"`, inside the message's object, where nodes that do not know it ignore
//! it), and the receiving node skips one it has taken already ([`Seen`]). Delivery is at least
//! once on the wire and exactly once to the inbox.
//!
//! A channel that stays unheard for `NODE_TIMEOUT_MS` while Redis answers belongs to a node that
//! died (its rooms end for their partners within the same time): its messages are dropped and
//! counted (`roulette_cluster_messages_undelivered_total`); messages Redis keeps refusing while
//! it answers the heartbeats are dropped after as long (`roulette_cluster_messages_lost_total`).
//! While Redis does not answer, nothing is dropped: the rooms outlive an outage, so their relays
//! must too.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fred::prelude::*;
use parking_lot::Mutex;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc::UnboundedReceiver;

use super::Cluster;
use crate::protocol::outgoing::now_ms;

/// How soon an unheard channel, or a round Redis refused, is tried again.
const RETRY: Duration = Duration::from_millis(100);

/// Most messages in one round (a `MULTI`/`EXEC`).
const ROUND: usize = 512;

/// Most messages held for one channel; past it, the oldest are dropped (and counted lost). An
/// outage of minutes, at the signaling rate limits, stays far below it.
const MAX_HELD: usize = 100_000;

/// The messages for one channel that no subscriber has heard yet, oldest first.
#[derive(Default)]
struct Held {
    msgs: VecDeque<String>,
    /// Since when Redis answers, yet the channel is unheard (nobody listens) or its messages
    /// are refused (reset when heard).
    stuck_since: Option<Instant>,
    /// Not tried again before this.
    retry_at: Option<Instant>,
}

/// What a round did for one channel.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// Its first `n` messages were heard.
    Heard(usize),
    /// Redis answered that nobody listens.
    Deaf,
    /// The round failed (Redis unreachable, timed out).
    Failed,
}

/// Marks Redis down as soon as one of the node's connections drops (the clients' error events),
/// so `/health` and `/metrics` show the whole outage, a Sentinel failover included, even one
/// shorter than a heartbeat. The next heartbeat that succeeds marks it up again and publishes
/// this node's searches anew ([`crate::cluster::liveness`]): a promoted replica may lack the
/// latest of them, as replication is asynchronous.
///
/// Also moves the subscriber with the command connection when only the latter dropped: behind a
/// managed service's endpoint, the command connection finds the promoted primary (its writes to
/// the demoted one were refused with READONLY), while a subscription, which writes nothing, would
/// stay on the demoted one and hear only what replication brings it (and `PUBLISH` on the new
/// primary would not count it). A subscriber that dropped too is finding the master on its own.
pub(super) fn watch(cluster: &Arc<Cluster>, subscriber: fred::clients::SubscriberClient) {
    // When each connection last dropped (Unix ms): the command one, the subscriber.
    let dropped: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    for (i, mut rx) in [cluster.client.error_rx(), subscriber.error_rx()]
        .into_iter()
        .enumerate()
    {
        let (cluster, dropped) = (Arc::downgrade(cluster), dropped.clone());
        tokio::spawn(async move {
            loop {
                let e = match rx.recv().await {
                    Ok((e, _)) => e,
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => break,
                };
                dropped[i].store(now_ms(), Ordering::Release);
                let Some(cluster) = cluster.upgrade() else {
                    break;
                };
                if cluster.set_redis_up(false) {
                    tracing::error!("lost the connection to Redis (connecting again): {e}");
                }
            }
        });
    }
    let mut reconnected = cluster.client.reconnect_rx();
    tokio::spawn(async move {
        loop {
            match reconnected.recv().await {
                Ok(server) => {
                    let [command, sub] = [0, 1].map(|i| dropped[i].load(Ordering::Acquire));
                    // Both dropped about together (a master that died): the subscriber is on
                    // its way already.
                    if sub + 5_000 >= command && sub != 0 {
                        continue;
                    }
                    tracing::info!(%server, "connected to Redis again; the subscriber follows");
                    if let Err(e) = subscriber.force_reconnection().await {
                        tracing::warn!("the subscriber could not reconnect yet: {e}");
                    }
                }
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => break,
            }
        }
    });
}

/// Publishes the queued messages until the channel closes.
pub(super) async fn run(cluster: Arc<Cluster>, mut rx: UnboundedReceiver<(Arc<str>, String)>) {
    metrics::counter!("roulette_cluster_messages_undelivered_total").increment(0);
    let mut held: HashMap<Arc<str>, Held> = HashMap::new();
    let mut seqs: HashMap<Arc<str>, u64> = HashMap::new();
    let mut batch = Vec::with_capacity(ROUND);
    loop {
        // Channels with a retry time wait for it; the rest (left over from a full round) go now.
        let now = Instant::now();
        let next_retry = held.values().map(|h| h.retry_at.unwrap_or(now)).min();
        match next_retry {
            None => {
                if rx.recv_many(&mut batch, ROUND).await == 0 {
                    break;
                }
            }
            Some(at) => {
                tokio::select! {
                    n = rx.recv_many(&mut batch, ROUND) => if n == 0 { break },
                    _ = tokio::time::sleep_until(at.into()) => {}
                }
            }
        }
        for (node, text) in batch.drain(..) {
            let seq = seqs.entry(node.clone()).or_default();
            *seq += 1;
            let h = held.entry(node).or_default();
            h.msgs.push_back(stamp(&text, cluster.seen.boot, *seq));
            if h.msgs.len() > MAX_HELD {
                h.msgs.pop_front();
                cluster.count_lost(1);
            }
        }
        round(&cluster, &mut held).await;
    }
}

/// One `MULTI`/`EXEC` of the channels due now; what was heard leaves `held`.
async fn round(cluster: &Cluster, held: &mut HashMap<Arc<str>, Held>) {
    let now = Instant::now();
    let mut room = ROUND;
    let mut plan: Vec<(Arc<str>, usize)> = Vec::new();
    for (node, h) in held.iter() {
        if room == 0 {
            break;
        }
        if h.retry_at.is_some_and(|at| at > now) {
            continue;
        }
        let n = h.msgs.len().min(room);
        room -= n;
        plan.push((node.clone(), n));
    }
    if plan.is_empty() {
        return;
    }
    let outcomes = publish(cluster, held, &plan).await;
    let now = Instant::now();
    for ((node, _), outcome) in plan.iter().zip(outcomes) {
        let Some(h) = held.get_mut(node) else {
            continue;
        };
        match outcome {
            Outcome::Heard(n) => {
                h.msgs.drain(..n);
                h.stuck_since = None;
                h.retry_at = None;
                metrics::counter!("roulette_cluster_messages_sent_total").increment(n as u64);
            }
            // Unheard, or refused while Redis answers everything else: not for ever.
            Outcome::Deaf | Outcome::Failed if outcome == Outcome::Deaf || cluster.redis_up() => {
                let since = *h.stuck_since.get_or_insert(now);
                if now.saturating_duration_since(since) < cluster.node_timeout {
                    h.retry_at = Some(now + RETRY);
                } else if outcome == Outcome::Deaf {
                    tracing::warn!(
                        channel = %node,
                        messages = h.msgs.len(),
                        "nobody listened on a node's channel for the node timeout: messages dropped"
                    );
                    metrics::counter!("roulette_cluster_messages_undelivered_total")
                        .increment(h.msgs.len() as u64);
                    h.msgs.clear();
                } else {
                    tracing::error!(
                        channel = %node,
                        messages = h.msgs.len(),
                        "Redis refused these cluster messages for the node timeout: dropped"
                    );
                    cluster.count_lost(h.msgs.len() as u64);
                    h.msgs.clear();
                }
            }
            // Redis does not answer (an outage, a failover): kept as long as it lasts.
            Outcome::Failed | Outcome::Deaf => h.retry_at = Some(now + RETRY),
        }
        if h.msgs.is_empty() {
            held.remove(node);
        }
    }
}

/// Publishes the first `n` messages of each planned channel in one transaction; what became
/// of each channel's messages, in plan order.
async fn publish(
    cluster: &Cluster,
    held: &HashMap<Arc<str>, Held>,
    plan: &[(Arc<str>, usize)],
) -> Vec<Outcome> {
    // A channel's messages must be heard all or none, which only a transaction guarantees; with
    // one message per channel (a quiet moment) a plain pipeline does, for less work in Redis.
    let sent: Result<Vec<Value>, fred::error::Error> = if plan.iter().any(|(_, n)| *n > 1) {
        let tx = cluster.client.multi();
        match queue(&tx, cluster, held, plan).await {
            Ok(()) => tx.exec(true).await,
            Err(e) => Err(e),
        }
    } else {
        let pipeline = cluster.client.pipeline();
        match queue(&pipeline, cluster, held, plan).await {
            Ok(()) => pipeline.all().await,
            Err(e) => Err(e),
        }
    };
    match sent {
        Ok(replies) => outcomes(plan, &replies),
        Err(e) => {
            tracing::warn!(
                messages = plan.iter().map(|(_, n)| n).sum::<usize>(),
                "cluster messages not published yet, retrying: {e}"
            );
            plan.iter().map(|_| Outcome::Failed).collect()
        }
    }
}

/// Queues the `PUBLISH`es of `plan` on a transaction or a pipeline.
async fn queue<C: PubsubInterface>(
    to: &C,
    cluster: &Cluster,
    held: &HashMap<Arc<str>, Held>,
    plan: &[(Arc<str>, usize)],
) -> Result<(), fred::error::Error> {
    for (node, n) in plan {
        let channel = cluster.channel(node);
        for text in held[node].msgs.iter().take(*n) {
            let () = to.publish(channel.as_str(), text.as_str()).await?;
        }
    }
    Ok(())
}

/// Each channel's outcome from the receiver counts `replies` (one per message, in plan order).
/// A channel's count cannot change within a round (see [`publish`]), so its first reply decides.
fn outcomes(plan: &[(Arc<str>, usize)], replies: &[Value]) -> Vec<Outcome> {
    let mut at = 0;
    plan.iter()
        .map(|(_, n)| {
            let first = replies.get(at).and_then(|v| v.as_i64());
            at += n;
            match first {
                _ if replies.len() < at => Outcome::Failed,
                Some(0) => Outcome::Deaf,
                Some(_) => Outcome::Heard(*n),
                None => Outcome::Failed,
            }
        })
        .collect()
}

/// `text` (a [`super::Msg`], `{"tag":{…}}`) with `"_seq":"<boot>-<seq>"` first in its object.
fn stamp(text: &str, boot: u64, seq: u64) -> String {
    let Some(at) = text.find(":{").map(|i| i + 2) else {
        return text.to_string();
    };
    let comma = if text[at..].starts_with('}') { "" } else { "," };
    format!(
        "{}\"_seq\":\"{boot:x}-{seq}\"{comma}{}",
        &text[..at],
        &text[at..]
    )
}

/// The stamp of a message: the sending process and the sequence number on its channel.
fn read_stamp(text: &str) -> Option<(u64, u64)> {
    // The stamp is near the start; a message of an older node may hold any text there.
    let head = &text[..text.floor_char_boundary(96)];
    let start = head.find("\"_seq\":\"")? + 8;
    let end = start + head[start..].find('"')?;
    let (boot, seq) = head[start..end].split_once('-')?;
    Some((u64::from_str_radix(boot, 16).ok()?, seq.parse().ok()?))
}

/// What this node's inbox took already: per sending process and channel, the last sequence
/// number (messages of one sender on one channel arrive in order, retries included).
pub(crate) struct Seen {
    /// This process's id in its own stamps (a node restarted under the same `NODE_ID` starts
    /// counting again, under a new id).
    pub(super) boot: u64,
    last: Mutex<HashMap<Sender, (u64, Instant)>>,
}

/// A sending process (its stamp's id) and the channel it sent on.
type Sender = (u64, Box<str>);

/// Senders remembered at most; past it, those silent for ten minutes are forgotten.
const MAX_SENDERS: usize = 4096;

impl Seen {
    pub(super) fn new() -> Seen {
        Seen {
            boot: uuid::Uuid::new_v4().as_u64_pair().0,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// False when the message `text` heard on `channel` was taken already (published again
    /// after an answer was lost); unstamped messages (older nodes) are always new.
    pub(crate) fn first_time(&self, channel: &str, text: &str) -> bool {
        let Some((boot, seq)) = read_stamp(text) else {
            return true;
        };
        let now = Instant::now();
        let mut last = self.last.lock();
        if last.len() > MAX_SENDERS {
            last.retain(|_, (_, at)| now.saturating_duration_since(*at) < Duration::from_secs(600));
        }
        match last.get_mut(&(boot, channel.into())) {
            Some((n, _)) if *n >= seq => false,
            Some(entry) => {
                *entry = (seq, now);
                true
            }
            None => {
                last.insert((boot, channel.into()), (seq, now));
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_is_heard_all_or_none_and_a_short_reply_is_a_failure() {
        let plan: Vec<(Arc<str>, usize)> = vec![("a".into(), 2), ("b".into(), 1), ("c".into(), 3)];
        let replies = [1, 1, 0, 2, 2, 2].map(Value::Integer);
        assert_eq!(
            outcomes(&plan, &replies),
            [Outcome::Heard(2), Outcome::Deaf, Outcome::Heard(3)]
        );
        let short = [1, 1, 0].map(Value::Integer);
        assert_eq!(
            outcomes(&plan, &short),
            [Outcome::Heard(2), Outcome::Deaf, Outcome::Failed]
        );
        let error = [Value::Integer(1), Value::Integer(1), Value::Null];
        assert_eq!(outcomes(&plan[..2], &error)[1], Outcome::Failed);
    }

    #[test]
    fn a_message_published_twice_is_taken_once_and_stays_readable() {
        use crate::bus::Msg;
        let sender = Seen::new();
        let inbox = Seen::new();
        let msg = Msg::Left {
            room: "r".into(),
            to: "bob".into(),
            reason: "user-ended".into(),
        };
        let text = serde_json::to_string(&msg).unwrap();
        let (one, two) = (stamp(&text, sender.boot, 1), stamp(&text, sender.boot, 2));
        // Nodes that know no stamp read it as before (an unknown field is ignored).
        assert!(matches!(
            serde_json::from_str::<Msg>(&one).unwrap(),
            Msg::Left { ref to, .. } if to == "bob"
        ));
        assert!(inbox.first_time("p:to:b", &one));
        assert!(!inbox.first_time("p:to:b", &one), "the same message again");
        assert!(
            inbox.first_time("p:to:*", &one),
            "another channel counts apart"
        );
        assert!(inbox.first_time("p:to:b", &two));
        assert!(
            !inbox.first_time("p:to:b", &one),
            "an older one after a newer"
        );
        // Another process (a node restarted under the same name) counts from 1 again.
        let restarted = stamp(&text, sender.boot ^ 1, 1);
        assert!(inbox.first_time("p:to:b", &restarted));
        assert!(inbox.first_time("p:to:b", &text), "an older node's message");
        // A relay's raw payload comes through untouched.
        let relay = Msg::Deliver {
            room: "r".into(),
            to: "bob".into(),
            event: "webrtc-offer".into(),
            payload: serde_json::value::to_raw_value(
                &serde_json::json!({"offer": {"sdp": "a:{b}"}}),
            )
            .unwrap(),
        };
        let stamped = stamp(&serde_json::to_string(&relay).unwrap(), 9, 1);
        assert_eq!(read_stamp(&stamped), Some((9, 1)));
        match serde_json::from_str::<Msg>(&stamped).unwrap() {
            Msg::Deliver { payload, to, .. } => {
                assert_eq!(
                    (payload.get(), to.as_str()),
                    (r#"{"offer":{"sdp":"a:{b}"}}"#, "bob")
                )
            }
            other => panic!("{other:?}"),
        }
        let empty = stamp(r#"{"ping":{}}"#, 7, 3);
        assert_eq!(empty, r#"{"ping":{"_seq":"7-3"}}"#);
        assert_eq!(read_stamp(&empty), Some((7, 3)));
        // An unstamped message with a character across the stamp's window is simply new.
        let wide = format!(r#"{{"left":{{"to":"{}","room":"r"}}}}"#, "é".repeat(60));
        assert_eq!(read_stamp(&wide), None);
        assert!(inbox.first_time("p:to:b", &wide));
    }
}
