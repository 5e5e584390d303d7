//! Birthday-paradox hole punching for one "hard" NAT (per-destination mapping) against an "easy"
//! one (endpoint-independent mapping), when neither side holds a port mapping.
//!
//! The hard side opens many extra sockets and sends a probe from each to the easy side's mapped
//! address: every socket gets its own mapping on the hard NAT, each open for exactly that
//! address. The easy side meanwhile probes random ports of the hard side's IP from its one
//! mapped address. A probe that lands on one of the hard side's mapped ports is answered, and
//! that pair is proven both ways like any other. With `s` hard-side mappings among 64 512 ports
//! and `p` easy-side probes, the chance of no hit is `(1 - s/64512)^p`: for 256 × 2048, about
//! 3 · 10⁻⁴ (`docs/protocol.md` §"Hard NATs, port mappings and extra sockets").
//!
//! Port prediction: a hard side whose NAT allocates ports one after the other says so
//! (`FLAG_PORTS_SEQUENTIAL`, from its NAT check); its mappings toward us then lie just above the
//! port the rendezvous observed, so the easy side probes those `predict_window` ports first and
//! random ones after.
//!
//! Both sides aim only at the address a rendezvous observed for the peer (the INTRO_ACK to one
//! of our transactions: the peer registered from there), never at a candidate the peer merely
//! claims; only once a session proved the peer's key; and under global limits: a few runs at a
//! time, one shared probe rate for the easy side, and spare sockets that close a bounded time
//! after the last round whether or not a path was found.
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use shipworm_tunnel::rng::RngCore;
use shipworm_tunnel::NodeId;

use super::nat_check::{is_public_v4, peer_is_easy, peer_is_hard, peer_is_sequential};
use super::paths::CandidateKind;
use super::{DropReason, Engine, NodeEvent};

/// The probe budget and pace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BirthdayConfig {
    /// Extra sockets the hard side opens.
    pub sockets: u16,
    /// Random ports the easy side probes.
    pub probes: u32,
    /// The easy side's probe rate, per second.
    pub rate: u32,
    /// Rounds of probes from every hard-side socket (keeps the mappings open meanwhile).
    pub hard_rounds: u32,
    /// Time between hard-side rounds.
    pub round_interval: Duration,
    /// Most easy-side runs at once (they share `rate`).
    pub max_easy_runs: usize,
    /// Most hard-side runs at once (they share the spare sockets).
    pub max_hard_runs: usize,
    /// How long the spare sockets stay open after the last hard-side round without a path.
    pub socket_linger: Duration,
    /// Against a hard side that allocates ports sequentially (`FLAG_PORTS_SEQUENTIAL`), the
    /// easy side's first probes go to this many ports just above the port the rendezvous
    /// observed, then to random ones (0: no prediction). Part of `probes`, not on top.
    pub predict_window: u32,
}

impl Default for BirthdayConfig {
    fn default() -> Self {
        Self {
            sockets: 256,
            probes: 2048,
            rate: 1000,
            hard_rounds: 8,
            round_interval: Duration::from_millis(500),
            max_easy_runs: 2,
            max_hard_runs: 2,
            socket_linger: Duration::from_secs(3),
            predict_window: 128,
        }
    }
}

/// How long birthday probing waits for the rendezvous' observation of the peer before it asks
/// again (the INTRO_ACK follows the handshake by one round trip to the rendezvous).
pub const REINTRODUCE_AFTER: Duration = Duration::from_secs(1);
/// Most fresh introductions per peer to get that observation.
pub const MAX_REINTRODUCTIONS: u8 = 2;

/// A spare socket the peer's packets arrived on this recently stays open when the others close:
/// the peer may have chosen the path through it (its own birthday hit), whatever we chose.
pub const SOCKET_IN_USE: Duration = Duration::from_millis(1500);

/// Most spare sockets remembered per peer as carrying its packets (a birthday spray hits many).
const INBOUND_SOCKETS: usize = 64;

/// Birthday runs with one peer start at least this far apart: a session that keeps losing its
/// paths does not turn into a stream of sprays.
pub const REPUNCH_INTERVAL: Duration = Duration::from_secs(10);

/// The lowest port the easy side probes (below it, NATs rarely map).
pub const FIRST_PORT: u16 = 1024;

/// One side's part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Birthday {
    /// We map per destination: probe the easy side's address from many sockets.
    Hard {
        /// The easy side's mapped addresses.
        targets: Vec<SocketAddr>,
        /// Rounds still to send.
        rounds_left: u32,
        /// When the next round is due.
        next: Instant,
    },
    /// We map independently: probe random ports of the hard side's IP.
    Easy {
        /// The hard side's IP.
        ip: IpAddr,
        /// The hard side allocates sequentially: the port the rendezvous observed, above which
        /// the first probes go.
        predict_from: Option<u16>,
        /// Probes sent.
        sent: u32,
        /// When probing began.
        started: Instant,
    },
}

