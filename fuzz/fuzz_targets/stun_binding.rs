#![no_main]
//! Any bytes that pass the STUN header check: answering never panics and never exceeds the bound.
use libfuzzer_sys::fuzz_target;
use shipworm_rendezvous::wire::stun;

fuzz_target!(|data: &[u8]| {
    let mut out = [0u8; stun::MAX_RESPONSE_LEN];
    if let Ok(n) = stun::binding_response(data, "192.0.2.1:9".parse().unwrap(), &mut out) {
        assert!(n <= data.len() + 24);
    }
});
