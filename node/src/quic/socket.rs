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
use shipworm_tunnel::tunnel::SEND_HEADROOM;

/// The UDP port of every node's QUIC endpoint on its overlay address.
pub const QUIC_PORT: u16 = 7300;
/// Datagrams queued each way.
pub const PIPE_CAPACITY: usize = 1024;
/// Datagrams quinn may hand over in one transmit (it builds them back to back, as for GSO, which
/// saves it work per datagram); each becomes its own IPv6 packet here.
const MAX_SEGMENTS: usize = 10;

/// Spare packet buffers kept in the pipe.
const MAX_SPARE: usize = 256;

#[derive(Default)]
struct Queues {
    /// IPv6 packets from QUIC, for the tunnel, each after [`SEND_HEADROOM`] bytes of room.
    out: VecDeque<Vec<u8>>,
    /// (source, IPv6 packet, offset of the UDP payload in it) from the tunnel, for QUIC.
    inbound: VecDeque<(SocketAddr, Vec<u8>, usize)>,
    /// Buffers of packets done with, for the next ones either way.
    spare: Vec<Vec<u8>>,
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

    /// Driver side: waits for, then takes, the IPv6 packets QUIC wants sent (each after
    /// [`SEND_HEADROOM`] bytes of room, for [`shipworm_tunnel::tunnel::Tunnel::send_ip_in`]).
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

    /// Driver side: buffers of packets handed to the tunnel, to build the next ones in.
    pub fn recycle(&self, bufs: impl IntoIterator<Item = Vec<u8>>) {
        let mut q = self.lock();
        for mut b in bufs {
            if q.spare.len() >= MAX_SPARE {
                break;
            }
            b.clear();
            q.spare.push(b);
        }
    }

    /// Driver side: takes up to `max` spare buffers (for the tunnel to open packets into).
    pub fn take_spare(&self, max: usize, mut each: impl FnMut(Vec<u8>)) {
        let mut q = self.lock();
        let keep = q.spare.len().saturating_sub(max);
        for b in q.spare.drain(keep..) {
            each(b);
        }
    }

