//! Transport receive: opening a TRANSPORT packet, following the peer's source, and acting on
//! the inner frame (`docs/protocol.md` §"Transport").

use std::net::SocketAddr;
use std::time::Instant;

use super::peers::traffic_of;
use super::{Event, Inbound, Tunnel};
use crate::session::OpenError;
use crate::wire::frame::Frame;
use crate::wire::payload::Advert;
use crate::wire::{ipv6, packet};

/// An inner frame once parsed, owning what it carries (a data frame's bytes stay in the buffer
/// it was opened into).
enum Inner {
    Keepalive,
    Data,
    Probe(u64),
    ProbeAnswer(u64, SocketAddr),
    Advert(Advert),
    Close,
}

impl Tunnel {
    /// A TRANSPORT packet: open it with the session its index names, follow or report its
    /// source, and act on the inner frame.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_transport(
        &mut self,
        now: Instant,
        local: u16,
        from: SocketAddr,
        receiver: u32,
        counter: u64,
        header: &[u8],
        sealed: &[u8],
    ) {
        let Some(id) = self.peer_of_index(receiver) else {
            return;
        };
        let reject = self.config.reject_after_time;
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let session = peer
            .current
            .iter_mut()
            .chain(peer.previous.iter_mut())
            .find(|s| s.local_index == receiver);
        let Some(session) = session else {
            self.stats.unknown_index += 1;
            return;
        };
        if now.saturating_duration_since(session.created) >= reject {
            self.stats.expired_session += 1;
            return;
        }
        // Opened into a buffer of its own, after the local writer's room: a data packet leaves
        // in it, without another copy.
        let room = self.receive_room;
        let mut plain = self.pool.pop().unwrap_or_default();
        match session.open_after(room, header, counter, sealed, &mut plain) {
            Ok(_) => {}
            Err(e) => {
                match e {
                    OpenError::Replayed => self.stats.replayed += 1,
                    OpenError::Decrypt => self.stats.decrypt_failed += 1,
                }
                self.recycle(plain);
                return;
            }
        }
        // Authenticated: follow the peer to where it is now (NAT rebinding, roaming), or tell
        // the path manager about the new source.
        let mut new_source = None;
        let on_endpoint = peer.endpoint == Some(from) && peer.endpoint_local == local;
        if self.config.follow_source {
            peer.endpoint = Some(from);
            peer.endpoint_local = local;
        } else if !on_endpoint
            && peer.reported_source.is_none_or(|(l, f, at)| {
                (l, f) != (local, from)
                    || now.saturating_duration_since(at) >= super::SOURCE_REPORT_INTERVAL
            })
        {
            peer.reported_source = Some((local, from, now));
            new_source = Some(from);
        }
        // Parsed once; a data frame is judged while `plain` is borrowed, then leaves in it.
        let (frame, verdict) = match Frame::parse(&plain[room..]) {
            Ok(Frame::Data(ip)) => (
                Ok(Inner::Data),
                Some(ipv6::check_inbound(ip, peer.overlay, self.overlay)),
            ),
            Ok(Frame::Keepalive) => (Ok(Inner::Keepalive), None),
            Ok(Frame::Probe { tx }) => (Ok(Inner::Probe(tx)), None),
            Ok(Frame::ProbeAnswer { tx, observed }) => (Ok(Inner::ProbeAnswer(tx, observed)), None),
            Ok(Frame::Advert(advert)) => (Ok(Inner::Advert(advert)), None),
            Ok(Frame::Close) => (Ok(Inner::Close), None),
            Err(e) => (Err(e), None),
        };
        let len = (packet::TRANSPORT_HEADER_LEN + sealed.len()) as u64;
        peer.bytes_in += len;
        if let Some(t) = traffic_of(&mut peer.traffic, from) {
            t.packets_in += 1;
            t.bytes_in += len;
            if matches!(frame, Ok(Inner::Probe(_))) {
                t.probes_in += 1;
            }
        }
        let peer_id = peer.id;
        if std::mem::take(&mut peer.advert_owed) {
            let advert = self.advert.clone();
            self.seal_to(now, peer_id, local, from, &Frame::Advert(advert));
        }
        if let Some(from) = new_source {
            self.push_event(Event::Source {
                peer: peer_id,
                from,
                local,
            });
        }
        if let Some(verdict) = verdict {
            match verdict {
                ipv6::InboundVerdict::Accept => {
                    self.stats.packets_in += 1;
                    self.push_event(Event::Packet {
                        peer: peer_id,
                        packet: Inbound::new(plain, room),
                    });
                    return;
                }
                ipv6::InboundVerdict::WrongSource => self.stats.spoofed_source += 1,
                ipv6::InboundVerdict::WrongDestination => self.stats.wrong_destination += 1,
                ipv6::InboundVerdict::Malformed(_) => self.stats.bad_inner += 1,
            }
            self.recycle(plain);
            return;
        }
        match frame {
            // Data was judged above.
            Ok(Inner::Keepalive | Inner::Data) => {}
            Ok(Inner::Probe(tx)) => {
                self.seal_to(
                    now,
                    id,
                    local,
                    from,
                    &Frame::ProbeAnswer { tx, observed: from },
                );
            }
            Ok(Inner::ProbeAnswer(tx, observed)) => self.push_event(Event::ProbeAnswer {
                peer: id,
                tx,
                observed,
                from,
                local,
            }),
            Ok(Inner::Advert(advert)) => {
                if let Some(p) = self.peers.get_mut(&id) {
                    p.candidates = advert.candidates.clone();
                }
                self.push_event(Event::Advert { peer: id, advert });
            }
            Ok(Inner::Close) => {
                self.forget_sessions(id);
                self.push_event(Event::Closed { peer: id });
            }
            Err(_) => self.stats.bad_inner += 1,
        }
        self.recycle(plain);
    }
}
