//! NAT lab scenarios on the real kernel (root only): a one-way IPv6 site connects over IPv4; IPv6
//! works at every site kind and from an IPv6-only site; a rendezvous restart does not break an
//! established connection; a NAT mapping flush mid-transfer loses no data, also when the new
//! mapping has another external port; a lossy internet still carries the data intact; an idle
//! session outlives 10 s UDP mapping timeouts; two hosts behind one NAT meet over their LAN or
//! through a hairpinning router; a rendezvous and a node with two addresses answer from the one
//! that was asked.

use std::time::{Duration, Instant};

use shipworm_tests::lab::{
    can_run, can_run_nat64, line, make_file, nat_ruleset, tail, Filtering, Lab, Matrix, Pipe,
    RouterKind, SharedNat, NODE_PORT, V6,
};

fn args(lab: &Lab, m: &Matrix, key: &str, rest: &[&str]) -> Vec<String> {
    args_via(lab, &m.rendezvous, key, rest)
}

fn args_via(lab: &Lab, rendezvous: &str, key: &str, rest: &[&str]) -> Vec<String> {
    lab.node_args(key, rendezvous, &format!("[::]:{NODE_PORT}"), &[], rest)
}

/// B listens, A connects; `len` bytes each way (A → B) and 1 MiB back; `during` runs while the
/// transfer is under way. Returns A's and B's logs after checking exit codes and checksums.
fn transfer(
    lab: &mut Lab,
    m: &Matrix,
    len: usize,
    during: impl FnOnce(&mut Lab),
) -> (String, String) {
    let rdv = m.rendezvous.clone();
    transfer_via(lab, m, [&rdv, &rdv], len, during)
}

/// As [`transfer`], A and B registered at the rendezvous addresses `rdv`.
fn transfer_via(
    lab: &mut Lab,
    m: &Matrix,
    rdv: [&str; 2],
    len: usize,
    during: impl FnOnce(&mut Lab),
) -> (String, String) {
    let hosts = m.hosts.clone();
    transfer_between(lab, [&hosts[0], &hosts[1]], rdv, len, during)
}

/// As [`transfer_via`], between host namespaces `hosts` (A, B) of any topology.
fn transfer_between(
    lab: &mut Lab,
    hosts: [&str; 2],
    rdv: [&str; 2],
    len: usize,
    during: impl FnOnce(&mut Lab),
) -> (String, String) {
    lab.pipe_transfer(&Pipe::new(hosts, rdv, len), during)
}

#[test]
fn a_site_whose_ipv6_only_works_outbound_connects_over_ipv4() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), "v6");
    // A's IPv6 goes out but nothing comes back; B's IPv6 is a normal stateful firewall. Both
    // have IPv6 candidates; IPv6 would even be preferred at equal RTT.
    let m = lab.matrix_v6(
        "5.5",
        [RouterKind::Home, RouterKind::Home],
        [V6::InboundBlocked, V6::Firewalled],
    );
    let (la, lb) = transfer(&mut lab, &m, 1 << 20, |_| {});
    let a_line = la.lines().find(|l| l.starts_with("connected: ")).unwrap();
    let b_line = lb.lines().find(|l| l.starts_with("connected: ")).unwrap();
    assert!(a_line.contains("direct IPv4"), "A chose: {a_line}");
    assert!(b_line.contains("direct IPv4"), "B chose: {b_line}");
}

#[test]
fn nodes_registered_over_ipv4_and_over_ipv6_meet_at_one_dual_stack_rendezvous() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), "v6rdv");
    // B knows the rendezvous only by its IPv6 address, A only by its IPv4 one: the introduction
    // crosses address families inside the server. B's firewall drops A's unsolicited first
    // message, so only the introduction gets A's message 1 to B.
    let m = lab.matrix_v6(
        "5.5",
        [RouterKind::Home, RouterKind::Home],
        [V6::Firewalled, V6::Firewalled],
    );
    let v6 = m.rendezvous_v6.clone().unwrap();
    let v4 = m.rendezvous.clone();
    let (la, lb) = transfer_via(&mut lab, &m, [&v4, &v6], 1 << 20, |_| {});
    let ticket = lb.lines().find(|l| l.starts_with("sw1")).unwrap();
    let ticket: shipworm::Ticket = ticket.parse().unwrap();
    assert_eq!(
        ticket
            .rendezvous()
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>(),
        std::slice::from_ref(&v6),
        "B is reachable only through the rendezvous's IPv6 address"
    );
    let a_line = la.lines().find(|l| l.starts_with("connected: ")).unwrap();
    assert!(a_line.contains("direct"), "A: {a_line}");
}

