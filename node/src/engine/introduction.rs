//! Introduction through the rendezvous (`docs/protocol.md` §"Connecting (the node engine)"): `connect`, the
//! INTRODUCE that carries our handshake to a peer we cannot reach yet, its INTRO_ACK (the
//! peer's observed address), and the INTRO_FWD that brings a peer's handshake to us.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shipworm_rendezvous::wire::{self, IntroStatus, Message};
use shipworm_tunnel::wire::packet;
use shipworm_tunnel::NodeId;

use super::paths::CandidateKind;
use super::{ConnectError, DropReason, Engine, NodeEvent, MAX_INTROS, MAX_WAITING_INTROS};

/// How long "unknown peer" answers are retried (with the handshake's retransmissions, each one
/// introduced again) before the attempt fails with that error: the peer may be registering at
/// this moment (its address is forwarded introductions once it has proven it receives).
pub(crate) const UNKNOWN_PEER_PATIENCE: Duration = Duration::from_secs(3);

impl Engine {
    /// Starts connecting to `peer`, known at `direct` addresses (may be empty: the rendezvous
    /// then introduces us).
    pub fn connect(&mut self, now: Instant, unix_ms: u64, peer: NodeId, direct: &[SocketAddr]) {
        if direct.is_empty() && self.servers.is_empty() {
            self.push_event(NodeEvent::ConnectFailed {
                peer,
                error: ConnectError::NoWayToReach,
            });
            return;
        }
        // Without IPv4 of our own, IPv4 addresses are reached through NAT64.
        let direct: Vec<SocketAddr> = direct.iter().map(|d| self.via_nat64(*d)).collect();
        let direct = direct.as_slice();
        // Our own attempt: state for it even before the peer proved anything (bounded).
        let Some(state) = self.peer_state(peer, now) else {
            self.push_event(NodeEvent::ConnectFailed {
                peer,
                error: ConnectError::NoWayToReach,
            });
            return;
        };
        state.connecting = Some(now);
        state.last_active = now;
        for d in direct {
            state.paths.add(*d, CandidateKind::Advertised, now);
        }
        if self.tunnel.connect(now, unix_ms, peer, direct).is_err() {
            self.push_event(NodeEvent::ConnectFailed {
                peer,
                error: ConnectError::NoWayToReach,
            });
            return;
        }
        self.drain_tunnel(now, unix_ms);
    }

    /// A datagram in the rendezvous format: only our servers are heard.
    pub(super) fn on_rendezvous(
        &mut self,
        now: Instant,
        unix_ms: u64,
        from: SocketAddr,
        bytes: &[u8],
    ) {
        let Some(si) = self.servers.iter().position(|r| r.server == from) else {
            self.count_drop(DropReason::RendezvousFromStranger);
            return;
        };
        let Ok(msg) = Message::parse(bytes) else {
            self.count_drop(DropReason::MalformedRendezvous);
            return;
        };
        // It answers (even a refusal says that our datagrams reach it and its reach us).
        self.servers[si].heard();
        self.unreachable = None;
        match msg {
            Message::Registered(r) if self.servers[si].owns(r.tx) => {
                self.on_registered(now, si, &r);
            }
            Message::Error(e) if self.servers[si].owns(e.tx) => {
                self.on_registration_error(now, unix_ms, si, &e);
            }
            Message::Retry(r) if self.servers[si].owns(r.tx) => {
                self.on_registration_retry(now, unix_ms, si, r.cookie);
            }
            Message::Error(e) if e.code != wire::ErrorCode::RelayRefused => {
                // An INTRODUCE refused for a lost registration: register again.
                if self.intros.remove(&e.tx).is_some() {
                    self.servers[si].on_error(now, e.code, e.server_time_ms, unix_ms);
                } else if e.tx == 0
                    && e.code == wire::ErrorCode::NotRegistered
                    && self.servers[si].token().is_some()
                {
                    // A RELAY (transaction 0) refused for a lost registration (a relay restart):
                    // register again now, not at the next refresh. Once per registration: the
                    // token is gone until it is renewed, so forged errors gain nothing more.
                    self.servers[si].on_error(now, e.code, e.server_time_ms, unix_ms);
                } else {
                    self.count_drop(DropReason::UnknownRendezvousTransaction);
                }
            }
            Message::Registered(_) | Message::Retry(_) => {
                self.count_drop(DropReason::UnknownRendezvousTransaction);
            }
            Message::Error(e) if e.code == wire::ErrorCode::RelayRefused => {
                self.count_drop(DropReason::RelayRefused);
            }
            Message::IntroAck(ack) => self.on_intro_ack(now, unix_ms, from, ack),
            Message::IntroFwd(f) => self.on_intro_fwd(now, unix_ms, from, f),
            Message::Relayed(f) => self.on_relayed(now, unix_ms, si, f),
            _ => self.count_drop(DropReason::UnexpectedRendezvous),
        }
    }

