//! The simulator's own random draws (NAT ports, loss), seeded; never the engine's.

/// xorshift64* (the simulator's own draws: NAT ports, loss; never the engine's).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1)
    }
    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    pub(super) fn percent(&mut self, p: u64) -> bool {
        p > 0 && self.next_u64() % 100 < p
    }
}
