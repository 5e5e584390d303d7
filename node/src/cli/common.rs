//! What the commands share: the global flags, the identity, the node they start, exit codes,
//! progress lines and signals.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use shipworm::api::Builder;
use shipworm::discovery::{dht, DhtOptions};
use shipworm::engine::{ConnectError, NodeEvent};
use shipworm::io::portmap;
use shipworm::quic::tunneled::Protection;
use shipworm::{Identity, Node, NodeError, NodeId, RendezvousAddr, Target, Ticket};

/// Flags every command takes.
#[derive(clap::Args, Debug)]
pub struct Common {
    /// Identity key file (created on first use, mode 0600).
    /// Default: $SHIPWORM_HOME/identity or ~/.config/shipworm/identity.
    #[arg(long, global = true, env = "SHIPWORM_IDENTITY")]
    pub identity: Option<PathBuf>,
    /// Rendezvous server HOST:PORT (repeatable).
    #[arg(long = "rendezvous", global = true)]
    pub rendezvous: Vec<RendezvousAddr>,
    /// Machine-readable output (JSON).
    #[arg(long, global = true)]
    pub json: bool,
    /// UDP address of the node's socket (default `[::]:51820` for `up`, `[::]:0` otherwise).
    #[arg(long, global = true)]
    pub bind: Option<SocketAddr>,
    /// Do not ask the gateway for a port mapping (PCP, NAT-PMP, UPnP IGD).
    #[arg(long, global = true)]
    pub no_portmap: bool,
    /// Lease to ask the gateway's port mapping for, in seconds (4 to 604800, a week); it is
    /// renewed at half-life and removed on exit. A short lease makes a mapping vanish soon after
    /// the node dies without removing it.
    #[arg(
        long,
        global = true,
        value_name = "SECS",
        default_value_t = portmap::DEFAULT_LEASE.as_secs(),
        value_parser = clap::value_parser!(u64).range(portmap::MIN_LEASE.as_secs()..=portmap::MAX_LEASE.as_secs())
    )]
    pub portmap_lease: u64,
    /// Control socket of `up` (default: shipworm.sock beside the identity file).
    #[arg(long, global = true)]
    pub control: Option<PathBuf>,
    /// Publish this node's record (its rendezvous servers, never its addresses) under its
    /// NodeId, so peers can connect by NodeId alone. Opt-in: anyone can then see which
    /// rendezvous the node uses (docs/discovery.md).
    #[arg(long, global = true, value_enum, value_name = "WHERE")]
    pub publish: Option<Publish>,
    /// A Mainline DHT bootstrap node HOST:PORT (repeatable): use a private DHT instead of the
    /// public one.
    #[arg(long = "dht-bootstrap", global = true, value_name = "HOST:PORT")]
    pub dht_bootstrap: Vec<String>,
    /// Never use the DHT (not even to find a peer named by NodeId alone).
    #[arg(long, global = true, conflicts_with_all = ["publish", "dht_bootstrap"])]
    pub no_dht: bool,
    /// No LAN discovery: do not announce this node by mDNS or listen for others (on by default
    /// for `up` and `listen`, and for `connect`, `ping` and `forward` to a bare NodeId).
    #[arg(long, global = true, env = "SHIPWORM_NO_MDNS")]
    pub no_mdns: bool,
    /// Never relay: a peer that no direct path reaches is an error, not a relayed connection
    /// (relays are used only where a rendezvous offers them).
    #[arg(long, global = true)]
    pub no_relay: bool,
    /// The TCP port of the rendezvous' relay, tried when the rendezvous does not answer our
    /// UDP (a network that blocks UDP); 0: never.
    #[arg(long, global = true, value_name = "PORT", default_value_t = shipworm::rendezvous::tcp::DEFAULT_TCP_PORT)]
    pub relay_tcp_port: u16,
    /// The NAT64 prefix (PREFIX/LEN, e.g. 64:ff9b::/96) through which a host without an IPv4
    /// route reaches IPv4 peers and rendezvous servers; `off` never synthesizes. Default: the
    /// prefix the resolver's answer to ipv4only.arpa embeds (RFC 7050), else 64:ff9b::/96.
    #[arg(
        long,
        global = true,
        value_name = "PREFIX/LEN",
        default_value = "discover"
    )]
    pub nat64_prefix: shipworm::io::nat64::Nat64,
    /// Keep QUIC's own encryption under the tunnel's: every QUIC connection in and out is plain
    /// QUIC v1, encrypted twice, at about a sixth less throughput. By default QUIC packets
    /// between two nodes are encrypted once, by the tunnel session that carries them
    /// (docs/security.md, "QUIC inside the tunnel").
    #[arg(long, global = true)]
    pub quic_encryption: bool,
}

/// Where `--publish` publishes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Publish {
    /// BitTorrent's Mainline DHT (BEP 44 signed items, via pkarr).
    Dht,
}

