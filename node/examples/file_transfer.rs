//! Sends a file to a peer by ticket, with a checksum the receiver verifies.
//!
//! ```sh
//! cargo run -p shipworm --example file_transfer -- receive OUT_FILE --rendezvous HOST:PORT
//! cargo run -p shipworm --example file_transfer -- send IN_FILE TICKET
//! ```
//! The receiver prints its ticket, takes one file, checks its BLAKE3, and exits.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use shipworm::{Node, RendezvousAddr, Ticket};
use tokio::io::AsyncWriteExt;

const ALPN: &[u8] = b"example/file/1";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["receive", out, "--rendezvous", rdv] => receive(out.into(), rdv.parse()?).await,
        ["send", file, ticket] => send(file.into(), ticket.parse()?).await,
        _ => anyhow::bail!("usage: receive OUT_FILE --rendezvous HOST:PORT | send IN_FILE TICKET"),
    }
}

async fn receive(out: PathBuf, rdv: RendezvousAddr) -> anyhow::Result<()> {
    let node = Node::builder().rendezvous(rdv).alpn(ALPN).spawn().await?;
    anyhow::ensure!(
        node.registered(Duration::from_secs(5)).await,
        "the rendezvous did not answer"
    );
    eprintln!("{}", node.ticket().await?);
    let (peer, conn) = node
        .accept()
        .await
        .ok_or_else(|| anyhow::anyhow!("no sender came"))?;
    let mut recv = conn.accept_uni().await?;
    let mut file = tokio::fs::File::create(&out).await?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    // The stream is: file bytes, then the sender's 32-byte BLAKE3 as the last 32 bytes.
    let mut tail = Vec::new();
    while let Some(k) = recv.read(&mut buf).await? {
        tail.extend_from_slice(&buf[..k]);
        if tail.len() > 32 {
            let keep = tail.split_off(tail.len() - 32);
            hasher.update(&tail);
            file.write_all(&tail).await?;
            n += tail.len() as u64;
            tail = keep;
        }
    }
    file.flush().await?;
    anyhow::ensure!(
        tail == hasher.finalize().as_bytes(),
        "checksum mismatch: the file is damaged"
    );
    eprintln!(
        "received {n} bytes from {} into {}: checksum ok",
        peer.fmt_short(),
        out.display()
    );
    conn.close(0u32.into(), b"thanks");
    node.close().await;
    Ok(())
}

async fn send(path: PathBuf, ticket: Ticket) -> anyhow::Result<()> {
    let node = Node::builder().spawn().await?;
    let conn = node.connect(ticket, ALPN).await?;
    let data = tokio::fs::read(&path).await?;
    let t = Instant::now();
    let mut s = conn.open_uni().await?;
    s.write_all(&data).await?;
    s.write_all(blake3::hash(&data).as_bytes()).await?;
    s.finish()?;
    conn.closed().await;
    eprintln!(
        "sent {} bytes in {:.2} s",
        data.len(),
        t.elapsed().as_secs_f64()
    );
    node.close().await;
    Ok(())
}
