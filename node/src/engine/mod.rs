//! The node's connectivity engine, sans-IO: registration, introduction, hole punching and path
//! selection around a [`Tunnel`] (`docs/protocol.md` §"Connecting (the node engine)").
//!
//! One UDP socket carries everything: rendezvous messages, STUN, handshakes and tunnel frames,
//! so the mapping a rendezvous observes is the one peers reach. Feed datagrams to
//! [`Engine::handle_packet`], time to [`Engine::handle_timeout`]; send what
//! [`Engine::poll_transmit`] returns; act on [`Engine::poll_event`].
//!
//! **Invariant:** drain `poll_transmit` and `poll_event` after every call that takes `now`;
//! call `handle_timeout` at or after [`Engine::poll_timeout`].
//!
//! The procedure for `connect(B)`: message 1 goes to the rendezvous (INTRODUCE) and directly to
//! every address of B already known; the rendezvous' acknowledgement adds B's observed address,
//! which gets message 1 too. B answers with message 2 directly to every candidate of A (opening
//! its own NAT toward them) and, because the introduction came through the rendezvous, through
//! the rendezvous as well, so the handshake completes whatever the NATs do. Then both sides probe
//! every candidate pair at once (a simultaneous open); a pair is used only once a probe and its
//! answer have both crossed it.
//!
//! **Randomness:** every draw (transaction ids, birthday ports) comes from the [`Rng`] given to
//! [`Engine::new`], and peers are walked in NodeId order, so one seed gives one packet trace.
//! **Drops** are counted by [`DropReason`] ([`Engine::drops`]), never logged per packet.
//!
//! Rooms: this file holds the engine's state, its queues and the driving calls;
//! `registration` keeps us registered at each rendezvous; `introduction` connects through one
//! (INTRODUCE, INTRO_ACK, INTRO_FWD); `nat_check` measures our NAT with STUN and sets our
//! handshake flags; `session` follows the tunnel's sessions per peer; `paths` is one peer's
//! pair table and `probing` the probes and choice over it; `birthday` punches a hard NAT;
//! `diagnostics` is the `status` view; `drops` the counters; `events` what the node hears;
//! `gate` the send gate every tunnel datagram passes (return routability before volume),
//! `hygiene` which claimed candidates may become pairs, `observed` what peers say they see of
//! us, `nat64` a peer's IPv4 candidates as IPv6 ones when we have no IPv4.

pub mod birthday;
mod diagnostics;
mod drops;
mod events;
pub mod gate;
pub mod hygiene;
mod introduction;
pub mod nat64;
mod nat_check;
mod observed;
pub mod paths;
mod probing;
pub mod registration;
pub mod relay;
mod session;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shipworm_tunnel::rng::{Rng, RngCore};
use shipworm_tunnel::tunnel::{Accept, SendError, Tunnel, TunnelConfig, MAX_QUEUED};
use shipworm_tunnel::wire::{addr, packet};
use shipworm_tunnel::{Identity, NodeId};

use birthday::BirthdayConfig;
use paths::{CandidateKind, PathTiming, Paths};
use registration::Registration;
use session::PeerState;

pub use diagnostics::{Diagnostics, PairDiagnostics, PeerDiagnostics};
pub use drops::{DropReason, Drops};
pub use events::{ConnectError, NodeEvent};
pub use relay::is_relay_addr;

