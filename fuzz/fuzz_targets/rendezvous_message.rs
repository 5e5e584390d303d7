#![no_main]
//! Any bytes: parse never panics, and whatever parses re-encodes to the same bytes.
use libfuzzer_sys::fuzz_target;
use shipworm_rendezvous::wire::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::parse(data) {
        assert_eq!(m.to_vec(), data);
    }
});
