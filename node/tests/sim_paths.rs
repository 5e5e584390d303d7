//! Path selection in the simulator: one-way paths, failover, NAT rebinding, rendezvous restart.

use std::time::Duration;

use shipworm::engine::paths::PairState;
use shipworm_tests::sim::{Ipv6Access, NatModel, Sim, SiteConfig};

fn home(ipv6: Ipv6Access) -> SiteConfig {
    SiteConfig {
        ipv6,
        ..SiteConfig::nat(Some(NatModel::port_restricted()))
    }
}

fn connect(sim: &mut Sim) {
    sim.connect(0, 1);
    assert!(
        sim.run_until(Duration::from_secs(5), |s| s.connected(0, 1)
            && s.connected(1, 0)),
        "no connection"
    );
}

#[test]
fn a_one_way_ipv6_path_is_never_selected_and_ipv4_carries_the_session() {
    for seed in 1..=3 {
        // The reported failure: A's IPv6 works only outbound; B's IPv6 is open.
        let mut sim = Sim::new(
            seed,
            vec![home(Ipv6Access::InboundBlocked), home(Ipv6Access::Open)],
        );
        connect(&mut sim);
        let never_v6 = sim.run_checking(Duration::from_secs(15), |s| {
            [s.selected(0, 1), s.selected(1, 0)]
                .iter()
                .all(|p| p.is_none_or(|a| a.is_ipv4()))
        });
        assert!(never_v6, "seed {seed}: an IPv6 path was selected");
        assert!(sim.connected(0, 1) && sim.connected(1, 0));
        for (i, j) in [(0, 1), (1, 0)] {
            let paths = sim.nodes[i].engine.paths(&sim.id(j)).unwrap();
            assert!(
                paths.pairs.iter().any(|p| p.remote.is_ipv6()),
                "seed {seed}: the IPv6 pair was tried"
            );
            for p in paths.pairs.iter().filter(|p| p.remote.is_ipv6()) {
                assert_ne!(
                    p.state,
                    PairState::Succeeded,
                    "seed {seed}: one-way pair {} succeeded",
                    p.remote
                );
            }
        }
        // Data flows over IPv4.
        assert!(sim.send_ip(0, 1, b"over ipv4"));
        sim.run_until(sim.elapsed() + Duration::from_millis(200), |_| false);
        assert!(sim.saw(1, |e| matches!(
            e,
            shipworm::engine::NodeEvent::Packet { .. }
        )));
    }
}

#[test]
fn a_session_moves_off_a_path_that_turns_one_way_within_about_a_second() {
    let mut sim = Sim::new(4, vec![home(Ipv6Access::Open), home(Ipv6Access::Open)]);
    connect(&mut sim);
    // Equal RTT: IPv6 is preferred.
    sim.run_until(sim.elapsed() + Duration::from_secs(3), |_| false);
    assert!(
        sim.selected(0, 1).is_some_and(|a| a.is_ipv6()),
        "{:?}",
        sim.selected(0, 1)
    );
    let broke = sim.elapsed();
    sim.set_ipv6(0, Ipv6Access::InboundBlocked);
    let moved = sim.run_until(broke + Duration::from_millis(1600), |s| {
        s.selected(0, 1).is_some_and(|a| a.is_ipv4())
            && s.selected(1, 0).is_some_and(|a| a.is_ipv4())
    });
    assert!(
        moved,
        "still on the one-way path 1.6 s later: {:?} / {:?}",
        sim.selected(0, 1),
        sim.selected(1, 0)
    );
}

#[test]
fn the_session_follows_a_nat_rebinding() {
    let mut sim = Sim::new(5, vec![home(Ipv6Access::None), home(Ipv6Access::None)]);
    connect(&mut sim);
    let before = sim.selected(1, 0).unwrap();
    sim.flush_nat(0);
    // A's NAT forgot every mapping: A's packets leave from a new port, and B's old path is dead.
    let recovered = sim.run_until(sim.elapsed() + Duration::from_secs(5), |s| {
        s.selected(1, 0).is_some_and(|a| a != before) && s.connected(0, 1)
    });
    assert!(
        recovered,
        "B still uses {before}: {:?}",
        sim.nodes[1].engine.paths(&sim.id(0))
    );
    assert!(sim.send_ip(1, 0, b"after rebinding"));
    sim.run_until(sim.elapsed() + Duration::from_millis(300), |_| false);
    assert!(sim.saw(0, |e| matches!(
        e,
        shipworm::engine::NodeEvent::Packet { .. }
    )));
}

#[test]
fn a_rendezvous_restart_keeps_sessions_and_nodes_register_again_by_themselves() {
    let mut sim = Sim::new(6, vec![home(Ipv6Access::None), home(Ipv6Access::None)]);
    connect(&mut sim);
    sim.restart_rendezvous();
    assert_eq!(sim.server.registered(), 0);
    let ok = sim.run_checking(Duration::from_secs(30), |s| {
        s.connected(0, 1) && s.connected(1, 0)
    });
    assert!(ok, "the session dropped while the rendezvous restarted");
    assert_eq!(
        sim.server.registered(),
        2,
        "nodes did not register again within one refresh"
    );
    assert!(sim.send_ip(0, 1, b"still here"));
    sim.run_until(sim.elapsed() + Duration::from_millis(300), |_| false);
    assert!(sim.saw(1, |e| matches!(
        e,
        shipworm::engine::NodeEvent::Packet { .. }
    )));
}
