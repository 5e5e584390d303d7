//! Keeping a registration at each rendezvous server, sans-IO: [`Registration`] is one server's
//! state; the engine polls every server and routes REGISTERED and ERROR to it.
//!
//! REGISTER (signed, for the server's address) once, then REFRESH with the token every
//! `refresh_interval` (below common NAT UDP timeouts, so the mapping the server observes stays
//! open). The first REFRESH goes out at once after a REGISTER's REGISTERED: the token coming back
//! from our address is what proves to the server that the address receives, and only then does it
//! forward introductions to us. A server under load answers REGISTER with RETRY and a cookie; the
//! REGISTER goes again at once with it (which proves the address too). A refused REFRESH (the
//! server restarted, or our NAT rebound) falls back to REGISTER at once; silence is retried with
//! backoff, forever: a rendezvous that comes back is found again by itself.
//!
//! A rendezvous learnt from a ticket we dial (not one of ours) is kept only while it is of use:
//! while a connection attempt to a peer whose ticket named it runs, and for
//! [`TICKET_REGISTRATION_GRACE`] after the last one ended.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shipworm_rendezvous::wire::{
    self, ErrorCode, Message, Refresh, Register, Registered, COOKIE_LEN, TOKEN_LEN,
};
use shipworm_tunnel::{wire::addr, Identity, NodeId};

use super::paths::CandidateKind;
use super::{DropReason, Engine, NodeEvent, MAX_RENDEZVOUS};

/// First retransmission of a request; doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(250);
/// Longest wait between retransmissions.
const MAX_RETRY: Duration = Duration::from_secs(5);
/// Unanswered refreshes before falling back to a signed REGISTER.
const REFRESH_TRIES: u32 = 3;
/// Wait after a clock-skew refusal before trying again.
const SKEW_BACKOFF: Duration = Duration::from_secs(30);
/// The shortest wait between refreshes, whatever lifetime a server claims (a lifetime of 0–2 s
/// would otherwise make the node refresh in a loop).
pub const MIN_REFRESH: Duration = Duration::from_secs(1);
/// RETRYs answered at once per REGISTER sent on the backoff schedule (a server that keeps asking
/// waits for the next one).
const MAX_COOKIE_RESENDS: u32 = 2;
/// How long a server's cookie is used for later REGISTERs (it is valid 30 to 60 s): a REGISTER
/// with a cookie lost in a flooded buffer is retried with it, without another RETRY round trip.
const COOKIE_REUSE: Duration = Duration::from_secs(25);
/// How long a registration at a ticket's rendezvous outlives the last connection attempt that
/// needed it (the handshake's retransmissions and a re-introduction after a NAT rebinding early in
/// the session still find it).
pub const TICKET_REGISTRATION_GRACE: Duration = Duration::from_secs(60);
/// Peers a ticket registration remembers it is for.
const MAX_TICKET_PEERS: usize = 16;

/// What happened to the registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegEvent {
    /// The server (re)confirmed us; `observed` is our address as it sees it.
    Registered {
        /// Our reflexive address.
        observed: SocketAddr,
        /// Whether it differs from the last one (first registration, or the NAT rebound).
        changed: bool,
        /// The server knows the address receives, so it forwards introductions to us: the
        /// REGISTER carried a cookie, or this answers the token coming back (a REFRESH). After a
        /// plain REGISTER the confirming REFRESH goes at once and its answer says so.
        confirmed: bool,
    },
    /// The server refused us for a reason a retry will not fix soon.
    Refused(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    Nothing,
    Register,
    Refresh,
}

/// A registration at a rendezvous named by a ticket we dialled, not one of ours.
#[derive(Debug, Clone)]
pub struct TicketUse {
    /// The peers whose tickets named it.
    pub peers: Vec<NodeId>,
    /// When it was last needed (an attempt to one of them was running).
    pub last_needed: Instant,
}

