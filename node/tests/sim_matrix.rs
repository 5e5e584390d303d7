//! The NAT matrix in the deterministic simulator: every pair of NAT kinds connects directly
//! wherever theory allows, within a bound per class of pair (in round trips of the scenario,
//! virtual time), and fails with a clear error within 10 s where it does not; and it still does
//! on rough links (loss, jitter, reordering, duplication).

use std::time::Duration;

use shipworm::engine::{ConnectError, NodeEvent};
use shipworm_tests::sim::{Fate, Filtering, Mapping, NatModel, PortAllocation, Sim, SiteConfig};

fn kinds() -> Vec<(&'static str, Option<NatModel>)> {
    vec![
        ("public", None),
        ("full-cone", Some(NatModel::full_cone())),
        ("restricted", Some(NatModel::restricted())),
        ("port-restricted", Some(NatModel::port_restricted())),
        ("symmetric", Some(NatModel::symmetric())),
        (
            "symmetric-pp",
            Some(NatModel {
                port_preservation: true,
                ..NatModel::symmetric()
            }),
        ),
        ("symmetric-seq", Some(NatModel::symmetric_sequential())),
    ]
}

/// What makes a pair connect, for its connect-time bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Class {
    /// Neither side maps per destination: plain hole punching.
    Direct,
    /// One side maps per destination, the other lets its packets in (open or address
    /// filtering): punching toward the peer-reflexive address.
    HardToOpen,
    /// One side maps per destination against a port-filtering NAT: birthday probing, with the
    /// hard side's ports predicted (a sequential allocator).
    BirthdayPredicted,
    /// The same with a random allocator: birthday probing at random.
    Birthday,
}

fn class(a: &Option<NatModel>, b: &Option<NatModel>) -> Class {
    let sequential = |n: &Option<NatModel>| {
        n.is_some_and(|m| matches!(m.allocation, PortAllocation::Sequential { .. }))
    };
    if !is_hard(a) && !is_hard(b) {
        Class::Direct
    } else if !needs_birthday(a, b) {
        Class::HardToOpen
    } else if sequential(a) || sequential(b) {
        Class::BirthdayPredicted
    } else {
        Class::Birthday
    }
}

/// The bound on a class's connect time from `connect` (both nodes registered and measured),
/// in round trips between the two sites (50 ms here). Measured on this matrix: direct 2.1 RTT,
/// hard to open 2.2, predicted birthday 4.2, random birthday up to 18.5 (at 1000 probes a
/// second the easy side needs about 250 probes on average to hit one of 256 mappings; its
/// bound is the 2048-probe budget, past which a run fails rather than connects late). The
/// bounds leave a little room; a change that slows a class fails here.
fn bound_rtts(c: Class) -> u32 {
    match c {
        Class::Direct | Class::HardToOpen => 3,
        Class::BirthdayPredicted => 6,
        Class::Birthday => 60,
    }
}

fn is_hard(n: &Option<NatModel>) -> bool {
    n.is_some_and(|m| m.mapping == Mapping::PerDestination)
}

fn filters_port(n: &Option<NatModel>) -> bool {
    n.is_some_and(|m| m.filtering == Filtering::AddressAndPort)
}

/// Direct connectivity theory with birthday probing: only two per-destination mappings (and no
/// port mapping on either side) defeat a direct path. (Without birthday probing, a hard NAT on
/// one side would also defeat a port-filtering NAT on the other: [`needs_birthday`].)
fn theory_allows(a: &Option<NatModel>, b: &Option<NatModel>) -> bool {
    !(is_hard(a) && is_hard(b))
}

fn needs_birthday(a: &Option<NatModel>, b: &Option<NatModel>) -> bool {
    (is_hard(a) && filters_port(b)) || (is_hard(b) && filters_port(a))
}

/// A rough access link: 3 % loss, up to 20 ms of jitter, 2 % reordered, 2 % duplicated.
fn rough(nat: Option<NatModel>) -> SiteConfig {
    SiteConfig {
        reorder: 2,
        ..SiteConfig::nat(nat).rough(3, Duration::from_millis(20), 2)
    }
}

pub fn run_pair(seed: u64, a: Option<NatModel>, b: Option<NatModel>) -> (Sim, bool) {
    run_sites(seed, SiteConfig::nat(a), SiteConfig::nat(b), false).0
}

