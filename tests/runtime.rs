//! The process's own settings, checked on the real binary: `WORKER_THREADS` decides how many
//! threads run connections and handlers, so an operator can leave cores to a process beside the
//! server.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Starts the server with `args` on a free loopback port and waits until it listens.
fn start(args: &[&str]) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_roulette"))
        .args(["--host", "127.0.0.1", "--port", "0", "--log-format", "text"])
        .args(args)
        .env_remove("TOKIO_WORKER_THREADS")
        .env_remove("WORKER_THREADS")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the server starts");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if line.contains("listening on http://") {
                tx.send(()).ok();
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(15))
        .expect("the server announced its address");
    child
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
        let mut got = worker_threads(child.id());
        for _ in 0..100 {
            if got == want {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            got = worker_threads(child.id());
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(got, want, "worker threads with {args:?}");
    }
}
