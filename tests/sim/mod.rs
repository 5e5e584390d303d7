//! A deterministic network simulator for the sans-IO [`Engine`]: virtual clock, seeded RNG, NAT
//! models, IPv6 access models, per-site latency and loss, and a sans-IO rendezvous server.
//!
//! Topology: one "internet" with a rendezvous server (IPv4 `198.51.100.1:3478` and IPv6
//! `[2001:db8:ffff::1]:3478`) and sites. A site has one host running an [`Engine`], behind an
//! optional IPv4 NAT and with one of several kinds of IPv6 access. A datagram takes
//! `site latency + core latency + site latency` one way.
//!
//! NAT models (RFC 4787 vocabulary): mapping endpoint-independent or per destination
//! (address-and-port dependent), filtering open / address / address-and-port, port preservation
//! on or off, port allocation random, sequential or in per-host blocks, hairpinning or not,
//! mappings and filter permissions that expire when idle. Several hosts may share one NAT and
//! its LAN (`192.168.k.0/24`, [`SiteConfig::behind`]): between them a datagram goes straight
//! over the LAN ([`LAN_DELAY`]) or, to the NAT's external address, through the NAT's hairpin.
//!
//! Access links add jitter, reordering, duplication and loss ([`SiteConfig`]), every draw from
//! the one seeded [`Rng`]: one seed, one trace.
//!
//! This file holds [`Sim`] itself: the sites' nodes, the virtual clock and the event loop.
//! Beside it:
//! - `nat.rs`: the IPv4 NAT models ([`NatModel`]) and a NAT's mappings and filter;
//! - `site.rs`: a site's configuration ([`SiteConfig`]) and IPv6 access ([`Ipv6Access`]);
//! - `route.rs`: a datagram's way from a host through its NAT or firewall and the core to the
//!   rendezvous or another site;
//! - `trace.rs`: the datagram record ([`TracedDatagram`], [`Fate`]);
//! - `rng.rs`: the simulator's own random draws ([`Rng`]);
//! - `hostile.rs`: the hostile cast: victim hosts that count what reaches them, attackers with
//!   a valid key and their own tunnel, and injection of datagrams with any source.

mod hostile;
mod nat;
mod rng;
mod route;
mod site;
mod trace;

pub use hostile::{Attacker, Victim};
pub use nat::{Filtering, Mapping, NatModel, PortAllocation};
pub use rng::Rng;
pub use site::{Ipv6Access, SiteConfig, REORDER_DELAY};
pub use trace::{Fate, TracedDatagram};

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use shipworm::rendezvous::server::{Server, ServerConfig};
use shipworm::{Identity, NodeId};

use shipworm::engine::{Engine, EngineConfig, NodeEvent};

use nat::NatState;

/// The rendezvous' IPv4 address.
pub const RENDEZVOUS_V4: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 3478);
/// The rendezvous' second STUN port (IPv4).
pub const RENDEZVOUS_ALT_V4: SocketAddr =
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 3479);
/// The rendezvous' IPv6 address.
pub const RENDEZVOUS_V6: SocketAddr = SocketAddr::new(
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1)),
    3478,
);
const UNIX0: u64 = 1_800_000_000_000;
/// One-way delay between two hosts on one LAN.
pub const LAN_DELAY: Duration = Duration::from_millis(1);
/// One-way delay of a datagram hairpinned by the LAN's NAT (host to router and back, plus
/// the translation).
pub const HAIRPIN_DELAY: Duration = Duration::from_millis(3);
const HOST_PORT: u16 = 41641;

/// A node in the simulation.
pub struct SimNode {
    /// Its engine.
    pub engine: Engine,
    /// Its site.
    pub site: SiteConfig,
    /// Host IPv4 address (private if behind a NAT).
    pub v4: SocketAddr,
    /// Host IPv6 address, if any.
    pub v6: Option<SocketAddr>,
    /// Every event it produced, with the virtual time.
    pub events: Vec<(Duration, NodeEvent)>,
    /// Its NAT (index into the simulation's NATs).
    nat: Option<usize>,
    v6_allowed: HashSet<SocketAddr>,
    /// Extra sockets the engine opened: (id, host address).
    extra: Vec<(u16, SocketAddr)>,
}

