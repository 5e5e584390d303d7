//! The tunnel's tunables and its accept policy.

use std::collections::HashSet;
use std::time::Duration;

use crate::identity::NodeId;
use crate::wire::ipv6;

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
    /// Off when a path manager chooses endpoints with [`Tunnel::set_endpoint`](super::Tunnel::set_endpoint); then a packet from
    /// a new source is reported as [`Event::Source`](super::Event::Source) instead.
    pub follow_source: bool,
    /// Peers added by configuration: they have a place in the peer table from the start and are
    /// never evicted to make room for others (they count toward `max_peers`).
    pub pinned: Vec<NodeId>,
    /// Message 1s from one peer closer together than this are dropped (after the Diffie-Hellman
    /// that names the peer, before the answer's): WireGuard's 50 initiations per second.
    pub handshake_min_interval: Duration,
    /// A message 1 whose timestamp is further than this from our wall clock, either way, is
    /// dropped as stale: a captured one cannot be replayed later than this, even to a
    /// restarted node or after its peer was evicted.
    pub handshake_freshness: Duration,
    /// Initiators whose last accepted timestamp is remembered beyond the peer table (replay
    /// protection after eviction); when full, the oldest is forgotten behind a floor.
    pub handshake_cache: usize,
    /// Under load, message 1s (with a valid mac2) accepted per second from one source (an IPv4
    /// address or an IPv6 /64), checked before any Diffie-Hellman: WireGuard's 20.
    pub source_rate: u32,
    /// The burst a source may send above `source_rate` (WireGuard's 5).
    pub source_burst: u32,
    /// Pad message 1 to at least this many bytes: the responder's credit for sending on our
    /// behalf before our addresses are proven ([`crate::handshake::MESSAGE_1_LEN`]).
    pub message_1_len: usize,
    /// Offer AES-256-GCM for transport packets when this CPU has AES instructions (it is used
    /// when the peer offers it too; ChaCha20-Poly1305 otherwise).
    pub offer_aes_gcm: bool,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        Self {
            mtu: ipv6::DEFAULT_MTU,
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
            pinned: Vec::new(),
            handshake_min_interval: Duration::from_millis(20),
            handshake_freshness: Duration::from_secs(120),
            handshake_cache: 4096,
            source_rate: 20,
            source_burst: 5,
            message_1_len: crate::handshake::MESSAGE_1_LEN,
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
