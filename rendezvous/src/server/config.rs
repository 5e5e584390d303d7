//! [`ServerConfig`]: the protocol core's tunables, and which combinations are valid
//! (`docs/operations.md` §"Configuration" gives their file form).

use std::net::SocketAddr;
use std::time::Duration;

use super::relay::RelayConfig;
use crate::table::RateLimit;

/// Tunables of the protocol core; see `docs/operations.md` for the file form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Bound on registered nodes.
    pub max_nodes: usize,
    /// How long a registration lives without refresh. Must exceed twice `max_clock_skew`, which
    /// is what makes an old REGISTER worthless once its registration has expired.
    pub registration_lifetime: Duration,
    /// How far a REGISTER timestamp may be from the server's clock.
    pub max_clock_skew: Duration,
    /// The addresses nodes reach this server at (its main port): a REGISTER is accepted only if
    /// it is signed for one of them. The driver fills in the bound address (when specific), the
    /// interface addresses (when bound to a wildcard) and the operator's `public_addrs`.
    pub addresses: Vec<SocketAddr>,
    /// Introductions a node may send.
    pub sender_intro_rate: RateLimit,
    /// Introductions a node may receive from one sender (one network prefix, see
    /// `registration_prefix_v4`/`_v6`): no sender can spend what other senders get.
    pub pair_intro_rate: RateLimit,
    /// Introductions a node may receive in all (the bound on what reaches it).
    pub target_intro_rate: RateLimit,
    /// Port of the second STUN socket, announced in REGISTERED (0: none).
    pub alt_stun_port: u16,
    /// Never answer STUN on the main port with more bytes than the request (breaks bare RFC 8489
    /// clients).
    pub stun_strict_size: bool,
    /// Never answer STUN on the second port with more bytes than the request (default: on; the
    /// second port is for shipworm's own padded requests).
    pub alt_stun_strict_size: bool,
    /// STUN answers larger than their request that one source prefix may get (main port).
    pub stun_excess_prefix_rate: RateLimit,
    /// STUN answers larger than their request that all sources together may get (main port).
    pub stun_excess_global_rate: RateLimit,
    /// How often token secrets rotate.
    pub token_rotation: Duration,
    /// Prefix length that makes one "source" of IPv4 registrations (default 32: one address).
    pub registration_prefix_v4: u8,
    /// Prefix length that makes one "source" of IPv6 registrations (default 56: a customer site).
    pub registration_prefix_v6: u8,
    /// Most nodes registered from one source prefix.
    pub max_registrations_per_prefix: u16,
    /// REGISTER signature checks one source prefix may cost per second.
    pub register_prefix_rate: RateLimit,
    /// Signature checks per second above which the server is "under load": then a REGISTER must
    /// carry a valid cookie (got from a RETRY) to be checked at all.
    pub register_load_threshold: u32,
    /// The relay role (`--relay`): off (`None`) by default.
    pub relay: Option<RelayConfig>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_nodes: crate::table::DEFAULT_MAX_NODES,
            registration_lifetime: Duration::from_secs(120),
            max_clock_skew: Duration::from_secs(30),
            addresses: Vec::new(),
            sender_intro_rate: RateLimit {
                per_second: 10,
                burst: 20,
            },
            pair_intro_rate: RateLimit {
                per_second: 5,
                burst: 10,
            },
            target_intro_rate: RateLimit {
                per_second: 40,
                burst: 80,
            },
            alt_stun_port: 0,
            stun_strict_size: false,
            alt_stun_strict_size: true,
            stun_excess_prefix_rate: RateLimit {
                per_second: 5,
                burst: 10,
            },
            stun_excess_global_rate: RateLimit {
                per_second: 200,
                burst: 400,
            },
            token_rotation: Duration::from_secs(3600),
            registration_prefix_v4: 32,
            registration_prefix_v6: 56,
            max_registrations_per_prefix: 64,
            register_prefix_rate: RateLimit {
                per_second: 20,
                burst: 40,
            },
            register_load_threshold: 1000,
            relay: None,
        }
    }
}

impl ServerConfig {
    /// The default configuration for a server reached at `addresses`.
    pub fn for_addresses(addresses: Vec<SocketAddr>) -> Self {
        Self {
            addresses,
            ..Self::default()
        }
    }

    /// Checks the values against each other; the error says which and why.
    pub fn validate(&self) -> Result<(), String> {
        if self.addresses.is_empty() {
            return Err(
                "addresses must name at least one address nodes reach the server at \
                 (REGISTERs are signed for it); behind a 1:1 NAT pass it with --public-addr"
                    .into(),
            );
        }
        if self.max_nodes == 0 {
            return Err("max_nodes must be at least 1".into());
        }
        let lifetime = self.registration_lifetime.as_secs();
        let max = crate::table::MAX_LIFETIME_S as u64;
        if !(1..=max).contains(&lifetime) {
            return Err(format!("registration_lifetime must be 1 to {max} seconds"));
        }
        if self.registration_lifetime <= self.max_clock_skew * 2 {
            return Err(format!(
                "registration_lifetime ({lifetime} s) must exceed twice max_clock_skew ({} s), \
                 or an old REGISTER could be replayed after its registration expired",
                self.max_clock_skew.as_secs()
            ));
        }
        for (name, r) in [
            ("sender_intro_rate", &self.sender_intro_rate),
            ("pair_intro_rate", &self.pair_intro_rate),
            ("target_intro_rate", &self.target_intro_rate),
            ("stun_excess_prefix_rate", &self.stun_excess_prefix_rate),
            ("stun_excess_global_rate", &self.stun_excess_global_rate),
            ("register_prefix_rate", &self.register_prefix_rate),
        ] {
            if !(1..=1000).contains(&r.per_second) || r.burst == 0 {
                return Err(format!(
                    "{name}: per_second must be 1 to 1000 and burst at least 1"
                ));
            }
        }
        if !(8..=32).contains(&self.registration_prefix_v4)
            || !(16..=128).contains(&self.registration_prefix_v6)
        {
            return Err(
                "registration_prefix_v4 must be 8 to 32 and registration_prefix_v6 16 to 128"
                    .into(),
            );
        }
        if self.max_registrations_per_prefix == 0 || self.register_load_threshold == 0 {
            return Err(
                "max_registrations_per_prefix and register_load_threshold must be at least 1"
                    .into(),
            );
        }
        if self.token_rotation < Duration::from_secs(60) {
            return Err("token_rotation must be at least 60 seconds".into());
        }
        if let Some(relay) = &self.relay {
            relay.validate()?;
        }
        Ok(())
    }
}
