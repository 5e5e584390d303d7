//! The send path: local IPv6 packets, probes, adverts and closes, sealed with the peer's
//! current session; packets wait (bounded) for a handshake, and use rekeys the session.

use std::net::SocketAddr;
use std::time::Instant;

use super::peers::traffic_of;
use super::{usable, Event, SendError, Tunnel, MAX_PENDING_PACKETS, SEND_HEADROOM};
use crate::identity::NodeId;
use crate::wire::frame::Frame;
use crate::wire::{ipv6, packet};

impl Tunnel {
    /// Sends one IPv6 packet from the local side to the peer owning its destination address.
    pub fn send_ip(&mut self, now: Instant, unix_ms: u64, packet: &[u8]) -> Result<(), SendError> {
        let id = self.route(packet)?;
        self.send_inner(now, unix_ms, id, Frame::Data(packet));
        Ok(())
    }

    /// As [`Tunnel::send_ip`], for a packet built after [`SEND_HEADROOM`] bytes of room in a
    /// buffer that the tunnel takes: it is sealed in place and leaves in the same buffer, saving
    /// the copy `send_ip` makes. A refused packet's buffer goes to the pool.
    pub fn send_ip_in(
        &mut self,
        now: Instant,
        unix_ms: u64,
        buf: Vec<u8>,
    ) -> Result<(), SendError> {
        let Some(packet) = buf.get(SEND_HEADROOM..) else {
            self.recycle(buf);
            return Err(SendError::BadPacket(
                "no room for the tunnel's header".into(),
            ));
        };
        let id = match self.route(packet) {
            Ok(id) => id,
            Err(e) => {
                self.recycle(buf);
                return Err(e);
            }
        };
        let endpoint = self
            .peers
            .get(&id)
            .and_then(|p| p.endpoint.map(|e| (p.endpoint_local, e)));
        let buf = match endpoint {
            Some((local, to)) => match self.seal_buf_to(now, id, local, to, buf, false) {
                Ok(()) => {
                    self.stats.packets_out += 1;
                    self.maybe_rekey(now, unix_ms, id);
                    return Ok(());
                }
                Err(buf) => buf,
            },
            None => buf,
        };
        // No usable session or path yet: the copying path queues it and starts a handshake.
        self.send_inner(now, unix_ms, id, Frame::Data(&buf[SEND_HEADROOM..]));
        self.recycle(buf);
        Ok(())
    }

    /// The peer a local packet goes to, after the checks every local packet passes (our source
    /// address, the MTU: an ICMPv6 Packet Too Big goes back for a larger one).
    fn route(&mut self, packet: &[u8]) -> Result<NodeId, SendError> {
        let header = ipv6::parse_header(packet).map_err(|e| SendError::BadPacket(e.to_string()))?;
        if header.src != self.overlay {
            return Err(SendError::BadPacket(format!(
                "source {} is not our overlay address {}",
                header.src, self.overlay
            )));
        }
        if packet.len() > self.config.mtu {
            if let Some(ptb) = ipv6::packet_too_big(packet, self.config.mtu as u32, self.overlay) {
                self.push_event(Event::Local(ptb));
            }
            return Err(SendError::TooBig {
                size: packet.len(),
                mtu: self.config.mtu,
            });
        }
        self.by_overlay
            .get(&header.dst)
            .copied()
            .ok_or(SendError::NoPeer(header.dst))
    }

    /// Sends our current flags and candidates to `peer` at `to` from socket `local` (trickle).
    pub fn send_advert(&mut self, now: Instant, peer: NodeId, local: u16, to: SocketAddr) -> bool {
        let advert = self.advert.clone();
        self.seal_to(now, peer, local, to, &Frame::Advert(advert))
    }

    /// Sends a probe to `peer` at `to` (a path check); the answer comes as [`Event::ProbeAnswer`].
    pub fn send_probe(&mut self, now: Instant, peer: NodeId, to: SocketAddr, tx: u64) -> bool {
        self.send_probe_via(now, peer, 0, to, tx)
    }

    /// As [`Tunnel::send_probe`], from our socket `local`.
    pub fn send_probe_via(
        &mut self,
        now: Instant,
        peer: NodeId,
        local: u16,
        to: SocketAddr,
        tx: u64,
    ) -> bool {
        self.seal_to(now, peer, local, to, &Frame::Probe { tx })
    }

    /// Closes the session with `peer` (tells it, forgets the keys).
    pub fn close(&mut self, now: Instant, peer: NodeId) {
        if let Some((local, to)) = self
            .peers
            .get(&peer)
            .and_then(|p| p.endpoint.map(|e| (p.endpoint_local, e)))
        {
            self.seal_to(now, peer, local, to, &Frame::Close);
        }
        self.forget_sessions(peer);
    }

