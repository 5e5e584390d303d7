//! Two tunnel endpoints on a simulated underlay (virtual clock, seeded loss, duplication,
//! reordering, replay): handshakes, IPv6 delivery and the overlay rules.

use std::collections::HashSet;
use std::net::{Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use shipworm_tunnel::handshake::Initiator;
use shipworm_tunnel::rng;
use shipworm_tunnel::session::{Cipher, Session};
use shipworm_tunnel::tunnel::{Accept, Event, SendError, Tunnel, TunnelConfig};
use shipworm_tunnel::wire::packet::Packet;
use shipworm_tunnel::wire::payload::InitPayload;
use shipworm_tunnel::{Identity, NodeId};

const UNIX0: u64 = 1_800_000_000_000;

/// xorshift64*: a seeded, dependency-free RNG for the simulated network.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    fn percent(&mut self, p: u64) -> bool {
        self.next() % 100 < p
    }
}

struct Link {
    loss: u64,
    dup: u64,
    max_delay_ms: u64,
}

struct Net {
    a: Tunnel,
    b: Tunnel,
    a_addr: SocketAddr,
    b_addr: SocketAddr,
    start: Instant,
    now: Instant,
    rng: Rng,
    link: Link,
    in_flight: Vec<(Instant, SocketAddr, SocketAddr, Vec<u8>)>,
    /// Every datagram that reached B, for replay attacks.
    seen_by_b: Vec<(SocketAddr, Vec<u8>)>,
    a_events: Vec<Event>,
    b_events: Vec<Event>,
}

fn ipv6_udp(src: Ipv6Addr, dst: Ipv6Addr, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ipv6(src.octets(), dst.octets(), 64)
        .udp(4000, 5000)
        .write(&mut v, payload)
        .unwrap();
    v
}

impl Net {
    fn new(seed: u64, link: Link, a_cfg: TunnelConfig, b_cfg: TunnelConfig) -> Self {
        let start = Instant::now();
        Self {
            a: Tunnel::new(
                Identity::from_seed(&[0xA; 32]),
                a_cfg,
                start,
                rng::from_seed(seed ^ 0xA),
            ),
            b: Tunnel::new(
                Identity::from_seed(&[0xB; 32]),
                b_cfg,
                start,
                rng::from_seed(seed ^ 0xB),
            ),
            a_addr: "198.51.100.10:41000".parse().unwrap(),
            b_addr: "[2001:db8::b]:42000".parse().unwrap(),
            start,
            now: start,
            rng: Rng(seed | 1),
            link,
            in_flight: Vec::new(),
            seen_by_b: Vec::new(),
            a_events: Vec::new(),
            b_events: Vec::new(),
        }
    }

    fn unix(&self) -> u64 {
        UNIX0 + self.now.duration_since(self.start).as_millis() as u64
    }

    fn ids(&self) -> (NodeId, NodeId) {
        (self.a.node_id(), self.b.node_id())
    }

    fn collect(&mut self) {
        let mut out = Vec::new();
        while let Some(t) = self.a.poll_transmit() {
            out.push((self.a_addr, t.dest, t.contents));
        }
        while let Some(t) = self.b.poll_transmit() {
            out.push((self.b_addr, t.dest, t.contents));
        }
        while let Some(e) = self.a.poll_event() {
            self.a_events.push(e);
        }
        while let Some(e) = self.b.poll_event() {
            self.b_events.push(e);
        }
        for (from, to, bytes) in out {
            if self.rng.percent(self.link.loss) {
                continue;
            }
            let copies = if self.rng.percent(self.link.dup) {
                2
            } else {
                1
            };
            for _ in 0..copies {
                let delay =
                    Duration::from_millis(1 + self.rng.next() % self.link.max_delay_ms.max(1));
                self.in_flight
                    .push((self.now + delay, from, to, bytes.clone()));
            }
        }
    }

