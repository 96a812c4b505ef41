//! The scenarios and their reports.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use hdrhistogram::Histogram;
use parking_lot_free::Shared;
use rand::Rng;
use rand::SeedableRng;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, watch};

use crate::Common;
use crate::proc;
use crate::wire::{Conn, Target, find_body, user};

/// A scenario's outcome: what went wrong, and the JSON report.
pub struct Report {
    /// The report.
    pub json: Value,
    failures: u64,
    lost: u64,
    reordered: u64,
}

impl Report {
    /// A report of figures only: nothing to count as failed, lost or reordered.
    pub fn plain(json: Value) -> Report {
        Report {
            json,
            failures: 0,
            lost: 0,
            reordered: 0,
        }
    }

    /// Failures + lost + reordered.
    pub fn problems(&self) -> u64 {
        self.failures + self.lost + self.reordered
    }

    /// A short human summary.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        if let Value::Object(m) = &self.json {
            for (k, v) in m {
                s.push_str(&format!("{k:>24}: {v}\n"));
            }
        }
        s
    }
}

/// Small shared-state helpers (a mutex that never poisons in practice, counted failures).
mod parking_lot_free {
    use std::sync::Mutex;

    /// A value behind a mutex.
    pub struct Shared<T>(Mutex<T>);

    impl<T> Shared<T> {
        /// Wraps `v`.
        pub fn new(v: T) -> Self {
            Shared(Mutex::new(v))
        }
        /// Runs `f` on the value.
        pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
            f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
        }
    }
}

/// Latencies in microseconds.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

fn percentiles(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    json!({
        "count": h.len(),
        "p50Ms": ms(0.5),
        "p90Ms": ms(0.9),
        "p99Ms": ms(0.99),
        "maxMs": h.max() as f64 / 1000.0,
    })
}

/// Failures by reason.
struct Failures(Shared<BTreeMap<String, u64>>);

impl Failures {
    fn new() -> Self {
        Failures(Shared::new(BTreeMap::new()))
    }
    fn add(&self, e: &anyhow::Error) {
        // The first line, without numbers, groups the same failure together.
        let reason: String = format!("{e}")
            .chars()
            .take(80)
            .map(|c| if c.is_ascii_digit() { '#' } else { c })
            .collect();
        self.0.with(|m| *m.entry(reason).or_default() += 1);
    }
    fn total(&self) -> u64 {
        self.0.with(|m| m.values().sum())
    }
    fn json(&self) -> Value {
        self.0.with(|m| json!(m))
    }
}

fn user_id(prefix: &str) -> String {
    format!("{prefix}-{:x}", rand::rng().random::<u64>())
}

/// Idle authenticated connections, held until a stop signal.
struct IdleCrowd {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// One message per connection once it is authenticated (or failed).
    ready: tokio::sync::mpsc::Receiver<()>,
    authed: Arc<AtomicU64>,
    failures: Arc<Failures>,
}

impl IdleCrowd {
    /// Opens `n` connections, at most `connect_concurrency` at a time, each held until `stop`;
    /// `waiting`: each searches first, as a man who insists on a woman.
    fn spawn(
        t: &Target,
        n: usize,
        c: &Common,
        stop: watch::Receiver<bool>,
        waiting: bool,
    ) -> IdleCrowd {
        let gate = Arc::new(Semaphore::new(c.connect_concurrency));
        let failures = Arc::new(Failures::new());
        let authed = Arc::new(AtomicU64::new(0));
        let (ready_tx, ready) = tokio::sync::mpsc::channel::<()>(n.max(1));
        let timeout = c.timeout();
        let tasks = (0..n)
            .map(|_| {
                let (t, gate, failures, authed) =
                    (t.clone(), gate.clone(), failures.clone(), authed.clone());
                let (mut stop, ready) = (stop.clone(), ready_tx.clone());
                tokio::spawn(async move {
                    let permit = gate.acquire_owned().await.expect("open");
                    let conn = if waiting {
                        waiting_man(&t, timeout).await
                    } else {
                        user(&t, timeout, &user_id("idle"), None).await
                    };
                    drop(permit);
                    match conn {
                        Ok((mut conn, _)) => {
                            authed.fetch_add(1, Ordering::Relaxed);
                            ready.send(()).await.ok();
                            if let Err(e) = conn.hold(&mut stop).await {
                                failures.add(&e);
                            }
                            conn.close().await;
                        }
                        Err(e) => {
                            failures.add(&e);
                            ready.send(()).await.ok();
                        }
                    }
                })
            })
            .collect();
        IdleCrowd {
            tasks,
            ready,
            authed,
            failures,
        }
    }