/// The remote address of the selected pair in a `status --json` answer, if any.
fn selected_remote(status: &str) -> Option<String> {
    status.split("{\"remote\":\"").skip(1).find_map(|pair| {
        pair.contains("\"selected\":true")
            .then(|| pair.split('"').next().unwrap_or_default().to_string())
    })
}

/// The `icmp_seq` numbers `ping` got replies for.
fn answered_seqs(ping_output: &str) -> Vec<u32> {
    ping_output
        .lines()
        .filter(|l| l.contains("bytes from"))
        .filter_map(|l| l.split("icmp_seq=").nth(1))
        .filter_map(|r| r.split_whitespace().next()?.parse().ok())
        .collect()
}

#[test]
fn both_sites_with_working_ipv6_move_to_it_without_losing_a_packet() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), "v6ok");
    // Both sites have working IPv6 behind stateful firewalls, and IPv4 behind home NATs. The
    // first pair to answer carries the session (usually IPv4, holes open at the same time);
    // once the IPv6 pair has answered too, the node moves to it.
    let m = lab.matrix_v6(
        "5.5",
        [RouterKind::Home, RouterKind::Home],
        [V6::Firewalled, V6::Firewalled],
    );
    let (a_key, a_id, _) = lab.identity("a");
    let (b_key, b_id, b_ov) = lab.identity("b");
    let (ta, tb) = (format!("va{}", lab.tag), format!("vb{}", lab.tag));
    let b_control = lab.dir.join("b.sock").to_string_lossy().into_owned();
    let a_control = lab.dir.join("a.sock").to_string_lossy().into_owned();
    let bind = format!("[::]:{NODE_PORT}");
    let (ha, hb) = (m.hosts[0].clone(), m.hosts[1].clone());
    let b_global = ["--control", &b_control, "--rendezvous", &m.rendezvous];
    lab.up_with(&hb, b_key.as_ref(), &tb, &bind, &[a_id], &b_global);
    let a_global = ["--control", &a_control, "--rendezvous", &m.rendezvous];
    lab.up_with(&ha, a_key.as_ref(), &ta, &bind, &[b_id], &a_global);
    // Kernel pings through the overlay: ICMP is never retransmitted, so a packet the move loses
    // is a missing reply.
    let pinger = lab.spawn(
        &ha,
        "pings",
        &[
            "sh",
            "-c",
            &format!("exec ping -6 -n -c 150 -i 0.1 -W 2 {b_ov} >&2"),
        ],
    );
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &hb, lab.bin.to_str().unwrap()])
            .args(["--control", &b_control, "status", "--json"])
            .output()
            .unwrap();
        let status = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Some(r) = selected_remote(&status) {
            if seen.last() != Some(&r) {
                seen.push(r.clone());
            }
            if r.starts_with('[') {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        seen.last().is_some_and(|r| r.starts_with('[')),
        "B never moved to IPv6 (selected {seen:?})\nA:\n{}\nB:\n{}",
        lab.log(&ta),
        lab.log(&tb)
    );
    lab.wait_child(pinger, Duration::from_secs(40));
    let pings = lab.log("pings");
    let got = answered_seqs(&pings);
    // From the first reply on, every ping was answered: the move lost nothing.
    let first = *got
        .first()
        .unwrap_or_else(|| panic!("no ping answered:\n{pings}"));
    let lost: Vec<u32> = (first..=150).filter(|s| !got.contains(s)).collect();
    assert!(
        lost.is_empty(),
        "pings {lost:?} were lost (B's paths: {seen:?}):\n{pings}"
    );
    eprintln!("B's selected paths: {seen:?}; first reply at icmp_seq {first}");
}

#[test]
fn a_nat_mapping_flush_in_the_middle_of_a_transfer_loses_no_data() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), "flush");
    let m = lab.matrix("5.5", [RouterKind::Home, RouterKind::Home]);
    let edge = m.edge[0].clone();
    transfer(&mut lab, &m, 60 << 20, |lab| {
        std::thread::sleep(Duration::from_millis(300));
        lab.flush_conntrack(&edge);
        std::thread::sleep(Duration::from_millis(300));
        lab.flush_conntrack(&edge);
    });
}