    /// Runs the network for `d` of virtual time in 1 ms steps.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.collect();
            let now = self.now;
            let (due, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.in_flight)
                .into_iter()
                .partition(|(t, ..)| *t <= now);
            self.in_flight = rest;
            for (_, from, to, bytes) in due {
                let unix = self.unix();
                if to == self.b_addr {
                    self.seen_by_b.push((from, bytes.clone()));
                    self.b.handle_packet(now, unix, from, &bytes);
                } else if to == self.a_addr {
                    self.a.handle_packet(now, unix, from, &bytes);
                }
            }
            let unix = self.unix();
            if self.a.poll_timeout().is_some_and(|t| t <= now) {
                self.a.handle_timeout(now, unix);
            }
            if self.b.poll_timeout().is_some_and(|t| t <= now) {
                self.b.handle_timeout(now, unix);
            }
            self.collect();
            self.now += Duration::from_millis(1);
        }
    }

    fn connect(&mut self) {
        let (_, b) = self.ids();
        let (now, unix, b_addr) = (self.now, self.unix(), self.b_addr);
        self.a.connect(now, unix, b, &[b_addr]).unwrap();
    }

    fn established(&self) -> bool {
        let (a, b) = self.ids();
        self.a.is_established(&b, self.now) && self.b.is_established(&a, self.now)
    }

    fn send_from_a(&mut self, payload: &[u8]) -> Result<(), SendError> {
        let (a, b) = self.ids();
        let pkt = ipv6_udp(a.overlay_addr(), b.overlay_addr(), payload);
        let (now, unix) = (self.now, self.unix());
        self.a.send_ip(now, unix, &pkt)
    }

    fn delivered_to_b(&self) -> Vec<Vec<u8>> {
        self.b_events
            .iter()
            .filter_map(|e| match e {
                Event::Packet { packet, .. } => Some(packet.to_vec()),
                _ => None,
            })
            .collect()
    }
}

fn clean() -> Link {
    Link {
        loss: 0,
        dup: 0,
        max_delay_ms: 5,
    }
}

#[test]
fn sessions_handshake_and_carry_ipv6_under_loss_reordering_and_duplication() {
    for seed in 1..=5u64 {
        let mut net = Net::new(
            seed,
            Link {
                loss: 20,
                dup: 15,
                max_delay_ms: 40,
            },
            TunnelConfig::default(),
            TunnelConfig::default(),
        );
        net.connect();
        net.run(Duration::from_secs(3));
        assert!(
            net.established(),
            "seed {seed}: no session after 3 s at 20 % loss"
        );
        let (a, b) = net.ids();
        let sent: Vec<Vec<u8>> = (0..300u32)
            .map(|i| format!("packet {i}").into_bytes())
            .collect();
        let mut wire = Vec::new();
        for p in &sent {
            net.send_from_a(p).unwrap();
            wire.push(ipv6_udp(a.overlay_addr(), b.overlay_addr(), p));
            net.run(Duration::from_millis(2));
        }
        net.run(Duration::from_millis(200));
        let got = net.delivered_to_b();
        let unique: HashSet<&Vec<u8>> = got.iter().collect();
        assert_eq!(
            unique.len(),
            got.len(),
            "seed {seed}: a duplicated datagram was delivered twice"
        );
        assert!(
            got.iter().all(|p| wire.contains(p)),
            "seed {seed}: delivered bytes differ from sent bytes"
        );
        assert!(
            got.len() >= 180,
            "seed {seed}: only {} of 300 delivered at 20 % loss",
            got.len()
        );
        let order: Vec<usize> = got
            .iter()
            .map(|p| wire.iter().position(|w| w == p).unwrap())
            .collect();
        assert!(
            order.windows(2).any(|w| w[0] > w[1]),
            "seed {seed}: the link reordered nothing?"
        );
        assert!(
            net.b.stats().replayed > 0,
            "seed {seed}: duplicates reached the replay window"
        );
    }
}

#[test]
fn replayed_transport_packets_are_dropped() {
    let mut net = Net::new(7, clean(), TunnelConfig::default(), TunnelConfig::default());
    net.connect();
    net.run(Duration::from_millis(200));
    for i in 0..20u8 {
        net.send_from_a(&[i]).unwrap();
    }
    net.run(Duration::from_millis(100));
    assert_eq!(net.delivered_to_b().len(), 20);
    let captured: Vec<_> = net
        .seen_by_b
        .iter()
        .filter(|(_, b)| matches!(Packet::parse(b), Ok(Packet::Transport { .. })))
        .cloned()
        .collect();
    let before = net.b.stats().replayed;
    for (from, bytes) in &captured {
        let (now, unix) = (net.now, net.unix());
        net.b.handle_packet(now, unix, *from, bytes);
    }
    net.collect();
    assert_eq!(
        net.delivered_to_b().len(),
        20,
        "nothing replayed was delivered"
    );
    assert_eq!(net.b.stats().replayed - before, captured.len() as u64);
}

#[test]
fn a_replayed_handshake_message_1_is_refused() {
    let mut net = Net::new(3, clean(), TunnelConfig::default(), TunnelConfig::default());
    net.connect();
    net.run(Duration::from_millis(100));
    assert!(net.established());
    let (from, init) = net
        .seen_by_b
        .iter()
        .find(|(_, b)| matches!(Packet::parse(b), Ok(Packet::Init { .. })))
        .cloned()
        .unwrap();
    let (now, unix) = (net.now, net.unix());
    net.b.handle_packet(now, unix, from, &init);
    assert_eq!(net.b.stats().replayed_handshake, 1);
    assert!(net.b.poll_transmit().is_none(), "no answer to a replay");
}

