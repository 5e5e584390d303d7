//! The node's connectivity engine, sans-IO: registration, introduction, hole punching and path
//! selection around a [`Tunnel`] (`docs/protocol.md` §"Connecting").
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

pub mod birthday;
pub mod paths;
pub mod registration;
mod report;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shipworm_rendezvous::wire::{self, IntroStatus, Message};
use shipworm_tunnel::tunnel::{Accept, Event as TunnelEvent, SendError, Tunnel, TunnelConfig};
use shipworm_tunnel::{frame, handshake, wire::addr, Identity, NodeId};

use birthday::{Birthday, BirthdayConfig};
use paths::{CandidateKind, PairState, PathTiming, Paths};
use registration::{RegEvent, Registration};

/// Most local candidates kept.
pub const MAX_LOCAL_CANDIDATES: usize = 16;
/// Most outstanding probes tracked.
const MAX_PROBES: usize = 8192;
/// Most introductions awaiting an acknowledgement.
const MAX_INTROS: usize = 1024;

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
        }
    }
}

/// Why a connection attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectError {
    /// The rendezvous does not know the peer.
    #[error("peer is not registered at {0}")]
    UnknownPeer(SocketAddr),
    /// We are registered nowhere, and know no address of the peer.
    #[error("not registered with any rendezvous and no direct address of the peer is known")]
    NoWayToReach,
    /// The handshake never completed.
    #[error("no answer from the peer (handshake timed out): it may be offline or refuse us")]
    HandshakeTimeout,
    /// The handshake completed but no pair worked in both directions.
    #[error("no direct path: every candidate pair failed its checks")]
    NoDirectPath,
    /// Both NATs map per destination and neither side holds a port mapping.
    #[error("no direct path possible: both sides map per destination and have no port mapping (enable UPnP or NAT-PMP on one side)")]
    NoDirectPathPossible,
}

/// What the node should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// A rendezvous confirmed our registration.
    Registered {
        /// The server.
        server: SocketAddr,
        /// Our address as it sees it.
        observed: SocketAddr,
    },
    /// A rendezvous refused us for a reason to show the user.
    RegistrationRefused {
        /// The server.
        server: SocketAddr,
        /// Why, with the fix.
        reason: String,
    },
    /// A session (keys) with `peer` exists; paths are being checked.
    Established {
        /// The peer.
        peer: NodeId,
    },
    /// A path to `peer` works in both directions and is selected.
    Connected {
        /// The peer.
        peer: NodeId,
        /// The selected remote address.
        path: SocketAddr,
        /// Its round-trip time.
        rtt: Duration,
    },
    /// The selected path changed (better RTT, or failover).
    PathChanged {
        /// The peer.
        peer: NodeId,
        /// The new remote address.
        path: SocketAddr,
    },
    /// An IPv6 packet from `peer`.
    Packet {
        /// The peer.
        peer: NodeId,
        /// The packet.
        packet: Vec<u8>,
    },
    /// An IPv6 packet for the local side (ICMPv6 Packet Too Big).
    Local(Vec<u8>),
    /// Open `count` extra IPv4 UDP sockets with ids `first..first + count` (birthday probing on a
    /// hard NAT), then call [`Engine::sockets_opened`].
    OpenSockets {
        /// Id of the first socket.
        first: u16,
        /// How many.
        count: u16,
    },
    /// Close these extra sockets: they are no longer needed.
    CloseSockets {
        /// Their ids.
        ids: Vec<u16>,
    },
    /// A connection attempt failed.
    ConnectFailed {
        /// The peer.
        peer: NodeId,
        /// Why.
        error: ConnectError,
    },
    /// The session with `peer` ended.
    Disconnected {
        /// The peer.
        peer: NodeId,
    },
}

/// The state of the node's connectivity (see [`Engine::diagnostics`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics {
    /// This node.
    pub node: NodeId,
    /// Whether our NAT maps per destination (`None`: not measured yet).
    pub maps_per_destination: Option<bool>,
    /// Each rendezvous and our address as it sees it.
    pub registrations: Vec<(SocketAddr, Option<SocketAddr>)>,
    /// Our candidates by kind.
    pub candidates: Vec<Candidate>,
    /// Every peer with its pairs.
    pub peers: Vec<PeerDiagnostics>,
}

/// One peer in [`Diagnostics`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerDiagnostics {
    /// The peer.
    pub peer: NodeId,
    /// A session exists.
    pub established: bool,
    /// Its candidate pairs.
    pub pairs: Vec<PairDiagnostics>,
}

