//! Abuse limits: how many connections an address may hold and open, how many HTTP requests it
//! may make, and how many events one socket may send, each with its own budget.
//!
//! Every budget is a GCRA bucket from `governor`: a steady rate plus a burst, so a person who
//! clicks *Next* three times in a row is served and a bot skipping a thousand times a minute is
//! not. A refused event costs a lookup and an `error` reply, never the hub lock, so a flooder
//! cannot slow the pairs next to it; a socket that keeps going after being told is disconnected.
//! A limit of 0 turns that limit off.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::time::Duration;

use crate::ws::Sid;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed, keyed::DefaultKeyedStateStore};
use governor::{Quota, RateLimiter};
use parking_lot::Mutex;

use crate::model::Reject;

/// The limiters' clock: one quanta clock for the process, read through a type of no size.
/// governor's default clock is a `quanta::Clock` (its calibration included) inside every
/// limiter: five of them made each connection's budget 376 bytes, against 216 now.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LimitClock;

impl Clock for LimitClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        // Made once: a new quanta clock reads CPUID, which costs a VM exit.
        static QUANTA: std::sync::OnceLock<quanta::Clock> = std::sync::OnceLock::new();
        let c = QUANTA.get_or_init(quanta::Clock::new);
        Nanos::from(c.delta_as_nanos(0, c.raw()))
    }
}

/// One socket's budget for one class of events.
type DirectLimiter = RateLimiter<NotKeyed, InMemoryState, LimitClock, NoOpMiddleware<Nanos>>;

/// A budget per address.
type KeyedLimiter<K> = RateLimiter<K, DefaultKeyedStateStore<K>, LimitClock, NoOpMiddleware<Nanos>>;

/// The budget an event is charged to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventClass {
    /// `webrtc-offer`, `webrtc-answer`, `webrtc-ice-candidate`: bursty during call set-up.
    Signal,
    /// `chat-message`, `typing`.
    Chat,
    /// `find-random-partner`, `next-partner`: the anti-skip-spam budget.
    Search,
    /// Everything else, unknown and unreadable events included.
    Other,
}

/// A steady rate and a burst, or nothing for "no limit".
fn quota(per: Duration, count: u32, burst: u32) -> Option<Quota> {
    let count = NonZeroU32::new(count)?;
    let period = per.checked_div(count.get())?.max(Duration::from_nanos(1));
    let burst = NonZeroU32::new(burst.max(1)).expect("at least 1");
    Some(Quota::with_period(period)?.allow_burst(burst))
}

/// The event budgets of one socket.
pub(crate) struct SocketBudget {
    signal: Option<DirectLimiter>,
    chat: Option<DirectLimiter>,
    search: Option<DirectLimiter>,
    other: Option<DirectLimiter>,
    /// Refusals a socket may collect before it is disconnected as a flooder.
    refusals: Option<DirectLimiter>,
    /// `report-user` events: made at the first report (most connections never report, and a
    /// limiter is about 64 bytes of every idle connection).
    reports: std::sync::OnceLock<Box<DirectLimiter>>,
}

/// What [`SocketBudget::charge`] decided.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Within budget: handle the event.
    Allow,
    /// Over budget: refuse it with this.
    Refuse(Reject),
    /// Over budget again and again: close the connection.
    Disconnect,
}

/// Every limit of the server, built once from the settings.
pub(crate) struct Limits {
    clock: LimitClock,
    quotas: [Option<Quota>; 6],
    new_connections: Option<KeyedLimiter<IpAddr>>,
    /// `report-user` events per address, all its sockets together.
    reports: Option<KeyedLimiter<IpAddr>>,
    http: Option<KeyedLimiter<IpAddr>>,
    max_connections_per_ip: usize,
    /// The open Socket.IO connections of each address; the count per address is a set's size.
    open: Mutex<HashMap<IpAddr, HashSet<Sid>>>,
    /// Counted sessions the transport did not list at the last sweep.
    suspects: Mutex<HashSet<Sid>>,
    trust_proxy: u8,
}

