//! Hostile initiators against one responder tunnel, on injected clocks: reflection and
//! amplification of message 2, handshake floods per peer and per source, replayed and stale
//! message 1s, and eviction of configured peers (issue 10; `docs/security.md`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use shipworm_tunnel::handshake::{self, Initiator};
use shipworm_tunnel::rng;
use shipworm_tunnel::session::{Cipher, Session};
use shipworm_tunnel::tunnel::{Transmit, Tunnel, TunnelConfig};
use shipworm_tunnel::wire::frame::Frame;
use shipworm_tunnel::wire::packet::Packet;
use shipworm_tunnel::wire::payload::{Advert, InitPayload};
use shipworm_tunnel::Identity;

const UNIX0: u64 = 1_800_000_000_000;

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The responder under attack, with its clocks.
struct Victim {
    tunnel: Tunnel,
    identity: Identity,
    start: Instant,
    now: Instant,
}

impl Victim {
    fn new(config: TunnelConfig) -> Self {
        Self::with_identity(Identity::from_seed(&[0xB; 32]), config)
    }

    fn with_identity(identity: Identity, config: TunnelConfig) -> Self {
        let start = Instant::now();
        let mut tunnel = Tunnel::new(identity.clone(), config, start, rng::from_seed(0xB));
        // A realistic responder: a few host and reflexive candidates of both families.
        tunnel.set_candidates(vec![
            addr("192.168.1.20:41641"),
            addr("198.51.100.20:41641"),
            addr("[2001:db8:20::1]:41641"),
        ]);
        Self {
            tunnel,
            identity,
            start,
            now: start,
        }
    }

    fn unix(&self) -> u64 {
        UNIX0 + self.now.duration_since(self.start).as_millis() as u64
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        let (now, unix) = (self.now, self.unix());
        self.tunnel.handle_timeout(now, unix);
    }

    fn receive(&mut self, from: SocketAddr, bytes: &[u8]) {
        let (now, unix) = (self.now, self.unix());
        self.tunnel.handle_packet(now, unix, from, bytes);
    }

    fn transmits(&mut self) -> Vec<Transmit> {
        while self.tunnel.poll_event().is_some() {}
        std::iter::from_fn(|| self.tunnel.poll_transmit()).collect()
    }
}

/// A key of its own for every `n` (an attacker's keys cost nothing).
fn fresh_key(n: u32, tag: u8) -> Identity {
    let mut seed = [tag; 32];
    seed[..4].copy_from_slice(&n.to_le_bytes());
    Identity::from_seed(&seed)
}

/// A message 1 from `who` to `to`, dated `timestamp_ms`, naming `candidates`.
fn message_1(
    who: &Identity,
    to: &Identity,
    timestamp_ms: u64,
    candidates: Vec<SocketAddr>,
    seed: u64,
) -> (Initiator, Vec<u8>) {
    let payload = InitPayload {
        initiator: who.node_id(),
        timestamp_ms,
        advert: Advert {
            flags: 0,
            candidates,
        },
    };
    Initiator::start(
        &mut rng::from_seed(seed),
        who,
        &to.node_id(),
        seed as u32,
        &payload,
        None,
    )
    .unwrap()
}

/// Completes a handshake from `initiator`'s message 1 answered in `reply`; the initiator's
/// session.
fn finish(initiator: Initiator, local: u32, reply: &[u8], now: Instant) -> Session {
    let Ok(Packet::Resp { sender, noise, .. }) = Packet::parse(reply) else {
        panic!("not a message 2")
    };
    let (send, recv, _) = initiator.finish(noise).unwrap();
    Session::new(
        local,
        sender,
        &send,
        &recv,
        now,
        true,
        Cipher::ChaCha20Poly1305,
    )
}

