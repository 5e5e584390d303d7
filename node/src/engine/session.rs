//! Sessions with peers: what the engine keeps per peer, and what it does with the tunnel's
//! events (a session established, a new source, a probe answered, a packet, a session closed).
//! Peer state exists only for peers that proved their key (or that we connect to ourselves),
//! is bounded, and is forgotten once idle. Also the send gate's engine side: which peer a
//! tunnel datagram belongs to, and what that peer has earned.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shipworm_tunnel::tunnel::Event as TunnelEvent;
use shipworm_tunnel::wire::packet::{self, Packet};
use shipworm_tunnel::NodeId;

use super::birthday::Birthday;
use super::gate::PEER_UNVERIFIED_TARGETS;
use super::nat_check::peer_is_hard;
use super::paths::{CandidateKind, PairState, Paths};
use super::{ConnectError, DropReason, Engine, NodeEvent, INDICES_PER_PEER, PEER_IDLE_EXPIRY};

/// How long a connection attempt goes on once no rendezvous can be reached (UDP silent, TCP
/// refused): long enough for a direct handshake to the ticket's addresses.
const UNREACHABLE_PATIENCE: Duration = Duration::from_secs(2);
/// ADVERT frames a peer may send at once, and then one per [`ADVERT_INTERVAL`].
const ADVERT_BURST: u32 = 4;
/// See [`ADVERT_BURST`].
const ADVERT_INTERVAL: Duration = Duration::from_secs(2);
/// Most pairs made from a peer's claims (handshake adverts, ADVERT frames).
pub(super) const MAX_CLAIMED_PAIRS: usize = shipworm_tunnel::wire::payload::MAX_CANDIDATES;

/// A handshake packet on its way into the tunnel: credited to the peer it authenticates.
#[derive(Debug, Clone, Copy)]
pub(super) struct Inbound {
    /// Its length.
    pub(super) len: u64,
    /// The sender's session index (message 1 or 2).
    pub(super) their_index: u32,
}

#[derive(Debug)]
pub(super) struct PeerState {
    pub(super) paths: Paths,
    /// Set while `connect` runs: when it started.
    pub(super) connecting: Option<Instant>,
    pub(super) established: bool,
    pub(super) connected: bool,
    /// The peer's handshake flags (`FLAG_*`).
    pub(super) peer_flags: u8,
    /// A session existed once (later handshakes are rekeys or reconnections).
    pub(super) established_before: bool,
    /// Our part in birthday punching, while it runs.
    pub(super) birthday: Option<Birthday>,
    /// Birthday punching ran, and is not to run again (it runs once per connection, and once
    /// more each time the session lost every path and a fresh handshake proved the peer alive).
    pub(super) birthday_tried: bool,
    /// When birthday punching last started (runs are at least
    /// [`REPUNCH_INTERVAL`](super::birthday::REPUNCH_INTERVAL) apart).
    pub(super) birthday_started: Option<Instant>,
    /// Every direct path failed (a NAT rebound on one side): the next handshake that completes
    /// punches again.
    pub(super) lost_every_path: bool,
    /// Our spare sockets its authentic packets arrived on, and when last (bounded).
    pub(super) inbound_sockets: Vec<(u16, Instant)>,
    /// The peer's address as a rendezvous observed it (INTRO_ACK to one of our transactions).
    pub(super) rendezvous_addr: Option<SocketAddr>,
    /// Birthday probing waits for `rendezvous_addr` (its INTRO_ACK was lost): since when, and
    /// how many fresh introductions were sent to get one.
    pub(super) awaiting_observation: Option<Instant>,
    pub(super) reintroductions: u8,
    /// Where its last authenticated handshake came from.
    pub(super) handshake_from: Option<SocketAddr>,
    /// Bytes of authenticated handshake packets it sent us (transport bytes the tunnel counts).
    pub(super) handshake_bytes_in: u64,
    /// Bytes we sent to unverified addresses on its behalf.
    pub(super) unverified_bytes_out: u64,
    /// Unverified addresses we sent to on its behalf, and when first (bounded per window).
    pub(super) unverified_targets: Vec<(SocketAddr, Instant)>,
    /// ADVERT budget: tokens and last refill.
    pub(super) advert_tokens: (u32, Instant),
    /// Our and its session indices, newest last.
    pub(super) our_indices: Vec<u32>,
    pub(super) their_indices: Vec<u32>,
    /// Last sign of life (a session, an attempt): idle peers are forgotten.
    pub(super) last_active: Instant,
    /// Its outstanding probes (its share of the probe table).
    pub(super) probes_out: usize,
    /// When its current session was established (a relayed path waits for a direct one from
    /// then).
    pub(super) established_at: Option<Instant>,
    /// Our servers it is known to be registered at (it was introduced or relayed through them).
    pub(super) relays: Vec<SocketAddr>,
}