/// What a peer argument names: a ticket, or a bare NodeId to look up.
#[derive(Debug, Clone)]
pub enum PeerArg {
    /// A ticket: NodeId, rendezvous and direct addresses.
    Ticket(Ticket),
    /// A NodeId alone: found through the DHT (or our own `--rendezvous`).
    Node(NodeId),
}

impl PeerArg {
    /// The peer's NodeId.
    pub fn node_id(&self) -> NodeId {
        match self {
            Self::Ticket(t) => t.node_id(),
            Self::Node(n) => *n,
        }
    }
}

impl std::str::FromStr for PeerArg {
    type Err = String;

    /// A ticket (`sw1…`) or a NodeId.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(n) = s.parse::<NodeId>() {
            return Ok(Self::Node(n));
        }
        s.parse::<Ticket>()
            .map(Self::Ticket)
            .map_err(|e| format!("`{s}` is neither a NodeId nor a ticket: {e}"))
    }
}

/// The default UDP port of a long-lived node (`up`).
pub const UP_PORT: u16 = 51820;

impl Common {
    /// The identity file's key, created on first use.
    pub fn identity(&self) -> anyhow::Result<Identity> {
        let path = self
            .identity
            .clone()
            .or_else(crate::files::default_identity_file)
            .context(
                "no identity file given and no home directory to keep one in: pass --identity FILE",
            )?;
        Ok(Identity::load_or_create(&path)?)
    }

    /// A node builder with the global flags applied and the identity file's key; `port` is the
    /// default UDP port.
    pub fn builder(&self, port: u16) -> anyhow::Result<Builder> {
        Ok(self.builder_with(self.identity()?, port))
    }

    /// As [`Common::builder`], with `identity` instead of the identity file's key.
    pub fn builder_with(&self, identity: Identity, port: u16) -> Builder {
        let bind = self
            .bind
            .unwrap_or_else(|| SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)));
        let mut b = Node::builder()
            .identity(identity)
            .bind(bind)
            .portmap(!self.no_portmap)
            .relay(!self.no_relay)
            .relay_tcp_port((self.relay_tcp_port != 0).then_some(self.relay_tcp_port))
            .portmap_lease(Duration::from_secs(self.portmap_lease))
            .nat64(self.nat64_prefix)
            .quic_protection(match self.quic_encryption {
                true => Protection::TunnelAndQuic,
                false => Protection::Tunnel,
            });
        for r in &self.rendezvous {
            b = b.rendezvous(r.clone());
        }
        b
    }

    /// The DHT settings, if this run uses the DHT: to publish (`--publish dht`), with a private
    /// DHT named (`--dht-bootstrap`), or to find a peer named by NodeId alone (`bare_peer`) when
    /// no `--rendezvous` could introduce it. `None`: the DHT is not touched.
    pub fn dht_options(&self, bare_peer: bool) -> anyhow::Result<Option<DhtOptions>> {
        let publish = self.publish == Some(Publish::Dht);
        let wanted = !self.no_dht
            && (publish
                || !self.dht_bootstrap.is_empty()
                || (bare_peer && self.rendezvous.is_empty()));
        if !wanted {
            return Ok(None);
        }
        let bootstrap = match self.dht_bootstrap.is_empty() {
            true => None,
            false => Some(dht::resolve_bootstrap(&self.dht_bootstrap).map_err(anyhow::Error::msg)?),
        };
        Ok(Some(DhtOptions {
            bootstrap,
            publish,
            port: None,
        }))
    }

    /// The control socket path: `--control`, else beside the identity file.
    pub fn control_path(&self) -> PathBuf {
        self.control.clone().unwrap_or_else(|| {
            match self
                .identity
                .clone()
                .or_else(crate::files::default_identity_file)
            {
                Some(i) => crate::control::default_path(&i),
                None => "shipworm.sock".into(),
            }
        })
    }
}

