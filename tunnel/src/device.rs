//! TUN mode (Linux first): an interface carrying our overlay address, pumped through a [`Tunnel`]
//! over one UDP socket. This is the thin tokio driver; all protocol logic is in [`Tunnel`].
//!
//! The interface gets our overlay address with the overlay's /48 prefix, so the kernel routes the
//! whole overlay into it; its MTU is the tunnel's inner MTU. Which peers may send into it is the
//! [`Tunnel`]'s [`crate::tunnel::Accept`] policy.

use std::future::Future;
use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::net::UdpSocket;
use tun_rs::{AsyncDevice, DeviceBuilder};

use crate::overlay;
use crate::tunnel::{Event, SendError, Stats, Tunnel};

/// Creates and brings up a TUN interface named `name` with `addr`/48 and `mtu`. Needs
/// CAP_NET_ADMIN and `/dev/net/tun`.
pub fn open_tun(name: &str, addr: Ipv6Addr, mtu: u16) -> io::Result<AsyncDevice> {
    DeviceBuilder::new()
        .name(name)
        .ipv6(addr, overlay::PREFIX_LEN)
        .mtu(mtu)
        .build_async()
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create TUN interface {name}: {e} (needs root or CAP_NET_ADMIN, and /dev/net/tun)")))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Local packets that could not be sent, by cause (the kernel also emits link-local chatter such
/// as router solicitations into the interface; those land in `not_overlay`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// The tunnel's own counters.
    pub tunnel: Stats,
    /// Packets from the interface that are not from our overlay address.
    pub not_overlay: u64,
    /// Packets to an overlay address of no known peer.
    pub no_peer: u64,
    /// Packets over the MTU (answered with Packet Too Big).
    pub too_big: u64,
    /// Datagrams the socket refused.
    pub send_errors: u64,
}

/// Pumps packets between `tun`, `tunnel` and `socket` until `stop` completes.
pub async fn run(
    mut tunnel: Tunnel,
    socket: UdpSocket,
    tun: AsyncDevice,
    stop: impl Future<Output = ()>,
) -> io::Result<DeviceStats> {
    let dual_stack = socket.local_addr()?.is_ipv6();
    let mut udp_buf = vec![0u8; 65536];
    let mut tun_buf = vec![0u8; 65536];
    let mut stats = DeviceStats::default();
    tokio::pin!(stop);
    loop {
        let deadline = tunnel
            .poll_timeout()
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(1));
        tokio::select! {
            _ = &mut stop => break,
            r = socket.recv_from(&mut udp_buf) => {
                match r {
                    Ok((n, from)) => tunnel.handle_packet(Instant::now(), unix_ms(), from, &udp_buf[..n]),
                    // ICMP errors from earlier sends surface here on Linux; they are not fatal.
                    Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionRefused | io::ErrorKind::ConnectionReset) => {}
                    Err(e) => return Err(e),
                }
            }
            r = tun.recv(&mut tun_buf) => {
                let n = r?;
                match tunnel.send_ip(Instant::now(), unix_ms(), &tun_buf[..n]) {
                    Ok(()) => {}
                    Err(SendError::BadPacket(_)) => stats.not_overlay += 1,
                    Err(SendError::NoPeer(_)) => stats.no_peer += 1,
                    Err(SendError::TooBig { .. }) => stats.too_big += 1,
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => tunnel.handle_timeout(Instant::now(), unix_ms()),
        }
        while let Some(t) = tunnel.poll_transmit() {
            let dest = if dual_stack {
                crate::addr::to_dual_stack(t.dest)
            } else {
                t.dest
            };
            if socket.send_to(&t.contents, dest).await.is_err() {
                stats.send_errors += 1;
            }
        }
        while let Some(e) = tunnel.poll_event() {
            match e {
                Event::Packet { packet, .. } | Event::Local(packet) => {
                    tun.send(&packet).await?;
                }
                Event::Established { peer, from, .. } => {
                    tracing::info!(peer = %peer.fmt_short(), %from, "session established")
                }
                Event::HandshakeFailed { peer } => {
                    tracing::warn!(peer = %peer.fmt_short(), "handshake failed")
                }
                Event::Closed { peer } => {
                    tracing::info!(peer = %peer.fmt_short(), "session closed")
                }
                Event::Initiation { .. }
                | Event::Response { .. }
                | Event::Source { .. }
                | Event::ProbeAnswer { .. } => {}
            }
        }
    }
    stats.tunnel = tunnel.stats().clone();
    Ok(stats)
}

/// The tokio form of [`crate::udp::bind_udp`]: `[::]:port` is one dual-stack socket where the OS
/// allows it, else IPv4 `0.0.0.0:port`.
pub fn bind_dual_stack(addr: SocketAddr) -> io::Result<UdpSocket> {
    UdpSocket::from_std(crate::udp::bind_udp(addr)?.socket)
}
