//! Handshakes: starting and retrying our own (message 1), answering the peer's (message 2,
//! cookies under load) and installing the session either way (`docs/protocol.md`
//! §"Handshake").

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::admission::Refusal;
use super::peers::Pending;
use super::{Accept, Event, SendError, Tunnel};
use crate::handshake::{self, Initiator, Responder};
use crate::identity::NodeId;
use crate::rng::RngCore;
use crate::session::{Cipher, Session};
use crate::wire::addr;
use crate::wire::frame::Frame;
use crate::wire::packet::{COOKIE_LEN, COOKIE_NONCE_LEN, MAC_LEN};
use crate::wire::payload::{Advert, InitPayload, FLAG_AES_GCM, MAX_CANDIDATES};

/// How long a cookie secret (and so a cookie) lives.
pub(super) const COOKIE_LIFETIME: Duration = Duration::from_secs(120);

impl Tunnel {
    /// Starts a handshake with `peer`, sending message 1 to each of `endpoints`. `unix_ms` is the
    /// wall clock for the message's timestamp. An [`Event::Initiation`] carries the packet for
    /// relaying.
    pub fn connect(
        &mut self,
        now: Instant,
        unix_ms: u64,
        peer: NodeId,
        endpoints: &[SocketAddr],
    ) -> Result<(), SendError> {
        if self.peer_entry(peer).is_none() {
            return Err(SendError::NoPeer(peer.overlay_addr()));
        }
        self.initiate(now, unix_ms, peer, endpoints.to_vec());
        Ok(())
    }

    /// Sends the running handshake's message 1 to more addresses of `peer` (learned late), and
    /// includes them in its retries.
    pub fn add_handshake_endpoints(&mut self, peer: NodeId, addrs: &[SocketAddr]) {
        let Some(pd) = self.peers.get_mut(&peer).and_then(|p| p.pending.as_mut()) else {
            return;
        };
        let mut fresh = Vec::new();
        for a in addrs.iter().map(|a| addr::normalize(*a)) {
            if !pd.endpoints.contains(&a) && pd.endpoints.len() < 2 * MAX_CANDIDATES {
                pd.endpoints.push(a);
                fresh.push(a);
            }
        }
        let packet = pd.packet.clone();
        for a in fresh {
            self.push_transmit(a, packet.clone());
        }
    }

    /// Starts a fresh handshake (new ephemeral key, new timestamp) with `id`.
    pub(super) fn initiate(
        &mut self,
        now: Instant,
        unix_ms: u64,
        id: NodeId,
        endpoints: Vec<SocketAddr>,
    ) {
        let backoff = (now, self.config.handshake_retry);
        self.initiate_with(now, unix_ms, id, endpoints, backoff);
    }

    /// As [`Tunnel::initiate`], continuing a retry schedule begun at `started`.
    pub(super) fn initiate_with(
        &mut self,
        now: Instant,
        unix_ms: u64,
        id: NodeId,
        endpoints: Vec<SocketAddr>,
        (started, retry): (Instant, Duration),
    ) {
        let index = self.fresh_index(id);
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        // Strictly increasing even within one millisecond or after the wall clock steps back.
        let timestamp_ms = unix_ms.max(peer.own_init_timestamp + 1);
        peer.own_init_timestamp = timestamp_ms;
        let payload = InitPayload {
            initiator: self.me,
            timestamp_ms,
            advert: self.advert.clone(),
        };
        let cookie = peer
            .cookie
            .filter(|(_, t)| now.saturating_duration_since(*t) < COOKIE_LIFETIME)
            .map(|(c, _)| c);
        let Ok((initiator, packet)) = Initiator::start_padded(
            &mut self.rng,
            &self.identity,
            &id,
            index,
            &payload,
            cookie.as_ref(),
            self.config.message_1_len,
        ) else {
            self.by_index.remove(&index);
            return;
        };
        if let Some(old) = peer.pending.take() {
            self.by_index.remove(&old.initiator.local_index);
        }
        let mut endpoints = endpoints;
        if let Some(e) = peer.endpoint.filter(|e| !endpoints.contains(e)) {
            endpoints.push(e);
        }
        peer.pending = Some(Pending {
            initiator,
            sent_flags: self.advert.flags,
            packet: packet.clone(),
            endpoints: endpoints.clone(),
            started,
            next_retry: now + retry,
            retry,
        });
        for e in endpoints {
            self.push_transmit(e, packet.clone());
        }
        self.push_event(Event::Initiation { peer: id, packet });
    }

