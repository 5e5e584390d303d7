//! A node holding only another node's ticket reaches it through the rendezvous the ticket names.

use std::sync::Arc;
use std::time::Duration;

use shipworm::rendezvous::client::{Client, Incoming};
use shipworm::rendezvous::config::Config;
use shipworm::rendezvous::driver::Rendezvous;
use shipworm::rendezvous::proto::IntroStatus;
use shipworm::{Identity, RendezvousAddr, Ticket};
use tokio::net::UdpSocket;

#[tokio::test]
async fn a_pasted_ticket_is_enough_to_introduce_yourself() {
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        alt_listen: None,
        ..Config::default()
    };
    let rdv = Rendezvous::bind(config).await.unwrap();

    // B registers and hands out its ticket as text.
    let b_id = Identity::generate();
    let mut b = Client::new(
        Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()),
        rdv.local_addr(),
        b_id.clone(),
    );
    b.register().await.unwrap();
    let text = Ticket::new(
        b_id.node_id(),
        vec![RendezvousAddr::Ip(rdv.local_addr())],
        vec![],
    )
    .unwrap()
    .to_string();

    // A knows nothing but that text.
    let ticket: Ticket = text.parse().unwrap();
    let RendezvousAddr::Ip(server) = ticket.rendezvous()[0].clone() else {
        panic!("ip ticket")
    };
    let a_id = Identity::generate();
    let mut a = Client::new(
        Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap()),
        server,
        a_id.clone(),
    );
    a.register().await.unwrap();
    let ack = a.introduce(&ticket.node_id(), b"hi").await.unwrap();
    assert_eq!(ack.status, IntroStatus::Forwarded);

    match tokio::time::timeout(Duration::from_secs(5), b.next_incoming())
        .await
        .unwrap()
        .unwrap()
    {
        Incoming::Introduction { from, payload, .. } => {
            assert_eq!(from, a_id.node_id());
            assert_eq!(payload, b"hi");
        }
        other => panic!("unexpected {other:?}"),
    }

    // An unknown node id gets a plain "unknown peer", not silence.
    let stranger = Identity::generate().node_id();
    assert_eq!(
        a.introduce(&stranger, b"hi").await.unwrap().status,
        IntroStatus::UnknownPeer
    );
    rdv.shutdown().await;
}
