//! Connect time across the simulator's NAT matrix, in one-way delays, against the ideal.
//!
//! ```sh
//! cargo bench -p shipworm --bench connect
//! ```
//!
//! The ideal: the earliest moment the initiator can *know* a direct path works both ways when it
//! knows the peer only by NodeId: learn the peer's address from the rendezvous (initiator →
//! rendezvous → initiator), then one direct round trip. Written up in `docs/performance.md`.

use std::time::Duration;

use shipworm::engine::NodeEvent;
use shipworm::sim::{Filtering, Mapping, NatModel, Sim, SiteConfig};

fn kinds() -> Vec<(&'static str, Option<NatModel>)> {
    vec![
        ("public", None),
        ("full-cone", Some(NatModel::full_cone())),
        ("restricted", Some(NatModel::restricted())),
        ("port-restricted", Some(NatModel::port_restricted())),
        ("symmetric", Some(NatModel::symmetric())),
    ]
}

fn allowed(a: &Option<NatModel>, b: &Option<NatModel>) -> bool {
    let hard = |n: &Option<NatModel>| n.is_some_and(|m| m.mapping == Mapping::PerDestination);
    let pf = |n: &Option<NatModel>| n.is_some_and(|m| m.filtering == Filtering::AddressAndPort);
    !((hard(a) && pf(b)) || (hard(b) && pf(a)))
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    const CORE_MS: u64 = 5; // the simulator's core latency
    println!("connect time from connect() to a selected two-way path, initiator side, in one-way delays (OWD)");
    println!(
        "{:>8} {:>5} {:>6} | {:>8} {:>8} {:>8} | {:>10} {:>10} | {:>9}",
        "site lat",
        "loss",
        "runs",
        "est p50",
        "conn p50",
        "conn p90",
        "ideal",
        "excess p50",
        "failures"
    );
    for loss in [0u64, 5] {
        for lat in [5u64, 20, 50] {
            let (mut est, mut conn, mut excess) = (Vec::new(), Vec::new(), Vec::new());
            let mut failures = 0;
            let mut ideal_owd = 0.0;
            for (_, a) in kinds() {
                for (_, b) in kinds() {
                    if !allowed(&a, &b) {
                        continue;
                    }
                    for seed in 1..=8u64 {
                        let site = |nat| SiteConfig {
                            latency: Duration::from_millis(lat),
                            loss,
                            ..SiteConfig::nat(nat)
                        };
                        let mut sim = Sim::new(seed * 1000 + lat + loss, vec![site(a), site(b)]);
                        let registered = sim.run_until(Duration::from_secs(10), |s| {
                            (0..2).all(|i| s.saw(i, |e| matches!(e, NodeEvent::Registered { .. })))
                        });
                        if !registered {
                            failures += 1;
                            continue;
                        }
                        let t0 = sim.elapsed();
                        sim.connect(0, 1);
                        if !sim.run_until(t0 + Duration::from_secs(10), |s| s.connected(0, 1)) {
                            failures += 1;
                            continue;
                        }
                        let owd = sim.one_way(0, 1).as_secs_f64();
                        let to_rdv = (lat + CORE_MS) as f64 / 1000.0;
                        let ideal = 2.0 * to_rdv + 2.0 * owd;
                        ideal_owd = ideal / owd;
                        let e = sim
                            .when(0, |e| matches!(e, NodeEvent::Established { .. }))
                            .unwrap()
                            - t0;
                        let c = sim
                            .when(0, |e| matches!(e, NodeEvent::Connected { .. }))
                            .unwrap()
                            - t0;
                        est.push(e.as_secs_f64() / owd);
                        conn.push(c.as_secs_f64() / owd);
                        excess.push((c.as_secs_f64() - ideal) / (2.0 * owd));
                    }
                }
            }
            let runs = conn.len();
            println!(
                "{:>6}ms {:>4}% {:>6} | {:>8.2} {:>8.2} {:>8.2} | {:>6.2} OWD {:>6.2} RTT | {:>9}",
                lat,
                loss,
                runs,
                percentile(&mut est, 0.5),
                percentile(&mut conn, 0.5),
                percentile(&mut conn, 0.9),
                ideal_owd,
                percentile(&mut excess, 0.5),
                failures
            );
        }
    }
}
