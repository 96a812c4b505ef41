//! The heartbeat's schedule: each session filed under the tick at which its machine next has
//! something to decide ([`Machine::next_deadline`](super::super::machine::Machine)), so that a
//! tick visits the sessions that are due and no other. Sans-IO: the time is passed in.

use std::collections::BTreeMap;

use super::super::Sid;

/// Sessions by the tick of their next deadline.
#[derive(Debug)]
pub(super) struct Schedule {
    /// The heartbeat's tick, in ms: a deadline is kept as the first tick at or after it.
    every: u64,
    slots: BTreeMap<u64, Vec<Sid>>,
    /// Filings held, a session filed twice counted twice: what tells when to compact.
    filed: usize,
}

/// Filings taken out of a [`Schedule`] to be sifted without its lock (see [`Schedule::take`]).
#[derive(Debug, Default)]
pub(super) struct Taken(BTreeMap<u64, Vec<Sid>>);

impl Taken {
    /// Keeps the filings of the sessions `live` answers for, tick by tick; `live` is called
    /// with each tick's sessions so that a caller can look them up under one lock per tick.
    pub(super) fn retain(&mut self, mut live: impl FnMut(&mut Vec<Sid>)) {
        self.0.retain(|_, sids| {
            live(sids);
            sids.shrink_to_fit();
            !sids.is_empty()
        });
    }
}

impl Schedule {
    /// An empty schedule for a heartbeat that ticks every `every` ms.
    pub(super) fn new(every: u64) -> Schedule {
        Schedule {
            every: every.max(1),
            slots: BTreeMap::new(),
            filed: 0,
        }
    }

    /// Files session `sid` for a visit at `deadline` (on the registry's clock).
    pub(super) fn at(&mut self, deadline: u64, sid: Sid) {
        self.slots
            .entry(deadline.div_ceil(self.every))
            .or_default()
            .push(sid);
        self.filed += 1;
    }

    /// Moves the sessions due at `now` into `due` (each once for each time it was filed).
    pub(super) fn due(&mut self, now: u64, due: &mut Vec<Sid>) {
        let tick = now / self.every;
        while let Some(entry) = self.slots.first_entry() {
            if *entry.key() > tick {
                break;
            }
            let sids = entry.remove();
            self.filed -= sids.len();
            if due.is_empty() {
                *due = sids;
            } else {
                due.extend(sids);
            }
        }
    }

    /// Sessions filed, counting a session filed twice twice.
    pub(super) fn len(&self) -> usize {
        self.filed
    }

    /// Takes every filing out, so that the sessions that ended since they were filed can be
    /// sifted out against the registry's map without holding the schedule's lock meanwhile
    /// (the two locks are never held together). [`put_back`](Self::put_back) files the rest
    /// again beside whatever was filed in between.
    pub(super) fn take(&mut self) -> Taken {
        self.filed = 0;
        Taken(std::mem::take(&mut self.slots))
    }

