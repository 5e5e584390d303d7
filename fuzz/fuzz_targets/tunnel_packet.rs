#![no_main]
//! Any bytes: tunnel packet and inner frame parsers never panic; inner frames round-trip.
use libfuzzer_sys::fuzz_target;
use shipworm_tunnel::frame::{Inner, Packet};

fuzz_target!(|data: &[u8]| {
    let _ = Packet::parse(data);
    if let Ok(inner) = Inner::parse(data) {
        let mut out = Vec::new();
        inner.emit(&mut out);
        assert_eq!(out, data);
    }
});
