//! `shipworm listen`: print a ticket, accept one peer, pipe stdin/stdout (the other end of
//! `connect`).
//!
//! The ticket is the capability: by default each run uses a fresh identity, so a ticket stops
//! working when the run ends and the node id a rendezvous or an observer sees once says nothing
//! about the next run (`--keep-identity`, or an explicit `--identity FILE`, uses the persistent
//! key instead). A ticket is printed only when it can work: once a rendezvous has confirmed the
//! registration, or, with no rendezvous configured, with a plain statement that it carries direct
//! addresses only.

use std::time::Duration;

use shipworm::apps::{pipe, PIPE_ALPN};
use shipworm::{Identity, Node, Ticket};

use crate::common::{lost, narrate_paths, Common};

/// `listen`'s own flags.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Use the persistent identity file (as `up` does) instead of a fresh key for this run.
    #[arg(long)]
    pub keep_identity: bool,
}

/// How long to wait for a rendezvous before saying that registration is still going on.
const REGISTRATION_NOTICE: Duration = Duration::from_secs(5);

/// Serves one peer.
pub async fn run(common: Common, args: Args) -> anyhow::Result<()> {
    let builder = if args.keep_identity || common.identity.is_some() {
        common.builder(0)?
    } else {
        // The persistent file is not even read: a fresh key, in memory only.
        common.builder_with(Identity::generate(), 0)
    };
    let builder = match common.dht_options(false)? {
        Some(o) => builder.dht(o),
        None => builder,
    };
    let node = builder
        .mdns(!common.no_mdns)
        .alpn(PIPE_ALPN)
        .spawn()
        .await?;
    let ticket = usable_ticket(&node, &common).await?;
    // The ticket alone on its line, for copy-paste and scripts.
    eprintln!("{ticket}");
    let events = node.events();
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
    let r = tokio::select! {
        r = pipe::pipe(send, recv, tokio::io::stdin(), tokio::io::stdout()) => r,
        _ = narrate_paths(&node, events, peer) => unreachable!("narrate_paths never returns"),
    };
    conn.close(0u32.into(), b"done");
    node.close().await;
    r.map(|_| ()).map_err(lost)
}

/// A ticket that can work. With a rendezvous configured: only once one confirmed our
/// registration (saying so on stderr while it has not, and waiting as long as it takes). Without
/// one: at once, with a note that it carries direct addresses only; none known is an error.
async fn usable_ticket(node: &Node, common: &Common) -> anyhow::Result<Ticket> {
    if common.rendezvous.is_empty() {
        let ticket = node.ticket().await?;
        if ticket.direct().is_empty() {
            anyhow::bail!(
                "no rendezvous given and no direct address is known: give --rendezvous HOST:PORT"
            );
        }
        eprintln!(
            "no --rendezvous: the ticket carries direct addresses only, and works only where one \
             of them is reachable"
        );
        return Ok(ticket);
    }
    if !node.registered(REGISTRATION_NOTICE).await {
        let servers: Vec<String> = common.rendezvous.iter().map(|r| r.to_string()).collect();
        eprintln!(
            "still registering at {} (no answer yet): the ticket follows once a rendezvous \
             confirms us; check the address and that UDP to it is not blocked",
            servers.join(", ")
        );
        while !node.registered(Duration::from_secs(3600)).await {
            if node.status().await.is_err() {
                anyhow::bail!("node stopped while registering");
            }
        }
    }
    Ok(node.ticket().await?)
}
