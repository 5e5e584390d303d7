//! The one resolver of rendezvous addresses, for the builder, tickets and the CLI alike.
//!
//! A server named by host may resolve to both families. The node registers over one of them
//! (IPv4 first: the common case, and the family most likely behind a NAT that needs the
//! registration's keepalive), and asks the other by STUN for our reflexive address there
//! (`docs/protocol.md` §"Connecting (the node engine)": one registration per server).
//!
//! A host without IPv4 (given a NAT64 prefix, [`crate::io::nat64`]) registers over the server's
//! IPv6 address if it has one, else over the NAT64 synthesis of its IPv4 address; a name on a
//! DNS64 network resolves to a synthesis by itself.

use std::io;
use std::net::SocketAddr;

use shipworm_tunnel::RendezvousAddr;

use crate::engine::nat64::Nat64Prefix;

/// Where to reach one rendezvous server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    /// The address to register over.
    pub register: SocketAddr,
    /// The server's address of the other family, if it has one: asked by STUN only.
    pub stun: Option<SocketAddr>,
}

/// Resolves one server; with `nat64` (the host has no IPv4), IPv4 addresses are reached through
/// that prefix.
pub async fn resolve(server: &RendezvousAddr, nat64: Option<&Nat64Prefix>) -> io::Result<Resolved> {
    let addrs: Vec<SocketAddr> = match server {
        RendezvousAddr::Ip(a) => vec![*a],
        RendezvousAddr::Host(h, p) => tokio::net::lookup_host((h.as_str(), *p))
            .await
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot resolve rendezvous {h}:{p}: {e}"))
            })?
            .collect(),
    };
    pick(&addrs, nat64)
        .ok_or_else(|| io::Error::other(format!("rendezvous {server} resolves to no address")))
}

/// Resolves every server; the first failure names its server.
pub async fn resolve_all(
    servers: &[RendezvousAddr],
    nat64: Option<&Nat64Prefix>,
) -> io::Result<Vec<Resolved>> {
    let mut out = Vec::with_capacity(servers.len());
    for s in servers {
        out.push(resolve(s, nat64).await?);
    }
    Ok(out)
}

/// The registration address (IPv4 first) and the other family's address for STUN; with `nat64`,
/// native IPv6 first, else the synthesis of the IPv4 address (any IPv4: the user named this
/// server), and no STUN.
fn pick(addrs: &[SocketAddr], nat64: Option<&Nat64Prefix>) -> Option<Resolved> {
    if let Some(p) = nat64 {
        let native = addrs.iter().find(|a| match a {
            SocketAddr::V6(v6) => v6.ip().to_ipv4_mapped().is_none(),
            SocketAddr::V4(_) => false,
        });
        let synthesized =
            addrs
                .iter()
                .find_map(|a| match shipworm_tunnel::wire::addr::normalize(*a) {
                    SocketAddr::V4(v4) => {
                        Some(SocketAddr::from((p.synthesize(*v4.ip()), v4.port())))
                    }
                    SocketAddr::V6(_) => None,
                });
        return native.copied().or(synthesized).map(|register| Resolved {
            register,
            stun: None,
        });
    }
    let v4 = addrs.iter().find(|a| a.is_ipv4()).copied();
    let v6 = addrs.iter().find(|a| a.is_ipv6()).copied();
    match (v4, v6) {
        (Some(register), stun) => Some(Resolved { register, stun }),
        (None, Some(register)) => Some(Resolved {
            register,
            stun: None,
        }),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_registers_and_ipv6_is_asked_by_stun() {
        let v4: SocketAddr = "192.0.2.1:3478".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:3478".parse().unwrap();
        assert_eq!(
            pick(&[v6, v4], None),
            Some(Resolved {
                register: v4,
                stun: Some(v6)
            })
        );
        assert_eq!(
            pick(&[v6], None),
            Some(Resolved {
                register: v6,
                stun: None
            })
        );
        assert_eq!(pick(&[], None), None);
    }

    #[test]
    fn without_ipv4_a_server_is_reached_over_ipv6_or_through_nat64() {
        let p: Nat64Prefix = "2001:db8:64::/96".parse().unwrap();
        let v4: SocketAddr = "5.5.0.2:3478".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:5.5.0.2]:3478".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::2]:3478".parse().unwrap();
        let synthesized: SocketAddr = "[2001:db8:64::505:2]:3478".parse().unwrap();
        let only = |register| {
            Some(Resolved {
                register,
                stun: None,
            })
        };
        assert_eq!(pick(&[v4], Some(&p)), only(synthesized));
        assert_eq!(pick(&[mapped], Some(&p)), only(synthesized));
        assert_eq!(pick(&[v4, v6], Some(&p)), only(v6));
        assert_eq!(pick(&[], Some(&p)), None);
    }

    #[tokio::test]
    async fn names_resolve_and_failures_name_the_server() {
        let r = resolve(&"localhost:3478".parse().unwrap(), None)
            .await
            .unwrap();
        assert_eq!(r.register.port(), 3478);
        assert!(r.register.ip().is_loopback());
        let e = resolve(&"no-such-host.invalid:3478".parse().unwrap(), None)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no-such-host.invalid:3478"), "{e}");
    }
}
