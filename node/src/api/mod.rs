//! The library API: a [`Node`] that connects to other nodes by NodeId or ticket and hands out
//! authenticated QUIC connections (quinn) running end to end inside the tunnel.
//!
//! ```no_run
//! # async fn demo(ticket: shipworm::Ticket) -> anyhow::Result<()> {
//! use shipworm::Node;
//!
//! let node = Node::builder().rendezvous("rdv.example.net:3478".parse()?).alpn(b"echo/1").spawn().await?;
//! let conn = node.connect(ticket, b"echo/1").await?;
//! let (mut send, mut recv) = conn.open_bi().await?;
//! send.write_all(b"hello").await?;
//! send.finish()?;
//! let echoed = recv.read_to_end(1 << 20).await?;
//! # Ok(()) }
//! ```

use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Arc;
use std::time::Duration;

use shipworm_tunnel::{Identity, NodeId, RendezvousAddr, Ticket};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::discovery::{mdns, Dht, DhtError, Mdns, Record};
use crate::engine::paths::CandidateKind;
use crate::engine::{ConnectError, Diagnostics, NodeEvent};
use crate::io::driver::{DriverCommand, DriverStats};
use crate::io::resolve::resolve;
use crate::quic::socket::{Pipe, QUIC_PORT};
use crate::quic::{tls, transport_config, tunneled};

mod builder;

pub use builder::{retry_delay, Builder, TunOptions, PEER_RETRY_FIRST, PEER_RETRY_MAX};

/// How long `connect` waits for a path.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a node operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// No direct path (the engine's reason).
    #[error("{0}")]
    Connect(#[from] ConnectError),
    /// No answer within [`CONNECT_TIMEOUT`].
    #[error("no connection to {0} within {CONNECT_TIMEOUT:?}")]
    Timeout(NodeId),
    /// QUIC failed on top of a working path.
    #[error("QUIC connection to {peer}: {reason}")]
    Quic {
        /// The peer.
        peer: NodeId,
        /// What quinn said (a key mismatch names both keys).
        reason: String,
    },
    /// Setting up the node failed.
    #[error("{0}")]
    Setup(String),
    /// The node carries the overlay on a TUN interface, so QUIC runs over the kernel's sockets.
    #[error("this node carries the overlay on a TUN interface: use the kernel's sockets to reach overlay addresses")]
    TunMode,
    /// Nothing names the peer: no ticket, no rendezvous, no DHT, and it did not answer on the
    /// LAN.
    #[error("{0} did not answer on the LAN (mDNS) and no rendezvous or DHT is configured to introduce it: is it running `up` or `listen` on this network?")]
    NotOnLan(NodeId),
    /// Looking the peer up (the DHT) failed, and nothing else names it.
    #[error("{0}")]
    Discovery(#[from] DhtError),
    /// The node has stopped.
    #[error("the node has stopped")]
    Stopped,
}

/// Whom to connect to.
#[derive(Debug, Clone)]
pub enum Target {
    /// By NodeId alone: through the rendezvous its DHT record names (with
    /// [`Builder::dht`]) and through our own rendezvous.
    Node(NodeId),
    /// By ticket: its rendezvous and direct addresses too.
    Ticket(Ticket),
}

impl From<NodeId> for Target {
    fn from(n: NodeId) -> Self {
        Target::Node(n)
    }
}

impl From<Ticket> for Target {
    fn from(t: Ticket) -> Self {
        Target::Ticket(t)
    }
}

/// What a node counted over its life, handed back by [`Node::close`].
pub type Counters = (DriverStats, shipworm_tunnel::tunnel::Stats);

/// The tasks of a running node, taken by [`Node::close`].
struct Running {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Option<Counters>>,
    portmap: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
    publisher: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<()>)>,
}

