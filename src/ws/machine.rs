//! An Engine.IO session's life, apart from any I/O: when it opened, whether its client joined
//! `/`, the heartbeat (the next ping, the ping waiting for its pong), how long its output has been
//! over budget, and how it ended. The transport drives it with what happened (a pong, a join, a
//! heartbeat's visit with the time and whether the queue is over budget) and does what it answers
//! (send a ping, end the session); the time is always passed in, on the registry's clock
//! (milliseconds, never 0), so every transition is tested here without a socket or a sleep.
//!
//! It lives inside the connection's one lock, beside the output queue: the end that `push`
//! checks and the heartbeat's state change under the same lock.

use super::{End, Lost};

/// The heartbeat's timings, in ms.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    /// Engine.IO `pingInterval`: a ping this long after the last pong.
    pub(super) ping_interval: u64,
    /// Engine.IO `pingTimeout`: how long a ping waits for its pong, and how long the output may
    /// stay over its budget.
    pub(super) ping_timeout: u64,
    /// How long the client may take to join `/`.
    pub(super) connect_timeout: u64,
}

/// What the heartbeat's visit asks the transport to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Beat {
    /// Nothing now.
    Idle,
    /// Send a ping.
    Ping,
    /// End the session for this reason.
    End(End),
}

/// The session's life (see the module's text). Times are on the registry's clock, where 0 never
/// occurs and stands for "none".
#[derive(Debug, Clone)]
pub(super) struct Machine {
    opened: u64,
    /// When the next ping is due.
    next_ping: u64,
    /// When the ping that waits for its pong was due (0: none waits).
    ping_out: u64,
    /// Since when the output has been over its budget (0: it is not).
    over_since: u64,
    /// Pongs received (wrapping): a probe watches it change.
    pongs: u32,
    joined: bool,
    end: Option<End>,
    side: Side,
}

/// Which transport carries the session, and what its long-polling side is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    /// A WebSocket from the handshake on.
    WebSocket,
    /// Long-polling.
    Polling {
        /// A poll waits.
        get: bool,
        /// A post is being handled.
        post: bool,
        /// The waiting poll is to be released with a noop (the upgrade's probe came).
        noop: bool,
        /// A WebSocket is upgrading the session.
        upgrading: bool,
    },
    /// Moved from long-polling to its WebSocket.
    Upgraded,
}

/// Why a request of a long-polling session cannot go on: the protocol ends the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The session is not (or no longer) on long-polling.
    NotPolling,
    /// A second poll while one waits, or a second post while one is handled.
    Duplicate(End),
}

impl Machine {
    /// A session opened at `now` (on long-polling when `polling`, else on a WebSocket): its
    /// first ping is due a ping interval later.
    pub(super) fn new(now: u64, t: &Timing, polling: bool) -> Machine {
        Machine {
            opened: now,
            next_ping: now + t.ping_interval,
            ping_out: 0,
            over_since: 0,
            pongs: 0,
            joined: false,
            end: None,
            side: if polling {
                Side::Polling {
                    get: false,
                    post: false,
                    noop: false,
                    upgrading: false,
                }
            } else {
                Side::WebSocket
            },
        }
    }

    /// The transport side of the session.
    #[cfg(test)]
    pub(super) fn side(&self) -> Side {
        self.side
    }

    /// A poll comes: it waits, unless one waits already (the protocol then ends the session).
    pub(super) fn begin_poll(&mut self) -> Result<(), Refusal> {
        match &mut self.side {
            Side::Polling { get: true, .. } => {
                Err(Refusal::Duplicate(End::Lost(Lost::DuplicatePoll)))
            }
            Side::Polling { get, .. } => {
                *get = true;
                Ok(())
            }
            _ => Err(Refusal::NotPolling),
        }
    }

    /// The poll ended, however it ended (answered, or dropped with its request).
    pub(super) fn end_poll(&mut self) {
        if let Side::Polling { get, .. } = &mut self.side {
            *get = false;
        }
    }

    /// A post comes: it is handled, unless one is already (the protocol then ends the session).
    pub(super) fn begin_post(&mut self) -> Result<(), Refusal> {
        match &mut self.side {
            Side::Polling { post: true, .. } => {
                Err(Refusal::Duplicate(End::Lost(Lost::DuplicatePost)))
            }
            Side::Polling { post, .. } => {
                *post = true;
                Ok(())
            }
            _ => Err(Refusal::NotPolling),
        }
    }

