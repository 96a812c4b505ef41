//! The node's side of moderation: bans and reports kept behind their own lock (never the core's),
//! persisted through the store without waiting for it, and applied to the connections they
//! concern at once.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use super::records::{live_records, take_back};
use super::{Hub, Link, Sock, send};
use crate::bus::Act;
use crate::moderation::{AutoBan, Ban, Moderation, Refused, Report, Seen, Target};
use crate::protocol::outgoing::{Removed, now_ms};
use crate::store::{self, Record, Writer};

/// What moderation needs of the settings (built by [`crate::config`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    /// The auto-ban.
    pub auto: AutoBan,
    /// Where bans and reports are kept across restarts (`DATA_DIR`); `None` keeps them in memory.
    pub data_dir: Option<PathBuf>,
}

/// Moderation's state and where its changes are written.
pub(crate) struct Moderator {
    state: parking_lot::Mutex<Moderation>,
    store: Option<Writer>,
}

/// How long an operator's ban waits for its record to reach the disk before it is refused.
const DURABLE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

impl Moderator {
    /// Bans and reports as the store left them. A data file that cannot be read or written
    /// does not stop the node: it is a warning, and the node serves from memory (see
    /// [`crate::store`]). `Err` only when the store's thread cannot start.
    pub(crate) fn open(settings: &Settings) -> Result<Moderator, String> {
        let mut m = Moderation::new(settings.auto);
        let Some(dir) = &settings.data_dir else {
            return Ok(Moderator {
                state: parking_lot::Mutex::new(m),
                store: None,
            });
        };
        let path = store::file_in(dir);
        let now = now_ms();
        let records = store::load(&path).unwrap_or_else(|e| {
            tracing::warn!("{e}: starting without the moderation records it holds");
            Vec::new()
        });
        let in_file = records.len();
        take_back(&mut m, records, now, &path);
        // What is still live is written back alone: the file does not grow across restarts.
        let live = live_records(&m, now);
        let kept = (m.active_bans(now), m.reports(usize::MAX, None).len());
        let writer = store::start(path.clone(), live, in_file)?;
        tracing::info!(file = %path.display(), bans = kept.0, reports = kept.1, "moderation records loaded");
        Ok(Moderator {
            state: parking_lot::Mutex::new(m),
            store: Some(writer),
        })
    }

    /// Queues `r` for the file without waiting (a full queue drops it, counted), and compacts
    /// the file when it holds too many lines for what is live.
    fn persist(&self, r: Record) {
        let Some(w) = &self.store else {
            return;
        };
        if !w.write(r) {
            crate::metrics::moderation_record_dropped();
        }
        let live = self.state.lock().live_records();
        if w.wants_compaction(live) {
            w.compact(live_records(&self.state.lock(), now_ms()));
        }
    }

    /// Writes `r` and waits (within [`DURABLE_WAIT`]) for the disk to have it: false when it
    /// could not be written (counted). True at once without a file (memory or Redis).
    async fn persist_durably(&self, r: Record) -> bool {
        let Some(w) = &self.store else {
            return true;
        };
        let Some(done) = w.write_confirmed(r) else {
            crate::metrics::moderation_record_dropped();
            return false;
        };
        // A failed write was counted by the writer; a timeout is counted here.
        match tokio::time::timeout(DURABLE_WAIT, done).await {
            Ok(Ok(ok)) => ok,
            _ => {
                crate::metrics::moderation_record_dropped();
                false
            }
        }
    }

    /// `file`, `failing` (a data directory that cannot be written: serving from memory), or
    /// `None` without a data file.
    pub(crate) fn store_state(&self) -> Option<&'static str> {
        let w = self.store.as_ref()?;
        Some(if w.healthy() { "file" } else { "failing" })
    }
}

/// What became of a kick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kick {
    /// The user was connected here, and is gone.
    Done,
    /// Not here: every node of the cluster was asked.
    Forwarded,
    /// Not connected (a single node).
    NotConnected,
}

