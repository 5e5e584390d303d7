//! The QUIC-side commands of the `shipworm` binary: `listen`, `connect`, `forward`, `ping`, and
//! `up` without TUN.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use shipworm::apps::{self as cli, forward, pipe, FORWARD_ALPN, PING_ALPN, PIPE_ALPN};
use shipworm::engine::NodeEvent;
use shipworm::{Identity, Node, NodeError, NodeId, RendezvousAddr, Target, Ticket};

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

fn unreachable(e: NodeError) -> anyhow::Error {
    let hint = match &e {
        NodeError::Connect(shipworm::engine::ConnectError::UnknownPeer(server)) => {
            format!(" (is the peer running and registered at {server}?)")
        }
        NodeError::Connect(shipworm::engine::ConnectError::NoDirectPathPossible) => String::new(),
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

/// Common node settings of the QUIC commands.
pub struct NodeArgs {
    pub identity: Identity,
    pub rendezvous: Vec<RendezvousAddr>,
    pub bind: SocketAddr,
    pub portmap: bool,
    pub allow: Option<Vec<NodeId>>,
    pub alpns: Vec<&'static [u8]>,
}

pub async fn spawn(args: NodeArgs) -> anyhow::Result<Node> {
    let mut b = Node::builder()
        .identity(args.identity)
        .bind(args.bind)
        .portmap(args.portmap);
    for r in args.rendezvous {
        b = b.rendezvous(r);
    }
    for a in args.alpns {
        b = b.alpn(a);
    }
    if let Some(allow) = args.allow {
        b = b.allow(allow);
    }
    Ok(b.spawn().await?)
}

/// Prints connection progress on stderr once connecting takes more than a moment.
fn progress(node: &Node, peer: NodeId) -> tokio::task::JoinHandle<()> {
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
                    eprintln!("connecting to {}: introducing through the rendezvous…", peer.fmt_short());
                }
                e = events.recv() => match e {
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

/// `listen`: prints the ticket, accepts one peer, pipes stdin/stdout.
pub async fn listen(args: NodeArgs) -> anyhow::Result<()> {
    let node = spawn(NodeArgs {
        alpns: vec![PIPE_ALPN],
        ..args
    })
    .await?;
    if !node.registered(Duration::from_secs(5)).await
        && !node.ticket().await.is_ok_and(|t| !t.direct().is_empty())
    {
        anyhow::bail!(
            "no rendezvous answered and no direct address is known: give --rendezvous HOST:PORT"
        );
    }
    let ticket = node.ticket().await?;
    // The ticket alone on its line, for copy-paste and scripts.
    eprintln!("{ticket}");
    let Some((peer, conn)) = node.accept().await else {
        anyhow::bail!("node stopped before a peer came")
    };
    eprintln!(
        "connected: {} ({})",
        peer.fmt_short(),
        shipworm::api::describe_path(&node, peer).await
    );
    let (send, recv) = conn.accept_bi().await.map_err(|e| Exit {
        code: EXIT_LOST,
        message: format!("peer went away: {e}"),
    })?;
    let r = pipe::pipe(send, recv, tokio::io::stdin(), tokio::io::stdout()).await;
    conn.close(0u32.into(), b"done");
    node.close().await;
    r.map_err(|m| Exit {
        code: EXIT_LOST,
        message: m,
    })?;
    Ok(())
}

/// `connect TICKET`: the other end of `listen`.
pub async fn connect(args: NodeArgs, ticket: Ticket) -> anyhow::Result<()> {
    let node = spawn(NodeArgs {
        alpns: vec![],
        ..args
    })
    .await?;
    let peer = ticket.node_id();
    let shown = progress(&node, peer);
    let started = Instant::now();
    let conn = node
        .connect(Target::Ticket(ticket), PIPE_ALPN)
        .await
        .map_err(unreachable)?;
    shown.abort();
    eprintln!(
        "connected: {} in {:.1} ms ({})",
        peer.fmt_short(),
        started.elapsed().as_secs_f64() * 1e3,
        shipworm::api::describe_path(&node, peer).await
    );
    let (send, recv) = conn.open_bi().await.map_err(|e| Exit {
        code: EXIT_LOST,
        message: e.to_string(),
    })?;
    let r = pipe::pipe(send, recv, tokio::io::stdin(), tokio::io::stdout()).await;
    conn.close(0u32.into(), b"done");
    node.close().await;
    r.map_err(|m| Exit {
        code: EXIT_LOST,
        message: m,
    })?;
    Ok(())
}

/// `forward`: local TCP port → a port on the peer.
pub async fn forward(
    args: NodeArgs,
    ticket: Ticket,
    local: SocketAddr,
    port: u16,
) -> anyhow::Result<()> {
    let node = spawn(NodeArgs {
        alpns: vec![],
        ..args
    })
    .await?;
    let peer = ticket.node_id();
    let listener = tokio::net::TcpListener::bind(local)
        .await
        .with_context(|| format!("cannot listen on {local}"))?;
    let shown = progress(&node, peer);
    let conn = node
        .connect(Target::Ticket(ticket), FORWARD_ALPN)
        .await
        .map_err(unreachable)?;
    shown.abort();
    eprintln!(
        "forwarding {} -> port {port} on {} ({})",
        listener.local_addr()?,
        peer.fmt_short(),
        shipworm::api::describe_path(&node, peer).await
    );
    tokio::select! {
        _ = forward::run(conn.clone(), listener, port, |m| eprintln!("{m}")) => {}
        _ = shutdown() => {}
    }
    conn.close(0u32.into(), b"done");
    node.close().await;
    Ok(())
}

/// `ping TICKET`: round trips through QUIC and the tunnel, and the path they take.
pub async fn ping(args: NodeArgs, ticket: Ticket, count: u32, json: bool) -> anyhow::Result<()> {
    let node = spawn(NodeArgs {
        alpns: vec![],
        ..args
    })
    .await?;
    let peer = ticket.node_id();
    let shown = progress(&node, peer);
    let started = Instant::now();
    let conn = node
        .connect(Target::Ticket(ticket), PING_ALPN)
        .await
        .map_err(unreachable)?;
    let connect_ms = started.elapsed().as_secs_f64() * 1e3;
    shown.abort();
    let path = shipworm::api::describe_path(&node, peer).await;
    if !json {
        println!(
            "connected to {} in {connect_ms:.1} ms: {path}",
            peer.fmt_short()
        );
    }
    let mut rtts = Vec::new();
    for seq in 0..count.max(1) as u64 {
        match cli::ping_once(&conn, seq).await {
            Ok(rtt) => {
                if !json {
                    println!(
                        "reply from {}: seq={seq} time={:.2} ms",
                        peer.fmt_short(),
                        rtt.as_secs_f64() * 1e3
                    );
                }
                rtts.push(rtt.as_secs_f64() * 1e3);
            }
            Err(e) => {
                return Err(Exit {
                    code: EXIT_LOST,
                    message: format!("ping {seq}: {e}"),
                }
                .into())
            }
        }
        if seq + 1 < count as u64 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    if json {
        let list: Vec<String> = rtts.iter().map(|r| format!("{r:.3}")).collect();
        println!(
            "{{\"peer\":\"{peer}\",\"connect_ms\":{connect_ms:.3},\"path\":\"{}\",\"rtt_ms\":[{}]}}",
            path.replace('"', "'"),
            list.join(",")
        );
    }
    conn.close(0u32.into(), b"done");
    node.close().await;
    Ok(())
}

/// `up` without TUN: a long-running node answering ping and forwarding to allowed local ports.
pub async fn up_quic(
    args: NodeArgs,
    ports: forward::Ports,
    peers: Vec<(NodeId, Vec<SocketAddr>)>,
    control: std::path::PathBuf,
) -> anyhow::Result<()> {
    let node = Arc::new(
        spawn(NodeArgs {
            alpns: vec![PING_ALPN, FORWARD_ALPN],
            ..args
        })
        .await?,
    );
    let status: crate::control::StatusFn = {
        let node = node.clone();
        Arc::new(move || {
            let node = node.clone();
            Box::pin(async move { node.status().await.ok() })
        })
    };
    let control_task = tokio::spawn(crate::control::serve(control, status));
    eprintln!(
        "up: node {}\n    overlay {} (QUIC only), UDP {}",
        node.node_id(),
        node.overlay_addr(),
        node.local_addr()
    );
    if node.registered(Duration::from_secs(5)).await {
        eprintln!("ticket {}", node.ticket().await?);
    }
    for (peer, direct) in peers {
        let node = node.clone();
        tokio::spawn(async move {
            let target = match direct.is_empty() {
                true => Target::Node(peer),
                false => match Ticket::new(peer, vec![], direct) {
                    Ok(t) => Target::Ticket(t),
                    Err(_) => Target::Node(peer),
                },
            };
            match node.connect(target, PING_ALPN).await {
                Ok(c) => {
                    eprintln!(
                        "connected to {} ({})",
                        peer.fmt_short(),
                        shipworm::api::describe_path(&node, peer).await
                    );
                    c.close(0u32.into(), b"path is up");
                }
                Err(e) => eprintln!("cannot connect to {}: {e}", peer.fmt_short()),
            }
        });
    }
    let ports = Arc::new(ports);
    let serve = async {
        while let Some((peer, conn)) = node.accept().await {
            let ports = ports.clone();
            let alpn = conn
                .handshake_data()
                .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                .and_then(|h| h.protocol);
            eprintln!("{} connected", peer.fmt_short());
            match alpn.as_deref() {
                Some(a) if a == PING_ALPN => {
                    tokio::spawn(cli::serve_ping(conn));
                }
                Some(a) if a == FORWARD_ALPN => {
                    tokio::spawn(forward::serve(conn, ports));
                }
                _ => conn.close(3u32.into(), b"unknown application"),
            }
        }
    };
    tokio::select! {
        _ = serve => {}
        _ = shutdown() => {}
    }
    control_task.abort();
    node.close().await;
    Ok(())
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

/// The control socket path: `--control`, else beside the identity file.
pub fn control_path(
    control: Option<std::path::PathBuf>,
    identity: Option<&std::path::Path>,
) -> std::path::PathBuf {
    control.unwrap_or_else(|| match identity {
        Some(i) => crate::control::default_path(i),
        None => crate::files::default_identity_file()
            .map(|i| crate::control::default_path(&i))
            .unwrap_or_else(|| "shipworm.sock".into()),
    })
}

/// `status`: asks the running node.
pub async fn status(path: std::path::PathBuf, json: bool) -> anyhow::Result<()> {
    let out = crate::control::query(&path, json)
        .await
        .map_err(anyhow::Error::msg)?;
    print!("{out}");
    Ok(())
}

/// `netcheck`: what the network does to this host, in the spirit of `tailscale netcheck`.
pub async fn netcheck(args: NodeArgs, json: bool) -> anyhow::Result<()> {
    let try_portmap = args.portmap;
    let node = spawn(NodeArgs {
        portmap: false,
        alpns: vec![],
        ..args
    })
    .await?;
    let registered = node.registered(Duration::from_secs(5)).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut status = node.status().await?;
    while status.maps_per_destination.is_none() && registered && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        status = node.status().await?;
    }
    let portmap = if try_portmap {
        match shipworm::io::portmap::map(node.local_addr().port()).await {
            Ok(m) => {
                let found = format!("{} via {}", m.external, m.protocol);
                let _ = m.remove().await;
                Ok(found)
            }
            Err(e) => Err(e.to_string()),
        }
    } else {
        Err("not checked (--no-portmap)".into())
    };
    let host6: Vec<_> = status
        .candidates
        .iter()
        .filter(|c| c.kind == shipworm::engine::paths::CandidateKind::Host && c.addr.is_ipv6())
        .collect();
    let reflexive: Vec<_> = status
        .candidates
        .iter()
        .filter(|c| c.kind == shipworm::engine::paths::CandidateKind::Reflexive)
        .collect();
    let mapping = match status.maps_per_destination {
        Some(true) => {
            "per destination (a hard NAT: direct paths need a port mapping or birthday probing)"
        }
        Some(false) => "independent of destination (hole punching works)",
        None => "unknown (no rendezvous with a second STUN port answered)",
    };
    if json {
        let list = |v: &[&shipworm::engine::Candidate]| {
            v.iter()
                .map(|c| format!("\"{}\"", c.addr))
                .collect::<Vec<_>>()
                .join(",")
        };
        println!(
            "{{\"registered\":{registered},\"maps_per_destination\":{},\"reflexive\":[{}],\"ipv6_host\":[{}],\"port_mapping\":{},\"port_mapping_error\":{}}}",
            status.maps_per_destination.map_or("null".into(), |b| b.to_string()),
            list(&reflexive),
            list(&host6),
            portmap.as_ref().map_or("null".into(), |m| format!("\"{m}\"")),
            portmap.as_ref().err().map_or("null".into(), |e| format!("\"{}\"", e.replace('"', "'")))
        );
    } else {
        println!(
            "rendezvous:     {}",
            if registered {
                "reachable"
            } else {
                "no answer (give --rendezvous HOST:PORT)"
            }
        );
        for c in &reflexive {
            println!("public address: {}", c.addr);
        }
        println!("NAT mapping:    {mapping}");
        match &portmap {
            Ok(m) => println!("port mapping:   available ({m})"),
            Err(e) => println!("port mapping:   none ({e})"),
        }
        if host6.is_empty() {
            println!("IPv6:           no global IPv6 address");
        } else {
            for c in &host6 {
                println!("IPv6:           {}", c.addr);
            }
        }
    }
    node.close().await;
    Ok(())
}
