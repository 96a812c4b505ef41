//! The process's own settings, checked on the real binary: `WORKER_THREADS` decides how many
//! threads run connections and handlers, so an operator can leave cores to a process beside the
//! server; a production start without `ADMIN_TOKEN` says that the operator routes are open.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Proc, spawn_listening};

/// Starts the server with `args` on a free loopback port and waits until it listens.
fn start(args: &[&str]) -> Proc {
    start_logged(args).0
}

/// The same, with what it logged until a moment after it listened (the warnings about the
/// settings come as it starts serving).
fn start_logged(args: &[&str]) -> (Proc, Vec<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_roulette"));
    cmd.args(["--host", "127.0.0.1", "--port", "0", "--log-format", "text"])
        .args(args)
        .env_remove("TOKIO_WORKER_THREADS")
        .env_remove("WORKER_THREADS")
        .env_remove("ADMIN_TOKEN")
        .env_remove("NODE_ENV")
        .stderr(Stdio::null());
    let server = spawn_listening(cmd);
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(500);
    while let Ok(line) = server
        .lines
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        lines.push(line);
    }
    (server.proc, lines)
}

#[test]
fn production_without_an_admin_token_warns_that_metrics_and_dashboard_are_open() {
    let warned = |lines: &[String]| lines.iter().any(|l| l.contains("ADMIN_TOKEN is unset"));
    for (args, want) in [
        (vec!["--node-env", "production"], true),
        (
            vec!["--node-env", "production", "--admin-token", "t0ken"],
            false,
        ),
        (vec![], false),
    ] {
        let (mut child, lines) = start_logged(&args);
        child.kill();
        assert_eq!(warned(&lines), want, "{args:?}: {lines:?}");
    }
}

/// The process's threads that run the runtime's workers (tokio names them `tokio-rt-worker`).
fn worker_threads(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("a Linux /proc")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim() == "tokio-rt-worker")
        .count()
}

#[test]
fn worker_threads_sets_how_many_threads_run_the_server() {
    for (args, want) in [
        (vec!["--worker-threads", "1"], 1),
        (vec!["--worker-threads", "3"], 3),
        (vec![], std::thread::available_parallelism().unwrap().get()),
    ] {
        let mut child = start(&args);
        // The workers name themselves once they run, which may be just after the listener.
        let mut got = worker_threads(child.0.id());
        for _ in 0..100 {
            if got == want {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            got = worker_threads(child.0.id());
        }
        child.kill();
        assert_eq!(got, want, "worker threads with {args:?}");
    }
}
