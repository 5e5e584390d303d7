//! Who may make us work for a message 1 (`docs/protocol.md` §"Handshake", "Admission"): a
//! per-source token bucket under load, checked before any Diffie-Hellman, and the memory of the
//! initiators we answered (their last timestamp and when), which outlives the peer table, for
//! replay protection and WireGuard's per-peer handshake rate.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::identity::NodeId;
use crate::rng::{Rng, RngCore};

/// Token-bucket cells of the source limiter. A source is hashed (with a secret key) to one cell,
/// so spoofed sources cannot grow the table: it is 4096 cells of 24 bytes whatever arrives, and a
/// source shares its cell with an attacker only by a 1-in-4096 chance per attacking address.
pub const SOURCE_CELLS: usize = 4096;

#[derive(Clone, Copy)]
struct Bucket {
    /// When the bucket was last refilled (`None`: never used, full).
    last: Option<Instant>,
    /// Budget in nanoseconds of rate: one message 1 costs `1 s / rate`.
    tokens: u64,
}

/// Message 1s per second per source (IPv4 address, IPv6 /64), in hashed cells (WireGuard's
/// ratelimiter, with a fixed table instead of a growing one).
pub(super) struct SourceLimiter {
    key: Zeroizing<[u8; 32]>,
    /// Allocated the first time the tunnel is under load.
    cells: Vec<Bucket>,
}

impl SourceLimiter {
    pub(super) fn new(rng: &mut Rng) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rng.fill_bytes(&mut key[..]);
        Self {
            key,
            cells: Vec::new(),
        }
    }

    fn cell(&self, ip: IpAddr) -> usize {
        // One IPv6 /64 is one source: a host gets a whole /64 as easily as one address.
        let mut prefix = [0u8; 9];
        let bytes: &[u8] = match ip {
            IpAddr::V4(v4) => {
                prefix[..4].copy_from_slice(&v4.octets());
                &prefix[..4]
            }
            IpAddr::V6(v6) => {
                prefix[0] = 6;
                prefix[1..].copy_from_slice(&v6.octets()[..8]);
                &prefix[..]
            }
        };
        let h = blake3::keyed_hash(&self.key, bytes);
        let mut n = [0u8; 8];
        n.copy_from_slice(&h.as_bytes()[..8]);
        (u64::from_le_bytes(n) % SOURCE_CELLS as u64) as usize
    }

    /// Spends one message 1 of `ip`'s budget (`rate` per second, bursts of `burst`); false when
    /// it is spent.
    pub(super) fn allow(&mut self, now: Instant, ip: IpAddr, rate: u32, burst: u32) -> bool {
        if self.cells.is_empty() {
            self.cells = vec![
                Bucket {
                    last: None,
                    tokens: 0
                };
                SOURCE_CELLS
            ];
        }
        let cost = 1_000_000_000 / u64::from(rate.max(1));
        let max = cost.saturating_mul(u64::from(burst.max(1)));
        let i = self.cell(ip);
        let b = &mut self.cells[i];
        b.tokens = match b.last {
            None => max,
            Some(last) => {
                let elapsed = now.saturating_duration_since(last).as_nanos();
                b.tokens
                    .saturating_add(u64::try_from(elapsed).unwrap_or(u64::MAX))
                    .min(max)
            }
        };
        b.last = Some(now);
        if b.tokens >= cost {
            b.tokens -= cost;
            true
        } else {
            false
        }
    }
}

/// What we remember of an initiator whose message 1 we answered.
struct Seen {
    /// Its last accepted timestamp (ms since the Unix epoch, its clock).
    timestamp: u64,
    /// The age order: `min(timestamp, our clock)` when accepted.
    age: u64,
    /// The per-peer rate as GCRA: when its next message 1 is due at the sustained rate.
    due: Instant,
}

/// Message 1s one peer may have answered back to back before the per-peer rate applies: an
/// honest initiator sometimes sends two within milliseconds (both sides dialling each other, a
/// fresh handshake when its NAT's behaviour became known), which a strict interval refused.
pub(super) const INIT_BURST: u32 = 4;

/// Why a message 1 was refused by the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Not newer than the last one accepted from this initiator, or, for an initiator we no
    /// longer remember, not newer than the floor.
    Replayed,
    /// Newer, but sooner than the per-peer interval after the last one accepted.
    TooSoon,
}

/// The last accepted message 1 per initiator, bounded. When full, the entry with the oldest
/// age is forgotten and the floor rises to that age: an initiator not remembered must send a
/// timestamp above the floor, so a forgotten one cannot replay what it sent before.
///
/// Ages are capped at our own clock when accepted, so an attacker who fills the cache with
/// future-dated timestamps (fresh keys cost nothing) raises the floor at most to our clock of a
/// moment ago: only an initiator whose clock is behind ours by more than the time the attacker
/// needs to turn the whole cache over is refused meanwhile (`docs/security.md`).
pub(super) struct InitCache {
    capacity: usize,
    /// Lookups only: never walked.
    seen: HashMap<NodeId, Seen>,
    /// (age, initiator): the eviction order, deterministic.
    by_age: BTreeSet<(u64, NodeId)>,
    floor: u64,
}