    /// Files again what [`take`](Self::take) took out and was sifted.
    pub(super) fn put_back(&mut self, taken: Taken) {
        for (tick, mut sids) in taken.0 {
            self.filed += sids.len();
            let slot = self.slots.entry(tick).or_default();
            if slot.is_empty() {
                *slot = sids;
            } else {
                slot.append(&mut sids);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_session_comes_due_at_the_first_tick_at_or_after_its_deadline() {
        let mut s = Schedule::new(100);
        let (a, b) = (Sid::new(), Sid::new());
        s.at(250, a);
        s.at(300, b);
        let mut due = Vec::new();
        s.due(299, &mut due);
        assert!(due.is_empty(), "nothing is due before its deadline's tick");
        s.due(300, &mut due);
        assert_eq!(due, vec![a, b], "both fall in the tick at 300");
        due.clear();
        s.due(10_000, &mut due);
        assert!(due.is_empty(), "each filing is visited once");
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn filings_sifted_out_of_the_lock_come_back_beside_those_filed_meanwhile() {
        let mut s = Schedule::new(100);
        let sids: Vec<Sid> = (0..10).map(|_| Sid::new()).collect();
        for (i, id) in sids.iter().enumerate() {
            s.at(100 * i as u64 + 1, *id);
        }
        let mut taken = s.take();
        assert_eq!(s.len(), 0);
        let late = Sid::new();
        s.at(101, late);
        let ended = &sids[..7];
        taken.retain(|tick| tick.retain(|id| !ended.contains(id)));
        s.put_back(taken);
        assert_eq!(s.len(), 4, "three kept and the one filed meanwhile");
        let mut due = Vec::new();
        s.due(200, &mut due);
        assert_eq!(due, vec![late], "the ended session of that tick is gone");
        due.clear();
        s.due(10_000, &mut due);
        assert_eq!(due, sids[7..].to_vec(), "the rest at their own ticks");
        assert_eq!(s.len(), 0);
    }

    use super::super::super::machine::{Beat, Machine, Timing};
    use super::super::super::{End, Lost};

    /// The official protocol suite's server settings (`pingInterval` 300, `pingTimeout` 200),
    /// and the heartbeat's tick for them (a quarter of the shorter, as `Conns` takes it).
    const SUITE: Timing = Timing {
        ping_interval: 300,
        ping_timeout: 200,
        connect_timeout: 45_000,
    };
    const TICK: u64 = 50;

    /// What the heartbeat did to one session, driven as `Conns::heartbeat` drives it (the
    /// schedule, a visit at each due tick, the session filed again at its machine's next
    /// deadline) until `until`; the client answers each ping `rtt` ms later, until `silent_from`.
    fn drive(
        joined: bool,
        rtt: u64,
        silent_from: u64,
        until: u64,
    ) -> (Vec<u64>, Option<(u64, End)>, usize) {
        let mut m = Machine::new(1, &SUITE, false);
        if joined {
            m.handle_joined();
        }
        let sid = Sid::new();
        let mut s = Schedule::new(TICK);
        s.at(m.next_deadline(&SUITE).expect("a live session"), sid);
        let (mut pings, mut pong_at, mut visits) = (Vec::new(), None, 0);
        let mut due = Vec::new();
        let mut now = 0;
        while now < until {
            now += TICK;
            if let Some(at) = pong_at.filter(|at| *at <= now) {
                m.handle_pong(at, &SUITE);
                pong_at = None;
            }
            s.due(now, &mut due);
            for _ in due.drain(..) {
                visits += 1;
                match m.on_beat(now, false, &SUITE) {
                    Beat::Idle => {}
                    Beat::Ping => {
                        pings.push(now);
                        if now < silent_from {
                            pong_at = Some(now + rtt);
                        }
                    }
                    Beat::End(why) => {
                        m.end(why);
                        return (pings, Some((now, why)), visits);
                    }
                }
                if let Some(next) = m.next_deadline(&SUITE) {
                    s.at(next, sid);
                }
            }
        }
        (pings, None, visits)
    }

    /// `polling_heartbeat_pings_after_the_interval_and_closes_after_the_timeout` and
    /// `websocket_heartbeat_and_timeout` of `tests/protocol.rs`, without a socket or a sleep: the
    /// first ping a ping interval after the open, the next an interval after each pong.
    #[test]
    fn a_client_that_answers_is_pinged_every_interval_and_never_ended() {
        let (pings, end, visits) = drive(true, 20, u64::MAX, 3_000);
        assert_eq!(end, None);
        assert_eq!(pings.first(), Some(&350), "the first tick at or after 301");
        for w in pings.windows(2) {
            let gap = w[1] - w[0];
            assert!(
                (320..=320 + TICK).contains(&gap),
                "pings {gap} ms apart: {pings:?}"
            );
        }
        // Visited at its deadlines (a ping, then a pong's deadline that the pong moved), not at
        // each of the 60 ticks.
        assert!(
            visits <= 2 * pings.len() + 1,
            "{visits} visits for {} pings",
            pings.len()
        );
    }

    #[test]
    fn a_client_that_stops_answering_ends_a_timeout_after_its_ping_was_due() {
        let (pings, end, _) = drive(true, 20, 1_000, 5_000);
        let last = *pings.last().expect("pinged");
        let (at, why) = end.expect("ended");
        assert_eq!(why, End::Lost(Lost::PingTimeout));
        // Judged from when the ping was due: `pingInterval + pingTimeout` after the last pong,
        // to within a tick.
        assert!(
            at > last + 200 - TICK && at <= last + 200 + TICK,
            "ended at {at}, last ping {last}"
        );
    }

    /// `a_connection_that_never_joins_is_closed`: a client that answers pings but never joins `/`
    /// is ended at the connect timeout.
    #[test]
    fn a_session_that_never_joins_ends_at_its_connect_timeout_however_it_answers() {
        let (_, end, visits) = drive(false, 20, u64::MAX, 60_000);
        let (at, why) = end.expect("ended");
        assert_eq!(why, End::Lost(Lost::ConnectTimeout));
        assert!((45_001..=45_001 + TICK).contains(&at), "ended at {at}");
        assert!(visits < (45_000 / TICK / 2) as usize, "{visits} visits");
    }

    proptest! {
        /// Whatever the deadlines and the times of the ticks, every filed session is handed out
        /// exactly once, and never before its deadline.
        #[test]
        fn every_session_is_visited_once_and_never_early(
            every in 1u64..2_000,
            deadlines in proptest::collection::vec(1u64..100_000, 0..60),
            steps in proptest::collection::vec(1u64..3_000, 1..80),
        ) {
            let mut s = Schedule::new(every);
            let sids: Vec<Sid> = deadlines.iter().map(|_| Sid::new()).collect();
            for (d, id) in deadlines.iter().zip(&sids) {
                s.at(*d, *id);
            }
            let mut now = 0;
            let mut seen: Vec<(Sid, u64)> = Vec::new();
            let mut due = Vec::new();
            for step in steps.iter().chain(std::iter::once(&200_000)) {
                now += step;
                s.due(now, &mut due);
                seen.extend(due.drain(..).map(|id| (id, now)));
            }
            prop_assert_eq!(seen.len(), sids.len());
            prop_assert_eq!(s.len(), 0);
            for (id, at) in seen {
                let i = sids.iter().position(|x| *x == id).expect("a filed session");
                prop_assert!(at >= deadlines[i], "visited at {} for {}", at, deadlines[i]);
            }
        }
    }
}
