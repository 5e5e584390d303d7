//! LAN discovery with mDNS / DNS-SD (RFC 6762, RFC 6763) through the `mdns-sd` crate
//! (`docs/discovery.md` §"On the LAN: mDNS").
//!
//! A node announces one service instance of type [`SERVICE_TYPE`]: its instance name and its
//! `id` TXT property are its NodeId, its port is the node's UDP port, its addresses are those of
//! the interfaces the node listens on. It browses for the same type and keeps what it hears in a
//! bounded [`LanTable`]. Anyone on the LAN can announce anything, so what is learned here is a
//! claim: the addresses become candidates of that peer, which the engine probes under the same
//! budgets and two-way checks as any other, and the handshake proves the key.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mdns_sd::{ServiceDaemon, ServiceEvent, ServiceInfo};
use shipworm_tunnel::NodeId;
use tokio::sync::Notify;

use crate::engine::hygiene;

/// The DNS-SD service type shipworm nodes announce.
pub const SERVICE_TYPE: &str = "_shipworm._udp.local.";
/// How many LAN peers a node remembers at most.
pub const MAX_LAN_PEERS: usize = 256;
/// How many addresses of one LAN peer are kept at most.
pub const MAX_LAN_ADDRS: usize = 8;
/// How long a LAN peer is remembered after its last announcement (mdns-sd re-announces and
/// answers queries well within this).
pub const LAN_TTL: Duration = Duration::from_secs(300);
/// How long a connection by NodeId waits for a peer to answer on the LAN before trying
/// elsewhere (mDNS answers within tens of milliseconds; queries repeat after one second).
pub const LAN_WAIT: Duration = Duration::from_secs(2);

/// What a LAN peer announced, after filtering.
#[derive(Debug, Clone, PartialEq, Eq)]
struct LanPeer {
    addrs: Vec<SocketAddr>,
    seen: Instant,
}

/// LAN peers and their addresses (sans-IO): bounded, expiring.
#[derive(Debug, Default)]
pub struct LanTable {
    peers: HashMap<NodeId, LanPeer>,
}

impl LanTable {
    /// Learns `node` at `addrs` (already filtered) at `now`; returns whether anything changed
    /// (a new peer, or new addresses). When full, the peer heard from least recently goes.
    pub fn learn(&mut self, now: Instant, node: NodeId, mut addrs: Vec<SocketAddr>) -> bool {
        addrs.sort();
        addrs.dedup();
        addrs.truncate(MAX_LAN_ADDRS);
        if addrs.is_empty() {
            return false;
        }
        if let Some(p) = self.peers.get_mut(&node) {
            p.seen = now;
            if p.addrs == addrs {
                return false;
            }
            p.addrs = addrs;
            return true;
        }
        if self.peers.len() >= MAX_LAN_PEERS {
            if let Some(oldest) = self
                .peers
                .iter()
                .min_by_key(|(_, p)| p.seen)
                .map(|(n, _)| *n)
            {
                self.peers.remove(&oldest);
            }
        }
        self.peers.insert(node, LanPeer { addrs, seen: now });
        true
    }

    /// Forgets `node` (it said goodbye).
    pub fn forget(&mut self, node: NodeId) {
        self.peers.remove(&node);
    }

    /// `node`'s addresses, if heard within [`LAN_TTL`] of `now`.
    pub fn get(&self, now: Instant, node: NodeId) -> Vec<SocketAddr> {
        self.peers
            .get(&node)
            .filter(|p| now.saturating_duration_since(p.seen) < LAN_TTL)
            .map(|p| p.addrs.clone())
            .unwrap_or_default()
    }

    /// How many peers are remembered.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

/// The addresses of an announcement worth probing: unicast, not loopback, not the overlay, and
/// either global or in one of our own subnets (`hosts`: the engine's candidate hygiene), with the
/// announced port.
pub fn usable(ips: &[IpAddr], port: u16, hosts: &[SocketAddr]) -> Vec<SocketAddr> {
    ips.iter()
        .filter(|ip| match ip {
            IpAddr::V6(v6) => {
                !shipworm_tunnel::overlay::is_overlay(v6) && (v6.segments()[0] & 0xFFC0) != 0xFE80
            }
            IpAddr::V4(_) => true,
        })
        .map(|ip| SocketAddr::new(*ip, port))
        .filter(|a| hygiene::acceptable(*a, hosts.iter().copied()))
        .collect()
}

/// A running mDNS responder and browser.
#[derive(Clone)]
pub struct Mdns {
    daemon: ServiceDaemon,
    table: Arc<Mutex<LanTable>>,
    learned: Arc<Notify>,
}

impl std::fmt::Debug for Mdns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mdns").finish_non_exhaustive()
    }
}

