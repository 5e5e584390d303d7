//! The rendezvous service on real loopback sockets, with the client users run: the node library's
//! engine registers, refreshes, checks its NAT mapping over STUN and introduces itself.

use std::net::{SocketAddr, UdpSocket as StdUdp};
use std::time::{Duration, Instant};

use shipworm::engine::EngineConfig;
use shipworm::rendezvous::config::Config;
use shipworm::rendezvous::driver::Rendezvous;
use shipworm::rendezvous::server::DropReason;
use shipworm::{Identity, Node, RendezvousAddr, Ticket};
use shipworm_tests::metrics::{sample, scrape};

const ALPN: &[u8] = b"test/1";

fn ipv6_loopback_works() -> bool {
    StdUdp::bind("[::1]:0").is_ok()
}

/// A node on `bind` registering at `server` only, refreshing every `refresh`.
async fn node(bind: &str, server: SocketAddr, id: Identity, refresh: Duration) -> Node {
    Node::builder()
        .identity(id)
        .rendezvous(RendezvousAddr::Ip(server))
        .bind(bind.parse().unwrap())
        .portmap(false)
        .alpn(ALPN)
        .engine_config(EngineConfig {
            refresh_interval: refresh,
            ..EngineConfig::default()
        })
        .spawn()
        .await
        .unwrap()
}

/// Our address as the node's (only) rendezvous observed it.
async fn observed(node: &Node) -> Option<SocketAddr> {
    node.status().await.unwrap().registrations[0].1
}

