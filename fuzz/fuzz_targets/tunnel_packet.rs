#![no_main]
//! Any bytes: the outer packet and inner frame parsers never panic; inner frames round-trip
//! (up to address normalisation: an IPv4-mapped address comes back as IPv4).
use libfuzzer_sys::fuzz_target;
use shipworm_tunnel::wire::frame::Frame;
use shipworm_tunnel::wire::packet::Packet;

fuzz_target!(|data: &[u8]| {
    let _ = Packet::parse(data);
    if let Ok(frame) = Frame::parse(data) {
        let mut out = Vec::new();
        frame.emit(&mut out);
        assert_eq!(Frame::parse(&out), Ok(frame));
    }
});
