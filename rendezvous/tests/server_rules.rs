//! The rendezvous server's rules, proven on the sans-IO core with a virtual clock.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use shipworm_rendezvous::server::{
    DropReason, PacketKind, RelayConfig, Server, ServerConfig, Socket,
};
use shipworm_rendezvous::table::RateLimit;
use shipworm_rendezvous::wire::stun;
use shipworm_rendezvous::wire::*;
use shipworm_tunnel::Identity;

const T0_UNIX_MS: u64 = 1_800_000_000_000;
/// The address the harness' server is reached at (what REGISTERs are signed for).
const SERVER: &str = "198.51.100.250:3478";

fn server_addr() -> SocketAddr {
    SERVER.parse().unwrap()
}

/// The default configuration of a server reached at [`SERVER`].
fn config() -> ServerConfig {
    ServerConfig::for_addresses(vec![server_addr()])
}

fn signed(id: &Identity, tx: u64, ts: u64) -> Vec<u8> {
    Message::Register(Register::signed(id, tx, ts, server_addr())).to_vec()
}

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
        Self::new(config())
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

    /// As [`Harness::send_on`], for a datagram that arrived at local address `local`; what was
    /// sent, with its source address.
    fn send_at(
        &mut self,
        socket: Socket,
        local: IpAddr,
        from: SocketAddr,
        bytes: &[u8],
    ) -> Vec<(Option<IpAddr>, SocketAddr, Vec<u8>)> {
        let (now, unix) = (self.now(), self.unix_ms());
        self.server
            .handle_packet_at(now, unix, socket, Some(local), from, bytes);
        let mut out = Vec::new();
        while let Some(t) = self.server.poll_transmit() {
            out.push((t.src, t.dest, t.contents.to_vec()));
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

    /// Registers `id` from `from` and confirms the address with one REFRESH (as the node does
    /// right after its first REGISTERED); returns the token.
    fn register(&mut self, id: &Identity, from: SocketAddr) -> [u8; TOKEN_LEN] {
        let token = self.register_unconfirmed(id, from);
        let tx = self.next_tx();
        let out = self.send(
            from,
            &Message::Refresh(Refresh {
                tx,
                node: *id.node_id().as_bytes(),
                token,
            })
            .to_vec(),
        );
        assert!(
            matches!(Message::parse(&out[0].2), Ok(Message::Registered(_))),
            "{out:?}"
        );
        token
    }

    /// Registers `id` from `from` with a REGISTER only; returns the token.
    fn register_unconfirmed(&mut self, id: &Identity, from: SocketAddr) -> [u8; TOKEN_LEN] {
        let tx = self.next_tx();
        let ts = self.unix_ms();
        let out = self.send(from, &signed(id, tx, ts));
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
    let out = h.send(addr("[::ffff:198.51.100.9]:7"), &signed(&id(3), tx, ts));
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
        ..config()
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
    let reg = signed(&id(1), 1, h.unix_ms());
    let Message::Registered(r) = Message::parse(&h.send(a, &reg)[0].2).unwrap() else {
        panic!()
    };
    // The node confirms its address with its token.
    let refresh = Refresh {
        tx: 2,
        node: *id(1).node_id().as_bytes(),
        token: r.token,
    };
    h.send(a, &Message::Refresh(refresh).to_vec());
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
    let out = h.send(addr("203.0.113.5:1"), &signed(&id(1), 1, skewed));
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
    let mut reg = Register::signed(&id(1), 1, h.unix_ms(), server_addr());
    reg.signature[10] ^= 0x40;
    let out = h.send(
        addr("203.0.113.5:1"),
        &Message::Register(reg.clone()).to_vec(),
    );
    assert_eq!(only_error(&out), ErrorCode::BadSignature);
    // A signature by another key over the same fields.
    let mut other = Register::signed(&id(2), 1, h.unix_ms(), server_addr());
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
fn every_datagram_leaves_from_the_address_its_request_arrived_at() {
    let mut h = Harness::default();
    let (a, b, c) = (
        addr("203.0.113.5:40000"),
        addr("203.0.113.6:40000"),
        addr("[2001:db8::c]:50000"),
    );
    let ta = h.register(&id(1), a);
    h.register(&id(2), b);
    h.register(&id(3), c);
    // The second IPv4 address of the host, as a dual-stack socket reports it (IPv4-mapped).
    let second: IpAddr = "::ffff:11.0.113.2".parse().unwrap();
    let want = Some("11.0.113.2".parse::<IpAddr>().unwrap());
    let sources = |out: &[(Option<IpAddr>, SocketAddr, Vec<u8>)]| -> Vec<Option<IpAddr>> {
        out.iter().map(|(src, _, _)| *src).collect()
    };

    // STUN on both ports.
    for socket in [Socket::Primary, Socket::Alt] {
        let (request, _) = stun::binding_request();
        let out = h.send_at(socket, second, a, &request);
        assert_eq!(sources(&out), [want], "{socket:?}");
    }
    // A refused REGISTER's ERROR, and a REFRESH's REGISTERED.
    let tx = h.next_tx();
    let wrong = Message::Register(Register::signed(
        &id(4),
        tx,
        h.unix_ms(),
        addr("192.0.2.1:3478"),
    ));
    assert_eq!(
        sources(&h.send_at(Socket::Primary, second, a, &wrong.to_vec())),
        [want]
    );
    let refresh = Message::Refresh(Refresh {
        tx,
        node: *id(1).node_id().as_bytes(),
        token: ta,
    });
    assert_eq!(
        sources(&h.send_at(Socket::Primary, second, a, &refresh.to_vec())),
        [want]
    );

    // An introduction: the forward to a node of the same family leaves from the address the
    // INTRODUCE came to (its sender dialled the address of the target's ticket), and so does
    // the acknowledgement.
    let intro = |h: &mut Harness, target: &Identity| {
        let tx = h.next_tx();
        let msg = Message::Introduce(Introduce {
            tx,
            node: *id(1).node_id().as_bytes(),
            token: ta,
            target: *target.node_id().as_bytes(),
            payload: b"m1",
        });
        h.send_at(Socket::Primary, second, a, &msg.to_vec())
    };
    let out = intro(&mut h, &id(2));
    assert_eq!(out.iter().map(|(_, d, _)| *d).collect::<Vec<_>>(), [b, a]);
    assert_eq!(sources(&out), [want, want]);
    // To an IPv6 node the OS picks the IPv6 source; the acknowledgement still leaves from the
    // address asked.
    let out = intro(&mut h, &id(3));
    assert_eq!(out.iter().map(|(_, d, _)| *d).collect::<Vec<_>>(), [c, a]);
    assert_eq!(sources(&out), [None, want]);

    // An IPv6 request is answered from its IPv6 destination.
    let v6: IpAddr = "2001:db8::2:2".parse().unwrap();
    let (request, _) = stun::binding_request();
    assert_eq!(
        sources(&h.send_at(Socket::Primary, v6, c, &request)),
        [Some(v6)]
    );

    // A driver that does not say where a packet arrived lets the OS choose, as before.
    let (request, _) = stun::binding_request();
    let (now, unix) = (h.now(), h.unix_ms());
    h.server
        .handle_packet(now, unix, Socket::Primary, a, &request);
    assert_eq!(h.server.poll_transmit().map(|t| t.src), Some(None));
}

#[test]
fn an_introduction_is_forwarded_once_with_the_senders_observed_address() {
    let mut h = Harness::default();
    let (a, b) = (addr("203.0.113.5:40000"), addr("[2001:db8::b]:50000"));
    let ta = h.register(&id(1), a);
    h.register(&id(2), b);
    let out = h.introduce(a, &id(1), ta, &id(2), b"noise message 1");
    let itx = h.tx;
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
            tx: itx,
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
        ..config()
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
        ..config()
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
        ..config()
    });
    let tokens: Vec<_> = (1..=3)
        .map(|n| h.register(&id(n), addr(&format!("198.51.100.{n}:1"))))
        .collect();
    let tx = h.next_tx();
    let ts = h.unix_ms();
    let out = h.send(addr("198.51.100.4:1"), &signed(&id(4), tx, ts));
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
    let mut reg = signed(&id(1), 77, h.unix_ms());
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
    let reg = signed(&id(1), 1, h.unix_ms());
    assert!(h.send_on(Socket::Alt, from, &reg).is_empty());
    assert_eq!(h.server.stats().dropped(DropReason::WrongPort), 1);
    assert_eq!(h.server.registered(), 0);
}

#[test]
fn strict_stun_mode_never_answers_larger_than_the_request() {
    let mut h = Harness::new(ServerConfig {
        stun_strict_size: true,
        ..config()
    });
    let bare: Vec<u8> = [&[0u8, 1, 0, 0][..], &stun::MAGIC_COOKIE, &[7u8; 12]].concat();
    assert!(h.send(addr("203.0.113.5:1"), &bare).is_empty());
    assert_eq!(h.server.stats().dropped(DropReason::ReplyTooLarge), 1);
    // shipworm's own requests are padded to the largest answer: strict mode answers them.
    let (req, tx) = stun::binding_request();
    let out = h.send(addr("203.0.113.5:1"), &req);
    assert_eq!(
        stun::parse_binding_response(&out[0].2, tx),
        Ok(addr("203.0.113.5:1"))
    );
    assert!(out[0].2.len() <= req.len());
}

// ---- Hostile senders (issue 10) ----------------------------------------------------------------

fn parse(bytes: &[u8]) -> Message<'_> {
    Message::parse(bytes).unwrap()
}

