//! QUIC end to end over the overlay: quinn through [`socket::OverlaySocket`], TLS 1.3 with raw
//! public keys ([`tls`]).

pub mod socket;
pub mod tls;
pub mod tunneled;

use std::sync::Arc;
use std::time::Duration;

/// Transport settings for QUIC inside the tunnel: the MTU is discovered between the IPv6 minimum
/// and the tunnel's inner MTU; keep-alives run below common NAT timeouts (the tunnel keeps the
/// underlay open too); idle connections end after a minute of silence.
pub fn transport_config(inner_mtu: usize) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    // UDP payload inside an IPv6 packet of the inner MTU.
    let max_payload = (inner_mtu.saturating_sub(48)).clamp(1200, u16::MAX as usize) as u16;
    t.initial_mtu(1200);
    t.min_mtu(1200);
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(max_payload);
    t.mtu_discovery_config(Some(mtu));
    t.keep_alive_interval(Some(Duration::from_secs(15)));
    t.max_idle_timeout(Some(
        Duration::from_secs(60)
            .try_into()
            .expect("60 s is a valid idle timeout"),
    ));
    Arc::new(t)
}
