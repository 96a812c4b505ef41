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
}

impl Schedule {
    /// An empty schedule for a heartbeat that ticks every `every` ms.
    pub(super) fn new(every: u64) -> Schedule {
        Schedule {
            every: every.max(1),
            slots: BTreeMap::new(),
        }
    }

    /// Files session `sid` for a visit at `deadline` (on the registry's clock).
    pub(super) fn at(&mut self, deadline: u64, sid: Sid) {
        self.slots
            .entry(deadline.div_ceil(self.every))
            .or_default()
            .push(sid);
    }

    /// Moves the sessions due at `now` into `due` (each once for each time it was filed).
    pub(super) fn due(&mut self, now: u64, due: &mut Vec<Sid>) {
        let tick = now / self.every;
        while let Some(entry) = self.slots.first_entry() {
            if *entry.key() > tick {
                break;
            }
            let sids = entry.remove();
            if due.is_empty() {
                *due = sids;
            } else {
                due.extend(sids);
            }
        }
    }

    /// Sessions filed, counting a session filed twice twice.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.slots.values().map(Vec::len).sum()
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
