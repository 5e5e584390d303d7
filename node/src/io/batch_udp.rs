//! The node's main UDP socket with segmentation offload, through `quinn-udp`: datagrams of equal
//! size to one destination leave in one GSO `sendmsg` (a "train"); arriving ones come in
//! `recvmmsg` batches and GRO trains. A bulk transfer then costs a few system calls per hundred
//! datagrams instead of two per datagram. Where the kernel has neither, every train is one
//! datagram and every batch one `recvmsg`: the behaviour of a plain socket.
//!
//! `quinn-udp` forbids IP fragmentation on the sockets it prepares, which QUIC wants (it
//! discovers the path MTU itself). The tunnel's datagrams are a fixed size instead (the overlay
//! MTU plus framing), so a path with a smaller MTU must fragment them, as it did before: the
//! kernel's defaults are put back.

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;

use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Receive buffers per `recvmmsg`.
const RECV_BUFFERS: usize = 8;
/// Bytes of one GSO train (the kernel's limit is 64 KiB of UDP payload).
const MAX_TRAIN_BYTES: usize = 60_000;

/// A train of datagrams being gathered for one GSO send.
#[derive(Debug, Default)]
struct Train {
    dest: Option<SocketAddr>,
    /// Size of every datagram but the last.
    segment: usize,
    count: usize,
    /// A shorter datagram ended it.
    closed: bool,
    bytes: Vec<u8>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct BatchSocket<'a> {
    socket: &'a UdpSocket,
    state: UdpSocketState,
    bufs: Vec<Vec<u8>>,
    meta: Vec<RecvMeta>,
    train: Train,
}

impl<'a> BatchSocket<'a> {
    /// Prepares `socket` (GRO on, fragmentation as the kernel's default).
    pub fn new(socket: &'a UdpSocket) -> io::Result<Self> {
        let state = UdpSocketState::new(socket.into())?;
        allow_fragmentation(socket);
        // One GRO train fills up to 64 KiB; without GRO a buffer holds one datagram.
        let len = if state.gro_segments() > 1 {
            65_536
        } else {
            2048
        };
        Ok(Self {
            socket,
            state,
            bufs: vec![vec![0u8; len]; RECV_BUFFERS],
            meta: vec![RecvMeta::default(); RECV_BUFFERS],
            train: Train::default(),
        })
    }

    /// Datagrams per GSO send (1 where the kernel has no GSO or refused it once).
    pub fn max_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// One receive call without waiting: hands every datagram to `each` (source, bytes) and
    /// returns how many there were. `WouldBlock` when nothing is waiting.
    pub fn try_recv(&mut self, mut each: impl FnMut(SocketAddr, &[u8])) -> io::Result<usize> {
        let n = {
            let mut iovs: Vec<IoSliceMut<'_>> =
                self.bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let (socket, state, meta) = (self.socket, &self.state, &mut self.meta);
            socket.try_io(Interest::READABLE, || {
                state.recv(socket.into(), &mut iovs, meta)
            })?
        };
        let mut count = 0;
        for (m, buf) in self.meta[..n].iter().zip(&self.bufs) {
            let data = &buf[..m.len.min(buf.len())];
            let stride = if m.stride == 0 { data.len() } else { m.stride };
            for datagram in data.chunks(stride.max(1)) {
                each(m.addr, datagram);
                count += 1;
            }
        }
        Ok(count)
    }

    /// Queues a datagram; it leaves with the next ones to the same destination and of the same
    /// size, at the latest on [`BatchSocket::flush`]. An error is that of the train sent to make
    /// room (the new datagram is queued regardless).
    pub async fn send(&mut self, dest: SocketAddr, contents: &[u8]) -> io::Result<()> {
        let t = &self.train;
        let fits = t.dest == Some(dest)
            && !t.closed
            && contents.len() <= t.segment
            && t.count < self.state.max_gso_segments()
            && t.bytes.len() + contents.len() <= MAX_TRAIN_BYTES;
        let mut result = Ok(());
        if !fits {
            result = self.flush().await;
            self.train.dest = Some(dest);
            self.train.segment = contents.len();
        }
        let t = &mut self.train;
        t.bytes.extend_from_slice(contents);
        t.count += 1;
        t.closed = contents.len() < t.segment;
        result
    }

    /// Sends the queued train, waiting while the socket's buffer is full.
    pub async fn flush(&mut self) -> io::Result<()> {
        let Some(dest) = self.train.dest.take() else {
            return Ok(());
        };
        let (segment, count) = (self.train.segment, self.train.count);
        let mut bytes = std::mem::take(&mut self.train.bytes);
        self.train = Train::default();
        let result = if count > 1 {
            match send_now(self.socket, &self.state, dest, &bytes, Some(segment)).await {
                // The kernel refused the offload (quinn-udp turns it off for good): the same
                // datagrams one by one.
                Err(_) => {
                    let mut result = Ok(());
                    for datagram in bytes.chunks(segment) {
                        if let Err(e) =
                            send_now(self.socket, &self.state, dest, datagram, None).await
                        {
                            result = Err(e);
                        }
                    }
                    result
                }
                ok => ok,
            }
        } else {
            send_now(self.socket, &self.state, dest, &bytes, None).await
        };
        bytes.clear();
        self.train.bytes = bytes;
        result
    }
}

