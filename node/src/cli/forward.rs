//! `shipworm forward TICKET|NODEID --port P`: a local TCP port forwarded to a port on the peer.

use std::net::SocketAddr;

use anyhow::Context;
use shipworm::apps::{forward, FORWARD_ALPN};

use crate::common::{dial, shutdown, Common, PeerArg};

/// Arguments of `forward`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The peer: its ticket, or its NodeId alone (found through the DHT, or through our
    /// `--rendezvous`).
    peer: PeerArg,
    /// Local address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    local: SocketAddr,
    /// Port on the peer's loopback.
    #[arg(long)]
    port: u16,
}

/// Forwards until interrupted.
pub async fn run(common: Common, args: Args) -> anyhow::Result<()> {
    // The local port first: a port in use fails before any network work.
    let listener = tokio::net::TcpListener::bind(args.local)
        .await
        .with_context(|| format!("cannot listen on {}", args.local))?;
    let peer = args.peer.node_id();
    let (node, conn, _) = dial(&common, args.peer, FORWARD_ALPN).await?;
    eprintln!(
        "forwarding {} -> port {} on {} ({})",
        listener.local_addr()?,
        args.port,
        peer.fmt_short(),
        shipworm::api::describe_path(&node, peer).await
    );
    tokio::select! {
        _ = forward::run(conn.clone(), listener, args.port, |m| eprintln!("{m}")) => {}
        _ = shutdown() => {}
    }
    conn.close(0u32.into(), b"done");
    node.close().await;
    Ok(())
}