/// One candidate pair in [`Diagnostics`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairDiagnostics {
    /// Remote address.
    pub remote: SocketAddr,
    /// How we learned it.
    pub kind: CandidateKind,
    /// Check state.
    pub state: PairState,
    /// Whether it carries the traffic.
    pub selected: bool,
    /// Smoothed RTT.
    pub rtt: Option<Duration>,
    /// Last RTT sample.
    pub last_rtt: Option<Duration>,
    /// Probes we sent.
    pub probes_sent: u64,
    /// Answers we received.
    pub answers_received: u64,
    /// Probes we received from this address.
    pub probes_received: u64,
    /// Answers we sent to it.
    pub answers_sent: u64,
    /// Bytes we sent to it.
    pub bytes_sent: u64,
    /// Bytes we received from it.
    pub bytes_received: u64,
}

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Which socket sends it: 0 is the main one; others come from [`NodeEvent::OpenSockets`].
    pub local: u16,
    /// Where to.
    pub dest: SocketAddr,
    /// The bytes.
    pub contents: Vec<u8>,
}

/// A local candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The address.
    pub addr: SocketAddr,
    /// How we know it.
    pub kind: CandidateKind,
}

#[derive(Debug)]
struct PeerState {
    paths: Paths,
    /// Set while `connect` runs: when it started.
    connecting: Option<Instant>,
    established: bool,
    connected: bool,
    /// The message 1 we answered came through the rendezvous: relay message 2 back that way.
    relay_response: bool,
    /// The peer's handshake flags (`FLAG_*`).
    peer_flags: u8,
    /// A session existed once (later handshakes are rekeys or reconnections).
    established_before: bool,
    /// Our part in birthday punching, while it runs.
    birthday: Option<Birthday>,
    /// Birthday punching ran (it runs once per connection attempt).
    birthday_tried: bool,
}

impl PeerState {
    fn new() -> Self {
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

/// The engine.
pub struct Engine {
    identity: Identity,
    me: NodeId,
    config: EngineConfig,
    tunnel: Tunnel,
    servers: Vec<Registration>,
    local: Vec<Candidate>,
    peers: HashMap<NodeId, PeerState>,
    /// Probe transaction id → (peer, remote, sent at).
    /// Probe transaction id → (peer, our socket, remote, sent at).
    probes: HashMap<u64, (NodeId, u16, SocketAddr, Instant)>,
    /// Introduction transaction id → (peer, server, sent at).
    intros: HashMap<u64, (NodeId, SocketAddr, Instant)>,
    /// Introductions that waited for a registration (bounded): sent as soon as one completes.
    waiting_intros: VecDeque<(NodeId, Vec<u8>)>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<NodeEvent>,
    rng: u64,
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
    /// Outstanding STUN checks: transaction → (server STUN address, address it reflected first).
    /// Outstanding STUN requests: transaction → (server, what for). `Some(observed)`: a mapping
    /// check against that reflexive address; `None`: reflexive discovery (e.g. IPv6).
    stun_checks: HashMap<[u8; 12], (SocketAddr, Option<SocketAddr>)>,
    /// When the STUN servers are asked next.
    next_stun: Instant,
}

/// Whether an IPv4 address can be a NAT's public side (not private, shared, loopback,
/// link-local, unspecified or multicast).
fn is_public_v4(ip: &std::net::Ipv4Addr) -> bool {
    let shared = ip.octets()[0] == 100 && (ip.octets()[1] & 0xC0) == 64; // 100.64.0.0/10
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || shared)
}

/// Most introductions held while no registration is complete.
const MAX_WAITING_INTROS: usize = 64;

impl Engine {
    /// An engine for `identity`; `seed` makes its transaction ids reproducible (simulation).
    pub fn new(
        identity: Identity,
        mut config: EngineConfig,
        now: Instant,
        seed: Option<u64>,
    ) -> Self {
        config.tunnel.follow_source = false;
        config.tunnel.spray_responses = true;
        let rng = seed.unwrap_or_else(|| {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).expect("the OS random source is unavailable");
            u64::from_le_bytes(b)
        }) | 1;
        let servers = config
            .rendezvous
            .iter()
            .map(|s| Registration::new(*s, now, config.refresh_interval))
            .collect();
        Self {
            me: identity.node_id(),
            tunnel: Tunnel::new(identity.clone(), config.tunnel.clone(), now),
            identity,
            config,
            servers,
            local: Vec::new(),
            peers: HashMap::new(),
            probes: HashMap::new(),
            intros: HashMap::new(),
            waiting_intros: VecDeque::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            rng,
            maps_per_destination: None,
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
        }
    }

