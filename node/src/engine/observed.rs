//! What peers say they see of us (`docs/protocol.md` §"Candidates"): PROBE_ANSWER reports
//! where our probe came from. One peer's report is a claim; it becomes one of our candidates
//! (advertised to every peer) only when [`CONFIRMATIONS`] distinct peers report the same
//! address within [`OBSERVED_TTL`], and it leaves again when no peer reported it for that long.
//! Addresses the rendezvous or STUN saw are candidates already and need no votes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shipworm_tunnel::wire::addr;
use shipworm_tunnel::NodeId;

use super::paths::CandidateKind;
use super::{hygiene, DropReason, Engine};

/// Distinct peers that must report an address before we advertise it.
pub const CONFIRMATIONS: usize = 2;
/// How long a report counts, and how long a promoted address lives without a new one.
pub const OBSERVED_TTL: Duration = Duration::from_secs(300);
/// Most reported addresses kept.
pub const MAX_OBSERVED: usize = 32;
/// Most reports kept per address.
const MAX_VOTERS: usize = 4;
/// Most promoted addresses among our candidates.
pub const MAX_PROMOTED: usize = 4;

/// Reports per address, and the addresses promoted to candidates.
#[derive(Debug, Default)]
pub(super) struct Observed {
    votes: BTreeMap<SocketAddr, Vec<(NodeId, Instant)>>,
    promoted: Vec<(SocketAddr, Instant)>,
}

impl Observed {
    /// Entries held.
    pub(super) fn len(&self) -> usize {
        self.votes.values().map(Vec::len).sum::<usize>() + self.promoted.len()
    }

    /// Forgets the reports of `peer`.
    pub(super) fn forget_peer(&mut self, peer: &NodeId) {
        for v in self.votes.values_mut() {
            v.retain(|(p, _)| p != peer);
        }
        self.votes.retain(|_, v| !v.is_empty());
    }

    /// Records that `peer` saw us at `at`; returns how many distinct live reporters it has.
    fn vote(&mut self, now: Instant, peer: NodeId, at: SocketAddr) -> usize {
        // One report per peer: its newest.
        for (a, v) in self.votes.iter_mut() {
            if *a != at {
                v.retain(|(p, _)| *p != peer);
            }
        }
        self.votes.retain(|_, v| !v.is_empty());
        if !self.votes.contains_key(&at) && self.votes.len() >= MAX_OBSERVED {
            self.expire(now);
            if self.votes.len() >= MAX_OBSERVED {
                // The address reported least recently gives way.
                let stale = self
                    .votes
                    .iter()
                    .min_by_key(|(_, v)| v.iter().map(|(_, t)| *t).max())
                    .map(|(a, _)| *a);
                if let Some(a) = stale {
                    self.votes.remove(&a);
                }
            }
        }
        let v = self.votes.entry(at).or_default();
        v.retain(|(p, t)| *p != peer && now.saturating_duration_since(*t) < OBSERVED_TTL);
        if v.len() >= MAX_VOTERS {
            v.remove(0);
        }
        v.push((peer, now));
        v.len()
    }

    fn expire(&mut self, now: Instant) {
        for v in self.votes.values_mut() {
            v.retain(|(_, t)| now.saturating_duration_since(*t) < OBSERVED_TTL);
        }
        self.votes.retain(|_, v| !v.is_empty());
    }
}

impl Engine {
    /// `peer` answered a probe and says it came from `at`.
    pub(super) fn observed_by_peer(&mut self, now: Instant, peer: NodeId, at: SocketAddr) {
        let at = addr::normalize(at);
        if self.local.iter().any(|c| c.addr == at) {
            if let Some(p) = self.observed.promoted.iter_mut().find(|(a, _)| *a == at) {
                p.1 = now;
            }
            return;
        }
        let hosts: Vec<SocketAddr> = self
            .local
            .iter()
            .filter(|c| c.kind == CandidateKind::Host)
            .map(|c| c.addr)
            .collect();
        if !hygiene::acceptable(at, hosts) {
            self.count_drop(DropReason::CandidateRefused);
            return;
        }
        let reporters = self.observed.vote(now, peer, at);
        if reporters >= CONFIRMATIONS && self.observed.promoted.len() < MAX_PROMOTED {
            self.observed.promoted.push((at, now));
            self.add_local_candidate(at, CandidateKind::PeerReflexive);
        }
    }

    /// Forgets old reports, and promoted candidates nobody reported for [`OBSERVED_TTL`].
    pub(super) fn expire_observed(&mut self, now: Instant) {
        self.observed.expire(now);
        let gone: Vec<SocketAddr> = self
            .observed
            .promoted
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(*t) >= OBSERVED_TTL)
            .map(|(a, _)| *a)
            .collect();
        if gone.is_empty() {
            return;
        }
        self.observed.promoted.retain(|(a, _)| !gone.contains(a));
        self.local
            .retain(|c| !(c.kind == CandidateKind::PeerReflexive && gone.contains(&c.addr)));
        self.tunnel
            .set_candidates(self.local.iter().map(|c| c.addr).collect());
        self.trickle_due = true;
    }
}
