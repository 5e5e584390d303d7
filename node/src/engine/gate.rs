//! The send gate: return routability before volume (`docs/protocol.md` §"The send gate").
//!
//! Every datagram the engine's tunnel sends passes here. An address is *verified* when it
//! proved that it wants our packets: a probe we sent there was answered from there (the answer
//! echoes the probe's random transaction id, so only a host that received the probe can give
//! it), or the rendezvous named it in an INTRO_ACK to one of our transactions (it saw the peer
//! register from there, with the token round trip), or it is one of our configured servers. To
//! any other address the node sends at most [`UNVERIFIED_PACKETS_PER_ADDRESS`] datagrams per
//! address at once and then one per [`UNVERIFIED_ADDRESS_INTERVAL`] (the pace of a failed
//! pair's probes, so a path that comes back is found), and [`UNVERIFIED_PACKETS_PER_IP`] per IP
//! at once then one per [`UNVERIFIED_IP_INTERVAL`], at most [`UNVERIFIED_PER_SECOND`] in all; and the engine charges each such datagram to the peer it
//! belongs to, which may not have more sent on its behalf than it sent us in authenticated
//! packets (amplification ≤ 1, QUIC's anti-amplification limit with factor 1).
//!
//! The gate holds only counters: bounded tables that expire, no bytes.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Datagrams to one unverified address at once (the burst of its budget).
pub const UNVERIFIED_PACKETS_PER_ADDRESS: usize = 8;
/// After the burst, one more datagram to an unverified address per this interval.
pub const UNVERIFIED_ADDRESS_INTERVAL: Duration = Duration::from_secs(2);
/// Datagrams to all ports of one unverified IP at once.
pub const UNVERIFIED_PACKETS_PER_IP: usize = 24;
/// After the burst, one more datagram to an unverified IP per this interval.
pub const UNVERIFIED_IP_INTERVAL: Duration = Duration::from_secs(2);
/// How long a peer's list of unverified targets remembers one.
pub const UNVERIFIED_WINDOW: Duration = Duration::from_secs(60);

/// The most datagrams one unverified IP can get from us in `elapsed`: its burst, then one per
/// [`UNVERIFIED_IP_INTERVAL`].
pub fn unverified_ip_budget(elapsed: Duration) -> u64 {
    UNVERIFIED_PACKETS_PER_IP as u64
        + (elapsed.as_millis() / UNVERIFIED_IP_INTERVAL.as_millis()) as u64
}

/// The most datagrams one unverified address can get from us in `elapsed`.
pub fn unverified_address_budget(elapsed: Duration) -> u64 {
    UNVERIFIED_PACKETS_PER_ADDRESS as u64
        + (elapsed.as_millis() / UNVERIFIED_ADDRESS_INTERVAL.as_millis()) as u64
}
/// Datagrams to unverified addresses per second, all of them together (also the burst).
pub const UNVERIFIED_PER_SECOND: u64 = 2000;
/// How long one proof keeps an address verified (the selected path is re-proved every 250 ms).
pub const VERIFIED_FOR: Duration = Duration::from_secs(30);
/// Most entries of each gate table (verified addresses, per-address and per-IP windows).
pub const MAX_GATE_ENTRIES: usize = 4096;
/// Most distinct unverified addresses one peer may have us send to per window.
pub const PEER_UNVERIFIED_TARGETS: usize = 32;

/// Why the gate refused a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The address or its IP used up its budget for this window.
    AddressBudget,
    /// Every unverified address together used up this second's budget.
    GlobalBudget,
    /// A table is full of live entries (fail closed).
    TableFull,
}

/// One budget as GCRA: the theoretical arrival time of the next datagram. A datagram fits
/// when, with it, the time owed ahead of now stays within `burst` intervals.
#[derive(Debug, Clone, Copy)]
struct Window {
    tat: Instant,
}

impl Window {
    /// Whether the entry still limits anything (else it is as good as absent).
    fn live(&self, now: Instant) -> bool {
        self.tat > now
    }

    fn fits(w: Option<&Window>, now: Instant, burst: usize, interval: Duration) -> bool {
        let tat = w.map_or(now, |w| w.tat.max(now)) + interval;
        tat.saturating_duration_since(now) <= interval * burst as u32
    }

    fn take(&mut self, now: Instant, interval: Duration) {
        self.tat = self.tat.max(now) + interval;
    }
}

/// The gate's tables.
#[derive(Debug)]
pub struct Gate {
    /// Verified address → last proof.
    verified: HashMap<SocketAddr, Instant>,
    per_addr: HashMap<SocketAddr, Window>,
    per_ip: HashMap<IpAddr, Window>,
    /// Global token bucket: tokens, last refill.
    tokens: u64,
    refilled: Instant,
}

/// Makes room in `map` for one more entry by dropping dead ones; false if it stays full.
fn room<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, live: impl Fn(&V) -> bool) -> bool {
    if map.len() < MAX_GATE_ENTRIES {
        return true;
    }
    map.retain(|_, v| live(v));
    map.len() < MAX_GATE_ENTRIES
}

