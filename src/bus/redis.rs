//! The Redis client's configuration from `REDIS_URL` and `REDIS_CA_FILE`, and keeping the
//! password out of every message.

use std::sync::Arc;

use fred::prelude::Config;

/// `text` with the credentials of Redis URL `url` hidden: the password (wherever it appears,
/// the URL included) becomes `***`. Log lines and start-up errors go to log collectors that
/// more people read than should know the password.
pub(crate) fn scrub(text: &str, url: &str) -> String {
    let Some(secret) = password(url) else {
        return text.to_string();
    };
    text.replace(secret, "***")
}

/// fred's settings for `url`: `redis://` or, with TLS, `rediss://`, the server's certificate
/// checked against the PEM bundle `ca_file` when given (a private CA), else the system's roots.
/// Errors name the key and hide the password.
pub(crate) fn redis_config(url: &str, ca_file: Option<&std::path::Path>) -> Result<Config, String> {
    // One server (or a managed service's endpoint): the queue's scripts take several keys at
    // once, which a Redis Cluster spreads over shards.
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    if !matches!(scheme, "redis" | "rediss" | "valkey" | "valkeys") {
        return Err(scrub(
            &format!(
                "REDIS_URL: {scheme:?} is not a Redis URL scheme (expected \
                 redis://[:password@]host[:port][/db], or rediss://… for TLS)"
            ),
            url,
        ));
    }
    let mut config = Config::from_url(url).map_err(|e| {
        scrub(
            &format!(
                "REDIS_URL: {e} (expected redis://[:password@]host[:port][/db] or rediss://…)"
            ),
            url,
        )
    })?;
    if let Some(path) = ca_file {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject;
        let what = |e: &dyn std::fmt::Display| format!("REDIS_CA_FILE {}: {e}", path.display());
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| what(&e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| what(&e))?;
        if certs.is_empty() {
            return Err(what(&"no PEM certificate in it"));
        }
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs {
            roots.add(cert).map_err(|e| what(&e))?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| what(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        if config.tls.is_none() {
            return Err(what(&"a CA file needs a rediss:// REDIS_URL"));
        }
        config.tls = Some(fred::types::config::TlsConnector::from(tls).into());
    }
    Ok(config)
}

/// The password in a `redis://[user][:password]@host` URL, if it has one.
fn password(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let host = &rest[..rest.find('/').unwrap_or(rest.len())];
    let auth = &host[..host.rfind('@')?];
    let auth = auth.split_once(':').map_or(auth, |(_, p)| p);
    (!auth.is_empty()).then_some(auth)
}
