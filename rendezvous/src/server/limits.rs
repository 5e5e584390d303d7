//! Fixed-size state for limits on strangers: nothing here grows with the number of senders, and
//! nothing is allocated per sender before it proves anything (`docs/protocol.md` §"Server rules").
//!
//! Every structure is an array of cells indexed by a keyed BLAKE3 hash of what is limited (a
//! source prefix, a pair of node ids), with a key drawn from the server's generator at start: a
//! sender cannot choose which cell it lands in, so it cannot aim at someone else's cell. Two
//! senders that share a cell by chance (one in [`CELLS`]) share a budget; that is the price of
//! bounded memory, and it errs on the side of refusing, never of sending more.

use std::net::{IpAddr, SocketAddr};

use shipworm_tunnel::rng::{Rng, RngCore};

use crate::table::RateLimit;

/// Cells per array: 65 536, so a chance collision is 1 in 65 536 per other active sender.
pub const CELLS: usize = 1 << 16;

/// A network prefix of a source address: the unit of per-source quotas and rates, because one
/// host holds one IPv4 address but usually a whole IPv6 prefix (a /56 or /64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix([u8; 17]);

impl Prefix {
    /// The first `v4_bits` (IPv4) or `v6_bits` (IPv6) of `addr`'s IP (IPv4-mapped counts as IPv4).
    pub fn of(addr: SocketAddr, v4_bits: u8, v6_bits: u8) -> Self {
        let mut out = [0u8; 17];
        let (bytes, bits): (&[u8], u8) = match shipworm_tunnel::wire::addr::normalize(addr).ip() {
            IpAddr::V4(v4) => {
                out[0] = 4;
                out[1..5].copy_from_slice(&v4.octets());
                (&out[1..5], v4_bits.min(32))
            }
            IpAddr::V6(v6) => {
                out[0] = 6;
                out[1..17].copy_from_slice(&v6.octets());
                (&out[1..17], v6_bits.min(128))
            }
        };
        let len = bytes.len();
        let mut masked = [0u8; 16];
        masked[..len].copy_from_slice(bytes);
        for (i, b) in masked[..len].iter_mut().enumerate() {
            let keep = (bits as usize).saturating_sub(i * 8).min(8);
            *b &= (0xFF00u16 >> keep) as u8;
        }
        out[1..1 + len].copy_from_slice(&masked[..len]);
        Self(out)
    }

    /// The bytes that identify the prefix (family and masked address).
    pub fn as_bytes(&self) -> &[u8; 17] {
        &self.0
    }
}

/// A keyed hash: which cell a thing lands in, unpredictable to senders.
#[derive(Clone)]
pub struct CellHash {
    key: [u8; 32],
}

impl std::fmt::Debug for CellHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CellHash(..)")
    }
}

impl CellHash {
    /// A fresh key from `rng`.
    pub fn new(rng: &mut Rng) -> Self {
        let mut key = [0u8; 32];
        rng.fill_bytes(&mut key);
        Self { key }
    }

    /// 128 bits of keyed hash over `parts`, as two independent 64-bit halves.
    pub fn hash(&self, parts: &[&[u8]]) -> (u64, u64) {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        for p in parts {
            h.update(p);
        }
        let out = h.finalize();
        let b = out.as_bytes();
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        (word(0), word(8))
    }
}

fn index(h: u64) -> usize {
    (h as usize) & (CELLS - 1)
}

/// GCRA cells: one stored time each (ms since the server's start, wrapping), [`CELLS`] of them.
#[derive(Debug)]
pub struct RateCells {
    hash: CellHash,
    tat: Box<[u32]>,
}

impl RateCells {
    /// All cells idle.
    pub fn new(rng: &mut Rng) -> Self {
        Self {
            hash: CellHash::new(rng),
            tat: vec![0; CELLS].into_boxed_slice(),
        }
    }

    /// The cell of `parts`.
    pub fn cell(&self, parts: &[&[u8]]) -> usize {
        index(self.hash.hash(parts).0)
    }

