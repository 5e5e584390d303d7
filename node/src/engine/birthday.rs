//! Birthday-paradox hole punching for one "hard" NAT (per-destination mapping) against an "easy"
//! one (endpoint-independent mapping), when neither side holds a port mapping.
//!
//! The hard side opens many extra sockets and sends a probe from each to the easy side's mapped
//! address: every socket gets its own mapping on the hard NAT, each open for exactly that
//! address. The easy side meanwhile probes random ports of the hard side's IP from its one
//! mapped address. A probe that lands on one of the hard side's mapped ports is answered, and
//! that pair is proven both ways like any other. With `s` hard-side mappings among 64 512 ports
//! and `p` easy-side probes, the chance of no hit is `(1 - s/64512)^p`: for 256 × 2048, about
//! 3 · 10⁻⁴ (`docs/protocol.md` §"Hard NATs").

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

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
}

impl Default for BirthdayConfig {
    fn default() -> Self {
        Self {
            sockets: 256,
            probes: 2048,
            rate: 1000,
            hard_rounds: 8,
            round_interval: Duration::from_millis(500),
        }
    }
}

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

/// The chance that no easy-side probe hits any hard-side mapping.
pub fn miss_probability(sockets: u16, probes: u32) -> f64 {
    let ports = (u16::MAX - FIRST_PORT + 1) as f64;
    (1.0 - sockets as f64 / ports).powi(probes as i32)
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