#[test]
fn a_rendezvous_restart_keeps_established_connections_and_nodes_register_again() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), "rr");
    let m = lab.matrix("5.5", [RouterKind::Home, RouterKind::Home]);
    let (to_b, to_a) = (lab.dir.join("to_b.bin"), lab.dir.join("to_a.bin"));
    let (h_b, _) = (make_file(&to_b, 20 << 20, 1), make_file(&to_a, 1 << 10, 2));
    let out_b = lab.dir.join("b.out");
    let b_args = args(&lab, &m, "b.key", &["listen"]);
    let b_args: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let hb = m.hosts[1].clone();
    let listener = lab.run_cli(&hb, "b", &b_args, Some(&to_a), Some(&out_b));
    let ticket = lab.wait_line("b", "sw1", Duration::from_secs(15));
    let a_args = args(&lab, &m, "a.key", &["connect", &ticket]);
    let a_args: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let ha = m.hosts[0].clone();
    let connector = lab.run_cli(&ha, "a", &a_args, Some(&to_b), None);
    lab.wait_line("a", "connected: ", Duration::from_secs(15));
    // The rendezvous dies and comes back empty, mid-transfer.
    lab.kill_child(m.rendezvous_child);
    std::thread::sleep(Duration::from_millis(500));
    lab.start_matrix_rendezvous(&m, "rendezvous2");
    let a = lab.wait_child(connector, Duration::from_secs(120));
    let b = lab.wait_child(listener, Duration::from_secs(30));
    assert!(
        a.is_some_and(|s| s.success()) && b.is_some_and(|s| s.success()),
        "A:\n{}\nB:\n{}",
        lab.log("a"),
        lab.log("b")
    );
    assert_eq!(blake3::hash(&std::fs::read(&out_b).unwrap()), h_b);

    // Nodes register again by themselves: a new listener registers with the new process, and a
    // node that knows only its ticket reaches it.
    let (to_b2, _) = (lab.dir.join("to_b2.bin"), ());
    let h2 = make_file(&to_b2, 1 << 20, 3);
    let out_b2 = lab.dir.join("b2.out");
    let b2_args = args(&lab, &m, "b.key", &["listen"]);
    let b2_args: Vec<&str> = b2_args.iter().map(String::as_str).collect();
    let l2 = lab.run_cli(&hb, "b2", &b2_args, Some(&to_a), Some(&out_b2));
    let ticket = lab.wait_line("b2", "sw1", Duration::from_secs(15));
    let a2_args = args(&lab, &m, "a.key", &["connect", &ticket]);
    let a2_args: Vec<&str> = a2_args.iter().map(String::as_str).collect();
    let c2 = lab.run_cli(&ha, "a2", &a2_args, Some(&to_b2), None);
    assert!(
        lab.wait_child(c2, Duration::from_secs(60))
            .is_some_and(|s| s.success()),
        "{}",
        lab.log("a2")
    );
    assert!(lab
        .wait_child(l2, Duration::from_secs(30))
        .is_some_and(|s| s.success()));
    assert_eq!(blake3::hash(&std::fs::read(&out_b2).unwrap()), h2);
}

#[test]
fn ten_percent_loss_on_the_internet_still_delivers_everything() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), "loss");
    let m = lab.matrix("5.5", [RouterKind::Home, RouterKind::Cgnat]);
    lab.internet_loss(&m, 10);
    transfer(&mut lab, &m, 10 << 20, |_| {});
}

/// The external ports of a NAT's flows in `conntrack -L` output: the reply direction's
/// destination port, the second `dport=` of each line.
fn external_ports(flows: &str) -> Vec<u16> {
    flows
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .filter_map(|w| w.strip_prefix("dport="))
                .nth(1)?
                .parse()
                .ok()
        })
        .collect()
}

/// A 1 MiB transfer from host A to host B behind one shared NAT; A's `connected: ` line.
fn transfer_behind(lab: &mut Lab, s: &SharedNat) -> String {
    let (la, _) = transfer_between(
        lab,
        [&s.hosts[0], &s.hosts[1]],
        [&s.rendezvous, &s.rendezvous],
        1 << 20,
        |_| {},
    );
    connected_line(&la).to_string()
}