/// One server's registration state.
#[derive(Debug)]
pub struct Registration {
    /// The server.
    pub server: SocketAddr,
    /// The address the server knows itself by, when we reach it at a NAT64 synthesis of it
    /// (`nat64::unsynthesized`): what a REGISTER is signed for. `None`: `server`.
    signed_for: Option<SocketAddr>,
    /// `Some` for a ticket's rendezvous (kept while needed), `None` for one of ours (kept).
    pub ticket: Option<TicketUse>,
    token: Option<[u8; TOKEN_LEN]>,
    /// A cookie from the server's RETRY and when it came, for the next REGISTERs.
    cookie: Option<([u8; COOKIE_LEN], Instant)>,
    /// The next REGISTER answers a RETRY (it does not start a new round of resends).
    resend_due: bool,
    cookie_resends: u32,
    /// The last REGISTER carried a cookie (the server then knows our address receives).
    sent_cookie: bool,
    observed: Option<SocketAddr>,
    /// The address last announced as registered (confirmed at the server).
    announced: Option<SocketAddr>,
    /// The server's last REGISTERED said it relays for us.
    relay: bool,
    alt_stun_port: u16,
    waiting: Waiting,
    tx: u64,
    tries: u32,
    retry: Duration,
    next: Instant,
    last_timestamp: u64,
    refresh_interval: Duration,
    /// We reach the server over its relay's TCP port (our UDP got no answer).
    over_tcp: bool,
    /// Since when we have been waiting for a first answer on the current transport (`None`:
    /// it answered).
    silent_since: Option<Instant>,
    /// The silence was reported.
    silence_reported: bool,
    /// The server answered us at least once, on any transport.
    answered: bool,
}

impl Registration {
    /// A registration to start at `now`.
    pub fn new(server: SocketAddr, now: Instant, refresh_interval: Duration) -> Self {
        Self {
            server: addr::normalize(server),
            signed_for: None,
            ticket: None,
            token: None,
            cookie: None,
            resend_due: false,
            cookie_resends: 0,
            sent_cookie: false,
            observed: None,
            announced: None,
            relay: false,
            over_tcp: false,
            silent_since: Some(now),
            silence_reported: false,
            answered: false,
            alt_stun_port: 0,
            waiting: Waiting::Nothing,
            tx: 0,
            tries: 0,
            retry: FIRST_RETRY,
            next: now,
            last_timestamp: 0,
            refresh_interval,
        }
    }

    /// Our address as the server saw it last.
    pub fn observed(&self) -> Option<SocketAddr> {
        self.observed
    }

    /// Notes a message from the server (it answers on the current transport).
    pub fn heard(&mut self) {
        self.silent_since = None;
        self.answered = true;
    }

    /// Whether the server ever answered us.
    pub fn answered(&self) -> bool {
        self.answered
    }

    /// Whether we reach the server over TCP.
    pub fn over_tcp(&self) -> bool {
        self.over_tcp
    }

    /// Whether the server has been silent on the current transport for `after` (once: true the
    /// first time only).
    pub fn newly_silent(&mut self, now: Instant, after: Duration) -> bool {
        let silent = self
            .silent_since
            .is_some_and(|t| now.saturating_duration_since(t) >= after);
        if silent && !self.silence_reported {
            self.silence_reported = true;
            return true;
        }
        false
    }

    /// When the silence is to be reported (if it has not been, and the server has not answered).
    pub fn silence_due(&self, after: Duration) -> Option<Instant> {
        match (self.silent_since, self.silence_reported) {
            (Some(t), false) => Some(t + after),
            _ => None,
        }
    }

    /// Moves to (or off) the relay's TCP port: a full registration goes out at once there (the
    /// server's table then holds the address of that transport).
    pub fn set_transport(&mut self, now: Instant, tcp: bool) {
        if self.over_tcp == tcp {
            return;
        }
        self.over_tcp = tcp;
        self.token = None;
        self.waiting = Waiting::Nothing;
        self.next = now;
        self.silent_since = Some(now);
        self.silence_reported = false;
    }

    /// Whether the server said it relays for us (REGISTERED's relay flag).
    pub fn relays(&self) -> bool {
        self.relay
    }

    /// The token for INTRODUCE and RELAY, while registered.
    pub fn token(&self) -> Option<[u8; TOKEN_LEN]> {
        self.token
    }

