//! A behind a home router running a real IGD and NAT-PMP/PCP server (miniupnpd), B behind a
//! symmetric NAT: plain hole punching cannot connect them. With A's port mapping, B reaches A's
//! mapped port; without it (`--no-portmap`), birthday probing finds a way. Needs root.

use std::time::Duration;

use shipworm_tests::lab::{can_run, cannot_run, has_tool, symmetric_router, upnp_router, Lab};

/// Builds the lab: A behind a home router running miniupnpd, B behind a symmetric NAT, a
/// rendezvous; returns (lab, A's ns, B's ns, [A's key, B's key, A's id, B's id, B's overlay]).
fn build(tag: &str) -> (Lab, String, String, [String; 5]) {
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), tag);
    // miniupnpd refuses reserved and documentation ranges as its external address: the lab's
    // "internet" uses an ordinary public range, harmless inside isolated namespaces.
    let sites = lab.two_sites("5.5");
    let [aw, al, bw, bl] = sites.ifaces.clone();
    lab.nft(&sites.ra, &upnp_router(&aw, &al));
    lab.nft(&sites.rb, &symmetric_router(&bw, &bl));
    let ra = sites.ra.clone();
    lab.start_miniupnpd(&ra, "miniupnpd", &aw, &al, "192.168.1.0/24");
    lab.start_rendezvous(&sites);
    let (a_key, a_id, _) = lab.identity("a");
    let (b_key, b_id, b_ov) = lab.identity("b");
    let keys = [
        a_key.to_string_lossy().into_owned(),
        b_key.to_string_lossy().into_owned(),
        a_id,
        b_id,
        b_ov,
    ];
    (lab, sites.ha.clone(), sites.hb.clone(), keys)
}

#[test]
fn a_home_router_and_a_symmetric_nat_connect_by_port_mapping_and_by_birthday_probing() {
    if !can_run() {
        return;
    }
    if !has_tool("miniupnpd") {
        cannot_run("miniupnpd is not installed (Debian package miniupnpd-nftables)");
        return;
    }
    let rdv = ["--rendezvous", "5.5.0.2:3478"];

    // With the mapping.
    let (mut lab, ha, hb, [a_key, b_key, a_id, b_id, b_ov]) = build("p");
    let (ta, tb) = (format!("sa{}", lab.tag), format!("sb{}", lab.tag));
    let a = lab.up_with(
        &ha,
        a_key.as_ref(),
        &ta,
        "0.0.0.0:51820",
        std::slice::from_ref(&b_id),
        &rdv,
    );
    assert!(
        lab.wait_log(&ta, "port mapping: 5.5.1.2:", Duration::from_secs(10)),
        "no mapping: {}\n{}",
        lab.log(&ta),
        lab.log("miniupnpd")
    );
    lab.up_with(
        &hb,
        b_key.as_ref(),
        &tb,
        "0.0.0.0:51820",
        std::slice::from_ref(&a_id),
        &rdv,
    );
    let ok = lab.wait_log(&tb, "connected to", Duration::from_secs(15));
    assert!(
        ok,
        "B never connected:\nA: {}\nB: {}",
        lab.log(&ta),
        lab.log(&tb)
    );
    assert!(
        lab.log(&tb).contains("via 5.5.1.2:"),
        "B's path is not A's mapped address: {}",
        lab.log(&tb)
    );
    let (ok, out) = lab.ping(&ha, &b_ov, 3);
    assert!(
        ok,
        "ping across the symmetric NAT failed:\n{out}\nA: {}\nB: {}",
        lab.log(&ta),
        lab.log(&tb)
    );
    // The mapping is removed when A goes down.
    let (clean, log) = lab.stop(a, &ta);
    assert!(clean && log.contains("removed"), "{log}");
    drop(lab);

    // Without it, the same pair connects by birthday probing: B (symmetric) opens many
    // sockets toward A's mapped address while A probes random ports of B's address.
    let (mut lab, ha, hb, [a_key, b_key, a_id, b_id, b_ov]) = build("q");
    let (ta, tb) = (format!("sa{}", lab.tag), format!("sb{}", lab.tag));
    lab.up_with(&hb, b_key.as_ref(), &tb, "0.0.0.0:51820", &[a_id], &rdv);
    assert!(
        lab.wait_log(&tb, "registered at", Duration::from_secs(10)),
        "{}",
        lab.log(&tb)
    );
    lab.up_with_args(
        &ha,
        a_key.as_ref(),
        &ta,
        "0.0.0.0:51820",
        &[b_id],
        &rdv,
        &["--no-portmap"],
    );
    let connected = lab.wait_log(&ta, "connected to", Duration::from_secs(15));
    assert!(
        connected,
        "birthday probing failed:\nA: {}\nB: {}",
        lab.log(&ta),
        lab.log(&tb)
    );
    assert!(!lab.log(&ta).contains("port mapping:"), "{}", lab.log(&ta));
    // A reaches B at one of its birthday sockets' mappings on B's NAT, not at B's registered port.
    assert!(lab.log(&ta).contains("via 5.5.2.2:"), "{}", lab.log(&ta));
    let (ok, out) = lab.ping(&ha, &b_ov, 3);
    assert!(
        ok,
        "ping through the birthday hole failed:\n{out}\nA: {}\nB: {}",
        lab.log(&ta),
        lab.log(&tb)
    );
}