/// A peer that holds a valid key but lies in its inner packets.
fn malicious_peer_session(net: &mut Net) -> (Session, Identity) {
    let evil = Identity::from_seed(&[0xE; 32]);
    let b = net.b.node_id();
    let payload = InitPayload {
        initiator: evil.node_id(),
        timestamp_ms: net.unix(),
        advert: Default::default(),
    };
    let (init, m1) =
        Initiator::start(&mut rng::from_seed(0xE), &evil, &b, 99, &payload, None).unwrap();
    let evil_addr: SocketAddr = "203.0.113.66:6666".parse().unwrap();
    let (now, unix) = (net.now, net.unix());
    net.b.handle_packet(now, unix, evil_addr, &m1);
    let resp = net.b.poll_transmit().unwrap();
    let Ok(Packet::Resp { sender, noise, .. }) = Packet::parse(&resp.contents) else {
        panic!("no response")
    };
    let (send, recv, _) = init.finish(noise).unwrap();
    // The evil node offered no AES (its advert flags are 0): ChaCha20-Poly1305.
    (
        Session::new(
            99,
            sender,
            &send,
            &recv,
            now,
            true,
            Cipher::ChaCha20Poly1305,
        ),
        evil,
    )
}

#[test]
fn inner_packets_with_a_spoofed_source_or_foreign_destination_are_dropped() {
    let mut net = Net::new(5, clean(), TunnelConfig::default(), TunnelConfig::default());
    let (mut s, evil) = malicious_peer_session(&mut net);
    let (a, b) = net.ids();
    let evil_addr: SocketAddr = "203.0.113.66:6666".parse().unwrap();
    let mut send = |net: &mut Net, pkt: Vec<u8>| {
        let mut out = Vec::new();
        s.seal(&pkt, &mut out);
        let (now, unix) = (net.now, net.unix());
        net.b.handle_packet(now, unix, evil_addr, &out);
        net.collect();
    };
    send(
        &mut net,
        ipv6_udp(a.overlay_addr(), b.overlay_addr(), b"I am A"),
    );
    assert_eq!(net.b.stats().spoofed_source, 1);
    send(
        &mut net,
        ipv6_udp(
            evil.node_id().overlay_addr(),
            a.overlay_addr(),
            b"to someone else",
        ),
    );
    assert_eq!(net.b.stats().wrong_destination, 1);
    assert!(net.delivered_to_b().is_empty());
    // The same peer's honest packet goes through: the drops were about the addresses only.
    send(
        &mut net,
        ipv6_udp(evil.node_id().overlay_addr(), b.overlay_addr(), b"honest"),
    );
    assert_eq!(net.delivered_to_b().len(), 1);
}

#[test]
fn an_allowlist_refuses_unlisted_initiators() {
    let b_cfg = TunnelConfig {
        accept: Accept::Only(HashSet::new()),
        ..TunnelConfig::default()
    };
    let mut net = Net::new(9, clean(), TunnelConfig::default(), b_cfg);
    net.connect();
    net.run(Duration::from_millis(500));
    assert!(!net.established());
    assert!(net.b.stats().not_allowed >= 1);
}

#[test]
fn a_handshake_flood_is_answered_with_cookies_and_a_real_initiator_gets_through() {
    let b_cfg = TunnelConfig {
        handshake_load_threshold: 3,
        ..TunnelConfig::default()
    };
    let mut net = Net::new(11, clean(), TunnelConfig::default(), b_cfg);
    let b = net.b.node_id();
    // A flood of valid-looking message 1s from many sources.
    for i in 0..10u8 {
        let x = Identity::from_seed(&[0x40 + i; 32]);
        let payload = InitPayload {
            initiator: x.node_id(),
            timestamp_ms: net.unix(),
            advert: Default::default(),
        };
        let (_, m1) = Initiator::start(
            &mut rng::from_seed(u64::from(i)),
            &x,
            &b,
            i as u32,
            &payload,
            None,
        )
        .unwrap();
        let (now, unix) = (net.now, net.unix());
        net.b
            .handle_packet(now, unix, SocketAddr::from(([203, 0, 113, i], 1000)), &m1);
    }
    assert_eq!(
        net.b.stats().cookie_sent,
        7,
        "past the threshold, a cookie instead of Diffie-Hellman"
    );
    while net.b.poll_transmit().is_some() {}
    // A real initiator under the same load: it gets a cookie, resends with mac2, and succeeds.
    net.connect();
    net.run(Duration::from_millis(300));
    assert!(
        net.established(),
        "cookie round trip failed: {:?}",
        net.b.stats()
    );
}

