//! The tunnel endpoint as a sans-IO state machine: handshakes, sessions, rekeying, expiry, and
//! the overlay rules for the IPv6 packets it carries.
//!
//! Drive it with [`Tunnel::handle_packet`] (datagrams from the underlay), [`Tunnel::send_ip`]
//! (IPv6 packets from the local side) and [`Tunnel::handle_timeout`]; take datagrams from
//! [`Tunnel::poll_transmit`] and events from [`Tunnel::poll_event`].
//!
//! **Invariant:** after any `handle_*`, `send_ip` or `connect` call, drain `poll_transmit` and
//! `poll_event` before the queues' bounds ([`MAX_QUEUED`]) are reached; what overflows is dropped
//! and counted. Call `handle_timeout` at or after [`Tunnel::poll_timeout`].
//!
//! Datagrams go to a peer's *endpoint*: the last address an authenticated packet of that peer came
//! from (so NAT rebinding is followed), or the addresses given to [`Tunnel::connect`]. Choosing
//! among candidate paths is the node's job; this layer only carries.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::frame::{self, Inner, Packet};
use crate::handshake::{self, Advert, InitPayload, Initiator, Responder, COOKIE_LEN};
use crate::identity::{Identity, NodeId};
use crate::session::{Cipher, OpenError, Session};

/// Bound of the transmit and event queues.
pub const MAX_QUEUED: usize = 1024;
/// Most spare buffers kept.
const MAX_POOLED: usize = 256;
/// Buffers larger than this are not kept (a big one given back would sit there unused).
const MAX_POOLED_CAPACITY: usize = 4096;
/// Packets held per peer while its handshake runs.
pub const MAX_PENDING_PACKETS: usize = 32;

/// Tunables (defaults follow WireGuard's timers where they apply).
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// Inner MTU: larger packets from the local side get ICMPv6 Packet Too Big.
    pub mtu: usize,
    /// Bound on peers with state.
    pub max_peers: usize,
    /// Who may open a session to us.
    pub accept: Accept,
    /// Handshakes per second above which a valid cookie (mac2) is required.
    pub handshake_load_threshold: u32,
    /// Start a new handshake when the session is this old (initiator side).
    pub rekey_after_time: Duration,
    /// Never use a session older than this.
    pub reject_after_time: Duration,
    /// Start a new handshake after this many packets sent.
    pub rekey_after_messages: u64,
    /// Never send more than this many packets with one session.
    pub reject_after_messages: u64,
    /// Send an empty frame when idle this long, to keep NAT mappings open (`None`: never).
    pub keepalive: Option<Duration>,
    /// First handshake retransmission; doubles up to 2 s.
    pub handshake_retry: Duration,
    /// Give up a handshake after this long.
    pub handshake_timeout: Duration,
    /// Send each peer's traffic to the source of its last authentic packet (WireGuard roaming).
    /// Off when a path manager chooses endpoints with [`Tunnel::set_endpoint`]; then a packet from
    /// a new source is reported as [`Event::Source`] instead.
    pub follow_source: bool,
    /// Also send message 2 to every candidate in message 1, not just to where it came from: the
    /// responder's half of a simultaneous open.
    pub spray_responses: bool,
    /// Offer AES-256-GCM for transport packets when this CPU has AES instructions (it is used
    /// when the peer offers it too; ChaCha20-Poly1305 otherwise).
    pub offer_aes_gcm: bool,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        Self {
            mtu: crate::ipv6::DEFAULT_MTU,
            max_peers: 1024,
            accept: Accept::Any,
            handshake_load_threshold: 500,
            rekey_after_time: Duration::from_secs(120),
            reject_after_time: Duration::from_secs(180),
            rekey_after_messages: 1 << 60,
            reject_after_messages: u64::MAX - (1 << 13),
            keepalive: Some(Duration::from_secs(25)),
            handshake_retry: Duration::from_millis(250),
            handshake_timeout: Duration::from_secs(10),
            follow_source: true,
            spray_responses: true,
            offer_aes_gcm: true,
        }
    }
}

/// Who may start a session with us.
#[derive(Debug, Clone)]
pub enum Accept {
    /// Anyone who proves a key.
    Any,
    /// Only these nodes.
    Only(HashSet<NodeId>),
}

/// A datagram to send on the underlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    /// Which of the node's sockets sends it: 0 is the main socket, others are extra sockets the
    /// path manager opened (birthday probing).
    pub local: u16,
    /// Where to.
    pub dest: SocketAddr,
    /// The bytes.
    pub contents: Vec<u8>,
}

