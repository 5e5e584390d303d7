//! TUN mode (Linux first): the interface that carries our overlay address. The node's driver
//! pumps packets between it and the UDP socket through the protocol state machines.
//!
//! The interface gets our overlay address with the overlay's /48 prefix, so the kernel routes the
//! whole overlay into it; its MTU is the tunnel's inner MTU. Which peers may send into it is the
//! tunnel's [`shipworm_tunnel::tunnel::Accept`] policy.
//!
//! # Offloads
//!
//! With offloads on (the default), the interface speaks the virtio-net header (`IFF_VNET_HDR`):
//! - **out** (TSO): the kernel hands over a TCP or UDP segment of up to 64 KiB in one read, with
//!   its segment size; it is split here (`tun_rs`'s `gso_split`, checksums included) into
//!   packets of at most the interface's MTU, each after room for the tunnel's header, and the
//!   tunnel seals each in its buffer as one datagram (no copy but the first of a read's). The split is the
//!   kernel's own segmentation moved into userspace, so the inner MTU semantics hold: no packet
//!   over the MTU leaves, and one that would be (a raw socket ignoring the MTU) still gets its
//!   ICMPv6 Packet Too Big from the tunnel.
//! - **in** (GRO): the packets one receive batch opens are coalesced per TCP/UDP flow
//!   (`tun_rs`'s GRO table) and written as a few large segments, so the kernel's stack runs once
//!   per segment rather than once per packet. The tunnel opens each packet after room for the
//!   virtio-net header, and it is written from that buffer: only the first packet of each flow in
//!   a batch, the head the others are coalesced into, is copied into a buffer with room for a
//!   64 KiB segment.
//!
//! One read of 64 KiB and one write of several packets replace about fifty system calls each
//! way. Where the kernel refuses the offload, the interface is opened without it and every read
//! and write is one packet, as before.

use std::io;
use std::net::Ipv6Addr;

use tun_rs::{
    AsyncDevice, DeviceBuilder, ExpandBuffer, GROTable, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN,
};

use shipworm_tunnel::overlay;
use shipworm_tunnel::tunnel::{Inbound, SEND_HEADROOM};

/// Room in front of a packet written to the interface, for the virtio-net header: the driver
/// has the tunnel open packets after this much ([`TunIo::queue_opened`]).
pub const HEADROOM: usize = VIRTIO_NET_HDR_LEN;
/// Largest read: the virtio-net header and a 64 KiB segment.
const MAX_READ: usize = VIRTIO_NET_HDR_LEN + 65_535;
/// Packets split from reads per wake-up: the driver stops reading once past it (one read more
/// adds at most a batch of 128), enough for a few 64 KiB segments and well under the engine's
/// transmit queue.
pub const READ_BUDGET: usize = 256;
/// Packets written per batch at most (the driver flushes when this many are queued): the GRO
/// table's size, and the bound of the write buffers kept.
pub const WRITE_BATCH: usize = IDEAL_BATCH_SIZE;
/// Large write buffers kept for the packets that may head a coalesced segment. Memory: each has
/// room for 64 KiB, and what is resident is what coalesced segments filled (at most 8 MiB).
const POOL: usize = WRITE_BATCH;
/// Flows told apart per write batch: a packet of a flow past these is written from the buffer it
/// was opened in all the same (its buffer grows if a segment is coalesced into it).
const BATCH_FLOWS: usize = 16;
/// Capacity of a write buffer: a coalesced segment of 64 KiB, with the headroom the GRO code
/// asks for.
const WRITE_CAPACITY: usize = 2 * HEADROOM + 65_535;
/// Room behind a packet read, for what sealing adds (the AEAD tag; the QUIC pipe reserves the
/// same), so the datagram grows in place.
const SEAL_TAILROOM: usize = 48;
/// Read buffers kept for reuse (sent datagrams come back as read buffers): a wake-up's reads.
const SPARE_READ_BUFFERS: usize = READ_BUDGET + IDEAL_BATCH_SIZE;