/// The `connected: ` line of a log.
fn connected_line(log: &str) -> &str {
    line(log, "connected: ")
}

#[test]
fn ipv6_works_at_every_site_kind_and_from_an_ipv6_only_site() {
    if !can_run() {
        return;
    }
    // B has IPv6 and nothing else; A has IPv4 behind a router of each kind and IPv6 behind its
    // stateful firewall. Only IPv6 can join them, so it must work at every kind of site.
    let mut failures = Vec::new();
    for (i, kind) in RouterKind::ALL.into_iter().enumerate() {
        let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), &format!("6o{i}"));
        let m = lab.matrix_v6("5.5", [kind, RouterKind::Home], [V6::Firewalled, V6::Only]);
        let v6 = m.rendezvous_v6.clone().unwrap();
        let v4 = m.rendezvous.clone();
        let (la, lb) = transfer_via(&mut lab, &m, [&v4, &v6], 256 << 10, |_| {});
        let line = connected_line(&la);
        if !line.contains("direct IPv6 via [2001:db8:2::2]") {
            failures.push(format!(
                "{}: {line}\n--- A's log, last lines:\n{}\n--- B's log, last lines:\n{}",
                kind.name(),
                tail(&la, 60),
                tail(&lb, 30)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "not over IPv6:\n{}",
        failures.join("\n")
    );
}

#[test]
fn a_rebinding_that_changes_the_external_port_mid_transfer_loses_no_data() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), "rebind");
    let m = lab.matrix("5.5", [RouterKind::Home, RouterKind::Home]);
    let router = m.routers[0].clone();
    let (wan_if, lan_if) = m.router_ifs[0].clone();
    // Mid-transfer, A's router reboots into one that maps to ports 30000-39999 only, and its
    // mappings are gone: A's flow to B comes out of a new external port.
    let renumbered = nat_ruleset(
        &wan_if,
        &[&lan_if],
        &format!(
            "oifname \"{wan_if}\" meta l4proto udp masquerade to :30000-39999\n        \
             oifname \"{wan_if}\" masquerade"
        ),
        Filtering::AddressAndPort,
        None,
    );
    transfer(&mut lab, &m, 60 << 20, |lab| {
        std::thread::sleep(Duration::from_millis(300));
        lab.nft(&router, &format!("flush ruleset\n{renumbered}"));
        lab.flush_conntrack(&router);
    });
    // The flow to B now leaves from a port the old router never used.
    let flows = lab.conntrack(&router, &["-p", "udp", "-d", "5.5.2.2"]);
    let moved = external_ports(&flows)
        .iter()
        .any(|p| (30000..40000).contains(p));
    assert!(moved, "A's external port never changed:\n{flows}");
}

#[test]
fn an_idle_session_outlives_ten_second_udp_mappings_through_keepalives() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), "idle");
    let m = lab.matrix("5.5", [RouterKind::Home, RouterKind::Home]);
    lab.udp_timeouts(&m, 10);
    // Every UDP mapping A's router forgets, as it forgets it.
    let edge = m.edge[0].clone();
    lab.spawn(
        &edge,
        "forgotten",
        &["sh", "-c", "exec conntrack -E -e DESTROY -p udp >&2"],
    );
    let (a_key, a_id, _) = lab.identity("a");
    let (b_key, b_id, b_ov) = lab.identity("b");
    let rdv = ["--rendezvous", m.rendezvous.as_str()];
    let (ta, tb) = (format!("ia{}", lab.tag), format!("ib{}", lab.tag));
    let bind = format!("0.0.0.0:{NODE_PORT}");
    let (ha, hb) = (m.hosts[0].clone(), m.hosts[1].clone());
    lab.up_with(
        &hb,
        b_key.as_ref(),
        &tb,
        &bind,
        std::slice::from_ref(&a_id),
        &rdv,
    );
    lab.up_with(
        &ha,
        a_key.as_ref(),
        &ta,
        &bind,
        std::slice::from_ref(&b_id),
        &rdv,
    );
    let (ok, out) = lab.ping(&ha, &b_ov, 2);
    assert!(ok, "{out}\nA: {}\nB: {}", lab.log(&ta), lab.log(&tb));
    // No rendezvous from here on: a lost mapping could only come back by luck.
    lab.kill_child(m.rendezvous_child);
    // Idle for three and a half mapping lifetimes.
    std::thread::sleep(Duration::from_secs(35));
    let (ok, out) = lab.ping(&ha, &b_ov, 2);
    let forgotten = lab.log("forgotten");
    assert!(ok, "{out}\nA: {}\nB: {}", lab.log(&ta), lab.log(&tb));
    // The watcher works: the flow to the dead rendezvous was forgotten after 10 s...
    assert!(
        forgotten.contains("dst=5.5.0.2"),
        "no mapping ever expired, so the 10 s timeout was not in force:\n{forgotten}"
    );
    // ...and the flow to B never was.
    let lost: Vec<&str> = forgotten
        .lines()
        .filter(|l| l.contains("dst=5.5.2.2"))
        .collect();
    assert!(
        lost.is_empty(),
        "the idle session's mapping expired:\n{}",
        lost.join("\n")
    );
}

