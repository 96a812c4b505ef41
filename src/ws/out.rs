//! A connection's output queue: WebSocket frames, counted in bytes.

use std::collections::VecDeque;

use super::frame::{self, OutFrame};
use super::machine::Machine;
use std::sync::Arc;

use super::recovery::Recovery;
use super::{Events, Sid};

/// Frames waiting for the client to take them, and the session's life (the heartbeat, its end):
/// everything of the session's Engine.IO state that changes, under one lock.
pub(super) struct Out {
    pub(super) frames: VecDeque<OutFrame>,
    /// The unwritten bytes of `frames`: what the connection's budget is charged with.
    pub(super) bytes: usize,
    /// Frames written out whole since the connection opened (queued or written at once):
    /// `frames[0]` is frame number `popped`.
    pub(super) popped: u64,
    /// The number of a queued pong that nothing of has been written yet: a newer ping replaces
    /// its payload instead of queueing another (RFC 6455 lets a pong answer only the latest
    /// ping), so a client that pings and never reads gets no pile of pongs.
    pub(super) pong: Option<u64>,
    /// The session's life.
    pub(super) life: Machine,
    /// The Socket.IO session's recovery state (boxed: a session that has none pays a pointer):
    /// from its namespace connect when its client takes offsets, else made when it is needed
    /// (its connection lost, or taken over), from `events`.
    pub(super) recovery: Option<Box<Recovery>>,
    /// What receives the session's events above the transport, once it joined `/` with
    /// recovery on: all a session needs to be held later, while it needs no log.
    pub(super) events: Option<Arc<dyn Events>>,
    /// Wakes the probes waiting for the session's next pong or its end (see `Conn::probe`);
    /// made by the first probe, so a session never probed pays a pointer.
    pub(super) probed: Option<Arc<tokio::sync::Notify>>,
}

impl Out {
    /// The session's recovery state, made now from `events` if it has none yet (a session
    /// that joined, its client taking no offsets); `None` for one that never joined.
    pub(super) fn recovery_of(&mut self, sid: Sid) -> Option<&mut Recovery> {
        if self.recovery.is_none() {
            let events = self.events.take()?;
            self.recovery = Some(Box::new(Recovery::new(sid, events, false)));
        }
        self.recovery.as_deref_mut()
    }
}

impl Out {
    /// An empty queue for a session whose life is `life`.
    pub(super) fn new(life: Machine) -> Out {
        Out {
            frames: VecDeque::new(),
            bytes: 0,
            popped: 0,
            pong: None,
            life,
            recovery: None,
            events: None,
            probed: None,
        }
    }

    /// Ends the session's life for `why` (see [`Machine::end`]), waking its probes; false when
    /// it had ended already.
    pub(super) fn end(&mut self, why: super::End) -> bool {
        let ended = self.life.end(why);
        self.wake_probes();
        ended
    }

    /// Wakes the probes waiting on this session, if any.
    pub(super) fn wake_probes(&self) {
        if let Some(n) = &self.probed {
            n.notify_waiters();
        }
    }

    /// Queues a frame at the end.
    pub(super) fn push(&mut self, frame: OutFrame) {
        self.bytes += frame.remaining().len();
        self.frames.push_back(frame);
    }

    /// Marks `n` more bytes as written, from the front.
    pub(super) fn written(&mut self, mut n: usize) {
        self.bytes -= n;
        while n > 0 {
            let f = self
                .frames
                .front_mut()
                .expect("written bytes belong to queued frames");
            let len = f.remaining().len();
            if n >= len {
                self.frames.pop_front();
                self.popped += 1;
                n -= len;
            } else {
                f.advance(n);
                n = 0;
            }
        }
        // The front frame has started (or is gone): it cannot be replaced any more.
        if self.pong.is_some_and(|p| p <= self.popped) {
            self.pong = None;
        }
    }

    /// Takes every queued frame, as a long-polling response body: the frames' Engine.IO packets
    /// separated by `\x1e` (a WebSocket close becomes the `1` close packet; pongs, which only a
    /// WebSocket has, are left out).
    pub(super) fn take_polled(&mut self) -> Option<Vec<u8>> {
        if self.frames.is_empty() {
            return None;
        }
        let mut body = Vec::with_capacity(self.bytes);
        self.popped += self.frames.len() as u64;
        for f in self.frames.drain(..) {
            let Some(packet) = frame::polled(f.remaining()) else {
                continue;
            };
            if !body.is_empty() {
                body.push(0x1e);
            }
            body.extend_from_slice(packet);
        }
        self.bytes = 0;
        self.pong = None;
        self.frames = VecDeque::new();
        Some(body)
    }
}