/// Most local candidates kept.
pub const MAX_LOCAL_CANDIDATES: usize = 16;
/// Most rendezvous servers registered with.
pub const MAX_RENDEZVOUS: usize = 16;
/// Most outstanding probes tracked.
const MAX_PROBES: usize = 16384;
/// Most outstanding probes of one peer: room for a birthday run plus its pairs' checks, so one
/// peer cannot stop the path checks of the others.
const PEER_PROBE_SHARE: usize = MAX_PROBES / 4;
/// A peer without a session and without a connection attempt is forgotten after this long.
const PEER_IDLE_EXPIRY: Duration = Duration::from_secs(60);
/// Session indices remembered per peer and direction (current, previous and a rekey or two).
const INDICES_PER_PEER: usize = 4;
/// Most introductions awaiting an acknowledgement.
const MAX_INTROS: usize = 1024;
/// Most introductions held while no registration is complete.
const MAX_WAITING_INTROS: usize = 64;
/// Most outstanding STUN requests.
const MAX_STUN_CHECKS: usize = 16;
/// Most datagrams queued for the driver: room for a birthday round on top of the usual traffic.
const MAX_TRANSMITS: usize = 4 * MAX_QUEUED;
/// Most events queued for the driver.
const MAX_EVENTS: usize = MAX_QUEUED;

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Rendezvous servers to register with.
    pub rendezvous: Vec<SocketAddr>,
    /// Tunnel settings (`follow_source` is turned off: paths are chosen here).
    pub tunnel: TunnelConfig,
    /// Registration refresh interval (below common NAT UDP timeouts).
    pub refresh_interval: Duration,
    /// Path check timing.
    pub paths: PathTiming,
    /// Give up a connection attempt without a working path after this long.
    pub connect_timeout: Duration,
    /// Birthday-paradox punching between a hard and an easy NAT.
    pub birthday: BirthdayConfig,
    /// STUN servers asked for reflexive addresses every `refresh_interval` (for example a
    /// rendezvous' address of the family we do not register over).
    pub stun: Vec<SocketAddr>,
    /// Use relays (servers whose REGISTERED offers it) for peers no direct path reaches.
    pub relay: bool,
    /// How long a session waits for a direct path before a relayed one is tried (at once when
    /// both NATs map per destination).
    pub relay_after: Duration,
    /// A rendezvous that has not answered our UDP for this long is reported silent
    /// ([`NodeEvent::RendezvousSilent`]): the driver then tries its relay over TCP.
    pub udp_fallback_after: Duration,
    /// The TCP port of the rendezvous' relay (TLS), tried when its UDP is silent; `None`: never.
    pub relay_tcp_port: Option<u16>,
    /// The NAT64 prefix through which a peer's global IPv4 candidates are reached, as their
    /// RFC 6052 synthesis (`nat64`). Set only when the host has no IPv4 route of its own
    /// (`crate::io::nat64` decides); `None`: IPv4 candidates stay as they are.
    pub nat64: Option<nat64::Nat64Prefix>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            rendezvous: Vec::new(),
            tunnel: TunnelConfig::default(),
            refresh_interval: Duration::from_secs(25),
            paths: PathTiming::default(),
            connect_timeout: Duration::from_secs(10),
            birthday: BirthdayConfig::default(),
            stun: Vec::new(),
            relay: true,
            relay_after: relay::DEFAULT_RELAY_AFTER,
            udp_fallback_after: Duration::from_secs(2),
            relay_tcp_port: Some(shipworm_rendezvous::tcp::DEFAULT_TCP_PORT),
            nat64: None,
        }
    }
}

/// A datagram to send: the tunnel's own type, since the engine's transmits are the tunnel's plus
/// its rendezvous and STUN messages (socket 0 is the main one; others come from
/// [`NodeEvent::OpenSockets`]).
pub use shipworm_tunnel::tunnel::Transmit;

/// A local candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Candidate {
    /// The address.
    pub addr: SocketAddr,
    /// How we know it.
    pub kind: CandidateKind,
}