#[test]
fn register_signed_for_another_server_is_refused() {
    // The server is reached at two addresses (its IPv4 and IPv6 ones, as the simulator's is).
    let v6: SocketAddr = "[2001:db8:ffff::1]:3478".parse().unwrap();
    let mut h = Harness::new(ServerConfig::for_addresses(vec![server_addr(), v6]));
    let victim = id(1);
    // A malicious rendezvous named in a ticket collected the victim's REGISTER, signed for itself,
    // and replays it here from its own address.
    let evil: SocketAddr = "192.0.2.99:3478".parse().unwrap();
    let collected = Register::signed(&victim, 1, h.unix_ms(), evil);
    let out = h.send(evil, &Message::Register(collected).to_vec());
    assert_eq!(only_error(&out), ErrorCode::WrongServer);
    assert!(out[0].2.len() < Register::MIN_LEN);
    // Our own IP on another port is another server too.
    let other_port = SocketAddr::new(server_addr().ip(), 3479);
    let out = h.send(
        evil,
        &Message::Register(Register::signed(&victim, 2, h.unix_ms(), other_port)).to_vec(),
    );
    assert_eq!(only_error(&out), ErrorCode::WrongServer);
    assert_eq!(h.server.registered(), 0);
    assert_eq!(h.server.stats().dropped(DropReason::WrongServer), 2);
    assert_eq!(
        h.server.stats().signature_checks,
        0,
        "refused before the signature"
    );
    // Signed for either of our addresses (IPv4-mapped written as IPv4), it is accepted.
    for (n, server) in [
        (2, "[::ffff:198.51.100.250]:3478".parse().unwrap()),
        (3, v6),
    ] {
        let tx = h.next_tx();
        let reg = Register::signed(&id(n), tx, h.unix_ms(), server);
        let out = h.send(
            addr(&format!("203.0.113.{n}:1")),
            &Message::Register(reg).to_vec(),
        );
        assert!(
            matches!(parse(&out[0].2), Message::Registered(_)),
            "{out:?}"
        );
    }
}

