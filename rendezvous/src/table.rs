//! The node table: `NodeId → (observed address, expiry, replay and rate-limit state)`, bounded.
//!
//! Entries are packed to 32 bytes (64 with the key) so that a registration costs at most 150 bytes
//! at any table size (`docs/performance.md`). Times are wrapping offsets from the server's start,
//! compared with wrapping arithmetic, which is exact because each is kept near "now":
//! - expiry: `u16` seconds (wraps every 18 h); an entry is swept within seconds of expiring and
//!   lives at most [`MAX_LIFETIME_S`], far inside the ±9 h that a signed 16-bit difference resolves;
//! - rate-limit state: `u32` milliseconds (wraps every 49 days), pulled up to "now" on every
//!   registration and refresh;
//! - the last REGISTER timestamp: its low 31 bits (see [`Entry`]); the top bit says whether the
//!   registered address has proven that it receives (see [`Entry::confirmed`]).

use std::collections::hash_map::{Entry as MapEntry, HashMap};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use shipworm_tunnel::wire::addr;

use crate::wire::RawNodeId;

/// Default bound on registered nodes.
pub const DEFAULT_MAX_NODES: usize = 1_000_000;
/// Longest registration lifetime the packed expiry can hold unambiguously.
pub const MAX_LIFETIME_S: u32 = 3600;

/// A rate: `per_second` on average, with bursts of up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "bin", derive(serde::Deserialize))]
#[cfg_attr(feature = "bin", serde(deny_unknown_fields))]
pub struct RateLimit {
    /// Sustained events per second (1 to 1000).
    pub per_second: u32,
    /// Events allowed back to back.
    pub burst: u32,
}

impl RateLimit {
    fn interval_ms(&self) -> u32 {
        1000 / self.per_second.clamp(1, 1000)
    }

    fn tolerance_ms(&self) -> u32 {
        self.interval_ms().saturating_mul(self.burst.max(1) - 1)
    }

    /// GCRA (the "virtual scheduling" form of a token bucket) on one stored arrival time.
    pub(crate) fn admit(&self, tat: &mut u32, now_ms: u32) -> bool {
        let effective = if (tat.wrapping_sub(now_ms) as i32) < 0 {
            now_ms
        } else {
            *tat
        };
        if effective.wrapping_sub(now_ms) > self.tolerance_ms() {
            return false;
        }
        *tat = effective.wrapping_add(self.interval_ms());
        true
    }
}

/// Bit of `Entry::last_ts` that marks a confirmed registration.
const CONFIRMED: u32 = 1 << 31;
/// The timestamp bits of `Entry::last_ts`.
const TS_MASK: u32 = CONFIRMED - 1;

/// Whether 31-bit timestamp `ts` is strictly newer than `last` (wrapping, exact within ±12 days,
/// far beyond the clock-skew window in which accepted timestamps lie).
fn newer31(ts: u64, last: u32) -> bool {
    let d = (ts as u32).wrapping_sub(last) & TS_MASK;
    d != 0 && d < (1 << 30)
}

/// One registration, packed.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    ip: [u8; 16],
    port: u16,
    expires_s: u16,
    /// Low 31 bits of the last accepted REGISTER timestamp (ms), compared with wrapping
    /// arithmetic; the top bit is [`CONFIRMED`].
    last_ts: u32,
    send_tat: u32,
    recv_tat: u32,
}

impl Entry {
    /// The registered (observed) address.
    pub fn addr(&self) -> SocketAddr {
        addr::normalize(SocketAddr::new(
            IpAddr::V6(Ipv6Addr::from(self.ip)),
            self.port,
        ))
    }

    fn set_addr(&mut self, a: SocketAddr) {
        self.ip = match a.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        self.port = a.port();
    }

    fn live(&self, now_s: u32) -> bool {
        (self.expires_s.wrapping_sub(now_s as u16) as i16) > 0
    }

    /// Whether the registered address has proven that it receives: the REGISTER carried a valid
    /// cookie, or the node used its token (REFRESH, INTRODUCE) from there. Only confirmed
    /// registrations are sent introductions, so a REGISTER from a spoofed source cannot aim
    /// INTRO_FWD at a victim.
    pub fn confirmed(&self) -> bool {
        self.last_ts & CONFIRMED != 0
    }

    /// Marks the registration confirmed (its token came back from its address).
    pub fn confirm(&mut self) {
        self.last_ts |= CONFIRMED;
    }

    /// Brings stale rate-limit times up to `now` so they never drift a wrap away.
    fn normalize_tats(&mut self, now_ms: u32) {
        for tat in [&mut self.send_tat, &mut self.recv_tat] {
            if (tat.wrapping_sub(now_ms) as i32) < 0 {
                *tat = now_ms;
            }
        }
    }
}

fn expiry(now_s: u32, lifetime_s: u32) -> u16 {
    now_s.wrapping_add(lifetime_s.min(MAX_LIFETIME_S)) as u16
}

/// A stored registration: whether the node is new, and the address of the entry it replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// The node was not registered (or its registration had expired).
    pub new: bool,
    /// The address of the entry this one replaced (live or expired but not yet swept).
    pub replaced: Option<SocketAddr>,
}

