//! A site of the simulation: the NAT in front of its host, its IPv6 access, latency and loss.

use std::time::Duration;

use super::NatModel;

/// A site's IPv6 access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ipv6Access {
    /// No IPv6.
    None,
    /// A global address with no firewall.
    Open,
    /// A global address behind a stateful firewall (replies to outbound traffic only).
    Firewalled,
    /// Outbound works, nothing ever comes back in (the reported one-way failure).
    InboundBlocked,
}

/// One site.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    /// The NAT in front of the host, or none (a public IPv4 address).
    pub nat: Option<NatModel>,
    /// IPv6 access.
    pub ipv6: Ipv6Access,
    /// One-way latency between the host and the core.
    pub latency: Duration,
    /// Percent of datagrams lost each way on the access link.
    pub loss: u64,
}

impl SiteConfig {
    /// A site with this NAT, no IPv6, 10 ms, no loss.
    pub fn nat(nat: Option<NatModel>) -> Self {
        Self {
            nat,
            ipv6: Ipv6Access::None,
            latency: Duration::from_millis(10),
            loss: 0,
        }
    }
}
