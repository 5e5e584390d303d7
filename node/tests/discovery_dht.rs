//! Finding a peer by NodeId alone through a local Mainline DHT testnet (in-process `mainline`
//! nodes on loopback; nothing reaches the public DHT): publish and resolve, a newer record
//! replaces an older one, an unknown NodeId fails with what to do, and two nodes connect by
//! NodeId through the rendezvous the record names.

use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shipworm::discovery::{Dht, DhtError, DhtOptions, Record};
use shipworm::rendezvous::config::Config;
use shipworm::rendezvous::driver::Rendezvous;
use shipworm::{Identity, Node, NodeError, RendezvousAddr, Target};

const ALPN: &[u8] = b"shipworm-test/1";

/// A private DHT of `n` server nodes on loopback; its bootstrap addresses.
fn testnet(n: usize) -> (mainline::Testnet, Vec<SocketAddrV4>) {
    let net = mainline::Testnet::builder(n).build().unwrap();
    let bootstrap = net.bootstrap.iter().map(|b| b.parse().unwrap()).collect();
    (net, bootstrap)
}

fn options(bootstrap: &[SocketAddrV4], publish: bool) -> DhtOptions {
    DhtOptions {
        bootstrap: Some(bootstrap.to_vec()),
        publish,
        port: None,
    }
}

fn record(servers: &[&str]) -> Record {
    Record {
        rendezvous: servers.iter().map(|s| s.parse().unwrap()).collect(),
    }
}

/// Resolves until the record is there (a publication takes a moment to land) or `within` passes.
async fn resolve_until(dht: &Dht, node: shipworm::NodeId, within: Duration) -> Record {
    let deadline = Instant::now() + within;
    loop {
        match dht.resolve(node).await {
            Ok(r) => return r,
            Err(e) => assert!(Instant::now() < deadline, "never resolved: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_record_resolves_and_a_newer_one_replaces_it() {
    let (_net, bootstrap) = testnet(6);
    let publisher = Dht::start(&options(&bootstrap, true)).unwrap();
    let resolver = Dht::start(&options(&bootstrap, false)).unwrap();
    let id = Identity::generate();
    let first = record(&["192.0.2.1:3478", "rdv.example.net:3478"]);
    publisher.publish(&id, &first).await.unwrap();
    assert_eq!(
        resolve_until(&resolver, id.node_id(), Duration::from_secs(20)).await,
        first
    );
    // The peer moves to another rendezvous and publishes again: once the cached copy is dropped
    // (its TTL, or a failed connection), the newer record is what resolves (at once, or when
    // the rest of the query brings it in over a stale copy a DHT node still held).
    let second = record(&["198.51.100.7:3478"]);
    publisher.publish(&id, &second).await.unwrap();
    assert_eq!(
        resolver.resolve(id.node_id()).await.unwrap(),
        first,
        "cached"
    );
    // (A lookup still running for the same key shares its answers: poll until a fresh one.)
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        resolver.forget(id.node_id());
        if resolver.resolve(id.node_id()).await.unwrap() == second {
            break;
        }
        assert!(Instant::now() < deadline, "the newer record never won");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The older one never comes back: the cache refuses it even when a DHT node serves it.
    resolver.forget(id.node_id());
    assert_eq!(resolver.resolve(id.node_id()).await.unwrap(), second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_node_id_fails_saying_what_to_do() {
    let (_net, bootstrap) = testnet(4);
    let a = Node::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .portmap(false)
        .dht(options(&bootstrap, false))
        .spawn()
        .await
        .unwrap();
    let nobody = Identity::generate().node_id();
    let e = a.connect(Target::Node(nobody), ALPN).await.unwrap_err();
    assert!(
        matches!(&e, NodeError::Discovery(DhtError::NotFound(n)) if *n == nobody),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        format!("no record for {nobody} in the DHT: is the peer running with --publish dht?")
    );
    a.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_connect_by_node_id_through_the_rendezvous_the_dht_names() {
    let (_net, bootstrap) = testnet(6);
    let rdv = Rendezvous::bind(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        alt_listen: None,
        ..Config::default()
    })
    .await
    .unwrap();
    let b = Arc::new(
        Node::builder()
            .rendezvous(RendezvousAddr::Ip(rdv.local_addr()))
            .bind("127.0.0.1:0".parse().unwrap())
            .portmap(false)
            .alpn(ALPN)
            .dht(options(&bootstrap, true))
            .spawn()
            .await
            .unwrap(),
    );
    // B publishes once its rendezvous confirms it; a third party sees the record appear.
    let observer = Dht::start(&options(&bootstrap, false)).unwrap();
    let seen = resolve_until(&observer, b.node_id(), Duration::from_secs(30)).await;
    assert_eq!(seen, record(&[&rdv.local_addr().to_string()]));

    let server = {
        let b = b.clone();
        tokio::spawn(async move {
            let (_, conn) = b.accept().await.expect("a peer");
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let data = recv.read_to_end(1 << 16).await.unwrap();
            send.write_all(&data).await.unwrap();
            send.finish().unwrap();
            conn.closed().await;
        })
    };
    // A has no rendezvous of its own and no ticket: only B's NodeId and the DHT.
    let a = Node::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .portmap(false)
        .dht(options(&bootstrap, false))
        .spawn()
        .await
        .unwrap();
    let conn = a.connect(Target::Node(b.node_id()), ALPN).await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send.write_all(b"found by NodeId").await.unwrap();
    send.finish().unwrap();
    assert_eq!(recv.read_to_end(1 << 16).await.unwrap(), b"found by NodeId");
    conn.close(0u32.into(), b"done");
    let _ = server.await;
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn publishing_without_a_rendezvous_is_refused_with_the_fix() {
    let e = Node::builder()
        .bind("127.0.0.1:0".parse().unwrap())
        .portmap(false)
        .dht(options(&["127.0.0.1:9".parse().unwrap()], true))
        .spawn()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("give --rendezvous"), "{e}");
}
