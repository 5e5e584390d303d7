//! The rendezvous server's rules, proven on the sans-IO core with a virtual clock.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use shipworm_rendezvous::server::{DropReason, PacketKind, Server, ServerConfig, Socket};
use shipworm_rendezvous::table::RateLimit;
use shipworm_rendezvous::wire::stun;
use shipworm_rendezvous::wire::*;
use shipworm_tunnel::Identity;

const T0_UNIX_MS: u64 = 1_800_000_000_000;

struct Harness {
    server: Server,
    start: Instant,
    elapsed: Duration,
    tx: u64,
}

type Sent = Vec<(Socket, SocketAddr, Vec<u8>)>;

impl Harness {
    fn new(config: ServerConfig) -> Self {
        let start = Instant::now();
        Self {
            server: Server::new(config, start, shipworm_tunnel::rng::from_seed(7)),
            start,
            elapsed: Duration::ZERO,
            tx: 0,
        }
    }

    fn default() -> Self {
        Self::new(ServerConfig::default())
    }

    fn now(&self) -> Instant {
        self.start + self.elapsed
    }

    fn unix_ms(&self) -> u64 {
        T0_UNIX_MS + self.elapsed.as_millis() as u64
    }

    fn advance(&mut self, d: Duration) {
        self.elapsed += d;
        let now = self.now();
        self.server.handle_timeout(now);
    }

    fn send_on(&mut self, socket: Socket, from: SocketAddr, bytes: &[u8]) -> Sent {
        let (now, unix) = (self.now(), self.unix_ms());
        self.server.handle_packet(now, unix, socket, from, bytes);
        let mut out = Vec::new();
        while let Some(t) = self.server.poll_transmit() {
            out.push((t.socket, t.dest, t.contents.to_vec()));
        }
        out
    }

    fn send(&mut self, from: SocketAddr, bytes: &[u8]) -> Sent {
        self.send_on(Socket::Primary, from, bytes)
    }

    fn next_tx(&mut self) -> u64 {
        self.tx += 1;
        self.tx
    }

    /// Registers `id` from `from`; returns the token.
    fn register(&mut self, id: &Identity, from: SocketAddr) -> [u8; TOKEN_LEN] {
        let tx = self.next_tx();
        let ts = self.unix_ms();
        let out = self.send(
            from,
            &Message::Register(Register::signed(id, tx, ts)).to_vec(),
        );
        assert_eq!(out.len(), 1, "one reply");
        match Message::parse(&out[0].2).unwrap() {
            Message::Registered(r) => {
                assert_eq!(r.tx, tx);
                assert_eq!(r.observed, from);
                r.token
            }
            other => panic!("expected REGISTERED, got {other:?}"),
        }
    }

    fn introduce(
        &mut self,
        from: SocketAddr,
        id: &Identity,
        token: [u8; 16],
        target: &Identity,
        payload: &[u8],
    ) -> Sent {
        let tx = self.next_tx();
        let msg = Message::Introduce(Introduce {
            tx,
            node: *id.node_id().as_bytes(),
            token,
            target: *target.node_id().as_bytes(),
            payload,
        });
        self.send(from, &msg.to_vec())
    }
}

