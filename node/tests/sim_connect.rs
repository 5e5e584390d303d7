//! Connecting through NATs in the deterministic simulator.

use std::time::Duration;

use shipworm::engine::NodeEvent;
use shipworm::rendezvous::server::DropReason;
use shipworm_tests::sim::{NatModel, Sim, SiteConfig};

#[test]
fn two_home_routers_connect_directly_through_an_introduction() {
    let mut sim = Sim::new(
        1,
        vec![
            SiteConfig::nat(Some(NatModel::port_restricted())),
            SiteConfig::nat(Some(NatModel::port_restricted())),
        ],
    );
    // Both register first.
    assert!(
        sim.run_until(Duration::from_secs(2), |s| s.server.registered() == 2),
        "registration"
    );
    sim.connect(0, 1);
    let ok = sim.run_until(Duration::from_secs(12), |s| {
        s.connected(0, 1) && s.connected(1, 0)
    });
    for (i, n) in sim.nodes.iter().enumerate() {
        eprintln!("node {i}: {:?}", n.events);
        eprintln!("paths {:?}", n.engine.paths(&sim.id(1 - i)));
        eprintln!("tunnel {:?}", n.engine.tunnel_stats());
    }
    assert!(ok, "no connection");
    assert!(sim.saw(0, |e| matches!(e, NodeEvent::Connected { .. })));
}

#[test]
fn diagnostics_show_candidates_and_pairs_with_counters() {
    use shipworm::engine::paths::{CandidateKind, PairState};
    let mut sim = Sim::new(
        2,
        vec![
            SiteConfig::nat(Some(NatModel::port_restricted())),
            SiteConfig::nat(Some(NatModel::full_cone())),
        ],
    );
    sim.connect(0, 1);
    assert!(sim.run_until(Duration::from_secs(5), |s| s.connected(0, 1)
        && s.connected(1, 0)));
    sim.run_until(sim.elapsed() + Duration::from_secs(2), |_| false);
    let (a, b) = (
        sim.nodes[0].engine.diagnostics(),
        sim.nodes[1].engine.diagnostics(),
    );
    assert_eq!(a.maps_per_destination, Some(false));
    assert!(a.candidates.iter().any(|c| c.kind == CandidateKind::Host));
    assert!(a
        .candidates
        .iter()
        .any(|c| c.kind == CandidateKind::Reflexive && c.addr.ip().to_string() == "203.0.113.10"));
    assert_eq!(
        a.registrations[0].1.map(|o| o.ip().to_string()),
        Some("203.0.113.10".into())
    );
    let pa = &a.peers[0];
    assert_eq!(pa.peer, sim.id(1));
    let sel: Vec<_> = pa.pairs.iter().filter(|p| p.selected).collect();
    assert_eq!(sel.len(), 1);
    let s = sel[0];
    assert_eq!(s.state, PairState::Succeeded);
    assert!(s.rtt.is_some() && s.answers_received > 0 && s.probes_sent >= s.answers_received);
    assert!(
        s.probes_received > 0 && s.answers_sent > 0 && s.bytes_sent > 0 && s.bytes_received > 0
    );
    // The other side's view of the same path mirrors ours: its probes received are our probes sent,
    // give or take what is still in flight.
    let sb = b.peers[0].pairs.iter().find(|p| p.selected).unwrap();
    assert!(sb.probes_received + 2 >= s.probes_sent && sb.probes_received <= s.probes_sent);
    // Host addresses a peer advertised behind another NAT never work, and may name any host
    // near us: a private address outside our own subnets never becomes a pair (issue 10).
    assert!(pa
        .pairs
        .iter()
        .all(|p| p.remote.ip() != sim.nodes[1].v4.ip()));
    // The JSON form (`status --json`, `docs/operations.md`) names the selected pair's state
    // `selected`, gives RTTs in milliseconds, and starts each pair with its remote address
    // (the lab's `selected_remote` reads it so).
    let json = a.to_json();
    let expected = format!("{{\"remote\":\"{}\",", s.remote);
    assert!(json.contains(&expected), "{json}");
    assert!(json.contains("\"state\":\"selected\",\"selected\":true,\"rtt_ms\":"));
    assert!(json.contains("\"maps_per_destination\":false") && json.contains("\"kind\":\"host\""));
    assert!(json.contains(&format!("\"node\":\"{}\"", sim.id(0))));
}

