//! The node table: `NodeId → (observed address, expiry, replay and rate-limit state)`, bounded.
//!
//! Entries are packed to 32 bytes (64 with the key) so that a registration costs at most 150 bytes
//! at any table size (`docs/performance.md`). Times are wrapping offsets from the server's start,
//! compared with wrapping arithmetic, which is exact because each is kept near "now":
//! - expiry: `u16` seconds (wraps every 18 h); an entry is swept within seconds of expiring and
//!   lives at most [`MAX_LIFETIME_S`], far inside the ±9 h that a signed 16-bit difference resolves;
//! - rate-limit state: `u32` milliseconds (wraps every 49 days), pulled up to "now" on every
//!   registration and refresh;
//! - the last REGISTER timestamp: its low 32 bits (see [`Entry`]).

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
    fn admit(&self, tat: &mut u32, now_ms: u32) -> bool {
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

/// One registration, packed.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    ip: [u8; 16],
    port: u16,
    expires_s: u16,
    /// Low 32 bits of the last accepted REGISTER timestamp (ms); compared with wrapping arithmetic,
    /// valid because accepted timestamps lie within the clock-skew window of "now".
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
            Some(e) if e.live(now_s) => ((timestamp_ms as u32).wrapping_sub(e.last_ts) as i32) > 0,
            _ => true,
        }
    }

    /// Stores a verified registration. Returns whether the node is new.
    pub fn register(
        &mut self,
        node: RawNodeId,
        observed: SocketAddr,
        timestamp_ms: u64,
        now_s: u32,
        now_ms: u32,
        lifetime_s: u32,
    ) -> Result<bool, RegisterError> {
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
        let (entry, new) = match self.map.entry(node) {
            MapEntry::Occupied(o) => {
                let e = o.into_mut();
                let was_live = e.live(now_s);
                if !was_live {
                    *e = fresh;
                }
                (e, !was_live)
            }
            MapEntry::Vacant(v) => {
                if len >= self.max {
                    return Err(RegisterError::Full);
                }
                (v.insert(fresh), true)
            }
        };
        entry.set_addr(observed);
        entry.last_ts = timestamp_ms as u32;
        entry.expires_s = expiry(now_s, lifetime_s);
        entry.normalize_tats(now_ms);
        Ok(new)
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

    /// Removes expired entries; returns how many.
    pub fn sweep(&mut self, now_s: u32) -> usize {
        let before = self.map.len();
        self.map.retain(|_, e| e.live(now_s));
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
        assert_eq!(t.register([1; 32], a, 100, 0, 0, 10), Ok(true));
        assert_eq!(
            t.register([1; 32], a, 100, 1, 0, 10),
            Err(RegisterError::Stale)
        );
        assert_eq!(
            t.register([1; 32], a, 99, 1, 0, 10),
            Err(RegisterError::Stale)
        );
        assert_eq!(t.register([1; 32], a, 101, 1, 0, 10), Ok(false));
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
        assert_eq!(t.register([2; 32], a, 1, 0, 0, 10), Ok(true));
        assert_eq!(
            t.register([3; 32], a, 1, 0, 0, 10),
            Err(RegisterError::Full)
        );
        assert_eq!(t.sweep(11), 2);
        assert_eq!(t.register([3; 32], a, 1, 11, 0, 10), Ok(true));
    }

    #[test]
    fn expiry_is_exact_across_the_16_bit_wrap() {
        let mut t = NodeTable::new(10);
        let a: SocketAddr = "192.0.2.1:1".parse().unwrap();
        let start = u16::MAX as u32 - 30; // expiry lands past the wrap
        t.register([1; 32], a, 1, start, 0, 120).unwrap();
        assert!(t.live(&[1; 32], start + 119).is_some());
        assert!(t.live(&[1; 32], start + 120).is_none());
        assert_eq!(t.sweep(start + 121), 1);
        // The longest lifetime is still exact.
        t.register([2; 32], a, 1, start, 0, MAX_LIFETIME_S).unwrap();
        assert!(t.live(&[2; 32], start + MAX_LIFETIME_S - 1).is_some());
        assert!(t.live(&[2; 32], start + MAX_LIFETIME_S).is_none());
    }
}
