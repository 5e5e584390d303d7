//! The hostile cast of the simulator (`docs/security.md`): victim hosts that count every
//! datagram and byte delivered to them, attackers that hold a valid key and drive their own
//! [`Tunnel`] (with crafted adverts, spoofed sources, bent views of where packets come from), and
//! raw injection of datagrams with any source address (an off-path host spoofing the rendezvous,
//! say).
//!
//! Victims and attackers sit in the core: no NAT, no access link. A datagram to a victim's IP is
//! counted and dropped; a datagram to an attacker's address is handed to its tunnel at once.

use std::net::{IpAddr, SocketAddr};

use shipworm::tunnel::tunnel::{Tunnel, TunnelConfig};
use shipworm::tunnel::wire::payload;
use shipworm::Identity;

use super::{Fate, Sim};

/// A host in the core that never answers and counts what reaches it (any port).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Victim {
    /// Its IP address.
    pub ip: IpAddr,
    /// Datagrams delivered to it.
    pub packets: u64,
    /// Their bytes (UDP payload).
    pub bytes: u64,
    /// Datagrams per destination port.
    pub per_port: std::collections::BTreeMap<u16, u64>,
}

/// An attacker with a valid key: its own tunnel, at an address in the core.
pub struct Attacker {
    /// Its tunnel (the test starts handshakes, sets candidates and flags on it).
    pub tunnel: Tunnel,
    /// Where it receives.
    pub addr: SocketAddr,
    /// The source its datagrams carry (its own address unless it spoofs one).
    pub source: SocketAddr,
    /// When set, every datagram it receives is handed to its tunnel as if it came from this
    /// address (so its tunnel's PROBE_ANSWER reports a lie).
    pub seen_from: Option<SocketAddr>,
    /// When set, every datagram its tunnel sends goes here instead.
    pub send_to: Option<SocketAddr>,
    /// Datagrams it sent.
    pub packets_sent: u64,
    /// Their bytes.
    pub bytes_sent: u64,
    /// Datagrams it received.
    pub packets_received: u64,
}

impl Sim {
    /// Adds a victim host at `ip`; returns its index in [`Sim::victims`].
    pub fn add_victim(&mut self, ip: IpAddr) -> usize {
        self.victims.push(Victim {
            ip,
            packets: 0,
            bytes: 0,
            per_port: Default::default(),
        });
        self.victims.len() - 1
    }

    /// Adds an attacker with key seed `seed` at `addr`, advertising `candidates` with `flags`
    /// in its handshakes; returns its index in [`Sim::attackers`].
    pub fn add_attacker(
        &mut self,
        seed: u8,
        addr: SocketAddr,
        flags: u8,
        candidates: Vec<SocketAddr>,
    ) -> usize {
        let config = TunnelConfig {
            follow_source: false,
            // The attacker keeps its session quiet unless the test makes it speak.
            keepalive: None,
            ..TunnelConfig::default()
        };
        let rng = shipworm::tunnel::rng::from_seed(u64::from(seed) << 32 | 0xA77A);
        let mut tunnel = Tunnel::new(Identity::from_seed(&[seed; 32]), config, self.now, rng);
        tunnel.set_flags(flags & !payload::FLAG_AES_GCM);
        tunnel.set_candidates(candidates);
        self.attackers.push(Attacker {
            tunnel,
            addr,
            source: addr,
            seen_from: None,
            send_to: None,
            packets_sent: 0,
            bytes_sent: 0,
            packets_received: 0,
        });
        self.attackers.len() - 1
    }

    /// Attacker `a` starts a handshake with node `i`, sending message 1 to `to`.
    pub fn attacker_connect(&mut self, a: usize, i: usize, to: SocketAddr) {
        let (now, unix, peer) = (self.now, self.unix(), self.id(i));
        self.attackers[a]
            .tunnel
            .connect(now, unix, peer, &[to])
            .expect("the attacker's table has room");
        self.pump_attacker(a);
    }

    /// Attacker `a` sends a probe to node `i` at `to` (an authenticated packet: credit).
    pub fn attacker_probe(&mut self, a: usize, i: usize, to: SocketAddr, tx: u64) -> bool {
        let (now, peer) = (self.now, self.id(i));
        let ok = self.attackers[a].tunnel.send_probe(now, peer, to, tx);
        self.pump_attacker(a);
        ok
    }

    /// Attacker `a` sends its current flags and candidates to node `i` at `to` (ADVERT).
    pub fn attacker_advert(&mut self, a: usize, i: usize, to: SocketAddr) -> bool {
        let (now, peer) = (self.now, self.id(i));
        let ok = self.attackers[a].tunnel.send_advert(now, peer, 0, to);
        self.pump_attacker(a);
        ok
    }

    /// Puts a datagram on the wire from `src` (any address: spoofing) to `dst`.
    pub fn inject(&mut self, src: SocketAddr, dst: SocketAddr, bytes: Vec<u8>) {
        let at = self.now + self.core;
        self.enqueue(at, src, dst, bytes);
    }

    /// Sends what attacker `a`'s tunnel queued, from its (possibly spoofed) source.
    pub(super) fn pump_attacker(&mut self, a: usize) {
        while let Some(t) = self.attackers[a].tunnel.poll_transmit() {
            let at = &mut self.attackers[a];
            at.packets_sent += 1;
            at.bytes_sent += t.contents.len() as u64;
            let (src, dst) = (at.source, at.send_to.unwrap_or(t.dest));
            self.inject(src, dst, t.contents);
        }
        while self.attackers[a].tunnel.poll_event().is_some() {}
    }

    /// Delivers a datagram that reached the core to a victim or an attacker; false if `dst`
    /// is neither.
    pub(super) fn deliver_to_cast(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        bytes: &[u8],
    ) -> bool {
        if let Some(v) = self.victims.iter_mut().find(|v| v.ip == dst.ip()) {
            v.packets += 1;
            v.bytes += bytes.len() as u64;
            *v.per_port.entry(dst.port()).or_default() += 1;
            self.note(src, dst, bytes, Fate::Delivered);
            return true;
        }
        let Some(a) = self.attackers.iter().position(|x| x.addr == dst) else {
            return false;
        };
        self.note(src, dst, bytes, Fate::Delivered);
        let (now, unix) = (self.now, self.unix());
        let at = &mut self.attackers[a];
        at.packets_received += 1;
        let from = at.seen_from.unwrap_or(src);
        at.tunnel.handle_packet(now, unix, from, bytes);
        self.pump_attacker(a);
        true
    }

    /// Runs the attackers' timers that are due.
    pub(super) fn attacker_timeouts(&mut self) {
        let (now, unix) = (self.now, self.unix());
        for a in 0..self.attackers.len() {
            if self.attackers[a]
                .tunnel
                .poll_timeout()
                .is_some_and(|t| t <= now)
            {
                self.attackers[a].tunnel.handle_timeout(now, unix);
                self.pump_attacker(a);
            }
        }
    }
}
