//! Time to the first relayed byte, and from relayed to direct, in the simulator (virtual time),
//! each next to the direct connection of the same run. Run on demand:
//!
//! ```sh
//! cargo bench -p shipworm --bench relay_connect
//! ```
//!
//! The rendezvous has the relay role (`RelayConfig::default()`) in every scenario. The clock
//! starts at `connect()` on A, which knows B only by NodeId, both registered (and their NAT
//! checks done) first. "connected" is
//! A holding a selected two-way path; "first byte" is A's first data packet, sent the moment A is
//! connected, arriving at B. Written up in `docs/performance.md`.

use std::cell::Cell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use shipworm::engine::{is_relay_addr, NodeEvent};
use shipworm::rendezvous::server::{RelayConfig, ServerConfig};
use shipworm_tests::sim::{NatModel, Sim, SiteConfig, RENDEZVOUS_V4, RENDEZVOUS_V6};

const SEEDS: u64 = 20;

#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    /// Port-restricted x port-restricted: punching works (the baseline).
    Direct,
    /// Symmetric x symmetric: both map per destination, relayed at once.
    BothHard,
    /// Port-restricted x port-restricted behind a firewall that drops every datagram between
    /// the sites: relayed after `relay_after` (1 s).
    Blocked,
}

struct Run {
    connected_ms: f64,
    first_byte_ms: f64,
    relayed: bool,
    /// Blocked runs only: from the firewall opening to both sides on a direct path.
    to_direct_ms: Option<f64>,
}

fn relay_server() -> ServerConfig {
    ServerConfig {
        relay: Some(RelayConfig::default()),
        ..Sim::server_config()
    }
}

fn is_server(a: SocketAddr) -> bool {
    a.ip() == RENDEZVOUS_V4.ip() || a.ip() == RENDEZVOUS_V6.ip()
}

fn direct(sim: &Sim, i: usize, j: usize) -> bool {
    sim.selected(i, j).is_some_and(|a| !is_relay_addr(&a))
}

/// One connection; with `open_after`, the firewall of a blocked run opens that long after A is
/// connected (through the relay).
fn run(seed: u64, lat: u64, scenario: Scenario, open_after: Option<Duration>) -> Option<Run> {
    let site = |nat| SiteConfig {
        latency: Duration::from_millis(lat),
        ..SiteConfig::nat(Some(nat))
    };
    let nat = match scenario {
        Scenario::BothHard => NatModel::symmetric(),
        Scenario::Direct | Scenario::Blocked => NatModel::port_restricted(),
    };
    let mut sim = Sim::new(seed * 1000 + lat, vec![site(nat), site(nat)]);
    sim.restart_rendezvous_with(relay_server());
    let blocked = Rc::new(Cell::new(scenario == Scenario::Blocked));
    let flag = blocked.clone();
    sim.lose_matching(u32::MAX, move |src, dst, _| {
        flag.get() && !is_server(src) && !is_server(dst)
    });
    let registered = sim.run_until(Duration::from_secs(10), |s| {
        (0..2).all(|i| s.saw(i, |e| matches!(e, NodeEvent::Registered { .. })))
    });
    if !registered {
        return None;
    }
    // Both nodes' NAT-mapping checks (a STUN round trip after REGISTERED) are done before the
    // clock starts, so no run pays for a fresh handshake with newer flags.
    sim.run_until(sim.elapsed() + Duration::from_secs(1), |_| false);
    let t0 = sim.elapsed();
    sim.connect(0, 1);
    if !sim.run_until(t0 + Duration::from_secs(15), |s| s.connected(0, 1)) {
        return None;
    }
    let connected = sim.elapsed() - t0;
    let relayed = sim.selected(0, 1).is_some_and(|a| is_relay_addr(&a));
    assert!(sim.send_ip(0, 1, b"first"), "the first packet was refused");
    let arrived = |s: &Sim| s.saw(1, |e| matches!(e, NodeEvent::Packet { .. }));
    if !sim.run_until(sim.elapsed() + Duration::from_secs(5), arrived) {
        return None;
    }
    let first_byte = sim
        .when(1, |e| matches!(e, NodeEvent::Packet { .. }))
        .unwrap()
        - t0;
    let to_direct = match open_after {
        Some(after) => {
            sim.run_until(sim.elapsed() + after, |_| false);
            blocked.set(false);
            let opened = sim.elapsed();
            if !sim.run_until(opened + Duration::from_secs(10), |s| {
                direct(s, 0, 1) && direct(s, 1, 0)
            }) {
                return None;
            }
            Some((sim.elapsed() - opened).as_secs_f64() * 1e3)
        }
        None => None,
    };
    Some(Run {
        connected_ms: connected.as_secs_f64() * 1e3,
        first_byte_ms: first_byte.as_secs_f64() * 1e3,
        relayed,
        to_direct_ms: to_direct,
    })
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// p50 p90 max of `v`.
fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    (
        percentile(&mut v, 0.5),
        percentile(&mut v, 0.9),
        percentile(&mut v, 1.0),
    )
}

