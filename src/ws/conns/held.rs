//! Sessions held for their clients to recover, taking one back, and giving up those whose
//! grace ran out (see [`recovery`](super::super::recovery)).

use std::sync::Arc;

use std::sync::OnceLock;

use parking_lot::Mutex;
use tokio::sync::Notify;

use super::super::conn::Conn;
use super::super::machine::Machine;
use super::super::out::Out;
use super::super::recovery::{self, Refused};
use super::super::{ConnRef, End, Events, Lost};
use super::Conns;

/// Why a session did not move to another node (see [`Conns::depart`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Departure {
    /// It cannot: the client gets a fresh session.
    Refused(Refused),
    /// Its connection looked alive and is being closed: ask again in a moment.
    Retry,
    /// This node has no such session.
    NotHere,
}

/// What the held sessions hold now (see [`Conns::holding`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Held {
    /// Sessions held for their clients to come back.
    pub sessions: usize,
    /// Bytes of events kept for them.
    pub bytes: usize,
}

impl Conns {
    /// Connection `conn` has ended for `end` and left the registry: a session that can be
    /// recovered is held for its client, and the reference that reaches it now is returned
    /// (events sent through it are kept); whatever the end, the session no longer names this
    /// connection as its own. The held session is a connection of its own, without a socket:
    /// the lost one, its socket and its buffers are dropped now, not after the grace.
    pub(in crate::ws) fn settle(&self, conn: &Arc<Conn>, end: End, worth: bool) -> Option<ConnRef> {
        let now = self.now();
        let (sid, r) = {
            let mut out = conn.out.lock();
            let sid = out.recovery_of(conn.id).map(|r| r.sid)?;
            let r = match end {
                End::Lost(l) if worth && l.recoverable() => {
                    let frames = std::mem::take(&mut out.frames);
                    out.bytes = 0;
                    out.pong = None;
                    out.recovery.take().map(|mut r| {
                        let budget = self.settings.recovery_bytes;
                        r.hold(now, frames.iter().map(|f| f.whole()), budget);
                        r
                    })
                }
                _ => None,
            };
            (sid, r)
        };
        // The registry's maps come before a connection's lock, never under it. The session is
        // held before the connection stops naming it, so that a client already back finds it
        // in one place or the other (see `recover`).
        let Some(r) = r else {
            self.unmove(sid, conn);
            return None;
        };
        let mut life = Machine::new(now, &Conn::timing(&self.settings, false), false);
        life.end(end);
        let mut out = Out::new(life);
        out.recovery = Some(r);
        let held = Arc::new(Conn {
            id: conn.id,
            tcp: OnceLock::new(),
            out: Mutex::new(out),
            wake: Notify::new(),
            ip: conn.ip,
            counted: false,
            polling: None,
            settings: self.settings.clone(),
        });
        let handle = held.handle();
        self.held.lock().insert(sid, held);
        self.unmove(sid, conn);
        Some(handle)
    }

    /// Forgets that the session `sid` lives on `conn`.
    fn unmove(&self, sid: super::Sid, conn: &Conn) {
        let mut moved = self.moved.lock();
        if moved.get(&sid) == Some(&conn.id) {
            moved.remove(&sid);
        }
    }

    /// Whether session `sid` is on this node: held, or on a connection (maybe being closed).
    pub(in crate::ws) fn knows(&self, sid: super::Sid) -> bool {
        if self.held.lock().contains_key(&sid) {
            return true;
        }
        let eio = self.moved.lock().get(&sid).copied().unwrap_or(sid);
        self.get(eio).is_some()
    }