    /// The stored time of cell `i` (to try a charge before committing it with [`Self::set_tat`]).
    pub fn tat(&self, i: usize) -> u32 {
        self.tat[i]
    }

    /// Commits a charge tried on a copy of [`Self::tat`].
    pub fn set_tat(&mut self, i: usize, tat: u32) {
        self.tat[i] = tat;
    }

    /// Charges one event to cell `i`; false if it is over `limit`.
    pub fn admit(&mut self, i: usize, limit: &RateLimit, now_ms: u32) -> bool {
        limit.admit(&mut self.tat[i], now_ms)
    }

    /// Brings idle cells up to `now_ms`, so that a time left alone for 24 days cannot look like
    /// the future after the 32-bit wrap. Called with every sweep (a 256 KB pass every few seconds).
    pub fn normalize(&mut self, now_ms: u32) {
        for t in self.tat.iter_mut() {
            if (t.wrapping_sub(now_ms) as i32) < 0 {
                *t = now_ms;
            }
        }
    }
}

/// Counts per prefix in a count-min sketch: two rows of [`CELLS`] 16-bit counters (256 KB),
/// whatever the number of prefixes. The estimate is never below the true count; it is above only
/// when both of a prefix's cells are shared with other prefixes, which with a keyed hash nobody
/// can arrange.
#[derive(Debug)]
pub struct PrefixCounts {
    hash: CellHash,
    rows: [Box<[u16]>; 2],
}

impl PrefixCounts {
    /// All zero.
    pub fn new(rng: &mut Rng) -> Self {
        Self {
            hash: CellHash::new(rng),
            rows: [
                vec![0; CELLS].into_boxed_slice(),
                vec![0; CELLS].into_boxed_slice(),
            ],
        }
    }

    fn cells(&self, p: &Prefix) -> (usize, usize) {
        let (a, b) = self.hash.hash(&[p.as_bytes()]);
        (index(a), index(b))
    }

    /// The estimated count of `p`.
    pub fn get(&self, p: &Prefix) -> u16 {
        let (a, b) = self.cells(p);
        self.rows[0][a].min(self.rows[1][b])
    }

    /// One more in `p`.
    pub fn add(&mut self, p: &Prefix) {
        let (a, b) = self.cells(p);
        self.rows[0][a] = self.rows[0][a].saturating_add(1);
        self.rows[1][b] = self.rows[1][b].saturating_add(1);
    }

    /// One fewer in `p` (each add is matched by exactly one remove).
    pub fn remove(&mut self, p: &Prefix) {
        let (a, b) = self.cells(p);
        self.rows[0][a] = self.rows[0][a].saturating_sub(1);
        self.rows[1][b] = self.rows[1][b].saturating_sub(1);
    }
}

/// Free answers: when A's introduction is forwarded to B, B may answer A through the server
/// (its relayed message 2) without spending its own or A's budgets, a few times, for a while.
#[derive(Debug)]
pub struct ReplyCredits {
    hash: CellHash,
    /// (tag, expiry ms, credits left) per cell.
    cells: Box<[(u32, u32, u8)]>,
}

/// Free answers one forwarded introduction grants (they add up to [`MAX_CREDITS`]).
pub const CREDITS_PER_INTRODUCTION: u8 = 1;
/// Most free answers held for one (answerer, introducer) pair.
pub const MAX_CREDITS: u8 = 4;
/// How long after an introduction its free answer may be used.
pub const CREDIT_LIFETIME_MS: u32 = 10_000;

impl ReplyCredits {
    /// No credits.
    pub fn new(rng: &mut Rng) -> Self {
        Self {
            hash: CellHash::new(rng),
            cells: vec![(0, 0, 0); CELLS].into_boxed_slice(),
        }
    }

    fn locate(&self, answerer: &[u8; 32], introducer: &[u8; 32]) -> (usize, u32) {
        let (a, b) = self.hash.hash(&[answerer, introducer]);
        // Tag 0 marks an empty cell.
        (index(a), (b as u32).max(1))
    }

