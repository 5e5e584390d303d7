//! The one source of randomness of the sans-IO code.
//!
//! Every random draw (transaction ids, session indices, cookie secrets, handshake nonces and
//! Noise ephemeral keys, probe ports) comes from an [`Rng`] the caller injects: in production a
//! ChaCha20 CSPRNG seeded from the OS ([`from_os`]), so transaction ids stay unpredictable; in
//! the simulator the same generator seeded from the scenario's seed ([`from_seed`]), so one seed
//! gives one packet trace. A component that needs its own stream takes a [`fork`] of its parent's.

use rand_chacha::rand_core::SeedableRng;

pub use rand_chacha::rand_core::RngCore;
pub use rand_chacha::ChaCha20Rng as Rng;

/// A generator seeded from the operating system: what production uses.
pub fn from_os() -> Rng {
    Rng::from_os_rng()
}

/// A generator seeded from `seed`: what the simulator and tests use.
pub fn from_seed(seed: u64) -> Rng {
    Rng::seed_from_u64(seed)
}

/// An independent generator drawn from `parent`.
pub fn fork(parent: &mut Rng) -> Rng {
    let mut seed = [0u8; 32];
    parent.fill_bytes(&mut seed);
    Rng::from_seed(seed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_seed_one_stream() {
        let (mut a, mut b) = (from_seed(7), from_seed(7));
        assert_eq!(a.next_u64(), b.next_u64());
        assert_eq!(fork(&mut a).next_u64(), fork(&mut b).next_u64());
        assert_ne!(from_seed(7).next_u64(), from_seed(8).next_u64());
        assert_ne!(from_os().next_u64(), from_os().next_u64());
    }
}