    /// Tells the engine whether a gateway port mapping exists (its address comes as a
    /// [`CandidateKind::Mapped`] candidate); peers hear of it at once.
    pub fn set_port_mapped(&mut self, mapped: bool) {
        self.port_mapped = mapped;
        self.update_flags();
    }

    fn update_flags(&mut self) {
        let flags = self.current_flags();
        self.tunnel.set_flags(flags);
        self.trickle_due = true;
    }

    /// Our handshake flags as of now.
    fn current_flags(&self) -> u8 {
        let mut flags = 0;
        if let Some(per_destination) = self.maps_per_destination {
            flags |= handshake::FLAG_MAPPING_KNOWN;
            if per_destination {
                flags |= handshake::FLAG_MAPS_PER_DESTINATION;
            }
        }
        if self.port_mapped {
            flags |= handshake::FLAG_HAS_PORT_MAPPING;
        }
        flags
    }

    /// Whether our NAT maps per destination (`None`: not known yet).
    pub fn maps_per_destination(&self) -> Option<bool> {
        self.maps_per_destination
    }

    /// Compares the address a server reflected on its main port with what its second port
    /// sees: a different mapping per destination makes a "hard" NAT.
    fn check_mapping(&mut self, server: SocketAddr, alt_port: u16, observed: SocketAddr) {
        if alt_port != 0 {
            self.stun_request(SocketAddr::new(server.ip(), alt_port), Some(observed));
        }
    }

    fn stun_request(&mut self, server: SocketAddr, check: Option<SocketAddr>) {
        if self.stun_checks.len() >= 16 {
            // Unanswered requests of earlier rounds make room.
            self.stun_checks.retain(|_, (_, c)| c.is_some());
            if self.stun_checks.len() >= 16 {
                return;
            }
        }
        let (req, _) = shipworm_rendezvous::wire::stun::binding_request();
        let mut key = [0u8; 12];
        key.copy_from_slice(&req[8..20]);
        self.stun_checks.insert(key, (server, check));
        self.push_transmit(server, req);
    }