impl Birthday {
    /// How many easy-side probes are due by `now` (paced at `rate`, capped at `probes`).
    pub fn easy_due(config: &BirthdayConfig, sent: u32, started: Instant, now: Instant) -> u32 {
        let elapsed = now.saturating_duration_since(started).as_secs_f64();
        let allowed = ((elapsed * config.rate as f64) as u32 + 1).min(config.probes);
        allowed.saturating_sub(sent)
    }

    /// When this side wants to act next.
    pub fn next_action(&self, now: Instant) -> Instant {
        match self {
            Birthday::Hard { next, .. } => *next,
            // Pace in 10 ms steps.
            Birthday::Easy { .. } => now + Duration::from_millis(10),
        }
    }
}

/// The `n`-th predicted port above `base` (the port a rendezvous observed for a hard side that
/// allocates sequentially): `base + 1 + n`, wrapping inside 1024–65535 as such NATs do.
pub fn predicted_port(base: u16, n: u32) -> u16 {
    let span = u32::from(u16::MAX - FIRST_PORT) + 1;
    let off = (u32::from(base.max(FIRST_PORT) - FIRST_PORT) + 1 + n) % span;
    FIRST_PORT + off as u16
}

/// The chance that no easy-side probe hits any hard-side mapping.
pub fn miss_probability(sockets: u16, probes: u32) -> f64 {
    let ports = (u16::MAX - FIRST_PORT + 1) as f64;
    (1.0 - sockets as f64 / ports).powi(probes as i32)
}

impl Engine {
    /// The driver opened the extra sockets asked for by [`NodeEvent::OpenSockets`].
    pub fn sockets_opened(&mut self, first: u16, count: u16) {
        self.sockets_requested = false;
        self.spare_sockets.extend(
            (0..count)
                .map(|i| first.wrapping_add(i))
                .filter(|id| *id != 0),
        );
    }

    /// Asks the driver for `count` more spare sockets, unless a request is pending.
    fn open_spare_sockets(&mut self, count: u16) {
        if count == 0 || self.sockets_requested {
            return;
        }
        self.sockets_requested = true;
        let first = self.next_socket_id.max(1);
        self.next_socket_id = first.wrapping_add(count);
        self.push_event(NodeEvent::OpenSockets { first, count });
    }

    /// Closes the spare sockets once no hard-side run needs them and `socket_linger` passed
    /// since the last round, path or no path; sockets in use stay.
    pub(super) fn close_idle_sockets(&mut self, now: Instant) {
        if self.sockets_close_at.is_none_or(|t| now < t)
            || self
                .peers
                .values()
                .any(|p| matches!(p.birthday, Some(Birthday::Hard { .. })))
        {
            return;
        }
        self.sockets_close_at = None;
        self.close_unused_sockets(now);
    }

    /// Closes the spare sockets not in use, once no birthday run is going on (a path was
    /// selected).
    pub(super) fn release_sockets(&mut self, now: Instant) {
        if self.peers.values().any(|p| p.birthday.is_some()) {
            return;
        }
        self.close_unused_sockets(now);
    }

    /// Closes every spare socket not in use: those of selected paths, and those the peer's
    /// packets arrived on within [`SOCKET_IN_USE`] (the hard side's birthday hit and the easy
    /// side's may be different sockets: closing the one the peer sends to loses what it has in
    /// flight, QUIC's first packets among them). One kept for the second reason only is looked
    /// at again after [`SOCKET_IN_USE`].
    fn close_unused_sockets(&mut self, now: Instant) {
        let selected: Vec<u16> = self
            .peers
            .values()
            .filter_map(|p| p.paths.selected_path().map(|(l, _)| l))
            .collect();
        let recent: Vec<u16> = self
            .peers
            .values()
            .flat_map(|p| p.inbound_sockets.iter())
            .filter(|(l, t)| {
                !selected.contains(l) && now.saturating_duration_since(*t) < SOCKET_IN_USE
            })
            .map(|(l, _)| *l)
            .collect();
        if !recent.is_empty() {
            let again = now + SOCKET_IN_USE;
            self.sockets_close_at = Some(self.sockets_close_at.map_or(again, |t| t.min(again)));
        }
        let keep: Vec<u16> = selected.into_iter().chain(recent).collect();
        self.close_spare_sockets(&keep);
    }

