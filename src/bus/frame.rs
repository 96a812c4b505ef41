//! What one `PUBLISH` on a node's channel carries: one message, or a batch of consecutive ones.
//!
//! Each message crossing Redis costs a publish on one node and a read on the other, about 20 µs
//! of CPU each, mostly the kernel's TCP send and receive and the wake-ups, whatever the
//! message's size. So the publisher sends the messages of one channel that are ready together
//! (those queued while the previous publish was in flight) as one frame:
//! `{"batch":{"_seq":"<boot>-<first>","msgs":[m1,m2,…]}}`, the messages in the order queued,
//! the first numbered `first` on its channel and each next one more. A message alone goes as
//! before, `{"tag":{"_seq":"<boot>-<seq>",…}}`: what nodes of every version read, and what a
//! node of this version reads from older nodes (unstamped, or stamped, one message a frame).
//!
//! A frame is read with one JSON parse, a relay's parts borrowed from the frame's text; any
//! other message is parsed again from its own text.

use std::collections::HashSet;
use std::fmt::Write;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::Msg;
use super::msg::RelayIn;

/// How a batch frame starts (the messages' own tags are never `batch`).
const BATCH: &str = "{\"batch\":";

/// A frame as the inbox reads it: the stamp of its first message (none from older nodes) and
/// its messages, in the order sent.
#[derive(Debug)]
pub(crate) struct Frame<'a> {
    /// The sending process and the sequence number of the first message on its channel.
    pub stamp: Option<(u64, u64)>,
    /// The messages.
    pub msgs: Msgs<'a>,
}

/// A message of a frame: a relay, borrowed from the frame's text, or any other, owned.
// Lives on the inbox's stack for one frame: a box would cost the allocation it saves.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum In<'a> {
    /// A [`Msg::Deliver`].
    Relay(RelayIn<'a>),
    /// Any other message.
    Other(Msg),
}

/// A frame's messages: one, or a batch's.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Msgs<'a> {
    /// A message alone (no vector to allocate for it).
    One(Option<In<'a>>),
    /// A batch's messages.
    Many(std::vec::IntoIter<In<'a>>),
}

impl<'a> Iterator for Msgs<'a> {
    type Item = In<'a>;

    fn next(&mut self) -> Option<In<'a>> {
        match self {
            Msgs::One(m) => m.take(),
            Msgs::Many(m) => m.next(),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Msgs::One(m) => (usize::from(m.is_some()), Some(usize::from(m.is_some()))),
            Msgs::Many(m) => m.size_hint(),
        }
    }
}

impl ExactSizeIterator for Msgs<'_> {}

/// A batch frame's body (externally tagged like [`Msg`], so that serde reads it without a
/// buffer, through which a relay's borrowed parts could not go).
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Batch<'a> {
    /// The messages (the stamp beside them is read by [`read_stamp`]).
    Batch {
        /// In the order sent.
        #[serde(borrow)]
        msgs: Vec<In<'a>>,
    },
}

/// One message, `{"tag":{…}}`, read in one pass when it is a relay; any other is read again
/// from its text as a [`Msg`] (rarer, and mostly small).
impl<'de: 'a, 'a> Deserialize<'de> for In<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Tagged<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Tagged<'a> {
            type Value = In<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a cluster message")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<In<'a>, A::Error> {
                use serde::de::Error;
                // Tags are plain words: no escape, so always borrowed.
                let tag: &'de str = map
                    .next_key()?
                    .ok_or_else(|| A::Error::custom("a message without a tag"))?;
                let msg = if tag == "deliver" {
                    In::Relay(map.next_value()?)
                } else {
                    let body: &'de RawValue = map.next_value()?;
                    let text = format!("{{\"{tag}\":{}}}", body.get());
                    In::Other(serde_json::from_str(&text).map_err(A::Error::custom)?)
                };
                if map.next_key::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(A::Error::custom("a message with two tags"));
                }
                Ok(msg)
            }
        }
        d.deserialize_map(Tagged(std::marker::PhantomData))
    }
}

/// Reads a frame heard on a channel: all its messages or, if one cannot be read, none.
pub(crate) fn decode(text: &str) -> Result<Frame<'_>, serde_json::Error> {
    let stamp = read_stamp(text);
    let msgs = if text.starts_with(BATCH) {
        let Batch::Batch { msgs } = serde_json::from_str(text)?;
        Msgs::Many(msgs.into_iter())
    } else {
        Msgs::One(Some(serde_json::from_str(text)?))
    };
    Ok(Frame { stamp, msgs })
}