impl SimNode {
    /// The host address of socket `local`.
    fn socket_addr(&self, local: u16) -> Option<SocketAddr> {
        match local {
            0 => Some(self.v4),
            id => self.extra.iter().find(|(i, _)| *i == id).map(|(_, a)| *a),
        }
    }

    /// Which socket owns host address `addr`.
    fn socket_of(&self, addr: SocketAddr) -> Option<u16> {
        if addr == self.v4 || Some(addr) == self.v6 {
            return Some(0);
        }
        self.extra.iter().find(|(_, a)| *a == addr).map(|(i, _)| *i)
    }
}

/// The simulation.
pub struct Sim {
    /// Virtual start.
    pub start: Instant,
    now: Instant,
    rng: Rng,
    /// The nodes.
    pub nodes: Vec<SimNode>,
    /// The NATs (a node's `nat` indexes here; hosts on one LAN share one).
    nats: Vec<NatState>,
    /// The rendezvous server.
    pub server: Server,
    core: Duration,
    /// In flight: (arrival, order, host it is delivered to or `None` for the core, src, dst, bytes).
    queue: BinaryHeap<Reverse<InFlight>>,
    seq: u64,
    /// Datagrams delivered to hosts.
    pub delivered: u64,
    /// Print every delivery to stderr (debugging).
    pub trace: bool,
    /// Every datagram delivered or dropped, once [`Sim::record_datagrams`] turned it on.
    pub datagrams: Option<Vec<TracedDatagram>>,
    /// Hosts in the core that count what reaches them ([`Sim::add_victim`]).
    pub victims: Vec<Victim>,
    /// Attackers with a valid key ([`Sim::add_attacker`]).
    pub attackers: Vec<Attacker>,
    /// Datagrams to lose on purpose ([`Sim::lose_matching`]).
    lose: Vec<(LoseFilter, u32)>,
}

/// Which datagrams [`Sim::lose_matching`] loses: (source, destination, bytes).
pub type LoseFilter = Box<dyn Fn(SocketAddr, SocketAddr, &[u8]) -> bool>;

type InFlight = (
    Instant,
    u64,
    Option<(usize, SocketAddr)>,
    SocketAddr,
    SocketAddr,
    Vec<u8>,
);

impl Sim {
    /// A simulation with these sites (one node each), seeded.
    pub fn new(seed: u64, sites: Vec<SiteConfig>) -> Self {
        Self::with_config(seed, sites, EngineConfig::default())
    }