/// What the limits need of the settings (built by [`crate::config`]); 0 turns a limit off.
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    /// `MAX_CONNECTIONS_PER_IP`.
    pub max_connections_per_ip: u32,
    /// `MAX_NEW_CONNECTIONS_PER_IP`, per window.
    pub max_new_connections_per_ip: u32,
    /// `RATE_LIMIT_WINDOW_MS`.
    pub rate_limit_window_ms: u64,
    /// `RATE_LIMIT_MAX_REQUESTS`, per window.
    pub rate_limit_max_requests: u32,
    /// `SIGNAL_EVENTS_PER_SEC`.
    pub signal_events_per_sec: u32,
    /// `CHAT_EVENTS_PER_SEC`.
    pub chat_events_per_sec: u32,
    /// `SEARCH_EVENTS_PER_MIN`.
    pub search_events_per_min: u32,
    /// `OTHER_EVENTS_PER_SEC`.
    pub other_events_per_sec: u32,
    /// `FLOOD_DISCONNECT_AFTER`: refusals within 10 s before the socket is closed.
    pub flood_disconnect_after: u32,
    /// `REPORTS_PER_MIN`, per socket.
    pub reports_per_min: u32,
    /// `REPORTS_PER_IP_PER_MIN`, per address.
    pub reports_per_ip_per_min: u32,
    /// `TRUST_PROXY`: how many proxies in front set `X-Forwarded-For`.
    pub trust_proxy: u8,
}

impl Limits {
    /// The limits the settings ask for.
    pub(crate) fn new(config: &Settings) -> Limits {
        let window = Duration::from_millis(config.rate_limit_window_ms);
        let sec = Duration::from_secs(1);
        let minute = Duration::from_secs(60);
        let clock = LimitClock;
        let per_ip =
            |n: u32| quota(window, n, n).map(|q| RateLimiter::dashmap_with_clock(q, clock));
        Limits {
            clock,
            quotas: [
                quota(
                    sec,
                    config.signal_events_per_sec,
                    config.signal_events_per_sec * 3,
                ),
                quota(
                    sec,
                    config.chat_events_per_sec,
                    config.chat_events_per_sec * 3,
                ),
                quota(Duration::from_secs(60), config.search_events_per_min, 10),
                quota(
                    sec,
                    config.other_events_per_sec,
                    config.other_events_per_sec * 3,
                ),
                quota(
                    Duration::from_secs(10),
                    config.flood_disconnect_after,
                    config.flood_disconnect_after,
                ),
                quota(minute, config.reports_per_min, config.reports_per_min),
            ],
            new_connections: per_ip(config.max_new_connections_per_ip),
            reports: quota(
                minute,
                config.reports_per_ip_per_min,
                config.reports_per_ip_per_min,
            )
            .map(|q| RateLimiter::dashmap_with_clock(q, clock)),
            http: per_ip(config.rate_limit_max_requests),
            max_connections_per_ip: config.max_connections_per_ip as usize,
            open: Mutex::new(HashMap::new()),
            suspects: Mutex::new(HashSet::new()),
            trust_proxy: config.trust_proxy,
        }
    }

    /// Fresh event budgets for a new socket.
    pub(crate) fn socket_budget(&self) -> SocketBudget {
        // One clock for all (see [`LimitClock`]).
        let direct = |q: Option<Quota>| q.map(|q| RateLimiter::direct_with_clock(q, self.clock));
        SocketBudget {
            signal: direct(self.quotas[0]),
            chat: direct(self.quotas[1]),
            search: direct(self.quotas[2]),
            other: direct(self.quotas[3]),
            refusals: direct(self.quotas[4]),
            reports: std::sync::OnceLock::new(),
        }
    }

    /// Whether a socket (from `ip`) may send another `report-user` now: within its own budget
    /// and its address's. A flood of reports is refused before it reaches the feed, the file
    /// and the webhooks.
    pub(crate) fn admit_report(
        &self,
        budget: &SocketBudget,
        ip: Option<IpAddr>,
    ) -> Result<(), Reject> {
        let own = match self.quotas[5].map(|q| {
            budget
                .reports
                .get_or_init(|| Box::new(RateLimiter::direct_with_clock(q, self.clock)))
                .check()
        }) {
            Some(Err(not_until)) => Err(not_until.wait_time_from(self.clock.now())),
            _ => Ok(()),
        };
        own.and_then(|()| match ip {
            Some(ip) => check_keyed(&self.reports, ip, &self.clock),
            None => Ok(()),
        })
        .map_err(|wait| Reject::rate_limited("reports", wait))
    }

