//! A connection's side of connection state recovery: events numbered and logged as they are
//! queued, a session started with its pid, and the missed events of a session taken back
//! queued ahead of everything else (see [`recovery`](super::super::recovery)).

use std::io::Write as _;
use std::sync::Arc;

use serde::Serialize;

use super::super::frame::{self, OutFrame};
use super::super::recovery::{self, Logging, Recovery};
use super::super::{Events, SendError, Sid, packet};
use super::{Conn, SCRATCH, SCRATCH_KEEP};

impl Conn {
    /// [`emit`](Conn::emit) in a session that may be recovered: the event is numbered under
    /// the connection's lock (so numbers follow the queue's order whichever thread emits), given
    /// its number as a last argument when the client takes offsets, and logged; a session
    /// held while its client is away only logs it.
    pub(super) fn emit_logged<T: Serialize + ?Sized>(
        self: &Arc<Self>,
        event: &str,
        data: &T,
    ) -> Result<(), SendError> {
        let (coalesce, own) = self.turn();
        let budget = self.settings.recovery_bytes;
        let mut out = self.out.lock();
        let (n, offsets) = match out.recovery.as_ref() {
            Some(r) => (r.next(), r.offsets),
            None => {
                if out.life.ended().is_some() {
                    return Err(SendError::Closed);
                }
                return SCRATCH.with_borrow_mut(|buf| {
                    let start = frame::encode_text(buf, |b| event_json(b, event, data, None))
                        .map_err(|_| SendError::Encode)?;
                    let sent = self.push_locked(
                        &mut out,
                        buf.get(start..).unwrap_or_default(),
                        false,
                        coalesce,
                        own,
                    );
                    trim(buf);
                    sent
                });
            }
        };
        SCRATCH.with_borrow_mut(|buf| {
            let start =
                frame::encode_text(buf, |b| event_json(b, event, data, offsets.then_some(n)))
                    .map_err(|_| SendError::Encode)?;
            let bytes = buf.get(start..).unwrap_or_default();
            let sent = if out.life.ended().is_some() {
                match out.recovery.as_mut() {
                    Some(r) if r.held_since() != 0 => match r.log(0, bytes, budget) {
                        Logging::Kept => Ok(()),
                        Logging::Overflow => Err(SendError::Closed),
                    },
                    _ => Err(SendError::Closed),
                }
            } else {
                let number = out.popped + out.frames.len() as u64;
                let sent = self.push_locked(&mut out, bytes, false, coalesce, own);
                if let (Ok(()), Some(r)) = (&sent, out.recovery.as_mut())
                    && r.logs_live()
                {
                    r.log(number, bytes, budget);
                }
                sent
            };
            trim(buf);
            sent
        })
    }

    /// Starts the recovery state of a session that just joined `/` with `events`: its pid, for
    /// the `40` reply (none when recovery is off). `offsets`: its client showed a pid already.
    pub(in crate::ws) fn begin_recovery(
        &self,
        events: &Arc<dyn Events>,
        offsets: bool,
    ) -> Option<String> {
        if self.settings.recovery_grace.is_zero() {
            return None;
        }
        let mut out = self.out.lock();
        if offsets {
            out.recovery = Some(Box::new(Recovery::new(self.id, events.clone(), true)));
        } else {
            // Nothing to keep while the connection lives: the state is made if it is lost.
            out.events = Some(events.clone());
        }
        drop(out);
        Some(recovery::pid(self.id))
    }

    /// Answers the namespace connect of a fresh session (`events`): the `40` with its sid, and
    /// its pid when it can be recovered. `offsets`: its client showed a pid already.
    pub(in crate::ws) fn welcome(self: &Arc<Self>, events: &Arc<dyn Events>, offsets: bool) {
        let pid = self.begin_recovery(events, offsets);
        self.push_control(OutFrame::text(&packet::connected(
            self.id.as_str(),
            pid.as_deref(),
        )))
        .ok();
    }

    /// Moves the session `r` onto this connection, whose client came back with `pid`: the
    /// `missed` frames first, then the `40` reply with the session's own sid and pid; events
    /// numbered after `replayed_after` stay logged until a pong confirms them.
    pub(in crate::ws) fn adopt(
        self: &Arc<Self>,
        mut r: Box<Recovery>,
        missed: &[Vec<u8>],
        replayed_after: Option<u64>,
        pid: &str,
    ) {
        let first = {
            let out = self.out.lock();
            out.popped + out.frames.len() as u64
        };
        for f in missed {
            self.push_bytes(f, true).ok();
        }
        let sid: Sid = r.sid;
        r.resume(true, replayed_after, first);
        self.out.lock().recovery = Some(r);
        self.push_control(OutFrame::text(&packet::connected(sid.as_str(), Some(pid))))
            .ok();
    }
}

impl Conn {
    /// See [`ConnRef::hand_over`](super::super::ConnRef::hand_over). The heartbeat forgets the
    /// held entry, which has no session any more, without telling the layer above.
    pub(in crate::ws) fn hand_over(&self, to: &Arc<Conn>) -> usize {
        let missed = self.take_held();
        for f in &missed {
            to.push_bytes(f, true).ok();
        }
        missed.len()
    }

    /// See [`ConnRef::take_kept`](super::super::ConnRef::take_kept).
    pub(in crate::ws) fn take_kept(&self) -> Vec<String> {
        self.take_held()
            .iter()
            .filter_map(|f| frame::polled(f))
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect()
    }

    /// The frames kept for a held session, which is given up.
    fn take_held(&self) -> Vec<Vec<u8>> {
        let r = {
            let mut out = self.out.lock();
            if out.recovery.as_ref().is_none_or(|r| r.held_since() == 0) {
                return Vec::new();
            }
            out.recovery.take()
        };
        let Some(r) = r else {
            return Vec::new();
        };
        r.missed(None)
            .unwrap_or_default()
            .into_iter()
            .map(<[u8]>::to_vec)
            .collect()
    }
}

/// `["event",data]` (with `,"n"`, the offset, before the `]`) after `42`.
fn event_json<T: Serialize + ?Sized>(
    b: &mut Vec<u8>,
    event: &str,
    data: &T,
    offset: Option<u64>,
) -> serde_json::Result<()> {
    b.extend_from_slice(b"42[");
    serde_json::to_writer(&mut *b, event)?;
    b.push(b',');
    serde_json::to_writer(&mut *b, data)?;
    if let Some(n) = offset {
        write!(b, ",\"{n}\"").map_err(serde_json::Error::io)?;
    }
    b.push(b']');
    Ok(())
}

/// A thread's scratch buffer does not keep a large message's allocation.
fn trim(buf: &mut Vec<u8>) {
    if buf.capacity() > SCRATCH_KEEP {
        *buf = Vec::new();
    }
}
