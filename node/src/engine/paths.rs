//! Candidate pairs of one peer and the choice among them (`docs/protocol.md` §"Paths").
//!
//! Every pair is checked with authenticated probes. A pair *succeeds* only when a probe we sent
//! to its remote address was answered: the probe crossed one way and the answer the other, so a
//! one-way path can never succeed, and so can never be selected. Pairs keep being probed; the
//! selected one often, so that a path that stops answering is left within about a second.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Most pairs kept per peer.
pub const MAX_PAIRS: usize = 32;
/// A failed pair keeps its place this long before a candidate the peer *claims* may take it: a
/// peer cannot turn our checks into a stream of probes to ever new addresses. An address its
/// authenticated packets came from ([`CandidateKind::PeerReflexive`]) takes a place at once
/// (see [`Paths::add_on`]).
pub const FAILED_HOLD: Duration = Duration::from_secs(60);

/// A switch for speed goes only to a pair answered at most this long before the selected one.
pub const FRESH_FOR_SPEED: Duration = Duration::from_millis(500);

/// A pair checked this long without an answer may make room for an address the peer's packets
/// come from (an answer takes one round trip; a spray's fresh pairs keep their place).
pub const UNANSWERED_GRACE: Duration = Duration::from_secs(1);

/// Where a remote candidate came from (serialized as its [`CandidateKind::label`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CandidateKind {
    /// An interface address of the host.
    Host,
    /// Seen by a rendezvous server (server-reflexive).
    Reflexive,
    /// A port mapping on the gateway (UPnP IGD, NAT-PMP, PCP).
    Mapped,
    /// The source of an authenticated packet (peer-reflexive).
    PeerReflexive,
    /// A peer's address from its ticket or handshake, which do not say how it was learned
    /// (host, reflexive or mapped): remote candidates only.
    Advertised,
    /// Through a relay (the remote address is the path's stand-in in `100::/64`): the lowest
    /// priority, used only while no direct pair works.
    Relayed,
}

impl CandidateKind {
    /// Every kind, in declaration order.
    pub const ALL: [CandidateKind; 6] = [
        CandidateKind::Host,
        CandidateKind::Reflexive,
        CandidateKind::Mapped,
        CandidateKind::PeerReflexive,
        CandidateKind::Advertised,
        CandidateKind::Relayed,
    ];
}

/// The state of a pair, as WebRTC's candidate-pair stats name them (serialized as its
/// [`PairState::label`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum PairState {
    /// Not probed yet.
    Waiting,
    /// Probes out, no answer yet.
    InProgress,
    /// A probe was answered (both directions proven).
    Succeeded,
    /// No answer within the check period (still re-probed now and then).
    Failed,
}

/// One candidate pair: our socket to one remote address.
#[derive(Debug, Clone)]
pub struct Pair {
    /// Our socket: 0 is the main one; others were opened for birthday probing.
    pub local: u16,
    /// The remote address.
    pub remote: SocketAddr,
    /// How we learned it.
    pub kind: CandidateKind,
    /// Its state.
    pub state: PairState,
    /// Smoothed round-trip time.
    pub rtt: Option<Duration>,
    /// Last round-trip sample.
    pub last_rtt: Option<Duration>,
    /// The last few samples, newest at `recent_at - 1`: their minimum ranks the pair.
    recent: [Option<Duration>; RECENT_SAMPLES],
    recent_at: usize,
    /// Probes sent.
    pub probes_sent: u64,
    /// Answers received.
    pub answers_received: u64,
    /// When it was added.
    pub added: Instant,
    /// Last probe sent.
    pub last_probe: Option<Instant>,
    /// Last answer received.
    pub last_answer: Option<Instant>,
    /// When it last became failed.
    pub failed_at: Option<Instant>,
}

/// How many recent round-trip samples rank a pair.
const RECENT_SAMPLES: usize = 4;

impl Pair {
    /// The round-trip time that ranks this pair: the least of its last few samples. One slow
    /// sample (a neighbour lookup on a fresh path, a queue behind a burst of our own data) then
    /// does not hide a fast path the way a smoothed average would for many slow idle probes.
    pub fn rank_rtt(&self) -> Option<Duration> {
        self.recent.iter().flatten().min().copied()
    }