    /// Charges one event to a socket's budget.
    pub(crate) fn charge(&self, budget: &SocketBudget, class: EventClass) -> Verdict {
        let limiter = match class {
            EventClass::Signal => &budget.signal,
            EventClass::Chat => &budget.chat,
            EventClass::Search => &budget.search,
            EventClass::Other => &budget.other,
        };
        let Some(Err(not_until)) = limiter.as_ref().map(|l| l.check()) else {
            return Verdict::Allow;
        };
        if budget.refusals.as_ref().is_some_and(|r| r.check().is_err()) {
            return Verdict::Disconnect;
        }
        let wait = not_until.wait_time_from(self.clock.now());
        let what = match class {
            EventClass::Signal => "signaling messages",
            EventClass::Chat => "chat messages",
            EventClass::Search => "searches and skips",
            EventClass::Other => "events",
        };
        Verdict::Refuse(Reject::rate_limited(what, wait))
    }

    /// Whether `ip` may open another Engine.IO connection now; if not, how long to wait.
    pub(crate) fn admit_connection(&self, ip: IpAddr) -> Result<(), Duration> {
        check_keyed(&self.new_connections, ip, &self.clock)
    }

    /// Whether `ip` may make another HTTP request now; if not, how long to wait.
    pub(crate) fn admit_request(&self, ip: IpAddr) -> Result<(), Duration> {
        check_keyed(&self.http, ip, &self.clock)
    }

    /// Records socket `id` as open from `ip`, unless the address holds its maximum already.
    /// A socket recorded already keeps its place (the own transport counts a connection from
    /// its first byte and asks again when it joins `/`).
    pub(crate) fn open(&self, ip: IpAddr, id: Sid) -> bool {
        let mut open = self.open.lock();
        let set = open.entry(ip).or_default();
        if set.contains(&id) {
            return true;
        }
        if self.max_connections_per_ip != 0 && set.len() >= self.max_connections_per_ip {
            if set.is_empty() {
                open.remove(&ip);
            }
            return false;
        }
        set.insert(id);
        true
    }

    /// Forgets socket `id` of `ip`.
    pub(crate) fn close(&self, ip: IpAddr, id: Sid) {
        let mut open = self.open.lock();
        if let Some(set) = open.get_mut(&ip) {
            set.remove(&id);
            if set.is_empty() {
                open.remove(&ip);
            }
        }
    }

    /// Forgets sockets that are not open any more although no disconnect said so (a handshake
    /// that failed after the connect middleware let it through): the per-address counts heal
    /// instead of drifting. A session is counted a moment before the transport
    /// lists it, so only one missing from two consecutive sweeps is dropped.
    pub(crate) fn retain_open(&self, live: &HashSet<Sid>) {
        let mut suspects = self.suspects.lock();
        let mut still = HashSet::new();
        let mut open = self.open.lock();
        open.retain(|_, set| {
            set.retain(|sid| {
                if live.contains(sid) {
                    return true;
                }
                let keep = !suspects.contains(sid);
                if keep {
                    still.insert(*sid);
                }
                keep
            });
            !set.is_empty()
        });
        *suspects = still;
    }

    #[cfg(test)]
    /// How many sockets `ip` holds open.
    pub(crate) fn open_from(&self, ip: IpAddr) -> usize {
        self.open.lock().get(&ip).map_or(0, HashSet::len)
    }