impl InitCache {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            seen: HashMap::new(),
            by_age: BTreeSet::new(),
            floor: 0,
        }
    }

    /// Whether a message 1 from `id` with `timestamp`, arriving `now`, must be refused.
    pub(super) fn check(
        &self,
        id: &NodeId,
        timestamp: u64,
        now: Instant,
        min_interval: Duration,
    ) -> Option<Refusal> {
        match self.seen.get(id) {
            Some(s) if timestamp <= s.timestamp => Some(Refusal::Replayed),
            Some(s) if s.due.saturating_duration_since(now) > min_interval * (INIT_BURST - 1) => {
                Some(Refusal::TooSoon)
            }
            Some(_) => None,
            None if timestamp <= self.floor => Some(Refusal::Replayed),
            None => None,
        }
    }

    /// Remembers that we answered `id`'s message 1 with `timestamp`; our clock reads `unix_ms`.
    pub(super) fn record(
        &mut self,
        id: NodeId,
        timestamp: u64,
        unix_ms: u64,
        now: Instant,
        min_interval: Duration,
    ) {
        let age = timestamp.min(unix_ms);
        let due = self.seen.get(&id).map_or(now, |s| s.due.max(now)) + min_interval;
        if let Some(old) = self.seen.insert(
            id,
            Seen {
                timestamp,
                age,
                due,
            },
        ) {
            self.by_age.remove(&(old.age, id));
        }
        self.by_age.insert((age, id));
        while self.seen.len() > self.capacity {
            let Some((age, oldest)) = self.by_age.pop_first() else {
                break;
            };
            self.seen.remove(&oldest);
            self.floor = self.floor.max(age);
        }
    }

    /// Initiators remembered.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.seen.len()
    }

    /// The timestamp a forgotten initiator must exceed.
    #[cfg(test)]
    pub(super) fn floor(&self) -> u64 {
        self.floor
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn id(n: u8) -> NodeId {
        Identity::from_seed(&[n; 32]).node_id()
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let mut l = SourceLimiter::new(&mut crate::rng::from_seed(1));
        let t0 = Instant::now();
        let ip: IpAddr = "203.0.113.9".parse().unwrap();
        let allowed = (0..100).filter(|_| l.allow(t0, ip, 20, 5)).count();
        assert_eq!(allowed, 5, "the burst");
        // One second later: 20 more, not 21.
        let t1 = t0 + Duration::from_secs(1);
        let allowed = (0..100).filter(|_| l.allow(t1, ip, 20, 5)).count();
        assert_eq!(allowed, 5, "refill is capped at the burst");
        let mut allowed = 0;
        for ms in 1..=1000u64 {
            let t = t1 + Duration::from_millis(ms);
            allowed += usize::from(l.allow(t, ip, 20, 5));
            allowed += usize::from(l.allow(t, ip, 20, 5));
        }
        assert_eq!(allowed, 20, "20 per second, whatever is sent");
        // Another address of the same IPv6 /64 is the same source; another /64 is not.
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2::ffff".parse().unwrap();
        assert_eq!(l.cell(a), l.cell(b));
        let n = (0..10).filter(|_| l.allow(t0, a, 20, 5)).count()
            + (0..10).filter(|_| l.allow(t0, b, 20, 5)).count();
        assert_eq!(n, 5);
    }

    #[test]
    fn a_forgotten_initiator_cannot_replay_below_the_floor() {
        let t = Instant::now();
        let mut c = InitCache::new(2);
        let (a, b, x) = (id(1), id(2), id(3));
        c.record(a, 1_000, 5_000, t, Duration::ZERO);
        c.record(b, 2_000, 5_000, t, Duration::ZERO);
        assert_eq!(
            c.check(&a, 1_000, t, Duration::ZERO),
            Some(Refusal::Replayed)
        );
        c.record(x, 3_000, 5_000, t, Duration::ZERO);
        assert_eq!(c.len(), 2, "bounded");
        assert_eq!(c.floor(), 1_000, "a was oldest and is forgotten");
        assert_eq!(
            c.check(&a, 1_000, t, Duration::ZERO),
            Some(Refusal::Replayed)
        );
        assert_eq!(c.check(&a, 1_001, t, Duration::ZERO), None);
    }

    #[test]
    fn future_timestamps_raise_the_floor_no_higher_than_our_clock() {
        let t = Instant::now();
        let mut c = InitCache::new(4);
        // An attacker's fresh keys, dated 100 s ahead of our clock (5 000 ms).
        for n in 10..30 {
            c.record(id(n), 105_000, 5_000, t, Duration::ZERO);
        }
        assert_eq!(c.floor(), 5_000);
        // An honest newcomer whose clock is right gets in.
        assert_eq!(c.check(&id(1), 5_001, t, Duration::ZERO), None);
    }

    #[test]
    fn a_peer_may_initiate_a_few_times_at_once_then_at_the_rate() {
        let t = Instant::now();
        let mut c = InitCache::new(4);
        let gap = Duration::from_millis(20);
        for ts in 0..INIT_BURST as u64 {
            assert_eq!(c.check(&id(1), 1_000 + ts, t, gap), None);
            c.record(id(1), 1_000 + ts, 1_000, t, gap);
        }
        assert_eq!(c.check(&id(1), 2_000, t, gap), Some(Refusal::TooSoon));
        assert_eq!(
            c.check(&id(1), 2_000, t + gap / 2, gap),
            Some(Refusal::TooSoon)
        );
        assert_eq!(c.check(&id(1), 2_000, t + gap, gap), None);
    }
}
