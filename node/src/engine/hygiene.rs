//! Candidate hygiene (`docs/protocol.md` §"Candidates"): which addresses a peer may make us
//! probe. A peer's claim of a loopback, private, link-local, shared, unique-local (the overlay
//! among them), multicast or reserved address would aim our probes at hosts near *us*; such a
//! candidate is kept only when it lies in one of our own subnets (peers on one LAN still connect
//! over it). Addresses we observed ourselves (where an authenticated packet came from, what the
//! rendezvous saw) are not claims and do not pass here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The prefix length assumed for our host addresses: a typical IPv4 LAN and an IPv6 link.
pub const HOST_PREFIX_V4: u8 = 24;
/// See [`HOST_PREFIX_V4`].
pub const HOST_PREFIX_V6: u8 = 64;

fn is_global_v4(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || ip.is_broadcast()
        || o[0] == 0 // "this network"
        || (o[0] == 100 && (o[1] & 0xC0) == 64) // shared, 100.64.0.0/10
        || o[0] >= 240) // reserved
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // The NAT64 well-known prefix 64:ff9b::/96 (RFC 6052 §2.1) stands for the IPv4 address
        // in its last 32 bits, and may embed only a global one (§3.1): as global as that is.
        let o = ip.octets();
        return is_global_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xFE00) == 0xFC00 // unique local, fc00::/7 (the overlay too)
        || (s[0] & 0xFFC0) == 0xFE80 // link-local
        || (s[0] & 0xFFC0) == 0xFEC0 // site-local (deprecated)
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard-only, 100::/64
        || s[..3] == [0x64, 0xff9b, 1]) // NAT64 local use, 64:ff9b:1::/48 (RFC 8215)
}

/// Whether `addr` is a global unicast address (documentation ranges count as global: the
/// simulator's internet uses them).
pub fn is_global(addr: SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_global_v4(v4),
            None => is_global_v6(v6),
        },
    }
}

/// Whether `a` and `b` share their first `bits` bits (same family only).
pub fn same_prefix(a: IpAddr, b: IpAddr, bits: u8) -> bool {
    let (x, y, len) = match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (
            u128::from(u32::from(a)) << 96,
            u128::from(u32::from(b)) << 96,
            32,
        ),
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a), u128::from(b), 128),
        _ => return false,
    };
    let bits = u32::from(bits).min(len);
    if bits == 0 {
        return true;
    }
    let mask = u128::MAX << (128 - bits);
    x & mask == y & mask
}

/// Whether a peer's claimed candidate `addr` may become a pair, given our host addresses.
pub fn acceptable(addr: SocketAddr, hosts: impl IntoIterator<Item = SocketAddr>) -> bool {
    if addr.port() == 0 || super::relay::is_relay_addr(&addr) {
        return false;
    }
    if is_global(addr) {
        return true;
    }
    let ip = addr.ip();
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() {
        return false;
    }
    hosts.into_iter().any(|h| {
        let bits = if h.is_ipv4() {
            HOST_PREFIX_V4
        } else {
            HOST_PREFIX_V6
        };
        same_prefix(h.ip(), ip, bits)
    })
}

/// Whether `synthesized`, the NAT64 synthesis of a peer's claimed IPv4 candidate `claimed`
/// (`engine::nat64`), may become a pair. The peer chose only the IPv4 part, and it must be
/// global: we have no IPv4 LAN for it to lie on, RFC 6052 §3.1 forbids the well-known prefix for
/// others, and through a translator a private address would reach hosts near the translator.
/// The prefix is ours (configured, or our own resolver's), never the peer's; a synthesis in
/// 64:ff9b::/96 is global exactly when its IPv4 is ([`is_global`]), and a local-use prefix
/// (RFC 8215's 64:ff9b:1::/48, a ULA) is our network's translator, which is what it is for.
pub fn acceptable_synthesis(claimed: SocketAddr, synthesized: SocketAddr) -> bool {
    let ip = synthesized.ip();
    claimed.is_ipv4()
        && synthesized.is_ipv6()
        && claimed.port() != 0
        && synthesized.port() == claimed.port()
        && is_global(claimed)
        && !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast())
        && !matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xFFC0) == 0xFE80)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn claims_of_nearby_hosts_are_dropped_unless_on_our_lan() {
        let hosts = [a("192.168.1.2:41641"), a("[2001:db8:1::2]:41641")];
        for bad in [
            "127.0.0.1:22",
            "10.0.0.1:53",
            "172.16.0.1:80",
            "192.168.2.7:1",
            "169.254.1.1:123",
            "100.64.0.1:1",
            "0.1.2.3:4",
            "255.255.255.255:9",
            "224.0.0.1:9",
            "[::1]:22",
            "[fe80::1]:53",
            "[fd5b:7a1e:9c03::1]:7300",
            "[ff02::1]:9",
            "198.51.100.7:0",
            // The NAT64 well-known prefix embedding a private, shared or loopback IPv4: a
            // translator near us would aim at hosts near it.
            "[64:ff9b::192.168.1.9]:1",
            "[64:ff9b::10.0.0.1]:1",
            "[64:ff9b::100.64.0.1]:1",
            "[64:ff9b::127.0.0.1]:1",
            "[64:ff9b:1::505:202]:1",
        ] {
            assert!(!acceptable(a(bad), hosts), "{bad}");
        }
        for good in [
            "192.168.1.9:41641",
            "203.0.113.10:4000",
            "[2001:db8:1::9]:1",
            "[2001:db8:7::9]:1",
            "8.8.8.8:53",
            "[64:ff9b::8.8.8.8]:53",
            "[64:ff9b::5.5.2.2]:51820",
        ] {
            assert!(acceptable(a(good), hosts), "{good}");
        }
    }

    #[test]
    fn a_nat64_synthesis_passes_only_for_a_global_ipv4() {
        for (claimed, synthesized, ok) in [
            ("5.5.2.2:51820", "[64:ff9b::5.5.2.2]:51820", true),
            ("5.5.2.2:51820", "[2001:db8:64::5.5.2.2]:51820", true),
            ("5.5.2.2:51820", "[64:ff9b:1::505:202]:51820", true),
            ("192.168.2.2:51820", "[64:ff9b::192.168.2.2]:51820", false),
            ("100.64.0.1:1", "[2001:db8:64::100.64.0.1]:1", false),
            ("127.0.0.1:22", "[2001:db8:64::127.0.0.1]:22", false),
            ("5.5.2.2:0", "[64:ff9b::5.5.2.2]:0", false),
            ("5.5.2.2:51820", "[64:ff9b::5.5.2.2]:1", false),
            ("5.5.2.2:51820", "[ff02::5.5.2.2]:51820", false),
            ("5.5.2.2:51820", "[fe80::5.5.2.2]:51820", false),
            ("[2001:db8::1]:1", "[2001:db8::1]:1", false),
        ] {
            assert_eq!(
                acceptable_synthesis(a(claimed), a(synthesized)),
                ok,
                "{claimed} as {synthesized}"
            );
        }
    }
}
