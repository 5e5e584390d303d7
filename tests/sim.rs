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
//! on or off, mappings that expire when idle.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use shipworm::rendezvous::server::{Server, ServerConfig, Socket};
use shipworm::{Identity, NodeId};

use shipworm::engine::{Engine, EngineConfig, NodeEvent};

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
const HOST_PORT: u16 = 41641;

/// How a NAT maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mapping {
    /// One external port per internal socket, whatever the destination.
    EndpointIndependent,
    /// A new external port per destination (a "symmetric" NAT).
    PerDestination,
}

/// How a NAT filters inbound packets on a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Filtering {
    /// Anyone may send to a mapped port ("full cone").
    Open,
    /// Only addresses the host has sent to.
    Address,
    /// Only address-and-port pairs the host has sent to.
    AddressAndPort,
}

/// An IPv4 NAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NatModel {
    /// Mapping behaviour.
    pub mapping: Mapping,
    /// Filtering behaviour.
    pub filtering: Filtering,
    /// Keep the internal port as the external port when free.
    pub port_preservation: bool,
    /// Idle time after which a mapping is gone.
    pub timeout: Duration,
}

impl NatModel {
    /// Endpoint-independent mapping, open filtering.
    pub fn full_cone() -> Self {
        Self {
            mapping: Mapping::EndpointIndependent,
            filtering: Filtering::Open,
            port_preservation: false,
            timeout: Duration::from_secs(60),
        }
    }
    /// Endpoint-independent mapping, address-restricted filtering.
    pub fn restricted() -> Self {
        Self {
            filtering: Filtering::Address,
            ..Self::full_cone()
        }
    }
    /// Endpoint-independent mapping, address-and-port filtering: a typical home router.
    pub fn port_restricted() -> Self {
        Self {
            filtering: Filtering::AddressAndPort,
            ..Self::full_cone()
        }
    }
    /// Per-destination mapping, address-and-port filtering.
    pub fn symmetric() -> Self {
        Self {
            mapping: Mapping::PerDestination,
            filtering: Filtering::AddressAndPort,
            ..Self::full_cone()
        }
    }
}

/// A site's IPv6 access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ipv6Access {
    /// No IPv6.
    None,
    /// A global address with no firewall.
    Open,
    /// A global address behind a stateful firewall (replies to outbound traffic only).
    Firewalled,
    /// Outbound works, nothing ever comes back in (the reported one-way failure).
    InboundBlocked,
}

/// One site.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    /// The NAT in front of the host, or none (a public IPv4 address).
    pub nat: Option<NatModel>,
    /// IPv6 access.
    pub ipv6: Ipv6Access,
    /// One-way latency between the host and the core.
    pub latency: Duration,
    /// Percent of datagrams lost each way on the access link.
    pub loss: u64,
}

impl SiteConfig {
    /// A site with this NAT, no IPv6, 10 ms, no loss.
    pub fn nat(nat: Option<NatModel>) -> Self {
        Self {
            nat,
            ipv6: Ipv6Access::None,
            latency: Duration::from_millis(10),
            loss: 0,
        }
    }
}

#[derive(Debug)]
struct NatState {
    model: NatModel,
    external: Ipv4Addr,
    /// (internal, destination if per-destination) → external port.
    mappings: HashMap<(SocketAddr, Option<SocketAddr>), u16>,
    /// external port → (internal, remotes sent to, last outbound).
    ports: HashMap<u16, (SocketAddr, HashSet<SocketAddr>, Instant)>,
}

impl NatState {
    fn outbound(
        &mut self,
        internal: SocketAddr,
        dst: SocketAddr,
        now: Instant,
        rng: &mut Rng,
    ) -> SocketAddr {
        let key = (
            internal,
            (self.model.mapping == Mapping::PerDestination).then_some(dst),
        );
        let live = self.mappings.get(&key).copied().filter(|p| {
            self.ports.get(p).is_some_and(|(_, _, last)| {
                now.saturating_duration_since(*last) < self.model.timeout
            })
        });
        let port = match live {
            Some(p) => p,
            None => {
                let mut p = if self.model.port_preservation {
                    internal.port()
                } else {
                    1024 + (rng.next_u64() % 64000) as u16
                };
                while self.ports.get(&p).is_some_and(|(i, _, last)| {
                    *i != internal || now.saturating_duration_since(*last) < self.model.timeout
                }) {
                    p = 1024 + (rng.next_u64() % 64000) as u16;
                }
                self.ports.insert(p, (internal, HashSet::new(), now));
                self.mappings.insert(key, p);
                p
            }
        };
        let entry = self.ports.get_mut(&port).expect("mapping just ensured");
        entry.1.insert(dst);
        entry.2 = now;
        SocketAddr::new(IpAddr::V4(self.external), port)
    }

