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
use shipworm_tests::sim::{Filtering, Mapping, NatModel, Sim, SiteConfig};

fn kinds() -> Vec<(&'static str, Option<NatModel>)> {
    vec![
        ("public", None),
        ("full-cone", Some(NatModel::full_cone())),
        ("restricted", Some(NatModel::restricted())),
        ("port-restricted", Some(NatModel::port_restricted())),
        ("symmetric", Some(NatModel::symmetric())),
    ]
}

fn hard(n: &Option<NatModel>) -> bool {
    n.is_some_and(|m| m.mapping == Mapping::PerDestination)
}

/// Pairs plain hole punching connects (birthday probing is measured apart).
fn allowed(a: &Option<NatModel>, b: &Option<NatModel>) -> bool {
    let pf = |n: &Option<NatModel>| n.is_some_and(|m| m.filtering == Filtering::AddressAndPort);
    !((hard(a) && pf(b)) || (hard(b) && pf(a)) || (hard(a) && hard(b)))
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

    // Birthday probing: symmetric x port-restricted, both orders, no port mappings.
    let budget = shipworm::engine::birthday::BirthdayConfig::default();
    println!(
        "\nbirthday probing (hard: symmetric, easy: port-restricted): {} sockets x {} probes at {}/s; predicted miss {:.2e}",
        budget.sockets,
        budget.probes,
        budget.rate,
        shipworm::engine::birthday::miss_probability(budget.sockets, budget.probes)
    );
    println!(
        "{:>8} {:>6} | {:>9} | {:>8} {:>8} {:>8} | {:>14} {:>14}",
        "site lat", "runs", "success", "p50", "p90", "max", "hard probes", "easy probes"
    );
    for lat in [5u64, 20, 50] {
        let (mut times, mut ok) = (Vec::new(), 0);
        let runs = 100u64;
        let (mut hard_sent, mut easy_sent) = (0u64, 0u64);
        for seed in 0..runs {
            let site = |nat| SiteConfig {
                latency: Duration::from_millis(lat),
                ..SiteConfig::nat(nat)
            };
            let (h, e) = (
                Some(NatModel::symmetric()),
                Some(NatModel::port_restricted()),
            );
            let sites = if seed % 2 == 0 {
                vec![site(h), site(e)]
            } else {
                vec![site(e), site(h)]
            };
            let mut sim = Sim::new(seed * 7919 + lat, sites);
            sim.run_until(Duration::from_secs(10), |s| {
                (0..2).all(|i| s.saw(i, |e| matches!(e, NodeEvent::Registered { .. })))
            });
            let t0 = sim.elapsed();
            sim.connect(0, 1);
            if sim.run_until(t0 + Duration::from_secs(10), |s| {
                s.connected(0, 1) && s.connected(1, 0)
            }) {
                ok += 1;
                times.push(
                    (sim.when(0, |e| matches!(e, NodeEvent::Connected { .. }))
                        .unwrap()
                        - t0)
                        .as_secs_f64()
                        * 1e3,
                );
            }
            let (hi, ei) = if seed % 2 == 0 { (0, 1) } else { (1, 0) };
            hard_sent += sim.nodes[hi].engine.probes_sent_total();
            easy_sent += sim.nodes[ei].engine.probes_sent_total();
        }
        println!(
            "{:>6}ms {:>6} | {:>8.1}% | {:>6.0}ms {:>6.0}ms {:>6.0}ms | {:>14.0} {:>14.0}",
            lat,
            runs,
            100.0 * ok as f64 / runs as f64,
            percentile(&mut times, 0.5),
            percentile(&mut times, 0.9),
            percentile(&mut times, 1.0),
            hard_sent as f64 / runs as f64,
            easy_sent as f64 / runs as f64
        );
    }
}