    fn new(local: u16, remote: SocketAddr, kind: CandidateKind, now: Instant) -> Self {
        // However it was first seen (a probe's source, say), a relayed path is one.
        let kind = if super::relay::is_relay_addr(&remote) {
            CandidateKind::Relayed
        } else {
            kind
        };
        Self {
            local,
            remote,
            kind,
            state: PairState::Waiting,
            rtt: None,
            last_rtt: None,
            recent: [None; RECENT_SAMPLES],
            recent_at: 0,
            probes_sent: 0,
            answers_received: 0,
            added: now,
            last_probe: None,
            last_answer: None,
            failed_at: None,
        }
    }
}

/// Timing of the checks.
#[derive(Debug, Clone)]
pub struct PathTiming {
    /// Probe interval while a pair is being established.
    pub check_interval: Duration,
    /// How long a new pair is checked at that pace before it counts as failed.
    pub check_period: Duration,
    /// Probe interval of the selected pair (also the failure detector's clock).
    pub selected_interval: Duration,
    /// Probe interval of other succeeded pairs, and of failed ones.
    pub idle_interval: Duration,
    /// A selected pair unanswered for this long is failed and left.
    pub path_timeout: Duration,
}

impl Default for PathTiming {
    fn default() -> Self {
        Self {
            check_interval: Duration::from_millis(100),
            check_period: Duration::from_secs(5),
            selected_interval: Duration::from_millis(250),
            idle_interval: Duration::from_secs(2),
            path_timeout: Duration::from_millis(1000),
        }
    }
}

/// All pairs of one peer.
#[derive(Debug, Default)]
pub struct Paths {
    /// The pairs.
    pub pairs: Vec<Pair>,
    /// Index of the selected pair.
    pub selected: Option<usize>,
}

impl Paths {
    /// Adds a pair of our main socket and `remote` if new (bounded); returns its index.
    pub fn add(&mut self, remote: SocketAddr, kind: CandidateKind, now: Instant) -> Option<usize> {
        self.add_on(0, remote, kind, now)
    }

    /// Adds a pair of our socket `local` and `remote` if new (bounded); returns its index.
    ///
    /// A full table makes room only in the place of an unselected pair that failed (the one
    /// that failed longest ago) or, for an address the peer's authenticated packets came from,
    /// also of one checked for [`UNANSWERED_GRACE`] without an answer (the oldest). A claimed
    /// candidate waits until a pair failed at least [`FAILED_HOLD`] ago; a peer-reflexive
    /// address (where the peer is, or where its NAT moved it) takes a failed pair's place at
    /// once. The lab caught the need: an easy side's table full of the hard side's spare-socket
    /// mappings refused the hard side's main mapping, and when the hard side moved its path
    /// there and closed its spare sockets, the easy side had nowhere to send for a minute.
    /// Answered pairs and pairs younger than the grace keep their place: during a birthday
    /// spray hundreds of sources arrive within a round trip, and replacing pairs whose answers
    /// are on their way would spend the send gate's budget for the peer's IP on addresses
    /// forgotten before they answer.
    pub fn add_on(
        &mut self,
        local: u16,
        remote: SocketAddr,
        kind: CandidateKind,
        now: Instant,
    ) -> Option<usize> {
        let remote = shipworm_tunnel::wire::addr::normalize(remote);
        if remote.port() == 0 || remote.ip().is_unspecified() || remote.ip().is_multicast() {
            return None;
        }
        if let Some(i) = self
            .pairs
            .iter()
            .position(|p| p.local == local && p.remote == remote)
        {
            // An address first known only as "some address of the peer" (a ticket's) is
            // labelled by what we learn of it later.
            if self.pairs[i].kind == CandidateKind::Advertised {
                self.pairs[i].kind = kind;
            }
            return Some(i);
        }
        if self.pairs.len() >= MAX_PAIRS {
            let victim = self.victim(kind == CandidateKind::PeerReflexive, now)?;
            self.remove(victim);
        }
        self.pairs.push(Pair::new(local, remote, kind, now));
        Some(self.pairs.len() - 1)
    }