/// Most `GET /admin/users` questions a node waits on at once in a cluster.
const MAX_ASKS: usize = 1000;
/// How long a node waits for the node that holds a user to answer.
const ASK_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// The questions this node asked the cluster and waits on, by number.
#[derive(Default)]
pub(crate) struct Asks {
    next: std::sync::atomic::AtomicU64,
    waiting:
        parking_lot::Mutex<std::collections::HashMap<u64, tokio::sync::oneshot::Sender<String>>>,
}

/// What `GET /admin/users/{userId}` answers.
#[derive(Debug, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UserView {
    /// The user.
    pub user_id: String,
    /// Connected to this node now.
    pub connected: bool,
    /// Its connection dropped and its room is held for the reconnect grace.
    pub away: bool,
    /// Searching, and for how long (ms).
    pub waiting_ms: Option<u64>,
    /// Its room.
    pub room_id: Option<String>,
    /// Its partner.
    pub partner_id: Option<String>,
    /// How long the room has been open (ms).
    pub room_ms: Option<u64>,
    /// The node that holds it.
    pub node: Option<String>,
    /// Distinct users who reported it within the auto-ban window (the last hour when off).
    pub recent_reporters: usize,
    /// Reports about it the node keeps.
    pub reports: usize,
    /// Its live ban, if any.
    pub ban: Option<Ban>,
}

impl Hub {
    /// The live ban of `user`, if any.
    pub(crate) fn user_ban(&self, user: &str) -> Option<Ban> {
        self.moderator
            .state
            .lock()
            .user_ban(user, now_ms())
            .cloned()
    }

    /// The live ban that covers `ip`, if any.
    pub(crate) fn address_ban(&self, ip: IpAddr) -> Option<Ban> {
        self.moderator
            .state
            .lock()
            .address_ban(ip, now_ms())
            .cloned()
    }