/// Why a registration was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterError {
    /// The timestamp is not newer than the last accepted one.
    Stale,
    /// The table holds its maximum of nodes.
    Full,
}

/// The bounded table.
#[derive(Debug)]
pub struct NodeTable {
    map: HashMap<RawNodeId, Entry>,
    max: usize,
}

impl NodeTable {
    /// An empty table holding at most `max` nodes.
    pub fn new(max: usize) -> Self {
        Self {
            map: HashMap::new(),
            max,
        }
    }

    /// Number of entries (live or not yet swept).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The configured bound.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Checks a REGISTER timestamp against the stored one without changing anything.
    pub fn is_fresh(&self, node: &RawNodeId, timestamp_ms: u64, now_s: u32) -> bool {
        match self.map.get(node) {
            Some(e) if e.live(now_s) => newer31(timestamp_ms, e.last_ts & TS_MASK),
            _ => true,
        }
    }

    /// The address of `node`'s entry, live or not yet swept.
    pub fn addr_of(&self, node: &RawNodeId) -> Option<SocketAddr> {
        self.map.get(node).map(|e| e.addr())
    }

    /// Stores a verified registration; `confirmed` says whether `observed` has proven that it
    /// receives (a valid cookie). A node registering again from its confirmed address stays
    /// confirmed; one that moves must confirm its new address.
    #[allow(clippy::too_many_arguments)]
    pub fn register(
        &mut self,
        node: RawNodeId,
        observed: SocketAddr,
        timestamp_ms: u64,
        now_s: u32,
        now_ms: u32,
        lifetime_s: u32,
        confirmed: bool,
    ) -> Result<Stored, RegisterError> {
        if !self.is_fresh(&node, timestamp_ms, now_s) {
            return Err(RegisterError::Stale);
        }
        let len = self.map.len();
        let fresh = Entry {
            ip: [0; 16],
            port: 0,
            expires_s: 0,
            last_ts: 0,
            send_tat: now_ms,
            recv_tat: now_ms,
        };
        let observed = addr::normalize(observed);
        let (entry, new, replaced) = match self.map.entry(node) {
            MapEntry::Occupied(o) => {
                let e = o.into_mut();
                let replaced = e.addr();
                let was_live = e.live(now_s);
                let stays_confirmed = was_live && e.confirmed() && replaced == observed;
                if !was_live {
                    *e = fresh;
                }
                (e, !was_live, Some((replaced, stays_confirmed)))
            }
            MapEntry::Vacant(v) => {
                if len >= self.max {
                    return Err(RegisterError::Full);
                }
                (v.insert(fresh), true, None)
            }
        };
        entry.set_addr(observed);
        entry.last_ts = (timestamp_ms as u32) & TS_MASK;
        if confirmed || replaced.is_some_and(|(_, stays)| stays) {
            entry.confirm();
        }
        entry.expires_s = expiry(now_s, lifetime_s);
        entry.normalize_tats(now_ms);
        Ok(Stored {
            new,
            replaced: replaced.map(|(a, _)| a),
        })
    }

    /// The live entry of `node` if it is registered at exactly `from`.
    pub fn live_at(
        &mut self,
        node: &RawNodeId,
        from: SocketAddr,
        now_s: u32,
    ) -> Option<&mut Entry> {
        self.map
            .get_mut(node)
            .filter(|e| e.live(now_s) && e.addr() == addr::normalize(from))
    }

    /// The live entry of `node`, wherever it is.
    pub fn live(&mut self, node: &RawNodeId, now_s: u32) -> Option<&mut Entry> {
        self.map.get_mut(node).filter(|e| e.live(now_s))
    }

    /// Extends a live entry (a valid REFRESH).
    pub fn extend(entry: &mut Entry, now_s: u32, now_ms: u32, lifetime_s: u32) {
        entry.expires_s = expiry(now_s, lifetime_s);
        entry.normalize_tats(now_ms);
    }

    /// Charges one introduction sent by `entry`.
    pub fn admit_send(entry: &mut Entry, limit: &RateLimit, now_ms: u32) -> bool {
        limit.admit(&mut entry.send_tat, now_ms)
    }

    /// Charges one introduction received by `entry`.
    pub fn admit_recv(entry: &mut Entry, limit: &RateLimit, now_ms: u32) -> bool {
        limit.admit(&mut entry.recv_tat, now_ms)
    }