    /// The unselected pair a new one may replace in a full table, failed or (for an observed
    /// address) long unanswered (see [`Paths::add_on`]).
    fn victim(&self, observed: bool, now: Instant) -> Option<usize> {
        let since = |t: Instant| now.saturating_duration_since(t);
        self.pairs
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != self.selected)
            .filter_map(|(i, p)| match (p.state, observed) {
                (PairState::Failed, _) => {
                    let at = p.failed_at?;
                    (observed || since(at) >= FAILED_HOLD).then_some((i, (0, at)))
                }
                (PairState::Waiting | PairState::InProgress, true)
                    if since(p.added) >= UNANSWERED_GRACE =>
                {
                    Some((i, (1, p.added)))
                }
                _ => None,
            })
            .min_by_key(|(_, key)| *key)
            .map(|(i, _)| i)
    }

    /// Forgets every pair that uses one of the sockets `locals` (they were closed).
    pub fn drop_sockets(&mut self, locals: &[u16]) {
        let mut i = 0;
        while i < self.pairs.len() {
            if locals.contains(&self.pairs[i].local) {
                self.remove(i);
            } else {
                i += 1;
            }
        }
    }

    fn remove(&mut self, i: usize) {
        self.pairs.remove(i);
        self.selected = match self.selected {
            Some(s) if s == i => None,
            Some(s) if s > i => Some(s - 1),
            other => other,
        };
    }

    /// The selected pair as (our socket, remote address).
    pub fn selected_path(&self) -> Option<(u16, SocketAddr)> {
        self.selected
            .map(|i| (self.pairs[i].local, self.pairs[i].remote))
    }

    /// The selected remote address.
    pub fn selected_remote(&self) -> Option<SocketAddr> {
        self.selected.map(|i| self.pairs[i].remote)
    }

    /// Pairs due for a probe at `now`.
    pub fn due(&self, now: Instant, t: &PathTiming) -> Vec<usize> {
        let mut out = Vec::new();
        for (i, p) in self.pairs.iter().enumerate() {
            let interval = match p.state {
                _ if Some(i) == self.selected => t.selected_interval,
                PairState::Waiting | PairState::InProgress => t.check_interval,
                PairState::Succeeded | PairState::Failed => t.idle_interval,
            };
            if p.last_probe
                .is_none_or(|l| now.saturating_duration_since(l) >= interval)
            {
                out.push(i);
            }
        }
        out
    }

    /// The earliest time a probe or a state change is due.
    pub fn next_due(&self, t: &PathTiming) -> Option<Instant> {
        self.pairs
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let interval = match p.state {
                    _ if Some(i) == self.selected => t.selected_interval,
                    PairState::Waiting | PairState::InProgress => t.check_interval,
                    _ => t.idle_interval,
                };
                p.last_probe.map_or(p.added, |l| l + interval)
            })
            .min()
    }

    /// Records a probe sent on pair `i`.
    pub fn sent(&mut self, i: usize, now: Instant) {
        let p = &mut self.pairs[i];
        p.probes_sent += 1;
        p.last_probe = Some(now);
        if p.state == PairState::Waiting {
            p.state = PairState::InProgress;
        }
    }

    /// Records an answer to a probe sent from our main socket to `remote` at `sent_at`.
    pub fn answered(&mut self, remote: SocketAddr, sent_at: Instant, now: Instant) {
        self.answered_on(0, remote, sent_at, now);
    }

    /// Records an answer to a probe sent from our socket `local` to `remote` at `sent_at`.
    pub fn answered_on(&mut self, local: u16, remote: SocketAddr, sent_at: Instant, now: Instant) {
        let Some(p) = self
            .pairs
            .iter_mut()
            .find(|p| p.local == local && p.remote == remote)
        else {
            return;
        };
        let sample = now.saturating_duration_since(sent_at);
        p.answers_received += 1;
        p.last_answer = Some(now);
        p.last_rtt = Some(sample);
        p.recent[p.recent_at] = Some(sample);
        p.recent_at = (p.recent_at + 1) % RECENT_SAMPLES;
        // RFC 6298-style smoothing, 1/8 gain.
        p.rtt = Some(match p.rtt {
            Some(r) => (r * 7 + sample) / 8,
            None => sample,
        });
        p.state = PairState::Succeeded;
    }

    /// Marks pairs that stopped answering as failed.
    pub fn expire(&mut self, now: Instant, t: &PathTiming) {
        for (i, p) in self.pairs.iter_mut().enumerate() {
            let silent_since = p.last_answer.unwrap_or(p.added);
            let timeout = match p.state {
                _ if Some(i) == self.selected => t.path_timeout,
                PairState::Waiting | PairState::InProgress => t.check_period,
                // Unselected succeeded pairs are probed slowly: allow a few intervals.
                PairState::Succeeded => t.idle_interval * 3,
                PairState::Failed => continue,
            };
            if p.last_probe.is_some_and(|l| l > silent_since)
                && now.saturating_duration_since(silent_since) >= timeout
            {
                p.state = PairState::Failed;
                p.failed_at = Some(now);
            }
        }
    }

    /// Chooses the best succeeded pair: lowest RTT, IPv6 at equal RTT, with hysteresis against
    /// flapping. Returns the new selection if it changed.
    pub fn select(&mut self) -> Option<usize> {
        let score = |p: &Pair| {
            let rtt = p.rank_rtt().unwrap_or(Duration::MAX);
            // Any direct pair before a relayed one; equal within a millisecond counts as
            // equal; then IPv6 first.
            (
                p.kind == CandidateKind::Relayed,
                rtt.as_millis(),
                p.remote.is_ipv4(),
            )
        };
        let best = self
            .pairs
            .iter()
            .enumerate()
            .filter(|(_, p)| p.state == PairState::Succeeded)
            .min_by_key(|(_, p)| score(p))
            .map(|(i, _)| i);
        let keep = match (self.selected, best) {
            (_, None) => {
                let changed = self
                    .selected
                    .is_some_and(|s| self.pairs[s].state != PairState::Succeeded);
                if changed {
                    self.selected = None;
                }
                return None;
            }
            (Some(cur), Some(b)) if self.pairs[cur].state == PairState::Succeeded => {
                let (c, n) = (&self.pairs[cur], &self.pairs[b]);
                let (crtt, nrtt) = (
                    c.rank_rtt().unwrap_or(Duration::MAX),
                    n.rank_rtt().unwrap_or(Duration::MAX),
                );
                // Move only for a clearly better path: 10 % and at least 2 ms faster, or same
                // speed on IPv6 where the current one is IPv4.
                let margin = (crtt / 10).max(Duration::from_millis(2));
                // Off a relay as soon as a direct pair is proven, whatever its RTT.
                let direct = c.kind == CandidateKind::Relayed && n.kind != CandidateKind::Relayed;
                // For speed, move only to a pair answered about as recently as the selected one
                // (unselected pairs are probed every 2 s: one answered long ago may lead
                // through a socket the peer has closed since), and not to another of our
                // sockets toward the same remote address: that is the same way through the same
                // NATs, its samples differ by noise only, and moving there lets a hard side
                // close the spare socket the peer sends to.
                let fresh = match (c.last_answer, n.last_answer) {
                    (Some(c), Some(n)) => n + FRESH_FOR_SPEED >= c,
                    _ => false,
                };
                let faster = direct || (fresh && c.remote != n.remote && nrtt + margin < crtt);
                let v6_upgrade = c.remote.is_ipv4()
                    && n.remote.is_ipv6()
                    && nrtt.as_millis() <= crtt.as_millis();
                !(faster || v6_upgrade)
            }
            _ => false,
        };
        if keep || self.selected == best {
            return None;
        }
        self.selected = best;
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    #[test]
    fn only_answered_pairs_are_selected_and_ipv6_wins_ties() {
        let t0 = Instant::now();
        let mut p = Paths::default();
        let v4: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
        p.add(v4, CandidateKind::Reflexive, t0);
        p.add(v6, CandidateKind::Host, t0);
        p.sent(0, t0);
        p.sent(1, t0);
        assert_eq!(p.select(), None, "nothing answered yet");
        p.answered(v4, t0, at(t0, 10));
        assert_eq!(p.select(), Some(0));
        p.answered(v6, t0, at(t0, 10));
        assert_eq!(p.select(), Some(1), "same RTT: IPv6");
        assert_eq!(p.selected_remote(), Some(v6));
    }

    #[test]
    fn pairs_on_closed_sockets_are_forgotten_and_selection_stays_valid() {
        let t0 = Instant::now();
        let mut p = Paths::default();
        let r: SocketAddr = "192.0.2.1:1".parse().unwrap();
        p.add_on(0, r, CandidateKind::Reflexive, t0);
        p.add_on(5, r, CandidateKind::PeerReflexive, t0);
        p.add_on(6, r, CandidateKind::PeerReflexive, t0);
        p.answered_on(6, r, t0, at(t0, 5));
        p.answered_on(5, r, t0, at(t0, 9));
        assert_eq!(p.select(), Some(2));
        p.drop_sockets(&[5]);
        assert_eq!(p.pairs.len(), 2);
        assert_eq!(
            p.selected_path(),
            Some((6, r)),
            "the selected pair survives, re-indexed"
        );
        p.drop_sockets(&[6]);
        assert_eq!(p.selected_path(), None);
    }

    #[test]
    fn a_failed_pair_keeps_its_place_for_a_while() {
        let t0 = Instant::now();
        let t = PathTiming::default();
        let mut p = Paths::default();
        for k in 0..MAX_PAIRS as u16 {
            p.add(
                SocketAddr::from(([192, 0, 2, 1], k + 1)),
                CandidateKind::Advertised,
                t0,
            );
            p.sent(k as usize, at(t0, 1));
        }
        p.expire(at(t0, 5000), &t);
        assert!(p.pairs.iter().all(|x| x.state == PairState::Failed));
        let fresh = SocketAddr::from(([192, 0, 2, 2], 1));
        assert_eq!(p.add(fresh, CandidateKind::Advertised, at(t0, 6000)), None);
        let later = at(t0, 5000) + FAILED_HOLD;
        assert!(p.add(fresh, CandidateKind::Advertised, later).is_some());
    }

    /// Where the peer's packets come from takes the place of a failed pair at once (the one that
    /// failed longest ago), or of one checked past the grace without an answer; never the
    /// selected pair's, an answered one's, or one whose answer may still come. A claim waits
    /// until a pair failed long ago.
    #[test]
    fn an_observed_address_takes_the_place_of_a_failed_or_unanswered_pair() {
        let t0 = Instant::now();
        let t = PathTiming::default();
        let mut p = Paths::default();
        let addr = |k: u16| SocketAddr::from(([192, 0, 2, 1], k));
        let gone = |p: &Paths, k: u16| !p.pairs.iter().any(|x| x.local == k && x.remote == addr(1));
        // Sockets 30 and 31 are checked first and fail, 30 before 31.
        for (k, ms) in [(30, 0), (31, 100)] {
            let i = p
                .add_on(k, addr(1), CandidateKind::PeerReflexive, at(t0, ms))
                .unwrap();
            p.sent(i, at(t0, ms + 1));
        }
        // Sockets 0..29 come later: 0..4 answer (0 is selected), the rest are being checked,
        // 5 since before 6..29.
        for k in 0..30 {
            let ms = if k == 5 { 4_400 } else { 4_500 };
            let i = p
                .add_on(k, addr(1), CandidateKind::PeerReflexive, at(t0, ms))
                .unwrap();
            p.sent(i, at(t0, ms + 1));
        }
        for k in 0..5 {
            p.answered_on(k, addr(1), at(t0, 4_501), at(t0, 4_510 + k as u64));
        }
        p.select();
        assert_eq!(p.selected_path(), Some((0, addr(1))));
        p.expire(at(t0, 5_000), &t);
        p.expire(at(t0, 5_100), &t);
        let state = |p: &Paths, k: u16| p.pairs.iter().find(|x| x.local == k).unwrap().state;
        assert!(state(&p, 30) == PairState::Failed && state(&p, 31) == PairState::Failed);
        assert!((5..30).all(|k| state(&p, k) == PairState::InProgress));
        assert_eq!(p.pairs.len(), MAX_PAIRS);
        let fresh = |n: u16| SocketAddr::from(([198, 51, 100, 7], n));
        let now = at(t0, 5_200);
        assert_eq!(
            p.add(fresh(1), CandidateKind::Advertised, now),
            None,
            "a claim waits"
        );
        assert!(p.add(fresh(2), CandidateKind::PeerReflexive, now).is_some());
        assert!(
            gone(&p, 30) && !gone(&p, 31),
            "the pair that failed first goes first"
        );
        assert!(p.add(fresh(3), CandidateKind::PeerReflexive, now).is_some());
        assert!(gone(&p, 31));
        assert_eq!(
            p.add(fresh(4), CandidateKind::PeerReflexive, now),
            None,
            "pairs answered or checked for less than the grace keep their place"
        );
        assert!((0..30).all(|k| !gone(&p, k)));
        // Past the grace, the pair checked longest without an answer goes; a claim still waits.
        let past = at(t0, 4_400) + UNANSWERED_GRACE;
        assert_eq!(p.add(fresh(4), CandidateKind::Advertised, past), None);
        assert!(p
            .add(fresh(4), CandidateKind::PeerReflexive, past)
            .is_some());
        assert!(gone(&p, 5) && (6..30).all(|k| !gone(&p, k)));
        assert!(
            (0..5).all(|k| !gone(&p, k)),
            "answered pairs keep their place"
        );
        assert_eq!(p.selected_path(), Some((0, addr(1))));
        // A pair that failed long ago makes room for a claim too.
        let i = p.pairs.iter().position(|x| x.remote == fresh(2)).unwrap();
        p.sent(i, at(t0, 5_201));
        let failed = at(t0, 10_300);
        p.expire(failed, &t);
        assert_eq!(p.pairs[i].state, PairState::Failed);
        let soon = failed + Duration::from_secs(1);
        assert_eq!(p.add(fresh(5), CandidateKind::Advertised, soon), None);
        assert!(p
            .add(fresh(5), CandidateKind::Advertised, failed + FAILED_HOLD)
            .is_some());
    }

    #[test]
    fn hysteresis_and_failover() {
        let t0 = Instant::now();
        let t = PathTiming::default();
        let mut p = Paths::default();
        let a: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let b: SocketAddr = "192.0.2.2:1".parse().unwrap();
        p.add(a, CandidateKind::Reflexive, t0);
        p.add(b, CandidateKind::Host, t0);
        p.answered(a, t0, at(t0, 20));
        p.select();
        p.answered(b, at(t0, 0), at(t0, 19));
        assert_eq!(p.select(), None, "1 ms faster is not worth a switch");
        // The selected path goes silent: probes continue, answers stop.
        p.sent(0, at(t0, 100));
        p.expire(at(t0, 900), &t);
        assert_eq!(p.pairs[0].state, PairState::Succeeded);
        p.sent(0, at(t0, 1000));
        p.expire(at(t0, 1021), &t);
        assert_eq!(
            p.pairs[0].state,
            PairState::Failed,
            "about a second without answers"
        );
        assert_eq!(p.select(), Some(1));
    }

    #[test]
    fn one_slow_first_sample_does_not_hide_a_fast_ipv6_path() {
        let t0 = Instant::now();
        let mut p = Paths::default();
        let v4: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:1".parse().unwrap();
        p.add(v4, CandidateKind::Reflexive, t0);
        p.add(v6, CandidateKind::Host, t0);
        p.answered(v4, t0, at(t0, 1));
        assert_eq!(p.select(), Some(0));
        // The first IPv6 answer waited 300 ms (neighbour discovery on a fresh path)...
        p.answered(v6, t0, at(t0, 300));
        assert_eq!(p.select(), None, "slower than IPv4 for now");
        // ...the next one is as fast as IPv4: move at once, not after dozens of idle probes.
        p.answered(v6, at(t0, 2000), at(t0, 2001));
        assert_eq!(p.select(), Some(1));
        // A pair that became slow for good stops ranking well once its fast samples age out.
        for k in 0..RECENT_SAMPLES as u64 {
            let sent = at(t0, 3000 + k * 1000);
            p.answered(v6, sent, sent + Duration::from_millis(50));
            p.answered(v4, sent, sent + Duration::from_millis(1));
        }
        assert_eq!(p.select(), Some(0));
    }
}
