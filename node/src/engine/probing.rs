//! Probing candidate pairs and choosing among them (`docs/protocol.md` §"Paths"): the engine's
//! side of [`Paths`](super::paths::Paths). Probes are authenticated tunnel frames with a fresh
//! transaction id; an answer proves the pair both ways. Also the trickle of late candidates.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shipworm_tunnel::NodeId;

use super::{DropReason, Engine, NodeEvent, MAX_PROBES, PEER_PROBE_SHARE};

/// How long an unanswered probe is remembered.
const PROBE_MEMORY: Duration = Duration::from_secs(5);

impl Engine {
    pub(super) fn probe_pair(&mut self, now: Instant, peer: NodeId, i: usize) {
        let Some((local, remote)) = self
            .peers
            .get(&peer)
            .map(|p| (p.paths.pairs[i].local, p.paths.pairs[i].remote))
        else {
            return;
        };
        if self.send_probe(now, peer, local, remote) {
            if let Some(st) = self.peers.get_mut(&peer) {
                st.paths.sent(i, now);
            }
        }
    }

    /// Probes sent since start (all peers, all sockets): the cost of punching.
    pub fn probes_sent_total(&self) -> u64 {
        self.probes_sent
    }

    /// Sends one probe and remembers it; false if the probe table (or the peer's share of it)
    /// is full, or no session.
    pub(super) fn send_probe(
        &mut self,
        now: Instant,
        peer: NodeId,
        local: u16,
        remote: SocketAddr,
    ) -> bool {
        let tx = self.next_id();
        let share = self.peers.get(&peer).map_or(0, |p| p.probes_out);
        if self.probes.len() >= MAX_PROBES || share >= PEER_PROBE_SHARE {
            self.forget_old_probes(now);
            if self.probes.len() >= MAX_PROBES {
                self.count_drop(DropReason::ProbeTableFull);
                return false;
            }
            if self.peers.get(&peer).map_or(0, |p| p.probes_out) >= PEER_PROBE_SHARE {
                self.count_drop(DropReason::PeerProbeShare);
                return false;
            }
        }
        if !self.tunnel.send_probe_via(now, peer, local, remote, tx) {
            return false;
        }
        self.probes.insert(tx, (peer, local, remote, now));
        if let Some(st) = self.peers.get_mut(&peer) {
            st.probes_out += 1;
        }
        self.probes_sent += 1;
        true
    }

    /// Forgets probes unanswered for [`PROBE_MEMORY`], and recounts each peer's share.
    fn forget_old_probes(&mut self, now: Instant) {
        self.probes
            .retain(|_, (_, _, _, t)| now.saturating_duration_since(*t) < PROBE_MEMORY);
        for st in self.peers.values_mut() {
            st.probes_out = 0;
        }
        for (peer, ..) in self.probes.values() {
            if let Some(st) = self.peers.get_mut(peer) {
                st.probes_out += 1;
            }
        }
    }

    /// Forgets probe `tx` (answered); returns what was sent.
    pub(super) fn take_probe(&mut self, tx: u64) -> Option<(NodeId, u16, SocketAddr, Instant)> {
        let p = self.probes.remove(&tx)?;
        if let Some(st) = self.peers.get_mut(&p.0) {
            st.probes_out = st.probes_out.saturating_sub(1);
        }
        Some(p)
    }

    pub(super) fn probe_due(&mut self, now: Instant, peer: NodeId) {
        let timing = self.config.paths.clone();
        let Some(due) = self
            .peers
            .get(&peer)
            .filter(|p| p.established)
            .map(|p| p.paths.due(now, &timing))
        else {
            return;
        };
        for i in due {
            self.probe_pair(now, peer, i);
        }
    }

    pub(super) fn reselect(&mut self, now: Instant, unix_ms: u64, peer: NodeId) {
        let Some(st) = self.peers.get_mut(&peer) else {
            return;
        };
        let before = st.paths.selected_path();
        st.paths.select();
        let after = st.paths.selected_path();
        if before == after {
            return;
        }
        let Some((local, path)) = after else {
            // Every path failed (a NAT rebound on one side, a link went down): introduce
            // ourselves again, through the rendezvous and to every address we know, so the
            // other side learns where we are now and both punch again (birthday probing
            // included, once the handshake completes).
            // Only to addresses that proved themselves and the rendezvous' observation: the
            // others are claims.
            st.lost_every_path = true;
            let remotes = self.reconnect_targets(now, peer);
            let _ = self.tunnel.connect(now, unix_ms, peer, &remotes);
            return;
        };
        let rtt = st
            .paths
            .selected
            .and_then(|i| st.paths.pairs[i].rtt)
            .unwrap_or_default();
        let first = !st.connected;
        st.connected = true;
        st.connecting = None;
        // Hole punched: the birthday spray is over; spare sockets may go. On a relayed path
        // punching goes on.
        let relayed = super::relay::is_relay_addr(&path);
        if !relayed && (st.birthday.take().is_some() || !self.spare_sockets.is_empty()) {
            self.release_sockets(now);
        }
        self.tunnel
            .set_endpoint_via(now, unix_ms, peer, local, path);
        self.push_event(if first {
            NodeEvent::Connected { peer, path, rtt }
        } else {
            NodeEvent::PathChanged { peer, path }
        });
    }

    /// Sends our flags and candidates to every peer in session: on its selected path, or on
    /// every pair while it has none.
    pub(super) fn trickle(&mut self, now: Instant) {
        self.trickle_due = false;
        let targets: Vec<(NodeId, Vec<(u16, SocketAddr)>)> = self
            .peers
            .iter()
            .filter(|(_, p)| p.established)
            .map(|(id, p)| {
                let to = match p.paths.selected_path() {
                    Some(s) => vec![s],
                    None => p.paths.pairs.iter().map(|x| (x.local, x.remote)).collect(),
                };
                (*id, to)
            })
            .collect();
        for (peer, to) in targets {
            for (local, addr) in to {
                self.tunnel.send_advert(now, peer, local, addr);
            }
        }
    }
}
