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
//!
//! Where the host has several addresses, a datagram to a remote we have heard from leaves from the
//! local address the remote's last datagram arrived at (`IP_PKTINFO` / `IPV6_PKTINFO`, which
//! quinn-udp reports as `RecvMeta::dst_ip` and sets as `Transmit::src_ip`): a handshake response
//! or probe answer from another of our addresses would be dropped by the remote's NAT, and
//! ignored by a node that sent to the address that was asked (`docs/protocol.md` §"Answering from
//! the address that was asked"). The table is bounded ([`REPLY_SOURCES`]) and kept in this
//! module, so the sans-IO engine does not know about it.

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};

use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Receive buffers per `recvmmsg`.
const RECV_BUFFERS: usize = 8;
/// Bytes of one GSO train (the kernel's limit is 64 KiB of UDP payload).
const MAX_TRAIN_BYTES: usize = 60_000;
/// Remotes whose local address is remembered: about the most recent ones (two generations of
/// half as many each), 40 bytes each at most.
pub const REPLY_SOURCES: usize = 1024;

/// Which local address each recent remote's last datagram arrived at: two generations of hash
/// maps, the older dropped when the newer fills, so the table is bounded and a remote heard
/// from recently is kept (an approximate LRU at O(1) a datagram).
///
/// Whoever can send from a remote's address (spoof it) can move that remote's entry to another
/// of our addresses; that costs the remote what the OS's own choice would cost it, until its next
/// datagram puts the entry back.
#[derive(Debug, Default)]
struct ReplySources {
    current: HashMap<SocketAddr, IpAddr>,
    previous: HashMap<SocketAddr, IpAddr>,
    /// The last remote recorded and its local address: a bulk receive repeats one remote.
    last: Option<(SocketAddr, IpAddr)>,
}

impl ReplySources {
    /// `remote` (as the socket gives it) was heard at `local` (already a valid source for it).
    fn record(&mut self, remote: SocketAddr, local: IpAddr) {
        if self.last == Some((remote, local)) {
            return;
        }
        self.last = Some((remote, local));
        if let Some(l) = self.current.get_mut(&remote) {
            *l = local;
            return;
        }
        if self.current.len() >= REPLY_SOURCES / 2 {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.clear();
        }
        self.current.insert(remote, local);
    }

    fn get(&self, remote: &SocketAddr) -> Option<IpAddr> {
        self.current
            .get(remote)
            .or_else(|| self.previous.get(remote))
            .copied()
    }