/// Every 100 ms for `secs`, each attacker sends one INTRODUCE to `target` (their full sender
/// rate); once a second the honest sender does. Returns the honest sender's statuses and how
/// many introductions reached the target.
fn flood_introductions(
    h: &mut Harness,
    attackers: &[(Identity, SocketAddr, [u8; TOKEN_LEN])],
    honest: &(Identity, SocketAddr, [u8; TOKEN_LEN]),
    target: &Identity,
    target_addr: SocketAddr,
    secs: u32,
) -> (Vec<IntroStatus>, usize) {
    let mut honest_statuses = Vec::new();
    let mut reached = 0;
    for step in 0..secs * 10 {
        for (id, a, t) in attackers {
            let out = h.introduce(*a, id, *t, target, b"junk message 1");
            reached += out.iter().filter(|(_, d, _)| *d == target_addr).count();
        }
        if step % 10 == 5 {
            let (id, a, t) = honest;
            let out = h.introduce(*a, id, *t, target, b"honest message 1");
            reached += out.iter().filter(|(_, d, _)| *d == target_addr).count();
            honest_statuses.push(ack(&out.last().unwrap().2).status);
        }
        h.advance(Duration::from_millis(100));
    }
    (honest_statuses, reached)
}

#[test]
fn one_sender_cannot_starve_a_target() {
    let c = config();
    let secs = 10;
    // Throwaway keys on one host, then on six hosts: each host is one sender.
    for (name, hosts, keys_per_host) in [("one host", 1, 8), ("six hosts", 6, 1)] {
        let mut h = Harness::default();
        let target_addr = addr("198.51.100.7:4000");
        h.register(&id(1), target_addr);
        let honest_addr = addr("192.0.2.200:5000");
        let honest = (id(2), honest_addr, h.register(&id(2), honest_addr));
        let mut attackers = Vec::new();
        for host in 0..hosts {
            for k in 0..keys_per_host {
                let n = 10 + (host * keys_per_host + k) as u8;
                let a = addr(&format!("203.0.113.{}:{}", 60 + host, 1000 + k));
                attackers.push((id(n), a, h.register(&id(n), a)));
            }
        }
        let attack_rate = attackers.len() as u32 * 10;
        assert!(
            attack_rate > c.target_intro_rate.per_second,
            "{name}: the attack alone would use up the target's whole budget"
        );
        let (statuses, reached) =
            flood_introductions(&mut h, &attackers, &honest, &id(1), target_addr, secs);
        eprintln!(
            "{name}: {} of {secs} honest introductions forwarded; the target got {reached}",
            statuses
                .iter()
                .filter(|s| **s == IntroStatus::Forwarded)
                .count()
        );
        assert_eq!(
            statuses,
            vec![IntroStatus::Forwarded; secs as usize],
            "{name}: the honest sender is always forwarded"
        );
        // And the target never gets more than its total budget.
        let t = c.target_intro_rate;
        assert!(
            reached as u32 <= t.burst + t.per_second * secs,
            "{name}: {reached}"
        );
        assert!(h.server.stats().dropped(DropReason::PairRateLimited) > 0);
    }
}

