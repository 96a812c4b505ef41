//! A session's heartbeat, as its connection drives it: the timings, pongs, a join, probes and
//! the heartbeat's visits, each handed to the session's [`Machine`](super::super::machine) under
//! the connection's lock, and what it answers done.

use std::sync::Arc;
use std::time::Duration;

use super::super::frame::OutFrame;
use super::super::machine::{Beat, Timing};
use super::super::{End, Lost, Settings, packet};
use super::{CONNECT_TIMEOUT, Conn};

impl Conn {
    /// The heartbeat's timings for a session (one that holds no place of its address gets the
    /// ping timeout, not the Socket.IO connect timeout, to ask for `/` and be refused).
    pub(in crate::ws) fn timing(settings: &Settings, counted: bool) -> Timing {
        let ping_timeout = settings.ping_timeout.as_millis() as u64;
        Timing {
            ping_interval: settings.ping_interval.as_millis() as u64,
            ping_timeout,
            connect_timeout: if counted {
                CONNECT_TIMEOUT.as_millis() as u64
            } else {
                ping_timeout
            },
        }
    }

    /// Whether the client has missed the deadline of its ping (see [`Machine::overdue`]).
    pub(in crate::ws) fn overdue(&self, now: u64) -> bool {
        let t = Self::timing(&self.settings, self.counted);
        self.out.lock().life.overdue(now, &t)
    }

    /// A pong arrived.
    pub(in crate::ws) fn ponged(&self, now: u64) {
        let t = Self::timing(&self.settings, self.counted);
        let mut out = self.out.lock();
        out.life.handle_pong(now, &t);
        if let Some(r) = out.recovery.as_mut() {
            r.ponged();
        }
        out.wake_probes();
    }

    /// The client joined `/`.
    pub(in crate::ws) fn joined(&self) {
        self.out.lock().life.handle_joined();
    }

    /// Whether the client still answers: a ping now (unless one is out already) and its pong
    /// within `within`.
    pub(in crate::ws) async fn probe(self: &Arc<Self>, within: Duration) -> bool {
        let (before, ping, probed) = {
            let mut out = self.out.lock();
            let ping = out.life.begin_probe();
            if let (true, Some(r)) = (ping, out.recovery.as_mut()) {
                r.ping_sent();
            }
            let probed = out.probed.get_or_insert_with(Default::default).clone();
            (out.life.pongs(), ping, probed)
        };
        if ping {
            self.push_control(OutFrame::text(packet::PING)).ok();
        }
        let answered = || self.out.lock().life.pongs() != before;
        let deadline = tokio::time::Instant::now() + within;
        // Woken by the pong or the end (`Out::wake_probes`).
        super::super::wait_until(&probed, Some(deadline), || {
            answered() || self.ended().is_some()
        })
        .await;
        answered()
    }

    /// The heartbeat's visit: what the session's [`Machine`] decides at `now`, done; and when
    /// the machine next has something to decide (`None` once the session ended).
    pub(in crate::ws) fn beat(self: &Arc<Self>, now: u64) -> Option<u64> {
        let t = Self::timing(&self.settings, self.counted);
        let (beat, next) = {
            let mut out = self.out.lock();
            let over = out.bytes >= self.settings.buffer_bytes;
            let beat = out.life.on_beat(now, over, &t);
            if let (Beat::Ping, Some(r)) = (beat, out.recovery.as_mut()) {
                r.ping_sent();
            }
            (beat, out.life.next_deadline(&t))
        };
        match beat {
            Beat::Idle => {}
            Beat::Ping => {
                self.push_control(OutFrame::text(packet::PING)).ok();
            }
            Beat::End(why) => {
                if why == End::Lost(Lost::OverBudget) {
                    tracing::info!(sid = %self.id, "closing a connection whose output stayed over its budget");
                    // The facade, not the server's metrics module: that one reads the whole
                    // node, which sits above the transport.
                    metrics::counter!("roulette_connections_closed_backpressure_total")
                        .increment(1);
                }
                self.end(why);
                return None;
            }
        }
        next
    }
}
