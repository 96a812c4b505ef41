//! The container image's command, run on this machine: no Docker engine runs here, so the
//! runtime stage's `ENV` and `CMD` are read from the Dockerfile and executed as written, with the
//! binary on `PATH` where the image puts it. Only the listen address is moved to loopback and a
//! free port (this machine's rule for tests). It must start, answer `/health`, and stop cleanly
//! on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The `ENV` pairs and the `CMD` of the Dockerfile's last stage.
fn runtime_stage() -> (Vec<(String, String)>, Vec<String>) {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile"))
        .expect("a Dockerfile at the repository root");
    // Join continuation lines, then keep what follows the last FROM.
    let joined = text.replace("\\\n", " ");
    let lines: Vec<&str> = joined.lines().collect();
    let last = lines
        .iter()
        .rposition(|l| l.trim_start().starts_with("FROM "))
        .expect("a FROM line");
    let mut env = Vec::new();
    let mut cmd = None;
    for line in lines.iter().skip(last) {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("ENV ") {
            for pair in rest.split_whitespace() {
                let (k, v) = pair.split_once('=').expect("ENV KEY=value");
                env.push((k.to_string(), v.trim_matches('"').to_string()));
            }
        } else if let Some(rest) = line.strip_prefix("CMD ") {
            cmd = Some(serde_json::from_str::<Vec<String>>(rest).expect("CMD in exec form"));
        }
    }
    (env, cmd.expect("a CMD"))
}

#[test]
fn the_images_command_starts_the_server_and_stops_on_sigterm() {
    let (env, cmd) = runtime_stage();
    assert_eq!(cmd[0], "roulette", "the binary is run by name from PATH");
    assert!(env.iter().any(|(k, v)| k == "PORT" && v == "3001"));
    assert!(env.iter().any(|(k, v)| k == "HOST" && v == "0.0.0.0"));
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_roulette"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .env_clear()
        .env("PATH", path)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        // Text logs are easier to scan for the address than JSON ones; the rest is as written.
        .env("LOG_FORMAT", "text")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the CMD runs");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(i) = line.find("listening on http://") {
                let addr: String = line[i + 20..]
                    .chars()
                    .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
                    .collect();
                tx.send(addr).ok();
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(15))
        .expect("the server announced its address");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (code, body) = rt.block_on(async {
        let r = reqwest::get(format!("http://{addr}/health")).await.unwrap();
        (
            r.status().as_u16(),
            r.json::<serde_json::Value>().await.unwrap(),
        )
    });
    assert_eq!(code, 200);
    assert_eq!(body["status"], "ok");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(12);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "did not stop after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
}