impl PeerState {
    pub(super) fn new(now: Instant) -> Self {
        Self {
            paths: Paths::default(),
            connecting: None,
            established: false,
            connected: false,
            peer_flags: 0,
            established_before: false,
            birthday: None,
            birthday_tried: false,
            birthday_started: None,
            lost_every_path: false,
            inbound_sockets: Vec::new(),
            rendezvous_addr: None,
            awaiting_observation: None,
            reintroductions: 0,
            handshake_from: None,
            handshake_bytes_in: 0,
            unverified_bytes_out: 0,
            unverified_targets: Vec::new(),
            advert_tokens: (ADVERT_BURST, now),
            our_indices: Vec::new(),
            their_indices: Vec::new(),
            last_active: now,
            probes_out: 0,
            established_at: None,
            relays: Vec::new(),
        }
    }

    /// Notes that the peer is registered at `server`.
    pub(super) fn registered_at(&mut self, server: SocketAddr) {
        if !self.relays.contains(&server) && self.relays.len() < super::MAX_RENDEZVOUS {
            self.relays.push(server);
        }
    }

    /// Takes one ADVERT token; false if the peer sends them too fast.
    fn advert_allowed(&mut self, now: Instant) -> bool {
        let (tokens, at) = self.advert_tokens;
        let earned =
            (now.saturating_duration_since(at).as_millis() / ADVERT_INTERVAL.as_millis()) as u32;
        let (mut tokens, at) = if earned > 0 {
            ((tokens + earned).min(ADVERT_BURST), now)
        } else {
            (tokens, at)
        };
        let ok = tokens > 0;
        tokens = tokens.saturating_sub(1);
        self.advert_tokens = (tokens, at);
        ok
    }

    /// Pairs made from the peer's claims.
    fn claimed_pairs(&self) -> usize {
        self.paths
            .pairs
            .iter()
            .filter(|p| p.kind == CandidateKind::Advertised)
            .count()
    }
}

/// Remembers `index` of `peer` in `map` and in the peer's short list (the oldest one goes).
fn remember_index(
    map: &mut std::collections::HashMap<u32, NodeId>,
    list: &mut Vec<u32>,
    index: u32,
    peer: NodeId,
) {
    if list.contains(&index) {
        return;
    }
    if list.len() >= INDICES_PER_PEER {
        let old = list.remove(0);
        if map.get(&old) == Some(&peer) {
            map.remove(&old);
        }
    }
    list.push(index);
    map.insert(index, peer);
}

impl Engine {
    /// The state of `peer`, made if there is room: the table holds at most the tunnel's
    /// `max_peers`; an idle peer (no session, no attempt) makes room.
    pub(super) fn peer_state(&mut self, peer: NodeId, now: Instant) -> Option<&mut PeerState> {
        if !self.peers.contains_key(&peer) {
            if self.peers.len() >= self.config.tunnel.max_peers.max(1) {
                let idle = self
                    .peers
                    .iter()
                    .filter(|(_, p)| !p.established && p.connecting.is_none())
                    .min_by_key(|(id, p)| (p.last_active, **id))
                    .map(|(id, _)| *id);
                match idle {
                    Some(id) => self.forget_peer(id),
                    None => {
                        self.count_drop(DropReason::PeerTableFull);
                        return None;
                    }
                }
            }
            self.peers.insert(peer, PeerState::new(now));
        }
        self.peers.get_mut(&peer)
    }