    /// As [`Sim::new`], with an engine configuration template (its rendezvous list is set here).
    pub fn with_config(seed: u64, sites: Vec<SiteConfig>, template: EngineConfig) -> Self {
        let start = Instant::now();
        let mut rng = Rng::new(seed);
        let mut nats: Vec<NatState> = Vec::new();
        let mut nodes: Vec<SimNode> = Vec::new();
        for (i, site) in sites.into_iter().enumerate() {
            let i = i as u8;
            let public = Ipv4Addr::new(203, 0, 113, 10 + i);
            let (v4, nat) = match (site.behind, site.nat) {
                (Some(k), _) => {
                    let nat = nodes
                        .get(k)
                        .and_then(|n| n.nat)
                        .unwrap_or_else(|| panic!("site {i} is behind site {k}, which has no NAT"));
                    let lan = nats[nat].lan;
                    let on_lan = nodes.iter().filter(|n| n.nat == Some(nat)).count() as u8;
                    (
                        SocketAddr::from(([192, 168, lan, 2 + on_lan], HOST_PORT)),
                        Some(nat),
                    )
                }
                (None, Some(model)) => {
                    nats.push(NatState::new(model, public, i));
                    (
                        SocketAddr::from(([192, 168, i, 2], HOST_PORT)),
                        Some(nats.len() - 1),
                    )
                }
                (None, None) => (SocketAddr::new(IpAddr::V4(public), HOST_PORT), None),
            };
            let v6 = (site.ipv6 != Ipv6Access::None).then(|| {
                SocketAddr::new(
                    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, i as u16 + 1, 0, 0, 0, 0, 2)),
                    HOST_PORT,
                )
            });
            let mut config = template.clone();
            // One registration per server: the server keeps one observed address per node, so
            // registering over both families would move it back and forth.
            config.rendezvous = vec![RENDEZVOUS_V4];
            // The IPv6 reflexive address comes from STUN on the rendezvous' IPv6 address.
            config.stun = if v6.is_some() {
                vec![RENDEZVOUS_V6]
            } else {
                Vec::new()
            };
            let mut seed_bytes = [0u8; 32];
            seed_bytes[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
            seed_bytes[8] = i;
            let mut engine = Engine::new(
                Identity::from_seed(&seed_bytes),
                config,
                start,
                shipworm::tunnel::rng::from_seed(rng.next_u64()),
            );
            engine.add_local_candidate(v4, shipworm::engine::paths::CandidateKind::Host);
            if let Some(v6) = v6 {
                engine.add_local_candidate(v6, shipworm::engine::paths::CandidateKind::Host);
            }
            nodes.push(SimNode {
                engine,
                site,
                v4,
                v6,
                events: Vec::new(),
                nat,
                v6_allowed: HashSet::new(),
                extra: Vec::new(),
            });
        }
        let server_rng = shipworm::tunnel::rng::from_seed(rng.next_u64());
        Self {
            start,
            now: start,
            rng,
            nodes,
            nats,
            server: Server::new(Self::server_config(), start, server_rng),
            core: Duration::from_millis(5),
            queue: BinaryHeap::new(),
            seq: 0,
            delivered: 0,
            trace: std::env::var_os("SHIPWORM_SIM_TRACE").is_some(),
            datagrams: None,
            victims: Vec::new(),
            attackers: Vec::new(),
            lose: Vec::new(),
        }
    }

    /// The server's configuration: reached at its two addresses (REGISTERs are signed for one).
    pub fn server_config() -> ServerConfig {
        ServerConfig {
            alt_stun_port: RENDEZVOUS_ALT_V4.port(),
            ..ServerConfig::for_addresses(vec![RENDEZVOUS_V4, RENDEZVOUS_V6])
        }
    }

    /// The virtual present.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Virtual time since start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Wall-clock milliseconds of the virtual present.
    pub fn unix(&self) -> u64 {
        UNIX0 + self.elapsed().as_millis() as u64
    }

    /// The node id of node `i`.
    pub fn id(&self, i: usize) -> NodeId {
        self.nodes[i].engine.node_id()
    }

    /// One-way delay between nodes `a` and `b` (for counting delays).
    pub fn one_way(&self, a: usize, b: usize) -> Duration {
        self.nodes[a].site.latency + self.core + self.nodes[b].site.latency
    }

    fn pump(&mut self, i: usize) {
        loop {
            while let Some(t) = self.nodes[i].engine.poll_transmit() {
                self.send_from_node(i, t.local, t.dest, t.contents);
            }
            let elapsed = self.elapsed();
            let mut more = false;
            while let Some(e) = self.nodes[i].engine.poll_event() {
                match &e {
                    NodeEvent::OpenSockets { first, count } => {
                        let node = &mut self.nodes[i];
                        let ip = node.v4.ip();
                        for k in 0..*count {
                            let id = first.wrapping_add(k);
                            // Host ports for extra sockets: a range apart from the main one.
                            node.extra
                                .push((id, SocketAddr::new(ip, 20000 + id % 40000)));
                        }
                        node.engine.sockets_opened(*first, *count);
                        more = true;
                    }
                    NodeEvent::CloseSockets { ids } => {
                        self.nodes[i].extra.retain(|(id, _)| !ids.contains(id))
                    }
                    _ => {}
                }
                self.nodes[i].events.push((elapsed, e));
            }
            if !more {
                break;
            }
        }
    }

    /// Node `a` starts connecting to node `b`, knowing only `b`'s id (introduction).
    pub fn connect(&mut self, a: usize, b: usize) {
        let (now, unix, peer) = (self.now, self.unix(), self.id(b));
        self.nodes[a].engine.connect(now, unix, peer, &[]);
        self.pump(a);
    }

    /// Runs until `until` (virtual time since start) or until `done` holds.
    pub fn run_until(&mut self, until: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.start + until;
        let mut stuck = 0u32;
        loop {
            if done(self) {
                return true;
            }
            let next_packet = self.queue.peek().map(|Reverse((t, ..))| *t);
            let next_timer = self
                .nodes
                .iter()
                .filter_map(|n| n.engine.poll_timeout())
                .chain(self.server.poll_timeout())
                .chain(
                    self.attackers
                        .iter()
                        .filter_map(|a| a.tunnel.poll_timeout()),
                )
                .min();
            let Some(next) = [next_packet, next_timer].into_iter().flatten().min() else {
                return false;
            };
            if next > end {
                self.now = end;
                return done(self);
            }
            self.now = self.now.max(next);
            if next_packet == Some(next) {
                let Reverse((_, _, host, src, dst, bytes)) = self.queue.pop().expect("peeked");
                match host {
                    Some((i, host)) => {
                        let (now, unix) = (self.now, self.unix());
                        // A socket closed meanwhile receives nothing.
                        let Some(local) = self.nodes[i].socket_of(host) else {
                            self.note(src, dst, &bytes, Fate::Unroutable);
                            continue;
                        };
                        self.note(src, dst, &bytes, Fate::Delivered);
                        self.delivered += 1;
                        if self.trace {
                            eprintln!(
                                "{:>8.1?} {src} -> node {i} ({dst}): 0x{:02x} {} bytes",
                                self.elapsed(),
                                bytes.first().copied().unwrap_or(0),
                                bytes.len()
                            );
                        }
                        self.nodes[i]
                            .engine
                            .handle_packet_on(now, unix, local, src, &bytes);
                        self.pump(i);
                    }
                    None => self.arrive(src, dst, bytes),
                }
                continue;
            }
            // A timer that handling does not move would spin here for ever (a driver would burn
            // a CPU): name it instead.
            if next_timer == Some(next) && next <= self.now {
                stuck += 1;
                assert!(
                    stuck < 10_000,
                    "at {:?} timers stay due after handling (a timer handling does not move): \
                     nodes due {:?}, server due {:?}",
                    self.elapsed(),
                    self.nodes
                        .iter()
                        .map(|n| n.engine.poll_timeout().is_some_and(|t| t <= self.now))
                        .collect::<Vec<_>>(),
                    self.server.poll_timeout().is_some_and(|t| t <= self.now)
                );
            } else {
                stuck = 0;
            }
            let (now, unix) = (self.now, self.unix());
            for i in 0..self.nodes.len() {
                if self.nodes[i]
                    .engine
                    .poll_timeout()
                    .is_some_and(|t| t <= now)
                {
                    self.nodes[i].engine.handle_timeout(now, unix);
                    self.pump(i);
                }
            }
            if self.server.poll_timeout().is_some_and(|t| t <= now) {
                self.server.handle_timeout(now);
            }
            self.attacker_timeouts();
        }
    }

    /// Whether node `i` has logged an event matching `f`.
    pub fn saw(&self, i: usize, f: impl Fn(&NodeEvent) -> bool) -> bool {
        self.nodes[i].events.iter().any(|(_, e)| f(e))
    }

    /// The virtual time of the first event of node `i` matching `f`.
    pub fn when(&self, i: usize, f: impl Fn(&NodeEvent) -> bool) -> Option<Duration> {
        self.nodes[i]
            .events
            .iter()
            .find(|(_, e)| f(e))
            .map(|(t, _)| *t)
    }

    /// Whether node `i` is connected to node `j`.
    pub fn connected(&self, i: usize, j: usize) -> bool {
        self.nodes[i].engine.connected_peers().contains(&self.id(j))
    }

    /// Flushes node `i`'s NAT mappings (a router reboot, a conntrack flush).
    pub fn flush_nat(&mut self, i: usize) {
        if let Some(nat) = self.nodes[i].nat {
            self.nats[nat].flush();
        }
    }

    /// Replaces the rendezvous with a fresh one (a restart: empty table, new secrets), keeping
    /// its configuration.
    pub fn restart_rendezvous(&mut self) {
        let config = self.server.config().clone();
        self.restart_rendezvous_with(config);
    }

    /// Replaces the rendezvous with a fresh one configured by `config` (e.g. with the relay role,
    /// before the nodes register).
    pub fn restart_rendezvous_with(&mut self, config: ServerConfig) {
        let rng = shipworm::tunnel::rng::from_seed(self.rng.next_u64());
        self.server = Server::new(config, self.now, rng);
    }

    /// Changes a site's IPv6 access (e.g. to make it one-way mid-session).
    pub fn set_ipv6(&mut self, i: usize, access: Ipv6Access) {
        self.nodes[i].site.ipv6 = access;
    }

    /// Runs for `d` more of virtual time, calling `check` after every step; stops early (false)
    /// if `check` fails.
    pub fn run_checking(&mut self, d: Duration, mut check: impl FnMut(&Sim) -> bool) -> bool {
        let until = self.elapsed() + d;
        let mut ok = true;
        self.run_until(until, |s| {
            ok = check(s);
            !ok
        });
        ok
    }

    /// The remote address node `i` uses for node `j`.
    pub fn selected(&self, i: usize, j: usize) -> Option<SocketAddr> {
        self.nodes[i]
            .engine
            .paths(&self.id(j))
            .and_then(|p| p.selected_remote())
    }

    /// Loses the next `count` datagrams that `filter` matches on their way into a site (after
    /// the core, before the site's NAT): one particular datagram lost, whatever the seed.
    pub fn lose_matching(
        &mut self,
        count: u32,
        filter: impl Fn(SocketAddr, SocketAddr, &[u8]) -> bool + 'static,
    ) {
        self.lose.push((Box::new(filter), count));
    }

    /// Whether a datagram is to be lost on purpose (and counts it).
    fn lost_on_purpose(&mut self, src: SocketAddr, dst: SocketAddr, bytes: &[u8]) -> bool {
        let hit = self
            .lose
            .iter_mut()
            .find(|(f, left)| *left > 0 && f(src, dst, bytes));
        if let Some((_, left)) = hit {
            *left -= 1;
            return true;
        }
        false
    }

    /// Changes a site's loss.
    pub fn set_loss(&mut self, i: usize, loss: u64) {
        self.nodes[i].site.loss = loss;
    }

    /// Node `i` sends an IPv6 packet to node `j`'s overlay address; false if refused locally.
    pub fn send_ip(&mut self, i: usize, j: usize, payload: &[u8]) -> bool {
        let (src, dst) = (self.id(i).overlay_addr(), self.id(j).overlay_addr());
        let mut pkt = Vec::new();
        etherparse::PacketBuilder::ipv6(src.octets(), dst.octets(), 64)
            .udp(1, 2)
            .write(&mut pkt, payload)
            .expect("writing to a Vec cannot fail");
        let (now, unix) = (self.now, self.unix());
        let ok = self.nodes[i].engine.send_ip(now, unix, &pkt).is_ok();
        self.pump(i);
        ok
    }
}
