//! Keeping a registration at each rendezvous server, sans-IO: [`Registration`] is one server's
//! state; the engine polls every server and routes REGISTERED and ERROR to it.
//!
//! REGISTER (signed) once, then REFRESH with the token every `refresh_interval` (below common NAT
//! UDP timeouts, so the mapping the server observes stays open). A refused REFRESH (the server
//! restarted, or our NAT rebound) falls back to REGISTER at once; silence is retried with backoff,
//! forever: a rendezvous that comes back is found again by itself.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shipworm_rendezvous::wire::{
    self, ErrorCode, Message, Refresh, Register, Registered, TOKEN_LEN,
};
use shipworm_tunnel::{wire::addr, Identity};

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

/// What happened to the registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegEvent {
    /// The server (re)confirmed us; `observed` is our address as it sees it.
    Registered {
        /// Our reflexive address.
        observed: SocketAddr,
        /// Whether it differs from the last one (first registration, or the NAT rebound).
        changed: bool,
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

/// One server's registration state.
#[derive(Debug)]
pub struct Registration {
    /// The server.
    pub server: SocketAddr,
    token: Option<[u8; TOKEN_LEN]>,
    observed: Option<SocketAddr>,
    alt_stun_port: u16,
    waiting: Waiting,
    tx: u64,
    tries: u32,
    retry: Duration,
    next: Instant,
    last_timestamp: u64,
    refresh_interval: Duration,
}

impl Registration {
    /// A registration to start at `now`.
    pub fn new(server: SocketAddr, now: Instant, refresh_interval: Duration) -> Self {
        Self {
            server: addr::normalize(server),
            token: None,
            observed: None,
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

    /// The token for INTRODUCE, while registered.
    pub fn token(&self) -> Option<[u8; TOKEN_LEN]> {
        self.token
    }

    /// The server's second STUN port (0: none).
    pub fn alt_stun_port(&self) -> u16 {
        self.alt_stun_port
    }

    /// When [`Registration::poll`] has something to do.
    pub fn next_action(&self) -> Instant {
        self.next
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
                }
                let ts = unix_ms.max(self.last_timestamp + 1);
                self.last_timestamp = ts;
                Message::Register(Register::signed(identity, tx, ts))
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
        let changed = self.observed != Some(r.observed);
        self.token = Some(r.token);
        self.observed = Some(r.observed);
        self.alt_stun_port = r.alt_stun_port;
        self.waiting = Waiting::Nothing;
        // Refresh well before the server's lifetime runs out, and below NAT timeouts; the
        // lifetime is the server's claim, so a tiny one cannot make us refresh in a loop.
        let lifetime = Duration::from_secs(r.lifetime_s as u64);
        self.next = now + self.refresh_interval.min(lifetime / 3).max(MIN_REFRESH);
        RegEvent::Registered {
            observed: r.observed,
            changed,
        }
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
    /// Registers with one more rendezvous (a ticket's home server, say); no-op if known.
    pub fn add_rendezvous(&mut self, now: Instant, server: SocketAddr) {
        let server = addr::normalize(server);
        if self.servers.iter().any(|r| r.server == server) {
            return;
        }
        if self.servers.len() >= MAX_RENDEZVOUS {
            self.count_drop(DropReason::RendezvousServersFull);
            return;
        }
        self.servers
            .push(Registration::new(server, now, self.config.refresh_interval));
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
        for i in 0..self.servers.len() {
            let tx = self.next_id();
            if let Some(req) = self.servers[i].poll(now, unix_ms, &self.identity, tx) {
                let server = self.servers[i].server;
                self.push_transmit(server, req);
            }
        }
    }

    /// REGISTERED from server `si`, for the transaction it waits for.
    pub(super) fn on_registered(&mut self, now: Instant, si: usize, r: &wire::Registered) {
        let from = self.servers[si].server;
        if let RegEvent::Registered { observed, changed } = self.servers[si].on_registered(now, r) {
            self.add_local_candidate(observed, CandidateKind::Reflexive);
            if changed || self.maps_per_destination.is_none() {
                self.check_mapping(from, r.alt_stun_port, observed);
            }
            if changed {
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

    fn registered(lifetime_s: u16) -> Registered {
        Registered {
            tx: 1,
            lifetime_s,
            alt_stun_port: 0,
            token: [0; shipworm_rendezvous::wire::TOKEN_LEN],
            observed: "192.0.2.7:4000".parse().unwrap(),
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