#[test]
fn two_hosts_behind_one_nat_on_one_lan_meet_over_the_lan() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), "lan2");
    // Both bind the same port, so the NAT cannot keep it for both flows to the rendezvous.
    let s = lab.shared_nat("5.5", true, false);
    let line = transfer_behind(&mut lab, &s);
    assert!(
        line.contains(&format!("via {}:{NODE_PORT}", s.host_ips[1])),
        "not over the LAN: {line}"
    );
    // The collision happened: the NAT kept port 51820 toward the rendezvous for one host and
    // gave the other another port (each host learned its own from the rendezvous).
    let flows = lab.conntrack(
        &s.router,
        &["-p", "udp", "-d", "5.5.0.2", "--dport", "3478"],
    );
    let mut external = external_ports(&flows);
    external.sort_unstable();
    external.dedup();
    assert!(
        external.len() == 2 && external.contains(&NODE_PORT),
        "expected one host mapped to {NODE_PORT} and the other elsewhere:\n{flows}"
    );
}

#[test]
fn two_hosts_on_separate_segments_of_one_nat_meet_through_its_hairpin() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), "hp");
    let s = lab.shared_nat("5.5", false, true);
    let line = transfer_behind(&mut lab, &s);
    assert!(
        line.contains(&format!("via {}:", s.public_ip)),
        "not through the hairpin: {line}"
    );
}

#[test]
fn without_hairpinning_separate_segments_of_one_nat_get_a_clear_failure() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), "nohp");
    let s = lab.shared_nat("5.5", false, false);
    let rdv = s.rendezvous.as_str();
    let pipe = Pipe::new([&s.hosts[0], &s.hosts[1]], [rdv, rdv], 1 << 10);
    let (status, _, log) = lab.connect_attempt(&pipe, Duration::from_secs(30));
    assert_eq!(status.and_then(|s| s.code()), Some(3), "{log}");
    assert!(log.contains("no direct path"), "{log}");
}