    /// Sending from the remembered address failed (the address went away): the OS chooses for
    /// `remote` until it is heard from again.
    fn forget(&mut self, remote: &SocketAddr) {
        self.current.remove(remote);
        self.previous.remove(remote);
        if self.last.is_some_and(|(r, _)| r == *remote) {
            self.last = None;
        }
    }

    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

/// A train of datagrams being gathered for one GSO send.
#[derive(Debug, Default)]
struct Train {
    dest: Option<SocketAddr>,
    /// The local address it leaves from (`None`: the OS chooses).
    src: Option<IpAddr>,
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
    /// IPv4 remotes appear IPv4-mapped (the socket is `[::]`).
    dual_stack: bool,
    sources: ReplySources,
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
            dual_stack: socket.local_addr()?.is_ipv6(),
            sources: ReplySources::default(),
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
            let source = m
                .dst_ip
                .and_then(|ip| shipworm_rendezvous::udp::reply_source(ip, m.addr, self.dual_stack));
            if let Some(local) = source {
                self.sources.record(m.addr, local);
            }
            let data = &buf[..m.len.min(buf.len())];
            let stride = if m.stride == 0 { data.len() } else { m.stride };
            for datagram in data.chunks(stride.max(1)) {
                each(m.addr, datagram);
                count += 1;
            }
        }
        Ok(count)
    }

    /// The local address datagrams to `remote` leave from, if one is remembered (where its last
    /// datagram arrived).
    pub fn reply_source(&self, remote: SocketAddr) -> Option<IpAddr> {
        self.sources.get(&remote)
    }

    /// Remotes whose local address is remembered (at most [`REPLY_SOURCES`]).
    pub fn reply_sources(&self) -> usize {
        self.sources.len()
    }

    /// Queues a datagram; it leaves with the next ones to the same destination and of the same
    /// size, at the latest on [`BatchSocket::flush`], from the local address `dest`'s last
    /// datagram arrived at. An error is that of the train sent to make room (the new datagram is
    /// queued regardless).
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
            self.train.src = self.sources.get(&dest);
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
        let (src, segment, count) = (self.train.src, self.train.segment, self.train.count);
        let mut bytes = std::mem::take(&mut self.train.bytes);
        self.train = Train::default();
        let gso = self.state.max_gso_segments();
        let mut result = self.send_train(dest, src, &bytes, segment, count).await;
        if result.is_err() && src.is_some() {
            // The remembered address may have gone away (the kernel refuses it as a source,
            // IPv6 with EINVAL): the OS chooses for this remote from now on, and the train goes
            // again. An EINVAL also made quinn-udp turn GSO off for good; it was not GSO's fault,
            // so the socket's state is prepared afresh.
            self.sources.forget(&dest);
            if gso > 1 && self.state.max_gso_segments() == 1 {
                if let Ok(state) = UdpSocketState::new(self.socket.into()) {
                    self.state = state;
                    allow_fragmentation(self.socket);
                }
            }
            result = self.send_train(dest, None, &bytes, segment, count).await;
        }
        bytes.clear();
        self.train.bytes = bytes;
        result
    }

    /// `count` datagrams of `segment` bytes (the last may be shorter) in `bytes`: one GSO send,
    /// or one by one where the kernel refuses the offload.
    async fn send_train(
        &self,
        dest: SocketAddr,
        src: Option<IpAddr>,
        bytes: &[u8],
        segment: usize,
        count: usize,
    ) -> io::Result<()> {
        if count <= 1 {
            return send_now(self.socket, &self.state, dest, src, bytes, None).await;
        }
        match send_now(self.socket, &self.state, dest, src, bytes, Some(segment)).await {
            // The kernel refused the offload (quinn-udp turns it off for good): the same
            // datagrams one by one.
            Err(_) => {
                let mut result = Ok(());
                for datagram in bytes.chunks(segment) {
                    if let Err(e) =
                        send_now(self.socket, &self.state, dest, src, datagram, None).await
                    {
                        result = Err(e);
                    }
                }
                result
            }
            ok => ok,
        }
    }
}

