//! `shipworm connect TICKET`: connect to a `listen`ing peer and pipe stdin/stdout.

use shipworm::apps::{pipe, PIPE_ALPN};
use shipworm::Ticket;

use crate::common::{dial, lost, Common};

/// Arguments of `connect`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The peer's ticket.
    ticket: Ticket,
}

/// Connects and pipes.
pub async fn run(common: Common, args: Args) -> anyhow::Result<()> {
    let peer = args.ticket.node_id();
    let (node, conn, took) = dial(&common, args.ticket, PIPE_ALPN).await?;
    eprintln!(
        "connected: {} in {:.1} ms ({})",
        peer.fmt_short(),
        took.as_secs_f64() * 1e3,
        shipworm::api::describe_path(&node, peer).await
    );
    let (send, recv) = conn.open_bi().await.map_err(lost)?;
    let r = pipe::pipe(send, recv, tokio::io::stdin(), tokio::io::stdout()).await;
    conn.close(0u32.into(), b"done");
    node.close().await;
    r.map(|_| ()).map_err(lost)
}
