//! Settings, from command-line flags, the environment and a `.env` file, in that order of
//! precedence. Every value is typed and range-checked at start: a bad one stops the server with a
//! message naming the key, before any port is opened.

mod parse;
mod slices;

use parse::{parse_stun_urls, parse_turn_urls};

use std::net::IpAddr;

use clap::{Parser, ValueEnum};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The deployment kind, accepted for compatibility with Node deployments (`NODE_ENV`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Environment {
    /// Local development.
    Development,
    /// A live deployment: a wildcard `CLIENT_ORIGIN` is warned about.
    Production,
    /// Automated tests.
    Test,
}

/// Which browser origins may connect: `*` or an explicit list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origins {
    /// Any origin (development).
    Any,
    /// Exactly these origins, e.g. `https://app.example.com`.
    List(Vec<String>),
}

impl Origins {
    /// Whether a browser page from `origin` may connect.
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            Origins::Any => true,
            Origins::List(list) => list.iter().any(|o| o.eq_ignore_ascii_case(origin)),
        }
    }
}

fn parse_trust_proxy(raw: &str) -> Result<u8, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "" | "false" | "no" => Ok(0),
        "true" | "yes" => Ok(1),
        n => n
            .parse::<u8>()
            .map_err(|_| format!("{raw:?}: give true, false or a number of proxies (0-255)")),
    }
}

/// `LINK_ADDRESS`: `host:port`, the port a number (the name is resolved when the node joins).
fn parse_link_address(s: &str) -> Result<String, String> {
    let port = s
        .rsplit_once(':')
        .map(|(host, port)| (host, port.parse::<u16>()));
    match port {
        Some((host, Ok(p))) if !host.is_empty() && p != 0 => Ok(s.to_string()),
        _ => Err(format!(
            "{}: not host:port (an address or a name the other nodes reach, and a port)",
            crate::echo::clip(s)
        )),
    }
}

/// A log level, or `tracing` directives (`info,roulette::ws=debug`): every directive must end in
/// a level, so that a typo (`loud`) is refused instead of silencing every log line.
fn parse_log_level(raw: &str) -> Result<String, String> {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let ok = !raw.trim().is_empty()
        && raw.split(',').all(|d| {
            let level = d.rsplit_once('=').map_or(d, |(_, l)| l).trim();
            LEVELS.contains(&level.to_ascii_lowercase().as_str())
        });
    if ok {
        Ok(raw.trim().to_string())
    } else {
        Err(format!(
            "{raw:?}: give trace, debug, info, warn, error or off, or directives such as \
             info,roulette::ws=debug"
        ))
    }
}

fn parse_origins(raw: &str) -> Result<Origins, String> {
    let raw = raw.trim();
    if raw == "*" {
        return Ok(Origins::Any);
    }
    let mut list = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let part = part.trim_end_matches('/');
        let rest = part
            .strip_prefix("https://")
            .or_else(|| part.strip_prefix("http://"))
            .ok_or_else(|| format!("{part:?} is not an origin like https://app.example.com"))?;
        if rest.is_empty() || rest.contains('/') {
            return Err(format!(
                "{part:?} is not an origin (scheme://host[:port], no path)"
            ));
        }
        list.push(part.to_string());
    }
    if list.is_empty() {
        return Err("give `*` or a comma-separated list of origins".into());
    }
    Ok(Origins::List(list))
}

/// Every setting of the server. Each one is a flag (`--port`) and an environment variable
/// (`PORT`); `.env.example` documents them all with their defaults.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "roulette",
    version,
    about = "Socket.IO signaling and matchmaking server for random video chat"
)]
pub struct Config {
    /// TCP port to listen on.
    #[arg(long, env = "PORT", default_value_t = 3001)]
    pub port: u16,

    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: IpAddr,

    /// Allowed browser origins: `*` or a comma-separated list (HTTP CORS and Socket.IO handshakes).
    #[arg(long, env = "CLIENT_ORIGIN", default_value = "*", value_parser = parse_origins)]
    pub client_origin: Origins,

    /// Deployment kind: development, production or test.
    #[arg(long, env = "NODE_ENV", value_enum, default_value = "development")]
    pub node_env: Environment,