#[test]
fn message_1_is_answered_only_to_its_source() {
    let mut b = Victim::new(TunnelConfig::default());
    let evil = Identity::from_seed(&[0xE; 32]);
    let source = addr("203.0.113.66:6666");
    // Message 1 names 16 ports of a third host: before, each got a copy of message 2.
    let victim_host: Vec<SocketAddr> = (0..16)
        .map(|i| SocketAddr::from(([192, 0, 2, 7], 5000 + i)))
        .collect();
    let (_, m1) = message_1(&evil, &b.identity, b.unix(), victim_host.clone(), 1);
    b.receive(source, &m1);
    let out = b.transmits();
    assert_eq!(out.len(), 1, "one message 2 per message 1: {out:?}");
    assert_eq!(out[0].dest, source, "to where message 1 came from");
    assert!(out.iter().all(|t| !victim_host.contains(&t.dest)));
    let (bytes_in, bytes_out) = (m1.len(), out[0].contents.len());
    assert!(
        bytes_out <= bytes_in,
        "message 2 ({bytes_out} B) is no larger than message 1 ({bytes_in} B)"
    );
    println!(
        "message 1 naming 16 victim ports: {bytes_in} B in, {} packet(s) and {bytes_out} B out, \
         none to the victim",
        out.len()
    );
    assert_eq!(b.tunnel.stats().handshakes_completed, 1);
}

#[test]
fn one_peer_cannot_flood_handshakes() {
    // Never under load: the per-peer rate alone (under load, cookies come first).
    let config = TunnelConfig {
        handshake_load_threshold: u32::MAX,
        ..TunnelConfig::default()
    };
    let mut b = Victim::new(config);
    let evil = Identity::from_seed(&[0xE; 32]);
    let source = addr("203.0.113.66:6666");
    // 1 000 fresh message 1s (each newer than the last), one every millisecond for a second.
    let (mut bytes_in, mut answers, mut bytes_out) = (0, 0, 0);
    for i in 0..1000u64 {
        let (_, m1) = message_1(&evil, &b.identity, b.unix() + 1, vec![], i);
        bytes_in += m1.len();
        b.receive(source, &m1);
        for t in b.transmits() {
            answers += 1;
            bytes_out += t.contents.len();
        }
        b.advance(Duration::from_millis(1));
    }
    let stats = b.tunnel.stats();
    println!(
        "one key, 1000 message 1s in 1 s ({bytes_in} B): {answers} answers ({bytes_out} B), \
         {} refused by the per-peer rate",
        stats.peer_rate_limited
    );
    // A burst of 4, then one per 20 ms: 53 in a second, not 1 000.
    assert_eq!(answers, 53, "{stats:?}");
    assert_eq!(stats.handshakes_completed, 53);
    assert_eq!(stats.peer_rate_limited, 947);
}

#[test]
fn one_ip_cannot_flood_handshakes_under_load() {
    let config = TunnelConfig {
        handshake_load_threshold: 10,
        ..TunnelConfig::default()
    };
    let mut b = Victim::new(config);
    let flooder = addr("203.0.113.66:6666");
    // Fresh keys from one address, for one second; each gets its cookie and resends with mac2,
    // as a real initiator would.
    let mut answered_flood = 0;
    let mut answered_honest = 0;
    for i in 0..2000u64 {
        let key = fresh_key(i as u32, 0x76);
        let honest = i % 100 == 50;
        let from = if honest {
            SocketAddr::from(([198, 51, 100, (i / 100) as u8], 4000))
        } else {
            flooder
        };
        let (mut init, m1) = message_1(&key, &b.identity, b.unix(), vec![], i);
        b.receive(from, &m1);
        let mut out = b.transmits();
        if let Some(Ok(Packet::Cookie { nonce, sealed, .. })) =
            out.first().map(|t| Packet::parse(&t.contents))
        {
            let cookie =
                handshake::open_cookie(&b.identity.node_id(), &init.last_mac1, &nonce, sealed)
                    .unwrap();
            let m1 = init.remac(Some(&cookie));
            b.receive(from, &m1);
            out = b.transmits();
        }
        let answered = out
            .iter()
            .any(|t| matches!(Packet::parse(&t.contents), Ok(Packet::Resp { .. })));
        match (answered, honest) {
            (true, true) => answered_honest += 1,
            (true, false) => answered_flood += 1,
            _ => {}
        }
        b.advance(Duration::from_micros(500));
    }
    let stats = b.tunnel.stats();
    println!(
        "one address, 1980 handshakes with fresh keys in 1 s under load: {answered_flood} \
         answered, {} refused before Diffie-Hellman; 20 other addresses: {answered_honest} of 20 \
         answered",
        stats.source_rate_limited
    );
    // The first 10 come before the load threshold; then a burst of 5 and 20 a second.
    assert!(answered_flood <= 10 + 5 + 20, "{answered_flood}: {stats:?}");
    assert!(stats.source_rate_limited >= 1900, "{stats:?}");
    assert_eq!(
        answered_honest, 20,
        "other sources are not limited: {stats:?}"
    );
}

