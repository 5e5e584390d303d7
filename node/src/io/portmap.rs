//! Port mappings on the gateway: PCP / NAT-PMP (`crab_nat`) first, UPnP IGD (`igd-next`) next.
//!
//! A mapping is a candidate any peer can reach, even through a NAT that maps per destination,
//! and its existence is announced in the handshake flags. Leases are renewed at half-life and the
//! mapping is removed on shutdown; an IGD that only grants permanent leases (UPnP error 725) gets
//! a permanent one, removed on shutdown all the same. The lease asked for is [`DEFAULT_LEASE`]
//! unless the node is told otherwise (`Builder::portmap_lease`, `--portmap-lease`), within
//! [`MIN_LEASE`]..=[`MAX_LEASE`].

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::num::NonZeroU16;
use std::time::Duration;

use igd_next::aio::tokio::Tokio;
use igd_next::{AddPortError, PortMappingProtocol, SearchOptions};

/// Lease asked for by default.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(3600);
/// The shortest lease a node may ask for: it is renewed at half-life, so a shorter one would
/// have the node talk to its gateway more than once every two seconds.
pub const MIN_LEASE: Duration = Duration::from_secs(4);
/// The longest lease a node may ask for: a week, the most an IGDv2 grants (and well within
/// PCP's 32-bit lifetime).
pub const MAX_LEASE: Duration = Duration::from_secs(7 * 24 * 3600);
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
    /// The lease asked for is out of range.
    #[error(
        "port-mapping lease of {0:?} is out of range: give {min}..={max} seconds",
        min = MIN_LEASE.as_secs(),
        max = MAX_LEASE.as_secs()
    )]
    Lease(Duration),
    /// Neither protocol answered or both refused.
    #[error("PCP/NAT-PMP: {pcp}; UPnP: {upnp}")]
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

/// Checks that `lease` is one a node may ask for ([`MIN_LEASE`]..=[`MAX_LEASE`]).
pub fn check_lease(lease: Duration) -> Result<Duration, PortMapError> {
    if (MIN_LEASE..=MAX_LEASE).contains(&lease) {
        Ok(lease)
    } else {
        Err(PortMapError::Lease(lease))
    }
}

/// Maps UDP `local_port` of this host on the default gateway for `lease`, renewable.
pub async fn map(local_port: u16, lease: Duration) -> Result<PortMap, PortMapError> {
    let lease = check_lease(lease)?;
    let gateway = default_gateway().ok_or(PortMapError::NoGateway)?;
    let local = local_ip_toward(gateway).ok_or(PortMapError::NoGateway)?;
    let pcp = match map_pcp(gateway, local, local_port, lease).await {
        Ok(m) => return Ok(m),
        Err(e) => e,
    };
    match map_upnp(local, local_port, lease).await {
        Ok(m) => Ok(m),
        Err(upnp) => Err(PortMapError::Refused { pcp, upnp }),
    }
}