fn id(n: u8) -> Identity {
    Identity::from_seed(&[n; 32])
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn only_error(out: &Sent) -> ErrorCode {
    assert_eq!(out.len(), 1, "{out:?}");
    match Message::parse(&out[0].2).unwrap() {
        Message::Error(e) => e.code,
        other => panic!("expected ERROR, got {other:?}"),
    }
}

fn ack(out: &[u8]) -> IntroAck {
    match Message::parse(out).unwrap() {
        Message::IntroAck(a) => a,
        other => panic!("expected INTRO_ACK, got {other:?}"),
    }
}

#[test]
fn registration_reports_the_observed_address_of_each_family() {
    let mut h = Harness::default();
    h.register(&id(1), addr("203.0.113.5:40000"));
    h.register(&id(2), addr("[2001:db8::5]:40000"));
    // A dual-stack socket reports IPv4 peers as mapped addresses: they are registered as IPv4.
    let tx = h.next_tx();
    let ts = h.unix_ms();
    let out = h.send(
        addr("[::ffff:198.51.100.9]:7"),
        &Message::Register(Register::signed(&id(3), tx, ts)).to_vec(),
    );
    assert_eq!(out[0].1, addr("198.51.100.9:7"));
    let Message::Registered(r) = Message::parse(&out[0].2).unwrap() else {
        panic!()
    };
    assert_eq!(r.observed, addr("198.51.100.9:7"));
    assert_eq!(r.lifetime_s, 120);
    assert_eq!(h.server.registered(), 3);
    assert_eq!(h.server.stats().registrations_new, 3);
}

#[test]
fn refresh_keeps_a_registration_alive_and_expiry_forgets_it() {
    let mut h = Harness::default();
    let a = addr("203.0.113.5:40000");
    let token = h.register(&id(1), a);
    for _ in 0..10 {
        h.advance(Duration::from_secs(25));
        let tx = h.next_tx();
        let out = h.send(
            a,
            &Message::Refresh(Refresh {
                tx,
                node: *id(1).node_id().as_bytes(),
                token,
            })
            .to_vec(),
        );
        assert!(matches!(
            Message::parse(&out[0].2).unwrap(),
            Message::Registered(_)
        ));
    }
    assert_eq!(h.server.registered(), 1, "250 s of refreshes kept it");
    h.advance(Duration::from_secs(121));
    h.advance(Duration::from_secs(6));
    assert_eq!(h.server.registered(), 0, "expired and swept");
    let tx = h.next_tx();
    let out = h.send(
        a,
        &Message::Refresh(Refresh {
            tx,
            node: *id(1).node_id().as_bytes(),
            token,
        })
        .to_vec(),
    );
    assert_eq!(only_error(&out), ErrorCode::NotRegistered);
}

#[test]
fn refresh_token_works_only_from_the_address_it_was_issued_to() {
    let mut h = Harness::default();
    let token = h.register(&id(1), addr("203.0.113.5:40000"));
    let tx = h.next_tx();
    let msg = Message::Refresh(Refresh {
        tx,
        node: *id(1).node_id().as_bytes(),
        token,
    })
    .to_vec();
    assert_eq!(
        only_error(&h.send(addr("203.0.113.6:40000"), &msg)),
        ErrorCode::NotRegistered
    );
    assert_eq!(
        only_error(&h.send(addr("203.0.113.5:40001"), &msg)),
        ErrorCode::NotRegistered
    );
    let mut forged = token;
    forged[0] ^= 1;
    let msg = Message::Refresh(Refresh {
        tx,
        node: *id(1).node_id().as_bytes(),
        token: forged,
    })
    .to_vec();
    assert_eq!(
        only_error(&h.send(addr("203.0.113.5:40000"), &msg)),
        ErrorCode::NotRegistered
    );
}

#[test]
fn tokens_survive_one_secret_rotation() {
    let mut h = Harness::new(ServerConfig {
        token_rotation: Duration::from_secs(60),
        ..Default::default()
    });
    let a = addr("203.0.113.5:40000");
    let mut token = h.register(&id(1), a);
    for _ in 0..6 {
        h.advance(Duration::from_secs(30));
        let tx = h.next_tx();
        let out = h.send(
            a,
            &Message::Refresh(Refresh {
                tx,
                node: *id(1).node_id().as_bytes(),
                token,
            })
            .to_vec(),
        );
        let Message::Registered(r) = Message::parse(&out[0].2).unwrap() else {
            panic!("{out:?}")
        };
        token = r.token;
    }
}

#[test]
fn replayed_or_old_register_is_refused() {
    let mut h = Harness::default();
    let a = addr("203.0.113.5:40000");
    let reg = Message::Register(Register::signed(&id(1), 1, h.unix_ms())).to_vec();
    assert!(matches!(
        Message::parse(&h.send(a, &reg)[0].2).unwrap(),
        Message::Registered(_)
    ));
    // The same bytes again, even from the attacker's own address: refused, registration unmoved.
    let attacker = addr("192.0.2.66:1");
    assert_eq!(
        only_error(&h.send(attacker, &reg)),
        ErrorCode::StaleTimestamp
    );
    assert_eq!(h.server.stats().dropped(DropReason::StaleTimestamp), 1);
    // An introduction to the node still reaches the real address.
    let token = h.register(&id(2), addr("198.51.100.1:9"));
    let out = h.introduce(addr("198.51.100.1:9"), &id(2), token, &id(1), b"hello");
    assert_eq!(out[0].1, a);
}

#[test]
fn register_outside_the_clock_window_gets_the_server_time() {
    let mut h = Harness::default();
    let skewed = h.unix_ms() - 31_000;
    let out = h.send(
        addr("203.0.113.5:1"),
        &Message::Register(Register::signed(&id(1), 1, skewed)).to_vec(),
    );
    let Message::Error(e) = Message::parse(&out[0].2).unwrap() else {
        panic!()
    };
    assert_eq!(e.code, ErrorCode::ClockSkew);
    assert_eq!(e.server_time_ms, h.unix_ms());
    assert_eq!(h.server.registered(), 0);
}

#[test]
fn no_state_is_kept_before_a_valid_signature() {
    let mut h = Harness::default();
    let mut reg = Register::signed(&id(1), 1, h.unix_ms());
    reg.signature[10] ^= 0x40;
    let out = h.send(
        addr("203.0.113.5:1"),
        &Message::Register(reg.clone()).to_vec(),
    );
    assert_eq!(only_error(&out), ErrorCode::BadSignature);
    // A signature by another key over the same fields.
    let mut other = Register::signed(&id(2), 1, h.unix_ms());
    other.node = reg.node;
    assert_eq!(
        only_error(&h.send(addr("203.0.113.5:1"), &Message::Register(other).to_vec())),
        ErrorCode::BadSignature
    );
    // Refreshes and introductions from nobody.
    let fake = Message::Refresh(Refresh {
        tx: 1,
        node: reg.node,
        token: [0; 16],
    })
    .to_vec();
    assert_eq!(
        only_error(&h.send(addr("203.0.113.5:1"), &fake)),
        ErrorCode::NotRegistered
    );
    let out = h.introduce(addr("203.0.113.5:1"), &id(1), [0; 16], &id(2), b"x");
    assert_eq!(only_error(&out), ErrorCode::NotRegistered);
    assert_eq!(h.server.registered(), 0);
    assert_eq!(h.server.stats().dropped(DropReason::BadSignature), 2);
}

#[test]
fn an_introduction_is_forwarded_once_with_the_senders_observed_address() {
    let mut h = Harness::default();
    let (a, b) = (addr("203.0.113.5:40000"), addr("[2001:db8::b]:50000"));
    let ta = h.register(&id(1), a);
    h.register(&id(2), b);
    let out = h.introduce(a, &id(1), ta, &id(2), b"noise message 1");
    assert_eq!(out.len(), 2, "one forward, one ack");
    let (_, dest, fwd) = &out[0];
    assert_eq!(*dest, b);
    let Message::IntroFwd(f) = Message::parse(fwd).unwrap() else {
        panic!()
    };
    assert_eq!(f.from, *id(1).node_id().as_bytes());
    assert_eq!(f.from_addr, a);
    assert_eq!(f.payload, b"noise message 1");
    let (_, dest, ackb) = &out[1];
    assert_eq!(*dest, a);
    assert_eq!(
        ack(ackb),
        IntroAck {
            tx: f.tx,
            status: IntroStatus::Forwarded,
            target_addr: Some(b)
        }
    );
    assert_eq!(h.server.stats().introductions_forwarded, 1);

    let out = h.introduce(a, &id(1), ta, &id(9), b"x");
    assert_eq!(out.len(), 1);
    assert_eq!(ack(&out[0].2).status, IntroStatus::UnknownPeer);
}

#[test]
fn introductions_are_rate_limited_per_sender() {
    let config = ServerConfig {
        sender_intro_rate: RateLimit {
            per_second: 2,
            burst: 3,
        },
        ..Default::default()
    };
    let mut h = Harness::new(config);
    let a = addr("203.0.113.5:1");
    let ta = h.register(&id(1), a);
    for n in 2..=6 {
        h.register(&id(n), addr(&format!("198.51.100.{n}:1")));
    }
    let statuses: Vec<_> = (2..=6)
        .map(|n| ack(&h.introduce(a, &id(1), ta, &id(n), b"x").last().unwrap().2).status)
        .collect();
    assert_eq!(statuses[..3], [IntroStatus::Forwarded; 3]);
    assert_eq!(statuses[3..], [IntroStatus::SenderRateLimited; 2]);
    h.advance(Duration::from_millis(500));
    assert_eq!(
        ack(&h.introduce(a, &id(1), ta, &id(2), b"x").last().unwrap().2).status,
        IntroStatus::Forwarded
    );
    assert_eq!(h.server.stats().dropped(DropReason::SenderRateLimited), 2);
}

#[test]
fn introductions_are_rate_limited_per_target() {
    let config = ServerConfig {
        target_intro_rate: RateLimit {
            per_second: 1,
            burst: 2,
        },
        ..Default::default()
    };
    let mut h = Harness::new(config);
    h.register(&id(1), addr("203.0.113.1:1"));
    let senders: Vec<_> = (2..=5)
        .map(|n| {
            let a = addr(&format!("198.51.100.{n}:1"));
            (n, a, h.register(&id(n), a))
        })
        .collect();
    let statuses: Vec<_> = senders
        .iter()
        .map(|(n, a, t)| ack(&h.introduce(*a, &id(*n), *t, &id(1), b"x").last().unwrap().2).status)
        .collect();
    assert_eq!(
        statuses,
        [
            IntroStatus::Forwarded,
            IntroStatus::Forwarded,
            IntroStatus::TargetRateLimited,
            IntroStatus::TargetRateLimited
        ]
    );
}

#[test]
fn a_full_table_refuses_new_nodes_and_keeps_serving_registered_ones() {
    let mut h = Harness::new(ServerConfig {
        max_nodes: 3,
        ..Default::default()
    });
    let tokens: Vec<_> = (1..=3)
        .map(|n| h.register(&id(n), addr(&format!("198.51.100.{n}:1"))))
        .collect();
    let tx = h.next_tx();
    let ts = h.unix_ms();
    let out = h.send(
        addr("198.51.100.4:1"),
        &Message::Register(Register::signed(&id(4), tx, ts)).to_vec(),
    );
    assert_eq!(only_error(&out), ErrorCode::TableFull);
    assert_eq!(h.server.registered(), 3);
    assert_eq!(h.server.stats().dropped(DropReason::TableFull), 1);
    // Registered nodes still refresh and introduce.
    let out = h.introduce(addr("198.51.100.1:1"), &id(1), tokens[0], &id(2), b"x");
    assert_eq!(ack(&out[1].2).status, IntroStatus::Forwarded);
    // A registered node may move (re-register from a new address) while the table is full.
    h.advance(Duration::from_millis(1));
    h.register(&id(3), addr("198.51.100.33:1"));
    // Once a registration expires, there is room again.
    h.advance(Duration::from_secs(121));
    h.register(&id(4), addr("198.51.100.4:1"));
}

#[test]
fn other_protocol_versions_are_told_ours_without_amplification() {
    let mut h = Harness::default();
    let mut reg = Message::Register(Register::signed(&id(1), 77, h.unix_ms())).to_vec();
    reg[1] = 9;
    let out = h.send(addr("203.0.113.5:1"), &reg);
    assert_eq!(out[0].2[1], VERSION);
    assert_eq!(only_error(&out), ErrorCode::UnsupportedVersion);
    // A version-9 header too short to hold our answer gets none.
    let out = h.send(addr("203.0.113.5:1"), &reg[..12]);
    assert!(out.is_empty());
    assert_eq!(h.server.stats().dropped(DropReason::ReplyTooLarge), 1);
}

#[test]
fn stun_is_answered_on_both_ports_and_only_stun_on_the_second() {
    let mut h = Harness::default();
    let (req, tx) = stun::binding_request();
    let from = addr("203.0.113.5:4444");
    for socket in [Socket::Primary, Socket::Alt] {
        let out = h.send_on(socket, from, &req);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, socket, "answered from the socket it came to");
        assert_eq!(stun::parse_binding_response(&out[0].2, tx), Ok(from));
    }
    assert_eq!(h.server.stats().received(PacketKind::Stun), 1);
    assert_eq!(h.server.stats().received(PacketKind::StunAlt), 1);
    let reg = Message::Register(Register::signed(&id(1), 1, h.unix_ms())).to_vec();
    assert!(h.send_on(Socket::Alt, from, &reg).is_empty());
    assert_eq!(h.server.stats().dropped(DropReason::WrongPort), 1);
    assert_eq!(h.server.registered(), 0);
}

