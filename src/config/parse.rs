//! Parsers of the settings that need more than a number or a word.

/// A comma-separated list of ICE server URLs of the given schemes (RFC 7064, RFC 7065):
/// `scheme:host[:port][?transport=udp|tcp]`. A browser refuses the whole `RTCPeerConnection`
/// over one bad URL, so a typo is refused here, at start.
fn parse_ice_urls(raw: &str, schemes: &[&str]) -> Result<String, String> {
    for url in raw.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let (scheme, rest) = url.split_once(':').unwrap_or(("", url));
        if !schemes.contains(&scheme.to_ascii_lowercase().as_str()) {
            return Err(format!(
                "{url:?}: each URL starts with {}: or {}: (like {}:host:3478)",
                schemes[0], schemes[1], schemes[0]
            ));
        }
        let (host_port, query) = rest.split_once('?').unwrap_or((rest, ""));
        let host = host_port.rsplit_once(':').map_or(host_port, |(h, p)| {
            if p.parse::<u16>().is_ok() {
                h
            } else {
                host_port
            }
        });
        if host.is_empty() || host.starts_with("//") || host.contains('/') {
            return Err(format!(
                "{url:?}: no host (write {scheme}:host:port, without //)"
            ));
        }
        if !query.is_empty() && !matches!(query, "transport=udp" | "transport=tcp") {
            return Err(format!(
                "{url:?}: the only query is ?transport=udp or ?transport=tcp"
            ));
        }
        if query.starts_with("transport") && !scheme.starts_with("turn") {
            return Err(format!("{url:?}: ?transport is for TURN URLs"));
        }
    }
    Ok(raw.trim().to_string())
}

pub(super) fn parse_stun_urls(raw: &str) -> Result<String, String> {
    parse_ice_urls(raw, &["stun", "stuns"])
}

pub(super) fn parse_turn_urls(raw: &str) -> Result<String, String> {
    parse_ice_urls(raw, &["turn", "turns"])
}
