//! The relay as one more path, in the simulator (issue 12): pairs no punching can join connect
//! through a rendezvous with the relay role; a relayed session moves to a direct pair the moment
//! one is proven, and back to the relay when the direct path dies, without losing packets;
//! without the relay (on the server or refused by the node) today's clear error stays.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use shipworm::engine::{is_relay_addr, ConnectError, EngineConfig, NodeEvent};
use shipworm::rendezvous::server::{RelayConfig, ServerConfig};
use shipworm_tests::sim::{NatModel, Sim, SiteConfig, RENDEZVOUS_V4, RENDEZVOUS_V6};

fn site(model: NatModel) -> SiteConfig {
    SiteConfig::nat(Some(model))
}

fn relay_server() -> ServerConfig {
    ServerConfig {
        relay: Some(RelayConfig::default()),
        ..Sim::server_config()
    }
}

fn packets(sim: &Sim, i: usize) -> usize {
    sim.nodes[i]
        .events
        .iter()
        .filter(|(_, e)| matches!(e, NodeEvent::Packet { .. }))
        .count()
}

#[test]
fn symmetric_pairs_connect_through_the_relay_and_carry_data() {
    for seed in 1..=5 {
        let mut sim = Sim::new(
            seed,
            vec![site(NatModel::symmetric()), site(NatModel::symmetric())],
        );
        sim.restart_rendezvous_with(relay_server());
        sim.connect(0, 1);
        let ok = sim.run_until(Duration::from_secs(8), |s| {
            s.connected(0, 1) && s.connected(1, 0)
        });
        assert!(ok, "seed {seed}: not connected through the relay");
        for (i, j) in [(0, 1), (1, 0)] {
            let path = sim.selected(i, j).expect("a selected path");
            assert!(is_relay_addr(&path), "seed {seed}: {path} is not relayed");
            let d = sim.nodes[i].engine.diagnostics();
            let pair = d.peers[0].pairs.iter().find(|p| p.selected).unwrap();
            assert_eq!(pair.relay, Some(RENDEZVOUS_V4), "seed {seed}");
        }
        // Both NATs map per destination: the relay is used at once, not after a timeout.
        let t = sim
            .when(0, |e| matches!(e, NodeEvent::Connected { .. }))
            .unwrap();
        assert!(t < Duration::from_millis(500), "seed {seed}: took {t:?}");
        assert!(!sim.saw(0, |e| matches!(e, NodeEvent::ConnectFailed { .. })));
        for n in 0..20 {
            assert!(sim.send_ip(0, 1, format!("relayed {n}").as_bytes()));
            assert!(sim.send_ip(1, 0, format!("back {n}").as_bytes()));
        }
        sim.run_until(sim.elapsed() + Duration::from_millis(300), |_| false);
        assert_eq!(
            (packets(&sim, 1), packets(&sim, 0)),
            (20, 20),
            "seed {seed}"
        );
        assert!(sim.server.stats().relayed_packets >= 40);
        // Punching went on (the birthday run of a hard pair), without success.
        assert!(sim.nodes[0].engine.connected_peers().contains(&sim.id(1)));
    }
}

#[test]
fn without_a_relay_the_clear_error_stays() {
    // A server without the role, and a node that refuses relays at a server with it.
    for (server, relay) in [(Sim::server_config(), true), (relay_server(), false)] {
        let template = EngineConfig {
            relay,
            ..EngineConfig::default()
        };
        let mut sim = Sim::with_config(
            3,
            vec![site(NatModel::symmetric()), site(NatModel::symmetric())],
            template,
        );
        sim.restart_rendezvous_with(server);
        sim.connect(0, 1);
        sim.run_until(Duration::from_secs(12), |s| {
            s.saw(0, |e| matches!(e, NodeEvent::ConnectFailed { .. }))
        });
        let failed = sim.nodes[0].events.iter().find_map(|(_, e)| match e {
            NodeEvent::ConnectFailed { error, .. } => Some(error.clone()),
            _ => None,
        });
        assert_eq!(failed, Some(ConnectError::NoDirectPathPossible));
        assert_eq!(sim.server.stats().relayed_packets, 0);
    }
}

/// Loses every datagram between the two sites (not the rendezvous' own) while `on` is set.
fn block_direct(sim: &mut Sim) -> Rc<Cell<bool>> {
    let on = Rc::new(Cell::new(true));
    let flag = on.clone();
    let server =
        |a: std::net::SocketAddr| a.ip() == RENDEZVOUS_V4.ip() || a.ip() == RENDEZVOUS_V6.ip();
    sim.lose_matching(u32::MAX, move |src, dst, _| {
        flag.get() && !server(src) && !server(dst)
    });
    on
}

