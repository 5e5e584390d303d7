//! Refresh tokens: a stateless proof that a node received a REGISTERED reply at an address.
//!
//! `token = BLAKE3-keyed(server secret, node id || encoded observed address)[..16]`.
//! A token is accepted only from the address it names, so REFRESH and INTRODUCE cost a hash, not a
//! signature check, and a captured token is useless from anywhere else. Secrets rotate; the previous
//! one stays valid for one more period so no node is caught mid-refresh (`docs/protocol.md`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shipworm_tunnel::rng::{Rng, RngCore};
use shipworm_tunnel::wire::addr;

use crate::wire::{RawNodeId, TOKEN_LEN};

/// The server's token secrets, drawn from the server's injected generator.
pub struct TokenKeys {
    rng: Rng,
    current: [u8; 32],
    previous: [u8; 32],
    next_rotation: Instant,
    period: Duration,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys")
            .field("next_rotation", &self.next_rotation)
            .finish_non_exhaustive()
    }
}

fn random_key(rng: &mut Rng) -> [u8; 32] {
    let mut k = [0u8; 32];
    rng.fill_bytes(&mut k);
    k
}

fn mac(key: &[u8; 32], node: &RawNodeId, observed: SocketAddr) -> [u8; TOKEN_LEN] {
    // One contiguous input for the one-shot keyed hash (a single block: no incremental hasher
    // to set up), the same bytes as node id || address.
    let (encoded, len) = addr::encode(&observed);
    let mut input = [0u8; 32 + addr::MAX_LEN];
    input[..32].copy_from_slice(node);
    input[32..32 + len].copy_from_slice(&encoded[..len]);
    let mut out = [0u8; TOKEN_LEN];
    out.copy_from_slice(&blake3::keyed_hash(key, &input[..32 + len]).as_bytes()[..TOKEN_LEN]);
    out
}

fn ct_eq(a: &[u8; TOKEN_LEN], b: &[u8; TOKEN_LEN]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl TokenKeys {
    /// Fresh random secrets from `rng`, rotated every `period`.
    pub fn new(mut rng: Rng, now: Instant, period: Duration) -> Self {
        Self {
            current: random_key(&mut rng),
            previous: random_key(&mut rng),
            rng,
            next_rotation: now + period,
            period,
        }
    }

    /// The token for `node` observed at `observed`.
    pub fn issue(&self, node: &RawNodeId, observed: SocketAddr) -> [u8; TOKEN_LEN] {
        mac(&self.current, node, observed)
    }

    /// Whether `token` was issued to `node` at `observed` under the current or previous secret.
    ///
    /// The previous secret's hash is computed only when the current one does not match (most
    /// tokens are current: one keyed hash instead of two). The time this takes tells a sender
    /// only which secret its own valid token was issued under, which it could learn from when it
    /// registered; a wrong token costs both hashes, each compared in constant time.
    pub fn check(&self, node: &RawNodeId, observed: SocketAddr, token: &[u8; TOKEN_LEN]) -> bool {
        ct_eq(&mac(&self.current, node, observed), token)
            || ct_eq(&mac(&self.previous, node, observed), token)
    }

    /// When the next rotation is due.
    pub fn next_rotation(&self) -> Instant {
        self.next_rotation
    }

    /// Rotates if due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.next_rotation {
            self.previous = self.current;
            self.current = random_key(&mut self.rng);
            self.next_rotation = now + self.period;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_the_keyed_hash_of_node_id_and_encoded_address() {
        // The construction the protocol documents, computed the long way round.
        let key = [9u8; 32];
        for a in ["192.0.2.1:5", "[2001:db8::1]:443"] {
            let a: SocketAddr = a.parse().unwrap();
            let (encoded, len) = addr::encode(&a);
            let mut h = blake3::Hasher::new_keyed(&key);
            h.update(&[1; 32]);
            h.update(&encoded[..len]);
            assert_eq!(mac(&key, &[1; 32], a), h.finalize().as_bytes()[..TOKEN_LEN]);
        }
    }

    #[test]
    fn bound_to_node_and_address_and_survives_one_rotation() {
        let t0 = Instant::now();
        let mut keys = TokenKeys::new(
            shipworm_tunnel::rng::from_seed(1),
            t0,
            Duration::from_secs(60),
        );
        let a: SocketAddr = "192.0.2.1:5".parse().unwrap();
        let tok = keys.issue(&[1; 32], a);
        assert!(keys.check(&[1; 32], a, &tok));
        assert!(keys.check(&[1; 32], "[::ffff:192.0.2.1]:5".parse().unwrap(), &tok));
        assert!(!keys.check(&[2; 32], a, &tok));
        assert!(!keys.check(&[1; 32], "192.0.2.1:6".parse().unwrap(), &tok));
        keys.handle_timeout(t0 + Duration::from_secs(61));
        assert!(
            keys.check(&[1; 32], a, &tok),
            "previous secret still accepted"
        );
        keys.handle_timeout(t0 + Duration::from_secs(122));
        assert!(
            !keys.check(&[1; 32], a, &tok),
            "two rotations later it is gone"
        );
    }
}
