//! `shipworm connect TICKET|NODEID`: connect to a `listen`ing peer and pipe stdin/stdout.

use shipworm::apps::{pipe, PIPE_ALPN};

use crate::common::{dial, lost, narrate_paths, Common, PeerArg};

/// Arguments of `connect`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The peer: its ticket, or its NodeId alone (found through the DHT, or through our
    /// `--rendezvous`).
    peer: PeerArg,
}

/// Connects and pipes.
pub async fn run(common: Common, args: Args) -> anyhow::Result<()> {
    let peer = args.peer.node_id();
    let (node, conn, took) = dial(&common, args.peer, PIPE_ALPN).await?;
    let events = node.events();
    eprintln!(
        "connected: {} in {:.1} ms ({})",
        peer.fmt_short(),
        took.as_secs_f64() * 1e3,
        shipworm::api::describe_path(&node, peer).await
    );
    let (send, recv) = conn.open_bi().await.map_err(lost)?;
    let r = tokio::select! {
        r = pipe::pipe(send, recv, tokio::io::stdin(), tokio::io::stdout()) => r,
        _ = narrate_paths(&node, events, peer) => unreachable!("narrate_paths never returns"),
    };
    conn.close(0u32.into(), b"done");
    node.close().await;
    r.map(|_| ()).map_err(lost)
}
