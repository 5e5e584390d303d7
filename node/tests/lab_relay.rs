//! The relay on real kernels (root only; `docs/lab.md` §"The relay"): the rendezvous started
//! with `--relay` joins what punching cannot (two symmetric NATs; an IPv4-only node and an
//! IPv6-only one), and without it, or with nodes refusing relays, the clear error stays; a pair
//! that starts relayed moves to its direct path mid-transfer without losing data; and once it
//! is direct, killing the relay loses nothing.
//!
//! `listen` on B, `connect` on A, checksums both ways ([`Pipe`]); both print "relayed via ADDR"
//! or "direct …" when they connect, and "path to PEER is now …" when the path changes.

use std::time::{Duration, Instant};

use shipworm_tests::lab::{can_run, line, Lab, Matrix, Pipe, RouterKind, V6};

/// The rendezvous' relay as the IPv4 nodes name it.
const RELAY_V4: &str = "5.5.0.2:3478";

/// Sites A and B of kinds `kinds`, the rendezvous relaying.
fn relay_matrix(lab: &mut Lab, kinds: [RouterKind; 2]) -> Matrix {
    lab.matrix_with("5.5", kinds, [V6::None, V6::None], &["--relay"])
}

/// The connected lines of A's and B's logs.
fn connected<'a>(la: &'a str, lb: &'a str) -> (&'a str, &'a str) {
    (line(la, "connected: "), line(lb, "connected: "))
}

/// Waits until log `log` says the path is now direct; how long that took from `since`.
fn wait_direct(lab: &Lab, log: &str, since: Instant, within: Duration) -> Duration {
    let deadline = Instant::now() + within;
    loop {
        let text = lab.log(log);
        if text
            .lines()
            .any(|l| l.starts_with("path to ") && l.contains(" is now direct "))
        {
            return since.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "{log} never moved to a direct path within {within:?} of the firewall opening:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Bytes B has received so far.
fn received(lab: &Lab) -> u64 {
    std::fs::metadata(lab.dir.join("b.out")).map_or(0, |m| m.len())
}

#[test]
fn two_symmetric_nats_connect_through_the_relay_with_data_intact() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), "rs");
    let m = relay_matrix(&mut lab, [RouterKind::Symmetric, RouterKind::Symmetric]);
    let rdv = m.rendezvous.as_str();
    let pipe = Pipe::new([&m.hosts[0], &m.hosts[1]], [rdv, rdv], 4 << 20);
    let (la, lb) = lab.pipe_transfer(&pipe, |_| {});
    let (a, b) = connected(&la, &lb);
    eprintln!("A: {a}\nB: {b}");
    let relayed = format!("(relayed via {RELAY_V4}");
    assert!(
        a.contains(&relayed) && b.contains(&relayed),
        "not relayed through the rendezvous (its relay role missing?):\nA: {a}\nB: {b}"
    );
    // Nothing direct can exist between them: the path never changed.
    assert!(
        !la.contains(" is now direct ") && !lb.contains(" is now direct "),
        "a direct path between two symmetric NATs?\nA:\n{la}\nB:\n{lb}"
    );
}