/// The engine.
pub struct Engine {
    identity: Identity,
    me: NodeId,
    config: EngineConfig,
    tunnel: Tunnel,
    servers: Vec<Registration>,
    local: Vec<Candidate>,
    /// Peers in NodeId order: every walk over them (probes, trickle, timeouts) is reproducible.
    peers: BTreeMap<NodeId, PeerState>,
    // The three tables below are only looked up and pruned, never walked to emit anything, so
    // their hash order cannot change a trace.
    /// Probe transaction id → (peer, our socket, remote, sent at).
    probes: HashMap<u64, (NodeId, u16, SocketAddr, Instant)>,
    /// Introduction transaction id → (peer, server, sent at).
    intros: HashMap<u64, (NodeId, SocketAddr, Instant)>,
    /// Introductions that waited for a registration (bounded): sent as soon as one completes.
    waiting_intros: VecDeque<(NodeId, Vec<u8>)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<NodeEvent>,
    /// Every random draw of the engine: transaction ids (rendezvous, STUN, probes) and
    /// birthday ports. Transaction ids are all that authenticates REGISTERED, ERROR and
    /// INTRO_ACK, so in production this is a CSPRNG seeded from the OS.
    rng: Rng,
    /// What was dropped, by reason.
    drops: Drops,
    /// A new local candidate waits to be sent to peers in session.
    trickle_due: bool,
    /// A gateway port mapping exists.
    port_mapped: bool,
    /// The latest time seen (for scheduling paced work in `poll_timeout`).
    last_now: Instant,
    /// Probes sent since start.
    probes_sent: u64,
    /// Extra sockets open for birthday probing (ids), and the next id to hand out.
    spare_sockets: Vec<u16>,
    next_socket_id: u16,
    sockets_requested: bool,
    /// When the engine was made (a time always in the past: "due now").
    created: Instant,
    /// Whether our NAT maps per destination, once a STUN check told us.
    maps_per_destination: Option<bool>,
    /// Whether the last check's two mappings lay a few ports apart (a sequential allocator).
    ports_sequential: bool,
    /// Outstanding STUN requests: transaction → (server, what for). `Some(observed)`: a mapping
    /// check against that reflexive address; `None`: reflexive discovery (e.g. IPv6).
    stun_checks: HashMap<[u8; 12], (SocketAddr, Option<SocketAddr>)>,
    /// When the STUN servers are asked next.
    next_stun: Instant,
    /// The send gate every tunnel datagram passes.
    gate: gate::Gate,
    /// When the gate's tables were last pruned.
    gate_expired: Instant,
    /// Our session indices (HANDSHAKE_INIT sender) → peer: which peer a message 1 is for.
    our_index: HashMap<u32, NodeId>,
    /// The peers' session indices (what our HANDSHAKE_RESP and TRANSPORT packets carry) → peer.
    their_index: HashMap<u32, NodeId>,
    /// The handshake packet being handed to the tunnel: its length and indices, credited to
    /// the peer it authenticates.
    inbound: Option<session::Inbound>,
    /// The datagram being handled: its source and how many of its bytes may still go back
    /// there as replies (answers to it, a triggered probe) without a budget.
    reply: Option<(SocketAddr, u64)>,
    /// While an INTRO_FWD is handled: the NodeId it claims.
    introduced: Option<NodeId>,
    /// Copies of message 2 to send to the initiator's candidates once the tunnel's own
    /// datagrams went through the gate: (peer, message 2, addresses).
    sprays: Vec<(NodeId, Vec<u8>, Vec<SocketAddr>)>,
    /// Set while birthday probes are sent (they have their own budget).
    birthday_sending: bool,
    /// The global budget of easy-side birthday probes: tokens, last refill.
    birthday_tokens: (u64, Instant),
    /// When the spare sockets close even without a selected path.
    sockets_close_at: Option<Instant>,
    /// What peers say they see of us (PROBE_ANSWER), before it becomes a candidate.
    observed: observed::Observed,
    /// While the tunnel's events are handled, the engine's own datagrams wait in `deferred`
    /// to leave after the tunnel's (the order they were caused in).
    deferring: bool,
    deferred: Vec<Transmit>,
    /// The stand-in addresses of relayed paths.
    routes: relay::Routes,
    /// A rendezvous that never answered, neither over UDP nor over its relay's TCP port (set
    /// when the TCP attempt failed, cleared when any rendezvous answers).
    unreachable: Option<SocketAddr>,
}

/// Sizes of the engine's tables (what a flood could grow).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StateSizes {
    /// Peers with state.
    pub peers: usize,
    /// Candidate pairs of all peers.
    pub pairs: usize,
    /// Outstanding probes.
    pub probes: usize,
    /// Introductions awaiting an acknowledgement, and ones waiting for a registration.
    pub intros: usize,
    /// Send gate entries.
    pub gate: usize,
    /// Session indices known.
    pub indices: usize,
    /// Observed addresses reported by peers.
    pub observed: usize,
    /// Relayed paths' stand-in addresses.
    pub relay_routes: usize,
}

