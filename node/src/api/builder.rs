//! [`Builder`]: every way of starting a node (the library's QUIC node, and the CLI's `up`, with
//! or without a TUN interface) goes through it.

use std::collections::HashSet;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shipworm_tunnel::tunnel::{Accept, TunnelConfig};
use shipworm_tunnel::{Identity, NodeId, RendezvousAddr};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::{Node, NodeError, Running};
use crate::discovery::{Dht, DhtOptions, Mdns, Record};
use crate::engine::nat64::Nat64Prefix;
use crate::engine::{Engine, EngineConfig, NodeEvent};
use crate::io::driver::{self, DriverCommand, LocalSide};
use crate::io::nat64::Nat64;
use crate::io::resolve::resolve_all;
use crate::quic::socket::{OverlaySocket, Pipe};
use crate::quic::tunneled::{self, Protection};
use crate::quic::{tls, transport_config};

/// The first wait before connecting again to a configured peer that could not be reached; it
/// doubles up to [`PEER_RETRY_MAX`].
pub const PEER_RETRY_FIRST: Duration = Duration::from_secs(5);
/// The longest wait between attempts to reach a configured peer.
pub const PEER_RETRY_MAX: Duration = Duration::from_secs(60);

/// A TUN interface for the overlay (`shipworm up --tun`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunOptions {
    /// Interface name.
    pub name: String,
    /// Inner MTU (at least 1280, the IPv6 minimum).
    pub mtu: u16,
    /// Segmentation offloads on the interface (TSO out, GRO in; `io::tun`), where the kernel
    /// allows them. On by default in the CLI; off gives one packet per read and write.
    pub offload: bool,
}

/// Builds a [`Node`].
#[derive(Debug)]
pub struct Builder {
    identity: Option<Identity>,
    rendezvous: Vec<RendezvousAddr>,
    bind: SocketAddr,
    portmap: bool,
    portmap_lease: Duration,
    allow: Option<HashSet<NodeId>>,
    peers: Vec<(NodeId, Vec<SocketAddr>)>,
    alpns: Vec<Vec<u8>>,
    tun: Option<TunOptions>,
    engine: EngineConfig,
    dht: Option<DhtOptions>,
    mdns: bool,
    relay: bool,
    relay_tcp_port: Option<u16>,
    nat64: Nat64,
    quic_protection: Protection,
}

impl Default for Builder {
    fn default() -> Self {
        Self {
            identity: None,
            rendezvous: Vec::new(),
            bind: SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0)),
            portmap: true,
            portmap_lease: crate::io::portmap::DEFAULT_LEASE,
            allow: None,
            peers: Vec::new(),
            alpns: Vec::new(),
            tun: None,
            engine: EngineConfig::default(),
            dht: None,
            mdns: false,
            relay: true,
            relay_tcp_port: Some(shipworm_rendezvous::tcp::DEFAULT_TCP_PORT),
            nat64: Nat64::Discover,
            quic_protection: Protection::default(),
        }
    }
}

