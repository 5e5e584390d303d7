//! [`ServerConfig`]: the protocol core's tunables, and which combinations are valid
//! (`docs/operations.md` §"Configuration" gives their file form).

use std::time::Duration;

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
    /// Introductions a node may send.
    pub sender_intro_rate: RateLimit,
    /// Introductions a node may receive.
    pub target_intro_rate: RateLimit,
    /// Port of the second STUN socket, announced in REGISTERED (0: none).
    pub alt_stun_port: u16,
    /// Never answer STUN with more bytes than the request (breaks bare RFC 8489 clients).
    pub stun_strict_size: bool,
    /// How often token secrets rotate.
    pub token_rotation: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_nodes: crate::table::DEFAULT_MAX_NODES,
            registration_lifetime: Duration::from_secs(120),
            max_clock_skew: Duration::from_secs(30),
            sender_intro_rate: RateLimit {
                per_second: 10,
                burst: 20,
            },
            target_intro_rate: RateLimit {
                per_second: 20,
                burst: 40,
            },
            alt_stun_port: 0,
            stun_strict_size: false,
            token_rotation: Duration::from_secs(3600),
        }
    }
}

impl ServerConfig {
    /// Checks the values against each other; the error says which and why.
    pub fn validate(&self) -> Result<(), String> {
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
            ("sender", &self.sender_intro_rate),
            ("target", &self.target_intro_rate),
        ] {
            if !(1..=1000).contains(&r.per_second) || r.burst == 0 {
                return Err(format!(
                    "{name} introduction rate: per_second must be 1 to 1000 and burst at least 1"
                ));
            }
        }
        if self.token_rotation < Duration::from_secs(60) {
            return Err("token_rotation must be at least 60 seconds".into());
        }
        Ok(())
    }
}
