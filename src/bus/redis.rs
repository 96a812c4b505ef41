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

/// fred's settings for `url`: `redis://` or, with TLS, `rediss://`; or a master found through
/// Sentinel, `redis+sentinel://[user:password@]host:port[,host:port...]/MASTER_NAME` (with TLS,
/// `rediss+sentinel://`). The server's certificate is checked against the PEM bundle `ca_file`
/// when given (a private CA), else the system's roots. Errors name the key and hide the password.
pub(crate) fn redis_config(url: &str, ca_file: Option<&std::path::Path>) -> Result<Config, String> {
    // One server (or a managed service's endpoint, or the master Sentinel names): the queue's
    // scripts take several keys at once, which a Redis Cluster spreads over shards.
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    let mut config = match scheme {
        "redis" | "rediss" | "valkey" | "valkeys" => Config::from_url(url).map_err(|e| {
            scrub(
                &format!(
                    "REDIS_URL: {e} (expected redis://[:password@]host[:port][/db] or rediss://…)"
                ),
                url,
            )
        })?,
        "redis+sentinel" | "rediss+sentinel" => sentinel_config(url)?,
        _ => {
            return Err(scrub(
                &format!(
                    "REDIS_URL: {scheme:?} is not a Redis URL scheme (expected \
                     redis://[:password@]host[:port][/db], rediss://… for TLS, or \
                     redis+sentinel://[user:password@]host:port[,host:port…]/MASTER_NAME)"
                ),
                url,
            ));
        }
    };
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

/// The settings for `redis+sentinel://[user:password@]host:port[,host:port...]/MASTER_NAME`:
/// the sentinels to ask, and the name of the master they watch (fred's own Sentinel URLs put the
/// name in a query parameter and read no IPv6 sentinel, so this form is parsed here). The
/// credentials are used for the sentinels and the servers alike.
fn sentinel_config(url: &str) -> Result<Config, String> {
    use fred::types::config::ServerConfig;
    let bad = |why: &str| {
        scrub(
            &format!(
                "REDIS_URL: {why} (expected redis+sentinel://[user:password@]host:port\
                 [,host:port…]/MASTER_NAME, or rediss+sentinel://… for TLS)"
            ),
            url,
        )
    };
    let (scheme, rest) = url.split_once("://").unwrap_or_default();
    let (authority, name) = rest
        .split_once('/')
        .ok_or_else(|| bad("no master name after the sentinels"))?;
    if name.is_empty() || name.contains(['/', '?', '#']) {
        return Err(bad("the master name is one path segment"));
    }
    let (auth, hosts) = match authority.rsplit_once('@') {
        Some((auth, hosts)) => (Some(auth), hosts),
        None => (None, authority),
    };
    let mut sentinels = Vec::new();
    for node in hosts.split(',') {
        // `10.0.0.5:26379`, `sentinel-0.redis:26379`, `[::1]:26379`
        let parsed = node
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h, p.parse::<u16>().ok().filter(|p| *p != 0)?)))
            .map(|(h, p)| {
                (
                    h.strip_prefix('[')
                        .and_then(|h| h.strip_suffix(']'))
                        .unwrap_or(h),
                    p,
                )
            })
            .filter(|(h, _)| {
                !h.is_empty()
                    && h.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
            });
        let Some((host, port)) = parsed else {
            return Err(bad(&format!(
                "{:?} is not a sentinel's host:port",
                crate::echo::clip(node)
            )));
        };
        sentinels.push((host.to_string(), port));
    }
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .map(|s| s.into_owned())
            .map_err(|_| bad("the credentials are not UTF-8"))
    };
    let (username, password) = match auth.map(|a| a.split_once(':').unwrap_or((a, ""))) {
        None => (None, None),
        Some((user, pass)) => (
            Some(decode(user)?).filter(|u| !u.is_empty()),
            Some(decode(pass)?).filter(|p| !p.is_empty()),
        ),
    };
    let tls = if scheme.starts_with("rediss") {
        let connector =
            fred::types::config::TlsConnector::default_rustls().map_err(|e| bad(&e.to_string()))?;
        Some(connector.into())
    } else {
        None
    };
    Ok(Config {
        server: ServerConfig::new_sentinel(sentinels, name),
        username,
        password,
        tls,
        ..Config::default()
    })
}

/// The password in a `redis://[user][:password]@host` URL, if it has one.
fn password(url: &str) -> Option<&str> {
    let rest = &url[url.find("://")? + 3..];
    let host = &rest[..rest.find('/').unwrap_or(rest.len())];
    let auth = &host[..host.rfind('@')?];
    let auth = auth.split_once(':').map_or(auth, |(_, p)| p);
    (!auth.is_empty()).then_some(auth)
}

#[cfg(test)]
mod tests {
    use fred::types::config::{Server, ServerConfig};

    use super::redis_config;

    #[test]
    fn a_sentinel_url_names_the_sentinels_and_the_master() {
        let c = redis_config(
            "redis+sentinel://app:s3cr3t@10.0.0.1:26379,sentinel-1.redis:26380,[::1]:26381/mymaster",
            None,
        )
        .unwrap();
        let ServerConfig::Sentinel {
            hosts,
            service_name,
        } = &c.server
        else {
            panic!("not a sentinel config: {:?}", c.server);
        };
        assert_eq!(service_name, "mymaster");
        let hosts: Vec<(String, u16)> = hosts
            .iter()
            .map(|s: &Server| (s.host.to_string(), s.port))
            .collect();
        assert_eq!(hosts.len(), 3, "{hosts:?}");
        for h in [("10.0.0.1", 26379), ("sentinel-1.redis", 26380)] {
            assert!(hosts.contains(&(h.0.into(), h.1)), "{h:?} in {hosts:?}");
        }
        assert!(hosts.iter().any(|(h, p)| h.contains("::1") && *p == 26381));
        assert_eq!(c.username.as_deref(), Some("app"));
        assert_eq!(c.password.as_deref(), Some("s3cr3t"));
        assert!(c.tls.is_none());

        let c = redis_config("rediss+sentinel://:pw@s:26379/m", None).unwrap();
        assert!(c.tls.is_some(), "rediss+sentinel is TLS");
        assert_eq!(c.password.as_deref(), Some("pw"));
        assert!(
            redis_config("redis+sentinel://s:26379/m", None)
                .unwrap()
                .password
                .is_none()
        );
    }

    #[test]
    fn a_bad_sentinel_url_is_refused_without_its_password() {
        for bad in [
            "redis+sentinel://:hunter2@s:26379",
            "redis+sentinel://:hunter2@s:26379/",
            "redis+sentinel://:hunter2@s:26379/a/b",
            "redis+sentinel://:hunter2@s/m",
            "redis+sentinel://:hunter2@s:0/m",
            "redis+sentinel://:hunter2@s:26379,/m",
            "redis+sentinel://:hunter2@:26379/m",
            "redis+sentinel://:hunter2@/m",
        ] {
            let e = redis_config(bad, None).map(|_| ()).unwrap_err();
            assert!(e.starts_with("REDIS_URL"), "{bad}: {e}");
            assert!(!e.contains("hunter2"), "{bad}: {e}");
            assert!(e.contains("MASTER_NAME"), "{bad}: the form is shown: {e}");
        }
    }
}
