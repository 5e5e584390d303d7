//! Hostile and broken input to the engine: every drop is counted under its reason, none panics.

use std::net::SocketAddr;
use std::time::Instant;

use shipworm_rendezvous::wire::{Message, Registered, TOKEN_LEN};
use shipworm_tunnel::rng::from_seed;
use shipworm_tunnel::Identity;

use super::paths::CandidateKind;
use super::*;

const UNIX: u64 = 1_800_000_000_000;

fn server() -> SocketAddr {
    "198.51.100.1:3478".parse().unwrap()
}

fn stun_server() -> SocketAddr {
    "[2001:db8::1]:3478".parse().unwrap()
}

fn engine(now: Instant) -> Engine {
    let config = EngineConfig {
        rendezvous: vec![server()],
        stun: vec![stun_server()],
        ..EngineConfig::default()
    };
    Engine::new(Identity::from_seed(&[7; 32]), config, now, from_seed(1))
}

/// Runs the first timeout and returns what it sent: a REGISTER and a STUN request.
fn start(e: &mut Engine, now: Instant) -> Vec<Transmit> {
    e.handle_timeout(now, UNIX);
    std::iter::from_fn(|| e.poll_transmit()).collect()
}

fn register_tx(bytes: &[u8]) -> u64 {
    match Message::parse(bytes).unwrap() {
        Message::Register(r) => r.tx,
        other => panic!("not a REGISTER: {other:?}"),
    }
}

fn registered(tx: u64) -> Vec<u8> {
    Message::Registered(Registered {
        tx,
        lifetime_s: 300,
        alt_stun_port: 0,
        token: [9; TOKEN_LEN],
        observed: "203.0.113.10:40000".parse().unwrap(),
        flags: 0,
    })
    .to_vec()
}

#[test]
fn transaction_ids_come_from_the_injected_rng() {
    let now = Instant::now();
    let tx = |seed| {
        let config = EngineConfig {
            rendezvous: vec![server()],
            ..EngineConfig::default()
        };
        let mut e = Engine::new(Identity::from_seed(&[7; 32]), config, now, from_seed(seed));
        let sent = start(&mut e, now);
        register_tx(&sent[0].contents)
    };
    assert_eq!(tx(1), tx(1));
    assert_ne!(tx(1), tx(2));
}

#[test]
fn a_registered_answer_counts_only_with_our_transaction_id() {
    let now = Instant::now();
    let mut e = engine(now);
    let sent = start(&mut e, now);
    let reg = sent.iter().find(|t| t.dest == server()).expect("REGISTER");
    let tx = register_tx(&reg.contents);

    e.handle_packet(now, UNIX, server(), &registered(tx.wrapping_add(1)));
    assert_eq!(e.drops().get(DropReason::UnknownRendezvousTransaction), 1);
    assert_eq!(
        e.registrations()[0].1,
        None,
        "a forged answer registers nothing"
    );

    e.handle_packet(now, UNIX, server(), &registered(tx));
    assert!(e.registrations()[0].1.is_some());
    assert_eq!(e.drops().total(), 1);
}

#[test]
fn malformed_and_stray_datagrams_are_counted_by_reason() {
    let now = Instant::now();
    let mut e = engine(now);
    start(&mut e, now);
    let stranger: SocketAddr = "192.0.2.66:1234".parse().unwrap();

    e.handle_packet(now, UNIX, stranger, b"hello");
    assert_eq!(e.drops().get(DropReason::Unrecognized), 1);
    e.handle_packet(now, UNIX, server(), &[0xC1, 0, 1]);
    assert_eq!(e.drops().get(DropReason::MalformedRendezvous), 1);
    e.handle_packet(now, UNIX, stranger, &registered(1));
    assert_eq!(e.drops().get(DropReason::RendezvousFromStranger), 1);
    e.handle_packet_on(now, UNIX, 3, server(), &registered(1));
    assert_eq!(e.drops().get(DropReason::NotTunnelOnExtraSocket), 1);
    assert_eq!(e.drops().total(), 4);
}

#[test]
fn stun_answers_are_checked_against_our_request() {
    let now = Instant::now();
    let mut e = engine(now);
    let sent = start(&mut e, now);
    let req = sent
        .iter()
        .find(|t| t.dest == stun_server())
        .expect("STUN request");
    let observed: SocketAddr = "[2001:db8:1::2]:41641".parse().unwrap();
    let mut out = [0u8; shipworm_rendezvous::wire::stun::MAX_RESPONSE_LEN];
    let n = shipworm_rendezvous::wire::stun::binding_response(&req.contents, observed, &mut out)
        .expect("a valid request");
    let answer = &out[..n];

    // Another transaction.
    let mut other = answer.to_vec();
    other[10] ^= 0xFF;
    e.handle_packet(now, UNIX, stun_server(), &other);
    assert_eq!(e.drops().get(DropReason::UnknownStunTransaction), 1);
    // Our transaction, from someone else.
    e.handle_packet(now, UNIX, server(), answer);
    assert_eq!(e.drops().get(DropReason::StunFromWrongServer), 1);
    // Our transaction, truncated.
    e.handle_packet(now, UNIX, stun_server(), &answer[..24]);
    assert_eq!(e.drops().get(DropReason::MalformedStun), 1);
    // The real answer.
    e.handle_packet(now, UNIX, stun_server(), answer);
    assert!(e
        .local_candidates()
        .iter()
        .any(|c| c.addr == observed && c.kind == CandidateKind::Reflexive));
    assert_eq!(e.drops().total(), 3);
}

#[test]
fn full_queues_and_tables_count_what_they_refuse() {
    let now = Instant::now();
    let mut e = Engine::new(
        Identity::from_seed(&[7; 32]),
        EngineConfig::default(),
        now,
        from_seed(1),
    );
    // No rendezvous and no address: every attempt fails at once, with an event.
    let peer = Identity::from_seed(&[8; 32]).node_id();
    for _ in 0..MAX_EVENTS + 5 {
        e.connect(now, UNIX, peer, &[]);
    }
    assert_eq!(e.drops().get(DropReason::EventQueueFull), 5);
    for i in 0..MAX_LOCAL_CANDIDATES as u16 + 2 {
        e.add_local_candidate(
            SocketAddr::from(([192, 168, 0, 2], 1000 + i)),
            CandidateKind::Host,
        );
    }
    assert_eq!(e.drops().get(DropReason::LocalCandidatesFull), 2);
    for i in 0..MAX_RENDEZVOUS as u16 + 1 {
        e.add_rendezvous(now, SocketAddr::from(([198, 51, 100, 1], 3000 + i)));
    }
    assert_eq!(e.drops().get(DropReason::RendezvousServersFull), 1);
}

#[test]
fn diagnostics_carry_the_drops_in_text_and_json() {
    let now = Instant::now();
    let mut e = engine(now);
    start(&mut e, now);
    e.handle_packet(now, UNIX, server(), &[0xC1, 0, 1]);
    let d = e.diagnostics();
    assert_eq!(d.drops.get(DropReason::MalformedRendezvous), 1);
    let json: serde_json::Value = serde_json::from_str(&d.to_json()).unwrap();
    assert_eq!(json["drops"]["malformed_rendezvous"], 1);
    assert_eq!(json["registrations"][0]["server"], "198.51.100.1:3478");
    assert!(json["registrations"][0]["observed"].is_null());
    assert_eq!(json["maps_per_destination"], serde_json::Value::Null);
    assert!(d.to_string().contains("malformed_rendezvous"));
}