/// A running node.
pub struct Node {
    identity: Identity,
    /// quinn over the overlay; `None` with a TUN interface.
    endpoint: Option<quinn::Endpoint>,
    commands: mpsc::Sender<DriverCommand>,
    events: broadcast::Sender<NodeEvent>,
    rendezvous: Vec<RendezvousAddr>,
    local_addr: SocketAddr,
    inner_mtu: usize,
    quic_protection: crate::quic::tunneled::Protection,
    /// Peers that answered the tunneled QUIC version with version negotiation, dialled with v1
    /// for a while.
    quic_versions: crate::quic::tunneled::PeerVersions,
    running: std::sync::Mutex<Option<Running>>,
    pipe: Option<Arc<Pipe>>,
    dht: Option<Dht>,
    mdns: Option<Mdns>,
    /// The NAT64 prefix a ticket's or record's IPv4 rendezvous is reached through (the host has
    /// no IPv4), as the engine's.
    nat64: Option<crate::engine::nat64::Nat64Prefix>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("node_id", &self.node_id())
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A builder.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Our NodeId.
    pub fn node_id(&self) -> NodeId {
        self.identity.node_id()
    }

    /// Our overlay IPv6 address.
    pub fn overlay_addr(&self) -> Ipv6Addr {
        self.node_id().overlay_addr()
    }

    /// The underlay UDP address the node is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Events (registrations, connections, path changes) as they happen.
    pub fn events(&self) -> broadcast::Receiver<NodeEvent> {
        self.events.subscribe()
    }

    async fn command(&self, c: DriverCommand) -> Result<(), NodeError> {
        self.commands.send(c).await.map_err(|_| NodeError::Stopped)
    }

    /// The candidate and pair table.
    pub async fn status(&self) -> Result<Diagnostics, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.command(DriverCommand::Diagnostics(tx)).await?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// What the node has counted so far: the driver's local drops and the tunnel's counters.
    pub async fn counters(&self) -> Result<Counters, NodeError> {
        let (tx, rx) = oneshot::channel();
        self.command(DriverCommand::Counters(tx)).await?;
        rx.await.map_err(|_| NodeError::Stopped)
    }

    /// Our ticket: NodeId, rendezvous servers, and our current candidates as direct addresses.
    pub async fn ticket(&self) -> Result<Ticket, NodeError> {
        let d = self.status().await?;
        let mut direct: Vec<SocketAddr> = d.candidates.iter().map(|c| c.addr).collect();
        direct.truncate(shipworm_tunnel::ticket::MAX_DIRECT);
        Ticket::new(self.node_id(), self.rendezvous.clone(), direct)
            .map_err(|e| NodeError::Setup(e.to_string()))
    }

