//! quinn over the overlay: a custom [`AsyncUdpSocket`] that carries QUIC datagrams as IPv6/UDP
//! packets between overlay addresses and hands them to the tunnel (no root, no TUN).
//!
//! The socket and the node's driver share a [`Pipe`]: bounded queues both ways. A full outbound
//! queue makes `try_send` return `WouldBlock` (real backpressure, as a kernel socket gives); a
//! full inbound queue drops, as a kernel socket's receive buffer does.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, IoSliceMut};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};

/// The UDP port of every node's QUIC endpoint on its overlay address.
pub const QUIC_PORT: u16 = 7300;
/// Datagrams queued each way.
pub const PIPE_CAPACITY: usize = 1024;

#[derive(Default)]
struct Queues {
    /// IPv6 packets from QUIC, for the tunnel.
    out: VecDeque<Vec<u8>>,
    /// (source, UDP payload) from the tunnel, for QUIC.
    inbound: VecDeque<(SocketAddr, Vec<u8>)>,
    recv_waker: Option<Waker>,
    send_wakers: Vec<Waker>,
    /// The driver's waker for outbound packets.
    driver_waker: Option<Waker>,
    closed: bool,
}

/// The queues between the overlay socket and the node's driver.
pub struct Pipe {
    local: Ipv6Addr,
    q: Mutex<Queues>,
}

impl fmt::Debug for Pipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipe")
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Pipe {
    /// A pipe for the node with overlay address `local`.
    pub fn new(local: Ipv6Addr) -> Arc<Self> {
        Arc::new(Self {
            local,
            q: Mutex::new(Queues::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.q.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Driver side: waits for, then takes, the IPv6 packets QUIC wants sent.
    pub fn poll_outbound(&self, cx: &mut Context<'_>, into: &mut Vec<Vec<u8>>) -> Poll<()> {
        let mut q = self.lock();
        if q.out.is_empty() {
            q.driver_waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        into.extend(q.out.drain(..));
        for w in q.send_wakers.drain(..) {
            w.wake();
        }
        Poll::Ready(())
    }

    /// Driver side: an IPv6 packet from the tunnel. Keeps it if it is UDP to our QUIC port.
    pub fn deliver(&self, packet: &[u8]) {
        let Ok(sliced) = etherparse::SlicedPacket::from_ip(packet) else {
            return;
        };
        let (Some(etherparse::NetSlice::Ipv6(ip)), Some(etherparse::TransportSlice::Udp(udp))) =
            (&sliced.net, &sliced.transport)
        else {
            return;
        };
        if udp.destination_port() != QUIC_PORT {
            return;
        }
        let src = SocketAddr::V6(SocketAddrV6::new(
            ip.header().source_addr(),
            udp.source_port(),
            0,
            0,
        ));
        let mut q = self.lock();
        if q.inbound.len() >= PIPE_CAPACITY {
            return;
        }
        q.inbound.push_back((src, udp.payload().to_vec()));
        if let Some(w) = q.recv_waker.take() {
            w.wake();
        }
    }

    /// Driver side: the node stops; pending receives end.
    pub fn close(&self) {
        let mut q = self.lock();
        q.closed = true;
        if let Some(w) = q.recv_waker.take() {
            w.wake();
        }
    }
}

/// The socket quinn sees.
#[derive(Debug)]
pub struct OverlaySocket {
    pipe: Arc<Pipe>,
}

impl OverlaySocket {
    /// A socket on `pipe`.
    pub fn new(pipe: Arc<Pipe>) -> Arc<Self> {
        Arc::new(Self { pipe })
    }
}

#[derive(Debug)]
struct Poller {
    pipe: Arc<Pipe>,
}

impl UdpPoller for Poller {
    fn poll_writable(self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        let mut q = self.pipe.lock();
        if q.out.len() < PIPE_CAPACITY {
            return Poll::Ready(Ok(()));
        }
        q.send_wakers.push(cx.waker().clone());
        Poll::Pending
    }
}

impl AsyncUdpSocket for OverlaySocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(Poller {
            pipe: self.pipe.clone(),
        })
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        let SocketAddr::V6(dst) = transmit.destination else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "overlay destinations are IPv6",
            ));
        };
        let mut packet = Vec::with_capacity(transmit.contents.len() + 48);
        etherparse::PacketBuilder::ipv6(self.pipe.local.octets(), dst.ip().octets(), 64)
            .udp(QUIC_PORT, dst.port())
            .write(&mut packet, transmit.contents)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let mut q = self.pipe.lock();
        if q.out.len() >= PIPE_CAPACITY {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        q.out.push_back(packet);
        if let Some(w) = q.driver_waker.take() {
            w.wake();
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut q = self.pipe.lock();
        if q.inbound.is_empty() {
            // After `close` nothing more arrives; the endpoint is on its way out and must not
            // log a receive error for it.
            if !q.closed {
                q.recv_waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        }
        let mut n = 0;
        while n < bufs.len().min(meta.len()) {
            let Some((src, payload)) = q.inbound.pop_front() else {
                break;
            };
            let len = payload.len().min(bufs[n].len());
            bufs[n][..len].copy_from_slice(&payload[..len]);
            let mut m = RecvMeta::default();
            m.addr = src;
            m.len = len;
            m.stride = len;
            m.dst_ip = Some(self.pipe.local.into());
            meta[n] = m;
            n += 1;
        }
        Poll::Ready(Ok(n))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(SocketAddr::V6(SocketAddrV6::new(
            self.pipe.local,
            QUIC_PORT,
            0,
            0,
        )))
    }

    fn may_fragment(&self) -> bool {
        // The tunnel never fragments: oversize packets get Packet Too Big; quinn discovers the MTU.
        false
    }
}
