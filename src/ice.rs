//! ICE servers for clients: STUN URLs, and TURN with time-limited credentials.
//!
//! TURN credentials follow the TURN REST scheme that coturn implements with `use-auth-secret`:
//! the username is `<expiry>:<userId>` (expiry in Unix seconds) and the credential is the
//! base64 of HMAC-SHA1(secret, username). The TURN server checks both without talking to us, and
//! a leaked credential dies at its expiry. Static TURN credentials (`TURN_USERNAME` /
//! `TURN_PASSWORD`) are supported for servers without a shared secret.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

use crate::protocol::outgoing::IceServer;

/// The ICE configuration handed to clients.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ice {
    stun: Vec<String>,
    turn: Vec<String>,
    secret: Option<String>,
    ttl_secs: u64,
    static_credentials: Option<(String, String)>,
}

/// The TURN REST credential for `username` under `secret`.
pub fn turn_credential(secret: &str, username: &str) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// What the ICE servers need of the settings (built by [`crate::config`]).
#[derive(Debug, Clone, Default)]
pub(crate) struct Settings {
    /// `STUN_URLS`, comma-separated.
    pub stun_urls: String,
    /// `TURN_URLS`, comma-separated.
    pub turn_urls: String,
    /// `TURN_SERVER_URL`, the Node server's name for more TURN URLs.
    pub turn_server_url: Option<String>,
    /// `TURN_SECRET`: time-limited credentials (the TURN REST scheme).
    pub turn_secret: Option<String>,
    /// `TURN_TTL`: how long a credential is valid, in seconds.
    pub turn_ttl: u64,
    /// `TURN_USERNAME`: a static credential's user.
    pub turn_username: Option<String>,
    /// `TURN_PASSWORD`: a static credential's password.
    pub turn_password: Option<String>,
}

impl Ice {
    /// The ICE servers the settings name.
    pub(crate) fn new(config: &Settings) -> Ice {
        let list = |v: &str| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect::<Vec<_>>()
        };
        let mut turn = list(&config.turn_urls);
        if let Some(legacy) = &config.turn_server_url {
            turn.extend(list(legacy));
        }
        Ice {
            stun: list(&config.stun_urls),
            turn,
            secret: config.turn_secret.clone(),
            ttl_secs: config.turn_ttl,
            static_credentials: config
                .turn_username
                .clone()
                .zip(config.turn_password.clone()),
        }
    }

    /// How long a TURN credential stays valid, in seconds.
    pub(crate) fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// RTCIceServer objects for `user` at Unix time `now_secs`.
    pub(crate) fn servers(&self, user: &str, now_secs: u64) -> Vec<IceServer> {
        let mut out = Vec::with_capacity(2);
        if !self.stun.is_empty() {
            out.push(IceServer {
                urls: self.stun.clone(),
                username: None,
                credential: None,
            });
        }
        if !self.turn.is_empty() {
            let (username, credential) = match (&self.secret, &self.static_credentials) {
                (Some(secret), _) => {
                    let username = format!("{}:{user}", now_secs + self.ttl_secs);
                    let credential = turn_credential(secret, &username);
                    (username, credential)
                }
                (None, Some((u, p))) => (u.clone(), p.clone()),
                // TURN without credentials is refused by every TURN server; say so at start.
                (None, None) => return out,
            };
            out.push(IceServer {
                urls: self.turn.clone(),
                username: Some(username),
                credential: Some(credential),
            });
        }
        out
    }

    /// A problem with the settings worth a warning at start.
    pub(crate) fn warning(&self) -> Option<&'static str> {
        (!self.turn.is_empty() && self.secret.is_none() && self.static_credentials.is_none())
            .then_some("TURN_URLS is set without TURN_SECRET or TURN_USERNAME/TURN_PASSWORD: TURN is not offered")
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credential_matches_the_published_test_vector() {
        assert_eq!(
            turn_credential("s3cr3t", "1700000000:alice"),
            "81mjszbESz91Gv1n2xG/SVLX+uY="
        );
    }

    #[test]
    fn clients_get_stun_and_expiring_turn_credentials() {
        let c = crate::config::Config::from_flags([
            "--stun-urls",
            "stun:stun.example.com:3478",
            "--turn-urls",
            "turn:turn.example.com:3478?transport=udp, turns:turn.example.com:5349",
            "--turn-secret",
            "s3cr3t",
            "--turn-ttl",
            "3600",
        ])
        .unwrap();
        let servers = Ice::new(&c.ice()).servers("alice", 1_699_996_400);
        assert_eq!(servers.len(), 2);
        assert_eq!(servers[0].urls, ["stun:stun.example.com:3478"]);
        assert!(servers[0].username.is_none());
        assert_eq!(servers[1].urls.len(), 2);
        assert_eq!(servers[1].username.as_deref(), Some("1700000000:alice"));
        assert_eq!(
            servers[1].credential.as_deref(),
            Some("81mjszbESz91Gv1n2xG/SVLX+uY=")
        );
        let json = serde_json::to_value(&servers[0]).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"urls": ["stun:stun.example.com:3478"]})
        );
    }

    #[test]
    fn static_turn_credentials_and_missing_ones() {
        let c = crate::config::Config::from_flags([
            "--stun-urls",
            "",
            "--turn-server-url",
            "turn:t.example.com",
            "--turn-username",
            "u",
            "--turn-password",
            "p",
        ])
        .unwrap();
        let s = Ice::new(&c.ice()).servers("bob", 0);
        assert_eq!(s.len(), 1);
        assert_eq!(
            (s[0].username.as_deref(), s[0].credential.as_deref()),
            (Some("u"), Some("p"))
        );
        let bare =
            crate::config::Config::from_flags(["--turn-urls", "turn:t.example.com"]).unwrap();
        let ice = Ice::new(&bare.ice());
        assert!(ice.warning().is_some());
        assert!(ice.servers("bob", 0).iter().all(|s| s.username.is_none()));
    }
}
