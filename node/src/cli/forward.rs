//! `shipworm forward TICKET --port P`: a local TCP port forwarded to a port on the peer.

use std::net::SocketAddr;

use anyhow::Context;
use shipworm::apps::{forward, FORWARD_ALPN};
use shipworm::Ticket;

use crate::common::{dial, shutdown, Common};

/// Arguments of `forward`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The peer's ticket.
    ticket: Ticket,
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
    let peer = args.ticket.node_id();
    let (node, conn, _) = dial(&common, args.ticket, FORWARD_ALPN).await?;
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