impl Builder {
    /// The node's identity (default: a fresh one).
    pub fn identity(mut self, identity: Identity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// A rendezvous server (repeatable).
    pub fn rendezvous(mut self, server: RendezvousAddr) -> Self {
        self.rendezvous.push(server);
        self
    }

    /// The UDP address to bind (default `[::]:0`, dual-stack).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Ask the gateway for a port mapping (default on).
    pub fn portmap(mut self, on: bool) -> Self {
        self.portmap = on;
        self
    }

    /// The lease to ask the gateway for (default [`DEFAULT_LEASE`](crate::io::portmap::DEFAULT_LEASE),
    /// one hour); the mapping is renewed at half-life. It must lie within
    /// [`MIN_LEASE`](crate::io::portmap::MIN_LEASE)..=[`MAX_LEASE`](crate::io::portmap::MAX_LEASE)
    /// (4 seconds to a week), or [`spawn`](Self::spawn) fails saying so. A short lease lets a
    /// mapping vanish soon after the node dies without removing it.
    pub fn portmap_lease(mut self, lease: Duration) -> Self {
        self.portmap_lease = lease;
        self
    }

    /// Accept sessions only from these nodes and the configured [`peer`](Self::peer)s
    /// (repeatable; default: anyone who proves a key). `allow([])` admits the peers alone.
    pub fn allow(mut self, nodes: impl IntoIterator<Item = NodeId>) -> Self {
        self.allow.get_or_insert_with(HashSet::new).extend(nodes);
        self
    }

    /// A peer the node connects to as soon as it runs and keeps trying to reach (after
    /// [`PEER_RETRY_FIRST`], doubling up to [`PEER_RETRY_MAX`]), at `direct` addresses if known
    /// and otherwise through the rendezvous. With an allowlist, peers are on it.
    pub fn peer(mut self, peer: NodeId, direct: Vec<SocketAddr>) -> Self {
        self.peers.push((peer, direct));
        self
    }

    /// An application protocol incoming QUIC connections may use (repeatable).
    pub fn alpn(mut self, alpn: &[u8]) -> Self {
        self.alpns.push(alpn.to_vec());
        self
    }

    /// Carry the overlay on a TUN interface instead of the built-in QUIC endpoint: any program
    /// on the host then uses the overlay addresses (Linux; needs CAP_NET_ADMIN).
    pub fn tun(mut self, options: TunOptions) -> Self {
        self.tun = Some(options);
        self
    }

    /// Use the Mainline DHT (`docs/discovery.md`): [`Node::connect`] to a bare NodeId and the
    /// configured [`peer`](Self::peer)s without addresses are looked up there, and with
    /// `options.publish` the node publishes its record (its rendezvous servers, once one has
    /// confirmed it) under its NodeId. Off by default.
    pub fn dht(mut self, options: DhtOptions) -> Self {
        self.dht = Some(options);
        self
    }

    /// Announce this node on the LAN by mDNS and listen for others (`docs/discovery.md`):
    /// [`Node::connect`] to a bare NodeId and the configured [`peer`](Self::peer)s without
    /// addresses then find peers on the same LAN with no server. Off by default (the CLI's `up`
    /// and `listen` turn it on). A failure to start it is logged, not fatal.
    pub fn mdns(mut self, on: bool) -> Self {
        self.mdns = on;
        self
    }

    /// Use relays (on by default): a peer no direct path reaches is reached through a
    /// rendezvous that offers the relay role (`shipworm-rendezvous --relay`), and the session
    /// moves to a direct path as soon as one is proven. Off: such a connection fails with the
    /// reason, as without any relay (`--no-relay`).
    pub fn relay(mut self, on: bool) -> Self {
        self.relay = on;
        self
    }

    /// The TCP port of a rendezvous' relay (TLS), tried when the rendezvous does not answer our
    /// UDP within about 2 s (a network that blocks UDP): registration, introductions and
    /// relayed packets then travel over that one connection, and UDP is tried again every 10 s.
    /// Default 443; `None`: never.
    pub fn relay_tcp_port(mut self, port: Option<u16>) -> Self {
        self.relay_tcp_port = port;
        self
    }

    /// Engine settings (timers, birthday budget); the rendezvous and STUN lists, the accept policy
    /// and, with a TUN interface, the MTU come from the builder.
    /// How a host without IPv4 finds the NAT64 prefix it reaches IPv4 peers and rendezvous
    /// servers through ([`Nat64`]; default: ask `ipv4only.arpa`, else `64:ff9b::/96`). A host
    /// with an IPv4 route never uses one (`docs/operations.md` §"NAT64").
    pub fn nat64(mut self, setting: Nat64) -> Self {
        self.nat64 = setting;
        self
    }

    /// Whose packet protection QUIC connections through the tunnel rely on ([`Protection`]).
    /// By default 1-RTT packets are encrypted once, by the tunnel session that carries them,
    /// with peers that support it (`docs/security.md` §"QUIC inside the tunnel");
    /// [`Protection::TunnelAndQuic`] keeps QUIC's own encryption too, in and out, at about a
    /// sixth less throughput (`docs/performance.md`).
    pub fn quic_protection(mut self, protection: Protection) -> Self {
        self.quic_protection = protection;
        self
    }

    /// Engine settings (timers, birthday budget); the rendezvous and STUN lists, the NAT64 prefix,
    /// the accept policy and, with a TUN interface, the MTU come from the builder.
    pub fn engine_config(mut self, config: EngineConfig) -> Self {
        self.engine = config;
        self
    }

    /// The accept policy: anyone, or the allowlist plus the configured peers.
    fn accept(&self) -> Accept {
        match &self.allow {
            None => Accept::Any,
            Some(allowed) => {
                let mut set = allowed.clone();
                set.extend(self.peers.iter().map(|(p, _)| *p));
                Accept::Only(set)
            }
        }
    }

    /// The tunnel's settings: the engine's, with the accept policy, the configured peers pinned
    /// (an attacker's sessions never evict them from the peer table) and a TUN interface's MTU.
    fn tunnel_config(&self) -> TunnelConfig {
        TunnelConfig {
            accept: self.accept(),
            pinned: self.peers.iter().map(|(p, _)| *p).collect(),
            mtu: self
                .tun
                .as_ref()
                .map_or(self.engine.tunnel.mtu, |t| t.mtu as usize),
            ..self.engine.tunnel.clone()
        }
    }

    /// Binds the socket (and the TUN interface), starts the node's driver, and returns the node.
    pub async fn spawn(self) -> Result<Node, NodeError> {
        let setup = |e: &dyn std::fmt::Display| NodeError::Setup(e.to_string());
        let tunnel = self.tunnel_config();
        let Builder {
            identity,
            rendezvous,
            bind,
            portmap,
            portmap_lease,
            allow: _,
            peers,
            alpns,
            tun,
            engine: mut config,
            dht,
            mdns,
            relay,
            relay_tcp_port,
            nat64,
            quic_protection,
        } = self;
        let identity = identity.unwrap_or_else(Identity::generate);
        let me = identity.node_id();
        let (nat64, how) = crate::io::nat64::decide(nat64).await;
        if nat64.is_some() {
            tracing::info!(target: "shipworm::io::nat64", "no IPv4 route: {how}");
        } else {
            tracing::debug!(target: "shipworm::io::nat64", "{how}");
        }
        let servers = resolve_all(&rendezvous, nat64.as_ref())
            .await
            .map_err(|e| setup(&e))?;
        if dht.as_ref().is_some_and(|o| o.publish) && rendezvous.is_empty() {
            return Err(setup(
                &"publishing to the DHT needs a rendezvous to name: give --rendezvous HOST:PORT",
            ));
        }
        let dht_client = match &dht {
            Some(options) => Some(Dht::start(options).map_err(|e| setup(&e))?),
            None => None,
        };
        config.rendezvous = servers.iter().map(|s| s.register).collect();
        config.stun = servers.iter().filter_map(|s| s.stun).collect();
        config.tunnel = tunnel;
        config.relay &= relay;
        config.relay_tcp_port = relay_tcp_port;
        config.nat64 = nat64;
        let inner_mtu = config.tunnel.mtu;
        if inner_mtu < 1280 {
            return Err(setup(&format!(
                "inner MTU {inner_mtu} is below 1280, the IPv6 minimum"
            )));
        }
        if portmap {
            crate::io::portmap::check_lease(portmap_lease).map_err(|e| setup(&e))?;
        }
        let socket = crate::io::bind_dual_stack(bind)
            .map_err(|e| setup(&format!("cannot bind UDP {bind}: {e}")))?;
        let local_addr = socket.local_addr().map_err(|e| setup(&e))?;
        let now = Instant::now();
        let mut engine = Engine::new(
            identity.clone(),
            config,
            now,
            shipworm_tunnel::rng::from_os(),
        );
        crate::io::host::gather_host_candidates(&mut engine, &socket).map_err(|e| setup(&e))?;

        let local = match &tun {
            Some(t) => Local::Tun(open_tun(me, t)?),
            None => {
                let pipe = Pipe::new(me.overlay_addr());
                let endpoint = quic_endpoint(&identity, &alpns, inner_mtu, quic_protection, &pipe)?;
                Local::Quic(endpoint, pipe)
            }
        };

        let (commands_tx, mut commands) = mpsc::channel(64);
        let (events, _) = broadcast::channel(256);
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        for (peer, direct) in &peers {
            match (&dht_client, direct.is_empty()) {
                // Looked up first; the connection starts when the lookup ends, found or not.
                (Some(dht), true) => spawn_dht_connect(
                    dht.clone(),
                    *peer,
                    commands_tx.clone(),
                    Duration::ZERO,
                    nat64,
                ),
                _ => engine.connect(now, driver::unix_ms(), *peer, direct),
            }
        }
        let events_tx = events.clone();
        let (portmap_stop, portmap_stopped) = oneshot::channel();
        let portmap = portmap.then(|| {
            let report = |line: String| tracing::info!(target: "shipworm::io::portmap", "{line}");
            tokio::spawn(crate::io::portmap::keep(
                local_addr.port(),
                portmap_lease,
                commands_tx.clone(),
                portmap_stopped,
                report,
            ))
        });
        let mdns = mdns
            .then(|| start_mdns(me, local_addr, &peers, commands_tx.clone()))
            .flatten();
        let retry = PeerRetry::new(peers, commands_tx.clone(), dht_client.clone(), nat64);
        let (record_tx, record_rx) = tokio::sync::watch::channel(None);
        let mut published = PublishedRecord::new(&rendezvous, &servers, record_tx);
        let publisher = match (&dht_client, &dht) {
            (Some(client), Some(o)) if o.publish => {
                let (stop, stopped) = oneshot::channel();
                let task = tokio::spawn(crate::discovery::dht::keep_published(
                    client.clone(),
                    identity.clone(),
                    record_rx,
                    stopped,
                    |r| match r {
                        Ok(r) => tracing::info!(
                            target: "shipworm::discovery",
                            "published our record to the DHT: rendezvous {}",
                            r.rendezvous.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", ")
                        ),
                        Err(e) => tracing::warn!(target: "shipworm::discovery", "{e}"),
                    },
                ));
                Some((stop, task))
            }
            _ => None,
        };
        let (endpoint, pipe, tun) = match local {
            Local::Quic(e, p) => (Some(e), Some(p), None),
            Local::Tun(t) => (None, None, Some(t)),
        };
        let driver_pipe = pipe.clone();
        let task = tokio::spawn(async move {
            let stop = async {
                let _ = stop_rx.await;
            };
            let local = match (&tun, &driver_pipe) {
                (Some(t), _) => LocalSide::Tun(t),
                (None, Some(p)) => LocalSide::Quic(p),
                (None, None) => LocalSide::None,
            };
            let mut retry = retry;
            let r = driver::run(&mut engine, &socket, local, &mut commands, stop, |e| {
                retry.on_event(e);
                published.on_event(e);
                let _ = events_tx.send(e.clone());
            })
            .await;
            match r {
                Ok(stats) => Some((stats, engine.tunnel_stats().clone())),
                Err(e) => {
                    tracing::error!(error = %e, "node driver stopped");
                    None
                }
            }
        });
        Ok(Node {
            identity,
            endpoint,
            commands: commands_tx,
            events,
            rendezvous,
            local_addr,
            inner_mtu,
            quic_protection,
            quic_versions: Default::default(),
            running: Mutex::new(Some(Running {
                stop: stop_tx,
                task,
                portmap: portmap.map(|t| (portmap_stop, t)),
                publisher,
            })),
            pipe,
            dht: dht_client,
            mdns,
            nat64,
        })
    }
}

