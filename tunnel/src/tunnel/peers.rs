//! The peer table: one entry per peer with its sessions, running handshake, endpoint and
//! counters; bounded by [`TunnelConfig::max_peers`](super::TunnelConfig::max_peers), evicting
//! idle peers first. Peers live in a `BTreeMap`, so walking them (timers, eviction) follows
//! NodeId order and one seed gives one packet trace.

use std::collections::VecDeque;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::{usable, SendError, Tunnel};
use crate::handshake::Initiator;
use crate::identity::NodeId;
use crate::rng::RngCore;
use crate::session::{Cipher, Session};
use crate::wire::addr;
use crate::wire::packet::COOKIE_LEN;

/// Traffic with one remote address of a peer (for diagnostics: WebRTC-style pair counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Authentic transport packets received from the address.
    pub packets_in: u64,
    /// Their bytes (on the wire).
    pub bytes_in: u64,
    /// Transport packets sent to the address.
    pub packets_out: u64,
    /// Their bytes (on the wire).
    pub bytes_out: u64,
    /// Probes received from the address.
    pub probes_in: u64,
    /// Probe answers sent to the address.
    pub answers_out: u64,
}

/// Most remote addresses with traffic counters per peer.
const MAX_TRAFFIC_ENTRIES: usize = 32;

/// The counters for `addr` in `list`, added if there is room.
pub(super) fn traffic_of(
    list: &mut Vec<(SocketAddr, Traffic)>,
    addr: SocketAddr,
) -> Option<&mut Traffic> {
    if let Some(i) = list.iter().position(|(a, _)| *a == addr) {
        return Some(&mut list[i].1);
    }
    if list.len() >= MAX_TRAFFIC_ENTRIES {
        return None;
    }
    list.push((addr, Traffic::default()));
    list.last_mut().map(|(_, t)| t)
}

/// Our running handshake with a peer: message 1 as sent, where to, and its retry schedule.
pub(super) struct Pending {
    pub(super) initiator: Initiator,
    /// The flags our message 1 carried.
    pub(super) sent_flags: u8,
    pub(super) packet: Vec<u8>,
    pub(super) endpoints: Vec<SocketAddr>,
    pub(super) started: Instant,
    pub(super) next_retry: Instant,
    pub(super) retry: Duration,
}

/// Everything the tunnel holds about one peer.
pub(super) struct Peer {
    pub(super) id: NodeId,
    pub(super) overlay: Ipv6Addr,
    pub(super) endpoint: Option<SocketAddr>,
    pub(super) current: Option<Session>,
    /// Older sessions still open for packets in flight, newest first, at most
    /// [`OLDER_SESSIONS`](super::OLDER_SESSIONS).
    pub(super) previous: Vec<Session>,
    pub(super) pending: Option<Pending>,
    pub(super) cookie: Option<([u8; COOKIE_LEN], Instant)>,
    pub(super) last_init_timestamp: u64,
    /// Timestamp of our last message 1 to this peer: each new one must be later.
    pub(super) own_init_timestamp: u64,
    pub(super) last_sent: Option<Instant>,
    pub(super) last_handshake: Option<Instant>,
    pub(super) queued: VecDeque<Vec<u8>>,
    pub(super) candidates: Vec<SocketAddr>,
    /// Added by configuration: never evicted.
    pub(super) pinned: bool,
    /// Which of our sockets sends to `endpoint`.
    pub(super) endpoint_local: u16,
    /// The last address reported in [`Event::Source`](super::Event::Source) and when: a new
    /// path is reported once, and again each [`SOURCE_REPORT_INTERVAL`](super::SOURCE_REPORT_INTERVAL)
    /// while the peer's packets keep coming from it.
    pub(super) reported_source: Option<(u16, SocketAddr, Instant)>,
    /// Counters per remote address (the first [`MAX_TRAFFIC_ENTRIES`] addresses only).
    pub(super) traffic: Vec<(SocketAddr, Traffic)>,
    /// Bytes of its authentic transport packets, from any address: what it paid for what we
    /// send on its behalf (the engine's send gate), which the bounded table above cannot
    /// count once full.
    pub(super) bytes_in: u64,
    /// Our message 2 left candidates out to stay no larger than message 1: they follow in an
    /// ADVERT once the initiator's first authentic transport packet proves its address.
    pub(super) advert_owed: bool,
}

impl Peer {
    pub(super) fn new(id: NodeId) -> Self {
        Self {
            id,
            overlay: id.overlay_addr(),
            endpoint: None,
            current: None,
            previous: Vec::new(),
            pending: None,
            cookie: None,
            last_init_timestamp: 0,
            own_init_timestamp: 0,
            last_sent: None,
            last_handshake: None,
            queued: VecDeque::new(),
            candidates: Vec::new(),
            pinned: false,
            endpoint_local: 0,
            reported_source: None,
            traffic: Vec::new(),
            bytes_in: 0,
            advert_owed: false,
        }
    }
}

impl Tunnel {
    /// The cipher of the current session with `peer`.
    pub fn cipher(&self, peer: &NodeId) -> Option<Cipher> {
        self.peers.get(peer)?.current.as_ref().map(|s| s.cipher)
    }