    /// The server's second STUN port (0: none).
    pub fn alt_stun_port(&self) -> u16 {
        self.alt_stun_port
    }

    /// When [`Registration::poll`] has something to do (or a ticket registration may expire).
    pub fn next_action(&self) -> Instant {
        match &self.ticket {
            Some(t) => self.next.min(t.last_needed + TICKET_REGISTRATION_GRACE),
            None => self.next,
        }
    }

    /// The request to send now, if any. `tx` must be fresh and unique.
    pub fn poll(
        &mut self,
        now: Instant,
        unix_ms: u64,
        identity: &Identity,
        tx: u64,
    ) -> Option<Vec<u8>> {
        if now < self.next {
            return None;
        }
        // A refresh that goes unanswered falls back to a full registration.
        if self.waiting == Waiting::Refresh && self.tries >= REFRESH_TRIES {
            self.token = None;
        }
        let msg = match self.token {
            Some(token) => {
                if self.waiting != Waiting::Refresh {
                    self.waiting = Waiting::Refresh;
                    self.tries = 0;
                    self.retry = FIRST_RETRY;
                }
                Message::Refresh(Refresh {
                    tx,
                    node: *identity.node_id().as_bytes(),
                    token,
                })
            }
            None => {
                if self.waiting != Waiting::Register {
                    self.waiting = Waiting::Register;
                    self.tries = 0;
                    self.retry = FIRST_RETRY;
                    self.cookie_resends = 0;
                }
                let ts = unix_ms.max(self.last_timestamp + 1);
                self.last_timestamp = ts;
                if !std::mem::take(&mut self.resend_due) {
                    // Sent on the backoff schedule: a new allowance of immediate resends.
                    self.cookie_resends = 0;
                }
                // Signed for the address we send it to (as the server knows it, past a NAT64):
                // worthless at any other server.
                let register =
                    Register::signed(identity, tx, ts, self.signed_for.unwrap_or(self.server));
                let cookie = self
                    .cookie
                    .filter(|(_, got)| now.saturating_duration_since(*got) < COOKIE_REUSE)
                    .map(|(c, _)| c);
                self.sent_cookie = cookie.is_some();
                Message::Register(match cookie {
                    Some(c) => register.with_cookie(c),
                    None => register,
                })
            }
        };
        self.tx = tx;
        self.tries += 1;
        self.next = now + self.retry;
        self.retry = (self.retry * 2).min(MAX_RETRY);
        Some(msg.to_vec())
    }

    /// Whether `tx` is the transaction this registration waits for.
    pub fn owns(&self, tx: u64) -> bool {
        self.waiting != Waiting::Nothing && tx == self.tx
    }

    /// Handles REGISTERED.
    pub fn on_registered(&mut self, now: Instant, r: &Registered) -> RegEvent {
        self.relay = r.relay();
        let changed = self.observed != Some(r.observed);
        let answered_register = self.waiting == Waiting::Register;
        self.token = Some(r.token);
        self.observed = Some(r.observed);
        self.alt_stun_port = r.alt_stun_port;
        self.waiting = Waiting::Nothing;
        let confirmed = !answered_register || self.sent_cookie;
        if !confirmed {
            // Show the server at once that our address receives (the token comes back from it):
            // only then are introductions forwarded to us.
            self.next = now;
        } else {
            // Refresh well before the server's lifetime runs out, and below NAT timeouts; the
            // lifetime is the server's claim, so a tiny one cannot make us refresh in a loop.
            let lifetime = Duration::from_secs(r.lifetime_s as u64);
            self.next = now + self.refresh_interval.min(lifetime / 3).max(MIN_REFRESH);
        }
        RegEvent::Registered {
            observed: r.observed,
            changed,
            confirmed,
        }
    }

    /// Whether `observed`, confirmed at the server, is news to announce (first registration, or
    /// a new address); records it as announced.
    pub fn announce(&mut self, observed: SocketAddr) -> bool {
        let news = self.announced != Some(observed);
        self.announced = Some(observed);
        news
    }