enum Local {
    Quic(quinn::Endpoint, Arc<Pipe>),
    #[cfg(target_os = "linux")]
    Tun(tun_rs::AsyncDevice),
    #[cfg(not(target_os = "linux"))]
    Tun(std::convert::Infallible),
}

#[cfg(target_os = "linux")]
fn open_tun(me: NodeId, t: &TunOptions) -> Result<tun_rs::AsyncDevice, NodeError> {
    crate::io::tun::open_tun(&t.name, me.overlay_addr(), t.mtu, t.offload)
        .map_err(|e| NodeError::Setup(e.to_string()))
}

#[cfg(not(target_os = "linux"))]
fn open_tun(_: NodeId, _: &TunOptions) -> Result<std::convert::Infallible, NodeError> {
    Err(NodeError::Setup(
        "TUN mode is available on Linux only so far".into(),
    ))
}

/// quinn over the overlay pipe, serving `alpns` with our raw public key, speaking the versions
/// of `protection`.
fn quic_endpoint(
    identity: &Identity,
    alpns: &[Vec<u8>],
    inner_mtu: usize,
    protection: Protection,
    pipe: &Arc<Pipe>,
) -> Result<quinn::Endpoint, NodeError> {
    let setup = |e: &dyn std::fmt::Display| NodeError::Setup(e.to_string());
    let server = tls::server_config(identity, alpns).map_err(|e| setup(&e))?;
    let server =
        quinn::crypto::rustls::QuicServerConfig::try_from(server).map_err(|e| setup(&e))?;
    let mut server = tunneled::server_config(server);
    server.transport_config(transport_config(inner_mtu));
    quinn::Endpoint::new_with_abstract_socket(
        tunneled::endpoint_config(protection),
        Some(server),
        OverlaySocket::new(pipe.clone()),
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| setup(&e))
}

