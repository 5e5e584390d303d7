//! `shipworm connect TICKET`: connect to a `listen`ing peer and pipe stdin/stdout.

use std::time::Instant;

use shipworm::apps::{pipe, PIPE_ALPN};
use shipworm::{Target, Ticket};

use crate::common::{lost, progress, unreachable, Common};

/// Arguments of `connect`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The peer's ticket.
    ticket: Ticket,
}

/// Connects and pipes.
pub async fn run(common: Common, args: Args) -> anyhow::Result<()> {
    let node = common.builder(0)?.spawn().await?;
    let peer = args.ticket.node_id();
    let shown = progress(&node, peer);
    let started = Instant::now();
    let conn = node
        .connect(Target::Ticket(args.ticket), PIPE_ALPN)
        .await
        .map_err(unreachable)?;
    shown.abort();
    eprintln!(
        "connected: {} in {:.1} ms ({})",
        peer.fmt_short(),
        started.elapsed().as_secs_f64() * 1e3,
        shipworm::api::describe_path(&node, peer).await
    );
    let (send, recv) = conn.open_bi().await.map_err(lost)?;
    let r = pipe::pipe(send, recv, tokio::io::stdin(), tokio::io::stdout()).await;
    conn.close(0u32.into(), b"done");
    node.close().await;
    r.map(|_| ()).map_err(lost)
}
