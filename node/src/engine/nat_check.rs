//! The NAT check (RFC 5780 style, `docs/protocol.md` §"Hard NATs, port mappings and extra sockets"): STUN Binding requests to a
//! rendezvous' second port tell whether our NAT maps per destination, and to other STUN servers
//! (the rendezvous' other family, say) give more reflexive candidates. The two mapped ports of
//! a hard NAT also tell whether it allocates sequentially ([`looks_sequential`]). The result goes
//! to peers as handshake flags, which decide birthday probing and its port prediction.

use std::net::SocketAddr;
use std::time::Instant;

use shipworm_tunnel::rng::RngCore;
use shipworm_tunnel::wire::payload;
use shipworm_tunnel::NodeId;
use stun_types::message::{Message, TransactionId};

use super::paths::CandidateKind;
use super::{DropReason, Engine, MAX_STUN_CHECKS};

/// Whether an IPv4 address can be a NAT's public side (not private, shared, loopback,
/// link-local, unspecified or multicast).
pub(super) fn is_public_v4(ip: &std::net::Ipv4Addr) -> bool {
    let shared = ip.octets()[0] == 100 && (ip.octets()[1] & 0xC0) == 64; // 100.64.0.0/10
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_multicast()
        || shared)
}

/// The largest difference between our two mapped ports toward a rendezvous' two ports (second
/// minus first) that counts as a sequential allocator: the second mapping was made one round
/// trip after the first, and a carrier NAT's other subscribers may take a few ports between.
/// A random allocator lands this close by chance once in about 4000 checks (16 of 64 512 ports),
/// which costs only a few wasted probes (the peer falls back to random ports).
pub(super) const MAX_SEQUENTIAL_DELTA: u16 = 16;

/// Whether two mapped addresses of ours (toward a rendezvous' main, then its second port) show
/// a NAT that maps per destination and allocates ports sequentially.
pub(super) fn looks_sequential(first: SocketAddr, second: SocketAddr) -> bool {
    let delta = second.port().wrapping_sub(first.port());
    first.ip() == second.ip() && (1..=MAX_SEQUENTIAL_DELTA).contains(&delta)
}

/// Whether the peer's flags say its NAT allocates ports sequentially (and maps per
/// destination: the flag means nothing otherwise).
pub(super) fn peer_is_sequential(flags: u8) -> bool {
    flags & payload::FLAG_PORTS_SEQUENTIAL != 0 && peer_is_hard(flags)
}

/// Whether the peer's flags say it maps per destination and holds no port mapping.
pub(super) fn peer_is_hard(flags: u8) -> bool {
    flags & payload::FLAG_MAPPING_KNOWN != 0
        && flags & payload::FLAG_MAPS_PER_DESTINATION != 0
        && flags & payload::FLAG_HAS_PORT_MAPPING == 0
}

/// Whether the peer's flags say it maps independently of destination and holds no port
/// mapping (with a mapping, its mapped address is reachable without birthday probing).
pub(super) fn peer_is_easy(flags: u8) -> bool {
    flags & payload::FLAG_MAPPING_KNOWN != 0
        && flags & payload::FLAG_MAPS_PER_DESTINATION == 0
        && flags & payload::FLAG_HAS_PORT_MAPPING == 0
}

/// A STUN Binding request (RFC 8489 §7.1) with transaction id `id`, padded so that no answer is
/// larger than it (`shipworm_rendezvous::wire::stun::binding_request_with_id`).
fn binding_request(id: [u8; 12]) -> Option<Vec<u8>> {
    let mut wide = [0u8; 16];
    wide[4..].copy_from_slice(&id);
    let tx = TransactionId::from(u128::from_be_bytes(wide));
    Some(shipworm_rendezvous::wire::stun::binding_request_with_id(tx).0)
}

impl Engine {
    /// Tells the engine whether a gateway port mapping exists (its address comes as a
    /// [`CandidateKind::Mapped`] candidate); peers hear of it at once.
    pub fn set_port_mapped(&mut self, mapped: bool) {
        self.port_mapped = mapped;
        self.update_flags();
    }

    /// Whether our NAT maps per destination (`None`: not known yet).
    pub fn maps_per_destination(&self) -> Option<bool> {
        self.maps_per_destination
    }

    /// Whether our NAT maps per destination and allocates its ports sequentially, as the last
    /// mapping check found (the two mapped ports toward a rendezvous' two ports lay at most
    /// `MAX_SEQUENTIAL_DELTA` = 16 apart, the second above).
    pub fn ports_sequential(&self) -> bool {
        self.maps_per_destination == Some(true) && self.ports_sequential
    }

    pub(super) fn update_flags(&mut self) {
        let flags = self.current_flags();
        self.tunnel.set_flags(flags);
        self.trickle_due = true;
    }

    /// Our handshake flags as of now.
    pub(super) fn current_flags(&self) -> u8 {
        let mut flags = 0;
        if let Some(per_destination) = self.maps_per_destination {
            flags |= payload::FLAG_MAPPING_KNOWN;
            if per_destination {
                flags |= payload::FLAG_MAPS_PER_DESTINATION;
                if self.ports_sequential {
                    flags |= payload::FLAG_PORTS_SEQUENTIAL;
                }
            }
        }
        if self.port_mapped {
            flags |= payload::FLAG_HAS_PORT_MAPPING;
        }
        flags
    }