    /// `introducer`'s introduction was forwarded to `answerer` at `now_ms`.
    pub fn grant(&mut self, answerer: &[u8; 32], introducer: &[u8; 32], now_ms: u32) {
        let (i, tag) = self.locate(answerer, introducer);
        let cell = &mut self.cells[i];
        let live = cell.0 == tag && (cell.1.wrapping_sub(now_ms) as i32) > 0;
        let held = if live { cell.2 } else { 0 };
        *cell = (
            tag,
            now_ms.wrapping_add(CREDIT_LIFETIME_MS),
            held.saturating_add(CREDITS_PER_INTRODUCTION)
                .min(MAX_CREDITS),
        );
    }

    /// Spends one free answer of `answerer` toward `introducer`, if one is held.
    pub fn spend(&mut self, answerer: &[u8; 32], introducer: &[u8; 32], now_ms: u32) -> bool {
        let (i, tag) = self.locate(answerer, introducer);
        let cell = &mut self.cells[i];
        if cell.0 != tag || (cell.1.wrapping_sub(now_ms) as i32) <= 0 || cell.2 == 0 {
            return false;
        }
        cell.2 -= 1;
        true
    }

    /// Forgets credits that expired, so a stale expiry cannot come back after the 32-bit wrap.
    pub fn normalize(&mut self, now_ms: u32) {
        for c in self.cells.iter_mut() {
            if (c.1.wrapping_sub(now_ms) as i32) <= 0 {
                *c = (0, 0, 0);
            }
        }
    }
}

/// Signature checks in the current second: over the threshold, the server is "under load" and
/// asks REGISTERs without a valid cookie for one (RETRY) instead of checking them.
#[derive(Debug, Default)]
pub struct LoadMeter {
    second: u32,
    checks: u32,
}

impl LoadMeter {
    /// Whether `threshold` checks were already spent in second `now_s`.
    pub fn under_load(&mut self, now_s: u32, threshold: u32) -> bool {
        if self.second != now_s {
            self.second = now_s;
            self.checks = 0;
        }
        self.checks >= threshold
    }

    /// Counts one signature check in second `now_s`.
    pub fn count(&mut self, now_s: u32) {
        if self.second != now_s {
            self.second = now_s;
            self.checks = 0;
        }
        self.checks = self.checks.saturating_add(1);
    }
}

/// Return-routability cookies: `BLAKE3-keyed(secret, "cookie" || slot || source address)[..16]`,
/// valid in the slot they were made in and the next one.
#[derive(Clone)]
pub struct Cookies {
    secret: [u8; 32],
}

impl std::fmt::Debug for Cookies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cookies(..)")
    }
}

/// Length of a cookie time slot in seconds: a cookie lives 30 to 60 s.
pub const COOKIE_SLOT_S: u32 = 30;

impl Cookies {
    /// A fresh secret from `rng`.
    pub fn new(rng: &mut Rng) -> Self {
        let mut secret = [0u8; 32];
        rng.fill_bytes(&mut secret);
        Self { secret }
    }

    fn make_in(&self, from: SocketAddr, slot: u32) -> [u8; crate::wire::COOKIE_LEN] {
        let (encoded, len) = shipworm_tunnel::wire::addr::encode(&from);
        let mut h = blake3::Hasher::new_keyed(&self.secret);
        h.update(b"cookie");
        h.update(&slot.to_be_bytes());
        h.update(&encoded[..len]);
        let mut out = [0u8; crate::wire::COOKIE_LEN];
        out.copy_from_slice(&h.finalize().as_bytes()[..crate::wire::COOKIE_LEN]);
        out
    }

    /// The cookie for `from` at `now_s` (seconds since the server's start).
    pub fn make(&self, from: SocketAddr, now_s: u32) -> [u8; crate::wire::COOKIE_LEN] {
        self.make_in(from, now_s / COOKIE_SLOT_S)
    }