    /// The peer's authentic packet arrived on our spare socket `local`.
    pub(super) fn inbound_on(&mut self, peer: NodeId, local: u16, now: Instant) {
        if local == 0 {
            return;
        }
        let Some(st) = self.peers.get_mut(&peer) else {
            return;
        };
        if let Some(e) = st.inbound_sockets.iter_mut().find(|(l, _)| *l == local) {
            e.1 = now;
        } else if st.inbound_sockets.len() < INBOUND_SOCKETS {
            st.inbound_sockets.push((local, now));
        } else if let Some(oldest) = st.inbound_sockets.iter_mut().min_by_key(|(_, t)| *t) {
            *oldest = (local, now);
        }
    }

    fn close_spare_sockets(&mut self, keep: &[u16]) {
        let (kept, ids): (Vec<u16>, Vec<u16>) = self
            .spare_sockets
            .drain(..)
            .partition(|id| keep.contains(id));
        self.spare_sockets = kept;
        if !ids.is_empty() {
            // Pairs on closed sockets must never be selected again.
            for st in self.peers.values_mut() {
                st.paths.drop_sockets(&ids);
            }
            self.push_event(NodeEvent::CloseSockets { ids });
        }
    }

    /// Birthday probing needs the address a rendezvous observed for `peer`, which comes only in
    /// an INTRO_ACK; if that one datagram was lost (the handshake itself got through by another
    /// way), ask again with a fresh handshake introduced through the rendezvous: after
    /// [`REINTRODUCE_AFTER`] without it, at most [`MAX_REINTRODUCTIONS`] times per peer.
    fn reintroduce_for_observation(&mut self, now: Instant, unix_ms: u64, peer: NodeId) {
        let Some(st) = self.peers.get_mut(&peer) else {
            return;
        };
        let since = *st.awaiting_observation.get_or_insert(now);
        if st.reintroductions >= MAX_REINTRODUCTIONS
            || now.saturating_duration_since(since) < REINTRODUCE_AFTER
        {
            return;
        }
        st.reintroductions += 1;
        st.awaiting_observation = Some(now);
        self.count_drop(DropReason::BirthdayNoObservation);
        let remotes = self.reconnect_targets(now, peer);
        let _ = self.tunnel.connect(now, unix_ms, peer, &remotes);
    }

