//! Hostile peers against real kernels: an attacker with a valid key names a third host's
//! addresses as its candidates, and that host (which never asked for anything) counts with
//! nftables what the honest node sends it. Needs root; skips otherwise (fails in CI).
//!
//! ```text
//!  attacker 5.7.1.2 ──┐
//!  listener 5.7.2.2 ──┼── internet (router "w")
//!  victim   5.7.3.2 ──┘
//! ```

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shipworm::engine::gate::unverified_ip_budget;
use shipworm::tunnel::rng;
use shipworm::tunnel::tunnel::{Tunnel, TunnelConfig};
use shipworm::{Identity, Ticket};
use shipworm_tests::lab::{can_run, Lab};

/// How long the attacker keeps its session going.
const ATTACK: Duration = Duration::from_secs(8);

/// The packets and bytes (IP level) that nftables counted in `ns`'s counter `name`.
fn counter(lab: &Lab, ns: &str, name: &str) -> (u64, u64) {
    let out = std::process::Command::new("ip")
        .args([
            "netns", "exec", ns, "nft", "list", "counter", "inet", "count", name,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| -> u64 {
        text.split_whitespace()
            .skip_while(|w| *w != key)
            .nth(1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in counter {name} of {ns}: {text}"))
    };
    let _ = lab;
    (field("packets"), field("bytes"))
}

/// Runs a peer with a valid key in namespace `ns` for [`ATTACK`]: its message 1 to `target`
/// lists `decoys` as its candidates; it answers nothing and keeps the session alive only as the
/// tunnel itself does. Returns the UDP datagrams and payload bytes it sent.
fn attack(ns: &str, target: shipworm::NodeId, at: SocketAddr, decoys: Vec<SocketAddr>) {
    let ns = ns.to_string();
    std::thread::spawn(move || {
        let f = std::fs::File::open(format!("/var/run/netns/{ns}")).unwrap();
        nix::sched::setns(f.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let unix = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64
        };
        let start = Instant::now();
        let mut t = Tunnel::new(
            Identity::generate(),
            TunnelConfig::default(),
            start,
            rng::from_os(),
        );
        t.set_candidates(decoys);
        t.connect(start, unix(), target, &[at]).unwrap();
        let mut buf = [0u8; 2048];
        while start.elapsed() < ATTACK {
            while let Some(tx) = t.poll_transmit() {
                let _ = sock.send_to(&tx.contents, tx.dest);
            }
            while t.poll_event().is_some() {}
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                t.handle_packet(Instant::now(), unix(), from, &buf[..n]);
            }
            t.handle_timeout(Instant::now(), unix());
        }
    })
    .join()
    .unwrap();
}

#[test]
fn message_1_naming_a_victim_cannot_aim_the_listener_at_it() {
    if !can_run() {
        return;
    }
    let mut lab = Lab::new(env!("CARGO_BIN_EXE_shipworm"), "hx");
    let t = lab.tag.clone();
    let (w, atk, lst, vic) = (lab.ns("w"), lab.ns("atk"), lab.ns("lst"), lab.ns("vic"));
    for (i, ns) in [&atk, &lst, &vic].into_iter().enumerate() {
        let n = i + 1;
        lab.link_named(
            &w,
            &format!("w{n}{t}"),
            &format!("5.7.{n}.1/24"),
            ns,
            &format!("h{n}{t}"),
            &format!("5.7.{n}.2/24"),
        );
        lab.exec(
            ns,
            &[
                "ip",
                "route",
                "add",
                "default",
                "via",
                &format!("5.7.{n}.1"),
            ],
        );
    }
    lab.exec(&w, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    // What the victim receives, and what the attacker sends, counted by the kernels.
    lab.nft(
        &vic,
        "table inet count {\n counter got {}\n chain input { type filter hook input priority 0; udp dport != 0 counter name got; }\n}",
    );
    lab.nft(
        &atk,
        "table inet count {\n counter sent {}\n chain output { type filter hook output priority 0; udp dport != 0 counter name sent; }\n}",
    );

    let (key, _, _) = lab.identity("l.key");
    let key = key.to_string_lossy().into_owned();
    let bin = lab.bin.to_string_lossy().into_owned();
    let listener = lab.spawn(
        &lst,
        "listener",
        &[
            &bin,
            "--identity",
            &key,
            "--no-portmap",
            "--bind",
            "0.0.0.0:4000",
            "listen",
        ],
    );
    assert!(
        lab.wait_log("listener", "sw1", Duration::from_secs(15)),
        "{}",
        lab.log("listener")
    );
    let ticket: Ticket = lab
        .log("listener")
        .lines()
        .find(|l| l.starts_with("sw1"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Twelve ports of the victim, as a hostile peer would list them.
    let decoys = (0..12)
        .map(|i| SocketAddr::from(([5, 7, 3, 2], 7000 + i)))
        .collect();
    attack(
        &atk,
        ticket.node_id(),
        "5.7.2.2:4000".parse().unwrap(),
        decoys,
    );

    let (sent_pkts, sent_bytes) = counter(&lab, &atk, "sent");
    let (got_pkts, got_bytes) = counter(&lab, &vic, "got");
    eprintln!(
        "attacker sent {sent_pkts} packets / {sent_bytes} bytes; victim got {got_pkts} / {got_bytes}"
    );
    assert!(
        sent_pkts > 0,
        "the attacker sent nothing: the test proves nothing"
    );
    assert!(
        got_bytes <= sent_bytes,
        "amplification: the victim got {got_bytes} bytes ({got_pkts} packets) for the attacker's \
         {sent_bytes} bytes ({sent_pkts} packets)"
    );
    // The engine's budget for an IP that never answered, over the attack and the moment after
    // it until the counters were read.
    let budget = unverified_ip_budget(ATTACK + Duration::from_secs(1));
    assert!(
        got_pkts <= budget,
        "the victim, which never answered, got {got_pkts} packets (budget {budget})"
    );
    lab.kill_child(listener);
}
