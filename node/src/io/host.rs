//! Host candidates: the addresses of this machine's interfaces, with the node socket's port.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::UdpSocket;

use crate::engine::paths::CandidateKind;
use crate::engine::Engine;

/// IPv6 addresses the kernel marks deprecated or tentative (`/proc/net/if_inet6` flags
/// `IFA_F_DEPRECATED` 0x20, `IFA_F_TENTATIVE` 0x40): not to be offered as candidates.
fn unusable_ipv6() -> Vec<std::net::Ipv6Addr> {
    let Ok(text) = std::fs::read_to_string("/proc/net/if_inet6") else {
        return Vec::new();
    };
    parse_if_inet6(&text)
}

fn parse_if_inet6(text: &str) -> Vec<std::net::Ipv6Addr> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let hex = f.next()?;
            let flags = u32::from_str_radix(f.nth(3)?, 16).ok()?;
            if flags & 0x60 == 0 || hex.len() != 32 {
                return None;
            }
            let mut o = [0u8; 16];
            for (i, b) in o.iter_mut().enumerate() {
                *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
            }
            Some(std::net::Ipv6Addr::from(o))
        })
        .collect()
}

/// Host candidates: every interface address (IPv4 and IPv6) except loopback, link-local,
/// deprecated or tentative IPv6 and the overlay itself, with the socket's port. `v6` says
/// whether the socket can use IPv6.
pub fn host_candidates(port: u16, v6: bool) -> Vec<SocketAddr> {
    let Ok(ifaces) = if_addrs::get_if_addrs() else {
        return Vec::new();
    };
    let unusable = unusable_ipv6();
    let mut out: Vec<SocketAddr> = ifaces
        .iter()
        .filter(|i| !i.is_loopback() && !i.is_link_local())
        .map(|i| i.ip())
        .filter(|ip| match ip {
            IpAddr::V4(_) => true,
            IpAddr::V6(v6addr) => {
                v6 && !shipworm_tunnel::overlay::is_overlay(v6addr)
                    && !v6addr.is_multicast()
                    && !unusable.contains(v6addr)
            }
        })
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Adds the host candidates of `socket` to `engine`.
pub fn gather_host_candidates(engine: &mut Engine, socket: &UdpSocket) -> io::Result<()> {
    let local = shipworm_tunnel::wire::addr::normalize(socket.local_addr()?);
    if !local.ip().is_unspecified() {
        // Bound to one address: that is the only host candidate (loopback included, on purpose).
        engine.add_local_candidate(local, CandidateKind::Host);
        return Ok(());
    }
    for c in host_candidates(local.port(), local.is_ipv6()) {
        engine.add_local_candidate(c, CandidateKind::Host);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn deprecated_and_tentative_ipv6_addresses_are_recognised() {
        let text = "20010db8000000000000000000000001 02 40 00 80     eth0\n\
                    20010db8000000000000000000000002 02 40 00 20     eth0\n\
                    20010db8000000000000000000000003 02 40 00 c0     eth0\n\
                    garbage\n";
        let bad = super::parse_if_inet6(text);
        let want: Vec<std::net::Ipv6Addr> = vec![
            "2001:db8::2".parse().unwrap(),
            "2001:db8::3".parse().unwrap(),
        ];
        assert_eq!(bad, want);
    }
}