    /// The client of connection `new` came back with `pid` (of session `sid`) and `offset`: the session it names
    /// moves onto `new`, held or still on a connection the server thought alive (which is then
    /// closed as a transport close), and `new` gets what it missed and the `40` reply. Returns
    /// what receives the session's events now, or why the client gets a fresh session.
    pub(in crate::ws) fn recover(
        &self,
        new: &Arc<Conn>,
        sid: super::Sid,
        pid: &str,
        offset: Option<&str>,
    ) -> Result<Arc<dyn Events>, Refused> {
        let grace = self.settings.recovery_grace.as_millis() as u64;
        let now = self.now();
        let budget = self.settings.recovery_bytes;
        let held = || self.unhold(sid);
        let (mut old, mut live) = match held() {
            Some(c) => (c, false),
            None => {
                let eio = self.moved.lock().get(&sid).copied().unwrap_or(sid);
                let c = self
                    .get(eio)
                    .filter(|c| !Arc::ptr_eq(c, new))
                    .or_else(held)
                    .ok_or(Refused::Unknown)?;
                let live = c
                    .out
                    .lock()
                    .recovery
                    .as_ref()
                    .is_none_or(|r| r.held_since() == 0);
                (c, live)
            }
        };
        let mut events = ready(&mut old.out.lock(), sid, live, offset, now, grace, budget);
        if live && matches!(events, Err(Refused::Unknown)) {
            // Its connection ended and was being settled meanwhile: held now.
            if let Some(c) = held() {
                (old, live) = (c, false);
                events = ready(&mut old.out.lock(), sid, live, offset, now, grace, budget);
            }
        }
        let events = match events {
            Ok(events) => events,
            Err(why) => {
                if !live {
                    self.held.lock().insert(sid, old.clone());
                }
                return Err(why);
            }
        };
        if live {
            // Its task closes it; what is sent to the session until the move is logged.
            old.wake.notify_one();
            old.notify_gone();
        }
        // The move itself happens under the layer above's lock (the one its relays hold), so
        // that no event finds the session between its two homes.
        let mut replayed = None;
        let mut install = || {
            if replayed.is_some() {
                return;
            }
            let Some(r) = old.out.lock().recovery.take() else {
                replayed = Some(0);
                return;
            };
            let missed: Vec<Vec<u8>> = r
                .missed(offset)
                .unwrap_or_default()
                .into_iter()
                .map(<[u8]>::to_vec)
                .collect();
            replayed = Some(missed.len());
            let after = offset.and_then(|o| o.parse().ok());
            new.adopt(r, &missed, after, pid);
        };
        let Some(now_events) = events.recover(&old.handle(), &new.handle(), new.ip, &mut install)
        else {
            if !live {
                self.held.lock().insert(sid, old.clone());
            }
            return Err(Refused::Declined);
        };
        install();
        if let Some(r) = new.out.lock().recovery.as_mut() {
            r.events = now_events.clone();
        }
        if new.id != sid {
            self.moved.lock().insert(sid, new.id);
        }
        let replayed = replayed.unwrap_or_default();
        tracing::debug!(sid = %sid, replayed, live, "session recovered");
        metrics::counter!("roulette_sessions_recovered_total").increment(1);
        metrics::counter!("roulette_events_replayed_total").increment(replayed as u64);
        Ok(now_events)
    }

    /// The connection `conn`, whose client came back with `pid`, takes the session another
    /// node gave up (`e`): what the client missed after `offset`, then the `40` reply with the
    /// session's sid and the same pid (socket.io-client reports `recovered` only then). Returns how many events were
    /// replayed, or why the client gets a fresh session instead (then answer it with
    /// [`ConnRef::welcome`]). Call it under the lock that orders the session's events.
    pub(crate) fn adopt_peer(
        &self,
        conn: &ConnRef,
        e: recovery::Exported,
        offset: Option<&str>,
        pid: &str,
    ) -> Result<usize, Refused> {
        let new = conn.conn.upgrade().ok_or(Refused::Unknown)?;
        let events = new.out.lock().events.clone().ok_or(Refused::Unknown)?;
        let r = recovery::Recovery::import(e, events, self.now()).ok_or(Refused::BadPid)?;
        let missed: Vec<Vec<u8>> = r.missed(offset)?.into_iter().map(<[u8]>::to_vec).collect();
        let sid = r.sid;
        new.out.lock().events = None;
        let after = offset.and_then(|o| o.parse().ok());
        new.adopt(Box::new(r), &missed, after, pid);
        if new.id != sid {
            self.moved.lock().insert(sid, new.id);
        }
        tracing::debug!(sid = %sid, replayed = missed.len(), "session recovered from another node");
        metrics::counter!("roulette_sessions_recovered_total").increment(1);
        metrics::counter!("roulette_events_replayed_total").increment(missed.len() as u64);
        Ok(missed.len())
    }

