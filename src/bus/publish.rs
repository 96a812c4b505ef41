//! The ordered publisher: every message to another node leaves here, in the order it was
//! queued, and is published again until the receiving node has heard it.
//!
//! A client is told `ok` for a relay as soon as it is queued, so a publish that fails (Redis
//! restarting, a Sentinel promoting a replica) must not lose it. `PUBLISH` answers how many
//! subscribers received the message; 0 means the recipient's subscription is not there (its
//! subscriber is still reconnecting to the new master). So a message is done only when at least
//! one subscriber heard it; until then it waits, with every later message to the same channel,
//! and is tried again. A round sends each channel's held messages as one frame, one `PUBLISH`
//! ([`super::frame`]: a batch, or the message alone), the channels' frames in one pipeline: what
//! was queued while the previous round was in flight goes together, without a timer. A frame is
//! heard whole or not at all, so a channel's messages are never heard with a gap that a retry
//! would fill out of order.
//!
//! A frame is published again when Redis did not answer in time, yet it may have run it (the
//! answer lost with the connection), and the retry may hold more messages than the first try:
//! so each message has its channel's sequence number from this process (a frame carries its
//! first message's, `"_seq"`, inside the object, where nodes that do not know it ignore it), and
//! the receiving node skips those it has taken already ([`super::seen::Seen`]). Delivery is at least once on
//! the wire and exactly once to the inbox.
//!
//! A channel that stays unheard for `NODE_TIMEOUT_MS` while Redis answers belongs to a node that
//! died (its rooms end for their partners within the same time): its messages are dropped and
//! counted (`roulette_cluster_messages_undelivered_total`); messages Redis keeps refusing while
//! it answers the heartbeats are dropped after as long (`roulette_cluster_messages_lost_total`).
//! While Redis does not answer, nothing is dropped: the rooms outlive an outage, so their relays
//! must too.
//!
//! A round to Redis in flight holds only its own channels: the channels on direct links go on
//! meanwhile (an outage makes each round wait out the command timeout, 2 s, and a call between
//! two linked nodes must not wait with it).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;
use tokio::sync::mpsc::UnboundedReceiver;

use super::{Cluster, frame};

mod links;

use links::over_links;

/// How soon an unheard channel, or a round Redis refused, is tried again.
const RETRY: Duration = Duration::from_millis(100);

/// Most messages taken off the queue at once, and in one frame.
const ROUND: usize = 512;

/// Most bytes of messages in one frame (unless its first message alone is larger): a backlog
/// after an outage goes in frames a subscriber takes in stride.
const FRAME_BYTES: usize = 256 * 1024;

/// Most messages held for one channel; past it, the oldest are dropped (and counted lost). An
/// outage of minutes, at the signaling rate limits, stays far below it.
const MAX_HELD: usize = 100_000;

