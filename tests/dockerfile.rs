//! The deployment files, read as their tools read them and run on this machine (no Docker engine
//! or Kubernetes runs here):
//! - the container image's command: the runtime stage's `ENV` and `CMD` executed as written, with
//!   the binary on `PATH` where the image puts it; it must start, answer `/health`, and stop
//!   cleanly on SIGTERM; the build stage builds the dependencies before it copies the sources;
//! - the systemd unit with the environment file the deployment guide installs, merged as systemd
//!   merges them: production settings and JSON logs;
//! - the Kubernetes manifests: the probes' paths answer as they must with Redis down (liveness
//!   200, readiness 503) and once it is up, and the pod's user is the image's.
//!
//! Only the listen address is ever moved to loopback and a free port (this machine's rule for
//! tests).

mod common;

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
    let mut env = env;
    env.push(("PATH".into(), path));
    // Text logs are easier to scan for the address than JSON ones; the rest is as written.
    env.push(("LOG_FORMAT".into(), "text".into()));
    let (mut server, addr, _lines) = start_program(&cmd, &env);
    let child = &mut server.0;
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

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The binary started with exactly `env` (plus a loopback address), and its address once it
/// listens; its stdout lines go to `lines`.
fn start_with_env(
    env: &[(String, String)],
) -> (common::Proc, String, std::sync::mpsc::Receiver<String>) {
    start_program(&[env!("CARGO_BIN_EXE_roulette").to_string()], env)
}

/// `cmd` run with exactly `env` (the listen address moved to loopback and a free port), once it
/// announces its address.
fn start_program(
    cmd: &[String],
    env: &[(String, String)],
) -> (common::Proc, String, std::sync::mpsc::Receiver<String>) {
    let mut command = Command::new(&cmd[0]);
    command
        .args(&cmd[1..])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("HOST", "127.0.0.1")
        .env("PORT", "0")
        .stderr(Stdio::inherit());
    let s = common::spawn_listening(command);
    (s.proc, s.addr, s.lines)
}

async fn status(addr: &str, path: &str) -> u16 {
    reqwest::get(format!("http://{addr}{path}"))
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[test]
fn the_build_stage_builds_the_dependencies_before_it_copies_the_sources() {
    let text = repo_file("Dockerfile").replace("\\\n", " ");
    let build: Vec<&str> = text
        .lines()
        .map(str::trim)
        .skip_while(|l| !l.starts_with("FROM rust"))
        .take_while(|l| !l.starts_with("FROM debian"))
        .collect();
    let at = |what: &dyn Fn(&str) -> bool| build.iter().position(|l| what(l));
    let manifests = at(&|l| l.starts_with("COPY Cargo.toml Cargo.lock")).expect("manifests first");
    let all = at(&|l| l == "COPY . .").expect("then the sources");
    let deps = at(&|l| l.starts_with("RUN") && l.contains("cargo build --release --locked"))
        .expect("a cargo build");
    assert!(manifests < deps && deps < all, "{build:#?}");
    // Each target the manifests name gets a placeholder, or that first build fails.
    for target in [
        "src/main.rs",
        "src/lib.rs",
        "loadgen/src/main.rs",
        "benches/matchmaker.rs",
    ] {
        assert!(build[deps].contains(target), "{target} has a placeholder");
    }
    for manifest in ["Cargo.toml", "loadgen/Cargo.toml"] {
        for line in repo_file(manifest).lines() {
            if let Some(path) = line.trim().strip_prefix("path = \"") {
                let path = path.trim_end_matches('"');
                let full = if manifest.starts_with("loadgen") {
                    format!("loadgen/{path}")
                } else {
                    path.to_string()
                };
                assert!(
                    build[deps].contains(&full),
                    "{full} ({manifest}) has a placeholder"
                );
            }
        }
    }
}

#[test]
fn the_systemd_unit_with_the_guides_env_file_runs_in_production_with_json_logs() {
    let unit = repo_file("deploy/roulette.service");
    // systemd: Environment= lines in order, then EnvironmentFile= overrides them.
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| {
        env.retain(|(key, _)| key != k);
        env.push((k.to_string(), v.to_string()));
    };
    let mut files = Vec::new();
    for line in unit.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Environment=") {
            for pair in rest.split_whitespace() {
                let (k, v) = pair.split_once('=').unwrap();
                set(k, v);
            }
        } else if let Some(f) = line.strip_prefix("EnvironmentFile=") {
            files.push(f.trim_start_matches('-').to_string());
        }
    }
    assert_eq!(files, ["/etc/roulette/roulette.env"]);
    let guide = repo_file("deploy/README.md");
    assert!(
        guide.contains("deploy/roulette.env /etc/roulette/roulette.env"),
        "the guide installs deploy/roulette.env as the unit's file"
    );
    for line in repo_file("deploy/roulette.env").lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once('=').expect("KEY=value");
        set(k, v);
    }
    let get = |k: &str| {
        env.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("NODE_ENV"), Some("production"));
    assert_eq!(get("LOG_FORMAT"), Some("json"));

    let (_server, addr, lines) = start_with_env(&env);
    let first = lines.recv_timeout(Duration::from_secs(5)).unwrap();
    let log: serde_json::Value = serde_json::from_str(&first)
        .unwrap_or_else(|e| panic!("a JSON log line, not {first:?}: {e}"));
    assert!(log["fields"]["message"].is_string(), "{log}");
    assert!(!first.contains('\u{1b}'), "no colour codes in the journal");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert_eq!(rt.block_on(status(&addr, "/health")), 200);
}