impl StateSizes {
    /// Every entry together.
    pub fn total(&self) -> usize {
        self.peers
            + self.pairs
            + self.probes
            + self.intros
            + self.gate
            + self.indices
            + self.observed
            + self.relay_routes
    }
}

impl Engine {
    /// An engine for `identity`, drawing every random number from `rng`: pass
    /// [`shipworm_tunnel::rng::from_os`] in production, a seeded generator in simulation.
    pub fn new(identity: Identity, mut config: EngineConfig, now: Instant, mut rng: Rng) -> Self {
        config.tunnel.follow_source = false;
        let servers = config
            .rendezvous
            .iter()
            .take(MAX_RENDEZVOUS)
            .map(|s| Registration::new(*s, now, config.refresh_interval))
            .collect();
        let tunnel_rng = shipworm_tunnel::rng::fork(&mut rng);
        let mut route_key = [0u8; 32];
        rng.fill_bytes(&mut route_key);
        let tunnel = Tunnel::new(identity.clone(), config.tunnel.clone(), now, tunnel_rng);
        Self {
            me: identity.node_id(),
            tunnel,
            identity,
            config,
            servers,
            local: Vec::new(),
            peers: BTreeMap::new(),
            probes: HashMap::new(),
            intros: HashMap::new(),
            waiting_intros: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            rng,
            drops: Drops::default(),
            maps_per_destination: None,
            ports_sequential: false,
            stun_checks: HashMap::new(),
            next_stun: now,
            trickle_due: false,
            port_mapped: false,
            spare_sockets: Vec::new(),
            last_now: now,
            probes_sent: 0,
            next_socket_id: 1,
            sockets_requested: false,
            created: now,
            gate: gate::Gate::new(now),
            gate_expired: now,
            our_index: HashMap::new(),
            their_index: HashMap::new(),
            inbound: None,
            reply: None,
            introduced: None,
            sprays: Vec::new(),
            birthday_sending: false,
            birthday_tokens: (0, now),
            sockets_close_at: None,
            observed: observed::Observed::default(),
            deferring: false,
            deferred: Vec::new(),
            routes: relay::Routes::new(route_key),
            unreachable: None,
        }
    }

    /// Sizes of the engine's tables.
    pub fn state_sizes(&self) -> StateSizes {
        StateSizes {
            peers: self.peers.len(),
            pairs: self.peers.values().map(|p| p.paths.pairs.len()).sum(),
            probes: self.probes.len(),
            intros: self.intros.len() + self.waiting_intros.len(),
            gate: self.gate.len(),
            indices: self.our_index.len() + self.their_index.len(),
            observed: self.observed.len(),
            relay_routes: self.routes.len(),
        }
    }

    /// Our NodeId.
    pub fn node_id(&self) -> NodeId {
        self.me
    }

    /// Our local candidates.
    pub fn local_candidates(&self) -> &[Candidate] {
        &self.local
    }

    /// The pairs of `peer`.
    pub fn paths(&self, peer: &NodeId) -> Option<&Paths> {
        self.peers.get(peer).map(|p| &p.paths)
    }

    /// Tunnel counters.
    pub fn tunnel_stats(&self) -> &shipworm_tunnel::tunnel::Stats {
        self.tunnel.stats()
    }

    /// What the engine dropped so far, by reason (the tunnel counts its own: [`Engine::tunnel_stats`]).
    pub fn drops(&self) -> &Drops {
        &self.drops
    }

    fn count_drop(&mut self, reason: DropReason) {
        tracing::trace!(reason = reason.label(), "dropped");
        self.drops.count(reason);
    }

