//! Batched sends: the datagrams that one receive batch produces are gathered, then leave in as few
//! `sendmmsg` calls as possible, each datagram with its own destination and source address.
//!
//! A server that answers every request with a `sendmsg` of its own spends a system call per reply;
//! replies to different destinations cannot share a GSO send (one destination per call), but they
//! can share a `sendmmsg`, [`MAX_MESSAGES`] at a time. Where the OS has no `sendmmsg`, every
//! datagram is one quinn-udp send, as before.

use std::io;
use std::net::{IpAddr, SocketAddr};

use quinn_udp::UdpSocketState;
use tokio::io::Interest;
use tokio::net::UdpSocket;

#[cfg(any(target_os = "linux", target_os = "android"))]
pub use super::sendmmsg::MAX_MESSAGES;
/// Datagrams per system call (one: this OS has no `sendmmsg`).
#[cfg(not(any(target_os = "linux", target_os = "android")))]
pub const MAX_MESSAGES: usize = 1;

/// Datagrams a [`SendBatch`] holds: a receive batch's replies, and a bound on its memory.
pub const SEND_QUEUE: usize = 256;
/// Bytes of datagrams a [`SendBatch`] holds.
pub const SEND_QUEUE_BYTES: usize = 256 * 1024;

/// One datagram handed to the system call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Datagram<'a> {
    pub contents: &'a [u8],
    pub dest: SocketAddr,
    pub src: Option<IpAddr>,
}

/// A queued datagram: its bytes are `bytes[start..start + len]` of the batch.
#[derive(Debug, Clone, Copy)]
struct Queued {
    start: usize,
    len: usize,
    dest: SocketAddr,
    src: Option<IpAddr>,
}

/// Datagrams gathered for one socket, sent together by [`SendBatch::flush`].
///
/// Bounded: at most [`SEND_QUEUE`] datagrams and [`SEND_QUEUE_BYTES`] bytes; [`SendBatch::push`]
/// refuses more, so a caller checks [`SendBatch::has_room`] and flushes first. The buffers are
/// kept from one flush to the next.
#[derive(Debug, Default)]
pub struct SendBatch {
    bytes: Vec<u8>,
    queued: Vec<Queued>,
    /// `queued[..next]` are done (sent, or refused by the kernel).
    next: usize,
    /// Datagrams the kernel refused since the last [`SendBatch::take_failed`].
    failed: u64,
}

impl SendBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Datagrams waiting.
    pub fn len(&self) -> usize {
        self.queued.len() - self.next
    }

    /// Nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `datagrams` more datagrams of `bytes` bytes in all fit without a flush.
    pub fn has_room(&self, datagrams: usize, bytes: usize) -> bool {
        self.queued.len() + datagrams <= SEND_QUEUE && self.bytes.len() + bytes <= SEND_QUEUE_BYTES
    }

    /// Queues `contents` to `dest`, leaving from local address `src` (`None`: the OS chooses),
    /// both in the socket's form (IPv4-mapped on a dual-stack socket). Returns `false`, queuing
    /// nothing, when the batch is full.
    pub fn push(&mut self, contents: &[u8], dest: SocketAddr, src: Option<IpAddr>) -> bool {
        if !self.has_room(1, contents.len()) {
            return false;
        }
        self.queued.push(Queued {
            start: self.bytes.len(),
            len: contents.len(),
            dest,
            src,
        });
        self.bytes.extend_from_slice(contents);
        true
    }

    /// Datagrams the kernel refused (and that were dropped) since the last call.
    pub fn take_failed(&mut self) -> u64 {
        std::mem::take(&mut self.failed)
    }

    /// Sends everything queued, in order, [`MAX_MESSAGES`] per system call, waiting while the
    /// socket's buffer is full and then resuming with the first datagram not sent. A datagram the
    /// kernel refuses (an unreachable destination, a source address that went away) is dropped
    /// and counted ([`SendBatch::take_failed`]); the others still leave.
    pub async fn flush(&mut self, socket: &UdpSocket, state: &UdpSocketState) {
        loop {
            let done = socket.try_io(Interest::WRITABLE, || {
                self.flush_through(|datagrams| send(socket, state, datagrams))
            });
            match done {
                Ok(()) => return,
                Err(_) => {
                    // The buffer is full (the only error `flush_through` returns): wait for room.
                    if socket.writable().await.is_err() {
                        self.failed += self.len() as u64;
                        self.clear();
                        return;
                    }
                }
            }
        }
    }

    /// The flush without the socket: `send` is handed the datagrams not yet done (at most
    /// [`MAX_MESSAGES`]) and says how many of the first it sent, as `sendmmsg` does. Returns
    /// `WouldBlock` (keeping the rest) when `send` does; any other error drops and counts the
    /// first datagram, and the flush goes on with the next.
    fn flush_through(
        &mut self,
        mut send: impl FnMut(&[Datagram<'_>]) -> io::Result<usize>,
    ) -> io::Result<()> {
        let empty = Datagram {
            contents: &[],
            dest: SocketAddr::from(([0, 0, 0, 0], 0)),
            src: None,
        };
        let mut call = [empty; MAX_MESSAGES];
        while self.next < self.queued.len() {
            let chunk = &self.queued[self.next..];
            let k = chunk.len().min(MAX_MESSAGES);
            for (slot, q) in call.iter_mut().zip(&chunk[..k]) {
                *slot = Datagram {
                    contents: self.bytes.get(q.start..q.start + q.len).unwrap_or(&[]),
                    dest: q.dest,
                    src: q.src,
                };
            }
            match send(&call[..k]) {
                // More than asked cannot happen; zero would loop forever: both count as the
                // first datagram refused.
                Ok(sent) if sent > 0 && sent <= k => self.next += sent,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Err(e),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Ok(_) | Err(_) => {
                    self.failed += 1;
                    self.next += 1;
                }
            }
        }
        self.clear();
        Ok(())
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.queued.clear();
        self.next = 0;
    }
}

/// Sends the first of `datagrams` it can in one system call; how many.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn send(socket: &UdpSocket, _: &UdpSocketState, datagrams: &[Datagram<'_>]) -> io::Result<usize> {
    use std::os::fd::AsFd;
    super::sendmmsg::sendmmsg(socket.as_fd(), datagrams)
}