    fn inbound(&self, port: u16, src: SocketAddr, now: Instant) -> Option<SocketAddr> {
        let (internal, sent_to, last) = self.ports.get(&port)?;
        if now.saturating_duration_since(*last) >= self.model.timeout {
            return None;
        }
        let allowed = match self.model.filtering {
            Filtering::Open => true,
            Filtering::Address => sent_to.iter().any(|d| d.ip() == src.ip()),
            Filtering::AddressAndPort => sent_to.contains(&src),
        };
        allowed.then_some(*internal)
    }

    /// Forgets every mapping (a router reboot or a conntrack flush).
    fn flush(&mut self) {
        self.mappings.clear();
        self.ports.clear();
    }
}

/// What became of a datagram (see [`Sim::record_datagrams`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fate {
    /// Handed to a node's engine or to the rendezvous server.
    Delivered,
    /// Lost to the site's loss rate.
    Lost,
    /// Refused by a NAT's or a firewall's filter.
    Filtered,
    /// No route: an unknown destination, a closed socket, no address of the family.
    Unroutable,
}

/// One datagram the simulator delivered or dropped: when, between which addresses as seen on
/// the wire at that point, its bytes, and its fate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TracedDatagram {
    /// Virtual time since the start.
    pub at: Duration,
    /// Source address.
    pub from: SocketAddr,
    /// Destination address.
    pub to: SocketAddr,
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Delivered or why not.
    pub fate: Fate,
}

/// xorshift64* (the simulator's own draws: NAT ports, loss; never the engine's).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1)
    }
    /// Next value.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn percent(&mut self, p: u64) -> bool {
        p > 0 && self.next_u64() % 100 < p
    }
}

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
    nat: Option<NatState>,
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
}

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
        let nodes = sites
            .into_iter()
            .enumerate()
            .map(|(i, site)| {
                let i = i as u8;
                let public = Ipv4Addr::new(203, 0, 113, 10 + i);
                let (v4, nat) = match site.nat {
                    Some(model) => (
                        SocketAddr::from(([192, 168, i, 2], HOST_PORT)),
                        Some(NatState {
                            model,
                            external: public,
                            mappings: HashMap::new(),
                            ports: HashMap::new(),
                        }),
                    ),
                    None => (SocketAddr::new(IpAddr::V4(public), HOST_PORT), None),
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
                SimNode {
                    engine,
                    site,
                    v4,
                    v6,
                    events: Vec::new(),
                    nat,
                    v6_allowed: HashSet::new(),
                    extra: Vec::new(),
                }
            })
            .collect();
        let server_rng = shipworm::tunnel::rng::from_seed(rng.next_u64());
        Self {
            start,
            now: start,
            rng,
            nodes,
            server: Server::new(Self::server_config(), start, server_rng),
            core: Duration::from_millis(5),
            queue: BinaryHeap::new(),
            seq: 0,
            delivered: 0,
            trace: std::env::var_os("SHIPWORM_SIM_TRACE").is_some(),
            datagrams: None,
        }
    }

    /// Records every datagram delivered or dropped from now on, in [`Sim::datagrams`]: the
    /// packet trace that one seed must reproduce.
    pub fn record_datagrams(&mut self) {
        self.datagrams.get_or_insert_with(Vec::new);
    }

    fn note(&mut self, from: SocketAddr, to: SocketAddr, bytes: &[u8], fate: Fate) {
        let at = self.elapsed();
        if let Some(d) = self.datagrams.as_mut() {
            d.push(TracedDatagram {
                at,
                from,
                to,
                bytes: bytes.to_vec(),
                fate,
            });
        }
    }

    fn server_config() -> ServerConfig {
        ServerConfig {
            alt_stun_port: RENDEZVOUS_ALT_V4.port(),
            ..ServerConfig::default()
        }
    }

    /// Virtual time since start.
    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    fn unix(&self) -> u64 {
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
    fn send_from_node(&mut self, i: usize, local: u16, dst: SocketAddr, bytes: Vec<u8>) {
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

    fn enqueue(&mut self, at: Instant, src: SocketAddr, dst: SocketAddr, bytes: Vec<u8>) {
        self.seq += 1;
        self.queue
            .push(Reverse((at, self.seq, None, src, dst, bytes)));
    }

    /// Arrival of a datagram at the core, at `self.now`.
    fn arrive(&mut self, src: SocketAddr, dst: SocketAddr, bytes: Vec<u8>) {
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
        if let Some(nat) = self.nodes[i].nat.as_mut() {
            nat.flush();
        }
    }

    /// Replaces the rendezvous with a fresh one (a restart: empty table, new secrets).
    pub fn restart_rendezvous(&mut self) {
        let rng = shipworm::tunnel::rng::from_seed(self.rng.next_u64());
        self.server = Server::new(Self::server_config(), self.now, rng);
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