    /// We map per destination and hold no port mapping.
    pub(super) fn we_are_hard(&self) -> bool {
        self.maps_per_destination == Some(true) && !self.port_mapped
    }

    /// Compares the address a server reflected on its main port with what its second port
    /// sees: a different mapping per destination makes a "hard" NAT.
    pub(super) fn check_mapping(
        &mut self,
        server: SocketAddr,
        alt_port: u16,
        observed: SocketAddr,
    ) {
        if alt_port != 0 {
            self.stun_request(SocketAddr::new(server.ip(), alt_port), Some(observed));
        }
    }

    /// Asks the configured STUN servers again when due.
    pub(super) fn stun_timeout(&mut self, now: Instant) {
        if now >= self.next_stun && !self.config.stun.is_empty() {
            self.next_stun = now + self.config.refresh_interval;
            for server in self.config.stun.clone() {
                self.stun_request(server, None);
            }
        }
    }

    fn stun_request(&mut self, server: SocketAddr, check: Option<SocketAddr>) {
        if self.stun_checks.len() >= MAX_STUN_CHECKS {
            // Unanswered requests of earlier rounds make room.
            self.stun_checks.retain(|_, (_, c)| c.is_some());
            if self.stun_checks.len() >= MAX_STUN_CHECKS {
                self.count_drop(DropReason::StunTableFull);
                return;
            }
        }
        let mut id = [0u8; 12];
        self.rng.fill_bytes(&mut id);
        let Some(req) = binding_request(id) else {
            return;
        };
        // The key is the id as written on the wire, which answers echo.
        let mut key = [0u8; 12];
        key.copy_from_slice(&req[8..20]);
        self.stun_checks.insert(key, (server, check));
        self.push_transmit(server, req);
    }

    pub(super) fn on_stun(&mut self, now: Instant, unix_ms: u64, from: SocketAddr, bytes: &[u8]) {
        let Some(key) = bytes.get(8..20).and_then(|k| <[u8; 12]>::try_from(k).ok()) else {
            self.count_drop(DropReason::MalformedStun);
            return;
        };
        let Some(&(server, check)) = self.stun_checks.get(&key) else {
            self.count_drop(DropReason::UnknownStunTransaction);
            return;
        };
        if from != server {
            self.count_drop(DropReason::StunFromWrongServer);
            return;
        }
        let Ok(msg) = Message::from_bytes(bytes) else {
            self.count_drop(DropReason::MalformedStun);
            return;
        };
        let Ok(mapped) =
            shipworm_rendezvous::wire::stun::parse_binding_response(bytes, msg.transaction_id())
        else {
            self.count_drop(DropReason::MalformedStun);
            return;
        };
        self.stun_checks.remove(&key);
        let Some(observed) = check else {
            // Reflexive discovery: the address this server sees (IPv6 through NAT66/NPT, say).
            self.add_local_candidate(mapped, CandidateKind::Reflexive);
            return;
        };
        let per_destination = mapped != observed;
        let first = self.maps_per_destination.is_none();
        self.maps_per_destination = Some(per_destination);
        self.ports_sequential = per_destination && looks_sequential(observed, mapped);
        self.update_flags();
        if first {
            // Peers we could not reach yet got our handshake before we knew: tell them now, with
            // a fresh handshake, so both sides can tell a hopeless pair of NATs from bad luck.
            let waiting: Vec<(NodeId, Vec<SocketAddr>)> = self
                .peers
                .iter()
                .filter(|(_, p)| p.established && p.paths.selected.is_none())
                .map(|(id, _)| (*id, self.reconnect_targets(now, *id)))
                .collect();
            for (peer, remotes) in waiting {
                let _ = self.tunnel.connect(now, unix_ms, peer, &remotes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn two_mappings_a_few_ports_apart_upwards_look_sequential() {
        let first = a("203.0.113.10:40000");
        assert!(looks_sequential(first, a("203.0.113.10:40001")));
        assert!(looks_sequential(first, a("203.0.113.10:40016")));
        assert!(looks_sequential(
            a("203.0.113.10:65535"),
            a("203.0.113.10:1")
        ));
        for other in [
            "203.0.113.10:40000", // the same mapping: not even per destination
            "203.0.113.10:39999", // downwards
            "203.0.113.10:40017", // too far
            "203.0.113.10:7",
            "203.0.113.11:40001", // another address (a NAT pool)
        ] {
            assert!(!looks_sequential(first, a(other)), "{other}");
        }
    }

    #[test]
    fn the_sequential_flag_counts_only_from_a_hard_peer() {
        let hard = payload::FLAG_MAPPING_KNOWN | payload::FLAG_MAPS_PER_DESTINATION;
        assert!(peer_is_sequential(hard | payload::FLAG_PORTS_SEQUENTIAL));
        assert!(!peer_is_sequential(hard));
        assert!(!peer_is_sequential(
            payload::FLAG_MAPPING_KNOWN | payload::FLAG_PORTS_SEQUENTIAL
        ));
        assert!(!peer_is_sequential(
            hard | payload::FLAG_PORTS_SEQUENTIAL | payload::FLAG_HAS_PORT_MAPPING
        ));
    }
}
