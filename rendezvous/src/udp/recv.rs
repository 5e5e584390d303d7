//! Batched receives: `recvmmsg` through quinn-udp into buffers large enough for a GRO train, with
//! the local address every datagram arrived at (`IP_PKTINFO` / `IPV6_PKTINFO`).

use std::io::{self, IoSliceMut};

use quinn_udp::{RecvMeta, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// Receive buffers per `recvmmsg`.
pub const RECV_BATCH: usize = 32;

/// Receive buffers for one socket's `recvmmsg` batches.
#[derive(Debug)]
pub struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    meta: Vec<RecvMeta>,
    /// Buffers the last receive filled.
    len: usize,
}

impl RecvBatch {
    /// Buffers for a socket prepared by `state`: 64 KiB each where the socket has GRO (one train
    /// fills up to that), else 2 KiB (one datagram; the rendezvous protocol's are at most 1280).
    pub fn new(state: &UdpSocketState) -> Self {
        let len = if state.gro_segments() > 1 {
            65_536
        } else {
            2048
        };
        Self {
            bufs: vec![vec![0u8; len]; RECV_BATCH],
            meta: vec![RecvMeta::default(); RECV_BATCH],
            len: 0,
        }
    }

    /// One `recvmmsg` on `socket`: how many buffers it filled, or `WouldBlock` when nothing waits.
    pub fn try_recv(&mut self, socket: &UdpSocket, state: &UdpSocketState) -> io::Result<usize> {
        self.len = 0;
        let mut iovs: Vec<IoSliceMut<'_>> =
            self.bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let meta = &mut self.meta;
        let n = socket.try_io(Interest::READABLE, || {
            state.recv(socket.into(), &mut iovs, meta)
        })?;
        self.len = n.min(RECV_BATCH);
        Ok(self.len)
    }

    /// The datagrams of the last receive, GRO trains split at their stride, each with its
    /// metadata (`addr` the sender, `dst_ip` the local address it arrived at).
    pub fn datagrams(&self) -> impl Iterator<Item = (&RecvMeta, &[u8])> {
        self.meta[..self.len]
            .iter()
            .zip(&self.bufs)
            .flat_map(|(m, buf)| {
                let data = &buf[..m.len.min(buf.len())];
                let stride = if m.stride == 0 { data.len() } else { m.stride };
                data.chunks(stride.max(1)).map(move |d| (m, d))
            })
    }
}