#[test]
fn a_local_packet_over_the_mtu_gets_packet_too_big() {
    let mut net = Net::new(
        13,
        clean(),
        TunnelConfig::default(),
        TunnelConfig::default(),
    );
    net.connect();
    net.run(Duration::from_millis(100));
    let err = net.send_from_a(&vec![0u8; 1400]).unwrap_err();
    assert!(matches!(err, SendError::TooBig { mtu: 1280, .. }), "{err}");
    net.collect();
    let ptb = net.a_events.iter().find_map(|e| match e {
        Event::Local(p) => Some(p.clone()),
        _ => None,
    });
    let ptb = ptb.expect("an ICMPv6 Packet Too Big for the local stack");
    assert!(ptb.len() <= 1280);
    assert_eq!(ptb[40], 2, "ICMPv6 type 2");
    assert_eq!(&ptb[44..48], &1280u32.to_be_bytes());
    // A packet at the MTU goes through.
    let at_mtu = 1280 - 48;
    net.send_from_a(&vec![1u8; at_mtu]).unwrap();
    net.run(Duration::from_millis(50));
    assert_eq!(net.delivered_to_b().len(), 1);
}

/// A packet sealed in place (`send_ip_in`) arrives as the copying path's would: before the
/// session (queued, then sent), on it, and refused for the same causes.
#[test]
fn a_packet_sealed_in_place_arrives_like_a_copied_one() {
    use shipworm_tunnel::tunnel::SEND_HEADROOM;
    let mut net = Net::new(
        14,
        clean(),
        TunnelConfig::default(),
        TunnelConfig::default(),
    );
    let (a, b) = net.ids();
    let in_place = |payload: &[u8]| {
        let mut buf = vec![0xEE; SEND_HEADROOM];
        buf.extend_from_slice(&ipv6_udp(a.overlay_addr(), b.overlay_addr(), payload));
        buf
    };
    // Before any session: held, and sent once the handshake is done.
    net.connect();
    let (now, unix) = (net.now, net.unix());
    net.a.send_ip_in(now, unix, in_place(b"early")).unwrap();
    net.run(Duration::from_millis(100));
    assert!(net.established());
    let (now, unix) = (net.now, net.unix());
    net.a
        .send_ip_in(now, unix, in_place(b"on the session"))
        .unwrap();
    net.send_from_a(b"copied").unwrap();
    net.run(Duration::from_millis(50));
    let got = net.delivered_to_b();
    let expect = [&b"early"[..], b"on the session", b"copied"]
        .map(|p| ipv6_udp(a.overlay_addr(), b.overlay_addr(), p));
    assert_eq!(got, expect.to_vec());

    // Refused: too big (with Packet Too Big for the local stack), not our source, no room.
    let (now, unix) = (net.now, net.unix());
    let err = net
        .a
        .send_ip_in(now, unix, in_place(&[0; 1400]))
        .unwrap_err();
    assert!(matches!(err, SendError::TooBig { mtu: 1280, .. }), "{err}");
    net.collect();
    assert!(net.a_events.iter().any(|e| matches!(e, Event::Local(_))));
    let mut spoofed = vec![0; SEND_HEADROOM];
    spoofed.extend_from_slice(&ipv6_udp(b.overlay_addr(), b.overlay_addr(), b"x"));
    let err = net.a.send_ip_in(now, unix, spoofed).unwrap_err();
    assert!(matches!(err, SendError::BadPacket(_)), "{err}");
    let err = net.a.send_ip_in(now, unix, vec![0; 3]).unwrap_err();
    assert!(matches!(err, SendError::BadPacket(_)), "{err}");
    net.run(Duration::from_millis(50));
    assert_eq!(
        net.delivered_to_b().len(),
        3,
        "nothing refused was delivered"
    );
}