#[test]
fn netcheck_tells_each_router_kind_by_its_mapping() {
    if !can_run() {
        return;
    }
    // What each router does to mappings, as RFC 4787 names it, and what the node must find:
    // (maps per destination, ports one after the other).
    let mut wrong = Vec::new();
    for (i, kind) in RouterKind::ALL.into_iter().enumerate() {
        let want = match kind {
            RouterKind::Symmetric => (true, false),
            RouterKind::SymmetricSequential => (true, true),
            _ => (false, false),
        };
        let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), &format!("nc{i}"));
        let m = lab.matrix("5.5", [kind, RouterKind::Public]);
        let mut args = args(&lab, &m, "a.key", &["--no-portmap", "--json", "netcheck"]);
        args.insert(0, lab.bin.to_string_lossy().into_owned());
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", &m.hosts[0]])
            .args(&args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let field = |k: &str| text.contains(&format!("\"{k}\":true"));
        let got = (field("maps_per_destination"), field("ports_sequential"));
        if !out.status.success() || !text.contains("\"registered\":true") || got != want {
            wrong.push(format!(
                "{}: want {want:?}, got {got:?}: {text}{}",
                kind.name(),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// `shipworm --json netcheck` from `ns` against the rendezvous `rdv`: its output, or a failure
/// naming what was wrong.
fn netcheck(lab: &Lab, ns: &str, rdv: &str, key: &str) -> Result<String, String> {
    let mut args = args_via(lab, rdv, key, &["--no-portmap", "--json", "netcheck"]);
    args.insert(0, lab.bin.to_string_lossy().into_owned());
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns])
        .args(&args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // Registered, and both STUN ports answered (a home router maps independently of the
    // destination).
    match out.status.success()
        && text.contains("\"registered\":true")
        && text.contains("\"maps_per_destination\":false")
    {
        true => Ok(text),
        false => Err(format!(
            "netcheck via {rdv}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

#[test]
fn a_rendezvous_with_two_addresses_answers_from_the_one_each_node_asked() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), "two");
    let m = lab.matrix_v6(
        "5.5",
        [RouterKind::Home, RouterKind::Home],
        [V6::Firewalled, V6::Firewalled],
    );
    // A second address of each family on the rendezvous host, as a VPS's floating address: on
    // `lo`, routed to the host by the internet. The kernel's own choice of source toward the
    // sites stays the first address (5.5.0.2, 2001:db8::2), so only answering from the address
    // that was asked gets through the sites' routers, which let in only replies.
    let (second, second6) = ("5.5.9.2", "2001:db8:9::2");
    lab.exec(
        &m.rdv,
        &["ip", "addr", "add", &format!("{second}/32"), "dev", "lo"],
    );
    lab.exec(
        &m.rdv,
        &[
            "ip",
            "addr",
            "add",
            &format!("{second6}/128"),
            "dev",
            "lo",
            "nodad",
        ],
    );
    lab.exec(&m.wan, &["ip", "route", "add", second, "via", "5.5.0.2"]);
    lab.exec(
        &m.wan,
        &["ip", "route", "add", second6, "via", "2001:db8::2"],
    );
    // The rendezvous reads its addresses (what REGISTERs may be signed for) at start.
    lab.kill_child(m.rendezvous_child);
    lab.start_matrix_rendezvous(&m, "rendezvous2");
    let (first, second, second6) = (
        m.rendezvous.clone(),
        format!("{second}:3478"),
        format!("[{second6}]:3478"),
    );

    // Registration and both STUN ports, at each address.
    let mut wrong = Vec::new();
    for (k, rdv) in [&first, &second, &second6].into_iter().enumerate() {
        if let Err(e) = netcheck(&lab, &m.hosts[0], rdv, &format!("n{k}.key")) {
            wrong.push(e);
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));

    // B registers at the second address only, so its ticket names that one; A registers at the
    // first, and at B's through the ticket. Both routers drop unsolicited datagrams: only the
    // introduction through the second address brings A's handshake to B.
    let (la, lb) = transfer_via(&mut lab, &m, [&first, &second], 1 << 20, |_| {});
    let ticket: shipworm::Ticket = lb
        .lines()
        .find(|l| l.starts_with("sw1"))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        ticket
            .rendezvous()
            .iter()
            .map(|r| r.to_string())
            .collect::<Vec<_>>(),
        std::slice::from_ref(&second)
    );
    let a_line = la.lines().find(|l| l.starts_with("connected: ")).unwrap();
    assert!(a_line.contains("direct"), "A: {a_line}");
}

#[test]
fn a_node_with_two_addresses_answers_from_the_one_its_peer_dialled() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), "twon");
    // A behind a home router; B on a public site (its host address 192.168.2.2 is routed) with
    // a second address on `lo`, routed to it. A knows B only at the second address; the kernel's
    // own choice of source toward A is 192.168.2.2, which A's router does not let in.
    let m = lab.matrix("5.5", [RouterKind::Home, RouterKind::Public]);
    let second = "5.5.8.2";
    lab.exec(
        &m.hosts[1],
        &["ip", "addr", "add", &format!("{second}/32"), "dev", "lo"],
    );
    lab.exec(&m.wan, &["ip", "route", "add", second, "via", "5.5.2.2"]);
    lab.exec(
        &m.routers[1],
        &["ip", "route", "add", second, "via", "192.168.2.2"],
    );
    let (a_key, a_id, a_ov) = lab.identity("a");
    let (b_key, b_id, b_ov) = lab.identity("b");
    let tun = |n: &str| format!("s{}{n}", lab.tag);
    let (ta, tb) = (tun("a"), tun("b"));
    let listen = format!("[::]:{NODE_PORT}");
    let (ha, hb) = (m.hosts[0].clone(), m.hosts[1].clone());
    lab.up(&hb, &b_key, &tb, &listen, &[a_id]);
    lab.up(
        &ha,
        &a_key,
        &ta,
        &listen,
        &[format!("{b_id}@{second}:{NODE_PORT}")],
    );
    let (ok, out) = lab.ping(&ha, &b_ov, 5);
    assert!(
        ok,
        "ping A -> B failed:\n{out}\nA: {}\nB: {}",
        lab.log(&ta),
        lab.log(&tb)
    );
    let (ok, out) = lab.ping(&hb, &a_ov, 2);
    assert!(ok, "ping B -> A failed:\n{out}");
}