    /// The post ended, however it ended.
    pub(super) fn end_post(&mut self) {
        if let Side::Polling { post, .. } = &mut self.side {
            *post = false;
        }
    }

    /// Whether a post is being handled (its packets must all act on the polling side before the
    /// session moves to its WebSocket).
    pub(super) fn post_in_flight(&self) -> bool {
        matches!(self.side, Side::Polling { post: true, .. })
    }

    /// Whether a WebSocket is upgrading the session.
    pub(super) fn upgrading(&self) -> bool {
        matches!(
            self.side,
            Side::Polling {
                upgrading: true,
                ..
            }
        )
    }

    /// A WebSocket asks to upgrade the session: true when it may (a live long-polling session
    /// that no other WebSocket is upgrading).
    pub(super) fn begin_upgrade(&mut self) -> bool {
        if self.end.is_some() {
            return false;
        }
        match &mut self.side {
            Side::Polling { upgrading, .. } if !*upgrading => {
                *upgrading = true;
                true
            }
            _ => false,
        }
    }

    /// The upgrading WebSocket went away before completing: the session stays on long-polling.
    pub(super) fn abandon_upgrade(&mut self) {
        if let Side::Polling { upgrading, .. } = &mut self.side {
            *upgrading = false;
        }
    }

    /// The upgrade's probe came: the waiting poll is to be released with a noop.
    pub(super) fn release_poll(&mut self) {
        if let Side::Polling { noop, .. } = &mut self.side {
            *noop = true;
        }
    }

    /// Whether the waiting poll is to be released with a noop now (the probe came, or the
    /// session moved to its WebSocket); a probe's noop is taken once.
    pub(super) fn take_noop(&mut self) -> bool {
        match &mut self.side {
            Side::Polling { noop, .. } => std::mem::take(noop),
            Side::Upgraded => true,
            Side::WebSocket => false,
        }
    }

    /// The session moved to its WebSocket: its queue is written there from now on. False (and
    /// nothing changes) for a session that is not being upgraded or has ended.
    pub(super) fn upgraded(&mut self) -> bool {
        if self.end.is_some() || !self.upgrading() {
            return false;
        }
        self.side = Side::Upgraded;
        true
    }

    /// The client answered a ping at `now`: the next one is due a ping interval from now.
    pub(super) fn handle_pong(&mut self, now: u64, t: &Timing) {
        self.next_ping = now + t.ping_interval;
        self.ping_out = 0;
        self.pongs = self.pongs.wrapping_add(1);
    }

    /// The client joined `/`: the connect timeout no longer applies.
    pub(super) fn handle_joined(&mut self) {
        self.joined = true;
    }

    /// Pongs received so far (wrapping).
    pub(super) fn pongs(&self) -> u32 {
        self.pongs
    }

    /// A probe (is the client still there?): a ping now, unless one waits already; marked as
    /// due at the next scheduled ping, so that the heartbeat neither sends another nor judges
    /// this one early. True when the ping is to be sent.
    pub(super) fn begin_probe(&mut self) -> bool {
        if self.ping_out != 0 {
            return false;
        }
        self.ping_out = self.next_ping;
        true
    }

    /// Whether the client has missed the deadline of its ping, judged from when the ping was
    /// due (not when a heartbeat's tick sent it), so that a session that stopped answering is
    /// gone `pingInterval + pingTimeout` after its last pong, as in Node's engine.io.
    pub(super) fn overdue(&self, now: u64, t: &Timing) -> bool {
        let due = if self.ping_out != 0 {
            self.ping_out
        } else {
            self.next_ping
        };
        now > due && now - due > t.ping_timeout
    }

    /// The heartbeat's visit at `now`, `over` telling whether the output is over its budget:
    /// the end of a session whose output stayed over budget longer than the ping timeout, that
    /// missed its ping's deadline, or that never joined `/` in time; otherwise a ping when one
    /// is due.
    pub(super) fn on_beat(&mut self, now: u64, over: bool, t: &Timing) -> Beat {
        if self.end.is_some() {
            return Beat::Idle;
        }
        if !over {
            self.over_since = 0;
        } else if self.over_since == 0 {
            self.over_since = now;
        } else if now.saturating_sub(self.over_since) > t.ping_timeout {
            return Beat::End(End::Lost(Lost::OverBudget));
        }
        if self.overdue(now, t) {
            return Beat::End(End::Lost(Lost::PingTimeout));
        }
        if !self.joined && now.saturating_sub(self.opened) > t.connect_timeout {
            return Beat::End(End::Lost(Lost::ConnectTimeout));
        }
        if self.ping_out == 0 && now >= self.next_ping {
            self.ping_out = self.next_ping;
            return Beat::Ping;
        }
        Beat::Idle
    }

