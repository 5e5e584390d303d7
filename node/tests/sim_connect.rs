//! Connecting through NATs in the deterministic simulator.

use std::time::Duration;

use shipworm::engine::NodeEvent;
use shipworm::sim::{NatModel, Sim, SiteConfig};

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