#[test]
fn strict_stun_mode_never_answers_larger_than_the_request() {
    let mut h = Harness::new(ServerConfig {
        stun_strict_size: true,
        ..Default::default()
    });
    let bare: Vec<u8> = [&[0u8, 1, 0, 0][..], &stun::MAGIC_COOKIE, &[7u8; 12]].concat();
    assert!(h.send(addr("203.0.113.5:1"), &bare).is_empty());
    assert_eq!(h.server.stats().dropped(DropReason::ReplyTooLarge), 1);
    let (req, _) = stun::binding_request(); // 28 bytes; the IPv4 answer is 40
    assert!(h.send(addr("203.0.113.5:1"), &req).is_empty());
}

/// Bytes that look enough like our messages to reach deep into the server.
fn hostile_packet() -> impl Strategy<Value = Vec<u8>> {
    let header = (0xC0u8..=0xC8, prop_oneof![Just(VERSION), any::<u8>()]);
    (
        header,
        proptest::collection::vec(any::<u8>(), 0..1300),
        any::<bool>(),
    )
        .prop_map(|((t, v), mut body, raw)| {
            if !raw {
                body.insert(0, v);
                body.insert(0, t);
            }
            body
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Whatever arrives: no panic, nothing stored, and no reply larger than what arrived.
    #[test]
    fn hostile_input_never_panics_stores_nothing_or_amplifies(packets in proptest::collection::vec(hostile_packet(), 1..20)) {
        let mut h = Harness::default();
        let registered = addr("198.51.100.1:1");
        h.register(&id(1), registered);
        let from = addr("203.0.113.5:4444");
        for p in &packets {
            for (_, dest, bytes) in h.send(from, p) {
                prop_assert_eq!(dest, from, "nothing is forwarded for a stranger");
                prop_assert!(bytes.len() <= p.len(), "reply {} > request {}", bytes.len(), p.len());
            }
        }
        prop_assert_eq!(h.server.registered(), 1);
        let s = h.server.stats();
        prop_assert_eq!(s.received.iter().sum::<u64>(), packets.len() as u64 + 1);
    }

    /// Every reply to a well-formed request is no larger than the request either.
    #[test]
    fn replies_to_valid_requests_are_never_larger(payload in proptest::collection::vec(any::<u8>(), 1..MAX_INTRO_PAYLOAD), v6: bool) {
        let mut h = Harness::default();
        let (a, b) = if v6 { (addr("[2001:db8::1]:1"), addr("[2001:db8::2]:2")) } else { (addr("192.0.2.1:1"), addr("192.0.2.2:2")) };
        let ta = h.register(&id(1), a);
        h.register(&id(2), b);
        let intro = Message::Introduce(Introduce { tx: 1, node: *id(1).node_id().as_bytes(), token: ta, target: *id(2).node_id().as_bytes(), payload: &payload }).to_vec();
        for (_, dest, bytes) in h.send(a, &intro) {
            if dest == a {
                prop_assert!(bytes.len() <= intro.len());
            }
        }
        let refresh = Message::Refresh(Refresh { tx: 2, node: *id(1).node_id().as_bytes(), token: ta }).to_vec();
        let out = h.send(a, &refresh);
        prop_assert!(out[0].2.len() <= refresh.len());
    }
}
