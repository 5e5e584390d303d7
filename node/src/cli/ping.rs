//! `shipworm ping TICKET|NODEID`: round trips through QUIC and the tunnel, and the path they take.

use std::time::Duration;

use shipworm::apps::{ping, PING_ALPN};

use crate::common::{dial, lost, Common, PeerArg};

/// Arguments of `ping`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The peer: its ticket, or its NodeId alone (found through the DHT, or through our
    /// `--rendezvous`).
    peer: PeerArg,
    /// How many pings.
    #[arg(short = 'c', long, default_value_t = 4)]
    count: u32,
}

/// Pings `count` times, 200 ms apart.
pub async fn run(common: Common, args: Args) -> anyhow::Result<()> {
    let peer = args.peer.node_id();
    let (node, conn, took) = dial(&common, args.peer, PING_ALPN).await?;
    let connect_ms = took.as_secs_f64() * 1e3;
    let path = shipworm::api::describe_path(&node, peer).await;
    if !common.json {
        println!(
            "connected to {} in {connect_ms:.1} ms: {path}",
            peer.fmt_short()
        );
    }
    let count = args.count.max(1);
    let mut rtts = Vec::new();
    for seq in 0..u64::from(count) {
        let rtt = ping::once(&conn, seq)
            .await
            .map_err(|e| lost(format!("ping {seq}: {e}")))?;
        if !common.json {
            println!(
                "reply from {}: seq={seq} time={:.2} ms",
                peer.fmt_short(),
                rtt.as_secs_f64() * 1e3
            );
        }
        rtts.push(rtt.as_secs_f64() * 1e3);
        if seq + 1 < u64::from(count) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    if common.json {
        let out = serde_json::json!({
            "peer": peer.to_string(),
            "connect_ms": connect_ms,
            "path": path,
            "rtt_ms": rtts,
        });
        println!("{out}");
    }
    conn.close(0u32.into(), b"done");
    node.close().await;
    Ok(())
}
