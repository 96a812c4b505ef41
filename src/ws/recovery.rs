//! Socket.IO connection state recovery (socket.io 4.6+), apart from any I/O: the private `pid`
//! that names a session, the numbers (offsets) its events carry, and the log of the events not
//! yet known to have reached the client, which a client coming back on a new connection gets
//! again, in order, before the `40` reply that tells it `recovered`.
//!
//! A session keeps this state from its namespace connect, inside its connection's one lock.
//! What is known delivered leaves the log: on every pong, the events queued before its ping
//! (the client read them before it answered); with offsets, the client says itself where it
//! stopped. While its connection is away the session is *held*: events are only logged, up to
//! the budget, for the reconnect grace.
//!
//! **Offsets only for clients that take part.** socket.io's client reads any trailing string
//! argument as an offset once it holds a pid, but other clients (python-socketio calls its
//! handlers with every argument) break on an argument they did not expect, and the first `40`
//! of both looks the same. So every session gets a pid, and its events carry offsets once its
//! client has shown a pid (every connect of socket.io-client after its first). A client that
//! comes back with a pid and no offset (the first drop of a session) gets what was never written
//! to its connection: what was written counts as read. That can lose what was in flight when
//! the connection died, never repeat an event: a second `matched` or `webrtc-offer` would break
//! an app's call where a lost candidate does not. From then on its events carry offsets, and
//! every later drop is exact. So a session without offsets logs nothing while its connection
//! lives (its queue holds what was not written); the events still queued when it is lost start
//! its log.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::{Events, Sid};

/// Why a client's `pid` did not get its session back (the `reason` label of
/// `roulette_recoveries_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Not a pid this server made.
    BadPid,
    /// No session by that pid: it expired, ended, or was taken back already.
    Unknown,
    /// The offset is not one this session gave, or its events are no longer held.
    BadOffset,
    /// The layer above could not take the session back (its user id is held by someone else).
    Declined,
}

impl Refused {
    /// The metric label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Refused::BadPid => "bad-pid",
            Refused::Unknown => "unknown-or-expired",
            Refused::BadOffset => "offset-not-held",
            Refused::Declined => "declined",
        }
    }

    /// Every label, for exporting the counters at 0.
    pub(crate) const ALL: [Refused; 4] = [
        Refused::BadPid,
        Refused::Unknown,
        Refused::BadOffset,
        Refused::Declined,
    ];
}

/// Who signs pids: the key, and the node a pid names (see [`set_identity`]).
struct Identity {
    key: [u8; 32],
    node: Option<Box<str>>,
}

/// Set once: a node alone signs with a key of its own, made at the first pid; a node of a
/// cluster with the cluster's key, and names itself in its pids.
static IDENTITY: OnceLock<Identity> = OnceLock::new();

fn identity() -> &'static Identity {
    IDENTITY.get_or_init(|| Identity {
        key: rand::random(),
        node: None,
    })
}

/// Makes this process sign pids with the cluster's `key` and name `node` in them, so that any
/// node of the cluster can check a pid and knows which node holds its session. Called once, at
/// joining, before any session is taken; false when pids were made already (they stay
/// node-local).
pub(crate) fn set_identity(key: [u8; 32], node: &str) -> bool {
    IDENTITY
        .set(Identity {
            key,
            node: Some(node.into()),
        })
        .is_ok()
}

/// The name this node gives itself in its pids (empty for a node alone).
pub(crate) fn own_node() -> &'static str {
    identity().node.as_deref().unwrap_or_default()
}

/// Bytes of the tag: 128 bits.
const TAG: usize = 16;

/// The MAC of `sid` on `node` (a node alone names none).
fn mac(key: &[u8; 32], sid: &str, node: &str) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(sid.as_bytes());
    if !node.is_empty() {
        mac.update(b"\0");
        mac.update(node.as_bytes());
    }
    mac
}

/// The pid of the session `sid`: the id, a tag only this process (or this cluster) can make,
/// and in a cluster the node that holds the session; so nothing needs to be stored to find a
/// session by its pid, and a pid cannot be guessed from the public `sid`. 38 URL-safe
/// characters on a node alone.
pub(crate) fn pid(sid: Sid) -> String {
    pid_by(identity(), sid)
}

fn pid_by(id: &Identity, sid: Sid) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let node = id.node.as_deref().unwrap_or_default();
    let mut s = String::with_capacity(38 + node.len() * 4 / 3 + 2);
    s.push_str(sid.as_str());
    b64.encode_string(
        mac(&id.key, sid.as_str(), node)
            .finalize()
            .into_bytes()
            .get(..TAG)
            .unwrap_or_default(),
        &mut s,
    );
    b64.encode_string(node.as_bytes(), &mut s);
    s
}