    /// Waits until a rendezvous confirmed us (or `within` passes); returns whether one did.
    pub async fn registered(&self, within: Duration) -> bool {
        // Subscribed before looking, so a confirmation in between is not missed; woken by the
        // event itself, not a polling interval (which used to add up to 20 ms to `connect`).
        let mut events = self.events.subscribe();
        let confirmed = |d: Result<Diagnostics, NodeError>| {
            d.is_ok_and(|d| d.registrations.iter().any(|(_, o)| o.is_some()))
        };
        if confirmed(self.status().await) {
            return true;
        }
        let wait = async {
            loop {
                match events.recv().await {
                    Ok(NodeEvent::Registered { .. }) => return true,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if confirmed(self.status().await) {
                            return true;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return false,
                }
            }
        };
        tokio::time::timeout(within, wait).await.unwrap_or(false)
    }

    /// Connects to `target` and opens a QUIC connection speaking `alpn`, authenticated as exactly
    /// that node.
    pub async fn connect(
        &self,
        target: impl Into<Target>,
        alpn: &[u8],
    ) -> Result<quinn::Connection, NodeError> {
        let mut looked_up = false;
        let (peer, direct) = match target.into() {
            Target::Node(n) => {
                // The LAN first: a peer there is reached directly, at the addresses it
                // announced (claims, checked like any other candidate).
                let mut direct = match &self.mdns {
                    Some(m) => m.wait_for(n, mdns::LAN_WAIT).await,
                    None => Vec::new(),
                };
                if let (Some(dht), true) = (&self.dht, direct.is_empty()) {
                    match dht.resolve(n).await {
                        Ok(record) => {
                            looked_up = true;
                            for server in record_servers(&record, self.nat64.as_ref()).await {
                                self.command(DriverCommand::AddTicketRendezvous(server, n))
                                    .await?;
                            }
                        }
                        // Nothing else could name the peer: the lookup's error is the answer
                        // (unless it announced itself on the LAN meanwhile).
                        Err(e) if self.rendezvous.is_empty() => {
                            direct = self.mdns.as_ref().map(|m| m.addrs(n)).unwrap_or_default();
                            if direct.is_empty() {
                                return Err(e.into());
                            }
                        }
                        // Our own rendezvous may still know it.
                        Err(e) => tracing::debug!(target: "shipworm::discovery", "{e}"),
                    }
                }
                if direct.is_empty()
                    && !looked_up
                    && self.rendezvous.is_empty()
                    && self.mdns.is_some()
                {
                    return Err(NodeError::NotOnLan(n));
                }
                (n, direct)
            }
            Target::Ticket(t) => {
                for r in t.rendezvous() {
                    if let Ok(server) = resolve(r, self.nat64.as_ref()).await {
                        self.command(DriverCommand::AddTicketRendezvous(
                            server.register,
                            t.node_id(),
                        ))
                        .await?;
                    }
                }
                (t.node_id(), t.direct().to_vec())
            }
        };
        let endpoint = self.endpoint.as_ref().ok_or(NodeError::TunMode)?;
        if let Err(e) = self.ensure_path(peer, direct).await {
            if let (true, Some(dht)) = (looked_up, &self.dht) {
                // The record led nowhere (the peer may have moved): ask the DHT next time.
                dht.forget(peer);
            }
            return Err(e);
        }
        let config = tls::client_config(&self.identity, peer, alpn)
            .map_err(|e| NodeError::Setup(e.to_string()))?;
        let config = Arc::new(
            quinn::crypto::rustls::QuicClientConfig::try_from(config)
                .map_err(|e| NodeError::Setup(e.to_string()))?,
        );
        let to = SocketAddr::V6(SocketAddrV6::new(peer.overlay_addr(), QUIC_PORT, 0, 0));
        let (protection, versions) = (self.quic_protection, &self.quic_versions);
        tunneled::connect(endpoint, protection, versions, to, "shipworm", |version| {
            let mut config = tunneled::client_config(config.clone(), version);
            config.transport_config(transport_config(self.inner_mtu));
            config
        })
        .await
        .map_err(|e| NodeError::Quic {
            peer,
            reason: e.to_string(),
        })
    }

    /// Makes sure a two-way path to `peer` exists: waits for the engine to connect, or fails with
    /// its reason.
    async fn ensure_path(&self, peer: NodeId, direct: Vec<SocketAddr>) -> Result<(), NodeError> {
        let mut events = self.events.subscribe();
        let has_path = |d: &Diagnostics| {
            d.peers
                .iter()
                .any(|p| p.peer == peer && p.pairs.iter().any(|x| x.selected))
        };
        if has_path(&self.status().await?) {
            return Ok(());
        }
        // Registration first (a ticket's rendezvous may be new to us), unless a rendezvous is
        // silent over UDP: waiting longer would only delay the error, and a relay over TCP, if
        // any, registers us while the attempt runs (its introduction waits for that).
        let mut silence = self.events.subscribe();
        let silent = async {
            loop {
                match silence.recv().await {
                    Ok(NodeEvent::RendezvousSilent { .. })
                    | Err(broadcast::error::RecvError::Closed) => return,
                    _ => {}
                }
            }
        };
        tokio::select! {
            _ = self.registered(Duration::from_secs(5)) => {}
            _ = silent => {}
        }
        self.command(DriverCommand::Connect(peer, direct)).await?;
        let wait = async {
            loop {
                match events.recv().await {
                    Ok(NodeEvent::Connected { peer: p, .. }) if p == peer => return Ok(()),
                    Ok(NodeEvent::ConnectFailed { peer: p, error }) if p == peer => {
                        return Err(NodeError::Connect(error))
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if has_path(&self.status().await?) {
                            return Ok(());
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return Err(NodeError::Stopped),
                }
            }
        };
        tokio::time::timeout(CONNECT_TIMEOUT, wait)
            .await
            .map_err(|_| NodeError::Timeout(peer))?
    }

    /// The next incoming QUIC connection and the node it authenticated as; `None` once the node
    /// has stopped.
    /// A node on a TUN interface has no QUIC endpoint and returns `None` at once.
    pub async fn accept(&self) -> Option<(NodeId, quinn::Connection)> {
        let endpoint = self.endpoint.as_ref()?;
        loop {
            let incoming = endpoint.accept().await?;
            let Ok(conn) = incoming.await else { continue };
            let Some(peer) = peer_of(&conn) else {
                conn.close(1u32.into(), b"no valid raw public key");
                continue;
            };
            // Self-certifying addresses: the overlay source must belong to the key TLS proved.
            if conn.remote_address().ip() != std::net::IpAddr::V6(peer.overlay_addr()) {
                conn.close(2u32.into(), b"overlay address does not match the key");
                continue;
            }
            return Some((peer, conn));
        }
    }

    /// Stops the node: closes connections, the driver, and removes the port mapping. Returns
    /// what the node counted (`None` if it was already closed, or its driver failed).
    pub async fn close(&self) -> Option<Counters> {
        if let Some(endpoint) = &self.endpoint {
            endpoint.close(0u32.into(), b"node closing");
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
        let running = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()?;
        let _ = running.stop.send(());
        let counters = running.task.await.ok().flatten();
        if let Some((stop, task)) = running.publisher {
            let _ = stop.send(());
            let _ = task.await;
        }
        if let Some((stop, task)) = running.portmap {
            // The mapping is removed from the gateway before the task ends.
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(3), task).await;
        }
        if let Some(pipe) = &self.pipe {
            pipe.close();
        }
        if let Some(m) = &self.mdns {
            m.shutdown();
        }
        counters
    }
}

/// The registration addresses of the rendezvous servers a record names (those that resolve).
pub(crate) async fn record_servers(
    record: &Record,
    nat64: Option<&crate::engine::nat64::Nat64Prefix>,
) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for r in &record.rendezvous {
        match resolve(r, nat64).await {
            Ok(server) => out.push(server.register),
            Err(e) => tracing::debug!(target: "shipworm::discovery", "{e}"),
        }
    }
    out
}

/// How a path looks to a human: "direct IPv4 via 203.0.113.5:41641 (reflexive), rtt 12.3 ms".
pub async fn describe_path(node: &Node, peer: NodeId) -> String {
    let Ok(status) = node.status().await else {
        return "path unknown".into();
    };
    let Some(pair) = status
        .peers
        .iter()
        .find(|p| p.peer == peer)
        .and_then(|p| p.pairs.iter().find(|x| x.selected))
    else {
        return "no path selected".into();
    };
    let rtt = pair.rtt.map_or(String::new(), |r| {
        format!(", rtt {:.1} ms", r.as_secs_f64() * 1e3)
    });
    if let Some(relay) = pair.relay {
        return format!("relayed via {relay}{rtt}");
    }
    let family = if pair.remote.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    };
    let kind = match pair.kind {
        CandidateKind::Host => "host address",
        CandidateKind::Reflexive => "address the rendezvous saw",
        CandidateKind::Mapped => "UPnP/PCP port mapping",
        CandidateKind::PeerReflexive => "peer-reflexive address",
        CandidateKind::Advertised => "address the peer advertised",
        CandidateKind::Relayed => "relayed path",
    };
    format!("direct {family} via {} ({kind}){rtt}", pair.remote)
}

/// The NodeId a QUIC connection's peer authenticated as.
pub fn peer_of(conn: &quinn::Connection) -> Option<NodeId> {
    let certs = conn
        .peer_identity()?
        .downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
        .ok()?;
    tls::node_of_spki(certs.first()?.as_ref())
}
