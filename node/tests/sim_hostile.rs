//! Hostile peers in the deterministic simulator (issue 10, `docs/security.md`): an
//! attacker with a valid key, an attacker spoofing source addresses, and a victim host that
//! counts every datagram and byte it receives. One test per attack, each asserting that toward an
//! address that never answered the node sends at most its fixed packet budget and at most as
//! many bytes as the attacker sent (amplification ≤ 1), and that honest peers in the same
//! simulation still connect meanwhile.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use shipworm::engine::gate::{unverified_address_budget, unverified_ip_budget};
use shipworm::engine::NodeEvent;
use shipworm::rendezvous::wire::{IntroFwd, Message};
use shipworm::tunnel::wire::payload::{FLAG_MAPPING_KNOWN, FLAG_MAPS_PER_DESTINATION};
use shipworm_tests::sim::{NatModel, Sim, SiteConfig, RENDEZVOUS_V4};

const VICTIM: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99));
const ATTACKER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 66)), 4444);

fn victim(port: u16) -> SocketAddr {
    SocketAddr::new(VICTIM, port)
}

/// Node 0 is the target: a public host (the worst case: nothing filters for it). Nodes 1 and 2
/// are honest peers behind home routers. Everyone registers first.
fn world(seed: u64) -> Sim {
    let mut sim = Sim::new(
        seed,
        vec![
            SiteConfig::nat(None),
            SiteConfig::nat(Some(NatModel::port_restricted())),
            SiteConfig::nat(Some(NatModel::port_restricted())),
        ],
    );
    assert!(
        sim.run_until(Duration::from_secs(3), |s| s.server.registered() == 3
            && s.nodes[0].engine.maps_per_destination().is_some()),
        "registration"
    );
    sim
}

fn target(sim: &Sim) -> SocketAddr {
    sim.nodes[0].v4
}

/// Runs `steps` times `every`, calling `attack` before each step.
fn attack_for(sim: &mut Sim, steps: u32, every: Duration, mut attack: impl FnMut(&mut Sim, u32)) {
    for k in 0..steps {
        attack(sim, k);
        let until = sim.elapsed() + every;
        sim.run_until(until, |_| false);
    }
}

/// An honest peer connects to the target while the attack goes on.
fn honest_connects(sim: &mut Sim) {
    sim.connect(1, 0);
    let ok = sim.run_until(sim.elapsed() + Duration::from_secs(5), |s| {
        s.connected(1, 0) && s.connected(0, 1)
    });
    assert!(ok, "an honest peer could not connect during the attack");
}

/// What reached the victim, against what the attacker sent, and the bounds.
fn assert_bounded(sim: &Sim, what: &str) {
    let v = &sim.victims[0];
    let a = &sim.attackers[0];
    eprintln!(
        "{what}: victim got {} datagrams, {} bytes; the attacker sent {} datagrams, {} bytes \
         (amplification {:.2})",
        v.packets,
        v.bytes,
        a.packets_sent,
        a.bytes_sent,
        v.bytes as f64 / a.bytes_sent.max(1) as f64
    );
    // The IP's budget over the whole run: its burst, then one per interval.
    let budget = unverified_ip_budget(sim.elapsed());
    assert!(
        v.packets <= budget,
        "{what}: {} datagrams reached a host that never answered in {:?} (budget {budget})",
        v.packets,
        sim.elapsed()
    );
    assert!(
        v.bytes <= a.bytes_sent,
        "{what}: amplification {} bytes out for {} bytes in",
        v.bytes,
        a.bytes_sent
    );
}

#[test]
fn message_1_cannot_aim_message_2_at_a_victim() {
    let mut sim = world(21);
    sim.add_victim(VICTIM);
    // The reported attack: message 1 names 12 ports of a third host, sent again and again.
    let candidates = (0..12).map(|p| victim(7000 + p)).collect();
    let a = sim.add_attacker(0xA1, ATTACKER, 0, candidates);
    let to = target(&sim);
    attack_for(&mut sim, 20, Duration::from_millis(250), |sim, _| {
        sim.attacker_connect(a, 0, to);
    });
    honest_connects(&mut sim);
    attack_for(&mut sim, 28, Duration::from_millis(250), |sim, _| {
        sim.attacker_connect(a, 0, to);
    });
    assert_bounded(&sim, "message 1 naming a victim");
}

