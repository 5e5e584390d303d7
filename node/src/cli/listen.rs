//! `shipworm listen`: print a ticket, accept one peer, pipe stdin/stdout (the other end of
//! `connect`).

use std::time::Duration;

use shipworm::apps::{pipe, PIPE_ALPN};

use crate::common::{lost, Common};

/// Serves one peer.
pub async fn run(common: Common) -> anyhow::Result<()> {
    let node = common.builder(0)?.alpn(PIPE_ALPN).spawn().await?;
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
    let (send, recv) = conn
        .accept_bi()
        .await
        .map_err(|e| lost(format!("peer went away: {e}")))?;
    let r = pipe::pipe(send, recv, tokio::io::stdin(), tokio::io::stdout()).await;
    conn.close(0u32.into(), b"done");
    node.close().await;
    r.map(|_| ()).map_err(lost)
}