    /// Whether a usable session with `peer` exists.
    pub fn is_established(&self, peer: &NodeId, now: Instant) -> bool {
        self.peers
            .get(peer)
            .and_then(|p| p.current.as_ref())
            .is_some_and(|s| usable(&self.config, s, now))
    }

    /// The address packets to `peer` go to.
    pub fn endpoint(&self, peer: &NodeId) -> Option<SocketAddr> {
        self.peers.get(peer).and_then(|p| p.endpoint)
    }

    /// The candidates `peer` sent in its last handshake.
    pub fn peer_candidates(&self, peer: &NodeId) -> &[SocketAddr] {
        self.peers.get(peer).map_or(&[], |p| &p.candidates)
    }

    /// Traffic counters of `peer` per remote address (a bounded table: diagnostics).
    pub fn traffic(&self, peer: &NodeId) -> &[(SocketAddr, Traffic)] {
        self.peers.get(peer).map_or(&[], |p| &p.traffic)
    }

    /// Bytes of `peer`'s authentic transport packets, from any address (UDP payload).
    pub fn bytes_in(&self, peer: &NodeId) -> u64 {
        self.peers.get(peer).map_or(0, |p| p.bytes_in)
    }

    /// Adds a peer we always keep (a configured peer), with an address to reach it if known.
    /// Packets to its overlay address start a handshake by themselves. Fails when the table is
    /// full of peers that cannot be evicted; peers in [`TunnelConfig::pinned`](super::TunnelConfig::pinned) always get their
    /// place.
    pub fn add_peer(
        &mut self,
        peer: NodeId,
        endpoint: Option<SocketAddr>,
    ) -> Result<(), SendError> {
        let p = self
            .peer_entry(peer)
            .ok_or(SendError::NoPeer(peer.overlay_addr()))?;
        p.pinned = true;
        if let Some(e) = endpoint {
            p.endpoint = Some(addr::normalize(e));
        }
        Ok(())
    }

    /// Sends `peer`'s traffic to `addr` from now on (the path manager's choice), and flushes
    /// packets that waited for a path.
    pub fn set_endpoint(&mut self, now: Instant, unix_ms: u64, peer: NodeId, addr: SocketAddr) {
        self.set_endpoint_via(now, unix_ms, peer, 0, addr);
    }

    /// As [`Tunnel::set_endpoint`], sending from our socket `local`.
    pub fn set_endpoint_via(
        &mut self,
        now: Instant,
        unix_ms: u64,
        peer: NodeId,
        local: u16,
        addr: SocketAddr,
    ) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.endpoint = Some(addr::normalize(addr));
        p.endpoint_local = local;
        p.reported_source = None;
        self.flush_queued(now, unix_ms, peer);
    }

    /// Gives a configured peer its place in the table for good (not bounded by `max_peers`: the
    /// configuration bounds it).
    pub(super) fn pin(&mut self, id: NodeId) {
        self.by_overlay.insert(id.overlay_addr(), id);
        self.peers.entry(id).or_insert_with(|| Peer::new(id)).pinned = true;
    }

    /// Whether `peer` is pinned: in the table for good, never evicted.
    pub fn is_pinned(&self, peer: &NodeId) -> bool {
        self.peers.get(peer).is_some_and(|p| p.pinned)
    }

    pub(super) fn peer_entry(&mut self, id: NodeId) -> Option<&mut Peer> {
        if !self.peers.contains_key(&id) {
            if self.peers.len() >= self.config.max_peers && !self.evict_idle_peer() {
                self.stats.peers_full += 1;
                return None;
            }
            self.by_overlay.insert(id.overlay_addr(), id);
            self.peers.insert(id, Peer::new(id));
        }
        self.peers.get_mut(&id)
    }

    /// Forgets the idle peer (no session, no handshake, not added by [`Tunnel::add_peer`]) whose
    /// last handshake is oldest. False if every peer is busy or pinned.
    pub(super) fn evict_idle_peer(&mut self) -> bool {
        let victim = self
            .peers
            .values()
            .filter(|p| {
                !p.pinned && p.current.is_none() && p.previous.is_empty() && p.pending.is_none()
            })
            .min_by_key(|p| p.last_handshake)
            .map(|p| p.id);
        let Some(id) = victim else { return false };
        self.peers.remove(&id);
        self.by_overlay.remove(&id.overlay_addr());
        true
    }

    pub(super) fn fresh_index(&mut self, peer: NodeId) -> u32 {
        loop {
            let i = self.rng.next_u32();
            if let std::collections::hash_map::Entry::Vacant(v) = self.by_index.entry(i) {
                v.insert(peer);
                return i;
            }
        }
    }

    /// The peer owning session index `receiver`, counting a miss.
    pub(super) fn peer_of_index(&mut self, receiver: u32) -> Option<NodeId> {
        let id = self.by_index.get(&receiver).copied();
        if id.is_none() {
            self.stats.unknown_index += 1;
        }
        id
    }

    pub(super) fn forget_sessions(&mut self, id: NodeId) {
        if let Some(p) = self.peers.get_mut(&id) {
            for s in p.current.take().into_iter().chain(p.previous.drain(..)) {
                self.by_index.remove(&s.local_index);
            }
            if let Some(pd) = p.pending.take() {
                self.by_index.remove(&pd.initiator.local_index);
            }
            p.queued.clear();
        }
    }
}
