//! The UDP sockets of a node or server: binding them (dual-stack where the OS allows it), and the
//! server's batched receives ([`RecvBatch`]) and sends ([`SendBatch`]).

mod recv;
mod send;
#[cfg(any(target_os = "linux", target_os = "android"))]
mod sendmmsg;

pub use recv::{RecvBatch, RECV_BATCH};
pub use send::{SendBatch, MAX_MESSAGES, SEND_QUEUE, SEND_QUEUE_BYTES};

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};

use socket2::{Domain, Protocol, Socket as RawSocket, Type};

/// Socket buffer sizes asked of the kernel (it may grant less).
const SOCKET_BUFFER: usize = 4 << 20;
/// Receive buffer the rendezvous asks for: at 200 000 datagrams a second of about 128 bytes
/// (each costing some 768 bytes of kernel accounting), 32 MiB hold a fifth of a second, so a burst
/// of junk does not push honest datagrams out while the server works through it.
pub const SERVER_RECV_BUFFER: usize = 32 << 20;

/// A bound UDP socket and whether it is a dual-stack IPv6 socket.
#[derive(Debug)]
pub struct BoundSocket {
    /// The socket.
    pub socket: StdUdpSocket,
    /// `[::]` with IPV6_V6ONLY off: IPv4 peers appear as IPv4-mapped IPv6.
    pub dual_stack: bool,
}

/// Binds `addr`. For `[::]:port` this is one dual-stack socket where the OS allows it, else an IPv4
/// socket on `0.0.0.0:port` (a host without IPv6), with a warning.
pub fn bind_udp(addr: SocketAddr) -> io::Result<BoundSocket> {
    bind_udp_with_buffer(addr, SOCKET_BUFFER)
}

/// As [`bind_udp`], asking for a receive buffer of `recv_buffer` bytes (the kernel grants at most
/// `net.core.rmem_max`; see [`recv_buffer_size`]).
pub fn bind_udp_with_buffer(addr: SocketAddr, recv_buffer: usize) -> io::Result<BoundSocket> {
    let bind = |addr: SocketAddr, v6only: Option<bool>| -> io::Result<StdUdpSocket> {
        let s = RawSocket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if let Some(only) = v6only {
            s.set_only_v6(only)?;
        }
        // Best effort: a small VPS may cap buffers, which only costs burst tolerance.
        let _ = s.set_recv_buffer_size(recv_buffer);
        let _ = s.set_send_buffer_size(SOCKET_BUFFER);
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        Ok(s.into())
    };
    match addr {
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => match bind(addr, Some(false)) {
            Ok(socket) => Ok(BoundSocket {
                socket,
                dual_stack: true,
            }),
            Err(e) if e.kind() != io::ErrorKind::AddrInUse => {
                tracing::warn!(%addr, error = %e, "no dual-stack IPv6 socket here; serving IPv4 only");
                let v4 = SocketAddr::from((Ipv4Addr::UNSPECIFIED, addr.port()));
                Ok(BoundSocket {
                    socket: bind(v4, None)?,
                    dual_stack: false,
                })
            }
            Err(e) => Err(e),
        },
        SocketAddr::V6(_) => Ok(BoundSocket {
            socket: bind(addr, Some(true))?,
            dual_stack: false,
        }),
        SocketAddr::V4(_) => Ok(BoundSocket {
            socket: bind(addr, None)?,
            dual_stack: false,
        }),
    }
}

/// The receive buffer the kernel granted `socket` (Linux reports twice the usable size).
pub fn recv_buffer_size(socket: &StdUdpSocket) -> io::Result<usize> {
    socket2::SockRef::from(socket).recv_buffer_size()
}

/// The source address to give a datagram to `dest` so that it leaves from `local`, a local address
/// a datagram arrived at (`RecvMeta::dst_ip` of quinn-udp, IPv4 possibly IPv4-mapped), in the form
/// the socket wants (IPv4-mapped on a dual-stack socket). `None` (the OS chooses) when `local`
/// cannot be a source: another family than `dest`, unspecified, multicast or broadcast (a reply
/// from those would be refused with `EINVAL`, which quinn-udp takes as a reason to turn GSO off).
pub fn reply_source(local: IpAddr, dest: SocketAddr, dual_stack: bool) -> Option<IpAddr> {
    let local = local.to_canonical();
    let unicast = match local {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    };
    if !unicast || local.is_ipv4() != dest.ip().to_canonical().is_ipv4() {
        return None;
    }
    Some(match local {
        IpAddr::V4(v4) if dual_stack => IpAddr::V6(v4.to_ipv6_mapped()),
        ip => ip,
    })
}

/// The source address to name for a reply on a socket bound to `bound`: none when the socket is
/// bound to one address, since every datagram leaves from it anyway and naming it would only cost
/// the kernel a control message to copy and parse per datagram; else [`reply_source`] of
/// `local`, the address the request arrived at.
pub fn reply_source_on(
    bound: SocketAddr,
    local: IpAddr,
    dest: SocketAddr,
    dual_stack: bool,
) -> Option<IpAddr> {
    if !bound.ip().is_unspecified() {
        return None;
    }
    reply_source(local, dest, dual_stack)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_bound_to_one_address_names_no_reply_source_and_a_wildcard_one_does() {
        let local: IpAddr = "192.0.2.1".parse().unwrap();
        let dest: SocketAddr = "198.51.100.9:5".parse().unwrap();
        for bound in ["192.0.2.1:3478", "[2001:db8::1]:3478"] {
            assert_eq!(
                reply_source_on(bound.parse().unwrap(), local, dest, false),
                None
            );
        }
        assert_eq!(
            reply_source_on("0.0.0.0:3478".parse().unwrap(), local, dest, false),
            Some(local)
        );
        assert_eq!(
            reply_source_on("[::]:3478".parse().unwrap(), local, dest, true),
            Some(IpAddr::V6(Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped()))
        );
    }

    #[test]
    fn a_reply_source_is_a_unicast_address_of_the_destination_family_in_socket_form() {
        let v4 = |s: &str| -> IpAddr { s.parse().unwrap() };
        let to4: SocketAddr = "192.0.2.9:5".parse().unwrap();
        let to4_mapped: SocketAddr = "[::ffff:192.0.2.9]:5".parse().unwrap();
        let to6: SocketAddr = "[2001:db8::9]:5".parse().unwrap();
        // As the kernel reports it on a dual-stack socket (mapped), and on an IPv4 socket.
        assert_eq!(
            reply_source(v4("::ffff:127.0.0.2"), to4_mapped, true),
            Some(v4("::ffff:127.0.0.2"))
        );
        assert_eq!(
            reply_source(v4("127.0.0.2"), to4, true),
            Some(v4("::ffff:127.0.0.2"))
        );
        assert_eq!(
            reply_source(v4("127.0.0.2"), to4, false),
            Some(v4("127.0.0.2"))
        );
        assert_eq!(
            reply_source(v4("2001:db8::2"), to6, true),
            Some(v4("2001:db8::2"))
        );
        // Across families, or from what cannot be a source: the OS chooses.
        assert_eq!(reply_source(v4("2001:db8::2"), to4_mapped, true), None);
        assert_eq!(reply_source(v4("::ffff:192.0.2.2"), to6, true), None);
        for bad in [
            "255.255.255.255",
            "224.0.0.251",
            "0.0.0.0",
            "::ffff:255.255.255.255",
        ] {
            assert_eq!(reply_source(v4(bad), to4, true), None, "{bad}");
        }
        for bad in ["ff02::fb", "::"] {
            assert_eq!(reply_source(v4(bad), to6, true), None, "{bad}");
        }
    }
}
