//! An echo service and its client in one program: two nodes introduced by an embedded
//! rendezvous, one QUIC stream echoed back.
//!
//! ```sh
//! cargo run -p shipworm --example echo
//! ```

use std::time::Duration;

use shipworm::rendezvous::config::Config;
use shipworm::rendezvous::driver::Rendezvous;
use shipworm::{Node, RendezvousAddr};

const ALPN: &[u8] = b"example/echo/1";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let rdv = Rendezvous::bind(Config {
        listen: "127.0.0.1:0".parse()?,
        alt_listen: None,
        ..Config::default()
    })
    .await?;
    let server = RendezvousAddr::Ip(rdv.local_addr());

    // The echo service: accepts connections, echoes every stream.
    let service = Node::builder()
        .rendezvous(server.clone())
        .portmap(false)
        .alpn(ALPN)
        .spawn()
        .await?;
    anyhow::ensure!(
        service.registered(Duration::from_secs(5)).await,
        "no rendezvous"
    );
    let ticket = service.ticket().await?;
    println!("echo service {} — ticket {ticket}", service.node_id());
    let service = std::sync::Arc::new(service);
    let s = service.clone();
    tokio::spawn(async move {
        while let Some((peer, conn)) = s.accept().await {
            println!("service: {} connected", peer.fmt_short());
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = conn.accept_bi().await {
                    let data = recv.read_to_end(1 << 20).await?;
                    send.write_all(&data).await?;
                    send.finish()?;
                }
                anyhow::Ok(())
            });
        }
    });

    // The client knows only the ticket.
    let client = Node::builder()
        .rendezvous(server)
        .portmap(false)
        .spawn()
        .await?;
    let conn = client.connect(ticket, ALPN).await?;
    let (mut send, mut recv) = conn.open_bi().await?;
    send.write_all(b"hello through the tunnel").await?;
    send.finish()?;
    let echoed = recv.read_to_end(1 << 20).await?;
    println!("client: got back {:?}", String::from_utf8_lossy(&echoed));
    assert_eq!(echoed, b"hello through the tunnel");
    conn.close(0u32.into(), b"bye");
    client.close().await;
    service.close().await;
    rdv.shutdown().await;
    Ok(())
}