async fn send_now(
    socket: &UdpSocket,
    state: &UdpSocketState,
    dest: SocketAddr,
    contents: &[u8],
    segment_size: Option<usize>,
) -> io::Result<()> {
    let transmit = Transmit {
        destination: dest,
        ecn: None,
        contents,
        segment_size,
        src_ip: None,
    };
    loop {
        match socket.try_io(Interest::WRITABLE, || {
            state.try_send(socket.into(), &transmit)
        }) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => socket.writable().await?,
            other => return other,
        }
    }
}

/// Puts back the kernel's default: path MTU discovery where the packet fits, fragmentation where
/// it does not.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn allow_fragmentation(socket: &UdpSocket) {
    use rustix::net::sockopt;
    let _ = sockopt::set_ip_mtu_discover(socket, sockopt::Ipv4PathMtuDiscovery::WANT);
    if socket.local_addr().is_ok_and(|a| a.is_ipv6()) {
        let _ = sockopt::set_ipv6_mtu_discover(socket, sockopt::Ipv6PathMtuDiscovery::WANT);
        let _ =
            nix::sys::socket::setsockopt(socket, nix::sys::socket::sockopt::Ipv6DontFrag, &false);
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn allow_fragmentation(_: &UdpSocket) {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn pair() -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        (a, b)
    }

    /// Receives until `want` datagrams arrived; fails, naming what is missing, if one does not
    /// come (a lost datagram must fail the test, not hang it). Loopback delivers in
    /// microseconds: the bound is only there to turn a hang into a failure.
    async fn recv_all(b: &mut BatchSocket<'_>, want: usize) -> Vec<(SocketAddr, Vec<u8>)> {
        let mut got = Vec::new();
        while got.len() < want {
            let readable = tokio::time::timeout(Duration::from_secs(10), b.socket.readable());
            let Ok(r) = readable.await else {
                panic!("only {} of {want} datagrams arrived", got.len());
            };
            r.unwrap();
            match b.try_recv(|from, d| got.push((from, d.to_vec()))) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("{e}"),
            }
        }
        got
    }

    #[tokio::test]
    async fn trains_arrive_as_the_datagrams_they_were_in_order() {
        let (a, b) = pair().await;
        let (mut tx, mut rx) = (BatchSocket::new(&a).unwrap(), BatchSocket::new(&b).unwrap());
        let dest = b.local_addr().unwrap();
        #[cfg(target_os = "linux")]
        assert!(
            tx.max_segments() > 1,
            "this kernel offers GSO: trains are tested"
        );
        // 100 full-size datagrams, a short one that ends the train, then more full-size ones
        // and a lone different size: every boundary and byte must survive.
        let mut sent: Vec<Vec<u8>> = Vec::new();
        for i in 0..100u32 {
            sent.push(vec![i as u8; 1300]);
        }
        sent.push(vec![0xAA; 700]);
        for i in 0..10u32 {
            sent.push(vec![(i + 7) as u8; 1300]);
        }
        sent.push(vec![0xBB; 1400]);
        for d in &sent {
            tx.send(dest, d).await.unwrap();
        }
        tx.flush().await.unwrap();
        let got = recv_all(&mut rx, sent.len()).await;
        assert!(got.iter().all(|(from, _)| *from == a.local_addr().unwrap()));
        let got: Vec<Vec<u8>> = got.into_iter().map(|(_, d)| d).collect();
        assert_eq!(got, sent);
    }

    #[tokio::test]
    async fn datagrams_to_different_destinations_do_not_share_a_train() {
        let (a, b) = pair().await;
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut tx = BatchSocket::new(&a).unwrap();
        let (mut rb, mut rc) = (BatchSocket::new(&b).unwrap(), BatchSocket::new(&c).unwrap());
        for i in 0..20u8 {
            let dest = if i % 3 == 0 { &c } else { &b };
            tx.send(dest.local_addr().unwrap(), &[i; 500])
                .await
                .unwrap();
        }
        tx.flush().await.unwrap();
        let to_b: Vec<u8> = recv_all(&mut rb, 13)
            .await
            .iter()
            .map(|(_, d)| d[0])
            .collect();
        let to_c: Vec<u8> = recv_all(&mut rc, 7)
            .await
            .iter()
            .map(|(_, d)| d[0])
            .collect();
        assert_eq!(to_b, (0..20).filter(|i| i % 3 != 0).collect::<Vec<u8>>());
        assert_eq!(to_c, (0..20).filter(|i| i % 3 == 0).collect::<Vec<u8>>());
    }

    #[tokio::test]
    async fn fragmentation_is_allowed_again_after_quinn_udp_prepared_the_socket() {
        let (a, b) = pair().await;
        let (mut tx, mut rx) = (BatchSocket::new(&a).unwrap(), BatchSocket::new(&b).unwrap());
        #[cfg(target_os = "linux")]
        assert_eq!(
            rustix::net::sockopt::ip_mtu_discover(&a).unwrap(),
            rustix::net::sockopt::Ipv4PathMtuDiscovery::WANT
        );
        tx.send(b.local_addr().unwrap(), &[7u8; 3000])
            .await
            .unwrap();
        tx.flush().await.unwrap();
        let got = recv_all(&mut rx, 1).await;
        assert_eq!(got[0].1, vec![7u8; 3000]);
    }
}
