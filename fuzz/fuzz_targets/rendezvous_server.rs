#![no_main]
//! Datagrams from a stranger: the server never panics, stores nothing, never amplifies.
use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use shipworm_rendezvous::server::{Server, ServerConfig, Socket};
use shipworm_rendezvous::wire::stun;

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    let config = ServerConfig::for_addresses(vec!["198.51.100.1:3478".parse().unwrap()]);
    let mut server = Server::new(config, now, shipworm_tunnel::rng::from_seed(0));
    let from = "203.0.113.1:5".parse().unwrap();
    for packet in data.split(|b| *b == 0xFF) {
        server.handle_packet(now, 1_800_000_000_000, Socket::Primary, from, packet);
        while let Some(t) = server.poll_transmit() {
            // STUN may exceed a bare request by its one mandatory attribute; nothing else may.
            let slack = if stun::is_stun(packet) { 24 } else { 0 };
            assert!(t.contents.len() <= packet.len() + slack);
        }
    }
    assert_eq!(server.registered(), 0);
});