/// With room asked for (a TUN writer's virtio-net header), every packet arrives after that many
/// zeroed bytes of its buffer, even in a recycled buffer full of old bytes, and the same packets
/// arrive as without room; the frames that are not data (handshakes, keepalives) work as before.
#[test]
fn packets_opened_after_room_arrive_whole_after_zeroed_room() {
    const ROOM: usize = 10;
    let mut net = Net::new(
        15,
        clean(),
        TunnelConfig::default(),
        TunnelConfig::default(),
    );
    net.b.set_receive_room(ROOM);
    // Dirty buffers for B to open into.
    for _ in 0..8 {
        net.b.recycle(vec![0xAA; 1500]);
    }
    let (a, b) = net.ids();
    net.connect();
    net.run(Duration::from_millis(100));
    assert!(net.established());
    let payloads: Vec<Vec<u8>> = (0..20u8)
        .map(|i| vec![i; 100 + usize::from(i) * 50])
        .collect();
    for p in &payloads {
        net.send_from_a(p).unwrap();
    }
    // Keepalives pass too (a long idle spell), and the packets after them still arrive.
    net.run(Duration::from_secs(30));
    net.send_from_a(b"after the idle spell").unwrap();
    net.run(Duration::from_millis(50));
    let delivered: Vec<&shipworm_tunnel::tunnel::Inbound> = net
        .b_events
        .iter()
        .filter_map(|e| match e {
            Event::Packet { packet, .. } => Some(packet),
            _ => None,
        })
        .collect();
    let expect: Vec<Vec<u8>> = payloads
        .iter()
        .map(|p| &p[..])
        .chain([&b"after the idle spell"[..]])
        .map(|p| ipv6_udp(a.overlay_addr(), b.overlay_addr(), p))
        .collect();
    // The link delays each datagram by 1 to 5 ms: compared as sets.
    let mut got: Vec<Vec<u8>> = delivered.iter().map(|p| p.to_vec()).collect();
    got.sort();
    let mut expect = expect;
    expect.sort();
    assert!(
        got == expect,
        "{} packets arrived, {} sent, or some differ",
        got.len(),
        expect.len()
    );
    for p in &delivered {
        assert_eq!(p.room(), ROOM);
        let buf = (*p).clone().into_buffer();
        assert_eq!(&buf[..ROOM], &[0; ROOM], "the room is zeroed");
        assert_eq!(&buf[ROOM..], &p[..]);
        assert_eq!((*p).clone().into_packet(), p.to_vec());
    }
    assert_eq!(net.b.stats().decrypt_failed, 0);
}

#[test]
fn sessions_rekey_by_time_without_losing_traffic() {
    let cfg = TunnelConfig {
        rekey_after_time: Duration::from_secs(5),
        reject_after_time: Duration::from_secs(8),
        ..TunnelConfig::default()
    };
    let mut net = Net::new(17, clean(), cfg.clone(), cfg);
    net.connect();
    net.run(Duration::from_millis(100));
    let mut sent = 0;
    for i in 0..300u32 {
        net.send_from_a(&i.to_be_bytes()).unwrap();
        sent += 1;
        net.run(Duration::from_millis(100));
    }
    net.run(Duration::from_millis(100));
    let got = net.delivered_to_b().len();
    assert_eq!(got, sent, "every packet arrived across rekeys");
    // 30 s at one rekey per 5 s: the first handshake and at least five more.
    assert!(
        net.a.stats().handshakes_completed >= 6,
        "{:?}",
        net.a.stats()
    );
}

#[test]
fn sessions_rekey_by_message_count_without_losing_traffic() {
    // Time never triggers here (the default is 120 s and the test lasts about 4 s), so every
    // handshake after the first is the count's doing.
    let cfg = TunnelConfig {
        rekey_after_messages: 100,
        ..TunnelConfig::default()
    };
    let mut net = Net::new(18, clean(), cfg.clone(), cfg);
    net.connect();
    net.run(Duration::from_millis(100));
    assert_eq!(net.a.stats().handshakes_completed, 1);
    let mut sent = 0;
    for i in 0..350u32 {
        net.send_from_a(&i.to_be_bytes()).unwrap();
        sent += 1;
        net.run(Duration::from_millis(10));
    }
    net.run(Duration::from_millis(100));
    assert_eq!(
        net.delivered_to_b().len(),
        sent,
        "every packet arrived across rekeys"
    );
    // 350 messages at one rekey per 100 (A's keepalives and confirmations count too).
    assert!(
        net.a.stats().handshakes_completed >= 4,
        "{:?}",
        net.a.stats()
    );
}

#[test]
fn a_rekey_in_flight_leaves_no_timer_in_the_past() {
    let cfg = TunnelConfig {
        rekey_after_time: Duration::from_secs(5),
        reject_after_time: Duration::from_secs(8),
        ..TunnelConfig::default()
    };
    let mut net = Net::new(20, clean(), cfg.clone(), cfg);
    net.connect();
    net.run(Duration::from_millis(100));
    assert!(net.established());
    // The rekey starts at 5 s and gets no answer.
    net.link.loss = 100;
    net.run(Duration::from_millis(5000));
    let (now, unix) = (net.now, net.unix());
    net.a.handle_timeout(now, unix);
    let next = net.a.poll_timeout().expect("a session and a pending rekey");
    assert!(
        next > now,
        "poll_timeout {:?} before now: a driver would spin until the rekey is answered",
        now - next
    );
}

