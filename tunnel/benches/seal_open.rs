//! Sealed+opened frames per second for 1280-byte IPv6 packets on one core, next to the raw AEAD
//! over the same buffers in the same run, for each of the two session ciphers (ChaCha20-Poly1305
//! and AES-256-GCM). Run on demand:
//!
//! ```sh
//! cargo bench -p shipworm-tunnel --bench seal_open
//! ```
//!
//! Written up in `docs/performance.md`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};
use shipworm_tunnel::session::{Cipher, Session};
use shipworm_tunnel::tunnel::{Event, Tunnel, TunnelConfig};
use shipworm_tunnel::wire::packet::Packet;
use shipworm_tunnel::{rng, Identity};

const PACKET: usize = 1280;
const ROUND: Duration = Duration::from_millis(1500);

fn ipv6_packet(src: std::net::Ipv6Addr, dst: std::net::Ipv6Addr) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ipv6(src.octets(), dst.octets(), 64)
        .udp(1, 2)
        .write(&mut v, &vec![0xAB; PACKET - 48])
        .unwrap();
    assert_eq!(v.len(), PACKET);
    v
}

/// Runs `f` repeatedly for one round; returns operations per second.
fn rate(mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < ROUND {
        for _ in 0..256 {
            f();
        }
        n += 256;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// The raw AEAD (the same `ring` implementation the tunnel uses): seal then open one buffer in
/// place.
fn raw(buf: &mut Vec<u8>, a: &LessSafeKey, b: &LessSafeKey, counter: &mut u64) {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&counter.to_le_bytes());
    *counter += 1;
    let aad = [0u8; 16];
    buf.truncate(PACKET);
    let tag = a
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut buf[..],
        )
        .unwrap();
    buf.extend_from_slice(tag.as_ref());
    let n = b
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut buf[..],
        )
        .unwrap()
        .len();
    black_box(n);
}

fn main() {
    println!(
        "tunnel seal+open, {PACKET}-byte IPv6 packets, one core, {ROUND:?} per round, 3 rounds per cipher"
    );
    let mut ciphers = vec![Cipher::ChaCha20Poly1305];
    if Cipher::hardware_aes() {
        ciphers.push(Cipher::Aes256Gcm);
    } else {
        println!("(no AES instructions on this CPU: AES-256-GCM is never agreed here)");
    }
    for cipher in ciphers {
        bench(cipher);
    }
}

fn bench(cipher: Cipher) {
    let a_id = Identity::from_seed(&[1; 32]);
    let b_id = Identity::from_seed(&[2; 32]);
    let inner = ipv6_packet(a_id.node_id().overlay_addr(), b_id.node_id().overlay_addr());

    // Raw AEAD (ring, as in the tunnel): seal then open one 1280-byte buffer in place.
    let alg = match cipher {
        Cipher::ChaCha20Poly1305 => &CHACHA20_POLY1305,
        Cipher::Aes256Gcm => &AES_256_GCM,
    };
    let key = || LessSafeKey::new(UnboundKey::new(alg, &[7u8; 32]).unwrap());
    let (ka, kb) = (key(), key());
    let mut buf = inner.clone();
    buf.reserve(16);
    let mut raw_counter = 0u64;

    // Session layer: header, AEAD with the header as AD, parse, replay window.
    let now = Instant::now();
    let mut sa = Session::new(1, 2, &[8; 32], &[9; 32], now, true, cipher);
    let mut sb = Session::new(2, 1, &[9; 32], &[8; 32], now, false, cipher);
    let mut wire = Vec::with_capacity(2048);
    let mut plain = Vec::with_capacity(2048);

    // The whole sans-IO tunnel: overlay checks, queues, events, buffers recycled as the node's
    // driver does.
    let config = TunnelConfig {
        offer_aes_gcm: cipher == Cipher::Aes256Gcm,
        ..TunnelConfig::default()
    };
    let mut ta = Tunnel::new(a_id.clone(), config.clone(), now, rng::from_seed(1));
    let mut tb = Tunnel::new(b_id.clone(), config, now, rng::from_seed(2));
    let (a_addr, b_addr) = (
        "192.0.2.1:1".parse().unwrap(),
        "192.0.2.2:2".parse().unwrap(),
    );
    ta.connect(now, 1, b_id.node_id(), &[b_addr]).unwrap();
    for _ in 0..4 {
        while let Some(t) = ta.poll_transmit() {
            tb.handle_packet(now, 1, a_addr, &t.contents);
        }
        while let Some(t) = tb.poll_transmit() {
            ta.handle_packet(now, 1, b_addr, &t.contents);
        }
    }
    assert!(ta.is_established(&b_id.node_id(), now));
    assert_eq!(ta.cipher(&b_id.node_id()), Some(cipher));
    while ta.poll_event().is_some() {}
    while tb.poll_event().is_some() {}

    let name = cipher.name();
    let mut best = [0f64; 3];
    for round in 0..3 {
        let r = rate(|| raw(&mut buf, &ka, &kb, &mut raw_counter));
        let s = rate(|| {
            sa.seal(&inner, &mut wire);
            let Ok(Packet::Transport {
                counter,
                header,
                sealed,
                ..
            }) = Packet::parse(&wire)
            else {
                unreachable!()
            };
            black_box(sb.open(header, counter, sealed, &mut plain).unwrap());
        });
        let t = rate(|| {
            ta.send_ip(now, 1, &inner).unwrap();
            let t = ta.poll_transmit().unwrap();
            tb.handle_packet(now, 1, a_addr, &t.contents);
            ta.recycle(t.contents);
            let Some(Event::Packet { packet, .. }) = tb.poll_event() else {
                unreachable!()
            };
            tb.recycle(black_box(packet).into_buffer());
        });
        println!(
            "{name} round {round}: raw {r:>9.0}/s ({:.2} Gbit/s) | session {s:>9.0}/s ({:.0} %) | whole tunnel {t:>9.0}/s ({:.0} %)",
            r * PACKET as f64 * 8.0 / 1e9,
            100.0 * s / r,
            100.0 * t / r
        );
        best = [best[0].max(r), best[1].max(s), best[2].max(t)];
    }
    println!(
        "{name} best: raw {:.0}/s, session {:.0}/s = {:.0} % of raw, whole tunnel {:.0}/s = {:.0} % of raw ({:.2} Gbit/s)",
        best[0],
        best[1],
        100.0 * best[1] / best[0],
        best[2],
        100.0 * best[2] / best[0],
        best[2] * PACKET as f64 * 8.0 / 1e9
    );
}