    /// Where bans and reports are kept: `file` (`DATA_DIR`), `failing` (`DATA_DIR` cannot be
    /// written: serving from memory, operators' bans refused), `redis` (a cluster) or `memory`
    /// (`DATA_DIR` empty).
    pub(crate) fn moderation_store(&self) -> &'static str {
        match self.moderator.store_state() {
            Some(s) => s,
            None if self.peers.clustered() => "redis",
            None => "memory",
        }
    }

    /// How many bans are live.
    pub(crate) fn active_bans(&self) -> usize {
        self.moderator.state.lock().active_bans(now_ms())
    }

    /// Records a `report-user` (a repeat within the window is not recorded again); an auto-ban
    /// it triggers takes effect at once.
    pub(crate) fn record_report(
        &self,
        reporter: &str,
        reported: &str,
        reason: &str,
        seen: Seen<'_>,
    ) {
        let made = self
            .moderator
            .state
            .lock()
            .report(reporter, reported, reason, seen, now_ms());
        // A repeat of the same report within the window: already recorded.
        let Some((report, auto)) = made else {
            return;
        };
        if let Some(w) = &self.webhooks {
            w.emit(
                "user.reported",
                serde_json::to_value(&report).unwrap_or_default(),
            );
        }
        self.share(Act::Report(report.clone()));
        self.moderator.persist(Record::Report(report));
        if let Some(ban) = auto {
            tracing::warn!(user = %reported, until = ban.until, reason = %ban.reason, "auto-banned");
            crate::metrics::banned("reports");
            self.ban_webhook(&ban);
            self.share(Act::Ban(ban.clone()));
            self.moderator.persist(Record::Ban(ban.clone()));
            self.enforce(&ban);
        }
    }

    /// Makes an operator's `ban`, and removes the connections it covers. With a data file, the
    /// ban is written first and made only once the disk has it: a ban that would not survive a
    /// restart is refused (`NotDurable`), nothing changed.
    pub(crate) async fn ban(&self, ban: Ban) -> Result<Ban, Refused> {
        self.moderator.state.lock().room_for(&ban.id, now_ms())?;
        if !self
            .moderator
            .persist_durably(Record::Ban(ban.clone()))
            .await
        {
            tracing::error!(id = %ban.id, "ban refused: its record cannot be written");
            return Err(Refused::NotDurable);
        }
        if let Err(e) = self.moderator.state.lock().ban(ban.clone(), now_ms()) {
            // Filled up meanwhile: the record written must not bring it back at a restart.
            self.moderator.persist(Record::Unban { id: ban.id });
            return Err(e);
        }
        self.share(Act::Ban(ban.clone()));
        tracing::warn!(id = %ban.id, target = ?ban.target, until = ban.until, reason = %ban.reason, "banned");
        crate::metrics::banned("operator");
        self.ban_webhook(&ban);
        self.enforce(&ban);
        Ok(ban)
    }

    /// Lifts a ban.
    pub(crate) fn unban(&self, id: &str) -> Option<Ban> {
        let ban = self.moderator.state.lock().unban(id)?;
        self.moderator.persist(Record::Unban { id: id.to_owned() });
        self.share(Act::Unban { id: id.to_owned() });
        tracing::info!(id, "ban lifted");
        Some(ban)
    }

    /// The live bans, newest first.
    pub(crate) fn bans(&self) -> Vec<Ban> {
        self.moderator.state.lock().bans(now_ms())
    }

    /// The reports feed (see [`Moderation::reports`]).
    pub(crate) fn reports(&self, limit: usize, before: Option<u64>) -> Vec<Report> {
        self.moderator.state.lock().reports(limit, before)
    }

    /// Sends `user`'s connection away with `kicked {reason}` (its partner is told as for any
    /// departure). In a cluster, a user not connected here is looked for on every node.
    pub(crate) fn kick(&self, user: &str, reason: &str) -> Kick {
        if self.kick_here(user, reason) {
            return Kick::Done;
        }
        let kick = Act::Kick {
            user: user.to_owned(),
            reason: reason.to_owned(),
        };
        if self.peers.share(kick) {
            Kick::Forwarded
        } else {
            Kick::NotConnected
        }
    }

    /// Applies an act another node made (it persisted it and told the webhooks already).
    pub(crate) fn adopt(&self, act: Act) {
        match act {
            Act::Ban(ban) => {
                let made = self.moderator.state.lock().ban(ban.clone(), now_ms());
                if made.is_ok() {
                    self.enforce(&ban);
                }
            }
            Act::Unban { id } => {
                self.moderator.state.lock().unban(&id);
            }
            Act::Kick { user, reason } => {
                self.kick_here(&user, &reason);
            }
            Act::Report(r) => self.moderator.state.lock().push_report(r),
        }
    }

    /// Takes in the bans and reports a cluster keeps in Redis (at joining).
    pub(crate) fn adopt_all(&self, bans: Vec<Ban>, mut reports: Vec<Report>) {
        let now = now_ms();
        let mut m = self.moderator.state.lock();
        for b in bans {
            m.ban(b, now).ok();
        }
        reports.sort_by_key(|r| r.id);
        for r in reports {
            m.push_report(r);
        }
    }

    /// Hands an act to the other nodes (and Redis), in a cluster.
    fn share(&self, act: Act) {
        self.peers.share(act);
    }

    /// Kicks `user` if it is connected to this node.
    fn kick_here(&self, user: &str, reason: &str) -> bool {
        let Some(Link::Local(socket)) = self.lock().link(user).cloned() else {
            return false;
        };
        tracing::warn!(user, reason, "kicked");
        crate::metrics::kicked();
        if let Some(w) = &self.webhooks {
            w.emit(
                "user.kicked",
                serde_json::json!({"userId": user, "reason": reason}),
            );
        }
        remove(&socket, "kicked", reason, None);
        true
    }

    /// What an operator sees of `user`, in a cluster from the node that holds it (asked on the
    /// broadcast channel, answered within [`ASK_WAIT`]); `None` when nothing knows it.
    pub(crate) async fn lookup_anywhere(&self, user: &str) -> Option<UserView> {
        let here = self.lookup(user);
        if !self.peers.may_hold_sessions() || here.as_ref().is_some_and(|v| v.node.is_some()) {
            return here;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let ask = self
            .asks
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut waiting = self.asks.waiting.lock();
            if waiting.len() >= MAX_ASKS {
                return here;
            }
            waiting.insert(ask, tx);
        }
        self.peers.broadcast(&crate::bus::Msg::Lookup {
            from: self.peers.node(),
            ask,
            user: user.to_owned(),
        });
        let answer = tokio::time::timeout(ASK_WAIT, rx).await;
        self.asks.waiting.lock().remove(&ask);
        let Ok(Ok(json)) = answer else {
            return here;
        };
        let mut there: UserView = serde_json::from_str(&json).ok()?;
        // Bans and reports are every node's: this node's figures are as good as the other's.
        if let Some(h) = here {
            (there.recent_reporters, there.reports, there.ban) =
                (h.recent_reporters, h.reports, h.ban);
        }
        Some(there)
    }

    /// The view of `user` when this node holds it (the answer to another node's question).
    pub(crate) fn view_here(&self, user: &str) -> Option<UserView> {
        self.lookup(user).filter(|v| v.node.is_some())
    }

    /// Another node answered question `ask`.
    pub(crate) fn found(&self, ask: u64, view: &str) {
        if let Some(tx) = self.asks.waiting.lock().remove(&ask) {
            tx.send(view.to_owned()).ok();
        }
    }

    /// What an operator sees of `user` on this node; `None` when nothing here knows it.
    pub(crate) fn lookup(&self, user: &str) -> Option<UserView> {
        let now = now_ms();
        let (presence, local) = {
            let core = self.lock();
            (
                core.presence(user, Instant::now()),
                matches!(core.link(user), Some(Link::Local(_))),
            )
        };
        let (recent, reports, ban) = {
            let m = self.moderator.state.lock();
            (
                m.distinct_reporters(user, now),
                m.reports_about(user),
                m.user_ban(user, now).cloned(),
            )
        };
        if presence.is_none() && reports == 0 && ban.is_none() {
            return None;
        }
        let node = presence.as_ref().map(|_| self.peers.node());
        let p = presence.as_ref();
        let room = p.and_then(|p| p.room.as_ref());
        Some(UserView {
            user_id: user.to_owned(),
            connected: local,
            away: p.is_some_and(|p| p.away),
            waiting_ms: p.and_then(|p| p.waiting_for).map(|d| d.as_millis() as u64),
            room_id: room.map(|r| r.0.to_string()),
            partner_id: room.map(|r| r.1.to_string()),
            room_ms: room.map(|r| r.2.as_millis() as u64),
            node,
            recent_reporters: recent,
            reports,
            ban,
        })
    }

    fn ban_webhook(&self, ban: &Ban) {
        if let Some(w) = &self.webhooks {
            w.emit("user.banned", serde_json::to_value(ban).unwrap_or_default());
        }
    }

    /// Removes every connection `ban` covers, with `banned {reason, until}`.
    fn enforce(&self, ban: &Ban) {
        let sockets: Vec<Sock> = match &ban.target {
            Target::User(u) => match self.lock().link(u) {
                Some(Link::Local(s)) => vec![s.clone()],
                _ => Vec::new(),
            },
            Target::Address(net) => self
                .all_sockets()
                .into_iter()
                .filter(|s| s.ip().is_some_and(|ip| crate::moderation::covers(net, ip)))
                .collect(),
        };
        for s in sockets {
            remove(&s, "banned", &ban.reason, Some(ban.until));
        }
    }
}

/// Tells a connection why it is removed, and closes it (its disconnect handling tells the
/// partner).
fn remove(socket: &Sock, event: &str, reason: &str, until: Option<u64>) {
    let message = match event {
        "banned" => "You have been banned from this service",
        _ => "An operator removed you from this service",
    };
    send(
        socket,
        event,
        &Removed {
            reason,
            message,
            until,
        },
    );
    socket.disconnect();
}