/// The frame of `msgs`, consecutive messages of one channel (each a [`Msg`] as JSON), the first
/// numbered `first` by process `boot`: the message itself, stamped, when it is alone; a batch
/// otherwise. `msgs` is not empty.
pub(super) fn encode<'a>(
    mut msgs: impl ExactSizeIterator<Item = &'a str>,
    bytes: usize,
    boot: u64,
    first: u64,
) -> String {
    if msgs.len() == 1 {
        return stamp(msgs.next().unwrap_or_default(), boot, first);
    }
    let mut out = String::with_capacity(bytes + msgs.len() + 64);
    out.push_str(BATCH);
    // Writing to a String cannot fail.
    let _ = write!(out, "{{\"_seq\":\"{boot:x}-{first}\",\"msgs\":[");
    for (i, m) in msgs.enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(m);
    }
    out.push_str("]}}");
    out
}

/// `text` (a [`Msg`], `{"tag":{…}}`) with `"_seq":"<boot>-<seq>"` first in its object, where
/// nodes that do not know it ignore it.
pub(super) fn stamp(text: &str, boot: u64, seq: u64) -> String {
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

/// The stamp of a frame: the sending process and the sequence number of its first message.
pub(super) fn read_stamp(text: &str) -> Option<(u64, u64)> {
    // The stamp is near the start; a message of an older node may hold any text there.
    let head = &text[..text.floor_char_boundary(96)];
    let start = head.find("\"_seq\":\"")? + 8;
    let end = start + head[start..].find('"')?;
    let (boot, seq) = head[start..end].split_once('-')?;
    Some((u64::from_str_radix(boot, 16).ok()?, seq.parse().ok()?))
}

/// The channels (by node name) to send batch frames to, from the live nodes and whether each
/// reads them: those that do, and the broadcast channel when they all do.
pub(super) fn readers<'a>(live: impl IntoIterator<Item = (&'a str, bool)>) -> HashSet<Arc<str>> {
    let mut readers = HashSet::new();
    let mut all = true;
    for (node, reads) in live {
        all &= reads;
        if reads {
            readers.insert(Arc::from(node));
        }
    }
    if all && !readers.is_empty() {
        readers.insert(Arc::from(super::BROADCAST));
    }
    readers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay(to: &str, sdp: &str) -> String {
        serde_json::to_string(&Msg::Deliver {
            room: "r".into(),
            to: to.into(),
            event: "webrtc-offer".into(),
            payload: serde_json::value::to_raw_value(&serde_json::json!({"offer": {"sdp": sdp}}))
                .unwrap(),
            reply: None,
        })
        .unwrap()
    }

    fn encoded(msgs: &[String], boot: u64, first: u64) -> String {
        let bytes = msgs.iter().map(String::len).sum();
        encode(msgs.iter().map(String::as_str), bytes, boot, first)
    }

    #[test]
    fn a_batch_carries_its_messages_in_order_with_their_payloads_untouched() {
        let left = serde_json::to_string(&Msg::Left {
            room: "r".into(),
            to: "bob".into(),
            reason: "user-ended".into(),
        })
        .unwrap();
        let msgs = vec![
            relay("bob", "a:{b}"),
            relay("bob", "\"batch\":[1]"),
            r#"{"ping":{"sent":5}}"#.to_string(),
            left,
        ];
        let text = encoded(&msgs, 0xab, 41);
        assert!(text.starts_with(r#"{"batch":{"_seq":"ab-41","msgs":[{"deliver":"#));
        // Valid JSON throughout.
        serde_json::from_str::<serde_json::Value>(&text).unwrap();
        let frame = decode(&text).unwrap();
        assert_eq!(frame.stamp, Some((0xab, 41)));
        assert_eq!(frame.msgs.len(), 4);
        let got: Vec<String> = frame
            .msgs
            .map(|m| match m {
                In::Relay(r) => format!("{} {}", r.to, r.payload.get()),
                In::Other(Msg::Ping { sent }) => format!("ping {sent}"),
                In::Other(Msg::Left { to, reason, .. }) => format!("left {to} {reason}"),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            [
                r#"bob {"offer":{"sdp":"a:{b}"}}"#,
                r#"bob {"offer":{"sdp":"\"batch\":[1]"}}"#,
                "ping 5",
                "left bob user-ended",
            ]
        );
    }

    #[test]
    fn a_message_alone_goes_as_older_nodes_send_and_read_it() {
        let one = relay("bob", "x");
        let text = encoded(std::slice::from_ref(&one), 7, 3);
        assert_eq!(text, stamp(&one, 7, 3));
        assert!(!text.starts_with(BATCH));
        // What an older node reads: the message (the stamp is an unknown field to it).
        assert!(matches!(
            serde_json::from_str::<Msg>(&text).unwrap(),
            Msg::Deliver { ref to, .. } if to == "bob"
        ));
        let frame = decode(&text).unwrap();
        assert_eq!(frame.stamp, Some((7, 3)));
        assert_eq!(frame.msgs.count(), 1);
        // An older node's message, unstamped.
        let frame = decode(&one).unwrap();
        assert_eq!(frame.stamp, None);
        assert!(matches!(frame.msgs.collect::<Vec<_>>()[..], [In::Relay(_)]));
        assert!(decode("{\"batch\":{\"msgs\":[{\"nope\":{}}]}}").is_err());
        assert!(decode("not json").is_err());
    }

    #[test]
    fn a_relay_is_read_as_the_owned_message_was_written() {
        let owned = Msg::Deliver {
            room: "r\"1".into(),
            to: "bøb".into(),
            event: "chat-message".into(),
            payload: serde_json::value::to_raw_value(&serde_json::json!({"message": "a\nb é"}))
                .unwrap(),
            reply: Some(crate::bus::Reply {
                node: "n\\2".into(),
                ack: Some(9),
            }),
        };
        let one = serde_json::to_string(&owned).unwrap();
        let text = encoded(&[one.clone(), one], 1, 1);
        for m in decode(&text).unwrap().msgs {
            let In::Relay(r) = m else { panic!("{m:?}") };
            // Unescaped where they had to be, borrowed where they could be.
            assert_eq!(
                (&*r.room, &*r.to, &*r.event),
                ("r\"1", "bøb", "chat-message")
            );
            assert!(matches!(r.to, std::borrow::Cow::Borrowed(_)));
            let reply = r.reply.as_ref().unwrap();
            assert_eq!((&*reply.node, reply.ack), ("n\\2", Some(9)));
            assert_eq!(
                serde_json::to_string(&r.into_owned()).unwrap(),
                serde_json::to_string(&owned).unwrap()
            );
        }
        // Written with spaces (no node writes one), a relay is read all the same; a message
        // with two tags, or none, is not read.
        let spaced = r#"{ "deliver": {"room":"r","to":"b","event":"e","payload":{}}}"#;
        assert!(matches!(
            decode(spaced).unwrap().msgs.collect::<Vec<_>>()[..],
            [In::Relay(_)]
        ));
        assert!(decode(r#"{"ping":{"sent":1},"left":{}}"#).is_err());
        assert!(decode(r#"{}"#).is_err());
        assert!(decode(r#"{"batch":{"msgs":[{}]}}"#).is_err());
    }

    #[test]
    fn stamps_are_read_from_messages_and_batches() {
        let empty = stamp(r#"{"ping":{}}"#, 7, 3);
        assert_eq!(empty, r#"{"ping":{"_seq":"7-3"}}"#);
        assert_eq!(read_stamp(&empty), Some((7, 3)));
        let big = encoded(&[relay("b", "x"), relay("b", "y")], u64::MAX, u64::MAX - 1);
        assert_eq!(read_stamp(&big), Some((u64::MAX, u64::MAX - 1)));
        // An unstamped message with a character across the stamp's window is simply unstamped.
        let wide = format!(r#"{{"left":{{"to":"{}","room":"r"}}}}"#, "é".repeat(60));
        assert_eq!(read_stamp(&wide), None);
    }

    #[test]
    fn batches_go_only_to_nodes_that_read_them() {
        let names = |r: HashSet<Arc<str>>| {
            let mut v: Vec<String> = r.iter().map(|n| n.to_string()).collect();
            v.sort();
            v
        };
        assert_eq!(names(readers([("a", true), ("b", true)])), ["*", "a", "b"]);
        // During a rolling upgrade: b is of an earlier version, and hears the broadcasts too.
        assert_eq!(names(readers([("a", true), ("b", false)])), ["a"]);
        assert!(readers([]).is_empty(), "before the first heartbeat");
        // An older node's figures name no batches.
        let old: crate::bus::NodeFigures = serde_json::from_str(
            r#"{"connections":1,"users":1,"waiting":0,"rooms":0,"sharedRooms":0}"#,
        )
        .unwrap();
        assert!(!old.batches);
    }
}