/// `a` handshakes with `b` from `from`; returns a's session and the message 1 it sent.
fn handshake(b: &mut Victim, a: &Identity, from: SocketAddr, seed: u64) -> (Session, Vec<u8>) {
    let (init, m1) = message_1(a, &b.identity, b.unix(), vec![], seed);
    b.receive(from, &m1);
    let out = b.transmits();
    assert_eq!(out.len(), 1, "{:?}", b.tunnel.stats());
    (finish(init, seed as u32, &out[0].contents, b.now), m1)
}

fn seal(s: &mut Session, frame: &Frame) -> Vec<u8> {
    let mut inner = Vec::new();
    frame.emit(&mut inner);
    let mut out = Vec::new();
    s.seal(&inner, &mut out);
    out
}

#[test]
fn captured_message_1_is_refused_after_eviction() {
    // Evicted from the peer table but remembered in the replay cache; and evicted from both,
    // behind the cache's floor.
    for handshake_cache in [4096, 2] {
        replay_after_eviction(TunnelConfig {
            max_peers: 2,
            handshake_cache,
            ..TunnelConfig::default()
        });
    }
}

fn replay_after_eviction(config: TunnelConfig) {
    let mut b = Victim::new(config);
    let a = Identity::from_seed(&[0xA; 32]);
    let a_addr = addr("198.51.100.10:41000");
    let (mut s, captured) = handshake(&mut b, &a, a_addr, 1);
    // A closes: its entry is idle, and fresh keys push it out of the table.
    let close = seal(&mut s, &Frame::Close);
    b.receive(a_addr, &close);
    b.advance(Duration::from_secs(1));
    for n in 0..3u8 {
        let x = Identity::from_seed(&[0x60 + n; 32]);
        let (mut sx, _) = handshake(&mut b, &x, addr("203.0.113.1:1000"), 10 + u64::from(n));
        let close = seal(&mut sx, &Frame::Close);
        b.receive(addr("203.0.113.1:1000"), &close);
        b.advance(Duration::from_millis(100));
    }
    assert!(
        b.tunnel.endpoint(&a.node_id()).is_none(),
        "A was evicted from the peer table"
    );
    // Well inside the freshness window, the captured message 1 comes back from anywhere.
    let before = b.tunnel.stats().clone();
    b.receive(addr("192.0.2.7:53"), &captured);
    assert!(b.transmits().is_empty(), "no answer to a replay");
    assert_eq!(
        b.tunnel.stats().replayed_handshake,
        before.replayed_handshake + 1
    );
    assert_eq!(
        b.tunnel.stats().handshakes_completed,
        before.handshakes_completed
    );
    // A itself, with a new message 1, is welcome again.
    handshake(&mut b, &a, a_addr, 2);
}