#[test]
fn message_1_from_a_spoofed_source_cannot_aim_message_2_at_a_victim() {
    let mut sim = world(22);
    sim.add_victim(VICTIM);
    let a = sim.add_attacker(0xA2, ATTACKER, 0, vec![victim(7000)]);
    // Every message 1 claims to come from the victim.
    sim.attackers[a].source = victim(7001);
    let to = target(&sim);
    attack_for(&mut sim, 40, Duration::from_millis(250), |sim, _| {
        sim.attacker_connect(a, 0, to);
    });
    honest_connects(&mut sim);
    assert_bounded(&sim, "spoofed message 1");
    for port in [7000, 7001] {
        let sent = sim.victims[0].per_port.get(&port).copied().unwrap_or(0);
        let budget = unverified_address_budget(sim.elapsed());
        assert!(
            sent <= budget,
            "{sent} datagrams to {} in {:?} (budget {budget})",
            victim(port),
            sim.elapsed()
        );
    }
}

#[test]
fn birthday_probes_only_the_observed_ip() {
    let mut sim = world(23);
    sim.add_victim(VICTIM);
    assert_eq!(sim.nodes[0].engine.maps_per_destination(), Some(false));
    // A key holder claims a hard NAT (maps per destination, no port mapping) and that it sits at
    // the victim's address: the target is "easy" and would spray random ports of that IP.
    let hard = FLAG_MAPPING_KNOWN | FLAG_MAPS_PER_DESTINATION;
    let a = sim.add_attacker(0xA3, ATTACKER, hard, vec![victim(5000)]);
    sim.attackers[a].source = victim(5000);
    let to = target(&sim);
    sim.attacker_connect(a, 0, to);
    sim.run_until(sim.elapsed() + Duration::from_secs(4), |_| false);
    honest_connects(&mut sim);
    // A fresh key repeats it.
    let b = sim.add_attacker(0xA4, ATTACKER, hard, vec![victim(5001)]);
    sim.attackers[b].source = victim(5001);
    sim.attacker_connect(b, 0, to);
    sim.run_until(sim.elapsed() + Duration::from_secs(4), |_| false);
    let both = sim.attackers[0].bytes_sent + sim.attackers[1].bytes_sent;
    let v = sim.victims[0].clone();
    eprintln!(
        "birthday: victim got {} datagrams, {} bytes; attackers sent {both} bytes",
        v.packets, v.bytes
    );
    assert!(v.packets <= unverified_ip_budget(sim.elapsed()), "{v:?}");
    assert!(v.bytes <= both, "{v:?}");
    assert!(
        !sim.saw(0, |e| matches!(e, NodeEvent::OpenSockets { .. })),
        "sockets opened for a claim"
    );
}