#[test]
fn a_late_candidate_trickles_to_peers_in_session() {
    use shipworm::engine::paths::CandidateKind;
    let mut sim = Sim::new(
        3,
        vec![
            SiteConfig::nat(Some(NatModel::port_restricted())),
            SiteConfig::nat(Some(NatModel::port_restricted())),
        ],
    );
    sim.connect(0, 1);
    assert!(sim.run_until(Duration::from_secs(5), |s| s.connected(0, 1)
        && s.connected(1, 0)));
    // A gateway port mapping that took seconds to appear (UPnP is slow).
    let late: std::net::SocketAddr = "203.0.113.10:50000".parse().unwrap();
    sim.nodes[0]
        .engine
        .add_local_candidate(late, CandidateKind::Mapped);
    let a = sim.id(0);
    let heard = sim.run_until(sim.elapsed() + Duration::from_millis(500), |s| {
        s.nodes[1]
            .engine
            .paths(&a)
            .is_some_and(|p| p.pairs.iter().any(|x| x.remote == late))
    });
    assert!(heard, "B never heard of A's late candidate");
}

#[test]
fn an_introduction_from_a_node_not_allowed_is_refused_without_revealing_candidates() {
    use shipworm::engine::EngineConfig;
    use shipworm::tunnel::tunnel::{Accept, TunnelConfig};
    // Both nodes accept nobody: B must not answer A's introduction at all.
    let config = EngineConfig {
        tunnel: TunnelConfig {
            accept: Accept::Only(Default::default()),
            ..TunnelConfig::default()
        },
        ..EngineConfig::default()
    };
    let mut sim = Sim::with_config(
        4,
        vec![SiteConfig::nat(None), SiteConfig::nat(None)],
        config,
    );
    sim.connect(0, 1);
    let failed = sim.run_until(Duration::from_secs(11), |s| {
        s.saw(0, |e| matches!(e, NodeEvent::ConnectFailed { .. }))
    });
    assert!(failed, "A got no answer, and says so");
    assert!(
        sim.nodes[1].engine.tunnel_stats().not_allowed >= 1,
        "B refused the introduction"
    );
    assert_eq!(
        sim.nodes[0].engine.tunnel_stats().handshakes_completed,
        0,
        "B never answered"
    );
    let b = sim.id(1);
    // Only what the rendezvous said (B's observed address); none of B's own candidates.
    let paths = sim.nodes[0].engine.paths(&b);
    assert!(
        paths.is_none_or(|p| p
            .pairs
            .iter()
            .all(|x| x.kind != shipworm::engine::paths::CandidateKind::Advertised)),
        "A learned B's candidates: {paths:?}"
    );
}

/// `Registered` means introductions reach us: a peer that connects the moment both nodes say so
/// is introduced on the first try (the server forwards only to an address that proved it
/// receives; announcing before that proof made the first INTRODUCE bounce and the retry cost a
/// quarter of a second).
#[test]
fn a_connect_right_after_registered_is_introduced_on_the_first_try() {
    let mut sim = Sim::new(
        1005,
        vec![
            SiteConfig::nat(Some(NatModel::port_restricted())),
            SiteConfig::nat(Some(NatModel::port_restricted())),
        ],
    );
    assert!(sim.run_until(Duration::from_secs(5), |s| {
        (0..2).all(|i| s.saw(i, |e| matches!(e, NodeEvent::Registered { .. })))
    }));
    let t0 = sim.elapsed();
    sim.connect(0, 1);
    assert!(sim.run_until(t0 + Duration::from_secs(5), |s| s.connected(0, 1)));
    let owd = sim.one_way(0, 1);
    let took = sim
        .when(0, |e| matches!(e, NodeEvent::Connected { .. }))
        .unwrap()
        - t0;
    // Ideal: A -> rendezvous -> A (introduction), then a direct round trip; the probe the
    // responder starts adds half a round trip. Within 6 one-way delays, far under a retry.
    assert!(
        took <= owd * 6,
        "connected {took:?} after Registered, one-way delay {owd:?}: {:?}",
        sim.nodes[0].events
    );
    let stats = sim.server.stats();
    assert_eq!(stats.dropped(DropReason::TargetUnconfirmed), 0, "{stats:?}");
    assert_eq!(stats.dropped(DropReason::UnknownPeer), 0, "{stats:?}");
}
