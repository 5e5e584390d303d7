//! What the engine tells the node: [`NodeEvent`]s, and why a connection attempt failed.

use std::net::SocketAddr;
use std::time::Duration;

use shipworm_tunnel::NodeId;

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
    /// No rendezvous ever answered us: over UDP (nor over a relay's TCP port, if one was tried).
    #[error("no answer from rendezvous {0}: our UDP to it gets no answer (is UDP blocked on this network?) and no relay over TCP could be reached")]
    RendezvousUnreachable(SocketAddr),
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
    /// A rendezvous has not answered our UDP for a while (`EngineConfig::udp_fallback_after`
    /// since we started or switched transport): UDP may be blocked. `tcp` is where the relay
    /// listens over TCP, to try instead (when relays are used).
    RendezvousSilent {
        /// The server.
        server: SocketAddr,
        /// Its relay's TCP address, if we use relays.
        tcp: Option<SocketAddr>,
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
        /// The packet, after the room asked for with
        /// [`Engine::set_receive_room`](super::Engine::set_receive_room).
        packet: shipworm_tunnel::tunnel::Inbound,
    },
    /// An IPv6 packet for the local side (ICMPv6 Packet Too Big).
    Local(Vec<u8>),
    /// Open `count` extra IPv4 UDP sockets with ids `first..first + count` (birthday probing on a
    /// hard NAT), then call [`Engine::sockets_opened`](super::Engine::sockets_opened).
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