impl Mdns {
    /// Announces `me` on UDP `port` and browses for other nodes; `on_learn` hears of each new
    /// or changed peer (from the daemon's thread: it must not block). With `only` set (the node
    /// is bound to one address), only that address's interface is used.
    pub fn start(
        me: NodeId,
        port: u16,
        only: Option<IpAddr>,
        on_learn: impl Fn(NodeId, Vec<SocketAddr>) + Send + 'static,
    ) -> Result<Self, String> {
        let daemon = ServiceDaemon::new().map_err(|e| format!("cannot start mDNS: {e}"))?;
        if let Some(ip) = only {
            let _ = daemon.disable_interface(mdns_sd::IfKind::All);
            let _ = daemon.enable_interface(mdns_sd::IfKind::Addr(ip));
        }
        let id = me.to_string();
        // A host name of our own: another node's may not clash with it.
        let host = format!("{}.local.", me.fmt_short());
        let info = ServiceInfo::new(
            SERVICE_TYPE,
            &id,
            &host,
            (),
            port,
            &[("id", id.as_str())][..],
        )
        .map_err(|e| format!("cannot announce on mDNS: {e}"))?
        .enable_addr_auto();
        daemon
            .register(info)
            .map_err(|e| format!("cannot announce on mDNS: {e}"))?;
        let events = daemon
            .browse(SERVICE_TYPE)
            .map_err(|e| format!("cannot browse mDNS: {e}"))?;
        let table = Arc::new(Mutex::new(LanTable::default()));
        let learned = Arc::new(Notify::new());
        let (t, l) = (table.clone(), learned.clone());
        std::thread::Builder::new()
            .name("shipworm-mdns".into())
            .spawn(move || {
                let mut names: HashMap<String, NodeId> = HashMap::new();
                while let Ok(e) = events.recv() {
                    match e {
                        ServiceEvent::ServiceResolved(s) => {
                            let Some(node) = s
                                .get_property_val_str("id")
                                .and_then(|v| v.parse::<NodeId>().ok())
                            else {
                                continue;
                            };
                            if node == me {
                                continue;
                            }
                            let ips: Vec<IpAddr> =
                                s.addresses.iter().map(|a| a.to_ip_addr()).collect();
                            let addrs = usable(&ips, s.port, &host_addrs());
                            if names.len() < MAX_LAN_PEERS || names.contains_key(&s.fullname) {
                                names.insert(s.fullname.clone(), node);
                            }
                            let changed = t.lock().unwrap_or_else(|e| e.into_inner()).learn(
                                Instant::now(),
                                node,
                                addrs.clone(),
                            );
                            if changed {
                                l.notify_waiters();
                                on_learn(node, addrs);
                            }
                        }
                        ServiceEvent::ServiceRemoved(_, fullname) => {
                            if let Some(node) = names.remove(&fullname) {
                                t.lock().unwrap_or_else(|e| e.into_inner()).forget(node);
                            }
                        }
                        _ => {}
                    }
                }
            })
            .map_err(|e| format!("cannot start mDNS: {e}"))?;
        Ok(Self {
            daemon,
            table,
            learned,
        })
    }

    /// `node`'s LAN addresses, if it announced itself.
    pub fn addrs(&self, node: NodeId) -> Vec<SocketAddr> {
        self.table
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(Instant::now(), node)
    }

    /// `node`'s LAN addresses, waiting up to `within` for it to answer.
    pub async fn wait_for(&self, node: NodeId, within: Duration) -> Vec<SocketAddr> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.learned.notified();
            let found = self.addrs(node);
            if !found.is_empty() {
                return found;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Vec::new();
            }
        }
    }

    /// Says goodbye on the LAN and stops the daemon.
    pub fn shutdown(&self) {
        let _ = self.daemon.shutdown();
    }
}

/// Our interface addresses (for the hygiene check of what we hear).
fn host_addrs() -> Vec<SocketAddr> {
    if_addrs::get_if_addrs()
        .map(|ifs| ifs.iter().map(|i| SocketAddr::new(i.ip(), 0)).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shipworm_tunnel::Identity;

    fn node(k: u32) -> NodeId {
        let mut seed = [3u8; 32];
        seed[..4].copy_from_slice(&k.to_be_bytes());
        Identity::from_seed(&seed).node_id()
    }

    #[test]
    fn only_addresses_on_our_links_or_global_ones_are_kept() {
        let hosts: Vec<SocketAddr> = vec!["192.168.1.3:0".parse().unwrap()];
        let ips: Vec<IpAddr> = [
            "192.168.1.2",       // our LAN: kept
            "10.9.9.9",          // someone else's private network: not probed
            "127.0.0.1",         // loopback
            "224.0.0.251",       // multicast
            "203.0.113.7",       // global: kept
            "fe80::1",           // link-local (no scope to use it with)
            "fd5b:7a1e:9c03::1", // the overlay
            "0.0.0.0",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        let got = usable(&ips, 51820, &hosts);
        assert_eq!(
            got,
            vec![
                "192.168.1.2:51820".parse::<SocketAddr>().unwrap(),
                "203.0.113.7:51820".parse().unwrap()
            ]
        );
        assert!(usable(&ips, 0, &hosts).is_empty(), "port 0 is no address");
    }

    #[test]
    fn the_table_is_bounded_expires_and_reports_changes() {
        let now = Instant::now();
        let mut t = LanTable::default();
        let a: SocketAddr = "192.168.1.2:51820".parse().unwrap();
        assert!(t.learn(now, node(0), vec![a]));
        assert!(!t.learn(now, node(0), vec![a]), "nothing new");
        let many: Vec<SocketAddr> = (0..40u16)
            .map(|p| SocketAddr::new(a.ip(), 1000 + p))
            .collect();
        assert!(t.learn(now, node(0), many));
        assert_eq!(t.get(now, node(0)).len(), MAX_LAN_ADDRS);
        assert!(t.get(now + LAN_TTL, node(0)).is_empty(), "expired");
        assert!(
            !t.learn(now, node(1), vec![]),
            "no address, nothing learned"
        );
        for k in 1..(MAX_LAN_PEERS as u32 + 20) {
            t.learn(now + Duration::from_millis(u64::from(k)), node(k), vec![a]);
        }
        assert_eq!(t.len(), MAX_LAN_PEERS);
        assert!(
            t.get(now, node(0)).is_empty(),
            "the least recently heard went first"
        );
        t.forget(node(5));
        assert!(t.get(now, node(5)).is_empty());
    }
}
