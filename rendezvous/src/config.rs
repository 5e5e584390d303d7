//! [`Config`]: everything the service can be told (`docs/operations.md` §"Configuration").
//!
//! An embedding program fills it in code; the binary reads it from a TOML file (with the `bin`
//! feature, [`Config::from_file`]) and puts its command-line flags on top:
//!
//! ```toml
//! listen = "[::]:3478"            # dual-stack by default
//! alt_listen = "[::]:3479"        # second STUN port; "off" to disable
//! metrics_listen = "127.0.0.1:9478"  # Prometheus; omit to disable
//! max_nodes = 1000000
//! registration_lifetime_secs = 120
//! max_clock_skew_secs = 30
//! token_rotation_secs = 3600
//! stun_strict_size = false
//! alt_stun_strict_size = true
//! stun_excess_prefix_rate = { per_second = 5, burst = 10 }
//! stun_excess_global_rate = { per_second = 200, burst = 400 }
//! public_addrs = ["203.0.113.5:3478"]   # behind a 1:1 NAT: the address nodes dial
//! sender_intro_rate = { per_second = 10, burst = 20 }
//! pair_intro_rate = { per_second = 5, burst = 10 }
//! target_intro_rate = { per_second = 40, burst = 80 }
//! registration_prefix_v4 = 32
//! registration_prefix_v6 = 56
//! max_registrations_per_prefix = 64
//! register_prefix_rate = { per_second = 20, burst = 40 }
//! register_load_threshold = 1000
//! relay = false                   # the relay role (`--relay`)
//! relay_allow = []                # NodeIds that may use the relay; empty: every registered node
//! relay_node_bytes_per_second = 2000000
//! relay_node_burst_bytes = 262144
//! relay_max_sessions = 10000
//! relay_max_sessions_per_node = 32
//! relay_max_sessions_per_prefix = 16 # sessions the nodes of one registration prefix may open
//! relay_tcp = "[::]:443"          # the relay over TLS for networks that block UDP; "off" to disable
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use crate::server::{RelayConfig, ServerConfig};
use crate::table::RateLimit;

/// The default port (the STUN port).
pub const DEFAULT_PORT: u16 = 3478;
/// The default second STUN port.
pub const DEFAULT_ALT_PORT: u16 = 3479;

/// Everything the server binary can be told.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "bin", derive(serde::Deserialize))]
#[cfg_attr(feature = "bin", serde(deny_unknown_fields, default))]
pub struct Config {
    /// Main UDP socket. `[::]:port` is one dual-stack socket (IPv4 peers appear as IPv4).
    #[cfg_attr(feature = "bin", serde(deserialize_with = "file::required_addr"))]
    pub listen: SocketAddr,
    /// Second UDP socket answering STUN only, to let nodes detect per-destination mapping.
    #[cfg_attr(feature = "bin", serde(deserialize_with = "file::optional_addr"))]
    pub alt_listen: Option<SocketAddr>,
    /// Where to serve Prometheus metrics over HTTP.
    #[cfg_attr(feature = "bin", serde(deserialize_with = "file::optional_addr"))]
    pub metrics_listen: Option<SocketAddr>,
    /// Bound on registered nodes.
    pub max_nodes: usize,
    /// Registration lifetime without refresh.
    pub registration_lifetime_secs: u64,
    /// Allowed distance of a REGISTER timestamp from the server's clock.
    pub max_clock_skew_secs: u64,
    /// Token secret rotation period.
    pub token_rotation_secs: u64,
    /// Never answer STUN on the main port with more bytes than the request.
    pub stun_strict_size: bool,
    /// Never answer STUN on the second port with more bytes than the request.
    pub alt_stun_strict_size: bool,
    /// Larger-than-request STUN answers per source prefix (main port).
    pub stun_excess_prefix_rate: RateLimit,
    /// Larger-than-request STUN answers in all (main port).
    pub stun_excess_global_rate: RateLimit,
    /// Addresses nodes reach this server at besides its own interfaces' (a 1:1 NAT's public
    /// address): REGISTERs signed for them are accepted.
    pub public_addrs: Vec<SocketAddr>,
    /// Introductions one node may send.
    pub sender_intro_rate: RateLimit,
    /// Introductions one node may receive from one sender prefix.
    pub pair_intro_rate: RateLimit,
    /// Introductions one node may receive in all.
    pub target_intro_rate: RateLimit,
    /// IPv4 prefix length of one registration source.
    pub registration_prefix_v4: u8,
    /// IPv6 prefix length of one registration source.
    pub registration_prefix_v6: u8,
    /// Most registrations from one source prefix.
    pub max_registrations_per_prefix: u16,
    /// REGISTER signature checks per source prefix.
    pub register_prefix_rate: RateLimit,
    /// Signature checks per second above which REGISTERs need a cookie.
    pub register_load_threshold: u32,
    /// The relay role: carry tunnel packets between registered nodes.
    pub relay: bool,
    /// NodeIds (text form) that may use the relay; empty: every registered node.
    pub relay_allow: Vec<String>,
    /// Bytes per second one node may send through the relay.
    pub relay_node_bytes_per_second: u64,
    /// Bytes one node may send through the relay back to back.
    pub relay_node_burst_bytes: u64,
    /// Most relay sessions (pairs of nodes) at once.
    pub relay_max_sessions: usize,
    /// Most relay sessions one node may be part of.
    pub relay_max_sessions_per_node: u16,
    /// Most relay sessions the nodes of one source prefix may open.
    pub relay_max_sessions_per_prefix: u16,
    /// The relay's TCP listener (TLS): registration, introductions and relayed packets for nodes
    /// whose UDP gets no answer. Used only with `relay`.
    #[cfg_attr(feature = "bin", serde(deserialize_with = "file::optional_addr"))]
    pub relay_tcp: Option<SocketAddr>,
    /// Most TCP connections to the relay at once.
    pub relay_tcp_max_connections: usize,
}