/// The `connected: ` lines of A and B.
fn connected_lines<'a>(la: &'a str, lb: &'a str) -> (&'a str, &'a str) {
    (connected_line(la), connected_line(lb))
}

#[test]
fn an_ipv6_only_site_behind_nat64_reaches_an_ipv4_only_site_through_the_discovered_prefix() {
    if !can_run_nat64() {
        return;
    }
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), "n64");
    // A network-specific prefix: the well-known fallback would lead nowhere, so only the
    // prefix learned from the DNS64 answer for ipv4only.arpa (RFC 7050) can work. The IPv6-only
    // host connects; the rendezvous and B exist for it only as IPv4 addresses (B's ticket names
    // the rendezvous by IPv4), which it reaches as syntheses in the prefix.
    let s = lab.nat64_sites("5.5", "2001:db8:64::/96", true);
    let rdv = s.rendezvous.clone();
    let (la, lb) = transfer_between(
        &mut lab,
        [&s.v6_host, &s.v4_host],
        [&rdv, &rdv],
        1 << 20,
        |_| {},
    );
    assert!(
        la.contains("NAT64 prefix 2001:db8:64::/96 (from ipv4only.arpa, RFC 7050)"),
        "A did not learn the prefix:\n{la}\nDNS64:\n{}",
        lab.log("dns64")
    );
    let (a, b) = connected_lines(&la, &lb);
    eprintln!("A (IPv6-only) {a}\nB (IPv4-only) {b}");
    // B's public address, synthesized: the path crosses the NAT64.
    assert!(
        a.contains("direct IPv6 via [2001:db8:64::505:202]:"),
        "A chose: {a}"
    );
    // B sees A at the NAT64 router's public IPv4 address.
    assert!(b.contains("direct IPv4 via 5.5.1.2:"), "B chose: {b}");
}

#[test]
fn an_ipv4_only_site_reaches_an_ipv6_only_one_behind_nat64_with_the_well_known_fallback() {
    if !can_run_nat64() {
        return;
    }
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), "n64w");
    // No DNS64: discovery fails, and the IPv6-only node falls back to 64:ff9b::/96, which is
    // what tayga translates here. The IPv4-only host connects, so the IPv6-only node answers
    // an introduction (INTRO_FWD) whose address it must synthesize before message 2 can leave.
    let s = lab.nat64_sites("5.5", "64:ff9b::/96", false);
    let rdv = s.rendezvous.clone();
    let (la, lb) = transfer_between(
        &mut lab,
        [&s.v4_host, &s.v6_host],
        [&rdv, &rdv],
        1 << 20,
        |_| {},
    );
    assert!(
        lb.contains("NAT64 prefix 64:ff9b::/96 (the well-known fallback: "),
        "B did not fall back to the well-known prefix:\n{lb}"
    );
    let (a, b) = connected_lines(&la, &lb);
    eprintln!("A (IPv4-only) {a}\nB (IPv6-only) {b}");
    assert!(a.contains("direct IPv4 via 5.5.1.2:"), "A chose: {a}");
    assert!(
        b.contains("direct IPv6 via [64:ff9b::505:202]:"),
        "B chose: {b}"
    );
}

/// Drops every UDP datagram router `ns` would forward (a network that lets only TCP through).
fn block_udp(lab: &Lab, ns: &str) {
    lab.nft(
        ns,
        "table inet blockudp {\n chain forward {\n  type filter hook forward priority -10; policy accept;\n  meta l4proto udp drop\n }\n}\n",
    );
}

