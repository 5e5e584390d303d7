//! What the tunnel hands its caller: datagrams, events, send errors and counters.

use std::net::{Ipv6Addr, SocketAddr};

use crate::identity::NodeId;
use crate::wire::payload::Advert;

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

/// An IPv6 packet the tunnel opened and checked, in the buffer it was opened in: after
/// [`Tunnel::set_receive_room`](super::Tunnel::set_receive_room) bytes of room (zeroed), so that a
/// writer that puts a header of its own in front (a TUN interface's virtio-net header) writes
/// from this buffer without copying the packet. Derefs to the packet alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    buf: Vec<u8>,
    room: usize,
}

impl Inbound {
    /// `buf` holds the packet after `room` bytes.
    pub(super) fn new(buf: Vec<u8>, room: usize) -> Self {
        debug_assert!(room <= buf.len());
        Self { buf, room }
    }

    /// The room in front of the packet.
    pub fn room(&self) -> usize {
        self.room
    }

    /// The whole buffer, room and packet: to write from, or to give back with
    /// [`Tunnel::recycle`](super::Tunnel::recycle).
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    /// The packet alone (moved to the buffer's start when there was room: one `memmove`).
    pub fn into_packet(mut self) -> Vec<u8> {
        self.buf.drain(..self.room);
        self.buf
    }
}

impl std::ops::Deref for Inbound {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.buf[self.room..]
    }
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
        packet: Inbound,
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

        impl $name {
            /// Every counter with its field name, in declaration order (for metrics and
            /// reports: a new counter shows up there without being listed again).
            pub fn fields(&self) -> [(&'static str, u64); [$(stringify!($f)),+].len()] {
                [$((stringify!($f), self.$f)),+]
            }
        }
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
        /// Message 1 not newer than the last from that initiator (or, for one no longer
        /// remembered, than the replay cache's floor).
        replayed_handshake,
        /// Message 1 whose timestamp is outside the freshness window of our clock.
        stale_handshake,
        /// Message 1 from a peer sooner than `handshake_min_interval` after its last one.
        peer_rate_limited,
        /// Message 1 under load from a source over its `source_rate`.
        source_rate_limited,
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

#[cfg(test)]
mod tests {
    use super::Stats;

    #[test]
    fn every_counter_is_listed_by_name() {
        let stats = Stats {
            malformed: 1,
            handshakes_completed: 7,
            ..Stats::default()
        };
        let fields = stats.fields();
        assert_eq!(fields[0], ("malformed", 1));
        assert_eq!(fields.last(), Some(&("handshakes_completed", 7)));
        assert_eq!(fields.iter().map(|(_, v)| v).sum::<u64>(), 8);
    }
}