/// Keeps trying configured peers that could not be reached: the peer may come online, or its
/// network change.
struct PeerRetry {
    peers: Vec<(NodeId, Vec<SocketAddr>)>,
    failures: std::collections::BTreeMap<NodeId, u32>,
    commands: mpsc::Sender<DriverCommand>,
    dht: Option<Dht>,
    nat64: Option<Nat64Prefix>,
}

impl PeerRetry {
    fn new(
        peers: Vec<(NodeId, Vec<SocketAddr>)>,
        commands: mpsc::Sender<DriverCommand>,
        dht: Option<Dht>,
        nat64: Option<Nat64Prefix>,
    ) -> Self {
        Self {
            peers,
            failures: Default::default(),
            commands,
            dht,
            nat64,
        }
    }

    fn on_event(&mut self, e: &NodeEvent) {
        match e {
            NodeEvent::Connected { peer, .. } => {
                self.failures.remove(peer);
            }
            NodeEvent::ConnectFailed { peer, .. } => {
                let Some((_, direct)) = self.peers.iter().find(|(p, _)| p == peer) else {
                    return;
                };
                let n = self.failures.entry(*peer).or_insert(0);
                *n += 1;
                let wait = retry_delay(*n);
                if let (Some(dht), true) = (&self.dht, direct.is_empty()) {
                    // The record may have led nowhere (the peer moved): ask the DHT again.
                    dht.forget(*peer);
                    spawn_dht_connect(dht.clone(), *peer, self.commands.clone(), wait, self.nat64);
                    return;
                }
                let (tx, peer, direct) = (self.commands.clone(), *peer, direct.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let _ = tx.send(DriverCommand::Connect(peer, direct)).await;
                });
            }
            _ => {}
        }
    }
}