fn main() {
    println!(
        "relayed and direct connections in the simulator, {SEEDS} seeds per row; ms from connect() on A; \
         relay_after = {:?}",
        shipworm::engine::EngineConfig::default().relay_after
    );
    println!(
        "{:>8} {:<42} {:>5} | {:>8} {:>8} | {:>8} {:>8} {:>8} | {:>9}",
        "site lat",
        "scenario",
        "runs",
        "conn p50",
        "relayed",
        "1st byte",
        "p90",
        "max",
        "vs direct"
    );
    for lat in [5u64, 20, 50] {
        let mut direct_p50 = f64::NAN;
        let rows = [
            (
                "direct: port-restricted x port-restricted",
                Scenario::Direct,
            ),
            ("relayed at once: symmetric x symmetric", Scenario::BothHard),
            (
                "relayed after 1 s: firewall between sites",
                Scenario::Blocked,
            ),
        ];
        for (name, scenario) in rows {
            let runs: Vec<Run> = (1..=SEEDS)
                .filter_map(|seed| run(seed, lat, scenario, None))
                .collect();
            let relayed = runs.iter().filter(|r| r.relayed).count();
            let (c50, _, _) = stats(runs.iter().map(|r| r.connected_ms).collect());
            let (f50, f90, fmax) = stats(runs.iter().map(|r| r.first_byte_ms).collect());
            if scenario == Scenario::Direct {
                direct_p50 = f50;
            }
            println!(
                "{:>6}ms {:<42} {:>5} | {:>8.1} {:>8} | {:>8.1} {:>8.1} {:>8.1} | {:>8.2}x",
                lat,
                name,
                runs.len(),
                c50,
                relayed,
                f50,
                f90,
                fmax,
                f50 / direct_p50
            );
        }
        // Relayed to direct: the firewall opens while the direct pairs are still being checked
        // (their first 5 s), or after they failed (then re-checked every 2 s).
        for (name, after) in [
            (
                "relayed -> direct, firewall opens 0.5 s after",
                Duration::from_millis(500),
            ),
            (
                "relayed -> direct, firewall opens 8 s after",
                Duration::from_secs(8),
            ),
        ] {
            let runs: Vec<Run> = (1..=SEEDS)
                .filter_map(|seed| run(seed, lat, Scenario::Blocked, Some(after)))
                .collect();
            let (d50, d90, dmax) = stats(runs.iter().filter_map(|r| r.to_direct_ms).collect());
            println!(
                "{:>6}ms {:<42} {:>5} | {:>8} {:>8} | {:>8.1} {:>8.1} {:>8.1} | {:>8.2}x   (ms from the opening to both sides direct)",
                lat,
                name,
                runs.len(),
                "",
                "",
                d50,
                d90,
                dmax,
                d50 / direct_p50
            );
        }
    }
}
