//! Overlay IPv6 addresses: the project's fixed RFC 4193 ULA /48, then 80 bits of a hash of the
//! node's public key (`docs/protocol.md` §"Overlay addresses").
//!
//! The address is self-certifying: only a session authenticated by the key may use it as a source.

use std::net::Ipv6Addr;

use crate::identity::NodeId;

/// The overlay prefix `fd5b:7a1e:9c03::/48` (RFC 4193 ULA; Global ID 5b7a1e9c03 chosen at random once).
pub const PREFIX: [u8; 6] = [0xfd, 0x5b, 0x7a, 0x1e, 0x9c, 0x03];
/// Prefix length of the overlay network.
pub const PREFIX_LEN: u8 = 48;
/// Domain-separation context of the address hash (BLAKE3 key derivation mode).
const HASH_CONTEXT: &str = "shipworm 2026 overlay address v1";

/// The overlay address of `node`.
pub fn address_of(node: &NodeId) -> Ipv6Addr {
    let hash = blake3::derive_key(HASH_CONTEXT, node.as_bytes());
    let mut octets = [0u8; 16];
    octets[..6].copy_from_slice(&PREFIX);
    octets[6..].copy_from_slice(&hash[..10]);
    Ipv6Addr::from(octets)
}

/// Whether `addr` lies in the overlay /48.
pub fn is_overlay(addr: &Ipv6Addr) -> bool {
    addr.octets()[..6] == PREFIX
}

/// The overlay network as an address and prefix length (for routes).
pub fn network() -> (Ipv6Addr, u8) {
    let mut octets = [0u8; 16];
    octets[..6].copy_from_slice(&PREFIX);
    (Ipv6Addr::from(octets), PREFIX_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Identity;

    #[test]
    fn vector_and_properties() {
        let a = Identity::from_seed(&[1; 32]).node_id();
        let b = Identity::from_seed(&[2; 32]).node_id();
        let addr = address_of(&a);
        assert!(is_overlay(&addr));
        assert_eq!(addr, address_of(&a), "stable");
        assert_ne!(addr, address_of(&b));
        assert_eq!(addr.segments()[..3], [0xfd5b, 0x7a1e, 0x9c03]);
        assert_eq!(addr.to_string(), OVERLAY_OF_SEED_1);
        assert!(!is_overlay(&"fd00::1".parse().unwrap()));
        assert_eq!(network(), ("fd5b:7a1e:9c03::".parse().unwrap(), 48));
    }

    /// Computed independently (Python `cryptography` + `blake3`); pinned so that a change of the derivation (which would move every node) cannot go unseen.
    const OVERLAY_OF_SEED_1: &str = "fd5b:7a1e:9c03:86ac:15dd:11a7:9050:3b0";
}