    /// Whether `cookie` was made for `from` in this slot or the previous one.
    pub fn check(
        &self,
        from: SocketAddr,
        cookie: &[u8; crate::wire::COOKIE_LEN],
        now_s: u32,
    ) -> bool {
        let slot = now_s / COOKIE_SLOT_S;
        let eq = |a: &[u8; 16], b: &[u8; 16]| {
            a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
        };
        eq(&self.make_in(from, slot), cookie)
            | eq(&self.make_in(from, slot.wrapping_sub(1)), cookie)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng() -> Rng {
        shipworm_tunnel::rng::from_seed(3)
    }

    #[test]
    fn prefixes_mask_the_host_part() {
        let p = |s: &str, v4, v6| Prefix::of(s.parse().unwrap(), v4, v6);
        assert_eq!(p("192.0.2.1:1", 32, 56), p("[::ffff:192.0.2.1]:9", 32, 56));
        assert_ne!(p("192.0.2.1:1", 32, 56), p("192.0.2.2:1", 32, 56));
        assert_eq!(p("192.0.2.1:1", 24, 56), p("192.0.2.200:1", 24, 56));
        assert_eq!(
            p("[2001:db8:0:ab00::1]:1", 32, 56),
            p("[2001:db8:0:abff:1::2]:1", 32, 56)
        );
        assert_ne!(
            p("[2001:db8:0:ab00::1]:1", 32, 56),
            p("[2001:db8:0:ac00::1]:1", 32, 56)
        );
        assert_eq!(p("192.0.2.1:1", 20, 56).as_bytes()[1..5], [192, 0, 0, 0]);
    }

    #[test]
    fn counts_match_adds_and_removes() {
        let mut c = PrefixCounts::new(&mut rng());
        let a = Prefix::of("192.0.2.1:1".parse().unwrap(), 32, 56);
        let b = Prefix::of("192.0.2.2:1".parse().unwrap(), 32, 56);
        for _ in 0..5 {
            c.add(&a);
        }
        c.add(&b);
        assert_eq!((c.get(&a), c.get(&b)), (5, 1));
        c.remove(&a);
        c.remove(&b);
        assert_eq!((c.get(&a), c.get(&b)), (4, 0));
    }

    #[test]
    fn credits_are_per_pair_bounded_and_expire() {
        let mut c = ReplyCredits::new(&mut rng());
        let (a, b, x) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        assert!(!c.spend(&b, &a, 0));
        for _ in 0..10 {
            c.grant(&b, &a, 100);
        }
        assert!(!c.spend(&a, &b, 100), "only toward the introducer");
        assert!(!c.spend(&b, &x, 100));
        assert!((0..MAX_CREDITS).all(|_| c.spend(&b, &a, 200)));
        assert!(!c.spend(&b, &a, 200), "at most MAX_CREDITS");
        c.grant(&b, &a, 300);
        assert!(!c.spend(&b, &a, 300 + CREDIT_LIFETIME_MS), "expired");
    }

    #[test]
    fn cookies_are_bound_to_the_address_and_expire() {
        let c = Cookies::new(&mut rng());
        let a: SocketAddr = "192.0.2.1:5".parse().unwrap();
        let k = c.make(a, 100);
        assert!(c.check(a, &k, 100));
        assert!(c.check("[::ffff:192.0.2.1]:5".parse().unwrap(), &k, 100));
        assert!(c.check(a, &k, 100 + COOKIE_SLOT_S));
        assert!(!c.check(a, &k, 100 + 2 * COOKIE_SLOT_S));
        assert!(!c.check("192.0.2.1:6".parse().unwrap(), &k, 100));
    }

    #[test]
    fn load_meter_resets_every_second() {
        let mut m = LoadMeter::default();
        for _ in 0..3 {
            m.count(7);
        }
        assert!(m.under_load(7, 3));
        assert!(!m.under_load(7, 4));
        assert!(!m.under_load(8, 3));
    }
}
