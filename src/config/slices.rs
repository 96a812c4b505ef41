//! Each module's slice of the settings: built here, so that only `config` knows them all.

use std::time::Duration;

use super::Config;
use crate::core::CoreConfig;

impl Config {
    /// The timings the core enforces.
    pub(crate) fn core(&self) -> CoreConfig {
        CoreConfig {
            max_room_duration: Duration::from_millis(self.max_room_duration_ms),
            max_waiting_time: Duration::from_millis(self.max_waiting_time_ms),
            queue_status_interval: Duration::from_millis(self.queue_status_interval_ms),
            preference_relax: Duration::from_millis(self.preference_relax_ms),
            block_ttl: Duration::from_millis(self.block_ttl_ms),
            reconnect_grace: Duration::from_millis(self.reconnect_grace_ms),
        }
    }

    /// TCP connections one peer address may hold in the HTTP stage; 0 for no limit (see
    /// `MAX_HTTP_CONNECTIONS_PER_IP`).
    pub(crate) fn http_connections_per_ip(&self) -> usize {
        if self.trust_proxy != 0 {
            return 0;
        }
        self.max_http_connections_per_ip
            .unwrap_or(self.max_connections_per_ip.saturating_mul(2)) as usize
    }
    /// The limits' slice.
    pub(crate) fn limits(&self) -> crate::limits::Settings {
        crate::limits::Settings {
            max_connections_per_ip: self.max_connections_per_ip,
            max_new_connections_per_ip: self.max_new_connections_per_ip,
            rate_limit_window_ms: self.rate_limit_window_ms,
            rate_limit_max_requests: self.rate_limit_max_requests,
            signal_events_per_sec: self.signal_events_per_sec,
            chat_events_per_sec: self.chat_events_per_sec,
            search_events_per_min: self.search_events_per_min,
            other_events_per_sec: self.other_events_per_sec,
            flood_disconnect_after: self.flood_disconnect_after,
            reports_per_min: self.reports_per_min,
            reports_per_ip_per_min: self.reports_per_ip_per_min,
            trust_proxy: self.trust_proxy,
        }
    }

    /// Token authentication's slice.
    pub fn auth(&self) -> crate::auth::Settings {
        crate::auth::Settings {
            jwt_secret: self.jwt_secret.clone(),
            jwt_public_key: self.jwt_public_key.clone(),
            jwt_audience: self.jwt_audience.clone(),
            jwt_issuer: self.jwt_issuer.clone(),
        }
    }

    /// The ICE servers' slice.
    pub(crate) fn ice(&self) -> crate::ice::Settings {
        crate::ice::Settings {
            stun_urls: self.stun_urls.clone(),
            turn_urls: self.turn_urls.clone(),
            turn_server_url: self.turn_server_url.clone(),
            turn_secret: self.turn_secret.clone(),
            turn_ttl: self.turn_ttl,
            turn_username: self.turn_username.clone(),
            turn_password: self.turn_password.clone(),
        }
    }

    /// The bus's slice: `None` without `REDIS_URL`.
    pub(crate) fn bus(&self) -> Option<crate::bus::Settings> {
        Some(crate::bus::Settings {
            url: self.redis_url.clone()?,
            ca_file: self.redis_ca_file.clone(),
            prefix: self.redis_prefix.clone(),
            node_id: self.node_id.clone(),
            node_timeout: Duration::from_millis(self.node_timeout_ms),
            link: self.link_address.clone(),
        })
    }

    /// The node's slice: the core, the transport, the limits, authentication, ICE.
    pub(crate) fn node(&self) -> crate::node::Settings {
        crate::node::Settings {
            core: self.core(),
            max_blocks: self.max_blocks as usize,
            clustered: self.redis_url.is_some(),
            transport: self.transport(),
            limits: self.limits(),
            auth: self.auth(),
            ice: self.ice(),
            moderation: crate::node::moderator::Settings {
                auto: crate::moderation::AutoBan {
                    reporters: self.auto_ban_reporters as usize,
                    window_secs: self.auto_ban_window_sec,
                    ban_secs: self.auto_ban_duration_sec,
                    min_call_ms: self.auto_ban_min_call_ms,
                },
                // In a cluster the bans and reports live in Redis, shared by every node.
                data_dir: (!self.data_dir.is_empty() && self.redis_url.is_none())
                    .then(|| self.data_dir.clone().into()),
            },
            webhooks: crate::webhook::Settings {
                url: self.webhook_url.clone(),
                secret: self.webhook_secret.clone(),
                queue: self.webhook_queue as usize,
            },
        }
    }

    /// The transport's settings.
    pub(crate) fn transport(&self) -> crate::ws::Settings {
        crate::ws::Settings {
            ping_interval: Duration::from_millis(self.ping_interval_ms),
            ping_timeout: Duration::from_millis(self.ping_timeout_ms),
            max_message_bytes: self.max_message_bytes as usize,
            buffer_packets: self.socket_buffer_packets as usize,
            buffer_bytes: self.socket_buffer_bytes as usize,
            recovery_grace: if self.recovery_buffer_bytes == 0 {
                Duration::ZERO
            } else {
                Duration::from_millis(self.reconnect_grace_ms)
            },
            recovery_bytes: self.recovery_buffer_bytes as usize,
        }
    }

    /// The checks that need more than one value or the file system, run before the server
    /// listens: a directory that is not there, a Redis URL that cannot be used. The message
    /// names the key and never holds the Redis password.
    pub fn check(&self) -> Result<(), String> {
        if let Some(dir) = &self.static_dir
            && !dir.is_dir()
        {
            return Err(format!(
                "STATIC_DIR: {} is not a directory (unset it to serve the built-in pages)",
                dir.display()
            ));
        }
        match (&self.redis_url, &self.redis_ca_file) {
            (Some(url), ca) => {
                crate::bus::redis_config(url, ca.as_deref())?;
            }
            (None, Some(_)) => return Err("REDIS_CA_FILE is set but REDIS_URL is not".into()),
            (None, None) => {}
        }
        if let Some(url) = &self.webhook_url {
            let parsed: Option<http::Uri> = url.parse().ok();
            if !parsed.as_ref().is_some_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
            }) {
                return Err(format!(
                    "WEBHOOK_URL: {} is not an http:// or https:// URL",
                    crate::echo::clip(url)
                ));
            }
            if self.webhook_secret.as_deref().is_none_or(str::is_empty) {
                return Err(
                    "WEBHOOK_URL is set but WEBHOOK_SECRET is not: webhooks are signed".into(),
                );
            }
        }
        Ok(())
    }

    /// The static files' settings.
    pub(crate) fn assets(&self) -> crate::assets::Settings {
        crate::assets::Settings {
            dir: self.static_dir.clone(),
        }
    }

    /// How long shutdown may take.
    pub(crate) fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }
}