    /// Another node's client came back with the pid of session `sid` of this node, and
    /// `offset`: the session moves there (see [`Events::depart`]). A session whose connection
    /// still looks alive is closed as a transport close, so that it is held in a moment: the
    /// other node asks again ([`Departure::Retry`]).
    pub(crate) fn depart(
        &self,
        sid: &str,
        offset: Option<&str>,
        to: &str,
    ) -> Result<(), Departure> {
        let sid: super::Sid = sid
            .parse()
            .map_err(|_| Departure::Refused(Refused::BadPid))?;
        let Some(old) = self.unhold(sid) else {
            let eio = self.moved.lock().get(&sid).copied().unwrap_or(sid);
            return match self.get(eio) {
                Some(live) => {
                    live.end(End::Lost(Lost::TransportClose));
                    Err(Departure::Retry)
                }
                None => Err(Departure::NotHere),
            };
        };
        let grace = self.settings.recovery_grace.as_millis() as u64;
        let budget = self.settings.recovery_bytes;
        let now = self.now();
        let events = ready(&mut old.out.lock(), sid, false, offset, now, grace, budget);
        let events = match events {
            Ok(e) => e,
            Err(why) => {
                self.held.lock().insert(sid, old);
                return Err(Departure::Refused(why));
            }
        };
        let mut take = || old.out.lock().recovery.take().map(|r| r.export());
        if !events.depart(&old.handle(), to, &mut take) {
            if old.out.lock().recovery.is_some() {
                self.held.lock().insert(sid, old);
            }
            return Err(Departure::Refused(Refused::Declined));
        }
        tracing::debug!(sid = %sid, to, "session handed to another node");
        Ok(())
    }

    /// Gives up the held sessions whose grace ran out at `now`, or whose buffer outgrew its
    /// budget: the layer above is told, outside every lock.
    pub(super) fn expire(&self, now: u64) {
        let grace = self.settings.recovery_grace.as_millis() as u64;
        let gone: Vec<Arc<Conn>> = {
            let mut held = self.held.lock();
            if held.is_empty() {
                return;
            }
            let gone = held
                .extract_if(|_, c| {
                    let out = c.out.lock();
                    out.recovery.as_ref().is_none_or(|r| {
                        r.overflowed() || now.saturating_sub(r.held_since()) > grace
                    })
                })
                .map(|(_, c)| c)
                .collect();
            if held.is_empty() {
                self.drained.notify_waiters();
            }
            gone
        };
        for c in gone {
            let r = c.out.lock().recovery.take();
            if let Some(r) = r {
                r.events.abandoned(&c.handle());
            }
        }
    }

    /// The held sessions and the bytes they keep, read from them now.
    pub(crate) fn holding(&self) -> Held {
        let held = self.held.lock();
        let mut h = Held {
            sessions: held.len(),
            bytes: 0,
        };
        for c in held.values() {
            h.bytes += c.out.lock().recovery.as_ref().map_or(0, |r| r.held_bytes());
        }
        h
    }
}

/// Readies the session `sid` of connection `out` (held, or `live`: then closed as a transport
/// close, its queued events logged) to move to a client back with `offset`: what receives its
/// events, or why it cannot move (then nothing changed).
fn ready(
    out: &mut Out,
    sid: super::super::Sid,
    live: bool,
    offset: Option<&str>,
    now: u64,
    grace: u64,
    budget: usize,
) -> Result<Arc<dyn Events>, Refused> {
    let ending = out.life.ended();
    // A live connection may be ending already (its task has yet to settle it): it is taken
    // over as a live one, if it ended in a way a session survives.
    let state_ok = match ending {
        None => live,
        Some(End::Lost(l)) if live => l.recoverable(),
        Some(_) => !live,
    };
    // A live first connection has no state yet: made now (its id is the session's).
    if live {
        let _ = out.recovery_of(sid);
    }
    let r = match out.recovery.as_ref() {
        Some(r) if r.sid == sid && state_ok => r,
        _ => return Err(Refused::Unknown),
    };
    if !live && now.saturating_sub(r.held_since()) > grace {
        // Expired: the heartbeat gives it up.
        return Err(Refused::Unknown);
    }
    if !r.logs_live() && offset.is_some() {
        // This session gave no offsets: the client's is another session's.
        return Err(Refused::BadOffset);
    }
    r.missed(offset)?;
    let events = r.events.clone();
    if live {
        let frames = std::mem::take(&mut out.frames);
        out.bytes = 0;
        out.pong = None;
        if let Some(r) = out.recovery.as_mut() {
            r.hold(now, frames.iter().map(|f| f.whole()), budget);
        }
        out.end(End::Lost(Lost::TransportClose));
    }
    Ok(events)
}