    /// Starts or continues birthday punching with `peer` where one side is hard and one easy.
    pub(super) fn birthday(&mut self, now: Instant, unix_ms: u64, peer: NodeId) {
        let Some(st) = self.peers.get(&peer) else {
            return;
        };
        // A relayed path does not end punching: the session moves off it once a probe hits.
        if st
            .paths
            .selected
            .is_some_and(|i| st.paths.pairs[i].kind != CandidateKind::Relayed)
        {
            return;
        }
        let we_hard = self.we_are_hard();
        let we_easy = self.maps_per_destination == Some(false);
        // Only the address a rendezvous saw the peer register from: the peer's own NAT. What
        // the peer claims (its candidates, the source of its packets) may name anyone.
        let theirs: Vec<SocketAddr> = st
            .rendezvous_addr
            .filter(|a| matches!(a, SocketAddr::V4(v4) if is_public_v4(v4.ip())))
            .into_iter()
            .collect();
        if st.birthday.is_none() {
            if st.birthday_tried
                || st
                    .birthday_started
                    .is_some_and(|t| now.saturating_duration_since(t) < REPUNCH_INTERVAL)
            {
                return;
            }
            if theirs.is_empty() {
                let wanted = (we_hard && peer_is_easy(st.peer_flags))
                    || (we_easy && peer_is_hard(st.peer_flags));
                if wanted {
                    self.reintroduce_for_observation(now, unix_ms, peer);
                }
                return;
            }
            let running = |hard: bool| {
                self.peers
                    .values()
                    .filter(|p| match p.birthday {
                        Some(Birthday::Hard { .. }) => hard,
                        Some(Birthday::Easy { .. }) => !hard,
                        None => false,
                    })
                    .count()
            };
            let (easy_runs, hard_runs) = (running(false), running(true));
            if (we_hard && hard_runs >= self.config.birthday.max_hard_runs)
                || (we_easy && easy_runs >= self.config.birthday.max_easy_runs)
            {
                // Tried again at the next timeout.
                self.count_drop(DropReason::BirthdayBusy);
                return;
            }
            tracing::trace!(
                peer = %peer.fmt_short(),
                we_hard,
                we_easy,
                peer_flags = st.peer_flags,
                "birthday check"
            );
            let role = if we_hard && peer_is_easy(st.peer_flags) {
                Birthday::Hard {
                    targets: theirs.clone(),
                    rounds_left: self.config.birthday.hard_rounds,
                    next: now,
                }
            } else if we_easy && peer_is_hard(st.peer_flags) {
                Birthday::Easy {
                    ip: theirs[0].ip(),
                    predict_from: (self.config.birthday.predict_window > 0
                        && peer_is_sequential(st.peer_flags))
                    .then(|| theirs[0].port()),
                    sent: 0,
                    started: now,
                }
            } else {
                return;
            };
            tracing::debug!(peer = %peer.fmt_short(), role = ?role, "birthday probing starts");
            if matches!(role, Birthday::Hard { .. }) {
                // A socket kept from an earlier run (a selected path's, which may have died
                // since) does not make a run: each run probes from the full set.
                let missing = self
                    .config
                    .birthday
                    .sockets
                    .saturating_sub(self.spare_sockets.len() as u16);
                self.open_spare_sockets(missing);
            }
            if let Some(st) = self.peers.get_mut(&peer) {
                st.birthday = Some(role);
                st.birthday_tried = true;
                st.birthday_started = Some(now);
            }
        }
        let config = self.config.birthday.clone();
        let Some(role) = self.peers.get(&peer).and_then(|p| p.birthday.clone()) else {
            return;
        };
        match role {
            Birthday::Hard {
                targets,
                rounds_left,
                next,
            } => {
                if self.spare_sockets.is_empty() {
                    self.open_spare_sockets(config.sockets);
                }
                if self.sockets_requested {
                    return;
                }
                if now < next {
                    return;
                }
                let sockets = self.spare_sockets.clone();
                self.birthday_sending = true;
                for id in sockets {
                    for t in &targets {
                        self.send_probe(now, peer, id, *t);
                    }
                }
                self.take_tunnel_transmits(now);
                self.birthday_sending = false;
                self.sockets_close_at = Some(now + config.round_interval + config.socket_linger);
                let left = rounds_left.saturating_sub(1);
                if let Some(st) = self.peers.get_mut(&peer) {
                    st.birthday = (left > 0).then(|| Birthday::Hard {
                        targets,
                        rounds_left: left,
                        next: now + config.round_interval,
                    });
                }
            }
            Birthday::Easy {
                ip,
                predict_from,
                sent,
                started,
            } => {
                let due = Birthday::easy_due(&config, sent, started, now);
                // Every easy-side run draws from one budget of `rate` probes a second.
                let (tokens, at) = self.birthday_tokens;
                let earned = now.saturating_duration_since(at).as_millis() as u64
                    * u64::from(config.rate)
                    / 1000;
                let tokens = (tokens + earned).min(u64::from(config.rate));
                let due = due.min(tokens as u32);
                self.birthday_tokens = (tokens - u64::from(due), if earned > 0 { now } else { at });
                self.birthday_sending = true;
                for n in sent..sent + due {
                    let port = match predict_from {
                        Some(base) if n < config.predict_window => predicted_port(base, n),
                        _ => {
                            let span = (u16::MAX - FIRST_PORT) as u64 + 1;
                            FIRST_PORT + (self.rng.next_u64() % span) as u16
                        }
                    };
                    self.send_probe(now, peer, 0, SocketAddr::new(ip, port));
                }
                self.take_tunnel_transmits(now);
                self.birthday_sending = false;
                let sent = sent + due;
                if let Some(st) = self.peers.get_mut(&peer) {
                    st.birthday = (sent < config.probes).then_some(Birthday::Easy {
                        ip,
                        predict_from,
                        sent,
                        started,
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_budget_succeeds_almost_always() {
        let c = BirthdayConfig::default();
        let miss = miss_probability(c.sockets, c.probes);
        assert!(miss < 0.001, "{miss}");
    }

    #[test]
    fn predicted_ports_run_up_from_the_observed_port_and_wrap() {
        assert_eq!(predicted_port(40000, 0), 40001);
        assert_eq!(predicted_port(40000, 9), 40010);
        assert_eq!(predicted_port(65535, 0), FIRST_PORT);
        assert_eq!(predicted_port(65534, 2), FIRST_PORT + 1);
    }

    #[test]
    fn easy_side_is_paced_and_capped() {
        let c = BirthdayConfig::default();
        let t0 = Instant::now();
        assert_eq!(Birthday::easy_due(&c, 0, t0, t0), 1);
        assert_eq!(
            Birthday::easy_due(&c, 1, t0, t0 + Duration::from_millis(100)),
            100
        );
        assert_eq!(
            Birthday::easy_due(&c, 0, t0, t0 + Duration::from_secs(10)),
            c.probes
        );
        assert_eq!(
            Birthday::easy_due(&c, c.probes, t0, t0 + Duration::from_secs(10)),
            0
        );
    }
}
