//! A node holding only another node's ticket reaches it through the rendezvous the ticket names.

use std::time::Duration;

use shipworm::engine::ConnectError;
use shipworm::rendezvous::config::Config;
use shipworm::rendezvous::driver::Rendezvous;
use shipworm::{Identity, Node, NodeError, RendezvousAddr, Ticket};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pasted_ticket_is_enough_to_introduce_yourself() {
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        alt_listen: None,
        ..Config::default()
    };
    let rdv = Rendezvous::bind(config).await.unwrap();
    let loopback = "127.0.0.1:0".parse().unwrap();

    // B registers and hands out its ticket as text: the rendezvous only, no direct address.
    let b = Node::builder()
        .rendezvous(RendezvousAddr::Ip(rdv.local_addr()))
        .bind(loopback)
        .portmap(false)
        .alpn(b"hi/1")
        .spawn()
        .await
        .unwrap();
    assert!(b.registered(Duration::from_secs(5)).await);
    let text = Ticket::new(
        b.node_id(),
        vec![RendezvousAddr::Ip(rdv.local_addr())],
        vec![],
    )
    .unwrap()
    .to_string();

    // A knows nothing but that text, not even a rendezvous of its own.
    let ticket: Ticket = text.parse().unwrap();
    let a = Node::builder()
        .bind(loopback)
        .portmap(false)
        .spawn()
        .await
        .unwrap();
    let a_id = a.node_id();
    let accept = tokio::spawn(async move {
        let (peer, conn) = b.accept().await.expect("a peer");
        let mut recv = conn.accept_uni().await.expect("a stream");
        let payload = recv.read_to_end(64).await.expect("data");
        (peer, payload, b)
    });
    let conn = a.connect(ticket.clone(), b"hi/1").await.unwrap();
    let mut send = conn.open_uni().await.unwrap();
    send.write_all(b"hi").await.unwrap();
    send.finish().unwrap();
    let (from, payload, b) = tokio::time::timeout(Duration::from_secs(5), accept)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from, a_id);
    assert_eq!(payload, b"hi");
    // The rendezvous forwarded the introduction (its counters refresh twice a second).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while rdv.snapshot().stats.introductions_forwarded < 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the rendezvous never counted the introduction it forwarded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // An unknown node id gets a plain "unknown peer", not silence.
    let stranger = Ticket::new(
        Identity::generate().node_id(),
        vec![RendezvousAddr::Ip(rdv.local_addr())],
        vec![],
    )
    .unwrap();
    match a.connect(stranger, b"hi/1").await {
        Err(NodeError::Connect(ConnectError::UnknownPeer(server))) => {
            assert_eq!(server, rdv.local_addr())
        }
        other => panic!("expected UnknownPeer, got {other:?}"),
    }
    conn.close(0u32.into(), b"done");
    a.close().await;
    b.close().await;
    rdv.shutdown().await;
}