#[test]
fn a_relayed_answer_does_not_spend_the_targets_budget() {
    let mut h = Harness::new(ServerConfig {
        sender_intro_rate: RateLimit {
            per_second: 1,
            burst: 1,
        },
        ..config()
    });
    let (a, b, c) = (
        addr("203.0.113.1:1"),
        addr("203.0.113.2:1"),
        addr("203.0.113.3:1"),
    );
    let ta = h.register(&id(1), a);
    let tb = h.register(&id(2), b);
    h.register(&id(3), c);
    // B spends its own budget on an introduction of its own.
    let out = h.introduce(b, &id(2), tb, &id(3), b"b to c");
    assert_eq!(ack(&out[1].2).status, IntroStatus::Forwarded);
    // A introduces itself to B (A's budget), and B answers through the server (message 2).
    let out = h.introduce(a, &id(1), ta, &id(2), b"a to b");
    assert_eq!(ack(&out[1].2).status, IntroStatus::Forwarded);
    let out = h.introduce(b, &id(2), tb, &id(1), b"b answers a");
    assert_eq!(ack(&out[1].2).status, IntroStatus::Forwarded, "{out:?}");
    assert_eq!(out[0].1, a, "forwarded to A");
    assert_eq!(h.server.stats().introductions_answered_free, 1);
    // The credit is one answer toward A only: a second answer, or an introduction to anyone
    // else, is charged (and B's budget is spent).
    let out = h.introduce(b, &id(2), tb, &id(1), b"again");
    assert_eq!(ack(&out[0].2).status, IntroStatus::SenderRateLimited);
    let out = h.introduce(b, &id(2), tb, &id(3), b"b to c");
    assert_eq!(ack(&out[0].2).status, IntroStatus::SenderRateLimited);
    // A credit is for a while only.
    h.advance(Duration::from_secs(2));
    let out = h.introduce(a, &id(1), ta, &id(2), b"a to b");
    assert_eq!(ack(&out[1].2).status, IntroStatus::Forwarded);
    h.advance(Duration::from_secs(11));
    let out = h.introduce(b, &id(2), tb, &id(1), b"late answer");
    assert_eq!(ack(&out[1].2).status, IntroStatus::Forwarded);
    assert_eq!(
        h.server.stats().introductions_answered_free,
        1,
        "charged, not free"
    );
}