    fn forget_peer(&mut self, id: NodeId) {
        if let Some(st) = self.peers.remove(&id) {
            for i in st.our_indices {
                self.our_index.remove(&i);
            }
            for i in st.their_indices {
                self.their_index.remove(&i);
            }
        }
        self.observed.forget_peer(&id);
        self.routes.forget_peer(&id);
    }

    /// Forgets peers without a session or an attempt for [`PEER_IDLE_EXPIRY`].
    pub(super) fn expire_peers(&mut self, now: Instant) {
        let idle: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                !p.established
                    && p.connecting.is_none()
                    && p.birthday.is_none()
                    && now.saturating_duration_since(p.last_active) >= PEER_IDLE_EXPIRY
            })
            .map(|(id, _)| *id)
            .collect();
        for id in idle {
            self.forget_peer(id);
        }
    }

    /// Hands a tunnel packet to the tunnel, noting a handshake's length and sender index for the
    /// peer it will authenticate.
    pub(super) fn tunnel_input(
        &mut self,
        now: Instant,
        unix_ms: u64,
        local: u16,
        from: SocketAddr,
        bytes: &[u8],
    ) {
        self.inbound = match Packet::parse(bytes) {
            Ok(Packet::Init { sender, .. }) | Ok(Packet::Resp { sender, .. }) => Some(Inbound {
                len: bytes.len() as u64,
                their_index: sender,
            }),
            _ => None,
        };
        self.tunnel
            .handle_packet_on(now, unix_ms, local, from, bytes);
    }

    /// The peer a tunnel datagram belongs to, by the session index it carries.
    fn owner(&self, contents: &[u8]) -> Option<NodeId> {
        let index = |at: usize| {
            contents
                .get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        };
        match contents.first().copied()? {
            packet::HANDSHAKE_INIT => self.our_index.get(&index(packet::INDEX)?).copied(),
            packet::HANDSHAKE_RESP => self
                .their_index
                .get(&index(packet::RESP_RECEIVER)?)
                .copied(),
            packet::TRANSPORT => self.their_index.get(&index(packet::INDEX)?).copied(),
            _ => None,
        }
    }

    /// Bytes `peer` sent us in authenticated packets. Counted whatever address they came from:
    /// the per-address traffic table is bounded, and a birthday spray fills it with the ports it
    /// aims at, so summing it froze a peer's credit at its first packets; the lab's relay
    /// matrix caught the easy side unable to probe the one port the hard side kept, so the
    /// punched path died and the pair stayed relayed.
    fn credit_in(&self, peer: &NodeId, st: &PeerState) -> u64 {
        st.handshake_bytes_in + self.tunnel.bytes_in(peer)
    }

    /// The send gate for one tunnel datagram to `dest`: verified addresses (a probe answered
    /// from there, a rendezvous' observation, our servers) take anything; others get a fixed
    /// budget, and what goes there on behalf of a peer is charged to what that peer sent us.
    pub(super) fn admit(&mut self, now: Instant, dest: SocketAddr, contents: &[u8]) -> bool {
        // A relayed path's datagram reaches only the peer, through a relay that checked both
        // ends' registrations: no third party can be its target.
        if self.birthday_sending
            || super::relay::is_relay_addr(&dest)
            || self.gate.is_verified(dest, now)
            || self.servers.iter().any(|r| r.server == dest)
        {
            return true;
        }
        // A reply to the source of the datagram being handled (a probe's answer, the
        // confirmation of a message 2, a triggered probe of a new source) fits in what that
        // datagram cost its sender: amplification ≤ 1 per datagram, so it is not charged to the
        // peer's credit. It still counts against the address' budget, so a sender that spoofs
        // a victim's address gets it no more datagrams than any other unverified address.
        let len = contents.len() as u64;
        let reply = match self.reply.as_mut() {
            Some((to, left)) if *to == dest && len <= *left => {
                *left -= len;
                true
            }
            _ => false,
        };
        let kind = contents.first().copied().unwrap_or(0);
        let owner = self.owner(contents);
        if kind != packet::COOKIE_REPLY && owner.is_none() {
            // No peer we keep state for: nobody earned this datagram.
            self.count_drop(DropReason::UnattributedTransmit);
            return false;
        }
        if let Err(r) = self.gate.check(dest, now) {
            tracing::trace!(%dest, kind, reply, "the send gate refused a datagram");
            self.count_drop(match r {
                super::gate::Refusal::AddressBudget => DropReason::UnverifiedAddressBudget,
                super::gate::Refusal::GlobalBudget => DropReason::UnverifiedGlobalBudget,
                super::gate::Refusal::TableFull => DropReason::GateTableFull,
            });
            return false;
        }
        // A cookie reply is smaller than the message 1 it answers; our own message 1 goes only
        // where the user or a rendezvous told us (a ticket, an INTRO_ACK) or to a verified path.
        let charged = !reply && !matches!(kind, packet::COOKIE_REPLY | packet::HANDSHAKE_INIT);
        if let (true, Some(peer)) = (charged, owner) {
            let Some(st) = self.peers.get(&peer) else {
                self.count_drop(DropReason::UnattributedTransmit);
                return false;
            };
            if st.unverified_bytes_out + len > self.credit_in(&peer, st) {
                tracing::trace!(%dest, kind, "no credit for a datagram");
                self.count_drop(DropReason::NoCredit);
                return false;
            }
            let window = super::gate::UNVERIFIED_WINDOW;
            let Some(st) = self.peers.get_mut(&peer) else {
                return false;
            };
            st.unverified_targets
                .retain(|(_, t)| now.saturating_duration_since(*t) < window);
            if !st.unverified_targets.iter().any(|(a, _)| *a == dest) {
                if st.unverified_targets.len() >= PEER_UNVERIFIED_TARGETS {
                    self.count_drop(DropReason::UnverifiedAddressBudget);
                    return false;
                }
                st.unverified_targets.push((dest, now));
            }
            st.unverified_bytes_out += len;
        }
        self.gate.count(dest, now);
        true
    }

    pub(super) fn fail(&mut self, peer: NodeId, error: ConnectError) {
        if let Some(st) = self.peers.get_mut(&peer) {
            st.connecting = None;
        }
        self.push_event(NodeEvent::ConnectFailed { peer, error });
    }

    /// Acts on what the tunnel reports (sessions, sources, probe answers, packets), then takes
    /// its datagrams through the send gate, then sprays message 2.
    pub(super) fn drain_tunnel(&mut self, now: Instant, unix_ms: u64) {
        // Events first: handling them may call the tunnel again, whose events this loop takes
        // too; the gate and the spray make none.
        // What the handlers send themselves (introductions) leaves after the tunnel's own
        // datagrams, as it was queued after them: a direct message 1 goes before its copy
        // through the rendezvous.
        let outer = std::mem::replace(&mut self.deferring, true);
        while let Some(e) = self.tunnel.poll_event() {
            self.on_tunnel_event(now, unix_ms, e);
        }
        self.deferring = outer;
        self.take_tunnel_transmits(now);
        self.spray(now);
        if !outer {
            let deferred = std::mem::take(&mut self.deferred);
            for t in deferred {
                self.push_transmit_via(t.local, t.dest, t.contents);
            }
        }
        self.inbound = None;
        self.reply = None;
    }

    /// Message 2 to the initiator's candidates (the responder's half of a simultaneous open),
    /// each copy through the gate and charged to the initiator.
    fn spray(&mut self, now: Instant) {
        for (peer, msg, to) in std::mem::take(&mut self.sprays) {
            for dest in to {
                if !self.peers.contains_key(&peer) {
                    break;
                }
                if self.admit(now, dest, &msg) {
                    self.push_transmit(dest, msg.clone());
                }
            }
        }
    }

    fn on_tunnel_event(&mut self, now: Instant, unix_ms: u64, e: TunnelEvent) {
        match e {
            TunnelEvent::Initiation { peer, packet } => {
                if let (Some(st), Ok(Packet::Init { sender, .. })) =
                    (self.peers.get_mut(&peer), Packet::parse(&packet))
                {
                    remember_index(&mut self.our_index, &mut st.our_indices, sender, peer);
                }
                self.introduce(now, peer, &packet)
            }
            TunnelEvent::Response { peer, packet } => {
                if !self.peers.contains_key(&peer) {
                    return;
                }
                if self.introduced == Some(peer) {
                    self.introduce(now, peer, &packet);
                }
                // The copy to where message 1 came from is the tunnel's; these are the rest.
                let from = self.peers.get(&peer).and_then(|p| p.handshake_from);
                let hosts: Vec<SocketAddr> = self
                    .local
                    .iter()
                    .filter(|c| c.kind == CandidateKind::Host)
                    .map(|c| c.addr)
                    .collect();
                let to: Vec<SocketAddr> = self
                    .tunnel
                    .peer_candidates(&peer)
                    .iter()
                    .filter_map(|c| self.claimed_candidate(*c, &hosts))
                    .filter(|c| Some(*c) != from)
                    .take(MAX_CLAIMED_PAIRS)
                    .collect();
                if !to.is_empty() {
                    self.sprays.push((peer, packet, to));
                }
            }
            TunnelEvent::Established {
                peer,
                advert,
                from,
                our_flags,
            } => self.on_established(now, unix_ms, peer, advert, from, our_flags),
            TunnelEvent::Source { peer, from, local } => {
                self.inbound_on(peer, local, now);
                if let Some(st) = self.peers.get_mut(&peer) {
                    if let Some(i) = st
                        .paths
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
                let Some((p, sock, remote, sent)) = self.take_probe(tx) else {
                    self.count_drop(DropReason::UnknownProbeAnswer);
                    return;
                };
                if p != peer || remote != from || sock != local {
                    self.count_drop(DropReason::MismatchedProbeAnswer);
                    return;
                }
                // Our random transaction id came back from where we sent it: return
                // routability proven.
                self.gate.verify(remote, now);
                // Where the peer saw us: its claim, kept until confirmed (through a relay it sees
                // only our stand-in: nothing to learn).
                if !super::relay::is_relay_addr(&remote) {
                    self.observed_by_peer(now, peer, observed);
                }
                if let Some(st) = self.peers.get_mut(&peer) {
                    st.last_active = now;
                    // A birthday probe that hit has no pair yet: it becomes one.
                    st.paths
                        .add_on(local, remote, CandidateKind::PeerReflexive, now);
                    st.paths.answered_on(local, remote, sent, now);
                }
                self.reselect(now, unix_ms, peer);
            }
            TunnelEvent::Advert { peer, advert } => {
                let Some(st) = self.peers.get_mut(&peer) else {
                    return;
                };
                if !st.advert_allowed(now) {
                    self.count_drop(DropReason::AdvertRateLimited);
                    return;
                }
                st.peer_flags = advert.flags;
                self.add_claimed(now, peer, &advert.candidates);
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
                    let error = self.handshake_failure();
                    self.fail(peer, error);
                }
            }
            TunnelEvent::Closed { peer } => {
                if let Some(st) = self.peers.get_mut(&peer) {
                    st.established = false;
                    st.connected = false;
                    st.paths.selected = None;
                    st.last_active = now;
                }
                self.push_event(NodeEvent::Disconnected { peer });
            }
        }
    }

    /// Pairs from a peer's claimed candidates: only acceptable addresses (global, or on one of
    /// our subnets, or a NAT64 synthesis of a global IPv4), at most [`MAX_CLAIMED_PAIRS`] of them.
    fn add_claimed(&mut self, now: Instant, peer: NodeId, candidates: &[SocketAddr]) {
        let hosts: Vec<SocketAddr> = self
            .local
            .iter()
            .filter(|c| c.kind == CandidateKind::Host)
            .map(|c| c.addr)
            .collect();
        let mut refused = 0;
        // Without IPv4 of our own, an IPv4 candidate becomes its NAT64 synthesis.
        let claimed: Vec<Option<SocketAddr>> = candidates
            .iter()
            .map(|c| self.claimed_candidate(*c, &hosts))
            .collect();
        if let Some(st) = self.peers.get_mut(&peer) {
            for c in claimed {
                let Some(c) = c else {
                    refused += 1;
                    continue;
                };
                let known = st.paths.pairs.iter().any(|p| p.local == 0 && p.remote == c);
                if !known && st.claimed_pairs() >= MAX_CLAIMED_PAIRS {
                    refused += 1;
                    continue;
                }
                st.paths.add(c, CandidateKind::Advertised, now);
            }
        }
        for _ in 0..refused {
            self.count_drop(DropReason::CandidateRefused);
        }
    }

    fn on_established(
        &mut self,
        now: Instant,
        unix_ms: u64,
        peer: NodeId,
        advert: shipworm_tunnel::wire::payload::Advert,
        from: SocketAddr,
        our_flags: u8,
    ) {
        if self.introduced.is_some_and(|claimed| claimed != peer) {
            // An INTRO_FWD whose handshake proves another key than the one it names: no state,
            // no answer (its message 2 has no owner and stays at the gate).
            self.count_drop(DropReason::IntroducerMismatch);
            self.tunnel.close(now, peer);
            return;
        }
        let inbound = self.inbound.take();
        if self.peer_state(peer, now).is_none() {
            return;
        }
        let Some(st) = self.peers.get_mut(&peer) else {
            return;
        };
        if !st.established {
            st.established_at = Some(now);
        }
        st.established = true;
        st.last_active = now;
        st.handshake_from = Some(from);
        if let Some(i) = inbound {
            st.handshake_bytes_in += i.len;
            remember_index(
                &mut self.their_index,
                &mut st.their_indices,
                i.their_index,
                peer,
            );
        }
        let Some(st) = self.peers.get_mut(&peer) else {
            return;
        };
        st.paths.add(from, CandidateKind::PeerReflexive, now);
        st.peer_flags = advert.flags;
        // The session had lost every path and the peer just proved it is alive: the holes that
        // birthday probing made are gone (the NAT rebound, its mappings timed out), so punch
        // again, at least `REPUNCH_INTERVAL` after the last run.
        if std::mem::take(&mut st.lost_every_path) {
            st.birthday_tried = false;
        }
        let first = !st.established_before;
        st.established_before = true;
        self.add_claimed(now, peer, &advert.candidates);
        if first {
            self.push_event(NodeEvent::Established { peer });
        }
        // The peer got flags older than ours (we measured our NAT meanwhile): tell it with a
        // fresh handshake, which the rendezvous relays whatever the NATs do.
        if our_flags != self.current_flags() {
            let remotes = self.reconnect_targets(now, peer);
            let _ = self.tunnel.connect(now, unix_ms, peer, &remotes);
        }
        self.probe_due(now, peer);
    }

    /// Where a fresh message 1 to `peer` may go without the user's word: addresses that proved
    /// themselves, and the one a rendezvous observed.
    pub(super) fn reconnect_targets(&self, now: Instant, peer: NodeId) -> Vec<SocketAddr> {
        let Some(st) = self.peers.get(&peer) else {
            return Vec::new();
        };
        let mut out: Vec<SocketAddr> = st
            .paths
            .pairs
            .iter()
            .filter(|p| p.local == 0 && self.gate.is_verified(p.remote, now))
            .map(|p| p.remote)
            .collect();
        if let Some(a) = st.rendezvous_addr.filter(|a| !out.contains(a)) {
            out.push(a);
        }
        out
    }

    /// Why a handshake never completed: no rendezvous ever answered us (not the peer's fault),
    /// or the peer did not answer.
    fn handshake_failure(&self) -> ConnectError {
        match self.servers.first() {
            Some(r) if !self.any_rendezvous_answered() => {
                ConnectError::RendezvousUnreachable(r.server)
            }
            _ => ConnectError::HandshakeTimeout,
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
        // No rendezvous answers over UDP or TCP: a handshake that has not completed in the
        // time a direct one takes will not (the peer's answer would come through a rendezvous).
        if let (false, Some(server)) = (st.established, self.unreachable) {
            if waited >= UNREACHABLE_PATIENCE {
                return self.fail(peer, ConnectError::RendezvousUnreachable(server));
            }
        }
        // A relayed pair still being checked may yet connect us.
        let relay_pending = st
            .paths
            .pairs
            .iter()
            .any(|p| p.kind == CandidateKind::Relayed && p.state != PairState::Failed);
        if st.established
            && !st.connected
            && both_hard
            && !relay_pending
            && waited >= self.config.paths.check_period
        {
            self.fail(peer, ConnectError::NoDirectPathPossible);
        } else if waited >= self.config.connect_timeout {
            let error = if st.established {
                ConnectError::NoDirectPath
            } else {
                self.handshake_failure()
            };
            self.fail(peer, error);
        }
    }
}
