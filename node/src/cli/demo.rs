//! The end-to-end demo on one machine: an embedded rendezvous and two nodes.
//!
//! Node B registers and hands out a ticket; node A, knowing only that ticket, is introduced
//! through the rendezvous, punches a direct path (trivial here: both share this machine's
//! addresses), completes the Noise handshake, and opens a QUIC connection authenticated by B's
//! key, inside the encrypted tunnel. Then A sends data and B checks it.

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use shipworm::rendezvous::config::Config;
use shipworm::rendezvous::driver::Rendezvous;
use shipworm::RendezvousAddr;

use shipworm::Node;

const ALPN: &[u8] = b"shipworm/demo/1";

/// Waits until `node` knows whether its NAT maps per destination (or `within` passes).
async fn mapping_known(node: &Node, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        match node.status().await {
            Ok(d) if d.maps_per_destination.is_some() => return true,
            Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(_) => return false,
        }
    }
    false
}

/// `shipworm demo`: 100 MB, narrated on stdout.
pub async fn run_command() -> anyhow::Result<()> {
    run(&mut std::io::stdout(), 100 * 1024 * 1024).await
}

/// Runs the demo with `bytes` of data, narrating to `out`; fails unless every byte arrived intact.
pub async fn run(out: &mut (dyn Write + Send), bytes: u64) -> anyhow::Result<()> {
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        alt_listen: Some("127.0.0.1:0".parse()?),
        ..Config::default()
    };
    let rdv = Rendezvous::bind(config)
        .await
        .context("starting the embedded rendezvous")?;
    let rdv_addr = rdv.local_addr();
    let server = RendezvousAddr::Ip(rdv_addr);
    writeln!(
        out,
        "rendezvous  {} (embedded; it only introduces)",
        rdv.local_addr()
    )?;

    let b = Arc::new(
        Node::builder()
            .rendezvous(server.clone())
            .portmap(false)
            .alpn(ALPN)
            .spawn()
            .await?,
    );
    let a = Node::builder()
        .rendezvous(server)
        .portmap(false)
        .spawn()
        .await?;
    anyhow::ensure!(
        b.registered(Duration::from_secs(5)).await,
        "B could not register"
    );
    // Both learn their NAT's mapping behaviour (the rendezvous' second STUN port) before A
    // connects. A node that learns it after its handshake tells the peer with a fresh one, which
    // the rendezvous relays: correct, but the demo shows the one-introduction procedure.
    for (name, node) in [("A", &a), ("B", &*b)] {
        anyhow::ensure!(
            mapping_known(node, Duration::from_secs(5)).await,
            "{name} could not check its NAT's mapping behaviour against the embedded rendezvous"
        );
    }
    let b_ticket = b.ticket().await?;
    writeln!(
        out,
        "node B      {}  overlay {}",
        b.node_id(),
        b.overlay_addr()
    )?;
    writeln!(out, "ticket B    {b_ticket}")?;
    writeln!(
        out,
        "node A      {}  overlay {}",
        a.node_id(),
        a.overlay_addr()
    )?;

    let receiver = {
        let b = b.clone();
        tokio::spawn(async move {
            let (peer, conn) = b.accept().await.context("no connection came")?;
            let mut recv = conn.accept_uni().await?;
            let mut h = blake3::Hasher::new();
            let mut buf = vec![0u8; 256 * 1024];
            let mut n = 0u64;
            while let Some(k) = recv.read(&mut buf).await? {
                h.update(&buf[..k]);
                n += k as u64;
            }
            let mut send = conn.open_uni().await?;
            send.write_all(h.finalize().as_bytes()).await?;
            send.finish()?;
            let _ = send.stopped().await;
            anyhow::Ok((peer, n))
        })
    };

    let t = Instant::now();
    let conn = a.connect(b_ticket.clone(), ALPN).await?;
    let connect_time = t.elapsed();
    let path = shipworm::api::describe_path(&a, b.node_id()).await;
    writeln!(
        out,
        "connect     A -> B by ticket: introduced, punched, Noise IK, QUIC with B's raw key: {:.1} ms\npath        {path}",
        connect_time.as_secs_f64() * 1e3
    )?;

    let mut send = conn.open_uni().await?;
    let mut h = blake3::Hasher::new();
    let chunk: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let t = Instant::now();
    let mut sent = 0u64;
    while sent < bytes {
        let n = (bytes - sent).min(chunk.len() as u64) as usize;
        send.write_all(&chunk[..n]).await?;
        h.update(&chunk[..n]);
        sent += n as u64;
    }
    send.finish()?;
    let mut answer = conn.accept_uni().await?;
    let theirs = answer.read_to_end(32).await?;
    let elapsed = t.elapsed();
    let (peer, got) = receiver.await??;
    let intact = theirs == h.finalize().as_bytes() && got == bytes && peer == a.node_id();
    let mbit_per_s = bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1e6;
    writeln!(
        out,
        "transfer    {:.0} MB A -> B in {:.2} s: {mbit_per_s:.0} Mbit/s, checksum {}",
        bytes as f64 / 1e6,
        elapsed.as_secs_f64(),
        if intact { "matches" } else { "DIFFERS" }
    )?;
    conn.close(0u32.into(), b"demo done");
    a.close().await;
    b.close().await;
    let snap = rdv.shutdown().await;
    writeln!(
        out,
        "rendezvous  forwarded {} introduction(s) and no data: every byte above went directly",
        snap.stats.introductions_forwarded
    )?;
    anyhow::ensure!(intact, "the data arrived damaged: B's checksum differs");
    Ok(())
}

#[cfg(test)]
mod tests {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_demo_connects_two_nodes_and_moves_data_intact() {
        let mut out = Vec::new();
        let r = super::run(&mut out, 4 * 1024 * 1024).await;
        let text = String::from_utf8(out).unwrap();
        assert!(r.is_ok(), "{r:?}\n{text}");
        assert!(text.contains("\npath        direct "), "{text}");
        assert!(text.contains("checksum matches"), "{text}");
    }
}