#[test]
fn a_session_expires_when_no_rekey_succeeds() {
    let cfg = TunnelConfig {
        rekey_after_time: Duration::from_secs(5),
        reject_after_time: Duration::from_secs(8),
        ..TunnelConfig::default()
    };
    let mut net = Net::new(19, clean(), cfg.clone(), cfg);
    net.connect();
    net.run(Duration::from_millis(100));
    assert!(net.established());
    net.link.loss = 100;
    net.run(Duration::from_secs(9));
    let (a, b) = net.ids();
    assert!(!net.a.is_established(&b, net.now));
    assert!(net.a_events.contains(&Event::Closed { peer: b }));
    assert!(net.b_events.contains(&Event::Closed { peer: a }));
}

#[test]
fn the_tunnel_follows_a_peer_whose_nat_rebinds() {
    let mut net = Net::new(
        23,
        clean(),
        TunnelConfig::default(),
        TunnelConfig::default(),
    );
    net.connect();
    net.run(Duration::from_millis(100));
    let a = net.a.node_id();
    assert_eq!(net.b.endpoint(&a), Some(net.a_addr));
    net.a_addr = "198.51.100.10:55555".parse().unwrap();
    net.send_from_a(b"after rebinding").unwrap();
    net.run(Duration::from_millis(50));
    assert_eq!(
        net.b.endpoint(&a),
        Some(net.a_addr),
        "B answers at the new mapping"
    );
    assert_eq!(net.delivered_to_b().len(), 1);
}

/// With a path manager in charge (`follow_source` off), a peer's packets from an address that is
/// not its endpoint are reported, and reported again while they keep coming from there, once a
/// second: a path manager that had no room for the address the first time gets another chance.
#[test]
fn a_persistent_new_source_is_reported_again_once_a_second() {
    let manager = TunnelConfig {
        follow_source: false,
        ..TunnelConfig::default()
    };
    let mut net = Net::new(29, clean(), TunnelConfig::default(), manager);
    net.connect();
    net.run(Duration::from_millis(100));
    assert!(net.established());
    let a = net.a.node_id();
    let (now, unix, old) = (net.now, net.unix(), net.a_addr);
    net.b.set_endpoint(now, unix, a, old);
    net.a_addr = "198.51.100.10:55555".parse().unwrap();
    let moved = net.a_addr;
    for i in 0..25 {
        net.send_from_a(format!("from the new address {i}").as_bytes())
            .unwrap();
        net.run(Duration::from_millis(100));
    }
    let reports = net
        .b_events
        .iter()
        .filter(|e| matches!(e, Event::Source { from, .. } if *from == moved))
        .count();
    assert_eq!(
        net.delivered_to_b().len(),
        25,
        "data from anywhere is delivered"
    );
    assert_eq!(
        net.b.endpoint(&a),
        Some(old),
        "the manager chooses the endpoint"
    );
    assert_eq!(
        reports, 3,
        "25 packets over 2.5 s: reported at 0, 1 and 2 s"
    );
}

/// Three handshakes that cross, completed in the order the simulator met on jittery links: A
/// starts H1; B answers it and starts H2 (it measured its NAT meanwhile); A answers H2, completes
/// H1 and starts H3; B answers H3, then completes H2; A completes H3. A's current session is H3
/// and B's is H2, which is A's second oldest. Each side must still open what the other sends on
/// its current session: with one older session kept, A had forgotten H2 and refused all of B's
/// packets as an unknown index, for good.
#[test]
fn three_crossing_handshakes_leave_both_sides_able_to_open_what_the_other_sends() {
    let mut net = Net::new(
        37,
        clean(),
        TunnelConfig::default(),
        TunnelConfig::default(),
    );
    let (ida, idb) = net.ids();
    let (a_addr, b_addr) = (net.a_addr, net.b_addr);
    // 30 ms pass, then `to` gets `packet` from `from`; what it sends in answer (packets are
    // carried by hand here, in the exact order of the scenario).
    let deliver = |net: &mut Net, to_b: bool, packet: &[u8]| -> Vec<Vec<u8>> {
        net.now += Duration::from_millis(30);
        let (now, unix) = (net.now, net.unix());
        let (to, from) = match to_b {
            true => (&mut net.b, a_addr),
            false => (&mut net.a, b_addr),
        };
        to.handle_packet(now, unix, from, packet);
        std::iter::from_fn(|| to.poll_transmit())
            .map(|x| x.contents)
            .collect()
    };
    let start = |net: &mut Net, from_a: bool| -> Vec<u8> {
        net.now += Duration::from_millis(30);
        let (now, unix) = (net.now, net.unix());
        let (t, peer, at) = match from_a {
            true => (&mut net.a, idb, b_addr),
            false => (&mut net.b, ida, a_addr),
        };
        t.connect(now, unix, peer, &[at]).unwrap();
        t.poll_transmit().unwrap().contents
    };
    let h1_init = start(&mut net, true);
    let h1_resp = deliver(&mut net, true, &h1_init).remove(0);
    let h2_init = start(&mut net, false);
    let h2_resp = deliver(&mut net, false, &h2_init).remove(0);
    deliver(&mut net, false, &h1_resp); // A's confirmation of H1: lost
    let h3_init = start(&mut net, true);
    let h3_resp = deliver(&mut net, true, &h3_init).remove(0);
    deliver(&mut net, true, &h2_resp); // B's confirmation of H2: lost
    deliver(&mut net, false, &h3_resp);
    assert_eq!(net.a.stats().handshakes_completed, 3);
    assert_eq!(net.b.stats().handshakes_completed, 3);
    while net.a.poll_event().is_some() {}
    while net.b.poll_event().is_some() {}
    net.now += Duration::from_millis(10);
    let (t, u) = (net.now, net.unix());
    let b_to_a = one_packet(&mut net.b, &mut net.a, b_addr, t, u);
    assert!(
        b_to_a,
        "B -> A refused (unknown index {})",
        net.a.stats().unknown_index
    );
    let a_to_b = one_packet(&mut net.a, &mut net.b, a_addr, t, u);
    assert!(
        a_to_b,
        "A -> B refused (unknown index {})",
        net.b.stats().unknown_index
    );
}

