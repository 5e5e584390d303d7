//! Timers: handshake retries and timeouts, rekeying by age, keepalives, and expiry.

use std::time::{Duration, Instant};

use super::{Event, Tunnel};
use crate::identity::NodeId;
use crate::wire::frame::Frame;

impl Tunnel {
    /// When [`Tunnel::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        for p in self.peers.values() {
            if let Some(pd) = &p.pending {
                consider(
                    pd.next_retry
                        .min(pd.started + self.config.handshake_timeout),
                );
            }
            if let Some(s) = &p.current {
                consider(s.created + self.config.reject_after_time);
                // While a rekey is in flight its retries are the timer; the rekey time, now
                // past, would have the caller spin until the answer came.
                if s.initiator && p.pending.is_none() {
                    consider(s.created + self.config.rekey_after_time);
                }
                if let (Some(k), Some(last)) = (self.config.keepalive, p.last_sent) {
                    consider(last + k);
                }
            }
        }
        next
    }

    /// Retries handshakes, rekeys, sends keepalives, and expires sessions.
    pub fn handle_timeout(&mut self, now: Instant, unix_ms: u64) {
        let ids: Vec<NodeId> = self.peers.keys().copied().collect();
        for id in ids {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            // Handshake retries with doubling backoff, then failure.
            if let Some(pd) = peer.pending.as_mut() {
                if now.saturating_duration_since(pd.started) >= self.config.handshake_timeout {
                    let index = pd.initiator.local_index;
                    peer.pending = None;
                    peer.queued.clear();
                    self.by_index.remove(&index);
                    self.push_event(Event::HandshakeFailed { peer: id });
                    continue;
                } else if now >= pd.next_retry {
                    // A retransmission is a new message 1: the responder refuses a repeated
                    // timestamp as a replay, and a new ephemeral key keeps attempts unlinkable.
                    let backoff = (pd.started, (pd.retry * 2).min(Duration::from_secs(2)));
                    let endpoints = pd.endpoints.clone();
                    self.initiate_with(now, unix_ms, id, endpoints, backoff);
                }
            }
            let Some(peer) = self.peers.get(&id) else {
                continue;
            };
            let Some(s) = peer.current.as_ref() else {
                continue;
            };
            let age = now.saturating_duration_since(s.created);
            if age >= self.config.reject_after_time {
                // Expired and no rekey succeeded: forget the keys.
                self.forget_sessions(id);
                self.push_event(Event::Closed { peer: id });
                continue;
            }
            if s.initiator && age >= self.config.rekey_after_time && peer.pending.is_none() {
                let endpoints = peer.endpoint.into_iter().collect();
                self.initiate(now, unix_ms, id, endpoints);
            }
            let Some(peer) = self.peers.get(&id) else {
                continue;
            };
            if let (Some(k), Some(last), Some(to)) =
                (self.config.keepalive, peer.last_sent, peer.endpoint)
            {
                if now.saturating_duration_since(last) >= k {
                    let local = peer.endpoint_local;
                    self.seal_to(now, id, local, to, &Frame::Keepalive);
                }
            }
        }
    }
}