/// A packet of the last read, as [`TunIo::take_packets`] hands it over.
pub enum ReadPacket<'a> {
    /// In a buffer of its own, after [`SEND_HEADROOM`] bytes of room: for
    /// [`shipworm_tunnel::tunnel::Tunnel::send_ip_in`], which seals it where it is.
    InPlace(Vec<u8>),
    /// In the read buffer of a packet that was not split (it may be up to 64 KiB: an oversize
    /// packet is read whole, to be answered with Packet Too Big): sealed from a copy.
    Borrowed(&'a [u8]),
}

/// Creates and brings up a TUN interface named `name` with `addr`/48 and `mtu`, with
/// segmentation offloads when `offload` and the kernel allows them. Needs CAP_NET_ADMIN and
/// `/dev/net/tun`.
pub fn open_tun(name: &str, addr: Ipv6Addr, mtu: u16, offload: bool) -> io::Result<AsyncDevice> {
    let build = |offload: bool| {
        DeviceBuilder::new()
            .name(name)
            .ipv6(addr, overlay::PREFIX_LEN)
            .mtu(mtu)
            .offload(offload)
            .build_async()
    };
    let dev = match build(offload) {
        Ok(dev) => Ok(dev),
        Err(e) if offload => {
            tracing::warn!(target: "shipworm::io::tun", "TUN offloads refused ({e}): one packet per read and write");
            build(false)
        }
        Err(e) => Err(e),
    };
    dev.map_err(|e| io::Error::new(e.kind(), format!("cannot create TUN interface {name}: {e} (needs root or CAP_NET_ADMIN, and /dev/net/tun)")))
}

/// Batched reads from and writes to a TUN interface, with its buffers.
pub struct TunIo<'a> {
    dev: &'a AsyncDevice,
    /// One raw read (virtio-net header and segment).
    raw: Vec<u8>,
    /// The packets the last reads were split into, each after [`SEND_HEADROOM`] bytes, and
    /// their sizes.
    segments: Vec<Vec<u8>>,
    /// Length of the read buffers from the second on: the headroom and a packet of the MTU.
    segment_len: usize,
    /// Buffers of sent datagrams, for the next reads.
    spare: Vec<Vec<u8>>,
    sizes: Vec<usize>,
    /// How many of `segments` hold packets.
    read: usize,
    /// Packets to write, each after [`HEADROOM`] bytes.
    out: Vec<WriteBuf>,
    /// Large write buffers ([`POOL`]).
    pool: Vec<Vec<u8>>,
    /// Buffers written, to give back to the engine ([`TunIo::give_back`]).
    written: Vec<Vec<u8>>,
    /// Whether the interface coalesces (offloads on), and the flows of the batch queued so far.
    coalesces: bool,
    flows: Vec<FlowKey>,
    gro: GROTable,
    /// Packets written from the buffer the tunnel opened them in, with no copy.
    pub written_in_place: u64,
    /// Reads that brought one large segment split into several packets.
    pub large_reads: u64,
    /// Reads whose offload header or segment could not be used (dropped, counted).
    pub bad_reads: u64,
}

impl<'a> TunIo<'a> {
    /// Buffers for `dev`, whose MTU is `mtu` (no packet read from it is larger: a segment is
    /// split into packets of the MTU).
    pub fn new(dev: &'a AsyncDevice, mtu: u16) -> Self {
        // The first buffer takes a packet that is not split whole, even one over the MTU (the
        // interface's MTU changed behind our back): the tunnel answers it with Packet Too Big
        // rather than the read cutting it short.
        // The others hold one packet of the MTU each, after room for the tunnel's header and
        // with room behind for its tag: the tunnel seals them in place.
        let segment_len = SEND_HEADROOM + usize::from(mtu).max(1280);
        let mut segments: Vec<Vec<u8>> = (0..IDEAL_BATCH_SIZE)
            .map(|_| read_buffer(Vec::new(), segment_len))
            .collect();
        segments[0] = vec![0; SEND_HEADROOM + MAX_READ];
        Self {
            dev,
            raw: vec![0; MAX_READ],
            segments,
            segment_len,
            spare: Vec::new(),
            sizes: vec![0; IDEAL_BATCH_SIZE],
            read: 0,
            out: Vec::with_capacity(IDEAL_BATCH_SIZE),
            pool: Vec::new(),
            written: Vec::new(),
            coalesces: dev.tcp_gso(),
            flows: Vec::with_capacity(BATCH_FLOWS),
            gro: GROTable::default(),
            written_in_place: 0,
            large_reads: 0,
            bad_reads: 0,
        }
    }

