//! A datagram's way through the simulated network: from a host's socket over its access link
//! and through its NAT or IPv6 firewall to the core, then to the rendezvous server or through
//! another site's NAT or firewall and access link to its host; or across a LAN, straight or
//! hairpinned by its NAT. Losses and refusals are noted.

use std::cmp::Reverse;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use shipworm::rendezvous::server::Socket;

use super::{
    Fate, Ipv6Access, Sim, HAIRPIN_DELAY, LAN_DELAY, RENDEZVOUS_ALT_V4, RENDEZVOUS_V4,
    RENDEZVOUS_V6, REORDER_DELAY,
};

impl Sim {
    /// The node whose host address (main or extra socket) is `addr`.
    fn node_at(&self, addr: SocketAddr) -> Option<usize> {
        self.nodes.iter().position(|n| n.socket_of(addr).is_some())
    }

    /// One leg over site `i`'s access link: its latency, plus jitter and reordering as drawn.
    fn link_delay(&mut self, i: usize) -> Duration {
        let site = &self.nodes[i].site;
        let (latency, jitter, reorder) = (site.latency, site.jitter, site.reorder);
        let mut d = latency;
        if !jitter.is_zero() {
            let us = jitter.as_micros() as u64;
            d += Duration::from_micros(self.rng.next_u64() % (us + 1));
        }
        if self.rng.percent(reorder) {
            d += REORDER_DELAY;
        }
        d
    }

    /// How many copies of a datagram cross site `i`'s access link (duplication).
    fn copies(&mut self, i: usize) -> usize {
        let dup = self.nodes[i].site.duplicate;
        1 + usize::from(self.rng.percent(dup))
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
            SocketAddr::V4(_) => match node.nat {
                Some(n) if self.nats[n].on_lan(dst.ip()) => {
                    // Straight over the LAN, untranslated.
                    let Some(j) = self.node_at(dst) else {
                        self.note(host, dst, &bytes, Fate::Unroutable);
                        return;
                    };
                    self.deliver_at(now + LAN_DELAY, j, host, dst, bytes);
                    return;
                }
                Some(n) => {
                    let Some(src) = self.nats[n].outbound(host, dst, now, &mut self.rng) else {
                        // The NAT has no port for a new mapping.
                        self.note(host, dst, &bytes, Fate::Unroutable);
                        return;
                    };
                    if IpAddr::V4(self.nats[n].external) == dst.ip() {
                        self.hairpin(n, src, dst, bytes);
                        return;
                    }
                    src
                }
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
        for _ in 0..self.copies(i) {
            let at = now + self.link_delay(i) + self.core;
            self.enqueue(at, src, dst, bytes.clone());
        }
    }

    /// A datagram from inside NAT `n` (already translated to `src`) to its own external address
    /// `dst`: back inside through the filter if the NAT hairpins, dropped otherwise.
    fn hairpin(&mut self, n: usize, src: SocketAddr, dst: SocketAddr, bytes: Vec<u8>) {
        let now = self.now;
        let nat = &self.nats[n];
        let internal = if nat.model.hairpinning {
            nat.inbound(dst.port(), src, now)
        } else {
            None
        };
        let Some((j, internal)) = internal.and_then(|h| self.node_at(h).map(|j| (j, h))) else {
            self.note(src, dst, &bytes, Fate::Filtered);
            return;
        };
        self.deliver_at(now + HAIRPIN_DELAY, j, src, internal, bytes);
    }

    /// Queues delivery of a datagram to node `j`'s host address `host` at `at`.
    fn deliver_at(&mut self, at: Instant, j: usize, src: SocketAddr, host: SocketAddr, b: Vec<u8>) {
        self.seq += 1;
        self.queue
            .push(Reverse((at, self.seq, Some((j, host)), src, host, b)));
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
        if self.lost_on_purpose(src, dst, &bytes) {
            self.note(src, dst, &bytes, Fate::Lost);
            return;
        }
        let host = match dst {
            SocketAddr::V4(v4) => match self.nats.iter().position(|n| n.external == *v4.ip()) {
                Some(n) => self.nats[n].inbound(dst.port(), src, at),
                None => self
                    .nodes
                    .iter()
                    .any(|n| n.nat.is_none() && n.socket_of(dst).is_some())
                    .then_some(dst),
            },
            SocketAddr::V6(_) => self.nodes.iter().find(|n| n.v6 == Some(dst)).and_then(|n| {
                let ok = match n.site.ipv6 {
                    Ipv6Access::Open => true,
                    Ipv6Access::Firewalled => n.v6_allowed.contains(&src),
                    Ipv6Access::InboundBlocked | Ipv6Access::None => false,
                };
                ok.then_some(dst)
            }),
        };
        let routable = match dst {
            SocketAddr::V4(v4) => {
                self.nats.iter().any(|n| n.external == *v4.ip())
                    || self
                        .nodes
                        .iter()
                        .any(|n| n.nat.is_none() && n.v4.ip() == dst.ip())
            }
            SocketAddr::V6(_) => self
                .nodes
                .iter()
                .any(|n| n.v6.is_some_and(|a| a.ip() == dst.ip())),
        };
        if !routable {
            self.note(src, dst, &bytes, Fate::Unroutable);
            return;
        }
        let Some((i, host)) = host.and_then(|h| self.node_at(h).map(|i| (i, h))) else {
            self.note(src, dst, &bytes, Fate::Filtered);
            return;
        };
        if self.rng.percent(self.nodes[i].site.loss) {
            self.note(src, dst, &bytes, Fate::Lost);
            return;
        }
        for _ in 0..self.copies(i) {
            let deliver = at + self.link_delay(i);
            self.seq += 1;
            self.queue.push(Reverse((
                deliver,
                self.seq,
                Some((i, host)),
                src,
                dst,
                bytes.clone(),
            )));
        }
    }
}
