//! Addresses as moderation sees them: prefixes a ban covers, IPv4 clients seen through IPv6
//! sockets, the network a reporter is counted in.

use std::net::IpAddr;

use ipnet::IpNet;

use super::{MIN_PREFIX, NETWORK_PREFIX};

/// Whether `net` covers `ip`; an IPv4 client seen through an IPv6 socket (`::ffff:a.b.c.d`)
/// is matched as the IPv4 address it is.
pub(crate) fn covers(net: &IpNet, ip: IpAddr) -> bool {
    net.contains(&unmapped(ip))
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
pub(super) fn unmapped(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A prefix's family (`true`: IPv6) and length, the key of [`super::Moderation`]'s lengths.
pub(super) fn family(net: &IpNet) -> (bool, u8) {
    (matches!(net, IpNet::V6(_)), net.prefix_len())
}

/// The network `ip` is counted in by the auto-ban: its /24 (IPv4, an IPv4-mapped address
/// included) or its /48 (IPv6), as text.
pub(crate) fn network_of(ip: IpAddr) -> String {
    let ip = unmapped(ip);
    let len = if ip.is_ipv4() {
        NETWORK_PREFIX.0
    } else {
        NETWORK_PREFIX.1
    };
    IpNet::new(ip, len).map_or(ip.to_string(), |n| n.trunc().to_string())
}

/// Whether `net` is as long as [`MIN_PREFIX`] asks for its family.
pub(crate) fn narrow_enough(net: &IpNet) -> bool {
    match net {
        IpNet::V4(n) => n.prefix_len() >= MIN_PREFIX.0,
        IpNet::V6(n) => n.prefix_len() >= MIN_PREFIX.1,
    }
}

/// A user id or address as the admin API takes it: an address (`203.0.113.7`) or a prefix
/// (`203.0.113.0/24`). A bare address is a prefix of its whole length.
pub(crate) fn parse_address(text: &str) -> Option<IpNet> {
    let net = match text.parse::<IpNet>() {
        Ok(net) => net.trunc(),
        Err(_) => IpNet::from(text.parse::<IpAddr>().ok()?),
    };
    Some(normalised(net))
}

/// `net` with its host bits zero, and an IPv4-mapped prefix (`::ffff:203.0.113.7/128`) as the
/// IPv4 one (`203.0.113.7/32`): clients are matched so, whether the ban came from the API, the
/// data file or another node.
pub(crate) fn normalised(net: IpNet) -> IpNet {
    let net = net.trunc();
    if let IpNet::V6(v6) = net
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && let Ok(n) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(n);
    }
    net
}
