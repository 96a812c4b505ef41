//! The demo page, the dashboard and the client bundles they load, built into the binary so that
//! the server serves them from any working directory and on a machine that has only the binary.
//! `STATIC_DIR` points at a directory served first, for operators who ship their own pages.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

/// `public/` at build time: the pages and `vendor/` (the official socket.io client and
/// Chart.js, copied from `clients/node_modules` by `scripts/vendor.sh`).
#[derive(RustEmbed)]
#[folder = "public/"]
struct Public;

/// The settings the static files take: where an operator's own files are, if anywhere.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Files served before the built-in ones (`STATIC_DIR`).
    pub dir: Option<PathBuf>,
}

/// A file's bytes and type, from `STATIC_DIR` or built in.
pub(crate) struct File {
    /// The content.
    pub bytes: std::borrow::Cow<'static, [u8]>,
    /// `Content-Type`.
    pub mime: String,
    /// A strong validator, for `If-None-Match`.
    pub etag: String,
}

/// The file at `path` (no leading `/`; `""` is `index.html`), from `dir` first.
pub(crate) async fn get(settings: &Settings, path: &str) -> Option<File> {
    let Ok(path) = percent_encoding::percent_decode_str(path).decode_utf8() else {
        return None;
    };
    let path = if path.is_empty() || path.ends_with('/') {
        format!("{path}index.html")
    } else {
        path.to_string()
    };
    // Only plain relative names (checked once decoded): no `..`, no absolute parts, nothing
    // hidden.
    if path
        .split('/')
        .any(|seg| seg.is_empty() || seg.starts_with('.') || seg.contains('\\'))
    {
        return None;
    }
    let mime_of = |p: &str| {
        let m = mime_guess_for(p);
        if m.starts_with("text/") || m == "application/javascript" {
            format!("{m}; charset=utf-8")
        } else {
            m.to_string()
        }
    };
    if let Some(dir) = &settings.dir
        && let Ok(bytes) = tokio::fs::read(dir.join(&path)).await
    {
        let etag = format!("\"{:016x}\"", fnv(&bytes));
        return Some(File {
            bytes: bytes.into(),
            mime: mime_of(&path),
            etag,
        });
    }
    let file = Public::get(&path)?;
    let hash = file.metadata.sha256_hash();
    let etag = format!("\"{}\"", hex::encode(&hash[..8]));
    Some(File {
        bytes: file.data,
        mime: mime_of(&path),
        etag,
    })
}

fn mime_guess_for(path: &str) -> &'static str {
    match path.rsplit_once('.').map(|(_, e)| e) {
        Some("html") => "text/html",
        Some("css") => "text/css",
        Some("js") => "application/javascript",
        Some("json") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("txt") => "text/plain",
        _ => "application/octet-stream",
    }
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// An HTTP response for `file`: `304` when the client holds this version already. Pages and
/// scripts are revalidated on each load (`no-cache`), so a new server version is seen at once.
pub(crate) fn respond(file: File, headers: &HeaderMap, head: bool) -> Response {
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == file.etag));
    let mut r = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else if head {
        let mut r = Response::new(Body::empty());
        r.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(file.bytes.len()));
        r
    } else {
        Response::new(Body::from(file.bytes))
    };
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&file.mime) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&file.etag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// The router's fallback: any `GET`/`HEAD` not routed elsewhere is a static file or a 404.
pub(crate) async fn serve(State(settings): State<Arc<Settings>>, req: Request) -> Response {
    let head = req.method() == Method::HEAD;
    if req.method() != Method::GET && !head {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let path = req.uri().path().trim_start_matches('/');
    match get(&settings, path).await {
        Some(file) => respond(file, req.headers(), head),
        None => (StatusCode::NOT_FOUND, "not found\n").into_response(),
    }
}