/// One IPv6 packet from `from` to `to` (at `from_addr`): whether it was delivered.
fn one_packet(
    from: &mut Tunnel,
    to: &mut Tunnel,
    from_addr: SocketAddr,
    t: Instant,
    u: u64,
) -> bool {
    let pkt = ipv6_udp(
        from.node_id().overlay_addr(),
        to.node_id().overlay_addr(),
        b"after three crossing handshakes",
    );
    from.send_ip(t, u, &pkt).unwrap();
    while let Some(d) = from.poll_transmit() {
        to.handle_packet(t, u, from_addr, &d.contents);
    }
    std::iter::from_fn(|| to.poll_event())
        .any(|e| matches!(e, Event::Packet { packet, .. } if *packet == *pkt))
}

/// What a peer sent us is counted whatever address it came from, even once the per-address
/// table is full (of the ports a birthday spray aimed at, say): that count is the peer's credit
/// at the engine's send gate, and a frozen count left the easy side of a birthday pair unable
/// to probe the one port the hard side kept.
#[test]
fn a_peers_bytes_are_counted_after_the_per_address_table_is_full() {
    let mut net = Net::new(
        31,
        clean(),
        TunnelConfig::default(),
        TunnelConfig::default(),
    );
    net.connect();
    net.run(Duration::from_millis(100));
    assert!(net.established());
    let a = net.a.node_id();
    // B sprays probes at 64 ports of A's IP: its table fills with them.
    let now = net.now;
    for port in 1..=64u16 {
        net.b
            .send_probe(now, a, SocketAddr::new(net.a_addr.ip(), port), port.into());
    }
    while net.b.poll_transmit().is_some() {}
    let before = net.b.bytes_in(&a);
    let table_before: u64 = net.b.traffic(&a).iter().map(|(_, t)| t.bytes_in).sum();
    // A, rebound to a port B has never seen, sends data.
    net.a_addr = "198.51.100.10:55555".parse().unwrap();
    net.send_from_a(b"from a new port").unwrap();
    net.run(Duration::from_millis(50));
    assert_eq!(net.delivered_to_b().len(), 1);
    let table_after: u64 = net.b.traffic(&a).iter().map(|(_, t)| t.bytes_in).sum();
    assert_eq!(
        table_after, table_before,
        "the full table has no room for the new port"
    );
    assert!(
        net.b.bytes_in(&a) > before,
        "the packet's bytes count all the same"
    );
}

#[test]
fn packets_sent_before_the_handshake_are_delivered_once_it_completes() {
    // Jitter but no loss: the tunnel does not retransmit data, so loss could eat the packet and
    // hide a tunnel that drops what it queued.
    let mut net = Net::new(
        29,
        Link {
            loss: 0,
            dup: 0,
            max_delay_ms: 20,
        },
        TunnelConfig::default(),
        TunnelConfig::default(),
    );
    let b = net.b.node_id();
    let (now, unix, b_addr) = (net.now, net.unix(), net.b_addr);
    net.a.connect(now, unix, b, &[b_addr]).unwrap();
    net.send_from_a(b"early 1").unwrap();
    net.send_from_a(b"early 2").unwrap();
    assert!(!net.established());
    net.run(Duration::from_secs(1));
    assert!(net.established());
    let got = net.delivered_to_b();
    assert_eq!(got.len(), 2, "both queued packets arrive, once each");
    assert!(got.iter().any(|p| p.ends_with(b"early 1")));
    assert!(got.iter().any(|p| p.ends_with(b"early 2")));
}

