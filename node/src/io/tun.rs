//! TUN mode (Linux first): the interface that carries our overlay address. The node's driver
//! pumps packets between it and the UDP socket through the protocol state machines.
//!
//! The interface gets our overlay address with the overlay's /48 prefix, so the kernel routes the
//! whole overlay into it; its MTU is the tunnel's inner MTU. Which peers may send into it is the
//! tunnel's [`shipworm_tunnel::tunnel::Accept`] policy.

use std::io;
use std::net::Ipv6Addr;

use tun_rs::{AsyncDevice, DeviceBuilder};

use shipworm_tunnel::overlay;

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
