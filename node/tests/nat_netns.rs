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

mod common;

use std::time::Duration;

use common::{can_run, Lab};

/// A home router: masquerade (endpoint-independent mapping, port-preserving in practice), and
/// nothing unsolicited comes in, neither to the router itself nor through it.
fn home_router(wan: &str, lan: &str) -> String {
    format!(
        r#"table ip nat {{
    chain post {{
        type nat hook postrouting priority srcnat;
        oifname "{wan}" masquerade
    }}
}}
table ip filter {{
    chain input {{
        type filter hook input priority 0; policy accept;
        iifname "{wan}" ct state established,related accept
        iifname "{wan}" drop
    }}
    chain forward {{
        type filter hook forward priority 0; policy drop;
        iifname "{lan}" accept
        iifname "{wan}" ct state established,related accept
    }}
}}
"#
    )
}

/// A full-cone router for one host port: the home router plus a static forward of that port.
fn full_cone_router(wan: &str, lan: &str, host: &str, port: u16) -> String {
    format!(
        r#"{}table ip cone {{
    chain pre {{
        type nat hook prerouting priority dstnat;
        iifname "{wan}" udp dport {port} dnat to {host}:{port}
    }}
    chain forward {{
        type filter hook forward priority -1;
        iifname "{wan}" ip daddr {host} udp dport {port} accept
    }}
}}
"#,
        home_router(wan, lan)
    )
}

#[test]
fn nodes_behind_a_home_nat_and_a_full_cone_nat_connect_directly_through_a_real_rendezvous() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new("n");
    let t = lab.tag.clone();
    let wan = lab.ns("w");
    let rdv = lab.ns("r");
    let (ra, rb) = (lab.ns("ra"), lab.ns("rb"));
    let (ha, hb) = (lab.ns("ha"), lab.ns("hb"));
    let name = |s: &str| format!("{s}{t}");
    lab.link_named(
        &wan,
        &name("w0"),
        "172.30.0.1/24",
        &rdv,
        &name("r0"),
        "172.30.0.2/24",
    );
    lab.link_named(
        &wan,
        &name("w1"),
        "172.30.1.1/24",
        &ra,
        &name("aw"),
        "172.30.1.2/24",
    );
    lab.link_named(
        &wan,
        &name("w2"),
        "172.30.2.1/24",
        &rb,
        &name("bw"),
        "172.30.2.2/24",
    );
    lab.link_named(
        &ra,
        &name("al"),
        "192.168.1.1/24",
        &ha,
        &name("ah"),
        "192.168.1.2/24",
    );
    lab.link_named(
        &rb,
        &name("bl"),
        "192.168.2.1/24",
        &hb,
        &name("bh"),
        "192.168.2.2/24",
    );
    for ns in [&wan, &ra, &rb] {
        lab.exec(ns, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    }
    lab.exec(
        &rdv,
        &["ip", "route", "add", "default", "via", "172.30.0.1"],
    );
    lab.exec(&ra, &["ip", "route", "add", "default", "via", "172.30.1.1"]);
    lab.exec(&rb, &["ip", "route", "add", "default", "via", "172.30.2.1"]);
    lab.exec(
        &ha,
        &["ip", "route", "add", "default", "via", "192.168.1.1"],
    );
    lab.exec(
        &hb,
        &["ip", "route", "add", "default", "via", "192.168.2.1"],
    );
    lab.nft(&ra, &home_router(&name("aw"), &name("al")));
    lab.nft(
        &rb,
        &full_cone_router(&name("bw"), &name("bl"), "192.168.2.2", 51820),
    );

    lab.spawn(
        &rdv,
        "rendezvous",
        &[
            env!("CARGO_BIN_EXE_shipworm"),
            "rendezvous",
            "--listen",
            "172.30.0.2:3478",
            "--alt-listen",
            "172.30.0.2:3479",
        ],
    );
    assert!(
        lab.wait_log("rendezvous", "rendezvous on", Duration::from_secs(10)),
        "{}",
        lab.log("rendezvous")
    );

    let (a_key, a_id, _) = lab.identity("a");
    let (b_key, b_id, b_ov) = lab.identity("b");
    let rdv_flag = ["--rendezvous", "172.30.0.2:3478"];
    let (ta, tb) = (name("sa"), name("sb"));
    // Each knows only the other's NodeId: addresses come from the rendezvous.
    lab.up_with(
        &hb,
        &b_key,
        &tb,
        "0.0.0.0:51820",
        &[a_id.clone()],
        &rdv_flag,
    );
    lab.up_with(
        &ha,
        &a_key,
        &ta,
        "0.0.0.0:51820",
        &[b_id.clone()],
        &rdv_flag,
    );

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
