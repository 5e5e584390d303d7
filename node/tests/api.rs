//! The library API end to end on one machine: two nodes, an embedded rendezvous, an introduction,
//! hole punching (trivial on loopback), the tunnel and QUIC with raw-public-key TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shipworm::quic::tunneled::Protection;
use shipworm::rendezvous::config::Config;
use shipworm::rendezvous::driver::Rendezvous;
use shipworm::{Identity, Node, RendezvousAddr};

const ALPN: &[u8] = b"shipworm-test/1";

async fn rendezvous() -> Rendezvous {
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        alt_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::default()
    };
    Rendezvous::bind(config).await.unwrap()
}

async fn node(rdv: SocketAddr) -> Node {
    node_with(rdv, Protection::default()).await
}

async fn node_with(rdv: SocketAddr, protection: Protection) -> Node {
    Node::builder()
        .rendezvous(RendezvousAddr::Ip(rdv))
        .portmap(false)
        .alpn(ALPN)
        .quic_protection(protection)
        .spawn()
        .await
        .unwrap()
}

/// Deterministic bytes, so both sides can check without storing 100 MB.
fn chunk(i: u64) -> Vec<u8> {
    let mut h = blake3::Hasher::new();
    h.update(&i.to_le_bytes());
    let mut out = vec![0u8; 64 * 1024];
    h.finalize_xof().fill(&mut out);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_megabytes_cross_the_tunnel_intact_through_the_api() {
    let rdv = rendezvous().await;
    let (a, b) = (
        node(rdv.local_addr()).await,
        Arc::new(node(rdv.local_addr()).await),
    );
    assert!(b.registered(Duration::from_secs(5)).await);
    let ticket = b.ticket().await.unwrap();

    let server = {
        let b = b.clone();
        tokio::spawn(async move {
            let (peer, conn) = b.accept().await.expect("an incoming connection");
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let mut hasher = blake3::Hasher::new();
            let mut total = 0u64;
            let mut buf = vec![0u8; 256 * 1024];
            while let Some(n) = recv.read(&mut buf).await.unwrap() {
                hasher.update(&buf[..n]);
                total += n as u64;
            }
            send.write_all(hasher.finalize().as_bytes()).await.unwrap();
            send.write_all(&total.to_le_bytes()).await.unwrap();
            send.finish().unwrap();
            let _ = send.stopped().await;
            peer
        })
    };

    let conn = a.connect(ticket, ALPN).await.unwrap();
    assert_eq!(
        shipworm::api::peer_of(&conn),
        Some(b.node_id()),
        "the connection is authenticated as B"
    );
    assert_eq!(
        conn.remote_address().ip(),
        std::net::IpAddr::V6(b.overlay_addr())
    );
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let mut hasher = blake3::Hasher::new();
    const CHUNKS: u64 = 1600; // 1600 × 64 KiB = 100 MiB
    for i in 0..CHUNKS {
        let c = chunk(i);
        hasher.update(&c);
        send.write_all(&c).await.unwrap();
    }
    send.finish().unwrap();
    let reply = recv.read_to_end(64).await.unwrap();
    assert_eq!(
        &reply[..32],
        hasher.finalize().as_bytes(),
        "checksums differ"
    );
    assert_eq!(
        u64::from_le_bytes(reply[32..40].try_into().unwrap()),
        CHUNKS * 64 * 1024
    );
    assert_eq!(server.await.unwrap(), a.node_id(), "B knows who connected");

    // The selected path is direct (this machine's addresses), proven both ways.
    let status = a.status().await.unwrap();
    let pairs = &status
        .peers
        .iter()
        .find(|p| p.peer == b.node_id())
        .unwrap()
        .pairs;
    let selected = pairs.iter().find(|p| p.selected).unwrap();
    assert!(selected.answers_received > 0, "{selected:?}");
    // Every byte went over direct pairs (several, if the selection moved to a faster one).
    let sent: u64 = pairs.iter().map(|p| p.bytes_sent).sum();
    assert!(
        sent > 100 * 1024 * 1024,
        "{sent} bytes on the pairs: {pairs:?}"
    );
    conn.close(0u32.into(), b"done");
    a.close().await;
    b.close().await;
    rdv.shutdown().await;
}

#[tokio::test]
async fn a_node_refuses_a_peer_that_is_not_on_its_allowlist() {
    let rdv = rendezvous().await;
    let a = node(rdv.local_addr()).await;
    let b = Node::builder()
        .rendezvous(RendezvousAddr::Ip(rdv.local_addr()))
        .portmap(false)
        .alpn(ALPN)
        .allow([Identity::generate().node_id()])
        .spawn()
        .await
        .unwrap();
    assert!(b.registered(Duration::from_secs(5)).await);
    let err = a
        .connect(b.ticket().await.unwrap(), ALPN)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("handshake timed out")
            || err.to_string().contains("no connection"),
        "{err}"
    );
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn connecting_to_a_key_that_is_not_there_names_both_keys() {
    use shipworm::quic::tls;
    // Plain quinn over loopback with our TLS configs: B answers, A expected C.
    let (b_id, c_id, a_id) = (
        Identity::generate(),
        Identity::generate(),
        Identity::generate(),
    );
    let server = tls::server_config(&b_id, &[ALPN.to_vec()]).unwrap();
    let server = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(server).unwrap(),
    ));
    let b = quinn::Endpoint::server(server, "127.0.0.1:0".parse().unwrap()).unwrap();
    let b_addr = b.local_addr().unwrap();
    tokio::spawn(async move {
        if let Some(i) = b.accept().await {
            let _ = i.await;
        }
    });
    let client = tls::client_config(&a_id, c_id.node_id(), ALPN).unwrap();
    let client = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(client).unwrap(),
    ));
    let mut a = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    a.set_default_client_config(client);
    let err = a
        .connect(b_addr, "shipworm")
        .unwrap()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&c_id.node_id().to_string()) && err.contains(&b_id.node_id().to_string()),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_metrics_count_the_connected_peer_its_path_and_the_handshake() {
    use shipworm::io::metrics;
    use shipworm_tests::metrics::{sample, scrape};
    let rdv = rendezvous().await;
    let (a, b) = (node(rdv.local_addr()).await, node(rdv.local_addr()).await);
    assert!(b.registered(Duration::from_secs(5)).await);
    let (tx, rx) = tokio::sync::watch::channel(None);
    let registry = Arc::new(metrics::registry(rx));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(shipworm::rendezvous::metrics::serve(
        listener,
        registry,
        std::future::pending(),
    ));
    let a = Arc::new(a);
    // The registry has nothing to say until the first snapshot is published.
    let mut published = tx.subscribe();
    let publisher = {
        let a = a.clone();
        tokio::spawn(async move { metrics::publish(&a, tx).await })
    };
    tokio::time::timeout(Duration::from_secs(5), published.wait_for(|s| s.is_some()))
        .await
        .expect("no snapshot published in 5 s")
        .unwrap();
    let before = scrape(addr).await;
    assert_eq!(
        sample(&before, "shipworm_node_connected_peers"),
        Some(0),
        "{before}"
    );

    let b = Arc::new(b);
    let accepted = {
        let b = b.clone();
        tokio::spawn(async move { b.accept().await.map(|(_, conn)| conn) })
    };
    let conn = a.connect(b.ticket().await.unwrap(), ALPN).await.unwrap();
    let _accepted = accepted.await.unwrap().expect("B accepts A");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let text = loop {
        let text = scrape(addr).await;
        if sample(&text, "shipworm_node_connected_peers") == Some(1)
            || tokio::time::Instant::now() > deadline
        {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        sample(&text, "shipworm_node_connected_peers"),
        Some(1),
        "{text}"
    );
    assert_eq!(sample(&text, "shipworm_node_peers"), Some(1), "{text}");
    assert_eq!(
        sample(&text, "shipworm_node_registrations"),
        Some(1),
        "{text}"
    );
    assert_eq!(
        sample(&text, "shipworm_node_handshakes_total"),
        Some(1),
        "{text}"
    );
    let paths: u64 = [
        "host",
        "reflexive",
        "mapped",
        "peer-reflexive",
        "advertised",
    ]
    .iter()
    .filter_map(|k| sample(&text, &format!("shipworm_node_paths{{kind=\"{k}\"}}")))
    .sum();
    assert_eq!(paths, 1, "one selected path, of one kind: {text}");
    assert!(
        sample(&text, "shipworm_node_bytes_total{direction=\"sent\"}").is_some_and(|v| v > 0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "shipworm_node_engine_drops_total{reason=\"malformed_stun\"}"
        ),
        Some(0),
        "{text}"
    );
    assert!(
        sample(&text, "shipworm_node_tunnel_total{counter=\"packets_out\"}").is_some_and(|v| v > 0),
        "{text}"
    );
    conn.close(0u32.into(), b"done");
    a.close().await;
    b.close().await;
    publisher.await.unwrap();
}

/// A node that keeps QUIC's own protection and one that relies on the tunnel's (the default)
/// reach each other both ways: the default side falls back to QUIC v1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_either_quic_protection_connect_both_ways() {
    let rdv = rendezvous().await;
    let a = Arc::new(node_with(rdv.local_addr(), Protection::Tunnel).await);
    let b = Arc::new(node_with(rdv.local_addr(), Protection::TunnelAndQuic).await);
    for (from, to) in [(&a, &b), (&b, &a)] {
        assert!(to.registered(Duration::from_secs(5)).await);
        let ticket = to.ticket().await.unwrap();
        let server = {
            let to = to.clone();
            tokio::spawn(async move {
                let (_, conn) = to.accept().await.expect("an incoming connection");
                let (mut send, mut recv) = conn.accept_bi().await.unwrap();
                let got = recv.read_to_end(1 << 20).await.unwrap();
                send.write_all(&got).await.unwrap();
                send.finish().unwrap();
                let _ = send.stopped().await;
            })
        };
        let conn = tokio::time::timeout(Duration::from_secs(10), from.connect(ticket, ALPN))
            .await
            .expect("connects in time")
            .expect("connects");
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        let data = chunk(7);
        send.write_all(&data).await.unwrap();
        send.finish().unwrap();
        let echoed = tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(1 << 20))
            .await
            .expect("echoed in time")
            .unwrap();
        assert_eq!(echoed, data);
        server.await.unwrap();
        conn.close(0u32.into(), b"done");
    }
}