/// An error with its own exit code (`docs/operations.md` §"Exit codes").
#[derive(Debug)]
pub struct Exit {
    /// The process exit code.
    pub code: u8,
    /// What to print.
    pub message: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

/// Exit code: the peer could not be reached (no path, refused, timed out).
pub const EXIT_UNREACHABLE: u8 = 3;
/// Exit code: the connection broke during the transfer.
pub const EXIT_LOST: u8 = 4;

/// The connection broke: exit code 4.
pub fn lost(message: impl std::fmt::Display) -> anyhow::Error {
    Exit {
        code: EXIT_LOST,
        message: message.to_string(),
    }
    .into()
}

/// The peer could not be reached: exit code 3, with a hint at the likely cause.
pub fn unreachable(e: NodeError) -> anyhow::Error {
    let hint = match &e {
        NodeError::Connect(ConnectError::UnknownPeer(server)) => {
            format!(" (is the peer running and registered at {server}?)")
        }
        NodeError::Connect(ConnectError::NoDirectPathPossible) => {
            " (a rendezvous started with --relay would carry it)".into()
        }
        NodeError::Connect(ConnectError::RendezvousUnreachable(_)) => {
            " (check the address and port; where UDP is blocked, a rendezvous with --relay is also reached over TCP)".into()
        }
        NodeError::Timeout(_) | NodeError::Connect(_) => {
            " (is the peer running, and does it allow us?)".into()
        }
        _ => String::new(),
    };
    Exit {
        code: EXIT_UNREACHABLE,
        message: format!("{e}{hint}"),
    }
    .into()
}

/// Starts a node and connects to the peer (by ticket, or by NodeId through the DHT) over QUIC
/// speaking `alpn`, saying on stderr what takes time; returns the node, the connection and how
/// long connecting took.
pub async fn dial(
    common: &Common,
    peer: PeerArg,
    alpn: &[u8],
) -> anyhow::Result<(Node, quinn::Connection, Duration)> {
    let bare = matches!(peer, PeerArg::Node(_));
    let mut builder = common.builder(0)?.mdns(bare && !common.no_mdns);
    if let Some(o) = common.dht_options(bare)? {
        builder = builder.dht(o);
    }
    let node = builder.spawn().await?;
    // What the first step is: finding the peer by its NodeId, a rendezvous introduction, or
    // straight to the ticket's addresses.
    let first_step = match &peer {
        PeerArg::Node(_) => "looking it up (DHT, LAN), then introducing…",
        PeerArg::Ticket(t) if t.rendezvous().is_empty() => "handshake with the ticket's addresses…",
        PeerArg::Ticket(_) => "introducing through the rendezvous…",
    };
    let shown = progress(&node, peer.node_id(), first_step);
    let started = Instant::now();
    let target = match peer {
        PeerArg::Ticket(t) => Target::Ticket(t),
        PeerArg::Node(n) => Target::Node(n),
    };
    let conn = node.connect(target, alpn).await.map_err(unreachable);
    shown.abort();
    Ok((node, conn?, started.elapsed()))
}

/// What to tell the user when a rendezvous does not answer our UDP.
pub fn silent_rendezvous(
    server: std::net::SocketAddr,
    tcp: Option<std::net::SocketAddr>,
) -> String {
    match tcp {
        Some(tcp) => format!(
            "no answer from rendezvous {server} over UDP (is UDP blocked here?): trying its relay over TCP at {tcp}"
        ),
        None => format!(
            "no answer from rendezvous {server} over UDP (is UDP blocked here, or is the address wrong?)"
        ),
    }
}

/// Prints connection progress on stderr once connecting takes more than a moment, starting
/// with `first_step`.
pub fn progress(
    node: &Node,
    peer: NodeId,
    first_step: &'static str,
) -> tokio::task::JoinHandle<()> {
    let mut events = node.events();
    tokio::spawn(async move {
        let start = Instant::now();
        let mut shown = false;
        let patience = tokio::time::sleep(Duration::from_millis(500));
        tokio::pin!(patience);
        loop {
            tokio::select! {
                _ = &mut patience, if !shown => {
                    shown = true;
                    eprintln!("connecting to {}: {first_step}", peer.fmt_short());
                }
                e = events.recv() => match e {
                    Ok(NodeEvent::RendezvousSilent { server, tcp }) => {
                        eprintln!("{}", silent_rendezvous(server, tcp));
                    }
                    Ok(NodeEvent::Established { peer: p }) if p == peer && shown => {
                        eprintln!("handshake done after {:.1} s; punching…", start.elapsed().as_secs_f64());
                    }
                    Ok(NodeEvent::Connected { peer: p, .. } | NodeEvent::ConnectFailed { peer: p, .. }) if p == peer => return,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    _ => {}
                },
            }
        }
    })
}

/// Runs `f` on a two-thread runtime: QUIC's connection tasks and the node's driver run side by
/// side.
pub fn block_on(f: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    block_on_with(2, f)
}

/// Runs `f` on a runtime of `workers` threads.
///
/// `up --tun` takes one: its work is the driver, one task, and on two workers tokio moves that
/// task from one thread to the other as its I/O wakes it, which cost about a tenth of the
/// throughput with four TCP streams (`docs/performance.md` §"TUN data path", "Where the cores go").
pub fn block_on_with(
    workers: usize,
    f: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?
        .block_on(f)
}

/// SIGINT or SIGTERM.
pub async fn shutdown() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return tokio::signal::ctrl_c().await.unwrap_or(()),
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Says on stderr each time the path to `peer` changes (relayed to direct and back, IPv4 to
/// IPv6), as `up` does: "path to PEER is now direct IPv4 via …". The caller subscribes `events`
/// as early as it can (`listen` before its peer comes), so that no change is missed. Never
/// returns.
pub async fn narrate_paths(
    node: &Node,
    mut events: tokio::sync::broadcast::Receiver<NodeEvent>,
    peer: NodeId,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        match events.recv().await {
            Ok(NodeEvent::PathChanged { peer: p, .. }) if p == peer => eprintln!(
                "path to {} is now {}",
                peer.fmt_short(),
                shipworm::api::describe_path(node, peer).await
            ),
            Err(RecvError::Closed) => std::future::pending::<()>().await,
            _ => {}
        }
    }
}
