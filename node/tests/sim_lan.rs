//! Two hosts behind one NAT: they connect over their LAN through host candidates (which
//! candidate hygiene keeps, since they lie in our own subnet), whether or not the NAT hairpins;
//! a hairpinning NAT also carries the pair of their public addresses, one that does not drops it.

use std::net::SocketAddr;
use std::time::Duration;

use shipworm::engine::paths::PairState;
use shipworm::engine::NodeEvent;
use shipworm_tests::sim::{Fate, NatModel, Sim, SiteConfig};

/// Node 0 behind `nat`, node 1 on the same LAN; node 0 connects to node 1.
fn lan(seed: u64, nat: NatModel) -> Sim {
    let mut sim = Sim::new(
        seed,
        vec![SiteConfig::nat(Some(nat)), SiteConfig::behind(0)],
    );
    sim.record_datagrams();
    assert!(
        sim.run_until(Duration::from_secs(3), |s| s.server.registered() == 2),
        "registration"
    );
    sim.connect(0, 1);
    let ok = sim.run_until(sim.elapsed() + Duration::from_secs(5), |s| {
        s.connected(0, 1) && s.connected(1, 0)
    });
    assert!(ok, "{nat:?}: the two hosts of one LAN did not connect");
    // Let every pair have its say.
    sim.run_until(sim.elapsed() + Duration::from_secs(2), |_| false);
    sim
}

/// The state of node `i`'s pair toward `remote`, if it has one.
fn pair_state(sim: &Sim, i: usize, remote: SocketAddr) -> Option<PairState> {
    sim.nodes[i]
        .engine
        .paths(&sim.id(1 - i))?
        .pairs
        .iter()
        .find(|p| p.local == 0 && p.remote == remote)
        .map(|p| p.state)
}

/// Node `i`'s address as the rendezvous observed it.
fn public(sim: &Sim, i: usize) -> SocketAddr {
    sim.nodes[i].engine.registrations()[0]
        .1
        .expect("registered")
}

#[test]
fn two_hosts_behind_a_hairpinning_nat_use_the_lan_and_the_hairpin_works_too() {
    let sim = lan(
        1,
        NatModel {
            hairpinning: true,
            ..NatModel::port_restricted()
        },
    );
    let (a_host, b_host) = (sim.nodes[0].v4, sim.nodes[1].v4);
    // The LAN is faster (1 ms against 3 ms each way through the router): it is chosen.
    assert_eq!(sim.selected(0, 1), Some(b_host));
    assert_eq!(sim.selected(1, 0), Some(a_host));
    // The hairpin carries the pair of public addresses both ways.
    let (a_pub, b_pub) = (public(&sim, 0), public(&sim, 1));
    assert_eq!(pair_state(&sim, 0, b_pub), Some(PairState::Succeeded));
    assert_eq!(pair_state(&sim, 1, a_pub), Some(PairState::Succeeded));
}

#[test]
fn two_hosts_behind_a_nat_that_does_not_hairpin_connect_over_the_lan_alone() {
    let mut sim = lan(1, NatModel::port_restricted());
    let (a_host, b_host) = (sim.nodes[0].v4, sim.nodes[1].v4);
    assert_eq!(sim.selected(0, 1), Some(b_host));
    assert_eq!(sim.selected(1, 0), Some(a_host));
    let (a_pub, b_pub) = (public(&sim, 0), public(&sim, 1));
    assert_ne!(pair_state(&sim, 0, b_pub), Some(PairState::Succeeded));
    assert_ne!(pair_state(&sim, 1, a_pub), Some(PairState::Succeeded));
    // The NAT dropped what was sent to its own public address.
    let dropped = sim
        .datagrams
        .take()
        .expect("recording")
        .iter()
        .filter(|d| d.to == b_pub && d.from.ip() == a_pub.ip() && d.fate == Fate::Filtered)
        .count();
    assert!(dropped > 0, "nothing was sent to the public address?");
    // Data flows on the LAN.
    assert!(sim.send_ip(0, 1, b"over the LAN"));
    sim.run_until(sim.elapsed() + Duration::from_millis(100), |_| false);
    assert!(sim.saw(1, |e| matches!(e, NodeEvent::Packet { .. })));
}

#[test]
fn two_hosts_behind_one_symmetric_nat_connect_over_the_lan() {
    // Both "hard", yet on one LAN: host candidates connect them, no failure is reported.
    let sim = lan(2, NatModel::symmetric());
    assert_eq!(sim.selected(0, 1), Some(sim.nodes[1].v4));
    assert!(!sim.saw(0, |e| matches!(e, NodeEvent::ConnectFailed { .. })));
}

#[test]
fn port_preservation_collides_between_two_hosts_and_the_second_gets_another_port() {
    let sim = lan(
        3,
        NatModel {
            port_preservation: true,
            ..NatModel::port_restricted()
        },
    );
    // Both hosts use port 41641 on the LAN; the NAT preserves it for the first only.
    assert_eq!(sim.nodes[0].v4.port(), sim.nodes[1].v4.port());
    let (a_pub, b_pub) = (public(&sim, 0), public(&sim, 1));
    assert_eq!(a_pub.ip(), b_pub.ip());
    assert_eq!(a_pub.port(), sim.nodes[0].v4.port());
    assert_ne!(b_pub.port(), a_pub.port());
}