/// Starts mDNS for a node bound at `local`: a configured peer without addresses that appears on
/// the LAN (or changes its addresses) is connected to at once, at those addresses.
fn start_mdns(
    me: NodeId,
    local: SocketAddr,
    peers: &[(NodeId, Vec<SocketAddr>)],
    commands: mpsc::Sender<DriverCommand>,
) -> Option<Mdns> {
    let only = (!local.ip().is_unspecified()).then_some(local.ip());
    let wanted: HashSet<NodeId> = peers
        .iter()
        .filter(|(_, d)| d.is_empty())
        .map(|(p, _)| *p)
        .collect();
    let on_learn = move |node: NodeId, addrs: Vec<SocketAddr>| {
        if wanted.contains(&node) {
            // From the mDNS thread: never block it (a full queue drops this one; the peer's
            // next announcement, or the retry, tries again).
            let _ = commands.try_send(DriverCommand::Connect(node, addrs));
        }
    };
    match Mdns::start(me, local.port(), only, on_learn) {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(target: "shipworm::discovery", "{e}; LAN discovery is off");
            None
        }
    }
}

/// After `wait`, looks `peer` up in the DHT, registers with the rendezvous its record names (as
/// for a ticket's), and connects; a failed lookup is logged and the attempt goes on through our
/// own rendezvous, if any (the engine says why it fails, and the peer is tried again later).
fn spawn_dht_connect(
    dht: Dht,
    peer: NodeId,
    commands: mpsc::Sender<DriverCommand>,
    wait: Duration,
    nat64: Option<Nat64Prefix>,
) {
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        match dht.resolve(peer).await {
            Ok(record) => {
                for server in super::record_servers(&record, nat64.as_ref()).await {
                    let _ = commands
                        .send(DriverCommand::AddTicketRendezvous(server, peer))
                        .await;
                }
            }
            Err(e) => tracing::warn!(target: "shipworm::discovery", "{e}"),
        }
        let _ = commands
            .send(DriverCommand::Connect(peer, Vec::new()))
            .await;
    });
}

/// The record we publish: our configured rendezvous servers that have confirmed our
/// registration, in the configured order (names kept as given). It changes when one more
/// confirms; the publisher then publishes at once.
struct PublishedRecord {
    servers: Vec<(SocketAddr, RendezvousAddr)>,
    confirmed: Vec<bool>,
    tx: tokio::sync::watch::Sender<Option<Record>>,
}

impl PublishedRecord {
    fn new(
        names: &[RendezvousAddr],
        resolved: &[crate::io::resolve::Resolved],
        tx: tokio::sync::watch::Sender<Option<Record>>,
    ) -> Self {
        let servers: Vec<(SocketAddr, RendezvousAddr)> = resolved
            .iter()
            .zip(names)
            .map(|(r, n)| {
                (
                    shipworm_tunnel::wire::addr::normalize(r.register),
                    n.clone(),
                )
            })
            .take(shipworm_tunnel::ticket::MAX_RENDEZVOUS)
            .collect();
        Self {
            confirmed: vec![false; servers.len()],
            servers,
            tx,
        }
    }

