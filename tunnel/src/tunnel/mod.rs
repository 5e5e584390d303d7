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
//!
//! Every random draw (session indices, cookie secrets and nonces, Noise ephemeral keys) comes
//! from the [`Rng`] given to [`Tunnel::new`], and peers are walked in NodeId order, so the same
//! seed and the same inputs give the same datagrams.
//!
//! The rooms: `config` (tunables, accept policy), `events` (what the caller takes out, and the
//! counters), `peers` (the peer table), `handshakes` (starting, answering and installing
//! handshakes), `receive` (transport packets in), `send` (packets out), `timers` (retries,
//! rekeys, keepalives, expiry). This file holds the struct, its queues and the dispatch of
//! incoming datagrams.

mod admission;
mod config;
mod events;
mod handshakes;
mod peers;
mod receive;
mod send;
mod timers;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

pub use config::{Accept, TunnelConfig};
pub use events::{Event, Inbound, SendError, Stats, Transmit};
pub use peers::Traffic;

use crate::identity::{Identity, NodeId};
use crate::rng::{Rng, RngCore};
use crate::session::{Cipher, Session};
use crate::wire::addr;
use crate::wire::packet::Packet;
use crate::wire::payload::{Advert, FLAG_AES_GCM};
use admission::{InitCache, SourceLimiter};
use peers::Peer;

/// Bound of the transmit and event queues.
pub const MAX_QUEUED: usize = 1024;
/// Room a buffer given to [`Tunnel::send_ip_in`] leaves in front of its packet: the transport
/// header's (a data frame is the bare packet, so header and packet are the whole datagram before
/// its tag).
pub const SEND_HEADROOM: usize = crate::wire::packet::TRANSPORT_HEADER_LEN;
/// Most spare buffers kept.
const MAX_POOLED: usize = 256;
/// Buffers larger than this are not kept (a big one given back would sit there unused).
const MAX_POOLED_CAPACITY: usize = 4096;
/// Most room [`Tunnel::set_receive_room`] leaves in front of a packet opened.
pub const MAX_RECEIVE_ROOM: usize = 64;
/// Packets held per peer while its handshake runs.
pub const MAX_PENDING_PACKETS: usize = 32;
/// Sessions kept open besides the current one, for packets in flight and for a peer that sends
/// on another one: two handshakes that cross (each side starts one while answering the other's,
/// as a node does when it measured its NAT meanwhile) complete in different orders on the two
/// sides, and each side's current session may be the other's second newest. With one older
/// session kept, three crossing handshakes left one side sending on a session the other had
/// already forgotten: every packet refused as an unknown index, for good (the simulator found
/// it on jittery links).
pub const OLDER_SESSIONS: usize = 2;
/// A peer's packets that keep coming from an address other than its endpoint are reported
/// ([`Event::Source`]) again this often: the path manager may have had no room for the address
/// the first time (its pair table full of pairs still being checked), and a report made once
/// and refused would leave a peer that moved there unreachable.
pub const SOURCE_REPORT_INTERVAL: Duration = Duration::from_secs(1);

/// The tunnel endpoint.
pub struct Tunnel {
    identity: Identity,
    me: NodeId,
    overlay: Ipv6Addr,
    config: TunnelConfig,
    /// Walked in NodeId order wherever the order can change what is sent.
    peers: BTreeMap<NodeId, Peer>,
    /// Lookups only: never walked.
    by_overlay: HashMap<Ipv6Addr, NodeId>,
    /// Lookups only: never walked.
    by_index: HashMap<u32, NodeId>,
    /// The one source of randomness: session indices, cookie secrets and nonces, Noise
    /// ephemeral keys.
    rng: Rng,
    advert: Advert,
    cookie_secret: Zeroizing<[u8; 32]>,
    cookie_rotated: Instant,
    load_window: (Instant, u32),
    /// Message 1s per source under load.
    sources: SourceLimiter,
    /// The initiators we answered: replay protection and the per-peer rate, beyond the peer
    /// table.
    init_cache: InitCache,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    stats: Stats,
    /// Spare datagram buffers (given back with [`Tunnel::recycle`]), so a bulk transfer does
    /// not allocate per packet.
    pool: Vec<Vec<u8>>,
    /// Bytes left in front of every packet opened for the local side ([`Inbound`]).
    receive_room: usize,
}

