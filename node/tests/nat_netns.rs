//! Two nodes behind two different NATs (nftables in network namespaces) find each other through
//! a real rendezvous, punch holes, and carry `ping -6` directly. Needs root; skips otherwise.
//!
//! ```text
//!  hostA 192.168.1.2 ── routerA (home: masquerade, drops unsolicited) ──┐
//!                                                      172.30.1.0/24   │
//!  rendezvous 172.30.0.2:3478 ───────────────────────────────────── wan (router)
//!                                                      172.30.2.0/24   │
//!  hostB 192.168.2.2 ── routerB (full cone: masquerade + port forward) ┘
//! ```

use std::time::Duration;

use shipworm_tests::lab::{can_run, full_cone_router, home_router, symmetric_router, Lab};

/// The NAT in front of a site.
#[derive(Clone, Copy)]
enum Router {
    Home,
    FullCone,
    Symmetric,
}

/// Two sites behind routers of the given kinds, a rendezvous, and a `shipworm up` on each host
/// naming the other by NodeId only. Returns the lab, A's and B's namespaces and interface names,
/// and B's overlay address.
fn two_sites(tag: &str, a: Router, b: Router) -> (Lab, [String; 4], String) {
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), tag);
    let sites = lab.two_sites("172.30");
    let [aw, al, bw, bl] = sites.ifaces.clone();
    for (router, kind, wan_if, lan_if) in [(&sites.ra, a, aw, al), (&sites.rb, b, bw, bl)] {
        let rules = match kind {
            Router::Home => home_router(&wan_if, &lan_if),
            Router::FullCone => full_cone_router(&wan_if, &lan_if),
            Router::Symmetric => symmetric_router(&wan_if, &lan_if),
        };
        lab.nft(router, &rules);
    }
    lab.start_rendezvous(&sites);
    let (a_key, a_id, _) = lab.identity("a");
    let (b_key, b_id, b_ov) = lab.identity("b");
    let rdv_flag = ["--rendezvous", sites.rendezvous.as_str()];
    let (ta, tb) = (format!("sa{}", lab.tag), format!("sb{}", lab.tag));
    // Each knows only the other's NodeId: addresses come from the rendezvous. B first, so that
    // A's introduction finds it registered.
    lab.up_with(&sites.hb, &b_key, &tb, "0.0.0.0:51820", &[a_id], &rdv_flag);
    assert!(
        lab.wait_log(&tb, "registered at", Duration::from_secs(10)),
        "{}",
        lab.log(&tb)
    );
    lab.up_with(&sites.ha, &a_key, &ta, "0.0.0.0:51820", &[b_id], &rdv_flag);
    (lab, [sites.ha.clone(), sites.hb.clone(), ta, tb], b_ov)
}

#[test]
fn nodes_behind_a_home_nat_and_a_full_cone_nat_connect_directly_through_a_real_rendezvous() {
    if !can_run() {
        return;
    }
    let (lab, [ha, _hb, ta, tb], b_ov) = two_sites("n", Router::Home, Router::FullCone);
    let connected = lab.wait_log(&ta, "connected to", Duration::from_secs(15));
    assert!(
        connected,
        "A never connected:\nA: {}\nB: {}\nrendezvous: {}",
        lab.log(&ta),
        lab.log(&tb),
        lab.log("rendezvous")
    );
    assert!(
        lab.wait_log(&tb, "connected to", Duration::from_secs(5)),
        "B: {}",
        lab.log(&tb)
    );
    // The only paths are direct through the two NATs: the rendezvous forwards introductions only.
    assert!(
        lab.log(&ta).contains("via 172.30.2.2:"),
        "A's path is not B's public address: {}",
        lab.log(&ta)
    );
    assert!(
        lab.log(&tb).contains("via 172.30.1.2:"),
        "B's path is not A's public address: {}",
        lab.log(&tb)
    );
    let (ok, out) = lab.ping(&ha, &b_ov, 5);
    assert!(
        ok,
        "ping A -> B across both NATs failed:\n{out}\nA: {}\nB: {}",
        lab.log(&ta),
        lab.log(&tb)
    );
}

#[test]
fn two_symmetric_nats_without_port_mappings_get_a_clear_error_within_ten_seconds() {
    if !can_run() {
        return;
    }
    let (lab, [_, _, ta, tb], _) = two_sites("s", Router::Symmetric, Router::Symmetric);
    let started = std::time::Instant::now();
    let told = lab.wait_log(
        &ta,
        "no direct path possible: both sides map per destination",
        Duration::from_secs(12),
    );
    assert!(
        told,
        "no clear error:\nA: {}\nB: {}",
        lab.log(&ta),
        lab.log(&tb)
    );
    assert!(
        started.elapsed() <= Duration::from_secs(11),
        "the error took {:?}",
        started.elapsed()
    );
    assert!(
        lab.log(&ta).contains("session with"),
        "the handshake itself completed through the rendezvous: {}",
        lab.log(&ta)
    );
    assert!(!lab.log(&ta).contains("connected to"), "{}", lab.log(&ta));
}
