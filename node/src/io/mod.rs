//! The I/O room: everything that touches the operating system. The sans-IO [`crate::engine`]
//! never does; these pieces feed it packets, addresses and time.
//!
//! - [`driver`]: the tokio task that pumps the engine between the UDP socket, the local side
//!   (TUN interface or QUIC pipe) and the clock.
//! - [`batch_udp`]: the node's UDP socket with GSO/GRO and `recvmmsg` batches (quinn-udp).
//! - [`host`]: host candidates from the interfaces; [`resolve`]: rendezvous names to addresses.
//! - [`nat64`]: the NAT64 prefix of a host without IPv4 (configured, RFC 7050, fallback).
//! - [`tun`]: the TUN interface of `up --tun` (Linux).
//! - [`portmap`]: gateway port mappings (PCP, NAT-PMP, UPnP IGD).
//! - [`metrics`]: the node's Prometheus metrics.

pub mod batch_udp;
pub mod driver;
pub mod host;
pub mod metrics;
pub mod nat64;
pub mod portmap;
pub mod relay_tcp;
pub mod resolve;
#[cfg(target_os = "linux")]
pub mod tun;

use std::io;
use std::net::SocketAddr;

/// The node's one UDP socket on tokio: `[::]:port` is dual-stack where the OS allows it, else
/// IPv4 `0.0.0.0:port` ([`shipworm_rendezvous::udp::bind_udp`]).
pub fn bind_dual_stack(addr: SocketAddr) -> io::Result<tokio::net::UdpSocket> {
    tokio::net::UdpSocket::from_std(shipworm_rendezvous::udp::bind_udp(addr)?.socket)
}