#[test]
fn advert_cannot_aim_probes_at_a_victim() {
    let mut sim = world(24);
    sim.add_victim(VICTIM);
    let a = sim.add_attacker(0xA5, ATTACKER, 0, Vec::new());
    let to = target(&sim);
    sim.attacker_connect(a, 0, to);
    sim.run_until(sim.elapsed() + Duration::from_millis(200), |_| false);
    // Then ADVERT after ADVERT, each naming 16 fresh addresses: the victim's ports, and
    // loopback, private, link-local and overlay addresses of whoever is near the target.
    let local_junk: Vec<SocketAddr> = [
        "127.0.0.1:22",
        "10.0.0.1:53",
        "172.16.0.1:80",
        "169.254.1.1:123",
        "[::1]:22",
        "[fe80::1]:53",
        "[fd5b:7a1e:9c03::1]:7300",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    attack_for(&mut sim, 60, Duration::from_millis(200), |sim, k| {
        let mut c: Vec<SocketAddr> = (0..9).map(|p| victim(1000 + (k * 9 + p) as u16)).collect();
        c.extend(local_junk.iter().copied());
        sim.attackers[a].tunnel.set_candidates(c);
        sim.attacker_advert(a, 0, to);
    });
    honest_connects(&mut sim);
    assert_bounded(&sim, "ADVERT naming a victim");
    let peer = sim.attackers[a].tunnel.node_id();
    let paths = sim.nodes[0]
        .engine
        .paths(&peer)
        .expect("the attacker has a session");
    for p in &paths.pairs {
        assert!(
            !local_junk.contains(&p.remote),
            "a non-global candidate became a pair: {}",
            p.remote
        );
    }
    let claimed = paths
        .pairs
        .iter()
        .filter(|p| p.kind == shipworm::engine::paths::CandidateKind::Advertised)
        .count();
    assert!(claimed <= 16, "{claimed} pairs from claims");
    let d = sim.nodes[0].engine.diagnostics();
    assert!(d.drops.get(shipworm::engine::DropReason::AdvertRateLimited) > 0);
    assert_eq!(
        d.drops.get(shipworm::engine::DropReason::ProbeTableFull),
        0,
        "path checks stopped"
    );
}

#[test]
fn one_message_1_buys_at_most_its_own_size() {
    let mut sim = world(28);
    // Sixteen victims on sixteen IPs: the per-IP budgets alone would let each get a few.
    let ips: Vec<IpAddr> = (0..16u8)
        .map(|k| IpAddr::V4(Ipv4Addr::new(192, 0, 2, 100 + k)))
        .collect();
    for ip in &ips {
        sim.add_victim(*ip);
    }
    let candidates = ips.iter().map(|ip| SocketAddr::new(*ip, 443)).collect();
    let a = sim.add_attacker(0xA8, ATTACKER, 0, candidates);
    let to = target(&sim);
    sim.attacker_connect(a, 0, to);
    sim.run_until(sim.elapsed() + Duration::from_secs(6), |_| false);
    let got: u64 = sim.victims.iter().map(|v| v.bytes).sum();
    let sent = sim.attackers[a].bytes_sent;
    eprintln!("one message 1: victims got {got} bytes, the attacker sent {sent} bytes");
    assert!(got <= sent, "{got} bytes out for {sent} bytes in");
    honest_connects(&mut sim);
}

#[test]
fn spare_sockets_close_without_a_path() {
    // A hard NAT meets an easy one that stops answering once the handshake is done: the 256
    // spare sockets may not stay open until a path is found, since none will be.
    let mut sim = Sim::new(
        29,
        vec![
            SiteConfig::nat(Some(NatModel::symmetric())),
            SiteConfig::nat(Some(NatModel::port_restricted())),
        ],
    );
    assert!(sim.run_until(Duration::from_secs(3), |s| (0..2)
        .all(|i| s.nodes[i].engine.maps_per_destination().is_some())));
    sim.connect(0, 1);
    assert!(sim.run_until(sim.elapsed() + Duration::from_secs(5), |s| s
        .saw(0, |e| matches!(e, NodeEvent::OpenSockets { .. }))));
    sim.set_loss(1, 100);
    let opened = sim.elapsed();
    let closed = sim.run_until(opened + Duration::from_secs(10), |s| {
        s.saw(0, |e| matches!(e, NodeEvent::CloseSockets { .. }))
    });
    assert!(closed, "the spare sockets stayed open");
    let t = sim
        .when(0, |e| matches!(e, NodeEvent::CloseSockets { .. }))
        .unwrap();
    eprintln!("spare sockets closed {:?} after they opened", t - opened);
    assert!(!sim.connected(0, 1));
}

#[test]
fn probe_answer_cannot_poison_our_candidates() {
    let mut sim = world(25);
    let lie: SocketAddr = "192.0.2.77:7777".parse().unwrap();
    let a = sim.add_attacker(0xA6, ATTACKER, 0, Vec::new());
    let to = target(&sim);
    // The attacker's tunnel sees the target's probes "from" the lie and answers accordingly.
    sim.attackers[a].seen_from = Some(lie);
    sim.attackers[a].send_to = Some(to);
    sim.attacker_connect(a, 0, to);
    sim.run_until(sim.elapsed() + Duration::from_secs(3), |_| false);
    let poisoned = |s: &Sim| {
        s.nodes[0]
            .engine
            .local_candidates()
            .iter()
            .any(|c| c.addr == lie)
    };
    assert!(!poisoned(&sim), "one peer's claim became our candidate");
    honest_connects(&mut sim);
    sim.run_until(sim.elapsed() + Duration::from_secs(1), |_| false);
    let heard = sim.nodes[1]
        .engine
        .paths(&sim.id(0))
        .is_some_and(|p| p.pairs.iter().any(|x| x.remote == lie));
    assert!(!heard, "the lie was advertised to an honest peer");
}

/// An INTRO_FWD as the rendezvous would send it (but from anyone: it is not authenticated).
fn intro_fwd(from: [u8; 32], from_addr: SocketAddr, payload: &[u8]) -> Vec<u8> {
    Message::IntroFwd(IntroFwd {
        tx: 1,
        from,
        from_addr,
        payload,
    })
    .to_vec()
}

#[test]
fn spoofed_intro_fwd_creates_no_state() {
    let mut sim = world(26);
    sim.add_victim(VICTIM);
    let to = target(&sim);
    let peers = |s: &Sim| s.nodes[0].engine.diagnostics().peers.len();
    // Junk that starts like message 1, claimed for many ids.
    let mut junk = vec![0xD1, 1, 0, 0];
    junk.extend_from_slice(&[0x55; 200]);
    for k in 0..200u32 {
        let id = shipworm::Identity::from_seed(&[(k % 251) as u8 + 1; 32]).node_id();
        let msg = intro_fwd(*id.as_bytes(), victim(9000), &junk);
        sim.inject(RENDEZVOUS_V4, to, msg);
    }
    sim.run_until(sim.elapsed() + Duration::from_millis(100), |_| false);
    eprintln!(
        "after 200 spoofed INTRO_FWDs with junk: {} peers",
        peers(&sim)
    );
    assert_eq!(peers(&sim), 0, "state from unauthenticated INTRO_FWD");

    // A real message 1 of one key, introduced as somebody else.
    let a = sim.add_attacker(0xA7, ATTACKER, 0, Vec::new());
    let (now, unix, peer) = (sim.now(), sim.unix(), sim.id(0));
    sim.attackers[a]
        .tunnel
        .connect(now, unix, peer, &[])
        .unwrap();
    let m1 = std::iter::from_fn(|| sim.attackers[a].tunnel.poll_transmit())
        .next()
        .map(|t| t.contents);
    let m1 = m1.unwrap_or_else(|| {
        let mut v = None;
        while let Some(e) = sim.attackers[a].tunnel.poll_event() {
            if let shipworm::tunnel::tunnel::Event::Initiation { packet, .. } = e {
                v = Some(packet);
            }
        }
        v.expect("message 1")
    });
    let claimed = shipworm::Identity::from_seed(&[0x42; 32]).node_id();
    sim.inject(
        RENDEZVOUS_V4,
        to,
        intro_fwd(*claimed.as_bytes(), victim(9001), &m1),
    );
    sim.run_until(sim.elapsed() + Duration::from_secs(1), |_| false);
    eprintln!(
        "after a message 1 introduced under another id: {} peers, victim got {} datagrams",
        peers(&sim),
        sim.victims[0].packets
    );
    assert!(
        sim.nodes[0].engine.paths(&claimed).is_none(),
        "state for an id nobody proved"
    );
    assert_eq!(
        sim.victims[0].packets, 0,
        "answered an introduction that lied"
    );
    honest_connects(&mut sim);
}

#[test]
fn a_million_spoofed_packets_leave_the_engine_bounded() {
    let mut sim = world(27);
    let to = target(&sim);
    let mut junk = vec![0xD1, 1, 0, 0];
    junk.extend_from_slice(&[0x55; 180]);
    let (now, unix) = (sim.now(), sim.unix());
    let engine = &mut sim.nodes[0].engine;
    let mut id = [0u8; 32];
    for k in 0..1_000_000u32 {
        match k % 4 {
            // Spoofed INTRO_FWDs for ever new ids, from the rendezvous' address.
            0 | 1 => {
                id[..4].copy_from_slice(&k.to_le_bytes());
                let msg = intro_fwd(id, SocketAddr::new(VICTIM, k as u16), &junk);
                engine.handle_packet(now, unix, RENDEZVOUS_V4, &msg);
            }
            // Junk tunnel packets from anywhere.
            2 => {
                let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::from(k)), 1000);
                engine.handle_packet(now, unix, from, &junk);
            }
            // Junk of no known kind.
            _ => engine.handle_packet(now, unix, to, &k.to_le_bytes()),
        }
        while let Some(t) = engine.poll_transmit() {
            engine.recycle(t.contents);
        }
        while engine.poll_event().is_some() {}
    }
    let sizes = engine.state_sizes();
    eprintln!("after a million spoofed datagrams: {sizes:?}");
    assert_eq!(sizes.peers, 0, "{sizes:?}");
    assert!(sizes.total() <= 64, "{sizes:?}");
    honest_connects(&mut sim);
}