    pub(super) fn flush_queued(&mut self, now: Instant, unix_ms: u64, id: NodeId) -> bool {
        let Some(peer) = self.peers.get_mut(&id) else {
            return false;
        };
        let queued: Vec<Vec<u8>> = peer.queued.drain(..).collect();
        let any = !queued.is_empty();
        for p in queued {
            self.send_inner(now, unix_ms, id, Frame::Data(&p));
        }
        any
    }

    pub(super) fn send_inner(&mut self, now: Instant, unix_ms: u64, id: NodeId, inner: Frame<'_>) {
        let endpoint = self
            .peers
            .get(&id)
            .and_then(|p| p.endpoint.map(|e| (p.endpoint_local, e)));
        if let Some((local, to)) = endpoint {
            if self.seal_to(now, id, local, to, &inner) {
                if matches!(inner, Frame::Data(_)) {
                    self.stats.packets_out += 1;
                }
                self.maybe_rekey(now, unix_ms, id);
                return;
            }
        }
        // No usable session or no endpoint yet: hold data packets (bounded), and make sure a
        // handshake is running unless a session merely waits for its path.
        let has_session = self.is_established(&id, now);
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if let Frame::Data(p) = inner {
            if peer.queued.len() >= MAX_PENDING_PACKETS {
                peer.queued.pop_front();
                self.stats.queue_overflow += 1;
            }
            peer.queued.push_back(p.to_vec());
        }
        if peer.pending.is_none() && !(has_session && peer.endpoint.is_none()) {
            let endpoints = peer.endpoint.into_iter().collect();
            self.initiate(now, unix_ms, id, endpoints);
        }
    }

    /// Seals `inner` with the current session and sends it to `to`. False if no usable session.
    pub(super) fn seal_to(
        &mut self,
        now: Instant,
        id: NodeId,
        local: u16,
        to: SocketAddr,
        inner: &Frame<'_>,
    ) -> bool {
        // Framed straight into the datagram's buffer and sealed in place.
        let mut out = self.pool.pop().unwrap_or_default();
        out.clear();
        out.resize(packet::TRANSPORT_HEADER_LEN, 0);
        inner.emit(&mut out);
        let answer = matches!(inner, Frame::ProbeAnswer { .. });
        match self.seal_buf_to(now, id, local, to, out, answer) {
            Ok(()) => true,
            Err(out) => {
                self.recycle(out);
                false
            }
        }
    }

    /// Seals the frame in `out` (after [`packet::TRANSPORT_HEADER_LEN`] bytes of room) with the
    /// current session, in place, and sends it to `to`; gives `out` back if there is no usable
    /// session. `answer`: the frame is a probe answer (counted as one).
    fn seal_buf_to(
        &mut self,
        now: Instant,
        id: NodeId,
        local: u16,
        to: SocketAddr,
        mut out: Vec<u8>,
        answer: bool,
    ) -> Result<(), Vec<u8>> {
        let config = &self.config;
        let Some(peer) = self.peers.get_mut(&id) else {
            return Err(out);
        };
        let Some(s) = peer.current.as_mut().filter(|s| usable(config, s, now)) else {
            return Err(out);
        };
        s.seal_in_place(&mut out);
        peer.last_sent = Some(now);
        if let Some(t) = traffic_of(&mut peer.traffic, to) {
            t.packets_out += 1;
            t.bytes_out += out.len() as u64;
            if answer {
                t.answers_out += 1;
            }
        }
        self.push_transmit_via(local, to, out);
        Ok(())
    }

    pub(super) fn maybe_rekey(&mut self, now: Instant, unix_ms: u64, id: NodeId) {
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        let Some(s) = peer.current.as_ref() else {
            return;
        };
        let old =
            now.saturating_duration_since(s.created) >= self.config.rekey_after_time && s.initiator;
        let used = worn_out(&self.config, s);
        if (old || used) && peer.pending.is_none() {
            let endpoints = peer.endpoint.into_iter().collect();
            self.initiate(now, unix_ms, id, endpoints);
        }
    }
}

/// Whether session `s` has sealed enough packets to want new keys: the configured count, or
/// half the cipher's limit if lower (AES-GCM: 2^28), so the new session is ready well before
/// the old one must stop at the limit.
pub(super) fn worn_out(config: &crate::tunnel::TunnelConfig, s: &crate::session::Session) -> bool {
    s.sent()
        >= config
            .rekey_after_messages
            .min(s.cipher.message_limit() / 2)
}
