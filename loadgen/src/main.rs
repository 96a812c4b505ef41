//! `roulette-loadgen`: simulated users for a Roulette server, speaking the real protocol
//! (Engine.IO v4 / Socket.IO v5 over WebSocket, as socket.io-client with `transports:
//! ['websocket']` does).
//!
//! Scenarios: `idle` (hold authenticated connections), `sessions` (full random-chat sessions
//! back to back), `relay` (matched pairs ping-pong ICE candidates), `soak` (all of it at once,
//! with skips and abrupt drops), and `attack` (clients that try to make the server hold memory,
//! for the abuse figures in BENCHMARKS.md). Each prints a summary and a JSON report; given the server's
//! PID it also reads the server's CPU time and RSS from `/proc`. The exit status is non-zero when
//! anything failed, was lost or arrived out of order, so a smoke run can rely on it.

mod attack;
mod floor;
mod proc;
mod scenarios;
mod wire;

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Command line.
#[derive(Parser)]
#[command(name = "roulette-loadgen", version, about)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Scenario,
}

/// Options of every scenario.
#[derive(Args, Clone)]
pub struct Common {
    /// The server's base URL.
    #[arg(long, global = true, default_value = "http://127.0.0.1:3001")]
    pub url: String,
    /// `relay`: the second member of each pair connects here instead (another node of a
    /// cluster), so that every relay crosses from one node to the other.
    #[arg(long, global = true)]
    pub partner_url: Option<String>,
    /// The server's PID, to read its CPU time and RSS from /proc (same machine only).
    #[arg(long, global = true)]
    pub server_pid: Option<u32>,
    /// Also write the JSON report here (`-` for stdout).
    #[arg(long, global = true)]
    pub json: Option<String>,
    /// Connect from 127.0.0.1 only, instead of spreading source addresses over 127.0.0.0/8.
    #[arg(long, global = true)]
    pub no_spread: bool,
    /// Connect as socket.io-client does by default: the long-polling handshake, `40` over
    /// polling, then the upgrade to WebSocket (instead of a WebSocket directly).
    #[arg(long, global = true)]
    pub polling: bool,
    /// Connections being opened at once.
    #[arg(long, global = true, default_value_t = 256)]
    pub connect_concurrency: usize,
    /// How long to wait for any one expected event, in ms.
    #[arg(long, global = true, default_value_t = 10_000)]
    pub timeout_ms: u64,
}

impl Common {
    /// The per-event timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }
}

#[derive(Subcommand)]
enum Scenario {
    /// Open N authenticated connections and hold them.
    Idle {
        /// Connections.
        n: usize,
        /// Seconds to hold them once all are open.
        #[arg(long, default_value_t = 5)]
        hold: u64,
        /// Each connection searches as a man who insists on a woman, and waits: a queue of N
        /// that nobody of the other scenarios can pair with (they state no gender).
        #[arg(long)]
        waiting: bool,
    },
    /// USERS loops of full sessions on fresh connections, for SECONDS.
    Sessions {
        /// Concurrent users.
        users: usize,
        /// Seconds.
        seconds: u64,
        /// `a` or `b`: users meet only users of the other side (two generators, one per side).
        #[arg(long, value_parser = ["a", "b"])]
        side: Option<String>,
    },
    /// PAIRS matched pairs ping-ponging ICE candidates for SECONDS.
    Relay {
        /// Pairs.
        pairs: usize,
        /// Seconds.
        seconds: u64,
        /// Candidates in flight per direction.
        #[arg(long, default_value_t = 1)]
        window: usize,
    },
    /// Everything at once, with skips and abrupt drops, for SECONDS.
    Soak {
        /// Seconds.
        seconds: u64,
        /// Idle connections held meanwhile.
        #[arg(long, default_value_t = 1000)]
        idle: usize,
        /// Session loops.
        #[arg(long, default_value_t = 50)]
        users: usize,
        /// Relay pairs.
        #[arg(long, default_value_t = 20)]
        pairs: usize,
        /// Users who skip, drop and come back at random.
        #[arg(long, default_value_t = 40)]
        chaos: usize,
    },
    /// Not a client: serves the raw forwarding floor that `relay` can be run against (see
    /// `floor.rs`), on LISTEN, until stopped.
    Floor {
        /// Address to listen on.
        #[arg(default_value = "127.0.0.1:3974")]
        listen: String,
    },
    /// KIND of abuse for SECONDS, reporting the server's RSS before, at its peak and after.
    Attack {
        /// What the attacking clients do.
        #[arg(value_enum)]
        kind: attack::Kind,
        /// Seconds.
        seconds: u64,
        /// Clients, for the attacks that use several (`names`, `idle-tcp`).
        #[arg(long, default_value_t = 20)]
        conns: usize,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("warning: cannot raise the open file limit: {e}");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    wire::POLLING_FIRST.store(cli.common.polling, std::sync::atomic::Ordering::Relaxed);
    let c = cli.common.clone();
    let report = rt.block_on(async move {
        match cli.scenario {
            Scenario::Idle { n, hold, waiting } => scenarios::idle(&c, n, hold, waiting).await,
            Scenario::Sessions {
                users,
                seconds,
                side,
            } => {
                let side = side.and_then(|s| s.chars().next());
                scenarios::sessions(&c, users, seconds, side).await
            }
            Scenario::Relay {
                pairs,
                seconds,
                window,
            } => scenarios::relay(&c, pairs, seconds, window).await,
            Scenario::Soak {
                seconds,
                idle,
                users,
                pairs,
                chaos,
            } => scenarios::soak(&c, seconds, idle, users, pairs, chaos).await,
            Scenario::Floor { listen } => floor::serve(&listen).await.map(|never| match never {}),
            Scenario::Attack {
                kind,
                seconds,
                conns,
            } => attack::run(&c, kind, seconds, conns).await,
        }
    });
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let bad = report.problems();
    println!("{}", report.summary());
    let json = serde_json::to_string_pretty(&report.json).expect("serialisable");
    match cli.common.json.as_deref() {
        Some("-") => println!("{json}"),
        Some(path) => {
            if let Err(e) = std::fs::write(path, &json) {
                eprintln!("error: cannot write {path}: {e}");
                return std::process::ExitCode::from(2);
            }
        }
        None => {}
    }
    rt.shutdown_timeout(Duration::from_millis(200));
    if bad > 0 {
        eprintln!("{bad} failures, lost or reordered messages");
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