    fn on_stun(&mut self, now: Instant, unix_ms: u64, from: SocketAddr, bytes: &[u8]) {
        let Some(key) = bytes.get(8..20).and_then(|k| <[u8; 12]>::try_from(k).ok()) else {
            return;
        };
        let Some(&(server, check)) = self.stun_checks.get(&key) else {
            return;
        };
        if from != server {
            return;
        }
        let Ok(msg) = stun_types::message::Message::from_bytes(bytes) else {
            return;
        };
        let Ok(mapped) =
            shipworm_rendezvous::wire::stun::parse_binding_response(bytes, msg.transaction_id())
        else {
            return;
        };
        self.stun_checks.remove(&key);
        let Some(observed) = check else {
            // Reflexive discovery: the address this server sees (IPv6 through NAT66/NPT, say).
            self.add_local_candidate(mapped, CandidateKind::Reflexive);
            return;
        };
        let per_destination = mapped != observed;
        let first = self.maps_per_destination.is_none();
        self.maps_per_destination = Some(per_destination);
        self.update_flags();
        if first {
            // Peers we could not reach yet got our handshake before we knew: tell them now, with
            // a fresh handshake, so both sides can tell a hopeless pair of NATs from bad luck.
            let waiting: Vec<(NodeId, Vec<SocketAddr>)> = self
                .peers
                .iter()
                .filter(|(_, p)| p.established && p.paths.selected.is_none())
                .map(|(id, p)| (*id, p.paths.pairs.iter().map(|x| x.remote).collect()))
                .collect();
            for (peer, remotes) in waiting {
                let _ = self.tunnel.connect(now, unix_ms, peer, &remotes);
            }
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

    /// Registers with one more rendezvous (a ticket's home server, say); no-op if known.
    pub fn add_rendezvous(&mut self, now: Instant, server: SocketAddr) {
        let server = addr::normalize(server);
        if self.servers.iter().any(|r| r.server == server) || self.servers.len() >= 16 {
            return;
        }
        self.servers
            .push(Registration::new(server, now, self.config.refresh_interval));
    }

    /// Our reflexive address at each server that confirmed us.
    pub fn registrations(&self) -> Vec<(SocketAddr, Option<SocketAddr>)> {
        self.servers
            .iter()
            .map(|r| (r.server, r.observed()))
            .collect()
    }

    fn next_id(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545F4914F6CDD1D)
    }

    /// Adds a local candidate (a host address, a port mapping); late ones reach peers with the
    /// next handshake (a rekey) and through peer-reflexive discovery meanwhile.
    pub fn add_local_candidate(&mut self, addr: SocketAddr, kind: CandidateKind) {
        let addr = addr::normalize(addr);
        if self.local.iter().any(|c| c.addr == addr) || self.local.len() >= MAX_LOCAL_CANDIDATES {
            return;
        }
        self.local.push(Candidate { addr, kind });
        self.tunnel
            .set_candidates(self.local.iter().map(|c| c.addr).collect());
        // Peers in session hear of it at the next timeout (trickle).
        self.trickle_due = true;
    }

    fn push_transmit(&mut self, dest: SocketAddr, contents: Vec<u8>) {
        self.push_transmit_via(0, dest, contents);
    }

    fn push_transmit_via(&mut self, local: u16, dest: SocketAddr, contents: Vec<u8>) {
        // Room for a birthday round on top of the usual traffic.
        if self.transmits.len() < 4 * shipworm_tunnel::tunnel::MAX_QUEUED {
            self.transmits.push_back(Transmit {
                local,
                dest,
                contents,
            });
        }
    }

    fn take_tunnel_transmits(&mut self) {
        while let Some(t) = self.tunnel.poll_transmit() {
            self.push_transmit_via(t.local, t.dest, t.contents);
        }
    }

    fn push_event(&mut self, e: NodeEvent) {
        if self.events.len() < shipworm_tunnel::tunnel::MAX_QUEUED {
            self.events.push_back(e);
        }
    }

    /// Gives back the buffer of a sent [`Transmit`] or a delivered [`NodeEvent::Packet`]: the
    /// next datagrams are built in it (bounded; extras are freed).
    pub fn recycle(&mut self, buf: Vec<u8>) {
        self.tunnel.recycle(buf);
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

    /// Starts connecting to `peer`, known at `direct` addresses (may be empty: the rendezvous
    /// then introduces us).
    pub fn connect(&mut self, now: Instant, unix_ms: u64, peer: NodeId, direct: &[SocketAddr]) {
        let registered = self.servers.iter().any(|r| r.token().is_some());
        if direct.is_empty() && self.servers.is_empty() {
            self.push_event(NodeEvent::ConnectFailed {
                peer,
                error: ConnectError::NoWayToReach,
            });
            return;
        }
        let state = self.peers.entry(peer).or_insert_with(PeerState::new);
        state.connecting = Some(now);
        for d in direct {
            state.paths.add(*d, CandidateKind::Advertised, now);
        }
        let _ = registered;
        if self.tunnel.connect(now, unix_ms, peer, direct).is_err() {
            self.push_event(NodeEvent::ConnectFailed {
                peer,
                error: ConnectError::NoWayToReach,
            });
            return;
        }
        self.drain_tunnel(now, unix_ms);
    }

    /// Sends an IPv6 packet from the local side.
    pub fn send_ip(&mut self, now: Instant, unix_ms: u64, packet: &[u8]) -> Result<(), SendError> {
        let r = self.tunnel.send_ip(now, unix_ms, packet);
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
        if frame::is_tunnel_packet(bytes) {
            self.tunnel
                .handle_packet_on(now, unix_ms, local, from, bytes);
        } else if local != 0 {
            // Extra sockets carry tunnel frames only.
        } else if shipworm_rendezvous::wire::stun::is_stun(bytes) {
            self.on_stun(now, unix_ms, from, bytes);
        } else if wire::is_rendezvous_message(bytes) {
            self.on_rendezvous(now, unix_ms, from, bytes);
        }
        self.drain_tunnel(now, unix_ms);
    }

    fn on_rendezvous(&mut self, now: Instant, unix_ms: u64, from: SocketAddr, bytes: &[u8]) {
        let Some(si) = self.servers.iter().position(|r| r.server == from) else {
            return;
        };
        let Ok(msg) = Message::parse(bytes) else {
            return;
        };
        match msg {
            Message::Registered(r) if self.servers[si].owns(r.tx) => {
                if let RegEvent::Registered { observed, changed } =
                    self.servers[si].on_registered(now, &r)
                {
                    self.add_local_candidate(observed, CandidateKind::Reflexive);
                    if changed || self.maps_per_destination.is_none() {
                        self.check_mapping(from, r.alt_stun_port, observed);
                    }
                    if changed {
                        self.push_event(NodeEvent::Registered {
                            server: from,
                            observed,
                        });
                    }
                }
                // Introductions asked for before we were registered go out now.
                while let Some((peer, payload)) = self.waiting_intros.pop_front() {
                    self.introduce(now, peer, &payload);
                }
            }
            Message::Error(e) if self.servers[si].owns(e.tx) => {
                if let Some(RegEvent::Refused(reason)) =
                    self.servers[si].on_error(now, e.code, e.server_time_ms, unix_ms)
                {
                    self.push_event(NodeEvent::RegistrationRefused {
                        server: from,
                        reason,
                    });
                }
            }
            Message::Error(e) => {
                // An INTRODUCE refused for a lost registration: register again.
                if self.intros.remove(&e.tx).is_some() {
                    self.servers[si].on_error(now, e.code, e.server_time_ms, unix_ms);
                }
            }
            Message::IntroAck(ack) => {
                let Some((peer, _, _)) = self.intros.remove(&ack.tx) else {
                    return;
                };
                match ack.status {
                    IntroStatus::Forwarded => {
                        if let Some(a) = ack.target_addr {
                            if let Some(st) = self.peers.get_mut(&peer) {
                                st.paths.add(a, CandidateKind::Reflexive, now);
                            }
                            self.tunnel.add_handshake_endpoints(peer, &[a]);
                        }
                    }
                    IntroStatus::UnknownPeer => {
                        if self
                            .peers
                            .get(&peer)
                            .is_some_and(|p| p.connecting.is_some() && !p.established)
                        {
                            self.fail(peer, ConnectError::UnknownPeer(from));
                        }
                    }
                    // Retried with the handshake's next retransmission.
                    IntroStatus::SenderRateLimited | IntroStatus::TargetRateLimited => {}
                }
            }
            Message::IntroFwd(f) => {
                let Ok(peer) = NodeId::from_bytes(&f.from) else {
                    return;
                };
                match f.payload.first() {
                    Some(&frame::HANDSHAKE_INIT) => {
                        self.peers
                            .entry(peer)
                            .or_insert_with(PeerState::new)
                            .relay_response = true;
                        self.tunnel
                            .handle_packet(now, unix_ms, f.from_addr, f.payload);
                    }
                    Some(&frame::HANDSHAKE_RESP) => {
                        if let Some(st) = self.peers.get_mut(&peer) {
                            st.paths.add(f.from_addr, CandidateKind::Reflexive, now);
                        }
                        self.tunnel
                            .handle_packet(now, unix_ms, f.from_addr, f.payload);
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }

    fn fail(&mut self, peer: NodeId, error: ConnectError) {
        if let Some(st) = self.peers.get_mut(&peer) {
            st.connecting = None;
        }
        self.push_event(NodeEvent::ConnectFailed { peer, error });
    }

    /// Sends `payload` (a handshake packet) to `peer` through every server we are registered at.
    fn introduce(&mut self, now: Instant, peer: NodeId, payload: &[u8]) {
        if payload.len() > wire::MAX_INTRO_PAYLOAD {
            return;
        }
        let targets: Vec<(SocketAddr, [u8; wire::TOKEN_LEN])> = self
            .servers
            .iter()
            .filter_map(|r| r.token().map(|t| (r.server, t)))
            .collect();
        if targets.is_empty() && !self.servers.is_empty() {
            // Not registered yet: hold the newest message for this peer until we are.
            self.waiting_intros.retain(|(p, _)| *p != peer);
            if self.waiting_intros.len() >= MAX_WAITING_INTROS {
                self.waiting_intros.pop_front();
            }
            self.waiting_intros.push_back((peer, payload.to_vec()));
            return;
        }
        for (server, token) in targets {
            let tx = self.next_id();
            if self.intros.len() >= MAX_INTROS {
                self.intros.retain(|_, (_, _, t)| {
                    now.saturating_duration_since(*t) < Duration::from_secs(10)
                });
            }
            self.intros.insert(tx, (peer, server, now));
            let msg = Message::Introduce(wire::Introduce {
                tx,
                node: *self.me.as_bytes(),
                token,
                target: *peer.as_bytes(),
                payload,
            });
            self.push_transmit(server, msg.to_vec());
        }
    }

    fn drain_tunnel(&mut self, now: Instant, unix_ms: u64) {
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
                        continue;
                    };
                    if p != peer || remote != from || sock != local {
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

    fn probe_pair(&mut self, now: Instant, peer: NodeId, i: usize) {
        let Some((local, remote)) = self
            .peers
            .get(&peer)
            .map(|p| (p.paths.pairs[i].local, p.paths.pairs[i].remote))
        else {
            return;
        };
        if self.send_probe(now, peer, local, remote) {
            if let Some(st) = self.peers.get_mut(&peer) {
                st.paths.sent(i, now);
            }
        }
    }

    /// Probes sent since start (all peers, all sockets): the cost of punching.
    pub fn probes_sent_total(&self) -> u64 {
        self.probes_sent
    }

    /// Sends one probe and remembers it; false if the probe table is full or no session.
    fn send_probe(&mut self, now: Instant, peer: NodeId, local: u16, remote: SocketAddr) -> bool {
        let tx = self.next_id();
        if self.probes.len() >= MAX_PROBES {
            self.probes.retain(|_, (_, _, _, t)| {
                now.saturating_duration_since(*t) < Duration::from_secs(5)
            });
            if self.probes.len() >= MAX_PROBES {
                return false;
            }
        }
        if !self.tunnel.send_probe_via(now, peer, local, remote, tx) {
            return false;
        }
        self.probes.insert(tx, (peer, local, remote, now));
        self.probes_sent += 1;
        true
    }

    fn probe_due(&mut self, now: Instant, peer: NodeId) {
        let timing = self.config.paths.clone();
        let Some(due) = self
            .peers
            .get(&peer)
            .filter(|p| p.established)
            .map(|p| p.paths.due(now, &timing))
        else {
            return;
        };
        for i in due {
            self.probe_pair(now, peer, i);
        }
        self.take_tunnel_transmits();
    }

    fn reselect(&mut self, now: Instant, unix_ms: u64, peer: NodeId) {
        let Some(st) = self.peers.get_mut(&peer) else {
            return;
        };
        let before = st.paths.selected_path();
        st.paths.select();
        let after = st.paths.selected_path();
        if before == after {
            return;
        }
        let Some((local, path)) = after else {
            // Every path failed (a NAT rebound on one side, a link went down): introduce
            // ourselves again, through the rendezvous and to every address we know, so the
            // other side learns where we are now and both punch again.
            let remotes: Vec<SocketAddr> = st.paths.pairs.iter().map(|p| p.remote).collect();
            let _ = self.tunnel.connect(now, unix_ms, peer, &remotes);
            return;
        };
        let rtt = st
            .paths
            .selected
            .and_then(|i| st.paths.pairs[i].rtt)
            .unwrap_or_default();
        let first = !st.connected;
        st.connected = true;
        st.connecting = None;
        // Hole punched: the birthday spray is over; spare sockets may go.
        if st.birthday.take().is_some() || !self.spare_sockets.is_empty() {
            self.release_sockets(local);
        }
        self.tunnel
            .set_endpoint_via(now, unix_ms, peer, local, path);
        self.push_event(if first {
            NodeEvent::Connected { peer, path, rtt }
        } else {
            NodeEvent::PathChanged { peer, path }
        });
        self.take_tunnel_transmits();
    }

    /// Sends our flags and candidates to every peer in session: on its selected path, or on
    /// every pair while it has none.
    fn trickle(&mut self, now: Instant) {
        self.trickle_due = false;
        let targets: Vec<(NodeId, Vec<(u16, SocketAddr)>)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.established)
            .map(|(id, p)| {
                let to = match p.paths.selected_path() {
                    Some(s) => vec![s],
                    None => p.paths.pairs.iter().map(|x| (x.local, x.remote)).collect(),
                };
                (*id, to)
            })
            .collect();
        for (peer, to) in targets {
            for (local, addr) in to {
                self.tunnel.send_advert(now, peer, local, addr);
            }
        }
        self.take_tunnel_transmits();
    }

    /// When [`Engine::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.trickle_due && self.peers.values().any(|p| p.established) {
            // A candidate waits to be trickled: as soon as the caller gets round to it.
            return Some(self.created);
        }
        let timing = &self.config.paths;
        let stun = (!self.config.stun.is_empty()).then_some(self.next_stun);
        let reg = self.servers.iter().map(|r| r.next_action()).chain(stun);
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
        reg.chain(tunnel)
            .chain(paths)
            .chain(connects)
            .chain(birthdays)
            .min()
    }

    /// The driver opened the extra sockets asked for by [`NodeEvent::OpenSockets`].
    pub fn sockets_opened(&mut self, first: u16, count: u16) {
        self.sockets_requested = false;
        self.spare_sockets.extend(
            (0..count)
                .map(|i| first.wrapping_add(i))
                .filter(|id| *id != 0),
        );
    }

    /// Closes spare sockets except `keep` (the one a selected path uses, or 0).
    fn release_sockets(&mut self, keep: u16) {
        if self.peers.values().any(|p| p.birthday.is_some()) {
            return;
        }
        let ids: Vec<u16> = self
            .spare_sockets
            .drain(..)
            .filter(|id| *id != keep)
            .collect();
        if !ids.is_empty() {
            // Pairs on closed sockets must never be selected again.
            for st in self.peers.values_mut() {
                st.paths.drop_sockets(&ids);
            }
            self.push_event(NodeEvent::CloseSockets { ids });
        }
    }

    /// Whether the peer's flags say it maps per destination and holds no port mapping.
    fn peer_is_hard(flags: u8) -> bool {
        flags & handshake::FLAG_MAPPING_KNOWN != 0
            && flags & handshake::FLAG_MAPS_PER_DESTINATION != 0
            && flags & handshake::FLAG_HAS_PORT_MAPPING == 0
    }

    /// Whether the peer's flags say it maps independently of destination and holds no port
    /// mapping (with a mapping, its mapped address is reachable without birthday probing).
    fn peer_is_easy(flags: u8) -> bool {
        flags & handshake::FLAG_MAPPING_KNOWN != 0
            && flags & handshake::FLAG_MAPS_PER_DESTINATION == 0
            && flags & handshake::FLAG_HAS_PORT_MAPPING == 0
    }

    /// Starts or continues birthday punching with `peer` where one side is hard and one easy.
    fn birthday(&mut self, now: Instant, peer: NodeId) {
        let Some(st) = self.peers.get(&peer) else {
            return;
        };
        if st.paths.selected.is_some() {
            return;
        }
        let we_hard = self.maps_per_destination == Some(true) && !self.port_mapped;
        let we_easy = self.maps_per_destination == Some(false);
        // The peer's public IPv4 addresses, however we learned them (a ticket's direct
        // addresses are reflexive ones too): private, shared and loopback ranges are not where
        // its NAT maps.
        let theirs: Vec<SocketAddr> = st
            .paths
            .pairs
            .iter()
            .filter(|p| p.local == 0)
            .filter_map(|p| match p.remote {
                SocketAddr::V4(v4) if is_public_v4(v4.ip()) => Some(p.remote),
                _ => None,
            })
            .collect();
        if st.birthday.is_none() {
            if st.birthday_tried || theirs.is_empty() {
                return;
            }
            tracing::trace!(
                peer = %peer.fmt_short(),
                we_hard,
                we_easy,
                peer_flags = st.peer_flags,
                "birthday check"
            );
            let role = if we_hard && Self::peer_is_easy(st.peer_flags) {
                Birthday::Hard {
                    targets: theirs.clone(),
                    rounds_left: self.config.birthday.hard_rounds,
                    next: now,
                }
            } else if we_easy && Self::peer_is_hard(st.peer_flags) {
                Birthday::Easy {
                    ip: theirs[0].ip(),
                    sent: 0,
                    started: now,
                }
            } else {
                return;
            };
            tracing::debug!(peer = %peer.fmt_short(), role = ?role, "birthday probing starts");
            let st = self.peers.get_mut(&peer).expect("present");
            st.birthday = Some(role);
            st.birthday_tried = true;
        }
        let config = self.config.birthday.clone();
        let Some(role) = self.peers.get(&peer).and_then(|p| p.birthday.clone()) else {
            return;
        };
        match role {
            Birthday::Hard {
                targets,
                rounds_left,
                next,
            } => {
                if self.spare_sockets.is_empty() {
                    if !self.sockets_requested {
                        self.sockets_requested = true;
                        let first = self.next_socket_id.max(1);
                        self.next_socket_id = first.wrapping_add(config.sockets);
                        self.push_event(NodeEvent::OpenSockets {
                            first,
                            count: config.sockets,
                        });
                    }
                    return;
                }
                if now < next {
                    return;
                }
                let sockets = self.spare_sockets.clone();
                for id in sockets {
                    for t in &targets {
                        self.send_probe(now, peer, id, *t);
                    }
                }
                let left = rounds_left.saturating_sub(1);
                if let Some(st) = self.peers.get_mut(&peer) {
                    st.birthday = (left > 0).then(|| Birthday::Hard {
                        targets,
                        rounds_left: left,
                        next: now + config.round_interval,
                    });
                }
            }
            Birthday::Easy { ip, sent, started } => {
                let due = Birthday::easy_due(&config, sent, started, now);
                for _ in 0..due {
                    let span = (u16::MAX - birthday::FIRST_PORT) as u64 + 1;
                    let port = birthday::FIRST_PORT + (self.next_id() % span) as u16;
                    self.send_probe(now, peer, 0, SocketAddr::new(ip, port));
                }
                let sent = sent + due;
                if let Some(st) = self.peers.get_mut(&peer) {
                    st.birthday =
                        (sent < config.probes).then_some(Birthday::Easy { ip, sent, started });
                }
            }
        }
        self.take_tunnel_transmits();
    }

    /// Registration upkeep, probes, path failure detection, handshake retries, timeouts.
    pub fn handle_timeout(&mut self, now: Instant, unix_ms: u64) {
        self.last_now = now;
        if now >= self.next_stun && !self.config.stun.is_empty() {
            self.next_stun = now + self.config.refresh_interval;
            for server in self.config.stun.clone() {
                self.stun_request(server, None);
            }
        }
        for i in 0..self.servers.len() {
            let tx = self.next_id();
            if let Some(req) = self.servers[i].poll(now, unix_ms, &self.identity, tx) {
                let server = self.servers[i].server;
                self.push_transmit(server, req);
            }
        }
        self.tunnel.handle_timeout(now, unix_ms);
        self.drain_tunnel(now, unix_ms);
        if self.trickle_due {
            self.trickle(now);
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
                self.probe_due(now, peer);
                self.birthday(now, peer);
            }
            let Some(st) = self.peers.get(&peer) else {
                continue;
            };
            if let Some(started) = st.connecting {
                let both_hard = self.maps_per_destination == Some(true)
                    && !self.port_mapped
                    && st.peer_flags & handshake::FLAG_MAPPING_KNOWN != 0
                    && st.peer_flags & handshake::FLAG_MAPS_PER_DESTINATION != 0
                    && st.peer_flags & handshake::FLAG_HAS_PORT_MAPPING == 0;
                let waited = now.saturating_duration_since(started);
                if st.established
                    && !st.connected
                    && both_hard
                    && waited >= self.config.paths.check_period
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
        // Reconnections started above produce introductions to send.
        self.drain_tunnel(now, unix_ms);
    }

    /// The candidate and pair table, for `status` and the API (WebRTC's candidate-pair stats).
    pub fn diagnostics(&self) -> Diagnostics {
        let mut peers: Vec<PeerDiagnostics> = self
            .peers
            .iter()
            .map(|(id, st)| {
                let traffic = self.tunnel.traffic(id);
                let pairs = st
                    .paths
                    .pairs
                    .iter()
                    .enumerate()
                    .map(|(i, p)| {
                        let t = traffic
                            .iter()
                            .find(|(a, _)| *a == p.remote)
                            .map(|(_, t)| *t)
                            .unwrap_or_default();
                        PairDiagnostics {
                            remote: p.remote,
                            kind: p.kind,
                            state: p.state,
                            selected: st.paths.selected == Some(i),
                            rtt: p.rtt,
                            last_rtt: p.last_rtt,
                            probes_sent: p.probes_sent,
                            answers_received: p.answers_received,
                            probes_received: t.probes_in,
                            answers_sent: t.answers_out,
                            bytes_sent: t.bytes_out,
                            bytes_received: t.bytes_in,
                        }
                    })
                    .collect();
                PeerDiagnostics {
                    peer: *id,
                    established: st.established,
                    pairs,
                }
            })
            .collect();
        peers.sort_by_key(|p| p.peer);
        Diagnostics {
            node: self.me,
            maps_per_destination: self.maps_per_destination,
            registrations: self.registrations(),
            candidates: self.local.clone(),
            peers,
        }
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
}
