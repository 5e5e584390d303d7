//! Port mappings on the gateway: PCP / NAT-PMP (`crab_nat`) first, UPnP IGD (`igd-next`) next.
//!
//! A mapping is a candidate any peer can reach, even through a NAT that maps per destination,
//! and its existence is announced in the handshake flags. Leases are renewed at half-life and the
//! mapping is removed on shutdown; an IGD that only grants permanent leases (UPnP error 725) gets
//! a permanent one, removed on shutdown all the same.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::num::NonZeroU16;
use std::time::Duration;

use igd_next::aio::tokio::Tokio;
use igd_next::{AddPortError, PortMappingProtocol, SearchOptions};

/// Lease asked for.
pub const LEASE: Duration = Duration::from_secs(3600);
/// Description shown in the router's table.
const DESCRIPTION: &str = "shipworm";

/// Which protocol holds the mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// PCP (RFC 6887) or NAT-PMP (RFC 6886).
    PcpOrNatPmp,
    /// UPnP IGD.
    Upnp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::PcpOrNatPmp => "PCP/NAT-PMP",
            Protocol::Upnp => "UPnP IGD",
        })
    }
}

/// Why no mapping could be made.
#[derive(Debug, thiserror::Error)]
pub enum PortMapError {
    /// No default IPv4 gateway.
    #[error("no default IPv4 gateway")]
    NoGateway,
    /// Neither protocol answered or both refused.
    #[error("no port mapping: PCP/NAT-PMP: {pcp}; UPnP: {upnp}")]
    Refused {
        /// What PCP/NAT-PMP said.
        pcp: String,
        /// What UPnP said.
        upnp: String,
    },
}

enum Holder {
    Pcp(crab_nat::PortMapping),
    Upnp {
        gateway: igd_next::aio::Gateway<Tokio>,
        external_port: u16,
        local: SocketAddr,
        permanent: bool,
    },
}

/// A live port mapping.
pub struct PortMap {
    /// The public address peers can send to.
    pub external: SocketAddr,
    /// Who holds it.
    pub protocol: Protocol,
    /// Lease granted (`None`: permanent).
    pub lease: Option<Duration>,
    holder: Holder,
}

impl std::fmt::Debug for PortMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortMap")
            .field("external", &self.external)
            .field("protocol", &self.protocol)
            .field("lease", &self.lease)
            .finish()
    }
}

/// The default IPv4 gateway from `/proc/net/route` (Linux).
pub fn default_gateway() -> Option<Ipv4Addr> {
    parse_default_gateway(&std::fs::read_to_string("/proc/net/route").ok()?)
}

fn parse_default_gateway(table: &str) -> Option<Ipv4Addr> {
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Iface Destination Gateway Flags ...; addresses are little-endian hex.
        if f.len() < 4 || f[1] != "00000000" {
            return None;
        }
        let gw = u32::from_str_radix(f[2], 16).ok()?;
        (gw != 0).then(|| Ipv4Addr::from(gw.swap_bytes()))
    })
}

/// Our address on the link toward `gateway`.
fn local_ip_toward(gateway: Ipv4Addr) -> Option<Ipv4Addr> {
    let s = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    s.connect((gateway, 9)).ok()?;
    match s.local_addr().ok()?.ip() {
        IpAddr::V4(v4) => Some(v4),
        IpAddr::V6(_) => None,
    }
}

/// Maps UDP `local_port` of this host on the default gateway.
pub async fn map(local_port: u16) -> Result<PortMap, PortMapError> {
    let gateway = default_gateway().ok_or(PortMapError::NoGateway)?;
    let local = local_ip_toward(gateway).ok_or(PortMapError::NoGateway)?;
    let pcp = match map_pcp(gateway, local, local_port).await {
        Ok(m) => return Ok(m),
        Err(e) => e,
    };
    match map_upnp(local, local_port).await {
        Ok(m) => Ok(m),
        Err(upnp) => Err(PortMapError::Refused { pcp, upnp }),
    }
}

async fn map_pcp(gateway: Ipv4Addr, local: Ipv4Addr, port: u16) -> Result<PortMap, String> {
    let port = NonZeroU16::new(port).ok_or("port 0")?;
    let timeouts = crab_nat::TimeoutConfig {
        initial_timeout: Duration::from_millis(250),
        max_retries: 2,
        max_retry_timeout: Some(Duration::from_secs(1)),
    };
    let options = crab_nat::PortMappingOptions {
        external_port: Some(port),
        lifetime_seconds: Some(LEASE.as_secs() as u32),
        timeout_config: Some(timeouts),
    };
    let m = crab_nat::PortMapping::new(
        gateway.into(),
        local.into(),
        crab_nat::InternetProtocol::Udp,
        port,
        options,
    )
    .await
    .map_err(|e| e.to_string())?;
    let external_ip = match m.mapping_type() {
        crab_nat::PortMappingType::Pcp { external_ip, .. } => external_ip,
        crab_nat::PortMappingType::NatPmp => IpAddr::V4(
            crab_nat::natpmp::external_address(gateway.into(), Some(timeouts))
                .await
                .map_err(|e| e.to_string())?,
        ),
    };
    Ok(PortMap {
        external: SocketAddr::new(external_ip, m.external_port().get()),
        protocol: Protocol::PcpOrNatPmp,
        lease: Some(Duration::from_secs(m.lifetime() as u64)),
        holder: Holder::Pcp(m),
    })
}

