//! Every session of the transport, and the heartbeat that pings them in turn.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::conn::Conn;
use super::machine::Machine;
use super::out::Out;
use super::{Settings, Sid};

mod held;
mod schedule;

pub(crate) use held::{Departure, Held};

/// Every session on this transport, and the heartbeat.
pub(crate) struct Conns {
    pub(super) map: Mutex<HashMap<Sid, Arc<Conn>>>,
    /// Sessions whose connection was lost, held for their clients to recover them, by their
    /// Socket.IO sid (see [`recovery`](super::recovery)).
    pub(super) held: Mutex<HashMap<Sid, Arc<Conn>>>,
    /// The connection now serving a recovered session, by the session's Socket.IO sid, where the
    /// two ids differ.
    pub(super) moved: Mutex<HashMap<Sid, Sid>>,
    pub(super) epoch: Instant,
    /// The transport's settings, one copy that every session shares.
    pub(super) settings: Arc<Settings>,
    /// When the heartbeat next visits each session.
    schedule: Mutex<schedule::Schedule>,
    /// Wakes a shutdown waiting for the sessions to be gone ([`Conns::wait_drained`]): told
    /// when the open sessions or the held ones run out.
    drained: Notify,
}

/// The heartbeat's tick: a quarter of the shorter of the ping interval and timeout, within
/// 20 ms and 1 s.
fn tick(s: &Settings) -> Duration {
    (s.ping_interval.min(s.ping_timeout) / 4)
        .clamp(Duration::from_millis(20), Duration::from_secs(1))
}

impl Conns {
    /// An empty registry.
    pub(crate) fn new(settings: Settings) -> Conns {
        Conns {
            map: Mutex::new(HashMap::new()),
            held: Mutex::new(HashMap::new()),
            moved: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            settings: Arc::new(settings),
            schedule: Mutex::new(schedule::Schedule::new(tick(&settings).as_millis() as u64)),
            drained: Notify::new(),
        }
    }

    /// Milliseconds on the registry's clock; never 0.
    pub(super) fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// A new session, registered.
    pub(super) fn open(
        &self,
        id: Sid,
        ip: Option<IpAddr>,
        counted: bool,
        tcp: Option<TcpStream>,
    ) -> Arc<Conn> {
        let now = self.now();
        let polling = tcp.is_none().then(Box::default);
        let timing = Conn::timing(&self.settings, counted);
        let life = Machine::new(now, &timing, polling.is_some());
        let first = life.next_deadline(&timing);
        let conn = Arc::new(Conn {
            id,
            tcp: tcp.map(OnceLock::from).unwrap_or_default(),
            out: Mutex::new(Out::new(life)),
            wake: Notify::new(),
            ip,
            counted,
            polling,
            settings: self.settings.clone(),
        });
        self.map.lock().insert(id, conn.clone());
        if let Some(first) = first {
            self.schedule.lock().at(first, id);
        }
        conn
    }

    /// The session `id`, if it is open.
    pub(super) fn get(&self, id: Sid) -> Option<Arc<Conn>> {
        self.map.lock().get(&id).cloned()
    }

    /// Forgets session `conn` (not another that took its id, which cannot happen with random
    /// ids, but the check costs nothing).
    pub(super) fn remove(&self, conn: &Arc<Conn>) {
        let mut map = self.map.lock();
        if map.get(&conn.id).is_some_and(|c| Arc::ptr_eq(c, conn)) {
            map.remove(&conn.id);
            if map.is_empty() {
                self.drained.notify_waiters();
            }
        }
    }

    /// Takes held session `sid` out of the held ones.
    pub(super) fn unhold(&self, sid: Sid) -> Option<Arc<Conn>> {
        let mut held = self.held.lock();
        let conn = held.remove(&sid);
        if conn.is_some() && held.is_empty() {
            self.drained.notify_waiters();
        }
        conn
    }

    /// Waits until `done` holds, looking again whenever the open or the held sessions run out,
    /// or until `until`; whether `done` held. For a shutdown waiting for its sessions to end:
    /// it learns of the last end at once, without a timer looking every few milliseconds.
    pub(crate) async fn wait_drained(
        &self,
        until: tokio::time::Instant,
        done: impl FnMut() -> bool,
    ) -> bool {
        super::wait_until(&self.drained, Some(until), done).await
    }

    /// Open sessions.
    pub(crate) fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Whether there is none.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every open session.
    pub(crate) fn all(&self) -> Vec<Arc<Conn>> {
        self.map.lock().values().cloned().collect()
    }

    /// How many sessions are on each transport now.
    pub(crate) fn transports(&self) -> Transports {
        let map = self.map.lock();
        let mut t = Transports::default();
        for c in map.values() {
            if c.tcp.get().is_some() {
                t.websocket += 1;
            } else {
                t.polling += 1;
            }
        }
        t
    }

    /// What the sessions' output queues hold now: bytes in all, and how many sessions are over
    /// their budget (not read from until their client reads).
    pub(crate) fn output(&self) -> Output {
        let map = self.map.lock();
        let mut o = Output::default();
        for c in map.values() {
            let bytes = c.queued_bytes();
            o.queued_bytes += bytes;
            o.paused += usize::from(bytes >= c.settings.buffer_bytes);
        }
        o
    }