#[test]
fn one_prefix_cannot_fill_the_table() {
    let quota = config().max_registrations_per_prefix as usize;
    let mut h = Harness::default();
    let try_register = |h: &mut Harness, n: u32, from: SocketAddr| {
        let tx = h.next_tx();
        let ts = h.unix_ms();
        let key = Identity::from_seed(
            &[&n.to_le_bytes()[..], &[9; 28]]
                .concat()
                .try_into()
                .unwrap(),
        );
        let out = h.send(from, &signed(&key, tx, ts));
        // Within the per-prefix rate of signature checks (20 a second).
        h.advance(Duration::from_millis(50));
        parse(&out[0].2).clone().kind()
    };
    // One IPv4 host, many self-signed keys, one port each.
    let mut accepted = 0;
    for n in 0..(quota as u32 + 40) {
        let from = addr(&format!("203.0.113.66:{}", 1000 + n));
        if try_register(&mut h, n, from) == kind::REGISTERED {
            accepted += 1;
        }
    }
    assert_eq!(accepted, quota);
    assert_eq!(h.server.registered(), quota);
    assert_eq!(h.server.stats().dropped(DropReason::PrefixQuota), 40);
    // A refused REGISTER costs no signature check.
    assert_eq!(h.server.stats().signature_checks, quota as u64);
    // Its neighbour, and another IPv6 /56, are not affected; the same /56 is.
    assert_eq!(
        try_register(&mut h, 5000, addr("203.0.113.67:1")),
        kind::REGISTERED
    );
    for n in 0..quota as u32 {
        let from = addr(&format!("[2001:db8:0:1100::{:x}]:1", n + 1));
        assert_eq!(try_register(&mut h, 6000 + n, from), kind::REGISTERED);
    }
    assert_eq!(
        try_register(&mut h, 7000, addr("[2001:db8:0:11ff:1::1]:1")),
        kind::ERROR,
        "same /56"
    );
    assert_eq!(
        try_register(&mut h, 7001, addr("[2001:db8:0:1200::1]:1")),
        kind::REGISTERED
    );
    // A registered node may register again (and move within its prefix) at the quota.
    assert_eq!(
        try_register(&mut h, 3, addr("203.0.113.66:9999")),
        kind::REGISTERED
    );
    // Expired registrations give their share back.
    h.advance(Duration::from_secs(121));
    h.advance(Duration::from_secs(6));
    assert_eq!(
        try_register(&mut h, 8000, addr("203.0.113.66:1")),
        kind::REGISTERED
    );
}

#[test]
fn spoofed_register_cannot_aim_intro_fwd_at_a_victim() {
    let mut h = Harness::default();
    let victim = addr("192.0.2.77:5000");
    // The attacker owns key 66 and registers it with the victim's address as source.
    let tx = h.next_tx();
    let ts = h.unix_ms();
    let reg = signed(&id(66), tx, ts);
    let out = h.send(victim, &reg);
    let mut to_victim: usize = out
        .iter()
        .filter(|(_, d, _)| *d == victim)
        .map(|(_, _, b)| b.len())
        .sum();
    assert!(matches!(parse(&out[0].2), Message::Registered(_)));
    assert!(
        to_victim <= reg.len(),
        "the reply is no larger than the REGISTER"
    );
    // From its own registered key, it introduces itself to key 66 as hard as it may.
    let own = addr("203.0.113.66:1");
    let t = h.register(&id(67), own);
    let payload = [0u8; MAX_INTRO_PAYLOAD];
    for _ in 0..20 {
        let out = h.introduce(own, &id(67), t, &id(66), &payload);
        assert_eq!(ack(&out[0].2).status, IntroStatus::UnknownPeer);
        to_victim += out
            .iter()
            .filter(|(_, d, _)| *d == victim)
            .map(|(_, _, b)| b.len())
            .sum::<usize>();
    }
    assert_eq!(
        to_victim,
        out[0].2.len(),
        "nothing but the one REGISTERED reached the victim"
    );
    assert_eq!(h.server.stats().dropped(DropReason::TargetUnconfirmed), 20);
    h.advance(Duration::from_secs(3));
    // A real node confirms its address with its token (or a cookie), and is then introduced.
    let real = addr("198.51.100.8:1");
    h.register(&id(68), real);
    let out = h.introduce(own, &id(67), t, &id(68), b"hello");
    assert_eq!(out[0].1, real);
}

/// 32 real keys whose REGISTERs carry bad signatures: fresh to the server, so each one reaches
/// the signature check unless something stops it first.
fn bad_registers(h: &Harness, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut r = Register::signed(
                &id(100 + (i % 32) as u8),
                i as u64,
                h.unix_ms(),
                server_addr(),
            );
            r.signature[0] ^= 1;
            Message::Register(r).to_vec()
        })
        .collect()
}

