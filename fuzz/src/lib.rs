#![forbid(unsafe_code)]
//! The body of every fuzz target: the property each one checks, as a plain function over bytes.
//!
//! The libFuzzer targets (`fuzz_targets/*.rs`) are one line each around these functions, and the
//! workspace's `shipworm-tests` crate includes this file to run the same bodies over the checked-in
//! corpus (`fuzz/corpus/TARGET/`) on the stable toolchain, without libFuzzer: a regression on a
//! known input fails `cargo test --workspace` even where cargo-fuzz is not installed.
//!
//! A body panics, naming what broke, when its property does not hold. The properties:
//! - every parser is canonical (`docs/protocol.md` §"One encoding per value"): whatever parses
//!   re-encodes to exactly the bytes it came from;
//! - the rendezvous server stores nothing for a stranger and never answers with more bytes than
//!   it received (STUN: one mandatory attribute more);
//! - a STUN Binding answer never exceeds its bound and tells the asker its own address.
//!
//! Only `shipworm-tunnel` and `shipworm-rendezvous` paths are used here, so the file compiles both
//! as this crate and as a module of `shipworm-tests`.

use std::net::SocketAddr;
use std::time::Instant;

use shipworm_rendezvous::server::{RelayConfig, Server, ServerConfig, Socket};
use shipworm_rendezvous::wire::{stun, Message};
use shipworm_tunnel::wire::frame::Frame;
use shipworm_tunnel::wire::packet::Packet;
use shipworm_tunnel::Ticket;

/// A target's body: checks its property on one input, panicking when it does not hold.
pub type Body = fn(&[u8]);

/// Every target: its name (the `[[bin]]` in `fuzz/Cargo.toml`, the corpus directory) and body.
pub const TARGETS: &[(&str, Body)] = &[
    ("rendezvous_message", rendezvous_message),
    ("rendezvous_server", rendezvous_server),
    ("stun_binding", stun_binding),
    ("ticket", ticket),
    ("tunnel_packet", tunnel_packet),
];

/// Any bytes: a rendezvous message that parses re-encodes to the same bytes.
pub fn rendezvous_message(data: &[u8]) {
    if let Ok(m) = Message::parse(data) {
        assert_eq!(m.to_vec(), data, "{m:?} re-encodes differently");
    }
}

/// Datagrams from a stranger (split at 0xFF): the server never panics, never answers with more
/// bytes than it received (STUN: one attribute more), and registers no one (no valid signature).
pub fn rendezvous_server(data: &[u8]) {
    let now = Instant::now();
    let primary: SocketAddr = "198.51.100.1:3478".parse().expect("literal address");
    // With the relay role on, so that RELAY's checks are fuzzed too.
    let config = ServerConfig {
        relay: Some(RelayConfig::default()),
        ..ServerConfig::for_addresses(vec![primary])
    };
    let mut server = Server::new(config, now, shipworm_tunnel::rng::from_seed(0));
    let from = "203.0.113.1:5".parse().expect("literal address");
    for packet in data.split(|b| *b == 0xFF) {
        server.handle_packet(now, 1_800_000_000_000, Socket::Primary, from, packet);
        while let Some(t) = server.poll_transmit() {
            // STUN may exceed a bare request by its one mandatory attribute; nothing else may.
            let slack = if stun::is_stun(packet) { 24 } else { 0 };
            assert!(
                t.contents.len() <= packet.len() + slack,
                "a {}-byte datagram drew a {}-byte answer",
                packet.len(),
                t.contents.len()
            );
        }
    }
    assert_eq!(server.registered(), 0, "a stranger got registered");
}

/// Any bytes: a STUN Binding answer is within its bound and carries the asker's address.
pub fn stun_binding(data: &[u8]) {
    let from: SocketAddr = "192.0.2.1:9".parse().expect("literal address");
    let mut out = [0u8; stun::MAX_RESPONSE_LEN];
    if let Ok(n) = stun::binding_response(data, from, &mut out) {
        assert!(
            n <= data.len() + 24,
            "{n}-byte answer to {} bytes",
            data.len()
        );
        let mut tx = [0u8; 16];
        tx[4..].copy_from_slice(&data[stun::TRANSACTION_ID_OFFSET..stun::HEADER_LEN]);
        assert_eq!(
            stun::parse_binding_response(&out[..n], u128::from_be_bytes(tx).into()),
            Ok(from),
            "the answer does not tell the asker its address"
        );
    }
}

/// Any text: a ticket that parses prints as the same text (surrounding whitespace aside).
pub fn ticket(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(t) = s.parse::<Ticket>() {
            assert_eq!(t.to_string(), s.trim(), "{t:?} prints differently");
        }
    }
}

/// Any bytes: an outer tunnel packet and an inner frame that parse re-encode to the same bytes.
pub fn tunnel_packet(data: &[u8]) {
    let mut out = Vec::with_capacity(data.len());
    if let Ok(p) = Packet::parse(data) {
        p.emit(&mut out);
        assert_eq!(out, data, "{p:?} re-encodes differently");
    }
    if let Ok(frame) = Frame::parse(data) {
        out.clear();
        frame.emit(&mut out);
        assert_eq!(out, data, "{frame:?} re-encodes differently");
    }
}