    /// A room is ended with `room-ended` after this many ms.
    #[arg(long, env = "MAX_ROOM_DURATION_MS", default_value_t = 1_800_000,
          value_parser = clap::value_parser!(u64).range(1000..=86_400_000))]
    pub max_room_duration_ms: u64,

    /// A search is ended with `search-timeout` after this many ms.
    #[arg(long, env = "MAX_WAITING_TIME_MS", default_value_t = 300_000,
          value_parser = clap::value_parser!(u64).range(1000..=86_400_000))]
    pub max_waiting_time_ms: u64,

    /// Least ms between two `queue-status` updates to one waiting user.
    #[arg(long, env = "QUEUE_STATUS_INTERVAL_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(100..=60_000))]
    pub queue_status_interval_ms: u64,

    /// After this many ms of searching, a user with interests accepts partners sharing none.
    #[arg(long, env = "PREFERENCE_RELAX_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub preference_relax_ms: u64,

    /// How long `block-user` and `report-user` keep two users apart, in ms (24 h).
    #[arg(long, env = "BLOCK_TTL_MS", default_value_t = 86_400_000,
          value_parser = clap::value_parser!(u64).range(1000..=2_592_000_000))]
    pub block_ttl_ms: u64,

    /// Most `block-user` / `report-user` blocks one node keeps in all; when full, the oldest
    /// are forgotten first. Each costs about 150 bytes. `0` means no bound.
    #[arg(long, env = "MAX_BLOCKS", default_value_t = 100_000)]
    pub max_blocks: u64,

    /// On SIGTERM/SIGINT the process exits within this many ms, whatever the clients do.
    #[arg(long, env = "SHUTDOWN_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    pub shutdown_timeout_ms: u64,

    /// Largest Socket.IO message a client may send, in bytes (WebSocket frame and polling body).
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 65_536,
          value_parser = clap::value_parser!(u64).range(4096..=16_777_216))]
    pub max_message_bytes: u64,

    /// Packets a socket may have queued for sending before further ones are refused (the
    /// sender then gets `delivery-failed`). Memory is taken only as the queue fills.
    #[arg(long, env = "SOCKET_BUFFER_PACKETS", default_value_t = 4096,
          value_parser = clap::value_parser!(u64).range(16..=65_536))]
    pub socket_buffer_packets: u64,

    /// Bytes that may wait to be sent to one client (events, errors, relays from its partner,
    /// the transport's own replies). While that much waits, events for it are refused (a
    /// partner's relay gets `delivery-failed`) and nothing more is read from it; a client that
    /// stays over it longer than `PING_TIMEOUT_MS` is disconnected. The default holds a call's
    /// set-up burst (an offer, an answer, a few dozen candidates) many times over.
    #[arg(long, env = "SOCKET_BUFFER_BYTES", default_value_t = 262_144,
          value_parser = clap::value_parser!(u64).range(16_384..=67_108_864))]
    pub socket_buffer_bytes: u64,

    /// Engine.IO ping interval in ms.
    #[arg(long, env = "PING_INTERVAL_MS", default_value_t = 25_000,
          value_parser = clap::value_parser!(u64).range(100..=300_000))]
    pub ping_interval_ms: u64,

    /// Engine.IO ping timeout in ms: a client silent this long after a ping is disconnected.
    #[arg(long, env = "PING_TIMEOUT_MS", default_value_t = 20_000,
          value_parser = clap::value_parser!(u64).range(100..=300_000))]
    pub ping_timeout_ms: u64,

    /// Removed: every client is served by Roulette's own transport now. Still read, so that a
    /// server started with it says so instead of failing.
    #[arg(long, env = "NATIVE_WEBSOCKET", hide = true)]
    pub native_websocket: Option<String>,

    /// Threads that run the connections and handlers; `0` is one per CPU core the process may
    /// use. Fewer leave cores to a process beside the server (a TURN server, say), and threads
    /// that are fewer wake each other less often.
    #[arg(long, env = "WORKER_THREADS", default_value_t = 0,
          value_parser = clap::value_parser!(u16).range(0..=1024))]
    pub worker_threads: u16,

    /// Directory of files served at `/` before the built-in demo page, dashboard and client
    /// bundles (a file of the same name there wins). Unset: the built-in files only.
    #[arg(long, env = "STATIC_DIR")]
    pub static_dir: Option<std::path::PathBuf>,

    /// Removed: the socket.io client bundle is built in (`STATIC_DIR/vendor/socket.io/` overrides
    /// it). Still read, so that a server started with it says so.
    #[arg(long, env = "CLIENT_BUNDLE_DIR", hide = true)]
    pub client_bundle_dir: Option<std::path::PathBuf>,

    /// How long the room of a user whose connection dropped is held for it to come back with
    /// its `resumeToken`, in ms. 0 ends the room at once.
    #[arg(long, env = "RECONNECT_GRACE_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub reconnect_grace_ms: u64,

    /// Bytes of events kept for one client whose connection dropped, for Socket.IO's connection
    /// state recovery (socket.io-client 4.6+ gets them again, in order, when it comes back
    /// within `RECONNECT_GRACE_MS`); a session whose missed events outgrow it ends as a
    /// departure. While connected, the events its client has not yet confirmed (with the pong of
    /// a later ping) are kept within the same bound. 0 turns recovery off: no `pid`, no offsets.
    #[arg(long, env = "RECOVERY_BUFFER_BYTES", default_value_t = 65_536,
          value_parser = clap::value_parser!(u64).range(0..=16_777_216))]
    pub recovery_buffer_bytes: u64,

    /// At shutdown each client is told to reconnect after a random delay of up to this many ms
    /// (`server-shutdown.reconnectInMs`), so that they do not all return at once.
    #[arg(long, env = "RECONNECT_SPREAD_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub reconnect_spread_ms: u64,

    /// Socket.IO connections one client address may hold open at once (0: no limit).
    #[arg(long, env = "MAX_CONNECTIONS_PER_IP", default_value_t = 50)]
    pub max_connections_per_ip: u32,

    /// TCP connections one address may hold open before their HTTP request is answered or
    /// upgraded (long-polling clients hold theirs the whole session, two at most each); further
    /// ones are closed at once. Unset: twice `MAX_CONNECTIONS_PER_IP` (so off when that is 0).
    /// Counted per TCP peer, so it only applies with `TRUST_PROXY` 0 (behind a proxy every
    /// client shares the proxy's address). `0` turns it off.
    #[arg(long, env = "MAX_HTTP_CONNECTIONS_PER_IP")]
    pub max_http_connections_per_ip: Option<u32>,

    /// New connections one client address may open per `RATE_LIMIT_WINDOW_MS` (0: no limit).
    #[arg(long, env = "MAX_NEW_CONNECTIONS_PER_IP", default_value_t = 120)]
    pub max_new_connections_per_ip: u32,

    /// The window of the per-address limits, in ms.
    #[arg(long, env = "RATE_LIMIT_WINDOW_MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1000..=86_400_000))]
    pub rate_limit_window_ms: u64,

    /// HTTP requests (pages, `/stats`, `/ice-servers`...; not `/health` or Socket.IO traffic) one
    /// client address may make per `RATE_LIMIT_WINDOW_MS` (0: no limit).
    #[arg(long, env = "RATE_LIMIT_MAX_REQUESTS", default_value_t = 100)]
    pub rate_limit_max_requests: u32,

    /// WebRTC signaling events (offer, answer, ICE candidates) per second per socket, with a
    /// burst of three times as many (0: no limit).
    #[arg(long, env = "SIGNAL_EVENTS_PER_SEC", default_value_t = 50)]
    pub signal_events_per_sec: u32,

    /// Chat and typing events per second per socket, burst three times as many (0: no limit).
    #[arg(long, env = "CHAT_EVENTS_PER_SEC", default_value_t = 5)]
    pub chat_events_per_sec: u32,

    /// Searches and skips (`find-random-partner`, `next-partner`) per minute per socket, with a
    /// burst of 10 (0: no limit).
    #[arg(long, env = "SEARCH_EVENTS_PER_MIN", default_value_t = 30)]
    pub search_events_per_min: u32,

    /// Any other event per second per socket, burst three times as many (0: no limit).
    #[arg(long, env = "OTHER_EVENTS_PER_SEC", default_value_t = 10)]
    pub other_events_per_sec: u32,

    /// A socket refused this many events as rate-limited within 10 s is disconnected (0: never).
    #[arg(long, env = "FLOOD_DISCONNECT_AFTER", default_value_t = 100)]
    pub flood_disconnect_after: u32,

    /// Reverse proxies in front of the server whose `X-Forwarded-For` entries are believed:
    /// 0 (the default) uses the TCP peer address; `true` means 1.
    #[arg(long, env = "TRUST_PROXY", default_value = "0", value_parser = parse_trust_proxy)]
    pub trust_proxy: u8,

    /// HS256 secret: when set, `authenticate` needs a JWT and the user id is its `sub`.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// RS256 or ES256 public key (PEM text, or a path to a PEM file): as `JWT_SECRET`, for
    /// tokens signed by an identity provider.
    #[arg(long, env = "JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<String>,

    /// When set, a token's `aud` must contain this value.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// When set, a token's `iss` must be this value.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// STUN servers for clients, comma-separated (empty: none).
    #[arg(
        long,
        env = "STUN_URLS",
        default_value = "stun:stun.l.google.com:19302",
        value_parser = parse_stun_urls
    )]
    pub stun_urls: String,

    /// TURN servers for clients, comma-separated (`turn:host:3478?transport=udp,turns:host:5349`).
    #[arg(long, env = "TURN_URLS", default_value = "", value_parser = parse_turn_urls)]
    pub turn_urls: String,

    /// The TURN server's shared secret (coturn `static-auth-secret`): clients get credentials
    /// that expire after `TURN_TTL` seconds.
    #[arg(long, env = "TURN_SECRET", hide_env_values = true)]
    pub turn_secret: Option<String>,

    /// Lifetime of TURN credentials, in seconds.
    #[arg(long, env = "TURN_TTL", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(60..=604_800))]
    pub turn_ttl: u64,

    /// One more TURN URL (the earlier implementation's key; added to `TURN_URLS`).
    #[arg(long, env = "TURN_SERVER_URL", value_parser = parse_turn_urls)]
    pub turn_server_url: Option<String>,

    /// Static TURN username, for TURN servers without a shared secret.
    #[arg(long, env = "TURN_USERNAME")]
    pub turn_username: Option<String>,

    /// Static TURN password, with `TURN_USERNAME`.
    #[arg(long, env = "TURN_PASSWORD", hide_env_values = true)]
    pub turn_password: Option<String>,

    /// When set, `/dashboard` and `/metrics` need it (`Authorization: Bearer …` or `?token=`),
    /// and the admin API (`/admin/…`) is served to requests that present it.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Where bans and recent reports are kept across restarts (`moderation.jsonl`), created on
    /// demand; empty: kept in memory only.
    #[arg(long, env = "DATA_DIR", default_value = "data")]
    pub data_dir: String,

    /// Where signed webhooks go (`session.started`, `session.ended`, `user.reported`,
    /// `user.banned`, `user.kicked`): an `http://` or `https://` URL; unset: none.
    #[arg(long, env = "WEBHOOK_URL")]
    pub webhook_url: Option<String>,

    /// The key webhooks are signed with (`Roulette-Signature`); required with `WEBHOOK_URL`.
    #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,

    /// Webhook events waiting for delivery, at most; more are dropped (and counted).
    #[arg(long, env = "WEBHOOK_QUEUE", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub webhook_queue: u64,

    /// A user reported by this many distinct users within `AUTO_BAN_WINDOW_SEC` is banned for
    /// `AUTO_BAN_DURATION_SEC`. `0` turns the auto-ban off.
    #[arg(long, env = "AUTO_BAN_REPORTERS", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=1000))]
    pub auto_ban_reporters: u32,

    /// A report counts for the auto-ban only when the reporter had been this many ms in a room
    /// with the reported user (accounts that report at `matched` ban nobody).
    #[arg(long, env = "AUTO_BAN_MIN_CALL_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    pub auto_ban_min_call_ms: u64,

    /// `report-user` events one socket may send per minute, all at once at most (0: no limit).
    #[arg(long, env = "REPORTS_PER_MIN", default_value_t = 6)]
    pub reports_per_min: u32,

    /// `report-user` events one client address may send per minute, all sockets together.
    #[arg(long, env = "REPORTS_PER_IP_PER_MIN", default_value_t = 30)]
    pub reports_per_ip_per_min: u32,

    /// The auto-ban's window, in seconds.
    #[arg(long, env = "AUTO_BAN_WINDOW_SEC", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=2_592_000))]
    pub auto_ban_window_sec: u64,

    /// How long an auto-ban lasts, in seconds.
    #[arg(long, env = "AUTO_BAN_DURATION_SEC", default_value_t = 86_400,
          value_parser = clap::value_parser!(u64).range(1..=315_360_000))]
    pub auto_ban_duration_sec: u64,

    /// Removed: Chart.js is built in (`STATIC_DIR/vendor/chart.js/` overrides it).
    #[arg(long, env = "CHART_BUNDLE_DIR", hide = true)]
    pub chart_bundle_dir: Option<std::path::PathBuf>,

    /// Redis to share the queue, rooms and delivery with other nodes (`redis://host:6379`, or
    /// `rediss://` for TLS; through Sentinel, `redis+sentinel://host:26379,host:26379/MASTER`).
    /// Unset: a single in-memory node.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// PEM file of the certificate authorities a `rediss://` Redis's certificate is checked
    /// against (a private CA). Unset: the system's trusted roots.
    #[arg(long, env = "REDIS_CA_FILE")]
    pub redis_ca_file: Option<std::path::PathBuf>,

    /// Prefix of every Redis key and channel of this service, so several deployments (or test
    /// runs) can share one Redis.
    #[arg(long, env = "REDIS_PREFIX", default_value = "roulette")]
    pub redis_prefix: String,

    /// This node's name in the cluster; a random one when unset. Two live nodes must not share one.
    #[arg(long, env = "NODE_ID")]
    pub node_id: Option<String>,

    /// A node that has not renewed its heartbeat for this long is dead: its users' partners on
    /// other nodes get `partner-left` and its queue entries are dropped.
    #[arg(long, env = "NODE_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1000..=600_000))]
    pub node_timeout_ms: u64,

    /// Where this node takes direct links from the other nodes of its cluster (`host:port`, a
    /// name or an address the others reach it at, such as a pod's IP; it listens on the address
    /// the name resolves to, and advertises that): messages between nodes that both have one
    /// skip Redis, which still carries everything else and takes over when a link breaks.
    /// Unset: every message goes through Redis.
    #[arg(long, env = "LINK_ADDRESS", value_parser = parse_link_address)]
    pub link_address: Option<String>,

    /// Log level or filter (`info`, `debug`, `roulette=debug,info`); `RUST_LOG` wins when set.
    #[arg(long, env = "LOG_LEVEL", default_value = "info", value_parser = parse_log_level)]
    pub log_level: String,

    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl Config {
    /// Reads `.env` (when present), then the environment and the flags. Exits with a message and
    /// status 2 on a bad value.
    pub fn load() -> Config {
        if let Err(e) = dotenvy::dotenv()
            && !e.not_found()
        {
            eprintln!("error: cannot read .env: {e}");
            std::process::exit(2);
        }
        Config::parse()
    }

    /// The defaults, with the given flags applied and the environment ignored: for tests and
    /// embedding.
    pub fn from_flags<I, T>(flags: I) -> Result<Config, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        // clap reads `env` values as it parses; parse the flags against a command with the
        // environment lookups removed so a developer's shell cannot change a test.
        use clap::{CommandFactory, FromArgMatches};
        let mut cmd = Config::command();
        let ids: Vec<clap::Id> = cmd.get_arguments().map(|a| a.get_id().clone()).collect();
        for id in ids {
            cmd = cmd.mut_arg(id, |a| a.env(None::<&str>));
        }
        let args = std::iter::once(std::ffi::OsString::from("roulette"))
            .chain(flags.into_iter().map(Into::into));
        let matches = cmd.try_get_matches_from(args)?;
        Config::from_arg_matches(&matches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_configuration() {
        let c = Config::from_flags(Vec::<String>::new()).unwrap();
        assert_eq!(c.port, 3001);
        assert_eq!(c.client_origin, Origins::Any);
        assert_eq!(c.max_room_duration_ms, 1_800_000);
        assert_eq!(c.max_waiting_time_ms, 300_000);
    }

    #[test]
    fn origins_are_parsed_and_checked() {
        let o = parse_origins("https://a.example, http://localhost:3000/").unwrap();
        assert_eq!(
            o,
            Origins::List(vec![
                "https://a.example".into(),
                "http://localhost:3000".into()
            ])
        );
        assert!(o.allows("http://localhost:3000"));
        assert!(!o.allows("https://evil.example"));
        assert!(parse_origins("a.example").is_err());
        assert!(parse_origins("https://a.example/path").is_err());
        assert!(parse_origins(" , ").is_err());
    }

    #[test]
    fn every_setting_is_documented_in_env_example_and_the_readme() {
        use clap::CommandFactory;
        let example = include_str!("../../.env.example");
        let readme = include_str!("../../README.md");
        for arg in Config::command().get_arguments() {
            let Some(env) = arg.get_env().filter(|_| !arg.is_hide_set()) else {
                continue;
            };
            let key = env.to_str().unwrap();
            assert!(
                example.contains(&format!("{key}=")),
                "{key} is missing from .env.example"
            );
            assert!(
                readme
                    .lines()
                    .any(|l| l.starts_with("| `") && l.contains(&format!("`{key}`"))),
                "{key} is missing from the README's table"
            );
        }
    }

    #[test]
    fn bad_values_are_refused_with_the_key_named() {
        let e = Config::from_flags(["--port", "70000"]).unwrap_err();
        assert!(e.to_string().contains("--port"), "{e}");
        let e = Config::from_flags(["--max-room-duration-ms", "5"]).unwrap_err();
        assert!(e.to_string().contains("max-room-duration-ms"), "{e}");
        let e = Config::from_flags(["--worker-threads", "5000"]).unwrap_err();
        assert!(e.to_string().contains("worker-threads"), "{e}");
        let e = Config::from_flags(["--log-level", "loud"]).unwrap_err();
        assert!(e.to_string().contains("log-level"), "{e}");
        for good in ["debug", "WARN", "info,roulette::ws=debug", "off"] {
            assert!(Config::from_flags(["--log-level", good]).is_ok(), "{good}");
        }
        for bad in [
            "10.0.0.5",
            ":3100",
            "node-1:0",
            "node-1:http",
            "node-1:70000",
        ] {
            let e = Config::from_flags(["--link-address", bad]).unwrap_err();
            assert!(e.to_string().contains("link-address"), "{bad}: {e}");
        }
        for good in ["10.0.0.5:3100", "node-1:3100", "[::1]:3100"] {
            assert!(
                Config::from_flags(["--link-address", good]).is_ok(),
                "{good}"
            );
        }
        for bad in [
            "http://x",
            "stun://host:3478",
            "turn:host:3478",
            "stun:",
            "stun:h?transport=udp",
        ] {
            let e = Config::from_flags(["--stun-urls", bad]).unwrap_err();
            assert!(e.to_string().contains("stun-urls"), "{bad}: {e}");
        }
        for good in [
            "",
            "stun:stun.l.google.com:19302,stuns:[::1]:5349",
            "stun:host",
        ] {
            assert!(
                Config::from_flags(["--stun-urls", good]).is_ok(),
                "{good:?}"
            );
        }
        for bad in [
            "stun:host:3478",
            "turn:host:3478?transport=sctp",
            "turn://h",
        ] {
            let e = Config::from_flags(["--turn-urls", bad]).unwrap_err();
            assert!(e.to_string().contains("turn-urls"), "{bad}: {e}");
        }
        let ok = "turn:10.0.0.1:3478?transport=udp,turns:turn.example.com:5349?transport=tcp";
        assert!(Config::from_flags(["--turn-urls", ok]).is_ok());
    }

    #[test]
    fn checks_before_listening_name_the_key_and_hide_the_password() {
        let check = |flags: &[&str]| Config::from_flags(flags).unwrap().check();
        assert!(check(&[]).is_ok());
        let e = check(&["--static-dir", "/nonexistent/roulette"]).unwrap_err();
        assert!(e.contains("STATIC_DIR"), "{e}");
        assert!(check(&["--static-dir", "."]).is_ok());
        let e = check(&["--redis-url", "notaurl"]).unwrap_err();
        assert!(e.contains("REDIS_URL"), "{e}");
        let e = check(&["--redis-url", "ftp://:hunter2@host"]).unwrap_err();
        assert!(e.contains("REDIS_URL") && !e.contains("hunter2"), "{e}");
        assert!(check(&["--redis-url", "redis://127.0.0.1:6379"]).is_ok());
        assert!(check(&["--redis-url", "rediss://:pw@redis.example.com:6380/0"]).is_ok());
        let e = check(&[
            "--redis-url",
            "rediss://h",
            "--redis-ca-file",
            "/nonexistent.pem",
        ])
        .unwrap_err();
        assert!(e.contains("REDIS_CA_FILE"), "{e}");
        let e = check(&["--redis-ca-file", "/etc/hostname"]).unwrap_err();
        assert!(e.contains("REDIS_CA_FILE"), "{e}");
    }
}
