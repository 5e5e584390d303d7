//! `shipworm up`: a long-running node. With `--tun` the overlay goes on a TUN interface for any
//! program; without, the node answers ping and forwards to allowed local ports over QUIC. Peers
//! named with `--peer` are connected at once and retried while unreachable. Who may send to us:
//! the listed peers, the NodeIds of `--allow-file`, or anyone with `--allow-any`.

use std::collections::HashSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::task::JoinHandle;

use shipworm::api::TunOptions;
use shipworm::apps::{forward, ping, FORWARD_ALPN, PING_ALPN};
use shipworm::engine::NodeEvent;
use shipworm::{Node, NodeId};

use crate::common::{shutdown, Common, UP_PORT};

/// Arguments of `up`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Put the overlay on a TUN interface.
    #[arg(long)]
    pub tun: bool,
    /// Interface name.
    #[arg(long, default_value = "shipworm0")]
    tun_name: String,
    /// Inner MTU of the interface.
    #[arg(long, default_value_t = 1280)]
    mtu: u16,
    /// No segmentation offloads on the interface: one packet per read and write (slower; for
    /// kernels that misbehave with them, and for comparison).
    #[arg(long)]
    no_offload: bool,
    /// Without --tun: a local port peers may forward to (repeatable).
    #[arg(long = "forward-port")]
    forward_ports: Vec<u16>,
    /// Without --tun: peers may forward to any local port.
    #[arg(long)]
    forward_any: bool,
    /// A peer: NODEID or NODEID@HOST:PORT (repeatable). Listed peers may always send to us. A
    /// bare NODEID is looked up in the DHT when the DHT is on (`--publish dht`,
    /// `--dht-bootstrap`, or no `--rendezvous`).
    #[arg(long = "peer")]
    peers: Vec<PeerSpec>,
    /// More NodeIds allowed to send to us, one per line.
    #[arg(long)]
    allow_file: Option<PathBuf>,
    /// Let any node that proves its key send to us.
    #[arg(long)]
    allow_any: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (peers, paths by kind, handshakes, drops
    /// by reason, bytes).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
}

/// Runs the node until interrupted.
pub async fn run(common: Common, args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.mtu >= 1280,
        "--mtu must be at least 1280, the IPv6 minimum"
    );
    let mut builder = common.builder(UP_PORT)?;
    if !args.allow_any {
        let allowed = match &args.allow_file {
            Some(p) => read_allow_file(p).map_err(anyhow::Error::msg)?,
            None => HashSet::new(),
        };
        builder = builder.allow(allowed);
    }
    for p in &args.peers {
        builder = builder.peer(p.id, p.endpoint.into_iter().collect());
    }
    if let Some(o) = common.dht_options(args.peers.iter().any(|p| p.endpoint.is_none()))? {
        builder = builder.dht(o);
    }
    builder = builder.mdns(!common.no_mdns);
    builder = match args.tun {
        true => builder.tun(TunOptions {
            name: args.tun_name.clone(),
            mtu: args.mtu,
            offload: !args.no_offload,
        }),
        false => builder.alpn(PING_ALPN).alpn(FORWARD_ALPN),
    };
    let node = Arc::new(builder.spawn().await?);
    let mut events = node.events();
    let status: crate::control::StatusFn = {
        let node = node.clone();
        Arc::new(move || {
            let node = node.clone();
            Box::pin(async move { node.status().await.ok() })
        })
    };
    let control = common.control_path();
    let control_task = tokio::spawn(async move {
        if let Err(e) = crate::control::serve(control.clone(), status).await {
            eprintln!(
                "control socket {}: {e}; `shipworm status` will not reach this node",
                control.display()
            );
        }
    });
    let metrics_task = match args.metrics_listen {
        Some(addr) => Some(serve_metrics(node.clone(), addr).await?),
        None => None,
    };
    let carrier = match args.tun {
        true => format!(
            "on {} (mtu {}{})",
            args.tun_name,
            args.mtu,
            if args.no_offload { ", no offloads" } else { "" }
        ),
        false => "(QUIC only)".into(),
    };
    eprintln!(
        "up: node {}\n    overlay {} {carrier}, UDP {}, {} peer(s)",
        node.node_id(),
        node.overlay_addr(),
        node.local_addr(),
        args.peers.len()
    );
    let configured: HashSet<NodeId> = args.peers.iter().map(|p| p.id).collect();
    let narrate = async {
        while let Ok(e) = events.recv().await {
            narrate(&node, &configured, &e).await;
        }
    };
    let ticket = async {
        if node.registered(Duration::from_secs(5)).await {
            if let Ok(t) = node.ticket().await {
                eprintln!("ticket {t}");
            }
        }
        std::future::pending::<()>().await
    };
    let ports = Arc::new(match (args.forward_any, args.forward_ports.is_empty()) {
        (true, _) => forward::Ports::Any,
        (false, true) => forward::Ports::None,
        (false, false) => forward::Ports::Only(args.forward_ports.clone()),
    });
    tokio::select! {
        _ = serve(&node, ports), if !args.tun => {}
        _ = narrate => {}
        _ = ticket => {}
        _ = shutdown() => {}
    }
    control_task.abort();
    if let Some(task) = metrics_task {
        task.abort();
    }
    if let Some((local, tunnel)) = node.close().await {
        eprintln!(
            "down: {} packets in, {} out, {} handshakes; {} large segments split (offload), {} packets sealed in place, {} packets written in place; dropped locally: {} not from the overlay, {} to unknown peers, {} the interface refused, {} unusable reads",
            tunnel.packets_in,
            tunnel.packets_out,
            tunnel.handshakes_completed,
            local.tun_large_reads,
            local.tun_sealed_in_place,
            local.tun_written_in_place,
            local.not_overlay,
            local.no_peer,
            local.tun_write_errors,
            local.tun_bad_reads
        );
    }
    Ok(())
}