#[test]
fn a_site_that_blocks_udp_connects_through_the_relay_over_tcp() {
    if !can_run() {
        return;
    }
    // Against an easy peer, a symmetric one and one behind a carrier NAT: every one is reached.
    for (i, peer) in [RouterKind::Home, RouterKind::Symmetric, RouterKind::Cgnat]
        .into_iter()
        .enumerate()
    {
        let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), &format!("tcp{i}"));
        let m = lab.matrix_with(
            "5.5",
            [RouterKind::Home, peer],
            [V6::None, V6::None],
            &["--relay", "--relay-tcp", "[::]:443"],
        );
        block_udp(&lab, &m.routers[0]);
        let started = Instant::now();
        let (la, lb) = transfer(&mut lab, &m, 4 << 20, |_| {});
        let line = connected_line(&la);
        let rdv_ip = m.rendezvous.rsplit_once(':').unwrap().0.to_string();
        let name = peer.name();
        assert!(
            line.contains(&format!("relayed via {}", m.rendezvous))
                && connected_line(&lb).contains("relayed via"),
            "UDP-blocked x {name}: not relayed: {line}\nA:\n{la}\nB:\n{lb}"
        );
        assert!(
            la.contains(&format!("trying its relay over TCP at {rdv_ip}:443")),
            "UDP-blocked x {name}: A did not say why it used TCP:\n{la}"
        );
        eprintln!(
            "UDP-blocked x {name}: {line}; whole transfer {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn without_a_relay_a_udp_blocked_site_hears_that_its_udp_gets_no_answer() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), "nou");
    let m = lab.matrix("5.5", [RouterKind::Home, RouterKind::Home]);
    block_udp(&lab, &m.routers[0]);
    let b_args = args(&lab, &m, "b.key", &["listen"]);
    let b_args: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let hosts = m.hosts.clone();
    lab.run_cli(&hosts[1], "b", &b_args, None, None);
    let ticket = lab.wait_line("b", "sw1", Duration::from_secs(15));
    let a_args = args(&lab, &m, "a.key", &["connect", &ticket]);
    let a_args: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let started = Instant::now();
    let a = lab.run_cli(&hosts[0], "a", &a_args, None, None);
    let exit = lab.wait_child(a, Duration::from_secs(20));
    let took = started.elapsed();
    let la = lab.log("a");
    assert_eq!(exit.and_then(|s| s.code()), Some(3), "{la}");
    assert!(
        la.contains(&format!("no answer from rendezvous {}", m.rendezvous))
            && la.contains("is UDP blocked on this network?"),
        "the error does not name the cause:\n{la}"
    );
    assert!(
        !la.contains("no answer from the peer"),
        "it blames the peer:\n{la}"
    );
    assert!(took <= Duration::from_secs(12), "took {took:?}:\n{la}");
    eprintln!("UDP-blocked site without a relay: told in {took:?}");
}

#[test]
fn a_node_on_the_tcp_relay_moves_back_to_udp_when_udp_works_again() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), "tcb");
    let m = lab.matrix_with(
        "5.5",
        [RouterKind::Home, RouterKind::Home],
        [V6::None, V6::None],
        &["--relay", "--relay-tcp", "[::]:443"],
    );
    block_udp(&lab, &m.routers[0]);
    let router = m.routers[0].clone();
    let rdv_ip = m.rendezvous.rsplit_once(':').unwrap().0.to_string();
    // 40 MB through the relay (2 MB/s a node by default) lasts long past the 10 s after which
    // UDP is tried again. UDP to the rendezvous opens; between the sites it stays blocked, so
    // the session stays relayed, now over UDP.
    let started = Instant::now();
    let (la, _) = transfer(&mut lab, &m, 40 << 20, |lab| {
        assert!(connected_line(&lab.log("a")).contains("relayed via"));
        lab.exec(&router, &["nft", "delete", "table", "inet", "blockudp"]);
        lab.nft(
            &router,
            &format!(
                "table inet blockudp {{\n chain forward {{\n  type filter hook forward priority -10; policy accept;\n  meta l4proto udp ip saddr != {rdv_ip} ip daddr != {rdv_ip} drop\n }}\n}}\n"
            ),
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while !lab
            .log("a")
            .contains("the rendezvous answers over UDP again")
        {
            assert!(
                Instant::now() < deadline,
                "A stayed on TCP:\n{}",
                lab.log("a")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    assert!(connected_line(&la).contains("relayed via"));
    eprintln!(
        "relayed over TCP, then over UDP: 40 MB intact in {:?}",
        started.elapsed()
    );
}