    fn on_event(&mut self, e: &NodeEvent) {
        let NodeEvent::Registered { server, .. } = e else {
            return;
        };
        let server = shipworm_tunnel::wire::addr::normalize(*server);
        let Some(i) = self.servers.iter().position(|(s, _)| *s == server) else {
            return;
        };
        if self.confirmed[i] {
            return;
        }
        self.confirmed[i] = true;
        let rendezvous = self
            .servers
            .iter()
            .zip(&self.confirmed)
            .filter(|(_, c)| **c)
            .map(|((_, n), _)| n.clone())
            .collect();
        self.tx.send_replace(Some(Record { rendezvous }));
    }
}

/// The wait before attempt `failures + 1` to reach a configured peer.
pub fn retry_delay(failures: u32) -> Duration {
    let doubled = PEER_RETRY_FIRST.saturating_mul(1 << failures.saturating_sub(1).min(8));
    doubled.min(PEER_RETRY_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_a_minute() {
        let waits: Vec<u64> = (1..=6).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 60, 60]);
        assert_eq!(retry_delay(u32::MAX), PEER_RETRY_MAX);
    }

    #[test]
    fn the_allowlist_holds_the_peers_and_is_off_by_default() {
        let (a, b) = (
            Identity::generate().node_id(),
            Identity::generate().node_id(),
        );
        assert!(matches!(
            Builder::default().peer(a, vec![]).accept(),
            Accept::Any
        ));
        match Builder::default().allow([b]).peer(a, vec![]).accept() {
            Accept::Only(s) => assert_eq!(s, [a, b].into_iter().collect()),
            Accept::Any => panic!("an allowlist was given"),
        }
        match Builder::default().allow([]).peer(a, vec![]).accept() {
            Accept::Only(s) => assert_eq!(s, [a].into_iter().collect()),
            Accept::Any => panic!("an empty allowlist admits the peers alone"),
        }
    }

    /// A configured peer keeps its place in the engine's tunnel when fresh keys fill the peer
    /// table with sessions: its handshake is still answered.
    #[test]
    fn configured_peers_are_pinned_in_the_tunnel() {
        use shipworm_tunnel::handshake::Initiator;
        use shipworm_tunnel::rng;
        use shipworm_tunnel::wire::packet::Packet;
        use shipworm_tunnel::wire::payload::InitPayload;

        const UNIX: u64 = 1_800_000_000_000;
        let me = Identity::from_seed(&[1; 32]);
        let peer = Identity::from_seed(&[2; 32]);
        let builder = Builder::default()
            .peer(peer.node_id(), vec![])
            .engine_config(EngineConfig {
                tunnel: TunnelConfig {
                    max_peers: 4,
                    ..TunnelConfig::default()
                },
                ..EngineConfig::default()
            });
        let mut config = builder.engine.clone();
        config.tunnel = builder.tunnel_config();
        let now = Instant::now();
        let mut engine = Engine::new(me.clone(), config, now, rng::from_seed(1));
        let message_1 = |who: &Identity, seed: u64| {
            let payload = InitPayload {
                initiator: who.node_id(),
                timestamp_ms: UNIX,
                advert: Default::default(),
            };
            let start = Initiator::start(
                &mut rng::from_seed(seed),
                who,
                &me.node_id(),
                seed as u32,
                &payload,
                None,
            );
            start.unwrap().1
        };
        let flood: SocketAddr = "203.0.113.1:1000".parse().unwrap();
        for n in 0..8u8 {
            let m1 = message_1(&Identity::from_seed(&[0x40 + n; 32]), u64::from(n));
            engine.handle_packet(now, UNIX, flood, &m1);
        }
        assert!(engine.tunnel_stats().peers_full > 0, "the table is full");
        while engine.poll_transmit().is_some() {}
        let from: SocketAddr = "198.51.100.2:4000".parse().unwrap();
        engine.handle_packet(now, UNIX, from, &message_1(&peer, 99));
        let answered = std::iter::from_fn(|| engine.poll_transmit()).any(|t| {
            t.dest == from && matches!(Packet::parse(&t.contents), Ok(Packet::Resp { .. }))
        });
        assert!(answered, "{:?}", engine.tunnel_stats());
    }
}