/// Connects node 0 to node 1, at once (`warm` false: registration and the NAT check happen
/// meanwhile) or once both nodes registered and measured their NATs, as nodes that have been
/// up for a while. Returns the simulation, whether they connected, and when `connect` was
/// called.
fn run_sites(seed: u64, a: SiteConfig, b: SiteConfig, warm: bool) -> ((Sim, bool), Duration) {
    let mut sim = Sim::new(seed, vec![a, b]);
    sim.record_datagrams();
    if warm {
        assert!(
            sim.run_until(Duration::from_secs(5), |s| s.server.registered() == 2
                && (0..2).all(|i| s.nodes[i].engine.maps_per_destination().is_some())),
            "seed {seed}: registration and NAT check"
        );
    }
    let t0 = sim.elapsed();
    sim.connect(0, 1);
    let ok = sim.run_until(t0 + Duration::from_secs(11), |s| {
        (s.connected(0, 1) && s.connected(1, 0))
            || s.saw(0, |e| matches!(e, NodeEvent::ConnectFailed { .. }))
    });
    let connected = ok && sim.connected(0, 1) && sim.connected(1, 0);
    ((sim, connected), t0)
}

#[test]
fn every_pair_of_nat_kinds_connects_directly_where_theory_allows() {
    let mut report = Vec::new();
    let mut wrong = Vec::new();
    for (an, a) in kinds() {
        for (bn, b) in kinds() {
            for seed in 1..=3 {
                let (sim, connected) = run_pair(seed, a, b);
                let expect = theory_allows(&a, &b);
                let opened =
                    (0..2).any(|i| sim.saw(i, |e| matches!(e, NodeEvent::OpenSockets { .. })));
                // Birthday probing must run where only it can succeed, and never where neither
                // side maps per destination (where one does but the other side's filter would
                // let plain punching through, the engine cannot know the filter: either is fine).
                if connected && needs_birthday(&a, &b) {
                    assert!(opened, "{an} x {bn}: connected without birthday probing?");
                }
                if !is_hard(&a) && !is_hard(&b) {
                    assert!(
                        !opened,
                        "{an} x {bn}: birthday probing between two easy NATs"
                    );
                }
                let t = sim.when(0, |e| matches!(e, NodeEvent::Connected { .. }));
                let c = class(&a, &b);
                let rtt = sim.one_way(0, 1) * 2;
                report.push(format!(
                    "{an:>16} x {bn:<16} seed {seed}: {} {t:?} {c:?} {:.1} RTT",
                    if connected { "direct" } else { "failed" },
                    t.map_or(0.0, |t| t.as_secs_f64() / rtt.as_secs_f64())
                ));
                if connected != expect {
                    wrong.push(format!(
                        "{an} x {bn} seed {seed}: connected={connected}, theory={expect}"
                    ));
                }
                if !expect {
                    let both_hard = is_hard(&a) && is_hard(&b);
                    let failed = sim.nodes[0].events.iter().find_map(|(t, e)| match e {
                        NodeEvent::ConnectFailed { error, .. } => Some((*t, error.clone())),
                        _ => None,
                    });
                    let (t, error) =
                        failed.unwrap_or_else(|| panic!("{an} x {bn}: no failure reported"));
                    assert!(
                        t <= Duration::from_secs(10),
                        "{an} x {bn}: failure reported only after {t:?}"
                    );
                    if both_hard {
                        assert_eq!(error, ConnectError::NoDirectPathPossible, "{an} x {bn}");
                        assert!(error.to_string().starts_with(
                            "no direct path possible: both sides map per destination"
                        ));
                    }
                }
            }
        }
    }
    eprintln!("{}", report.join("\n"));
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Connect time per class of pair, in round trips between the two sites (virtual time), for
/// nodes that registered and measured their NATs before `connect` (the common case): each
/// class stays within its bound ([`bound_rtts`]) in every seed.
#[test]
fn connect_time_per_class_of_pair_stays_within_its_bound() {
    let mut wrong = Vec::new();
    let mut worst: std::collections::BTreeMap<Class, f64> = Default::default();
    for (an, a) in kinds() {
        for (bn, b) in kinds() {
            if !theory_allows(&a, &b) {
                continue;
            }
            for seed in 1..=3 {
                let ((sim, connected), t0) =
                    run_sites(seed, SiteConfig::nat(a), SiteConfig::nat(b), true);
                let c = class(&a, &b);
                let rtt = sim.one_way(0, 1) * 2;
                let Some(t) = sim
                    .when(0, |e| matches!(e, NodeEvent::Connected { .. }))
                    .filter(|_| connected)
                    .map(|t| t - t0)
                else {
                    wrong.push(format!("{an} x {bn} seed {seed}: did not connect"));
                    continue;
                };
                let rtts = t.as_secs_f64() / rtt.as_secs_f64();
                let w = worst.entry(c).or_default();
                *w = w.max(rtts);
                if t > rtt * bound_rtts(c) {
                    wrong.push(format!(
                        "{an} x {bn} seed {seed}: {c:?} connected in {t:?} = {rtts:.1} RTT, \
                         over its bound of {} RTT",
                        bound_rtts(c)
                    ));
                }
            }
        }
    }
    eprintln!("worst connect time per class, in RTT: {worst:?}");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The matrix on rough access links at both sites (3 % loss, jitter up to 20 ms, 2 % reordered,
/// 2 % duplicated, all drawn from the seed): every pair theory allows still connects, and the
/// others still fail with the error that says why.
#[test]
fn the_matrix_on_rough_links_connects_every_pair_theory_allows() {
    let mut wrong = Vec::new();
    let mut times = Vec::new();
    let (mut lost, mut duplicated) = (0, 0);
    for (an, a) in kinds() {
        for (bn, b) in kinds() {
            for seed in 1..=3 {
                let ((sim, connected), _) = run_sites(seed, rough(a), rough(b), false);
                let expect = theory_allows(&a, &b);
                if connected != expect {
                    wrong.push(format!(
                        "{an} x {bn} seed {seed}: connected={connected}, theory={expect}"
                    ));
                }
                if connected {
                    let t = sim.when(0, |e| matches!(e, NodeEvent::Connected { .. }));
                    times.push((class(&a, &b), t.expect("connected")));
                } else if !expect {
                    let failed = sim.nodes[0].events.iter().find_map(|(_, e)| match e {
                        NodeEvent::ConnectFailed { error, .. } => Some(error.clone()),
                        _ => None,
                    });
                    if failed != Some(ConnectError::NoDirectPathPossible) {
                        wrong.push(format!("{an} x {bn} seed {seed}: failed with {failed:?}"));
                    }
                }
                // The links really were rough: datagrams were lost and duplicated.
                let trace = sim.datagrams.as_ref().expect("recording");
                lost += trace.iter().filter(|d| d.fate == Fate::Lost).count();
                let mut seen = std::collections::HashSet::new();
                duplicated += trace
                    .iter()
                    .filter(|d| d.fate == Fate::Delivered && !seen.insert(&d.bytes))
                    .count();
            }
        }
    }
    times.sort();
    for c in [
        Class::Direct,
        Class::HardToOpen,
        Class::BirthdayPredicted,
        Class::Birthday,
    ] {
        let ts: Vec<_> = times
            .iter()
            .filter(|(k, _)| *k == c)
            .map(|(_, t)| *t)
            .collect();
        eprintln!(
            "rough links, {c:?}: {} connected, median {:?}, max {:?}",
            ts.len(),
            ts.get(ts.len() / 2),
            ts.last()
        );
    }
    eprintln!("rough links: {lost} datagrams lost, {duplicated} duplicated");
    assert!(lost > 0 && duplicated > 0, "the links were not rough");
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The same NAT matrix with IPv6 at each site (none, or a global address behind a stateful
/// firewall): wherever both sites have IPv6, a direct IPv6 path exists whatever the IPv4 NATs do.
#[test]
fn the_matrix_with_ipv6_connects_over_ipv6_where_ipv4_cannot() {
    use shipworm_tests::sim::Ipv6Access;
    let mut wrong = Vec::new();
    for (an, a) in kinds() {
        for (bn, b) in kinds() {
            for (v6a, v6b) in [
                (Ipv6Access::None, Ipv6Access::Firewalled),
                (Ipv6Access::Firewalled, Ipv6Access::Firewalled),
            ] {
                let site = |nat, ipv6| SiteConfig {
                    ipv6,
                    ..SiteConfig::nat(nat)
                };
                let mut sim = Sim::new(9, vec![site(a, v6a), site(b, v6b)]);
                sim.connect(0, 1);
                let connected = sim.run_until(Duration::from_secs(11), |s| {
                    (s.connected(0, 1) && s.connected(1, 0))
                        || s.saw(0, |e| matches!(e, NodeEvent::ConnectFailed { .. }))
                }) && sim.connected(0, 1);
                let both_v6 = v6a != Ipv6Access::None && v6b != Ipv6Access::None;
                let expect = both_v6 || theory_allows(&a, &b);
                if connected != expect {
                    wrong.push(format!(
                        "{an} x {bn} ({v6a:?}/{v6b:?}): connected={connected}, expected {expect}"
                    ));
                }
                if both_v6 && connected && !theory_allows(&a, &b) {
                    let path = sim.selected(0, 1).unwrap();
                    assert!(
                        path.is_ipv6(),
                        "{an} x {bn}: only IPv6 can work, yet {path} was selected"
                    );
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