/// Something the caller should know or act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A session with `peer` is ready; its candidates came in the handshake.
    Established {
        /// The peer.
        peer: NodeId,
        /// The peer's flags and candidates from its handshake payload.
        advert: Advert,
        /// Where its handshake came from.
        from: SocketAddr,
        /// The flags our side of this handshake carried (they may be older than our current ones).
        our_flags: u8,
    },
    /// An IPv6 packet from `peer`, checked against the overlay rules: deliver it locally.
    Packet {
        /// Sender.
        peer: NodeId,
        /// The IPv6 packet.
        packet: Vec<u8>,
    },
    /// An IPv6 packet to deliver to the local side (an ICMPv6 Packet Too Big).
    Local(Vec<u8>),
    /// A handshake message 1 was (re)sent; relay it through the rendezvous if the peer may be
    /// unreachable directly.
    Initiation {
        /// The responder.
        peer: NodeId,
        /// The HANDSHAKE_INIT packet.
        packet: Vec<u8>,
    },
    /// The answer to one of our probes.
    ProbeAnswer {
        /// Peer.
        peer: NodeId,
        /// Probe transaction id.
        tx: u64,
        /// Where the peer saw our probe come from.
        observed: SocketAddr,
        /// Where the answer came from.
        from: SocketAddr,
        /// Which of our sockets it arrived on.
        local: u16,
    },
    /// We answered a message 1; the HANDSHAKE_RESP is here for relaying.
    Response {
        /// The initiator.
        peer: NodeId,
        /// The HANDSHAKE_RESP packet.
        packet: Vec<u8>,
    },
    /// An authentic packet of `peer` came from an address that is not its endpoint (only when
    /// `follow_source` is off): a peer-reflexive candidate, or the peer's NAT rebinding.
    Source {
        /// The peer.
        peer: NodeId,
        /// Where the packet came from.
        from: SocketAddr,
        /// Which of our sockets it arrived on.
        local: u16,
    },
    /// The peer sent new flags and candidates mid-session.
    Advert {
        /// The peer.
        peer: NodeId,
        /// What it sent.
        advert: Advert,
    },
    /// No session came about in time.
    HandshakeFailed {
        /// The peer.
        peer: NodeId,
    },
    /// The peer closed, or the session expired.
    Closed {
        /// The peer.
        peer: NodeId,
    },
}

/// Why a local packet was not sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Not an IPv6 packet from our overlay address.
    #[error("not an IPv6 packet from our overlay address: {0}")]
    BadPacket(String),
    /// The destination is no peer we know.
    #[error("no peer with overlay address {0}")]
    NoPeer(Ipv6Addr),
    /// Larger than the MTU; an ICMPv6 Packet Too Big went back as [`Event::Local`].
    #[error("packet of {size} bytes exceeds the tunnel MTU {mtu}")]
    TooBig {
        /// Packet size.
        size: usize,
        /// MTU.
        mtu: usize,
    },
}

macro_rules! counters {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $f:ident),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct $name { $($(#[$fm])* pub $f: u64),+ }
    };
}

counters!(
    /// Counters: what was dropped and why, and what went through.
    Stats {
        /// Datagrams that are not tunnel packets or fail to parse.
        malformed,
        /// Handshakes with a wrong mac1 (not for us).
        bad_mac1,
        /// Handshakes answered with a cookie instead of work.
        cookie_sent,
        /// Handshakes that failed Noise or identity checks.
        bad_handshake,
        /// Message 1 not newer than the last from that initiator.
        replayed_handshake,
        /// Initiators not on the allowlist.
        not_allowed,
        /// The peer table was full.
        peers_full,
        /// Transport packets for no session.
        unknown_index,
        /// Transport packets that failed authentication.
        decrypt_failed,
        /// Transport packets replayed or too old.
        replayed,
        /// Transport packets for an expired session.
        expired_session,
        /// Inner packets whose source is not the peer's overlay address.
        spoofed_source,
        /// Inner packets not addressed to our overlay address.
        wrong_destination,
        /// Inner frames that do not parse.
        bad_inner,
        /// Datagrams or events dropped because a queue was full.
        queue_overflow,
        /// IPv6 packets delivered.
        packets_in,
        /// IPv6 packets sent.
        packets_out,
        /// Sessions established.
        handshakes_completed,
    }
);

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

fn traffic_of(list: &mut Vec<(SocketAddr, Traffic)>, addr: SocketAddr) -> Option<&mut Traffic> {
    if let Some(i) = list.iter().position(|(a, _)| *a == addr) {
        return Some(&mut list[i].1);
    }
    if list.len() >= MAX_TRAFFIC_ENTRIES {
        return None;
    }
    list.push((addr, Traffic::default()));
    list.last_mut().map(|(_, t)| t)
}

struct Pending {
    initiator: Initiator,
    /// The flags our message 1 carried.
    sent_flags: u8,
    packet: Vec<u8>,
    endpoints: Vec<SocketAddr>,
    started: Instant,
    next_retry: Instant,
    retry: Duration,
}

struct Peer {
    id: NodeId,
    overlay: Ipv6Addr,
    endpoint: Option<SocketAddr>,
    current: Option<Session>,
    previous: Option<Session>,
    pending: Option<Pending>,
    cookie: Option<([u8; COOKIE_LEN], Instant)>,
    last_init_timestamp: u64,
    /// Timestamp of our last message 1 to this peer: each new one must be later.
    own_init_timestamp: u64,
    last_sent: Option<Instant>,
    last_handshake: Option<Instant>,
    queued: VecDeque<Vec<u8>>,
    candidates: Vec<SocketAddr>,
    /// Added by configuration: never evicted.
    pinned: bool,
    /// Which of our sockets sends to `endpoint`.
    endpoint_local: u16,
    /// The last address reported in [`Event::Source`], so one new path is reported once.
    reported_source: Option<(u16, SocketAddr)>,
    /// Counters per remote address.
    traffic: Vec<(SocketAddr, Traffic)>,
}

impl Peer {
    fn new(id: NodeId) -> Self {
        Self {
            id,
            overlay: id.overlay_addr(),
            endpoint: None,
            current: None,
            previous: None,
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
        }
    }
}

/// The tunnel endpoint.
pub struct Tunnel {
    identity: Identity,
    me: NodeId,
    overlay: Ipv6Addr,
    config: TunnelConfig,
    peers: HashMap<NodeId, Peer>,
    by_overlay: HashMap<Ipv6Addr, NodeId>,
    by_index: HashMap<u32, NodeId>,
    advert: Advert,
    cookie_secret: [u8; 32],
    cookie_rotated: Instant,
    load_window: (Instant, u32),
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
    /// Spare datagram buffers (given back with [`Tunnel::recycle`]), so a bulk transfer does
    /// not allocate per packet.
    pool: Vec<Vec<u8>>,
}

/// Whether session `s` may still seal packets: young enough, and short of its message limit
/// (the configured one, or the cipher's if lower).
fn usable(config: &TunnelConfig, s: &Session, now: Instant) -> bool {
    now.saturating_duration_since(s.created) < config.reject_after_time
        && s.sent() < config.reject_after_messages.min(s.cipher.message_limit())
}

/// How long a cookie secret (and so a cookie) lives.
const COOKIE_LIFETIME: Duration = Duration::from_secs(120);

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b).expect("the OS random source is unavailable");
    u32::from_le_bytes(b)
}