    /// Handles RETRY (the server is under load): the REGISTER goes again at once with the cookie,
    /// a bounded number of times per round.
    pub fn on_retry(&mut self, now: Instant, cookie: [u8; COOKIE_LEN]) {
        if self.waiting != Waiting::Register || self.cookie_resends >= MAX_COOKIE_RESENDS {
            return;
        }
        self.cookie_resends += 1;
        self.cookie = Some((cookie, now));
        self.resend_due = true;
        self.next = now;
    }

    /// Handles ERROR; returns what to tell the node, if anything.
    pub fn on_error(
        &mut self,
        now: Instant,
        code: ErrorCode,
        server_time_ms: u64,
        unix_ms: u64,
    ) -> Option<RegEvent> {
        self.waiting = Waiting::Nothing;
        match code {
            ErrorCode::NotRegistered | ErrorCode::StaleTimestamp => {
                // Forgotten (restart) or moved: register again at once.
                self.token = None;
                self.next = now;
                None
            }
            ErrorCode::ClockSkew => {
                self.token = None;
                self.next = now + SKEW_BACKOFF;
                // The server's time is a claim: any u64, so the difference is taken in i128.
                let off = (i128::from(unix_ms) - i128::from(server_time_ms)) / 1000;
                Some(RegEvent::Refused(format!(
                    "rendezvous {} says our clock is off by {off} s: fix the system clock (NTP)",
                    self.server
                )))
            }
            ErrorCode::WrongServer => {
                self.token = None;
                self.next = now + SKEW_BACKOFF;
                Some(RegEvent::Refused(format!(
                    "rendezvous {} does not know {} as its own address (it refuses REGISTERs \
                     signed for other servers): if it is behind a NAT, its operator must start \
                     it with --public-addr {}",
                    self.server, self.server, self.server
                )))
            }
            ErrorCode::PrefixQuota => {
                self.token = None;
                self.next = now + SKEW_BACKOFF;
                Some(RegEvent::Refused(format!(
                    "rendezvous {} holds its quota of nodes from our network (one public address \
                     or IPv6 /56): retrying in {} s; a carrier-grade NAT shares one address among \
                     many users, so ask the operator to raise max_registrations_per_prefix, or \
                     use another rendezvous",
                    self.server,
                    SKEW_BACKOFF.as_secs()
                )))
            }
            other => {
                self.token = None;
                self.next = now + MAX_RETRY;
                Some(RegEvent::Refused(format!(
                    "rendezvous {} refused registration: {other:?}",
                    self.server
                )))
            }
        }
    }
}

impl Engine {
    /// Registers with one more rendezvous of ours, kept for good; no-op if known (a ticket's
    /// registration there becomes permanent).
    pub fn add_rendezvous(&mut self, now: Instant, server: SocketAddr) {
        let server = addr::normalize(server);
        if let Some(r) = self.servers.iter_mut().find(|r| r.server == server) {
            r.ticket = None;
            return;
        }
        if self.servers.len() >= MAX_RENDEZVOUS {
            self.count_drop(DropReason::RendezvousServersFull);
            return;
        }
        self.servers
            .push(Registration::new(server, now, self.config.refresh_interval));
    }

    /// Registers with a rendezvous named by the ticket of `peer`, which we are about to dial: kept
    /// while an attempt to a peer that needs it runs, and [`TICKET_REGISTRATION_GRACE`] after.
    /// No-op for a rendezvous of ours.
    pub fn add_ticket_rendezvous(&mut self, now: Instant, server: SocketAddr, peer: NodeId) {
        let server = addr::normalize(server);
        if let Some(r) = self.servers.iter_mut().find(|r| r.server == server) {
            if let Some(t) = r.ticket.as_mut() {
                if !t.peers.contains(&peer) {
                    if t.peers.len() >= MAX_TICKET_PEERS {
                        t.peers.remove(0);
                    }
                    t.peers.push(peer);
                }
                t.last_needed = now;
            }
            return;
        }
        if self.servers.len() >= MAX_RENDEZVOUS {
            self.count_drop(DropReason::RendezvousServersFull);
            return;
        }
        let mut r = Registration::new(server, now, self.config.refresh_interval);
        r.ticket = Some(TicketUse {
            peers: vec![peer],
            last_needed: now,
        });
        self.servers.push(r);
    }