/// `"off"` or `""` is `None`; anything else must be a socket address.
pub fn parse_optional_addr(s: &str) -> Result<Option<SocketAddr>, String> {
    match s.trim() {
        "" | "off" | "none" => Ok(None),
        other => other.parse().map(Some).map_err(|_| {
            format!(
                "`{other}` is not a socket address such as [::]:3478 or 0.0.0.0:3478 (or \"off\")"
            )
        }),
    }
}

impl Default for Config {
    fn default() -> Self {
        let core = ServerConfig::default();
        let relay = RelayConfig::default();
        Self {
            listen: SocketAddr::from(([0u16; 8], DEFAULT_PORT)),
            alt_listen: Some(SocketAddr::from(([0u16; 8], DEFAULT_ALT_PORT))),
            metrics_listen: None,
            max_nodes: core.max_nodes,
            registration_lifetime_secs: core.registration_lifetime.as_secs(),
            max_clock_skew_secs: core.max_clock_skew.as_secs(),
            token_rotation_secs: core.token_rotation.as_secs(),
            stun_strict_size: core.stun_strict_size,
            alt_stun_strict_size: core.alt_stun_strict_size,
            stun_excess_prefix_rate: core.stun_excess_prefix_rate,
            stun_excess_global_rate: core.stun_excess_global_rate,
            public_addrs: Vec::new(),
            sender_intro_rate: core.sender_intro_rate,
            pair_intro_rate: core.pair_intro_rate,
            target_intro_rate: core.target_intro_rate,
            registration_prefix_v4: core.registration_prefix_v4,
            registration_prefix_v6: core.registration_prefix_v6,
            max_registrations_per_prefix: core.max_registrations_per_prefix,
            register_prefix_rate: core.register_prefix_rate,
            register_load_threshold: core.register_load_threshold,
            relay: false,
            relay_allow: Vec::new(),
            relay_node_bytes_per_second: relay.node_bytes_per_second,
            relay_node_burst_bytes: relay.node_burst_bytes,
            relay_max_sessions: relay.max_sessions,
            relay_max_sessions_per_node: relay.max_sessions_per_node,
            relay_max_sessions_per_prefix: relay.max_sessions_per_prefix,
            relay_tcp: Some(SocketAddr::from(([0u16; 8], crate::tcp::DEFAULT_TCP_PORT))),
            relay_tcp_max_connections: 10_000,
        }
    }
}

impl Config {
    /// Checks every value (the server's own addresses are known only once bound).
    pub fn validate(&self) -> Result<(), String> {
        self.relay_allow()?;
        self.core(0, vec![self.listen]).validate()
    }

    /// The relay allowlist, parsed; the error names the entry that is not a NodeId.
    fn relay_allow(&self) -> Result<Option<std::collections::BTreeSet<[u8; 32]>>, String> {
        if self.relay_allow.is_empty() {
            return Ok(None);
        }
        let mut set = std::collections::BTreeSet::new();
        for text in &self.relay_allow {
            let id: shipworm_tunnel::NodeId = text
                .trim()
                .parse()
                .map_err(|e| format!("relay_allow: `{text}` is not a NodeId: {e}"))?;
            set.insert(*id.as_bytes());
        }
        Ok(Some(set))
    }

