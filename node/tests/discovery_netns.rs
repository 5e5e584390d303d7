//! Two nodes behind two home NATs (nftables in network namespaces) connect by NodeId alone:
//! a private Mainline DHT of `shipworm dht-node`s runs beside the rendezvous on the "internet",
//! B publishes its record there, and A, which has no rendezvous and no ticket, finds B's
//! rendezvous in B's record, registers there, is introduced and punches through. The namespaces
//! reach nothing outside, so the public DHT is never asked. Needs root; skips otherwise.
//!
//! ```text
//!  hostA 192.168.1.2 ── routerA (home NAT) ──┐
//!  rendezvous 10.77.0.2:3478                 wan
//!  DHT nodes  10.77.0.2:6881..6883 ──────────┤
//!  hostB 192.168.2.2 ── routerB (home NAT) ──┘
//! ```

use std::time::{Duration, Instant};

use shipworm_tests::lab::{can_run, home_router, Lab};

#[test]
fn nodes_behind_two_nats_connect_by_node_id_through_a_private_dht() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), "dz");
    let sites = lab.two_sites("10.77");
    let [aw, al, bw, bl] = sites.ifaces.clone();
    lab.nft(&sites.ra, &home_router(&aw, &al));
    lab.nft(&sites.rb, &home_router(&bw, &bl));
    lab.start_rendezvous(&sites);
    let bin = lab.bin.to_string_lossy().into_owned();
    let boot = "10.77.0.2:6881";
    lab.spawn(&sites.rdv, "dht0", &[&bin, "dht-node", "--listen", boot]);
    assert!(
        lab.wait_log("dht0", "dht node on", Duration::from_secs(10)),
        "{}",
        lab.log("dht0")
    );
    for k in 1..3u16 {
        let listen = format!("10.77.0.2:{}", 6881 + k);
        let name = format!("dht{k}");
        lab.spawn(
            &sites.rdv,
            &name,
            &[
                &bin,
                "--dht-bootstrap",
                boot,
                "dht-node",
                "--listen",
                &listen,
            ],
        );
        assert!(
            lab.wait_log(&name, "dht node on", Duration::from_secs(10)),
            "{}",
            lab.log(&name)
        );
    }

    let (a_key, _a_id, _) = lab.identity("a");
    let (b_key, b_id, b_ov) = lab.identity("b");
    let (ta, tb) = (format!("da{}", lab.tag), format!("db{}", lab.tag));
    // B: a rendezvous, and its record in the DHT.
    lab.up_with_args(
        &sites.hb,
        &b_key,
        &tb,
        "0.0.0.0:51820",
        &[],
        &[
            "--rendezvous",
            &sites.rendezvous,
            "--publish",
            "dht",
            "--dht-bootstrap",
            boot,
        ],
        &["--allow-any"],
    );
    assert!(
        lab.wait_log(
            &tb,
            "published our record to the DHT",
            Duration::from_secs(30)
        ),
        "{}",
        lab.log(&tb)
    );
    // A: B's NodeId and the DHT's bootstrap node, nothing else.
    lab.up_with(
        &sites.ha,
        &a_key,
        &ta,
        "0.0.0.0:51820",
        &[b_id],
        &["--dht-bootstrap", boot],
    );
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (ok, out) = lab.ping(&sites.ha, &b_ov, 1);
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
    // A direct path: both NATs were punched after the introduction at B's rendezvous.
    let log = lab.log(&ta);
    let connected = log.lines().find(|l| l.contains("connected to"));
    assert!(connected.is_some_and(|l| l.contains("direct")), "{log}");
}