    /// A HANDSHAKE_INIT: mac1, then under load a cookie (mac2) and the source's rate, all before
    /// any Diffie-Hellman; then Noise, the accept policy, freshness, replay and the peer's rate.
    /// Answered with one message 2, to where message 1 came from and nowhere else: the engine
    /// decides whether other addresses of the initiator may have a copy
    /// ([`Event::Response`]).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_init(
        &mut self,
        now: Instant,
        unix_ms: u64,
        from: SocketAddr,
        bytes: &[u8],
        sender: u32,
        noise: &[u8],
        mac1: [u8; MAC_LEN],
    ) {
        if !handshake::check_mac1(bytes, &self.me) {
            self.stats.bad_mac1 += 1;
            return;
        }
        if now.saturating_duration_since(self.cookie_rotated) >= COOKIE_LIFETIME {
            self.rng.fill_bytes(&mut self.cookie_secret[..]);
            self.cookie_rotated = now;
        }
        if self.under_load(now) {
            let cookie = self.cookie_for(from);
            if !handshake::check_mac2(bytes, &cookie) {
                self.stats.cookie_sent += 1;
                let reply =
                    handshake::cookie_reply(&mut self.rng, &self.me, sender, &mac1, &cookie);
                self.push_transmit(from, reply);
                return;
            }
            // mac2 proves the source address, so this budget is the sender's own.
            let (rate, burst) = (self.config.source_rate, self.config.source_burst);
            if !self.sources.allow(now, from.ip(), rate, burst) {
                self.stats.source_rate_limited += 1;
                return;
            }
        }
        let Ok(responder) = Responder::read(&mut self.rng, &self.identity, noise) else {
            self.stats.bad_handshake += 1;
            return;
        };
        let id = responder.payload.initiator;
        if let Accept::Only(allowed) = &self.config.accept {
            if !allowed.contains(&id) {
                self.stats.not_allowed += 1;
                return;
            }
        }
        let ts = responder.payload.timestamp_ms;
        if ts.abs_diff(unix_ms) > self.config.handshake_freshness.as_millis() as u64 {
            self.stats.stale_handshake += 1;
            return;
        }
        if self
            .peers
            .get(&id)
            .is_some_and(|p| ts <= p.last_init_timestamp)
        {
            self.stats.replayed_handshake += 1;
            return;
        }
        match self
            .init_cache
            .check(&id, ts, now, self.config.handshake_min_interval)
        {
            Some(Refusal::Replayed) => {
                self.stats.replayed_handshake += 1;
                return;
            }
            Some(Refusal::TooSoon) => {
                self.stats.peer_rate_limited += 1;
                return;
            }
            None => {}
        }
        if self.peer_entry(id).is_none() {
            return;
        }
        let index = self.fresh_index(id);
        // Message 2 is never larger than the message 1 it answers, so a host that spoofs message
        // 1's source gains nothing: candidates that do not fit follow in an ADVERT once the
        // initiator's first authentic packet proves its address (receive.rs).
        let mut ours = self.advert.clone();
        let owed = handshake::fit_response(&mut ours, bytes.len());
        let theirs = responder.payload.advert.clone();
        let Ok((reply, send, recv)) = responder.answer(index, sender, &ours) else {
            self.by_index.remove(&index);
            self.stats.bad_handshake += 1;
            return;
        };
        self.init_cache
            .record(id, ts, unix_ms, now, self.config.handshake_min_interval);
        let cipher = Cipher::agree(ours.flags, theirs.flags);
        let session = Session::new(index, sender, &send, &recv, now, false, cipher);
        self.install(now, id, session, from, theirs, ours.flags);
        if let Some(p) = self.peers.get_mut(&id) {
            p.last_init_timestamp = ts;
            p.advert_owed = owed;
        }
        self.push_transmit(from, reply.clone());
        self.push_event(Event::Response {
            peer: id,
            packet: reply,
        });
        self.flush_queued(now, unix_ms, id);
    }

    /// A HANDSHAKE_RESP to our running handshake: completes it and confirms at once.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_resp(
        &mut self,
        now: Instant,
        unix_ms: u64,
        from: SocketAddr,
        bytes: &[u8],
        sender: u32,
        receiver: u32,
        noise: &[u8],
    ) {
        if !handshake::check_mac1(bytes, &self.me) {
            self.stats.bad_mac1 += 1;
            return;
        }
        let Some(id) = self.peer_of_index(receiver) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(pending) = peer
            .pending
            .take_if(|p| p.initiator.local_index == receiver)
        else {
            self.stats.unknown_index += 1;
            return;
        };
        let sent_flags = pending.sent_flags;
        match pending.initiator.finish(noise) {
            Ok((send, recv, advert)) => {
                let cipher = Cipher::agree(sent_flags, advert.flags);
                let session = Session::new(receiver, sender, &send, &recv, now, true, cipher);
                self.install(now, id, session, from, advert, sent_flags);
                // Confirm at once so the responder may use the session (WireGuard does the same).
                if !self.flush_queued(now, unix_ms, id) {
                    self.seal_to(now, id, 0, from, &Frame::Keepalive);
                }
            }
            Err(_) => {
                self.by_index.remove(&receiver);
                self.stats.bad_handshake += 1;
            }
        }
    }

    /// A COOKIE_REPLY to our running handshake: resend message 1 with mac2 at once.
    pub(super) fn on_cookie(
        &mut self,
        now: Instant,
        receiver: u32,
        nonce: &[u8; COOKIE_NONCE_LEN],
        sealed: &[u8],
    ) {
        let Some(id) = self.peer_of_index(receiver) else {
            return;
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(pending) = peer
            .pending
            .as_mut()
            .filter(|p| p.initiator.local_index == receiver)
        else {
            return;
        };
        let Ok(cookie) = handshake::open_cookie(&id, &pending.initiator.last_mac1, nonce, sealed)
        else {
            self.stats.bad_handshake += 1;
            return;
        };
        peer.cookie = Some((cookie, now));
        // Resend at once with the cookie.
        pending.packet = pending.initiator.remac(Some(&cookie));
        let (packet, endpoints) = (pending.packet.clone(), pending.endpoints.clone());
        for e in endpoints {
            self.push_transmit(e, packet.clone());
        }
    }

    /// Makes `session` the peer's current one (the older ones stay, up to
    /// [`OLDER_SESSIONS`](super::OLDER_SESSIONS), for packets in flight and for a peer whose
    /// current session is one of them) and reports [`Event::Established`].
    pub(super) fn install(
        &mut self,
        now: Instant,
        id: NodeId,
        session: Session,
        from: SocketAddr,
        advert: Advert,
        our_flags: u8,
    ) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if let Some(old) = peer.current.replace(session) {
            peer.previous.insert(0, old);
        }
        for old in peer
            .previous
            .drain(super::OLDER_SESSIONS.min(peer.previous.len())..)
        {
            self.by_index.remove(&old.local_index);
        }
        if self.config.follow_source {
            peer.endpoint = Some(from);
        }
        peer.last_handshake = Some(now);
        peer.candidates = advert.candidates.clone();
        self.stats.handshakes_completed += 1;
        self.push_event(Event::Established {
            peer: id,
            advert,
            from,
            // As the engine set them: the cipher offer is the tunnel's own.
            our_flags: our_flags & !FLAG_AES_GCM,
        });
    }

    /// The cookie for a sender at `from` under the current secret.
    pub(super) fn cookie_for(&self, from: SocketAddr) -> [u8; COOKIE_LEN] {
        let (a, n) = addr::encode(&from);
        let mut c = [0u8; COOKIE_LEN];
        c.copy_from_slice(
            &blake3::keyed_hash(&self.cookie_secret, &a[..n]).as_bytes()[..COOKIE_LEN],
        );
        c
    }

    /// Counts one message 1 and says whether this second's count is over the threshold.
    pub(super) fn under_load(&mut self, now: Instant) -> bool {
        if now.saturating_duration_since(self.load_window.0) >= Duration::from_secs(1) {
            self.load_window = (now, 0);
        }
        self.load_window.1 += 1;
        self.load_window.1 > self.config.handshake_load_threshold
    }
}