    /// Drops the per-address state of addresses idle long enough to be back at a full budget,
    /// so the maps follow the active addresses and not every address ever seen.
    pub(crate) fn prune(&self) {
        for l in [&self.new_connections, &self.http, &self.reports]
            .into_iter()
            .flatten()
        {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// The client's address: the TCP peer, or with `TRUST_PROXY = n` the n-th address from the
    /// right of `X-Forwarded-For` (each trusted proxy appends the address it saw). A header with
    /// fewer entries than trusted hops, or an unparsable one, falls back to the peer, so a client
    /// cannot choose its own address by sending the header itself.
    pub(crate) fn client_ip(
        &self,
        headers: &http::HeaderMap,
        peer: Option<SocketAddr>,
    ) -> Option<IpAddr> {
        let peer = peer.map(|p| p.ip());
        if self.trust_proxy == 0 {
            return peer;
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .collect();
        let n = self.trust_proxy as usize;
        hops.len()
            .checked_sub(n)
            .and_then(|i| hops[i].parse().ok())
            .or(peer)
    }
}

fn check_keyed(
    limiter: &Option<KeyedLimiter<IpAddr>>,
    ip: IpAddr,
    clock: &LimitClock,
) -> Result<(), Duration> {
    match limiter.as_ref().map(|l| l.check_key(&ip)) {
        Some(Err(not_until)) => Err(not_until.wait_time_from(clock.now())),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ErrorCode;

    fn limits(flags: &[&str]) -> Limits {
        Limits::new(
            &crate::config::Config::from_flags(flags.iter().copied())
                .unwrap()
                .limits(),
        )
    }

    #[test]
    fn each_class_has_its_own_budget_and_a_flooder_is_cut_off() {
        let l = limits(&[
            "--search-events-per-min",
            "6",
            "--flood-disconnect-after",
            "5",
        ]);
        let b = l.socket_budget();
        for _ in 0..10 {
            assert_eq!(
                l.charge(&b, EventClass::Search),
                Verdict::Allow,
                "the burst"
            );
        }
        let Verdict::Refuse(r) = l.charge(&b, EventClass::Search) else {
            panic!("over the burst")
        };
        assert_eq!(r.code, ErrorCode::RateLimited);
        let wait = r.retry_after_ms.unwrap();
        assert!((1..=10_000).contains(&wait), "about one period: {wait}");
        assert_eq!(
            l.charge(&b, EventClass::Signal),
            Verdict::Allow,
            "another budget"
        );
        let verdicts: Vec<Verdict> = (0..10).map(|_| l.charge(&b, EventClass::Search)).collect();
        assert!(verdicts.contains(&Verdict::Disconnect));
    }

    #[test]
    fn zero_means_no_limit() {
        let l = limits(&[
            "--signal-events-per-sec",
            "0",
            "--max-connections-per-ip",
            "0",
        ]);
        let b = l.socket_budget();
        for _ in 0..100_000 {
            assert_eq!(l.charge(&b, EventClass::Signal), Verdict::Allow);
        }
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!((0..1000).all(|_| l.open(ip, Sid::new())));
    }

    #[test]
    fn concurrent_connections_per_address_are_capped_and_released() {
        let l = limits(&["--max-connections-per-ip", "2"]);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let [s1, s2, s3, s4] = [Sid::new(), Sid::new(), Sid::new(), Sid::new()];
        assert!(l.open(a, s1) && l.open(a, s2));
        assert!(!l.open(a, s3));
        assert!(l.open(b, s4), "per address");
        l.close(a, s1);
        assert!(l.open(a, s3));
        l.close(a, s2);
        l.close(a, s3);
        l.close(b, s4);
        assert_eq!(l.open.lock().len(), 0, "no state for idle addresses");
    }

    #[test]
    fn counts_heal_from_the_live_sockets() {
        let l = limits(&["--max-connections-per-ip", "1"]);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let (ghost, live) = (Sid::new(), Sid::new());
        assert!(l.open(a, ghost));
        // The ghost's disconnect never came: the address is full until the counts are healed.
        assert!(!l.open(a, live));
        l.retain_open(&HashSet::new());
        assert_eq!(
            l.open_from(a),
            1,
            "missing once may be a socket still registering"
        );
        l.retain_open(&HashSet::new());
        assert_eq!(l.open_from(a), 0, "missing twice is gone");
        assert!(l.open(a, live));
        l.retain_open(&HashSet::from([live]));
        assert_eq!(l.open_from(a), 1);
    }

    #[test]
    fn forwarded_addresses_are_trusted_only_when_configured() {
        let peer: SocketAddr = "10.1.1.1:5000".parse().unwrap();
        let mut h = http::HeaderMap::new();
        h.insert("x-forwarded-for", "6.6.6.6, 203.0.113.7".parse().unwrap());
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert_eq!(limits(&[]).client_ip(&h, Some(peer)), ip("10.1.1.1"));
        assert_eq!(
            limits(&["--trust-proxy", "1"]).client_ip(&h, Some(peer)),
            ip("203.0.113.7"),
            "the address our proxy saw, not the one the client wrote"
        );
        assert_eq!(
            limits(&["--trust-proxy", "2"]).client_ip(&h, Some(peer)),
            ip("6.6.6.6")
        );
        assert_eq!(
            limits(&["--trust-proxy", "3"]).client_ip(&h, Some(peer)),
            ip("10.1.1.1"),
            "fewer hops than trusted"
        );
    }

    #[test]
    fn new_connections_per_address_are_limited_per_window() {
        let l = limits(&["--max-new-connections-per-ip", "3"]);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(l.admit_connection(a).is_ok());
        }
        let wait = l.admit_connection(a).unwrap_err();
        assert!(wait > Duration::from_secs(1), "{wait:?}");
        assert!(l.admit_connection("10.0.0.2".parse().unwrap()).is_ok());
    }
}