    /// Pings the sessions whose ping is due and ends those that stopped answering, forever.
    ///
    /// Each tick visits only the sessions whose machine has a deadline by then (the
    /// [`schedule`]), and files each again at the deadline its machine answers: an idle session
    /// is visited about twice per ping interval (its ping, its pong's deadline) instead of at
    /// every tick. A visit before a deadline (a pong moved it later) decides nothing and files
    /// the session again.
    pub(crate) async fn heartbeat(self: Arc<Self>) {
        let mut tick = tokio::time::interval(tick(&self.settings));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The due sessions are taken from the map before any is visited, and filed again after
        // all were: a visit writes pings and may end a session, and neither may hold up the
        // handshakes and ends that need the map or the schedule meanwhile. The lists keep their
        // allocations from one tick to the next.
        let (mut sids, mut due, mut next) = (Vec::new(), Vec::new(), Vec::new());
        loop {
            tick.tick().await;
            let now = self.now();
            self.schedule.lock().due(now, &mut sids);
            if !sids.is_empty() {
                let map = self.map.lock();
                due.extend(sids.drain(..).filter_map(|id| map.get(&id).cloned()));
            }
            for c in due.drain(..) {
                if let Some(at) = c.beat(now) {
                    next.push((at, c.id));
                }
            }
            if !next.is_empty() {
                let mut schedule = self.schedule.lock();
                for (at, id) in next.drain(..) {
                    schedule.at(at, id);
                }
            }
            self.compact();
            self.expire(now);
        }
    }

    /// Sifts the sessions that ended out of the schedule once they are most of what it holds.
    ///
    /// A session that ends stays filed until its deadline (up to the connect timeout), so
    /// without this the schedule holds connections' rate times that time: megabytes under
    /// churn. Compacting when the filings exceed twice the open sessions plus
    /// [`COMPACT_SLACK`] keeps them within that, and costs each ended session O(1) amortised
    /// (a compaction follows at least as many ends as it visits filings). The map is consulted
    /// a tick's filings at a time, with the schedule's lock released: the two are never held
    /// together.
    fn compact(&self) {
        let filed = self.schedule.lock().len();
        if filed <= COMPACT_SLACK || filed <= 2 * self.len() + COMPACT_SLACK {
            return;
        }
        let mut taken = self.schedule.lock().take();
        taken.retain(|sids| {
            let map = self.map.lock();
            sids.retain(|id| map.contains_key(id));
        });
        self.schedule.lock().put_back(taken);
    }

    /// Filings in the schedule, a session filed twice counted twice.
    #[cfg(test)]
    fn filed(&self) -> usize {
        self.schedule.lock().len()
    }
}

/// Ended sessions the schedule may hold beyond twice the open ones before it is compacted.
const COMPACT_SLACK: usize = 1024;

/// How many sessions each transport serves (see [`Conns::transports`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Transports {
    /// Sessions on a WebSocket (direct, or upgraded from long-polling).
    pub websocket: usize,
    /// Sessions on long-polling.
    pub polling: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conns() -> Conns {
        Conns::new(Settings {
            ping_interval: Duration::from_secs(25),
            ping_timeout: Duration::from_secs(20),
            max_message_bytes: 65_536,
            buffer_packets: 1024,
            buffer_bytes: 262_144,
            recovery_grace: Duration::ZERO,
            recovery_bytes: 65_536,
        })
    }

    /// Under churn, what the heartbeat's schedule holds follows the open sessions, not the
    /// ones opened since the oldest deadline.
    #[test]
    fn ended_sessions_are_sifted_out_of_the_schedule() {
        let c = conns();
        let mut open = Vec::new();
        for round in 0..20 {
            let batch: Vec<Arc<Conn>> = (0..500)
                .map(|_| c.open(Sid::new(), None, true, None))
                .collect();
            // All but every tenth session of the round end (their filings stay).
            for (i, conn) in batch.into_iter().enumerate() {
                if i % 10 == 0 {
                    open.push(conn);
                } else {
                    c.remove(&conn);
                }
            }
            c.compact();
            let live = c.len();
            assert_eq!(live, 50 * (round + 1));
            assert!(
                c.filed() <= 2 * live + COMPACT_SLACK,
                "round {round}: {} filings for {live} open sessions",
                c.filed()
            );
        }
        let live = c.len();
        // Force a last compaction's view: every open session is still filed, exactly once.
        let mut taken = c.schedule.lock().take();
        let mut kept = 0;
        taken.retain(|sids| {
            let map = c.map.lock();
            sids.retain(|id| map.contains_key(id));
            kept += sids.len();
        });
        assert_eq!(kept, live, "no open session lost its filing");
        for conn in &open {
            assert!(c.get(conn.id).is_some());
        }
    }
}

/// The output queues' figures (see [`Conns::output`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    /// Bytes queued for clients, all sessions together.
    pub queued_bytes: usize,
    /// Sessions whose queue is over its budget.
    pub paused: usize,
}