    /// Ticket registrations: still needed (an attempt to one of their peers runs) moves their
    /// deadline; past it, they are dropped (the server forgets us when we stop refreshing).
    fn expire_ticket_registrations(&mut self, now: Instant) {
        let peers = &self.peers;
        for r in self.servers.iter_mut() {
            if let Some(t) = r.ticket.as_mut() {
                let needed = t
                    .peers
                    .iter()
                    .any(|p| peers.get(p).is_some_and(|s| s.connecting.is_some()));
                if needed {
                    t.last_needed = now;
                }
            }
        }
        self.servers.retain(|r| {
            r.ticket
                .as_ref()
                .is_none_or(|t| now < t.last_needed + TICKET_REGISTRATION_GRACE)
        });
    }

    /// Our reflexive address at each server that confirmed us.
    pub fn registrations(&self) -> Vec<(SocketAddr, Option<SocketAddr>)> {
        self.servers
            .iter()
            .map(|r| (r.server, r.observed()))
            .collect()
    }

    /// Sends the REGISTER or REFRESH due at each server.
    pub(super) fn registration_timeout(&mut self, now: Instant, unix_ms: u64) {
        self.expire_ticket_registrations(now);
        for i in 0..self.servers.len() {
            let tx = self.next_id();
            let server = self.servers[i].server;
            let itself = super::nat64::unsynthesized(self.config.nat64.as_ref(), server);
            self.servers[i].signed_for = (itself != server).then_some(itself);
            if let Some(req) = self.servers[i].poll(now, unix_ms, &self.identity, tx) {
                let server = self.servers[i].server;
                self.push_transmit(server, req);
            }
            if self.servers[i].newly_silent(now, self.config.udp_fallback_after) {
                let tcp = self
                    .config
                    .relay_tcp_port
                    .filter(|_| self.config.relay && !self.servers[i].over_tcp())
                    .map(|port| SocketAddr::new(server.ip(), port));
                self.push_event(NodeEvent::RendezvousSilent { server, tcp });
            }
        }
    }

    /// Tells the engine that it now reaches `server` over its relay's TCP port (`tcp`), or over
    /// UDP again: it registers there again at once.
    pub fn set_rendezvous_tcp(&mut self, now: Instant, server: SocketAddr, tcp: bool) {
        let server = addr::normalize(server);
        if let Some(r) = self.servers.iter_mut().find(|r| r.server == server) {
            r.set_transport(now, tcp);
        }
    }

    /// Tells the engine that `server`, silent over UDP, could not be reached over its relay's
    /// TCP port either: attempts that wait only for a rendezvous end soon with that cause
    /// instead of blaming the peer.
    pub fn rendezvous_unreachable(&mut self, server: SocketAddr) {
        if !self.any_rendezvous_answered() {
            self.unreachable = Some(addr::normalize(server));
        }
    }

    /// Whether any rendezvous ever answered us.
    pub(super) fn any_rendezvous_answered(&self) -> bool {
        self.servers.iter().any(|r| r.answered())
    }

    /// REGISTERED from server `si`, for the transaction it waits for.
    pub(super) fn on_registered(&mut self, now: Instant, si: usize, r: &wire::Registered) {
        let from = self.servers[si].server;
        let over_tcp = self.servers[si].over_tcp();
        let event = self.servers[si].on_registered(now, r);
        if let RegEvent::Registered {
            observed,
            changed,
            confirmed,
        } = event
        {
            // Over TCP the server sees our TCP connection's address: no candidate for UDP.
            if !over_tcp {
                self.add_local_candidate(observed, CandidateKind::Reflexive);
                if changed || self.maps_per_destination.is_none() {
                    self.check_mapping(from, r.alt_stun_port, observed);
                }
            }
            // Announced once the server forwards introductions to us (one round trip after a
            // plain REGISTER): a peer introduced the moment we say we are registered reaches us.
            if confirmed && self.servers[si].announce(observed) {
                self.push_event(NodeEvent::Registered {
                    server: from,
                    observed,
                });
            }
        }
        // Introductions asked for before we were registered go out now.
        while let Some((peer, payload)) = self.waiting_intros.pop_front() {
            self.introduce(now, peer, &payload);
        }
    }

