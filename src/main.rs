//! The `roulette` binary: load settings, set up logging, serve until SIGTERM or SIGINT.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use roulette::{Config, LogFormat};
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's allocator: a server that opens thousands of sessions at once
/// (long-polling handshakes, each with its HTTP buffers, among long-lived session objects) kept
/// the freed handshake memory resident under glibc: 20 KB per idle session of the official client
/// at 8,000, against 4.8 KB with mimalloc (BENCHMARKS.md, 2026-12-01).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its option enum, v3 header). Freed pages are given back
/// at once instead of after 10 ms: mimalloc purges delayed pages only when the same thread
/// allocates again, so a server that goes idle after a burst of handshakes kept them (8.9–13.3 KB
/// per idle session at 8,000 with the delay, 5.5 KB without; relay and session CPU unchanged
/// within this machine's noise).
const MI_OPTION_PURGE_DELAY: std::os::raw::c_int = 15;

fn init_tracing(config: &Config) {
    // An empty RUST_LOG counts as unset, so LOG_LEVEL still applies.
    let from_env = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty());
    let filter = from_env
        .map_or_else(|| EnvFilter::try_new(&config.log_level), EnvFilter::try_new)
        .unwrap_or_else(|e| {
            eprintln!("error: invalid LOG_LEVEL {:?}: {e}", config.log_level);
            std::process::exit(2);
        });
    // Colour only for a person at a terminal: a file or the journal gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match config.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Every connection is a file descriptor: use all the kernel allows.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::debug!(limit = n, "open file limit"),
        Err(e) => tracing::warn!("cannot raise the open file limit: {e}"),
    }
}

/// Resolves on SIGINT or SIGTERM. The handlers are installed when this is called, not when the
/// future is first polled: a SIGTERM that comes right after the server announced its address
/// (while the main thread was still setting up) killed the process instead of draining it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    async move {
        tokio::select! {
            _ = recv(int.as_mut()) => tracing::info!("SIGINT received"),
            _ = recv(term.as_mut()) => tracing::info!("SIGTERM received"),
        }
    }
}

/// The next signal of `s`; never, without a handler.
async fn recv(s: Option<&mut tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

fn main() -> ExitCode {
    // SAFETY: sets one of mimalloc's global options before any thread but this one runs;
    // mimalloc reads options atomically.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    let config = Config::load();
    if let Err(e) = roulette::Verifier::new(&config.auth()) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    if let Err(e) = config.check() {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    init_tracing(&config);
    raise_open_file_limit();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        builder.worker_threads(config.worker_threads.into());
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = shutdown_signal();
        let addr = SocketAddr::new(config.host, config.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        let bound = listener.local_addr()?;
        tracing::info!(
            version = env!("CARGO_PKG_VERSION"),
            "listening on http://{bound}"
        );
        roulette::run(listener, config, shutdown).await
    });
    runtime.shutdown_timeout(Duration::from_millis(500));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}