#[test]
fn a_full_peer_table_makes_room_by_forgetting_idle_peers_only() {
    let cfg = TunnelConfig {
        max_peers: 2,
        ..TunnelConfig::default()
    };
    let mut net = Net::new(31, clean(), cfg, TunnelConfig::default());
    let b = net.b.node_id();
    net.a.add_peer(b, Some(net.b_addr)).unwrap();
    let nowhere: SocketAddr = "192.0.2.99:9".parse().unwrap();
    let y = Identity::from_seed(&[0x52; 32]).node_id();
    let z = Identity::from_seed(&[0x53; 32]).node_id();
    let (now, unix) = (net.now, net.unix());
    net.a.connect(now, unix, y, &[nowhere]).unwrap();
    assert!(
        net.a.connect(now, unix, z, &[nowhere]).is_err(),
        "B is pinned and y is mid-handshake: no room"
    );
    assert_eq!(net.a.stats().peers_full, 1);
    // y's handshake fails; y is now idle and gives way to z. B, pinned, stays.
    net.run(Duration::from_secs(11));
    assert!(net.a_events.contains(&Event::HandshakeFailed { peer: y }));
    let (now, unix) = (net.now, net.unix());
    net.a.connect(now, unix, z, &[nowhere]).unwrap();
    // A packet to B's overlay address starts the handshake by itself.
    net.send_from_a(b"hello B").unwrap();
    net.run(Duration::from_millis(100));
    assert_eq!(net.delivered_to_b().len(), 1);
}

#[test]
fn aes_gcm_is_used_only_when_both_ends_offer_it_and_data_flows_either_way() {
    let offer = |on: bool| TunnelConfig {
        offer_aes_gcm: on,
        ..TunnelConfig::default()
    };
    let hw = Cipher::hardware_aes();
    for (a_on, b_on) in [(true, true), (true, false), (false, true), (false, false)] {
        let mut net = Net::new(13, clean(), offer(a_on), offer(b_on));
        net.connect();
        net.run(Duration::from_millis(200));
        assert!(net.established(), "{a_on}/{b_on}: no session");
        let (a, b) = net.ids();
        let want = if a_on && b_on && hw {
            Cipher::Aes256Gcm
        } else {
            Cipher::ChaCha20Poly1305
        };
        assert_eq!(net.a.cipher(&b), Some(want), "{a_on}/{b_on}: initiator");
        assert_eq!(net.b.cipher(&a), Some(want), "{a_on}/{b_on}: responder");
        for i in 0..20u8 {
            net.send_from_a(&[i; 100]).unwrap();
        }
        net.run(Duration::from_millis(50));
        assert_eq!(net.delivered_to_b().len(), 20, "{a_on}/{b_on}: data lost");
    }
    // This machine has AES instructions, so the first case above really ran AES-256-GCM.
    #[cfg(target_arch = "x86_64")]
    assert!(hw, "AES-NI expected on the lab machines");
}

#[test]
fn message_2_is_no_larger_than_message_1_and_the_rest_of_the_advert_follows_once_confirmed() {
    // A sends an unpadded message 1 (as a hostile or foreign initiator may), B has many
    // candidates: B's full advert would make message 2 larger than A's message 1.
    let a_cfg = TunnelConfig {
        message_1_len: 0,
        ..TunnelConfig::default()
    };
    let mut net = Net::new(31, clean(), a_cfg, TunnelConfig::default());
    let many: Vec<SocketAddr> = (0..16u16)
        .map(|i| SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x100 + i], 9000 + i)))
        .collect();
    net.b.set_candidates(many.clone());
    net.connect();
    net.run(Duration::from_millis(100));
    assert!(net.established());
    let m1 = net
        .seen_by_b
        .iter()
        .find(|(_, p)| p[0] == 0xD1)
        .map(|(_, p)| p.len())
        .unwrap();
    let m2 = net
        .b_events
        .iter()
        .find_map(|e| match e {
            Event::Response { packet, .. } => Some(packet.len()),
            _ => None,
        })
        .unwrap();
    assert!(
        m2 <= m1,
        "message 2 ({m2} B) larger than message 1 ({m1} B)"
    );
    let b = net.b.node_id();
    assert_eq!(
        net.a.peer_candidates(&b),
        &many[..],
        "the candidates left out of message 2 reached A in an ADVERT"
    );
}
