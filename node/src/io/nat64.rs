//! Which NAT64 prefix, if any, this host reaches IPv4 through (`docs/operations.md` §"NAT64").
//!
//! NAT64 matters only to a host without IPv4: one with an IPv4 route reaches IPv4 peers itself,
//! and never synthesizes. Without one, the prefix is, in this order:
//! 1. the configured one ([`Nat64::Prefix`], `--nat64-prefix`);
//! 2. the one the system resolver's answer to `ipv4only.arpa` embeds (RFC 7050), asked once at
//!    start and waited for at most [`DISCOVERY_TIMEOUT`];
//! 3. the well-known `64:ff9b::/96` (RFC 6052), if that answer gave none: most NAT64 networks
//!    use it, and a wrong guess costs nothing a host without IPv4 had.
//!
//! The pure parts (synthesis, extraction, reading the answers) are the engine's
//! ([`crate::engine::nat64`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

pub use crate::engine::nat64::{Nat64Prefix, PrefixError, WELL_KNOWN};

/// The longest wait for the answer to `ipv4only.arpa` at start.
pub const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(2);

/// How a node finds its NAT64 prefix (the builder's [`nat64`](crate::api::Builder::nat64)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Nat64 {
    /// Without an IPv4 route: ask `ipv4only.arpa`, else use `64:ff9b::/96` (the default).
    #[default]
    Discover,
    /// Without an IPv4 route: this prefix, no question asked.
    Prefix(Nat64Prefix),
    /// Never synthesize.
    Off,
}

impl std::str::FromStr for Nat64 {
    type Err = PrefixError;

    /// `PREFIX/LEN`, `discover` or `off`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "discover" => Ok(Self::Discover),
            "off" => Ok(Self::Off),
            _ => s.parse().map(Self::Prefix),
        }
    }
}

/// Whether the host has a route to the IPv4 internet: a UDP socket `connect` only looks the
/// route up (no packet leaves), and fails with "network unreachable" without one.
pub fn has_ipv4_route() -> bool {
    std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|s| s.connect((Ipv4Addr::new(192, 0, 2, 1), 9)))
        .is_ok()
}

/// The prefix the system resolver's answer to `ipv4only.arpa` embeds (RFC 7050), within
/// `within`; the error says why there is none.
pub async fn discover(within: Duration) -> Result<Nat64Prefix, String> {
    let answers = tokio::time::timeout(within, tokio::net::lookup_host(("ipv4only.arpa", 0)))
        .await
        .map_err(|_| format!("no answer for ipv4only.arpa within {within:?}"))?
        .map_err(|e| format!("cannot resolve ipv4only.arpa: {e}"))?;
    let v6: Vec<std::net::Ipv6Addr> = answers
        .filter_map(|a: SocketAddr| match a.ip() {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => Some(v6),
            _ => None,
        })
        .collect();
    crate::engine::nat64::discover(&v6).map_err(|e| e.to_string())
}

/// The prefix the engine synthesizes with (`None`: the host has IPv4, or NAT64 is off), and a
/// sentence saying where it came from.
pub async fn decide(setting: Nat64) -> (Option<Nat64Prefix>, String) {
    if setting == Nat64::Off {
        return (None, "NAT64 off".into());
    }
    if has_ipv4_route() {
        return (None, "the host has an IPv4 route: no NAT64".into());
    }
    match setting {
        Nat64::Off => (None, "NAT64 off".into()),
        Nat64::Prefix(p) => (Some(p), format!("NAT64 prefix {p} (configured)")),
        Nat64::Discover => match discover(DISCOVERY_TIMEOUT).await {
            Ok(p) => (
                Some(p),
                format!("NAT64 prefix {p} (from ipv4only.arpa, RFC 7050)"),
            ),
            Err(e) => (
                Some(WELL_KNOWN),
                format!("NAT64 prefix {WELL_KNOWN} (the well-known fallback: {e})"),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_setting_parses_from_its_text_form() {
        assert_eq!("discover".parse(), Ok(Nat64::Discover));
        assert_eq!("off".parse(), Ok(Nat64::Off));
        assert_eq!("64:ff9b::/96".parse(), Ok(Nat64::Prefix(WELL_KNOWN)));
        let e = "64:ff9b::/95".parse::<Nat64>().unwrap_err();
        assert!(e.to_string().contains("/95"), "{e}");
    }

    #[tokio::test]
    async fn a_host_with_ipv4_never_synthesizes() {
        // This test machine has an IPv4 route (or none, then the configured prefix is used).
        let p: Nat64Prefix = "2001:db8:64::/96".parse().unwrap();
        let (got, why) = decide(Nat64::Prefix(p)).await;
        if has_ipv4_route() {
            assert_eq!(got, None, "{why}");
            assert!(why.contains("IPv4 route"), "{why}");
        } else {
            assert_eq!(got, Some(p), "{why}");
        }
        assert_eq!(decide(Nat64::Off).await.0, None);
    }
}
