//! IPv4 NAT models in RFC 4787 vocabulary ([`NatModel`]: [`Mapping`], [`Filtering`], port
//! preservation, idle timeout), and one NAT's state: its mappings, allocation of external ports,
//! and the inbound filter.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::Rng;

/// How a NAT maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mapping {
    /// One external port per internal socket, whatever the destination.
    EndpointIndependent,
    /// A new external port per destination (a "symmetric" NAT).
    PerDestination,
}

/// How a NAT filters inbound packets on a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filtering {
    /// Anyone may send to a mapped port ("full cone").
    Open,
    /// Only addresses the host has sent to.
    Address,
    /// Only address-and-port pairs the host has sent to.
    AddressAndPort,
}

/// An IPv4 NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NatModel {
    /// Mapping behaviour.
    pub mapping: Mapping,
    /// Filtering behaviour.
    pub filtering: Filtering,
    /// Keep the internal port as the external port when free.
    pub port_preservation: bool,
    /// Idle time after which a mapping is gone.
    pub timeout: Duration,
}

impl NatModel {
    /// Endpoint-independent mapping, open filtering.
    pub fn full_cone() -> Self {
        Self {
            mapping: Mapping::EndpointIndependent,
            filtering: Filtering::Open,
            port_preservation: false,
            timeout: Duration::from_secs(60),
        }
    }
    /// Endpoint-independent mapping, address-restricted filtering.
    pub fn restricted() -> Self {
        Self {
            filtering: Filtering::Address,
            ..Self::full_cone()
        }
    }
    /// Endpoint-independent mapping, address-and-port filtering: a typical home router.
    pub fn port_restricted() -> Self {
        Self {
            filtering: Filtering::AddressAndPort,
            ..Self::full_cone()
        }
    }
    /// Per-destination mapping, address-and-port filtering.
    pub fn symmetric() -> Self {
        Self {
            mapping: Mapping::PerDestination,
            filtering: Filtering::AddressAndPort,
            ..Self::full_cone()
        }
    }
}

#[derive(Debug)]
pub(super) struct NatState {
    pub(super) model: NatModel,
    pub(super) external: Ipv4Addr,
    /// (internal, destination if per-destination) → external port.
    pub(super) mappings: HashMap<(SocketAddr, Option<SocketAddr>), u16>,
    /// external port → (internal, remotes sent to, last outbound).
    pub(super) ports: HashMap<u16, (SocketAddr, HashSet<SocketAddr>, Instant)>,
}

impl NatState {
    pub(super) fn outbound(
        &mut self,
        internal: SocketAddr,
        dst: SocketAddr,
        now: Instant,
        rng: &mut Rng,
    ) -> SocketAddr {
        let key = (
            internal,
            (self.model.mapping == Mapping::PerDestination).then_some(dst),
        );
        let live = self.mappings.get(&key).copied().filter(|p| {
            self.ports.get(p).is_some_and(|(_, _, last)| {
                now.saturating_duration_since(*last) < self.model.timeout
            })
        });
        let port = match live {
            Some(p) => p,
            None => {
                let mut p = if self.model.port_preservation {
                    internal.port()
                } else {
                    1024 + (rng.next_u64() % 64000) as u16
                };
                while self.ports.get(&p).is_some_and(|(i, _, last)| {
                    *i != internal || now.saturating_duration_since(*last) < self.model.timeout
                }) {
                    p = 1024 + (rng.next_u64() % 64000) as u16;
                }
                self.ports.insert(p, (internal, HashSet::new(), now));
                self.mappings.insert(key, p);
                p
            }
        };
        let entry = self.ports.get_mut(&port).expect("mapping just ensured");
        entry.1.insert(dst);
        entry.2 = now;
        SocketAddr::new(IpAddr::V4(self.external), port)
    }

    pub(super) fn inbound(&self, port: u16, src: SocketAddr, now: Instant) -> Option<SocketAddr> {
        let (internal, sent_to, last) = self.ports.get(&port)?;
        if now.saturating_duration_since(*last) >= self.model.timeout {
            return None;
        }
        let allowed = match self.model.filtering {
            Filtering::Open => true,
            Filtering::Address => sent_to.iter().any(|d| d.ip() == src.ip()),
            Filtering::AddressAndPort => sent_to.contains(&src),
        };
        allowed.then_some(*internal)
    }

    /// Forgets every mapping (a router reboot or a conntrack flush).
    pub(super) fn flush(&mut self) {
        self.mappings.clear();
        self.ports.clear();
    }
}