    /// RETRY from server `si` for its REGISTER: send it again with the cookie, now.
    pub(super) fn on_registration_retry(
        &mut self,
        now: Instant,
        unix_ms: u64,
        si: usize,
        cookie: [u8; COOKIE_LEN],
    ) {
        self.servers[si].on_retry(now, cookie);
        self.registration_timeout(now, unix_ms);
    }

    /// ERROR from server `si` for its registration transaction.
    pub(super) fn on_registration_error(
        &mut self,
        now: Instant,
        unix_ms: u64,
        si: usize,
        e: &wire::ErrorMsg,
    ) {
        if let Some(RegEvent::Refused(reason)) =
            self.servers[si].on_error(now, e.code, e.server_time_ms, unix_ms)
        {
            let server = self.servers[si].server;
            self.push_event(NodeEvent::RegistrationRefused { server, reason });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{EngineConfig, Transmit};
    use shipworm_rendezvous::wire::Retry;
    use shipworm_tunnel::rng::from_seed;

    const UNIX: u64 = 1_800_000_000_000;

    fn home() -> SocketAddr {
        "198.51.100.1:3478".parse().unwrap()
    }

    fn engine(now: Instant) -> Engine {
        let config = EngineConfig {
            rendezvous: vec![home()],
            ..EngineConfig::default()
        };
        Engine::new(Identity::from_seed(&[7; 32]), config, now, from_seed(1))
    }

    fn sent(e: &mut Engine) -> Vec<Transmit> {
        std::iter::from_fn(|| e.poll_transmit()).collect()
    }

    fn register_to(out: &[Transmit], server: SocketAddr) -> Register {
        out.iter()
            .filter(|t| t.dest == server)
            .find_map(|t| match Message::parse(&t.contents) {
                Ok(Message::Register(r)) => Some(r),
                _ => None,
            })
            .expect("a REGISTER")
    }

    fn refresh_to(out: &[Transmit], server: SocketAddr) -> Option<Refresh> {
        out.iter()
            .filter(|t| t.dest == server)
            .find_map(|t| match Message::parse(&t.contents) {
                Ok(Message::Refresh(r)) => Some(r),
                _ => None,
            })
    }

    fn registered_msg(tx: u64) -> Vec<u8> {
        Message::Registered(Registered {
            tx,
            ..registered(300)
        })
        .to_vec()
    }

    /// Runs the engine's timers up to `until`, answering nothing.
    fn run_until(e: &mut Engine, until: Instant) {
        for _ in 0..10_000 {
            match e.poll_timeout() {
                Some(t) if t <= until => {
                    e.handle_timeout(t, UNIX);
                    sent(e);
                }
                _ => return,
            }
        }
        panic!("the engine's timers never settle");
    }

    #[test]
    fn register_is_signed_for_the_server_it_goes_to() {
        let now = Instant::now();
        let mut e = engine(now);
        e.handle_timeout(now, UNIX);
        let r = register_to(&sent(&mut e), home());
        assert_eq!(r.server, home());
        assert!(r.verify().is_some());
        assert_eq!(r.cookie, None);
    }

    #[test]
    fn a_retry_resends_the_register_at_once_with_the_cookie() {
        let now = Instant::now();
        let mut e = engine(now);
        e.handle_timeout(now, UNIX);
        let first = register_to(&sent(&mut e), home());
        // A RETRY for another transaction (an off-path guess) is ignored.
        let forged = Message::Retry(Retry {
            tx: first.tx ^ 1,
            cookie: [1; COOKIE_LEN],
        })
        .to_vec();
        e.handle_packet(now, UNIX, home(), &forged);
        assert!(sent(&mut e).is_empty());
        let mut tx = first.tx;
        for n in 0..MAX_COOKIE_RESENDS {
            let retry = Message::Retry(Retry {
                tx,
                cookie: [n as u8 + 2; COOKIE_LEN],
            })
            .to_vec();
            e.handle_packet(now, UNIX, home(), &retry);
            let again = register_to(&sent(&mut e), home());
            assert_eq!(
                again.cookie,
                Some([n as u8 + 2; COOKIE_LEN]),
                "at once, with the cookie"
            );
            assert!(again.verify().is_some());
            tx = again.tx;
        }
        // A server that keeps asking is answered only at the next backoff, which reuses the
        // cookie it has (the REGISTER carrying it may have been lost in a flooded buffer) and may
        // again answer RETRYs at once.
        let retry = Message::Retry(Retry {
            tx,
            cookie: [9; COOKIE_LEN],
        })
        .to_vec();
        e.handle_packet(now, UNIX, home(), &retry);
        assert!(sent(&mut e).is_empty());
        let later = now + Duration::from_secs(1);
        e.handle_timeout(later, UNIX);
        let backoff = register_to(&sent(&mut e), home());
        assert_eq!(
            backoff.cookie,
            Some([MAX_COOKIE_RESENDS as u8 + 1; COOKIE_LEN])
        );
        let retry = Message::Retry(Retry {
            tx: backoff.tx,
            cookie: [9; COOKIE_LEN],
        })
        .to_vec();
        e.handle_packet(later, UNIX, home(), &retry);
        let again = register_to(&sent(&mut e), home());
        assert_eq!(
            again.cookie,
            Some([9; COOKIE_LEN]),
            "answered at once again"
        );
        // A REGISTER that carried a cookie proved our address: no confirming REFRESH needed.
        e.handle_packet(later, UNIX, home(), &registered_msg(again.tx));
        e.handle_timeout(later, UNIX);
        assert!(refresh_to(&sent(&mut e), home()).is_none());
    }

    #[test]
    fn the_first_registered_is_confirmed_at_once_with_a_refresh() {
        let now = Instant::now();
        let mut e = engine(now);
        e.handle_timeout(now, UNIX);
        let r = register_to(&sent(&mut e), home());
        e.handle_packet(now, UNIX, home(), &registered_msg(r.tx));
        assert_eq!(e.poll_timeout(), Some(now), "due at once");
        e.handle_timeout(now, UNIX);
        let refresh = refresh_to(&sent(&mut e), home()).expect("a REFRESH at once");
        // Its answer schedules the ordinary refresh.
        e.handle_packet(now, UNIX, home(), &registered_msg(refresh.tx));
        assert!(e.servers[0].next_action() >= now + Duration::from_secs(25));
    }

    #[test]
    fn ticket_registrations_expire_after_use() {
        let now = Instant::now();
        let mut e = engine(now);
        let ticket_server: SocketAddr = "192.0.2.50:3478".parse().unwrap();
        let peer = Identity::from_seed(&[8; 32]).node_id();
        e.add_ticket_rendezvous(now, ticket_server, peer);
        e.connect(now, UNIX, peer, &[]);
        sent(&mut e);
        let servers = |e: &Engine| {
            e.registrations()
                .iter()
                .map(|(s, _)| *s)
                .collect::<Vec<_>>()
        };
        assert_eq!(servers(&e), [home(), ticket_server]);
        // The attempt runs (nobody answers) until its timeout, 10 s; the registration is kept
        // through it and for the grace period after.
        let failed = now + Duration::from_secs(10);
        run_until(
            &mut e,
            failed + TICKET_REGISTRATION_GRACE - Duration::from_secs(1),
        );
        assert_eq!(servers(&e), [home(), ticket_server]);
        run_until(
            &mut e,
            failed + TICKET_REGISTRATION_GRACE + Duration::from_secs(1),
        );
        assert_eq!(servers(&e), [home()], "dropped after use; ours is kept");
        // A ticket naming one of our own servers does not make it temporary.
        e.add_ticket_rendezvous(now, home(), peer);
        run_until(&mut e, failed + 10 * TICKET_REGISTRATION_GRACE);
        assert_eq!(servers(&e), [home()]);
    }

    #[test]
    fn an_unknown_peer_answer_is_retried_for_a_while() {
        use shipworm_rendezvous::wire::{IntroAck, IntroStatus};
        let now = Instant::now();
        let mut e = engine(now);
        e.handle_timeout(now, UNIX);
        let r = register_to(&sent(&mut e), home());
        e.handle_packet(now, UNIX, home(), &registered_msg(r.tx));
        let peer = Identity::from_seed(&[8; 32]).node_id();
        e.connect(now, UNIX, peer, &[]);
        let failed = |e: &mut Engine| {
            std::iter::from_fn(|| e.poll_event()).any(|ev| {
                matches!(
                    ev,
                    NodeEvent::ConnectFailed {
                        error: crate::engine::ConnectError::UnknownPeer(_),
                        ..
                    }
                )
            })
        };
        // Every introduction is answered "unknown peer" (the peer is registering right now).
        let mut t = now;
        let mut answered = 0;
        let mut failed_at = None;
        while t < now + Duration::from_secs(6) && failed_at.is_none() {
            for tr in sent(&mut e) {
                // The server keeps us registered.
                if let Ok(Message::Refresh(r)) = Message::parse(&tr.contents) {
                    e.handle_packet(t, UNIX, home(), &registered_msg(r.tx));
                }
                if let Ok(Message::Introduce(i)) = Message::parse(&tr.contents) {
                    let ack = Message::IntroAck(IntroAck {
                        tx: i.tx,
                        status: IntroStatus::UnknownPeer,
                        target_addr: None,
                    });
                    e.handle_packet(t, UNIX, home(), &ack.to_vec());
                    answered += 1;
                    if failed(&mut e) {
                        failed_at = Some(t);
                    }
                }
            }
            t += Duration::from_millis(50);
            e.handle_timeout(t, UNIX);
        }
        let failed_at = failed_at
            .unwrap_or_else(|| panic!("the clear error comes in the end (asked {answered} times)"));
        assert!(answered >= 3, "asked {answered} times");
        assert!(
            failed_at >= now + crate::engine::introduction::UNKNOWN_PEER_PATIENCE,
            "failed after {:?}",
            failed_at - now
        );
        assert!(failed_at < now + Duration::from_secs(5));
    }

    #[test]
    fn a_ticket_server_added_as_ours_is_kept() {
        let now = Instant::now();
        let mut e = engine(now);
        let s: SocketAddr = "192.0.2.50:3478".parse().unwrap();
        e.add_ticket_rendezvous(now, s, Identity::from_seed(&[8; 32]).node_id());
        e.add_rendezvous(now, s);
        run_until(&mut e, now + 10 * TICKET_REGISTRATION_GRACE);
        assert_eq!(e.registrations().len(), 2);
    }

    fn registered(lifetime_s: u16) -> Registered {
        Registered {
            tx: 1,
            lifetime_s,
            alt_stun_port: 0,
            token: [0; shipworm_rendezvous::wire::TOKEN_LEN],
            observed: "192.0.2.7:4000".parse().unwrap(),
            flags: 0,
        }
    }

    #[test]
    fn a_tiny_claimed_lifetime_does_not_make_the_node_refresh_in_a_loop() {
        let now = Instant::now();
        let server = "192.0.2.1:3478".parse().unwrap();
        for lifetime in [0, 1, 2, 3] {
            let mut r = Registration::new(server, now, Duration::from_secs(25));
            r.on_registered(now, &registered(lifetime));
            assert!(r.next >= now + MIN_REFRESH, "lifetime {lifetime}");
        }
        let mut r = Registration::new(server, now, Duration::from_secs(25));
        r.on_registered(now, &registered(3600));
        assert_eq!(r.next, now + Duration::from_secs(25));
    }

    #[test]
    fn any_claimed_server_time_gives_a_clock_message_without_overflow() {
        let now = Instant::now();
        let server = "192.0.2.1:3478".parse().unwrap();
        for server_time in [0, 1 << 63, u64::MAX] {
            for ours in [0, u64::MAX] {
                let mut r = Registration::new(server, now, Duration::from_secs(25));
                let said = r.on_error(now, ErrorCode::ClockSkew, server_time, ours);
                assert!(
                    matches!(&said, Some(RegEvent::Refused(m)) if m.contains("clock is off by")),
                    "{said:?}"
                );
            }
        }
    }
}