/// Sends the first of `datagrams` with quinn-udp; one.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn send(
    socket: &UdpSocket,
    state: &UdpSocketState,
    datagrams: &[Datagram<'_>],
) -> io::Result<usize> {
    let Some(d) = datagrams.first() else {
        return Ok(0);
    };
    let transmit = quinn_udp::Transmit {
        destination: d.dest,
        ecn: None,
        contents: d.contents,
        segment_size: None,
        src_ip: d.src,
    };
    state.try_send(socket.into(), &transmit).map(|()| 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// A batch of `n` datagrams, the i-th saying `i` and going to port 1000 + i % 7.
    fn batch_of(n: usize) -> SendBatch {
        let mut b = SendBatch::new();
        for i in 0..n {
            assert!(b.push(&(i as u32).to_be_bytes(), to(1000 + (i % 7) as u16), None));
        }
        b
    }

    fn number(d: &Datagram<'_>) -> u32 {
        u32::from_be_bytes(d.contents.try_into().unwrap())
    }

    #[test]
    fn a_flush_sends_everything_in_order_in_as_few_calls_as_the_limit_allows() {
        let n = 2 * MAX_MESSAGES + 5;
        let mut b = batch_of(n);
        let (mut calls, mut seen) = (Vec::new(), Vec::new());
        b.flush_through(|ds| {
            calls.push(ds.len());
            seen.extend(ds.iter().map(|d| (number(d), d.dest)));
            Ok(ds.len())
        })
        .unwrap();
        assert_eq!(calls, [MAX_MESSAGES, MAX_MESSAGES, 5]);
        let want: Vec<_> = (0..n)
            .map(|i| (i as u32, to(1000 + (i % 7) as u16)))
            .collect();
        assert_eq!(seen, want);
        assert!(b.is_empty());
        assert_eq!(b.take_failed(), 0);
    }

    #[test]
    fn a_full_socket_buffer_resumes_with_the_first_datagram_not_sent_and_loses_none() {
        // The kernel takes at most 5 datagrams a call, and every third call finds the buffer full;
        // the caller waits (here: calls again) as `flush` waits for the socket to be writable.
        // Loopback never fills a UDP send buffer (the kernel frees each datagram as it hands it
        // to the receiver), so this is where the resumption is proven.
        let n = 3 * MAX_MESSAGES;
        let mut b = batch_of(n);
        let (mut call, mut seen, mut blocked) = (0, Vec::new(), 0);
        loop {
            let r = b.flush_through(|ds| {
                call += 1;
                if call % 3 == 0 {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let k = ds.len().min(5);
                seen.extend(ds[..k].iter().map(number));
                Ok(k)
            });
            match r {
                Ok(()) => break,
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
                    blocked += 1;
                    assert!(!b.is_empty());
                }
            }
        }
        assert!(blocked > 10);
        assert_eq!(seen, (0..n as u32).collect::<Vec<_>>());
        assert_eq!(b.take_failed(), 0);
        // The batch is empty and reusable.
        assert!(b.is_empty() && b.has_room(SEND_QUEUE, SEND_QUEUE_BYTES));
    }

    #[test]
    fn a_refused_datagram_is_counted_and_the_others_still_leave() {
        // As sendmmsg: sends up to the first datagram the kernel refuses, which the next call
        // (starting with it) reports as its error. Here the kernel refuses port 1003 and is
        // interrupted by a signal once.
        let mut b = batch_of(40);
        let (mut seen, mut interrupted) = (Vec::new(), false);
        b.flush_through(|ds| {
            if !interrupted {
                interrupted = true;
                return Err(io::ErrorKind::Interrupted.into());
            }
            let ok = ds.iter().take_while(|d| d.dest.port() != 1003).count();
            seen.extend(ds[..ok].iter().map(number));
            match ok {
                0 => Err(io::Error::from_raw_os_error(22)),
                k => Ok(k),
            }
        })
        .unwrap();
        let want: Vec<u32> = (0..40).filter(|i| i % 7 != 3).collect();
        assert_eq!(seen, want);
        assert_eq!(b.take_failed(), 40 - want.len() as u64);
        assert_eq!(b.take_failed(), 0);
        // A kernel that claims nothing sent (or more than asked) cannot make a flush spin.
        let mut b = batch_of(3);
        b.flush_through(|ds| Ok(if ds.len() == 2 { 0 } else { ds.len() + 1 }))
            .unwrap();
        assert_eq!(b.take_failed(), 3);
    }

    #[test]
    fn the_batch_is_bounded_in_datagrams_and_bytes() {
        let mut b = SendBatch::new();
        for _ in 0..SEND_QUEUE {
            assert!(b.push(&[1; 16], to(1), None));
        }
        assert!(!b.has_room(1, 0));
        assert!(!b.push(&[1], to(1), None));
        let mut b = SendBatch::new();
        let big = vec![0u8; SEND_QUEUE_BYTES / 4];
        for _ in 0..4 {
            assert!(b.push(&big, to(1), None));
        }
        assert!(!b.push(&[1], to(1), None));
        assert_eq!(b.len(), 4);
    }
}

/// The real system call on loopback sockets.
#[cfg(all(test, any(target_os = "linux", target_os = "android")))]
mod socket_tests {
    use super::*;
    use crate::udp::{bind_udp, bind_udp_with_buffer, reply_source};
    use std::time::Duration;

    /// A sending socket bound to `addr`, as the driver prepares it.
    fn sender(addr: &str) -> (UdpSocket, UdpSocketState, bool) {
        let bound = bind_udp(addr.parse().unwrap()).unwrap();
        let state = UdpSocketState::new((&bound.socket).into()).unwrap();
        (
            UdpSocket::from_std(bound.socket).unwrap(),
            state,
            bound.dual_stack,
        )
    }

    /// A receiver with a receive buffer that holds everything a test sends.
    fn receiver(ip: &str) -> UdpSocket {
        let bound = bind_udp_with_buffer(SocketAddr::new(ip.parse().unwrap(), 0), 8 << 20).unwrap();
        UdpSocket::from_std(bound.socket).unwrap()
    }

    /// `n` datagrams from `sock`, with the addresses they came from (five seconds at most).
    async fn recv_n(sock: &UdpSocket, n: usize) -> Vec<(Vec<u8>, SocketAddr)> {
        let mut out = Vec::new();
        let mut buf = [0u8; 2048];
        while out.len() < n {
            match tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf)).await {
                Ok(Ok((len, from))) => out.push((buf[..len].to_vec(), from)),
                _ => panic!("received {} of {n} datagrams", out.len()),
            }
        }
        out
    }

    #[tokio::test]
    async fn every_datagram_of_a_batch_leaves_from_its_own_source_address() {
        // Linux routes all of 127/8 to `lo`, so 127.0.0.2 and 127.0.0.3 are local addresses
        // nothing configures; toward 127.0.0.1 the OS itself chooses 127.0.0.1. Datagrams with
        // different sources alternate inside each `sendmmsg` call, to three receivers; one in
        // the middle goes to port 0, which the kernel refuses (EINVAL).
        let sources = [
            Some("127.0.0.2"),
            Some("127.0.0.3"),
            None,
            Some("127.0.0.1"),
        ];
        for (bind, v4_form) in [("0.0.0.0:0", true), ("[::]:0", false)] {
            let (sock, state, dual_stack) = sender(bind);
            assert_eq!(dual_stack, !v4_form);
            let receivers = [
                receiver("127.0.0.1"),
                receiver("127.0.0.1"),
                receiver("127.0.0.1"),
            ];
            let mut batch = SendBatch::new();
            let n = 2 * MAX_MESSAGES + 10;
            let mut want: Vec<Vec<(Vec<u8>, SocketAddr)>> = vec![Vec::new(); 3];
            for i in 0..n {
                let r = &receivers[i % 3];
                let dest = r.local_addr().unwrap();
                let src = sources[i % sources.len()].map(|s| s.parse::<IpAddr>().unwrap());
                let contents = format!("datagram {i}").into_bytes();
                let (dest_form, src_form) = if dual_stack {
                    (
                        shipworm_tunnel::wire::addr::to_dual_stack(dest),
                        src.and_then(|ip| reply_source(ip, dest, true)),
                    )
                } else {
                    (dest, src)
                };
                assert!(batch.push(&contents, dest_form, src_form));
                let from_port = sock.local_addr().unwrap().port();
                let from_ip = src.unwrap_or(IpAddr::from([127, 0, 0, 1]));
                want[i % 3].push((contents, SocketAddr::new(from_ip, from_port)));
                if i == MAX_MESSAGES / 2 {
                    let refused = SocketAddr::from(([127, 0, 0, 1], 0));
                    let refused = if dual_stack {
                        shipworm_tunnel::wire::addr::to_dual_stack(refused)
                    } else {
                        refused
                    };
                    assert!(batch.push(b"refused", refused, None));
                }
            }
            batch.flush(&sock, &state).await;
            assert!(batch.is_empty());
            assert_eq!(batch.take_failed(), 1, "{bind}: the datagram to port 0");
            for (r, want) in receivers.iter().zip(want) {
                let got = recv_n(r, want.len()).await;
                assert_eq!(
                    got, want,
                    "{bind}: datagrams in order, each from its source"
                );
            }
        }
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_socket_buffer_loses_nothing() {
        // The smallest send buffer the kernel allows (a few KiB) against hundreds of KiB in one
        // flush, to two receivers whose buffers hold it all.
        let (sock, state, _) = sender("127.0.0.1:0");
        socket2::SockRef::from(&sock)
            .set_send_buffer_size(1)
            .unwrap();
        let sndbuf = socket2::SockRef::from(&sock).send_buffer_size().unwrap();
        let receivers = [receiver("127.0.0.1"), receiver("127.0.0.1")];
        let rcvbuf = socket2::SockRef::from(&receivers[0])
            .recv_buffer_size()
            .unwrap();
        // Each 1200-byte datagram costs the receiver some 2.3 KiB of buffer (Linux reports
        // twice the usable size): stay well inside.
        let n = (rcvbuf / 2 / 4096).min(600);
        let datagram = |i: usize| {
            let mut d = vec![(i % 251) as u8; 1200];
            d[..4].copy_from_slice(&(i as u32).to_be_bytes());
            d
        };
        assert!(
            n * 1200 > 10 * sndbuf,
            "{n} datagrams against a {sndbuf}-byte buffer"
        );
        let mut batch = SendBatch::new();
        for i in 0..n {
            let dest = receivers[i % 2].local_addr().unwrap();
            if !batch.has_room(1, 1200) {
                batch.flush(&sock, &state).await;
            }
            assert!(batch.push(&datagram(i), dest, Some(IpAddr::from([127, 0, 0, 1]))));
        }
        batch.flush(&sock, &state).await;
        assert_eq!(batch.take_failed(), 0);
        for (k, r) in receivers.iter().enumerate() {
            let got: Vec<Vec<u8>> = recv_n(r, (k..n).step_by(2).count())
                .await
                .into_iter()
                .map(|(d, _)| d)
                .collect();
            let want: Vec<Vec<u8>> = (k..n).step_by(2).map(datagram).collect();
            assert_eq!(got.len(), want.len());
            assert!(got == want, "receiver {k}: every datagram, in order");
        }
    }
}