#[tokio::test]
async fn the_kubernetes_probes_answer_as_the_manifest_expects_with_redis_down_and_up() {
    let deployment = repo_file("deploy/k8s/deployment.yaml");
    // `readinessProbe:` / `livenessProbe:`, then `httpGet: { path: /x, port: http }`.
    let probe = |name: &str| {
        let rest = &deployment[deployment.find(&format!("{name}:")).expect(name)..];
        let path = &rest[rest.find("path:").unwrap() + 5..];
        let path = path.trim_start();
        path[..path.find([',', ' ', '}']).unwrap()].to_string()
    };
    let (ready, live) = (probe("readinessProbe"), probe("livenessProbe"));
    assert_ne!(
        ready, live,
        "liveness must not follow Redis as readiness does"
    );
    assert!(
        !deployment.contains("failureThreshold: 1\n"),
        "one slow answer must not take every pod out"
    );
    let uid = repo_file("Dockerfile")
        .lines()
        .find_map(|l| {
            l.strip_prefix("USER ")
                .map(|u| u.split(':').next().unwrap().to_string())
        })
        .expect("a USER in the Dockerfile");
    assert!(
        deployment.contains(&format!("runAsUser: {uid}")),
        "the pod runs as the image's user {uid}"
    );

    // The ConfigMap's settings, with Redis on a port where nothing listens yet.
    let port = common::free_port();
    let mut env = Vec::new();
    let configmap = repo_file("deploy/k8s/configmap.yaml");
    let data = &configmap[configmap.find("\ndata:").unwrap() + 1..];
    for line in data.lines().skip(1) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once(": ").expect("KEY: value");
        let v = v.trim_matches('"');
        let v = if k == "REDIS_URL" {
            assert!(!v.contains('?'), "no query the server would ignore: {v}");
            format!("redis://127.0.0.1:{port}")
        } else {
            v.to_string()
        };
        env.push((k.to_string(), v));
    }
    assert!(env.iter().any(|(k, _)| k == "REDIS_URL"));
    let (_server, addr, _lines) = start_with_env(&env);
    assert_eq!(status(&addr, &live).await, 200, "{live} with Redis down");
    assert_eq!(status(&addr, &ready).await, 503, "{ready} with Redis down");
    let _redis = common::Redis::start_on(port);
    assert!(
        common::eventually(Duration::from_secs(15), async || status(&addr, &ready)
            .await
            == 200)
        .await,
        "{ready} once Redis answers"
    );
    assert_eq!(status(&addr, &live).await, 200);
}

/// The compose file's coturn and its nodes read one `TURN_SECRET` (so the credentials the nodes
/// sign are the ones coturn checks), and the nodes' `TURN_URLS` name the port coturn listens on.
#[test]
fn compose_coturn_and_the_nodes_share_one_turn_secret() {
    let compose = repo_file("docker-compose.yml");
    let conf = repo_file("deploy/turnserver.conf");
    let services = &compose[compose.find("\nservices:").expect("services")..];
    // A service's lines: from `  name:` to the next key at the same depth.
    let block = |name: &str| {
        let mut out = String::new();
        let mut inside = false;
        for line in services.lines() {
            let depth_two = line.starts_with("  ") && !line.starts_with("   ");
            if depth_two && !line.trim_start().starts_with('#') {
                inside = line.starts_with(&format!("  {name}:"));
            }
            if inside {
                out.push_str(line);
                out.push('\n');
            }
        }
        assert!(!out.is_empty(), "a {name} service");
        out
    };
    let coturn = block("coturn");
    assert!(
        coturn.contains("--static-auth-secret=${TURN_SECRET"),
        "coturn takes the secret from TURN_SECRET: {coturn}"
    );
    let node = block("node-1");
    assert!(
        node.contains("TURN_SECRET: ${TURN_SECRET"),
        "the nodes take it from the same variable: {node}"
    );
    assert!(node.contains("TURN_URLS: turn:"), "{node}");
    // Nowhere a second, literal secret.
    for line in compose.lines().chain(conf.lines()) {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        assert!(
            !line.starts_with("static-auth-secret") && !line.contains("TURN_SECRET: change"),
            "a literal secret: {line}"
        );
    }
    assert!(conf.lines().any(|l| l.trim() == "use-auth-secret"));
    let port = conf
        .lines()
        .find_map(|l| l.trim().strip_prefix("listening-port="))
        .expect("a listening-port");
    assert!(
        node.contains(&format!(":{port}?transport=udp")),
        "TURN_URLS names coturn's port {port}: {node}"
    );
    // The node service inherits to node-2 through the YAML anchor.
    assert!(
        compose.contains("node-2:\n    <<: *node"),
        "node-2 is node-1's copy"
    );
}