async fn send_now(
    socket: &UdpSocket,
    state: &UdpSocketState,
    dest: SocketAddr,
    src: Option<IpAddr>,
    contents: &[u8],
    segment_size: Option<usize>,
) -> io::Result<()> {
    let transmit = Transmit {
        destination: dest,
        ecn: None,
        contents,
        segment_size,
        src_ip: src,
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

    /// Receives one datagram on `sock` (two seconds at most): its bytes and source.
    async fn recv_one(sock: &UdpSocket) -> (Vec<u8>, SocketAddr) {
        let mut buf = vec![0u8; 2048];
        let (n, from) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
            .await
            .expect("no datagram within two seconds")
            .unwrap();
        (buf[..n].to_vec(), from)
    }

    #[tokio::test]
    async fn replies_leave_from_the_loopback_address_the_remote_asked() {
        // The node's own socket: `[::]`, dual-stack. Linux routes all of 127/8 to `lo`, so
        // 127.0.0.2 is a second local address, and the OS's own choice toward 127.0.0.1 is
        // 127.0.0.1. The remote's socket is unconnected: a wrong source still arrives, and the
        // assertion names it.
        let node = crate::io::bind_dual_stack("[::]:0".parse().unwrap()).unwrap();
        let port = node.local_addr().unwrap().port();
        let mut b = BatchSocket::new(&node).unwrap();
        let remote = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let back = shipworm_tunnel::wire::addr::to_dual_stack(remote.local_addr().unwrap());
        for (round, ip) in ["127.0.0.2", "127.0.0.1", "127.0.0.2"]
            .into_iter()
            .enumerate()
        {
            let asked = SocketAddr::new(ip.parse().unwrap(), port);
            remote.send_to(&[round as u8], asked).await.unwrap();
            let got = recv_all(&mut b, 1).await;
            assert_eq!(got[0].0, back);
            // A single answer, then a GSO train of five.
            b.send(back, b"answer").await.unwrap();
            b.flush().await.unwrap();
            let (bytes, from) = recv_one(&remote).await;
            assert_eq!(
                (bytes.as_slice(), from),
                (&b"answer"[..], asked),
                "round {round}"
            );
            for i in 0..5u8 {
                b.send(back, &[i; 1200]).await.unwrap();
            }
            b.flush().await.unwrap();
            for i in 0..5u8 {
                let (bytes, from) = recv_one(&remote).await;
                assert_eq!((bytes, from), (vec![i; 1200], asked), "round {round}");
            }
        }
        assert_eq!(b.reply_sources(), 1);
        // A remote never heard from: the OS chooses.
        assert_eq!(
            b.reply_source("[::ffff:127.0.0.1]:9".parse().unwrap()),
            None
        );
    }

    #[tokio::test]
    async fn a_source_address_that_went_away_falls_back_to_the_os_choice_and_keeps_gso() {
        let node = crate::io::bind_dual_stack("[::]:0".parse().unwrap()).unwrap();
        let mut b = BatchSocket::new(&node).unwrap();
        let gso = b.max_segments();
        // IPv4 (the kernel refuses a foreign source with ENETUNREACH or EADDRNOTAVAIL) and IPv6
        // (EINVAL, which makes quinn-udp turn GSO off).
        let mut remotes = vec![(UdpSocket::bind("127.0.0.1:0").await.unwrap(), "192.0.2.77")];
        match UdpSocket::bind("[::1]:0").await {
            Ok(v6) => remotes.push((v6, "2001:db8::77")),
            Err(e) => eprintln!("no IPv6 loopback here ({e}): the IPv6 case is not run"),
        }
        for (remote, gone) in remotes {
            let dest = shipworm_tunnel::wire::addr::to_dual_stack(remote.local_addr().unwrap());
            let gone: IpAddr = gone.parse().unwrap();
            b.sources.record(
                dest,
                shipworm_rendezvous::udp::reply_source(gone, dest, true).unwrap(),
            );
            for i in 0..4u8 {
                b.send(dest, &[i; 1000]).await.unwrap();
            }
            b.flush().await.unwrap();
            for i in 0..4u8 {
                let (bytes, from) = recv_one(&remote).await;
                assert_eq!(bytes, vec![i; 1000]);
                assert_ne!(from.ip(), gone);
            }
            assert_eq!(
                b.reply_source(dest),
                None,
                "the address that failed is forgotten"
            );
            assert_eq!(
                b.max_segments(),
                gso,
                "GSO survives a source address that went away"
            );
        }
    }

    #[test]
    fn the_reply_source_table_is_bounded_and_keeps_the_recent_remotes() {
        let mut t = ReplySources::default();
        let local: IpAddr = "198.51.100.2".parse().unwrap();
        let remote = |i: u32| SocketAddr::from((std::net::Ipv4Addr::from(0x0a00_0000 + i), 7));
        for i in 0..10 * REPLY_SOURCES as u32 {
            t.record(remote(i), local);
            assert!(t.len() <= REPLY_SOURCES);
        }
        let last = 10 * REPLY_SOURCES as u32 - 1;
        for i in last + 1 - REPLY_SOURCES as u32 / 2..=last {
            assert_eq!(t.get(&remote(i)), Some(local), "remote {i}");
        }
        assert_eq!(t.get(&remote(0)), None);
        // The latest datagram decides.
        let other: IpAddr = "11.0.113.2".parse().unwrap();
        t.record(remote(last), other);
        assert_eq!(t.get(&remote(last)), Some(other));
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