#[test]
fn without_a_relay_two_symmetric_nats_get_the_clear_error_within_ten_seconds() {
    if !can_run() {
        return;
    }
    // The rendezvous without the role; then with it, and both nodes refusing relays.
    let mut wrong = Vec::new();
    for (i, (relay, node_flags)) in [(false, &[][..]), (true, &["--no-relay"][..])]
        .into_iter()
        .enumerate()
    {
        let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), &format!("rn{i}"));
        let rdv_flags: &[&str] = if relay { &["--relay"] } else { &[] };
        let kinds = [RouterKind::Symmetric, RouterKind::SymmetricSequential];
        let m = lab.matrix_with("5.5", kinds, [V6::None, V6::None], rdv_flags);
        let rdv = m.rendezvous.as_str();
        let pipe = Pipe::new([&m.hosts[0], &m.hosts[1]], [rdv, rdv], 1 << 10).flags(node_flags);
        let (status, took, log) = lab.connect_attempt(&pipe, Duration::from_secs(20));
        let case = format!("rendezvous relay {relay}, node flags {node_flags:?}");
        eprintln!("{case}: exit {status:?} after {took:.1?}");
        if status.and_then(|s| s.code()) != Some(3)
            || !log.contains("no direct path possible")
            || took > Duration::from_secs(10)
        {
            let connected = status.is_some_and(|s| s.success());
            wrong.push(format!(
                "{case}: exit {status:?} after {took:?}, not the clear error in 10 s{}:\n{log}",
                if connected {
                    " (it connected: relaying was not refused)"
                } else {
                    ""
                }
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Drops, at A's router, every UDP datagram to or from B's site (before conntrack: no mapping
/// is made for them), but nothing to or from the rendezvous.
fn block_site(lab: &Lab, m: &Matrix) {
    let b = &m.public_ip[1];
    lab.nft(
        &m.routers[0],
        &format!(
            "table inet blocksite {{\n    chain pre {{\n        type filter hook prerouting priority -300; policy accept;\n        ip saddr {b} meta l4proto udp drop\n        ip daddr {b} meta l4proto udp drop\n    }}\n}}\n"
        ),
    );
}

fn unblock_site(lab: &Lab, m: &Matrix) {
    lab.exec(
        &m.routers[0],
        &["nft", "delete", "table", "inet", "blocksite"],
    );
}

/// Two home routers, the rendezvous relaying, the direct path blocked at A's router: the pair
/// connects relayed. Mid-transfer (`len` bytes A → B) the block goes; both sides must move to
/// the direct path; then, with `kill_relay`, the rendezvous dies while the transfer goes on.
/// The transfer must complete intact. Returns A's and B's logs.
fn relayed_then_direct(lab: &mut Lab, len: usize, kill_relay: bool) -> (String, String) {
    let m = relay_matrix(lab, [RouterKind::Home, RouterKind::Home]);
    block_site(lab, &m);
    let rdv = m.rendezvous.as_str();
    let pipe = Pipe::new([&m.hosts[0], &m.hosts[1]], [rdv, rdv], len);
    let rendezvous = m.rendezvous_child;
    let (la, lb) = lab.pipe_transfer(&pipe, |lab| {
        let a = lab.log("a");
        let a = line(&a, "connected: ");
        assert!(
            a.contains(&format!("(relayed via {RELAY_V4}")),
            "with the direct path blocked, A did not connect through the relay: {a}"
        );
        // Some data crosses the relay first.
        let deadline = Instant::now() + Duration::from_secs(15);
        while received(lab) < 2 << 20 {
            assert!(
                Instant::now() < deadline,
                "the relay carried {} bytes in 15 s\nA:\n{}\nB:\n{}",
                received(lab),
                lab.log("a"),
                lab.log("b")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let over_relay = received(lab);
        let opened = Instant::now();
        unblock_site(lab, &m);
        let to_direct_a = wait_direct(lab, "a", opened, Duration::from_secs(20));
        let to_direct_b = wait_direct(lab, "b", opened, Duration::from_secs(20));
        let at_move = received(lab);
        eprintln!(
            "{over_relay} bytes over the relay before the firewall opened; A direct {to_direct_a:?} \
             and B direct {to_direct_b:?} after it opened, {at_move} bytes received by then"
        );
        assert!(
            at_move < len as u64,
            "the transfer ended before the path moved: make it longer"
        );
        if kill_relay {
            lab.kill_child(rendezvous);
            let at_kill = received(lab);
            eprintln!("relay killed with {at_kill} of {len} bytes received");
            assert!(
                at_kill < len as u64,
                "the transfer ended before the relay was killed: make it longer"
            );
        }
    });
    (la, lb)
}

/// Both logs' last path change is to a direct path.
fn assert_ends_direct(la: &str, lb: &str) {
    for (side, log) in [("A", la), ("B", lb)] {
        let last = log.lines().rfind(|l| l.starts_with("path to "));
        assert!(
            last.is_some_and(|l| l.contains(" is now direct ")),
            "{side} did not end on the direct path:\n{log}"
        );
    }
}

#[test]
fn a_relayed_pair_moves_to_the_direct_path_mid_transfer_without_losing_data() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), "ru");
    let (la, lb) = relayed_then_direct(&mut lab, 40 << 20, false);
    let (a, b) = connected(&la, &lb);
    eprintln!("A: {a}\nB: {b}");
    // It stays direct.
    assert_ends_direct(&la, &lb);
}

#[test]
fn killing_the_relay_mid_transfer_loses_nothing_once_the_path_is_direct() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), "rk");
    let (la, lb) = relayed_then_direct(&mut lab, 60 << 20, true);
    // The relayed pair died with the relay; the session never went back to it.
    assert_ends_direct(&la, &lb);
}

#[test]
fn an_ipv4_only_node_and_an_ipv6_only_node_connect_through_the_dual_stack_relay() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), "r46");
    // A has IPv4 only (behind a home router), B IPv6 only (behind a stateful firewall), no
    // NAT64: no direct path can exist. Each knows the one dual-stack rendezvous by the one
    // address it can reach.
    let m = lab.matrix_with(
        "5.5",
        [RouterKind::Home, RouterKind::Home],
        [V6::None, V6::Only],
        &["--relay"],
    );
    let v6 = m.rendezvous_v6.clone().unwrap();
    let v4 = m.rendezvous.clone();
    let pipe = Pipe::new([&m.hosts[0], &m.hosts[1]], [&v4, &v6], 4 << 20);
    let (la, lb) = lab.pipe_transfer(&pipe, |_| {});
    let (a, b) = connected(&la, &lb);
    eprintln!("A (IPv4-only): {a}\nB (IPv6-only): {b}");
    assert!(
        a.contains(&format!("(relayed via {v4}")),
        "A not relayed through the rendezvous' IPv4 address: {a}"
    );
    assert!(
        b.contains(&format!("(relayed via {v6}")),
        "B not relayed through the rendezvous' IPv6 address: {b}"
    );
}
