//! A held session as it moves between nodes: its numbering and log, written out and read back.

use std::collections::VecDeque;
use std::sync::Arc;

use super::{Events, Logged, Recovery, Sid};

/// A held session as it moves to another node of the cluster: its numbering and its log,
/// each event as the Engine.IO packet text its frame carries.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Exported {
    /// The Socket.IO session id.
    pub sid: String,
    /// Whether its events carry offsets.
    pub offsets: bool,
    /// The next event's number.
    pub next: u64,
    /// Events numbered below this are no longer held.
    pub lost_below: u64,
    /// The events not known delivered, oldest first: their numbers and packets.
    pub log: Vec<(u64, String)>,
}

impl Recovery {
    /// The session as another node takes it (see [`Exported`]).
    pub(in crate::ws) fn export(&self) -> Exported {
        Exported {
            sid: self.sid.to_string(),
            offsets: self.offsets,
            next: self.next,
            lost_below: self.lost_below,
            log: self
                .log
                .iter()
                .filter_map(|l| {
                    let text = super::super::frame::polled(&l.bytes)?;
                    Some((l.n, String::from_utf8_lossy(text).into_owned()))
                })
                .collect(),
        }
    }

    /// A session another node gave up (see [`export`](Self::export)), held until it is
    /// resumed here; `None` for a sid that is not one.
    pub(in crate::ws) fn import(
        e: Exported,
        events: Arc<dyn Events>,
        now: u64,
    ) -> Option<Recovery> {
        let sid: Sid = e.sid.parse().ok()?;
        let mut log = VecDeque::with_capacity(e.log.len());
        let mut bytes = 0;
        for (n, text) in e.log {
            let mut buf = Vec::with_capacity(text.len() + 10);
            let start = super::super::frame::encode_text(&mut buf, |b| {
                b.extend_from_slice(text.as_bytes());
                Ok::<(), ()>(())
            })
            .ok()?;
            let frame: Box<[u8]> = buf.get(start..)?.into();
            bytes += frame.len();
            log.push_back(Logged {
                n,
                frame: 0,
                bytes: frame,
            });
        }
        Some(Recovery {
            sid,
            events,
            offsets: e.offsets,
            next: e.next,
            log,
            bytes,
            lost_below: e.lost_below,
            mark: None,
            held_since: now.max(1),
            overflowed: false,
            held_from: e.next,
        })
    }
}
