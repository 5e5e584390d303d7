//! A datagram's way through the simulated network: from a host's socket over its access link
//! and through its NAT or IPv6 firewall to the core, then to the rendezvous server or through
//! another site's NAT or firewall and access link to its host; losses and refusals are noted.

use std::cmp::Reverse;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use shipworm::rendezvous::server::Socket;

use super::{Fate, Ipv6Access, Sim, RENDEZVOUS_ALT_V4, RENDEZVOUS_V4, RENDEZVOUS_V6};

impl Sim {
    fn site_of_public(&self, ip: IpAddr) -> Option<usize> {
        self.nodes.iter().position(|n| match ip {
            IpAddr::V4(v4) => n
                .nat
                .as_ref()
                .map_or(n.v4.ip() == ip, |nat| nat.external == v4),
            IpAddr::V6(_) => n.v6.is_some_and(|a| a.ip() == ip),
        })
    }

    /// Sends `bytes` from node `i`'s socket `local` to `dst`.
    pub(super) fn send_from_node(&mut self, i: usize, local: u16, dst: SocketAddr, bytes: Vec<u8>) {
        let now = self.now;
        let node = &mut self.nodes[i];
        let host = node.socket_addr(local);
        if self.rng.percent(node.site.loss) {
            let from = host.unwrap_or(node.v4);
            self.note(from, dst, &bytes, Fate::Lost);
            return;
        }
        let Some(host) = host else {
            let from = node.v4;
            self.note(from, dst, &bytes, Fate::Unroutable);
            return;
        };
        let src = match dst {
            SocketAddr::V4(_) => match node.nat.as_mut() {
                Some(nat) => nat.outbound(host, dst, now, &mut self.rng),
                None => host,
            },
            SocketAddr::V6(_) if local != 0 => {
                self.note(host, dst, &bytes, Fate::Unroutable);
                return;
            }
            SocketAddr::V6(_) => match node.v6 {
                Some(v6) => {
                    node.v6_allowed.insert(dst);
                    v6
                }
                None => {
                    self.note(host, dst, &bytes, Fate::Unroutable);
                    return;
                }
            },
        };
        let at = now + node.site.latency + self.core;
        self.enqueue(at, src, dst, bytes);
    }

    pub(super) fn enqueue(
        &mut self,
        at: Instant,
        src: SocketAddr,
        dst: SocketAddr,
        bytes: Vec<u8>,
    ) {
        self.seq += 1;
        self.queue
            .push(Reverse((at, self.seq, None, src, dst, bytes)));
    }

    /// Arrival of a datagram at the core, at `self.now`.
    pub(super) fn arrive(&mut self, src: SocketAddr, dst: SocketAddr, bytes: Vec<u8>) {
        if dst == RENDEZVOUS_V4 || dst == RENDEZVOUS_V6 || dst == RENDEZVOUS_ALT_V4 {
            let (now, unix) = (self.now, self.unix());
            let socket = if dst == RENDEZVOUS_ALT_V4 {
                Socket::Alt
            } else {
                Socket::Primary
            };
            self.note(src, dst, &bytes, Fate::Delivered);
            self.server.handle_packet(now, unix, socket, src, &bytes);
            let mut out = Vec::new();
            while let Some(t) = self.server.poll_transmit() {
                let from = match (t.socket, t.dest.is_ipv4()) {
                    (Socket::Alt, _) => RENDEZVOUS_ALT_V4,
                    (Socket::Primary, true) => RENDEZVOUS_V4,
                    (Socket::Primary, false) => RENDEZVOUS_V6,
                };
                out.push((from, t.dest, t.contents.to_vec()));
            }
            for (from, to, b) in out {
                let at = self.now + self.core;
                self.enqueue_to_site(at, from, to, b);
            }
            return;
        }
        let at = self.now;
        self.enqueue_to_site(at, src, dst, bytes);
    }

    /// Delivers to a site's host after its NAT or firewall and its access link.
    fn enqueue_to_site(&mut self, at: Instant, src: SocketAddr, dst: SocketAddr, bytes: Vec<u8>) {
        if self.deliver_to_cast(src, dst, &bytes) {
            return;
        }
        let Some(i) = self.site_of_public(dst.ip()) else {
            self.note(src, dst, &bytes, Fate::Unroutable);
            return;
        };
        let node = &self.nodes[i];
        let host = match dst {
            SocketAddr::V4(_) => match &node.nat {
                Some(nat) => nat.inbound(dst.port(), src, at),
                None => node.socket_of(dst).map(|_| dst),
            },
            SocketAddr::V6(_) => {
                let ok = match node.site.ipv6 {
                    Ipv6Access::Open => true,
                    Ipv6Access::Firewalled => node.v6_allowed.contains(&src),
                    Ipv6Access::InboundBlocked | Ipv6Access::None => false,
                };
                (ok && Some(dst) == node.v6).then_some(dst)
            }
        };
        let Some(host) = host else {
            self.note(src, dst, &bytes, Fate::Filtered);
            return;
        };
        if self.rng.percent(node.site.loss) {
            self.note(src, dst, &bytes, Fate::Lost);
            return;
        }
        let deliver = at + node.site.latency;
        self.seq += 1;
        self.queue.push(Reverse((
            deliver,
            self.seq,
            Some((i, host)),
            src,
            dst,
            bytes,
        )));
    }
}
