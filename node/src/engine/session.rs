//! Sessions with peers: what the engine keeps per peer, and what it does with the tunnel's
//! events (a session established, a new source, a probe answered, a packet, a session closed).

use std::net::SocketAddr;
use std::time::Instant;

use shipworm_tunnel::tunnel::Event as TunnelEvent;
use shipworm_tunnel::NodeId;

use super::birthday::Birthday;
use super::nat_check::peer_is_hard;
use super::paths::{CandidateKind, PairState, Paths};
use super::{ConnectError, DropReason, Engine, NodeEvent};

#[derive(Debug)]
pub(super) struct PeerState {
    pub(super) paths: Paths,
    /// Set while `connect` runs: when it started.
    pub(super) connecting: Option<Instant>,
    pub(super) established: bool,
    pub(super) connected: bool,
    /// The message 1 we answered came through the rendezvous: relay message 2 back that way.
    pub(super) relay_response: bool,
    /// The peer's handshake flags (`FLAG_*`).
    pub(super) peer_flags: u8,
    /// A session existed once (later handshakes are rekeys or reconnections).
    pub(super) established_before: bool,
    /// Our part in birthday punching, while it runs.
    pub(super) birthday: Option<Birthday>,
    /// Birthday punching ran (it runs once per connection attempt).
    pub(super) birthday_tried: bool,
}

impl PeerState {
    pub(super) fn new() -> Self {
        Self {
            paths: Paths::default(),
            connecting: None,
            established: false,
            connected: false,
            relay_response: false,
            peer_flags: 0,
            established_before: false,
            birthday: None,
            birthday_tried: false,
        }
    }
}

impl Engine {
    pub(super) fn fail(&mut self, peer: NodeId, error: ConnectError) {
        if let Some(st) = self.peers.get_mut(&peer) {
            st.connecting = None;
        }
        self.push_event(NodeEvent::ConnectFailed { peer, error });
    }

    /// Acts on what the tunnel reports: sessions, sources, probe answers, packets.
    pub(super) fn drain_tunnel(&mut self, now: Instant, unix_ms: u64) {
        self.take_tunnel_transmits();
        while let Some(e) = self.tunnel.poll_event() {
            match e {
                TunnelEvent::Initiation { peer, packet } => self.introduce(now, peer, &packet),
                TunnelEvent::Response { peer, packet } => {
                    let relay = self
                        .peers
                        .get_mut(&peer)
                        .is_some_and(|p| std::mem::take(&mut p.relay_response));
                    if relay {
                        self.introduce(now, peer, &packet);
                    }
                }
                TunnelEvent::Established {
                    peer,
                    advert,
                    from,
                    our_flags,
                } => {
                    let st = self.peers.entry(peer).or_insert_with(PeerState::new);
                    st.established = true;
                    st.paths.add(from, CandidateKind::PeerReflexive, now);
                    st.peer_flags = advert.flags;
                    let first = !st.established_before;
                    st.established_before = true;
                    for c in advert.candidates {
                        st.paths.add(c, CandidateKind::Advertised, now);
                    }
                    if first {
                        self.push_event(NodeEvent::Established { peer });
                    }
                    // The peer got flags older than ours (we measured our NAT meanwhile): tell it
                    // with a fresh handshake, which the rendezvous relays whatever the NATs do.
                    if our_flags != self.current_flags() {
                        let remotes: Vec<SocketAddr> = self
                            .peers
                            .get(&peer)
                            .map(|p| p.paths.pairs.iter().map(|x| x.remote).collect())
                            .unwrap_or_default();
                        let _ = self.tunnel.connect(now, unix_ms, peer, &remotes);
                    }
                    self.probe_due(now, peer);
                }
                TunnelEvent::Source { peer, from, local } => {
                    if let Some(st) = self.peers.get_mut(&peer) {
                        if let Some(i) =
                            st.paths
                                .add_on(local, from, CandidateKind::PeerReflexive, now)
                        {
                            // Probe a new source at once: it may be the peer's new mapping.
                            if st.paths.pairs[i].state == PairState::Waiting {
                                self.probe_pair(now, peer, i);
                            }
                        }
                    }
                }
                TunnelEvent::ProbeAnswer {
                    peer,
                    tx,
                    observed,
                    from,
                    local,
                } => {
                    let Some((p, sock, remote, sent)) = self.probes.remove(&tx) else {
                        self.count_drop(DropReason::UnknownProbeAnswer);
                        continue;
                    };
                    if p != peer || remote != from || sock != local {
                        self.count_drop(DropReason::MismatchedProbeAnswer);
                        continue;
                    }
                    // Where the peer saw us: a peer-reflexive candidate of ours.
                    if !self.local.iter().any(|c| c.addr == observed) {
                        self.add_local_candidate(observed, CandidateKind::PeerReflexive);
                    }
                    if let Some(st) = self.peers.get_mut(&peer) {
                        // A birthday probe that hit has no pair yet: it becomes one.
                        st.paths
                            .add_on(local, remote, CandidateKind::PeerReflexive, now);
                        st.paths.answered_on(local, remote, sent, now);
                    }
                    self.reselect(now, unix_ms, peer);
                }
                TunnelEvent::Advert { peer, advert } => {
                    if let Some(st) = self.peers.get_mut(&peer) {
                        st.peer_flags = advert.flags;
                        for c in advert.candidates {
                            st.paths.add(c, CandidateKind::Advertised, now);
                        }
                    }
                    self.probe_due(now, peer);
                }
                TunnelEvent::Packet { peer, packet } => {
                    self.push_event(NodeEvent::Packet { peer, packet })
                }
                TunnelEvent::Local(p) => self.push_event(NodeEvent::Local(p)),
                TunnelEvent::HandshakeFailed { peer } => {
                    if self
                        .peers
                        .get(&peer)
                        .is_some_and(|p| p.connecting.is_some())
                    {
                        self.fail(peer, ConnectError::HandshakeTimeout);
                    }
                }
                TunnelEvent::Closed { peer } => {
                    if let Some(st) = self.peers.get_mut(&peer) {
                        st.established = false;
                        st.connected = false;
                        st.paths.selected = None;
                    }
                    self.push_event(NodeEvent::Disconnected { peer });
                }
            }
        }
    }

    /// Ends a connection attempt that took too long, or that cannot work (both NATs hard).
    pub(super) fn connect_timeout(&mut self, now: Instant, peer: NodeId) {
        let Some(st) = self.peers.get(&peer) else {
            return;
        };
        let Some(started) = st.connecting else {
            return;
        };
        let both_hard = self.we_are_hard() && peer_is_hard(st.peer_flags);
        let waited = now.saturating_duration_since(started);
        if st.established && !st.connected && both_hard && waited >= self.config.paths.check_period
        {
            self.fail(peer, ConnectError::NoDirectPathPossible);
        } else if waited >= self.config.connect_timeout {
            let error = if st.established {
                ConnectError::NoDirectPath
            } else {
                ConnectError::HandshakeTimeout
            };
            self.fail(peer, error);
        }
    }
}