/// The messages for one channel that no subscriber has heard yet, oldest first.
#[derive(Default)]
struct Held {
    /// Each with its sequence number on the channel (consecutive).
    msgs: VecDeque<(u64, String)>,
    /// The messages' bytes.
    bytes: usize,
    /// Since when Redis answers, yet the channel is unheard (nobody listens) or its messages
    /// are refused (reset when heard).
    stuck_since: Option<Instant>,
    /// Not tried again before this.
    retry_at: Option<Instant>,
    /// The last number written to the node's direct link and not yet acknowledged (0: none).
    linked: u64,
    /// Which link `linked` was written to ([`super::link::Out::generation`]).
    link: u64,
    /// When the first message not yet acknowledged was written to the link.
    linked_at: Option<Instant>,
    /// Whether this round left it off Redis: sent over the link, or waiting for the node to
    /// take what went on Redis before the link came up.
    via_link: bool,
    /// Since when it waits so.
    switching: Option<Instant>,
    /// The last number heard over Redis that such a wait gave up on: the channel stays on
    /// Redis until a later one is heard, rather than wait again and again for what may never
    /// be acknowledged.
    gave_up: u64,
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

/// Publishes the queued messages until the channel closes.
pub(super) async fn run(cluster: Arc<Cluster>, mut rx: UnboundedReceiver<(Arc<str>, String)>) {
    metrics::counter!("roulette_cluster_messages_undelivered_total").increment(0);
    // Looked up once (the recorder is installed before a node joins): a lookup per round
    // hashed the key each time.
    let sent = metrics::counter!("roulette_cluster_messages_sent_total");
    let mut held: HashMap<Arc<str>, Held> = HashMap::new();
    let mut seqs: HashMap<Arc<str>, u64> = HashMap::new();
    // Per channel, the last number heard over Redis: its node must take it before the link
    // carries the next ones.
    let mut published: HashMap<Arc<str>, u64> = HashMap::new();
    let mut batch = Vec::with_capacity(ROUND);
    // The Redis round in flight: its channels wait for it, the others' links go on meanwhile
    // (an outage holds a round for up to the command timeout, and must not hold the links).
    let mut flight: Option<Flight<'_>> = None;
    loop {
        // Channels with a retry time wait for it; the rest (left over from a full frame) go now,
        // or, while a round is in flight, when it lands: then only the links' checks (a switch's
        // wait, a stall) have times to keep.
        let now = Instant::now();
        let next_retry = held
            .iter()
            .filter(|(node, h)| !flying(&flight, node) && (flight.is_none() || h.via_link))
            .map(|(_, h)| h.retry_at.unwrap_or(now))
            .min();
        let retry = async {
            match next_retry {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        // A link that went down wakes the publisher too: what it held goes on Redis now.
        let woke = tokio::select! {
            n = rx.recv_many(&mut batch, ROUND) => if n == 0 { break } else { None },
            _ = retry => None,
            _ = cluster.links.down.notified() => None,
            outcomes = land(&mut flight) => Some(outcomes),
        };
        if let Some(outcomes) = woke
            && let Some(f) = flight.take()
        {
            heard(
                &cluster,
                &mut held,
                &mut published,
                &sent,
                f.frames,
                outcomes,
            );
        }
        if !batch.is_empty() {
            // The tasks that are ready at this moment (other connections' relays, the reads
            // the I/O driver has for them) run first: what they queue goes in the same frames.
            tokio::task::yield_now().await;
            while batch.len() < ROUND
                && let Ok(m) = rx.try_recv()
            {
                batch.push(m);
            }
        }
        let dropped = hold(&mut held, &mut seqs, batch.drain(..));
        if dropped > 0 {
            cluster.count_lost(dropped);
        }
        over_links(
            &cluster,
            &mut held,
            &published,
            &sent,
            &flight,
            Instant::now(),
        );
        // What was queued while a round was in flight goes in the next one, a frame per
        // channel: the coalescing needs no timer.
        if flight.is_none() {
            flight = take_off(&cluster, &held, &mut published);
        }
    }
}

/// Numbers the queued messages on their channels and holds them until heard; returns how many
/// old ones were dropped to keep within [`MAX_HELD`].
fn hold(
    held: &mut HashMap<Arc<str>, Held>,
    seqs: &mut HashMap<Arc<str>, u64>,
    queued: impl Iterator<Item = (Arc<str>, String)>,
) -> u64 {
    let mut dropped = 0;
    for (node, text) in queued {
        let seq = seqs.entry(node.clone()).or_default();
        *seq += 1;
        let h = held.entry(node).or_default();
        h.bytes += text.len();
        h.msgs.push_back((*seq, text));
        if h.msgs.len() > MAX_HELD {
            h.drop_front(1);
            dropped += 1;
        }
    }
    dropped
}

impl Held {
    /// Takes the node's link as it is now: when it is another than the one `linked` was
    /// written to (it broke and a new one came up between two rounds), what went on the old one
    /// is not known to have arrived, so the new one starts from the oldest held message (the
    /// node skips what it took already).
    fn on_link(&mut self, generation: u64) {
        if self.link != generation {
            self.link = generation;
            self.linked = 0;
            self.linked_at = None;
        }
    }

    /// Where the messages not yet written to the link begin.
    fn first_unlinked(&self) -> usize {
        self.msgs
            .iter()
            .take_while(|(seq, _)| *seq <= self.linked)
            .count()
    }

    /// Drops its first `n` messages.
    fn drop_front(&mut self, n: usize) {
        for (_, text) in self.msgs.drain(..n) {
            self.bytes -= text.len();
        }
    }

    /// How many of its messages from the `start`th go in the next frame: at most [`ROUND`],
    /// and at most [`FRAME_BYTES`] unless the first alone is larger.
    fn frame_len(&self, start: usize) -> usize {
        let mut bytes = 0;
        let mut n = 0;
        for (_, text) in self.msgs.iter().skip(start).take(ROUND) {
            bytes += text.len();
            if n > 0 && bytes > FRAME_BYTES {
                break;
            }
            n += 1;
        }
        n
    }

    /// The frame of `n` messages from the `start`th (see [`super::frame`]).
    fn frame(&self, start: usize, n: usize, boot: u64) -> String {
        let first = self.msgs.get(start).map_or(0, |(seq, _)| *seq);
        let msgs = self
            .msgs
            .iter()
            .skip(start)
            .take(n)
            .map(|(_, t)| t.as_str());
        let bytes = if start == 0 && n == self.msgs.len() {
            self.bytes
        } else {
            self.msgs
                .iter()
                .skip(start)
                .take(n)
                .map(|(_, t)| t.len())
                .sum()
        };
        frame::encode(msgs, bytes, boot, first)
    }
}

/// A Redis round on its way: each channel's frame's last number, and the round's answers.
struct Flight<'a> {
    frames: Vec<(Arc<str>, u64)>,
    answers: std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Outcome>> + Send + 'a>>,
}

/// Whether `node`'s messages are on a Redis round in flight: nothing else touches them until it
/// lands (a link frame could overtake them, and the round's answer drops them by number).
fn flying(flight: &Option<Flight<'_>>, node: &str) -> bool {
    flight
        .as_ref()
        .is_some_and(|f| f.frames.iter().any(|(n, _)| **n == *node))
}

/// The round in flight's answers, once it lands (none in flight: never).
async fn land(flight: &mut Option<Flight<'_>>) -> Vec<Outcome> {
    match flight {
        Some(f) => f.answers.as_mut().await,
        None => std::future::pending().await,
    }
}

/// One pipeline of the channels due now and not on a link, one frame each, sent off; none when
/// no channel is due.
fn take_off<'a>(
    cluster: &'a Cluster,
    held: &HashMap<Arc<str>, Held>,
    published: &mut HashMap<Arc<str>, u64>,
) -> Option<Flight<'a>> {
    let now = Instant::now();
    let readers = cluster.batch_readers();
    // Only live nodes' (every node of this version reads batches) and held channels' count.
    published.retain(|node, _| readers.contains(node) || held.contains_key(node));
    let plan: Vec<(Arc<str>, usize, String)> = held
        .iter()
        .filter(|(_, h)| !h.via_link && h.retry_at.is_none_or(|at| at <= now))
        .map(|(node, h)| {
            // A node of an earlier version reads one message a frame.
            let n = if readers.contains(node) {
                h.frame_len(0)
            } else {
                1
            };
            (node.clone(), n, h.frame(0, n, cluster.seen.boot))
        })
        .collect();
    if plan.is_empty() {
        return None;
    }
    let frames = plan
        .iter()
        .map(|(node, n, _)| {
            let last = held
                .get(node)
                .and_then(|h| h.msgs.get(n.saturating_sub(1)))
                .map_or(0, |(seq, _)| *seq);
            (node.clone(), last)
        })
        .collect();
    Some(Flight {
        frames,
        answers: Box::pin(publish(cluster, plan)),
    })
}