/// Serves the node's metrics at `addr` until the task is aborted.
async fn serve_metrics(node: Arc<Node>, addr: SocketAddr) -> anyhow::Result<JoinHandle<()>> {
    use shipworm::io::metrics;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve metrics on {addr}"))?;
    eprintln!("metrics on http://{}/metrics", listener.local_addr()?);
    let (tx, rx) = tokio::sync::watch::channel(None);
    let registry = Arc::new(metrics::registry(rx));
    Ok(tokio::spawn(async move {
        tokio::join!(
            metrics::publish(&node, tx),
            shipworm::rendezvous::metrics::serve(listener, registry, std::future::pending())
        );
    }))
}

/// Says on stderr what the node does.
async fn narrate(node: &Node, configured: &HashSet<NodeId>, e: &NodeEvent) {
    match e {
        NodeEvent::Registered { server, observed } => {
            eprintln!("registered at {server}: seen as {observed}")
        }
        NodeEvent::RegistrationRefused { reason, .. } => eprintln!("rendezvous: {reason}"),
        NodeEvent::RendezvousSilent { server, tcp } => {
            eprintln!("{}", crate::common::silent_rendezvous(*server, *tcp))
        }
        NodeEvent::Connected { peer, .. } => eprintln!(
            "connected to {} ({})",
            peer.fmt_short(),
            shipworm::api::describe_path(node, *peer).await
        ),
        NodeEvent::PathChanged { peer, .. } => eprintln!(
            "path to {} is now {}",
            peer.fmt_short(),
            shipworm::api::describe_path(node, *peer).await
        ),
        NodeEvent::ConnectFailed { peer, error } => {
            let again = match configured.contains(peer) {
                true => "; trying again later (it is a --peer)",
                false => "",
            };
            eprintln!("cannot connect to {}: {error}{again}", peer.fmt_short())
        }
        NodeEvent::Disconnected { peer } => eprintln!("session with {} ended", peer.fmt_short()),
        NodeEvent::Established { peer } => {
            eprintln!(
                "session with {} established; checking paths",
                peer.fmt_short()
            )
        }
        _ => {}
    }
}

/// Answers ping and forwards to allowed ports, for every peer that connects over QUIC.
async fn serve(node: &Node, ports: Arc<forward::Ports>) {
    while let Some((peer, conn)) = node.accept().await {
        let alpn = conn
            .handshake_data()
            .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|h| h.protocol);
        eprintln!("{} connected", peer.fmt_short());
        match alpn.as_deref() {
            Some(a) if a == PING_ALPN => {
                tokio::spawn(ping::serve(conn));
            }
            Some(a) if a == FORWARD_ALPN => {
                tokio::spawn(forward::serve(conn, ports.clone()));
            }
            _ => conn.close(3u32.into(), b"unknown application"),
        }
    }
}

/// A configured peer: a NodeId and, if known, where to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerSpec {
    /// The peer.
    pub id: NodeId,
    /// Its underlay address.
    pub endpoint: Option<SocketAddr>,
}

impl FromStr for PeerSpec {
    type Err = String;

    /// `NODEID` or `NODEID@HOST:PORT`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, addr) = match s.split_once('@') {
            Some((id, addr)) => (id, Some(addr)),
            None => (s, None),
        };
        let id: NodeId = id.parse().map_err(|e| format!("peer `{s}`: {e}"))?;
        let endpoint = match addr {
            None => None,
            Some(a) => Some(
                a.to_socket_addrs()
                    .map_err(|e| format!("peer `{s}`: cannot resolve `{a}`: {e}"))?
                    .next()
                    .ok_or_else(|| format!("peer `{s}`: `{a}` resolves to no address"))?,
            ),
        };
        Ok(Self { id, endpoint })
    }
}

/// Reads an allowlist: one NodeId per line; blank lines and `#` comments are ignored.
pub fn read_allow_file(path: &Path) -> Result<HashSet<NodeId>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("allow file {}: {e}", path.display()))?;
    parse_allow_list(&text).map_err(|e| format!("allow file {}: {e}", path.display()))
}

/// Parses allowlist text.
pub fn parse_allow_list(text: &str) -> Result<HashSet<NodeId>, String> {
    let mut out = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        out.insert(
            line.parse()
                .map_err(|e| format!("line {}: `{line}`: {e}", n + 1))?,
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shipworm::Identity;

    #[test]
    fn peer_specs_and_allow_lists() {
        let id = Identity::from_seed(&[4; 32]).node_id();
        let p: PeerSpec = format!("{id}@192.0.2.1:51820").parse().unwrap();
        assert_eq!(
            p,
            PeerSpec {
                id,
                endpoint: Some("192.0.2.1:51820".parse().unwrap())
            }
        );
        assert_eq!(id.to_string().parse::<PeerSpec>().unwrap().endpoint, None);
        let err = "nope@192.0.2.1:1".parse::<PeerSpec>().unwrap_err();
        assert!(err.contains("peer `nope@192.0.2.1:1`"), "{err}");

        let other = Identity::from_seed(&[5; 32]).node_id();
        let list = parse_allow_list(&format!("# team\n{other}\n\n  {id}  # me\n")).unwrap();
        assert_eq!(list, [id, other].into_iter().collect());
        let err = parse_allow_list("abc\n").unwrap_err();
        assert!(err.starts_with("line 1: `abc`"), "{err}");
    }
}
