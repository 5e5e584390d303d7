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