/// Takes a landed round's answers: what was heard leaves `held` (by number: messages queued
/// meanwhile stay, and any the cap dropped meanwhile are not counted twice).
fn heard(
    cluster: &Cluster,
    held: &mut HashMap<Arc<str>, Held>,
    published: &mut HashMap<Arc<str>, u64>,
    sent: &metrics::Counter,
    frames: Vec<(Arc<str>, u64)>,
    outcomes: Vec<Outcome>,
) {
    let now = Instant::now();
    for ((node, last), outcome) in frames.iter().zip(outcomes) {
        let Some(h) = held.get_mut(node) else {
            continue;
        };
        match outcome {
            Outcome::Heard(_) => {
                published.insert(node.clone(), *last);
                let n = h.msgs.iter().take_while(|(seq, _)| *seq <= *last).count();
                h.drop_front(n);
                h.stuck_since = None;
                h.retry_at = None;
                sent.increment(n as u64);
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
                    h.drop_front(h.msgs.len());
                } else {
                    tracing::error!(
                        channel = %node,
                        messages = h.msgs.len(),
                        "Redis refused these cluster messages for the node timeout: dropped"
                    );
                    cluster.count_lost(h.msgs.len() as u64);
                    h.drop_front(h.msgs.len());
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

/// Publishes each planned channel's frame (one `PUBLISH` each: a frame is heard whole or not
/// at all, so a channel's messages can never be heard with a gap that a retry would fill out of
/// order); what became of each channel's messages, in plan order.
async fn publish(cluster: &Cluster, mut plan: Vec<(Arc<str>, usize, String)>) -> Vec<Outcome> {
    let sizes: Vec<usize> = plan.iter().map(|(_, n, _)| *n).collect();
    let sent: Result<Vec<Value>, fred::error::Error> = if plan.len() == 1 {
        let (node, _, frame) = plan.pop().expect("one channel");
        cluster
            .client
            .publish::<Value, _, _>(cluster.channel(&node), frame)
            .await
            .map(|v| vec![v])
    } else {
        let pipeline = cluster.client.pipeline();
        let mut queued = Ok(());
        for (node, _, frame) in plan {
            if let Err(e) = pipeline
                .publish::<(), _, _>(cluster.channel(&node), frame)
                .await
            {
                queued = Err(e);
                break;
            }
        }
        match queued {
            Ok(()) => pipeline.all().await,
            Err(e) => Err(e),
        }
    };
    match sent {
        Ok(replies) => outcomes(&sizes, &replies),
        Err(e) => {
            tracing::warn!(
                messages = sizes.iter().sum::<usize>(),
                "cluster messages not published yet, retrying: {e}"
            );
            sizes.iter().map(|_| Outcome::Failed).collect()
        }
    }
}

/// Each channel's outcome from the receiver counts `replies` (one per frame, in plan order;
/// `sizes` are the frames' message counts).
fn outcomes(sizes: &[usize], replies: &[Value]) -> Vec<Outcome> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, n)| match replies.get(i).and_then(|v| v.as_i64()) {
            Some(0) => Outcome::Deaf,
            Some(_) => Outcome::Heard(*n),
            None => Outcome::Failed,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::seen::Seen;

    #[test]
    fn a_link_that_replaced_another_starts_from_the_oldest_held_message() {
        let mut h = Held::default();
        hold_all(&mut h, 8..=11);
        h.on_link(1);
        h.linked = 10;
        h.linked_at = Some(Instant::now());
        // The same link: 8 to 10 are on their way, 11 goes next.
        h.on_link(1);
        assert_eq!(h.linked, 10);
        assert_eq!(
            h.msgs.get(h.first_unlinked()).map(|(seq, _)| *seq),
            Some(11)
        );
        // Another link to the node: 8 to 10 went on the old one and may be lost with it.
        h.on_link(2);
        assert_eq!((h.linked, h.linked_at), (0, None));
        let start = h.first_unlinked();
        assert_eq!(h.msgs.get(start).map(|(seq, _)| *seq), Some(8));
    }

    fn hold_all(h: &mut Held, seqs: std::ops::RangeInclusive<u64>) {
        for seq in seqs {
            let text = format!("m{seq}");
            h.bytes += text.len();
            h.msgs.push_back((seq, text));
        }
    }

    #[test]
    fn a_frame_is_heard_whole_and_a_short_reply_is_a_failure() {
        let sizes = [2, 1, 3];
        let replies = [1, 0, 2].map(Value::Integer);
        assert_eq!(
            outcomes(&sizes, &replies),
            [Outcome::Heard(2), Outcome::Deaf, Outcome::Heard(3)]
        );
        let short = [1, 0].map(Value::Integer);
        assert_eq!(
            outcomes(&sizes, &short),
            [Outcome::Heard(2), Outcome::Deaf, Outcome::Failed]
        );
        let error = [Value::Integer(1), Value::Null];
        assert_eq!(outcomes(&sizes[..2], &error)[1], Outcome::Failed);
    }

    /// What an inbox takes of `frame` heard on `channel`: the messages' `sent` (pings), once.
    fn take(inbox: &Seen, channel: &str, text: &str) -> Vec<u64> {
        let f = frame::decode(text).unwrap();
        let skip = inbox.taken(channel, f.stamp, f.msgs.len());
        f.msgs
            .skip(skip)
            .map(|m| match m {
                frame::In::Other(crate::bus::Msg::Ping { sent }) => sent,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    fn ping(sent: u64) -> String {
        format!(r#"{{"ping":{{"sent":{sent}}}}}"#)
    }

    #[test]
    fn messages_ready_together_go_as_one_frame_per_channel_in_order_and_are_taken_once() {
        let boot = 0x5eed;
        let inbox = Seen::new();
        let mut held: HashMap<Arc<str>, Held> = HashMap::new();
        let mut seqs = HashMap::new();
        let (b, c): (Arc<str>, Arc<str>) = ("b".into(), "c".into());
        let queued = [(&b, 1), (&c, 100), (&b, 2), (&b, 3), (&c, 101)];
        let dropped = hold(
            &mut held,
            &mut seqs,
            queued.iter().map(|(n, s)| ((*n).clone(), ping(*s))),
        );
        assert_eq!(dropped, 0);
        let h = &held[&b];
        assert_eq!(h.frame_len(0), 3);
        let first = h.frame(0, 3, boot);
        assert!(first.starts_with(r#"{"batch":{"_seq":"5eed-1","msgs":["#));
        assert_eq!(take(&inbox, "to:b", &first), [1, 2, 3]);
        assert_eq!(
            take(&inbox, "to:c", &held[&c].frame(0, 2, boot)),
            [100, 101],
            "each channel its own frame and numbers"
        );
        // The answer to the first frame was lost: it goes again, with what was queued since.
        hold(&mut held, &mut seqs, [(b.clone(), ping(4))].into_iter());
        let again = held[&b].frame(0, held[&b].frame_len(0), boot);
        assert!(again.starts_with(r#"{"batch":{"_seq":"5eed-1","msgs":["#));
        assert_eq!(
            take(&inbox, "to:b", &again),
            [4],
            "the first three once only"
        );
        assert!(take(&inbox, "to:b", &again).is_empty());
        // Heard this time: the next frame starts after it; a message alone is unbatched.
        held.get_mut(&b).unwrap().drop_front(4);
        hold(&mut held, &mut seqs, [(b.clone(), ping(5))].into_iter());
        let alone = held[&b].frame(0, 1, boot);
        assert_eq!(alone, r#"{"ping":{"_seq":"5eed-5","sent":5}}"#);
        assert_eq!(take(&inbox, "to:b", &alone), [5]);
        // Another process under the same channel counts from 1 again.
        assert_eq!(
            take(&inbox, "to:b", &frame::stamp(&ping(6), boot ^ 1, 1)),
            [6]
        );
    }

    #[test]
    fn a_frame_stays_within_its_bounds_and_the_rest_follows() {
        let mut held: HashMap<Arc<str>, Held> = HashMap::new();
        let mut seqs = HashMap::new();
        let b: Arc<str> = "b".into();
        let big = format!(
            r#"{{"ping":{{"sent":1,"pad":"{}"}}}}"#,
            "x".repeat(FRAME_BYTES / 3)
        );
        hold(
            &mut held,
            &mut seqs,
            (0..4).map(|_| (b.clone(), big.clone())),
        );
        assert_eq!(held[&b].frame_len(0), 2, "two fit, three do not");
        held.get_mut(&b).unwrap().drop_front(3);
        assert_eq!(held[&b].frame_len(0), 1);
        assert_eq!(held[&b].bytes, big.len());
        let huge = "y".repeat(FRAME_BYTES * 2);
        hold(&mut held, &mut seqs, [(b.clone(), huge)].into_iter());
        held.get_mut(&b).unwrap().drop_front(1);
        assert_eq!(
            held[&b].frame_len(0),
            1,
            "a message larger than a frame goes alone"
        );
        hold(
            &mut held,
            &mut seqs,
            (0..ROUND + 5).map(|i| (b.clone(), ping(i as u64))),
        );
        held.get_mut(&b).unwrap().drop_front(1);
        assert_eq!(held[&b].frame_len(0), ROUND);
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
        let stamp = frame::stamp;
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
            reply: None,
        };
        let stamped = stamp(&serde_json::to_string(&relay).unwrap(), 9, 1);
        assert_eq!(frame::read_stamp(&stamped), Some((9, 1)));
        match serde_json::from_str::<Msg>(&stamped).unwrap() {
            Msg::Deliver { payload, to, .. } => {
                assert_eq!(
                    (payload.get(), to.as_str()),
                    (r#"{"offer":{"sdp":"a:{b}"}}"#, "bob")
                )
            }
            other => panic!("{other:?}"),
        }
        // An unstamped message with a character across the stamp's window is simply new.
        let wide = format!(r#"{{"left":{{"to":"{}","room":"r"}}}}"#, "é".repeat(60));
        assert!(inbox.first_time("p:to:b", &wide));
    }
}
