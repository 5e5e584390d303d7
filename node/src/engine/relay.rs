//! Relayed paths (`docs/protocol.md` §"Relaying"): a rendezvous with the relay role carries
//! tunnel packets between two nodes registered there. To the tunnel and the pair table a relayed
//! path is one more candidate pair, at the lowest priority: its remote address is a stand-in in
//! the discard-only prefix `100::/64` (RFC 6666), one per (relay, peer), which never reaches a
//! socket. Datagrams for a stand-in leave wrapped in RELAY to the relay; RELAYED from a relay
//! enters the tunnel as if from the stand-in, so probes, RTTs, path choice and failure detection
//! work on it as on any pair, and the session moves to a direct pair as soon as one is proven.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use shipworm_rendezvous::wire::{self, Message, MAX_RELAY_PAYLOAD};
use shipworm_tunnel::wire::packet;
use shipworm_tunnel::NodeId;

use super::nat_check::peer_is_hard;
use super::paths::{CandidateKind, PairState};
use super::{DropReason, Engine};

/// Most stand-in addresses kept (one per relay and peer).
pub(super) const MAX_ROUTES: usize = 1024;

/// Whether `addr` is a relayed path's stand-in (`100::/64`, discard-only: never a real address).
pub fn is_relay_addr(addr: &SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V6(v6) => v6.segments()[..4] == [0x0100, 0, 0, 0],
        IpAddr::V4(_) => false,
    }
}

/// The stand-in addresses of relayed paths and where they lead.
#[derive(Debug)]
pub(super) struct Routes {
    /// Keys the stand-ins, so that no peer can choose a NodeId whose stand-in is another's.
    key: [u8; 32],
    /// Stand-in → (relay, peer). Looked up only, never walked to send: hash order is harmless.
    routes: HashMap<SocketAddr, (SocketAddr, NodeId)>,
}

impl Routes {
    pub(super) fn new(key: [u8; 32]) -> Self {
        Self {
            key,
            routes: HashMap::new(),
        }
    }

    /// The stand-in of `peer` through `relay`.
    pub(super) fn addr(&self, relay: SocketAddr, peer: &NodeId) -> SocketAddr {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(relay.to_string().as_bytes());
        h.update(peer.as_bytes());
        let d = h.finalize();
        let mut ip = [0u8; 16];
        ip[0] = 0x01;
        ip[8..].copy_from_slice(&d.as_bytes()[..8]);
        SocketAddr::new(IpAddr::V6(Ipv6Addr::from(ip)), 1)
    }

    /// Where the stand-in `addr` leads.
    pub(super) fn get(&self, addr: &SocketAddr) -> Option<(SocketAddr, NodeId)> {
        self.routes.get(addr).copied()
    }

    /// Remembers the stand-in of `peer` through `relay` (bounded: when full, routes of peers
    /// `keep` says nothing of go first); returns it, or `None` when there is no room.
    pub(super) fn insert(
        &mut self,
        relay: SocketAddr,
        peer: NodeId,
        keep: impl Fn(&NodeId) -> bool,
    ) -> Option<SocketAddr> {
        let a = self.addr(relay, &peer);
        if !self.routes.contains_key(&a) && self.routes.len() >= MAX_ROUTES {
            self.routes.retain(|_, (_, p)| keep(p));
            if self.routes.len() >= MAX_ROUTES {
                return None;
            }
        }
        self.routes.insert(a, (relay, peer));
        Some(a)
    }

    pub(super) fn forget_peer(&mut self, peer: &NodeId) {
        self.routes.retain(|_, (_, p)| p != peer);
    }

    pub(super) fn len(&self) -> usize {
        self.routes.len()
    }
}

impl Engine {
    /// Whether server `si` relays for us (its REGISTERED said so) and we use relays.
    fn relays(&self, si: usize) -> bool {
        self.config.relay && self.servers[si].relays() && self.servers[si].token().is_some()
    }