#[test]
fn stale_message_1_is_refused() {
    let mut b = Victim::new(TunnelConfig::default());
    b.advance(Duration::from_secs(3600));
    let a = Identity::from_seed(&[0xA; 32]);
    let window = TunnelConfig::default().handshake_freshness.as_millis() as u64;
    for (skew, answered) in [
        (-(window as i64) - 1, false),
        (window as i64 + 1, false),
        (-(window as i64), true),
        (window as i64, true),
    ] {
        let ts = b.unix().checked_add_signed(skew).unwrap();
        let (_, m1) = message_1(&a, &b.identity, ts, vec![], skew.unsigned_abs());
        b.receive(addr("198.51.100.10:41000"), &m1);
        assert_eq!(!b.transmits().is_empty(), answered, "skew {skew} ms");
        b.advance(Duration::from_millis(25));
    }
    assert_eq!(b.tunnel.stats().stale_handshake, 2);
}

#[test]
fn a_restarted_node_answers_a_captured_message_1_only_within_the_window_and_only_to_its_source() {
    let a = Identity::from_seed(&[0xA; 32]);
    let b_id = Identity::from_seed(&[0xB; 32]);
    let mut b = Victim::with_identity(b_id.clone(), TunnelConfig::default());
    let (_, captured) = handshake(&mut b, &a, addr("198.51.100.10:41000"), 1);
    let spoofed = addr("192.0.2.7:53");
    // B restarts 60 s later: a new process, no memory of A.
    let mut restarted = Victim::with_identity(b_id.clone(), TunnelConfig::default());
    restarted.start -= Duration::from_secs(60);
    restarted.receive(spoofed, &captured);
    let out = restarted.transmits();
    assert_eq!(out.len(), 1, "inside the window a new process answers once");
    assert_eq!(out[0].dest, spoofed, "to the source only");
    assert!(out[0].contents.len() <= captured.len(), "no amplification");
    restarted.receive(spoofed, &captured);
    assert!(restarted.transmits().is_empty(), "and only once");
    // After the window, never.
    let mut later = Victim::with_identity(b_id, TunnelConfig::default());
    later.start -= Duration::from_secs(121);
    later.receive(spoofed, &captured);
    assert!(later.transmits().is_empty());
    assert_eq!(later.tunnel.stats().stale_handshake, 1);
}

#[test]
fn a_flood_of_fresh_keys_never_evicts_a_pinned_peer() {
    let a = Identity::from_seed(&[0xA; 32]);
    let a_addr = addr("198.51.100.10:41000");
    let config = TunnelConfig {
        max_peers: 8,
        pinned: vec![a.node_id()],
        ..TunnelConfig::default()
    };
    let mut b = Victim::new(config);
    b.tunnel.add_peer(a.node_id(), Some(a_addr)).unwrap();
    // 500 fresh keys open sessions and close them, so the table is always full and every
    // newcomer evicts an idle peer.
    let from = addr("203.0.113.1:1000");
    for n in 0..500u32 {
        let x = fresh_key(n, 0x77);
        let (mut sx, _) = handshake(&mut b, &x, from, 100 + u64::from(n));
        let close = seal(&mut sx, &Frame::Close);
        b.receive(from, &close);
        b.advance(Duration::from_millis(30));
    }
    assert_eq!(b.tunnel.stats().handshakes_completed, 500);
    assert_eq!(
        b.tunnel.endpoint(&a.node_id()),
        Some(a_addr),
        "A is still in the table with its configured address"
    );
    // And A's own handshake is answered, even though the others now hold live sessions.
    for n in 0..8u32 {
        let (_, m1) = message_1(&fresh_key(n, 0x78), &b.identity, b.unix(), vec![], 9);
        b.receive(from, &m1);
        b.transmits();
        b.advance(Duration::from_millis(30));
    }
    assert!(
        b.tunnel.stats().peers_full > 0,
        "the table is full of live sessions"
    );
    handshake(&mut b, &a, a_addr, 1);
    assert!(b.tunnel.is_established(&a.node_id(), b.now));
}