    /// Waits for every connection to be closed (after the stop signal).
    async fn join(&mut self) {
        // The ready messages are not needed any more: closing lets senders finish.
        self.ready.close();
        for task in self.tasks.drain(..) {
            task.await.ok();
        }
    }
}

/// A man who insists on meeting a woman, searching: he waits for as long as only users who
/// state no gender come.
async fn waiting_man(t: &Target, timeout: Duration) -> Result<(Conn, Value)> {
    let mut c = Conn::open(t, timeout).await?;
    let info = json!({ "userId": user_id("w"), "userInfo": { "gender": "male" } });
    c.emit("authenticate", &info).await?;
    let a = c.expect("authenticated").await?;
    c.emit(
        "find-random-partner",
        &json!({ "preferences": { "gender": "female" } }),
    )
    .await?;
    c.expect("searching").await?;
    Ok((c, a))
}

/// `idle N`: N authenticated connections, held (`waiting`: each searching in vain).
pub async fn idle(c: &Common, n: usize, hold_secs: u64, waiting: bool) -> Result<Report> {
    let t = Target::new(&c.url, !c.no_spread)?;
    let before = proc::sample(c.server_pid);
    let (stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let mut crowd = IdleCrowd::spawn(&t, n, c, stop_rx, waiting);
    for _ in 0..n {
        crowd.ready.recv().await;
    }
    let all_in = started.elapsed();
    // Let the server settle (its allocator, deferred work) before reading its memory.
    tokio::time::sleep(Duration::from_secs(hold_secs)).await;
    let held = proc::sample(c.server_pid);
    stop_tx.send(true).ok();
    crowd.join().await;
    let failures = crowd.failures;
    let ok = crowd.authed.load(Ordering::Relaxed);
    let per_conn = match (before, held) {
        (Some(b), Some(h)) if ok > 0 => {
            json!((h.rss_bytes.saturating_sub(b.rss_bytes)) as f64 / ok as f64)
        }
        _ => Value::Null,
    };
    Ok(Report {
        json: json!({
            "scenario": "idle",
            "connections": n,
            "authenticated": ok,
            "allAuthenticatedAfterMs": all_in.as_millis() as u64,
            "failures": failures.json(),
            "server": proc::delta(before, held),
            "serverRssPerConnectionBytes": per_conn,
        }),
        failures: failures.total(),
        lost: 0,
        reordered: 0,
    })
}

/// A realistic SDP of about 3 KB.
fn sdp(kind: &str) -> Value {
    let mut s =
        String::from("v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
    s.push_str("a=group:BUNDLE 0 1\r\na=msid-semantic: WMS stream\r\n");
    while s.len() < 3000 {
        s.push_str("a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 goog-remb\r\na=rtcp-fb:96 transport-cc\r\na=fmtp:97 apt=96\r\n");
    }
    json!({"type": kind, "sdp": s})
}

fn candidate(n: u64) -> Value {
    json!({
        "candidate": format!("candidate:{n} 1 udp 2122260223 192.168.1.{} 5{n:04} typ host generation 0", n % 250),
        "sdpMid": "0",
        "sdpMLineIndex": 0
    })
}

/// What the session loops measured.
struct SessionStats {
    completed: AtomicU64,
    to_match: Shared<Histogram<u64>>,
    whole: Shared<Histogram<u64>>,
    failures: Failures,
}

/// One full session on a fresh connection. Returns true when it completed.
async fn one_session(
    t: &Target,
    timeout: Duration,
    st: &SessionStats,
    (cohort, wish): (Option<&'static str>, Option<&'static str>),
) -> Result<()> {
    let began = Instant::now();
    let (mut c, _) = user(t, timeout, &user_id("s"), cohort).await?;
    c.emit("find-random-partner", &find_body(wish)).await?;
    let searched = Instant::now();
    let m = c.expect("matched").await?;
    st.to_match
        .with(|h| h.record(searched.elapsed().as_micros() as u64).ok());
    let room = m["roomId"].clone();
    let partner = m["partnerId"].clone();
    let to = |body: Value| -> Value {
        let mut b = json!({"roomId": room, "targetUserId": partner});
        if let (Value::Object(o), Value::Object(add)) = (&mut b, body) {
            o.extend(add);
        }
        b
    };
    if m["isInitiator"] == true {
        c.emit("webrtc-offer", &to(json!({"offer": sdp("offer")})))
            .await?;
        c.expect("webrtc-answer").await?;
    } else {
        c.expect("webrtc-offer").await?;
        c.emit("webrtc-answer", &to(json!({"answer": sdp("answer")})))
            .await?;
    }
    for i in 0..4 {
        c.emit(
            "webrtc-ice-candidate",
            &to(json!({"candidate": candidate(i)})),
        )
        .await?;
    }
    c.emit(
        "chat-message",
        &to(json!({"message": "hello from the load generator"})),
    )
    .await?;
    // Four candidates and two chat lines (the partner's and our own receipt) come back.
    let (mut candidates, mut chats) = (0, 0);
    while candidates < 4 || chats < 2 {
        let (n, v) = c.event().await?;
        match n.as_str() {
            "webrtc-ice-candidate" => candidates += 1,
            "chat-message" => chats += 1,
            "partner-typing" | "queue-status" => {}
            _ => bail!("unexpected {n} during the call: {v:.120}"),
        }
    }
    if m["isInitiator"] == true {
        c.emit("end-chat", &json!({})).await?;
        c.expect("chat-ended").await?;
    } else {
        let left = c.expect("partner-left").await?;
        if left["reason"] != "user-ended" {
            bail!("partner-left for {}", left["reason"]);
        }
    }
    c.close().await;
    st.whole
        .with(|h| h.record(began.elapsed().as_micros() as u64).ok());
    st.completed.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

async fn session_loops(
    t: &Target,
    timeout: Duration,
    users: usize,
    until: Instant,
    cohorts: (Option<&'static str>, Option<&'static str>),
) -> Arc<SessionStats> {
    let st = Arc::new(SessionStats {
        completed: AtomicU64::new(0),
        to_match: Shared::new(histogram()),
        whole: Shared::new(histogram()),
        failures: Failures::new(),
    });
    let mut tasks = Vec::new();
    for _ in 0..users {
        let (t, st) = (t.clone(), st.clone());
        tasks.push(tokio::spawn(async move {
            // A session still running at the deadline may finish within a grace second; one
            // whose user still waits for a partner then (everyone else has stopped) is cut off,
            // which is the end of the run, not a failure.
            let cutoff = tokio::time::Instant::from_std(until + Duration::from_secs(1));
            while Instant::now() < until {
                let session = one_session(&t, timeout, &st, cohorts);
                match tokio::time::timeout_at(cutoff, session).await {
                    Ok(Err(e)) if Instant::now() < until => st.failures.add(&e),
                    _ => {}
                }
            }
        }));
    }
    for task in tasks {
        task.await.ok();
    }
    st
}

fn sessions_json(st: &SessionStats, secs: f64, cpu: Option<f64>) -> Value {
    let done = st.completed.load(Ordering::Relaxed);
    // Each session is seen by both of its users.
    let sessions = done as f64 / 2.0;
    json!({
        "sessionsCompleted": sessions,
        "sessionsPerSecond": sessions / secs,
        "searchToMatched": st.to_match.with(|h| percentiles(h)),
        "wholeSession": st.whole.with(|h| percentiles(h)),
        "serverCpuMsPerSession": cpu.filter(|_| sessions > 0.0).map(|c| c * 1000.0 / sessions),
        "failures": st.failures.json(),
    })
}

/// `sessions USERS SECONDS [--side a|b]`: with a side, the users are of one cohort and seek the
/// other side's, so that two generators, one per side, make only pairs between themselves (one
/// on each node of a cluster: every session crosses nodes).
pub async fn sessions(
    c: &Common,
    users: usize,
    seconds: u64,
    side: Option<char>,
) -> Result<Report> {
    let cohorts = match side {
        Some('a') => (Some("SA"), Some("SB")),
        Some(_) => (Some("SB"), Some("SA")),
        None => (None, None),
    };
    let t = Target::new(&c.url, !c.no_spread)?;
    let before = proc::sample(c.server_pid);
    let started = Instant::now();
    let st = session_loops(
        &t,
        c.timeout(),
        users,
        started + Duration::from_secs(seconds),
        cohorts,
    )
    .await;
    let secs = started.elapsed().as_secs_f64();
    let after = proc::sample(c.server_pid);
    let cpu = before.zip(after).map(|(b, a)| a.cpu_secs - b.cpu_secs);
    // Sessions per second of the run's own length (the last second only finishes sessions).
    let mut json = sessions_json(&st, seconds as f64, cpu);
    json["scenario"] = json!("sessions");
    json["users"] = json!(users);
    json["seconds"] = json!(secs);
    json["server"] = proc::delta(before, after);
    Ok(Report {
        json,
        failures: st.failures.total(),
        lost: 0,
        reordered: 0,
    })
}

/// What relay pairs measured.
struct RelayStats {
    sent: AtomicU64,
    received: AtomicU64,
    reordered: AtomicU64,
    latency: Shared<Histogram<u64>>,
    failures: Failures,
}

/// Two users matched with each other.
async fn matched_pair(
    t: &Target,
    t2: &Target,
    timeout: Duration,
    cohort: Option<&'static str>,
) -> Result<[(Conn, Value); 2]> {
    let (mut a, _) = user(t, timeout, &user_id("ra"), cohort).await?;
    let (mut b, _) = user(t2, timeout, &user_id("rb"), cohort).await?;
    a.emit("find-random-partner", &find_body(cohort)).await?;
    a.expect("searching").await?;
    b.emit("find-random-partner", &find_body(cohort)).await?;
    let ma = a.expect("matched").await?;
    let mb = b.expect("matched").await?;
    Ok([(a, ma), (b, mb)])
}

/// One side of a pair: sends `window` candidates ahead, one more for each one received; checks
/// that the partner's arrive in order.
async fn relay_side(
    mut c: Conn,
    m: Value,
    window: usize,
    epoch: Instant,
    until: Instant,
    st: &RelayStats,
) -> Result<Conn> {
    let to = |seq: u64| {
        let sent_us = epoch.elapsed().as_micros() as u64;
        json!({
            "roomId": m["roomId"],
            "targetUserId": m["partnerId"],
            "candidate": {"candidate": format!("candidate:{seq} 1 udp 1 127.0.0.1 9 typ host"), "sdpMid": "0", "sdpMLineIndex": 0, "seq": seq, "sentUs": sent_us},
        })
    };
    let mut next_seq = 0u64;
    for _ in 0..window {
        c.emit("webrtc-ice-candidate", &to(next_seq)).await?;
        next_seq += 1;
        st.sent.fetch_add(1, Ordering::Relaxed);
    }
    let mut expect_seq = 0u64;
    // Keep receiving until the partner stops too: its last candidates must not count as lost.
    let drain_until = until + Duration::from_millis(500);
    loop {
        let (n, v) = match tokio::time::timeout(
            drain_until.saturating_duration_since(Instant::now()),
            c.event(),
        )
        .await
        {
            Ok(r) => r?,
            Err(_) => break,
        };
        if (n == "partner-left" || n == "partner-reconnecting") && Instant::now() >= until {
            // The partner finished first and closed (its session may be held for it, hence
            // `partner-reconnecting`): nothing more is coming.
            break;
        }
        if n != "webrtc-ice-candidate" {
            bail!("unexpected {n} during the relay: {v:.120}");
        }
        let cand = &v["candidate"];
        let seq = cand["seq"].as_u64().unwrap_or(u64::MAX);
        let sent = cand["sentUs"].as_u64().unwrap_or(0);
        let now = epoch.elapsed().as_micros() as u64;
        st.latency
            .with(|h| h.record(now.saturating_sub(sent).max(1)).ok());
        st.received.fetch_add(1, Ordering::Relaxed);
        if seq != expect_seq {
            st.reordered.fetch_add(1, Ordering::Relaxed);
        }
        expect_seq = seq + 1;
        if Instant::now() < until {
            c.emit("webrtc-ice-candidate", &to(next_seq)).await?;
            next_seq += 1;
            st.sent.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(c)
}

#[allow(clippy::too_many_arguments)]
async fn relay_pairs(
    t: &Target,
    t2: &Target,
    timeout: Duration,
    pairs: usize,
    window: usize,
    seconds: u64,
    pid: Option<u32>,
    cohort: Option<&'static str>,
) -> (Arc<RelayStats>, f64, Option<f64>) {
    let st = Arc::new(RelayStats {
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
        reordered: AtomicU64::new(0),
        latency: Shared::new(histogram()),
        failures: Failures::new(),
    });
    let mut ready = Vec::new();
    for _ in 0..pairs {
        match matched_pair(t, t2, timeout, cohort).await {
            Ok(p) => ready.push(p),
            Err(e) => st.failures.add(&e),
        }
    }
    // The CPU window covers the relaying, not the set-up of the pairs.
    let before = proc::sample(pid);
    let epoch = Instant::now();
    let until = epoch + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for [(a, ma), (b, mb)] in ready {
        for (c, m) in [(a, ma), (b, mb)] {
            let st = st.clone();
            tasks.push(tokio::spawn(async move {
                match relay_side(c, m, window, epoch, until, &st).await {
                    Ok(c) => c.close().await,
                    Err(e) => st.failures.add(&e),
                }
            }));
        }
    }
    for task in tasks {
        task.await.ok();
    }
    let cpu = before
        .zip(proc::sample(pid))
        .map(|(b, a)| a.cpu_secs - b.cpu_secs);
    (st, seconds as f64, cpu)
}

fn relay_json(st: &RelayStats, secs: f64, cpu: Option<f64>) -> (Value, u64) {
    let sent = st.sent.load(Ordering::Relaxed);
    let received = st.received.load(Ordering::Relaxed);
    let lost = sent.saturating_sub(received);
    (
        json!({
            "relayed": received,
            "relaysPerSecond": received as f64 / secs,
            "latency": st.latency.with(|h| percentiles(h)),
            "lost": lost,
            "reordered": st.reordered.load(Ordering::Relaxed),
            "serverCpuUsPerRelay": cpu.filter(|_| received > 0).map(|c| c * 1e6 / received as f64),
            "failures": st.failures.json(),
        }),
        lost,
    )
}

/// `relay PAIRS SECONDS`.
pub async fn relay(c: &Common, pairs: usize, seconds: u64, window: usize) -> Result<Report> {
    let t = Target::new(&c.url, !c.no_spread)?;
    let t2 = match &c.partner_url {
        Some(url) => Target::new(url, !c.no_spread)?,
        None => t.clone(),
    };
    let before = proc::sample(c.server_pid);
    let (st, secs, cpu) = relay_pairs(
        &t,
        &t2,
        c.timeout(),
        pairs,
        window.max(1),
        seconds,
        c.server_pid,
        None,
    )
    .await;
    let after = proc::sample(c.server_pid);
    let (mut json, lost) = relay_json(&st, secs, cpu);
    json["scenario"] = json!("relay");
    json["pairs"] = json!(pairs);
    json["window"] = json!(window);
    json["server"] = proc::delta(before, after);
    Ok(Report {
        json,
        failures: st.failures.total(),
        lost,
        reordered: st.reordered.load(Ordering::Relaxed),
    })
}

/// A user who searches, skips, drops abruptly and comes back, at random, until `until`.
async fn chaos_user(t: Target, timeout: Duration, until: Instant, failures: Arc<Failures>) {
    while Instant::now() < until {
        let result: Result<()> = async {
            let id = user_id("chaos");
            let (mut c, _) = user(&t, timeout, &id, Some("XC")).await?;
            let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
            for _ in 0..rng.random_range(1..20) {
                let event = if rng.random_bool(0.5) {
                    "find-random-partner"
                } else {
                    "next-partner"
                };
                c.emit(event, &find_body(Some("XC"))).await?;
                tokio::time::sleep(Duration::from_millis(rng.random_range(10..200))).await;
            }
            if rng.random_bool(0.5) {
                c.abort();
            } else {
                c.close().await;
            }
            Ok(())
        }
        .await;
        if let Err(e) = result
            && Instant::now() < until
        {
            failures.add(&e);
        }
    }
}

/// `soak SECONDS`: idle connections, session loops, relay pairs and chaotic users at once; the
/// server's RSS is sampled every 5 s.
pub async fn soak(
    c: &Common,
    seconds: u64,
    idle_n: usize,
    users: usize,
    pairs: usize,
    chaos: usize,
) -> Result<Report> {
    let t = Target::new(&c.url, !c.no_spread)?;
    let timeout = c.timeout();
    let before = proc::sample(c.server_pid);
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);

    // Idle connections, held for the whole run.
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut idle = IdleCrowd::spawn(&t, idle_n, c, stop_rx, false);
    // RSS every 5 s.
    let pid = c.server_pid;
    let sampler = tokio::spawn(async move {
        let mut samples = Vec::new();
        while Instant::now() < until {
            tokio::time::sleep(
                Duration::from_secs(5).min(until.saturating_duration_since(Instant::now())),
            )
            .await;
            if let Some(s) = proc::sample(pid) {
                samples.push(
                    json!({"atSeconds": started.elapsed().as_secs(), "rssBytes": s.rss_bytes}),
                );
            }
        }
        samples
    });
    let chaos_failures = Arc::new(Failures::new());
    let chaos_tasks: Vec<_> = (0..chaos)
        .map(|_| {
            tokio::spawn(chaos_user(
                t.clone(),
                timeout,
                until,
                chaos_failures.clone(),
            ))
        })
        .collect();
    // Each kind of user meets only its own kind (see `wire::user`).
    let sessions_fut = session_loops(&t, timeout, users, until, (Some("XS"), Some("XS")));
    let relay_secs = seconds.saturating_sub(2).max(1);
    let relay_fut = relay_pairs(&t, &t, timeout, pairs, 1, relay_secs, None, Some("XR"));
    let (st, (rs, rsecs, _)) = tokio::join!(sessions_fut, relay_fut);
    for task in chaos_tasks {
        task.await.ok();
    }
    stop_tx.send(true).ok();
    idle.join().await;
    let idle_failures = idle.failures;
    let rss = sampler.await.unwrap_or_default();
    let after = proc::sample(c.server_pid);
    let secs = started.elapsed().as_secs_f64();
    let (relay, lost) = relay_json(&rs, rsecs, None);
    let failures =
        st.failures.total() + rs.failures.total() + idle_failures.total() + chaos_failures.total();
    Ok(Report {
        json: json!({
            "scenario": "soak",
            "seconds": secs,
            "sessions": sessions_json(&st, secs, None),
            "relay": relay,
            "idleFailures": idle_failures.json(),
            "chaosFailures": chaos_failures.json(),
            "serverRss": rss,
            "server": proc::delta(before, after),
        }),
        failures,
        lost,
        reordered: rs.reordered.load(Ordering::Relaxed),
    })
}
