//! A site of the simulation: the NAT in front of its host (its own, or another site's when both
//! hosts share a LAN), its IPv6 access, and its access link: latency, jitter, reordering,
//! duplication and loss, each drawn from the simulation's seeded RNG.

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
    /// Extra delay each way, uniform in `0..=jitter` per datagram (so datagrams also overtake
    /// one another).
    pub jitter: Duration,
    /// Percent of datagrams held back by [`REORDER_DELAY`] each way, so later ones overtake them.
    pub reorder: u64,
    /// Percent of datagrams delivered twice each way (the copy with its own delay).
    pub duplicate: u64,
    /// This host sits on the LAN of an earlier site (by index), behind that site's NAT; `nat`
    /// is then ignored.
    pub behind: Option<usize>,
}

/// How long a reordered datagram is held back.
pub const REORDER_DELAY: Duration = Duration::from_millis(30);

impl SiteConfig {
    /// A site with this NAT, no IPv6, 10 ms, no loss.
    pub fn nat(nat: Option<NatModel>) -> Self {
        Self {
            nat,
            ipv6: Ipv6Access::None,
            latency: Duration::from_millis(10),
            loss: 0,
            jitter: Duration::ZERO,
            reorder: 0,
            duplicate: 0,
            behind: None,
        }
    }

    /// A second host on the LAN of site `site`, behind its NAT.
    pub fn behind(site: usize) -> Self {
        Self {
            behind: Some(site),
            ..Self::nat(None)
        }
    }

    /// This site with a rough access link: `loss` and `duplicate` percent, `jitter`.
    pub fn rough(self, loss: u64, jitter: Duration, duplicate: u64) -> Self {
        Self {
            loss,
            jitter,
            duplicate,
            ..self
        }
    }
}