/// Where the session a pid names lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Whose {
    /// On this node.
    Here(Sid),
    /// On another node of the cluster, by its name.
    Node(Sid, String),
}

/// The session a pid names, if this process (or its cluster) made it.
pub(crate) fn open_pid(pid: &str) -> Option<Whose> {
    open_by(identity(), pid)
}

fn open_by(id: &Identity, pid: &str) -> Option<Whose> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    // 16 bytes of tag are 22 characters.
    let (sid, tag_text, node) = (pid.get(..16)?, pid.get(16..38)?, pid.get(38..)?);
    let sid: Sid = sid.parse().ok()?;
    let given = b64.decode(tag_text).ok()?;
    let node = String::from_utf8(b64.decode(node).ok()?).ok()?;
    if given.len() != TAG {
        return None;
    }
    // Checked in constant time: a pid is a secret.
    mac(&id.key, sid.as_str(), &node)
        .verify_truncated_left(&given)
        .ok()?;
    let own = id.node.as_deref().unwrap_or_default();
    Some(if node == own {
        Whose::Here(sid)
    } else {
        Whose::Node(sid, node)
    })
}

/// An event kept until it is known delivered.
struct Logged {
    /// Its number (its offset, when offsets are on).
    n: u64,
    /// The number of its frame in the connection's output queue (`Out::popped` counts).
    frame: u64,
    /// The whole frame, as written.
    bytes: Box<[u8]>,
}

/// A session's recovery state (see the module's text).
pub(crate) struct Recovery {
    /// The Socket.IO session id: the first connection's Engine.IO id, kept across recoveries.
    pub(super) sid: Sid,
    /// What receives the session's events above the transport.
    pub(super) events: Arc<dyn Events>,
    /// Whether events carry their number as an offset.
    pub(super) offsets: bool,
    /// The next event's number.
    next: u64,
    log: VecDeque<Logged>,
    /// The bytes of `log`.
    bytes: usize,
    /// Events numbered below this were given up for the budget: an offset before it cannot be
    /// served any more.
    lost_below: u64,
    /// The next event's number when the ping now waiting for its pong was queued.
    mark: Option<u64>,
    /// Since when the session has been held (registry ms; 0: its connection is live).
    held_since: u64,
    /// The log outgrew its budget while held: the session cannot be recovered.
    overflowed: bool,
    /// The first event numbered while held: those before may make room for those after, never
    /// the other way round.
    held_from: u64,
}

/// What [`Recovery::log`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Logging {
    /// Kept.
    Kept,
    /// Held and over budget: the session is given up.
    Overflow,
}

impl Recovery {
    /// A new session's state.
    pub(super) fn new(sid: Sid, events: Arc<dyn Events>, offsets: bool) -> Recovery {
        Recovery {
            sid,
            events,
            offsets,
            next: 0,
            log: VecDeque::new(),
            bytes: 0,
            lost_below: 0,
            mark: None,
            held_since: 0,
            overflowed: false,
            held_from: 0,
        }
    }

    /// The number the next event gets; call [`log`](Self::log) with it.
    pub(super) fn next(&self) -> u64 {
        self.next
    }

    /// Keeps event `n` (from [`next`](Self::next)), queued as frame `frame`, within `budget`
    /// bytes: while the connection is live the oldest events make room (an offset before them
    /// can no longer be served); while held, a session over its budget is given up.
    pub(super) fn log(&mut self, frame: u64, bytes: &[u8], budget: usize) -> Logging {
        let n = self.next;
        self.next += 1;
        if self.overflowed {
            return Logging::Overflow;
        }
        if self.held_since != 0 {
            // Events logged while the connection lived (most of them read: the client's offset
            // will tell) make room for those it is missing now; those it is missing never
            // make room for each other.
            while self.bytes + bytes.len() > budget
                && let Some(old) = self.log.front().filter(|l| l.n < self.held_from)
            {
                self.bytes -= old.bytes.len();
                self.lost_below = old.n + 1;
                self.log.pop_front();
            }
            if self.bytes + bytes.len() > budget {
                self.overflowed = true;
                self.log = VecDeque::new();
                self.bytes = 0;
                return Logging::Overflow;
            }
        }
        self.bytes += bytes.len();
        self.log.push_back(Logged {
            n,
            frame,
            bytes: bytes.into(),
        });
        while self.bytes > budget {
            let Some(old) = self.log.pop_front() else {
                break;
            };
            self.bytes -= old.bytes.len();
            self.lost_below = old.n + 1;
        }
        Logging::Kept
    }

