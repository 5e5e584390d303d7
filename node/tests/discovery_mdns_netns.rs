//! Two hosts on one LAN (a bridge in network namespaces) connect by NodeId with no rendezvous,
//! no DHT and no ticket: each announces itself by mDNS and finds the other. Needs root; skips
//! otherwise.
//!
//! ```text
//!  host1 192.168.1.2 ──┐
//!                      bridge (on the router; the rendezvous beyond it is never named)
//!  host2 192.168.1.3 ──┘
//! ```

use std::time::{Duration, Instant};

use shipworm_tests::lab::{can_run, Lab};

/// `connect NODEID` to a `listen`er on the same LAN: bytes both ways, over a direct LAN path.
#[test]
fn listen_and_connect_by_node_id_on_one_lan_through_mdns() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), "mc");
    let s = lab.shared_nat("10.78", true, false);
    let [h1, h2] = s.hosts.clone();
    let (l_key, l_id, _) = lab.identity("l");
    let (c_key, _, _) = lab.identity("c");
    std::fs::write(lab.dir.join("to_c"), b"from the listener\n").unwrap();
    std::fs::write(lab.dir.join("to_l"), b"from the connector\n").unwrap();
    let (l_key, c_key) = (l_key.to_string_lossy(), c_key.to_string_lossy());
    let (to_c, to_l) = (lab.dir.join("to_c"), lab.dir.join("to_l"));
    let (l_out, c_out) = (lab.dir.join("l.out"), lab.dir.join("c.out"));
    let l = lab.run_cli(
        &h1,
        "listen",
        &["--identity", &l_key, "--no-portmap", "listen"],
        Some(&to_c),
        Some(&l_out),
    );
    assert!(
        lab.wait_log("listen", "sw1", Duration::from_secs(15)),
        "{}",
        lab.log("listen")
    );
    let c = lab.run_cli(
        &h2,
        "connect",
        &[
            "--identity",
            &c_key,
            "--no-portmap",
            "--no-dht",
            "connect",
            &l_id,
        ],
        Some(&to_l),
        Some(&c_out),
    );
    let cs = lab.wait_child(c, Duration::from_secs(40));
    let ls = lab.wait_child(l, Duration::from_secs(20));
    let logs = format!("{}\n{}", lab.log("listen"), lab.log("connect"));
    assert!(
        cs.is_some_and(|s| s.success()) && ls.is_some_and(|s| s.success()),
        "{cs:?} {ls:?}\n{logs}"
    );
    assert_eq!(std::fs::read(&l_out).unwrap(), b"from the connector\n");
    assert_eq!(std::fs::read(&c_out).unwrap(), b"from the listener\n");
    // The path is the LAN itself: the listener's address on the bridge.
    let connected = lab.log("connect");
    assert!(
        connected.contains(&format!("via {}:", s.host_ips[0])),
        "{logs}"
    );
}

/// `up --peer NODEID` on both hosts of one LAN, with no rendezvous: the overlay carries ping.
#[test]
fn up_peers_named_by_node_id_find_each_other_on_one_lan_through_mdns() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), "mu");
    let s = lab.shared_nat("10.79", true, false);
    let [h1, h2] = s.hosts.clone();
    let (a_key, a_id, _) = lab.identity("a");
    let (b_key, b_id, b_ov) = lab.identity("b");
    let (ta, tb) = (format!("ma{}", lab.tag), format!("mb{}", lab.tag));
    lab.up_with(&h2, &b_key, &tb, "0.0.0.0:51820", &[a_id], &["--no-dht"]);
    lab.up_with(&h1, &a_key, &ta, "0.0.0.0:51820", &[b_id], &["--no-dht"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (ok, out) = lab.ping(&h1, &b_ov, 1);
        if ok {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no ping through the overlay: {out}\nA:\n{}\nB:\n{}",
            lab.log(&ta),
            lab.log(&tb)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = lab.log(&ta);
    let connected = log.lines().find(|l| l.contains("connected to"));
    assert!(
        connected.is_some_and(|l| l.contains(&format!("via {}:", s.host_ips[1]))),
        "{log}"
    );
}