impl Tunnel {
    /// A tunnel for `identity`, started at `now`.
    pub fn new(identity: Identity, config: TunnelConfig, now: Instant) -> Self {
        let me = identity.node_id();
        let mut cookie_secret = [0u8; 32];
        getrandom::fill(&mut cookie_secret).expect("the OS random source is unavailable");
        let mut tunnel = Self {
            overlay: me.overlay_addr(),
            me,
            identity,
            config,
            peers: HashMap::new(),
            by_overlay: HashMap::new(),
            by_index: HashMap::new(),
            advert: Advert::default(),
            cookie_secret,
            cookie_rotated: now,
            load_window: (now, 0),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            pool: Vec::new(),
        };
        tunnel.set_flags(0);
        tunnel
    }

    /// Our NodeId.
    pub fn node_id(&self) -> NodeId {
        self.me
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Our candidates, sent in every handshake from now on.
    pub fn set_candidates(&mut self, candidates: Vec<SocketAddr>) {
        self.advert.candidates = candidates;
    }

    /// Our flags (`handshake::FLAG_*`), sent in every handshake from now on. The tunnel sets
    /// [`handshake::FLAG_AES_GCM`] itself.
    pub fn set_flags(&mut self, flags: u8) {
        self.advert.flags = (flags & !handshake::FLAG_AES_GCM) | self.cipher_flag();
    }

    fn cipher_flag(&self) -> u8 {
        if self.config.offer_aes_gcm && Cipher::hardware_aes() {
            handshake::FLAG_AES_GCM
        } else {
            0
        }
    }

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

    fn push_transmit(&mut self, dest: SocketAddr, contents: Vec<u8>) {
        self.push_transmit_via(0, dest, contents);
    }

    fn push_transmit_via(&mut self, local: u16, dest: SocketAddr, contents: Vec<u8>) {
        if self.transmits.len() >= MAX_QUEUED {
            self.stats.queue_overflow += 1;
            return;
        }
        self.transmits.push_back(Transmit {
            local,
            dest,
            contents,
        });
    }

    /// Gives back a buffer from a [`Transmit`] or an [`Event::Packet`] once done with it; the
    /// next packets are built in it.
    pub fn recycle(&mut self, mut buf: Vec<u8>) {
        if self.pool.len() < MAX_POOLED && buf.capacity() <= MAX_POOLED_CAPACITY {
            buf.clear();
            self.pool.push(buf);
        }
    }

    /// Spare buffers held for the next packets.
    pub fn spare_buffers(&self) -> usize {
        self.pool.len()
    }

    fn push_event(&mut self, e: Event) {
        if self.events.len() >= MAX_QUEUED {
            self.stats.queue_overflow += 1;
            return;
        }
        self.events.push_back(e);
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn fresh_index(&mut self, peer: NodeId) -> u32 {
        loop {
            let i = random_u32();
            if let std::collections::hash_map::Entry::Vacant(v) = self.by_index.entry(i) {
                v.insert(peer);
                return i;
            }
        }
    }

    fn peer_entry(&mut self, id: NodeId) -> Option<&mut Peer> {
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
    fn evict_idle_peer(&mut self) -> bool {
        let victim = self
            .peers
            .values()
            .filter(|p| {
                !p.pinned && p.current.is_none() && p.previous.is_none() && p.pending.is_none()
            })
            .min_by_key(|p| p.last_handshake)
            .map(|p| p.id);
        let Some(id) = victim else { return false };
        self.peers.remove(&id);
        self.by_overlay.remove(&id.overlay_addr());
        true
    }

    /// Adds a peer we always keep (a configured peer), with an address to reach it if known.
    /// Packets to its overlay address start a handshake by themselves.
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
            p.endpoint = Some(crate::wire::addr::normalize(e));
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
        p.endpoint = Some(crate::wire::addr::normalize(addr));
        p.endpoint_local = local;
        p.reported_source = None;
        self.flush_queued(now, unix_ms, peer);
    }

    /// Sends the running handshake's message 1 to more addresses of `peer` (learned late), and
    /// includes them in its retries.
    pub fn add_handshake_endpoints(&mut self, peer: NodeId, addrs: &[SocketAddr]) {
        let Some(pd) = self.peers.get_mut(&peer).and_then(|p| p.pending.as_mut()) else {
            return;
        };
        let mut fresh = Vec::new();
        for a in addrs.iter().map(|a| crate::wire::addr::normalize(*a)) {
            if !pd.endpoints.contains(&a) && pd.endpoints.len() < 2 * handshake::MAX_CANDIDATES {
                pd.endpoints.push(a);
                fresh.push(a);
            }
        }
        let packet = pd.packet.clone();
        for a in fresh {
            self.push_transmit(a, packet.clone());
        }
    }

    /// The candidates `peer` sent in its last handshake.
    pub fn peer_candidates(&self, peer: &NodeId) -> &[SocketAddr] {
        self.peers.get(peer).map_or(&[], |p| &p.candidates)
    }

    /// Starts a handshake with `peer`, sending message 1 to each of `endpoints`. `unix_ms` is the
    /// wall clock for the message's timestamp. An [`Event::Initiation`] carries the packet for
    /// relaying.
    pub fn connect(
        &mut self,
        now: Instant,
        unix_ms: u64,
        peer: NodeId,
        endpoints: &[SocketAddr],
    ) -> Result<(), SendError> {
        if self.peer_entry(peer).is_none() {
            return Err(SendError::NoPeer(peer.overlay_addr()));
        }
        self.initiate(now, unix_ms, peer, endpoints.to_vec());
        Ok(())
    }

    /// Starts a fresh handshake (new ephemeral key, new timestamp) with `id`.
    fn initiate(&mut self, now: Instant, unix_ms: u64, id: NodeId, endpoints: Vec<SocketAddr>) {
        let backoff = (now, self.config.handshake_retry);
        self.initiate_with(now, unix_ms, id, endpoints, backoff);
    }

    /// As [`Tunnel::initiate`], continuing a retry schedule begun at `started`.
    fn initiate_with(
        &mut self,
        now: Instant,
        unix_ms: u64,
        id: NodeId,
        endpoints: Vec<SocketAddr>,
        (started, retry): (Instant, Duration),
    ) {
        let index = self.fresh_index(id);
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        // Strictly increasing even within one millisecond or after the wall clock steps back.
        let timestamp_ms = unix_ms.max(peer.own_init_timestamp + 1);
        peer.own_init_timestamp = timestamp_ms;
        let payload = InitPayload {
            initiator: self.me,
            timestamp_ms,
            advert: self.advert.clone(),
        };
        let cookie = peer
            .cookie
            .filter(|(_, t)| now.saturating_duration_since(*t) < COOKIE_LIFETIME)
            .map(|(c, _)| c);
        let Ok((initiator, packet)) =
            Initiator::start(&self.identity, &id, index, &payload, cookie.as_ref())
        else {
            self.by_index.remove(&index);
            return;
        };
        if let Some(old) = peer.pending.take() {
            self.by_index.remove(&old.initiator.local_index);
        }
        let mut endpoints = endpoints;
        if let Some(e) = peer.endpoint.filter(|e| !endpoints.contains(e)) {
            endpoints.push(e);
        }
        peer.pending = Some(Pending {
            initiator,
            sent_flags: self.advert.flags,
            packet: packet.clone(),
            endpoints: endpoints.clone(),
            started,
            next_retry: now + retry,
            retry,
        });
        for e in endpoints {
            self.push_transmit(e, packet.clone());
        }
        self.push_event(Event::Initiation { peer: id, packet });
    }

    /// Sends one IPv6 packet from the local side to the peer owning its destination address.
    pub fn send_ip(&mut self, now: Instant, unix_ms: u64, packet: &[u8]) -> Result<(), SendError> {
        let header =
            crate::ipv6::parse_header(packet).map_err(|e| SendError::BadPacket(e.to_string()))?;
        if header.src != self.overlay {
            return Err(SendError::BadPacket(format!(
                "source {} is not our overlay address {}",
                header.src, self.overlay
            )));
        }
        if packet.len() > self.config.mtu {
            if let Some(ptb) =
                crate::ipv6::packet_too_big(packet, self.config.mtu as u32, self.overlay)
            {
                self.push_event(Event::Local(ptb));
            }
            return Err(SendError::TooBig {
                size: packet.len(),
                mtu: self.config.mtu,
            });
        }
        let id = *self
            .by_overlay
            .get(&header.dst)
            .ok_or(SendError::NoPeer(header.dst))?;
        self.send_inner(now, unix_ms, id, Inner::Data(packet));
        Ok(())
    }

    /// Sends our current flags and candidates to `peer` at `to` from socket `local` (trickle).
    pub fn send_advert(&mut self, now: Instant, peer: NodeId, local: u16, to: SocketAddr) -> bool {
        let advert = self.advert.clone();
        self.seal_to(now, peer, local, to, &Inner::Advert(advert))
    }

    /// Sends a probe to `peer` at `to` (a path check); the answer comes as [`Event::ProbeAnswer`].
    pub fn send_probe(&mut self, now: Instant, peer: NodeId, to: SocketAddr, tx: u64) -> bool {
        self.send_probe_via(now, peer, 0, to, tx)
    }

    /// As [`Tunnel::send_probe`], from our socket `local`.
    pub fn send_probe_via(
        &mut self,
        now: Instant,
        peer: NodeId,
        local: u16,
        to: SocketAddr,
        tx: u64,
    ) -> bool {
        self.seal_to(now, peer, local, to, &Inner::Probe { tx })
    }

    /// Closes the session with `peer` (tells it, forgets the keys).
    pub fn close(&mut self, now: Instant, peer: NodeId) {
        if let Some((local, to)) = self
            .peers
            .get(&peer)
            .and_then(|p| p.endpoint.map(|e| (p.endpoint_local, e)))
        {
            self.seal_to(now, peer, local, to, &Inner::Close);
        }
        self.forget_sessions(peer);
    }

    fn forget_sessions(&mut self, id: NodeId) {
        if let Some(p) = self.peers.get_mut(&id) {
            for s in [p.current.take(), p.previous.take()].into_iter().flatten() {
                self.by_index.remove(&s.local_index);
            }
            if let Some(pd) = p.pending.take() {
                self.by_index.remove(&pd.initiator.local_index);
            }
            p.queued.clear();
        }
    }

    /// Seals `inner` with the current session and sends it to `to`. False if no usable session.
    fn seal_to(
        &mut self,
        now: Instant,
        id: NodeId,
        local: u16,
        to: SocketAddr,
        inner: &Inner<'_>,
    ) -> bool {
        let config = &self.config;
        let Some(peer) = self.peers.get_mut(&id) else {
            return false;
        };
        let Some(s) = peer.current.as_mut().filter(|s| usable(config, s, now)) else {
            return false;
        };
        // Framed straight into the datagram's buffer and sealed in place.
        let mut out = self.pool.pop().unwrap_or_default();
        out.clear();
        out.resize(frame::TRANSPORT_HEADER_LEN, 0);
        inner.emit(&mut out);
        s.seal_in_place(&mut out);
        peer.last_sent = Some(now);
        if let Some(t) = traffic_of(&mut peer.traffic, to) {
            t.packets_out += 1;
            t.bytes_out += out.len() as u64;
            if matches!(inner, Inner::ProbeAnswer { .. }) {
                t.answers_out += 1;
            }
        }
        self.push_transmit_via(local, to, out);
        true
    }

    /// Traffic counters of `peer` per remote address.
    pub fn traffic(&self, peer: &NodeId) -> &[(SocketAddr, Traffic)] {
        self.peers.get(peer).map_or(&[], |p| &p.traffic)
    }

    fn send_inner(&mut self, now: Instant, unix_ms: u64, id: NodeId, inner: Inner<'_>) {
        let endpoint = self
            .peers
            .get(&id)
            .and_then(|p| p.endpoint.map(|e| (p.endpoint_local, e)));
        if let Some((local, to)) = endpoint {
            if self.seal_to(now, id, local, to, &inner) {
                if matches!(inner, Inner::Data(_)) {
                    self.stats.packets_out += 1;
                }
                self.maybe_rekey(now, unix_ms, id);
                return;
            }
        }
        // No usable session or no endpoint yet: hold data packets (bounded), and make sure a
        // handshake is running unless a session merely waits for its path.
        let has_session = self.is_established(&id, now);
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if let Inner::Data(p) = inner {
            if peer.queued.len() >= MAX_PENDING_PACKETS {
                peer.queued.pop_front();
                self.stats.queue_overflow += 1;
            }
            peer.queued.push_back(p.to_vec());
        }
        if peer.pending.is_none() && !(has_session && peer.endpoint.is_none()) {
            let endpoints = peer.endpoint.into_iter().collect();
            self.initiate(now, unix_ms, id, endpoints);
        }
    }

    fn maybe_rekey(&mut self, now: Instant, unix_ms: u64, id: NodeId) {
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        let Some(s) = peer.current.as_ref() else {
            return;
        };
        let old =
            now.saturating_duration_since(s.created) >= self.config.rekey_after_time && s.initiator;
        let used = s.sent()
            >= self
                .config
                .rekey_after_messages
                .min(s.cipher.message_limit() / 2);
        if (old || used) && peer.pending.is_none() {
            let endpoints = peer.endpoint.into_iter().collect();
            self.initiate(now, unix_ms, id, endpoints);
        }
    }

    /// The peer owning session index `receiver`, counting a miss.
    fn peer_of_index(&mut self, receiver: u32) -> Option<NodeId> {
        let id = self.by_index.get(&receiver).copied();
        if id.is_none() {
            self.stats.unknown_index += 1;
        }
        id
    }

    fn cookie_for(&self, from: SocketAddr) -> [u8; COOKIE_LEN] {
        let (a, n) = crate::wire::addr::encode(&from);
        let mut c = [0u8; COOKIE_LEN];
        c.copy_from_slice(
            &blake3::keyed_hash(&self.cookie_secret, &a[..n]).as_bytes()[..COOKIE_LEN],
        );
        c
    }

    fn under_load(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.load_window.0) >= Duration::from_secs(1) {
            self.load_window = (now, 0);
        }
        self.load_window.1 += 1;
        self.load_window.1 > self.config.handshake_load_threshold
    }

    /// Handles one datagram from the underlay.
    pub fn handle_packet(&mut self, now: Instant, unix_ms: u64, from: SocketAddr, bytes: &[u8]) {
        self.handle_packet_on(now, unix_ms, 0, from, bytes);
    }

    /// As [`Tunnel::handle_packet`], for a datagram that arrived on our socket `local`.
    pub fn handle_packet_on(
        &mut self,
        now: Instant,
        unix_ms: u64,
        local: u16,
        from: SocketAddr,
        bytes: &[u8],
    ) {
        let from = crate::wire::addr::normalize(from);
        let Ok(packet) = Packet::parse(bytes) else {
            self.stats.malformed += 1;
            return;
        };
        match packet {
            Packet::Init {
                sender,
                noise,
                mac1,
                ..
            } => self.on_init(now, unix_ms, from, bytes, sender, noise, mac1),
            Packet::Resp {
                sender,
                receiver,
                noise,
                ..
            } => self.on_resp(now, unix_ms, from, bytes, sender, receiver, noise),
            Packet::Cookie {
                receiver,
                nonce,
                sealed,
            } => self.on_cookie(now, receiver, &nonce, sealed),
            Packet::Transport {
                receiver,
                counter,
                header,
                sealed,
            } => self.on_transport(now, local, from, receiver, counter, header, sealed),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_init(
        &mut self,
        now: Instant,
        unix_ms: u64,
        from: SocketAddr,
        bytes: &[u8],
        sender: u32,
        noise: &[u8],
        mac1: [u8; 16],
    ) {
        if !handshake::check_mac1(bytes, &self.me) {
            self.stats.bad_mac1 += 1;
            return;
        }
        if now.saturating_duration_since(self.cookie_rotated) >= COOKIE_LIFETIME {
            getrandom::fill(&mut self.cookie_secret).expect("the OS random source is unavailable");
            self.cookie_rotated = now;
        }
        if self.under_load(now) {
            let cookie = self.cookie_for(from);
            if !handshake::check_mac2(bytes, &cookie) {
                self.stats.cookie_sent += 1;
                let reply = handshake::cookie_reply(&self.me, sender, &mac1, &cookie);
                self.push_transmit(from, reply);
                return;
            }
        }
        let Ok(responder) = Responder::read(&self.identity, noise) else {
            self.stats.bad_handshake += 1;
            return;
        };
        let id = responder.payload.initiator;
        if let Accept::Only(allowed) = &self.config.accept {
            if !allowed.contains(&id) {
                self.stats.not_allowed += 1;
                return;
            }
        }
        if self
            .peers
            .get(&id)
            .is_some_and(|p| responder.payload.timestamp_ms <= p.last_init_timestamp)
        {
            self.stats.replayed_handshake += 1;
            return;
        }
        if self.peer_entry(id).is_none() {
            return;
        }
        let index = self.fresh_index(id);
        let ours = self.advert.clone();
        let ts = responder.payload.timestamp_ms;
        let theirs = responder.payload.advert.clone();
        let Ok((reply, send, recv)) = responder.answer(index, sender, &ours) else {
            self.by_index.remove(&index);
            self.stats.bad_handshake += 1;
            return;
        };
        let cipher = Cipher::agree(ours.flags, theirs.flags);
        let session = Session::new(index, sender, &send, &recv, now, false, cipher);
        self.install(now, id, session, from, theirs, ours.flags);
        if let Some(p) = self.peers.get_mut(&id) {
            p.last_init_timestamp = ts;
        }
        if self.config.spray_responses {
            let mut sent = vec![from];
            let theirs = self
                .peers
                .get(&id)
                .map(|p| p.candidates.clone())
                .unwrap_or_default();
            for c in theirs.into_iter().take(handshake::MAX_CANDIDATES) {
                if !sent.contains(&c) {
                    sent.push(c);
                    self.push_transmit(c, reply.clone());
                }
            }
        }
        self.push_transmit(from, reply.clone());
        self.push_event(Event::Response {
            peer: id,
            packet: reply,
        });
        self.flush_queued(now, unix_ms, id);
    }

    #[allow(clippy::too_many_arguments)]
    fn on_resp(
        &mut self,
        now: Instant,
        unix_ms: u64,
        from: SocketAddr,
        bytes: &[u8],
        sender: u32,
        receiver: u32,
        noise: &[u8],
    ) {
        if !handshake::check_mac1(bytes, &self.me) {
            self.stats.bad_mac1 += 1;
            return;
        }
        let Some(id) = self.peer_of_index(receiver) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(pending) = peer
            .pending
            .take_if(|p| p.initiator.local_index == receiver)
        else {
            self.stats.unknown_index += 1;
            return;
        };
        let sent_flags = pending.sent_flags;
        match pending.initiator.finish(noise) {
            Ok((send, recv, advert)) => {
                let cipher = Cipher::agree(sent_flags, advert.flags);
                let session = Session::new(receiver, sender, &send, &recv, now, true, cipher);
                self.install(now, id, session, from, advert, sent_flags);
                // Confirm at once so the responder may use the session (WireGuard does the same).
                if !self.flush_queued(now, unix_ms, id) {
                    self.seal_to(now, id, 0, from, &Inner::Keepalive);
                }
            }
            Err(_) => {
                self.by_index.remove(&receiver);
                self.stats.bad_handshake += 1;
            }
        }
    }

    fn install(
        &mut self,
        now: Instant,
        id: NodeId,
        session: Session,
        from: SocketAddr,
        advert: Advert,
        our_flags: u8,
    ) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if let Some(old) = peer.previous.take() {
            self.by_index.remove(&old.local_index);
        }
        peer.previous = peer.current.replace(session);
        if self.config.follow_source {
            peer.endpoint = Some(from);
        }
        peer.last_handshake = Some(now);
        peer.candidates = advert.candidates.clone();
        self.stats.handshakes_completed += 1;
        self.push_event(Event::Established {
            peer: id,
            advert,
            from,
            // As the engine set them: the cipher offer is the tunnel's own.
            our_flags: our_flags & !handshake::FLAG_AES_GCM,
        });
    }

    fn flush_queued(&mut self, now: Instant, unix_ms: u64, id: NodeId) -> bool {
        let Some(peer) = self.peers.get_mut(&id) else {
            return false;
        };
        let queued: Vec<Vec<u8>> = peer.queued.drain(..).collect();
        let any = !queued.is_empty();
        for p in queued {
            self.send_inner(now, unix_ms, id, Inner::Data(&p));
        }
        any
    }

    fn on_cookie(&mut self, now: Instant, receiver: u32, nonce: &[u8; 24], sealed: &[u8]) {
        let Some(id) = self.peer_of_index(receiver) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(pending) = peer
            .pending
            .as_mut()
            .filter(|p| p.initiator.local_index == receiver)
        else {
            return;
        };
        let Ok(cookie) = handshake::open_cookie(&id, &pending.initiator.last_mac1, nonce, sealed)
        else {
            self.stats.bad_handshake += 1;
            return;
        };
        peer.cookie = Some((cookie, now));
        // Resend at once with the cookie.
        pending.packet = pending.initiator.remac(Some(&cookie));
        let (packet, endpoints) = (pending.packet.clone(), pending.endpoints.clone());
        for e in endpoints {
            self.push_transmit(e, packet.clone());
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_transport(
        &mut self,
        now: Instant,
        local: u16,
        from: SocketAddr,
        receiver: u32,
        counter: u64,
        header: &[u8],
        sealed: &[u8],
    ) {
        let Some(id) = self.peer_of_index(receiver) else {
            return;
        };
        let reject = self.config.reject_after_time;
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let session = [peer.current.as_mut(), peer.previous.as_mut()]
            .into_iter()
            .flatten()
            .find(|s| s.local_index == receiver);
        let Some(session) = session else {
            self.stats.unknown_index += 1;
            return;
        };
        if now.saturating_duration_since(session.created) >= reject {
            self.stats.expired_session += 1;
            return;
        }
        // Opened into a buffer of its own: a data packet leaves in it, without another copy.
        let mut plain = self.pool.pop().unwrap_or_default();
        match session.open(header, counter, sealed, &mut plain) {
            Ok(_) => {}
            Err(e) => {
                match e {
                    OpenError::Replayed => self.stats.replayed += 1,
                    OpenError::Decrypt => self.stats.decrypt_failed += 1,
                }
                self.recycle(plain);
                return;
            }
        }
        // Authenticated: follow the peer to where it is now (NAT rebinding, roaming), or tell
        // the path manager about the new source.
        let mut new_source = None;
        let on_endpoint = peer.endpoint == Some(from) && peer.endpoint_local == local;
        if self.config.follow_source {
            peer.endpoint = Some(from);
            peer.endpoint_local = local;
        } else if !on_endpoint && peer.reported_source != Some((local, from)) {
            peer.reported_source = Some((local, from));
            new_source = Some(from);
        }
        let is_probe = matches!(Inner::parse(&plain), Ok(Inner::Probe { .. }));
        if let Some(t) = traffic_of(&mut peer.traffic, from) {
            t.packets_in += 1;
            t.bytes_in += (frame::TRANSPORT_HEADER_LEN + sealed.len()) as u64;
            if is_probe {
                t.probes_in += 1;
            }
        }
        let (peer_overlay, peer_id) = (peer.overlay, peer.id);
        if let Some(from) = new_source {
            self.push_event(Event::Source {
                peer: peer_id,
                from,
                local,
            });
        }
        // A data frame is the IPv6 packet itself: it leaves in the buffer it was opened into.
        let data = match Inner::parse(&plain) {
            Ok(Inner::Data(ip)) => Some(crate::ipv6::check_inbound(ip, peer_overlay, self.overlay)),
            _ => None,
        };
        if let Some(verdict) = data {
            match verdict {
                crate::ipv6::InboundVerdict::Accept => {
                    self.stats.packets_in += 1;
                    self.push_event(Event::Packet {
                        peer: peer_id,
                        packet: plain,
                    });
                    return;
                }
                crate::ipv6::InboundVerdict::WrongSource => self.stats.spoofed_source += 1,
                crate::ipv6::InboundVerdict::WrongDestination => self.stats.wrong_destination += 1,
                crate::ipv6::InboundVerdict::Malformed(_) => self.stats.bad_inner += 1,
            }
            self.recycle(plain);
            return;
        }
        match Inner::parse(&plain) {
            Ok(Inner::Keepalive) => {}
            // Handled above.
            Ok(Inner::Data(_)) => {}
            Ok(Inner::Probe { tx }) => {
                self.seal_to(
                    now,
                    id,
                    local,
                    from,
                    &Inner::ProbeAnswer { tx, observed: from },
                );
            }
            Ok(Inner::ProbeAnswer { tx, observed }) => self.push_event(Event::ProbeAnswer {
                peer: id,
                tx,
                observed,
                from,
                local,
            }),
            Ok(Inner::Advert(advert)) => {
                if let Some(p) = self.peers.get_mut(&id) {
                    p.candidates = advert.candidates.clone();
                }
                self.push_event(Event::Advert { peer: id, advert });
            }
            Ok(Inner::Close) => {
                self.forget_sessions(id);
                self.push_event(Event::Closed { peer: id });
            }
            Err(_) => self.stats.bad_inner += 1,
        }
        self.recycle(plain);
    }

    /// When [`Tunnel::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for p in self.peers.values() {
            if let Some(pd) = &p.pending {
                consider(
                    pd.next_retry
                        .min(pd.started + self.config.handshake_timeout),
                );
            }
            if let Some(s) = &p.current {
                consider(s.created + self.config.reject_after_time);
                if s.initiator {
                    consider(s.created + self.config.rekey_after_time);
                }
                if let (Some(k), Some(last)) = (self.config.keepalive, p.last_sent) {
                    consider(last + k);
                }
            }
        }
        next
    }

    /// Retries handshakes, rekeys, sends keepalives, and expires sessions.
    pub fn handle_timeout(&mut self, now: Instant, unix_ms: u64) {
        let ids: Vec<NodeId> = self.peers.keys().copied().collect();
        for id in ids {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            // Handshake retries with doubling backoff, then failure.
            if let Some(pd) = peer.pending.as_mut() {
                if now.saturating_duration_since(pd.started) >= self.config.handshake_timeout {
                    let index = pd.initiator.local_index;
                    peer.pending = None;
                    peer.queued.clear();
                    self.by_index.remove(&index);
                    self.push_event(Event::HandshakeFailed { peer: id });
                    continue;
                } else if now >= pd.next_retry {
                    // A retransmission is a new message 1: the responder refuses a repeated
                    // timestamp as a replay, and a new ephemeral key keeps attempts unlinkable.
                    let backoff = (pd.started, (pd.retry * 2).min(Duration::from_secs(2)));
                    let endpoints = pd.endpoints.clone();
                    self.initiate_with(now, unix_ms, id, endpoints, backoff);
                }
            }
            let Some(peer) = self.peers.get(&id) else {
                continue;
            };
            let Some(s) = peer.current.as_ref() else {
                continue;
            };
            let age = now.saturating_duration_since(s.created);
            if age >= self.config.reject_after_time {
                // Expired and no rekey succeeded: forget the keys.
                self.forget_sessions(id);
                self.push_event(Event::Closed { peer: id });
                continue;
            }
            if s.initiator && age >= self.config.rekey_after_time && peer.pending.is_none() {
                let endpoints = peer.endpoint.into_iter().collect();
                self.initiate(now, unix_ms, id, endpoints);
            }
            let Some(peer) = self.peers.get(&id) else {
                continue;
            };
            if let (Some(k), Some(last), Some(to)) =
                (self.config.keepalive, peer.last_sent, peer.endpoint)
            {
                if now.saturating_duration_since(last) >= k {
                    let local = peer.endpoint_local;
                    self.seal_to(now, id, local, to, &Inner::Keepalive);
                }
            }
        }
    }
}
