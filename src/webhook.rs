//! Signed webhooks: what happened in each session and what operators did, POSTed to the app's
//! own backend (`WEBHOOK_URL`) as JSON `{id, type, timestamp, data}`, signed with
//! `WEBHOOK_SECRET`.
//!
//! The signature header is `Roulette-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
//! "<t>.<body>">`: the receiver recomputes it over the raw body and refuses an old `t`. Each
//! event has a unique `id` for de-duplication (a retried delivery repeats it).
//!
//! Delivery never blocks or slows signaling: an event is handed over a bounded queue with
//! `try_send`; when the queue is full it is dropped and counted
//! (`roulette_webhooks_dropped_total`). A delivery that fails (an error, a timeout, a status
//! other than 2xx) is retried with backoff, a few at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::{Semaphore, mpsc};

/// Attempts per event: the first and four retries, 1 s, 2 s, 4 s and 8 s apart.
const ATTEMPTS: u32 = 5;
/// The event a flood is made of.
const REPORTED: &str = "user.reported";
/// Deliveries in flight at once (a receiver that hangs holds at most this many).
const IN_FLIGHT: usize = 16;
/// How long one delivery may take.
const TIMEOUT: Duration = Duration::from_secs(5);

/// What webhooks need of the settings (built by [`crate::config`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    /// `WEBHOOK_URL`; unset: no webhooks.
    pub url: Option<String>,
    /// `WEBHOOK_SECRET`, the signing key.
    pub secret: Option<String>,
    /// `WEBHOOK_QUEUE`: events waiting to be delivered, at most.
    pub queue: usize,
}

/// One event as the receiver gets it.
#[derive(Debug, Serialize)]
struct Event<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'a str,
    timestamp: u64,
    data: serde_json::Value,
}

/// An event ready to send: its body, serialized once.
struct Queued {
    kind: &'static str,
    body: Arc<str>,
}

/// The share of the queue `user.reported` events may hold (one in this many places): a flood
/// of reports never fills the places of real calls' `session.*` events and operators' acts.
const REPORTS_SHARE: usize = 4;

/// The sending side; cheap to hold in the node.
#[derive(Debug)]
pub(crate) struct Webhooks {
    tx: mpsc::Sender<Queued>,
    /// `user.reported` events in the queue now.
    reports: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Queued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kind)
    }
}

impl Webhooks {
    /// Starts the delivery task (on the current Tokio runtime); `None` without `WEBHOOK_URL`.
    pub(crate) fn start(settings: &Settings) -> Option<Webhooks> {
        let url = settings.url.clone()?;
        let secret = settings.secret.clone().unwrap_or_default();
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let reports = Arc::new(AtomicUsize::new(0));
        tokio::spawn(deliver_all(url, secret, rx, reports.clone()));
        Some(Webhooks { tx, reports })
    }

    /// Queues an event of `kind` with `data`; it is dropped (and counted) when the queue is full,
    /// and a `user.reported` event also when reports hold their share of it already.
    pub(crate) fn emit(&self, kind: &'static str, data: serde_json::Value) {
        let report = kind == REPORTED;
        if report && self.reports.load(Ordering::Relaxed) >= self.tx.max_capacity() / REPORTS_SHARE
        {
            crate::metrics::webhook("shed");
            return;
        }
        let event = Event {
            id: format!("evt_{}", crate::model::uuid_v4().simple()),
            kind,
            timestamp: crate::protocol::outgoing::now_ms(),
            data,
        };
        let body: Arc<str> = serde_json::to_string(&event)
            .expect("events serialize")
            .into();
        if report {
            self.reports.fetch_add(1, Ordering::Relaxed);
        }
        if self.tx.try_send(Queued { kind, body }).is_err() {
            if report {
                self.reports.fetch_sub(1, Ordering::Relaxed);
            }
            crate::metrics::webhook("dropped");
        }
    }

    /// Events waiting in the queue.
    pub(crate) fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}

/// `t=<t>,v1=<hex HMAC-SHA256 of "<t>.<body>">`.
pub(crate) fn signature(secret: &str, t: u64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(format!("{t}.{body}").as_bytes());
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Takes events off the queue and delivers each on a task of its own, at most [`IN_FLIGHT`] at
/// once (in the order they came when the receiver keeps up).
async fn deliver_all(
    url: String,
    secret: String,
    mut rx: mpsc::Receiver<Queued>,
    reports: Arc<AtomicUsize>,
) {
    let client = match reqwest::Client::builder().timeout(TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("webhooks off: no HTTP client ({e})");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let (url, secret): (Arc<str>, Arc<str>) = (url.into(), secret.into());
    while let Some(ev) = rx.recv().await {
        if ev.kind == REPORTED {
            reports.fetch_sub(1, Ordering::Relaxed);
        }
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (client, url, secret) = (client.clone(), url.clone(), secret.clone());
        tokio::spawn(async move {
            deliver(&client, &url, &secret, &ev).await;
            drop(slot);
        });
    }
}

/// One event, with its retries.
async fn deliver(client: &reqwest::Client, url: &str, secret: &str, ev: &Queued) {
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            crate::metrics::webhook("retried");
            tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
        }
        let t = crate::ice::unix_now();
        let sent = client
            .post(url)
            .header("content-type", "application/json")
            .header("roulette-signature", signature(secret, t, &ev.body))
            .body(ev.body.to_string())
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => {
                crate::metrics::webhook("delivered");
                return;
            }
            Ok(r) => {
                tracing::debug!(kind = ev.kind, status = %r.status(), attempt, "webhook refused")
            }
            Err(e) => tracing::debug!(kind = ev.kind, attempt, "webhook not delivered: {e}"),
        }
    }
    tracing::warn!(kind = ev.kind, "webhook given up after {ATTEMPTS} attempts");
    crate::metrics::webhook("failed");
}

#[cfg(test)]
mod tests {
    use super::signature;

    #[test]
    fn the_signature_is_hmac_sha256_of_the_timestamp_and_the_body() {
        // `printf '1700000000.{}' | openssl dgst -sha256 -hmac secret`, the README's recipe.
        assert_eq!(
            signature("secret", 1_700_000_000, "{}"),
            "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
        assert_ne!(
            signature("other", 1_700_000_000, "{}"),
            signature("secret", 1_700_000_000, "{}")
        );
    }
}