    /// A ping is queued: its pong will confirm every event numbered before now.
    pub(super) fn ping_sent(&mut self) {
        if self.mark.is_none() {
            self.mark = Some(self.next);
        }
    }

    /// A pong came: the events queued before its ping reached the client.
    pub(super) fn ponged(&mut self) {
        if let Some(mark) = self.mark.take() {
            self.confirm(|l| l.n < mark);
        }
    }

    fn confirm(&mut self, delivered: impl Fn(&Logged) -> bool) {
        while let Some(l) = self.log.front().filter(|l| delivered(l)) {
            self.bytes -= l.bytes.len();
            self.log.pop_front();
        }
        if self.log.is_empty() {
            self.log = VecDeque::new();
        }
    }

    /// Whether events are logged as they are queued on a live connection (only with offsets:
    /// without, the queue holds what may be missed).
    pub(super) fn logs_live(&self) -> bool {
        self.offsets
    }

    /// The connection is gone at `now` and the session held, with `queued` still unwritten in
    /// its queue (whole frames, oldest first; a frame written in part is unread too). Without
    /// offsets, the events among them are what the client missed; beyond `budget` the session
    /// is given up.
    pub(super) fn hold<'a>(
        &mut self,
        now: u64,
        queued: impl Iterator<Item = &'a [u8]>,
        budget: usize,
    ) {
        self.held_since = now;
        self.held_from = self.next;
        self.mark = None;
        if self.offsets {
            return;
        }
        for f in queued {
            if super::frame::polled(f).is_some_and(|p| p.starts_with(b"42")) {
                self.log(0, f, budget);
            }
        }
    }

    /// Since when the session has been held (0: it is live).
    pub(super) fn held_since(&self) -> u64 {
        self.held_since
    }

    /// Whether the session was given up for its budget while held.
    pub(super) fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Bytes held for the client.
    pub(super) fn held_bytes(&self) -> usize {
        self.bytes
    }

    /// The client is back with `offset` (the last it read; `None`: it has none): the frames it
    /// missed, oldest first, or why it cannot have them.
    pub(super) fn missed(&self, offset: Option<&str>) -> Result<Vec<&[u8]>, Refused> {
        if self.overflowed {
            return Err(Refused::Unknown);
        }
        let after = match offset {
            None => None,
            Some(o) => {
                let o: u64 = o.parse().map_err(|_| Refused::BadOffset)?;
                if o >= self.next || o + 1 < self.lost_below {
                    return Err(Refused::BadOffset);
                }
                Some(o)
            }
        };
        Ok(self
            .log
            .iter()
            .filter(|l| after.is_none_or(|o| l.n > o))
            .map(|l| &*l.bytes)
            .collect())
    }

    /// The session lives on a new connection: `offsets` from now on if its client showed a
    /// pid; the events it was sent again are frames `first..` of the new queue, and stay logged
    /// until a pong confirms them.
    pub(super) fn resume(&mut self, offsets: bool, replayed_after: Option<u64>, first: u64) {
        self.held_since = 0;
        self.offsets |= offsets;
        if let Some(o) = replayed_after {
            self.confirm(|l| l.n <= o);
        }
        for (i, l) in self.log.iter_mut().enumerate() {
            l.frame = first + i as u64;
        }
    }
}

/// A client's pid that names a session another node made (see
/// [`Events::recover_elsewhere`](super::Events::recover_elsewhere)).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Asking<'a> {
    /// The node that made the session (it knows where the session went since).
    pub origin: &'a str,
    /// The session.
    pub sid: Sid,
    /// The pid, as the client sent it: the `40` reply repeats it.
    pub pid: &'a str,
    /// The client's offset.
    pub offset: Option<&'a str>,
}

/// The `pid` and `offset` a client's namespace connect carries (socket.io-client 4.6+ sends them
/// merged into its `auth`), when both are strings.
pub(super) fn wanted(auth: Option<&str>) -> (Option<String>, Option<String>) {
    #[derive(serde::Deserialize)]
    struct Auth {
        pid: Option<serde_json::Value>,
        offset: Option<serde_json::Value>,
    }
    let Some(a) = auth.and_then(|a| serde_json::from_str::<Auth>(a).ok()) else {
        return (None, None);
    };
    let text = |v: Option<serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => Some(s),
        _ => None,
    };
    (text(a.pid), text(a.offset))
}

mod moved;
pub(crate) use moved::Exported;

#[cfg(test)]
mod tests;
