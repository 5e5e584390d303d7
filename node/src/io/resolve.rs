//! The one resolver of rendezvous addresses, for the builder, tickets and the CLI alike.
//!
//! A server named by host may resolve to both families. The node registers over one of them
//! (IPv4 first: the common case, and the family most likely behind a NAT that needs the
//! registration's keepalive), and asks the other by STUN for our reflexive address there
//! (`docs/protocol.md` §"Connecting (the node engine)": one registration per server).

use std::io;
use std::net::SocketAddr;

use shipworm_tunnel::RendezvousAddr;

/// Where to reach one rendezvous server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    /// The address to register over.
    pub register: SocketAddr,
    /// The server's address of the other family, if it has one: asked by STUN only.
    pub stun: Option<SocketAddr>,
}

/// Resolves one server.
pub async fn resolve(server: &RendezvousAddr) -> io::Result<Resolved> {
    let addrs: Vec<SocketAddr> = match server {
        RendezvousAddr::Ip(a) => vec![*a],
        RendezvousAddr::Host(h, p) => tokio::net::lookup_host((h.as_str(), *p))
            .await
            .map_err(|e| {
                io::Error::new(e.kind(), format!("cannot resolve rendezvous {h}:{p}: {e}"))
            })?
            .collect(),
    };
    pick(&addrs)
        .ok_or_else(|| io::Error::other(format!("rendezvous {server} resolves to no address")))
}

/// Resolves every server; the first failure names its server.
pub async fn resolve_all(servers: &[RendezvousAddr]) -> io::Result<Vec<Resolved>> {
    let mut out = Vec::with_capacity(servers.len());
    for s in servers {
        out.push(resolve(s).await?);
    }
    Ok(out)
}

/// The registration address (IPv4 first) and the other family's address for STUN.
fn pick(addrs: &[SocketAddr]) -> Option<Resolved> {
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
            pick(&[v6, v4]),
            Some(Resolved {
                register: v4,
                stun: Some(v6)
            })
        );
        assert_eq!(
            pick(&[v6]),
            Some(Resolved {
                register: v6,
                stun: None
            })
        );
        assert_eq!(pick(&[]), None);
    }

    #[tokio::test]
    async fn names_resolve_and_failures_name_the_server() {
        let r = resolve(&"localhost:3478".parse().unwrap()).await.unwrap();
        assert_eq!(r.register.port(), 3478);
        assert!(r.register.ip().is_loopback());
        let e = resolve(&"no-such-host.invalid:3478".parse().unwrap())
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no-such-host.invalid:3478"), "{e}");
    }
}