async fn map_pcp(
    gateway: Ipv4Addr,
    local: Ipv4Addr,
    port: u16,
    lease: Duration,
) -> Result<PortMap, String> {
    let port = NonZeroU16::new(port).ok_or("port 0")?;
    let timeouts = crab_nat::TimeoutConfig {
        initial_timeout: Duration::from_millis(250),
        max_retries: 2,
        max_retry_timeout: Some(Duration::from_secs(1)),
    };
    let options = crab_nat::PortMappingOptions {
        external_port: Some(port),
        lifetime_seconds: Some(lease_secs(lease)),
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

/// A lease in whole seconds, as both protocols carry it.
fn lease_secs(lease: Duration) -> u32 {
    u32::try_from(lease.as_secs()).unwrap_or(u32::MAX)
}

async fn map_upnp(local: Ipv4Addr, port: u16, lease: Duration) -> Result<PortMap, String> {
    let mut options = SearchOptions::default();
    options.timeout = Some(Duration::from_secs(3));
    options.single_search_timeout = Some(Duration::from_secs(2));
    let gateway = igd_next::aio::tokio::search_gateway(options)
        .await
        .map_err(|e| e.to_string())?;
    map_upnp_on(
        gateway,
        SocketAddr::V4(SocketAddrV4::new(local, port)),
        lease,
    )
    .await
}

/// Maps UDP `local` on the IGD `gateway` (found by SSDP, or built from a known control URL),
/// asking for its own port outside for `lease`: a gateway that grants only permanent leases
/// (error 725) gets a permanent one; when the port is taken outside (error 718, or 724 from an
/// IGD that will not map one port to another), any free external port will do.
pub(crate) async fn map_upnp_on(
    gateway: igd_next::aio::Gateway<Tokio>,
    local: SocketAddr,
    lease: Duration,
) -> Result<PortMap, String> {
    let external_ip = gateway.get_external_ip().await.map_err(|e| e.to_string())?;
    let port = local.port();
    let secs = lease_secs(lease);
    let (external_port, lease) = match gateway
        .add_port(PortMappingProtocol::UDP, port, local, secs, DESCRIPTION)
        .await
    {
        Ok(()) => (port, Some(lease)),
        // Error 725: this IGD grants only permanent leases; take one and remove it on shutdown.
        Err(AddPortError::OnlyPermanentLeasesSupported) => {
            gateway
                .add_port(PortMappingProtocol::UDP, port, local, 0, DESCRIPTION)
                .await
                .map_err(|e| format!("permanent lease (after error 725): {e}"))?;
            (port, None)
        }
        // Our port is taken on the gateway: any external port will do.
        Err(AddPortError::PortInUse) | Err(AddPortError::SamePortValuesRequired) => {
            let p = gateway
                .add_any_port(PortMappingProtocol::UDP, local, secs, DESCRIPTION)
                .await
                .map_err(|e| format!("external port {port} is taken, and then: {e}"))?;
            (p, Some(lease))
        }
        Err(e) => return Err(e.to_string()),
    };
    Ok(PortMap {
        external: SocketAddr::new(external_ip, external_port),
        protocol: Protocol::Upnp,
        lease,
        holder: Holder::Upnp {
            gateway,
            external_port,
            local,
        },
    })
}

impl PortMap {
    /// When to renew: at half the lease (`None`: permanent).
    pub fn renew_after(&self) -> Option<Duration> {
        self.lease.map(|l| l / 2)
    }

    /// Renews the lease for as long again (a permanent mapping needs nothing).
    pub async fn renew(&mut self) -> Result<(), String> {
        let Some(lease) = self.lease else {
            return Ok(());
        };
        match &mut self.holder {
            Holder::Pcp(m) => m.renew().await.map_err(|e| e.to_string()),
            // The same external port for the same client: the IGD refreshes the lease.
            Holder::Upnp {
                gateway,
                external_port,
                local,
            } => gateway
                .add_port(
                    PortMappingProtocol::UDP,
                    *external_port,
                    *local,
                    lease_secs(lease),
                    DESCRIPTION,
                )
                .await
                .map_err(|e| e.to_string()),
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

/// Holds a gateway port mapping for `port`: creates it for `lease`, renews it at half-lease,
/// removes it when `stop` fires.
pub async fn keep(
    port: u16,
    lease: Duration,
    commands: tokio::sync::mpsc::Sender<crate::io::driver::DriverCommand>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    report: impl Fn(String),
) {
    use crate::engine::paths::CandidateKind;
    use crate::io::driver::DriverCommand;
    let mut mapping = tokio::select! {
        r = map(port, lease) => match r {
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
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use http_body_util::{BodyExt, Full};
    use hyper::body::{Bytes, Incoming};
    use hyper::{Request, Response};
    use hyper_util::rt::TokioIo;
    use igd_next::aio::tokio::Tokio;

    const SERVICE: &str = "urn:schemas-upnp-org:service:WANIPConnection:1";
    const CONTROL: &str = "/ctl/IPConn";

    /// What the fake IGD was asked, in order: (action, NewExternalPort, NewLeaseDuration).
    type Calls = Arc<Mutex<Vec<(String, String, String)>>>;

    /// The text of `<tag>...</tag>` in `xml`, or "".
    fn field(xml: &str, tag: &str) -> String {
        let open = format!("<{tag}>");
        xml.split_once(&open)
            .and_then(|(_, rest)| rest.split_once(&format!("</{tag}>")))
            .map(|(v, _)| v.to_string())
            .unwrap_or_default()
    }

    fn envelope(body: &str) -> String {
        format!(
            "<?xml version=\"1.0\"?><s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
             s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>{body}</s:Body></s:Envelope>"
        )
    }

    fn fault(code: u16, description: &str) -> String {
        envelope(&format!(
            "<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>\
             <UPnPError xmlns=\"urn:schemas-upnp-org:control-1-0\"><errorCode>{code}</errorCode>\
             <errorDescription>{description}</errorDescription></UPnPError></detail></s:Fault>"
        ))
    }

    /// How the fake IGD refuses.
    #[derive(Clone, Copy)]
    enum Igd {
        /// AddPortMapping with a nonzero lease gets error 725 (OnlyPermanentLeasesSupported).
        PermanentOnly,
        /// AddPortMapping of this external port gets error 718 (ConflictInMappingEntry): another
        /// client holds it. Like many IGDv1 routers, it has no AddAnyPortMapping.
        Taken(u16),
    }

    /// The fake IGD's answer to `action` with SOAP `body`.
    fn answer(igd: Igd, action: &str, body: &str) -> String {
        let ok = |name: &str, inner: &str| {
            envelope(&format!(
                "<u:{name}Response xmlns:u=\"{SERVICE}\">{inner}</u:{name}Response>"
            ))
        };
        match (igd, action) {
            (_, "GetExternalIPAddress") => ok(
                action,
                "<NewExternalIPAddress>198.51.100.7</NewExternalIPAddress>",
            ),
            (Igd::PermanentOnly, "AddPortMapping") if field(body, "NewLeaseDuration") != "0" => {
                fault(725, "OnlyPermanentLeasesSupported")
            }
            (Igd::Taken(port), "AddPortMapping")
                if field(body, "NewExternalPort") == port.to_string() =>
            {
                fault(718, "ConflictInMappingEntry")
            }
            (_, "AddPortMapping" | "DeletePortMapping") => ok(action, ""),
            _ => fault(401, "Invalid Action"),
        }
    }

    /// A fake IGD's control URL on loopback, recording every call in `calls`.
    async fn fake_igd(igd: Igd, calls: Calls) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let calls = calls.clone();
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let calls = calls.clone();
                    async move {
                        // SOAPAction: "urn:...:WANIPConnection:1#AddPortMapping"
                        let action = request
                            .headers()
                            .get("SOAPAction")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.trim_matches('"').rsplit_once('#'))
                            .map(|(_, a)| a.to_string())
                            .unwrap_or_default();
                        let body = request.into_body().collect().await?.to_bytes();
                        let body = String::from_utf8_lossy(&body).into_owned();
                        calls.lock().unwrap().push((
                            action.clone(),
                            field(&body, "NewExternalPort"),
                            field(&body, "NewLeaseDuration"),
                        ));
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from(answer(
                            igd, &action, &body,
                        )))))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        addr
    }

    /// A gateway at a known control URL, as SSDP and the device description would have given.
    fn gateway_at(addr: SocketAddr) -> igd_next::aio::Gateway<Tokio> {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let schema = HashMap::from([
            (
                "AddPortMapping".to_string(),
                args(&[
                    "NewRemoteHost",
                    "NewExternalPort",
                    "NewProtocol",
                    "NewInternalPort",
                    "NewInternalClient",
                    "NewEnabled",
                    "NewPortMappingDescription",
                    "NewLeaseDuration",
                ]),
            ),
            (
                "DeletePortMapping".to_string(),
                args(&["NewRemoteHost", "NewExternalPort", "NewProtocol"]),
            ),
            ("GetExternalIPAddress".to_string(), vec![]),
        ]);
        igd_next::aio::Gateway {
            addr,
            root_url: "/rootDesc.xml".into(),
            control_url: CONTROL.into(),
            control_schema_url: "/WANIPCn.xml".into(),
            control_schema: schema,
            service_type: SERVICE.into(),
            provider: Tokio,
        }
    }

    /// An IGD that grants only permanent leases (UPnP error 725): the node takes a permanent
    /// mapping, never renews it, and removes it when done. miniupnpd never answers 725, so the
    /// lab cannot show this; a fake IGD on loopback does, driven through igd-next.
    #[tokio::test]
    async fn an_igd_that_grants_only_permanent_leases_gets_a_permanent_mapping_removed_at_the_end()
    {
        let calls = Calls::default();
        let igd = fake_igd(Igd::PermanentOnly, calls.clone()).await;
        let local: SocketAddr = "192.168.1.2:51820".parse().unwrap();
        let mut m = super::map_upnp_on(gateway_at(igd), local, Duration::from_secs(600))
            .await
            .expect("a permanent mapping after error 725");
        assert_eq!(m.external, "198.51.100.7:51820".parse().unwrap());
        assert_eq!(m.protocol, super::Protocol::Upnp);
        assert_eq!(m.lease, None, "the mapping is permanent");
        assert_eq!(
            m.renew_after(),
            None,
            "a permanent mapping is never renewed"
        );
        m.renew().await.unwrap();
        m.remove().await.unwrap();
        let calls = calls.lock().unwrap().clone();
        let expected = [
            ("GetExternalIPAddress", "", ""),
            ("AddPortMapping", "51820", "600"),
            ("AddPortMapping", "51820", "0"),
            ("DeletePortMapping", "51820", ""),
        ];
        let expected: Vec<(String, String, String)> = expected
            .iter()
            .map(|(a, p, l)| (a.to_string(), p.to_string(), l.to_string()))
            .collect();
        assert_eq!(calls, expected);
    }

    /// The node's port is taken on an IGD without AddAnyPortMapping (error 718): the node maps
    /// another external port (igd-next tries random ones), renews and removes that one. The lab
    /// shows the same on miniupnpd, which offers AddAnyPortMapping.
    #[tokio::test]
    async fn a_taken_port_on_an_igd_without_add_any_port_mapping_gets_another_port() {
        let calls = Calls::default();
        let igd = fake_igd(Igd::Taken(51820), calls.clone()).await;
        let local: SocketAddr = "192.168.1.2:51820".parse().unwrap();
        let mut m = super::map_upnp_on(gateway_at(igd), local, Duration::from_secs(600))
            .await
            .expect("another external port after error 718");
        let port = m.external.port();
        assert_ne!(port, 51820, "the node claims the taken port");
        assert_eq!(
            m.external.ip(),
            "198.51.100.7".parse::<std::net::IpAddr>().unwrap()
        );
        assert_eq!(m.lease, Some(Duration::from_secs(600)));
        assert_eq!(m.renew_after(), Some(Duration::from_secs(300)));
        m.renew().await.unwrap();
        m.remove().await.unwrap();
        let calls = calls.lock().unwrap().clone();
        // Asked for its own port first (igd-next's random pick may hit the taken port again,
        // then it tries another), then renewed and deleted the port it got.
        let port = port.to_string();
        let taken = (
            "AddPortMapping".to_string(),
            "51820".to_string(),
            "600".to_string(),
        );
        assert_eq!(calls[0].0, "GetExternalIPAddress");
        let refused = calls[1..].iter().take_while(|c| **c == taken).count();
        assert!(refused >= 1, "{calls:?}");
        let expected = [
            ("AddPortMapping", port.as_str(), "600"),
            ("AddPortMapping", port.as_str(), "600"),
            ("DeletePortMapping", port.as_str(), ""),
        ];
        let expected: Vec<(String, String, String)> = expected
            .iter()
            .map(|(a, p, l)| (a.to_string(), p.to_string(), l.to_string()))
            .collect();
        assert_eq!(calls[1 + refused..], expected[..], "{calls:?}");
    }

    /// Leases outside 4 s..=1 week are refused with the range in the error.
    #[test]
    fn a_lease_out_of_range_is_refused_naming_the_range() {
        for bad in [
            Duration::from_secs(3),
            super::MAX_LEASE + Duration::from_secs(1),
        ] {
            let e = super::check_lease(bad).unwrap_err().to_string();
            assert!(e.contains("4..=604800 seconds"), "{e}");
        }
        for good in [super::MIN_LEASE, super::DEFAULT_LEASE, super::MAX_LEASE] {
            assert_eq!(super::check_lease(good).unwrap(), good);
        }
    }

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