    /// Waits for the interface to have a packet and reads it (split if it is a large segment);
    /// [`TunIo::packets`] gives them. A read the offload code cannot use is counted and reads as
    /// no packets; an error of the device itself is returned.
    pub async fn read(&mut self) -> io::Result<()> {
        let r = self
            .dev
            .recv_multiple(
                &mut self.raw,
                &mut self.segments,
                &mut self.sizes,
                SEND_HEADROOM,
            )
            .await;
        self.took(r)
    }

    /// One more read without waiting: `Ok(false)` when nothing is waiting.
    pub fn try_read(&mut self) -> io::Result<bool> {
        let r = self.dev.try_recv_multiple(
            &mut self.raw,
            &mut self.segments,
            &mut self.sizes,
            SEND_HEADROOM,
        );
        match r {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            r => self.took(r).map(|()| true),
        }
    }

    fn took(&mut self, r: io::Result<usize>) -> io::Result<()> {
        self.read = 0;
        match r {
            Ok(n) => {
                self.read = n;
                if n > 1 {
                    self.large_reads += 1;
                }
                Ok(())
            }
            // The device's own errors carry an OS code; the offload code's (a header or segment
            // it cannot split) do not, and cost only that read.
            Err(e) if e.raw_os_error().is_none() => {
                self.bad_reads += 1;
                tracing::debug!(target: "shipworm::io::tun", "unusable TUN read: {e}");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Hands over the packets of the last read, in order, each to `each`; returns how many. All
    /// but the first leave in their read buffers (the tunnel seals them in place), which are
    /// replaced from the spare ones ([`TunIo::recycle`]).
    pub fn take_packets(&mut self, mut each: impl FnMut(ReadPacket<'_>)) -> usize {
        let read = std::mem::take(&mut self.read);
        if read > 0 {
            let first = &self.segments[0];
            let end = (SEND_HEADROOM + self.sizes[0]).min(first.len());
            each(ReadPacket::Borrowed(&first[SEND_HEADROOM..end]));
        }
        for i in 1..read {
            let size = (SEND_HEADROOM + self.sizes[i]).min(self.segments[i].len());
            let fresh = read_buffer(self.spare.pop().unwrap_or_default(), self.segment_len);
            let mut packet = std::mem::replace(&mut self.segments[i], fresh);
            packet.truncate(size);
            each(ReadPacket::InPlace(packet));
        }
        read
    }

    /// Takes back the buffer of a sent datagram for a later read; returns it if it is not
    /// wanted (enough are kept, or it is too small to grow into a read buffer in place).
    pub fn recycle(&mut self, buf: Vec<u8>) -> Option<Vec<u8>> {
        if self.spare.len() < SPARE_READ_BUFFERS
            && buf.capacity() >= self.segment_len + SEAL_TAILROOM
        {
            self.spare.push(buf);
            return None;
        }
        Some(buf)
    }

    /// Queues a copy of `packet` for the next [`TunIo::flush`], in a large buffer: it may head a
    /// coalesced segment.
    pub fn queue(&mut self, packet: &[u8]) {
        let mut buf = self
            .pool
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(WRITE_CAPACITY));
        buf.clear();
        buf.resize(HEADROOM, 0);
        buf.extend_from_slice(packet);
        self.out.push(WriteBuf(buf));
    }

    /// Queues a packet the tunnel opened for the next [`TunIo::flush`]. With [`HEADROOM`] bytes
    /// of room in front (the driver asks the tunnel for them), it is written from its own buffer;
    /// only the first packet of each flow in a batch, the one a segment is coalesced into, is
    /// copied into a large buffer. Returns the buffer when the packet was copied.
    pub fn queue_opened(&mut self, packet: Inbound) -> Option<Vec<u8>> {
        if packet.room() == HEADROOM && !self.is_new_flow(&packet) {
            self.written_in_place += 1;
            self.out.push(WriteBuf(packet.into_buffer()));
            return None;
        }
        self.queue(&packet);
        Some(packet.into_buffer())
    }

    /// Whether `packet` is the first of its TCP or UDP flow in this batch (so it is likely to
    /// head a coalesced segment); always false when the interface does not coalesce.
    fn is_new_flow(&mut self, packet: &[u8]) -> bool {
        if !self.coalesces {
            return false;
        }
        let Some(key) = flow_key(packet) else {
            return false;
        };
        if self.flows.contains(&key) {
            return false;
        }
        if self.flows.len() < BATCH_FLOWS {
            self.flows.push(key);
        }
        true
    }

    /// Packets queued and not yet written.
    pub fn queued(&self) -> usize {
        self.out.len()
    }

    /// Writes the queued packets, coalesced per flow where offloads are on. Returns how many
    /// may not have been written (a whole batch when a write of it failed).
    pub async fn flush(&mut self) -> u64 {
        if self.out.is_empty() {
            return 0;
        }
        let mut failed = 0;
        tracing::trace!(target: "shipworm::io::tun", packets = self.out.len(), "TUN write batch");
        if let Err(e) = self
            .dev
            .send_multiple(&mut self.gro, &mut self.out, HEADROOM)
            .await
        {
            // The device refused a write (the others of the batch were still written). Which
            // packets it carried is lost in the coalescing: the whole batch is counted, an upper
            // bound, and nothing is written twice.
            tracing::debug!(target: "shipworm::io::tun", "TUN write failed: {e}");
            failed = self.out.len() as u64;
        }
        self.flows.clear();
        for WriteBuf(buf) in self.out.drain(..) {
            if buf.capacity() >= WRITE_CAPACITY && self.pool.len() < POOL {
                self.pool.push(buf);
            } else {
                self.written.push(buf);
            }
        }
        failed
    }

    /// Hands the buffers of written packets to `f` (the engine takes them back for the next
    /// packets it opens).
    pub fn give_back(&mut self, f: impl FnMut(Vec<u8>)) {
        self.written.drain(..).for_each(f);
    }
}

/// A TCP or UDP flow of an IPv6 packet: next header, addresses and ports.
type FlowKey = [u8; 37];

fn flow_key(packet: &[u8]) -> Option<FlowKey> {
    const TCP: u8 = 6;
    const UDP: u8 = 17;
    let next = *packet.get(6)?;
    if packet.first()? >> 4 != 6 || !matches!(next, TCP | UDP) {
        return None;
    }
    let mut key = [0; 37];
    key[0] = next;
    key[1..].copy_from_slice(packet.get(8..44)?);
    Some(key)
}

/// A buffer written to the interface: a packet after [`HEADROOM`] bytes. The GRO code coalesces
/// only into a buffer with room for a 64 KiB segment; this one says it has that room whatever it
/// was allocated with, and grows to it the first time a packet is coalesced into it. So a packet
/// opened into a buffer of its own size is written from it, and the rare one that heads a segment
/// unforeseen ([`TunIo::queue_opened`] foresees the first of each flow) costs one reallocation.
struct WriteBuf(Vec<u8>);

impl WriteBuf {
    fn make_room(&mut self, len: usize) {
        if len > self.0.capacity() {
            self.0.reserve_exact(len.max(WRITE_CAPACITY) - self.0.len());
        }
    }
}

impl AsRef<[u8]> for WriteBuf {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl AsMut<[u8]> for WriteBuf {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

impl ExpandBuffer for WriteBuf {
    fn buf_capacity(&self) -> usize {
        self.0.capacity().max(WRITE_CAPACITY)
    }

    fn buf_resize(&mut self, new_len: usize, value: u8) {
        self.make_room(new_len);
        self.0.resize(new_len, value);
    }

    fn buf_extend_from_slice(&mut self, src: &[u8]) {
        self.make_room(self.0.len() + src.len());
        self.0.extend_from_slice(src);
    }
}

/// `buf` made a read buffer of `len` bytes, with [`SEAL_TAILROOM`] behind them. What it held is
/// not cleared (a read overwrites what it hands over): a sent datagram is about as long already,
/// so reuse costs no pass over the bytes.
fn read_buffer(mut buf: Vec<u8>, len: usize) -> Vec<u8> {
    buf.reserve_exact((len + SEAL_TAILROOM).saturating_sub(buf.len()));
    buf.truncate(len);
    buf.resize(len, 0);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv6(next: u8, src: u8, dst: u8, l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&[src; 16]);
        p.extend_from_slice(&[dst; 16]);
        p.extend_from_slice(l4);
        p
    }

    /// The GRO code coalesces only into a buffer that says it has room for a 64 KiB segment: a
    /// packet in a buffer of its own size says so, and grows once, to that room, when a segment
    /// is coalesced into it; what it held stays.
    #[test]
    fn a_write_buffer_offers_room_for_a_segment_and_grows_to_it_once() {
        let packet: Vec<u8> = (0..1300u32).map(|i| i as u8).collect();
        let mut buf = vec![0; HEADROOM];
        buf.extend_from_slice(&packet);
        buf.shrink_to_fit();
        let mut w = WriteBuf(buf);
        assert!(w.0.capacity() < WRITE_CAPACITY);
        assert_eq!(w.buf_capacity(), WRITE_CAPACITY);
        w.buf_extend_from_slice(&[7; 1000]);
        assert!(w.0.capacity() >= WRITE_CAPACITY, "grown to the whole room");
        let grown = w.0.as_ptr();
        for _ in 0..40 {
            w.buf_extend_from_slice(&[7; 1000]);
        }
        w.buf_resize(w.0.len() + 500, 0);
        assert_eq!(w.0.as_ptr(), grown, "no reallocation after the first");
        assert_eq!(&w.as_ref()[HEADROOM..HEADROOM + packet.len()], &packet[..]);
        assert_eq!(w.as_ref().len(), HEADROOM + packet.len() + 41_000 + 500);
        // A large buffer reports what it has.
        let big = WriteBuf(Vec::with_capacity(2 * WRITE_CAPACITY));
        assert_eq!(big.buf_capacity(), big.0.capacity());
    }

    #[test]
    fn a_flow_is_told_by_protocol_addresses_and_ports() {
        let tcp = ipv6(6, 1, 2, &[0, 80, 1, 187, 9, 9, 9, 9]);
        let key = flow_key(&tcp).unwrap();
        // The same flow, another segment.
        assert_eq!(
            flow_key(&ipv6(6, 1, 2, &[0, 80, 1, 187, 5, 5, 5, 5])),
            Some(key)
        );
        // Another port, address, or protocol: another flow.
        assert_ne!(flow_key(&ipv6(6, 1, 2, &[0, 81, 1, 187])), Some(key));
        assert_ne!(flow_key(&ipv6(6, 3, 2, &[0, 80, 1, 187])), Some(key));
        assert_ne!(flow_key(&ipv6(17, 1, 2, &[0, 80, 1, 187])), Some(key));
        // No flow: ICMPv6, IPv4, or too short for the ports.
        assert_eq!(flow_key(&ipv6(58, 1, 2, &[128, 0, 0, 0])), None);
        assert_eq!(flow_key(&[0x45; 60]), None);
        assert_eq!(flow_key(&ipv6(6, 1, 2, &[0, 80])), None);
        assert_eq!(flow_key(&[]), None);
    }
}