#[test]
fn spoofed_register_flood_costs_a_hash() {
    let threshold = 50;
    let mut h = Harness::new(ServerConfig {
        register_load_threshold: threshold,
        ..config()
    });
    // A registered node that keeps refreshing during the flood.
    let home = addr("198.51.100.9:1");
    let token = h.register(&id(1), home);
    let checks_before = h.server.stats().signature_checks;
    let flood = bad_registers(&h, 32);
    let (mut sent, mut answered) = (0usize, 0usize);
    let mut honest_done = false;
    // One second of 20 000 spoofed REGISTERs, each from another address (another /32).
    for i in 0..20_000u32 {
        let from = SocketAddr::from(([10, (i >> 16) as u8, (i >> 8) as u8, i as u8], 4000));
        let p = &flood[i as usize % flood.len()];
        sent += p.len();
        for (_, dest, bytes) in h.send(from, p) {
            assert_eq!(dest, from);
            assert!(bytes.len() <= p.len(), "no reply larger than its REGISTER");
            answered += bytes.len();
        }
        if i == 10_000 {
            // A REFRESH costs a hash and is served in the middle of it.
            let tx = h.next_tx();
            let out = h.send(
                home,
                &Message::Refresh(Refresh {
                    tx,
                    node: *id(1).node_id().as_bytes(),
                    token,
                })
                .to_vec(),
            );
            assert!(matches!(parse(&out[0].2), Message::Registered(_)));
            // A new node registers: RETRY, then at once the same REGISTER with the cookie.
            let me = addr("192.0.2.5:7000");
            let tx = h.next_tx();
            let reg = Register::signed(&id(2), tx, h.unix_ms(), server_addr());
            let out = h.send(me, &Message::Register(reg.clone()).to_vec());
            let Message::Retry(retry) = parse(&out[0].2) else {
                panic!("{out:?}")
            };
            assert_eq!(retry.tx, tx);
            let out = h.send(
                me,
                &Message::Register(reg.with_cookie(retry.cookie)).to_vec(),
            );
            assert!(
                matches!(parse(&out[0].2), Message::Registered(_)),
                "{out:?}"
            );
            // The cookie proved the address: introductions reach it at once.
            let out = h.introduce(home, &id(1), token, &id(2), b"hi");
            assert_eq!(out[0].1, me);
            honest_done = true;
        }
        if i % 20 == 0 {
            h.advance(Duration::from_millis(1));
        }
    }
    assert!(honest_done);
    let checks = h.server.stats().signature_checks - checks_before;
    // 20 000 REGISTERs over one second (touching two seconds of the server's clock) cost at
    // most the threshold of signature checks per second, plus the honest one.
    assert!(
        checks <= 2 * threshold as u64 + 1,
        "{checks} signature checks"
    );
    assert!(h.server.stats().dropped(DropReason::CookieRequired) >= 19_000);
    assert!(answered <= sent);
    eprintln!(
        "spoofed REGISTER flood: {} packets, {} signature checks, {} bytes in, {} bytes out",
        20_000, checks, sent, answered
    );
}

#[test]
fn one_host_register_flood_is_limited_per_prefix() {
    let mut h = Harness::default();
    let limit = config().register_prefix_rate;
    let flood = bad_registers(&h, 32);
    let attacker = addr("203.0.113.66:4000");
    let secs = 2;
    for i in 0..(secs * 10_000) {
        h.send(attacker, &flood[i as usize % flood.len()]);
        if i % 10 == 0 {
            h.advance(Duration::from_millis(1));
        }
    }
    let checks = h.server.stats().signature_checks;
    assert!(
        checks <= (limit.burst + limit.per_second * secs) as u64,
        "{checks}"
    );
    assert!(h.server.stats().dropped(DropReason::RegisterRateLimited) > 19_000);
    // Another host is not affected (the server never got under load).
    h.register(&id(1), addr("203.0.113.67:1"));
}

#[test]
fn intro_fwd_does_not_reveal_transaction_id() {
    let mut h = Harness::default();
    let (a, b) = (addr("203.0.113.5:1"), addr("203.0.113.6:1"));
    let ta = h.register(&id(1), a);
    h.register(&id(2), b);
    let out = h.introduce(a, &id(1), ta, &id(2), b"m1");
    let itx = h.tx;
    let Message::IntroFwd(f) = parse(&out[0].2) else {
        panic!()
    };
    assert_ne!(f.tx, itx);
    assert_eq!(f.tx, 0);
    assert_eq!(ack(&out[1].2).tx, itx, "only the introducer hears its id");
}

fn bare_stun(i: u32) -> Vec<u8> {
    [
        &[0u8, 1, 0, 0][..],
        &stun::MAGIC_COOKIE,
        &[0; 8],
        &i.to_be_bytes(),
    ]
    .concat()
}