    /// Peers with a selected path (one proven in both directions).
    pub fn connected_peers(&self) -> HashSet<NodeId> {
        self.peers
            .iter()
            .filter(|(_, p)| p.paths.selected.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Lets anyone, or only listed nodes, open sessions to us.
    pub fn accept_policy(&self) -> &Accept {
        &self.config.tunnel.accept
    }

    /// A fresh transaction id (rendezvous requests, probes).
    fn next_id(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// Adds a local candidate (a host address, a port mapping); peers in session hear of it at
    /// the next timeout (trickle), others with the next handshake.
    pub fn add_local_candidate(&mut self, addr: SocketAddr, kind: CandidateKind) {
        let addr = addr::normalize(addr);
        if self.local.iter().any(|c| c.addr == addr) {
            return;
        }
        if self.local.len() >= MAX_LOCAL_CANDIDATES {
            self.count_drop(DropReason::LocalCandidatesFull);
            return;
        }
        self.local.push(Candidate { addr, kind });
        self.tunnel
            .set_candidates(self.local.iter().map(|c| c.addr).collect());
        self.trickle_due = true;
    }

    fn push_transmit(&mut self, dest: SocketAddr, contents: Vec<u8>) {
        self.push_transmit_via(0, dest, contents);
    }

    fn push_transmit_via(&mut self, local: u16, dest: SocketAddr, contents: Vec<u8>) {
        // A relayed path's datagram goes to its relay, wrapped.
        let (dest, contents) = if relay::is_relay_addr(&dest) {
            match self.wrap_relayed(dest, contents) {
                Some(wrapped) => wrapped,
                None => return,
            }
        } else {
            (dest, contents)
        };
        if self.deferring {
            // Bounded by what one round of tunnel events can ask for; the bound of the queue
            // applies when they are released.
            self.deferred.push(Transmit {
                local,
                dest,
                contents,
            });
            return;
        }
        if self.transmits.len() >= MAX_TRANSMITS {
            self.count_drop(DropReason::TransmitQueueFull);
            return;
        }
        self.transmits.push_back(Transmit {
            local,
            dest,
            contents,
        });
    }

    /// Takes the tunnel's datagrams through the send gate. Call only once the tunnel's events
    /// are handled (they say which peer a datagram belongs to and what it proved).
    fn take_tunnel_transmits(&mut self, now: Instant) {
        while let Some(t) = self.tunnel.poll_transmit() {
            if self.admit(now, t.dest, &t.contents) {
                self.push_transmit_via(t.local, t.dest, t.contents);
            } else {
                self.tunnel.recycle(t.contents);
            }
        }
    }

    fn push_event(&mut self, e: NodeEvent) {
        if self.events.len() >= MAX_EVENTS {
            self.count_drop(DropReason::EventQueueFull);
            return;
        }
        self.events.push_back(e);
    }

    /// Gives back the buffer of a sent [`Transmit`] or a delivered [`NodeEvent::Packet`]: the
    /// next datagrams are built in it (bounded; extras are freed).
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.tunnel.recycle(buf);
    }

    /// Leaves `room` bytes in front of every packet opened for the local side
    /// ([`NodeEvent::Packet`]), for the local writer's own header
    /// ([`shipworm_tunnel::tunnel::Tunnel::set_receive_room`]).
    pub fn set_receive_room(&mut self, room: usize) {
        self.tunnel.set_receive_room(room);
    }

    /// Spare buffers held for the next datagrams.
    pub fn spare_buffers(&self) -> usize {
        self.tunnel.spare_buffers()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<NodeEvent> {
        self.events.pop_front()
    }

    /// Sends an IPv6 packet from the local side.
    pub fn send_ip(&mut self, now: Instant, unix_ms: u64, packet: &[u8]) -> Result<(), SendError> {
        let r = self.tunnel.send_ip(now, unix_ms, packet);
        self.drain_tunnel(now, unix_ms);
        r
    }

    /// As [`Engine::send_ip`], for a packet after [`shipworm_tunnel::tunnel::SEND_HEADROOM`]
    /// bytes of room in `buf`, sealed in place (one copy fewer).
    pub fn send_ip_in(
        &mut self,
        now: Instant,
        unix_ms: u64,
        buf: Vec<u8>,
    ) -> Result<(), SendError> {
        let r = self.tunnel.send_ip_in(now, unix_ms, buf);
        self.drain_tunnel(now, unix_ms);
        r
    }

    /// Handles one datagram from the socket.
    pub fn handle_packet(&mut self, now: Instant, unix_ms: u64, from: SocketAddr, bytes: &[u8]) {
        self.handle_packet_on(now, unix_ms, 0, from, bytes);
    }

    /// Handles one datagram that arrived on extra socket `local` (0: the main socket).
    pub fn handle_packet_on(
        &mut self,
        now: Instant,
        unix_ms: u64,
        local: u16,
        from: SocketAddr,
        bytes: &[u8],
    ) {
        let from = addr::normalize(from);
        if packet::is_tunnel_packet(bytes) {
            // Straight from its source (not relayed): replies to it may use what it cost.
            self.reply = Some((from, bytes.len() as u64));
            self.tunnel_input(now, unix_ms, local, from, bytes);
        } else if local != 0 {
            self.count_drop(DropReason::NotTunnelOnExtraSocket);
        } else if shipworm_rendezvous::wire::stun::is_stun(bytes) {
            self.on_stun(now, unix_ms, from, bytes);
        } else if shipworm_rendezvous::wire::is_rendezvous_message(bytes) {
            self.on_rendezvous(now, unix_ms, from, bytes);
        } else {
            self.count_drop(DropReason::Unrecognized);
        }
        self.drain_tunnel(now, unix_ms);
    }

    /// Registration upkeep, probes, path failure detection, handshake retries, timeouts.
    pub fn handle_timeout(&mut self, now: Instant, unix_ms: u64) {
        self.last_now = now;
        if now.saturating_duration_since(self.gate_expired) >= Duration::from_secs(1) {
            self.gate_expired = now;
            self.gate.expire(now);
            self.expire_peers(now);
            self.expire_observed(now);
        }
        self.stun_timeout(now);
        self.registration_timeout(now, unix_ms);
        self.tunnel.handle_timeout(now, unix_ms);
        self.drain_tunnel(now, unix_ms);
        if self.trickle_due {
            self.trickle(now);
            self.drain_tunnel(now, unix_ms);
        }
        let timing = self.config.paths.clone();
        let ids: Vec<NodeId> = self.peers.keys().copied().collect();
        for peer in ids {
            let Some(st) = self.peers.get_mut(&peer) else {
                continue;
            };
            if st.established {
                st.paths.expire(now, &timing);
                self.reselect(now, unix_ms, peer);
                self.relay_due(now, peer);
                self.probe_due(now, peer);
                // Through the gate before the birthday probes, which have a budget of their own.
                self.drain_tunnel(now, unix_ms);
                self.birthday(now, unix_ms, peer);
            }
            self.connect_timeout(now, peer);
            // Reconnections started above produce introductions to send.
            self.drain_tunnel(now, unix_ms);
        }
        self.close_idle_sockets(now);
    }

    /// When [`Engine::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.trickle_due && self.peers.values().any(|p| p.established) {
            // A candidate waits to be trickled: as soon as the caller gets round to it.
            return Some(self.created);
        }
        let timing = &self.config.paths;
        let stun = (!self.config.stun.is_empty()).then_some(self.next_stun);
        let after = self.config.udp_fallback_after;
        let reg = self
            .servers
            .iter()
            .flat_map(|r| [Some(r.next_action()), r.silence_due(after)])
            .flatten()
            .chain(stun);
        let tunnel = self.tunnel.poll_timeout();
        let paths = self
            .peers
            .values()
            .filter(|p| p.established)
            .filter_map(|p| p.paths.next_due(timing));
        let connects = self
            .peers
            .values()
            .filter_map(|p| p.connecting.map(|c| c + self.config.connect_timeout));
        let now = self.last_now;
        let birthdays = self
            .peers
            .values()
            .filter_map(|p| p.birthday.as_ref().map(|b| b.next_action(now)));
        // Expiry of tables (peers, gate, observed addresses) rides on other timers while there
        // is state; the spare sockets close on time.
        let upkeep = (!self.peers.is_empty()).then(|| self.gate_expired + Duration::from_secs(1));
        reg.chain(tunnel)
            .chain(paths)
            .chain(connects)
            .chain(birthdays)
            .chain(self.sockets_close_at)
            .chain(upkeep)
            .min()
    }
}

#[cfg(test)]
mod tests;