    /// The protocol core's configuration, announcing `alt_stun_port`, for a server reached at
    /// `addresses` (to which `public_addrs` are added).
    pub fn core(&self, alt_stun_port: u16, mut addresses: Vec<SocketAddr>) -> ServerConfig {
        addresses.extend(self.public_addrs.iter().copied());
        ServerConfig {
            addresses,
            max_nodes: self.max_nodes,
            registration_lifetime: Duration::from_secs(self.registration_lifetime_secs),
            max_clock_skew: Duration::from_secs(self.max_clock_skew_secs),
            sender_intro_rate: self.sender_intro_rate,
            pair_intro_rate: self.pair_intro_rate,
            target_intro_rate: self.target_intro_rate,
            alt_stun_port,
            stun_strict_size: self.stun_strict_size,
            alt_stun_strict_size: self.alt_stun_strict_size,
            stun_excess_prefix_rate: self.stun_excess_prefix_rate,
            stun_excess_global_rate: self.stun_excess_global_rate,
            token_rotation: Duration::from_secs(self.token_rotation_secs),
            registration_prefix_v4: self.registration_prefix_v4,
            registration_prefix_v6: self.registration_prefix_v6,
            max_registrations_per_prefix: self.max_registrations_per_prefix,
            register_prefix_rate: self.register_prefix_rate,
            register_load_threshold: self.register_load_threshold,
            relay: self.relay.then(|| RelayConfig {
                // Checked by `validate`; an entry that is not a NodeId allows nobody here.
                allow: self
                    .relay_allow()
                    .unwrap_or_else(|_| Some(Default::default())),
                node_bytes_per_second: self.relay_node_bytes_per_second,
                node_burst_bytes: self.relay_node_burst_bytes,
                max_sessions: self.relay_max_sessions,
                max_sessions_per_node: self.relay_max_sessions_per_node,
                max_sessions_per_prefix: self.relay_max_sessions_per_prefix,
                ..RelayConfig::default()
            }),
        }
    }
}

/// The file form, for the binary.
#[cfg(feature = "bin")]
mod file {
    use std::net::SocketAddr;
    use std::path::Path;

    use serde::{Deserialize, Deserializer};

    use super::{parse_optional_addr, Config};

    pub(super) fn optional_addr<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SocketAddr>, D::Error> {
        let s = String::deserialize(d)?;
        parse_optional_addr(&s).map_err(serde::de::Error::custom)
    }

    pub(super) fn required_addr<'de, D: Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
        let s = String::deserialize(d)?;
        parse_optional_addr(&s)
            .map_err(serde::de::Error::custom)?
            .ok_or_else(|| serde::de::Error::custom("listen cannot be off"))
    }

    impl Config {
        /// Reads a TOML file; the error names the file and the offending key.
        pub fn from_file(path: &Path) -> anyhow::Result<Self> {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
            Self::from_toml(&text)
                .map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
        }

        /// Parses TOML text.
        pub fn from_toml(text: &str) -> anyhow::Result<Self> {
            let config: Config = toml::from_str(text)?;
            config.validate().map_err(anyhow::Error::msg)?;
            Ok(config)
        }
    }
}

#[cfg(all(test, feature = "bin"))]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_dual_stack_and_valid() {
        let c = Config::default();
        assert_eq!(c.listen.to_string(), "[::]:3478");
        assert_eq!(c.alt_listen.unwrap().to_string(), "[::]:3479");
        assert!(c.validate().is_ok());
        assert!(
            c.core(3479, vec![]).validate().is_err(),
            "no address at all"
        );
        assert_eq!(Config::from_toml("").unwrap(), c);
    }

    #[test]
    fn file_values_and_errors() {
        let c = Config::from_toml(
            "listen = \"0.0.0.0:4000\"\nalt_listen = \"off\"\nmetrics_listen = \"127.0.0.1:9000\"\n\
             max_nodes = 5\nsender_intro_rate = { per_second = 1, burst = 2 }\n",
        )
        .unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:4000");
        assert_eq!(c.alt_listen, None);
        assert_eq!(c.metrics_listen.unwrap().to_string(), "127.0.0.1:9000");
        assert_eq!(c.max_nodes, 5);
        assert_eq!(
            c.sender_intro_rate,
            RateLimit {
                per_second: 1,
                burst: 2
            }
        );
        let c = Config::from_toml("public_addrs = [\"203.0.113.5:3478\"]\n").unwrap();
        assert_eq!(
            c.core(0, vec!["10.0.0.5:3478".parse().unwrap()]).addresses,
            [
                "10.0.0.5:3478".parse().unwrap(),
                "203.0.113.5:3478".parse().unwrap()
            ]
        );

        let err = Config::from_toml("max_node = 5").unwrap_err().to_string();
        assert!(err.contains("unknown field `max_node`"), "{err}");
        let err = Config::from_toml("listen = \"localhost\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a socket address"), "{err}");
        let err = Config::from_toml("registration_lifetime_secs = 40")
            .unwrap_err()
            .to_string();
        assert!(err.contains("must exceed twice max_clock_skew"), "{err}");

        let c = Config::from_toml("relay = true\nrelay_max_sessions = 7\n").unwrap();
        let relay = c.core(0, vec![c.listen]).relay.expect("relay on");
        assert_eq!((relay.allow, relay.max_sessions), (None, 7));
        assert_eq!(
            Config::default().core(0, vec![]).relay,
            None,
            "off by default"
        );
        let err = Config::from_toml("relay = true\nrelay_allow = [\"nope\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`nope` is not a NodeId"), "{err}");
        let err = Config::from_toml("relay = true\nrelay_node_bytes_per_second = 10\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 1500"), "{err}");
    }
}
