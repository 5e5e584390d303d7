//! The NAT matrix in the deterministic simulator: every pair of NAT kinds connects directly
//! wherever theory allows, and fails with a clear error within 10 s where it does not.

use std::time::Duration;

use shipworm::engine::{ConnectError, NodeEvent};
use shipworm_tests::sim::{Filtering, Mapping, NatModel, Sim, SiteConfig};

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
    ]
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

pub fn run_pair(seed: u64, a: Option<NatModel>, b: Option<NatModel>) -> (Sim, bool) {
    let mut sim = Sim::new(seed, vec![SiteConfig::nat(a), SiteConfig::nat(b)]);
    sim.connect(0, 1);
    let ok = sim.run_until(Duration::from_secs(11), |s| {
        (s.connected(0, 1) && s.connected(1, 0))
            || s.saw(0, |e| matches!(e, NodeEvent::ConnectFailed { .. }))
    });
    let connected = ok && sim.connected(0, 1) && sim.connected(1, 0);
    (sim, connected)
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
                report.push(format!(
                    "{an:>16} x {bn:<16} seed {seed}: {} {t:?}",
                    if connected { "direct" } else { "failed" }
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