    /// Removes expired entries, telling `removed` each one's address; returns how many.
    pub fn sweep(&mut self, now_s: u32, mut removed: impl FnMut(SocketAddr)) -> usize {
        let before = self.map.len();
        self.map.retain(|_, e| {
            let live = e.live(now_s);
            if !live {
                removed(e.addr());
            }
            live
        });
        before - self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_is_packed() {
        assert_eq!(std::mem::size_of::<Entry>(), 32);
        assert_eq!(std::mem::size_of::<(RawNodeId, Entry)>(), 64);
    }

    #[test]
    fn gcra_allows_burst_then_rate() {
        let limit = RateLimit {
            per_second: 10,
            burst: 3,
        };
        let mut tat = 0u32;
        let t0 = 1_000u32;
        assert!(limit.admit(&mut tat, t0));
        assert!(limit.admit(&mut tat, t0));
        assert!(limit.admit(&mut tat, t0));
        assert!(!limit.admit(&mut tat, t0), "burst exhausted");
        assert!(!limit.admit(&mut tat, t0 + 50));
        assert!(limit.admit(&mut tat, t0 + 100), "one interval later");
        assert!(!limit.admit(&mut tat, t0 + 100));
        // Long idle refills the whole burst, also across the u32 wrap.
        let later = t0.wrapping_add(u32::MAX / 4);
        assert!((0..3).all(|_| limit.admit(&mut tat, later)));
        assert!(!limit.admit(&mut tat, later));
    }

    #[test]
    fn expiry_replay_and_bound() {
        let mut t = NodeTable::new(2);
        let a: SocketAddr = "192.0.2.1:1".parse().unwrap();
        assert_eq!(
            t.register([1; 32], a, 100, 0, 0, 10, false).map(|s| s.new),
            Ok(true)
        );
        assert_eq!(
            t.register([1; 32], a, 100, 1, 0, 10, false),
            Err(RegisterError::Stale)
        );
        assert_eq!(
            t.register([1; 32], a, 99, 1, 0, 10, false),
            Err(RegisterError::Stale)
        );
        assert_eq!(
            t.register([1; 32], a, 101, 1, 0, 10, false).map(|s| s.new),
            Ok(false)
        );
        assert!(t.live_at(&[1; 32], a, 5).is_some());
        assert_eq!(
            t.live_at(&[1; 32], "[::ffff:192.0.2.1]:1".parse().unwrap(), 5)
                .map(|e| e.addr()),
            Some(a)
        );
        assert!(t
            .live_at(&[1; 32], "192.0.2.1:2".parse().unwrap(), 5)
            .is_none());
        assert!(t.live(&[1; 32], 11).is_none(), "expired");
        assert_eq!(
            t.register([2; 32], a, 1, 0, 0, 10, false).map(|s| s.new),
            Ok(true)
        );
        assert_eq!(
            t.register([3; 32], a, 1, 0, 0, 10, false),
            Err(RegisterError::Full)
        );
        assert_eq!(t.sweep(11, |_| ()), 2);
        assert_eq!(
            t.register([3; 32], a, 1, 11, 0, 10, false).map(|s| s.new),
            Ok(true)
        );
    }

    #[test]
    fn confirmation_is_kept_in_place_and_lost_on_a_move() {
        let mut t = NodeTable::new(10);
        let (a, b): (SocketAddr, SocketAddr) = (
            "192.0.2.1:1".parse().unwrap(),
            "192.0.2.2:1".parse().unwrap(),
        );
        t.register([1; 32], a, 1, 0, 0, 100, false).unwrap();
        assert!(!t.live(&[1; 32], 1).unwrap().confirmed());
        t.live_at(&[1; 32], a, 1).unwrap().confirm();
        // The flag never disturbs the timestamp's replay check.
        assert!(!t.is_fresh(&[1; 32], 1, 1));
        assert!(t.is_fresh(&[1; 32], 2, 1));
        t.register([1; 32], a, 2, 1, 0, 100, false).unwrap();
        assert!(t.live(&[1; 32], 1).unwrap().confirmed(), "same address");
        let s = t.register([1; 32], b, 3, 1, 0, 100, false).unwrap();
        assert_eq!(s.replaced, Some(a));
        assert!(!t.live(&[1; 32], 1).unwrap().confirmed(), "moved");
        t.register([1; 32], a, 4, 1, 0, 100, true).unwrap();
        assert!(
            t.live(&[1; 32], 1).unwrap().confirmed(),
            "a cookie confirms"
        );
        // Timestamps compare across the 31-bit wrap.
        let wrap = (1u64 << 31) - 1;
        t.register([2; 32], a, wrap, 1, 0, 100, true).unwrap();
        assert!(t.is_fresh(&[2; 32], wrap + 1, 1));
        assert!(!t.is_fresh(&[2; 32], wrap, 1));
    }

    #[test]
    fn expiry_is_exact_across_the_16_bit_wrap() {
        let mut t = NodeTable::new(10);
        let a: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let start = u16::MAX as u32 - 30; // expiry lands past the wrap
        t.register([1; 32], a, 1, start, 0, 120, false).unwrap();
        assert!(t.live(&[1; 32], start + 119).is_some());
        assert!(t.live(&[1; 32], start + 120).is_none());
        assert_eq!(t.sweep(start + 121, |_| ()), 1);
        // The longest lifetime is still exact.
        t.register([2; 32], a, 1, start, 0, MAX_LIFETIME_S, false)
            .unwrap();
        assert!(t.live(&[2; 32], start + MAX_LIFETIME_S - 1).is_some());
        assert!(t.live(&[2; 32], start + MAX_LIFETIME_S).is_none());
    }
}
