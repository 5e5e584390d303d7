//! TUN mode on the real kernel: network namespaces joined by veth pairs, a `shipworm up --tun` in
//! each, and `ping -6` between overlay addresses through the encrypted tunnel. Needs root; skips
//! with a message otherwise (CI runs as root).

use shipworm_tests::lab::{can_run, Lab};

#[test]
fn ping6_crosses_the_tunnel_between_two_namespaces_and_strangers_are_kept_out() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), "t");
    let (a, b, c) = (lab.ns("a"), lab.ns("b"), lab.ns("c"));
    lab.link(1, &a, "10.77.1.1/24", &b, "10.77.1.2/24");
    lab.link(2, &c, "10.77.2.3/24", &b, "10.77.2.2/24");
    let (a_key, a_id, a_ov) = lab.identity("a");
    let (b_key, b_id, b_ov) = lab.identity("b");
    let (c_key, _c_id, _) = lab.identity("c");
    let tun = |n: &str| format!("s{}{n}", lab.tag);
    let (ta, tb, tc) = (tun("a"), tun("b"), tun("c"));

    // B lists only A. C knows B and tries anyway.
    let ia = lab.up(
        &a,
        &a_key,
        &ta,
        "10.77.1.1:51820",
        &[format!("{b_id}@10.77.1.2:51820")],
    );
    lab.up(
        &b,
        &b_key,
        &tb,
        "[::]:51820",
        &[format!("{a_id}@10.77.1.1:51820")],
    );
    lab.up(
        &c,
        &c_key,
        &tc,
        "10.77.2.3:51820",
        &[format!("{b_id}@10.77.2.2:51820")],
    );

    let (ok, out) = lab.ping(&a, &b_ov, 5);
    assert!(
        ok,
        "ping A -> B through the tunnel failed:\n{out}\nA: {}\nB: {}",
        lab.log(&ta),
        lab.log(&tb)
    );
    assert!(out.contains("5 received"), "{out}");
    // And back: B's kernel reaches A's overlay address over the same session.
    let (ok, out) = lab.ping(&b, &a_ov, 2);
    assert!(ok, "ping B -> A failed:\n{out}");

    let (ok, out) = lab.ping(&c, &b_ov, 2);
    assert!(!ok, "C is not on B's allowlist, yet reached B:\n{out}");

    let (clean, log) = lab.stop(ia, &ta);
    assert!(clean, "up exited badly:\n{log}");
    assert!(
        log.contains("down:") && !log.contains("down: 0 packets in"),
        "{log}"
    );
}