    fn on_intro_ack(&mut self, now: Instant, unix_ms: u64, from: SocketAddr, ack: wire::IntroAck) {
        let Some((peer, _, _)) = self.intros.remove(&ack.tx) else {
            self.count_drop(DropReason::UnknownRendezvousTransaction);
            return;
        };
        match ack.status {
            IntroStatus::Forwarded => {
                if let Some(a) = ack.target_addr {
                    let a = self.via_nat64(a);
                    if let Some(st) = self.peers.get_mut(&peer) {
                        st.paths.add(a, CandidateKind::Reflexive, now);
                        st.rendezvous_addr = Some(a);
                        st.registered_at(from);
                        // The rendezvous saw the peer register there (its token made the round
                        // trip), and this answer carries our random transaction id.
                        self.gate.verify(a, now);
                    }
                    self.tunnel.add_handshake_endpoints(peer, &[a]);
                    self.drain_tunnel(now, unix_ms);
                }
            }
            IntroStatus::UnknownPeer => {
                // Within the patience window the handshake's next retransmission asks again.
                let give_up = self.peers.get(&peer).is_some_and(|p| {
                    !p.established
                        && p.connecting.is_some_and(|started| {
                            now.saturating_duration_since(started) >= UNKNOWN_PEER_PATIENCE
                        })
                });
                if give_up {
                    self.fail(peer, ConnectError::UnknownPeer(from));
                }
            }
            // Retried with the handshake's next retransmission.
            IntroStatus::SenderRateLimited | IntroStatus::TargetRateLimited => {}
        }
    }

    fn on_intro_fwd(
        &mut self,
        now: Instant,
        unix_ms: u64,
        server: SocketAddr,
        f: wire::IntroFwd<'_>,
    ) {
        let Ok(peer) = NodeId::from_bytes(&f.from) else {
            self.count_drop(DropReason::BadIntroduction);
            return;
        };
        // INTRO_FWD is not authenticated (anyone can send it from the rendezvous' address):
        // no state comes of it, only of the handshake it carries once the tunnel proved the key,
        // and that key must be the one the INTRO_FWD names.
        // Where the rendezvous saw the peer (through NAT64 when we have no IPv4 of our own).
        let from_addr = self.via_nat64(f.from_addr);
        match packet::Packet::parse(f.payload) {
            Ok(packet::Packet::Init { .. }) => {
                self.introduced = Some(peer);
                self.tunnel_input(now, unix_ms, 0, from_addr, f.payload);
                self.drain_tunnel(now, unix_ms);
                self.introduced = None;
                // It proved its key: it is registered at that server (a relay, perhaps).
                if let Some(st) = self.peers.get_mut(&peer) {
                    st.registered_at(server);
                }
            }
            Ok(packet::Packet::Resp { receiver, .. }) => {
                // An answer to our own message 1: the index must be one we gave that peer.
                if self.our_index.get(&receiver) != Some(&peer) {
                    self.count_drop(DropReason::IntroducerMismatch);
                    return;
                }
                self.introduced = Some(peer);
                self.tunnel_input(now, unix_ms, 0, from_addr, f.payload);
                self.drain_tunnel(now, unix_ms);
                self.introduced = None;
            }
            _ => self.count_drop(DropReason::BadIntroduction),
        }
    }

    /// Sends `payload` (a handshake packet) to `peer` through every server we are registered at.
    pub(super) fn introduce(&mut self, now: Instant, peer: NodeId, payload: &[u8]) {
        if payload.len() > wire::MAX_INTRO_PAYLOAD {
            self.count_drop(DropReason::IntroductionTooLarge);
            return;
        }
        let targets: Vec<(SocketAddr, [u8; wire::TOKEN_LEN])> = self
            .servers
            .iter()
            .filter_map(|r| r.token().map(|t| (r.server, t)))
            .collect();
        if targets.is_empty() && !self.servers.is_empty() {
            // Not registered yet: hold the newest message for this peer until we are.
            self.waiting_intros.retain(|(p, _)| *p != peer);
            if self.waiting_intros.len() >= MAX_WAITING_INTROS {
                self.waiting_intros.pop_front();
                self.count_drop(DropReason::WaitingIntroductionEvicted);
            }
            self.waiting_intros.push_back((peer, payload.to_vec()));
            return;
        }
        for (server, token) in targets {
            let tx = self.next_id();
            if self.intros.len() >= MAX_INTROS {
                self.intros.retain(|_, (_, _, t)| {
                    now.saturating_duration_since(*t) < Duration::from_secs(10)
                });
            }
            self.intros.insert(tx, (peer, server, now));
            let msg = Message::Introduce(wire::Introduce {
                tx,
                node: *self.me.as_bytes(),
                token,
                target: *peer.as_bytes(),
                payload,
            });
            self.push_transmit(server, msg.to_vec());
        }
    }
}