#[test]
fn bare_stun_flood_is_not_amplified() {
    let c = config();
    let mut h = Harness::default();
    let secs = 10u32;
    let (mut bytes_in, mut bytes_out, mut answers) = (0usize, 0usize, 0u32);
    let (req, tx) = stun::binding_request();
    let honest = addr("198.51.100.3:3000");
    // 100 000 bare 20-byte requests from spoofed IPv6 sources (each its own /56): each answer
    // would be 44 bytes, 2.2 times the request.
    for i in 0..100_000u32 {
        let from = SocketAddr::from((
            [
                0x2001,
                0xdb8,
                (i >> 8) as u16,
                (i & 0xff) as u16 * 256,
                0,
                0,
                0,
                1,
            ],
            9,
        ));
        let p = bare_stun(i);
        bytes_in += p.len();
        for (_, _, b) in h.send(from, &p) {
            bytes_out += b.len();
            answers += 1;
        }
        if i % 10_000 == 0 {
            // shipworm's own (padded) request is answered throughout: its answer is not larger.
            let out = h.send(honest, &req);
            assert_eq!(stun::parse_binding_response(&out[0].2, tx), Ok(honest));
        }
        if i % 10 == 0 {
            h.advance(Duration::from_millis(1));
        }
    }
    let g = c.stun_excess_global_rate;
    let budget = g.burst + g.per_second * secs;
    assert!(answers <= budget, "{answers} answers");
    let excess = bytes_out.saturating_sub(bytes_in);
    eprintln!("bare STUN flood: {bytes_in} bytes in, {bytes_out} bytes out, {answers} answers");
    assert!(
        bytes_out <= bytes_in,
        "the flood gets back less than it sent"
    );
    assert!(excess == 0);
}

#[test]
fn the_second_stun_port_never_answers_larger_than_the_request() {
    let mut h = Harness::default();
    let (req, _) = stun::binding_request();
    for from in [addr("198.51.100.4:1"), addr("[2001:db8::4]:1")] {
        assert!(h.send_on(Socket::Alt, from, &bare_stun(1)).is_empty());
        let out = h.send_on(Socket::Alt, from, &req);
        assert!(out[0].2.len() <= req.len());
    }
    assert_eq!(h.server.stats().dropped(DropReason::ReplyTooLarge), 2);
}

#[test]
fn an_ordinary_bare_stun_client_still_works() {
    let mut h = Harness::default();
    let from = addr("[2001:db8::5]:40000");
    for i in 0..5 {
        let out = h.send(from, &bare_stun(i));
        assert_eq!(out.len(), 1, "answered on the main port");
        assert_eq!(out[0].2.len(), 44);
    }
    // Its own prefix budget is small: a client hammering the server gets its burst.
    let burst = config().stun_excess_prefix_rate.burst;
    let answered = (0..100)
        .filter(|i| !h.send(from, &bare_stun(*i)).is_empty())
        .count();
    assert!(answered as u32 <= burst, "{answered}");
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
        prop_assert_eq!(s.received.iter().sum::<u64>(), packets.len() as u64 + 2);
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

fn relay_msg(from: &Identity, token: [u8; TOKEN_LEN], to: &Identity, packet: &[u8]) -> Vec<u8> {
    Message::Relay(Relay {
        tx: 0,
        node: *from.node_id().as_bytes(),
        token,
        target: *to.node_id().as_bytes(),
        packet,
    })
    .to_vec()
}

fn relay_config(c: RelayConfig) -> ServerConfig {
    ServerConfig {
        relay: Some(c),
        ..config()
    }
}

#[test]
fn a_relay_carries_packets_between_registered_nodes_only_and_never_grows_them() {
    let (a, b, c) = (id(1), id(2), id(3));
    let (a_at, b_at) = (addr("203.0.113.1:1000"), addr("[2001:db8::2]:2000"));
    let mut h = Harness::new(relay_config(RelayConfig::default()));
    // REGISTERED says that this server relays.
    let tx = h.next_tx();
    let ts = h.unix_ms();
    let out = h.send(a_at, &signed(&a, tx, ts));
    let Message::Registered(r) = parse(&out[0].2) else {
        panic!("{out:?}")
    };
    assert!(r.relay());
    h.advance(Duration::from_millis(1));
    let ta = h.register(&a, a_at);
    let tb = h.register(&b, b_at);
    // An IPv4 node and an IPv6 node: the packet crosses families, unchanged, marked with its
    // sender as the relay authenticated it, and shorter than the request.
    let packet = [0xD4u8; 1200];
    let req = relay_msg(&a, ta, &b, &packet);
    let out = h.send(a_at, &req);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].1, b_at);
    assert!(out[0].2.len() < req.len());
    let Message::Relayed(f) = parse(&out[0].2) else {
        panic!("{out:?}")
    };
    assert_eq!((f.from, f.packet), (*a.node_id().as_bytes(), &packet[..]));
    let out = h.send(b_at, &relay_msg(&b, tb, &a, &[0xD4, 1]));
    assert_eq!(out[0].1, a_at);
    assert_eq!(
        h.server.relay_sessions(),
        1,
        "one session for both directions"
    );
    assert_eq!(h.server.stats().relayed_packets, 2);

    // A wrong token, another source address, or an unknown target: nothing is carried.
    let out = h.send(a_at, &relay_msg(&a, [0; TOKEN_LEN], &b, &[1]));
    assert_eq!(only_error(&out), ErrorCode::NotRegistered);
    let out = h.send(addr("203.0.113.9:1000"), &relay_msg(&a, ta, &b, &[1]));
    assert_eq!(only_error(&out), ErrorCode::NotRegistered);
    let out = h.send(a_at, &relay_msg(&a, ta, &c, &[1]));
    assert_eq!(only_error(&out), ErrorCode::RelayRefused);
    assert_eq!(h.server.stats().dropped(DropReason::RelayUnknownTarget), 1);
    // A target whose address has not proven that it receives (a spoofed REGISTER) gets nothing.
    let victim = addr("192.0.2.77:53");
    h.register_unconfirmed(&c, victim);
    let out = h.send(a_at, &relay_msg(&a, ta, &c, &[1]));
    assert_eq!(only_error(&out), ErrorCode::RelayRefused);
    assert!(out.iter().all(|(_, to, _)| *to != victim));
    assert_eq!(h.server.stats().relayed_packets, 2);
}