impl Gate {
    /// An empty gate at `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            verified: HashMap::new(),
            per_addr: HashMap::new(),
            per_ip: HashMap::new(),
            tokens: UNVERIFIED_PER_SECOND,
            refilled: now,
        }
    }

    /// `addr` proved at `now` that it wants our packets.
    pub fn verify(&mut self, addr: SocketAddr, now: Instant) {
        if !self.verified.contains_key(&addr)
            && !room(&mut self.verified, |t| {
                now.saturating_duration_since(*t) < VERIFIED_FOR
            })
        {
            // Full of live proofs: the oldest one gives way (ties broken by address, so the
            // choice does not depend on the map's order).
            let oldest = self
                .verified
                .iter()
                .min_by_key(|(a, t)| (**t, **a))
                .map(|(a, _)| *a);
            if let Some(a) = oldest {
                self.verified.remove(&a);
            }
        }
        self.verified.insert(addr, now);
    }

    /// Whether `addr` is verified at `now`.
    pub fn is_verified(&self, addr: SocketAddr, now: Instant) -> bool {
        self.verified
            .get(&addr)
            .is_some_and(|t| now.saturating_duration_since(*t) < VERIFIED_FOR)
    }

    /// Whether one more datagram to the unverified `addr` fits its budgets (nothing counted).
    pub fn check(&mut self, addr: SocketAddr, now: Instant) -> Result<(), Refusal> {
        self.refill(now);
        let fits_addr = Window::fits(
            self.per_addr.get(&addr),
            now,
            UNVERIFIED_PACKETS_PER_ADDRESS,
            UNVERIFIED_ADDRESS_INTERVAL,
        );
        let fits_ip = Window::fits(
            self.per_ip.get(&addr.ip()),
            now,
            UNVERIFIED_PACKETS_PER_IP,
            UNVERIFIED_IP_INTERVAL,
        );
        if !fits_addr || !fits_ip {
            return Err(Refusal::AddressBudget);
        }
        if self.tokens == 0 {
            return Err(Refusal::GlobalBudget);
        }
        let fresh_addr = !self.per_addr.contains_key(&addr);
        let fresh_ip = !self.per_ip.contains_key(&addr.ip());
        if (fresh_addr && !room(&mut self.per_addr, |w| w.live(now)))
            || (fresh_ip && !room(&mut self.per_ip, |w| w.live(now)))
        {
            return Err(Refusal::TableFull);
        }
        Ok(())
    }

    /// Counts one datagram to the unverified `addr` (after [`Gate::check`] said yes).
    pub fn count(&mut self, addr: SocketAddr, now: Instant) {
        self.per_addr
            .entry(addr)
            .or_insert(Window { tat: now })
            .take(now, UNVERIFIED_ADDRESS_INTERVAL);
        self.per_ip
            .entry(addr.ip())
            .or_insert(Window { tat: now })
            .take(now, UNVERIFIED_IP_INTERVAL);
        self.tokens = self.tokens.saturating_sub(1);
    }

    fn refill(&mut self, now: Instant) {
        let ms = now.saturating_duration_since(self.refilled).as_millis() as u64;
        let add = ms * UNVERIFIED_PER_SECOND / 1000;
        if add > 0 {
            self.tokens = (self.tokens + add).min(UNVERIFIED_PER_SECOND);
            self.refilled = now;
        }
    }

    /// Forgets expired proofs and windows.
    pub fn expire(&mut self, now: Instant) {
        self.verified
            .retain(|_, t| now.saturating_duration_since(*t) < VERIFIED_FOR);
        self.per_addr.retain(|_, w| w.live(now));
        self.per_ip.retain(|_, w| w.live(now));
    }

    /// Entries held (verified, per address, per IP).
    pub fn len(&self) -> usize {
        self.verified.len() + self.per_addr.len() + self.per_ip.len()
    }

    /// Whether the gate holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unverified_address_gets_its_burst_then_one_per_interval() {
        let t0 = Instant::now();
        let mut g = Gate::new(t0);
        let a: SocketAddr = "192.0.2.1:1".parse().unwrap();
        for _ in 0..UNVERIFIED_PACKETS_PER_ADDRESS {
            assert_eq!(g.check(a, t0), Ok(()));
            g.count(a, t0);
        }
        assert_eq!(g.check(a, t0), Err(Refusal::AddressBudget));
        let later = t0 + UNVERIFIED_ADDRESS_INTERVAL - Duration::from_millis(1);
        assert_eq!(g.check(a, later), Err(Refusal::AddressBudget));
        let t1 = t0 + UNVERIFIED_ADDRESS_INTERVAL;
        assert_eq!(g.check(a, t1), Ok(()));
        g.count(a, t1);
        assert_eq!(g.check(a, t1), Err(Refusal::AddressBudget));
        g.verify(a, t0);
        assert!(g.is_verified(a, t0 + Duration::from_secs(1)));
        assert!(!g.is_verified(a, t0 + VERIFIED_FOR));
    }

    #[test]
    fn the_ports_of_one_ip_share_a_budget() {
        let t0 = Instant::now();
        let mut g = Gate::new(t0);
        let mut sent = 0;
        for port in 1..100u16 {
            let a = SocketAddr::new("192.0.2.1".parse().unwrap(), port);
            if g.check(a, t0).is_ok() {
                g.count(a, t0);
                sent += 1;
            }
        }
        assert_eq!(sent, UNVERIFIED_PACKETS_PER_IP);
    }

    #[test]
    fn all_unverified_addresses_share_a_rate() {
        let t0 = Instant::now();
        let mut g = Gate::new(t0);
        let mut sent = 0u64;
        for k in 0..3 * UNVERIFIED_PER_SECOND as u32 {
            let a = SocketAddr::from((std::net::Ipv4Addr::from(0x0A00_0000 + k), 9));
            if g.check(a, t0).is_ok() {
                g.count(a, t0);
                sent += 1;
            }
        }
        assert_eq!(sent, UNVERIFIED_PER_SECOND);
        assert!(g.len() <= 3 * MAX_GATE_ENTRIES);
    }
}