async fn map_upnp(local: Ipv4Addr, port: u16) -> Result<PortMap, String> {
    let mut options = SearchOptions::default();
    options.timeout = Some(Duration::from_secs(3));
    options.single_search_timeout = Some(Duration::from_secs(2));
    let gateway = igd_next::aio::tokio::search_gateway(options)
        .await
        .map_err(|e| e.to_string())?;
    let external_ip = gateway.get_external_ip().await.map_err(|e| e.to_string())?;
    let local_addr = SocketAddr::V4(SocketAddrV4::new(local, port));
    let lease = LEASE.as_secs() as u32;
    let (external_port, permanent) = match gateway
        .add_port(
            PortMappingProtocol::UDP,
            port,
            local_addr,
            lease,
            DESCRIPTION,
        )
        .await
    {
        Ok(()) => (port, false),
        // Error 725: this IGD grants only permanent leases; take one and remove it on shutdown.
        Err(AddPortError::OnlyPermanentLeasesSupported) => {
            gateway
                .add_port(PortMappingProtocol::UDP, port, local_addr, 0, DESCRIPTION)
                .await
                .map_err(|e| e.to_string())?;
            (port, true)
        }
        // Our port is taken on the gateway: any external port will do.
        Err(AddPortError::PortInUse) | Err(AddPortError::SamePortValuesRequired) => {
            let p = gateway
                .add_any_port(PortMappingProtocol::UDP, local_addr, lease, DESCRIPTION)
                .await
                .map_err(|e| e.to_string())?;
            (p, false)
        }
        Err(e) => return Err(e.to_string()),
    };
    Ok(PortMap {
        external: SocketAddr::new(external_ip, external_port),
        protocol: Protocol::Upnp,
        lease: (!permanent).then_some(LEASE),
        holder: Holder::Upnp {
            gateway,
            external_port,
            local: local_addr,
            permanent,
        },
    })
}

impl PortMap {
    /// When to renew: at half the lease (`None`: permanent).
    pub fn renew_after(&self) -> Option<Duration> {
        self.lease.map(|l| l / 2)
    }

    /// Renews the lease.
    pub async fn renew(&mut self) -> Result<(), String> {
        match &mut self.holder {
            Holder::Pcp(m) => m.renew().await.map_err(|e| e.to_string()),
            Holder::Upnp {
                gateway,
                external_port,
                local,
                permanent: false,
            } => gateway
                .add_port(
                    PortMappingProtocol::UDP,
                    *external_port,
                    *local,
                    LEASE.as_secs() as u32,
                    DESCRIPTION,
                )
                .await
                .map_err(|e| e.to_string()),
            Holder::Upnp { .. } => Ok(()),
        }
    }

    /// Removes the mapping from the gateway.
    pub async fn remove(self) -> Result<(), String> {
        match self.holder {
            Holder::Pcp(m) => m.try_drop().await.map_err(|(e, _)| e.to_string()),
            Holder::Upnp {
                gateway,
                external_port,
                ..
            } => gateway
                .remove_port(PortMappingProtocol::UDP, external_port)
                .await
                .map_err(|e| e.to_string()),
        }
    }
}

/// Holds a gateway port mapping for `port`: creates it, renews it at half-lease, removes it when
/// `stop` fires.
pub async fn keep(
    port: u16,
    commands: tokio::sync::mpsc::Sender<crate::io::driver::DriverCommand>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    report: impl Fn(String),
) {
    use crate::engine::paths::CandidateKind;
    use crate::io::driver::DriverCommand;
    let mut mapping = tokio::select! {
        r = map(port) => match r {
            Ok(m) => m,
            Err(e) => {
                report(format!("no port mapping: {e}"));
                return;
            }
        },
        _ = &mut stop => return,
    };
    report(format!(
        "port mapping: {} via {}",
        mapping.external, mapping.protocol
    ));
    let _ = commands
        .send(DriverCommand::Candidate(
            mapping.external,
            CandidateKind::Mapped,
        ))
        .await;
    let _ = commands.send(DriverCommand::PortMapped(true)).await;
    loop {
        let renew = mapping.renew_after();
        tokio::select! {
            _ = async { match renew { Some(d) => tokio::time::sleep(d).await, None => std::future::pending().await } } => {
                if let Err(e) = mapping.renew().await {
                    report(format!("port mapping renewal failed: {e}"));
                    let _ = commands.send(DriverCommand::PortMapped(false)).await;
                    return;
                }
            }
            _ = &mut stop => break,
        }
    }
    let external = mapping.external;
    match mapping.remove().await {
        Ok(()) => report(format!("port mapping {external} removed")),
        Err(e) => report(format!("port mapping {external}: removal failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_gateway_from_the_route_table() {
        let table =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                     eth0\t0001A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                     eth0\t00000000\t0101A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n";
        assert_eq!(
            super::parse_default_gateway(table),
            Some("192.168.1.1".parse().unwrap())
        );
        assert_eq!(super::parse_default_gateway("Iface\tDestination\n"), None);
    }
}