/// Waits until `check` holds of the node's diagnostics.
async fn until(node: &Node, what: &str, check: impl Fn(&shipworm::engine::Diagnostics) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check(&node.status().await.unwrap()) {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dual_stack_socket_serves_ipv4_and_ipv6_nodes_and_forwards_an_introduction() {
    // Without IPv6 loopback the cross-family half cannot run: in CI that fails the test.
    let v6 = ipv6_loopback_works()
        || shipworm_tests::lab::cannot_run(
            "no IPv6 loopback here (::1), so the second node cannot register over IPv6",
        );
    let config = Config {
        listen: if v6 { "[::]:0" } else { "0.0.0.0:0" }.parse().unwrap(),
        alt_listen: Some(if v6 { "[::]:0" } else { "0.0.0.0:0" }.parse().unwrap()),
        metrics_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Config::default()
    };
    let rdv = Rendezvous::bind(config).await.unwrap();
    let port = rdv.local_addr().port();
    let refresh = Duration::from_millis(300);

    let a_id = Identity::from_seed(&[1; 32]);
    let a = node(
        "127.0.0.1:0",
        SocketAddr::from(([127, 0, 0, 1], port)),
        a_id.clone(),
        refresh,
    )
    .await;
    let a_local = a.local_addr();
    assert!(a.registered(Duration::from_secs(5)).await);
    assert_eq!(
        observed(&a).await,
        Some(a_local),
        "an IPv4 peer is reported as IPv4, not IPv4-mapped"
    );

    let (b_bind, b_server) = if v6 {
        (
            "[::1]:0",
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
        )
    } else {
        ("127.0.0.1:0", SocketAddr::from(([127, 0, 0, 1], port)))
    };
    let b_id = Identity::from_seed(&[2; 32]);
    let b = node(b_bind, b_server, b_id.clone(), refresh).await;
    let b_local = b.local_addr();
    assert!(b.registered(Duration::from_secs(5)).await);
    assert_eq!(observed(&b).await, Some(b_local));

    // The REGISTERED reply named the second STUN port: each node asked it for its address, and
    // it reflected the same address as the main port (no per-destination mapping on loopback).
    for n in [&a, &b] {
        until(n, "the mapping check on the second STUN port", |d| {
            d.maps_per_destination == Some(false)
        })
        .await;
    }

    // Refresh (the token path) keeps the same observed address.
    let deadline = Instant::now() + Duration::from_secs(10);
    while rdv.snapshot().stats.registrations_renewed < 2 {
        assert!(Instant::now() < deadline, "no REFRESH was answered");
        tokio::time::sleep(refresh).await;
    }
    assert_eq!(observed(&a).await, Some(a_local));
    assert_eq!(observed(&b).await, Some(b_local));

    // A knows B only by a ticket naming the rendezvous. The introduction is forwarded to B with
    // A's observed address, and the acknowledgement gives A B's observed address: each side then
    // holds the other's address as a candidate. (With A on IPv4 and B on IPv6 no direct path can
    // follow; the forwarding across families is what this proves.)
    let a_server = SocketAddr::from(([127, 0, 0, 1], port));
    let ticket = Ticket::new(b_id.node_id(), vec![RendezvousAddr::Ip(a_server)], vec![]).unwrap();
    let a = std::sync::Arc::new(a);
    let connecting = {
        let a = a.clone();
        tokio::spawn(async move { a.connect(ticket, ALPN).await.map(|_| ()) })
    };
    let knows = |peer: shipworm::NodeId, addr: SocketAddr| {
        move |d: &shipworm::engine::Diagnostics| {
            d.peers
                .iter()
                .any(|p| p.peer == peer && p.pairs.iter().any(|x| x.remote == addr))
        }
    };
    until(
        &a,
        "B's observed address from INTRO_ACK",
        knows(b_id.node_id(), b_local),
    )
    .await;
    until(
        &b,
        "A's observed address from INTRO_FWD",
        knows(a_id.node_id(), a_local),
    )
    .await;
    connecting.abort();

    // Metrics reflect it once the snapshot behind them refreshed (twice a second): polled, not
    // waited for by a fixed sleep.
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = scrape(rdv.metrics_addr().unwrap()).await;
        if sample(&text, "shipworm_rendezvous_registered_nodes") == Some(2)
            && sample(&text, "shipworm_rendezvous_introductions_forwarded_total") >= Some(1)
        {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never showed the introduction:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert_eq!(
        sample(&text, "shipworm_rendezvous_registered_nodes"),
        Some(2),
        "{text}"
    );
    // Every INTRODUCE is forwarded exactly once (the engine retransmits its handshake through the
    // rendezvous while no path answers, so there may be more than one).
    let forwarded = sample(&text, "shipworm_rendezvous_introductions_forwarded_total");
    assert!(forwarded >= Some(1), "{text}");
    assert_eq!(
        forwarded,
        sample(
            &text,
            "shipworm_rendezvous_packets_total{type=\"introduce\"}"
        ),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "shipworm_rendezvous_packets_total{type=\"register\"}"
        ),
        Some(2),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "shipworm_rendezvous_packets_total{type=\"stun_alt\"}"
        ),
        Some(2),
        "{text}"
    );

    a.close().await;
    b.close().await;
    let last = rdv.shutdown().await;
    assert_eq!(last.registered, 2);
    assert_eq!(
        last.stats.introductions_forwarded,
        last.stats
            .received(shipworm::rendezvous::server::PacketKind::Introduce)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_re_registers_after_the_rendezvous_restarts() {
    // Its own loopback address and a port below the kernel's ephemeral range (32768 and up), so
    // no other test's socket can take the port between the two processes: a wildcard bind to
    // port 0 elsewhere could take an ephemeral one on every address, this one included.
    let config = Config {
        listen: "127.0.0.77:23478".parse().unwrap(),
        alt_listen: None,
        ..Config::default()
    };
    let rdv = Rendezvous::bind(config.clone()).await.unwrap();
    let server = rdv.local_addr();
    // The first REFRESH is due 2 s after registering: the restart below is over well before.
    let n = node(
        "127.0.0.1:0",
        server,
        Identity::from_seed(&[5; 32]),
        Duration::from_secs(2),
    )
    .await;
    assert!(n.registered(Duration::from_secs(5)).await);
    rdv.shutdown().await;
    // A child process another test is spawning right now may briefly hold a copy of the old
    // socket (between fork and exec, before close-on-exec applies): retry for a moment.
    let mut tries = 0;
    let rdv = loop {
        match Rendezvous::bind(Config {
            listen: server,
            ..config.clone()
        })
        .await
        {
            Ok(r) => break r,
            Err(e) if tries < 20 && e.to_string().contains("in use") => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e:#}"),
        }
    };
    // The new process has new token secrets and an empty table: the node's REFRESH is refused
    // and it falls back to a signed REGISTER by itself.
    let deadline = Instant::now() + Duration::from_secs(10);
    while rdv.snapshot().registered != 1 {
        assert!(Instant::now() < deadline, "the node never registered again");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(rdv.snapshot().stats.dropped(DropReason::NotRegistered), 1);
    n.close().await;
    rdv.shutdown().await;
}