#[test]
fn a_relayed_session_moves_to_direct_when_it_works_and_back_when_it_dies() {
    let mut sim = Sim::new(
        11,
        vec![
            site(NatModel::port_restricted()),
            site(NatModel::port_restricted()),
        ],
    );
    sim.restart_rendezvous_with(relay_server());
    // Direct paths do not work at first (a firewall): after relay_after the relay carries it.
    let blocked = block_direct(&mut sim);
    sim.connect(0, 1);
    let ok = sim.run_until(Duration::from_secs(5), |s| {
        s.connected(0, 1) && s.connected(1, 0)
    });
    assert!(ok, "not connected through the relay");
    let t = sim
        .when(0, |e| matches!(e, NodeEvent::Connected { .. }))
        .unwrap();
    assert!(
        t >= EngineConfig::default().relay_after,
        "relayed before punching had its chance: {t:?}"
    );
    assert!(sim.selected(0, 1).is_some_and(|a| is_relay_addr(&a)));
    // A steady stream of packets across both moves: none may be lost.
    let mut sent = 0;
    let stream = |sim: &mut Sim, sent: &mut usize, d: Duration| {
        let until = sim.elapsed() + d;
        while sim.elapsed() < until {
            assert!(sim.send_ip(0, 1, format!("packet {sent}").as_bytes()));
            *sent += 1;
            let next = sim.elapsed() + Duration::from_millis(20);
            sim.run_until(next, |_| false);
        }
    };
    stream(&mut sim, &mut sent, Duration::from_millis(500));
    // The firewall opens: the direct pairs are re-checked and take over.
    blocked.set(false);
    let opened = sim.elapsed();
    stream(&mut sim, &mut sent, Duration::from_secs(5));
    let direct = sim.selected(0, 1).expect("a path");
    assert!(
        !is_relay_addr(&direct),
        "still relayed {:?} after the firewall opened",
        sim.elapsed() - opened
    );
    assert!(sim.selected(1, 0).is_some_and(|a| !is_relay_addr(&a)));
    sim.run_until(sim.elapsed() + Duration::from_millis(300), |_| false);
    assert_eq!(
        packets(&sim, 1),
        sent,
        "moving to the direct path lost packets"
    );
    // The direct path dies: back on the relay within a few seconds.
    blocked.set(true);
    stream(&mut sim, &mut sent, Duration::from_secs(4));
    assert!(
        sim.selected(0, 1).is_some_and(|a| is_relay_addr(&a)),
        "{:?}",
        sim.selected(0, 1)
    );
    sim.run_until(sim.elapsed() + Duration::from_millis(300), |_| false);
    let got = packets(&sim, 1);
    eprintln!("{got} of {sent} packets arrived across relay -> direct -> relay");
    // Moving to direct loses nothing; the failure of the direct path loses what was in flight on
    // it until the failure detector (1 s) moved the session.
    assert!(got + 60 >= sent, "{got} of {sent}");
}

#[test]
fn a_relay_restart_costs_a_relayed_session_less_than_its_failure_detector() {
    let mut sim = Sim::new(
        21,
        vec![site(NatModel::symmetric()), site(NatModel::symmetric())],
    );
    sim.restart_rendezvous_with(relay_server());
    sim.connect(0, 1);
    assert!(sim.run_until(Duration::from_secs(8), |s| {
        s.connected(0, 1) && s.connected(1, 0)
    }));
    sim.run_until(sim.elapsed() + Duration::from_secs(3), |_| false);
    // The relay restarts: it forgets both registrations. The next RELAY is refused as "not
    // registered", and the nodes register again at once instead of at their next refresh.
    sim.restart_rendezvous();
    let restarted = sim.elapsed();
    let before = packets(&sim, 1);
    while sim.elapsed() < restarted + Duration::from_secs(40) && packets(&sim, 1) == before {
        assert!(sim.send_ip(0, 1, b"after the restart"));
        let next = sim.elapsed() + Duration::from_millis(100);
        sim.run_until(next, |_| false);
    }
    let took = sim.elapsed() - restarted;
    eprintln!("relayed again {took:?} after the relay restarted");
    assert!(
        packets(&sim, 1) > before,
        "nothing got through the relay after its restart"
    );
    // Before the path's failure detector (1 s) would make the nodes introduce themselves again.
    assert!(
        took < EngineConfig::default().paths.path_timeout,
        "the relayed session came back only after {took:?}"
    );
}