    /// Driver side: IPv6 packets from the tunnel, under one lock. Keeps those that are UDP to
    /// our QUIC port; leaves the others (and any the full queue has no room for) in `packets`,
    /// for the caller to reuse.
    pub fn deliver(&self, packets: &mut Vec<Vec<u8>>) {
        let mut q = self.lock();
        let before = q.inbound.len();
        packets.retain_mut(|packet| {
            let Some((src, offset, end)) = quic_datagram(packet) else {
                return true;
            };
            if q.inbound.len() >= PIPE_CAPACITY {
                return true;
            }
            packet.truncate(end);
            q.inbound.push_back((src, std::mem::take(packet), offset));
            false
        });
        if q.inbound.len() > before {
            if let Some(w) = q.recv_waker.take() {
                w.wake();
            }
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

/// Source, payload start and payload end of a UDP-in-IPv6 packet to our QUIC port.
fn quic_datagram(packet: &[u8]) -> Option<(SocketAddr, usize, usize)> {
    let sliced = etherparse::SlicedPacket::from_ip(packet).ok()?;
    let (Some(etherparse::NetSlice::Ipv6(ip)), Some(etherparse::TransportSlice::Udp(udp))) =
        (&sliced.net, &sliced.transport)
    else {
        return None;
    };
    if udp.destination_port() != QUIC_PORT {
        return None;
    }
    let src = SocketAddr::V6(SocketAddrV6::new(
        ip.header().source_addr(),
        udp.source_port(),
        0,
        0,
    ));
    let payload = udp.payload();
    let offset = payload.as_ptr() as usize - packet.as_ptr() as usize;
    Some((src, offset, offset + payload.len()))
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
        if q.out.len() + MAX_SEGMENTS <= PIPE_CAPACITY {
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
        let segment = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        let count = transmit.contents.len().div_ceil(segment);
        // Room checked and spare buffers taken under one lock; the packets built outside it.
        let mut packets: Vec<Vec<u8>> = {
            let mut q = self.pipe.lock();
            if q.out.len() + count > PIPE_CAPACITY {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let keep = q.spare.len().saturating_sub(count);
            q.spare.drain(keep..).collect()
        };
        packets.resize_with(count, Vec::new);
        for (packet, datagram) in packets.iter_mut().zip(transmit.contents.chunks(segment)) {
            // Built after room for the tunnel's header: it is sealed in place.
            packet.clear();
            packet.reserve(SEND_HEADROOM + datagram.len() + 48);
            packet.resize(SEND_HEADROOM, 0);
            etherparse::PacketBuilder::ipv6(self.pipe.local.octets(), dst.ip().octets(), 64)
                .udp(QUIC_PORT, dst.port())
                .write(packet, datagram)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        }
        let mut q = self.pipe.lock();
        if q.out.len() + count > PIPE_CAPACITY {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        q.out.extend(packets);
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
            let Some((src, mut packet, offset)) = q.inbound.pop_front() else {
                break;
            };
            let payload = &packet[offset..];
            let len = payload.len().min(bufs[n].len());
            bufs[n][..len].copy_from_slice(&payload[..len]);
            if q.spare.len() < MAX_SPARE {
                packet.clear();
                q.spare.push(packet);
            }
            meta[n] = RecvMeta {
                addr: src,
                len,
                stride: len,
                ecn: None,
                dst_ip: Some(self.pipe.local.into()),
            };
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

    fn max_transmit_segments(&self) -> usize {
        MAX_SEGMENTS
    }

    fn may_fragment(&self) -> bool {
        // The tunnel never fragments: oversize packets get Packet Too Big; quinn discovers the MTU.
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transmit_of_several_segments_becomes_one_ipv6_packet_per_segment() {
        let local: Ipv6Addr = "fd00::1".parse().unwrap();
        let pipe = Pipe::new(local);
        let socket = OverlaySocket::new(pipe.clone());
        let dst: SocketAddr = "[fd00::2]:7300".parse().unwrap();
        // Three segments of 100 bytes and a last one of 40, back to back as quinn builds them.
        let contents: Vec<u8> = (0..340u32).map(|i| (i / 100) as u8).collect();
        let transmit = Transmit {
            destination: dst,
            ecn: None,
            contents: &contents,
            segment_size: Some(100),
            src_ip: None,
        };
        socket.try_send(&transmit).unwrap();
        let mut out = Vec::new();
        let waker = std::task::Waker::noop();
        assert!(pipe
            .poll_outbound(&mut Context::from_waker(waker), &mut out)
            .is_ready());
        let payloads: Vec<Vec<u8>> = out
            .iter()
            .map(|p| {
                // Each after the room the tunnel seals its header into.
                let s = etherparse::SlicedPacket::from_ip(&p[SEND_HEADROOM..]).unwrap();
                let Some(etherparse::TransportSlice::Udp(u)) = s.transport else {
                    panic!("not UDP")
                };
                assert_eq!(u.destination_port(), 7300);
                u.payload().to_vec()
            })
            .collect();
        assert_eq!(
            payloads,
            vec![
                vec![0u8; 100],
                vec![1u8; 100],
                vec![2u8; 100],
                vec![3u8; 40]
            ]
        );
    }

    #[test]
    fn a_transmit_that_does_not_fit_whole_is_refused_whole() {
        let pipe = Pipe::new("fd00::1".parse().unwrap());
        let socket = OverlaySocket::new(pipe.clone());
        let dst: SocketAddr = "[fd00::2]:7300".parse().unwrap();
        let one = [0u8; 10];
        let single = Transmit {
            destination: dst,
            ecn: None,
            contents: &one,
            segment_size: None,
            src_ip: None,
        };
        for _ in 0..PIPE_CAPACITY - 2 {
            socket.try_send(&single).unwrap();
        }
        let three = [0u8; 30];
        let batch = Transmit {
            contents: &three,
            segment_size: Some(10),
            ..single
        };
        let err = socket.try_send(&batch).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(
            pipe.lock().out.len(),
            PIPE_CAPACITY - 2,
            "nothing half-sent"
        );
    }
}