    /// When the heartbeat next has something to decide for this session (a ping due, a ping's
    /// deadline, the connect timeout, the over-budget grace); `None` once it ended. The
    /// heartbeat visits a session at this time and no earlier (`Conns::heartbeat`), and the
    /// property test holds the machine to it: before it, a visit decides nothing.
    pub(super) fn next_deadline(&self, t: &Timing) -> Option<u64> {
        if self.end.is_some() {
            return None;
        }
        let ping = if self.ping_out != 0 {
            self.ping_out + t.ping_timeout + 1
        } else {
            self.next_ping
        };
        let connect = (!self.joined).then_some(self.opened + t.connect_timeout + 1);
        let over = (self.over_since != 0).then_some(self.over_since + t.ping_timeout + 1);
        [Some(ping), connect, over].into_iter().flatten().min()
    }

    /// Ends the session for `why`: true the first time, false when it had ended already (the
    /// first reason stays).
    pub(super) fn end(&mut self, why: End) -> bool {
        if self.end.is_some() {
            return false;
        }
        self.end = Some(why);
        true
    }

    /// How it ended, once it has.
    pub(super) fn ended(&self) -> Option<End> {
        self.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: Timing = Timing {
        ping_interval: 25_000,
        ping_timeout: 20_000,
        connect_timeout: 45_000,
    };

    /// A session that joined at once, opened at 1.
    fn polling() -> Machine {
        Machine::new(1, &T, true)
    }

    #[test]
    fn one_poll_and_one_post_at_a_time_and_a_second_ends_the_session() {
        let mut m = polling();
        assert_eq!(m.begin_poll(), Ok(()));
        assert_eq!(
            m.begin_poll(),
            Err(Refusal::Duplicate(End::Lost(Lost::DuplicatePoll)))
        );
        m.end_poll();
        assert_eq!(
            m.begin_poll(),
            Ok(()),
            "a poll that ended, however, frees its place"
        );
        assert!(!m.post_in_flight());
        assert_eq!(m.begin_post(), Ok(()));
        assert!(m.post_in_flight());
        assert_eq!(
            m.begin_post(),
            Err(Refusal::Duplicate(End::Lost(Lost::DuplicatePost)))
        );
        m.end_post();
        assert!(!m.post_in_flight());
        // A WebSocket session has no polls.
        let mut w = Machine::new(1, &T, false);
        assert_eq!(w.begin_poll(), Err(Refusal::NotPolling));
        assert_eq!(w.begin_post(), Err(Refusal::NotPolling));
        assert!(!w.begin_upgrade());
    }

    #[test]
    fn an_upgrade_is_one_websocket_at_a_time_its_probe_releases_the_poll_once() {
        let mut m = polling();
        assert!(!m.take_noop());
        assert!(!m.upgraded(), "nothing upgrades a session nobody asked to");
        assert!(m.begin_upgrade());
        assert!(m.upgrading());
        assert!(!m.begin_upgrade(), "a second WebSocket is refused");
        m.abandon_upgrade();
        assert!(!m.upgrading());
        assert!(
            m.begin_upgrade(),
            "after an abandoned upgrade, another may try"
        );
        m.release_poll();
        assert!(m.take_noop());
        assert!(!m.take_noop(), "the probe's noop is taken once");
        assert!(m.upgraded());
        assert_eq!(m.side(), Side::Upgraded);
        assert!(
            m.take_noop(),
            "every poll of an upgraded session is released"
        );
        assert_eq!(m.begin_poll(), Err(Refusal::NotPolling));
        assert!(!m.begin_upgrade());
    }

    #[test]
    fn an_ended_session_is_not_upgraded() {
        let mut m = polling();
        assert!(m.begin_upgrade());
        m.end(End::Lost(Lost::TransportClose));
        assert!(!m.upgraded());
        assert!(!m.begin_upgrade());
    }

    fn joined() -> Machine {
        let mut m = Machine::new(1, &T, false);
        m.handle_joined();
        m
    }

    #[test]
    fn a_ping_is_due_an_interval_after_the_open_and_after_each_pong() {
        let mut m = joined();
        assert_eq!(m.next_deadline(&T), Some(25_001));
        assert_eq!(m.on_beat(25_000, false, &T), Beat::Idle);
        assert_eq!(m.on_beat(25_001, false, &T), Beat::Ping);
        // One ping at a time.
        assert_eq!(m.on_beat(25_500, false, &T), Beat::Idle);
        m.handle_pong(26_000, &T);
        assert_eq!(m.pongs(), 1);
        assert_eq!(m.next_deadline(&T), Some(51_000));
        assert_eq!(m.on_beat(50_999, false, &T), Beat::Idle);
        assert_eq!(m.on_beat(51_000, false, &T), Beat::Ping);
    }

    #[test]
    fn a_missed_pong_ends_the_session_a_timeout_after_the_ping_was_due() {
        let mut m = joined();
        // The heartbeat's tick came late: the deadline still counts from when the ping was due.
        assert_eq!(m.on_beat(26_000, false, &T), Beat::Ping);
        assert_eq!(m.next_deadline(&T), Some(45_002));
        assert_eq!(m.on_beat(45_001, false, &T), Beat::Idle);
        assert_eq!(
            m.on_beat(45_002, false, &T),
            Beat::End(End::Lost(Lost::PingTimeout))
        );
    }

    #[test]
    fn a_session_that_never_joins_ends_at_the_connect_timeout() {
        let mut m = Machine::new(1, &T, false);
        assert_eq!(m.on_beat(25_001, false, &T), Beat::Ping);
        m.handle_pong(25_100, &T);
        assert_eq!(m.next_deadline(&T), Some(45_002));
        assert_eq!(m.on_beat(45_001, false, &T), Beat::Idle);
        assert_eq!(
            m.on_beat(45_002, false, &T),
            Beat::End(End::Lost(Lost::ConnectTimeout))
        );
    }

    #[test]
    fn output_over_budget_for_longer_than_the_timeout_ends_the_session() {
        let mut m = joined();
        assert_eq!(m.on_beat(1_000, true, &T), Beat::Idle);
        assert_eq!(m.next_deadline(&T), Some(21_001));
        // Back under budget: the grace starts again next time.
        assert_eq!(m.on_beat(15_000, false, &T), Beat::Idle);
        assert_eq!(m.on_beat(16_000, true, &T), Beat::Idle);
        // Still within the grace: the ping that is due goes out.
        assert_eq!(m.on_beat(36_000, true, &T), Beat::Ping);
        assert_eq!(
            m.on_beat(36_001, true, &T),
            Beat::End(End::Lost(Lost::OverBudget))
        );
    }

    #[test]
    fn a_probe_pings_once_and_is_judged_from_the_next_scheduled_ping() {
        let mut m = joined();
        assert!(m.begin_probe());
        assert!(!m.begin_probe(), "one ping out at a time");
        // The heartbeat sends no second ping for it.
        assert_eq!(m.on_beat(25_001, false, &T), Beat::Idle);
        assert!(!m.overdue(45_001, &T));
        assert!(m.overdue(45_002, &T));
        m.handle_pong(30_000, &T);
        assert!(m.begin_probe());
    }

    #[test]
    fn the_first_end_stays_and_an_ended_session_asks_for_nothing() {
        let mut m = joined();
        assert!(m.end(End::SentAway));
        assert!(!m.end(End::Lost(Lost::TransportClose)));
        assert_eq!(m.ended(), Some(End::SentAway));
        assert_eq!(m.on_beat(100_000, true, &T), Beat::Idle);
        assert_eq!(m.next_deadline(&T), None);
    }

    proptest! {
        /// Whatever happens, the heartbeat never asks for anything before the machine's own next
        /// deadline (so a driver that sleeps until then misses nothing), at most one ping waits,
        /// and a session that answers every ping within the timeout and joined is never ended.
        #[test]
        fn the_next_deadline_is_when_something_can_happen(
            steps in prop::collection::vec((1u64..30_000, 0u8..4), 1..60),
        ) {
            let mut m = Machine::new(1, &T, false);
            let mut now = 1;
            let mut out = false;
            for (dt, what) in steps {
                let deadline = m.next_deadline(&T);
                now += dt;
                if deadline.is_some_and(|d| now < d) {
                    let mut probe = m.clone();
                    prop_assert_eq!(probe.on_beat(now, false, &T), Beat::Idle);
                }
                match what {
                    0 => m.handle_joined(),
                    1 if out => { m.handle_pong(now, &T); out = false; }
                    _ => {}
                }
                match m.on_beat(now, false, &T) {
                    Beat::Ping => { prop_assert!(!out); out = true; }
                    Beat::End(_) => { prop_assert!(m.end(End::Lost(Lost::PingTimeout))); break; }
                    Beat::Idle => {}
                }
            }
        }
    }
}