#[test]
fn without_the_relay_role_relay_is_dropped_unanswered_and_registered_says_so() {
    let (a, b) = (id(1), id(2));
    let (a_at, b_at) = (addr("203.0.113.1:1000"), addr("203.0.113.2:2000"));
    let mut h = Harness::default();
    let tx = h.next_tx();
    let ts = h.unix_ms();
    let out = h.send(a_at, &signed(&a, tx, ts));
    let Message::Registered(r) = parse(&out[0].2) else {
        panic!("{out:?}")
    };
    assert!(!r.relay());
    h.advance(Duration::from_millis(1));
    let ta = h.register(&a, a_at);
    h.register(&b, b_at);
    assert!(h.send(a_at, &relay_msg(&a, ta, &b, &[1])).is_empty());
    assert_eq!(h.server.stats().dropped(DropReason::RelayDisabled), 1);
    assert_eq!(h.server.stats().received(PacketKind::Relay), 1);
}

#[test]
fn the_relay_allowlist_binds_both_ends_and_limits_hold() {
    let (a, b, c) = (id(1), id(2), id(3));
    let (a_at, b_at, c_at) = (
        addr("203.0.113.1:1000"),
        addr("203.0.113.2:2000"),
        addr("203.0.113.3:3000"),
    );
    let allow = [&a, &b].map(|i| *i.node_id().as_bytes()).into();
    let mut h = Harness::new(relay_config(RelayConfig {
        allow: Some(allow),
        node_bytes_per_second: 10_000,
        node_burst_bytes: 3_000,
        ..RelayConfig::default()
    }));
    let ta = h.register(&a, a_at);
    h.register(&b, b_at);
    // C is registered but not allowed: its REGISTERED does not offer the relay, it cannot send,
    // and nobody can relay to it.
    let tx = h.next_tx();
    let ts = h.unix_ms();
    let out = h.send(c_at, &signed(&c, tx, ts));
    let Message::Registered(r) = parse(&out[0].2) else {
        panic!("{out:?}")
    };
    assert!(!r.relay());
    h.advance(Duration::from_millis(1));
    let tc = h.register(&c, c_at);
    let out = h.send(c_at, &relay_msg(&c, tc, &a, &[1]));
    assert_eq!(only_error(&out), ErrorCode::RelayRefused);
    let out = h.send(a_at, &relay_msg(&a, ta, &c, &[1]));
    assert_eq!(only_error(&out), ErrorCode::RelayRefused);
    assert_eq!(h.server.stats().dropped(DropReason::RelayNotAllowed), 2);
    // A's byte budget: a burst of 3 000 bytes, then 10 000 a second; over it, dropped unanswered.
    let big = [0xD4u8; 1000];
    for _ in 0..3 {
        assert_eq!(h.send(a_at, &relay_msg(&a, ta, &b, &big)).len(), 1);
    }
    assert!(h.send(a_at, &relay_msg(&a, ta, &b, &big)).is_empty());
    assert_eq!(h.server.stats().dropped(DropReason::RelayRateLimited), 1);
    h.advance(Duration::from_millis(100));
    assert_eq!(h.send(a_at, &relay_msg(&a, ta, &b, &big)).len(), 1);
    // Idle sessions end.
    assert_eq!(h.server.relay_sessions(), 1);
    h.advance(Duration::from_secs(61));
    h.register(&a, a_at);
    h.advance(Duration::from_secs(5));
    assert_eq!(h.server.relay_sessions(), 0);
}
