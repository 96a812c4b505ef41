//! What a newcomer meets first, on the real binary: the demo page, the dashboard and the client
//! bundles they load come from the binary itself, whatever the working directory; a setting that
//! cannot work stops the start (exit 2) before anything listens.

mod common;

use std::process::{Command, Stdio};

use common::{Listening, spawn_listening};

/// A server started in `dir` with `args` and an empty environment.
fn start_in(dir: &std::path::Path, args: &[&str]) -> Listening {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_roulette"));
    cmd.args(["--host", "127.0.0.1", "--port", "0"])
        .args(args)
        .current_dir(dir)
        .env_clear()
        .stderr(Stdio::inherit());
    spawn_listening(cmd)
}

/// A directory of the test's own, removed at the end.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("roulette-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

async fn get(url: &str, headers: &[(&str, &str)]) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let mut req = reqwest::Client::new().get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.expect("the server answers");
    let code = r.status().as_u16();
    let h = r.headers().clone();
    (code, h, r.bytes().await.unwrap().to_vec())
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

#[tokio::test]
async fn the_demo_and_dashboard_are_served_from_any_working_directory() {
    // A directory with no `public/` and no `clients/node_modules`, as on a machine that has only
    // the binary.
    let elsewhere = TempDir::new("elsewhere");
    let s = start_in(&elsewhere.0, &[]);
    let u = &s.url();

    let (code, h, page) = get(&format!("{u}/"), &[]).await;
    assert_eq!(code, 200);
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    let page = text(&page);
    for script in ["/vendor/socket.io/socket.io.min.js", "/app.js"] {
        assert!(page.contains(script), "the demo page loads {script}");
    }
    let (code, h, bundle) = get(&format!("{u}/vendor/socket.io/socket.io.min.js"), &[]).await;
    assert_eq!(code, 200);
    assert!(h["content-type"].to_str().unwrap().contains("javascript"));
    assert!(
        text(&bundle[..200]).contains("Socket.IO v4"),
        "the official client bundle"
    );
    let (code, _, chart) = get(&format!("{u}/vendor/chart.js/chart.umd.min.js"), &[]).await;
    assert_eq!(code, 200);
    assert!(text(&chart[..200]).contains("Chart.js v4"));
    let (code, h, icon) = get(&format!("{u}/favicon.ico"), &[]).await;
    assert_eq!(code, 200);
    assert_eq!(h["content-type"], "image/x-icon");
    assert_eq!(&icon[..4], &[0, 0, 1, 0], "an ICO file");

    let (code, _, dash) = get(&format!("{u}/dashboard"), &[]).await;
    assert_eq!(code, 200);
    assert!(text(&dash).contains("/vendor/chart.js/chart.umd.min.js"));
    for file in ["dashboard.js", "dashboard.css", "style.css"] {
        assert_eq!(get(&format!("{u}/{file}"), &[]).await.0, 200, "{file}");
    }

    // A browser that has the file already gets a 304.
    let (_, h, _) = get(&format!("{u}/app.js"), &[]).await;
    let etag = h["etag"].to_str().unwrap().to_string();
    assert_eq!(h["cache-control"], "no-cache");
    let (code, _, body) = get(&format!("{u}/app.js"), &[("if-none-match", &etag)]).await;
    assert_eq!((code, body.len()), (304, 0));

    for missing in ["/nothing.js", "/vendor/", "/.env", "/%2e%2e/Cargo.toml"] {
        assert_eq!(get(&format!("{u}{missing}"), &[]).await.0, 404, "{missing}");
    }
}

#[tokio::test]
async fn static_dir_files_come_first_and_the_built_in_ones_fill_in() {
    let dir = TempDir::new("static");
    std::fs::write(dir.0.join("index.html"), "<p>our own page</p>").unwrap();
    std::fs::write(dir.0.join("terms.txt"), "be kind").unwrap();
    let s = start_in(&dir.0, &["--static-dir", dir.0.to_str().unwrap()]);
    let u = &s.url();
    assert_eq!(
        text(&get(&format!("{u}/"), &[]).await.2),
        "<p>our own page</p>"
    );
    let (code, h, body) = get(&format!("{u}/terms.txt"), &[]).await;
    assert_eq!((code, text(&body).as_str()), (200, "be kind"));
    assert!(
        h["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let (code, _, bundle) = get(&format!("{u}/vendor/socket.io/socket.io.min.js"), &[]).await;
    assert_eq!(code, 200, "the built-in bundle fills in");
    assert!(text(&bundle[..200]).contains("Socket.IO"));
    std::fs::write(dir.0.join("a file.txt"), "spaced").unwrap();
    assert_eq!(
        text(&get(&format!("{u}/a%20file.txt"), &[]).await.2),
        "spaced"
    );
    let secret = dir
        .0
        .parent()
        .unwrap()
        .join(format!("roulette-secret-{}", std::process::id()));
    std::fs::write(&secret, "no").unwrap();
    let name = secret.file_name().unwrap().to_str().unwrap();
    for escape in [
        format!("/%2e%2e/{name}"),
        format!("/..%2f{name}"),
        format!("/%2F{name}"),
    ] {
        assert_eq!(get(&format!("{u}{escape}"), &[]).await.0, 404, "{escape}");
    }
    std::fs::remove_file(secret).ok();
}

/// Runs the binary with `env` and no other setting; returns its exit code and what it wrote.
fn refused(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_roulette"))
        .args(["--host", "127.0.0.1", "--port", "0"])
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), all)
}

#[test]
fn settings_that_cannot_work_stop_the_start_before_it_listens() {
    for (env, key) in [
        (("REDIS_URL", "notaurl"), "REDIS_URL"),
        (("REDIS_URL", "redis://:hunter2@bad host:6379"), "REDIS_URL"),
        // Sentinel: a master name is needed, and every sentinel's port.
        (
            ("REDIS_URL", "redis+sentinel://:hunter2@s1:26379"),
            "REDIS_URL",
        ),
        (
            (
                "REDIS_URL",
                "redis+sentinel://:hunter2@s1:26379,s2/mymaster",
            ),
            "REDIS_URL",
        ),
        (("STATIC_DIR", "/nonexistent/roulette-public"), "STATIC_DIR"),
        (("STUN_URLS", "http://x"), "STUN_URLS"),
        (("TURN_URLS", "turn://relay.example.com"), "TURN_URLS"),
        (("LOG_LEVEL", "loud"), "LOG_LEVEL"),
        (("REDIS_CA_FILE", "/nonexistent.pem"), "REDIS_CA_FILE"),
    ] {
        let (code, out) = refused(&[env]);
        assert_eq!(code, Some(2), "{env:?}: {out}");
        assert!(
            !out.contains("listening on"),
            "{env:?} refused before listening: {out}"
        );
        assert!(
            out.contains(key)
                || out.contains(&format!("--{}", key.to_lowercase().replace('_', "-"))),
            "{env:?}: the message names the key: {out}"
        );
        assert!(
            !out.contains("hunter2"),
            "no password in the message: {out}"
        );
    }
}