/// Whether session `s` may still seal packets: young enough, and short of its message limit
/// (the configured one, or the cipher's if lower).
fn usable(config: &TunnelConfig, s: &Session, now: Instant) -> bool {
    now.saturating_duration_since(s.created) < config.reject_after_time
        && s.sent() < config.reject_after_messages.min(s.cipher.message_limit())
}

impl Tunnel {
    /// A tunnel for `identity`, started at `now`, drawing every random number from `rng`
    /// ([`crate::rng::from_os`] in production, [`crate::rng::from_seed`] in tests and the
    /// simulator).
    pub fn new(identity: Identity, config: TunnelConfig, now: Instant, mut rng: Rng) -> Self {
        let me = identity.node_id();
        let mut cookie_secret = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut cookie_secret[..]);
        let sources = SourceLimiter::new(&mut rng);
        let init_cache = InitCache::new(config.handshake_cache);
        let pinned = config.pinned.clone();
        let mut tunnel = Self {
            overlay: me.overlay_addr(),
            me,
            identity,
            config,
            peers: BTreeMap::new(),
            by_overlay: HashMap::new(),
            by_index: HashMap::new(),
            rng,
            advert: Advert::default(),
            cookie_secret,
            cookie_rotated: now,
            load_window: (now, 0),
            sources,
            init_cache,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            pool: Vec::new(),
            receive_room: 0,
        };
        tunnel.set_flags(0);
        for id in pinned {
            tunnel.pin(id);
        }
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

    /// Our flags (`wire::payload::FLAG_*`), sent in every handshake from now on. The tunnel sets
    /// [`FLAG_AES_GCM`] itself.
    pub fn set_flags(&mut self, flags: u8) {
        self.advert.flags = (flags & !FLAG_AES_GCM) | self.cipher_flag();
    }

    fn cipher_flag(&self) -> u8 {
        if self.config.offer_aes_gcm && Cipher::hardware_aes() {
            FLAG_AES_GCM
        } else {
            0
        }
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

    /// Leaves `room` bytes (zeroed) in front of every packet opened from now on, in the buffer
    /// an [`Event::Packet`] carries: the local side's writer puts its own header there rather
    /// than copy the packet behind one. At most [`MAX_RECEIVE_ROOM`] (more is taken as that).
    pub fn set_receive_room(&mut self, room: usize) {
        self.receive_room = room.min(MAX_RECEIVE_ROOM);
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
        let from = addr::normalize(from);
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
}

#[cfg(test)]
mod limit_tests {
    use super::send::worn_out;
    use super::{usable, TunnelConfig};
    use crate::session::{Cipher, Session};
    use std::time::Instant;

    fn session(cipher: Cipher, now: Instant) -> Session {
        Session::new(1, 2, &[7; 32], &[8; 32], now, true, cipher)
    }

    #[test]
    fn an_aes_session_rekeys_at_2_pow_28_packets_and_stops_sealing_at_2_pow_29() {
        let (config, now) = (TunnelConfig::default(), Instant::now());
        let mut s = session(Cipher::Aes256Gcm, now);
        s.skip_sent((1 << 28) - 1);
        assert!(!worn_out(&config, &s), "one packet before 2^28");
        s.seal(b"x", &mut Vec::new());
        assert!(worn_out(&config, &s), "at 2^28 a rekey is due");
        assert!(usable(&config, &s, now), "and the old keys still seal");
        s.skip_sent((1 << 28) - 1);
        assert!(usable(&config, &s, now), "one packet before 2^29");
        s.seal(b"x", &mut Vec::new());
        assert!(
            !usable(&config, &s, now),
            "at 2^29 the keys seal nothing more"
        );
    }

    #[test]
    fn a_chacha_session_has_no_such_limits() {
        let (config, now) = (TunnelConfig::default(), Instant::now());
        let mut s = session(Cipher::ChaCha20Poly1305, now);
        s.skip_sent(1 << 40);
        assert!(!worn_out(&config, &s));
        assert!(usable(&config, &s, now));
    }
}