    /// RELAYED from server `si`: a tunnel packet from the peer it names, which the relay
    /// authenticated by its registration. It enters the tunnel from that peer's stand-in.
    pub(super) fn on_relayed(
        &mut self,
        now: Instant,
        unix_ms: u64,
        si: usize,
        f: wire::Relayed<'_>,
    ) {
        if !self.relays(si) {
            self.count_drop(DropReason::RelayUnused);
            return;
        }
        let Ok(peer) = NodeId::from_bytes(&f.from) else {
            self.count_drop(DropReason::RelayMalformed);
            return;
        };
        if !packet::is_tunnel_packet(f.packet) {
            self.count_drop(DropReason::RelayMalformed);
            return;
        }
        let relay = self.servers[si].server;
        let peers = &self.peers;
        let Some(from) = self.routes.insert(relay, peer, |p| peers.contains_key(p)) else {
            self.count_drop(DropReason::RelayRoutesFull);
            return;
        };
        if let Some(st) = self.peers.get_mut(&peer) {
            st.registered_at(relay);
        }
        // Replies to it may use what it cost, as for a packet straight from its source.
        self.reply = Some((from, f.packet.len() as u64));
        self.tunnel_input(now, unix_ms, 0, from, f.packet);
    }

    /// A datagram for a stand-in address, wrapped in RELAY to its relay; `None` if it has no
    /// route (counted).
    pub(super) fn wrap_relayed(
        &mut self,
        dest: SocketAddr,
        contents: Vec<u8>,
    ) -> Option<(SocketAddr, Vec<u8>)> {
        let route = self.routes.get(&dest);
        let token = route.and_then(|(relay, _)| {
            self.servers
                .iter()
                .find(|r| r.server == relay)
                .and_then(|r| r.token())
        });
        let (Some((relay, peer)), Some(token)) = (route, token) else {
            self.count_drop(DropReason::RelayNoRoute);
            self.tunnel.recycle(contents);
            return None;
        };
        if contents.len() > MAX_RELAY_PAYLOAD {
            self.count_drop(DropReason::RelayTooLarge);
            self.tunnel.recycle(contents);
            return None;
        }
        let mut out = Vec::with_capacity(wire::Relay::FIXED_LEN + contents.len());
        Message::Relay(wire::Relay {
            tx: 0,
            node: *self.me.as_bytes(),
            token,
            target: *peer.as_bytes(),
            packet: &contents,
        })
        .emit(&mut out);
        self.tunnel.recycle(contents);
        Some((relay, out))
    }

    /// Adds a relayed pair for `peer` when it has no direct path and punching cannot work
    /// (both NATs map per destination) or has not worked for `relay_after`; punching goes on.
    pub(super) fn relay_due(&mut self, now: Instant, peer: NodeId) {
        if !self.config.relay {
            return;
        }
        let both_hard = self.we_are_hard();
        let relay_after = self.config.relay_after;
        let Some(st) = self.peers.get(&peer) else {
            return;
        };
        if st.paths.selected.is_some()
            || st
                .paths
                .pairs
                .iter()
                .any(|p| p.kind == CandidateKind::Relayed && p.state != PairState::Failed)
        {
            return;
        }
        // Reaching every rendezvous over TCP means that our UDP is blocked: no direct path.
        let udp_blocked = !self.servers.is_empty() && self.servers.iter().all(|r| r.over_tcp());
        let hopeless = (both_hard && peer_is_hard(st.peer_flags)) || udp_blocked;
        let waited = st
            .established_at
            .is_some_and(|t| now.saturating_duration_since(t) >= relay_after);
        if !(hopeless || waited) {
            return;
        }
        // A relay the peer is known to be registered at (it introduced us, or relayed to us),
        // else any relay of ours: the relay refuses a target it does not know.
        let ours: Vec<SocketAddr> = (0..self.servers.len())
            .filter(|&i| self.relays(i))
            .map(|i| self.servers[i].server)
            .collect();
        let relay = st
            .relays
            .iter()
            .find(|r| ours.contains(r))
            .or(ours.first())
            .copied();
        let Some(relay) = relay else {
            return;
        };
        let peers = &self.peers;
        let Some(addr) = self.routes.insert(relay, peer, |p| peers.contains_key(p)) else {
            self.count_drop(DropReason::RelayRoutesFull);
            return;
        };
        if let Some(st) = self.peers.get_mut(&peer) {
            st.paths.add(addr, CandidateKind::Relayed, now);
        }
        self.probe_due(now, peer);
    }

    /// The relay a stand-in address leads through.
    pub fn relay_of(&self, addr: &SocketAddr) -> Option<SocketAddr> {
        self.routes.get(addr).map(|(relay, _)| relay)
    }
}

/// How long a connection waits for a direct path before it uses a relay.
pub const DEFAULT_RELAY_AFTER: Duration = Duration::from_millis(1000);
